//! Malformed, truncated, oversized and out-of-range control and PCM requests: each
//! gets a status and nothing else, and the device keeps working.

mod common;

use common::*;
use vhost_user_sound::{Direction, PcmState};
use virtio_snd_frontend::{Segment, POISON};
use virtio_snd_wire::formats::FMT_S16;
use virtio_snd_wire::*;
use vm_memory::ByteValued;

#[test]
fn hostile_control_requests() {
    let (_rig, mut g) = Rig::new("hostile-control");
    let good_params = set_params_req(PLAY, BUFFER, PERIOD);
    let mut long = good_params.as_slice().to_vec();
    long.push(0);
    let mut oversized = query(R_PCM_INFO, 0, 1, 32);
    oversized.resize(65, 0);
    let mut at_limit = query(R_PCM_INFO, 0, 1, 32);
    at_limit.resize(64, 0);
    let cases: Vec<(&str, Vec<u8>, u32, u32)> = vec![
        ("2-byte request", vec![0x00, 0x01], 64, S_BAD_MSG),
        ("empty request", vec![], 64, S_BAD_MSG),
        ("65-byte request", oversized, 64, S_BAD_MSG),
        ("64-byte PCM_INFO", at_limit, 64, S_BAD_MSG),
        (
            "200-byte request",
            [R_PCM_INFO.to_le_bytes().to_vec(), vec![0; 196]].concat(),
            64,
            S_BAD_MSG,
        ),
        (
            "SET_PARAMS 23 bytes",
            good_params.as_slice()[..23].to_vec(),
            4,
            S_BAD_MSG,
        ),
        ("SET_PARAMS 25 bytes", long, 4, S_BAD_MSG),
        (
            "PREPARE 12 bytes",
            [pcm_hdr(R_PCM_PREPARE, 0), vec![0; 4]].concat(),
            4,
            S_BAD_MSG,
        ),
        (
            "START 4 bytes",
            R_PCM_START.to_le_bytes().to_vec(),
            4,
            S_BAD_MSG,
        ),
        (
            "PCM_INFO 12 bytes",
            query(R_PCM_INFO, 0, 1, 32)[..12].to_vec(),
            64,
            S_BAD_MSG,
        ),
        ("unknown code 0", pcm_hdr(0, 0), 4, S_NOT_SUPP),
        ("unknown code 0x0300", pcm_hdr(0x0300, 0), 4, S_NOT_SUPP),
        (
            "JACK_REMAP",
            vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            4,
            S_NOT_SUPP,
        ),
        (
            "unknown code u32::MAX",
            u32::MAX.to_le_bytes().to_vec(),
            4,
            S_NOT_SUPP,
        ),
        (
            "response too small for one PCM_INFO",
            query(R_PCM_INFO, 0, 1, 32),
            4 + 31,
            S_BAD_MSG,
        ),
        (
            "response too small for two CHMAP_INFO",
            query(R_CHMAP_INFO, 0, 2, 24),
            4 + 47,
            S_BAD_MSG,
        ),
        (
            "count u32::MAX",
            query(R_CHMAP_INFO, 0, u32::MAX, 24),
            4 + 16 * 24,
            S_BAD_MSG,
        ),
        (
            "start u32::MAX",
            query(R_PCM_INFO, u32::MAX, 1, 32),
            64,
            S_BAD_MSG,
        ),
        (
            "start u32::MAX, count 2",
            query(R_PCM_INFO, u32::MAX, 2, 32),
            100,
            S_BAD_MSG,
        ),
        (
            "size u32::MAX",
            query(R_PCM_INFO, 0, 1, u32::MAX),
            64,
            S_BAD_MSG,
        ),
        (
            "count and size u32::MAX",
            query(R_CHMAP_INFO, 0, u32::MAX, u32::MAX),
            64,
            S_BAD_MSG,
        ),
        (
            "count * size wraps 32 bits",
            query(R_JACK_INFO, 0, 0x8000_0000, 0x20),
            64,
            S_BAD_MSG,
        ),
        ("size 0", query(R_PCM_INFO, 0, 1, 0), 64, S_BAD_MSG),
    ];
    for (what, req, resp_len, want) in cases {
        let r = g.control(&req, resp_len).expect(what);
        assert_eq!(r.status(), want, "{what}");
        assert_eq!(r.used_len, 4, "{what}: only a status");
        assert!(
            r.resp[4..].iter().all(|b| *b == POISON),
            "{what}: nothing written after the status"
        );
        alive(&mut g);
    }

    // No room for the 4-byte status: returned unused, nothing written.
    for resp_len in [0, 1, 3] {
        let r = g.control(&query(R_PCM_INFO, 0, 1, 32), resp_len).unwrap();
        assert_unused(r.used_len, &r.resp, "response area < 4 bytes");
        alive(&mut g);
    }
    // Response split over several descriptors, and a status split in two.
    let t = g
        .submit_segments(
            QUEUE_CONTROL,
            &[
                Segment::Read(&query(R_PCM_INFO, 0, 2, 32)),
                Segment::Write(2),
                Segment::Write(30),
                Segment::Write(36),
            ],
        )
        .unwrap();
    let c = g.wait_token(t, T).unwrap();
    assert_eq!(c.used_len, 68);
    assert_eq!(&c.data[..4], &S_OK.to_le_bytes());
    assert_eq!(c.data[4 + 32 + 24], D_INPUT, "second item's direction");
    alive(&mut g);
}

