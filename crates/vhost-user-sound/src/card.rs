//! The sound card's state: two PCM streams (playback and capture on one ALSA device),
//! the I/O the guest has queued on them, and the connection they are served on.
//!
//! One mutex guards it all. Everything done under it is short (a period's copy at
//! most), so control requests are answered within microseconds whatever the pipeline
//! is doing; GStreamer is never called with the lock held.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::{debug, warn};
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};

use crate::clock::{MonotonicClock, PacerClock};
use crate::io::{self, GuestMem, IoMessage, Malformed, SegList};
use crate::pcm::{PcmRequest, PcmState, Transition};
use virtio_snd_wire::formats::{self, PcmParams};
use virtio_snd_wire::{self as wire, D_INPUT, D_OUTPUT};

/// Chains taken from one queue in one look at its ring: four times what QEMU's
/// 64-entry queues can hold.
const POLL_BUDGET: usize = 256;

/// The two streams the card has, in stream-id order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Playback,
    Capture,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Playback, Direction::Capture];

    pub fn stream_id(self) -> u32 {
        match self {
            Direction::Playback => 0,
            Direction::Capture => 1,
        }
    }

    pub fn from_stream_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(Direction::Playback),
            1 => Some(Direction::Capture),
            _ => None,
        }
    }

    pub fn wire(self) -> u8 {
        match self {
            Direction::Playback => D_OUTPUT,
            Direction::Capture => D_INPUT,
        }
    }

    pub fn queue(self) -> usize {
        match self {
            Direction::Playback => wire::QUEUE_TX,
            Direction::Capture => wire::QUEUE_RX,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Playback => "playback",
            Direction::Capture => "capture",
        }
    }

    fn index(self) -> usize {
        self.stream_id() as usize
    }
}

/// Who completes a stream's periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// The card's own pacer thread, on the stream's clock.
    Internal,
    /// An element, on its own clock (vhostsndsrc in PLAYING).
    Element,
    /// An element, as fast as it takes them (vhostsndsrc with `is-live=false`).
    OnDemand,
}

/// What happened on the card, for the elements to tell the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    Connected,
    Disconnected,
    Stream {
        direction: Direction,
        request: PcmRequest,
        params: Option<PcmParams>,
    },
}

/// A stream as an element sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSnapshot {
    pub state: PcmState,
    pub params: Option<PcmParams>,
    pub connected: bool,
    /// Guest period boundaries completed since START (pacing tests count these).
    pub periods: u64,
}

struct Stream {
    dir: Direction,
    state: PcmState,
    params: Option<PcmParams>,
    pending: VecDeque<IoMessage>,
    pacing: Pacing,
    clock: Arc<dyn PacerClock>,
    /// Bumped whenever what the pacer waits for changes.
    generation: u64,
    /// Start of the current run on `clock`, and frames completed since.
    origin: Option<u64>,
    frames_done: u64,
    periods: u64,
    /// Capture only: audio from vhostsndsink waiting for the guest.
    fifo: VecDeque<u8>,
    /// Capture only: the FIFO holds enough to ride out upstream's jitter.
    primed: bool,
    /// Capture only: the largest piece of audio upstream delivers at once.
    max_chunk: usize,
    /// Playback only: when a period was last completed.
    last_completion: Option<Instant>,
    /// Playback only: what the pipeline behind vhostsndsrc adds, told to the guest.
    downstream_latency_ns: u64,
    scratch: Vec<u8>,
}

