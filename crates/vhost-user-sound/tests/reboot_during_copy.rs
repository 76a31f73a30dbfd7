//! A guest that reboots while the device copies one of its periods (with the card
//! unlocked): the old driver's period must not be completed into the new driver's
//! rings. Found by vhostsnd-fuzz (seed 1, iteration 1547, a race: rarely replays).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use vhost_user_sound::MAX_PERIOD_BYTES;
use virtio_snd_frontend::FakeGuestOptions;
use virtio_snd_wire::formats::FMT_S16;
use virtio_snd_wire::*;

#[test]
fn a_period_copied_across_a_reboot_is_not_completed_to_the_new_driver() {
    let opts = FakeGuestOptions {
        mem_size: 64 << 20,
        ..FakeGuestOptions::default()
    };
    let (rig, mut g) = Rig::with_options("reboot-during-copy", opts);
    // The largest capture periods: each copy into guest RAM takes a while.
    let period = MAX_PERIOD_BYTES / 16 * 16;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                rig.tl.advance_to(rig.tl.now() + 1_000_000_000);
                std::thread::yield_now();
            }
        });
        // Stops the clock thread however this ends, a failed assertion included.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _done = Done(&done);
        for round in 0..60 {
            let p = g
                .set_params(CAP, 4 * period, period, 8, FMT_S16, RATE)
                .unwrap();
            assert_eq!(p, S_OK, "round {round}: SET_PARAMS");
            assert_eq!(g.prepare(CAP).unwrap(), S_OK, "round {round}: PREPARE");
            for _ in 0..4 {
                g.submit_rx(CAP, period).unwrap();
            }
            assert_eq!(g.start(CAP).unwrap(), S_OK, "round {round}: START");
            std::thread::sleep(std::time::Duration::from_micros(300 * (round % 7)));
            // The reboot, without RESET_DEVICE: rings stopped, a new driver's rings.
            g.pause().expect("pause for the reboot");
            g.restart_driver().expect("new driver");
            // Whatever the device completes now must be the new driver's.
            let (st, _) = g
                .pcm_info(0, 2)
                .unwrap_or_else(|e| panic!("round {round}: after the reboot: {e}"));
            assert_eq!(st, S_OK);
            g.try_io(QUEUE_RX)
                .unwrap_or_else(|e| panic!("round {round}: rx after the reboot: {e}"));
        }
    });
}
