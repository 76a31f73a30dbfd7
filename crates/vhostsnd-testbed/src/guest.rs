//! What the real-guest suites (the elements' and the daemon's) share: failure reports
//! that carry the guest console and the elements' debug log, tones for the guest to
//! play, and checks of what the guest recorded.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use crate::analysis::{self, WavFormat};
use crate::qemu::{self, GuestOpts, GuestOutput};

/// The last lines the vhostsnd elements logged, for failure reports.
static LOG: LazyLock<Mutex<VecDeque<String>>> = LazyLock::new(|| Mutex::new(VecDeque::new()));

/// GStreamer with the plugin registered, and the elements' debug log kept for
/// [`fail`].
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    crate::init();
    ONCE.call_once(|| {
        for name in ["vhostsnd", "vhostsndsrc", "vhostsndsink"] {
            gst::log::set_threshold_for_name(name, gst::DebugLevel::Debug);
        }
        gst::log::add_log_function(|cat, level, _file, _func, _line, obj, msg| {
            if !cat.name().starts_with("vhostsnd") || level > gst::DebugLevel::Debug {
                return;
            }
            let who = obj.map(|o| o.to_string()).unwrap_or_default();
            let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
            log.push_back(format!(
                "{level:?} {} {who} {}",
                cat.name(),
                msg.get().unwrap_or_default()
            ));
            while log.len() > 60 {
                log.pop_front();
            }
        });
    });
}

/// Panics with everything needed to understand a failure.
pub fn fail(what: &str, out: Option<&GuestOutput>, bus_errors: &[String]) -> ! {
    let log: Vec<String> = LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    panic!(
        "{what}\n--- guest console (tail) ---\n{}\n--- vhostsnd debug log (tail) ---\n{}\n--- bus errors ---\n{}",
        out.map(|o| o.tail()).unwrap_or_default(),
        log.join("\n"),
        bus_errors.join("\n")
    );
}

/// A socket path for real-guest test `test`.
pub fn socket(test: &str) -> PathBuf {
    crate::socket_path(&format!("guest-{test}"))
}

/// Boots a guest and runs its script to the end; a harness failure fails the test.
pub fn boot(opts: GuestOpts) -> GuestOutput {
    qemu::run(opts).unwrap_or_else(|e| fail(&format!("the guest run failed: {e}"), None, &[]))
}

/// A tone in a WAV file, one frequency per channel.
pub fn tone_wav(format: WavFormat, rate: u32, freqs: &[f64], secs: f64) -> Vec<u8> {
    let frames = (secs * f64::from(rate)) as usize;
    let chans: Vec<Vec<f32>> = freqs
        .iter()
        .map(|f| analysis::sine(*f, rate, 1, frames, 0.5))
        .collect();
    let mut inter = Vec::with_capacity(frames * freqs.len());
    for i in 0..frames {
        for c in &chans {
            inter.push(c[i]);
        }
    }
    analysis::write_wav(format, rate, freqs.len(), &inter)
}

/// The guest's elapsed time for the command between `T0=` and `T1=` markers.
pub const TIMED: &str = r#"t0=$(cut -d' ' -f1 /proc/uptime); echo PLAYING; "#;
pub const TIMED_END: &str = r#"; rc=$?; t1=$(cut -d' ' -f1 /proc/uptime); echo "ELAPSED=$(echo "$t0 $t1" | awk '{print $2-$1}')"; [ $rc -eq 0 ] || dmesg | tail -n 20; exit $rc"#;

