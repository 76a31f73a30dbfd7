//! What vhostsndsink calls with each upstream buffer. With [`Pacing::Element`] the
//! capture stream's periods are completed here, on the sink's streaming thread, as
//! soon as upstream has delivered them (one wake-up per period, one period of
//! latency), and the card's pacer only stands by for an upstream that stalls (see
//! `pacer`); with [`Pacing::Internal`] the pacer completes them on the clock.

use super::{Card, Direction, Pacing};
use crate::pcm::PcmState;

impl Card {
    /// vhostsndsink: queues `data`, captured from `at` on the stream's clock (if the
    /// sink knows), for the guest's capture stream, and, when the element paces,
    /// completes every guest period it fills. Returns `false` (and drops the audio)
    /// when the guest is not capturing.
    pub fn push_capture(&self, data: &[u8], at: Option<u64>) -> bool {
        let dir = Direction::Capture;
        let mut st = self.lock();
        let s = st.stream(dir);
        let Some(p) = s.params.filter(|_| s.state == PcmState::Running) else {
            return false;
        };
        s.capture.push(data, at, &p);
        if s.pacing != Pacing::Element {
            return true;
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
        true
    }
}
