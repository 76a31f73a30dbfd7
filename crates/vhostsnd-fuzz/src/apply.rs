//! Applying one input to the device, and the checks after a batch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timeline;
use crate::input::{Action, Connect};
use crate::session::{Session, Stats};
use crate::vhost_user;

/// The end-of-batch bound on a PCM_INFO round trip.
pub const ALIVE_LIMIT: Duration = Duration::from_millis(100);

pub struct Runner {
    path: PathBuf,
    timeline: Arc<Timeline>,
    session: Option<Session>,
    pub stats: Stats,
    pub raw_sessions: u64,
    pub worst_alive: Duration,
}

impl Runner {
    pub fn new(path: &Path, timeline: Arc<Timeline>) -> Self {
        Runner {
            path: path.to_owned(),
            timeline,
            session: None,
            stats: Stats::default(),
            raw_sessions: 0,
            worst_alive: Duration::ZERO,
        }
    }

    /// Ends the current guest (checking its memory unless it was tainted) and
    /// connects a new one.
    pub fn reconnect(&mut self, c: Connect) -> Result<(), String> {
        self.close()?;
        let s = Session::open(&self.path, c).map_err(|e| e.to_string())?;
        self.stats.connections += 1;
        self.session = Some(s);
        Ok(())
    }

    fn close(&mut self) -> Result<(), String> {
        let Some(mut s) = self.session.take() else {
            return Ok(());
        };
        if s.tainted {
            self.stats.tainted += 1;
            return Ok(());
        }
        s.harvest(&mut self.stats)?;
        s.verify_memory()
    }

    fn session(&mut self) -> Result<&mut Session, String> {
        self.session
            .as_mut()
            .ok_or_else(|| "no guest connected".to_string())
    }

    pub fn apply(&mut self, k: usize, a: &Action) -> Result<(), String> {
        if let Some(s) = self.session.as_mut() {
            s.input = k;
        }
        let res = self.apply_inner(a);
        match res {
            // Once the guest forged ring state, the device may legitimately confuse
            // it: start over with a new guest instead of blaming the device.
            Err(_) if self.session.as_ref().is_some_and(|s| s.tainted) => {
                let c = self.session()?.connect;
                self.reconnect(c)
            }
            r => r,
        }
    }

    fn apply_inner(&mut self, a: &Action) -> Result<(), String> {
        let stats = &mut self.stats;
        let Some(s) = self.session.as_mut() else {
            return Err("no guest connected".into());
        };
        match a {
            Action::Control(chain) => s.control(chain, stats),
            Action::Io { queue, chain } => s.submit(*queue, chain, stats).map(|_| ()),
            Action::Tick { ns } => {
                self.timeline.advance(*ns);
                Ok(())
            }
            Action::Harvest => s.harvest(stats),
            Action::Kick { queue } => s.guest().kick(*queue).map_err(|e| format!("kick: {e}")),
            Action::AutoKick(on) => {
                s.set_auto_kick(*on);
                Ok(())
            }
            Action::AvailIdx { queue, idx } => {
                s.tainted = true;
                s.guest()
                    .set_avail_idx(*queue, *idx)
                    .map_err(|e| format!("avail idx: {e}"))?;
                s.guest().kick(*queue).map_err(|e| format!("kick: {e}"))
            }
            Action::Pause => {
                if s.paused.is_some() {
                    stats.skipped += 1;
                    return Ok(());
                }
                let bases = s.guest().pause().map_err(|e| format!("pause: {e}"))?;
                s.paused = Some(bases);
                Ok(())
            }
            Action::Resume { skew } => {
                let Some(mut bases) = s.paused.take() else {
                    stats.skipped += 1;
                    return Ok(());
                };
                for (b, k) in bases.iter_mut().zip(skew) {
                    *b = b.wrapping_add(*k);
                }
                if skew.iter().any(|k| *k != 0) {
                    s.tainted = true;
                }
                s.guest().resume(bases).map_err(|e| format!("resume: {e}"))
            }
            Action::Reboot { reset } => {
                if s.paused.take().is_none() {
                    s.guest().pause().map_err(|e| format!("pause: {e}"))?;
                }
                if *reset {
                    s.guest()
                        .reset_device()
                        .map_err(|e| format!("RESET_DEVICE: {e}"))?;
                }
                s.forget_inflight();
                s.guest()
                    .restart_driver()
                    .map_err(|e| format!("restarting the driver: {e}"))
            }
            Action::Reconnect(c) => self.reconnect(*c),
            Action::VhostUser { session, then } => {
                self.close()?;
                self.raw_sessions += 1;
                vhost_user::run(session, &self.path).map_err(|e| e.to_string())?;
                self.reconnect(*then)
            }
        }
    }

    /// After a batch: the guest is put back in order (resumed, or replaced if it
    /// forged ring state), every completion is collected and checked, a PCM_INFO is
    /// answered in time, and guards and readable buffers are as they were.
    pub fn end_batch(&mut self) -> Result<(), String> {
        let needs_new = self.session.as_ref().is_none_or(|s| s.tainted);
        if needs_new {
            let c = match &self.session {
                Some(s) => s.connect,
                None => return Err("no guest connected".into()),
            };
            self.reconnect(c)?;
        }
        let stats = &mut self.stats;
        let Some(s) = self.session.as_mut() else {
            return Err("no guest connected".into());
        };
        if let Some(bases) = s.paused.take() {
            s.guest()
                .resume(bases)
                .map_err(|e| format!("resume: {e}"))?;
        }
        s.set_auto_kick(true);
        s.flush_all().map_err(|e| format!("kick: {e}"))?;
        s.settle_control(stats)?;
        s.harvest(stats)?;
        let took = s.alive(ALIVE_LIMIT)?;
        s.harvest(stats)?;
        s.verify_memory()?;
        self.worst_alive = self.worst_alive.max(took);
        Ok(())
    }

    /// Closes the last guest, checking it like any other.
    pub fn finish(&mut self) -> Result<(), String> {
        self.close()
    }
}
