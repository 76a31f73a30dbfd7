//! What vhostsndsink calls with each upstream buffer.

use super::{Card, Direction};
use crate::pcm::PcmState;

impl Card {
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
        let running = s.state == PcmState::Running;
        s.capture.push(data, &p, running);
        running
    }
}
