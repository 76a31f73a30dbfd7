//! What vhostsndsink calls with each upstream buffer. With [`Pacing::Element`] the
//! capture stream's periods are completed here, on the sink's streaming thread, as
//! soon as upstream has delivered them (one wake-up per period, one period of
//! latency), and the card's pacer only stands by for an upstream that stalls (see
//! `pacer`); with [`Pacing::Internal`] the pacer completes them on the clock.

use virtio_snd_wire::formats::PcmParams;

use super::{Card, Direction, Pacing};
use crate::pcm::PcmState;

impl Card {
    /// vhostsndsink: queues `data`, captured from `at` on the stream's clock (if the
    /// sink knows), for the guest's capture stream, and, when the element paces,
    /// completes every guest period it fills. Returns `false` (and drops the audio)
    /// when the guest is not capturing.
    pub fn push_capture(&self, data: &[u8], at: Option<u64>) -> bool {
        self.push_capture_as(data, at, |_| true) == Captured::Queued
    }

    /// [`push_capture`](Self::push_capture) for audio in the format `is_format`
    /// accepts: audio in another format than the guest's is dropped, and so is
    /// audio for a guest that is not capturing. One look at the card, for a sink
    /// that checks its format with every buffer.
    pub fn push_capture_as(
        &self,
        data: &[u8],
        at: Option<u64>,
        is_format: impl FnOnce(&PcmParams) -> bool,
    ) -> Captured {
        let dir = Direction::Capture;
        let mut st = self.lock();
        let s = st.stream(dir);
        let Some(p) = s.params else {
            return Captured::NoFormat;
        };
        if !is_format(&p) {
            return Captured::OtherFormat;
        }
        if s.state != PcmState::Running {
            return Captured::NotCapturing;
        }
        s.capture.push(data, at, &p);
        if s.pacing != Pacing::Element {
            return Captured::Queued;
        }
        let mut completed = false;
        loop {
            let s = st.stream(dir);
            let paced = s.state == PcmState::Running && s.pacing == Pacing::Element;
            if !paced || s.params != Some(p) || !s.capture.ready(&p) {
                break;
            }
            let (next, frames, done) = self.run_period(st, dir, None);
            st = next;
            if frames == 0 {
                break;
            }
            completed |= done;
            let s = st.stream(dir);
            let now = s.clock.now();
            s.ticked(now);
        }
        if completed {
            self.poll_ring(&mut st, dir);
        }
        Captured::Queued
    }
}

/// What became of audio handed to [`Card::push_capture_as`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Captured {
    /// Queued for the guest (and the periods it filled completed, if the element
    /// paces).
    Queued,
    /// Dropped: the guest has not set its capture parameters.
    NoFormat,
    /// Dropped: it is not in the guest's format.
    OtherFormat,
    /// Dropped: the guest is not capturing.
    NotCapturing,
}
