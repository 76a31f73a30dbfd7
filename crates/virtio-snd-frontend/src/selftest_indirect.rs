//! Indirect descriptors against the echo device: negotiated by default, one ring
//! entry per chain with the chain in a table that is freed on completion, direct
//! chains when declined, and explicit tables built as the test says.

use std::io;
use std::sync::atomic::Ordering;

use super::echo_device::{serve, Echo, EchoServer};
use super::ring::{
    ring_bytes, DESC_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use super::selftest::{guest, pump, T};
use super::*;
use virtio_snd_wire::*;

fn serve_indirect() -> EchoServer {
    let echo = Echo::new(true);
    echo.indirect_offered.store(true, Ordering::Relaxed);
    serve(echo)
}

/// (addr, len, flags, next) of the `struct vring_desc` at `gpa`.
fn desc_at(g: &FakeGuest, gpa: u64) -> (u64, u32, u16, u16) {
    let b = g.read_ram(gpa, DESC_SIZE).unwrap();
    (
        u64::from_le_bytes(b[0..8].try_into().unwrap()),
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        u16::from_le_bytes([b[12], b[13]]),
        u16::from_le_bytes([b[14], b[15]]),
    )
}

#[test]
fn chains_go_into_indirect_tables_by_default() {
    let srv = serve_indirect();
    let mut g = guest(&srv);
    assert!(g.indirect());
    assert_ne!(g.features() & VIRTIO_RING_F_INDIRECT_DESC, 0);
    let base_ram = g.ram_in_use();
    g.set_auto_kick(false);
    // 64 periods of 3 descriptors each: only fits a 64-entry queue one entry apiece.
    let payloads: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 16]).collect();
    for p in &payloads {
        g.submit_tx(0, p).unwrap();
    }
    assert_eq!(g.free_descriptors(QUEUE_TX), 0);
    let ring = ring_bytes(g.options().queue_size) * QUEUE_TX as u64;
    for i in 0..64 {
        let (table, len, flags, _) = desc_at(&g, ring + (DESC_SIZE * i) as u64);
        assert_eq!((len, flags), (3 * DESC_SIZE as u32, VRING_DESC_F_INDIRECT));
        let e: Vec<_> = (0..3)
            .map(|j| desc_at(&g, table + (DESC_SIZE * j) as u64))
            .collect();
        assert_eq!((e[0].1, e[0].2, e[0].3), (4, VRING_DESC_F_NEXT, 1));
        assert_eq!((e[1].1, e[1].2, e[1].3), (16, VRING_DESC_F_NEXT, 2));
        assert_eq!((e[2].1, e[2].2), (8, VRING_DESC_F_WRITE));
    }
    assert_eq!(
        g.submit_tx(0, &[0; 16]).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    g.flush(QUEUE_TX).unwrap();
    let mut n = 0;
    while n < 64 {
        let cs = g.wait_io(QUEUE_TX, T).unwrap();
        assert!(!cs.is_empty(), "tx stalled at {n}");
        assert!(cs.iter().all(|c| c.status() == Some(S_OK)));
        n += cs.len();
    }
    let log = srv.echo.tx_log.lock().unwrap();
    let sent: Vec<_> = log.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(sent, payloads);
    drop(log);
    // Every table went back to the heap.
    assert_eq!(g.ram_in_use(), base_ram);
    g.set_auto_kick(true);
    // Split data, capture, and control requests all over indirect tables.
    pump(&mut g, &srv, 1000, 16);
    assert_eq!(g.probe().unwrap().pcms.len(), 2);
    assert_eq!(srv.echo.bad_chains.load(Ordering::Relaxed), 0);
}

#[test]
fn declined_or_not_offered_indirect_keeps_chains_direct() {
    let srv = serve_indirect();
    let opts = FakeGuestOptions {
        indirect: false,
        ..Default::default()
    };
    let mut g = FakeGuest::connect_with(&srv.path, T, opts).unwrap();
    assert!(!g.indirect());
    g.set_auto_kick(false);
    for _ in 0..21 {
        g.submit_tx(0, &[0; 16]).unwrap();
    }
    assert_eq!(g.free_descriptors(QUEUE_TX), 1);
    g.set_auto_kick(true);
    g.flush(QUEUE_TX).unwrap();
    let mut n = 0;
    while n < 21 {
        let cs = g.wait_io(QUEUE_TX, T).unwrap();
        assert!(!cs.is_empty(), "tx stalled at {n}");
        n += cs.len();
    }
    pump(&mut g, &srv, 100, 8);

    let srv = serve(Echo::new(true));
    let g = guest(&srv);
    assert_eq!(g.features() & VIRTIO_RING_F_INDIRECT_DESC, 0);
    assert!(!g.indirect());
}

