//! vhostsndsrc, driven by the in-repo frontend playing QEMU and the guest driver.

mod support;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;
use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::formats::{self, PcmParams};
use virtio_snd_wire::{QUEUE_TX, S_BAD_MSG, S_OK};

use support::*;

/// `follow`: `follow-guest-format`, so that the guest's samples come out unchanged.
fn src_harness(socket: &std::path::Path, live: bool, follow: bool) -> Harness {
    init();
    let mut h = Harness::new("vhostsndsrc");
    let el = h.element().expect("harnessed element");
    el.set_property("socket", socket.to_str().expect("utf-8 path"));
    el.set_property("is-live", live);
    el.set_property("follow-guest-format", follow);
    h.play();
    h
}

/// A live vhostsndsrc on the harness's test clock, PLAYING, and a guest connected.
fn testclock_src(name: &str) -> (Harness, FakeGuest) {
    let socket = socket_path(name);
    init();
    let mut h = Harness::new("vhostsndsrc");
    h.use_testclock();
    h.element()
        .unwrap()
        .set_property("socket", socket.to_str().unwrap());
    h.play();
    let g = connect(&socket);
    (h, g)
}

fn start_playback(g: &mut FakeGuest, p: &PcmParams) {
    assert_eq!(g.set_pcm_params(0, p).unwrap(), S_OK);
    assert_eq!(g.prepare(0).unwrap(), S_OK);
}

/// The guest starts playing `p` with two periods queued: the first comes out of a
/// non-live source unchanged (the second is pulled by the caller, if at all).
fn first_period_unchanged(h: &mut Harness, g: &mut FakeGuest, p: &PcmParams) {
    let frames = u64::from(p.period_bytes / p.frame_bytes());
    start_playback(g, p);
    g.submit_tx(0, &tone(p, 0, frames)).unwrap();
    g.submit_tx(0, &tone(p, frames, frames)).unwrap();
    assert_eq!(g.start(0).unwrap(), S_OK);
    let first = h.pull().expect("the guest's first period");
    assert!(*first.map_readable().unwrap() == tone(p, 0, frames));
}

/// Plays `periods` periods of a tone through a non-live source and returns what came
/// out, after checking the caps carry the guest's format.
fn play_offline(
    h: &mut Harness,
    g: &mut FakeGuest,
    p: &PcmParams,
    periods: u64,
    first: u64,
) -> Vec<u8> {
    let frames = u64::from(p.period_bytes / p.frame_bytes());
    start_playback(g, p);
    // Pre-fill as ALSA does, then keep the queue topped up as periods complete.
    let mut sent = 0;
    while sent < periods.min(4) {
        g.submit_tx(0, &tone(p, first + sent * frames, frames))
            .unwrap();
        sent += 1;
    }
    assert_eq!(g.start(0).unwrap(), S_OK);
    let mut out = Vec::new();
    let want = (periods * frames * u64::from(p.frame_bytes())) as usize;
    while out.len() < want {
        let buf = h.pull().expect("a buffer from vhostsndsrc");
        assert!(!buf.flags().contains(gst::BufferFlags::GAP));
        out.extend_from_slice(&buf.map_readable().unwrap());
        for c in g.try_io(QUEUE_TX).unwrap() {
            assert_eq!(c.status(), Some(S_OK));
            if sent < periods {
                g.submit_tx(0, &tone(p, first + sent * frames, frames))
                    .unwrap();
                sent += 1;
            }
        }
    }
    let caps = h
        .sinkpad()
        .unwrap()
        .current_caps()
        .expect("negotiated caps");
    let info = gst_audio::AudioInfo::from_caps(&caps).unwrap();
    assert_eq!(info.rate(), p.rate_hz(), "{caps}");
    assert_eq!(info.channels(), u32::from(p.channels), "{caps}");
    assert_eq!(
        Some(info.format()),
        gstvhostsnd::audio::gst_format(p.format),
        "{caps}"
    );
    out
}

