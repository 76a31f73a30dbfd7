//! A real Linux guest plays and records through real desktop audio servers
//! ("Real hosts", point 3): headless PipeWire (with pipewire-pulse and WirePlumber)
//! and PulseAudio from `vhostsnd_testbed::audio_server`, each with a null sink as
//! the default sink and a fed 440 Hz tone as the default source.
//!
//! Three host sides meet each server:
//! - the daemon with its default pipelines (`vhostsndsrc ! audioconvert !
//!   audioresample ! autoaudiosink`, and `autoaudiosrc ! audioconvert !
//!   audioresample ! vhostsndsink` while the guest captures);
//! - the README's `vhostsndsrc ! audioconvert ! audioresample ! autoaudiosink` and
//!   `vhostsndsrc ! autoaudiosink`, under `gst-launch-1.0` with
//!   `GST_PLUGIN_PATH` at the directory the plugin was built into (the one holding
//!   the daemon binary: `cargo build --release --workspace` first).
//!
//! In one boot per (server, host side) the guest plays [`PLAYS`] one after the other
//! with `aplay -D hw:0,0` and its default periods: 3 s each, 48 kHz and 44.1 kHz,
//! mono and stereo, S16 and S32, a different format (and tone) each time. The null
//! sink's monitor is recorded throughout and every tone must be in it: 3 s ± 2 %, at
//! its frequency and level, on the right channel, with no dropout and no click. The
//! daemon's boots also `arecord` 2 s at 48, 44.1 and 16 kHz, which must hold the fed tone
//! throughout, from their first 5 ms on (the first period holds the source's audio from
//! START; plus one quantum of silence a PipeWire record stream begins with). While the guest runs, the host side's stream must show in `pactl list
//! sink-inputs`, and the daemon's streams carry the VM's name.
//!
//! All nine boots run in CI, one at a time (about 35 s each).
//!
//! PulseAudio runs twice: with the harness's real-time null sink (`norewinds=1`) and
//! with a default one that rewinds (`pulseaudio_rewinds_*`), which renders up to 2 s
//! ahead as a desktop's sinks do. That one's monitor is recorded with a 2 s latency:
//! a 10 ms recording would hold the sink near real time and hide what it does to a
//! client that re-creates its stream: pulsesink does on every caps change, the idle
//! sink has rendered 2 s ahead and rewinds only ~90 ms for the new stream, whose clock
//! then runs 1.7 s behind (the sink blocked vhostsndsrc's streaming thread, the tones
//! after the first were cut to bursts). That is why vhostsndsrc keeps its output
//! format by default and converts the guest's (`follow-guest-format`).
//!
//! Every failure message carries everything measured, the guest console, the host
//! side's log (with how its times map onto the monitor's) and the server's logs;
//! the monitor recording, the guest's recordings and console and the whole host log
//! are left in the test's directory under `$TMPDIR`, named in the message.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use vhostsnd_testbed::analysis::{self, Segment, WavFormat};
use vhostsnd_testbed::audio_server::{self, AudioServer, Kind, Options};
use vhostsnd_testbed::guest::{
    tone_channel_fault, tone_discontinuities, tone_segments, TONE_START_SECS,
};
use vhostsnd_testbed::qemu::{self, GuestOpts, GuestOutput};

/// One WAV the guest plays: its format, and its tone per channel.
struct Play {
    rate: u32,
    format: WavFormat,
    /// One frequency per channel of the WAV (one: mono).
    freqs: &'static [f64],
}

impl Play {
    fn describe(&self) -> String {
        let fmt = match self.format {
            WavFormat::I16 => "S16",
            WavFormat::I32 => "S32",
            WavFormat::F32 => "F32",
        };
        let ch = if self.freqs.len() == 1 {
            "mono"
        } else {
            "stereo"
        };
        let f: Vec<String> = self.freqs.iter().map(|f| format!("{f}")).collect();
        format!("{} Hz {fmt} {ch} ({} Hz)", self.rate, f.join("/"))
    }

    /// The tone expected on channel `c` of the (stereo) sink: a mono WAV is upmixed
    /// to both channels.
    fn expected(&self, c: usize) -> f64 {
        self.freqs[c.min(self.freqs.len() - 1)]
    }
}

/// What the guest plays, in order: every rate with mono and stereo, every rate
/// with S16 and S32, and the format changes at each step, starting from the
/// servers' own 48 kHz S16 stereo. Each tone is at least 6 % from every other.
const PLAYS: &[Play] = &[
    Play {
        rate: 48000,
        format: WavFormat::I16,
        freqs: &[500.0, 750.0],
    },
    Play {
        rate: 48000,
        format: WavFormat::I32,
        freqs: &[600.0],
    },
    Play {
        rate: 44100,
        format: WavFormat::I16,
        freqs: &[700.0, 1050.0],
    },
    Play {
        rate: 44100,
        format: WavFormat::I32,
        freqs: &[800.0, 1200.0],
    },
    Play {
        rate: 44100,
        format: WavFormat::I16,
        freqs: &[900.0],
    },
];

