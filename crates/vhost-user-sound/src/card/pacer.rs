//! The card's own pacer: one thread per stream. It completes periods on the stream's
//! clock with absolute deadlines while no element does (vhostsndsrc or vhostsndsink
//! not PLAYING, and the daemon without a capture pipeline). Otherwise it stands by:
//! while vhostsndsrc paces playback, if the element stops ticking (its downstream
//! blocks: an audio server re-creating its stream, a full queue; the card holds the
//! last [`HELD_NS`] of audio for it meanwhile), and
//! while vhostsndsink's upstream completes capture periods, if upstream stalls (or
//! there is no sink at all), the pacer keeps the guest's time, so the guest never
//! waits on the host.

use std::sync::MutexGuard;

use log::Level;
use virtio_snd_wire::formats;

use super::{Card, Direction, Pacing, State};
use crate::log_limit::limited;
use crate::pcm::PcmState;

/// How much longer than a period the guest's first capture period waits for
/// upstream's first audio before it is completed with silence: a host source that
/// opens at START (the daemon's) takes that long at most.
pub const FIRST_CAPTURE_WAIT_NS: u64 = 200_000_000;

/// How much of a playback stream's audio the card holds while vhostsndsrc's
/// downstream blocks, for the element to push when it ticks again: what a mixer's
/// latency may grow by when a guest with 125 ms periods joins, and about what an
/// audio sink still plays in time. The guest's audio beyond that is dropped.
pub const HELD_NS: u64 = 250_000_000;

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

    /// An element paces (vhostsndsrc's ticks, vhostsndsink's upstream audio): once
    /// the clock has run on for a grace time without a tick, the pacer completes one
    /// period per period (playback's audio is dropped, capture's is what upstream
    /// gave and silence) until the element ticks again. The grace is half the
    /// guest's buffer (one to four periods) and half a period more, so that a tick
    /// that comes a period after the last, a little late, is no stall; it stays well
    /// inside the time after which Linux fails a blocked transfer (1.1 buffers), and
    /// what the element catches up on afterwards is less than the guest's buffer. A
    /// capture's first period waits [`FIRST_CAPTURE_WAIT_NS`] longer, for a source
    /// that opens at START. A clock that stands still (a test clock) is no stall.
    ///
    /// While the element ticks, the pacer sleeps: each tick moves its alarm on.
    fn stand_by(&self, mut st: MutexGuard<'_, State>, dir: Direction) -> bool {
        let s = st.stream(dir);
        let (Some(params), Some(grace), Some(normal)) = (s.params, s.grace(), s.normal_grace())
        else {
            return true;
        };
        let period_ns = params.bytes_to_ns(u64::from(params.period_bytes));
        let first = dir == Direction::Capture && s.periods == 0;
        let now = s.clock.now();
        let tick = *s.element_tick.get_or_insert(now);
        let due = tick + grace;
        if now < due {
            s.ring_at(now, due);
            let standby = s.standby.clone();
            drop(st);
            standby.wait();
            return true;
        }
        if dir == Direction::Capture {
            if first {
                limited!(
                    Level::Info,
                    "capture stream: no audio from upstream within {} ms of START: the \
                     guest records silence until it comes",
                    FIRST_CAPTURE_WAIT_NS / 1_000_000
                );
            } else {
                limited!(
                    Level::Info,
                    "capture stream: upstream sent nothing for {} ms: the guest records \
                     silence meanwhile",
                    grace / 1_000_000
                );
            }
            // The next period a period from now: no burst into the guest to make up
            // for the wait.
            s.element_tick = Some((tick + period_ns).max((now + period_ns).saturating_sub(normal)));
        } else {
            if s.covered == 0 {
                limited!(
                    Level::Warn,
                    "{} stream: vhostsndsrc has not ticked for {} ms (its downstream \
                     blocks): the card keeps the guest's time, and holds its last {} ms \
                     of audio for when the element is back",
                    dir.name(),
                    grace / 1_000_000,
                    HELD_NS / 1_000_000
                );
            }
            s.covered += 1;
            s.element_tick = Some(tick + period_ns);
        }
        let mut audio = Vec::new();
        let out = (dir == Direction::Playback).then_some(&mut audio);
        let (mut st, _, done) = self.run_period(st, dir, out);
        if done {
            self.poll_ring(&mut st, dir);
        }
        if dir == Direction::Playback {
            st.stream(dir).hold(audio);
        }
        true
    }
}
