//! The card's control elements (VIRTIO_SND_F_CTLS) as the Linux driver uses them:
//! CTL_INFO at probe, CTL_READ and CTL_WRITE from the guest's mixer, CTL_TLV_READ
//! for the dB scale, CTL_NOTIFY on the event queue for every change; the level
//! applied to the audio; and every bad request answered with a status that changes
//! nothing.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use vhost_user_sound::{DeviceEvent, Direction, Pacing, Playback, CONTROL_COUNT, VOLUME_STEPS};
use virtio_snd_frontend::{FakeGuestOptions, Segment, SndEvent};
use virtio_snd_wire::ctl::*;
use virtio_snd_wire::*;
use vm_memory::ByteValued;

const PLAY_VOLUME: u32 = 0;
const PLAY_SWITCH: u32 = 1;
const CAPTURE_VOLUME: u32 = 2;
const CAPTURE_SWITCH: u32 = 3;
/// -6 dB.
const HALF: u32 = VOLUME_STEPS - 12;

fn ctl_req(code: u32, id: u32) -> Vec<u8> {
    CtlHdr {
        hdr: Hdr { code: code.into() },
        control_id: id.into(),
    }
    .as_slice()
    .to_vec()
}

fn notify(id: u32) -> (u32, u32) {
    (EVT_CTL_NOTIFY, id | u32::from(CTL_EVT_MASK_VALUE) << 16)
}

fn codes(events: &[SndEvent]) -> Vec<(u32, u32)> {
    events.iter().map(|e| (e.code, e.data)).collect()
}

#[test]
fn without_controls_the_card_is_as_before() {
    let (rig, mut g) = Rig::new("ctl-off");
    assert_eq!(g.device_features() & F_CTLS, 0);
    assert!(!g.controls());
    let info = g.probe().unwrap();
    assert!(info.controls.is_empty());
    let cfg = g.config_bytes(16).unwrap();
    assert_eq!(&cfg[12..16], &[0; 4], "controls field");
    for code in [R_CTL_INFO, R_CTL_READ, R_CTL_TLV_READ] {
        let r = g.control(&ctl_req(code, 0), 4 + 512).unwrap();
        assert_eq!(r.status(), S_NOT_SUPP, "{code:#x}");
    }
    // The host's volume still applies: it is the element's property.
    rig.dev().card().set_volume(Direction::Playback, 0.5);
    assert!(g
        .wait_events(Duration::from_millis(200))
        .unwrap()
        .is_empty());
}

#[test]
fn the_probe_finds_four_controls_with_a_db_scale() {
    let (_rig, mut g) = Rig::with_controls("ctl-probe");
    assert_ne!(g.device_features() & F_CTLS, 0);
    assert!(g.controls());
    let info = g.probe().unwrap();
    assert_eq!(info.config.controls.to_native(), CONTROL_COUNT);
    let names: Vec<&[u8]> = info.controls.iter().map(CtlInfo::name).collect();
    assert_eq!(
        names,
        [
            &b"Master Playback Volume"[..],
            b"Master Playback Switch",
            b"Capture Volume",
            b"Capture Switch"
        ]
    );
    for (i, c) in info.controls.iter().enumerate() {
        let volume = i % 2 == 0;
        let (role, type_, max) = if volume {
            (CTL_ROLE_VOLUME, CTL_TYPE_INTEGER, VOLUME_STEPS)
        } else {
            (CTL_ROLE_MUTE, CTL_TYPE_BOOLEAN, 1)
        };
        assert_eq!(u32::from(c.role), role, "control {i}");
        assert_eq!(u32::from(c.type_), type_, "control {i}");
        assert_eq!(u32::from(c.count), 1, "control {i}");
        assert_eq!(u32::from(c.integer.max), max, "control {i}");
        let access = u32::from(c.access);
        assert_eq!(access & CTL_ACCESS_READ, CTL_ACCESS_READ);
        assert_eq!(access & CTL_ACCESS_WRITE, CTL_ACCESS_WRITE);
        assert_eq!(access & CTL_ACCESS_TLV_READ != 0, volume, "control {i}");
        // At full volume and switched on to start with.
        assert_eq!(g.ctl_read(i as u32).unwrap(), (S_OK, Some(max)));
    }
    // ALSA's buffer for a TLV is larger than the TLV: the device writes its 16 bytes.
    let (st, tlv) = g.ctl_tlv_read(PLAY_VOLUME, 4096).unwrap();
    assert_eq!(st, S_OK);
    assert_eq!(
        tlv,
        [TLV_DB_SCALE, 8, (-6400i32) as u32, 50 | TLV_DB_SCALE_MUTE]
    );
}