const PLAY_SECS: f64 = 3.0;
/// Amplitude of every tone the guest plays ([`vhostsnd_testbed::guest::tone_wav`]).
const AMPLITUDE: f64 = 0.5;
/// The rates the guest records at, 2 s each.
const CAPTURE_RATES: &[u32] = &[48000, 44100, 16000];
const CAPTURE_SECS: f64 = 2.0;
/// How much of a capture must be the tone: all of it but its first
/// [`tone_start_secs`] and its last 20 ms.
const CAPTURE_MIN_SECS: f64 = 1.95;

/// How soon the fed tone must start in the guest's recording: the guest suite's
/// bound (`TONE_START_SECS`), plus, with PipeWire, one cycle of its graph. A
/// PipeWire record stream begins with one quantum of silence before the source's
/// audio, where PulseAudio's begins with the tone. The daemon reads its source a
/// guest period at a time, so no client asks for less than PipeWire's default
/// quantum (1024 frames at 48 kHz, 21.3 ms). Measured without vhostsnd:
/// `pulsesrc device=SINK.monitor latency-time=100000` gets 1024 leading zeros, and
/// 0 to 256 with `latency-time=10000`.
fn tone_start_secs(kind: Kind) -> f64 {
    match kind {
        Kind::PulseAudio => TONE_START_SECS,
        Kind::PipeWire => TONE_START_SECS + 1024.0 / 48000.0,
    }
}
/// Resampling rings for a few milliseconds where a tone starts or stops abruptly:
/// the click check leaves that much out at each end.
const EDGE_SECS: f64 = 0.005;
const MONITOR_RATE: u32 = audio_server::RATE;
const HOST_LOG_TAIL: usize = 150;
/// Host log lines left out of failure reports: every format change logs them.
const LOG_NOISE: &[&str] = &["can't find exact taps", "::set_property:"];

/// Which host side serves the guest's card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostSide {
    /// vhost-device-sound-gst with its default pipelines.
    Daemon,
    /// `gst-launch-1.0 vhostsndsrc ! audioconvert ! audioresample ! autoaudiosink`.
    LaunchConvert,
    /// `gst-launch-1.0 vhostsndsrc ! autoaudiosink`.
    LaunchPlain,
}

impl HostSide {
    fn describe(self) -> &'static str {
        match self {
            HostSide::Daemon => "vhost-device-sound-gst (default pipelines)",
            HostSide::LaunchConvert => {
                "gst-launch-1.0 vhostsndsrc ! audioconvert ! audioresample ! autoaudiosink"
            }
            HostSide::LaunchPlain => "gst-launch-1.0 vhostsndsrc ! autoaudiosink",
        }
    }
}