impl Stream {
    fn new(dir: Direction) -> Self {
        Stream {
            dir,
            state: PcmState::Idle,
            params: None,
            pending: VecDeque::new(),
            pacing: Pacing::Internal,
            clock: Arc::new(MonotonicClock::new()),
            generation: 0,
            origin: None,
            frames_done: 0,
            periods: 0,
            fifo: VecDeque::new(),
            primed: false,
            max_chunk: 0,
            last_completion: None,
            downstream_latency_ns: 0,
            scratch: Vec::new(),
        }
    }

    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.origin = None;
        self.frames_done = 0;
        self.clock.interrupt();
    }

    /// Capture audio queued before the guest is served: enough for one period plus
    /// upstream's largest chunk plus 10 ms of scheduling jitter, so that the queue
    /// cannot run dry at a period boundary once it has been reached.
    fn cushion(&self, p: &PcmParams) -> usize {
        let frame = p.frame_bytes() as usize;
        let jitter = (p.rate_hz() / 100) as usize * frame;
        p.period_bytes as usize + self.max_chunk.div_ceil(frame) * frame + jitter
    }

    fn frame_bytes(&self) -> u32 {
        self.params.map_or(1, |p| p.frame_bytes())
    }
}

pub(crate) struct State {
    streams: [Stream; 2],
    vrings: Option<Vec<VringRwLock>>,
    mem: Option<GuestMemoryAtomic<GuestMem>>,
    connected: bool,
    pub(crate) shutdown: bool,
    /// Threads in `wait_playback`: queuing playback I/O only notifies when there are
    /// any (a condvar notification is a system call even when nobody waits).
    data_waiters: usize,
}

impl State {
    fn stream(&mut self, dir: Direction) -> &mut Stream {
        &mut self.streams[dir.index()]
    }
}

type Listener = Arc<dyn Fn(&DeviceEvent) + Send + Sync>;

/// The card shared by the vhost-user backend threads, the pacers and the elements.
pub struct Card {
    state: Mutex<State>,
    cond: Condvar,
    /// Only `wait_playback` waits here: new guest I/O concerns nobody else, so queuing
    /// it does not wake the pacers. Notified along with `cond` for everything else.
    data: Condvar,
    listeners: Mutex<Vec<(u64, Listener)>>,
    next_listener: Mutex<u64>,
}

/// What a playback period turned into.
pub enum Playback {
    /// A guest period, now completed to the guest.
    Data(Vec<u8>, PcmParams),
    /// Nothing to play: the guest is not running or under-ran.
    Idle,
}

