//! The card's own pacer: one thread per stream that completes periods on the stream's
//! clock with absolute deadlines, while no element does (capture always, playback
//! while vhostsndsrc is not PLAYING). While vhostsndsrc paces playback, the pacer
//! stands by: if the element stops ticking (its downstream blocks: an audio server
//! re-creating its stream, a full queue), the pacer keeps the guest's time, so the
//! guest never waits on the host's output.

use std::sync::MutexGuard;

use log::Level;
use virtio_snd_wire::formats;

use super::{Card, Direction, Pacing, State};
use crate::clock::PacerClock;
use crate::log_limit::limited;
use crate::pcm::PcmState;

impl Card {
    /// Blocks until `dir` has a period due on its clock, then serves it. Returns
    /// `false` when the card shuts down.
    pub(crate) fn pace(&self, dir: Direction) -> bool {
        let mut st = self.lock();
        loop {
            if st.shutdown {
                return false;
            }
            let connected = st.connected;
            let s = st.stream(dir);
            if connected && s.state == PcmState::Running && s.params.is_some() {
                match s.pacing {
                    Pacing::Internal => return self.pace_internal(st, dir),
                    Pacing::Element => return self.stand_by(st, dir),
                    Pacing::OnDemand => {}
                }
            }
            st = self.wait(st);
        }
    }

    fn pace_internal(&self, mut st: MutexGuard<'_, State>, dir: Direction) -> bool {
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
        let mut deadline = origin + formats::frames_to_ns(s.frames_done + next, params.rate_hz());
        let late = now.saturating_sub(deadline);
        if late > 4 * params.bytes_to_ns(u64::from(params.period_bytes)) {
            // Stalled far behind (host suspended, clock jumped): restart the
            // timeline instead of bursting the backlog into the guest.
            limited!(
                Level::Warn,
                "{} stream: pacer {late} ns late, resynchronising",
                dir.name()
            );
            s.origin = Some(now);
            s.frames_done = 0;
            deadline = now + formats::frames_to_ns(next, params.rate_hz());
        }
        let generation = s.generation;
        drop(st);
        if !clock.wait_until(deadline) {
            return true;
        }
        let mut st = self.lock();
        if st.stream(dir).generation != generation || st.stream(dir).pacing != Pacing::Internal {
            return true;
        }
        let (mut st, frames, done) = self.run_period(st, dir, None);
        if done {
            self.poll_ring(&mut st, dir);
        }
        st.stream(dir).frames_done += frames;
        true
    }

    /// The element paces: once its clock has run on for a grace time without a tick
    /// from it, the pacer completes one period per period (their audio is dropped)
    /// until it ticks again. The grace is half the guest's buffer (one to four
    /// periods) and half a period more, so that a tick that comes a period after the
    /// last, a little late, is no stall; it stays well inside the time after which
    /// Linux fails a blocked write (1.1 buffers), and what the element catches up on
    /// afterwards is less than the guest's buffer. A clock that stands still (a test
    /// clock) is no stall.
    fn stand_by(&self, mut st: MutexGuard<'_, State>, dir: Direction) -> bool {
        let s = st.stream(dir);
        let Some(params) = s.params else {
            return true;
        };
        let period_ns = params.bytes_to_ns(u64::from(params.period_bytes));
        let periods = u64::from(params.buffer_bytes / params.period_bytes.max(1));
        let grace = period_ns * (periods / 2).clamp(1, 4) + period_ns / 2;
        let clock = s.clock.clone();
        let tick = *s.element_tick.get_or_insert(clock.now());
        let due = tick + grace;
        let standby = s.standby.clone();
        let generation = s.generation;
        drop(st);
        let now = clock.now();
        if now < due && !standby.wait_until(standby.now() + (due - now)) {
            return true;
        }
        let mut st = self.lock();
        let s = st.stream(dir);
        let stalled = s.element_tick == Some(tick) && s.clock.now() >= due;
        if s.generation != generation || s.pacing != Pacing::Element || !stalled {
            return true;
        }
        if s.covered == 0 {
            limited!(
                Level::Warn,
                "{} stream: vhostsndsrc has not ticked for {} ms (its downstream blocks): \
                 the card keeps the guest's time and drops its audio meanwhile",
                dir.name(),
                grace / 1_000_000
            );
        }
        s.covered += 1;
        s.element_tick = Some(tick + period_ns);
        let (mut st, _, done) = self.run_period(st, dir, None);
        if done {
            self.poll_ring(&mut st, dir);
        }
        true
    }
}
