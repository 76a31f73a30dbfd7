//! Indirect descriptors (VIRTIO_RING_F_INDIRECT_DESC), which the fake guest negotiates
//! and uses for every chain as Linux does: playback, capture and control work over
//! them; malformed tables (loops, links past the table, nested tables, bad lengths,
//! tables outside RAM) come back unused and the device keeps serving; what the spec
//! tells the device to ignore is ignored, and an unnegotiated INDIRECT flag is
//! followed, as QEMU does.

mod common;

use common::*;
use vhost_user_sound::MAX_CHAIN;
use virtio_snd_frontend::{Desc, FakeGuest, FakeGuestOptions};
use virtio_snd_wire::*;

/// The buffers of one request, in guest RAM for the whole test.
struct Bufs {
    req: u64,
    resp: u64,
    hdr: u64,
    data: u64,
    status: u64,
    /// Behind a ring descriptor the device must never follow.
    spare: u64,
    /// Room for a table larger than the ring index allows.
    big: u64,
}

/// The PCM_INFO reply: a status and two 32-byte items.
const RESP: u32 = 4 + 2 * 32;
/// 65536 table entries.
const BIG: u64 = 16 << 16;

impl Bufs {
    fn new(g: &mut FakeGuest) -> Bufs {
        let b = Bufs {
            req: g.alloc_ram(64).unwrap(),
            resp: g.alloc_ram(128).unwrap(),
            hdr: g.alloc_ram(8).unwrap(),
            data: g.alloc_ram(u64::from(PERIOD)).unwrap(),
            status: g.alloc_ram(8).unwrap(),
            spare: g.alloc_ram(64).unwrap(),
            big: g.alloc_ram(BIG).unwrap(),
        };
        g.write_ram(b.req, &query(R_PCM_INFO, 0, 2, 32)).unwrap();
        b
    }

    /// Poisons everything the device could write and puts the right stream in the
    /// xfer header.
    fn reset(&self, g: &mut FakeGuest, queue: usize) {
        let stream = if queue == QUEUE_RX { CAP } else { PLAY };
        g.write_ram(self.hdr, &xfer(stream)).unwrap();
        for (gpa, len) in [
            (self.resp, 128),
            (self.status, 8),
            (self.spare, 64),
            (self.data, PERIOD as usize),
        ] {
            g.write_ram(gpa, &vec![virtio_snd_frontend::POISON; len])
                .unwrap();
        }
    }

    /// A well-formed request for `queue` as table entries.
    fn entries(&self, queue: usize) -> Vec<Desc> {
        match queue {
            QUEUE_CONTROL => vec![
                Desc::readable(self.req, 16),
                Desc::writable(self.resp, RESP),
            ],
            QUEUE_TX => vec![
                Desc::readable(self.hdr, 4),
                Desc::readable(self.data, PERIOD),
                Desc::writable(self.status, 8),
            ],
            _ => vec![
                Desc::readable(self.hdr, 4),
                Desc::writable(self.data, PERIOD),
                Desc::writable(self.status, 8),
            ],
        }
    }

    /// Nothing written anywhere.
    fn assert_untouched(&self, g: &FakeGuest, what: &str) {
        assert_unused(0, &g.read_ram(self.resp, 128).unwrap(), what);
        assert_unused(0, &g.read_ram(self.status, 8).unwrap(), what);
        assert_unused(0, &g.read_ram(self.spare, 64).unwrap(), what);
        assert_unused(0, &g.read_ram(self.data, PERIOD as usize).unwrap(), what);
    }
}