impl Card {
    pub fn new() -> Self {
        Card {
            state: Mutex::new(State {
                streams: [
                    Stream::new(Direction::Playback),
                    Stream::new(Direction::Capture),
                ],
                vrings: None,
                mem: None,
                connected: false,
                shutdown: false,
                data_waiters: 0,
            }),
            cond: Condvar::new(),
            data: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
            next_listener: Mutex::new(0),
        }
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
        }
        drop(st);
        self.notify();
    }

    pub fn subscribe(&self, f: Listener) -> u64 {
        let mut next = self.next_listener.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        let id = *next;
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, f));
        id
    }

    pub fn unsubscribe(&self, id: u64) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != id);
    }

    fn emit(&self, ev: DeviceEvent) {
        let listeners: Vec<Listener> = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        for l in listeners {
            l(&ev);
        }
    }

    // ---- connection life cycle (backend and server threads) ----

    pub fn set_memory(&self, mem: GuestMemoryAtomic<GuestMem>) {
        self.lock().mem = Some(mem);
    }

    pub fn memory(&self) -> Option<GuestMemoryAtomic<GuestMem>> {
        self.lock().mem.clone()
    }

    pub fn set_vrings(&self, vrings: &[VringRwLock]) {
        let mut st = self.lock();
        if st.vrings.is_none() {
            st.vrings = Some(vrings.to_vec());
        }
    }

    pub fn connected(&self) {
        self.lock().connected = true;
        self.notify();
        self.emit(DeviceEvent::Connected);
    }

    /// The frontend is gone: its rings and memory with it, so queued I/O is forgotten
    /// rather than completed.
    pub fn disconnected(&self) {
        let released = {
            let mut st = self.lock();
            st.connected = false;
            st.vrings = None;
            st.mem = None;
            Direction::ALL
                .iter()
                .filter_map(|d| Self::reset_stream(st.stream(*d)))
                .collect::<Vec<_>>()
        };
        self.notify();
        for ev in released {
            self.emit(ev);
        }
        self.emit(DeviceEvent::Disconnected);
    }

    /// A queue was stopped (GET_VRING_BASE) or the device reset: the guest driver is
    /// going away, so its streams start over.
    pub fn reset(&self, dirs: &[Direction]) {
        let released = {
            let mut st = self.lock();
            dirs.iter()
                .filter_map(|d| Self::reset_stream(st.stream(*d)))
                .collect::<Vec<_>>()
        };
        self.notify();
        for ev in released {
            self.emit(ev);
        }
    }

    fn reset_stream(s: &mut Stream) -> Option<DeviceEvent> {
        let was = s.state;
        s.pending.clear();
        s.fifo.clear();
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
    pub fn pcm_request(&self, stream_id: u32, req: PcmRequest, params: Option<PcmParams>) -> u32 {
        let Some(dir) = Direction::from_stream_id(stream_id) else {
            return wire::S_BAD_MSG;
        };
        let ev_params = {
            let mut st = self.lock();
            let s = st.stream(dir);
            let applied = s.state.apply(req).filter(|(next, _)| {
                // A stream released before it ever had parameters cannot run.
                *next != PcmState::Prepared || s.params.is_some() || params.is_some()
            });
            let Some((next, transition)) = applied else {
                debug!(
                    "{} stream: {req:?} refused in state {}",
                    dir.name(),
                    s.state.name()
                );
                return wire::S_BAD_MSG;
            };
            debug!(
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
                s.fifo.clear();
                s.max_chunk = 0;
            }
            if req == PcmRequest::Start {
                s.periods = 0;
                s.primed = false;
            }
            s.changed();
            let params = s.params;
            self.poll_ring(&mut st, dir);
            params
        };
        self.notify();
        self.emit(DeviceEvent::Stream {
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
        for msg in pending {
            let data = if dir == Direction::Capture {
                Some(silence(st.stream(dir).params, msg.data_len() as usize))
            } else {
                None
            };
            Self::complete(st, dir, &msg, wire::S_OK, 0, data.as_deref());
        }
    }

    // ---- I/O queues ----

    /// The vring worker's answer to a kick on `dir`'s queue.
    pub fn serve_ring(&self, dir: Direction) {
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
    fn poll_ring(&self, st: &mut State, dir: Direction) {
        let Some(vring) = st
            .vrings
            .as_ref()
            .and_then(|v| v.get(dir.queue()))
            .filter(|v| {
                let v = v.get_ref();
                v.is_enabled() && v.get_queue().ready()
            })
            .cloned()
        else {
            return;
        };
        let Some(atomic) = st.mem.clone() else {
            return;
        };
        let mem = atomic.memory();
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
                debug!("{} queue: chain budget spent, the rest waits", dir.name());
                break;
            }
            let s = st.stream(dir);
            // On demand, a kick is how the guest says it has caught up (see
            // `wait_playback`), so it always kicks.
            let polled = s.state == PcmState::Running && s.pacing != Pacing::OnDemand;
            if polled && !s.pending.is_empty() {
                if let Err(e) = vring.disable_notification() {
                    debug!("{} queue: cannot suppress kicks: {e}", dir.name());
                }
                break;
            }
            match vring.enable_notification() {
                // The guest queued more while kicks were being turned back on.
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    debug!("{} queue: cannot ask for kicks: {e}", dir.name());
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
                debug!(
                    "{} chain {head} has no status area: returned unused",
                    dir.name()
                );
                Self::push_used(st, dir, head, 0);
                return;
            }
            Err(Malformed::Reply { status, reason }) => {
                debug!("{} chain {head}: {reason}", dir.name());
                Self::fail(st, dir, head, &status, wire::S_BAD_MSG);
                return;
            }
        };
        let s = st.stream(dir);
        let reason = if msg.stream_id != dir.stream_id() {
            Some("stream id does not belong to this queue")
        } else if !s.state.accepts_io() {
            Some("stream is not prepared")
        } else if msg.data_len() == 0 || msg.data_len() % s.frame_bytes() != 0 {
            Some("payload is not a whole number of frames")
        } else {
            None
        };
        if let Some(reason) = reason {
            debug!("{} chain {head}: {reason}", dir.name());
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
            warn!("{} queue: cannot return descriptor {head}: {e}", dir.name());
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
            debug!("{} queue: cannot signal the guest: {e}", dir.name());
        }
    }

    /// Completes `msg`: capture data (if any) and the status go into guest memory, then
    /// the descriptor goes back on the used ring.
    fn complete(
        st: &State,
        dir: Direction,
        msg: &IoMessage,
        status: u32,
        latency_bytes: u32,
        capture: Option<&[u8]>,
    ) {
        let Some(mem) = st.mem.as_ref().map(|m| m.memory()) else {
            return;
        };
        let ok = capture.is_none_or(|d| msg.data.write(&mem, d).is_ok())
            && io::write_status(&mem, &msg.status, status, latency_bytes).is_ok();
        let len = if ok {
            msg.used_len(dir == Direction::Playback)
        } else {
            warn!("{} chain {}: guest memory went away", dir.name(), msg.head);
            0
        };
        Self::push_used(st, dir, msg.head, len);
    }

    // ---- periods (pacers and elements) ----

    /// Plays or records one period of `dir` now, appending a playback period's audio to
    /// `out` if given. Returns the frames it covered and whether a guest period was
    /// completed; the caller then calls [`poll_ring`](Self::poll_ring), once for a
    /// batch of periods.
    fn run_period(&self, st: &mut State, dir: Direction, out: Option<&mut Vec<u8>>) -> (u64, bool) {
        if st.stream(dir).pending.is_empty() {
            // Kicks are only suppressed while something is queued, but one may be
            // on its way to the vring worker.
            self.poll_ring(st, dir);
        }
        let s = st.stream(dir);
        let Some(params) = s.params else {
            return (0, false);
        };
        let frame = u64::from(params.frame_bytes());
        let period_frames = u64::from(params.period_bytes) / frame;
        s.periods += 1;
        let Some(msg) = s.pending.pop_front() else {
            if dir == Direction::Capture {
                // The guest is late: keep the sink's audio in real time anyway.
                let n = (period_frames * frame) as usize;
                let n = n.min(s.fifo.len());
                s.fifo.drain(..n);
            }
            return (period_frames, false);
        };
        let frames = u64::from(msg.data_len()) / frame;
        let mem = st.mem.as_ref().map(|m| m.memory());
        let s = st.stream(dir);
        match dir {
            Direction::Playback => {
                let latency = (s.downstream_latency_ns as u128 * params.byte_rate() as u128
                    / 1_000_000_000) as u32;
                if let Some(out) = out {
                    let at = out.len();
                    let n = msg.data_len() as usize;
                    out.resize(at + n, 0);
                    let read = mem
                        .as_deref()
                        .is_some_and(|m| msg.data.read(m, &mut out[at..]).is_ok());
                    if !read {
                        out.truncate(at);
                        out.extend_from_slice(&silence(Some(params), n));
                    }
                }
                Self::complete(st, dir, &msg, wire::S_OK, latency, None);
                st.stream(dir).last_completion = Some(Instant::now());
                (frames, true)
            }
            Direction::Capture => {
                let n = msg.data_len() as usize;
                let mut buf = std::mem::take(&mut s.scratch);
                buf.clear();
                // Upstream delivers in chunks and with jitter: audio is handed to the
                // guest only once a cushion is queued, and after an under-run the
                // cushion is rebuilt, so the guest hears silence or continuous audio,
                // never a stutter.
                if !s.primed && s.fifo.len() >= s.cushion(&params) {
                    s.primed = true;
                }
                let have = if s.primed { n.min(s.fifo.len()) } else { 0 };
                if have < n {
                    s.primed = false;
                }
                let (a, b) = s.fifo.as_slices();
                let from_a = have.min(a.len());
                buf.extend_from_slice(&a[..from_a]);
                buf.extend_from_slice(&b[..have - from_a]);
                s.fifo.drain(..have);
                let latency = s.fifo.len() as u32;
                if have < n {
                    buf.extend_from_slice(&silence(Some(params), n - have));
                }
                Self::complete(st, dir, &msg, wire::S_OK, latency, Some(&buf));
                st.stream(dir).scratch = buf;
                (frames, true)
            }
        }
    }

    /// Internal pacer: blocks until `dir` has a period due on its clock, then serves
    /// it. Returns `false` when the card shuts down.
    pub(crate) fn pace(&self, dir: Direction) -> bool {
        let (clock, deadline, generation) = {
            let mut st = self.lock();
            loop {
                if st.shutdown {
                    return false;
                }
                let connected = st.connected;
                let s = st.stream(dir);
                if connected
                    && s.state == PcmState::Running
                    && s.pacing == Pacing::Internal
                    && s.params.is_some()
                {
                    break;
                }
                st = self.wait(st);
            }
            let s = st.stream(dir);
            let Some(params) = s.params else {
                return true;
            };
            let clock = s.clock.clone();
            let now = clock.now();
            let origin = *s.origin.get_or_insert(now);
            let frame = u64::from(params.frame_bytes());
            let next = s
                .pending
                .front()
                .map_or(u64::from(params.period_bytes), |m| u64::from(m.data_len()))
                / frame;
            let mut deadline =
                origin + formats::frames_to_ns(s.frames_done + next, params.rate_hz());
            let late = now.saturating_sub(deadline);
            if late > 4 * params.bytes_to_ns(u64::from(params.period_bytes)) {
                // Stalled far behind (host suspended, clock jumped): restart the
                // timeline instead of bursting the backlog into the guest.
                warn!(
                    "{} stream: pacer {late} ns late, resynchronising",
                    dir.name()
                );
                s.origin = Some(now);
                s.frames_done = 0;
                deadline = now + formats::frames_to_ns(next, params.rate_hz());
            }
            (clock, deadline, s.generation)
        };
        if !clock.wait_until(deadline) {
            return true;
        }
        let mut st = self.lock();
        if st.stream(dir).generation != generation || st.stream(dir).pacing != Pacing::Internal {
            return true;
        }
        let (frames, done) = self.run_period(&mut st, dir, None);
        if done {
            self.poll_ring(&mut st, dir);
        }
        st.stream(dir).frames_done += frames;
        true
    }

    // ---- element side ----

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
    pub fn set_pacing(&self, dir: Direction, pacing: Pacing) {
        let mut st = self.lock();
        let s = st.stream(dir);
        if s.pacing != pacing {
            s.pacing = pacing;
            s.changed();
            self.poll_ring(&mut st, dir);
        }
        drop(st);
        self.notify();
    }

    /// Paces `dir` by `clock` from now on; `None` goes back to the monotonic clock.
    pub fn set_clock(&self, dir: Direction, clock: Option<Arc<dyn PacerClock>>) {
        let mut st = self.lock();
        let s = st.stream(dir);
        s.clock.interrupt();
        s.clock = clock.unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        s.changed();
        drop(st);
        self.notify();
    }

    pub fn set_playback_latency(&self, ns: u64) {
        self.lock()
            .stream(Direction::Playback)
            .downstream_latency_ns = ns;
    }

    /// vhostsndsrc's period tick: completes the next guest period if the guest is
    /// playing and has one queued.
    pub fn take_playback(&self) -> Playback {
        let mut st = self.lock();
        let s = st.stream(Direction::Playback);
        let Some(params) = s.params.filter(|_| s.state == PcmState::Running) else {
            return Playback::Idle;
        };
        let mut data = Vec::with_capacity(params.period_bytes as usize);
        let (_, done) = self.run_period(&mut st, Direction::Playback, Some(&mut data));
        if !done {
            return Playback::Idle;
        }
        self.poll_ring(&mut st, Direction::Playback);
        Playback::Data(data, params)
    }

    /// Non-live vhostsndsrc: blocks until the guest has periods to play, then completes
    /// as many as it may at once (one wake-up and one interrupt for the lot), or
    /// returns `None` when `cancel` returns true (checked whenever the card is woken).
    pub fn wait_playback(&self, cancel: &dyn Fn() -> bool) -> Option<(Vec<u8>, PcmParams)> {
        let mut st = self.lock();
        loop {
            if cancel() || st.shutdown {
                return None;
            }
            let s = st.stream(Direction::Playback);
            let mut wait = None;
            if let (PcmState::Running, Some(p)) = (s.state, s.params) {
                if !s.pending.is_empty() {
                    // A Linux guest reads its position (modulo its buffer) only when
                    // it handles completions or its application writes: a whole
                    // buffer completed between two reads puts the position back where
                    // it was, ALSA sees no progress and fails the write with EIO. The
                    // guest queues a period only after ALSA saw the position within a
                    // buffer of it, so completing all but the newest queued period
                    // stays less than a buffer ahead of what ALSA saw. The newest
                    // waits for the guest to queue more, or for a period of real time.
                    let period = Duration::from_nanos(p.bytes_to_ns(u64::from(p.period_bytes)));
                    let since = s.last_completion.map_or(period, |t| t.elapsed());
                    if s.pending.len() > 1 || since >= period {
                        let mut data = Vec::new();
                        while let (_, true) =
                            self.run_period(&mut st, Direction::Playback, Some(&mut data))
                        {
                            if st.stream(Direction::Playback).pending.len() < 2 {
                                break;
                            }
                        }
                        self.poll_ring(&mut st, Direction::Playback);
                        if !data.is_empty() {
                            return Some((data, p));
                        }
                        continue;
                    }
                    wait = Some(period - since);
                }
            }
            st.data_waiters += 1;
            st = match wait {
                Some(t) => self
                    .data
                    .wait_timeout(st, t)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0),
                None => self.data.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
            st.data_waiters -= 1;
        }
    }

    /// vhostsndsink: queues audio for the guest's capture stream. Returns `false` (and
    /// drops the audio) when the guest is not capturing.
    ///
    /// Like a microphone that is always on, the newest cushion of audio is kept
    /// while the guest has the stream set up but stopped, so a capture starts with
    /// what was said just before, not with silence.
    pub fn push_capture(&self, data: &[u8]) -> bool {
        let mut st = self.lock();
        let s = st.stream(Direction::Capture);
        let Some(p) = s.params.filter(|_| s.state != PcmState::Idle) else {
            return false;
        };
        s.fifo.extend(data);
        s.max_chunk = s.max_chunk.max(data.len());
        let running = s.state == PcmState::Running;
        // Bounded by the guest's own buffer (and a second of audio, whatever the guest
        // asked for) so latency and memory cannot grow without limit: the oldest
        // audio goes first. There is always room for the cushion.
        let period = p.period_bytes as usize;
        let keep = if running {
            (p.buffer_bytes as usize)
                .min(p.byte_rate() as usize)
                .max(4 * period)
                .max(2 * s.cushion(&p))
        } else {
            s.cushion(&p)
        };
        if s.fifo.len() > keep {
            let frame = p.frame_bytes() as usize;
            let excess = (s.fifo.len() - keep).div_ceil(frame) * frame;
            s.fifo.drain(..excess.min(s.fifo.len()));
        }
        running
    }
}

impl Default for Card {
    fn default() -> Self {
        Self::new()
    }
}

/// `len` bytes of silence in the stream's format (unsigned formats centre on half
/// scale).
pub fn silence(params: Option<PcmParams>, len: usize) -> Vec<u8> {
    let Some(p) = params else {
        return vec![0; len];
    };
    let pattern: &[u8] = match p.format {
        formats::FMT_U8 => &[0x80],
        formats::FMT_U16 => &[0x00, 0x80],
        formats::FMT_U18_3 => &[0x00, 0x00, 0x02],
        formats::FMT_U20_3 => &[0x00, 0x00, 0x08],
        formats::FMT_U24_3 => &[0x00, 0x00, 0x80],
        formats::FMT_U24 => &[0x00, 0x00, 0x80, 0x00],
        formats::FMT_U32 => &[0x00, 0x00, 0x00, 0x80],
        _ => return vec![0; len],
    };
    pattern.iter().copied().cycle().take(len).collect()
}