#[test]
fn guest_tone_comes_out_sample_exact() {
    let cases = [
        (formats::FMT_S16, 48000, 2),
        (formats::FMT_S16, 44100, 1),
        (formats::FMT_S32, 44100, 2),
        (formats::FMT_S32, 48000, 1),
        (formats::FMT_FLOAT, 48000, 2),
        (formats::FMT_FLOAT, 44100, 1),
        (formats::FMT_U8, 8000, 1),
    ];
    for (format, rate, channels) in cases {
        let socket = socket_path(&format!("src-exact-{format}-{rate}-{channels}"));
        let mut h = src_harness(&socket, false, true);
        let mut g = connect(&socket);
        let p = params(format, rate, channels, rate / 100);
        let out = play_offline(&mut h, &mut g, &p, 30, 0);
        let expected = tone(&p, 0, 30 * u64::from(rate / 100));
        assert!(
            out == expected,
            "format {format} {rate} Hz {channels} ch differs"
        );
    }
}

#[test]
fn renegotiates_when_the_guest_changes_parameters() {
    let socket = socket_path("src-renegotiate");
    let mut h = src_harness(&socket, false, true);
    let bus = watch_bus(&h.element().unwrap());
    let mut g = connect(&socket);

    let first = params(formats::FMT_S16, 48000, 2, 480);
    let out = play_offline(&mut h, &mut g, &first, 5, 0);
    assert!(out == tone(&first, 0, 5 * 480));
    assert_eq!(g.stop(0).unwrap(), S_OK);
    assert_eq!(g.release(0).unwrap(), S_OK);

    let second = params(formats::FMT_FLOAT, 44100, 1, 441);
    let out = play_offline(&mut h, &mut g, &second, 5, 0);
    assert!(out == tone(&second, 0, 5 * 441));

    let msg = wait_message(&bus, |s| {
        s.name() == "vhostsnd-stream"
            && s.get::<&str>("event").ok() == Some("set-params")
            && s.get::<&str>("format").ok() == Some("F32LE")
    });
    assert_eq!(msg.get::<i32>("rate").unwrap(), 44100);
    assert_eq!(msg.get::<i32>("channels").unwrap(), 1);
    assert_eq!(msg.get::<&str>("direction").unwrap(), "playback");
    assert_eq!(msg.get::<u32>("stream").unwrap(), 0);
}

/// By default the output keeps the format it first negotiated (the sink never
/// reopens), and a guest that plays another format is converted to it: same tone, same
/// duration, full level on every output channel.
#[test]
fn a_guest_format_change_is_converted_to_the_output_format() {
    let socket = socket_path("src-convert");
    let mut h = src_harness(&socket, false, false);
    let mut g = connect(&socket);
    let stereo = params(formats::FMT_S16, 48000, 2, 480);
    first_period_unchanged(&mut h, &mut g, &stereo);
    let negotiated = h.sinkpad().unwrap().current_caps().unwrap();
    let _ = h.pull().expect("the guest's second period");
    assert_eq!(g.stop(0).unwrap(), S_OK);
    assert_eq!(g.release(0).unwrap(), S_OK);

    // 1 s of 440 Hz, mono, F32 at 44.1 kHz, in 10 ms periods.
    let mono = params(formats::FMT_FLOAT, 44100, 1, 441);
    start_playback(&mut g, &mono);
    let mut sent = 0;
    while sent < 4 {
        g.submit_tx(0, &tone(&mono, sent * 441, 441)).unwrap();
        sent += 1;
    }
    assert_eq!(g.start(0).unwrap(), S_OK);
    let mut out = Vec::new();
    // All but the resampler's delay (under 1 ms).
    while out.len() < 47_900 * 4 {
        let buf = h.pull().expect("a converted period");
        assert!(!buf.flags().contains(gst::BufferFlags::GAP));
        out.extend_from_slice(&buf.map_readable().unwrap());
        for _ in g.try_io(QUEUE_TX).unwrap() {
            if sent < 100 {
                g.submit_tx(0, &tone(&mono, sent * 441, 441)).unwrap();
                sent += 1;
            }
        }
    }
    assert_eq!(
        h.sinkpad().unwrap().current_caps().unwrap(),
        negotiated,
        "the output renegotiated"
    );
    let samples: Vec<i16> = out
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let x = vhostsnd_testbed::analysis::i16_to_f32(&samples);
    let frames = x.len() / 2;
    assert!(
        (47_900..=48_000).contains(&frames),
        "1 s at 44.1 kHz came out as {frames} frames at 48 kHz"
    );
    for ch in vhostsnd_testbed::analysis::deinterleave(&x, 2) {
        let steady = &ch[1000..frames - 1000];
        let f = vhostsnd_testbed::analysis::dominant_frequency(steady, 48000).unwrap();
        assert!((f - 440.0).abs() < 2.0, "{f} Hz");
        let rms = vhostsnd_testbed::analysis::rms(steady);
        // 0.5 full scale: 0.354 RMS.
        assert!((rms - 0.354).abs() < 0.01, "RMS {rms}");
    }
}

