//! The elements' `volume`, `mute` and `controls`: the guest's mixer controls move
//! the element's properties (with notify) and the level of its audio; the host's
//! properties reach the guest's mixer as CTL_NOTIFY; GstStreamVolume works.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gst::prelude::*;
use gst_audio::prelude::*;
use gst_check::Harness;
use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::ctl::{CTL_EVT_MASK_VALUE, EVT_CTL_NOTIFY};
use virtio_snd_wire::formats::{self, PcmParams};
use virtio_snd_wire::S_OK;

use support::*;

const PLAY_VOLUME: u32 = 0;
const PLAY_SWITCH: u32 = 1;
const CAPTURE_VOLUME: u32 = 2;
const CAPTURE_SWITCH: u32 = 3;
/// -6 dB, and its gain.
const HALF_STEP: u32 = vhost_user_sound::VOLUME_STEPS - 12;
const HALF_GAIN: f64 = 0.501_187;

fn samples(data: &[u8]) -> Vec<i16> {
    data.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// `got` is `want` scaled by `gain`, to the rounding.
fn assert_scaled(got: &[u8], want: &[u8], gain: f64, what: &str) {
    let (got, want) = (samples(got), samples(want));
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let expected = f64::from(*w) * gain;
        assert!(
            (f64::from(*g) - expected).abs() <= 1.0,
            "{what}: sample {i} is {g}, not {expected:.1}"
        );
    }
}

fn counting_notify(el: &gst::Element, property: &str) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    el.connect_notify(Some(property), move |_, _| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    n
}

/// The CTL_NOTIFY the guest gets for `id`.
fn wait_notify(g: &mut FakeGuest, id: u32) {
    let ev = g.wait_events(TIMEOUT).unwrap();
    let want = id | u32::from(CTL_EVT_MASK_VALUE) << 16;
    assert!(
        ev.iter()
            .any(|e| e.code == EVT_CTL_NOTIFY && e.data == want),
        "no CTL_NOTIFY for control {id}: {ev:?}"
    );
}

fn p48() -> PcmParams {
    params(formats::FMT_S16, 48000, 2, 480)
}

/// Two more periods of the guest's tone through a non-live source, both pulled (so
/// that nothing the guest played before is still on its way); returns the first.
fn play_one(h: &mut Harness, g: &mut FakeGuest, p: &PcmParams) -> Vec<u8> {
    let frames = u64::from(p.period_bytes / p.frame_bytes());
    g.submit_tx(0, &tone(p, 0, frames)).unwrap();
    g.submit_tx(0, &tone(p, 0, frames)).unwrap();
    let mut data = Vec::new();
    while data.len() < 2 * p.period_bytes as usize {
        let buf = h.pull().expect("a period from vhostsndsrc");
        data.extend_from_slice(&buf.map_readable().unwrap());
    }
    assert_eq!(data.len(), 2 * p.period_bytes as usize);
    data.truncate(p.period_bytes as usize);
    data
}

#[test]
fn the_guests_playback_controls_move_vhostsndsrc() {
    let socket = socket_path("mixer-src");
    init();
    let mut h = Harness::new("vhostsndsrc");
    let el = h.element().unwrap();
    el.set_property("socket", socket.to_str().unwrap());
    el.set_property("is-live", false);
    el.set_property("follow-guest-format", true);
    el.set_property("controls", true);
    let volume_notified = counting_notify(&el, "volume");
    let mute_notified = counting_notify(&el, "mute");
    h.play();
    let mut g = connect(&socket);
    let info = g.probe().unwrap();
    assert_eq!(info.controls.len(), 4, "controls=true offers the controls");
    let p = p48();
    let frames = u64::from(p.period_bytes / p.frame_bytes());
    let clean = tone(&p, 0, frames);
    assert_eq!(g.set_pcm_params(0, &p).unwrap(), S_OK);
    assert_eq!(g.prepare(0).unwrap(), S_OK);
    assert_eq!(g.start(0).unwrap(), S_OK);
    assert_eq!(play_one(&mut h, &mut g, &p), clean, "full volume");

    // The guest turns its volume down 6 dB: the property follows, with notify.
    assert_eq!(g.ctl_write(PLAY_VOLUME, HALF_STEP).unwrap(), S_OK);
    assert_eq!(volume_notified.load(Ordering::SeqCst), 1);
    assert!((el.property::<f64>("volume") - HALF_GAIN).abs() < 1e-5);
    let half = play_one(&mut h, &mut g, &p);
    assert_scaled(&half, &clean, HALF_GAIN, "the guest's -6 dB");
    // The guest mutes.
    assert_eq!(g.ctl_write(PLAY_SWITCH, 0).unwrap(), S_OK);
    assert!(mute_notified.load(Ordering::SeqCst) >= 1);
    assert!(el.property::<bool>("mute"));
    assert!(samples(&play_one(&mut h, &mut g, &p))
        .iter()
        .all(|s| *s == 0));

    // The host, through GstStreamVolume: the guest's mixer shows it.
    let sv = el
        .dynamic_cast_ref::<gst_audio::StreamVolume>()
        .expect("vhostsndsrc is a GstStreamVolume");
    sv.set_mute(false);
    wait_notify(&mut g, PLAY_SWITCH);
    assert_eq!(g.ctl_read(PLAY_SWITCH).unwrap(), (S_OK, Some(1)));
    sv.set_volume(gst_audio::StreamVolumeFormat::Linear, 0.25);
    wait_notify(&mut g, PLAY_VOLUME);
    // -12.04 dB: step 104 (-12 dB); the host's 0.25 is what is applied.
    assert_eq!(g.ctl_read(PLAY_VOLUME).unwrap(), (S_OK, Some(104)));
    assert_eq!(el.property::<f64>("volume"), 0.25);
    let quarter = play_one(&mut h, &mut g, &p);
    assert_scaled(&quarter, &clean, 0.25, "the host's 0.25");
    // The capture controls are not this element's.
    assert_eq!(g.ctl_read(CAPTURE_VOLUME).unwrap().1, Some(128));
    drop(h);
}

