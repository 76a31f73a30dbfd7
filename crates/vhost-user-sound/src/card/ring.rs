//! The tx and rx rings: taking the guest's I/O chains, answering the ones that cannot
//! be served, putting completions on the used ring and interrupting the guest. Kicks
//! are suppressed while a running stream looks at its ring at every period anyway.

use log::Level;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;

use virtio_snd_wire as wire;

use super::{Card, Direction, Pacing, State};
use crate::io::{self, IoMessage, Malformed, SegList};
use crate::log_limit::limited;
use crate::pcm::PcmState;

/// Chains taken from one queue in one look at its ring: four times what QEMU's
/// 64-entry queues can hold.
const POLL_BUDGET: usize = 256;

impl Card {
    /// The vring worker's answer to a kick on `dir`'s queue.
    pub(crate) fn serve_ring(&self, dir: Direction) {
        let mut st = self.lock();
        let before = st.stream(dir).pending.len();
        self.poll_ring(&mut st, dir);
        let more = st.stream(dir).pending.len() > before;
        let waiters = st.data_waiters > 0;
        drop(st);
        if dir == Direction::Playback && more && waiters {
            self.data.notify_all();
        }
    }

    /// Takes every chain the guest made available on `dir`'s queue, then tells the
    /// guest whether to kick for the next one. A running, paced stream with I/O queued
    /// looks at its ring at every period anyway, so kicks would only wake the vring worker
    /// (and, under QEMU, cost a VM exit) for nothing: they are asked for only while
    /// the device could otherwise miss new I/O. The card lock is held throughout, so
    /// chains enter `pending` in ring order whichever thread takes them.
    pub(super) fn poll_ring(&self, st: &mut State, dir: Direction) {
        if !Self::ring_running(st, dir) {
            return;
        }
        let Some(vring) = Self::set_up_vring(st, dir.queue()).cloned() else {
            return;
        };
        let Some(atomic) = st.mem.clone() else {
            return;
        };
        let mem = atomic.memory();
        if !Self::queue_usable(st, dir.queue(), &vring, &*mem) {
            return;
        }
        // A guest that re-queues every refused chain at once could otherwise keep
        // this loop, and the card lock, forever; a real one never queues more than its
        // ring holds between two periods.
        let mut budget = POLL_BUDGET;
        loop {
            while budget > 0 {
                let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(&*mem);
                let Some(chain) = chain else { break };
                budget -= 1;
                let head = chain.head_index();
                let parsed = io::parse(chain, &mem, dir == Direction::Playback);
                self.accept(st, dir, parsed, head);
            }
            if budget == 0 {
                limited!(
                    Level::Debug,
                    "{} queue: chain budget spent, the rest waits",
                    dir.name()
                );
                break;
            }
            let s = st.stream(dir);
            // On demand, a kick is how the guest says it has caught up (see
            // `wait_playback`), so it always kicks.
            let polled = s.state == PcmState::Running && s.pacing != Pacing::OnDemand;
            if polled && !s.pending.is_empty() {
                if let Err(e) = vring.disable_notification() {
                    limited!(
                        Level::Debug,
                        "{} queue: cannot suppress kicks: {e}",
                        dir.name()
                    );
                }
                break;
            }
            match vring.enable_notification() {
                // The guest queued more while kicks were being turned back on (or
                // broke its ring meanwhile, which stops the queue rather than this
                // loop).
                Ok(true) if Self::queue_usable(st, dir.queue(), &vring, &*mem) => continue,
                Ok(true) => break,
                Ok(false) => break,
                Err(e) => {
                    limited!(
                        Level::Debug,
                        "{} queue: cannot ask for kicks: {e}",
                        dir.name()
                    );
                    break;
                }
            }
        }
        Self::signal(st, dir);
    }

