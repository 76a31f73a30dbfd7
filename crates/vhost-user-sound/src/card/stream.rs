//! One PCM stream of the card: which way it goes, what the guest made of it, and
//! who completes its periods.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_snd_wire::formats::PcmParams;
use virtio_snd_wire::{self as wire, D_INPUT, D_OUTPUT};

use super::capture_fifo::CaptureFifo;
use super::pacer::{FIRST_CAPTURE_WAIT_NS, HELD_NS};
use crate::alarm::Alarm;
use crate::clock::{MonotonicClock, PacerClock};
use crate::io::IoMessage;
use crate::pcm::PcmState;

/// The two streams the card has, in stream-id order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Stream 0: the guest plays, the host hears (the tx queue).
    Playback,
    /// Stream 1: the host feeds, the guest records (the rx queue).
    Capture,
}

impl Direction {
    /// Both streams, in stream-id order.
    pub const ALL: [Direction; 2] = [Direction::Playback, Direction::Capture];

    /// The stream id the guest uses for it.
    pub fn stream_id(self) -> u32 {
        match self {
            Direction::Playback => 0,
            Direction::Capture => 1,
        }
    }

    /// The stream a guest's stream id names, if any.
    pub fn from_stream_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(Direction::Playback),
            1 => Some(Direction::Capture),
            _ => None,
        }
    }

    /// The direction as PCM_INFO encodes it.
    pub fn wire(self) -> u8 {
        match self {
            Direction::Playback => D_OUTPUT,
            Direction::Capture => D_INPUT,
        }
    }

    /// The virtqueue that carries the stream's I/O.
    pub fn queue(self) -> usize {
        match self {
            Direction::Playback => wire::QUEUE_TX,
            Direction::Capture => wire::QUEUE_RX,
        }
    }

    /// `"playback"` or `"capture"`, for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Playback => "playback",
            Direction::Capture => "capture",
        }
    }

    /// Where the stream stands in per-stream arrays (its stream id).
    pub(crate) fn index(self) -> usize {
        self.stream_id() as usize
    }
}

/// Who completes a stream's periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// The card's own pacer thread, on the stream's clock.
    Internal,
    /// An element, on its own clock: vhostsndsrc's ticks in PLAYING, or the audio
    /// vhostsndsink's upstream delivers (with the pacer standing by in both).
    Element,
    /// An element, as fast as it takes them (vhostsndsrc with `is-live=false`).
    OnDemand,
}

/// A stream as an element sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSnapshot {
    /// The state the guest's requests put the stream in.
    pub state: PcmState,
    /// The parameters the guest set, if it did.
    pub params: Option<PcmParams>,
    /// Whether a frontend is connected.
    pub connected: bool,
    /// Guest period boundaries completed since START (pacing tests count these).
    pub periods: u64,
}

pub(super) struct Stream {
    pub(super) dir: Direction,
    pub(super) state: PcmState,
    pub(super) params: Option<PcmParams>,
    pub(super) pending: VecDeque<IoMessage>,
    pub(super) pacing: Pacing,
    pub(super) clock: Arc<dyn PacerClock>,
    /// Bumped whenever what the pacer waits for changes.
    pub(super) generation: u64,
    /// Start of the current run on `clock`, and frames completed since.
    pub(super) origin: Option<u64>,
    pub(super) frames_done: u64,
    pub(super) periods: u64,
    /// Capture only: audio from vhostsndsink waiting for the guest.
    pub(super) capture: CaptureFifo,
    /// Playback only: when a period was last completed.
    pub(super) last_completion: Option<Instant>,
    /// Playback only, element-paced: when (on `clock`) the element last ticked.
    pub(super) element_tick: Option<u64>,
    /// What the pacer sleeps on while the element paces: real time, so that it does
    /// not add waits to the element's clock (a test clock counts them), moved a grace
    /// ahead by every tick without waking the pacer.
    pub(super) standby: Arc<Alarm>,
    /// When (on `clock`) `standby` is set to ring.
    pub(super) alarm_at: Option<u64>,
    /// Playback only: period slots the pacer completed while the element was stalled,
    /// which the element's catching-up ticks give back.
    pub(super) covered: u64,
    /// Playback only: the audio of the newest covered slots (empty where the guest had
    /// no period queued), at most [`HELD_NS`] of it. The catching-up ticks push it, so
    /// a downstream that blocks for less (a mixer whose latency grows when a guest
    /// with longer periods joins) loses nothing; older slots are silence.
    pub(super) held: VecDeque<Vec<u8>>,
    /// Playback only: what the pipeline behind vhostsndsrc adds, told to the guest.
    pub(super) downstream_latency_ns: u64,
    pub(super) scratch: Vec<u8>,
    /// A period's audio is being copied with the card unlocked (see `period`).
    pub(super) copying: bool,
    /// Threads waiting for that copy to end.
    pub(super) copy_waiters: usize,
    /// Bumped whenever the stream is reset: a period copied across a reset belongs to
    /// a driver that is gone, and is not completed.
    pub(super) epoch: u64,
}

