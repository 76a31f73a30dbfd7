//! The real thing: a Linux guest in QEMU (vhost-user-snd-pci, the kernel's virtio_snd
//! driver, ALSA tools) plays and records through the elements.
//!
//! Every failure prints the guest console, the tail of the plugin's debug log and the
//! pipeline's bus errors, so it explains itself.

mod common;
mod support;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use common::analysis::{self, WavFormat};
use common::qemu::{self, GuestOpts, GuestOutput, GuestRun};

/// The last lines the vhostsnd elements logged, for failure reports.
static LOG: LazyLock<Mutex<VecDeque<String>>> = LazyLock::new(|| Mutex::new(VecDeque::new()));

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    support::init();
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
fn fail(what: &str, out: Option<&GuestOutput>, bus_errors: &[String]) -> ! {
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

/// A pipeline from a description, with its bus errors collected.
struct Pipeline {
    pipeline: gst::Pipeline,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Pipeline {
    fn launch(desc: &str) -> Pipeline {
        init();
        let pipeline = gst::parse::launch(desc)
            .expect("pipeline description")
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let errs = errors.clone();
        let bus = pipeline.bus().expect("bus");
        // The default main context is never iterated here; a sync handler sees
        // every message as it is posted.
        bus.set_sync_handler(move |_, msg| {
            if let gst::MessageView::Error(e) = msg.view() {
                errs.lock()
                    .unwrap()
                    .push(format!("{} ({:?})", e.error(), e.debug()));
            }
            gst::BusSyncReply::Drop
        });
        pipeline
            .set_state(gst::State::Playing)
            .expect("pipeline plays");
        Pipeline { pipeline, errors }
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Audio that reached an appsink, split where the format changed.
#[derive(Default)]
struct Received {
    runs: Vec<(u32, usize, Vec<f32>)>,
}

/// `vhostsndsrc` with `src_props` into an appsink that gathers F32 samples.
fn playback_pipeline(socket: &Path, src_props: &str) -> (Pipeline, Arc<Mutex<Received>>) {
    let p = Pipeline::launch(&format!(
        "vhostsndsrc name=src socket={} {src_props} ! audioconvert ! \
         audio/x-raw,format=F32LE ! appsink name=out sync=false",
        socket.display()
    ));
    let received = Arc::new(Mutex::new(Received::default()));
    let r = received.clone();
    let appsink = p
        .pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let info = sample
                    .caps()
                    .and_then(|c| gst_audio::AudioInfo::from_caps(c).ok())
                    .ok_or(gst::FlowError::NotNegotiated)?;
                let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                let samples: Vec<f32> = map
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let (rate, ch) = (info.rate(), info.channels() as usize);
                let mut r = r.lock().unwrap();
                match r.runs.last_mut() {
                    Some((lr, lc, v)) if *lr == rate && *lc == ch => v.extend(samples),
                    _ => r.runs.push((rate, ch, samples)),
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    (p, received)
}

/// A tone in a WAV file, one frequency per channel.
fn tone_wav(format: WavFormat, rate: u32, freqs: &[f64], secs: f64) -> Vec<u8> {
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
const TIMED: &str = r#"t0=$(cut -d' ' -f1 /proc/uptime); echo PLAYING; "#;
const TIMED_END: &str = r#"; rc=$?; t1=$(cut -d' ' -f1 /proc/uptime); echo "ELAPSED=$(echo "$t0 $t1" | awk '{print $2-$1}')"; [ $rc -eq 0 ] || dmesg | tail -n 20; exit $rc"#;

fn elapsed(out: &GuestOutput) -> f64 {
    out.console
        .lines()
        .find_map(|l| l.trim().strip_prefix("ELAPSED="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| fail("the guest printed no ELAPSED=", Some(out), &[]))
}

/// Checks that the last run of received audio is the tone: its length, frequency per
/// channel, level, and no dropout inside it.
fn check_tone(
    what: &str,
    received: &Received,
    rate: u32,
    freqs: &[f64],
    secs: f64,
    out: &GuestOutput,
    errors: &[String],
) {
    let Some((r, ch, samples)) = received.runs.last() else {
        fail(&format!("{what}: no audio came out"), Some(out), errors);
    };
    if (*r, *ch) != (rate, freqs.len()) {
        fail(
            &format!("{what}: output is {r} Hz {ch} ch"),
            Some(out),
            errors,
        );
    }
    let first = analysis::channel(samples, *ch, 0);
    let Some(seg) = analysis::detect_tone(&first, rate, 0.05) else {
        fail(&format!("{what}: no tone in the output"), Some(out), errors);
    };
    let got = seg.duration_secs(rate);
    // One 10 ms block of slack at each end for the edge detection.
    if (got - secs).abs() > secs * 0.02 + 0.02 {
        fail(
            &format!("{what}: tone lasts {got:.3} s, not {secs} s"),
            Some(out),
            errors,
        );
    }
    for (c, &want) in freqs.iter().enumerate() {
        let chan = analysis::channel(samples, *ch, c);
        if let Some(e) = tone_channel_fault(c, &chan, seg, rate, want) {
            fail(&format!("{what}: {e}"), Some(out), errors);
        }
    }
}

/// What is wrong with channel `c` of a detected tone, if anything: its frequency (more
/// than 1 % off `want`), its level (a 0.5 amplitude sine has an RMS of 0.354) or a
/// dropout inside it.
fn tone_channel_fault(
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

fn socket(test: &str) -> PathBuf {
    support::socket_path(&format!("guest-{test}"))
}

fn boot(opts: GuestOpts) -> GuestOutput {
    qemu::run(opts).unwrap_or_else(|e| fail(&format!("the guest run failed: {e}"), None, &[]))
}

/// The guest plays a WAV with aplay; the host checks what vhostsndsrc put out.
fn guest_plays(
    test: &str,
    format: WavFormat,
    aplay_fmt: &str,
    rate: u32,
    freqs: &[f64],
    secs: f64,
) -> (GuestOutput, f64) {
    let sock = socket(test);
    let (p, received) = playback_pipeline(&sock, "");
    let wav = tone_wav(format, rate, freqs, secs);
    let script = format!(
        "cat /proc/asound/pcm; {TIMED}aplay -q -D hw:0,0 -f {aplay_fmt} tone.wav{TIMED_END}"
    );
    let out = boot(GuestOpts::new(script).socket(&sock).file("tone.wav", wav));
    if out.rc != 0 {
        fail(
            &format!("{test}: aplay failed ({})", out.rc),
            Some(&out),
            &p.errors(),
        );
    }
    // The last period leaves the source one period after the guest is done.
    std::thread::sleep(Duration::from_millis(200));
    check_tone(
        test,
        &received.lock().unwrap(),
        rate,
        freqs,
        secs,
        &out,
        &p.errors(),
    );
    if !p.errors().is_empty() {
        fail(&format!("{test}: pipeline errors"), Some(&out), &p.errors());
    }
    let t = elapsed(&out);
    (out, t)
}

#[test]
fn playback_stereo_s16_48k_in_real_time() {
    let (out, t) = guest_plays(
        "play-s16-stereo",
        WavFormat::I16,
        "S16_LE",
        48000,
        &[440.0, 660.0],
        5.0,
    );
    // The guest sees one card with one PCM device holding both directions.
    if !out.console.contains("00-00: virtio-snd") || !out.console.contains("playback 1 : capture 1")
    {
        fail(
            "/proc/asound/pcm does not list one duplex device",
            Some(&out),
            &[],
        );
    }
    // Pacing: 5 s of audio take 5 s of guest time, plus aplay's start-up and drain
    // (0.18-0.24 s measured under TCG, before and after the device stopped needing
    // kicks; a 5.25 s bound failed about one run in four).
    if !(4.75..=5.5).contains(&t) {
        fail(
            &format!("5 s of playback took {t:.3} s in the guest"),
            Some(&out),
            &[],
        );
    }
}

#[test]
fn playback_mono_s16_48k() {
    guest_plays(
        "play-s16-mono",
        WavFormat::I16,
        "S16_LE",
        48000,
        &[880.0],
        2.0,
    );
}

#[test]
fn playback_stereo_s32_44k1() {
    guest_plays(
        "play-s32-stereo",
        WavFormat::I32,
        "S32_LE",
        44100,
        &[500.0, 750.0],
        2.0,
    );
}

#[test]
fn playback_mono_float_44k1() {
    guest_plays(
        "play-float-mono",
        WavFormat::F32,
        "FLOAT_LE",
        44100,
        &[1000.0],
        2.0,
    );
}

/// Checks a WAV the guest recorded: tone `freqs[c]` on channel `c`, at the right
/// level, for at least `min_secs`, with no dropout and no discontinuity.
fn check_recording(
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

const RECORD: &str = "arecord -q -D hw:0,0 -r 48000 -f S16_LE -d 2 -t wav";

/// `audiotestsrc ! vhostsndsink`; the guest records, the host checks the recording.
fn guest_captures(test: &str, channels: usize) {
    let sock = socket(test);
    let p = Pipeline::launch(&format!(
        "audiotestsrc is-live=true freq=1000 volume=0.5 ! audioconvert ! audioresample ! \
         vhostsndsink socket={}",
        sock.display()
    ));
    let script =
        format!("{RECORD} -c {channels} /tmp/r.wav || exit 1; vsnd-export /tmp/r.wav r.wav");
    let out = boot(GuestOpts::new(script).socket(&sock));
    if out.rc != 0 {
        fail(&format!("{test}: arecord failed"), Some(&out), &p.errors());
    }
    // The capture starts with audio (the device keeps a cushion), so the tone covers
    // nearly the whole 2 s recording.
    let freqs = vec![1000.0; channels];
    check_recording(test, out.files.get("r.wav"), &freqs, 1.8, &out, &p.errors());
    if !p.errors().is_empty() {
        fail(&format!("{test}: pipeline errors"), Some(&out), &p.errors());
    }
}

#[test]
fn capture_stereo() {
    guest_captures("capture-stereo", 2);
}

#[test]
fn capture_mono() {
    guest_captures("capture-mono", 1);
}

/// One card, both directions at once: the guest plays and records on the same PCM
/// device while the pipeline loops its playback back into its capture, and the
/// recording must carry the guest's own tones.
#[test]
fn full_duplex_loopback_on_one_socket() {
    let sock = socket("duplex");
    let p = Pipeline::launch(&format!(
        "vhostsndsrc socket={s} ! queue ! vhostsndsink socket={s}",
        s = sock.display()
    ));
    let wav = tone_wav(WavFormat::I16, 48000, &[440.0, 660.0], 4.0);
    let script = format!(
        "aplay -q -D hw:0,0 tone.wav & sleep 0.5; {RECORD} -c 2 /tmp/r.wav || exit 1; wait; \
         vsnd-export /tmp/r.wav r.wav"
    );
    let out = boot(GuestOpts::new(script).socket(&sock).file("tone.wav", wav));
    if out.rc != 0 {
        fail("duplex: aplay or arecord failed", Some(&out), &p.errors());
    }
    check_recording(
        "duplex",
        out.files.get("r.wav"),
        &[440.0, 660.0],
        1.5,
        &out,
        &p.errors(),
    );
    if !p.errors().is_empty() {
        fail("duplex: pipeline errors", Some(&out), &p.errors());
    }
}

#[test]
fn offline_mode_is_faster_than_real_time_and_intact() {
    let sock = socket("offline");
    let (p, received) = playback_pipeline(&sock, "is-live=false");
    let secs = 10.0;
    let wav = tone_wav(WavFormat::I16, 48000, &[440.0, 660.0], secs);
    let script = format!("{TIMED}aplay -q -D hw:0,0 -f S16_LE tone.wav{TIMED_END}");
    let out = boot(GuestOpts::new(script).socket(&sock).file("tone.wav", wav));
    if out.rc != 0 {
        fail("offline: aplay failed", Some(&out), &p.errors());
    }
    let t = elapsed(&out);
    if t > secs * 0.5 {
        fail(
            &format!("offline: 10 s of audio took {t:.3} s"),
            Some(&out),
            &p.errors(),
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    check_tone(
        "offline",
        &received.lock().unwrap(),
        48000,
        &[440.0, 660.0],
        secs,
        &out,
        &p.errors(),
    );
}

#[test]
fn survives_a_killed_qemu_and_serves_the_next_one() {
    let sock = socket("survival");
    let (p, received) = playback_pipeline(&sock, "");
    let long = tone_wav(WavFormat::I16, 48000, &[440.0, 660.0], 30.0);
    let first = GuestRun::boot(
        GuestOpts::new("echo PLAYING; aplay -q -D hw:0,0 tone.wav")
            .socket(&sock)
            .file("tone.wav", long),
    )
    .unwrap_or_else(|e| fail(&format!("first guest: {e}"), None, &p.errors()));
    if let Err(e) = first.wait_for("PLAYING", Duration::from_secs(90)) {
        fail(&format!("first guest never played: {e}"), None, &p.errors());
    }
    std::thread::sleep(Duration::from_secs(1));
    first
        .kill()
        .unwrap_or_else(|e| fail(&format!("cannot kill QEMU: {e}"), None, &[]));
    drop(first);

    // Only what the second guest plays counts.
    received.lock().unwrap().runs.clear();
    let wav = tone_wav(WavFormat::I16, 48000, &[550.0, 825.0], 2.0);
    let out = boot(
        GuestOpts::new("aplay -q -D hw:0,0 tone.wav")
            .socket(&sock)
            .file("tone.wav", wav),
    );
    if out.rc != 0 {
        fail("second guest: aplay failed", Some(&out), &p.errors());
    }
    std::thread::sleep(Duration::from_millis(200));
    check_tone(
        "second guest",
        &received.lock().unwrap(),
        48000,
        &[550.0, 825.0],
        2.0,
        &out,
        &p.errors(),
    );
    if !p.errors().is_empty() {
        fail("survival: errors reached the bus", Some(&out), &p.errors());
    }
}

// ---- vhost-device-sound-gst ----

/// The daemon, with its stderr log collected.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vhost-device-sound-gst"))
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("vhost-device-sound-gst starts");
        let log = Arc::new(Mutex::new(String::new()));
        let l = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn terminate(mut self) -> (Option<i32>, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return (status.code(), self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        (None, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon_fail(what: &str, out: Option<&GuestOutput>, log: &str) -> ! {
    fail(&format!("{what}\n--- daemon log ---\n{log}"), out, &[])
}

#[test]
fn daemon_plays_records_reconnects_and_shuts_down_cleanly() {
    init();
    let sock = socket("daemon");
    let wav_out = sock.with_file_name("played.wav");
    let playback = format!(
        "audioconvert ! audioresample ! audio/x-raw,format=S16LE,rate=48000,channels=2 ! \
         wavenc ! filesink location={}",
        wav_out.display()
    );
    let d = Daemon::start(&[
        "--socket",
        sock.to_str().unwrap(),
        "--backend",
        "gstreamer",
        "--playback",
        &playback,
        "--capture",
        "audiotestsrc is-live=true freq=1000 volume=0.5",
    ]);
    if !d.wait_log("serving a virtio-snd device", Duration::from_secs(10)) {
        daemon_fail("the daemon did not start", None, &d.log());
    }
    if d.log().contains("opening the host source") {
        daemon_fail(
            "the microphone opened before the guest captured",
            None,
            &d.log(),
        );
    }

    // The guest plays, then records.
    let wav = tone_wav(WavFormat::I16, 48000, &[440.0, 660.0], 2.0);
    let script = format!(
        "aplay -q -D hw:0,0 tone.wav || exit 1; sleep 1; echo RECORDING; \
         {RECORD} -c 2 /tmp/r.wav || exit 1; vsnd-export /tmp/r.wav r.wav"
    );
    let out = boot(GuestOpts::new(script).socket(&sock).file("tone.wav", wav));
    if out.rc != 0 {
        daemon_fail("the guest could not play and record", Some(&out), &d.log());
    }
    check_recording(
        "daemon capture",
        out.files.get("r.wav"),
        &[1000.0, 1000.0],
        1.8,
        &out,
        &[],
    );
    // The microphone was opened for the capture only, and closed after it.
    let log = d.log();
    let opened = log.find("capture: opening the host source");
    let started = log.find("guest started capture");
    let closed = log.find("capture: host source closed");
    let playback_started = log.find("guest started playback");
    match (playback_started, started, opened, closed) {
        (Some(p), Some(s), Some(o), Some(c)) if p < s && s < o && o < c => {}
        _ => daemon_fail(
            "capture was not opened only while the guest captured",
            Some(&out),
            &log,
        ),
    }

    // The next guest (a new QEMU) is served by the same daemon.
    let wav = tone_wav(WavFormat::I16, 48000, &[550.0, 825.0], 1.0);
    let out = boot(
        GuestOpts::new("aplay -q -D hw:0,0 tone.wav")
            .socket(&sock)
            .file("tone.wav", wav),
    );
    if out.rc != 0 {
        daemon_fail("the second guest could not play", Some(&out), &d.log());
    }
    if d.log().matches("guest connected").count() != 2 {
        daemon_fail("two connections were not both served", Some(&out), &d.log());
    }

    let (code, log) = d.terminate();
    if code != Some(0) {
        daemon_fail(&format!("SIGTERM exit status {code:?}"), None, &log);
    }
    if sock.exists() {
        daemon_fail("the socket file is left behind", None, &log);
    }
    // The WAV was finished on shutdown and holds both guests' tones.
    let bytes = std::fs::read(&wav_out).unwrap_or_default();
    let w = analysis::read_wav(&bytes)
        .unwrap_or_else(|e| daemon_fail(&format!("played.wav: {e}"), None, &log));
    let left = w.channel(0);
    let f440 = analysis::goertzel_power(&left, w.rate, 440.0);
    let f550 = analysis::goertzel_power(&left, w.rate, 550.0);
    let f300 = analysis::goertzel_power(&left, w.rate, 300.0);
    if f440 < 100.0 * f300 || f550 < 100.0 * f300 {
        daemon_fail(
            &format!("played.wav lacks a guest's tone ({f440:.1} {f550:.1} {f300:.1})"),
            None,
            &log,
        );
    }
}

#[test]
fn daemon_no_capture_never_opens_a_source() {
    init();
    let sock = socket("daemon-no-capture");
    let d = Daemon::start(&[
        "--socket",
        sock.to_str().unwrap(),
        "--playback",
        "fakesink sync=false",
        "--no-capture",
    ]);
    if !d.wait_log("serving a virtio-snd device", Duration::from_secs(10)) {
        daemon_fail("the daemon did not start", None, &d.log());
    }
    // The guest records silence: alsabat finds no tone, and arecord gets all zeros.
    let script =
        "arecord -q -D hw:0,0 -c 2 -r 48000 -f S16_LE -d 1 -t raw /tmp/rec.raw || exit 1; \
                  od -An -v -tx1 /tmp/rec.raw | tr -d ' \\n' | tr -d 0 | wc -c";
    let out = boot(GuestOpts::new(script).socket(&sock));
    if out.rc != 0 {
        daemon_fail("arecord failed", Some(&out), &d.log());
    }
    let nonzero: Option<u64> = out
        .console
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back();
    if nonzero != Some(0) {
        daemon_fail(
            &format!("the guest recorded something ({nonzero:?} non-zero digits)"),
            Some(&out),
            &d.log(),
        );
    }
    let log = d.log();
    if !log.contains("guest started capture") || log.contains("opening the host source") {
        daemon_fail(
            "--no-capture opened a source or missed the capture",
            Some(&out),
            &log,
        );
    }
    let (code, log) = d.terminate();
    if code != Some(0) {
        daemon_fail(&format!("SIGTERM exit status {code:?}"), None, &log);
    }
}

/// A host playback pipeline that fails (its output directory does not exist yet) is
/// tried again every 5 s. Meanwhile the guest's card keeps real time and its audio is
/// dropped; once the pipeline works, the guest is heard.
#[test]
fn daemon_retries_a_failed_host_pipeline() {
    init();
    let sock = socket("daemon-retry");
    let dir = sock.with_file_name("not-yet");
    let _ = std::fs::remove_dir_all(&dir);
    let raw = dir.join("played.raw");
    let playback = format!(
        "audioconvert ! audio/x-raw,format=S16LE,rate=48000,channels=2 ! filesink location={}",
        raw.display()
    );
    let d = Daemon::start(&[
        "--socket",
        sock.to_str().unwrap(),
        "--playback",
        &playback,
        "--no-capture",
    ]);
    if !d.wait_log("retrying in 5 s", Duration::from_secs(10)) {
        daemon_fail(
            "the failed playback pipeline is not retried",
            None,
            &d.log(),
        );
    }

    // The guest plays 2 s of a tone.
    let play = |when: &str| {
        let wav = tone_wav(WavFormat::I16, 48000, &[440.0, 660.0], 2.0);
        let script = format!("{TIMED}aplay -q -D hw:0,0 tone.wav{TIMED_END}");
        let out = boot(GuestOpts::new(script).socket(&sock).file("tone.wav", wav));
        if out.rc != 0 {
            daemon_fail(
                &format!("the guest could not play {when}"),
                Some(&out),
                &d.log(),
            );
        }
        out
    };
    let t = elapsed(&play("without a host pipeline"));
    if !(1.8..6.0).contains(&t) {
        daemon_fail(
            &format!("2 s of audio took {t:.3} s: the card did not keep real time"),
            None,
            &d.log(),
        );
    }

    std::fs::create_dir_all(&dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !raw.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !raw.exists() {
        daemon_fail("the pipeline never came back", None, &d.log());
    }
    play("once the pipeline was back");
    let (code, log) = d.terminate();
    if code != Some(0) {
        daemon_fail(&format!("SIGTERM exit status {code:?}"), None, &log);
    }
    let bytes = std::fs::read(&raw).unwrap();
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let samples = analysis::i16_to_f32(&samples);
    let tone = analysis::detect_tone(&analysis::channel(&samples, 2, 0), 48000, 0.05);
    let heard = tone.map_or(0.0, |s| s.duration_secs(48000));
    let in_tone = tone.map_or(&[][..], |s| &samples[2 * s.start..2 * s.end]);
    let freqs = analysis::dominant_frequency_per_channel(in_tone, 2, 48000);
    let near = |f: Option<f64>, want: f64| f.is_some_and(|f| (f - want).abs() < 5.0);
    if heard < 1.8 || !near(freqs[0], 440.0) || !near(freqs[1], 660.0) {
        daemon_fail(
            &format!("after the retry the host got {heard:.2} s of tone at {freqs:?}"),
            None,
            &log,
        );
    }
}
