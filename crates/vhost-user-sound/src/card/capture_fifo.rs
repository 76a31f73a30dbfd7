//! The capture stream's queue of upstream audio, placed on the recording's timeline.
//!
//! The guest's recording starts at START: upstream audio stamped earlier is dropped,
//! and its first period begins with the first audio from then on (no silence ahead of
//! it). A period is handed out as soon as the queue holds one (`Card::push_capture`).
//! When the card's pacer has to complete a period without enough audio (upstream
//! stalled), the rest is silence, and the audio that comes late for it is dropped when
//! it comes, so that the recording stays in real time. Times are on the stream's
//! clock; upstream's timestamps set where its audio starts once, after which its audio
//! is taken as continuous, so that jitter in its timestamps never cuts a sample.

use std::collections::VecDeque;

use virtio_snd_wire::formats::{self, PcmParams};

/// A point on the stream's clock: an origin and the frames after it (no rounding
/// adds up however many periods pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    origin: u64,
    frames: u64,
}

impl Mark {
    fn new(at: u64) -> Self {
        Mark {
            origin: at,
            frames: 0,
        }
    }

    fn at(&self, rate: u32) -> u64 {
        self.origin + formats::frames_to_ns(self.frames, rate)
    }
}

#[derive(Debug, Default)]
pub(super) struct CaptureFifo {
    audio: VecDeque<u8>,
    /// Where the recording stands: when its next period starts. `None` until known
    /// (the stream's clock changed since START: upstream's first audio sets it).
    next: Option<Mark>,
    /// When the first queued frame (or, with none queued, the next to come) was
    /// captured, if upstream said.
    front: Option<Mark>,
}

impl CaptureFifo {
    /// Forgets the queued audio and where it stands (the guest driver went away, the
    /// guest chose a new format, or the stream's clock changed).
    pub(super) fn clear(&mut self) {
        self.audio.clear();
        self.next = None;
        self.front = None;
    }

    /// START at `now`: the recording begins there.
    pub(super) fn start(&mut self, now: u64) {
        self.clear();
        self.next = Some(Mark::new(now));
    }