#[test]
fn the_guests_volume_scales_and_mutes_what_it_plays() {
    let (rig, mut g) = Rig::with_controls("ctl-gain");
    g.probe().unwrap();
    let card = rig.dev().card().clone();
    card.set_pacing(Direction::Playback, Pacing::Element);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    card.subscribe(Arc::new(move |ev| {
        if let DeviceEvent::Mixer { direction, .. } = ev {
            s.lock().unwrap().push(*direction);
        }
    }));
    setup(&mut g, PLAY);
    let samples: Vec<i16> = (0..PERIOD as i32 / 2)
        .map(|i| (i * 37 % 20000 - 10000) as i16)
        .collect();
    let period: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    let play = |g: &mut virtio_snd_frontend::FakeGuest| -> Vec<i16> {
        g.submit_tx(PLAY, &period).unwrap();
        let mut audio = Vec::new();
        match card.take_playback(&mut audio) {
            Playback::Data(_) => audio
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect(),
            Playback::Idle | Playback::Silence => panic!("the guest's period was not there"),
        }
    };
    assert_eq!(
        play(&mut g),
        samples,
        "full volume leaves the audio as it is"
    );

    assert_eq!(g.ctl_write(PLAY_VOLUME, HALF).unwrap(), S_OK);
    assert_eq!(g.ctl_read(PLAY_VOLUME).unwrap(), (S_OK, Some(HALF)));
    let level = card.level(Direction::Playback);
    assert!((level.volume - 0.501).abs() < 0.001, "{level:?}");
    let half = play(&mut g);
    for (got, was) in half.iter().zip(&samples) {
        assert!((f64::from(*got) - f64::from(*was) * level.volume).abs() <= 0.5);
    }

    assert_eq!(g.ctl_write(PLAY_SWITCH, 0).unwrap(), S_OK);
    assert!(card.level(Direction::Playback).mute);
    assert!(play(&mut g).iter().all(|v| *v == 0), "muted is silence");
    assert_eq!(g.ctl_write(PLAY_SWITCH, 1).unwrap(), S_OK);
    assert_eq!(g.ctl_write(PLAY_VOLUME, 0).unwrap(), S_OK);
    assert!(play(&mut g).iter().all(|v| *v == 0), "step 0 is silence");

    // The capture controls are the capture stream's: playback stays silent at step 0.
    assert_eq!(g.ctl_write(CAPTURE_VOLUME, HALF).unwrap(), S_OK);
    assert_eq!(card.level(Direction::Capture).volume, level.volume);
    assert_eq!(card.level(Direction::Playback).volume, 0.0);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Direction::Playback,
            Direction::Playback,
            Direction::Playback,
            Direction::Playback,
            Direction::Capture
        ],
        "one event per change the guest made"
    );
    // Writing the value it has is no change.
    assert_eq!(g.ctl_write(CAPTURE_VOLUME, HALF).unwrap(), S_OK);
    assert_eq!(seen.lock().unwrap().len(), 5);
}

#[test]
fn every_change_reaches_the_guest_as_ctl_notify() {
    let (rig, mut g) = Rig::with_controls("ctl-notify");
    g.probe().unwrap();
    let card = rig.dev().card().clone();
    card.set_volume(Direction::Playback, 0.5);
    let ev = g.wait_events(T).unwrap();
    assert_eq!(codes(&ev), [notify(PLAY_VOLUME)]);
    assert_eq!(ev[0].used_len, 8);
    assert_eq!(g.ctl_read(PLAY_VOLUME).unwrap(), (S_OK, Some(HALF)));
    // The host's volume is applied as set, shown as the nearest step.
    assert_eq!(card.level(Direction::Playback).volume, 0.5);
    card.set_mute(Direction::Capture, true);
    assert_eq!(codes(&g.wait_events(T).unwrap()), [notify(CAPTURE_SWITCH)]);
    assert_eq!(g.ctl_read(CAPTURE_SWITCH).unwrap(), (S_OK, Some(0)));
    // No change, no event.
    card.set_mute(Direction::Capture, true);
    card.set_volume(Direction::Playback, 0.5);
    assert!(g
        .wait_events(Duration::from_millis(200))
        .unwrap()
        .is_empty());
    // The guest's own writes are told to its other mixer clients.
    assert_eq!(g.ctl_write(CAPTURE_VOLUME, 3).unwrap(), S_OK);
    assert_eq!(codes(&g.wait_events(T).unwrap()), [notify(CAPTURE_VOLUME)]);
}

