//! The pacers' clock under the fuzzer: virtual time that only moves when an input
//! moves it, so that a batch completes periods when its inputs say so and runs as fast
//! as the device answers, not in real time.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use vhost_user_sound::PacerClock;

#[derive(Default)]
struct State {
    now: u64,
    interrupted: [bool; 2],
}

/// Time shared by both streams' clocks.
#[derive(Default)]
pub struct Timeline {
    st: Mutex<State>,
    moved: Condvar,
}

impl Timeline {
    pub fn new() -> Arc<Self> {
        Arc::new(Timeline::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn advance(&self, ns: u64) {
        let mut st = self.lock();
        st.now = st.now.saturating_add(ns);
        drop(st);
        self.moved.notify_all();
    }

    /// The clock of stream `id` (0 or 1) on this timeline.
    pub fn clock(self: &Arc<Self>, id: usize) -> Arc<dyn PacerClock> {
        Arc::new(StreamClock {
            tl: self.clone(),
            id,
        })
    }
}

struct StreamClock {
    tl: Arc<Timeline>,
    id: usize,
}

impl PacerClock for StreamClock {
    fn now(&self) -> u64 {
        self.tl.lock().now
    }

    fn wait_until(&self, deadline: u64) -> bool {
        let mut st = self.tl.lock();
        loop {
            if st.interrupted[self.id] {
                st.interrupted[self.id] = false;
                return false;
            }
            if st.now >= deadline {
                return true;
            }
            st = self.tl.moved.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn interrupt(&self) {
        self.tl.lock().interrupted[self.id] = true;
        self.tl.moved.notify_all();
    }
}