    /// Takes one tx/rx chain. Chains that cannot be served are answered (or returned
    /// unused) at once; good ones wait for their period.
    fn accept(
        &self,
        st: &mut State,
        dir: Direction,
        parsed: Result<IoMessage, Malformed>,
        head: u16,
    ) {
        let msg = match parsed {
            Ok(msg) => msg,
            Err(Malformed::NoStatus) => {
                limited!(
                    Level::Debug,
                    "{} chain {head} has no status area: returned unused",
                    dir.name()
                );
                Self::push_used(st, dir, head, 0);
                return;
            }
            Err(Malformed::Reply { status, reason }) => {
                limited!(Level::Debug, "{} chain {head}: {reason}", dir.name());
                Self::fail(st, dir, head, &status, wire::S_BAD_MSG);
                return;
            }
        };
        // A guest can publish one head index again and again: never hold more than
        // its ring can.
        let ring_size =
            Self::vring(st, dir).map_or(0, |v| usize::from(v.get_ref().get_queue().size()));
        let s = st.stream(dir);
        let period_bytes = s.params.map_or(0, |p| p.period_bytes);
        let reason = if msg.stream_id != dir.stream_id() {
            Some("stream id does not belong to this queue")
        } else if !s.state.accepts_io() {
            Some("stream is not prepared")
        } else if msg.data_len() == 0 || msg.data_len() % s.frame_bytes() != 0 {
            Some("payload is not a whole number of frames")
        } else if msg.data_len() > period_bytes {
            // Descriptors may alias all of guest RAM many times over; a message is
            // copied whole, so it must stay the size the guest said its periods are.
            Some("payload is larger than a period")
        } else if s.pending.len() >= ring_size {
            Some("more messages queued than the ring holds")
        } else {
            None
        };
        if let Some(reason) = reason {
            limited!(Level::Debug, "{} chain {head}: {reason}", dir.name());
            Self::fail(st, dir, head, &msg.status, wire::S_IO_ERR);
            return;
        }
        s.pending.push_back(msg);
    }

    fn fail(st: &State, dir: Direction, head: u16, status: &SegList, code: u32) {
        let written = st
            .mem
            .as_ref()
            .is_some_and(|m| io::write_status(&m.memory(), status, code, 0).is_ok());
        Self::push_used(st, dir, head, if written { status.len() } else { 0 });
    }

    fn vring(st: &State, dir: Direction) -> Option<&VringRwLock> {
        st.vrings.as_ref().and_then(|v| v.get(dir.queue()))
    }

    /// Puts a chain on the used ring; [`signal`](Self::signal) tells the guest.
    fn push_used(st: &State, dir: Direction, head: u16, len: u32) {
        let Some(vring) = Self::vring(st, dir) else {
            return;
        };
        if let Err(e) = vring.add_used(head, len) {
            limited!(
                Level::Warn,
                "{} queue: cannot return descriptor {head}: {e}",
                dir.name()
            );
        }
    }

    /// Interrupts the guest for what was put on `dir`'s used ring since the last
    /// signal, unless it said it does not need one (EVENT_IDX).
    fn signal(st: &State, dir: Direction) {
        let Some(vring) = Self::vring(st, dir) else {
            return;
        };
        if !vring.needs_notification().unwrap_or(true) {
            return;
        }
        if let Err(e) = vring.signal_used_queue() {
            limited!(
                Level::Debug,
                "{} queue: cannot signal the guest: {e}",
                dir.name()
            );
        }
    }

    /// Completes `msg`: its status goes into guest memory and the descriptor back on
    /// the used ring. A capture message's data was written already, if `data_ok`.
    pub(super) fn complete(
        st: &State,
        dir: Direction,
        msg: &IoMessage,
        status: u32,
        latency_bytes: u32,
        data_ok: bool,
    ) {
        let Some(mem) = st.mem.as_ref().map(|m| m.memory()) else {
            return;
        };
        let ok = data_ok && io::write_status(&mem, &msg.status, status, latency_bytes).is_ok();
        let len = if ok {
            msg.used_len(dir == Direction::Playback)
        } else {
            limited!(
                Level::Warn,
                "{} chain {}: guest memory went away",
                dir.name(),
                msg.head
            );
            0
        };
        Self::push_used(st, dir, msg.head, len);
    }
}
