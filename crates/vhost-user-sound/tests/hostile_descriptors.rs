//! Descriptors a guest may forge: addresses outside guest RAM or overflowing, loops,
//! and chains longer than the queue. Each chain comes back unused, with nothing
//! written, and the device keeps working.

mod common;

use common::*;
use virtio_snd_frontend::{Desc, FakeGuest, POISON};
use virtio_snd_wire::*;

#[test]
fn descriptors_outside_guest_ram() {
    let (_rig, mut g) = Rig::new("outside-ram");
    let end = g.ram_size();
    let req = query(R_PCM_INFO, 0, 2, 32);
    let req_gpa = g.alloc_ram(64).unwrap();
    g.write_ram(req_gpa, &req).unwrap();
    let resp_gpa = g.alloc_ram(128).unwrap();
    let hdr_gpa = g.alloc_ram(8).unwrap();
    let data_gpa = g.alloc_ram(u64::from(PERIOD)).unwrap();
    let status_gpa = g.alloc_ram(8).unwrap();
    setup(&mut g, PLAY);
    setup(&mut g, CAP);

    let poison = |g: &mut FakeGuest| {
        g.write_ram(resp_gpa, &[POISON; 128]).unwrap();
        g.write_ram(status_gpa, &[POISON; 8]).unwrap();
        g.write_ram(data_gpa, &vec![POISON; PERIOD as usize])
            .unwrap();
    };
    let bad_addrs = [end, end - 2, end + (1 << 30), u64::MAX - 3, u64::MAX];
    for bad in bad_addrs {
        let cases: Vec<(&str, usize, Vec<Desc>)> = vec![
            (
                "control request",
                QUEUE_CONTROL,
                vec![Desc::readable(bad, 16), Desc::writable(resp_gpa, 68)],
            ),
            (
                "control response",
                QUEUE_CONTROL,
                vec![
                    Desc::readable(req_gpa, 16),
                    Desc::writable(resp_gpa, 8),
                    Desc::writable(bad, 64),
                ],
            ),
            (
                "tx header",
                QUEUE_TX,
                vec![
                    Desc::readable(bad, 4),
                    Desc::readable(data_gpa, PERIOD),
                    Desc::writable(status_gpa, 8),
                ],
            ),
            (
                "tx data",
                QUEUE_TX,
                vec![
                    Desc::readable(hdr_gpa, 4),
                    Desc::readable(bad, PERIOD),
                    Desc::writable(status_gpa, 8),
                ],
            ),
            (
                "tx status",
                QUEUE_TX,
                vec![
                    Desc::readable(hdr_gpa, 4),
                    Desc::readable(data_gpa, PERIOD),
                    Desc::writable(bad, 8),
                ],
            ),
            (
                "rx data",
                QUEUE_RX,
                vec![
                    Desc::readable(hdr_gpa, 4),
                    Desc::writable(bad, PERIOD),
                    Desc::writable(status_gpa, 8),
                ],
            ),
            (
                "rx status",
                QUEUE_RX,
                vec![
                    Desc::readable(hdr_gpa, 4),
                    Desc::writable(data_gpa, PERIOD),
                    Desc::writable(bad, 8),
                ],
            ),
        ];
        for (what, queue, descs) in cases {
            poison(&mut g);
            let stream = if queue == QUEUE_RX { CAP } else { PLAY };
            g.write_ram(hdr_gpa, &xfer(stream)).unwrap();
            let t = g.submit_descs(queue, &descs).unwrap();
            let c = g.wait_token(t, T).expect(what);
            let what = format!("{what} at {bad:#x}");
            assert_eq!(c.used_len, 0, "{what}: used_len");
            let resp = g.read_ram(resp_gpa, 128).unwrap();
            let st = g.read_ram(status_gpa, 8).unwrap();
            let dat = g.read_ram(data_gpa, PERIOD as usize).unwrap();
            assert_unused(0, &resp, &what);
            assert_unused(0, &st, &what);
            assert_unused(0, &dat, &what);
            alive(&mut g);
            setup(&mut g, PLAY);
            setup(&mut g, CAP);
        }
    }
    // The same chains inside RAM are fine.
    g.write_ram(hdr_gpa, &xfer(PLAY)).unwrap();
    let t = g
        .submit_descs(
            QUEUE_TX,
            &[
                Desc::readable(hdr_gpa, 4),
                Desc::readable(data_gpa, PERIOD),
                Desc::writable(status_gpa, 8),
            ],
        )
        .unwrap();
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    let c = g.wait_token(t, T).unwrap();
    assert_eq!(c.used_len, 8);
    assert_eq!(g.read_ram(status_gpa, 4).unwrap(), S_OK.to_le_bytes());
}

