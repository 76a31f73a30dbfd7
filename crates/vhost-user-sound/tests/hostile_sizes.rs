//! Sizes the guest controls are bounded before the device allocates or copies
//! anything: descriptors that alias guest RAM into a message of a gigabyte, periods
//! and info items of any size the guest's buffer could hold. Control replies stay
//! fast while the largest periods the device accepts stream both ways.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use vhost_user_sound::{MAX_INFO_SIZE, MAX_PERIOD_BYTES};
use virtio_snd_frontend::{Desc, FakeGuest, FakeGuestOptions, Segment, POISON};
use virtio_snd_wire::formats::FMT_S16;
use virtio_snd_wire::*;

const ALIAS: u64 = 256 << 20;

/// Submits `[xfer][4 x the same 256 MiB area][status]` on `queue` and returns the
/// completion's used length and status, and how long the device took.
fn aliased(g: &mut FakeGuest, queue: usize, stream: u32, area: u64) -> (u32, u32, Duration) {
    let hdr = g.alloc_ram(8).unwrap();
    g.write_ram(hdr, &xfer(stream)).unwrap();
    let status = g.alloc_ram(8).unwrap();
    g.write_ram(status, &[POISON; 8]).unwrap();
    let capture = queue == QUEUE_RX;
    let mut descs = vec![Desc::readable(hdr, 4)];
    for _ in 0..4 {
        descs.push(if capture {
            Desc::writable(area, ALIAS as u32)
        } else {
            Desc::readable(area, ALIAS as u32)
        });
    }
    descs.push(Desc::writable(status, 8));
    let t = Instant::now();
    let tok = g.submit_descs(queue, &descs).unwrap();
    let c = g.wait_token(tok, T).expect("the chain comes back");
    let took = t.elapsed();
    let st = g.read_ram(status, 4).unwrap();
    (
        c.used_len,
        u32::from_le_bytes([st[0], st[1], st[2], st[3]]),
        took,
    )
}

#[test]
fn messages_larger_than_a_period_are_refused_uncopied() {
    let opts = FakeGuestOptions {
        mem_size: 512 << 20,
        ..FakeGuestOptions::default()
    };
    let (_rig, mut g) = Rig::with_options("oversized-io", opts);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);
    let area = g.alloc_ram(ALIAS).unwrap();
    let marks = [0, 1 << 20, ALIAS - 1];
    for m in marks {
        g.write_ram(area + m, &[POISON]).unwrap();
    }
    let before = rss_kib() * 1024;

    // A gigabyte of playback: answered IO_ERR, at once.
    let (used, status, took) = aliased(&mut g, QUEUE_TX, PLAY, area);
    assert_eq!((used, status), (8, S_IO_ERR), "1 GiB tx message");
    assert!(
        took < Duration::from_millis(100),
        "tx refusal took {took:?}"
    );

    // A gigabyte of capture: answered IO_ERR, and nothing written into it.
    let (used, status, took) = aliased(&mut g, QUEUE_RX, CAP, area);
    assert_eq!((used, status), (8, S_IO_ERR), "1 GiB rx message");
    assert!(
        took < Duration::from_millis(100),
        "rx refusal took {took:?}"
    );
    for m in marks {
        assert_eq!(
            g.read_ram(area + m, 1).unwrap(),
            [POISON],
            "capture data written at +{m}"
        );
    }
    let grown = (rss_kib() * 1024).saturating_sub(before);
    assert!(grown < 16 << 20, "RSS grew by {grown} bytes");

    // One frame over a period is refused too; a whole period is queued.
    let over = g
        .submit_segments(
            QUEUE_TX,
            &[
                Segment::Read(&xfer(PLAY)),
                Segment::Read(&vec![0; PERIOD as usize + 4]),
                Segment::Write(8),
            ],
        )
        .unwrap();
    let c = g.wait_token(over, T).unwrap();
    assert_eq!(&c.data[..4], &S_IO_ERR.to_le_bytes(), "period + 1 frame");
    let _ = tx(&mut g, 1);
    assert_quiet(&mut g, QUEUE_TX, "a whole period waits for START");
    alive(&mut g);
}

#[test]
fn periods_and_info_items_are_capped() {
    let (_rig, mut g) = Rig::new("size-caps");
    // 8 channels of S16 at 48 kHz: the largest period allowed, and one frame more.
    let frame = 16;
    let max = MAX_PERIOD_BYTES / frame * frame;
    assert_eq!(
        g.set_params(PLAY, 2 * max, max, 8, FMT_S16, RATE).unwrap(),
        S_OK
    );
    assert_eq!(
        g.set_params(PLAY, 2 * (max + frame), max + frame, 8, FMT_S16, RATE)
            .unwrap(),
        S_NOT_SUPP
    );

    // Room for 4 MiB of reply: an item of MAX_INFO_SIZE fits, one byte more does not.
    let room = 4 << 20;
    let r = g
        .control(&query(R_PCM_INFO, 0, 2, MAX_INFO_SIZE), room)
        .unwrap();
    assert_eq!(r.status(), S_OK);
    assert_eq!(r.used_len, 4 + 2 * MAX_INFO_SIZE);
    let r = g
        .control(&query(R_PCM_INFO, 0, 2, MAX_INFO_SIZE + 1), room)
        .unwrap();
    assert_eq!((r.status(), r.used_len), (S_BAD_MSG, 4));
    alive(&mut g);
}

#[test]
fn control_answers_fast_while_the_largest_periods_stream() {
    let opts = FakeGuestOptions {
        mem_size: 96 << 20,
        ..FakeGuestOptions::default()
    };
    let (rig, mut g) = Rig::with_options("largest-periods", opts);
    let frame = 16;
    let period = MAX_PERIOD_BYTES / frame * frame;
    for stream in [PLAY, CAP] {
        assert_eq!(
            g.set_params(stream, 4 * period, period, 8, FMT_S16, RATE)
                .unwrap(),
            S_OK
        );
        assert_eq!(g.prepare(stream).unwrap(), S_OK);
    }
    let audio = vec![0x11; period as usize];
    for _ in 0..8 {
        g.submit_tx(PLAY, &audio).unwrap();
        g.submit_rx(CAP, period).unwrap();
    }
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);

    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..8 {
                rig.tl.step(&[PLAY, CAP]);
            }
            done.store(true, Ordering::Relaxed);
        });
        let mut worst = Duration::ZERO;
        let mut asked = 0;
        while !done.load(Ordering::Relaxed) || asked < 20 {
            let t = Instant::now();
            let (st, infos) = g.pcm_info(0, 2).unwrap();
            assert_eq!((st, infos.len()), (S_OK, 2));
            worst = worst.max(t.elapsed());
            asked += 1;
        }
        assert!(
            worst < Duration::from_millis(100),
            "PCM_INFO took up to {worst:?} while 2 MiB periods were copied"
        );
    });
    let played = g.wait_io(QUEUE_TX, T).unwrap().len();
    assert!(played > 0, "no playback period completed");
}

#[test]
fn a_stream_queues_at_most_its_ring() {
    let (_rig, mut g) = Rig::new("republished-head");
    setup(&mut g, PLAY);
    // Prepared, not started: everything queued stays queued.
    let tok = tx(&mut g, 1);
    for _ in 1..64 {
        g.republish(tok).unwrap();
    }
    assert_quiet(&mut g, QUEUE_TX, "64 queued messages, the ring's size");
    // One more than the ring holds is refused.
    g.republish(tok).unwrap();
    let c = g.wait_token(tok, T).expect("the 65th message is answered");
    assert_eq!((c.status(), c.used_len), (Some(S_IO_ERR), 8));
}
