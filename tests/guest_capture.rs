//! A real Linux guest in QEMU records through vhostsndsink (arecord), alone and on
//! the duplex card with its own playback looped back.
//!
//! Every failure prints the guest console, the tail of the plugin's debug log and the
//! pipeline's bus errors, so it explains itself.

mod pipelines;

use vhostsnd_testbed::analysis::WavFormat;
use vhostsnd_testbed::guest::{boot, check_recording, fail, socket, tone_wav, RECORD};
use vhostsnd_testbed::qemu::GuestOpts;

use pipelines::*;

/// `audiotestsrc ! vhostsndsink`; the guest records, the host checks the recording.
fn guest_captures(test: &str, channels: usize) {
    let sock = socket(test);
    let p = Pipeline::launch(&format!(
        "audiotestsrc is-live=true freq=1000 volume=0.5 ! audioconvert ! audioresample ! \
         vhostsndsink socket={}",
        sock.display()
    ));
    let script =
        format!("{RECORD} -c {channels} /tmp/r.wav || exit 1; vsnd-export /tmp/r.wav r.wav");
    let out = boot(GuestOpts::new(script).socket(&sock));
    if out.rc != 0 {
        fail(&format!("{test}: arecord failed"), Some(&out), &p.errors());
    }
    // The capture starts with audio (the device keeps a cushion), so the tone covers
    // nearly the whole 2 s recording.
    let freqs = vec![1000.0; channels];
    check_recording(test, out.files.get("r.wav"), &freqs, 1.8, &out, &p.errors());
    if !p.errors().is_empty() {
        fail(&format!("{test}: pipeline errors"), Some(&out), &p.errors());
    }
}

#[test]
fn capture_stereo() {
    guest_captures("capture-stereo", 2);
}

#[test]
fn capture_mono() {
    guest_captures("capture-mono", 1);
}

/// One card, both directions at once: the guest plays and records on the same PCM
/// device while the pipeline loops its playback back into its capture, and the
/// recording must carry the guest's own tones.
#[test]
fn full_duplex_loopback_on_one_socket() {
    let sock = socket("duplex");
    let p = Pipeline::launch(&format!(
        "vhostsndsrc socket={s} ! queue ! vhostsndsink socket={s}",
        s = sock.display()
    ));
    let wav = tone_wav(WavFormat::I16, 48000, &[440.0, 660.0], 4.0);
    let script = format!(
        "aplay -q -D hw:0,0 tone.wav & sleep 0.5; {RECORD} -c 2 /tmp/r.wav || exit 1; wait; \
         vsnd-export /tmp/r.wav r.wav"
    );
    let out = boot(GuestOpts::new(script).socket(&sock).file("tone.wav", wav));
    if out.rc != 0 {
        fail("duplex: aplay or arecord failed", Some(&out), &p.errors());
    }
    check_recording(
        "duplex",
        out.files.get("r.wav"),
        &[440.0, 660.0],
        1.5,
        &out,
        &p.errors(),
    );
    if !p.errors().is_empty() {
        fail("duplex: pipeline errors", Some(&out), &p.errors());
    }
}
