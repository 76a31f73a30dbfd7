//! A guest that breaks its rings: avail indexes far ahead of the device on the tx and
//! rx rings stop those queues, with one log line each, and nothing else. The control
//! queue still answers at once, the device burns no CPU, the next connection is
//! served, and a guest that starts over with new rings is served again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use virtio_snd_wire::*;

static LOG: LogCounter = LogCounter::new();

#[test]
fn broken_avail_indexes_stop_their_queue_and_nothing_else() {
    LOG.install();
    let (rig, mut g) = Rig::new("broken-rings");
    start_both(&mut g);

    // Far ahead on tx, behind the device on rx; kicked, and their periods come due.
    g.set_avail_idx(QUEUE_TX, 1000).unwrap();
    g.set_avail_idx(QUEUE_RX, u16::MAX - 5).unwrap();
    g.kick(QUEUE_TX).unwrap();
    g.kick(QUEUE_RX).unwrap();
    let spent = cpu_over_three_periods_and_a_second(&rig.tl);
    assert!(
        spent < Duration::from_millis(100),
        "{spent:?} of CPU in a second with broken rings"
    );

    // The control queue answers at once.
    for _ in 0..10 {
        let t = Instant::now();
        let (st, infos) = g.pcm_info(0, 2).unwrap();
        assert_eq!((st, infos.len()), (S_OK, 2));
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "PCM_INFO took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(LOG.warnings(), 2, "one line per broken queue");
    assert_eq!(LOG.errors(), 0, "errors logged");

    // A driver that starts over (the guest reset the device) is served again.
    g.pause().unwrap();
    g.restart_driver().unwrap();
    play_sequence(&mut g, &rig.tl);

    // And so is the next connection.
    g.set_avail_idx(QUEUE_TX, 500).unwrap();
    g.kick(QUEUE_TX).unwrap();
    g.disconnect();
    let mut g = connect(&rig.path);
    g.probe().expect("probe of the next connection");
    play_sequence(&mut g, &rig.tl);
}
