//! Guests that go away: disconnect and QEMU-style shutdown mid-stream leave a fresh
//! card for the next guest, and an idle device does not spin on its event queue.
//!
//! The idle-CPU test measures this whole process, so it lives in the binary with the
//! fewest other tests, and `QUIET` keeps those out while it measures.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vhost_user_sound::{Device, Direction, PcmState};
use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::*;

/// Both streams running with I/O queued, one period played.
fn mid_stream(g: &mut FakeGuest, tl: &Timeline) {
    setup(g, PLAY);
    setup(g, CAP);
    for i in 0..3 {
        tx(g, i);
        rx(g);
    }
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    tl.step(&[PLAY, CAP]);
    take(g, QUEUE_TX, 1);
    take(g, QUEUE_RX, 1);
    assert_eq!((g.in_flight(QUEUE_TX), g.in_flight(QUEUE_RX)), (2, 2));
}

/// A new guest finds a fresh card and can use it.
fn fresh_guest(rig: &Rig) -> FakeGuest {
    let mut g = connect(&rig.path);
    let info = g.probe().expect("probe after reconnect");
    assert_eq!(info.pcms.len(), 2);
    for s in [PLAY, CAP] {
        assert_eq!(g.start(s).unwrap(), S_BAD_MSG, "START without SET_PARAMS");
        assert_eq!(
            g.prepare(s).unwrap(),
            S_BAD_MSG,
            "PREPARE without SET_PARAMS"
        );
    }
    assert_eq!(rig.state(Direction::Playback), PcmState::Idle);
    assert_eq!(rig.state(Direction::Capture), PcmState::Idle);
    assert!(rig
        .dev()
        .card()
        .snapshot(Direction::Playback)
        .params
        .is_none());
    play_sequence(&mut g, &rig.tl);
    assert!(rig.dev().card().snapshot(Direction::Playback).connected);
    g
}

#[test]
fn disconnect_mid_stream_and_reconnect() {
    let (rig, mut g) = Rig::new("reconnect");
    g.probe().unwrap();
    mid_stream(&mut g, &rig.tl);
    g.disconnect();
    let mut g = fresh_guest(&rig);
    for round in 0..5 {
        mid_stream(&mut g, &rig.tl);
        if round % 2 == 0 {
            g.disconnect();
        } else {
            g.shutdown().expect("QEMU-style stop");
        }
        g = fresh_guest(&rig);
    }
    // A QEMU-style stop of an idle guest, then one more.
    g.shutdown().expect("QEMU-style stop");
    let g = fresh_guest(&rig);
    g.shutdown().expect("QEMU-style stop");
    let mut g = fresh_guest(&rig);
    alive(&mut g);
}

#[test]
fn shutdown_mid_stream_then_reconnect() {
    let (rig, mut g) = Rig::new("shutdown");
    mid_stream(&mut g, &rig.tl);
    g.shutdown().expect("QEMU-style stop");
    let mut g = fresh_guest(&rig);
    alive(&mut g);
}

#[test]
fn event_queue_does_not_spin() {
    // Alone in the process while measuring.
    let _alone = QUIET.write().unwrap_or_else(|e| e.into_inner());
    let path = sock_path("event-spin");
    let dev = Device::acquire(&path).unwrap();
    let mut g = connect(&path);
    g.probe().unwrap();
    assert_eq!(g.in_flight(QUEUE_EVENT), 64, "event queue filled");
    // Spurious kicks on every queue, as QEMU gives at start.
    for q in [QUEUE_EVENT, QUEUE_CONTROL, QUEUE_TX, QUEUE_RX, QUEUE_EVENT] {
        g.kick(q).unwrap();
    }
    g.pcm_info(0, 2).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let before = cpu_time();
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(100),
        "an idle device used {used:?} of CPU in 500 ms"
    );
    // Still served, and the event buffers stay with the device.
    let t0 = Instant::now();
    g.probe().expect("probe");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(g.events().unwrap().is_empty());
    assert_eq!(g.in_flight(QUEUE_EVENT), 64);
    drop(g);
    drop(dev);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