/// A host process (the daemon or gst-launch-1.0), its stdout and stderr collected.
struct Host {
    child: Child,
    log: Arc<Mutex<String>>,
    /// When the host's GStreamer log time was 0, as its lines arrive (the earliest
    /// estimate: a line can only arrive late).
    gst_epoch: Arc<Mutex<Option<Instant>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

/// The time at the start of a GStreamer debug log line (`0:00:03.715504348 ...`).
fn gst_log_time(line: &str) -> Option<Duration> {
    let stamp = line.split_whitespace().next()?;
    let mut f = stamp.split(':');
    let (h, m, s) = (f.next()?, f.next()?, f.next()?);
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    let s: f64 = s.parse().ok()?;
    Some(Duration::from_secs(h * 3600 + m * 60) + Duration::from_secs_f64(s))
}

impl Host {
    fn spawn(mut cmd: Command) -> Result<Host, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let gst_epoch = Arc::new(Mutex::new(None::<Instant>));
        let mut readers = Vec::new();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|p| Box::new(p) as _),
            child.stderr.take().map(|p| Box::new(p) as _),
        ];
        for pipe in pipes.into_iter().flatten() {
            let log = Arc::clone(&log);
            let epoch = Arc::clone(&gst_epoch);
            readers.push(thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(t) = gst_log_time(&line) {
                        let seen = Instant::now().checked_sub(t);
                        let mut e = epoch.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(seen) = seen {
                            *e = Some(e.map_or(seen, |e: Instant| e.min(seen)));
                        }
                    }
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    l.push_str(&line);
                    l.push('\n');
                }
            }));
        }
        Ok(Host {
            child,
            log,
            gst_epoch,
            readers,
        })
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !LOG_NOISE.iter().any(|n| l.contains(n)))
            .collect();
        lines[lines.len().saturating_sub(HOST_LOG_TAIL)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until the log has `needle`; fails early if the process exits.
    fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(format!("exited ({status}) before logging {needle:?}"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not log {needle:?} within {:.0} s",
                    timeout.as_secs_f64()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on our own child's pid; SIGINT makes gst-launch stop
            // its pipeline, and the daemon shut down, cleanly.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && self.exited().is_none() {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// The directory the plugin and the daemon were built into (`target/release`).
fn build_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vhost-device-sound-gst"))
        .parent()
        .expect("the daemon binary is in a directory")
        .to_path_buf()
}

/// Starts the host side on `socket`, reaching `server`; returns once it serves.
/// The name the daemon's streams go by in the server: PulseAudio's boots name the VM
/// with `--name`, PipeWire's leave the default (the socket file's name, `snd`).
fn vm_name(kind: Kind) -> &'static str {
    match kind {
        Kind::PulseAudio => "Work VM 2",
        Kind::PipeWire => "snd",
    }
}

fn start_host(
    side: HostSide,
    kind: Kind,
    server: &AudioServer,
    socket: &Path,
) -> Result<Host, String> {
    let sock = socket.display().to_string();
    // Warnings from everything (pulsesink's among them), the elements' info.
    let debug = "2,vhostsnd*:4";
    let mut cmd = match side {
        HostSide::Daemon => {
            let mut c = server.command(env!("CARGO_BIN_EXE_vhost-device-sound-gst"));
            c.args(["--socket", &sock, "-v"]);
            if kind == Kind::PulseAudio {
                c.args(["--name", vm_name(kind)]);
            }
            c
        }
        HostSide::LaunchConvert | HostSide::LaunchPlain => {
            let dir = build_dir();
            if !dir.join("libgstvhostsnd.so").is_file() {
                return Err(format!(
                    "{} has no libgstvhostsnd.so: run `cargo build --release --workspace` first",
                    dir.display()
                ));
            }
            let mut c = server.command("gst-launch-1.0");
            c.env("GST_PLUGIN_PATH", &dir)
                .arg("vhostsndsrc")
                .arg(format!("socket={sock}"))
                .arg("!");
            if side == HostSide::LaunchConvert {
                c.args(["audioconvert", "!", "audioresample", "!"]);
            }
            c.arg("autoaudiosink");
            c
        }
    };
    cmd.env("GST_DEBUG", debug).env("GST_DEBUG_NO_COLOR", "1");
    let mut host = Host::spawn(cmd)?;
    let ready = match side {
        HostSide::Daemon => "serving a virtio-snd device",
        // A live pipeline goes to PLAYING without prerolling.
        _ => "Setting pipeline to PLAYING",
    };
    host.wait_log(ready, Duration::from_secs(20))
        .map_err(|e| format!("{}: {e}\n--- its log ---\n{}", side.describe(), host.log()))?;
    Ok(host)
}

/// The guest's script: every play, each followed by `PLAY-END i rc=N`, then (for
/// the daemon) every capture, each exported as `rRATE.wav`.
fn guest_script(capture: bool) -> String {
    let mut s = String::from(
        "play() { echo \"PLAY-BEGIN $1\"; aplay -D hw:0,0 \"p$1.wav\"; rc=$?; \
         echo \"PLAY-END $1 rc=$rc\"; [ $rc -eq 0 ] || dmesg | tail -n 5; }\n\
         rec() { echo \"REC-BEGIN $1\"; \
         arecord -D hw:0,0 -r $1 -f S16_LE -c 2 -d 2 -t wav \"/tmp/r$1.wav\"; rc=$?; \
         echo \"REC-END $1 rc=$rc\"; [ $rc -eq 0 ] || dmesg | tail -n 5; \
         [ -f \"/tmp/r$1.wav\" ] && vsnd-export \"/tmp/r$1.wav\" \"r$1.wav\"; }\n",
    );
    for i in 1..=PLAYS.len() {
        if i > 1 {
            s.push_str("sleep 0.5\n");
        }
        let _ = writeln!(s, "play {i}");
    }
    if capture {
        s.push_str("sleep 0.5\n");
        for r in CAPTURE_RATES {
            let _ = writeln!(s, "rec {r}");
        }
    }
    s.push_str("true\n");
    s
}

/// The exit code a `PLAY-END`/`REC-END` marker reported, if the guest printed it.
fn marker_rc(console: &str, marker: &str) -> Option<i32> {
    console.lines().find_map(|l| {
        l.trim()
            .strip_prefix(marker)?
            .strip_prefix(" rc=")?
            .trim()
            .parse()
            .ok()
    })
}

/// The index of sink `name` in `pactl list short sinks`.
fn sink_index(server: &AudioServer, name: &str) -> Result<String, String> {
    let list = server.pactl(&["list", "short", "sinks"])?;
    list.lines()
        .find_map(|l| {
            let mut f = l.split('\t');
            let idx = f.next()?;
            (f.next()? == name).then(|| idx.to_string())
        })
        .ok_or_else(|| format!("no sink {name} in:\n{list}"))
}

/// The sink inputs of `pactl list sink-inputs` other than the harness's tone
/// feeder, each as one line: sink, sample spec, application and media name.
fn foreign_sink_inputs(list: &str) -> Vec<(String, String)> {
    list.split("Sink Input #")
        .skip(1)
        .filter(|b| !b.contains("application.name = \"vsnd-tone\""))
        .map(|b| {
            let field = |key: &str| {
                b.lines()
                    .map(str::trim)
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().trim_matches('"').to_string())
                    .unwrap_or_default()
            };
            let sink = field("Sink:");
            let line = format!(
                "sink {sink}, {}, application.name \"{}\", media.name \"{}\", \
                 application.process.binary \"{}\"",
                field("Sample Specification:"),
                field("application.name ="),
                field("media.name ="),
                field("application.process.binary =")
            );
            (sink, line)
        })
        .collect()
}

