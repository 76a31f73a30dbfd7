//! A GStreamer clock as a [`PacerClock`]: waits on a single-shot clock id that
//! `interrupt()` unschedules, so every wait can be cancelled from `unlock()` or a
//! state change. The id is reinitialised for each wait, as GstBaseSink does: a new
//! id per period would take GLib's process-wide weak-reference lock twice.

use std::sync::Mutex;

use gst::prelude::*;

use vhost_user_sound::PacerClock;

pub struct PipelineClock {
    clock: gst::Clock,
    wait: Mutex<Wait>,
}

#[derive(Default)]
struct Wait {
    /// The id of the last wait, kept for the next.
    id: Option<gst::SingleShotClockId>,
    /// A wait on `id` is under way.
    waiting: bool,
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
            let at = gst::ClockTime::from_nseconds(deadline);
            let id = match w.id.take() {
                Some(id) if self.clock.single_shot_id_reinit(&id, at).is_ok() => id,
                _ => self.clock.new_single_shot_id(at),
            };
            w.id = Some(id.clone());
            w.waiting = true;
            id
        };
        let (res, _) = id.wait();
        let mut w = self.lock();
        w.waiting = false;
        let interrupted = std::mem::take(&mut w.interrupted);
        !interrupted && matches!(res, Ok(_) | Err(gst::ClockError::Early))
    }

    fn interrupt(&self) {
        let mut w = self.lock();
        w.interrupted = true;
        if let (true, Some(id)) = (w.waiting, &w.id) {
            id.unschedule();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn an_interrupted_wait_leaves_the_id_fit_for_the_next() {
        gst::init().unwrap();
        let p = Arc::new(PipelineClock::new(gst::SystemClock::obtain()));
        let now = p.now();
        assert!(p.wait_until(now + 1_000_000), "a 1 ms wait completes");

        let waiter = p.clone();
        let t0 = Instant::now();
        let far = std::thread::spawn(move || waiter.wait_until(now + 60_000_000_000));
        std::thread::sleep(Duration::from_millis(50));
        p.interrupt();
        assert!(!far.join().unwrap(), "the interrupted wait says so");
        assert!(t0.elapsed() < Duration::from_secs(5));

        // The same id, unscheduled above, waits again once the interrupt is over.
        p.clear_interrupt();
        let t1 = Instant::now();
        assert!(p.wait_until(p.now() + 20_000_000));
        assert!(t1.elapsed() >= Duration::from_millis(19), "it waited");
        assert!(
            p.wait_until(0),
            "a deadline passed long ago is no interrupt"
        );
    }
}
