//! The card's own pacer: one thread per stream that completes periods on the stream's
//! clock with absolute deadlines, while no element does (capture always, playback
//! while vhostsndsrc is not PLAYING).

use log::warn;
use virtio_snd_wire::formats;

use super::{Card, Direction, Pacing};
use crate::pcm::PcmState;

impl Card {
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
}
