//! The frontend against the echo device: handshake, control, ring wrap-around,
//! hostile chains, events, timeouts, disconnects.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::echo_device::{rx_pattern, serve, serve_at, Echo, EchoServer};
use super::*;
use virtio_snd_wire::*;

pub(super) const T: Duration = Duration::from_secs(5);

pub(super) fn guest(srv: &EchoServer) -> FakeGuest {
    FakeGuest::connect(&srv.path, T).expect("connect")
}

#[test]
fn connect_negotiates_and_reads_config() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    assert_ne!(g.features() & VIRTIO_F_VERSION_1, 0);
    assert_ne!(g.features() & VHOST_USER_F_PROTOCOL_FEATURES, 0);
    assert!(g.event_idx());
    let cfg = g.config().unwrap();
    assert_eq!(cfg.jacks.to_native(), 1);
    assert_eq!(cfg.streams.to_native(), 2);
    assert_eq!(cfg.chmaps.to_native(), 1);
    assert_eq!(cfg.controls.to_native(), 0);
    let raw = g.config_bytes(16).unwrap();
    assert_eq!(raw.len(), 16);
    let info = g.probe().unwrap();
    assert_eq!(info.pcms.len(), 2);
    assert_eq!(info.jacks.len(), 1);
    assert_eq!(info.chmaps.len(), 1);
    // The echo fills info items with 0x11.
    assert_eq!(info.pcms[1].channels_min, 0x11);
    assert_eq!(g.in_flight(QUEUE_EVENT), 64);
}