    /// Bytes of audio queued.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.audio.len()
    }

    /// Queues upstream audio captured from `at` on (if known). The queue is bounded
    /// by the guest's buffer (at least four periods, at most a second of audio), the
    /// oldest audio going first, so that a guest that does not take its periods costs
    /// neither memory nor latency.
    pub(super) fn push(&mut self, data: &[u8], at: Option<u64>, p: &PcmParams) {
        if self.front.is_none() {
            self.front = at.map(Mark::new);
        }
        if self.next.is_none() {
            self.next = self.front;
        }
        self.audio.extend(data);
        let period = p.period_bytes as usize;
        let keep = (p.buffer_bytes as usize)
            .min(p.byte_rate() as usize)
            .max(4 * period);
        if self.audio.len() > keep {
            self.drop_front(self.audio.len() - keep, p);
        }
    }

    /// Whether a whole period is queued (after dropping what is too old for it).
    pub(super) fn ready(&mut self, p: &PcmParams) -> bool {
        self.trim(p);
        self.audio.len() >= p.period_bytes as usize
    }

    /// Appends one guest period of `n` bytes to `out`: queued audio, silence for what
    /// is missing. Returns the bytes still queued, which is how far the period lags
    /// what upstream delivered.
    pub(super) fn fill(&mut self, out: &mut Vec<u8>, n: usize, p: &PcmParams) -> u32 {
        self.trim(p);
        let frame = p.frame_bytes() as usize;
        let have = n.min(self.audio.len()) / frame * frame;
        if have == n && have == self.audio.len() && out.is_empty() {
            // The queue is exactly the period (upstream's buffers are period-sized):
            // its buffer goes out as the period, `out`'s empty one queues what comes.
            let spare = VecDeque::from(std::mem::take(out));
            *out = Vec::from(std::mem::replace(&mut self.audio, spare));
            self.front_moved(have, frame);
            self.advance(n, p);
            return 0;
        }
        let (a, b) = self.audio.as_slices();
        let from_a = have.min(a.len());
        out.extend_from_slice(&a[..from_a]);
        out.extend_from_slice(&b[..have - from_a]);
        self.drop_front(have, p);
        self.advance(n, p);
        if have < n {
            out.extend_from_slice(&p.silence(n - have));
        }
        self.audio.len() as u32
    }

    /// The guest had no buffer for a period of `n` bytes: its audio is dropped all
    /// the same, so the queue stays in real time.
    pub(super) fn skip(&mut self, n: usize, p: &PcmParams) {
        self.trim(p);
        self.drop_front(n.min(self.audio.len()), p);
        self.advance(n, p);
    }

    fn advance(&mut self, n: usize, p: &PcmParams) {
        if let Some(m) = self.next.as_mut() {
            m.frames += (n / p.frame_bytes().max(1) as usize) as u64;
        }
    }

    /// Drops the queued audio from before the recording's next period.
    fn trim(&mut self, p: &PcmParams) {
        let (Some(front), Some(next)) = (self.front, self.next) else {
            return;
        };
        let rate = p.rate_hz();
        let late = next.at(rate).saturating_sub(front.at(rate));
        let frames = formats::ns_to_frames(late, rate) as usize;
        let bytes = frames * p.frame_bytes() as usize;
        self.drop_front(bytes.min(self.audio.len()), p);
    }

    /// Drops `n` bytes (whole frames) from the front.
    fn drop_front(&mut self, n: usize, p: &PcmParams) {
        let frame = p.frame_bytes().max(1) as usize;
        let n = n.div_ceil(frame) * frame;
        let n = n.min(self.audio.len() / frame * frame);
        self.audio.drain(..n);
        self.front_moved(n, frame);
    }

    /// The first `n` queued bytes are gone.
    fn front_moved(&mut self, n: usize, frame: usize) {
        if let Some(m) = self.front.as_mut() {
            m.frames += (n / frame) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use virtio_snd_wire::formats::{DEFAULT_PARAMS, FMT_U8};

    use super::*;

    /// 48 kHz S16 stereo, 10 ms periods (1920 bytes), a 4-period buffer.
    const P: PcmParams = DEFAULT_PARAMS;
    const MS: u64 = 1_000_000;

    fn ramp(from: usize, len: usize) -> Vec<u8> {
        (from..from + len).map(|i| i as u8).collect()
    }

    /// Pushes `n` 480-byte (2.5 ms) chunks of a ramp, starting at byte `from`, the
    /// first stamped `at`.
    fn push_chunks(f: &mut CaptureFifo, from: usize, n: usize, at: Option<u64>) {
        for i in 0..n {
            let t = at.map(|t| t + i as u64 * 2_500_000);
            f.push(&ramp(from + i * 480, 480), t, &P);
        }
    }

    #[test]
    fn a_period_is_ready_once_it_is_queued() {
        let mut f = CaptureFifo::default();
        f.start(0);
        push_chunks(&mut f, 0, 3, Some(0));
        assert!(!f.ready(&P));
        push_chunks(&mut f, 1440, 1, None);
        assert!(f.ready(&P));
        let mut out = Vec::new();
        assert_eq!(f.fill(&mut out, 1920, &P), 0);
        assert_eq!(out, ramp(0, 1920));
    }

    #[test]
    fn audio_from_before_start_is_dropped_to_the_frame() {
        let mut f = CaptureFifo::default();
        f.start(100 * MS);
        // Stamped 5 ms before START: its first 240 frames (960 bytes) are older.
        push_chunks(&mut f, 0, 8, Some(95 * MS));
        let mut out = Vec::new();
        assert!(f.ready(&P));
        f.fill(&mut out, 1920, &P);
        assert_eq!(out, ramp(960, 1920));
    }

    #[test]
    fn the_first_audio_after_start_begins_the_recording() {
        // Upstream's first audio comes 40 ms after START (a source opened at START):
        // no silence ahead of it.
        let mut f = CaptureFifo::default();
        f.start(100 * MS);
        push_chunks(&mut f, 0, 4, Some(140 * MS));
        assert!(f.ready(&P));
        let mut out = Vec::new();
        f.fill(&mut out, 1920, &P);
        assert_eq!(out, ramp(0, 1920));
    }

    #[test]
    fn jittery_timestamps_of_continuous_audio_cut_nothing() {
        let mut f = CaptureFifo::default();
        f.start(0);
        let mut out = Vec::new();
        for k in 0..20 {
            // Each 10 ms chunk stamped up to 2 ms early.
            let at = (k * 10 * MS).saturating_sub((k % 3) * MS);
            f.push(&ramp(k as usize * 1920, 1920), Some(at), &P);
            assert!(f.ready(&P));
            out.clear();
            f.fill(&mut out, 1920, &P);
            assert_eq!(out, ramp(k as usize * 1920, 1920), "period {k}");
        }
    }

    #[test]
    fn after_a_stall_the_late_audio_is_dropped() {
        let mut f = CaptureFifo::default();
        f.start(0);
        push_chunks(&mut f, 0, 6, Some(0));
        let mut out = Vec::new();
        f.fill(&mut out, 1920, &P);
        // Half a period left; the pacer completes the next period without upstream.
        out.clear();
        assert_eq!(f.fill(&mut out, 1920, &P), 0);
        assert_eq!(out[..960], ramp(1920, 960));
        assert_eq!(out[960..], vec![0; 960]);
        // Upstream comes back with what it owed: the 5 ms the silence stood for are
        // dropped, the next period is in time.
        push_chunks(&mut f, 2880, 8, None);
        assert!(f.ready(&P));
        out.clear();
        f.fill(&mut out, 1920, &P);
        assert_eq!(out, ramp(3840, 1920));
    }

    #[test]
    fn a_partial_period_is_topped_up_with_the_formats_silence() {
        let p = PcmParams {
            format: FMT_U8,
            channels: 1,
            period_bytes: 480,
            buffer_bytes: 4 * 480,
            ..P
        };
        let mut f = CaptureFifo::default();
        f.push(&[1; 140], None, &p);
        let mut out = Vec::new();
        f.fill(&mut out, 480, &p);
        assert_eq!(out[..140], [1; 140]);
        assert!(out[140..].iter().all(|&b| b == 0x80));
    }

    #[test]
    fn the_queue_is_bounded_by_the_guests_buffer() {
        let mut f = CaptureFifo::default();
        push_chunks(&mut f, 0, 100, None);
        assert_eq!(f.len(), 4 * 1920);
        let big = PcmParams {
            buffer_bytes: 150 * 1920,
            ..P
        };
        let mut f = CaptureFifo::default();
        for i in 0..200 {
            f.push(&ramp(i * 1920, 1920), None, &big);
        }
        // Never more than a second of audio, whatever the guest's buffer.
        assert_eq!(f.len(), big.byte_rate() as usize);
    }

    #[test]
    fn skipping_drops_at_most_what_is_queued() {
        let mut f = CaptureFifo::default();
        f.push(&ramp(0, 1000), None, &P);
        f.skip(400, &P);
        assert_eq!(f.len(), 600);
        f.skip(4000, &P);
        assert_eq!(f.len(), 0);
    }
}