/// What was measured of one channel of one tone.
struct ToneReport {
    secs: f64,
    pieces: usize,
    fault: Option<String>,
    clicks: Vec<usize>,
    discontinuities: Vec<Segment>,
}

/// The frames inside `seg` where the signal steps by more than a sine of
/// amplitude [`AMPLITUDE`] at `freq` can (with a 1.5 margin), leaving out
/// [`EDGE_SECS`] at each end.
fn clicks(x: &[f32], rate: u32, freq: f64, seg: Segment) -> Vec<usize> {
    let max_step = 1.5 * 2.0 * AMPLITUDE * (std::f64::consts::PI * freq / f64::from(rate)).sin();
    let edge = (EDGE_SECS * f64::from(rate)) as usize;
    let (from, to) = (seg.start + edge + 1, seg.end.saturating_sub(edge));
    (from..to)
        .filter(|&i| f64::from((x[i] - x[i - 1]).abs()) > max_step)
        .collect()
}

/// Checks one channel of a tone spanning `span` (one or more `pieces`).
fn measure(x: &[f32], rate: u32, c: usize, want: f64, span: Segment, pieces: usize) -> ToneReport {
    let inner = {
        let edge = (EDGE_SECS * f64::from(rate)) as usize;
        Segment {
            start: span.start + edge,
            end: span.end.saturating_sub(edge).max(span.start + edge),
        }
    };
    ToneReport {
        secs: span.duration_secs(rate),
        pieces,
        fault: tone_channel_fault(c, x, span, rate, want),
        clicks: clicks(x, rate, want, span),
        discontinuities: tone_discontinuities(x, rate, want, inner),
    }
}