#[test]
fn notifications_wait_for_an_event_buffer() {
    let opts = FakeGuestOptions {
        event_buffers: 1,
        ..FakeGuestOptions::default()
    };
    let (rig, mut g) = Rig::with_controls_and(opts, "ctl-notify-wait");
    g.probe().unwrap();
    let card = rig.dev().card().clone();
    // One buffer, posted again each time the guest takes an event: changes made
    // meanwhile wait for it, and a control changed twice is told once.
    card.set_volume(Direction::Capture, 0.25);
    assert_eq!(codes(&g.wait_events(T).unwrap()), [notify(CAPTURE_VOLUME)]);
    card.set_volume(Direction::Capture, 0.5);
    card.set_volume(Direction::Capture, 0.7);
    card.set_mute(Direction::Playback, true);
    let mut got = Vec::new();
    loop {
        let ev = g.wait_events(Duration::from_millis(300)).unwrap();
        if ev.is_empty() {
            break;
        }
        assert_eq!(ev.len(), 1, "one buffer, one event at a time");
        got.extend(codes(&ev));
    }
    got.sort();
    assert!(
        got == [notify(PLAY_SWITCH), notify(CAPTURE_VOLUME)]
            || got
                == [
                    notify(PLAY_SWITCH),
                    notify(CAPTURE_VOLUME),
                    notify(CAPTURE_VOLUME)
                ],
        "{got:?}"
    );
    assert_eq!(g.ctl_read(CAPTURE_VOLUME).unwrap(), (S_OK, Some(122)));
}

#[test]
fn hostile_control_element_requests_change_nothing() {
    let (rig, mut g) = Rig::with_controls("ctl-hostile");
    g.probe().unwrap();
    assert_eq!(g.ctl_write(PLAY_VOLUME, HALF).unwrap(), S_OK);
    let _ = g.wait_events(T).unwrap();
    let value = |v: u32| {
        let mut req = ctl_req(R_CTL_WRITE, PLAY_VOLUME);
        let mut val = CtlValue::default();
        val.integer[0] = v.into();
        req.extend_from_slice(val.as_slice());
        req
    };
    let mut long_write = value(1);
    long_write.push(0);
    let mut nonzero_tail = CtlValue::default();
    nonzero_tail.integer[0] = 1.into();
    nonzero_tail.integer[127] = u32::MAX.into();
    let cases: Vec<(&str, Vec<u8>, u32, u32)> = vec![
        ("READ of control 4", ctl_req(R_CTL_READ, 4), 516, S_BAD_MSG),
        (
            "READ of control 2^32-1",
            ctl_req(R_CTL_READ, u32::MAX),
            516,
            S_BAD_MSG,
        ),
        (
            "READ with a short value area",
            ctl_req(R_CTL_READ, 0),
            515,
            S_BAD_MSG,
        ),
        (
            "READ of 7 bytes",
            ctl_req(R_CTL_READ, 0)[..7].to_vec(),
            516,
            S_BAD_MSG,
        ),
        (
            "READ of 9 bytes",
            [ctl_req(R_CTL_READ, 0), vec![0]].concat(),
            516,
            S_BAD_MSG,
        ),
        ("WRITE of step 129", value(VOLUME_STEPS + 1), 4, S_BAD_MSG),
        ("WRITE of 2^32-1", value(u32::MAX), 4, S_BAD_MSG),
        (
            "WRITE without its value",
            ctl_req(R_CTL_WRITE, 0),
            4,
            S_BAD_MSG,
        ),
        (
            "WRITE one byte short",
            value(1)[..519].to_vec(),
            4,
            S_BAD_MSG,
        ),
        ("WRITE one byte long", long_write, 4, S_BAD_MSG),
        (
            "WRITE of control 9",
            [ctl_req(R_CTL_WRITE, 9), value(1)[8..].to_vec()].concat(),
            4,
            S_BAD_MSG,
        ),
        (
            "WRITE of switch value 2",
            [ctl_req(R_CTL_WRITE, PLAY_SWITCH), value(2)[8..].to_vec()].concat(),
            4,
            S_BAD_MSG,
        ),
        (
            "ENUM_ITEMS of a volume",
            ctl_req(R_CTL_ENUM_ITEMS, 0),
            4 + 64,
            S_BAD_MSG,
        ),
        (
            "ENUM_ITEMS of control 4",
            ctl_req(R_CTL_ENUM_ITEMS, 4),
            4 + 64,
            S_BAD_MSG,
        ),
        (
            "TLV_READ of a switch",
            ctl_req(R_CTL_TLV_READ, PLAY_SWITCH),
            4 + 64,
            S_BAD_MSG,
        ),
        (
            "TLV_READ of control 4",
            ctl_req(R_CTL_TLV_READ, 4),
            4 + 64,
            S_BAD_MSG,
        ),
        (
            "TLV_READ into 8 bytes",
            ctl_req(R_CTL_TLV_READ, 0),
            4 + 8,
            S_BAD_MSG,
        ),
        (
            "TLV_WRITE",
            [ctl_req(R_CTL_TLV_WRITE, 0), vec![0; 16]].concat(),
            4,
            S_NOT_SUPP,
        ),
        (
            "TLV_WRITE, header only",
            ctl_req(R_CTL_TLV_WRITE, 0),
            4,
            S_NOT_SUPP,
        ),
        ("TLV_COMMAND", ctl_req(R_CTL_TLV_COMMAND, 0), 4, S_NOT_SUPP),
        (
            "INFO for 5 controls",
            query(R_CTL_INFO, 0, 5, 96),
            4 + 5 * 96,
            S_BAD_MSG,
        ),
        (
            "INFO from control 4",
            query(R_CTL_INFO, 4, 1, 96),
            4 + 96,
            S_BAD_MSG,
        ),
        (
            "INFO of a short item",
            query(R_CTL_INFO, 0, 1, 92),
            4 + 92,
            S_BAD_MSG,
        ),
        (
            "INFO into too little room",
            query(R_CTL_INFO, 0, 4, 96),
            4 + 3 * 96,
            S_BAD_MSG,
        ),
    ];
    for (what, req, resp, want) in cases {
        let r = g
            .control(&req, resp)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status(), want, "{what}");
        assert_eq!(r.used_len, 4, "{what}: the status and nothing else");
    }
    // A value's members past the control's count are not the control's business.
    assert_eq!(g.ctl_write_raw(PLAY_VOLUME, &nonzero_tail).unwrap(), S_OK);
    assert_eq!(g.ctl_read(PLAY_VOLUME).unwrap(), (S_OK, Some(1)));
    assert_eq!(g.ctl_write(PLAY_VOLUME, HALF).unwrap(), S_OK);
    // Nothing else moved, and only the two good writes were told.
    for (id, want) in [
        (PLAY_VOLUME, HALF),
        (PLAY_SWITCH, 1),
        (CAPTURE_VOLUME, VOLUME_STEPS),
        (CAPTURE_SWITCH, 1),
    ] {
        assert_eq!(g.ctl_read(id).unwrap(), (S_OK, Some(want)), "control {id}");
    }
    let ev = g.wait_events(T).unwrap();
    let mut ev = codes(&ev);
    if ev.len() < 2 {
        ev.extend(codes(&g.wait_events(T).unwrap()));
    }
    // Both writes were to one control: one or two events, depending on whether
    // the first was delivered before the second came.
    assert!(
        ev.iter().all(|e| *e == notify(PLAY_VOLUME)) && !ev.is_empty(),
        "{ev:?}"
    );
    // A TLV read's data goes in a buffer of its own after the status, as Linux lays it
    // out; one of a single buffer works too.
    let r = g
        .control_chain(
            &[
                Segment::Read(&ctl_req(R_CTL_TLV_READ, 0)),
                Segment::Write(20),
            ],
            T,
        )
        .unwrap();
    assert_eq!((r.status(), r.used_len), (S_OK, 20));
    assert_eq!(rig.dev().card().level(Direction::Capture).volume, 1.0);
    alive(&mut g);
}

