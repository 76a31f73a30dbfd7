//! The capture stream's queue of upstream audio and the cushion that keeps the guest's
//! recording free of stutter.
//!
//! Upstream delivers audio in chunks and with jitter, the guest takes it a period at
//! a time on the card's clock. Audio is handed out only once a cushion is queued (one
//! period, plus upstream's largest chunk, plus 10 ms of scheduling jitter), so that
//! the queue cannot run dry at a period boundary; after an under-run the cushion is
//! built again, so the guest hears silence or continuous audio, never a stutter.

use std::collections::VecDeque;

use virtio_snd_wire::formats::PcmParams;

#[derive(Debug, Default)]
pub(super) struct CaptureFifo {
    audio: VecDeque<u8>,
    /// Enough is queued to ride out upstream's jitter.
    primed: bool,
    /// The largest piece of audio upstream delivered at once, in this format.
    max_chunk: usize,
}

impl CaptureFifo {
    /// Forgets the queued audio (the guest driver went away).
    pub(super) fn clear(&mut self) {
        self.audio.clear();
    }

    /// The guest chose a format: queued audio and chunk sizes are in the old one.
    pub(super) fn new_format(&mut self) {
        self.audio.clear();
        self.max_chunk = 0;
    }

    /// A new run (START): the first period waits for a full cushion.
    pub(super) fn restart(&mut self) {
        self.primed = false;
    }

    /// Bytes of audio queued.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.audio.len()
    }

    /// What must be queued before the guest is served.
    pub(super) fn cushion(&self, p: &PcmParams) -> usize {
        let frame = p.frame_bytes() as usize;
        let jitter = (p.rate_hz() / 100) as usize * frame;
        p.period_bytes as usize + self.max_chunk.div_ceil(frame) * frame + jitter
    }

    /// Queues upstream audio. While the guest is running the queue is bounded by its
    /// buffer (and a second of audio, whatever the guest asked for) so latency and
    /// memory cannot grow without limit, with always room for two cushions; while it
    /// is stopped, like an always-on microphone, only the newest cushion is kept, so a
    /// capture starts with what was said just before. The oldest audio goes first.
    pub(super) fn push(&mut self, data: &[u8], p: &PcmParams, running: bool) {
        self.audio.extend(data);
        self.max_chunk = self.max_chunk.max(data.len());
        let period = p.period_bytes as usize;
        let keep = if running {
            (p.buffer_bytes as usize)
                .min(p.byte_rate() as usize)
                .max(4 * period)
                .max(2 * self.cushion(p))
        } else {
            self.cushion(p)
        };
        if self.audio.len() > keep {
            let frame = p.frame_bytes() as usize;
            let excess = (self.audio.len() - keep).div_ceil(frame) * frame;
            self.audio.drain(..excess.min(self.audio.len()));
        }
    }

    /// Appends one guest period of `n` bytes to `out`: queued audio once the cushion
    /// is there, silence for what is missing. Returns the bytes still queued, which is
    /// how far the period lags what upstream delivered.
    pub(super) fn fill(&mut self, out: &mut Vec<u8>, n: usize, p: &PcmParams) -> u32 {
        if !self.primed && self.audio.len() >= self.cushion(p) {
            self.primed = true;
        }
        let have = if self.primed {
            n.min(self.audio.len())
        } else {
            0
        };
        if have < n {
            self.primed = false;
        }
        let (a, b) = self.audio.as_slices();
        let from_a = have.min(a.len());
        out.extend_from_slice(&a[..from_a]);
        out.extend_from_slice(&b[..have - from_a]);
        self.audio.drain(..have);
        let queued = self.audio.len() as u32;
        if have < n {
            out.extend_from_slice(&p.silence(n - have));
        }
        queued
    }

    /// The guest had no buffer for a period: its audio is dropped all the same, so
    /// the queue stays in real time.
    pub(super) fn skip(&mut self, n: usize) {
        let n = n.min(self.audio.len());
        self.audio.drain(..n);
    }
}

#[cfg(test)]
mod tests {
    use virtio_snd_wire::formats::{DEFAULT_PARAMS, FMT_U8};

    use super::*;

    /// 48 kHz S16 stereo, 10 ms periods (1920 bytes), a 4-period buffer.
    const P: PcmParams = DEFAULT_PARAMS;
    /// 10 ms of jitter at 48 kHz S16 stereo.
    const JITTER: usize = 1920;

    fn ramp(from: usize, len: usize) -> Vec<u8> {
        (from..from + len).map(|i| i as u8).collect()
    }

