//! A real Linux guest in QEMU keeps its sound across a VM pause (QEMU monitor `stop`,
//! 2 s, `cont`), in playback and in capture.
//!
//! Every failure prints the guest console, the tail of the plugin's debug log and the
//! pipeline's bus errors, so it explains itself.

mod pipelines;

use std::time::{Duration, Instant};

use vhostsnd_testbed::analysis::{self, WavFormat};
use vhostsnd_testbed::guest::{
    elapsed, fail, socket, tone_channel_fault, tone_discontinuities, tone_segments, tone_wav,
    TONE_START_SECS,
};
use vhostsnd_testbed::qemu::{GuestOpts, GuestOutput, GuestRun};

use pipelines::*;

/// The guest side of a pause test: starts `cmd` in the background, prints `marker`
/// once its stream (`pcm`, e.g. `pcm0p`) is RUNNING, then waits for the host's line
/// (sent after `cont`) and shows the stream's status; at the end the guest's elapsed
/// time (`ELAPSED=`, the guest's clock stops with the VM), the command's exit code
/// and the kernel log's tail, runs `then` if the command succeeded and exits with
/// the command's code.
fn pause_script(cmd: &str, pcm: &str, marker: &str, then: &str) -> String {
    format!(
        r#"st=/proc/asound/card0/{pcm}/sub0/status
{cmd} & pid=$!
n=0; until grep -q RUNNING $st 2>/dev/null; do n=$((n+1)); [ $n -lt 1000 ] || break; sleep 0.01; done
t0=$(cut -d' ' -f1 /proc/uptime); echo {marker}
cat /proc/asound/card0/{pcm}/sub0/hw_params
read line; echo "status after the pause:"; cat $st
wait $pid; rc=$?
t1=$(cut -d' ' -f1 /proc/uptime); echo "ELAPSED=$(echo "$t0 $t1" | awk '{{print $2-$1}}')"
echo "CMD-RC=$rc"; echo "--- dmesg tail ---"; dmesg | tail -n 8
[ $rc -eq 0 ] && {{ {then}; }}
exit $rc"#
    )
}

/// What the host saw of a pause through QEMU's monitor.
struct Paused {
    /// How long `stop` and `cont` took to return.
    stop: Duration,
    cont: Duration,
    /// From `stop` returning to `cont` being sent.
    paused: Duration,
}

/// Pauses the VM as `virsh suspend` does (`stop` in QEMU's monitor: vCPUs stopped,
/// GET_VRING_BASE on every ring), for `secs`, then continues it (`cont`: the rings
/// set up and enabled again) and tells the guest's script (its `read`). The monitor
/// must confirm both states, and the guest's command must still be running at
/// `stop` (its script prints `CMD-RC=` when it ends).
fn pause_vm(run: &mut GuestRun, secs: f64, errors: &dyn Fn() -> Vec<String>) -> Paused {
    let bail = |what: String, run: &GuestRun| -> ! {
        let console = run.console();
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        fail(
            &format!("{what}\n--- guest console so far ---\n{}", tail.join("\n")),
            None,
            &errors(),
        )
    };
    let command = |run: &GuestRun, cmd: &str| -> String {
        run.monitor(cmd)
            .unwrap_or_else(|e| bail(format!("monitor {cmd:?}: {e}"), run))
    };
    let expect_status = |run: &GuestRun, want: &str| {
        let status = command(run, "info status");
        if !status.contains(want) {
            bail(format!("`info status` says {status:?}, not {want:?}"), run);
        }
    };
    expect_status(run, "VM status: running");
    let t = Instant::now();
    let reply = command(run, "stop");
    let stop = t.elapsed();
    if !reply.is_empty() {
        bail(format!("`stop` replied {reply:?}"), run);
    }
    let paused_at = Instant::now();
    expect_status(run, "VM status: paused");
    if run.console().contains("CMD-RC=") {
        bail("the guest's command ended before the pause".into(), run);
    }
    std::thread::sleep(Duration::from_secs_f64(secs).saturating_sub(paused_at.elapsed()));
    let paused = paused_at.elapsed();
    let t = Instant::now();
    let reply = command(run, "cont");
    let cont = t.elapsed();
    if !reply.is_empty() {
        bail(format!("`cont` replied {reply:?}"), run);
    }
    expect_status(run, "VM status: running");
    if let Err(e) = run.send_line("resumed") {
        bail(e, run);
    }
    Paused { stop, cont, paused }
}