#[test]
fn connect_retries_until_timeout() {
    let path = std::env::temp_dir().join("fe-no-such-socket.sock");
    let t0 = Instant::now();
    let err = FakeGuest::connect(&path, Duration::from_millis(200))
        .err()
        .expect("no device there");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn connect_waits_for_a_late_device() {
    let echo = Echo::new(true);
    let path = std::env::temp_dir().join(format!("fe-late-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let p = path.clone();
    let h = std::thread::spawn(move || FakeGuest::connect(&p, T).map(|_| ()));
    std::thread::sleep(Duration::from_millis(100));
    // serve() picks its own path; start a listener on ours instead.
    let srv = serve_at(echo, path);
    h.join()
        .unwrap()
        .expect("connected once the device came up");
    drop(srv);
}

#[test]
fn control_requests_typed_and_raw() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    let (st, pcms) = g.pcm_info(0, 2).unwrap();
    assert_eq!(st, S_OK);
    assert_eq!(pcms.len(), 2);
    let (st, ch) = g.chmap_info(0, 1).unwrap();
    assert_eq!((st, ch.len()), (S_OK, 1));
    let (st, j) = g.jack_info(0, 1).unwrap();
    assert_eq!((st, j.len()), (S_OK, 1));
    assert_eq!(g.set_params(0, 7680, 1920, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(g.prepare(0).unwrap(), S_OK);
    assert_eq!(g.start(0).unwrap(), S_OK);
    assert_eq!(g.stop(0).unwrap(), S_OK);
    assert_eq!(g.release(0).unwrap(), S_OK);
    {
        let log = srv.echo.ctl_log.lock().unwrap();
        let sp = &log[3];
        assert_eq!(sp.len(), 24);
        assert_eq!(
            u32::from_le_bytes(sp[0..4].try_into().unwrap()),
            R_PCM_SET_PARAMS
        );
        assert_eq!(u32::from_le_bytes(sp[8..12].try_into().unwrap()), 7680);
        assert_eq!(&sp[20..23], &[2, 5, 7]);
        assert_eq!(log[4], [2, 1, 0, 0, 0, 0, 0, 0]);
    }
    // Raw: short, oversized and unknown requests, and a response area of 0 or 1 byte.
    let r = g.control(&[1, 2], 4).unwrap();
    assert_eq!((r.used_len, r.status()), (4, S_OK));
    let r = g.control(&vec![0xee; 4096], 64).unwrap();
    assert_eq!(r.resp.len(), 64);
    let r = g.control(&0xdead_u32.to_le_bytes(), 1).unwrap();
    assert_eq!(r.resp, vec![0]);
    assert_eq!(r.status(), 0);
    let r = g.control(&R_PCM_START.to_le_bytes(), 0).unwrap();
    assert_eq!(r.used_len, 0);
    let r = g.control(&[], 8).unwrap();
    assert_eq!(r.status(), S_OK);
    // Huge counts are refused locally instead of allocating gigabytes.
    assert_eq!(
        g.pcm_info(0, u32::MAX).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

/// Keeps up to `depth` periods in flight for `total` periods and checks every byte.
pub(super) fn pump(g: &mut FakeGuest, srv: &EchoServer, total: usize, depth: usize) {
    let base_ram = g.ram_in_use();
    let mut sent = 0;
    let mut done = 0;
    let mut payloads = std::collections::VecDeque::new();
    let mut seqs = Vec::new();
    while done < total {
        while sent < total && sent - done < depth {
            let data: Vec<u8> = (0..64 + sent % 7).map(|i| (i + sent) as u8).collect();
            let tok = match g.submit_tx_split((sent % 2) as u32, &data, 1 + sent % 3) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            };
            seqs.push(tok);
            payloads.push_back(data);
            sent += 1;
        }
        let cs = g.wait_io(QUEUE_TX, T).unwrap();
        assert!(!cs.is_empty(), "tx stalled at {done}");
        for c in cs {
            assert_eq!(c.token, seqs[done]);
            assert_eq!(c.status(), Some(S_OK));
            assert_eq!(c.used_len, 8);
            assert!(c.data.is_empty());
            done += 1;
        }
    }
    let log = srv.echo.tx_log.lock().unwrap();
    let tail = &log[log.len() - total..];
    for (i, (stream, data)) in tail.iter().enumerate() {
        assert_eq!(*stream, (i % 2) as u32);
        assert_eq!(data, &payloads[i]);
    }
    drop(log);

    let mut sent = 0;
    let mut done = 0;
    while done < total {
        while sent < total && sent - done < depth {
            match g.submit_rx_split(1, 100 + (sent % 5) as u32, 1 + sent % 4) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            sent += 1;
        }
        for c in g.wait_io(QUEUE_RX, T).unwrap() {
            let len = 100 + done % 5;
            assert_eq!(c.status(), Some(S_OK));
            assert_eq!(c.used_len as usize, len + 8);
            assert_eq!(c.data.len(), len);
            assert!(c.data.iter().enumerate().all(|(i, b)| *b == rx_pattern(i)));
            done += 1;
        }
    }
    assert_eq!(g.in_flight(QUEUE_TX), 0);
    assert_eq!(g.in_flight(QUEUE_RX), 0);
    assert_eq!(g.free_descriptors(QUEUE_TX), 64);
    assert_eq!(g.free_descriptors(QUEUE_RX), 64);
    assert_eq!(g.ram_in_use(), base_ram);
}

#[test]
fn io_wraps_the_rings_many_times_with_event_idx() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    assert!(g.event_idx());
    pump(&mut g, &srv, 5000, 16);
    pump(&mut g, &srv, 300, 1);
}

#[test]
fn io_wraps_the_rings_without_event_idx() {
    let srv = serve(Echo::new(false));
    let mut g = guest(&srv);
    assert!(!g.event_idx());
    pump(&mut g, &srv, 3000, 20);
    // And with the device offering it but the guest declining.
    let srv = serve(Echo::new(true));
    let opts = FakeGuestOptions {
        event_idx: false,
        ..Default::default()
    };
    let mut g = FakeGuest::connect_with(&srv.path, T, opts).unwrap();
    assert!(!g.event_idx());
    pump(&mut g, &srv, 1000, 30);
}

#[test]
fn latency_and_completion_time_are_reported() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    srv.echo.latency.store(1234, Ordering::Relaxed);
    let before = Instant::now();
    let tok = g.submit_tx(0, &[1; 32]).unwrap();
    let c = g.wait_token(tok, T).unwrap();
    assert_eq!(c.latency_bytes(), Some(1234));
    assert!(c.at >= before);
    assert_eq!(
        g.wait_token(tok, T).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn hostile_chains_complete_and_recycle() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    let outside = g.ram_size() + 0x1000;
    let ok = g.alloc_ram(64).unwrap();
    let cases: Vec<Vec<Desc>> = vec![
        vec![Desc::readable(outside, 4), Desc::writable(ok, 8)],
        vec![Desc::readable(ok, 4), Desc::writable(u64::MAX - 4, 8)],
        vec![Desc::readable(ok, 0), Desc::writable(ok, 0)],
        // A loop: the last descriptor points back at the first.
        vec![
            Desc::readable(ok, 4),
            Desc::writable(ok + 8, 8),
            Desc::writable(ok + 16, 8).with_link(0),
        ],
        vec![Desc::readable(ok, 16).with_flags(4)],
        vec![Desc::writable(ok, 8), Desc::readable(ok, 4)],
    ];
    for q in [QUEUE_CONTROL, QUEUE_TX, QUEUE_RX] {
        for descs in &cases {
            let tok = g.submit_descs(q, descs).unwrap();
            let c = g.wait_token(tok, T).unwrap();
            assert!(c.data.is_empty());
        }
        assert_eq!(g.free_descriptors(q), 64);
    }
    assert!(srv.echo.bad_chains.load(Ordering::Relaxed) >= 9);
    // Segments: a status area too small, and a message with no data at all.
    let hdr = PcmXfer {
        stream_id: 0.into(),
    };
    use vm_memory::ByteValued;
    let tok = g
        .submit_segments(
            QUEUE_RX,
            &[Segment::Read(hdr.as_slice()), Segment::Write(4)],
        )
        .unwrap();
    let c = g.wait_token(tok, T).unwrap();
    assert_eq!(c.used_len, 0);
    assert_eq!(c.data, vec![POISON; 4]);
    let tok = g
        .submit_segments(
            QUEUE_RX,
            &[
                Segment::Read(hdr.as_slice()),
                Segment::Write(8),
                Segment::Write(8),
            ],
        )
        .unwrap();
    let c = g.wait_token(tok, T).unwrap();
    assert_eq!(c.used_len, 16);
    assert_eq!(&c.data[8..12], &S_OK.to_le_bytes());
    // Still healthy.
    pump(&mut g, &srv, 200, 8);
    // Chains longer than the queue never fit.
    let long = vec![Desc::readable(ok, 1); 65];
    assert_eq!(
        g.submit_descs(QUEUE_TX, &long).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert!(g.submit_descs(7, &cases[0]).is_err());
}

#[test]
fn full_queue_reports_would_block_until_flushed() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    pump(&mut g, &srv, 10, 2);
    g.set_auto_kick(false);
    let mut toks = Vec::new();
    for _ in 0..21 {
        toks.push(g.submit_tx(0, &[0; 16]).unwrap());
    }
    assert_eq!(g.free_descriptors(QUEUE_TX), 1);
    let err = g.submit_tx(0, &[0; 16]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(g.try_io(QUEUE_TX).unwrap().is_empty());
    g.flush(QUEUE_TX).unwrap();
    let mut n = 0;
    while n < 21 {
        let cs = g.wait_io(QUEUE_TX, T).unwrap();
        assert!(!cs.is_empty());
        n += cs.len();
    }
    g.set_auto_kick(true);
    pump(&mut g, &srv, 100, 16);
}

#[test]
fn events_are_delivered_and_buffers_refilled() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    assert!(g.events().unwrap().is_empty());
    let mut got = Vec::new();
    for i in 0..200u32 {
        srv.echo.push_event(0x1000 + (i % 2), i);
        got.extend(g.wait_events(T).unwrap());
    }
    got.extend(g.events().unwrap());
    assert_eq!(got.len(), 200);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(
            (e.code, e.data, e.used_len),
            (0x1000 + (i as u32 % 2), i as u32, 8)
        );
    }
    assert_eq!(g.in_flight(QUEUE_EVENT), 64);
    assert!(g.wait_events(Duration::from_millis(20)).unwrap().is_empty());
}

#[test]
fn disconnect_and_reconnect_make_new_sessions() {
    let srv = serve(Echo::new(true));
    for round in 0..5 {
        let mut g = guest(&srv);
        pump(&mut g, &srv, 100, 8);
        assert_eq!(g.pcm_info(0, 2).unwrap().0, S_OK);
        if round % 2 == 0 {
            g.disconnect();
        } else {
            g.shutdown().unwrap();
        }
    }
    // Dropping in the middle of I/O.
    let mut g = guest(&srv);
    g.set_auto_kick(false);
    for _ in 0..10 {
        g.submit_tx(0, &[0; 100]).unwrap();
    }
    drop(g);
    let mut g = guest(&srv);
    pump(&mut g, &srv, 100, 8);
    assert_eq!(srv.echo.connections.load(Ordering::Relaxed), 7);
}

#[test]
fn control_timeout_abandons_the_request() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    srv.echo.ctl_delay_ms.store(300, Ordering::Relaxed);
    let t0 = Instant::now();
    let err = g
        .control_with_timeout(&R_PCM_START.to_le_bytes(), 4, Duration::from_millis(50))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(t0.elapsed() < Duration::from_millis(250));
    srv.echo.ctl_delay_ms.store(0, Ordering::Relaxed);
    // The next request is answered after the slow one; the late answer is dropped.
    assert_eq!(g.prepare(0).unwrap(), S_OK);
    assert!(g.try_io(QUEUE_CONTROL).unwrap().is_empty());
    assert_eq!(g.free_descriptors(QUEUE_CONTROL), 64);
}

#[test]
fn bogus_used_ids_are_reported() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    g.submit_tx(0, &[0; 8]).unwrap();
    g.wait_io(QUEUE_TX, T).unwrap();
    // The next chain's head is the descriptor just freed; claim another one.
    *srv.echo.bogus_used_id.lock().unwrap() = Some(40);
    g.submit_tx(0, &[0; 8]).unwrap();
    let err = g.wait_io(QUEUE_TX, T).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("id 40"), "{err}");
}

#[test]
fn wait_io_times_out_empty_and_wait_any_merges() {
    let srv = serve(Echo::new(true));
    let mut g = guest(&srv);
    let t0 = Instant::now();
    assert!(g
        .wait_io(QUEUE_RX, Duration::from_millis(30))
        .unwrap()
        .is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(30));
    g.submit_tx(0, &[0; 8]).unwrap();
    g.submit_rx(0, 16).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(g.wait_any(&[QUEUE_TX, QUEUE_RX], T).unwrap());
    }
    assert!(got.iter().any(|c| c.queue == QUEUE_TX));
    assert!(got.iter().any(|c| c.queue == QUEUE_RX));
}

#[test]
fn many_guests_in_parallel() {
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                let srv = serve(Echo::new(true));
                let mut g = guest(&srv);
                pump(&mut g, &srv, 500, 16);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn fake_guest_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<FakeGuest>();
    assert_send::<Completion>();
}
