//! Checks the headless audio servers of `vhostsnd_testbed::audio_server` with
//! GStreamer's own elements, no vhostsnd involved: a tone played through
//! `pulsesink`/`autoaudiosink` reaches the null sink's monitor, and
//! `pulsesrc`/`autoaudiosrc`/`parecord` hear the tone fed into the default source.
//! Every test runs once per server kind (`pulseaudio::…`, `pipewire::…`).

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gst::prelude::*;
use vhostsnd_testbed::analysis;
use vhostsnd_testbed::audio_server::{
    self, run_with_timeout, AudioServer, Kind, Recording, CHANNELS, RATE, SINK_MONITOR,
};

/// The tone played to the sink; the source's is the server's (440 Hz).
const TONE_HZ: f64 = 1000.0;
/// 100 buffers of 441 frames at 44.1 kHz: one second, resampled to 48 kHz by
/// the server.
const PLAY_TONE: &str = "audiotestsrc num-buffers=100 samplesperbuffer=441 freq=1000 \
    ! audio/x-raw,rate=44100,channels=2 ! audioconvert ! audioresample";
const PLAY_SECS: f64 = 1.0;
/// audiotestsrc's default volume.
const PLAY_AMPLITUDE: f32 = 0.8;
const PLAYED: Tone = Tone {
    freq: TONE_HZ,
    secs: Some(PLAY_SECS),
    amplitude: PLAY_AMPLITUDE,
};
const GST_TIMEOUT: Duration = Duration::from_secs(30);

fn start(kind: Kind) -> AudioServer {
    let server = AudioServer::start(kind).unwrap_or_else(|e| panic!("{e}"));
    let t = server.startup_times();
    eprintln!(
        "{kind}: answering after {:.0} ms, ready after {:.0} ms",
        t.answering.as_secs_f64() * 1e3,
        t.ready.as_secs_f64() * 1e3
    );
    server
}

/// Runs `gst-launch-1.0 -q PIPELINE` against the server, panicking with its
/// output and the server's logs unless it succeeds in time.
fn gst_launch(server: &AudioServer, pipeline: &str) {
    let mut cmd = server.command("gst-launch-1.0");
    cmd.arg("-q").args(pipeline.split_whitespace());
    match run_with_timeout(cmd, GST_TIMEOUT) {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "gst-launch-1.0 {pipeline}: {}\nstdout: {}\nstderr: {}\n{}",
            out.status,
            out.stdout,
            out.stderr,
            server.logs()
        ),
        Err(e) => panic!("gst-launch-1.0 {pipeline}: {e}\n{}", server.logs()),
    }
}

