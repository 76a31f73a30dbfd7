//! The request sequences the Linux driver sends for ALSA operations: open, play and
//! close, pre-filled playback, pause, xrun recovery, resume from suspend, reopen,
//! refused transitions, and RELEASE returning every pending message.

mod common;

use std::time::Duration;

use common::*;
use vhost_user_sound::{Direction, PcmState};
use virtio_snd_wire::formats::{FMT_S16, FMT_U8};
use virtio_snd_wire::*;

#[test]
fn open_play_close() {
    let (rig, mut g) = Rig::new("open-play-close");
    g.probe().unwrap();
    play_sequence(&mut g, &rig.tl);
    assert_eq!(rig.state(Direction::Playback), PcmState::Released);
    assert_eq!(rig.state(Direction::Capture), PcmState::Released);
}

#[test]
fn prefilled_playback_waits_for_start() {
    let (rig, mut g) = Rig::new("prefill");
    setup(&mut g, PLAY);
    let toks: Vec<_> = (0..3).map(|i| tx(&mut g, i)).collect();
    // Prepared: the device holds the periods, however much time passes.
    rig.tl.advance_to(T0 + 10 * PERIOD_NS);
    assert_quiet(&mut g, QUEUE_TX, "prepared");
    assert_eq!(g.in_flight(QUEUE_TX), 3);
    let start = rig.tl.now();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(rig.tl.blocked(PLAY), start + PERIOD_NS);
    for (i, t) in toks.iter().enumerate() {
        let now = rig.tl.step(&[PLAY]);
        assert_eq!(now, start + (i as u64 + 1) * PERIOD_NS);
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, *t, "periods complete in order");
        assert_tx_ok(&c[0]);
    }
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
}

#[test]
fn repeated_set_params_and_prepare() {
    let (rig, mut g) = Rig::new("repeat");
    assert_eq!(set_params(&mut g, PLAY), S_OK);
    assert_eq!(
        g.set_params(PLAY, 2 * PERIOD, PERIOD, 2, FMT_S16, RATE)
            .unwrap(),
        S_OK
    );
    assert_eq!(set_params(&mut g, PLAY), S_OK);
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    let old = tx(&mut g, 1);
    // A second PREPARE restarts the position: the queued period goes back first.
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, old);
    assert_tx_ok(&c[0]);
    // SET_PARAMS from Prepared with I/O queued returns it too.
    let old = tx(&mut g, 2);
    assert_eq!(set_params(&mut g, PLAY), S_OK);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, old);
    assert_tx_ok(&c[0]);
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    let t = tx(&mut g, 3);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    rig.tl.step(&[PLAY]);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, t);
    assert_tx_ok(&c[0]);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
}

#[test]
fn pause_keeps_queued_io() {
    let (rig, mut g) = Rig::new("pause");
    setup(&mut g, PLAY);
    setup(&mut g, CAP);
    let t: Vec<_> = (0..3).map(|i| tx(&mut g, i)).collect();
    let r: Vec<_> = (0..3).map(|_| rx(&mut g)).collect();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    rig.tl.step(&[PLAY, CAP]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t[0]);
    assert_eq!(take(&mut g, QUEUE_RX, 1)[0].token, r[0]);

    // Pause: nothing completes while stopped, whatever the time does.
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_quiet(&mut g, QUEUE_TX, "STOP");
    assert_quiet(&mut g, QUEUE_RX, "STOP");
    rig.tl.advance_to(rig.tl.now() + 20 * PERIOD_NS);
    std::thread::sleep(Duration::from_millis(20));
    assert_quiet(&mut g, QUEUE_TX, "stopped");
    assert_quiet(&mut g, QUEUE_RX, "stopped");
    assert_eq!((g.in_flight(QUEUE_TX), g.in_flight(QUEUE_RX)), (2, 2));
    // More I/O may be queued while stopped.
    let t3 = tx(&mut g, 3);

    // Resume: the kept periods complete one per period, in order.
    let resume = rig.tl.now();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    assert_eq!(rig.tl.blocked(PLAY), resume + PERIOD_NS);
    assert_eq!(rig.tl.blocked(CAP), resume + PERIOD_NS);
    for i in 1..3 {
        rig.tl.step(&[PLAY, CAP]);
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, t[i]);
        assert_tx_ok(&c[0]);
        let c = take(&mut g, QUEUE_RX, 1);
        assert_eq!(c[0].token, r[i]);
        assert_rx_silence(&c[0], PERIOD, 0);
    }
    rig.tl.step(&[PLAY, CAP]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t3);
    take(&mut g, QUEUE_RX, 0);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
}

#[test]
fn xrun_recovery() {
    let (rig, mut g) = Rig::new("xrun");
    setup(&mut g, PLAY);
    let t = tx(&mut g, 1);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    rig.tl.step(&[PLAY]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t);
    // Underrun: the guest queued nothing more. Recovery: STOP, RELEASE, PREPARE, START.
    rig.tl.step(&[PLAY]);
    let late = tx(&mut g, 2);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, late);
    assert_tx_ok(&c[0]);
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    let t = tx(&mut g, 3);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    rig.tl.step(&[PLAY]);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, t);
    assert_tx_ok(&c[0]);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
}

