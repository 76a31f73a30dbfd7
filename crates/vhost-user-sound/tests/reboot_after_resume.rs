//! A guest that reboots right after the VM resumed, while the device still serves the
//! control requests queued during the pause: the new driver's requests are answered.
//! Found by vhostsnd-fuzz (one replay of the iteration in twenty failed).

mod common;

use std::time::Duration;

use common::*;
use virtio_snd_wire::*;

#[test]
fn requests_after_a_reboot_that_follows_a_resume_are_answered() {
    let (_rig, mut g) = Rig::new("reboot-after-resume");
    for round in 0..200 {
        let bases = g.pause().expect("pause");
        // As many requests as the control ring holds (two descriptors each).
        for i in 0..32 {
            let code = [R_PCM_STOP, R_PCM_PREPARE, R_PCM_START, R_PCM_RELEASE][i % 4];
            g.submit_control(&pcm_hdr(code, PLAY), 4).unwrap();
        }
        g.resume(bases).expect("resume");
        // The reboot: rings stopped, RESET_DEVICE, a new driver's fresh rings.
        g.pause().expect("pause for the reboot");
        g.reset_device().expect("RESET_DEVICE");
        g.restart_driver().expect("new driver");
        let r = g
            .control_with_timeout(&pcm_hdr(R_PCM_STOP, PLAY), 4, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("round {round}: request after the reboot: {e}"));
        assert_eq!(r.used_len, 4, "round {round}");
    }
}
