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
        // Stopped again before the vring worker took the event of its start (QEMU may
        // stop a new driver's rings right after it enabled them: a VM paused just
        // after a reboot): a ring set up elsewhere meanwhile is a new driver's all the
        // same. Were only this stop's place kept, a start there would resume the old
        // driver's streams, and complete their I/O, on the new driver's ring.
        let released = match (st.stopped.get(queue).copied().flatten(), place) {
            (Some(was), Some(now)) if was != Stopped::At(now) => {
                Self::new_driver(&mut st, queue, was)
            }
            _ => Vec::new(),
        };
        if let Some(slot) = st.stopped.get_mut(queue) {
            *slot = place.map(Stopped::At);
        }
        for dir in streams_of(queue) {
            st.stream(*dir).changed();
        }
        drop(st);
        self.notify();
        for ev in released {
            self.listeners.emit(ev);
        }
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
        if was == Stopped::At(now) {
            // The streams' clocks ran on through the stop (their periods passed
            // with nothing completed): they go on as they are, and a pacer
            // about to serve a period is not cut short.
            limited!(Level::Debug, "queue {queue} resumed where it stopped");
            return Some(Vec::new());
        }
        Some(Self::new_driver(st, queue, was))
    }

    /// `queue`, stopped as `was` says, belongs to a new driver now: its streams start
    /// over (unless a device reset did that already). Returns what they lost, for the
    /// listeners.
    fn new_driver(st: &mut State, queue: usize, was: Stopped) -> Vec<DeviceEvent> {
        st.broken[queue] = false;
        if was == Stopped::Reset {
            limited!(Level::Debug, "queue {queue} started for a new driver");
            for dir in streams_of(queue) {
                st.stream(*dir).changed();
            }
            return Vec::new();
        }
        limited!(
            Level::Info,
            "queue {queue} came back reset: the guest's driver started over"
        );
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
        streams_of(queue)
            .iter()
            .filter_map(|d| Self::reset_stream(st.stream(*d)))
            .collect()
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use virtio_snd_wire::formats::DEFAULT_PARAMS;
    use virtio_snd_wire::NUM_QUEUES;
    use vm_memory::{GuestAddress, GuestMemoryAtomic};

    use super::*;
    use crate::io::GuestMem;
    use crate::pcm::PcmState;

    /// A card with four rings set up and enabled, and its capture stream running.
    fn running_capture() -> (Card, Vec<VringRwLock>) {
        let mem =
            GuestMemoryAtomic::new(GuestMem::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
        let vrings: Vec<VringRwLock> = (0..NUM_QUEUES as u64)
            .map(|q| {
                let v = VringRwLock::new(mem.clone(), 64).unwrap();
                let base = q * 0x2000;
                v.set_queue_size(64);
                v.set_queue_info(base, base + 0x400, base + 0x800).unwrap();
                v.set_queue_ready(true);
                v.set_enabled(true);
                v
            })
            .collect();
        let card = Card::new().unwrap();
        card.set_vrings(&vrings);
        let mut st = card.lock();
        let s = st.stream(Direction::Capture);
        s.params = Some(DEFAULT_PARAMS);
        s.state = PcmState::Running;
        drop(st);
        (card, vrings)
    }

    fn capture_state(card: &Card) -> PcmState {
        card.lock().stream(Direction::Capture).state
    }

    #[test]
    fn a_ring_set_up_elsewhere_and_stopped_again_unseen_is_a_new_drivers() {
        let (card, vrings) = running_capture();
        let events = Arc::new(Mutex::new(Vec::new()));
        let e = events.clone();
        card.subscribe(Arc::new(move |ev: &DeviceEvent| {
            e.lock().unwrap().push(ev.clone())
        }));
        let rx = &vrings[QUEUE_RX];
        // The old driver had queued two periods.
        rx.set_queue_next_avail(2);
        card.ring_stopped(QUEUE_RX);
        // The new driver's ring, in the same memory from index 0: stopped again before
        // its start was seen, then started where that second stop found it.
        rx.set_queue_next_avail(0);
        card.ring_stopped(QUEUE_RX);
        assert_eq!(capture_state(&card), PcmState::Idle);
        card.ring_started(QUEUE_RX);
        assert_eq!(capture_state(&card), PcmState::Idle);
        assert!(Card::ring_running(&card.lock(), Direction::Capture));
        assert!(matches!(
            events.lock().unwrap().as_slice(),
            [DeviceEvent::Stream {
                direction: Direction::Capture,
                request: crate::pcm::PcmRequest::Release,
                params: None,
            }]
        ));
    }

    #[test]
    fn a_ring_stopped_twice_in_one_place_resumes() {
        let (card, vrings) = running_capture();
        vrings[QUEUE_RX].set_queue_next_avail(2);
        card.ring_stopped(QUEUE_RX);
        card.ring_stopped(QUEUE_RX);
        card.ring_started(QUEUE_RX);
        assert_eq!(capture_state(&card), PcmState::Running);
        assert!(Card::ring_running(&card.lock(), Direction::Capture));
    }
}
