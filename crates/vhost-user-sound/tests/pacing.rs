//! Periods complete on the stream clock, one per period and sample-exact, and running
//! streams take new I/O from the rings without kicks.

mod common;

use common::*;
use vhost_user_sound::Direction;
use virtio_snd_frontend::{FakeGuest, FakeGuestOptions};
use virtio_snd_wire::*;

#[test]
fn pacing_follows_the_clock_exactly() {
    let (rig, mut g) = Rig::new("pacing");
    let card = rig.dev().card().clone();
    // 20 ms of downstream latency = 3840 bytes at 192000 B/s.
    card.set_playback_latency(20_000_000);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);
    // Three periods of a ramp for the guest's capture, a period at a time. Before
    // START nothing is kept: the recording starts at START.
    let pattern: Vec<u8> = (0..3 * PERIOD / 2)
        .flat_map(|i| (i as u16).wrapping_mul(7).to_le_bytes())
        .collect();
    assert!(!card.push_capture(&pattern, None));
    let t: Vec<_> = (0..5).map(|i| tx(&mut g, i)).collect();
    let r: Vec<_> = (0..5)
        .map(|i| g.submit_rx_split(CAP, PERIOD, 1 + i % 3).unwrap())
        .collect();

    let start = rig.tl.now();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    assert_eq!(rig.tl.blocked(PLAY), start + PERIOD_NS);
    assert_eq!(rig.tl.blocked(CAP), start + PERIOD_NS);
    for chunk in pattern.chunks(PERIOD as usize) {
        // Queued: the card's pacer completes capture on its clock.
        assert!(card.push_capture(chunk, None));
    }

    // One nanosecond short of the first period: nothing.
    let checks = rig.tl.lock().checks;
    rig.tl.advance_to(start + PERIOD_NS - 1);
    drop(rig.tl.wait_state("looked at the time again", |s| {
        (0..2).all(|i| s.checks[i] > checks[i] && s.waiting[i] == Some(start + PERIOD_NS))
    }));
    assert_quiet(&mut g, QUEUE_TX, "before the first period");
    assert_quiet(&mut g, QUEUE_RX, "before the first period");

    // Three periods, one at a time: exactly one completion each, sample-exact capture.
    let mut expect_fifo = pattern.len();
    for i in 0..3 {
        let now = rig.tl.step(&[PLAY, CAP]);
        assert_eq!(now, start + (i as u64 + 1) * PERIOD_NS);
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, t[i]);
        assert_tx_ok(&c[0]);
        assert_eq!(c[0].latency_bytes(), Some(3840), "playback latency");
        let c = take(&mut g, QUEUE_RX, 1);
        assert_eq!(c[0].token, r[i]);
        assert_eq!(c[0].status(), Some(S_OK));
        assert_eq!(c[0].used_len, PERIOD + 8);
        let from = i * PERIOD as usize;
        let want = &pattern[from..from + PERIOD as usize];
        assert!(c[0].data == want, "capture period {i} is sample-exact");
        expect_fifo = expect_fifo.saturating_sub(PERIOD as usize);
        assert_eq!(
            c[0].latency_bytes(),
            Some(expect_fifo as u32),
            "capture latency = audio still queued"
        );
    }
    // Nothing queued any more: silence.
    let now = rig.tl.step(&[PLAY, CAP]);
    assert_eq!(now, start + 4 * PERIOD_NS);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t[3]);
    let c = take(&mut g, QUEUE_RX, 1);
    assert_eq!(c[0].token, r[3]);
    assert_rx_silence(&c[0], PERIOD, 0);

    // k periods later, exactly k more completions (underruns included in the count).
    let more: Vec<_> = (0..4).map(|i| tx(&mut g, 10 + i)).collect();
    // Queued while running: a control round trip makes sure the device has them (it
    // takes queued I/O before answering), otherwise the next periods could under-run.
    assert_eq!(g.pcm_info(0, 1).unwrap().0, S_OK);
    let k = 3;
    for _ in 0..k {
        rig.tl.step(&[PLAY, CAP]);
    }
    let c = take(&mut g, QUEUE_TX, k);
    assert_eq!(c[0].token, t[4]);
    assert_eq!(c[1].token, more[0]);
    assert_eq!(c[2].token, more[1]);
    assert_eq!(take(&mut g, QUEUE_RX, 1)[0].token, r[4]);
    assert_eq!(rig.tl.now(), start + 7 * PERIOD_NS);
    assert_eq!(card.snapshot(Direction::Playback).periods, 7);
    assert_eq!(card.snapshot(Direction::Capture).periods, 7);
    assert_eq!(g.in_flight(QUEUE_TX), 2);

    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    assert_eq!(take(&mut g, QUEUE_TX, 2)[1].token, more[3]);
    card.set_playback_latency(0);
}