/// Stops `rec` once it holds `extra` more seconds than now, so what was played
/// last has come through.
fn finish(rec: Recording, extra: f64) -> Vec<f32> {
    let want = rec.frames() + (extra * f64::from(RATE)) as usize;
    rec.wait_frames(want, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let samples = rec.stop().unwrap_or_else(|e| panic!("{e}"));
    analysis::i16_to_f32(&samples)
}

/// What a recording should hold.
struct Tone {
    freq: f64,
    /// How long it lasts, when that is known (a capture's tone fills it all).
    secs: Option<f64>,
    amplitude: f32,
}

/// Asserts every channel of `interleaved` holds `tone` once, without gaps.
fn assert_tone(
    what: &str,
    interleaved: &[f32],
    channels: usize,
    rate: u32,
    tone: &Tone,
    logs: &str,
) {
    let Tone {
        freq,
        secs,
        amplitude,
    } = *tone;
    let total = analysis::duration_secs(interleaved.len(), channels, rate);
    for ch in 0..channels {
        let c = analysis::channel(interleaved, channels, ch);
        let ctx = format!("{what}, channel {ch} of {total:.2} s");
        let seg = analysis::detect_tone(&c, rate, 0.05)
            .unwrap_or_else(|| panic!("{ctx}: no tone at all (peak {:.4})\n{logs}", peak(&c)));
        let dur = seg.duration_secs(rate);
        if let Some(secs) = secs {
            assert!(
                (secs * 0.95..=secs + 0.1).contains(&dur),
                "{ctx}: the tone lasts {dur:.3} s, not {secs} s ({seg:?})\n{logs}"
            );
        }
        let tone = &c[seg.start..seg.end];
        let f = analysis::dominant_frequency(tone, rate)
            .unwrap_or_else(|| panic!("{ctx}: no frequency found\n{logs}"));
        assert!(
            (f - freq).abs() < freq * 0.005,
            "{ctx}: the tone is at {f:.1} Hz, not {freq} Hz\n{logs}"
        );
        let on = analysis::goertzel_power(tone, rate, freq);
        let off = analysis::goertzel_power(tone, rate, freq * 1.37);
        assert!(
            on > 100.0 * off,
            "{ctx}: {freq} Hz power {on:.2e} against {off:.2e} beside it\n{logs}"
        );
        let level = analysis::rms(tone);
        let want = amplitude / std::f32::consts::SQRT_2;
        assert!(
            (level - want).abs() < want * 0.1,
            "{ctx}: RMS {level:.3}, not {want:.3} (volume changed on the way?)\n{logs}"
        );
        // The first and last 10 ms are where the detected edges fall.
        let edge = rate as usize / 100;
        if seg.len() > 4 * edge {
            let inner = analysis::Segment {
                start: seg.start + edge,
                end: seg.end - edge,
            };
            let drops = analysis::find_dropouts(&c, rate, inner);
            assert!(drops.is_empty(), "{ctx}: dropouts {drops:?}\n{logs}");
        }
        eprintln!(
            "{ctx}: {dur:.3} s of {f:.2} Hz at RMS {level:.3} from {:.3} s",
            seg.start as f64 / f64::from(rate)
        );
    }
}

/// The tone the server feeds into its default source.
fn source_tone(server: &AudioServer) -> Tone {
    let opts = server.options();
    Tone {
        freq: opts.tone_hz,
        secs: None,
        amplitude: opts.tone_amplitude,
    }
}

fn peak(samples: &[f32]) -> f32 {
    samples.iter().fold(0.0, |m, s| m.max(s.abs()))
}

/// Plays the tone through `sink` (an element, as gst-launch spells it) in a child
/// process, recording the sink's monitor, and checks that the stream showed up
/// in `pactl list sink-inputs` while it played.
fn play_through(kind: Kind, sink: &str) {
    let server = start(kind);
    let rec = server.start_recording().unwrap_or_else(|e| panic!("{e}"));
    rec.wait_frames(1, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    let done = Arc::new(AtomicBool::new(false));
    let seen = thread::scope(|s| {
        let done2 = Arc::clone(&done);
        let server = &server;
        s.spawn(move || {
            // Set even when gst_launch panics, so the poll below ends.
            let _done = SetOnDrop(done2);
            gst_launch(server, &format!("{PLAY_TONE} ! {sink}"));
        });
        let mut last = String::new();
        while !done.load(Ordering::SeqCst) {
            last = server.sink_inputs().unwrap_or_else(|e| e);
            if last.contains("gst-launch-1.0") {
                return Some(last);
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("last sink-inputs:\n{last}");
        None
    });
    let samples = finish(rec, 0.3);
    let seen = seen.unwrap_or_else(|| {
        panic!(
            "gst-launch-1.0's stream never appeared in `pactl list sink-inputs`\n{}",
            server.logs()
        )
    });
    assert_tone(
        &format!("{kind}: {sink} -> {SINK_MONITOR}"),
        &samples,
        CHANNELS,
        RATE,
        &PLAYED,
        &server.logs(),
    );
    assert!(seen.contains("Sink Input #"), "{seen}");
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn pulsesink_tone_reaches_sink_monitor(kind: Kind) {
    play_through(kind, "pulsesink");
}

fn autoaudiosink_tone_reaches_sink_monitor(kind: Kind) {
    play_through(kind, "autoaudiosink");
}

fn wav_path(server: &AudioServer, name: &str) -> PathBuf {
    server.dir().join(name)
}

/// Captures through `src ! … ! wavenc` in a child process and checks the file
/// holds the server's tone.
fn capture_through(kind: Kind, src: &str) {
    let server = start(kind);
    let wav = wav_path(&server, "capture.wav");
    gst_launch(
        &server,
        &format!(
            "{src} ! identity eos-after=100 ! audioconvert ! audioresample \
             ! audio/x-raw,format=S16LE,rate=48000,channels=2 ! wavenc ! filesink location={}",
            wav.display()
        ),
    );
    let bytes = fs::read(&wav).unwrap_or_else(|e| panic!("{}: {e}", wav.display()));
    let wav = analysis::read_wav(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wav.duration_secs() >= 0.5,
        "{kind}: {src} captured only {:.3} s",
        wav.duration_secs()
    );
    assert_tone(
        &format!("{kind}: {src}"),
        &wav.samples,
        wav.channels,
        wav.rate,
        &source_tone(&server),
        &server.logs(),
    );
}

fn pulsesrc_hears_the_source_tone(kind: Kind) {
    capture_through(kind, "pulsesrc");
}

fn autoaudiosrc_hears_the_source_tone(kind: Kind) {
    capture_through(kind, "autoaudiosrc");
}

fn parecord_hears_the_source_tone(kind: Kind) {
    let server = start(kind);
    let samples = server.record_source(1.0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(samples.len(), RATE as usize * CHANNELS, "exactly 1 s");
    let samples = analysis::i16_to_f32(&samples);
    assert_tone(
        &format!("{kind}: parecord of the default source"),
        &samples,
        CHANNELS,
        RATE,
        &source_tone(&server),
        &server.logs(),
    );
}

/// Runs `desc` in this process until EOS.
fn run_in_process(server: &AudioServer, desc: &str) {
    vhostsnd_testbed::init();
    let pipeline = gst::parse::launch(desc).unwrap_or_else(|e| panic!("{desc}: {e}"));
    let bus = pipeline.bus().expect("a pipeline has a bus");
    pipeline
        .set_state(gst::State::Playing)
        .unwrap_or_else(|e| panic!("{desc}: {e}\n{}", server.logs()));
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(GST_TIMEOUT.as_secs()),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        Some(gst::MessageView::Error(e)) => {
            panic!("{desc}: {} ({:?})\n{}", e.error(), e.debug(), server.logs())
        }
        _ => panic!("{desc}: no EOS within {GST_TIMEOUT:?}\n{}", server.logs()),
    }
}

/// The two ways documented for pipelines in this process: pulsesink's `server`
/// property, and the process environment (under its guard) for autoaudiosink.
fn in_process_pipelines_reach_the_server(kind: Kind) {
    let server = start(kind);
    let cases = [
        format!("pulsesink server={}", server.pulse_server()),
        "autoaudiosink".to_string(),
    ];
    for sink in cases {
        let rec = server.start_recording().unwrap_or_else(|e| panic!("{e}"));
        rec.wait_frames(1, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        let desc = format!("{PLAY_TONE} ! {sink}");
        if sink == "autoaudiosink" {
            let _env = server.set_process_env();
            run_in_process(&server, &desc);
        } else {
            run_in_process(&server, &desc);
        }
        let samples = finish(rec, 0.3);
        assert_tone(
            &format!("{kind}: in-process {sink}"),
            &samples,
            CHANNELS,
            RATE,
            &PLAYED,
            &server.logs(),
        );
    }
}

/// Live processes of a process group, with their names.
fn live_members(pgid: i32) -> Vec<String> {
    audio_server::live_group_members(pgid)
        .into_iter()
        .map(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} {}", comm.trim())
        })
        .collect()
}

fn drop_stops_everything(kind: Kind) {
    let server = start(kind);
    let (pgid, dir) = (server.pgid(), server.dir().to_path_buf());
    let members = live_members(pgid);
    eprintln!("{kind}: group {pgid}: {members:?}");
    assert!(members.len() >= 3, "server, feeder, watchdog: {members:?}");
    let t = Instant::now();
    drop(server);
    eprintln!(
        "{kind}: stopped in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let left = live_members(pgid);
    assert!(left.is_empty(), "{kind}: still running: {left:?}");
    assert!(!dir.exists(), "{} is still there", dir.display());
}

macro_rules! per_kind {
    ($($test:ident),* $(,)?) => {
        mod pulseaudio {
            $(#[test]
            fn $test() {
                super::$test(super::Kind::PulseAudio);
            })*
        }
        mod pipewire {
            $(#[test]
            fn $test() {
                super::$test(super::Kind::PipeWire);
            })*
        }
    };
}

per_kind!(
    pulsesink_tone_reaches_sink_monitor,
    autoaudiosink_tone_reaches_sink_monitor,
    pulsesrc_hears_the_source_tone,
    autoaudiosrc_hears_the_source_tone,
    parecord_hears_the_source_tone,
    in_process_pipelines_reach_the_server,
    drop_stops_everything,
);