    #[test]
    fn cushion_is_a_period_the_largest_chunk_and_jitter() {
        let mut f = CaptureFifo::default();
        assert_eq!(f.cushion(&P), 1920 + JITTER);
        f.push(&[0; 1001], &P, true);
        // The chunk is rounded up to whole frames.
        assert_eq!(f.cushion(&P), 1920 + 1004 + JITTER);
        f.new_format();
        assert_eq!(f.cushion(&P), 1920 + JITTER);
        assert_eq!(f.len(), 0);
    }

    /// Pushes `n` 480-byte chunks of a ramp, starting at byte `from`.
    fn push_chunks(f: &mut CaptureFifo, from: usize, n: usize, running: bool) {
        for i in 0..n {
            f.push(&ramp(from + i * 480, 480), &P, running);
        }
    }

    #[test]
    fn silence_until_the_cushion_then_audio_in_order() {
        let mut f = CaptureFifo::default();
        // One period, one chunk and the jitter: nine chunks.
        push_chunks(&mut f, 0, 8, true);
        assert_eq!(f.cushion(&P), 9 * 480);
        let mut out = Vec::new();
        assert_eq!(f.fill(&mut out, 1920, &P), 8 * 480);
        assert_eq!(out, vec![0; 1920], "served before the cushion was there");
        push_chunks(&mut f, 8 * 480, 1, true);
        out.clear();
        assert_eq!(f.fill(&mut out, 1920, &P), 5 * 480);
        assert_eq!(out, ramp(0, 1920));
        // Primed: the next period is served from what is left, below the cushion.
        out.clear();
        assert_eq!(f.fill(&mut out, 1920, &P), 480);
        assert_eq!(out, ramp(1920, 1920));
    }

    #[test]
    fn an_under_run_gives_silence_and_rebuilds_the_cushion() {
        let mut f = CaptureFifo::default();
        push_chunks(&mut f, 0, 9, true);
        let mut out = Vec::new();
        f.fill(&mut out, 1920, &P);
        f.fill(&mut out, 1920, &P);
        out.clear();
        // 480 bytes left for a 1920-byte period.
        assert_eq!(f.fill(&mut out, 1920, &P), 0);
        assert_eq!(out[..480], ramp(3840, 480));
        assert_eq!(out[480..], vec![0; 1440]);
        // Less than a cushion again: silence, and the queue is kept.
        push_chunks(&mut f, 0, 4, true);
        out.clear();
        assert_eq!(f.fill(&mut out, 1920, &P), 1920);
        assert_eq!(out, vec![0; 1920]);
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
        // A cushion of 480 + 100 + 480 bytes, and 40 more.
        for _ in 0..11 {
            f.push(&[1; 100], &p, true);
        }
        let mut out = Vec::new();
        f.fill(&mut out, 480, &p);
        f.fill(&mut out, 480, &p);
        out.clear();
        f.fill(&mut out, 480, &p);
        assert_eq!(out[..140], [1; 140]);
        assert!(out[140..].iter().all(|&b| b == 0x80));
    }

    #[test]
    fn a_stopped_stream_keeps_only_the_newest_cushion() {
        let mut f = CaptureFifo::default();
        let total = 10 * 1920;
        for i in 0..10 {
            f.push(&ramp(i * 1920, 1920), &P, false);
        }
        let cushion = f.cushion(&P);
        assert_eq!(f.len(), cushion);
        let mut out = Vec::new();
        f.fill(&mut out, 1920, &P);
        assert_eq!(out, ramp(total - cushion, 1920), "not the newest audio");
    }

    #[test]
    fn a_running_stream_is_bounded_by_the_guests_buffer() {
        let mut f = CaptureFifo::default();
        push_chunks(&mut f, 0, 100, true);
        // buffer_bytes (4 periods) is below two cushions: two cushions are kept.
        assert_eq!(f.len(), 2 * f.cushion(&P));
        let big = PcmParams {
            buffer_bytes: 150 * 1920,
            ..P
        };
        let mut f = CaptureFifo::default();
        for i in 0..200 {
            f.push(&ramp(i * 1920, 1920), &big, true);
        }
        // Never more than a second of audio, whatever the guest's buffer.
        assert_eq!(f.len(), big.byte_rate() as usize);
    }

    #[test]
    fn skipping_drops_at_most_what_is_queued() {
        let mut f = CaptureFifo::default();
        f.push(&ramp(0, 1000), &P, true);
        f.skip(400);
        assert_eq!(f.len(), 600);
        f.skip(4000);
        assert_eq!(f.len(), 0);
    }
}