/// While a stream runs with I/O queued, the device takes the guest's new periods from
/// the ring at each period by itself and asks for no kicks (EVENT_IDX, or the used
/// ring's NO_NOTIFY flag without it); once the stream stops, kicks are asked for again.
fn fed_without_kicks(rig: &Rig, g: &mut FakeGuest) {
    setup(g, PLAY);
    setup(g, CAP);
    let mut tq: std::collections::VecDeque<_> = (0..2).map(|i| tx(g, i)).collect();
    let mut rq: std::collections::VecDeque<_> = (0..2).map(|_| rx(g)).collect();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    let kicks = [g.kicks(QUEUE_TX), g.kicks(QUEUE_RX)];
    for i in 0..20 {
        rig.tl.step(&[PLAY, CAP]);
        let c = take(g, QUEUE_TX, 1);
        assert_eq!(Some(c[0].token), tq.pop_front(), "tx period {i} in order");
        assert_tx_ok(&c[0]);
        let c = take(g, QUEUE_RX, 1);
        assert_eq!(Some(c[0].token), rq.pop_front(), "rx period {i} in order");
        assert_rx_silence(&c[0], PERIOD, 0);
        tq.push_back(tx(g, 2 + i));
        rq.push_back(rx(g));
    }
    // With EVENT_IDX the kick the device last asked for (before START) is still
    // owed once; after that, none.
    for (q, before) in [(QUEUE_TX, kicks[0]), (QUEUE_RX, kicks[1])] {
        let n = g.kicks(q) - before;
        assert!(
            n <= 1,
            "{n} kicks on queue {q} for 20 periods of a running stream"
        );
    }
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    let before = g.kicks(QUEUE_TX);
    tq.push_back(tx(g, 99));
    assert_eq!(
        g.kicks(QUEUE_TX),
        before + 1,
        "a stopped stream asks for kicks"
    );
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    let c = take(g, QUEUE_TX, 3);
    assert!(
        c.iter().map(|c| c.token).eq(tq),
        "RELEASE returns the rest in order"
    );
    let c = take(g, QUEUE_RX, 2);
    assert!(c.iter().map(|c| c.token).eq(rq));
}

#[test]
fn running_streams_are_fed_without_kicks() {
    let (rig, mut g) = Rig::new("no-kicks");
    assert!(
        g.event_idx(),
        "the device offers EVENT_IDX and the guest takes it"
    );
    fed_without_kicks(&rig, &mut g);
    drop(g);
    let opts = FakeGuestOptions {
        event_idx: false,
        ..FakeGuestOptions::default()
    };
    let mut g = FakeGuest::connect_with(&rig.path, T, opts).expect("reconnect");
    assert!(!g.event_idx());
    fed_without_kicks(&rig, &mut g);
}

/// A rig whose playback vhostsndsrc paces (its ticks are `Card::take_playback`).
fn element_paced(test: &str) -> (Rig, FakeGuest, std::sync::Arc<vhost_user_sound::Card>) {
    let (rig, g) = Rig::new(test);
    let card = rig.dev().card().clone();
    card.set_pacing(Direction::Playback, vhost_user_sound::Pacing::Element);
    (rig, g, card)
}

/// vhostsndsrc completes playback on its own clock; when it stops ticking (its
/// downstream blocks) the card's pacer keeps the guest's time after a grace of half
/// the guest's buffer and half a period, one period per period, and the element's
/// catching-up ticks get the audio of those periods instead of bursting the backlog
/// into the guest.
#[test]
fn a_stalled_element_is_covered_by_the_pacer() {
    let (rig, mut g, card) = element_paced("stand-by");
    setup(&mut g, PLAY);
    let t: Vec<_> = (0..4).map(|i| tx(&mut g, i)).collect();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    let start = rig.tl.now();

    // The element ticks every period: it completes, the pacer only stands by.
    let taken = |card: &vhost_user_sound::Card| {
        matches!(
            card.take_playback(&mut Vec::new()),
            vhost_user_sound::Playback::Data(_)
        )
    };
    for (i, tok) in t.iter().take(2).enumerate() {
        rig.tl.advance_to(start + (i as u64 + 1) * PERIOD_NS);
        assert!(taken(&card), "the element's tick completes period {i}");
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, *tok);
        let _ = tx(&mut g, 10 + i as u8);
    }
    // The 4-period buffer gives a grace of 2.5 periods of the element's clock after
    // its last tick (the pacer looks again at least that often in real time): two
    // periods without one are nothing to act on yet.
    let last_tick = start + 2 * PERIOD_NS;
    rig.tl.advance_to(last_tick + 2 * PERIOD_NS);
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_quiet(&mut g, QUEUE_TX, "the element is within its grace");

    // The element stalls: after the grace the pacer completes one period per period.
    for (k, tok) in t.iter().enumerate().skip(2) {
        rig.tl
            .advance_to(last_tick + k as u64 * PERIOD_NS + PERIOD_NS / 2);
        let c = g.wait_io(QUEUE_TX, T).unwrap();
        assert_eq!(c.len(), 1, "periods completed for the stalled element");
        assert_eq!(c[0].token, *tok);
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_quiet(&mut g, QUEUE_TX, "one period per period");
    }

    // The element is back and catches up on its timeline at once: the two periods
    // the pacer covered come back with their audio, then it completes in step again.
    for seed in 2..4 {
        let mut audio = Vec::new();
        assert!(
            matches!(
                card.take_playback(&mut audio),
                vhost_user_sound::Playback::Data(_)
            ),
            "a covered slot completed a period"
        );
        assert!(
            audio == period_of(seed),
            "covered period {seed} is the guest's"
        );
    }
    assert_quiet(&mut g, QUEUE_TX, "the element caught up");
    assert!(
        taken(&card),
        "the element's tick in step completes a period"
    );
    assert_eq!(take(&mut g, QUEUE_TX, 1).len(), 1);
}

