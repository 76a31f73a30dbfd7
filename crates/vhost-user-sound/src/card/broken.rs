//! Queues the guest broke. virtio-queue refuses to walk an avail ring whose index is
//! more than the queue size away from the device's, or that lies outside guest
//! memory, and logs an error each time it is asked; a loop waiting for such a ring
//! to drain asked again at once, for ever, holding the card lock. Such a queue is
//! stopped instead, with one line saying why, until the guest resets the device (or
//! sets up new rings), or the next connection; the other queues are served as before.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use log::Level;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::GuestMemory;

use super::{Card, State};
use crate::log_limit::limited;

/// Why the guest's avail ring cannot be walked, if it cannot.
fn fault<M: GuestMemory>(vring: &VringRwLock, mem: &M) -> Option<&'static str> {
    let v = vring.get_ref();
    let q = v.get_queue();
    match q.avail_idx(mem, Ordering::Acquire) {
        Err(_) => Some("its avail ring is outside guest memory"),
        Ok(idx) if (idx - Wrapping(q.next_avail())).0 > q.size() => {
            Some("its avail index is more than the queue size away from the device's")
        }
        Ok(_) => None,
    }
}

impl Card {
    /// Whether `queue` may be served: not once the guest broke its ring.
    pub(super) fn queue_usable<M: GuestMemory>(
        st: &mut State,
        queue: usize,
        vring: &VringRwLock,
        mem: &M,
    ) -> bool {
        let Some(broken) = st.broken.get_mut(queue) else {
            return false;
        };
        if *broken {
            return false;
        }
        let Some(reason) = fault(vring, mem) else {
            return true;
        };
        limited!(
            Level::Warn,
            "queue {queue} stopped: {reason}; it is served again once the guest resets the device"
        );
        *broken = true;
        false
    }

    /// [`queue_usable`](Self::queue_usable) for the control queue, whose requests are
    /// served outside the card lock; nor while QEMU has the ring stopped (requests
    /// the guest queued during a pause wait for the ring to run again).
    pub(crate) fn control_usable<M: GuestMemory>(
        &self,
        queue: usize,
        vring: &VringRwLock,
        mem: &M,
    ) -> bool {
        let mut st = self.lock();
        Self::queue_running(&st, queue)
            && super::pause::set_up(vring)
            && Self::queue_usable(&mut st, queue, vring, mem)
    }
}
