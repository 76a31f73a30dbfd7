//! Log lines a guest (or its VMM) can cause, bounded per cause.
//!
//! A guest decides how often the device meets a malformed chain, a refused request
//! or a broken ring, so every such line would otherwise be as frequent as the guest
//! likes: a hostile one once filled 42 GB of log in ten minutes. Each call site of
//! the device logs at most [`LINES_PER_WINDOW`] lines per [`WINDOW`], and the next
//! line it is allowed says how many were left out. The rust-vmm crates the device is
//! built on log guest-triggered errors too, at ERROR and without limit; loggers pass
//! their records through [`screen`], which bounds them the same way and lowers them
//! to WARNING (a guest's fault is not an error of the host).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long one budget of lines lasts.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Lines per cause per [`WINDOW`].
pub const LINES_PER_WINDOW: u32 = 5;

/// Crates whose log lines a guest can cause.
const RUST_VMM: [&str; 4] = ["virtio_queue", "vhost_user_backend", "vhost", "vm_memory"];
/// Distinct library call sites tracked; more share one budget.
const MAX_SITES: usize = 256;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// One cause's budget.
#[doc(hidden)]
pub struct Limiter {
    window: AtomicU64,
    used: AtomicU32,
    dropped: AtomicU32,
}

impl Limiter {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Limiter {
            window: AtomicU64::new(0),
            used: AtomicU32::new(0),
            dropped: AtomicU32::new(0),
        }
    }

    /// Whether one more line may go out now; if so, how many were left out before
    /// it. Racing threads may let a line more or less through: the bound is what
    /// matters, not its exact value.
    pub fn admit(&self) -> Option<u32> {
        let now = (EPOCH.elapsed().as_nanos() / WINDOW.as_nanos()) as u64 + 1;
        if self.window.swap(now, Ordering::Relaxed) != now {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < LINES_PER_WINDOW {
            Some(self.dropped.swap(0, Ordering::Relaxed))
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// What follows a line when lines of its cause were left out before it: nothing, or
/// how many.
pub struct LeftOut(pub u32);

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more like it left out)"),
        }
    }
}

/// `log!` through a budget of its own call site.
macro_rules! limited {
    ($lvl:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::Limiter = $crate::log_limit::Limiter::new();
        if log::log_enabled!($lvl) {
            if let Some(n) = LIMIT.admit() {
                log::log!(
                    $lvl,
                    "{}{}",
                    format_args!($($arg)+),
                    $crate::log_limit::LeftOut(n)
                );
            }
        }
    }};
}
pub(crate) use limited;

static SITES: LazyLock<Mutex<HashMap<(String, u32), Limiter>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// What a logger does with `record`: `None` to leave it out, or the level to log it
/// at and how many lines of its call site were left out before it. Lines of the
/// rust-vmm crates are bounded per call site and at most WARNING; others pass as they
/// are (the device's own are bounded where they are written).
pub fn screen(record: &log::Record<'_>) -> Option<(log::Level, u32)> {
    let target = record.target();
    let krate = target.split("::").next().unwrap_or(target);
    if !RUST_VMM.contains(&krate) {
        return Some((record.level(), 0));
    }
    let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
    let mut key = (target.to_owned(), record.line().unwrap_or(0));
    if !sites.contains_key(&key) && sites.len() >= MAX_SITES {
        key = (String::new(), 0);
    }
    let admitted = sites.entry(key).or_insert_with(Limiter::new).admit()?;
    Some((record.level().max(log::Level::Warn), admitted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_gets_a_few_lines_a_window() {
        let l = Limiter::new();
        let admitted = (0..1000).filter_map(|_| l.admit()).count();
        // The loop may straddle a window boundary.
        assert!(
            (LINES_PER_WINDOW as usize..=2 * LINES_PER_WINDOW as usize).contains(&admitted),
            "{admitted} lines admitted"
        );
    }

    #[test]
    fn library_errors_are_bounded_and_lowered() {
        let record = |target| {
            log::Record::builder()
                .level(log::Level::Error)
                .target(target)
                .line(Some(573))
                .args(format_args!("Iterator error"))
                .build()
        };
        let passed: Vec<_> = (0..1000)
            .filter_map(|_| screen(&record("virtio_queue::queue")))
            .collect();
        assert!(passed.len() <= 2 * LINES_PER_WINDOW as usize, "{passed:?}");
        assert!(passed.iter().all(|(l, _)| *l == log::Level::Warn));
        assert_eq!(screen(&record("gstvhostsnd")), Some((log::Level::Error, 0)));
    }
}
