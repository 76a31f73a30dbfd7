//! Checks the real-guest test infrastructure itself (image, harness, console
//! protocol) without the plugin: no sound device is attached.

use std::time::{Duration, Instant};
use vhostsnd_testbed::analysis;
use vhostsnd_testbed::qemu::{self, GuestOpts, GuestRun};

#[test]
fn guest_boots_and_runs_alsa_tools() {
    let script = r#"
set -e
aplay --version
arecord --version
alsabat --help >/dev/null 2>&1 || [ $? -le 1 ]
speaker-test --help | head -1
lsmod | grep -q '^virtio_snd' && echo MODULE-OK
cat /proc/asound/cards
ls /sys/bus/virtio/drivers/virtio_snd >/dev/null && echo DRIVER-OK
head -c 4 /dev/urandom | wc -c
exit 42
"#;
    let out = qemu::run(GuestOpts::new(script)).expect("guest run");
    eprintln!(
        "accel {:?}, wall {:.2} s\n{}",
        out.accel,
        out.wall.as_secs_f64(),
        out.console
    );
    assert_eq!(out.rc, 42, "{}", out.tail());
    assert!(
        out.console.contains("aplay: version 1.2.8"),
        "{}",
        out.tail()
    );
    assert!(out.console.contains("arecord: version"), "{}", out.tail());
    assert!(out.console.contains("MODULE-OK"), "{}", out.tail());
    assert!(out.console.contains("DRIVER-OK"), "{}", out.tail());
    assert!(
        out.console.contains("--- no soundcards ---"),
        "{}",
        out.tail()
    );
    assert!(out.console.contains("VSND-BOOTED"), "{}", out.tail());
    assert!(
        !out.console.contains("VSND-INSMOD-FAILED"),
        "{}",
        out.tail()
    );
}

#[test]
fn alsabat_help_runs() {
    let out = qemu::run(GuestOpts::new("alsabat --help; echo ALSABAT-RC=$?")).expect("run");
    assert!(out.console.contains("Usage: alsabat"), "{}", out.tail());
}

#[test]
fn big_script_and_input_files_and_export() {
    // A WAV goes in through the appended cpio and comes back through vsnd-export.
    let wav = analysis::write_wav(
        analysis::WavFormat::I16,
        48000,
        2,
        &analysis::sine(440.0, 48000, 2, 48000, 0.5),
    );
    let mut script = String::from("# padding to exceed the kernel command line limit\n");
    for i in 0..200 {
        script.push_str(&format!(": line {i} of filler\n"));
    }
    script.push_str("ls -l; vsnd-export tone.wav back.wav; exit 0\n");
    let out = qemu::run(GuestOpts::new(script).file("tone.wav", wav.clone())).expect("run");
    assert_eq!(out.rc, 0, "{}", out.tail());
    let back = out.files.get("back.wav").expect("exported file");
    assert_eq!(back, &wav);
    let w = analysis::read_wav(back).expect("wav");
    let f = analysis::dominant_frequency(&w.channel(0), w.rate).expect("freq");
    assert!((f - 440.0).abs() < 1.0);
    eprintln!(
        "round trip of {} bytes took {:.2} s",
        wav.len(),
        out.wall.as_secs_f64()
    );
}

#[test]
fn markers_input_and_kill() {
    let mut run = GuestRun::boot(GuestOpts::new(
        "echo READY; read line; echo GOT-$line; echo SECOND; sleep 600",
    ))
    .expect("boot");
    run.wait_for("READY", Duration::from_secs(60))
        .expect("READY");
    run.send_line("hello").expect("send");
    run.wait_for("GOT-hello", Duration::from_secs(20))
        .expect("GOT");
    run.wait_for("SECOND", Duration::from_secs(20))
        .expect("SECOND");
    assert!(run.console().contains("GOT-hello"));
    let t = Instant::now();
    run.kill().expect("kill");
    let err = run.wait().expect_err("killed run must fail");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(err.contains("SECOND") && err.contains("SIGKILL"), "{err}");
    eprintln!("killed: {err}");
}

#[test]
fn unserved_socket_fails_fast() {
    let dir = std::env::temp_dir().join(format!("vsnd-nosock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("none.sock");
    let mut opts = GuestOpts::new("true").socket(&sock);
    opts.socket_wait = Duration::from_millis(200);
    let err = qemu::run(opts.clone()).expect_err("no socket");
    eprintln!("missing socket: {err}");
    // A path that exists but is no listening socket: QEMU refuses to start.
    std::fs::write(&sock, b"").expect("file");
    let err = qemu::run(opts).expect_err("dead socket");
    eprintln!("dead socket: {err}");
    assert!(err.contains("Failed to connect"), "{err}");
}

#[test]
fn builtin_sound_card_and_qemu_cpu() {
    // QEMU's own virtio-sound-pci (the benchmark's reference) is a card for the guest
    // too; QEMU's CPU time is readable while it runs.
    let wav = std::env::temp_dir().join(format!("vsnd-builtin-{}.wav", std::process::id()));
    let run = GuestRun::boot(
        GuestOpts::new("vsnd-wait-card 10; cat /proc/asound/cards; echo CARD-LISTED")
            .builtin_sound(format!("wav,path={}", wav.display())),
    )
    .expect("boot");
    run.wait_for("CARD-LISTED", Duration::from_secs(120))
        .expect("CARD-LISTED");
    let cpu = run.qemu_cpu().expect("QEMU CPU time");
    let out = run.wait().expect("run");
    let _ = std::fs::remove_file(&wav);
    assert_eq!(out.rc, 0, "{}", out.tail());
    assert!(
        !out.console.contains("--- no soundcards ---"),
        "{}",
        out.tail()
    );
    assert!(cpu > Duration::ZERO, "QEMU used no CPU before CARD-LISTED");
}
