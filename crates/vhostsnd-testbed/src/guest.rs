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

/// Checks a WAV the guest recorded: tone `freqs[c]` on channel `c`, at the right
/// level, for at least `min_secs`, with no dropout and no discontinuity.
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

/// arecord on the card's PCM device: 2 s at 48 kHz S16 into a WAV.
pub const RECORD: &str = "arecord -q -D hw:0,0 -r 48000 -f S16_LE -d 2 -t wav";
