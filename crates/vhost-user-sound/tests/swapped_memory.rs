//! A frontend that swaps guest RAM for fresh zeroed RAM (SET_MEM_TABLE) while both
//! streams run: every ring the device serves now reads as zeroes, its indexes far
//! from the device's. Those queues stop with one line each; the device burns no CPU,
//! a guest that resets the device is served again, and so is the next connection.

mod common;

use std::time::Duration;

use common::*;
use virtio_snd_wire::*;

static LOG: LogCounter = LogCounter::new();

#[test]
fn guest_ram_swapped_under_running_rings() {
    LOG.install();
    let (rig, mut g) = Rig::new("swapped-ram");
    start_both(&mut g);
    let _ = tx(&mut g, 2);
    let _ = rx(&mut g);
    rig.tl.step(&[PLAY, CAP]);

    g.swap_memory().unwrap();
    // The new driver state knows nothing in flight: it queues and asks at index 0,
    // while the device stands further on.
    let _ = tx(&mut g, 3);
    let _ = rx(&mut g);
    let refused = g
        .control_with_timeout(&pcm_hdr(R_PCM_STOP, PLAY), 64, Duration::from_millis(300))
        .expect_err("the control ring read as zeroes and yet answered");
    assert_eq!(refused.kind(), std::io::ErrorKind::TimedOut, "{refused}");
    let spent = cpu_over_three_periods_and_a_second(&rig.tl);
    assert!(
        spent < Duration::from_millis(100),
        "{spent:?} of CPU in a second with zeroed rings"
    );
    assert!(LOG.warnings() <= 3, "{} warnings", LOG.warnings());
    assert_eq!(LOG.errors(), 0, "errors logged");

    // The guest resets the device and starts over in its new RAM.
    g.pause().unwrap();
    g.reset_device().unwrap();
    g.restart_driver().unwrap();
    g.probe().expect("probe after the reset");
    play_sequence(&mut g, &rig.tl);

    // And the next connection is served.
    g.disconnect();
    let mut g = connect(&rig.path);
    g.probe().expect("probe of the next connection");
    play_sequence(&mut g, &rig.tl);
}
