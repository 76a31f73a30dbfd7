//! vhost-device-sound-gst with a real Linux guest in QEMU: it plays and records
//! through the daemon's pipelines, reconnects, retries a failed host pipeline and
//! shuts down cleanly.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vhostsnd_testbed::analysis::{self, WavFormat};
use vhostsnd_testbed::guest::{
    alsabat_script, boot, check_recording, elapsed, fail, init, tone_wav, RECORD, TIMED, TIMED_END,
};
use vhostsnd_testbed::mixer::{check_mixer_recordings, MIXER_CAPTURE_SCRIPT};
use vhostsnd_testbed::qemu::{GuestOpts, GuestOutput, GuestRun};

fn socket(test: &str) -> PathBuf {
    vhostsnd_testbed::guest::socket(test)
}

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

    /// Starts the daemon and waits until it serves its socket.
    fn serving(args: &[&str]) -> Daemon {
        let d = Daemon::start(args);
        if !d.wait_log("serving a virtio-snd device", Duration::from_secs(10)) {
            daemon_fail("the daemon did not start", None, &d.log());
        }
        d
    }

    /// [`serving`](Self::serving) `sock`, the guest's playback discarded, with `args`.
    fn discarding_playback(sock: &std::path::Path, args: &[&str]) -> Daemon {
        let sock = sock.to_str().expect("utf-8 socket path");
        let mut all = vec!["--socket", sock, "--playback", "fakesink sync=false"];
        all.extend_from_slice(args);
        Daemon::serving(&all)
    }

    /// SIGTERM, which must end it with status 0; returns its log.
    fn terminate_cleanly(self) -> String {
        let (code, log) = self.terminate();
        if code != Some(0) {
            daemon_fail(&format!("SIGTERM exit status {code:?}"), None, &log);
        }
        log
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
    let d = Daemon::serving(&[
        "--socket",
        sock.to_str().unwrap(),
        "--backend",
        "gstreamer",
        "--playback",
        &playback,
        "--capture",
        "audiotestsrc is-live=true freq=1000 volume=0.5",
    ]);
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
        1.99,
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

    let log = d.terminate_cleanly();
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

/// ALSA's own test tool, unmodified, records through the daemon's gated capture
/// (the source opens at the guest's START) and finds the host's tone, stereo and
/// mono: the first period waits for the source's first audio instead of silence.
#[test]
fn daemon_capture_passes_alsabat() {
    init();
    let sock = socket("daemon-alsabat");
    let d = Daemon::discarding_playback(
        &sock,
        &[
            "--capture",
            "audiotestsrc is-live=true freq=1000 volume=0.5",
        ],
    );
    let script = alsabat_script(&["-C hw:0,0 -c 2 -F 1000", "-C hw:0,0 -c 1 -F 1000"]);
    let out = boot(GuestOpts::new(script).socket(&sock));
    if out.rc != 0 {
        daemon_fail(
            &format!("alsabat -C failed ({})", out.rc),
            Some(&out),
            &d.log(),
        );
    }
    d.terminate_cleanly();
}

/// `--controls`: the guest's Capture volume and switch scale what it records, and
/// stay as the guest set them while the daemon opens and closes its capture pipeline
/// for each recording; the control socket's `status` and subscribers see them.
#[test]
fn daemon_controls_scale_what_the_guest_records() {
    init();
    let sock = socket("daemon-controls");
    let ctl = sock.with_file_name("control.sock");
    let d = Daemon::discarding_playback(
        &sock,
        &[
            "--controls",
            "--capture",
            "audiotestsrc is-live=true freq=1000 volume=0.5",
            "--control-socket",
            ctl.to_str().unwrap(),
        ],
    );
    let mut sub = ControlClient::connect(&ctl);
    assert_eq!(sub.say("subscribe")["subscribed"], true);
    let out = boot(
        GuestOpts::new(MIXER_CAPTURE_SCRIPT)
            .socket(&sock)
            .controls(),
    );
    check_mixer_recordings("the daemon", &out, &[d.log()]);
    let mut mixer = Vec::new();
    while mixer.len() < 2 {
        let ev = sub.next();
        if ev["event"] == "mixer" {
            mixer.push(ev);
        }
    }
    assert_eq!(mixer[0]["direction"], "capture", "{mixer:?}");
    let volume = mixer[0]["volume"].as_f64().unwrap_or_default();
    assert!((volume - 0.501).abs() < 0.001, "{mixer:?}");
    assert_eq!(mixer[1]["mute"], true, "{mixer:?}");
    let status = ControlClient::connect(&ctl).say("status");
    assert_eq!(status["capture"]["mute"], true, "{status}");
    assert_eq!(status["playback"]["volume"], 1.0, "{status}");
    d.terminate_cleanly();
}

#[test]
fn daemon_no_capture_never_opens_a_source() {
    init();
    let sock = socket("daemon-no-capture");
    let d = Daemon::discarding_playback(&sock, &["--no-capture"]);
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
    d.terminate_cleanly();
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
    let d = Daemon::serving(&[
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
    let log = d.terminate_cleanly();
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

/// Listening remotely: the daemon streams the guest's playback as Opus over RTP (the
/// README's example, on the loopback), and a receiver (`udpsrc ! rtpopusdepay !
/// opusdec`) hears the guest's tone on each channel.
#[test]
fn daemon_streams_the_guest_as_opus_over_rtp() {
    init();
    let sock = socket("daemon-rtp");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port");
    let received = sock.with_file_name("received.wav");
    let mut receiver = Command::new("gst-launch-1.0")
        .args(["-q", "-e", "udpsrc", "address=127.0.0.1"])
        .arg(format!("port={port}"))
        // What the payloader puts in its caps: without them the depayloader says mono.
        .arg(
            "caps=application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,\
             payload=96,sprop-stereo=(string)1,encoding-params=(string)2",
        )
        .args([
            "!",
            "rtpjitterbuffer",
            "latency=100",
            "!",
            "rtpopusdepay",
            "!",
            "opusdec",
        ])
        .args(["!", "audioconvert", "!", "audioresample", "!"])
        .arg("audio/x-raw,format=S16LE,rate=48000,channels=2")
        .args(["!", "wavenc", "!", "filesink"])
        .arg(format!("location={}", received.display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("the receiver starts");
    let playback = format!(
        "audioconvert ! audioresample ! opusenc ! rtpopuspay ! udpsink host=127.0.0.1 port={port}"
    );
    let d = Daemon::start(&[
        "--socket",
        sock.to_str().unwrap(),
        "--playback",
        &playback,
        "--no-capture",
    ]);
    let wav = tone_wav(WavFormat::I16, 48000, &[440.0, 660.0], 3.0);
    let out = boot(
        GuestOpts::new("aplay -q -D hw:0,0 tone.wav")
            .socket(&sock)
            .file("tone.wav", wav),
    );
    if out.rc != 0 {
        daemon_fail("the guest could not play", Some(&out), &d.log());
    }
    // The tail still to come when the guest is done: the last period, the encoder's
    // and the jitter buffer's latency.
    std::thread::sleep(Duration::from_millis(600));
    // SAFETY: kill(2) on our own child's pid; -e turns SIGINT into an EOS, which
    // makes wavenc finish the file.
    unsafe { libc::kill(receiver.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    let bytes = std::fs::read(&received).unwrap_or_default();
    let w = analysis::read_wav(&bytes)
        .unwrap_or_else(|e| daemon_fail(&format!("received.wav: {e}"), Some(&out), &d.log()));
    for (c, want) in [(0, 440.0), (1, 660.0)] {
        let x = w.channel(c);
        let Some(seg) = analysis::detect_tone(&x, w.rate, 0.05) else {
            daemon_fail(
                &format!("the receiver heard nothing on channel {c}"),
                Some(&out),
                &d.log(),
            );
        };
        let secs = seg.duration_secs(w.rate);
        let f = analysis::dominant_frequency(&x[seg.start..seg.end], w.rate).unwrap_or(0.0);
        if (f - want).abs() > 2.0 || !(2.9..=3.2).contains(&secs) {
            daemon_fail(
                &format!("channel {c}: {secs:.3} s of {f:.1} Hz received, not 3 s of {want} Hz"),
                Some(&out),
                &d.log(),
            );
        }
    }
}

/// A client of the daemon's control socket: a command line in, JSON lines out.
struct ControlClient {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl ControlClient {
    /// Connects; reads wait at most 20 s, so a line that never comes fails the test.
    fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).expect("the control socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a read timeout");
        let reader = BufReader::new(stream.try_clone().expect("the socket twice"));
        ControlClient { stream, reader }
    }

    /// Sends `line` and returns the answer.
    fn say(&mut self, line: &str) -> serde_json::Value {
        writeln!(self.stream, "{line}").expect("a command sent");
        self.next()
    }

    /// The next JSON line.
    fn next(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("an answer line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }
}

/// The microphone follows the control socket at run time. Denied (`--capture-allowed
/// false`), the guest records silence and the host source stays closed; `audio-input 1`
/// while the guest records opens it at once and the guest hears the tone;
/// `audio-input 0` closes it at once, and the guest hears silence again. Meanwhile
/// `status` answers JSON, a bad command gets an error and the socket goes on serving,
/// and a second client's `subscribe` hears every change.
#[test]
fn daemon_microphone_follows_the_control_socket() {
    init();
    let sock = socket("daemon-control");
    let ctl = sock.with_file_name("control.sock");
    let d = Daemon::discarding_playback(
        &sock,
        &[
            "--capture",
            "audiotestsrc is-live=true freq=1000 volume=0.5",
            "--capture-allowed=false",
            "--control-socket",
            ctl.to_str().unwrap(),
        ],
    );
    // Two clients at once: one subscribed, one giving commands.
    let mut sub = ControlClient::connect(&ctl);
    assert_eq!(sub.say("subscribe")["subscribed"], true);
    let events = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let e = events.clone();
    // The reader thread waits for events as long as the test runs.
    sub.stream.set_read_timeout(None).expect("no read timeout");
    let mut sub_reader = sub.reader;
    std::thread::spawn(move || loop {
        let mut line = String::new();
        match sub_reader.read_line(&mut line) {
            Ok(n) if n > 0 => {
                if let Ok(v) = serde_json::from_str(&line) {
                    e.lock().unwrap().push(v);
                }
            }
            _ => return,
        }
    });
    let mut cmd = ControlClient::connect(&ctl);
    let mut say = |line: &str| cmd.say(line);
    let status = say("status");
    assert_eq!(status["microphone_allowed"], false, "{status}");
    assert_eq!(status["microphone_open"], false, "{status}");
    assert!(say("open the pod bay doors")["error"].is_string());
    assert!(say("audio-input maybe")["error"].is_string());

    let script = "arecord -q -D hw:0,0 -r 48000 -f S16_LE -c 2 -d 6 -t wav /tmp/r.wav & pid=$!\n\
         until grep -q RUNNING /proc/asound/card0/pcm0c/sub0/status 2>/dev/null; do sleep 0.01; done\n\
         echo RECORDING\n\
         wait $pid || exit 1\n\
         vsnd-export /tmp/r.wav r.wav";
    let guest = GuestRun::boot(GuestOpts::new(script).socket(&sock))
        .unwrap_or_else(|e| daemon_fail(&format!("boot: {e}"), None, &d.log()));
    if let Err(e) = guest.wait_for("RECORDING", Duration::from_secs(90)) {
        daemon_fail(&format!("the guest never recorded: {e}"), None, &d.log());
    }
    std::thread::sleep(Duration::from_millis(1500));
    let status = say("status");
    assert_eq!(status["capture"]["state"], "running", "{status}");
    assert_eq!(status["capture"]["format"]["rate"], 48000, "{status}");
    if d.log().contains("opening the host source") {
        daemon_fail("the source opened while denied", None, &d.log());
    }
    assert_eq!(say("audio-input 1")["microphone_allowed"], true);
    if !d.wait_log("capture: opening the host source", Duration::from_secs(1)) {
        daemon_fail("allowing did not open the source at once", None, &d.log());
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(say("status")["microphone_open"], true);
    assert_eq!(say("audio-input 0")["microphone_allowed"], false);
    if !d.wait_log("capture: host source closed", Duration::from_secs(1)) {
        daemon_fail("denying did not close the source at once", None, &d.log());
    }
    let out = guest
        .wait()
        .unwrap_or_else(|e| daemon_fail(&format!("the guest run: {e}"), None, &d.log()));
    if out.rc != 0 {
        daemon_fail("arecord failed", Some(&out), &d.log());
    }
    let log = d.log();
    let closed = log.find("capture: host source closed");
    let stopped = log.find("guest stopped capture");
    if !matches!((closed, stopped), (Some(c), Some(s)) if c < s) {
        daemon_fail(
            "the source was not closed before the guest stopped",
            Some(&out),
            &log,
        );
    }
    // Silence, the tone while allowed, silence.
    let bytes = out.files.get("r.wav").cloned().unwrap_or_default();
    let w = analysis::read_wav(&bytes)
        .unwrap_or_else(|e| daemon_fail(&format!("r.wav: {e}"), Some(&out), &log));
    let x = w.channel(0);
    let segs = vhostsnd_testbed::guest::tone_segments(&x, w.rate, 0.05);
    let secs = |f: usize| f as f64 / f64::from(w.rate);
    let ok = match segs.as_slice() {
        [s] => {
            let f = analysis::dominant_frequency(&x[s.start..s.end], w.rate).unwrap_or(0.0);
            secs(s.start) > 1.0
                && secs(x.len() - s.end) > 0.5
                && s.duration_secs(w.rate) > 1.5
                && (f - 1000.0).abs() < 2.0
        }
        _ => false,
    };
    if !ok {
        let found: Vec<String> = segs
            .iter()
            .map(|s| format!("{:.3}-{:.3} s", secs(s.start), secs(s.end)))
            .collect();
        daemon_fail(
            &format!("the recording is not silence, tone, silence: tone at {found:?}"),
            Some(&out),
            &log,
        );
    }
    // The subscriber heard it all, in order.
    let seen = events.lock().unwrap().clone();
    let pos = |pred: &dyn Fn(&serde_json::Value) -> bool| seen.iter().position(pred);
    let order = [
        pos(&|v| v["event"] == "connected"),
        pos(&|v| v["event"] == "start" && v["direction"] == "capture"),
        pos(&|v| v["event"] == "microphone-allowed" && v["allowed"] == true),
        pos(&|v| v["event"] == "microphone" && v["open"] == true),
        pos(&|v| v["event"] == "microphone-allowed" && v["allowed"] == false),
        pos(&|v| v["event"] == "microphone" && v["open"] == false),
        pos(&|v| v["event"] == "stop" && v["direction"] == "capture"),
    ];
    if order.iter().any(Option::is_none) || !order.windows(2).all(|w| w[0] < w[1]) {
        daemon_fail(&format!("the subscriber heard {seen:?}"), Some(&out), &log);
    }
    drop(d);
}