impl Stream {
    pub(super) fn new(dir: Direction) -> std::io::Result<Self> {
        Ok(Stream {
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
            capture: CaptureFifo::default(),
            last_completion: None,
            element_tick: None,
            standby: Arc::new(Alarm::new()?),
            alarm_at: None,
            covered: 0,
            held: VecDeque::new(),
            downstream_latency_ns: 0,
            scratch: Vec::new(),
            copying: false,
            copy_waiters: 0,
            epoch: 0,
        })
    }

    /// How long the element may go without a tick before the stand-by pacer
    /// completes a period itself (see `pacer`): half the guest's buffer (one to four
    /// periods) and half a period; for a capture's first period, a period and
    /// [`FIRST_CAPTURE_WAIT_NS`].
    pub(super) fn grace(&self) -> Option<u64> {
        let p = self.params?;
        if self.dir == Direction::Capture && self.periods == 0 {
            return Some(p.bytes_to_ns(u64::from(p.period_bytes)) + FIRST_CAPTURE_WAIT_NS);
        }
        self.normal_grace()
    }

    /// The grace after a capture's first period (and always for playback).
    pub(super) fn normal_grace(&self) -> Option<u64> {
        let p = self.params?;
        let period = p.bytes_to_ns(u64::from(p.period_bytes));
        let periods = u64::from(p.buffer_bytes / p.period_bytes.max(1));
        Some(period * (periods / 2).clamp(1, 4) + period / 2)
    }

    /// The element ticked at `now` (on the stream's clock): the stand-by pacer sleeps
    /// on for a grace from here. The alarm is moved only once it is due within a
    /// period and a half: the next tick still comes before it rings, and a
    /// guest-sized grace moves it every second tick or less. A stream that is not
    /// running has no pacer standing by (START rings it, and it starts from its own
    /// clock), so an idle guest's ticks cost no system call.
    pub(super) fn ticked(&mut self, now: u64) {
        self.element_tick = Some(now);
        if self.state != PcmState::Running {
            return;
        }
        let (Some(g), Some(p)) = (self.grace(), self.params) else {
            return;
        };
        let period = p.bytes_to_ns(u64::from(p.period_bytes));
        let far = now + period + period / 2;
        if self.alarm_at.is_some_and(|at| at >= far && at <= now + g) {
            return;
        }
        self.ring_at(now, now + g);
    }

    /// Sets the stand-by alarm for `at` (on the stream's clock, now `now`).
    pub(super) fn ring_at(&mut self, now: u64, at: u64) {
        self.standby
            .ring_in(Duration::from_nanos(at.saturating_sub(now)));
        self.alarm_at = Some(at);
    }

    pub(super) fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.origin = None;
        self.frames_done = 0;
        self.element_tick = None;
        self.covered = 0;
        self.held.clear();
        self.clock.interrupt();
        self.standby.ring_in(Duration::ZERO);
        self.alarm_at = None;
    }

    pub(super) fn frame_bytes(&self) -> u32 {
        self.params.map_or(1, |p| p.frame_bytes())
    }

    /// Keeps `audio`, the newest covered slot's, for the element's catching-up ticks,
    /// unless the stream was reset or the element caught up while it was copied.
    pub(super) fn hold(&mut self, audio: Vec<u8>) {
        let Some(p) = self.params else {
            return;
        };
        if self.held.len() as u64 >= self.covered {
            return;
        }
        let period = p.bytes_to_ns(u64::from(p.period_bytes)).max(1);
        let slots = (HELD_NS / period).max(1) as usize;
        self.held.push_back(audio);
        while self.held.len() > slots {
            self.held.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use virtio_snd_wire::formats::DEFAULT_PARAMS;

    use super::*;

    const PERIOD_NS: u64 = 10_000_000;

    #[test]
    fn only_a_running_streams_ticks_move_the_alarm() {
        let mut s = Stream::new(Direction::Playback).unwrap();
        s.params = Some(DEFAULT_PARAMS);
        for state in [PcmState::Prepared, PcmState::Stopped, PcmState::Released] {
            s.state = state;
            s.ticked(PERIOD_NS);
            assert_eq!(s.alarm_at, None, "{state:?}");
            assert_eq!(s.element_tick, Some(PERIOD_NS), "{state:?}");
        }
        s.state = PcmState::Running;
        s.ticked(2 * PERIOD_NS);
        // A 4-period buffer: half of it and half a period after the tick.
        assert_eq!(s.alarm_at, Some(2 * PERIOD_NS + 25_000_000));
        // The next tick leaves it (due in more than a period and a half), the one
        // after moves it.
        s.ticked(3 * PERIOD_NS);
        assert_eq!(s.alarm_at, Some(2 * PERIOD_NS + 25_000_000));
        s.ticked(4 * PERIOD_NS);
        assert_eq!(s.alarm_at, Some(4 * PERIOD_NS + 25_000_000));
    }
}