/// Downstream that lists mono first (opusenc does) still gets the guest's stereo:
/// among what downstream takes, the output prefers the guest's format.
#[test]
fn the_guests_format_is_preferred_among_what_downstream_lists() {
    let socket = socket_path("src-prefers");
    init();
    let mut h = Harness::new("vhostsndsrc");
    let el = h.element().unwrap();
    el.set_property("socket", socket.to_str().unwrap());
    el.set_property("is-live", false);
    h.set_sink_caps(
        "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=1; \
         audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2,\
         channel-mask=(bitmask)0x3"
            .parse()
            .unwrap(),
    );
    h.play();
    let mut g = connect(&socket);
    let p = params(formats::FMT_S16, 48000, 2, 480);
    first_period_unchanged(&mut h, &mut g, &p);
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let info = gst_audio::AudioInfo::from_caps(&caps).unwrap();
    assert_eq!(info.channels(), 2, "{caps}");
}

/// Offline, every queued period but the guest's newest completes at once, in one
/// buffer and with one interrupt; the newest waits for the guest to queue another (or,
/// at the end of a stream, for a period of real time), so that a Linux guest never
/// sees its position move a whole buffer between two reads.
#[test]
fn offline_completes_all_but_the_newest_period_at_once() {
    let socket = socket_path("src-offline-batch");
    let mut h = src_harness(&socket, false, true);
    let mut g = connect(&socket);
    let p = params(formats::FMT_S16, 48000, 2, 480);
    let period = |k: u64| tone(&p, k * 480, 480);
    start_playback(&mut g, &p);
    for k in 0..4 {
        g.submit_tx(0, &period(k)).unwrap();
    }
    assert_eq!(g.start(0).unwrap(), S_OK);

    let buf = h.pull().expect("the first three periods");
    assert!(*buf.map_readable().unwrap() == [period(0), period(1), period(2)].concat());
    assert_eq!(
        g.wait_io(QUEUE_TX, Duration::from_secs(5)).unwrap().len(),
        3
    );

    let queued = Instant::now();
    g.submit_tx(0, &period(4)).unwrap();
    let buf = h.pull().expect("the fourth period, once a fifth is queued");
    assert!(*buf.map_readable().unwrap() == period(3));
    assert_eq!(
        g.wait_io(QUEUE_TX, Duration::from_secs(5)).unwrap().len(),
        1
    );

    let buf = h.pull().expect("the last period");
    assert!(*buf.map_readable().unwrap() == period(4));
    assert!(
        queued.elapsed() >= Duration::from_millis(10),
        "the guest's newest period completed before a period of real time passed"
    );
    assert_eq!(
        g.wait_io(QUEUE_TX, Duration::from_secs(5)).unwrap().len(),
        1
    );
}

