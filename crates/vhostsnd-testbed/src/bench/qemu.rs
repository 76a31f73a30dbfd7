//! Point 5: QEMU's built-in virtio-sound device against QEMU + this device. The tiny
//! guest image (scripts/build-guest-image.sh) plays N seconds of 48 kHz stereo with
//! alsabat; the runs alternate between the two set-ups. Host CPU is sampled when
//! the guest prints its start and end markers: QEMU's from /proc/PID/stat, the
//! device's as this process's own CPU time (the device runs in it).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::setup;
use super::stats;
use super::{Opts, Table};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Builtin,
    VhostUser,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Builtin => "QEMU virtio-sound-pci (wav audiodev)",
            Mode::VhostUser => "QEMU vhost-user-snd-pci + vhostsndsrc ! ... ! wavenc",
        }
    }
}

struct Run {
    mode: Mode,
    guest_secs: f64,
    qemu_cpu: f64,
    device_cpu: f64,
    rc: i32,
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The guest image directory: the last line scripts/build-guest-image.sh prints.
pub fn image() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-guest-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed", script.display()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or("the image script printed nothing")?;
    Ok(dir)
}

enum Line {
    Mark(f64, f64, f64),
    Rc(i32),
    Other(String),
}

fn boot(image: &Path, mode: Mode, secs: u32) -> Result<Run, String> {
    let frames = 48000 * secs;
    let script = format!(
        "head -c1 /dev/random >/dev/null\n\
         vsnd-wait-card 10 2>/dev/null\n\
         echo VSND-MARK $(cut -d' ' -f1 /proc/uptime)\n\
         alsabat -P hw:0,0 -c 2 -r 48000 -f S16_LE -F 440 -n {frames} >/tmp/bat.log 2>&1\n\
         rc=$?\n\
         echo VSND-MARK $(cut -d' ' -f1 /proc/uptime)\n\
         [ $rc = 0 ] || tail -5 /tmp/bat.log\n\
         exit $rc\n"
    );
    let tag = format!("{mode:?}").to_lowercase();
    let wav = std::env::temp_dir().join(format!("vsnd-bench-{}-{tag}.wav", std::process::id()));
    let mut pipeline = None;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "1"])
        .args(["-machine", "q35,memory-backend=mem"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-m", "256M", "-nographic", "-no-reboot", "-nodefaults"])
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none"])
        .arg("-kernel")
        .arg(image.join("vmlinuz"))
        .arg("-initrd")
        .arg(image.join("initramfs.cpio.gz"))
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 vsnd.cmd={}",
            base64(script.as_bytes())
        ));
    match mode {
        Mode::Builtin => {
            cmd.args(["-device", "virtio-sound-pci,audiodev=snd0"])
                .arg("-audiodev")
                .arg(format!("wav,id=snd0,path={}", wav.display()));
        }
        Mode::VhostUser => {
            let sock = setup::socket("qemu");
            pipeline = Some(setup::launch(&format!(
                "vhostsndsrc socket={} ! audioconvert ! audioresample \
                 ! audio/x-raw,rate=48000,channels=2 ! wavenc ! filesink location={}",
                sock.display(),
                wav.display()
            ))?);
            cmd.arg("-chardev")
                .arg(format!("socket,id=vsnd,path={}", sock.display()))
                .args(["-device", "vhost-user-snd-pci,chardev=vsnd"]);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim().to_string();
            let msg = if let Some(rest) = line.strip_prefix("VSND-MARK ") {
                // Sampled here, as close to the marker as the console allows.
                let q = stats::pid_cpu(pid).unwrap_or_default().as_secs_f64();
                let d = stats::process_cpu().as_secs_f64();
                Line::Mark(rest.trim().parse().unwrap_or(f64::NAN), q, d)
            } else if let Some(rc) = line.strip_prefix("VSND-RC=") {
                Line::Rc(rc.trim().parse().unwrap_or(-1))
            } else {
                Line::Other(line)
            };
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120 + 4 * u64::from(secs));
    let mut marks = Vec::new();
    let mut rc = None;
    let mut console = Vec::new();
    while rc.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Line::Mark(u, q, d)) => marks.push((u, q, d)),
            Ok(Line::Rc(r)) => rc = Some(r),
            Ok(Line::Other(l)) => console.push(l),
            Err(_) => break,
        }
    }
    if rc.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let qemu_err = err_thread.join().unwrap_or_default();
    if let Some(p) = pipeline {
        let _ = setup::finish(&p);
    }
    let _ = std::fs::remove_file(&wav);
    let (Some(rc), [a, b]) = (rc, marks.as_slice()) else {
        return Err(format!(
            "{}: guest did not finish (rc {rc:?}, {} markers)\n{}\n{qemu_err}",
            mode.name(),
            marks.len(),
            console
                .iter()
                .rev()
                .take(15)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    };
    Ok(Run {
        mode,
        guest_secs: b.0 - a.0,
        qemu_cpu: b.1 - a.1,
        device_cpu: if mode == Mode::VhostUser {
            b.2 - a.2
        } else {
            0.0
        },
        rc,
    })
}

pub fn run(opts: &Opts) -> Result<Vec<Table>, String> {
    let (secs, rounds) = if opts.quick { (2, 1) } else { (20, 2) };
    let image = image()?;
    let mut runs = Vec::new();
    for _ in 0..rounds {
        for mode in [Mode::Builtin, Mode::VhostUser] {
            runs.push(boot(&image, mode, secs)?);
        }
    }
    let audio = f64::from(secs);
    let mut t = Table::new(
        &format!("5. Host CPU per second of guest audio: QEMU built-in device vs QEMU + vhostsnd ({secs} s of 48 kHz stereo S16 per run, TCG)"),
        &[
            "run",
            "guest wall time (s)",
            "QEMU CPU (ms/s)",
            "device process CPU (ms/s)",
            "total host CPU (ms/s)",
            "alsabat rc",
        ],
    );
    for (i, r) in runs.iter().enumerate() {
        t.row(vec![
            format!("{}. {}", i + 1, r.mode.name()),
            format!("{:.3}", r.guest_secs),
            format!("{:.1}", r.qemu_cpu * 1e3 / audio),
            format!("{:.1}", r.device_cpu * 1e3 / audio),
            format!("{:.1}", (r.qemu_cpu + r.device_cpu) * 1e3 / audio),
            r.rc.to_string(),
        ]);
    }
    let mean = |m: Mode, f: &dyn Fn(&Run) -> f64| {
        let v: Vec<f64> = runs.iter().filter(|r| r.mode == m).map(f).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let total = |r: &Run| (r.qemu_cpu + r.device_cpu) * 1e3 / audio;
    let (b, v) = (mean(Mode::Builtin, &total), mean(Mode::VhostUser, &total));
    let (bq, vq) = (
        mean(Mode::Builtin, &|r| r.qemu_cpu * 1e3 / audio),
        mean(Mode::VhostUser, &|r| r.qemu_cpu * 1e3 / audio),
    );
    t.note(format!(
        "Means: built-in {b:.1} ms/s, vhost-user + device {v:.1} ms/s (QEMU alone {vq:.1} \
         vs {bq:.1}); ratio vhost-user/built-in = {:.3}. Guest wall time: built-in {:.3} \
         s, vhost-user {:.3} s for {secs} s of audio. CPU is sampled when the guest \
         prints its markers before and after alsabat (QEMU: /proc/PID/stat, 10 ms \
         ticks; device: getrusage of this process). Target: ratio <= 1.",
        v / b,
        mean(Mode::Builtin, &|r| r.guest_secs),
        mean(Mode::VhostUser, &|r| r.guest_secs),
    ));
    Ok(vec![t])
}
