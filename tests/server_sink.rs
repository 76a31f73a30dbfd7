//! vhostsndsrc straight into `pulsesink` on a real PulseAudio server (the testbed's,
//! headless, a null sink as its default), with a guest from the in-repo frontend:
//! a guest that starts playing after the card idled is heard from its first period,
//! whatever its period.
//!
//! An audio sink takes a buffer of audio as soon as it comes (into its device's
//! buffer, ahead of time) but holds a GAP buffer until the buffer's time plus the
//! whole pipeline latency, device buffer included. The idle card's silence, or the
//! silence before START, left as GAP right before the guest's audio, would hold the
//! streaming thread past the time its first periods had to reach the server: those
//! are lost. The monitor of the null sink is recorded and every period the guest
//! played must be in it, without a dropout.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use vhostsnd_testbed::analysis;
use vhostsnd_testbed::audio_server::{AudioServer, Kind, CHANNELS, RATE, SINK_MONITOR};
use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::formats;
use virtio_snd_wire::{QUEUE_TX, S_OK};

use support::*;

/// How long the guest plays.
const PLAY: Duration = Duration::from_secs(1);
/// How long the card idles first: long enough for the idle silence to settle.
const IDLE: Duration = Duration::from_secs(1);
/// Between the guest's PREPARE and its START, as aplay's are.
const PREPARE_TO_START: Duration = Duration::from_millis(10);

/// The guest: idles, then sets `period_frames`-frame periods, prepares, queues its
/// buffer, starts and keeps it full for [`PLAY`]; returns the periods completed.
fn play_after_idle(g: &mut FakeGuest, period_frames: u32) -> u64 {
    thread::sleep(IDLE);
    let p = params(formats::FMT_S16, 48000, 2, period_frames);
    let frames = u64::from(period_frames);
    let periods = PLAY.as_nanos() as u64 * 48000 / 1_000_000_000 / frames;
    assert_eq!(g.set_pcm_params(0, &p).unwrap(), S_OK);
    assert_eq!(g.prepare(0).unwrap(), S_OK);
    let mut sent = 0;
    while sent < periods.min(4) {
        g.submit_tx(0, &tone(&p, sent * frames, frames)).unwrap();
        sent += 1;
    }
    thread::sleep(PREPARE_TO_START);
    assert_eq!(g.start(0).unwrap(), S_OK);
    let mut done = 0;
    let deadline = Instant::now() + PLAY + Duration::from_secs(5);
    while done < periods && Instant::now() < deadline {
        for c in g.wait_io(QUEUE_TX, Duration::from_millis(200)).unwrap() {
            assert_eq!(c.status(), Some(S_OK));
            done += 1;
            if sent < periods {
                g.submit_tx(0, &tone(&p, sent * frames, frames)).unwrap();
                sent += 1;
            }
        }
    }
    assert_eq!(g.stop(0).unwrap(), S_OK);
    assert_eq!(g.release(0).unwrap(), S_OK);
    done * frames
}

/// Plays once through `vhostsndsrc ! pulsesink` and returns what is wrong.
fn heard_from_the_first_period(server: &AudioServer, period_frames: u32) -> Vec<String> {
    let what = format!("{period_frames}-frame periods");
    let socket = socket_path(&format!("server-sink-{period_frames}"));
    let pipeline = Watched::launch(&format!(
        "vhostsndsrc socket={} ! pulsesink",
        socket.display()
    ));
    let rec = server
        .start_recording_with_latency(SINK_MONITOR, Duration::from_millis(10))
        .expect("the monitor is recorded");
    rec.wait_frames(1, Duration::from_secs(10))
        .expect("the recording starts");
    let mut g = connect(&socket);
    let played = play_after_idle(&mut g, period_frames);
    // What was played has been rendered by then (the pipeline's latency is far less).
    thread::sleep(Duration::from_millis(700));
    let recorded = rec.stop().expect("the recording stops");
    let mut problems = pipeline.errors();
    drop(pipeline);
    drop(g);

    let left = analysis::channel(&analysis::i16_to_f32(&recorded), CHANNELS, 0);
    let Some(seg) = analysis::detect_tone(&left, RATE, 0.05) else {
        problems.push(format!("{what}: no tone in the monitor"));
        return problems;
    };
    let heard = seg.len() as u64;
    // The tone's first and last half cycles may fall under the threshold.
    if heard + 120 < played {
        problems.push(format!(
            "{what}: {:.1} ms of the {:.1} ms played are in the monitor",
            heard as f64 / 48.0,
            played as f64 / 48.0
        ));
    }
    let dropouts = analysis::find_dropouts(&left, RATE, seg);
    if !dropouts.is_empty() {
        problems.push(format!("{what}: dropouts at {dropouts:?}"));
    }
    problems
}

#[test]
fn a_guest_starting_after_idle_is_heard_from_its_first_period() {
    init();
    let server = AudioServer::start(Kind::PulseAudio).unwrap_or_else(|e| panic!("{e}"));
    let _env = server.set_process_env();
    let mut problems = Vec::new();
    // 10 ms, aplay's 62.5 ms and arecord's 125 ms: shorter and longer than the
    // sink's device buffer.
    for period in [480, 3000, 6000] {
        problems.extend(heard_from_the_first_period(&server, period));
    }
    assert!(
        problems.is_empty(),
        "{}\n--- server logs ---\n{}",
        problems.join("\n"),
        server.logs()
    );
}
