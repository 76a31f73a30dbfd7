//! Percentiles, linear fits and the process's CPU and memory figures.

use std::time::Duration;

/// The `p`-th percentile (0..=100, nearest rank) of `v`; NaN when empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// Least-squares fit `y = a + b x`; returns `(a, b)`.
pub fn linfit(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    let b = sxy / sxx;
    (my - b * mx, b)
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

/// User + system CPU time of this process (all threads), or of its waited-for
/// children with `children`.
pub fn rusage_cpu(children: bool) -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let who = if children {
        libc::RUSAGE_CHILDREN
    } else {
        libc::RUSAGE_SELF
    };
    // SAFETY: `ru` is a valid rusage for the call to fill.
    unsafe { libc::getrusage(who, &mut ru) };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub fn process_cpu() -> Duration {
    rusage_cpu(false)
}

/// Raises the calling thread's priority to nice -10: the frontend threads stand in
/// for QEMU and the guest, which have their own vCPUs, so a completion they see late
/// should be the device's doing, not theirs waiting behind 128 streaming threads.
/// Returns false without the privilege for it (they then run at nice 0).
pub fn favour_this_thread() -> bool {
    // SAFETY: system calls on the calling thread only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -10) == 0
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime fills the zeroed timespec it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `(VmRSS, RssShmem)` of this process in KiB.
pub fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssShmem:"))
}

/// Every thread of this process: its id, its name and how often it slept and was
/// woken (voluntary context switches), from /proc.
pub fn thread_wakeups() -> Vec<(u32, String, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let woken = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()?;
        Some((tid, comm.trim().to_owned(), woken))
    })
    .collect()
}

/// Wake-ups between two [`thread_wakeups`] of the threads alive at both whose name
/// `class` accepts.
pub fn wakeups_between(
    before: &[(u32, String, u64)],
    after: &[(u32, String, u64)],
    class: impl Fn(&str) -> bool,
) -> u64 {
    after
        .iter()
        .filter(|(_, name, _)| class(name))
        .filter_map(|(tid, _, n)| {
            let (_, _, was) = before.iter().find(|(t, _, _)| t == tid)?;
            Some(n.saturating_sub(*was))
        })
        .sum()
}

pub fn ms(d: f64) -> String {
    format!("{d:.3}")
}