/// Finds every play's tone in the monitor recording (interleaved stereo at
/// [`MONITOR_RATE`]) and checks it; returns a line per play and channel, and the
/// problems.
fn check_monitor(samples: &[f32]) -> (Vec<String>, Vec<String>) {
    let rate = MONITOR_RATE;
    let secs = |f: usize| f as f64 / f64::from(rate);
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for c in 0..audio_server::CHANNELS {
        let x = analysis::channel(samples, audio_server::CHANNELS, c);
        // Each stretch of sound goes to the play whose tone it is.
        let mut found: Vec<Vec<Segment>> = vec![Vec::new(); PLAYS.len()];
        for seg in tone_segments(&x, rate, 0.05) {
            let f = analysis::dominant_frequency(&x[seg.start..seg.end], rate);
            let play = f.and_then(|f| {
                PLAYS
                    .iter()
                    .position(|p| (f - p.expected(c)).abs() < 0.02 * p.expected(c))
            });
            match play {
                Some(i) => found[i].push(seg),
                None => problems.push(format!(
                    "channel {c}: unexpected sound at {:.3} s for {:.3} s ({f:?} Hz)",
                    secs(seg.start),
                    seg.duration_secs(rate)
                )),
            }
        }
        for (i, (p, segs)) in PLAYS.iter().zip(&found).enumerate() {
            let what = format!("play {} ({}), channel {c}", i + 1, p.describe());
            let want = p.expected(c);
            let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
                lines.push(format!("{what}: not heard"));
                problems.push(format!("{what}: its {want} Hz tone is not in the monitor"));
                continue;
            };
            let span = Segment {
                start: first.start,
                end: last.end,
            };
            let r = measure(&x, rate, c, want, span, segs.len());
            let mut line = format!("{what}: {:.3} s from {:.3} s", r.secs, secs(span.start));
            if r.pieces > 1 {
                let gaps: Vec<String> = segs
                    .windows(2)
                    .map(|w| {
                        format!(
                            "{:.3} s at {:.3} s",
                            secs(w[1].start - w[0].end),
                            secs(w[0].end)
                        )
                    })
                    .collect();
                let _ = write!(line, ", in {} pieces (gaps: {})", r.pieces, gaps.join(", "));
                problems.push(format!("{what}: interrupted: {}", gaps.join(", ")));
            }
            if (r.secs - PLAY_SECS).abs() > 0.02 * PLAY_SECS {
                problems.push(format!(
                    "{what}: lasts {:.3} s, not {PLAY_SECS} s ± 2 %",
                    r.secs
                ));
            }
            if let Some(f) = &r.fault {
                let _ = write!(line, ", {f}");
                problems.push(format!("{what}: {f}"));
            }
            if !r.clicks.is_empty() {
                let at: Vec<String> = r
                    .clicks
                    .iter()
                    .take(5)
                    .map(|&i| format!("{:.4} s", secs(i)))
                    .collect();
                let _ = write!(line, ", {} click samples", r.clicks.len());
                problems.push(format!(
                    "{what}: {} clicks (steps beyond the sine's), at {}",
                    r.clicks.len(),
                    at.join(", ")
                ));
            }
            if !r.discontinuities.is_empty() {
                let at: Vec<String> = r
                    .discontinuities
                    .iter()
                    .take(5)
                    .map(|s| format!("{:.3}..{:.3} s", secs(s.start), secs(s.end)))
                    .collect();
                let _ = write!(line, ", {} discontinuities", r.discontinuities.len());
                problems.push(format!(
                    "{what}: the sine is not continuous (amplitude or phase jumps) at {}",
                    at.join(", ")
                ));
            }
            lines.push(line);
        }
    }
    (lines, problems)
}

/// Checks the guest's recording at `rate`: the fed tone on both channels, from at
/// most 0.2 s in to the end, at its level, with no dropout and no click.
fn check_capture(
    kind: Kind,
    rate: u32,
    wav: Option<&Vec<u8>>,
    tone_hz: f64,
) -> (String, Vec<String>) {
    let what = format!("capture at {rate} Hz");
    let Some(bytes) = wav else {
        return (
            format!("{what}: no WAV"),
            vec![format!("{what}: the guest exported no WAV")],
        );
    };
    let w = match analysis::read_wav(bytes) {
        Ok(w) => w,
        Err(e) => return (format!("{what}: {e}"), vec![format!("{what}: {e}")]),
    };
    let mut problems = Vec::new();
    if (w.rate, w.channels) != (rate, 2) {
        problems.push(format!(
            "{what}: the WAV is {} Hz {} ch",
            w.rate, w.channels
        ));
    }
    if (w.duration_secs() - CAPTURE_SECS).abs() > 0.05 {
        problems.push(format!("{what}: the WAV holds {:.3} s", w.duration_secs()));
    }
    let mut line = format!("{what}: {:.3} s", w.duration_secs());
    for c in 0..w.channels.min(2) {
        let x = w.channel(c);
        let Some(seg) = analysis::detect_tone(&x, w.rate, 0.05) else {
            problems.push(format!("{what}, channel {c}: silent"));
            let _ = write!(line, "; channel {c} silent");
            continue;
        };
        let r = measure(&x, w.rate, c, tone_hz, seg, 1);
        let start = seg.start as f64 / f64::from(w.rate);
        let missing_end = (x.len() - seg.end) as f64 / f64::from(w.rate);
        let _ = write!(
            line,
            "; channel {c}: tone from {start:.3} s for {:.3} s",
            r.secs
        );
        if start > tone_start_secs(kind) {
            problems.push(format!(
                "{what}, channel {c}: the tone starts {:.1} ms into the recording (the \
                 first period must hold the source's audio from START on)",
                start * 1e3
            ));
        }
        if r.secs < CAPTURE_MIN_SECS || missing_end > 0.02 {
            problems.push(format!(
                "{what}, channel {c}: the tone runs {start:.3}..{:.3} s of {:.3} s",
                seg.end as f64 / f64::from(w.rate),
                w.duration_secs()
            ));
        }
        if let Some(f) = r.fault {
            let _ = write!(line, ", {f}");
            problems.push(format!("{what}: {f}"));
        }
        if !r.clicks.is_empty() {
            problems.push(format!(
                "{what}, channel {c}: {} clicks, the first at {:.4} s",
                r.clicks.len(),
                r.clicks[0] as f64 / f64::from(w.rate)
            ));
        }
        if !r.discontinuities.is_empty() {
            problems.push(format!(
                "{what}, channel {c}: the tone is not continuous at {:?}",
                r.discontinuities
            ));
        }
    }
    (line, problems)
}