/// What a [`TIMED`] ... [`TIMED_END`] command printed as its elapsed guest time.
pub fn elapsed(out: &GuestOutput) -> f64 {
    out.console
        .lines()
        .find_map(|l| l.trim().strip_prefix("ELAPSED="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| fail("the guest printed no ELAPSED=", Some(out), &[]))
}

/// What is wrong with channel `c` of a detected tone, if anything: its frequency (more
/// than 1 % off `want`), its level (a 0.5 amplitude sine has an RMS of 0.354) or a
/// dropout inside it.
pub fn tone_channel_fault(
    c: usize,
    chan: &[f32],
    seg: analysis::Segment,
    rate: u32,
    want: f64,
) -> Option<String> {
    let tone = &chan[seg.start..seg.end];
    let f = analysis::dominant_frequency(tone, rate).unwrap_or(0.0);
    if (f - want).abs() > want * 0.01 {
        return Some(format!("channel {c} is {f:.1} Hz, not {want}"));
    }
    let level = analysis::rms(tone);
    if !(0.30..0.40).contains(&level) {
        return Some(format!("channel {c} level {level:.3}"));
    }
    let drops = analysis::find_dropouts(chan, rate, seg);
    if !drops.is_empty() {
        return Some(format!("dropouts in channel {c}: {drops:?}"));
    }
    None
}

/// How soon after a recording's first frame the host's tone must be in it: a real
/// card's first period holds what its microphone heard from START on.
pub const TONE_START_SECS: f64 = 0.005;

/// Checks a WAV the guest recorded: tone `freqs[c]` on channel `c` from its first
/// [`TONE_START_SECS`] on, at the right level, for at least `min_secs`, with no
/// dropout and no discontinuity.
pub fn check_recording(
    what: &str,
    wav: Option<&Vec<u8>>,
    freqs: &[f64],
    min_secs: f64,
    out: &GuestOutput,
    errors: &[String],
) {
    let channels = freqs.len();
    let Some(bytes) = wav else {
        fail(
            &format!("{what}: the guest exported no recording"),
            Some(out),
            errors,
        );
    };
    let w = analysis::read_wav(bytes)
        .unwrap_or_else(|e| fail(&format!("{what}: {e}"), Some(out), errors));
    if (w.rate, w.channels) != (48000, channels) {
        fail(
            &format!("{what}: recorded {} Hz {} ch", w.rate, w.channels),
            Some(out),
            errors,
        );
    }
    for (c, &want) in freqs.iter().enumerate() {
        let x = w.channel(c);
        let Some(seg) = analysis::detect_tone(&x, w.rate, 0.05) else {
            fail(&format!("{what}: channel {c} is silent"), Some(out), errors);
        };
        let starts = seg.start as f64 / f64::from(w.rate);
        if starts > TONE_START_SECS {
            fail(
                &format!(
                    "{what}: channel {c}: the tone starts {:.1} ms into the recording",
                    starts * 1e3
                ),
                Some(out),
                errors,
            );
        }
        if seg.duration_secs(w.rate) < min_secs {
            fail(
                &format!("{what}: tone only {:.3} s", seg.duration_secs(w.rate)),
                Some(out),
                errors,
            );
        }
        if let Some(e) = tone_channel_fault(c, &x, seg, w.rate, want) {
            fail(&format!("{what}: {e}"), Some(out), errors);
        }
        // A sine of amplitude 0.5 moves at most 0.5 * 2 pi f / rate per sample: a
        // clearly bigger step is a discontinuity (lost or repeated audio).
        let max_step = 1.5 * 0.5 * std::f64::consts::TAU * want / 48000.0;
        let jump =
            (seg.start + 1..seg.end).find(|&i| f64::from((x[i] - x[i - 1]).abs()) > max_step);
        if let Some(i) = jump {
            fail(
                &format!("{what}: discontinuity in channel {c} at frame {i}"),
                Some(out),
                errors,
            );
        }
    }
}

/// A guest script that runs the unmodified `alsabat` once per line of `runs` (its
/// arguments, e.g. `-C hw:0,0 -c 2 -F 1000`), each with 2 s at 48 kHz S16, prints its
/// report and `ALSABAT-RC=N`, and exits with the first failure's status.
pub fn alsabat_script(runs: &[&str]) -> String {
    let mut s = String::from("fail=0\n");
    for args in runs {
        s.push_str(&format!(
            "alsabat {args} -r 48000 -f S16_LE -n 96000 >/tmp/bat.log 2>&1; rc=$?; \
             cat /tmp/bat.log; echo \"ALSABAT-RC=$rc ({args})\"; \
             [ $fail -ne 0 ] || fail=$rc\n"
        ));
    }
    s.push_str("exit $fail\n");
    s
}

/// arecord on the card's PCM device: 2 s at 48 kHz S16 into a WAV.
pub const RECORD: &str = "arecord -q -D hw:0,0 -r 48000 -f S16_LE -d 2 -t wav";

/// Every stretch of tone in a mono signal, in order: the runs of 10 ms blocks whose
/// RMS exceeds `threshold_rms`, each refined to its first and last sample whose
/// magnitude exceeds it, looking one block beyond the run on either side (as
/// [`analysis::detect_tone`] does for the signal as a whole). Silence of a block or more (a pause, a long dropout) separates two
/// segments; shorter dropouts inside one are for [`analysis::find_dropouts`].
pub fn tone_segments(samples: &[f32], rate: u32, threshold_rms: f32) -> Vec<analysis::Segment> {
    let block = (rate as usize / 100).max(1);
    let loud: Vec<bool> = samples
        .chunks(block)
        .map(|b| analysis::rms(b) > threshold_rms)
        .collect();
    let mut out = Vec::new();
    let mut b = 0;
    while b < loud.len() {
        if !loud[b] {
            b += 1;
            continue;
        }
        let first = b;
        while b < loud.len() && loud[b] {
            b += 1;
        }
        let (from, to) = (first * block, (b * block).min(samples.len()));
        // The blocks either side of the run may hold a few samples of the tone, too
        // few to make the block loud (a tone that stops just past a block's start):
        // they are the segment's too. The block before never reaches back into the
        // previous segment, which a quiet block ends.
        let before = from
            .saturating_sub(block)
            .max(out.last().map_or(0, |s: &analysis::Segment| s.end));
        let after = (to + block).min(samples.len());
        let loud = |s: &f32| s.abs() > threshold_rms;
        let start = samples[before..to].iter().position(loud);
        let end = samples[from..after].iter().rposition(loud);
        out.push(analysis::Segment {
            start: start.map_or(from, |i| before + i),
            end: end.map_or(to, |e| from + e + 1),
        });
    }
    out
}

/// Where a steady tone of about `freq` Hz is not one continuous sine inside `seg`:
/// the stretches (merged when at most two blocks apart) of blocks of whole cycles
/// (about 10 ms) whose amplitude is more than 5 % off the median, or across which
/// the tone's phase jumps by more than 0.02 rad beyond its steady drift (each
/// block's phase is compared with the block two before it, so a jump inside a block
/// is seen in full). Lost or repeated audio shows here unless it is a whole number
/// of the tone's cycles, to within 0.02 rad; a clean tone gives no region.
pub fn tone_discontinuities(
    x: &[f32],
    rate: u32,
    freq: f64,
    seg: analysis::Segment,
) -> Vec<analysis::Segment> {
    use std::f64::consts::{PI, TAU};
    let cycles = (freq / 100.0).round().max(1.0);
    let n = ((cycles * f64::from(rate) / freq).round() as usize).max(8);
    let w = TAU * freq / f64::from(rate);
    let end = seg.end.min(x.len());
    let starts: Vec<usize> = (seg.start..end.saturating_sub(n - 1)).step_by(n).collect();
    let (amp, phase): (Vec<f64>, Vec<f64>) = starts
        .iter()
        .map(|&s| {
            let (mut i, mut q) = (0.0, 0.0);
            for (k, &v) in x[s..s + n].iter().enumerate() {
                let t = w * (s + k) as f64;
                i += f64::from(v) * t.cos();
                q += f64::from(v) * t.sin();
            }
            (2.0 * i.hypot(q) / n as f64, i.atan2(q))
        })
        .unzip();
    let wrap = |a: f64| (a + PI).rem_euclid(TAU) - PI;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let amp_median = median(amp.clone());
    // The tone's frequency is not exactly `freq`: its phase drifts steadily.
    let drift = median(phase.windows(2).map(|p| wrap(p[1] - p[0])).collect());
    let bad: Vec<bool> = (0..starts.len())
        .map(|b| {
            let level = (amp[b] - amp_median).abs() > 0.05 * amp_median;
            let jump = b >= 1
                && b + 1 < starts.len()
                && wrap(phase[b + 1] - phase[b - 1] - 2.0 * drift).abs() > 0.02;
            level || jump
        })
        .collect();
    let mut out: Vec<analysis::Segment> = Vec::new();
    for (b, &s) in starts.iter().enumerate() {
        if !bad[b] {
            continue;
        }
        match out.last_mut() {
            Some(r) if s <= r.end + 2 * n => r.end = s + n,
            _ => out.push(analysis::Segment {
                start: s,
                end: s + n,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{sine, Segment};

    const RATE: u32 = 48000;

    fn whole(x: &[f32]) -> Segment {
        Segment {
            start: 0,
            end: x.len(),
        }
    }

    #[test]
    fn tone_segments_are_found_in_order() {
        let mut x = vec![0.0f32; 4800];
        x.extend(sine(440.0, RATE, 1, 48000, 0.5));
        x.extend(vec![0.0f32; 96000]);
        x.extend(sine(440.0, RATE, 1, 24000, 0.5));
        x.extend(vec![0.0f32; 480]);
        let segs = tone_segments(&x, RATE, 0.05);
        assert_eq!(segs.len(), 2, "{segs:?}");
        assert!(segs[0].start.abs_diff(4800) <= 10, "{segs:?}");
        assert!(segs[0].end.abs_diff(4800 + 48000) <= 10, "{segs:?}");
        assert!(
            segs[1].start.abs_diff(4800 + 48000 + 96000) <= 10,
            "{segs:?}"
        );
        assert!(segs[1].end.abs_diff(x.len() - 480) <= 10, "{segs:?}");
        assert!(tone_segments(&vec![0.0; 48000], RATE, 0.05).is_empty());
    }

    /// A tone that stops 13 samples into a block (a VM paused just past a block
    /// boundary) ends there, not at the block before.
    #[test]
    fn a_tone_ending_just_into_a_block_keeps_its_last_samples() {
        let mut x = sine(440.0, RATE, 1, 480 * 10 + 13, 0.5);
        x.extend(vec![0.0f32; 4800]);
        let mut tail = vec![0.0f32; 480 - 13];
        tail.extend(sine(440.0, RATE, 1, 4800, 0.5));
        x.extend(tail);
        let segs = tone_segments(&x, RATE, 0.05);
        assert_eq!(segs.len(), 2, "{segs:?}");
        let end = 480 * 10 + 13;
        assert!(segs[0].end <= end && segs[0].end + 3 >= end, "{segs:?}");
        let start = 480 * 10 + 13 + 4800 + 480 - 13;
        assert!(
            segs[1].start >= start && segs[1].start <= start + 3,
            "{segs:?}"
        );
    }

    #[test]
    fn a_clean_tone_is_continuous() {
        for f in [1000.0, 1000.3, 997.0] {
            let x = sine(f, RATE, 1, 5 * 48000, 0.5);
            let r = tone_discontinuities(&x, RATE, 1000.0, whole(&x));
            assert!(r.is_empty(), "{f} Hz: {r:?}");
        }
    }

    #[test]
    fn a_phase_jump_or_a_gap_is_one_region() {
        for (at, jump) in [(100_000usize, 1.0f64), (100_240, 0.05), (123_457, -3.0)] {
            let mut x = sine(1000.0, RATE, 1, at, 0.5);
            let w = std::f64::consts::TAU * 1000.0 / f64::from(RATE);
            x.extend((at..240_000).map(|i| (0.5 * (w * i as f64 + jump).sin()) as f32));
            let r = tone_discontinuities(&x, RATE, 1000.0, whole(&x));
            assert_eq!(r.len(), 1, "jump {jump} at {at}: {r:?}");
            assert!(r[0].start <= at && at < r[0].end, "jump at {at}: {r:?}");
            assert!(r[0].len() <= 3 * 480, "{r:?}");
        }
        let mut x = sine(1000.0, RATE, 1, 240_000, 0.5);
        x[150_000..150_100].fill(0.0);
        let r = tone_discontinuities(&x, RATE, 1000.0, whole(&x));
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].start <= 150_000 && 150_100 <= r[0].end, "{r:?}");
    }
}
