//! `vhostsnd-fuzz`: runs the fuzzer for a number of inputs or seconds, or replays one
//! iteration. See RELIABILITY.md at the top of the repository.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use vhostsnd_fuzz::{run, supervisor, Config};

#[derive(Parser, Debug)]
#[command(about = "Structure-aware fuzzer for the vhost-user virtio-snd device")]
struct Args {
    /// Seed of the run (default: drawn from the time, and printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many inputs.
    #[arg(long)]
    inputs: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Stop after this many iterations (batches).
    #[arg(long)]
    iterations: Option<u64>,
    /// Start at this iteration.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Inputs per iteration.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Replay one iteration, SEED:ITERATION as a failure printed it, with every input
    /// shown.
    #[arg(long, value_name = "SEED:ITERATION")]
    replay: Option<String>,
    /// Print every input before applying it.
    #[arg(long)]
    verbose: bool,
    /// Run in this process, without a supervising parent (a crash then goes
    /// unreported).
    #[arg(long)]
    in_process: bool,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10.0)]
    progress: f64,
    #[arg(long, hide = true)]
    worker: bool,
}

fn config(args: &Args) -> Result<Config, String> {
    let mut cfg = Config {
        seed: args.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        }),
        first: args.first,
        iterations: args.iterations,
        inputs: args.inputs,
        duration: args.seconds.map(Duration::from_secs_f64),
        batch: args.batch,
        verbose: args.verbose,
    };
    if let Some(r) = &args.replay {
        let (s, i) = r
            .split_once(':')
            .ok_or_else(|| format!("--replay {r}: expected SEED:ITERATION"))?;
        cfg.seed = s.parse().map_err(|e| format!("--replay seed {s}: {e}"))?;
        cfg.first = i
            .parse()
            .map_err(|e| format!("--replay iteration {i}: {e}"))?;
        cfg.iterations = Some(1);
        cfg.verbose = true;
    }
    if cfg.iterations.is_none() && cfg.inputs.is_none() && cfg.duration.is_none() {
        return Err("say how long to run: --inputs, --seconds, --iterations or --replay".into());
    }
    Ok(cfg)
}

fn work(cfg: &Config) -> ExitCode {
    let mut out = std::io::stdout();
    let res = run(cfg, &mut |iteration, inputs| {
        // The supervisor reads these to name the iteration if this process dies.
        let _ = writeln!(out, "{}", supervisor::batch_line(iteration, inputs));
        let _ = out.flush();
    });
    match res {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("{f}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vhostsnd-fuzz: {e}");
            return ExitCode::from(2);
        }
    };
    if args.worker || args.in_process {
        return work(&cfg);
    }
    eprintln!("vhostsnd-fuzz: seed {}", cfg.seed);
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("vhostsnd-fuzz: cannot find my own executable: {e}");
            return ExitCode::from(2);
        }
    };
    // The worker gets the same arguments with the seed made explicit.
    let mut wargs: Vec<OsString> = std::env::args_os().skip(1).collect();
    wargs.push("--worker".into());
    if args.seed.is_none() && args.replay.is_none() {
        wargs.extend(["--seed".into(), cfg.seed.to_string().into()]);
    }
    let progress = Duration::from_secs_f64(args.progress.max(0.1));
    match supervisor::supervise(&exe, &wargs, cfg.seed, progress) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("vhostsnd-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}