#[test]
fn a_change_made_while_the_vm_is_paused_reaches_it_after_the_resume() {
    let (rig, mut g) = Rig::with_controls("ctl-pause");
    g.probe().unwrap();
    let card = rig.dev().card().clone();
    let bases = g.pause().unwrap();
    card.set_volume(Direction::Playback, 0.5);
    card.set_mute(Direction::Playback, true);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        g.events().unwrap().is_empty(),
        "nothing goes to a stopped ring"
    );
    g.resume(bases).unwrap();
    // The guest's next request (here, its mixer reading the value) lets them go.
    assert_eq!(g.ctl_read(PLAY_VOLUME).unwrap(), (S_OK, Some(HALF)));
    let mut got = Vec::new();
    while got.len() < 2 {
        let ev = g.wait_events(T).unwrap();
        assert!(!ev.is_empty(), "events so far: {got:?}");
        got.extend(codes(&ev));
    }
    assert_eq!(got, [notify(PLAY_VOLUME), notify(PLAY_SWITCH)]);
}

static LOG: LogCounter = LogCounter::new();

/// A device that offers controls to a QEMU without `controls=on` (which reads only
/// the config's first 12 bytes) says so: its guest would have no sound card.
#[test]
fn a_qemu_without_controls_on_is_warned_about() {
    LOG.install();
    let opts = FakeGuestOptions {
        controls: false,
        ..FakeGuestOptions::default()
    };
    let (_rig, mut g) = Rig::with_controls_and(opts, "ctl-no-qemu-controls");
    let before = LOG.warnings();
    assert_eq!(g.config().unwrap().controls.to_native(), 0);
    assert!(
        LOG.warnings() > before,
        "the device did not warn that QEMU lacks controls=on"
    );
}
