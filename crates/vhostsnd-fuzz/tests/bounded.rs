//! The fuzzer as CI runs it: a fixed seed for a bounded time (60 s by default,
//! VHOSTSND_FUZZ_SECONDS to change it), through the binary and its supervisor, so
//! that a crash fails the test with the seed and iteration that replay it.

use std::process::Command;

#[test]
fn fuzz_for_a_bounded_time() {
    let seconds = std::env::var("VHOSTSND_FUZZ_SECONDS").unwrap_or_else(|_| "60".into());
    let seed = std::env::var("VHOSTSND_FUZZ_SEED").unwrap_or_else(|_| "20261201".into());
    let out = Command::new(env!("CARGO_BIN_EXE_vhostsnd-fuzz"))
        .args(["--seed", &seed, "--seconds", &seconds, "--progress", "15"])
        .output()
        .expect("the fuzzer runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "the fuzzer failed:\n{stderr}");
    assert!(
        stdout.contains(" 0 failures"),
        "no summary from the fuzzer:\n{stdout}"
    );
}
