//! A structure-aware fuzzer for the vhost-user virtio-snd device, on stable Rust.
//!
//! The device runs in this process on a socket of its own, its pacers on a virtual
//! clock; the in-repo frontend (`virtio-snd-frontend`) plays QEMU and the guest
//! driver. Each iteration draws a batch of typed inputs ([`input::Action`]) from a
//! seeded generator: control requests of every code with random fields and lengths,
//! I/O chains on every queue in every stream state, descriptor layouts (split and
//! indirect, loops, links and addresses out of range, zero lengths, readable after
//! writable), forged avail indexes and ring bases, event-queue buffers, PCM state
//! sequences, VM pauses, reboots, reconnections, and raw vhost-user sessions (wrong
//! sizes, unknown codes, bad memory tables, vring indexes and sizes out of range,
//! messages before SET_OWNER, connections closed mid-message).
//!
//! Every completion is checked as it comes (used.len within the chain's writable
//! bytes; status codes of well-formed chains), and after each batch: a valid
//! PCM_INFO within 100 ms, guard bytes around guest buffers and device-readable
//! buffers untouched, file descriptors flat, peak RSS under 64 MiB. A batch is a
//! function of (seed, iteration) alone and starts on a fresh connection, so a failure
//! names the seed and iteration that replay it.

mod apply;
pub mod arena;
mod clock;
pub mod generate;
pub mod input;
mod procfs;
mod session;
pub mod supervisor;
pub mod vhost_user;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vhost_user_sound::{Device, Direction};

use apply::Runner;
use clock::Timeline;
use generate::{batch_rng, Generator};
use input::Action;
pub use session::Stats;

/// Peak RSS the process may reach under the fuzzer.
pub const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// An input that takes longer is pointed out when replaying.
const SLOW_INPUT: Duration = Duration::from_millis(20);
/// File descriptors the process may have gained since the first batch.
pub const FD_SLACK: usize = 2;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// The first iteration to run.
    pub first: u64,
    /// Stop after this many iterations.
    pub iterations: Option<u64>,
    /// Stop once this many inputs ran.
    pub inputs: Option<u64>,
    /// Stop once this much time passed.
    pub duration: Option<Duration>,
    /// Inputs per batch.
    pub batch: usize,
    /// Print every input before applying it.
    pub verbose: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            first: 0,
            iterations: None,
            inputs: None,
            duration: None,
            batch: 500,
            verbose: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub iterations: u64,
    pub inputs: u64,
    pub elapsed: Duration,
    pub stats: Stats,
    pub raw_sessions: u64,
    pub peak_rss_kib: u64,
    pub fds_first: usize,
    pub fds_last: usize,
    pub threads_last: usize,
    pub worst_alive: Duration,
}

impl Summary {
    pub fn inputs_per_second(&self) -> f64 {
        self.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} inputs in {} iterations, {:.1} s, {:.0} inputs/s, 0 failures; \
             {} chains, {} completions checked ({} requests and {} periods S_OK), \
             {} inputs skipped (ring or arena full), \
             {} connections ({} tainted by forged ring state), {} raw vhost-user sessions; \
             slowest end-of-batch PCM_INFO {:.1} ms; peak RSS {:.1} MiB; fds {} -> {}; \
             threads {}",
            self.seed,
            self.inputs,
            self.iterations,
            self.elapsed.as_secs_f64(),
            self.inputs_per_second(),
            self.stats.chains,
            self.stats.completions,
            self.stats.requests_ok,
            self.stats.periods_ok,
            self.stats.skipped,
            self.stats.connections,
            self.stats.tainted,
            self.raw_sessions,
            self.worst_alive.as_secs_f64() * 1e3,
            self.peak_rss_kib as f64 / 1024.0,
            self.fds_first,
            self.fds_last,
            self.threads_last,
        )
    }
}