#[test]
fn table_bytes_follow_the_entries_as_given() {
    let t = Desc::table_bytes(&[
        Desc::readable(0x1000, 4),
        Desc::writable(0x2000, 8).with_link(9),
        Desc::indirect(0x3000, 32),
    ]);
    assert_eq!(t.len(), 3 * DESC_SIZE);
    let e = |i: usize| &t[DESC_SIZE * i..DESC_SIZE * (i + 1)];
    assert_eq!(&e(0)[..8], &0x1000u64.to_le_bytes());
    assert_eq!(&e(0)[12..], &[1, 0, 1, 0]);
    // A link past the table stays past it.
    assert_eq!(&e(1)[8..], &[8, 0, 0, 0, 3, 0, 9, 0]);
    assert_eq!(&e(2)[8..], &[32, 0, 0, 0, 4, 0, 0, 0]);
    assert!(Desc::table_bytes(&[]).is_empty());
}

#[test]
fn explicit_tables_and_chains_go_in_as_given() {
    let srv = serve_indirect();
    let mut g = guest(&srv);
    let buf = g.alloc_ram(64).unwrap();
    g.write_ram(buf, &[0, 0, 0, 0, 7, 7, 7, 7]).unwrap();
    let good = g
        .indirect_table(&[
            Desc::readable(buf, 4),
            Desc::readable(buf + 4, 4),
            Desc::writable(buf + 16, 8),
        ])
        .unwrap();
    assert_eq!(good.len, 3 * DESC_SIZE as u32);
    let tok = g.submit_descs(QUEUE_TX, &[good]).unwrap();
    let c = g.wait_token(tok, T).unwrap();
    assert_eq!(c.used_len, 8);
    assert_eq!(g.read_ram(buf + 16, 4).unwrap(), S_OK.to_le_bytes());
    assert_eq!(
        srv.echo.tx_log.lock().unwrap().last(),
        Some(&(0, vec![7; 4]))
    );

    // Explicit chains are never wrapped in a table of the frontend's.
    g.set_auto_kick(false);
    let direct = [
        Desc::readable(buf, 4),
        Desc::readable(buf + 4, 4),
        Desc::writable(buf + 16, 8),
    ];
    let tok = g.submit_descs(QUEUE_TX, &direct).unwrap();
    assert_eq!(g.free_descriptors(QUEUE_TX), 61);
    g.set_auto_kick(true);
    g.flush(QUEUE_TX).unwrap();
    assert_eq!(g.wait_token(tok, T).unwrap().used_len, 8);

    // Malformed tables come back from a device that copes with them.
    let looping = g
        .indirect_table(&[
            Desc::readable(buf, 4),
            Desc::writable(buf + 16, 8).with_link(0),
        ])
        .unwrap();
    let nested = g.indirect_table(&[good]).unwrap();
    let cases = [
        looping,
        nested,
        Desc { len: 20, ..good },
        Desc { len: 0, ..good },
        Desc::indirect(g.ram_size(), 48),
        Desc {
            writable: true,
            ..good
        },
    ];
    for d in cases {
        let tok = g.submit_descs(QUEUE_TX, &[d]).unwrap();
        g.wait_token(tok, T).unwrap();
    }
    let tok = g
        .submit_descs(QUEUE_TX, &[good, Desc::writable(buf + 32, 8)])
        .unwrap();
    g.wait_token(tok, T).unwrap();
    assert_eq!(g.free_descriptors(QUEUE_TX), 64);
    pump(&mut g, &srv, 100, 8);
}

#[test]
fn restarting_the_driver_frees_tables_in_flight() {
    let srv = serve_indirect();
    let mut g = guest(&srv);
    let base_ram = g.ram_in_use();
    g.set_auto_kick(false);
    for _ in 0..10 {
        g.submit_rx(1, 64).unwrap();
    }
    g.pause().unwrap();
    g.restart_driver().unwrap();
    g.set_auto_kick(true);
    assert_eq!(g.ram_in_use(), base_ram);
    pump(&mut g, &srv, 100, 8);
}