/// Indirect descriptors the device must refuse, for a request on `queue`.
fn malformed(g: &mut FakeGuest, b: &Bufs, queue: usize) -> Vec<(String, Desc)> {
    let e = b.entries(queue);
    let n = e.len();
    let end = g.ram_size();
    let linked = |i: usize, to: usize| {
        let mut v = e.clone();
        v[i] = v[i].with_link(to);
        v
    };
    let mut outside = e.clone();
    outside[n - 1].addr = end;
    let whole = g.indirect_table(&e).unwrap();
    let rest = g.indirect_table(&e[1..]).unwrap();
    let tables: Vec<(&str, Vec<Desc>)> = vec![
        ("entries looping to the first", linked(n - 1, 0)),
        ("first entry looping on itself", linked(0, 0)),
        ("last entry linking just past the table", linked(n - 1, n)),
        ("first entry linking far past the table", linked(0, 0xffff)),
        // A device that followed nested tables would serve these in full.
        ("nested table after a descriptor", vec![e[0], rest]),
        ("nested table as the only entry", vec![whole]),
        ("entry outside guest RAM", outside),
    ];
    let mut cases: Vec<(&str, Desc)> = tables
        .into_iter()
        .map(|(what, t)| (what, g.indirect_table(&t).unwrap()))
        .collect();
    for (what, len) in [
        ("table length one byte short", whole.len - 1),
        ("table length half an entry long", whole.len + 8),
        ("table length under one entry", 8),
        ("zero-length table", 0),
    ] {
        cases.push((what, Desc { len, ..whole }));
    }
    for (what, addr) in [
        ("table just past guest RAM", end),
        ("table straddling the end of guest RAM", end - 16),
        ("table at the top of the address space", u64::MAX - 15),
    ] {
        cases.push((what, Desc::indirect(addr, whole.len)));
    }
    // Sizes the device must bound: more entries than a u16 indexes, and the most it
    // does index, looping.
    let mut many = vec![Desc::readable(b.hdr, 4); 0xffff];
    many[0xfffe] = many[0xfffe].with_link(0);
    g.write_ram(b.big, &Desc::table_bytes(&many)).unwrap();
    cases.push(("65536-entry table", Desc::indirect(b.big, BIG as u32)));
    cases.push((
        "65535-entry table that loops",
        Desc::indirect(b.big, BIG as u32 - 16),
    ));
    let long = g.indirect_table(&padded(&e, MAX_CHAIN + 1)).unwrap();
    cases.push(("table of more than MAX_CHAIN entries", long));
    cases
        .into_iter()
        .map(|(what, d)| (format!("{what} (queue {queue})"), d))
        .collect()
}

/// `entries` stretched to `n` descriptors with zero-length copies of the one before
/// the last, which keeps readable before writable.
fn padded(entries: &[Desc], n: usize) -> Vec<Desc> {
    let last = entries.len() - 1;
    let mut v = entries[..last].to_vec();
    v.resize(
        n - 1,
        Desc {
            len: 0,
            ..entries[last - 1]
        },
    );
    v.push(entries[last]);
    v
}

/// Every malformed indirect descriptor on every queue comes back unused, with
/// nothing written, and the device serves on.
fn all_refused(g: &mut FakeGuest, b: &Bufs) {
    for queue in [QUEUE_CONTROL, QUEUE_TX, QUEUE_RX] {
        for (what, d) in malformed(g, b, queue) {
            b.reset(g, queue);
            let t = g.submit_descs(queue, &[d]).unwrap();
            let c = g.wait_token(t, T).expect(&what);
            assert_eq!(c.used_len, 0, "{what}: used_len");
            b.assert_untouched(g, &what);
            alive(g);
            setup(g, PLAY);
            setup(g, CAP);
        }
        assert_eq!(g.free_descriptors(queue), 64);
    }
}

#[test]
fn playback_and_capture_over_indirect_chains() {
    let (rig, mut g) = Rig::new("indirect-io");
    assert!(g.indirect(), "the device offers indirect descriptors");
    let info = g.probe().expect("probe over indirect control chains");
    assert_eq!(info.pcms.len(), 2);
    play_sequence(&mut g, &rig.tl);
    // One ring entry per three-descriptor period.
    setup(&mut g, PLAY);
    let t = tx(&mut g, 3);
    assert_eq!(g.free_descriptors(QUEUE_TX), 63);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_tx_ok(&g.wait_token(t, T).unwrap());
    drop(g);

    // Data split over several descriptors, and the same guest without indirect.
    for indirect in [true, false] {
        let opts = FakeGuestOptions {
            data_split: 4,
            indirect,
            ..FakeGuestOptions::default()
        };
        let mut g = FakeGuest::connect_with(&rig.path, T, opts).expect("reconnect");
        assert_eq!(g.indirect(), indirect);
        play_sequence(&mut g, &rig.tl);
        alive(&mut g);
    }
}