/// Polls `pactl list sink-inputs` and `source-outputs` until `stop`, collecting the
/// host's playback streams (in the order they first appeared) and the application
/// names of the recording streams.
fn watch_streams(server: &AudioServer, stop: &AtomicBool) -> (Vec<(String, String)>, Vec<String>) {
    let (mut seen, mut recording) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::Relaxed) {
        if let Ok(list) = server.sink_inputs() {
            for s in foreign_sink_inputs(&list) {
                if !seen.contains(&s) {
                    seen.push(s);
                }
            }
        }
        if let Ok(list) = server.source_outputs() {
            for name in list
                .lines()
                .filter_map(|l| l.trim().strip_prefix("application.name = "))
                .map(|v| v.trim_matches('"').to_string())
            {
                if !recording.contains(&name) {
                    recording.push(name);
                }
            }
        }
        thread::sleep(Duration::from_millis(250));
    }
    (seen, recording)
}

/// The console's last lines, each exported file's base64 replaced by one line.
fn console_tail(out: &GuestOutput) -> String {
    let mut lines = Vec::new();
    let mut in_file = false;
    for l in out.console.lines() {
        if let Some(name) = l.trim().strip_prefix("VSND-FILE-BEGIN ") {
            lines.push(format!("(exported {name} bytes)"));
            in_file = true;
        } else if l.trim().starts_with("VSND-FILE-END ") {
            in_file = false;
        } else if !in_file {
            lines.push(l.to_string());
        }
    }
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Writes what a failed run recorded into `dir` (the monitor as `monitor.wav`, the
/// guest's recordings, its console, the host's whole log) and says where.
fn save_evidence(
    dir: &Path,
    monitor: Option<&[f32]>,
    out: Option<&GuestOutput>,
    host_log: &str,
) -> String {
    let mut files: Vec<(String, Vec<u8>)> = vec![("host.log".into(), host_log.into())];
    if let Some(m) = monitor {
        let wav = analysis::write_wav(WavFormat::I16, MONITOR_RATE, audio_server::CHANNELS, m);
        files.push(("monitor.wav".into(), wav));
    }
    if let Some(o) = out {
        files.push(("console.txt".into(), o.console.clone().into()));
        files.extend(o.files.iter().map(|(n, b)| (n.clone(), b.clone())));
    }
    let mut saved = Vec::new();
    for (name, bytes) in files {
        if std::fs::write(dir.join(&name), bytes).is_ok() {
            saved.push(name);
        }
    }
    format!("saved in {}: {}", dir.display(), saved.join(", "))
}

/// One boot of the guest against `side` on a `kind` server: everything above.
fn run(kind: Kind, rewinds: bool, side: HostSide) {
    let t0 = Instant::now();
    let mut timings = Vec::new();
    let server_name = match (kind, rewinds) {
        (Kind::PulseAudio, true) => "PulseAudio, null sink with rewinds (as a desktop's)",
        (Kind::PulseAudio, false) => "PulseAudio, real-time null sink (norewinds=1)",
        (Kind::PipeWire, _) => "PipeWire + pipewire-pulse + WirePlumber",
    };
    let title = format!("{server_name}; host: {}", side.describe());
    println!("=== {title}");
    if let Err(e) = qemu::ensure_image() {
        panic!("{title}: {e}");
    }
    let opts = Options {
        sink_rewinds: rewinds,
        ..Options::default()
    };
    let tone_hz = opts.tone_hz;
    let mut server = AudioServer::start_with(kind, opts).unwrap_or_else(|e| panic!("{title}: {e}"));
    timings.push(format!(
        "server ready {:.1} s",
        server.startup_times().ready.as_secs_f64()
    ));
    if kind == Kind::PulseAudio {
        // The sink is the one this variant is about.
        let modules = server
            .pactl(&["list", "short", "modules"])
            .unwrap_or_else(|e| panic!("{title}: {e}"));
        let sink_module = modules
            .lines()
            .find(|l| l.contains(&format!("sink_name={}", audio_server::SINK)))
            .unwrap_or_else(|| panic!("{title}: no module made the sink:\n{modules}"));
        if sink_module.contains("norewinds=1") == rewinds {
            panic!("{title}: the sink is not as wanted: {sink_module}");
        }
    }
    let test_name = format!(
        "real-{}{}-{side:?}",
        kind.name(),
        if rewinds { "-rewinds" } else { "" }
    );
    let socket = vhostsnd_testbed::guest::socket(&test_name);
    let host_t0 = Instant::now();
    let mut host = start_host(side, kind, &server, &socket)
        .unwrap_or_else(|e| panic!("{title}: {e}\n--- server logs ---\n{}", server.logs()));
    timings.push(format!(
        "host side up {:.1} s",
        host_t0.elapsed().as_secs_f64()
    ));
    let sink = sink_index(&server, audio_server::SINK).unwrap_or_else(|e| panic!("{title}: {e}"));
    // A real-time PulseAudio sink's monitor is recorded in small fragments; a
    // rewinding one with a long latency, which leaves the sink rendering as far
    // ahead as on a desktop (10 ms would hold it near real time, hiding what it
    // does). PipeWire runs the whole graph at its smallest client's latency: a
    // 10 ms recorder makes that 256 frames (5.3 ms), and under this machine's
    // load the graph then misses cycles, each a quantum of zeros in the monitor
    // (and xruns in `pw-top`'s ERR column for the recorder itself). 100 ms, as
    // for the tone's player, leaves the graph the quantum a desktop's has.
    let rec_latency = Duration::from_millis(match (kind, rewinds) {
        (_, true) => 2000,
        (Kind::PipeWire, false) => 100,
        (Kind::PulseAudio, false) => 10,
    });
    let rec_call = Instant::now();
    let rec = server
        .start_recording_with_latency(audio_server::SINK_MONITOR, rec_latency)
        .unwrap_or_else(|e| panic!("{title}: {e}"));
    let started = rec.wait_frames(1, Duration::from_secs(10));
    if let Err(e) = started {
        panic!("{title}: the monitor recording does not start: {e}");
    }
    // When the monitor recording's first frame was recorded (a recording in 2 s
    // bursts has its first frames late: then the estimate is not worth giving).
    let rec_t0 =
        Instant::now() - Duration::from_secs_f64(rec.frames() as f64 / f64::from(MONITOR_RATE));

    let capture = side == HostSide::Daemon;
    let mut guest = GuestOpts::new(guest_script(capture))
        .socket(&socket)
        .timeout(Duration::from_secs(150));
    for (i, p) in PLAYS.iter().enumerate() {
        let wav = vhostsnd_testbed::guest::tone_wav(p.format, p.rate, p.freqs, PLAY_SECS);
        guest = guest.file(format!("p{}.wav", i + 1), wav);
    }
    let t = Instant::now();
    let stop = AtomicBool::new(false);
    let (out, (streams, recording)) = thread::scope(|s| {
        let watcher = s.spawn(|| watch_streams(&server, &stop));
        let out = qemu::run(guest);
        stop.store(true, Ordering::Relaxed);
        (out, watcher.join().unwrap_or_default())
    });
    timings.push(format!("guest {:.1} s", t.elapsed().as_secs_f64()));
    // The monitor up to a second after the guest's end, when everything it played
    // has been rendered (it comes in bursts of up to the recording's latency).
    // Its first frame came no earlier than the call: this many frames are enough.
    let until = rec_call.elapsed().as_secs_f64() + 1.0;
    let _ = rec.wait_frames(
        (until * f64::from(MONITOR_RATE)) as usize,
        Duration::from_secs(10),
    );
    let recorded = rec.stop();
    let host_exited = host.exited();

    let mut problems = Vec::new();
    let mut lines = Vec::new();
    let out: Option<GuestOutput> = match out {
        Ok(o) => Some(o),
        Err(e) => {
            problems.push(format!("the guest run failed: {e}"));
            None
        }
    };
    if !server.is_running() {
        problems.push(format!(
            "the {kind} server itself stopped during the run (its log says why: a \
             SIGTERM there came from outside the test)"
        ));
    }
    if let Some(status) = host_exited {
        problems.push(format!("the host side exited during the run ({status})"));
    }
    if let Some(o) = &out {
        for (i, p) in PLAYS.iter().enumerate() {
            match marker_rc(&o.console, &format!("PLAY-END {}", i + 1)) {
                Some(0) => {}
                Some(rc) => problems.push(format!(
                    "aplay of play {} ({}) exited with {rc}",
                    i + 1,
                    p.describe()
                )),
                None => problems.push(format!("play {} never ended", i + 1)),
            }
        }
    }
    // The host's stream, on our sink, while the guest ran.
    let ours: Vec<&String> = streams
        .iter()
        .filter(|(s, _)| *s == sink)
        .map(|(_, l)| l)
        .collect();
    for (_, l) in &streams {
        lines.push(format!("stream seen: {l}"));
    }
    if ours.is_empty() {
        problems.push(format!(
            "no stream on {} (sink {sink}) in `pactl list sink-inputs` while the guest played",
            audio_server::SINK
        ));
    }
    if side == HostSide::Daemon {
        // The VM by name in the host's mixer: its playback stream (application and
        // media name) and its recording stream.
        let name = vm_name(kind);
        let named = format!("application.name \"{name}\", media.name \"{name}\"");
        if !ours.iter().any(|l| l.contains(&named)) {
            problems.push(format!("no playback stream named {name:?} ({named})"));
        }
        lines.push(format!("recording streams seen: {recording:?}"));
        if !recording.iter().any(|r| r == name) {
            problems.push(format!("no recording stream named {name:?}"));
        }
    }
    let monitor = recorded.map(|s| analysis::i16_to_f32(&s));
    match &monitor {
        Ok(samples) => {
            lines.push(format!(
                "monitor: {:.1} s recorded",
                analysis::duration_secs(samples.len(), audio_server::CHANNELS, MONITOR_RATE)
            ));
            let (l, p) = check_monitor(samples);
            lines.extend(l);
            problems.extend(p);
        }
        Err(e) => problems.push(format!("the monitor recording failed: {e}")),
    }
    let monitor = monitor.ok();
    if capture {
        if let Some(o) = &out {
            for &r in CAPTURE_RATES {
                match marker_rc(&o.console, &format!("REC-END {r}")) {
                    Some(0) => {}
                    Some(rc) => problems.push(format!("arecord at {r} Hz exited with {rc}")),
                    None => problems.push(format!("the capture at {r} Hz never ended")),
                }
                let wav = o.files.get(&format!("r{r}.wav"));
                let (l, p) = check_capture(kind, r, wav, tone_hz);
                lines.push(l);
                problems.extend(p);
            }
        }
    }
    timings.push(format!("total {:.1} s", t0.elapsed().as_secs_f64()));
    let epoch = *host.gst_epoch.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(epoch), false) = (epoch, rewinds) {
        let ahead = rec_t0.saturating_duration_since(epoch).as_secs_f64();
        let behind = epoch.saturating_duration_since(rec_t0).as_secs_f64();
        lines.push(format!(
            "monitor time t is the host log's GStreamer time t {:+.2} s (± 0.05 s)",
            ahead - behind
        ));
    }
    let summary = format!("{}\ntimings: {}", lines.join("\n"), timings.join(", "));
    println!("{summary}");
    let dir = socket.parent().expect("the socket is in a directory");
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        let saved = save_evidence(dir, monitor.as_deref(), out.as_ref(), &host.log());
        panic!(
            "{title}: {} problem(s):\n- {}\n--- measured ---\n{summary}\n{saved}\n\
             --- guest console (tail) ---\n{}\n--- host log (tail) ---\n{}\n\
             --- server logs ---\n{}",
            problems.len(),
            problems.join("\n- "),
            out.as_ref().map(console_tail).unwrap_or_default(),
            host.log_tail(),
            server.logs()
        );
    }
}