#[test]
fn descriptor_loops_and_overlong_chains() {
    let (_rig, mut g) = Rig::new("loops");
    let req = query(R_PCM_INFO, 0, 2, 32);
    let req_gpa = g.alloc_ram(64).unwrap();
    g.write_ram(req_gpa, &req).unwrap();
    let resp_gpa = g.alloc_ram(128).unwrap();
    let hdr_gpa = g.alloc_ram(8).unwrap();
    let data_gpa = g.alloc_ram(u64::from(PERIOD)).unwrap();
    let status_gpa = g.alloc_ram(8).unwrap();
    assert_eq!(g.free_descriptors(QUEUE_TX), 64);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);

    // 62 data descriptors of 4 bytes: a legal chain as long as the queue.
    let full = |stream_status: bool| {
        let mut v = vec![Desc::readable(hdr_gpa, 4)];
        v.extend((0..62).map(|i| Desc::readable(data_gpa + 4 * i, 4)));
        v.push(Desc::writable(status_gpa, 8));
        if stream_status {
            // Loop back to the start: never ends.
            let last = v.len() - 1;
            v[last] = v[last].with_link(0);
        }
        v
    };
    let cases: Vec<(&str, usize, Vec<Desc>)> = vec![
        (
            "control request looping on itself",
            QUEUE_CONTROL,
            vec![Desc::readable(req_gpa, 16).with_link(0)],
        ),
        (
            "control response looping on itself",
            QUEUE_CONTROL,
            vec![
                Desc::readable(req_gpa, 16),
                Desc::writable(resp_gpa, 4).with_link(1),
            ],
        ),
        (
            "control chain looping to its head",
            QUEUE_CONTROL,
            vec![
                Desc::readable(req_gpa, 16),
                Desc::writable(resp_gpa, 68).with_link(0),
            ],
        ),
        (
            "tx looping to its head",
            QUEUE_TX,
            vec![
                Desc::readable(hdr_gpa, 4),
                Desc::readable(data_gpa, PERIOD),
                Desc::writable(status_gpa, 8).with_link(0),
            ],
        ),
        (
            "tx data looping on itself",
            QUEUE_TX,
            vec![
                Desc::readable(hdr_gpa, 4),
                Desc::readable(data_gpa, 4).with_link(1),
            ],
        ),
        (
            "rx status looping on itself",
            QUEUE_RX,
            vec![
                Desc::readable(hdr_gpa, 4),
                Desc::writable(data_gpa, PERIOD),
                Desc::writable(status_gpa, 8).with_link(2),
            ],
        ),
        (
            "64-descriptor tx chain that loops (longer than the queue)",
            QUEUE_TX,
            full(true),
        ),
    ];
    for (what, queue, descs) in cases {
        let stream = if queue == QUEUE_RX { CAP } else { PLAY };
        g.write_ram(hdr_gpa, &xfer(stream)).unwrap();
        g.write_ram(resp_gpa, &[POISON; 128]).unwrap();
        g.write_ram(status_gpa, &[POISON; 8]).unwrap();
        g.write_ram(data_gpa, &vec![POISON; PERIOD as usize])
            .unwrap();
        let t = g.submit_descs(queue, &descs).unwrap();
        let c = g.wait_token(t, T).expect(what);
        assert_eq!(c.used_len, 0, "{what}: used_len");
        assert_unused(0, &g.read_ram(resp_gpa, 128).unwrap(), what);
        assert_unused(0, &g.read_ram(status_gpa, 8).unwrap(), what);
        assert_unused(0, &g.read_ram(data_gpa, PERIOD as usize).unwrap(), what);
        alive(&mut g);
        setup(&mut g, PLAY);
        setup(&mut g, CAP);
    }

    // The same 64 descriptors without the loop are a valid period of 248 bytes.
    g.write_ram(hdr_gpa, &xfer(PLAY)).unwrap();
    g.write_ram(status_gpa, &[POISON; 8]).unwrap();
    let t = g.submit_descs(QUEUE_TX, &full(false)).unwrap();
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    let c = g.wait_token(t, T).unwrap();
    assert_eq!(c.used_len, 8);
    assert_eq!(g.read_ram(status_gpa, 4).unwrap(), S_OK.to_le_bytes());
    // A chain longer than the queue cannot even be built by the driver.
    assert!(g
        .submit_descs(QUEUE_TX, &vec![Desc::readable(hdr_gpa, 4); 65])
        .is_err());
    alive(&mut g);
}