/// A stall downstream longer than the card holds audio for: the catching-up ticks get
/// nothing to play for the oldest periods the pacer completed, then the audio of the
/// last `HELD_NS` of them, in order, and the guest's own time never stopped.
#[test]
fn a_long_stall_keeps_the_last_of_the_audio() {
    use vhost_user_sound::{Playback, HELD_NS};
    let (rig, mut g, card) = element_paced("long-stall");
    setup(&mut g, PLAY);
    for i in 0..4 {
        let _ = tx(&mut g, i);
    }
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    let start = rig.tl.now();
    assert!(matches!(
        card.take_playback(&mut Vec::new()),
        Playback::Data(_)
    ));
    let _ = take(&mut g, QUEUE_TX, 1);
    let _ = tx(&mut g, 4);

    // The element's last tick was at `start`; the grace of a 4-period buffer is 2.5
    // periods, then the pacer completes a period per period, the guest refilling.
    let held = (HELD_NS / PERIOD_NS) as u8;
    let covered = held + 6;
    for k in 0..covered {
        rig.tl
            .advance_to(start + 5 * PERIOD_NS / 2 + u64::from(k) * PERIOD_NS);
        let c = g.wait_io(QUEUE_TX, T).unwrap();
        assert_eq!(c.len(), 1, "the pacer keeps the guest's time");
        let _ = tx(&mut g, 5 + k);
    }
    // The guest's periods 1..=covered were completed by the pacer.
    let mut ticks = Vec::new();
    for _ in 0..covered {
        let mut audio = Vec::new();
        match card.take_playback(&mut audio) {
            Playback::Data(_) => ticks.push(Some(audio)),
            Playback::Idle => ticks.push(None),
            Playback::Silence => panic!("the guest never under-ran"),
        }
    }
    let dropped = usize::from(covered - held);
    assert!(
        ticks[..dropped].iter().all(Option::is_none),
        "the oldest are dropped"
    );
    for (i, audio) in ticks[dropped..].iter().enumerate() {
        let seed = 1 + dropped as u8 + i as u8;
        assert!(
            audio.as_deref() == Some(&period_of(seed)[..]),
            "held period {seed} is the guest's, in order"
        );
    }
    assert!(
        matches!(card.take_playback(&mut Vec::new()), Playback::Data(_)),
        "in step again, the element completes the guest's next period itself"
    );
}

/// A tick without a guest period is nothing to play while the guest has no stream set
/// up, and a period of silence in a stream it set up, running or not: its audio may
/// come at the next tick.
#[test]
fn a_tick_without_a_period_is_idle_or_silence_by_the_guests_stream() {
    use vhost_user_sound::Playback;
    let (_rig, mut g, card) = element_paced("idle-or-silence");
    let tick = |card: &vhost_user_sound::Card| match card.take_playback(&mut Vec::new()) {
        Playback::Data(_) => "data",
        Playback::Idle => "idle",
        Playback::Silence => "silence",
    };
    assert_eq!(tick(&card), "idle", "no parameters");
    assert_eq!(set_params(&mut g, PLAY), S_OK);
    assert_eq!(tick(&card), "silence", "parameters set");
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    assert_eq!(tick(&card), "silence", "prepared");
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(tick(&card), "silence", "running, nothing queued");
    let _ = tx(&mut g, 1);
    // The device takes the period at the guest's kick (a control round trip later).
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(tick(&card), "silence", "stopped");
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(tick(&card), "data", "running, a period queued");
    assert_eq!(take(&mut g, QUEUE_TX, 1).len(), 1);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(tick(&card), "idle", "released");
}