/// One boot at a time: two guests and two audio servers at once on a 2-core machine
/// would glitch for reasons of their own.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

macro_rules! matrix {
    ($($(#[$attr:meta])* $test:ident: $kind:expr, $rewinds:expr, $side:expr;)*) => {
        $(
            #[test]
            $(#[$attr])*
            fn $test() {
                let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
                run($kind, $rewinds, $side);
            }
        )*
    };
}

matrix! {
    pipewire_daemon: Kind::PipeWire, false, HostSide::Daemon;
    pipewire_launch_convert: Kind::PipeWire, false, HostSide::LaunchConvert;
    pipewire_launch_plain: Kind::PipeWire, false, HostSide::LaunchPlain;
    pulseaudio_daemon: Kind::PulseAudio, false, HostSide::Daemon;
    pulseaudio_launch_convert: Kind::PulseAudio, false, HostSide::LaunchConvert;
    pulseaudio_launch_plain: Kind::PulseAudio, false, HostSide::LaunchPlain;
    pulseaudio_rewinds_daemon: Kind::PulseAudio, true, HostSide::Daemon;
    pulseaudio_rewinds_launch_convert: Kind::PulseAudio, true, HostSide::LaunchConvert;
    pulseaudio_rewinds_launch_plain: Kind::PulseAudio, true, HostSide::LaunchPlain;
}
