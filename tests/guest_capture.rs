//! A real Linux guest in QEMU records through vhostsndsink (arecord), alone and on
//! the duplex card with its own playback looped back.
//!
//! Every failure prints the guest console, the tail of the plugin's debug log and the
//! pipeline's bus errors, so it explains itself.

mod pipelines;

use vhostsnd_testbed::analysis::WavFormat;
use vhostsnd_testbed::guest::{
    alsabat_script, boot, check_recording, fail, socket, tone_wav, RECORD,
};
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
    // The first period holds the audio from START on: the tone is the whole 2 s.
    let freqs = vec![1000.0; channels];
    check_recording(
        test,
        out.files.get("r.wav"),
        &freqs,
        1.99,
        &out,
        &p.errors(),
    );
    if !p.errors().is_empty() {
        fail(&format!("{test}: pipeline errors"), Some(&out), &p.errors());
    }
}

/// ALSA's own test tool, unmodified, records the host's tone and finds it: one
/// spectral peak at 1 kHz, mono and stereo (a recording that starts with a period of
/// silence has a second peak, and fails).
#[test]
fn alsabat_captures_the_host_tone() {
    let sock = socket("alsabat-capture");
    let p = Pipeline::launch(&format!(
        "audiotestsrc is-live=true freq=1000 volume=0.5 ! audioconvert ! audioresample ! \
         vhostsndsink socket={}",
        sock.display()
    ));
    let script = alsabat_script(&["-C hw:0,0 -c 2 -F 1000", "-C hw:0,0 -c 1 -F 1000"]);
    let out = boot(GuestOpts::new(script).socket(&sock));
    if out.rc != 0 {
        fail(
            &format!("alsabat -C failed ({})", out.rc),
            Some(&out),
            &p.errors(),
        );
    }
}

/// alsabat's loopback mode on the duplex card: it plays its tone and records it back
/// through `vhostsndsrc ! queue ! vhostsndsink`.
#[test]
fn alsabat_loopback_on_the_duplex_card() {
    let sock = socket("alsabat-loopback");
    let p = Pipeline::launch(&format!(
        "vhostsndsrc socket={s} ! queue ! vhostsndsink socket={s}",
        s = sock.display()
    ));
    let out = boot(GuestOpts::new(alsabat_script(&["-D hw:0,0 -c 2 -F 440"])).socket(&sock));
    if out.rc != 0 {
        fail(
            &format!("alsabat -D failed ({})", out.rc),
            Some(&out),
            &p.errors(),
        );
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
        1.99,
        &out,
        &p.errors(),
    );
    if !p.errors().is_empty() {
        fail("duplex: pipeline errors", Some(&out), &p.errors());
    }
}