#[test]
fn resume_from_suspend() {
    let (rig, mut g) = Rig::new("suspend");
    setup(&mut g, CAP);
    let r = rx(&mut g);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    rig.tl.step(&[CAP]);
    assert_eq!(take(&mut g, QUEUE_RX, 1)[0].token, r);
    let r = rx(&mut g);
    // Suspend: STOP. Resume: SET_PARAMS (returns the queued period), PREPARE, START.
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(set_params(&mut g, CAP), S_OK);
    let c = take(&mut g, QUEUE_RX, 1);
    assert_eq!(c[0].token, r);
    assert_rx_silence(&c[0], PERIOD, 0);
    assert_eq!(g.prepare(CAP).unwrap(), S_OK);
    let r = rx(&mut g);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    rig.tl.step(&[CAP]);
    let c = take(&mut g, QUEUE_RX, 1);
    assert_eq!(c[0].token, r);
    assert_rx_silence(&c[0], PERIOD, 0);
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
}

#[test]
fn reopen_releases_first() {
    let (rig, mut g) = Rig::new("reopen");
    // A fresh stream may be released (Linux does so when reopening).
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    setup(&mut g, PLAY);
    let t = tx(&mut g, 1);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    rig.tl.step(&[PLAY]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t);
    // Closed while stopped, with a period still queued; reopen: RELEASE first.
    let t = tx(&mut g, 2);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t);
    assert_eq!(g.release(PLAY).unwrap(), S_OK, "RELEASE twice");
    play_sequence(&mut g, &rig.tl);
}

#[test]
fn refused_transitions_leave_the_stream_working() {
    let (rig, mut g) = Rig::new("refused");
    for s in [PLAY, CAP] {
        assert_eq!(g.start(s).unwrap(), S_BAD_MSG, "START before SET_PARAMS");
        assert_eq!(
            g.prepare(s).unwrap(),
            S_BAD_MSG,
            "PREPARE before SET_PARAMS"
        );
        assert_eq!(g.stop(s).unwrap(), S_BAD_MSG, "STOP when idle");
        assert_eq!(set_params(&mut g, s), S_OK);
        assert_eq!(g.start(s).unwrap(), S_BAD_MSG, "START before PREPARE");
        assert_eq!(g.stop(s).unwrap(), S_BAD_MSG, "STOP before PREPARE");
        assert_eq!(g.prepare(s).unwrap(), S_OK);
        assert_eq!(g.stop(s).unwrap(), S_BAD_MSG, "STOP when prepared");
    }
    let t: Vec<_> = (0..2).map(|i| tx(&mut g, i)).collect();
    let r: Vec<_> = (0..2).map(|_| rx(&mut g)).collect();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    for s in [PLAY, CAP] {
        assert_eq!(set_params(&mut g, s), S_BAD_MSG, "SET_PARAMS while running");
        assert_eq!(g.prepare(s).unwrap(), S_BAD_MSG, "PREPARE while running");
        assert_eq!(g.release(s).unwrap(), S_BAD_MSG, "RELEASE while running");
        assert_eq!(g.start(s).unwrap(), S_BAD_MSG, "START while running");
    }
    // Refused requests returned nothing and changed nothing.
    assert_quiet(&mut g, QUEUE_TX, "refused requests");
    assert_quiet(&mut g, QUEUE_RX, "refused requests");
    assert_eq!(rig.state(Direction::Playback), PcmState::Running);
    assert_eq!(rig.state(Direction::Capture), PcmState::Running);
    for i in 0..2 {
        rig.tl.step(&[PLAY, CAP]);
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, t[i]);
        assert_tx_ok(&c[0]);
        let c = take(&mut g, QUEUE_RX, 1);
        assert_eq!(c[0].token, r[i]);
        assert_rx_silence(&c[0], PERIOD, 0);
    }
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.stop(PLAY).unwrap(), S_BAD_MSG, "STOP twice");
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    assert_eq!(g.start(PLAY).unwrap(), S_BAD_MSG, "START after RELEASE");
    play_sequence(&mut g, &rig.tl);
}

#[test]
fn release_returns_every_pending_message() {
    let (rig, mut g) = Rig::new("release");
    // Prepared, and stopped after running a while; S16 and U8 capture.
    for stopped in [false, true] {
        setup(&mut g, PLAY);
        assert_eq!(
            g.set_params(CAP, 4 * 480, 480, 1, FMT_U8, RATE).unwrap(),
            S_OK
        );
        assert_eq!(g.prepare(CAP).unwrap(), S_OK);
        let t: Vec<_> = (0..5).map(|i| tx(&mut g, i)).collect();
        let r: Vec<_> = (0..5)
            .map(|i| g.submit_rx_split(CAP, 480, 1 + i).unwrap())
            .collect();
        let mut skip = 0;
        if stopped {
            assert_eq!(g.start(PLAY).unwrap(), S_OK);
            assert_eq!(g.start(CAP).unwrap(), S_OK);
            rig.tl.step(&[PLAY, CAP]);
            take(&mut g, QUEUE_TX, 1);
            take(&mut g, QUEUE_RX, 1);
            assert_eq!(g.stop(PLAY).unwrap(), S_OK);
            assert_eq!(g.stop(CAP).unwrap(), S_OK);
            skip = 1;
        }
        assert_eq!(g.release(PLAY).unwrap(), S_OK);
        let c = take(&mut g, QUEUE_TX, 5 - skip);
        for (c, t) in c.iter().zip(&t[skip..]) {
            assert_eq!(c.token, *t);
            assert_tx_ok(c);
        }
        take(&mut g, QUEUE_RX, 0);
        assert_eq!(g.release(CAP).unwrap(), S_OK);
        let c = take(&mut g, QUEUE_RX, 5 - skip);
        for (c, r) in c.iter().zip(&r[skip..]) {
            assert_eq!(c.token, *r);
            // U8 silence is 0x80: full buffers, used_len = data + 8.
            assert_rx_silence(c, 480, 0x80);
        }
        assert_eq!((g.in_flight(QUEUE_TX), g.in_flight(QUEUE_RX)), (0, 0));
    }
    alive(&mut g);
}