fn capture_sink(socket: &std::path::Path, controls: bool) -> Harness {
    init();
    let el = gst::ElementFactory::make("vhostsndsink")
        .property("socket", socket.to_str().unwrap())
        .property("async", false)
        .property("sync", false)
        .property("controls", controls)
        .build()
        .unwrap();
    let mut h = Harness::with_element(&el, Some("sink"), None);
    h.use_testclock();
    el.set_state(gst::State::Paused).unwrap();
    h.play();
    h
}

fn record_one(h: &mut Harness, g: &mut FakeGuest, p: &PcmParams, audio: &[u8]) -> Vec<u8> {
    push_audio(h, audio.to_vec());
    completed(g, p)
}

#[test]
fn the_guests_capture_controls_move_vhostsndsink() {
    let socket = socket_path("mixer-sink");
    let mut h = capture_sink(&socket, true);
    let el = h.element().unwrap();
    let mute_notified = counting_notify(&el, "mute");
    let mut g = connect(&socket);
    assert_eq!(g.probe().unwrap().controls.len(), 4);
    let p = p48();
    let frames = u64::from(p.period_bytes / p.frame_bytes());
    assert_eq!(g.set_pcm_params(1, &p).unwrap(), S_OK);
    assert_eq!(g.prepare(1).unwrap(), S_OK);
    h.set_src_caps(gstvhostsnd::audio::caps(&p).unwrap());
    for _ in 0..4 {
        g.submit_rx(1, p.period_bytes).unwrap();
    }
    assert_eq!(g.start(1).unwrap(), S_OK);
    let mut k = 0;
    let mut next = |h: &mut Harness, g: &mut FakeGuest| {
        let audio = tone(&p, k * frames, frames);
        k += 1;
        let got = record_one(h, g, &p, &audio);
        (got, audio)
    };
    let (got, audio) = next(&mut h, &mut g);
    assert_eq!(got, audio, "full volume");

    // The host mutes the microphone: the guest's switch goes off, it records silence.
    el.set_property("mute", true);
    wait_notify(&mut g, CAPTURE_SWITCH);
    assert_eq!(g.ctl_read(CAPTURE_SWITCH).unwrap(), (S_OK, Some(0)));
    let (got, _) = next(&mut h, &mut g);
    assert!(samples(&got).iter().all(|s| *s == 0), "muted is silence");

    // The guest turns it back on at -6 dB.
    assert_eq!(g.ctl_write(CAPTURE_SWITCH, 1).unwrap(), S_OK);
    assert_eq!(g.ctl_write(CAPTURE_VOLUME, HALF_STEP).unwrap(), S_OK);
    assert_eq!(
        mute_notified.load(Ordering::SeqCst),
        2,
        "the host's and the guest's switch"
    );
    assert!(!el.property::<bool>("mute"));
    assert!((el.property::<f64>("volume") - HALF_GAIN).abs() < 1e-5);
    let (got, audio) = next(&mut h, &mut g);
    assert_scaled(&got, &audio, HALF_GAIN, "the guest's -6 dB");
    // The playback controls are not this element's.
    assert_eq!(g.ctl_read(PLAY_SWITCH).unwrap().1, Some(1));
}

#[test]
fn without_controls_the_guest_has_no_mixer_but_the_volume_applies() {
    let socket = socket_path("mixer-none");
    let mut h = capture_sink(&socket, false);
    let el = h.element().unwrap();
    el.set_property("volume", 0.5);
    let mut g = connect(&socket);
    assert!(!g.controls(), "no VIRTIO_SND_F_CTLS unless asked for");
    assert!(g.probe().unwrap().controls.is_empty());
    let p = p48();
    let frames = u64::from(p.period_bytes / p.frame_bytes());
    assert_eq!(g.set_pcm_params(1, &p).unwrap(), S_OK);
    assert_eq!(g.prepare(1).unwrap(), S_OK);
    h.set_src_caps(gstvhostsnd::audio::caps(&p).unwrap());
    g.submit_rx(1, p.period_bytes).unwrap();
    assert_eq!(g.start(1).unwrap(), S_OK);
    let audio = tone(&p, 0, frames);
    let got = record_one(&mut h, &mut g, &p, &audio);
    assert_scaled(&got, &audio, 0.5, "the host's 0.5");
}