/// The guest's first period is completed one period after its START, not wherever in
/// the element's current tick START fell: the tick is cut short at START.
#[test]
fn a_start_mid_tick_is_completed_a_period_later() {
    let (mut h, mut g) = testclock_src("src-start-mid-tick");
    let p = params(formats::FMT_S16, 48000, 2, 4800);
    let period = gst::ClockTime::from_mseconds(100);
    start_playback(&mut g, &p);
    for k in 0..2 {
        g.submit_tx(0, &tone(&p, k * 4800, 4800)).unwrap();
    }
    // A whole tick of the guest's period, prepared but not started: silence, and
    // not GAP, as the guest's audio may follow at any tick.
    let clock = h.testclock().unwrap();
    h.crank_single_clock_wait().unwrap();
    let mut buf = h.pull().unwrap();
    while buf.duration() != Some(period) {
        h.crank_single_clock_wait().unwrap();
        buf = h.pull().unwrap();
    }
    assert!(!buf.flags().contains(gst::BufferFlags::GAP));
    assert!(buf.map_readable().unwrap().iter().all(|b| *b == 0));
    let tick = clock.time();

    // START 40 ms into the next tick: silence up to START closes it.
    clock.set_time(tick + gst::ClockTime::from_mseconds(40));
    assert_eq!(g.start(0).unwrap(), S_OK);
    let short = h.pull().unwrap();
    assert!(!short.flags().contains(gst::BufferFlags::GAP));
    assert!(short.map_readable().unwrap().iter().all(|b| *b == 0));
    assert_eq!(short.duration(), Some(gst::ClockTime::from_mseconds(40)));
    assert!(g.try_io(QUEUE_TX).unwrap().is_empty(), "completed at START");

    // The first period ends a whole period after START.
    h.crank_single_clock_wait().unwrap();
    assert_eq!(
        clock.time(),
        tick + gst::ClockTime::from_mseconds(40) + period
    );
    let first = h.pull().unwrap();
    assert!(!first.flags().contains(gst::BufferFlags::GAP));
    assert_eq!(first.duration(), Some(period));
    assert!(*first.map_readable().unwrap() == *tone(&p, 0, 4800));
    assert_eq!(g.wait_io(QUEUE_TX, TIMEOUT).unwrap().len(), 1);
}

/// The test clock is the guest's clock: a period completes when, and only when, the
/// pipeline clock reaches its end.
#[test]
fn live_source_paces_the_guest_by_the_pipeline_clock() {
    let (mut h, mut g) = testclock_src("src-pacing");
    let p = params(formats::FMT_S16, 48000, 2, 480);
    let period = gst::ClockTime::from_mseconds(10);
    start_playback(&mut g, &p);
    for k in 0..4 {
        g.submit_tx(0, &tone(&p, k * 480, 480)).unwrap();
    }
    assert_eq!(g.start(0).unwrap(), S_OK);
    assert_eq!(h.query_latency(), Some(period));

    let clock = h.testclock().unwrap();
    let t0 = clock.time();
    let mut completed = 0;
    for k in 0..8u64 {
        // Nothing is consumed while the clock stands still.
        std::thread::sleep(Duration::from_millis(20));
        completed += g.try_io(QUEUE_TX).unwrap().len() as u64;
        assert_eq!(completed, k.min(4), "completions before crank {k}");

        h.crank_single_clock_wait().unwrap();
        let buf = h.pull().unwrap();
        assert_eq!(clock.time(), t0 + period * (k + 1));
        assert_eq!(buf.duration(), Some(period));
        if k < 4 {
            assert!(!buf.flags().contains(gst::BufferFlags::GAP));
            assert!(*buf.map_readable().unwrap() == *tone(&p, k * 480, 480));
            let done = g.wait_io(QUEUE_TX, TIMEOUT).unwrap();
            assert_eq!(done.len(), 1);
            completed += 1;
        } else {
            // The guest under-ran: silence keeps downstream running, as audio (not
            // GAP: the guest's next period may come at any tick).
            assert!(!buf.flags().contains(gst::BufferFlags::GAP));
            assert!(buf.map_readable().unwrap().iter().all(|b| *b == 0));
        }
        if k > 0 {
            assert_eq!(buf.pts(), Some(t0 + period * k));
        }
    }

    // A stopped guest is silence too, and its queued periods wait for it.
    g.submit_tx(0, &tone(&p, 0, 480)).unwrap();
    assert_eq!(g.stop(0).unwrap(), S_OK);
    h.crank_single_clock_wait().unwrap();
    let stopped = h.pull().unwrap();
    assert!(!stopped.flags().contains(gst::BufferFlags::GAP));
    assert!(stopped.map_readable().unwrap().iter().all(|b| *b == 0));
    assert!(g.try_io(QUEUE_TX).unwrap().is_empty());
    assert_eq!(g.start(0).unwrap(), S_OK);
    h.crank_single_clock_wait().unwrap();
    let resumed = h.pull().unwrap();
    assert!(!resumed.flags().contains(gst::BufferFlags::GAP));
    assert!(*resumed.map_readable().unwrap() == *tone(&p, 0, 480));
    assert_eq!(g.wait_io(QUEUE_TX, TIMEOUT).unwrap().len(), 1);

    // A released stream is nothing to play: silence flagged GAP.
    assert_eq!(g.stop(0).unwrap(), S_OK);
    assert_eq!(g.release(0).unwrap(), S_OK);
    h.crank_single_clock_wait().unwrap();
    assert!(h.pull().unwrap().flags().contains(gst::BufferFlags::GAP));
}

