//! vhostsndsink, with the in-repo frontend as the capturing guest and the harness's
//! test clock as the pipeline clock the device paces capture by.

mod support;

use std::time::Duration;

use gst::prelude::*;
use gst_check::Harness;
use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::formats::{self, PcmParams};
use virtio_snd_wire::{QUEUE_RX, S_OK};

use support::*;

/// A sink harness whose device follows the harness's test clock.
fn clocked_sink(socket: &std::path::Path) -> Harness {
    let mut h = sink_harness(socket);
    h.use_testclock();
    // The device takes the pipeline clock on PAUSED→PLAYING.
    h.element().unwrap().set_state(gst::State::Paused).unwrap();
    h.play();
    h
}

fn push_audio(h: &mut Harness, data: Vec<u8>) {
    assert_eq!(
        h.push(gst::Buffer::from_mut_slice(data)),
        Ok(gst::FlowSuccess::Ok)
    );
}

fn prepare_capture(g: &mut FakeGuest, h: &mut Harness, p: &PcmParams) {
    assert_eq!(g.set_pcm_params(1, p).unwrap(), S_OK);
    assert_eq!(g.prepare(1).unwrap(), S_OK);
    h.set_src_caps(gstvhostsnd::audio::caps(p).unwrap());
}

/// The next capture period the guest receives, after exactly one crank of the clock.
fn next_period(h: &mut Harness, g: &mut FakeGuest) -> Vec<u8> {
    // Nothing completes while the clock stands still.
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        g.try_io(QUEUE_RX).unwrap().is_empty(),
        "completed without the clock"
    );
    h.crank_single_clock_wait().unwrap();
    let mut done = g.wait_io(QUEUE_RX, TIMEOUT).unwrap();
    assert_eq!(done.len(), 1);
    let c = done.remove(0);
    assert_eq!(c.status(), Some(S_OK));
    c.data
}

#[test]
fn pipeline_tone_reaches_the_guest_sample_exact() {
    let cases = [
        (formats::FMT_S16, 48000, 2),
        (formats::FMT_S16, 44100, 1),
        (formats::FMT_S32, 44100, 2),
        (formats::FMT_S32, 48000, 1),
        (formats::FMT_FLOAT, 48000, 1),
        (formats::FMT_FLOAT, 44100, 2),
    ];
    for (format, rate, channels) in cases {
        let socket = socket_path(&format!("sink-exact-{format}-{rate}-{channels}"));
        let mut h = clocked_sink(&socket);
        let mut g = connect(&socket);
        let frames = u64::from(rate / 100);
        let p = params(format, rate, channels, rate / 100);
        prepare_capture(&mut g, &mut h, &p);
        // As ALSA does: the whole buffer is queued, then the stream starts.
        for _ in 0..4 {
            g.submit_rx(1, p.period_bytes).unwrap();
        }
        // Three periods: exactly the cushion (a period, upstream's chunk and 10 ms).
        for k in 0..3 {
            push_audio(&mut h, tone(&p, k * frames, frames));
        }
        assert_eq!(g.start(1).unwrap(), S_OK);
        for k in 0..12 {
            let got = next_period(&mut h, &mut g);
            assert!(
                got == tone(&p, k * frames, frames),
                "format {format} {rate} Hz {channels} ch, period {k}"
            );
            g.submit_rx(1, p.period_bytes).unwrap();
            push_audio(&mut h, tone(&p, (k + 3) * frames, frames));
        }
    }
}

