//! The sound card's state: two PCM streams (playback and capture on one ALSA device),
//! the I/O the guest has queued on them, and the connection they are served on.
//!
//! One mutex guards it all. Everything done under it is short (a period's copy at
//! most), so control requests are answered within microseconds whatever the pipeline
//! is doing; GStreamer is never called with the lock held.
//!
//! Where each part lives: the rings and the guest's notifications in `ring`, the
//! completion of one period in `period`, the card's own pacer in `pacer`, rings QEMU
//! stops and starts in `pause`, rings the guest broke in `broken`, what the elements
//! call per buffer in `playback` and `capture` (with the capture queue and its
//! timeline in `capture_fifo`), the mixer's controls and their events in `controls`,
//! and the fan-out of [`DeviceEvent`]s in `events`.

mod broken;
mod capture;
mod capture_fifo;
mod controls;
mod events;
mod pacer;
mod pause;
mod period;
mod playback;
mod ring;
mod stream;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use log::Level;
use vhost_user_backend::VringRwLock;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};

use virtio_snd_wire as wire;
use virtio_snd_wire::formats::PcmParams;

use crate::clock::{MonotonicClock, PacerClock};
use crate::io::{GuestMem, IoMessage};
use crate::log_limit::limited;
use crate::mixer::Mixer;
use crate::pcm::{PcmRequest, PcmState, Transition};
pub use capture::Captured;
pub use events::{DeviceEvent, Listener, MixerChange};
pub use pacer::{FIRST_CAPTURE_WAIT_NS, HELD_NS};
pub use playback::Playback;
use stream::Stream;
pub use stream::{Direction, Pacing, StreamSnapshot};

pub(crate) struct State {
    streams: [Stream; 2],
    vrings: Option<Vec<VringRwLock>>,
    mem: Option<GuestMemoryAtomic<GuestMem>>,
    connected: bool,
    /// Per queue: where the ring stood when QEMU stopped it, until it runs again.
    stopped: [Option<pause::Stopped>; wire::NUM_QUEUES],
    /// Per queue: the guest broke its ring (see `broken`).
    broken: [bool; wire::NUM_QUEUES],
    pub(crate) shutdown: bool,
    /// The card's volumes and switches (see `controls`).
    mixer: Mixer,
    /// The card offers its control elements to the next connection.
    controls: bool,
    /// The guest's driver took them.
    controls_acked: bool,
    /// Controls whose change the guest has not been told yet, one bit per id.
    unsent_controls: u32,
    /// Threads in `wait_playback`: queuing playback I/O only notifies when there are
    /// any (a condvar notification is a system call even when nobody waits).
    data_waiters: usize,
}

impl State {
    fn stream(&mut self, dir: Direction) -> &mut Stream {
        &mut self.streams[dir.index()]
    }
}

/// The card shared by the vhost-user backend threads, the pacers and the elements.
pub struct Card {
    state: Mutex<State>,
    cond: Condvar,
    /// Only `wait_playback` waits here: new guest I/O concerns nobody else, so queuing
    /// it does not wake the pacers. Notified along with `cond` for everything else.
    data: Condvar,
    listeners: events::Listeners,
}

