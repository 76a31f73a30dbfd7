//! Rings that QEMU stops and starts again. QEMU stops every ring (GET_VRING_BASE)
//! when the VM stops (pause, snapshot, migration) and when the guest resets the
//! device. A pause must lose nothing: the guest's queued periods and the streams'
//! states are kept, nothing is completed while the ring is stopped, and the ring
//! carries on where it stood. A ring that comes back somewhere else belongs to a new
//! driver (the guest rebooted or reloaded it), which knows nothing of the old one's
//! streams: those start over. QEMU does not tell the two apart for a vhost-user sound
//! device (it sends RESET_DEVICE only while the device runs, and it stops the device
//! before it resets it), so the ring's own place tells.

use log::Level;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;

use virtio_snd_wire::{QUEUE_CONTROL, QUEUE_RX, QUEUE_TX};

use super::{Card, DeviceEvent, Direction, State};
use crate::log_limit::limited;

/// Whether QEMU set `vring` up (kick fd given: ready) and enabled it.
pub(super) fn set_up(vring: &VringRwLock) -> bool {
    let v = vring.get_ref();
    v.is_enabled() && v.get_queue().ready()
}

/// Where a ring stood when it was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RingPlace {
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    size: u16,
    next_avail: u16,
    next_used: u16,
}

impl RingPlace {
    fn of(vring: &VringRwLock) -> RingPlace {
        let v = vring.get_ref();
        let q = v.get_queue();
        RingPlace {
            desc_table: q.desc_table(),
            avail_ring: q.avail_ring(),
            used_ring: q.used_ring(),
            size: q.size(),
            next_avail: q.next_avail(),
            next_used: q.next_used(),
        }
    }
}

/// A ring QEMU stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stopped {
    /// Where it stood: a ring that comes back there resumes, one that comes back
    /// elsewhere belongs to a new driver.
    At(RingPlace),
    /// The device was reset meanwhile: the ring comes back for a new driver, whose
    /// streams were reset already.
    Reset,
}

/// The streams whose requests or I/O travel on `queue`: the control queue carries
/// both streams' requests, so a new driver there means both start over.
fn streams_of(queue: usize) -> &'static [Direction] {
    match queue {
        QUEUE_CONTROL => &Direction::ALL,
        QUEUE_TX => &[Direction::Playback],
        QUEUE_RX => &[Direction::Capture],
        _ => &[],
    }
}

impl Card {
    /// GET_VRING_BASE on `queue`: remembers where the ring stood. Until it is started
    /// again its streams complete nothing, and their timelines start afresh then.
    pub(crate) fn ring_stopped(&self, queue: usize) {
        let mut st = self.lock();
        let place = st
            .vrings
            .as_ref()
            .and_then(|v| v.get(queue))
            .map(RingPlace::of);
        if let Some(slot) = st.stopped.get_mut(queue) {
            *slot = place.map(Stopped::At);
        }
        for dir in streams_of(queue) {
            st.stream(*dir).changed();
        }
        drop(st);
        self.notify();
        limited!(Level::Debug, "queue {queue} stopped at {place:?}");
    }

    /// The first event on a started `queue`: a ring that was stopped and is back where
    /// it stood resumes; one that comes back elsewhere resets its streams.
    pub(crate) fn ring_started(&self, queue: usize) {
        let Some(released) = Self::start_ring(&mut self.lock(), queue) else {
            return;
        };
        self.notify();
        for ev in released {
            self.listeners.emit(ev);
        }
    }

    /// [`ring_started`](Self::ring_started) under the card lock: `None` if the ring
    /// was not stopped, or QEMU has not set it up again yet; else what its streams
    /// lost, for the listeners.
    pub(super) fn start_ring(st: &mut State, queue: usize) -> Option<Vec<DeviceEvent>> {
        let was = st.stopped.get(queue).copied().flatten()?;
        let now = RingPlace::of(Self::set_up_vring(st, queue)?);
        st.stopped[queue] = None;
        if was == Stopped::Reset {
            limited!(Level::Debug, "queue {queue} started for a new driver");
            st.broken[queue] = false;
            for dir in streams_of(queue) {
                st.stream(*dir).changed();
            }
            Some(Vec::new())
        } else if was == Stopped::At(now) {
            // The streams' clocks ran on through the stop (their periods passed
            // with nothing completed): they go on as they are, and a pacer
            // about to serve a period is not cut short.
            limited!(Level::Debug, "queue {queue} resumed where it stopped");
            Some(Vec::new())
        } else {
            limited!(
                Level::Info,
                "queue {queue} came back reset: the guest's driver started over"
            );
            st.broken[queue] = false;
            if queue == QUEUE_CONTROL {
                // Both streams start over now. The new driver's tx and rx rings
                // may be enabled only after its first requests were served
                // (QEMU does not wait for SET_VRING_ENABLE to be handled):
                // resetting the streams again then would undo those requests.
                for q in [QUEUE_TX, QUEUE_RX] {
                    if let Some(s) = st.stopped.get_mut(q).and_then(Option::as_mut) {
                        *s = Stopped::Reset;
                    }
                }
            }
            Some(
                streams_of(queue)
                    .iter()
                    .filter_map(|d| Self::reset_stream(st.stream(*d)))
                    .collect(),
            )
        }
    }

    /// Whether `dir`'s ring may be used: not stopped, or started again and checked.
    pub(super) fn ring_running(st: &State, dir: Direction) -> bool {
        Self::queue_running(st, dir.queue())
    }

    /// A period is due on `dir`'s stopped ring: if QEMU has started the ring again
    /// where it stood, it resumes now, as its first event would make it (the vring
    /// worker may not have had that event yet: the period would be lost to the wait).
    /// A ring back elsewhere is left to that event, which resets its streams.
    pub(super) fn resume_in_place(st: &mut State, dir: Direction) -> bool {
        let queue = dir.queue();
        let Some(Some(Stopped::At(was))) = st.stopped.get(queue).copied() else {
            return false;
        };
        if Self::set_up_vring(st, queue).map(RingPlace::of) != Some(was) {
            return false;
        }
        st.stopped[queue] = None;
        limited!(Level::Debug, "queue {queue} resumed where it stopped");
        true
    }

    /// [`ring_running`](Self::ring_running) for any queue.
    pub(super) fn queue_running(st: &State, queue: usize) -> bool {
        st.stopped.get(queue).is_some_and(Option::is_none)
    }

    /// `queue`'s vring, if QEMU set it up (kick fd given: ready) and enabled it.
    pub(super) fn set_up_vring(st: &State, queue: usize) -> Option<&VringRwLock> {
        st.vrings
            .as_ref()
            .and_then(|v| v.get(queue))
            .filter(|v| set_up(v))
    }
}
