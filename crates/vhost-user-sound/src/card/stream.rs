//! One PCM stream of the card: which way it goes, what the guest made of it, and
//! who completes its periods.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use virtio_snd_wire::formats::PcmParams;
use virtio_snd_wire::{self as wire, D_INPUT, D_OUTPUT};

use super::capture_fifo::CaptureFifo;
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

    pub(super) fn index(self) -> usize {
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
    /// not add waits to the element's clock (a test clock counts them).
    pub(super) standby: Arc<MonotonicClock>,
    /// Playback only: period slots the pacer completed while the element was stalled,
    /// which the element's catching-up ticks give back as silence.
    pub(super) covered: u64,
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
    pub(super) fn new(dir: Direction) -> Self {
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
            capture: CaptureFifo::default(),
            last_completion: None,
            element_tick: None,
            standby: Arc::new(MonotonicClock::new()),
            covered: 0,
            downstream_latency_ns: 0,
            scratch: Vec::new(),
            copying: false,
            copy_waiters: 0,
            epoch: 0,
        }
    }

    pub(super) fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.origin = None;
        self.frames_done = 0;
        self.element_tick = None;
        self.covered = 0;
        self.clock.interrupt();
        self.standby.interrupt();
    }

    pub(super) fn frame_bytes(&self) -> u32 {
        self.params.map_or(1, |p| p.frame_bytes())
    }
}
