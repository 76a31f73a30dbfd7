//! VM pause and resume (QEMU stops and starts every ring, as for `virsh suspend`,
//! snapshots and `stop`/`cont` in its monitor), and what tells a pause from a guest
//! that reset the device: a paused stream keeps its state and its queued periods and
//! completes nothing until the rings run again; a new driver's rings start it over.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use vhost_user_sound::{DeviceEvent, Direction, PcmRequest, PcmState};
use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::*;

/// Moves time on by `periods` periods of the paused streams and checks that nothing
/// was completed meanwhile. (The control queue is stopped too, so there is no round
/// trip to wait on: the pacers are seen to serve each deadline instead.)
fn paused_for(rig: &Rig, g: &mut FakeGuest, streams: &[u32], periods: usize) {
    for _ in 0..periods {
        rig.tl.step(streams);
    }
    std::thread::sleep(Duration::from_millis(20));
    for q in [QUEUE_TX, QUEUE_RX] {
        let c = g.try_io(q).unwrap();
        assert!(
            c.is_empty(),
            "{} completions on queue {q} while paused",
            c.len()
        );
    }
}

#[test]
fn a_paused_playback_keeps_its_periods_and_resumes_where_it_stopped() {
    let (rig, mut g) = Rig::new("pause-playback");
    setup(&mut g, PLAY);
    let toks: Vec<_> = (0..4).map(|i| tx(&mut g, i)).collect();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    rig.tl.step(&[PLAY]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, toks[0]);

    let bases = g.pause().unwrap();
    paused_for(&rig, &mut g, &[PLAY], 6);
    assert_eq!(rig.state(Direction::Playback), PcmState::Running);

    g.resume(bases).unwrap();
    assert_quiet(&mut g, QUEUE_TX, "resumed");
    for t in &toks[1..] {
        rig.tl.step(&[PLAY]);
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, *t, "periods out of order after the pause");
        assert_tx_ok(&c[0]);
    }
    // The stream is where the guest left it: it plays on, stops and releases.
    let t = tx(&mut g, 9);
    rig.tl.step(&[PLAY]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
}

#[test]
fn a_paused_capture_keeps_its_buffers_and_resumes_where_it_stopped() {
    let (rig, mut g) = Rig::new("pause-capture");
    setup(&mut g, CAP);
    let toks: Vec<_> = (0..4).map(|_| rx(&mut g)).collect();
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    rig.tl.step(&[CAP]);
    assert_eq!(take(&mut g, QUEUE_RX, 1)[0].token, toks[0]);

    let bases = g.pause().unwrap();
    paused_for(&rig, &mut g, &[CAP], 6);
    assert_eq!(rig.state(Direction::Capture), PcmState::Running);

    g.resume(bases).unwrap();
    assert_quiet(&mut g, QUEUE_RX, "resumed");
    for t in &toks[1..] {
        rig.tl.step(&[CAP]);
        let c = take(&mut g, QUEUE_RX, 1);
        assert_eq!(c[0].token, *t, "buffers out of order after the pause");
        assert_rx_silence(&c[0], PERIOD, 0);
    }
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
}

/// The device's events, recorded.
fn record_events(rig: &Rig) -> Arc<Mutex<Vec<DeviceEvent>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    rig.dev()
        .card()
        .subscribe(Arc::new(move |ev: &DeviceEvent| {
            e.lock().unwrap().push(ev.clone())
        }));
    events
}

fn released(events: &Mutex<Vec<DeviceEvent>>) -> Vec<Direction> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|ev| match ev {
            DeviceEvent::Stream {
                direction,
                request: PcmRequest::Release,
                params: None,
            } => Some(*direction),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_driver_after_a_pause_starts_the_streams_over() {
    let (rig, mut g) = Rig::new("pause-new-driver");
    let events = record_events(&rig);
    start_both(&mut g);

    g.pause().unwrap();
    // The guest rebooted: its new driver has fresh rings and knows no streams.
    g.restart_driver().unwrap();
    assert_quiet(&mut g, QUEUE_TX, "new driver");
    assert_eq!(rig.state(Direction::Playback), PcmState::Idle);
    assert_eq!(rig.state(Direction::Capture), PcmState::Idle);
    let mut gone = released(&events);
    gone.sort_by_key(|d| d.stream_id());
    assert_eq!(
        gone,
        Direction::ALL,
        "the old driver's streams were not released"
    );
    // Nothing of the old driver's I/O comes back on the new rings, and the new
    // driver's sequence works from the start.
    play_sequence(&mut g, &rig.tl);
}

#[test]
fn reset_device_starts_the_streams_over() {
    let (rig, mut g) = Rig::new("reset-device");
    let events = record_events(&rig);
    setup(&mut g, PLAY);
    let _ = tx(&mut g, 1);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    g.pause().unwrap();
    g.reset_device().unwrap();
    assert_eq!(rig.state(Direction::Playback), PcmState::Idle);
    assert_eq!(released(&events), [Direction::Playback]);
    g.restart_driver().unwrap();
    play_sequence(&mut g, &rig.tl);
}
