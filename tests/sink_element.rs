//! vhostsndsink, with the in-repo frontend as the capturing guest and the harness's
//! test clock as the pipeline clock. Upstream's buffers complete the guest's periods
//! as they fill them; the test clock only moves for the device's stand-by pacer
//! (upstream stalled).

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

fn prepare_capture(g: &mut FakeGuest, h: &mut Harness, p: &PcmParams) {
    assert_eq!(g.set_pcm_params(1, p).unwrap(), S_OK);
    assert_eq!(g.prepare(1).unwrap(), S_OK);
    h.set_src_caps(gstvhostsnd::audio::caps(p).unwrap());
}

/// Nothing was completed to the guest.
fn nothing_completed(g: &mut FakeGuest, what: &str) {
    std::thread::sleep(Duration::from_millis(20));
    assert!(g.try_io(QUEUE_RX).unwrap().is_empty(), "{what}");
}

/// Moves the test clock on by `ms`: the device's stand-by pacer sees upstream stall.
fn stall(h: &Harness, ms: u64) {
    let clock = h.testclock().expect("test clock");
    clock.set_time(clock.time() + gst::ClockTime::from_mseconds(ms));
}

/// What the stand-by pacer waits before the first period gets silence: a period and
/// the wait for a source that opens at START.
fn first_wait_ms(p: &PcmParams) -> u64 {
    p.bytes_to_ns(u64::from(p.period_bytes)) / 1_000_000
        + vhost_user_sound::FIRST_CAPTURE_WAIT_NS / 1_000_000
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
        assert_eq!(g.start(1).unwrap(), S_OK);
        // Each buffer completes the period it fills, without the clock moving.
        for k in 0..12 {
            push_audio(&mut h, tone(&p, k * frames, frames));
            let got = completed(&mut g, &p);
            assert!(
                got == tone(&p, k * frames, frames),
                "format {format} {rate} Hz {channels} ch, period {k}"
            );
        }
    }
}

/// Upstream that never starts, or stalls, gives the guest silence in its format once
/// the stand-by pacer's wait is over, never a stall; audio resumes whole and in order.
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
    // Nothing from upstream: the first period waits, then gets unsigned silence.
    stall(&h, first_wait_ms(&p) - 1);
    nothing_completed(&mut g, "the first period did not wait for upstream");
    stall(&h, 1);
    assert!(silent(&completed(&mut g, &p)));

    // Three periods arrive, in two buffers: whole and in order.
    let audio = tone(&p, 0, 240);
    push_audio(&mut h, audio[..120].to_vec());
    assert_eq!(completed(&mut g, &p), audio[..80]);
    // The second fills two periods: both are completed at once.
    push_audio(&mut h, audio[120..].to_vec());
    let mut two = Vec::new();
    while two.len() < 2 {
        let done = g.wait_io(QUEUE_RX, TIMEOUT).unwrap();
        assert!(!done.is_empty(), "the second buffer's periods");
        two.extend(done.into_iter().map(|c| c.data));
    }
    assert_eq!(two, [&audio[80..160], &audio[160..]]);
    for _ in 0..2 {
        g.submit_rx(1, p.period_bytes).unwrap();
    }
    // Upstream stalls for the grace of a 4-period buffer (2.5 periods): silence.
    stall(&h, 25);
    assert!(silent(&completed(&mut g, &p)));
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
    stall(&h, first_wait_ms(&p));
    let got = completed(&mut g, &p);
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

/// Upstream was producing long before the guest started: the guest's first period
/// holds the audio captured from START on (by the buffers' timestamps on the pipeline
/// clock), not older audio and not silence.
#[test]
fn the_recording_holds_upstream_audio_from_start_on() {
    let socket = socket_path("sink-from-start");
    let mut h = clocked_sink(&socket);
    let mut g = connect(&socket);
    let p = params(formats::FMT_S16, 48000, 2, 480);
    prepare_capture(&mut g, &mut h, &p);
    for _ in 0..4 {
        g.submit_rx(1, p.period_bytes).unwrap();
    }
    let clock = h.testclock().unwrap();
    let base = h
        .element()
        .unwrap()
        .base_time()
        .unwrap_or(gst::ClockTime::ZERO);
    clock.set_time(gst::ClockTime::from_seconds(1));
    assert_eq!(g.start(1).unwrap(), S_OK);
    let started = gst::ClockTime::from_seconds(1) - base;
    clock.set_time(gst::ClockTime::from_mseconds(1050));
    // 2.5 ms buffers (120 frames) from 5 ms before START on.
    let first = (started - gst::ClockTime::from_mseconds(5)).nseconds();
    for k in 0..8u64 {
        let mut b = gst::Buffer::from_mut_slice(tone(&p, k * 120, 120));
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_nseconds(first + k * 2_500_000));
        assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok));
        if k < 5 {
            nothing_completed(&mut g, &format!("a period completed after buffer {k}"));
        }
    }
    // Buffers 0 and 1 are from before START; 2..=5 are the first period.
    assert!(completed(&mut g, &p) == tone(&p, 240, 480));
}
