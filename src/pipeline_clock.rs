//! A GStreamer clock as a [`PacerClock`]: waits on single-shot clock ids that
//! `interrupt()` unschedules, so every wait can be cancelled from `unlock()` or a
//! state change.

use std::sync::Mutex;

use gst::prelude::*;

use vhost_user_sound::PacerClock;

pub struct PipelineClock {
    clock: gst::Clock,
    wait: Mutex<Wait>,
}

#[derive(Default)]
struct Wait {
    id: Option<gst::SingleShotClockId>,
    interrupted: bool,
}

impl PipelineClock {
    pub fn new(clock: gst::Clock) -> Self {
        PipelineClock {
            clock,
            wait: Mutex::new(Wait::default()),
        }
    }

    pub fn clock(&self) -> &gst::Clock {
        &self.clock
    }

    /// Forgets an interrupt nobody waited for (after a flush is over).
    pub fn clear_interrupt(&self) {
        self.lock().interrupted = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Wait> {
        self.wait.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PacerClock for PipelineClock {
    fn now(&self) -> u64 {
        self.clock.time().nseconds()
    }

    fn wait_until(&self, deadline: u64) -> bool {
        let id = {
            let mut w = self.lock();
            if std::mem::take(&mut w.interrupted) {
                return false;
            }
            let id = self
                .clock
                .new_single_shot_id(gst::ClockTime::from_nseconds(deadline));
            w.id = Some(id.clone());
            id
        };
        let (res, _) = id.wait();
        let mut w = self.lock();
        w.id = None;
        let interrupted = std::mem::take(&mut w.interrupted);
        !interrupted && matches!(res, Ok(_) | Err(gst::ClockError::Early))
    }

    fn interrupt(&self) {
        let mut w = self.lock();
        w.interrupted = true;
        if let Some(id) = &w.id {
            id.unschedule();
        }
    }
}
