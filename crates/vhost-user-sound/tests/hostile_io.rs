//! I/O chains the device must refuse: wrong queue or stream, malformed layouts, no
//! room for a status, partial frames, and I/O before PREPARE.

mod common;

use common::*;
use virtio_snd_frontend::{Completion, FakeGuest, Segment};
use virtio_snd_wire::*;

/// Status code in the last 8 bytes of a segment chain's writable data.
fn seg_status(c: &Completion) -> u32 {
    let n = c.data.len();
    assert!(n >= 8, "chain has a status area");
    u32::from_le_bytes([c.data[n - 8], c.data[n - 7], c.data[n - 6], c.data[n - 5]])
}

#[test]
fn hostile_io_chains() {
    let (_rig, mut g) = Rig::new("hostile-io");
    let data = period_of(7);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);

    // Wrong queue for the stream, unknown streams.
    for (queue, stream) in [(QUEUE_TX, CAP), (QUEUE_TX, 2), (QUEUE_TX, u32::MAX)] {
        let t = g.submit_tx(stream, &data).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!(
            (c.status(), c.used_len),
            (Some(S_IO_ERR), 8),
            "{stream} on {queue}"
        );
    }
    for stream in [PLAY, 2, u32::MAX] {
        let t = g.submit_rx(stream, PERIOD).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!(
            (c.status(), c.used_len),
            (Some(S_IO_ERR), 8),
            "{stream} on rx"
        );
        assert!(c.data.is_empty());
    }
    alive(&mut g);

    // Malformed layouts with a writable status area: BAD_MSG in the last 8 bytes.
    let hdr0 = xfer(PLAY);
    let hdr1 = xfer(CAP);
    let rdata = [0u8; 64];
    let cases: Vec<(&str, usize, Vec<Segment<'_>>)> = vec![
        (
            "tx with writable data",
            QUEUE_TX,
            vec![
                Segment::Read(&hdr0),
                Segment::Write(PERIOD),
                Segment::Write(8),
            ],
        ),
        (
            "tx with header, data and status all writable",
            QUEUE_TX,
            vec![Segment::Write(4 + PERIOD + 8)],
        ),
        (
            "rx with readable data",
            QUEUE_RX,
            vec![
                Segment::Read(&hdr1),
                Segment::Read(&rdata),
                Segment::Write(PERIOD),
                Segment::Write(8),
            ],
        ),
        ("tx without xfer header", QUEUE_TX, vec![Segment::Write(8)]),
        (
            "rx without xfer header",
            QUEUE_RX,
            vec![Segment::Write(PERIOD + 8)],
        ),
        (
            "tx with a 2-byte header",
            QUEUE_TX,
            vec![Segment::Read(&hdr0[..2]), Segment::Write(8)],
        ),
        (
            "rx with a 3-byte header",
            QUEUE_RX,
            vec![Segment::Read(&hdr1[..3]), Segment::Write(PERIOD + 8)],
        ),
        (
            "rx with writable data before a readable descriptor",
            QUEUE_RX,
            vec![
                Segment::Read(&hdr1),
                Segment::Write(PERIOD),
                Segment::Read(&rdata),
                Segment::Write(8),
            ],
        ),
    ];
    for (what, queue, segs) in &cases {
        let t = g.submit_segments(*queue, segs).unwrap();
        let c = g.wait_token(t, T).unwrap();
        // A readable descriptor after a writable one is not a chain at all.
        if what.contains("before a readable") {
            assert_unused(c.used_len, &c.data, what);
        } else {
            assert_eq!(c.used_len, 8, "{what}: used_len");
            assert_eq!(seg_status(&c), S_BAD_MSG, "{what}");
        }
        alive(&mut g);
        setup(&mut g, PLAY);
        setup(&mut g, CAP);
    }

    // No room for an 8-byte status: returned unused, nothing written.
    let no_status: Vec<(&str, usize, Vec<Segment<'_>>)> = vec![
        (
            "tx status of 4 bytes",
            QUEUE_TX,
            vec![
                Segment::Read(&hdr0),
                Segment::Read(&data),
                Segment::Write(4),
            ],
        ),
        (
            "tx without status",
            QUEUE_TX,
            vec![Segment::Read(&hdr0), Segment::Read(&data)],
        ),
        (
            "rx status of 7 bytes",
            QUEUE_RX,
            vec![Segment::Read(&hdr1), Segment::Write(7)],
        ),
        ("rx without writable", QUEUE_RX, vec![Segment::Read(&hdr1)]),
    ];
    for (what, queue, segs) in &no_status {
        let t = g.submit_segments(*queue, segs).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_unused(c.used_len, &c.data, what);
        alive(&mut g);
        setup(&mut g, PLAY);
        setup(&mut g, CAP);
    }

    // Payloads that are not a whole number of frames, or empty.
    for len in [0usize, 1, 2, 3, 1918, 1919] {
        let t = g.submit_tx(PLAY, &data[..len.min(data.len())]).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!((c.status(), c.used_len), (Some(S_IO_ERR), 8), "tx of {len}");
        let t = g.submit_rx(CAP, len as u32).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!((c.status(), c.used_len), (Some(S_IO_ERR), 8), "rx of {len}");
        assert!(c.data.is_empty(), "rx of {len}: no data");
    }
    let odd = vec![0u8; 1922];
    let t = g.submit_tx(PLAY, &odd).unwrap();
    assert_eq!(g.wait_token(t, T).unwrap().status(), Some(S_IO_ERR));
    alive(&mut g);
}

#[test]
fn io_before_prepare_is_refused() {
    let (_rig, mut g) = Rig::new("io-before-prepare");
    let data = period_of(1);
    let check = |g: &mut FakeGuest, when: &str| {
        let t = g.submit_tx(PLAY, &data).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!((c.status(), c.used_len), (Some(S_IO_ERR), 8), "tx {when}");
        let t = g.submit_rx(CAP, PERIOD).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!((c.status(), c.used_len), (Some(S_IO_ERR), 8), "rx {when}");
        assert!(c.data.is_empty());
    };
    check(&mut g, "when idle");
    assert_eq!(set_params(&mut g, PLAY), S_OK);
    assert_eq!(set_params(&mut g, CAP), S_OK);
    check(&mut g, "with parameters");
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    assert_eq!(g.prepare(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    check(&mut g, "after RELEASE");
    alive(&mut g);
}