/// While the guest has no stream set up the output is GAP, which an audio sink holds
/// until its time plus the whole pipeline latency: the idle tick the guest's
/// SET_PARAMS cuts short is skipped rather than closed with more GAP, and the output
/// goes on, a DISCONT, from then.
#[test]
fn the_idle_tick_cut_short_by_set_params_is_skipped() {
    let (mut h, mut g) = testclock_src("src-idle-skip");
    let clock = h.testclock().unwrap();
    let mut idle = Vec::new();
    for _ in 0..3 {
        h.crank_single_clock_wait().unwrap();
        idle.push(h.pull().unwrap());
    }
    for b in &idle {
        assert!(b.flags().contains(gst::BufferFlags::GAP), "idle: {b:?}");
    }
    let last = idle.last().unwrap();
    let end = last.pts().unwrap() + last.duration().unwrap();

    // SET_PARAMS 4 ms into the next idle tick.
    clock.set_time(clock.time() + gst::ClockTime::from_mseconds(4));
    let p = params(formats::FMT_S16, 48000, 2, 960);
    start_playback(&mut g, &p);
    h.crank_single_clock_wait().unwrap();
    let next = h.pull().unwrap();
    assert_eq!(next.pts(), Some(end + gst::ClockTime::from_mseconds(4)));
    assert_eq!(next.duration(), Some(gst::ClockTime::from_mseconds(20)));
    assert!(next.flags().contains(gst::BufferFlags::DISCONT));
    assert!(!next.flags().contains(gst::BufferFlags::GAP));
    assert!(next.map_readable().unwrap().iter().all(|b| *b == 0));
    h.crank_single_clock_wait().unwrap();
    let after = h.pull().unwrap();
    assert_eq!(after.pts(), Some(end + gst::ClockTime::from_mseconds(24)));
    assert!(!after.flags().contains(gst::BufferFlags::DISCONT));
}

#[test]
fn serves_the_next_guest_after_a_disconnect() {
    let socket = socket_path("src-reconnect");
    let mut h = src_harness(&socket, false, true);
    let bus = watch_bus(&h.element().unwrap());
    let p = params(formats::FMT_S16, 48000, 2, 480);
    for round in 0..3u64 {
        let mut g = connect(&socket);
        wait_message(&bus, |s| {
            s.name() == "vhostsnd-connection" && s.get::<bool>("connected") == Ok(true)
        });
        let out = play_offline(&mut h, &mut g, &p, 4, round * 1000);
        assert!(out == tone(&p, round * 1000, 4 * 480), "round {round}");
        // Gone mid-stream, with a period still queued.
        assert_eq!(g.stop(0).unwrap(), S_OK);
        g.submit_tx(0, &tone(&p, 0, 480)).unwrap();
        g.disconnect();
        wait_message(&bus, |s| {
            s.name() == "vhostsnd-connection" && s.get::<bool>("connected") == Ok(false)
        });
    }
    assert!(bus.pop_filtered(&[gst::MessageType::Error]).is_none());
}

