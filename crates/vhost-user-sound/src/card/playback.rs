//! What vhostsndsrc calls: one period per tick in live mode, as many as the guest
//! may be ahead by in offline mode.

use std::time::Duration;

use log::Level;

use virtio_snd_wire::formats::PcmParams;

use super::{Card, Direction};
use crate::log_limit::limited;
use crate::pcm::PcmState;

/// What a playback period turned into.
pub enum Playback {
    /// A guest period, now completed to the guest: its audio is what was appended to
    /// the caller's buffer, in these parameters.
    Data(PcmParams),
    /// Nothing to play, nor soon: the guest has no stream set up (no parameters, or
    /// released), or the element is catching up after a stall downstream longer than
    /// the card holds audio for ([`HELD_NS`](super::HELD_NS)).
    Idle,
    /// A period of silence in a stream the guest has set up: it is prepared or
    /// stopped, or running without a period queued (it under-ran). Its audio may
    /// come at any tick.
    Silence,
}

impl Card {
    /// vhostsndsrc's period tick: completes the next guest period if the guest is
    /// playing and has one queued, appending its audio to `out` (a buffer the caller
    /// keeps, so that a tick allocates nothing).
    ///
    /// After a stall downstream (the card's pacer kept the guest's time meanwhile, see
    /// `pace`), the element's catching-up ticks get the periods the pacer completed,
    /// the last [`HELD_NS`](super::HELD_NS) of them as audio and any before as
    /// nothing to play, until its timeline is back in step with the guest's:
    /// completing them anew would burst a backlog into the guest.
    pub fn take_playback(&self, out: &mut Vec<u8>) -> Playback {
        let mut st = self.lock();
        let s = st.stream(Direction::Playback);
        let now = s.clock.now();
        s.ticked(now);
        if s.covered > 0 {
            // `held` is the newest slots': the older ones kept no audio.
            let audio = if s.covered <= s.held.len() as u64 {
                s.held.pop_front()
            } else {
                None
            };
            s.covered -= 1;
            if s.covered == 0 {
                limited!(
                    Level::Info,
                    "playback stream: vhostsndsrc is in step with the guest again"
                );
            }
            return match (audio, s.params) {
                (None, _) => Playback::Idle,
                (Some(audio), Some(params)) if !audio.is_empty() => {
                    out.extend_from_slice(&audio);
                    Playback::Data(params)
                }
                (Some(_), _) => Playback::Silence,
            };
        }
        let Some(params) = s.params.filter(|_| s.state == PcmState::Running) else {
            return match s.state {
                PcmState::ParamsSet | PcmState::Prepared | PcmState::Stopped => Playback::Silence,
                _ => Playback::Idle,
            };
        };
        let (mut st, _, done) = self.run_period(st, Direction::Playback, Some(out));
        if !done {
            return Playback::Silence;
        }
        self.poll_ring(&mut st, Direction::Playback);
        Playback::Data(params)
    }

    /// vhostsndsrc's tick that completes no period: it cut its tick short when the
    /// guest set parameters or started, to line its ticks up with the guest's. The
    /// card's stand-by pacer takes it as a tick all the same.
    pub fn playback_ticked(&self) {
        let mut st = self.lock();
        let s = st.stream(Direction::Playback);
        let now = s.clock.now();
        s.ticked(now);
    }

    /// Non-live vhostsndsrc: blocks until the guest has periods to play, then completes
    /// as many as it may at once (one wake-up and one interrupt for the lot), or
    /// returns `None` when `cancel` returns true (checked whenever the card is woken).
    pub fn wait_playback(&self, cancel: &dyn Fn() -> bool) -> Option<(Vec<u8>, PcmParams)> {
        let mut st = self.lock();
        loop {
            if cancel() || st.shutdown {
                return None;
            }
            // A stopped ring (the VM is paused) has nothing to play until it runs.
            let ring_running = Self::ring_running(&st, Direction::Playback);
            let s = st.stream(Direction::Playback);
            let mut wait = None;
            if let (PcmState::Running, Some(p)) = (s.state, s.params) {
                if ring_running && !s.pending.is_empty() {
                    // A Linux guest reads its position (modulo its buffer) only when
                    // it handles completions or its application writes: a whole
                    // buffer completed between two reads puts the position back where
                    // it was, ALSA sees no progress and fails the write with EIO. The
                    // guest queues a period only after ALSA saw the position within a
                    // buffer of it, so completing all but the newest queued period
                    // stays less than a buffer ahead of what ALSA saw. The newest
                    // waits for the guest to queue more, or for a period of real time.
                    let period = Duration::from_nanos(p.bytes_to_ns(u64::from(p.period_bytes)));
                    let since = s.last_completion.map_or(period, |t| t.elapsed());
                    if s.pending.len() > 1 || since >= period {
                        let mut data = Vec::new();
                        loop {
                            let (next, _, done) =
                                self.run_period(st, Direction::Playback, Some(&mut data));
                            st = next;
                            if !done || st.stream(Direction::Playback).pending.len() < 2 {
                                break;
                            }
                        }
                        self.poll_ring(&mut st, Direction::Playback);
                        if !data.is_empty() {
                            return Some((data, p));
                        }
                        continue;
                    }
                    wait = Some(period - since);
                }
            }
            st.data_waiters += 1;
            st = match wait {
                Some(t) => self
                    .data
                    .wait_timeout(st, t)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0),
                None => self.data.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
            st.data_waiters -= 1;
        }
    }
}
