//! The fuzzer runs in a child process that tells its parent which iteration it is
//! in, so that a crash (a signal, an abort) is still reported with the seed and
//! iteration that replay it.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the worker reports the iteration it starts, on its stdout.
pub const BATCH_PREFIX: &str = "@batch ";

/// The worker's line for an iteration about to start.
pub fn batch_line(iteration: u64, inputs: u64) -> String {
    format!("{BATCH_PREFIX}{iteration} {inputs}")
}

/// Runs `exe args` (the worker) and relays what it prints; returns the exit code to
/// end with. `seed` names the run if the worker dies.
pub fn supervise(exe: &Path, args: &[OsString], seed: u64, progress: Duration) -> io::Result<i32> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", exe.display())))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("the worker has no stdout"))?;
    let start = Instant::now();
    let mut last_report = start;
    let mut at: Option<(u64, u64)> = None;
    for line in BufReader::new(out).lines() {
        let line = line?;
        let Some(rest) = line.strip_prefix(BATCH_PREFIX) else {
            println!("{line}");
            continue;
        };
        let mut words = rest.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(i)), Some(Ok(n))) = (words.next(), words.next()) {
            at = Some((i, n));
        }
        if last_report.elapsed() >= progress {
            last_report = Instant::now();
            if let Some((i, n)) = at {
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "[{secs:.0} s] iteration {i}, {n} inputs, {:.0} inputs/s",
                    n as f64 / secs.max(1e-9)
                );
            }
        }
    }
    let status = child.wait()?;
    // 0 passed, 1 failed a check and said so; anything else is a crash to name here.
    let how = match (status.code(), status.signal()) {
        (Some(c @ (0 | 1)), _) => return Ok(c),
        (Some(c), _) => format!("exited with code {c} (a panic?)"),
        (None, Some(sig)) => format!("died of signal {sig}"),
        (None, None) => "ended in an unknown way".into(),
    };
    match at {
        Some((iteration, _)) => eprintln!(
            "FAILED at seed {seed} iteration {iteration}: the fuzzer's process {how}\n\
             replay: vhostsnd-fuzz --replay {seed}:{iteration}"
        ),
        None => eprintln!("FAILED: the fuzzer's process {how} before its first batch"),
    }
    Ok(1)
}