#[test]
fn null_closes_the_socket_and_playing_serves_it_again() {
    let socket = socket_path("src-state-cycle");
    let mut h = src_harness(&socket, false, true);
    let p = params(formats::FMT_S16, 48000, 2, 480);
    let mut g = connect(&socket);
    play_offline(&mut h, &mut g, &p, 2, 0);

    let el = h.element().unwrap();
    el.set_state(gst::State::Null).unwrap();
    assert!(!socket.exists(), "the socket file is removed in NULL");
    // The guest's connection is gone with it.
    assert!(g.pcm_info(0, 1).is_err());

    h.play();
    assert!(socket.exists());
    let mut g = connect(&socket);
    let out = play_offline(&mut h, &mut g, &p, 3, 7);
    assert!(out == tone(&p, 7, 3 * 480));
}

fn ready_error(socket: Option<&str>) -> (bool, Option<gst::Message>) {
    init();
    let el = gst::ElementFactory::make("vhostsndsrc").build().unwrap();
    let bus = watch_bus(&el);
    if let Some(s) = socket {
        el.set_property("socket", s);
    }
    let ok = el.set_state(gst::State::Ready).is_ok();
    let msg = bus.pop_filtered(&[gst::MessageType::Error]);
    let _ = el.set_state(gst::State::Null);
    (ok, msg)
}

fn error_text(msg: &gst::Message) -> String {
    match msg.view() {
        gst::MessageView::Error(e) => e.error().to_string(),
        _ => String::new(),
    }
}

#[test]
fn socket_problems_are_clear_errors() {
    // No socket set.
    let (ok, msg) = ready_error(None);
    assert!(!ok);
    assert!(error_text(&msg.unwrap()).contains("socket"));

    // A path that is not a socket is left alone.
    let file = socket_path("src-not-a-socket");
    std::fs::write(&file, b"precious").unwrap();
    let (ok, msg) = ready_error(file.to_str());
    assert!(!ok);
    assert!(error_text(&msg.unwrap()).contains("not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    // A socket another live process serves.
    let busy = socket_path("src-busy");
    let _other = UnixListener::bind(&busy).unwrap();
    let (ok, msg) = ready_error(busy.to_str());
    assert!(!ok);
    assert!(error_text(&msg.unwrap()).contains("already served"));

    // A directory that does not exist.
    let (ok, msg) = ready_error(Some("/nonexistent-dir/snd.sock"));
    assert!(!ok);
    assert!(error_text(&msg.unwrap()).contains("cannot listen"));

    // A stale socket file is replaced.
    let stale = socket_path("src-stale");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let (ok, msg) = ready_error(stale.to_str());
    assert!(ok, "{msg:?}");
}

#[test]
fn src_and_sink_on_one_socket_are_one_card() {
    let socket = socket_path("one-card");
    let mut src = src_harness(&socket, false, true);
    let _sink = sink_harness(&socket);
    let mut g = connect(&socket);
    let info = g.probe().unwrap();
    assert_eq!(u32::from(info.config.streams), 2);
    // Both streams answer on the one connection; no second device exists.
    let p = params(formats::FMT_S16, 48000, 2, 480);
    assert_eq!(g.set_pcm_params(1, &p).unwrap(), S_OK);
    let out = play_offline(&mut src, &mut g, &p, 3, 0);
    assert!(out == tone(&p, 0, 3 * 480));
    assert_eq!(g.start(2).unwrap(), S_BAD_MSG);
}
