//! Benchmarks: pacing precision, added latency, CPU and scale, offline throughput,
//! and QEMU's built-in virtio-sound against QEMU + this device.
//!
//! cargo run --release --example bench -- [--quick] [--only N] [--no-qemu] [--markdown FILE]
//!
//! `--quick` runs points 1-4 in a few seconds (point 5 only with `--only 5`, then
//! with 2 s of audio). See BENCHMARKS.md for the results and how to read them.

use vhostsnd_testbed::bench as suite;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut opts = suite::Opts {
        quick: false,
        only: None,
        skip_qemu: false,
    };
    let mut markdown = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--no-qemu" => opts.skip_qemu = true,
            "--only" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n @ 1..=5) => opts.only = Some(n),
                _ => {
                    eprintln!("bench: --only needs a point number 1-5");
                    return ExitCode::FAILURE;
                }
            },
            "--markdown" => markdown = args.next(),
            other => {
                eprintln!("bench: unknown argument {other}");
                return ExitCode::FAILURE;
            }
        }
    }
    if opts.quick && opts.only != Some(5) {
        opts.skip_qemu = true;
    }
    let mut out = String::new();
    let mut failed = false;
    for (n, r) in suite::run(&opts) {
        match r {
            Ok(tables) => {
                for t in tables {
                    if !t.has_numbers() {
                        eprintln!("bench: point {n}: a table lacks numbers");
                        failed = true;
                    }
                    let md = t.markdown();
                    println!("{md}");
                    out.push_str(&md);
                    out.push('\n');
                }
            }
            Err(e) => {
                eprintln!("bench: point {n} failed: {e}");
                failed = true;
            }
        }
    }
    if let Some(path) = markdown {
        if let Err(e) = std::fs::write(&path, out) {
            eprintln!("bench: {path}: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
