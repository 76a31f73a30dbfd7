//! The clock a stream's completions are paced by.
//!
//! The device is the guest's sound card, so completion timing *is* the guest's audio
//! clock. By default a stream follows the host's monotonic clock; an element that owns
//! the stream can hand it the pipeline clock instead, so guest and pipeline run in lock
//! step (and tests can drive the guest with a test clock).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A clock that can be waited on and whose wait can be cut short.
pub trait PacerClock: Send + Sync {
    /// Current time in nanoseconds on this clock's own timeline.
    fn now(&self) -> u64;
    /// Blocks until `deadline` (same timeline as `now`). Returns `false` when the wait
    /// was cut short by [`PacerClock::interrupt`], including an interrupt that came
    /// before the wait started.
    fn wait_until(&self, deadline: u64) -> bool;
    /// Makes the current or the next `wait_until` return `false` at once.
    fn interrupt(&self);
}

/// CLOCK_MONOTONIC, the same clock GStreamer's system clock uses by default.
pub struct MonotonicClock {
    origin: Instant,
    interrupted: Mutex<bool>,
    cond: Condvar,
}

impl MonotonicClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
            interrupted: Mutex::new(false),
            cond: Condvar::new(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl PacerClock for MonotonicClock {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn wait_until(&self, deadline: u64) -> bool {
        let mut interrupted = self.interrupted.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *interrupted {
                *interrupted = false;
                return false;
            }
            let now = self.now();
            if now >= deadline {
                return true;
            }
            interrupted = match self
                .cond
                .wait_timeout(interrupted, Duration::from_nanos(deadline - now))
            {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
    }

    fn interrupt(&self) {
        *self.interrupted.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn interrupt_before_wait_is_not_lost() {
        let c = MonotonicClock::new();
        c.interrupt();
        assert!(!c.wait_until(u64::MAX));
        assert!(c.wait_until(0));
    }

    #[test]
    fn interrupt_cuts_a_wait_short() {
        let c = Arc::new(MonotonicClock::new());
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.wait_until(u64::MAX));
        std::thread::sleep(Duration::from_millis(20));
        c.interrupt();
        assert!(!t.join().unwrap());
    }
}