impl Card {
    /// Fails if the kernel gives no timerfd for the stand-by pacers.
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Card {
            state: Mutex::new(State {
                streams: [
                    Stream::new(Direction::Playback)?,
                    Stream::new(Direction::Capture)?,
                ],
                vrings: None,
                mem: None,
                connected: false,
                stopped: [None; wire::NUM_QUEUES],
                broken: [false; wire::NUM_QUEUES],
                shutdown: false,
                mixer: Mixer::default(),
                controls: false,
                controls_acked: false,
                unsent_controls: 0,
                data_waiters: 0,
            }),
            cond: Condvar::new(),
            data: Condvar::new(),
            listeners: events::Listeners::default(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every thread waiting on the card's state.
    fn notify(&self) {
        self.cond.notify_all();
        self.data.notify_all();
    }

    /// Wakes everything blocked on the card (pacers, elements waiting for data).
    pub fn wake(&self) {
        let mut st = self.lock();
        for s in st.streams.iter_mut() {
            s.clock.interrupt();
            s.standby.ring_in(Duration::ZERO);
        }
        drop(st);
        self.notify();
    }

    /// Calls `f` with every [`DeviceEvent`] from now on; returns the id that
    /// [`unsubscribe`](Self::unsubscribe) takes.
    pub fn subscribe(&self, f: Listener) -> u64 {
        self.listeners.add(f)
    }

    /// Stops calling the listener `id`.
    pub fn unsubscribe(&self, id: u64) {
        self.listeners.remove(id);
    }

    // ---- connection life cycle (backend and server threads) ----

    pub(crate) fn set_memory(&self, mem: GuestMemoryAtomic<GuestMem>) {
        self.lock().mem = Some(mem);
    }

    /// The frontend's memory cannot be used: nothing touches guest RAM until it sends
    /// a table that can.
    pub(crate) fn forget_memory(&self) {
        self.lock().mem = None;
    }

    pub(crate) fn memory(&self) -> Option<GuestMemoryAtomic<GuestMem>> {
        self.lock().mem.clone()
    }

    pub(crate) fn set_vrings(&self, vrings: &[VringRwLock]) {
        let mut st = self.lock();
        if st.vrings.is_none() {
            st.vrings = Some(vrings.to_vec());
        }
    }

    pub(crate) fn connected(&self) {
        self.lock().connected = true;
        self.notify();
        self.listeners.emit(DeviceEvent::Connected);
    }

    /// The frontend is gone: its rings and memory with it, so queued I/O is forgotten
    /// rather than completed.
    pub(crate) fn disconnected(&self) {
        self.reset_with(|st| {
            st.connected = false;
            st.controls_acked = false;
            st.vrings = None;
            st.mem = None;
            st.stopped = [None; wire::NUM_QUEUES];
        });
        self.listeners.emit(DeviceEvent::Disconnected);
    }

    /// RESET_DEVICE: the guest driver went away, so the streams start over. Rings
    /// QEMU stopped stay stopped until it starts them again for the new driver (it
    /// resets a stopped device), but they no longer belong to the old one.
    pub(crate) fn reset(&self) {
        self.reset_with(|st| {
            for s in st.stopped.iter_mut().flatten() {
                *s = pause::Stopped::Reset;
            }
        });
    }

    /// Resets both streams (and forgets broken rings) after `also`, under one lock,
    /// and tells the listeners which streams the guest lost.
    fn reset_with(&self, also: impl FnOnce(&mut State)) {
        let released = {
            let mut st = self.lock();
            also(&mut st);
            st.broken = [false; wire::NUM_QUEUES];
            st.unsent_controls = 0;
            Direction::ALL
                .iter()
                .filter_map(|d| Self::reset_stream(st.stream(*d)))
                .collect::<Vec<_>>()
        };
        self.notify();
        for ev in released {
            self.listeners.emit(ev);
        }
    }

    fn reset_stream(s: &mut Stream) -> Option<DeviceEvent> {
        let was = s.state;
        s.epoch = s.epoch.wrapping_add(1);
        s.pending.clear();
        s.capture.clear();
        s.state = PcmState::Idle;
        s.params = None;
        s.changed();
        (was != PcmState::Idle).then_some(DeviceEvent::Stream {
            direction: s.dir,
            request: PcmRequest::Release,
            params: None,
        })
    }

    // ---- control requests (backend thread) ----

    /// Applies a PCM control request and answers with a virtio-snd status code.
    pub(crate) fn pcm_request(
        &self,
        stream_id: u32,
        req: PcmRequest,
        params: Option<PcmParams>,
    ) -> u32 {
        let Some(dir) = Direction::from_stream_id(stream_id) else {
            return wire::S_BAD_MSG;
        };
        let ev_params = {
            let mut st = self.lock();
            if req == PcmRequest::Release {
                // The period in copy is returned before RELEASE is answered too.
                st = self.copy_done(st, dir);
            }
            let s = st.stream(dir);
            let applied = s.state.apply(req).filter(|(next, _)| {
                // A stream released before it ever had parameters cannot run.
                *next != PcmState::Prepared || s.params.is_some() || params.is_some()
            });
            let Some((next, transition)) = applied else {
                limited!(
                    Level::Debug,
                    "{} stream: {req:?} refused in state {}",
                    dir.name(),
                    s.state.name()
                );
                return wire::S_BAD_MSG;
            };
            limited!(
                Level::Debug,
                "{} stream: {req:?} ({} -> {}, {} queued)",
                dir.name(),
                s.state.name(),
                next.name(),
                s.pending.len()
            );
            if transition == Transition::ReturnPending {
                self.return_pending(&mut st, dir);
            }
            let s = st.stream(dir);
            if let Some(p) = params {
                s.params = Some(p);
            }
            s.state = next;
            if req == PcmRequest::SetParams {
                // Queued audio is in the old format.
                s.capture.clear();
            }
            let start = (req == PcmRequest::Start).then(|| s.clock.now());
            if let Some(now) = start {
                s.periods = 0;
                s.capture.start(now);
            }
            s.changed();
            if let (Some(now), Direction::Capture) = (start, dir) {
                // The first period's wait for upstream counts from START.
                s.ticked(now);
            }
            let params = s.params;
            self.poll_ring(&mut st, dir);
            params
        };
        self.notify();
        self.listeners.emit(DeviceEvent::Stream {
            direction: dir,
            request: req,
            params: ev_params,
        });
        wire::S_OK
    }

    /// Hands every queued message of `dir` back to the guest, as RELEASE requires
    /// before its own reply. Unplayed playback is simply returned; capture buffers are
    /// returned full of silence so that the guest's pointer stays period-aligned.
    fn return_pending(&self, st: &mut State, dir: Direction) {
        let pending: Vec<IoMessage> = st.stream(dir).pending.drain(..).collect();
        let mem = st.mem.as_ref().map(|m| m.memory());
        for msg in pending {
            let data_ok = dir == Direction::Playback || {
                let n = msg.data_len() as usize;
                let silence = st
                    .stream(dir)
                    .params
                    .map_or_else(|| vec![0; n], |p| p.silence(n));
                mem.as_ref()
                    .is_some_and(|m| msg.data.write(m, &silence).is_ok())
            };
            Self::complete(st, dir, &msg, wire::S_OK, 0, data_ok);
        }
    }

    // ---- element settings ----

    /// Where `dir` stands now.
    pub fn snapshot(&self, dir: Direction) -> StreamSnapshot {
        let mut st = self.lock();
        let connected = st.connected;
        let s = st.stream(dir);
        StreamSnapshot {
            state: s.state,
            params: s.params,
            connected,
            periods: s.periods,
        }
    }

    /// An element takes over (or gives back) the completion of `dir`'s periods.
    /// Returns who completed them until now.
    pub fn set_pacing(&self, dir: Direction, pacing: Pacing) -> Pacing {
        let mut st = self.lock();
        let s = st.stream(dir);
        let was = s.pacing;
        if s.pacing != pacing {
            s.pacing = pacing;
            s.changed();
            self.poll_ring(&mut st, dir);
        }
        drop(st);
        self.notify();
        was
    }

    /// Paces `dir` by `clock` from now on; `None` goes back to the monotonic clock.
    pub fn set_clock(&self, dir: Direction, clock: Option<Arc<dyn PacerClock>>) {
        let mut st = self.lock();
        let s = st.stream(dir);
        s.clock.interrupt();
        s.clock = clock.unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        // Capture times were on the old clock: upstream's next audio places itself.
        s.capture.clear();
        s.changed();
        drop(st);
        self.notify();
    }

    /// How long audio takes from a completed playback period to the host's output;
    /// told to the guest as each period's `latency_bytes`.
    pub fn set_playback_latency(&self, ns: u64) {
        self.lock()
            .stream(Direction::Playback)
            .downstream_latency_ns = ns;
    }
}
