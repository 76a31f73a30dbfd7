//! Point 5: QEMU's built-in virtio-sound device against QEMU + this device. The tiny
//! guest image (scripts/build-guest-image.sh) plays N seconds of 48 kHz stereo with
//! alsabat; the runs alternate between the two set-ups. Host CPU is sampled when
//! the guest prints its start and end markers: QEMU's from /proc/PID/stat, the
//! device's as this process's own CPU time (the device runs in it).

use std::time::Duration;

use super::setup;
use super::stats;
use super::{Opts, Table};
use crate::qemu::{self, Accel, GuestOpts, GuestRun};

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

/// The markers the guest prints, with its uptime, before and after alsabat.
const MARKS: [&str; 2] = ["BENCH-START", "BENCH-END"];

fn boot(mode: Mode, secs: u32) -> Result<Run, String> {
    let frames = 48000 * secs;
    let script = format!(
        "head -c1 /dev/random >/dev/null\n\
         vsnd-wait-card 10 2>/dev/null\n\
         echo {} $(cut -d' ' -f1 /proc/uptime)\n\
         alsabat -P hw:0,0 -c 2 -r 48000 -f S16_LE -F 440 -n {frames} >/tmp/bat.log 2>&1\n\
         rc=$?\n\
         echo {} $(cut -d' ' -f1 /proc/uptime)\n\
         [ $rc = 0 ] || tail -5 /tmp/bat.log\n\
         exit $rc\n",
        MARKS[0], MARKS[1]
    );
    let tag = format!("{mode:?}").to_lowercase();
    let wav = std::env::temp_dir().join(format!("vsnd-bench-{}-{tag}.wav", std::process::id()));
    let timeout = Duration::from_secs(120 + 4 * u64::from(secs));
    let mut opts = GuestOpts::new(script).timeout(timeout);
    opts.accel = Some(Accel::Tcg);
    let mut pipeline = None;
    match mode {
        Mode::Builtin => opts = opts.builtin_sound(format!("wav,path={}", wav.display())),
        Mode::VhostUser => {
            let sock = setup::socket("qemu");
            pipeline = Some(setup::launch(&format!(
                "vhostsndsrc socket={} ! audioconvert ! audioresample \
                 ! audio/x-raw,rate=48000,channels=2 ! wavenc ! filesink location={}",
                sock.display(),
                wav.display()
            ))?);
            opts = opts.socket(sock);
        }
    }
    let measured = (|| {
        let run = GuestRun::boot(opts)?;
        // (QEMU CPU, this process's CPU), sampled as each marker reaches the console.
        let mut cpu = Vec::new();
        for mark in MARKS {
            run.wait_for(mark, timeout)?;
            cpu.push((run.qemu_cpu()?, stats::process_cpu()));
        }
        Ok::<_, String>((run.wait()?, cpu))
    })();
    if let Some(p) = pipeline {
        let _ = setup::finish(&p);
    }
    let _ = std::fs::remove_file(&wav);
    let (out, cpu) = measured.map_err(|e| format!("{}: {e}", mode.name()))?;
    let uptime = |mark: &str| {
        out.console
            .lines()
            .find_map(|l| l.trim().strip_prefix(mark))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("{}: no {mark:?} line\n{}", mode.name(), out.tail()))
    };
    let (a, b) = (&cpu[0], &cpu[1]);
    Ok(Run {
        mode,
        guest_secs: uptime(MARKS[1])? - uptime(MARKS[0])?,
        qemu_cpu: (b.0 - a.0).as_secs_f64(),
        device_cpu: if mode == Mode::VhostUser {
            (b.1 - a.1).as_secs_f64()
        } else {
            0.0
        },
        rc: out.rc,
    })
}

pub fn run(opts: &Opts) -> Result<Vec<Table>, String> {
    let (secs, rounds) = if opts.quick { (2, 1) } else { (20, 2) };
    qemu::ensure_image()?;
    let mut runs = Vec::new();
    for _ in 0..rounds {
        for mode in [Mode::Builtin, Mode::VhostUser] {
            runs.push(boot(mode, secs)?);
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