/// A check that failed, and where.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub iteration: u64,
    /// The input of the batch being applied, or None for the end-of-batch checks.
    pub input: Option<usize>,
    pub what: String,
    /// A resource grew over the run: replaying the one batch may not show it.
    pub cumulative: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match self.input {
            Some(i) => format!("input {i}"),
            None => "the end-of-batch checks".into(),
        };
        write!(
            f,
            "FAILED at seed {} iteration {} ({at}): {}\nreplay: vhostsnd-fuzz --replay {}:{}",
            self.seed, self.iteration, self.what, self.seed, self.iteration
        )?;
        if self.cumulative {
            write!(
                f,
                " (this grew over the run: `vhostsnd-fuzz --seed {} --iterations {}` runs it \
                 all again)",
                self.seed,
                self.iteration + 1
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// A device on a socket of its own, with both pacers on one virtual timeline.
struct Rig {
    dir: PathBuf,
    device: Option<std::sync::Arc<Device>>,
}

impl Rig {
    fn new(timeline: &std::sync::Arc<Timeline>) -> Result<(Rig, PathBuf), String> {
        let dir = std::env::temp_dir().join(format!("vhostsnd-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join("snd.sock");
        let device = Device::acquire(&path).map_err(|e| format!("starting the device: {e}"))?;
        // Control elements too: their requests, values and events on hostile buffers.
        device.card().offer_controls(true);
        for d in Direction::ALL {
            device
                .card()
                .set_clock(d, Some(timeline.clock(d.stream_id() as usize)));
        }
        Ok((
            Rig {
                dir,
                device: Some(device),
            },
            path,
        ))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.device.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn inputs_of(a: &Action) -> u64 {
    match a {
        Action::VhostUser { session, .. } => session.inputs(),
        _ => 1,
    }
}

/// Runs batches until `cfg` says to stop or a check fails. `on_batch` hears of each
/// iteration before it starts, with the inputs run so far (a supervisor keeps the
/// last one, to name it if the process dies).
pub fn run(cfg: &Config, on_batch: &mut dyn FnMut(u64, u64)) -> Result<Summary, Failure> {
    let fail = |iteration: u64, input: Option<usize>, what: String, cumulative: bool| Failure {
        seed: cfg.seed,
        iteration,
        input,
        what,
        cumulative,
    };
    let timeline = Timeline::new();
    let (rig, path) = Rig::new(&timeline).map_err(|e| fail(cfg.first, None, e, false))?;
    let mut runner = Runner::new(&path, timeline);
    let start = Instant::now();
    let mut sum = Summary {
        seed: cfg.seed,
        ..Summary::default()
    };
    let mut iteration = cfg.first;
    loop {
        let done = cfg.iterations.is_some_and(|n| sum.iterations >= n)
            || cfg.inputs.is_some_and(|n| sum.inputs >= n)
            || cfg.duration.is_some_and(|d| start.elapsed() >= d);
        if done {
            break;
        }
        on_batch(iteration, sum.inputs);
        let mut generator = Generator::new(batch_rng(cfg.seed, iteration));
        let (connect, actions) = generator.batch(cfg.batch);
        if cfg.verbose {
            eprintln!("iteration {iteration}: connect {connect:?}");
        }
        runner
            .reconnect(connect)
            .map_err(|e| fail(iteration, None, e, false))?;
        for (k, a) in actions.iter().enumerate() {
            if cfg.verbose {
                eprintln!("input {k}: {a:?}");
            }
            let t0 = Instant::now();
            runner
                .apply(k, a)
                .map_err(|e| fail(iteration, Some(k), e, false))?;
            if cfg.verbose && t0.elapsed() > SLOW_INPUT {
                eprintln!("input {k} took {:?}", t0.elapsed());
            }
            sum.inputs += inputs_of(a);
        }
        runner
            .end_batch()
            .map_err(|e| fail(iteration, None, e, false))?;
        let fds = procfs::count("/proc/self/fd");
        if sum.iterations == 0 {
            sum.fds_first = fds;
        } else if fds > sum.fds_first + FD_SLACK {
            return Err(fail(
                iteration,
                None,
                format!(
                    "file descriptors grew from {} after the first batch to {fds}",
                    sum.fds_first
                ),
                true,
            ));
        }
        sum.fds_last = fds;
        let rss = procfs::peak_rss_kib();
        if rss > RSS_LIMIT_KIB {
            return Err(fail(
                iteration,
                None,
                format!("peak RSS {rss} KiB is over the {RSS_LIMIT_KIB} KiB limit"),
                true,
            ));
        }
        sum.peak_rss_kib = rss;
        sum.iterations += 1;
        iteration += 1;
    }
    runner
        .finish()
        .map_err(|e| fail(iteration.saturating_sub(1), None, e, false))?;
    sum.elapsed = start.elapsed();
    sum.stats = runner.stats;
    sum.raw_sessions = runner.raw_sessions;
    sum.worst_alive = runner.worst_alive;
    sum.threads_last = procfs::count("/proc/self/task");
    sum.peak_rss_kib = procfs::peak_rss_kib();
    drop(runner);
    drop(rig);
    Ok(sum)
}