/// Boots the guest of a pause test (`opts`, given a monitor here), waits until its
/// `cmd` prints `marker`, lets it run `after_ms`, pauses the VM for `secs`, and
/// returns the finished run once `cmd` exited 0.
fn run_paused(
    test: &str,
    opts: GuestOpts,
    cmd: &str,
    marker: &str,
    after_ms: u64,
    secs: f64,
    errors: &dyn Fn() -> Vec<String>,
) -> (GuestOutput, Paused) {
    let mut run = GuestRun::boot(opts.monitor())
        .unwrap_or_else(|e| fail(&format!("{test}: boot: {e}"), None, &errors()));
    if let Err(e) = run.wait_for(marker, Duration::from_secs(90)) {
        fail(&format!("{test}: {cmd} never ran: {e}"), None, &errors());
    }
    std::thread::sleep(Duration::from_millis(after_ms));
    let paused = pause_vm(&mut run, secs, errors);
    let out = run
        .wait()
        .unwrap_or_else(|e| fail(&format!("{test}: {e}"), None, &errors()));
    if out.rc != 0 {
        fail(
            &format!("{test}: {cmd} failed ({})", out.rc),
            Some(&out),
            &errors(),
        );
    }
    (out, paused)
}

/// Stretches of the output in seconds, for messages.
fn secs_of(segs: &[analysis::Segment], rate: u32) -> String {
    let s = |f: usize| f as f64 / f64::from(rate);
    segs.iter()
        .map(|g| format!("{:.3}-{:.3}", s(g.start), s(g.end)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A VM pause in the middle of the guest's playback loses nothing: the guest plays a
/// 5 s tone with aplay, the host stops the VM for 2 s through QEMU's monitor and
/// continues it. While the VM is stopped the device completes none of the guest's
/// queued periods and vhostsndsrc puts out silence (GAP), so the output is tone,
/// about 2 s of silence, tone; the device keeps the periods and the stream's state,
/// so aplay goes on where it was and exits 0. (The device before the change reset
/// both streams at GET_VRING_BASE: the guest's I/O failed after `cont`.)
#[test]
fn vm_pause_during_playback_keeps_the_sound() {
    let test = "pause-playback";
    let (rate, freqs, secs, pause) = (48000, [440.0, 660.0], 5.0, 2.0);
    let sock = socket(test);
    let (p, received) = playback_pipeline(&sock, "");
    let errors = || p.errors();
    let wav = tone_wav(WavFormat::I16, rate, &freqs, secs);
    let script = pause_script("aplay -D hw:0,0 tone.wav", "pcm0p", "PLAYING", "true");
    let opts = GuestOpts::new(script)
        .socket(&sock)
        .file("tone.wav", wav.clone());
    // Well into the tone, with most of it still to come.
    let (out, paused) = run_paused(test, opts, "aplay", "PLAYING", 1200, pause, &errors);
    // The last period leaves the source one period after the guest is done.
    std::thread::sleep(Duration::from_millis(200));
    let what = |m: String| format!("{test}: {m}");
    let received = received.lock().unwrap();
    let Some((r, ch, samples)) = received.runs.last() else {
        fail(&what("no audio came out".into()), Some(&out), &errors());
    };
    if (*r, *ch) != (rate, freqs.len()) {
        fail(
            &what(format!("output is {r} Hz {ch} ch")),
            Some(&out),
            &errors(),
        );
    }
    let chans = analysis::deinterleave(samples, *ch);
    let segs = tone_segments(&chans[0], rate, 0.05);
    let found = secs_of(&segs, rate);
    eprintln!(
        "{test}: stop took {:.3} s, cont {:.3} s, paused {:.3} s; guest ELAPSED={:.3} s; \
         tone at {found} s",
        paused.stop.as_secs_f64(),
        paused.cont.as_secs_f64(),
        paused.paused.as_secs_f64(),
        elapsed(&out),
    );
    // Exactly one gap: the pause's.
    if segs.len() != 2 {
        fail(
            &what(format!("the tone is in {} pieces: {found} s", segs.len())),
            Some(&out),
            &errors(),
        );
    }
    let total: f64 = segs.iter().map(|s| s.duration_secs(rate)).sum();
    if (total - secs).abs() > secs * 0.02 {
        fail(
            &what(format!(
                "{total:.3} s of tone came out, not {secs} s: {found} s"
            )),
            Some(&out),
            &errors(),
        );
    }
    // The gap is the time between `stop` and `cont` taking effect on the rings; under
    // TCG either can lag its monitor command a little.
    let gap = (segs[1].start - segs[0].end) as f64 / f64::from(rate);
    if (gap - pause).abs() > 0.3 {
        fail(
            &what(format!(
                "the pause left a {gap:.3} s gap, not {pause} s: {found} s"
            )),
            Some(&out),
            &errors(),
        );
    }
    for seg in &segs {
        for (c, &want) in freqs.iter().enumerate() {
            if let Some(e) = tone_channel_fault(c, &chans[c], *seg, rate, want) {
                fail(&what(e), Some(&out), &errors());
            }
        }
    }
    // Nothing lost, nothing repeated: the first piece is the WAV's tone from its
    // start, the second the tone up to its end, sample for sample, and between them
    // lie only the few samples too quiet to count as tone (channel 0 near a zero
    // crossing) that fell at the pause.
    let reference = analysis::read_wav(&wav).expect("the tone WAV reads back");
    let ref0 = reference.channel(0);
    let loud = |v: &f32| v.abs() > 0.05;
    let first = ref0.iter().position(loud).unwrap_or(0);
    let last = ref0.iter().rposition(loud).map_or(ref0.len(), |i| i + 1);
    let (joint0, joint1) = (first + segs[0].len(), last.saturating_sub(segs[1].len()));
    for (seg, from) in [(segs[0], first), (segs[1], joint1)] {
        let n = seg.len() * ch;
        let got = &samples[seg.start * ch..seg.start * ch + n];
        let want = &reference.samples[from * ch..(from * ch + n).min(reference.samples.len())];
        let differs = (0..n).find(|&i| want.get(i).is_none_or(|w| (got[i] - w).abs() > 1e-3));
        if let Some(i) = differs {
            fail(
                &what(format!(
                    "output frame {} is not WAV frame {}: {:?} vs {:?}",
                    seg.start + i / ch,
                    from + i / ch,
                    got[i],
                    want.get(i)
                )),
                Some(&out),
                &errors(),
            );
        }
    }
    if joint1 < joint0 || ref0[joint0..joint1].iter().any(loud) {
        fail(
            &what(format!(
                "the pieces join at WAV frames {joint0} and {joint1}: audio {} at the pause",
                if joint1 < joint0 { "repeated" } else { "lost" }
            )),
            Some(&out),
            &errors(),
        );
    }
    if !errors().is_empty() {
        fail(&what("pipeline errors".into()), Some(&out), &errors());
    }
}

/// A VM pause in the middle of the guest's recording: the guest runs arecord for 5 s
/// while the pipeline feeds a 1 kHz tone, and the host stops the VM for 2 s through
/// QEMU's monitor and continues it. arecord must exit 0 with a clean recording.
///
/// What the guest records across the pause: its clock stops with the VM, so arecord
/// never sees the pause and records 5 s of its own time without an overrun. The
/// device completes none of its buffers while the rings are stopped and keeps the
/// sink's audio in real time meanwhile: its pacer drops one guest period of the
/// sink's audio per period of the pause (like the sound a microphone picks up while
/// its computer is off). After `cont` the guest's queued buffers get the audio of
/// that moment. So the recording is the tone throughout, at the right level and
/// frequency, with one discontinuity at a period boundary, where a whole number of
/// periods of the host's tone is missing: a phase jump, perhaps with a short
/// silence.
///
/// A jump by whole cycles leaves no trace in a pure tone, and the guest's periods
/// are 6000 frames (125 ms): a 1 kHz tone has 125 whole cycles in each, so with it
/// the recording would be seamless and the pause invisible. The tone is 1002.16 Hz
/// instead, 125.27 cycles a period: dropping 12 to 20 periods (a pause of 1.5 to
/// 2.5 s) shifts its phase by at least 0.05 cycle, which the check sees. It requires
/// exactly one discontinuity when the periods the guest chose make the jump certain
/// to show (and at most one otherwise), at a period boundary. The pause did fall
/// inside the recording: `pause_vm` checks that arecord had not ended by `stop`.
/// (The device before the change reset both streams at GET_VRING_BASE: the guest's
/// I/O failed after `cont` and arecord with it.)
#[test]
fn vm_pause_during_capture_keeps_the_recording() {
    let test = "pause-capture";
    let (rate, freq, secs, pause) = (48000, 1002.16, 5, 2.0);
    let sock = socket(test);
    let p = Pipeline::launch(&format!(
        "audiotestsrc is-live=true freq={freq} volume=0.5 ! audioconvert ! audioresample ! \
         vhostsndsink socket={}",
        sock.display()
    ));
    let errors = || p.errors();
    let cmd = format!("arecord -D hw:0,0 -r {rate} -f S16_LE -c 2 -d {secs} -t wav /tmp/r.wav");
    let script = pause_script(&cmd, "pcm0c", "RECORDING", "vsnd-export /tmp/r.wav r.wav");
    let opts = GuestOpts::new(script).socket(&sock);
    let (out, paused) = run_paused(test, opts, "arecord", "RECORDING", 1500, pause, &errors);
    let what = |m: String| format!("{test}: {m}");
    let Some(bytes) = out.files.get("r.wav") else {
        fail(&what("no recording exported".into()), Some(&out), &errors());
    };
    let w = analysis::read_wav(bytes).unwrap_or_else(|e| fail(&what(e), Some(&out), &errors()));
    if (w.rate, w.channels) != (rate, 2) || w.frames() != (secs * rate) as usize {
        fail(
            &what(format!(
                "recorded {} Hz {} ch {:.3} s",
                w.rate,
                w.channels,
                w.duration_secs()
            )),
            Some(&out),
            &errors(),
        );
    }
    let s = |f: usize| f as f64 / f64::from(rate);
    // The guest's period, from the hw_params the script printed.
    let period: usize = out
        .console
        .lines()
        .find_map(|l| l.trim().strip_prefix("period_size:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&p| p > 0)
        .unwrap_or_else(|| {
            fail(
                &what("no period_size in hw_params".into()),
                Some(&out),
                &errors(),
            )
        });
    // Whether a pause of `pause` s, give or take 0.5 s, must show: every whole number
    // of periods it may drop shifts the tone's phase by more than 0.01 cycle (the
    // check sees 0.02 rad, 0.003 cycle).
    let cycles = period as f64 * freq / f64::from(rate);
    let period_secs = period as f64 / f64::from(rate);
    let jump_expected = (((pause - 0.5) / period_secs).floor() as u64
        ..=((pause + 0.5) / period_secs).ceil() as u64)
        .all(|k| {
            let x = (k as f64 * cycles).fract();
            x.min(1.0 - x) > 0.01
        });
    for c in 0..w.channels {
        let x = w.channel(c);
        let Some(seg) = analysis::detect_tone(&x, rate, 0.05) else {
            fail(
                &what(format!("channel {c} is silent")),
                Some(&out),
                &errors(),
            );
        };
        // The first period holds the audio from START on, so the tone starts at
        // once, and it runs to the end.
        if s(seg.start) > TONE_START_SECS || s(x.len() - seg.end) > 0.01 {
            fail(
                &what(format!(
                    "channel {c}: the tone covers only {} s",
                    secs_of(&[seg], rate)
                )),
                Some(&out),
                &errors(),
            );
        }
        let f = analysis::dominant_frequency(&x[seg.start..seg.end], rate).unwrap_or(0.0);
        let regions = tone_discontinuities(&x, rate, f, seg);
        if c == 0 {
            eprintln!(
                "{test}: stop took {:.3} s, cont {:.3} s, paused {:.3} s; guest ELAPSED={:.3} \
                 s; {period}-frame periods; tone at {} s, {f:.2} Hz; discontinuities at {} s",
                paused.stop.as_secs_f64(),
                paused.cont.as_secs_f64(),
                paused.paused.as_secs_f64(),
                elapsed(&out),
                secs_of(&[seg], rate),
                secs_of(&regions, rate),
            );
        }
        let parts = match regions.as_slice() {
            [] if !jump_expected => vec![seg],
            [] => fail(
                &what(format!(
                    "channel {c}: the pause left no trace ({cycles:.2} cycles per period)"
                )),
                Some(&out),
                &errors(),
            ),
            [r] => {
                // A phase jump, with at most a short silence, where a guest period
                // begins (the last one completed before the pause ends there).
                let block = rate as usize / 100;
                let boundary = (r.start.saturating_sub(block) / period..=(r.end + block) / period)
                    .any(|m| {
                        (r.start.saturating_sub(block)..=r.end + block).contains(&(m * period))
                    });
                if !boundary {
                    fail(
                        &what(format!(
                            "channel {c}: a discontinuity at {} s, not at a period boundary \
                             ({period} frames)",
                            secs_of(&[*r], rate)
                        )),
                        Some(&out),
                        &errors(),
                    );
                }
                if r.duration_secs(rate) > 0.2 {
                    fail(
                        &what(format!(
                            "channel {c}: the pause spoilt {} s",
                            secs_of(&[*r], rate)
                        )),
                        Some(&out),
                        &errors(),
                    );
                }
                vec![
                    analysis::Segment {
                        start: seg.start,
                        end: r.start,
                    },
                    analysis::Segment {
                        start: r.end,
                        end: seg.end,
                    },
                ]
            }
            _ => fail(
                &what(format!(
                    "channel {c}: {} discontinuities, at {} s",
                    regions.len(),
                    secs_of(&regions, rate)
                )),
                Some(&out),
                &errors(),
            ),
        };
        for part in parts {
            if part.duration_secs(rate) < 0.3 {
                fail(
                    &what(format!(
                        "channel {c}: the pause is at the edge of the recording ({} s)",
                        secs_of(&[part], rate)
                    )),
                    Some(&out),
                    &errors(),
                );
            }
            if let Some(e) = tone_channel_fault(c, &x, part, rate, freq) {
                fail(&what(e), Some(&out), &errors());
            }
            // A sine of amplitude 0.5 moves at most 0.5 * 2 pi f / rate per sample.
            let max_step = 1.5 * 0.5 * std::f64::consts::TAU * freq / f64::from(rate);
            let jump =
                (part.start + 1..part.end).find(|&i| f64::from((x[i] - x[i - 1]).abs()) > max_step);
            if let Some(i) = jump {
                fail(
                    &what(format!("channel {c}: a click at {:.4} s", s(i))),
                    Some(&out),
                    &errors(),
                );
            }
        }
    }
    if !errors().is_empty() {
        fail(&what("pipeline errors".into()), Some(&out), &errors());
    }
}