#[test]
fn hostile_pcm_requests() {
    let (rig, mut g) = Rig::new("hostile-pcm");
    // Stream ids out of range, for every PCM request.
    for stream in [2, 3, 0x100, u32::MAX] {
        let r = g
            .control_obj(&set_params_req(stream, BUFFER, PERIOD), 4)
            .unwrap();
        assert_eq!(
            (r.status(), r.used_len),
            (S_BAD_MSG, 4),
            "SET_PARAMS {stream}"
        );
        for code in [R_PCM_PREPARE, R_PCM_START, R_PCM_STOP, R_PCM_RELEASE] {
            let r = g.control(&pcm_hdr(code, stream), 4).unwrap();
            assert_eq!(
                (r.status(), r.used_len),
                (S_BAD_MSG, 4),
                "{code:#x} on stream {stream}"
            );
        }
        alive(&mut g);
    }
    // Bad parameters.
    let bad: &[(&str, u32, u32, u8, u8, u8, u32)] = &[
        (
            "period not whole frames",
            4 * 1922,
            1922,
            2,
            FMT_S16,
            RATE,
            S_BAD_MSG,
        ),
        ("period 2 bytes", 8, 2, 2, FMT_S16, RATE, S_BAD_MSG),
        (
            "buffer not a multiple",
            5000,
            PERIOD,
            2,
            FMT_S16,
            RATE,
            S_BAD_MSG,
        ),
        (
            "buffer < period",
            PERIOD / 2,
            PERIOD,
            2,
            FMT_S16,
            RATE,
            S_BAD_MSG,
        ),
        ("period 0", BUFFER, 0, 2, FMT_S16, RATE, S_BAD_MSG),
        ("all 0", 0, 0, 2, FMT_S16, RATE, S_BAD_MSG),
        ("channels 0", BUFFER, PERIOD, 0, FMT_S16, RATE, S_NOT_SUPP),
        ("channels 9", BUFFER, PERIOD, 9, FMT_S16, RATE, S_NOT_SUPP),
        (
            "channels 255",
            BUFFER,
            PERIOD,
            255,
            FMT_S16,
            RATE,
            S_NOT_SUPP,
        ),
        ("format 0", BUFFER, PERIOD, 2, 0, RATE, S_NOT_SUPP),
        ("format 13", BUFFER, PERIOD, 2, 13, RATE, S_NOT_SUPP),
        ("format 255", BUFFER, PERIOD, 2, 255, RATE, S_NOT_SUPP),
        ("rate 13", BUFFER, PERIOD, 2, FMT_S16, 13, S_NOT_SUPP),
        ("rate 255", BUFFER, PERIOD, 2, FMT_S16, 255, S_NOT_SUPP),
    ];
    for &(what, buffer, period, ch, fmt, rate, want) in bad {
        for stream in [PLAY, CAP] {
            let st = g.set_params(stream, buffer, period, ch, fmt, rate).unwrap();
            assert_eq!(st, want, "{what} (stream {stream})");
            assert_eq!(
                rig.state(Direction::from_stream_id(stream).unwrap()),
                PcmState::Released,
                "{what}: a refused SET_PARAMS changes nothing"
            );
        }
        alive(&mut g);
    }
    let mut req = set_params_req(PLAY, BUFFER, PERIOD);
    req.features = 1.into();
    assert_eq!(g.control_obj(&req, 4).unwrap().status(), S_NOT_SUPP);
    alive(&mut g);
}