#[test]
fn malformed_indirect_tables_come_back_unused() {
    let (_rig, mut g) = Rig::new("indirect-bad");
    let b = Bufs::new(&mut g);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);
    all_refused(&mut g, &b);
}

/// Submits `descs` (a well-formed request in some form) and checks that the device
/// served it from its table alone.
fn served(g: &mut FakeGuest, b: &Bufs, queue: usize, descs: &[Desc], what: &str) {
    b.reset(g, queue);
    let t = g.submit_descs(queue, descs).unwrap();
    if queue != QUEUE_CONTROL {
        // Queued I/O comes back when the stream is released.
        let stream = if queue == QUEUE_RX { CAP } else { PLAY };
        assert_eq!(g.release(stream).unwrap(), S_OK, "{what}");
    }
    let c = g.wait_token(t, T).expect(what);
    let (status_gpa, used) = match queue {
        QUEUE_CONTROL => (b.resp, RESP),
        QUEUE_TX => (b.status, 8),
        _ => (b.status, PERIOD + 8),
    };
    assert_eq!(c.used_len, used, "{what}: used_len");
    assert_eq!(
        g.read_ram(status_gpa, 4).unwrap(),
        S_OK.to_le_bytes(),
        "{what}: status"
    );
    assert_unused(0, &g.read_ram(b.spare, 64).unwrap(), what);
    alive(g);
    setup(g, PLAY);
    setup(g, CAP);
}

#[test]
fn what_the_device_must_ignore_is_ignored() {
    let (_rig, mut g) = Rig::new("indirect-ignored");
    let b = Bufs::new(&mut g);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);
    for queue in [QUEUE_CONTROL, QUEUE_TX, QUEUE_RX] {
        let t = g.indirect_table(&b.entries(queue)).unwrap();
        served(&mut g, &b, queue, &[t], "a valid table");
        // The spec: the device MUST ignore the write-only flag of the descriptor
        // that refers to a table.
        let w = Desc {
            writable: true,
            ..t
        };
        served(&mut g, &b, queue, &[w], "WRITE on the indirect descriptor");
        // The driver MUST NOT set NEXT on it; like QEMU the device reads the table
        // alone and never follows the ring's `next`.
        let spare = Desc::writable(b.spare, 64);
        served(&mut g, &b, queue, &[t, spare], "INDIRECT with NEXT");
        // Longer than the ring, as Linux makes them for large periods.
        let long = g
            .indirect_table(&padded(&b.entries(queue), MAX_CHAIN))
            .unwrap();
        served(&mut g, &b, queue, &[long], "a table of MAX_CHAIN entries");
    }
}

#[test]
fn unnegotiated_indirect_flag_is_followed_safely() {
    let (rig, g) = Rig::new("indirect-unnegotiated");
    drop(g);
    let opts = FakeGuestOptions {
        indirect: false,
        ..FakeGuestOptions::default()
    };
    let mut g = FakeGuest::connect_with(&rig.path, T, opts).expect("reconnect");
    assert!(!g.indirect());
    let b = Bufs::new(&mut g);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);
    for queue in [QUEUE_CONTROL, QUEUE_TX, QUEUE_RX] {
        // Like QEMU, the device does not check the feature before reading a table.
        let t = g.indirect_table(&b.entries(queue)).unwrap();
        served(&mut g, &b, queue, &[t], "table without the feature");
    }
    all_refused(&mut g, &b);
}
