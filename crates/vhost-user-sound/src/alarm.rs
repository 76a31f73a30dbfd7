//! A one-shot alarm in real time that one thread sleeps on and any thread moves
//! without waking it: a timerfd. The stand-by pacer sleeps through an element's ticks
//! this way (each tick moves the alarm a grace ahead) instead of waking to look at
//! them; on a virtual machine every timed sleep and wake-up costs exits.

use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Mutex;
use std::time::Duration;

use log::Level;
use vmm_sys_util::timerfd::TimerFd;

use crate::log_limit::limited;

pub(crate) struct Alarm {
    /// Moved by anyone, under the card lock.
    set: Mutex<TimerFd>,
    /// Read by the one thread that sleeps on it (the same timer, a second fd).
    wait: Mutex<TimerFd>,
}

impl Alarm {
    pub(crate) fn new() -> std::io::Result<Alarm> {
        let set = TimerFd::new().map_err(std::io::Error::from)?;
        // SAFETY: dup of an open fd we own; the new fd is owned by the TimerFd.
        let dup = unsafe { libc::fcntl(set.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `dup` is a fresh fd nothing else owns.
        let wait = unsafe { TimerFd::from_raw_fd(dup) };
        Ok(Alarm {
            set: Mutex::new(set),
            wait: Mutex::new(wait),
        })
    }

    /// Rings `after` from now (at once for zero), replacing the time set before.
    pub(crate) fn ring_in(&self, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        let mut t = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = t.reset(after, None) {
            limited!(Level::Warn, "stand-by alarm: cannot set the timer: {e}");
        }
    }

    /// Sleeps until the alarm rings (at once if it rang since the last wait).
    pub(crate) fn wait(&self) {
        let mut t = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = t.wait() {
            limited!(Level::Warn, "stand-by alarm: cannot wait on the timer: {e}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn moving_the_alarm_does_not_wake_the_sleeper() {
        let a = Arc::new(Alarm::new().expect("timerfd"));
        a.ring_in(Duration::from_millis(50));
        let a2 = a.clone();
        let t0 = Instant::now();
        let sleeper = std::thread::spawn(move || {
            a2.wait();
            t0.elapsed()
        });
        // Moved ahead twice while it sleeps: it wakes once, at the last time set.
        std::thread::sleep(Duration::from_millis(30));
        a.ring_in(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(30));
        a.ring_in(Duration::from_millis(50));
        let slept = sleeper.join().unwrap();
        assert!(slept >= Duration::from_millis(105), "woke after {slept:?}");
    }

    #[test]
    fn a_ring_before_the_wait_is_not_lost() {
        let a = Alarm::new().expect("timerfd");
        a.ring_in(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let t0 = Instant::now();
        a.wait();
        assert!(t0.elapsed() < Duration::from_millis(100));
    }
}