/// Upstream that under-runs gives the guest silence, never a stutter: audio resumes
/// whole once a cushion is queued again.
#[test]
fn upstream_underrun_is_silence_in_the_guests_format() {
    let socket = socket_path("sink-underrun");
    let mut h = clocked_sink(&socket);
    let mut g = connect(&socket);
    let p = params(formats::FMT_U8, 8000, 1, 80);
    let silent = |d: &[u8]| d.iter().all(|b| *b == 0x80);
    prepare_capture(&mut g, &mut h, &p);
    for _ in 0..4 {
        g.submit_rx(1, p.period_bytes).unwrap();
    }
    assert_eq!(g.start(1).unwrap(), S_OK);
    // Nothing from upstream: unsigned silence.
    assert!(silent(&next_period(&mut h, &mut g)));
    g.submit_rx(1, p.period_bytes).unwrap();

    // Three periods arrive: they are played whole and in order.
    let audio = tone(&p, 0, 240);
    for chunk in audio.chunks(80) {
        push_audio(&mut h, chunk.to_vec());
    }
    for k in 0..3 {
        assert_eq!(next_period(&mut h, &mut g), audio[k * 80..(k + 1) * 80]);
        g.submit_rx(1, p.period_bytes).unwrap();
    }
    // Upstream stops: silence again; half a period is held back, not played as a
    // half-filled period.
    assert!(silent(&next_period(&mut h, &mut g)));
    g.submit_rx(1, p.period_bytes).unwrap();
    push_audio(&mut h, tone(&p, 240, 40));
    assert!(silent(&next_period(&mut h, &mut g)));
}

#[test]
fn never_blocks_upstream_without_a_capturing_guest() {
    let socket = socket_path("sink-no-guest");
    let mut h = sink_harness(&socket);
    let p = formats::DEFAULT_PARAMS;
    h.set_src_caps(gstvhostsnd::audio::caps(&p).unwrap());
    // No guest at all.
    for _ in 0..200 {
        push_audio(&mut h, vec![0; 1920]);
    }
    // A guest that set the stream up but does not capture.
    let mut g = connect(&socket);
    assert_eq!(g.set_pcm_params(1, &p).unwrap(), S_OK);
    for _ in 0..200 {
        push_audio(&mut h, vec![0; 1920]);
    }
    // Its buffers wait for START instead of filling with stale audio.
    assert_eq!(g.prepare(1).unwrap(), S_OK);
    g.submit_rx(1, p.period_bytes).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(g.try_io(QUEUE_RX).unwrap().is_empty());
}

#[test]
fn caps_follow_the_guest_and_upstream_is_asked_to_renegotiate() {
    let socket = socket_path("sink-caps");
    let mut h = clocked_sink(&socket);
    let bus = watch_bus(&h.element().unwrap());
    let peer_caps = |h: &Harness| {
        let caps = h.srcpad().unwrap().peer_query_caps(None);
        gst_audio::AudioInfo::from_caps(&caps).unwrap()
    };
    let before = peer_caps(&h);
    assert_eq!(before.format(), gst_audio::AudioFormat::S16le);
    assert_eq!((before.rate(), before.channels()), (48000, 2));

    let mut g = connect(&socket);
    h.set_src_caps(gstvhostsnd::audio::caps(&formats::DEFAULT_PARAMS).unwrap());
    while h.try_pull_upstream_event().is_some() {}
    let p = params(formats::FMT_FLOAT, 44100, 1, 441);
    assert_eq!(g.set_pcm_params(1, &p).unwrap(), S_OK);
    let after = peer_caps(&h);
    assert_eq!(after.format(), gst_audio::AudioFormat::F32le);
    assert_eq!((after.rate(), after.channels()), (44100, 1));
    let ev = h.pull_upstream_event().unwrap();
    assert_eq!(ev.type_(), gst::EventType::Reconfigure);

    // Audio still in the old format is not passed off as the new one.
    assert_eq!(g.prepare(1).unwrap(), S_OK);
    g.submit_rx(1, p.period_bytes).unwrap();
    assert_eq!(g.start(1).unwrap(), S_OK);
    push_audio(&mut h, vec![0x55; 1764]);
    let got = next_period(&mut h, &mut g);
    assert!(got.iter().all(|b| *b == 0));

    let start = wait_message(&bus, |s| {
        s.name() == "vhostsnd-stream" && s.get::<&str>("event").ok() == Some("start")
    });
    assert_eq!(start.get::<&str>("direction").unwrap(), "capture");
    assert_eq!(start.get::<u32>("stream").unwrap(), 1);
    assert_eq!(start.get::<&str>("format").unwrap(), "F32LE");
    assert_eq!(g.stop(1).unwrap(), S_OK);
    wait_message(&bus, |s| s.get::<&str>("event").ok() == Some("stop"));
    assert_eq!(g.release(1).unwrap(), S_OK);
    wait_message(&bus, |s| s.get::<&str>("event").ok() == Some("release"));
}
