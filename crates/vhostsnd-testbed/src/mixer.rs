//! The guest's mixer on the card's controls: a script that records with `amixer`
//! moving the Capture level, and the checks of what it recorded.

use crate::analysis;
use crate::guest::fail;
use crate::qemu::GuestOutput;

/// -6 dB, as `amixer sset ... -- -6dB` sets it, and how far a recording's level may be
/// from it.
pub const HALF_DB: f64 = -6.0;
pub const DB_SLACK: f64 = 0.3;

/// The level of `of` relative to `reference`, in dB (RMS).
pub fn level_db(of: &[f32], reference: &[f32]) -> f64 {
    20.0 * (f64::from(analysis::rms(of)) / f64::from(analysis::rms(reference))).log10()
}

/// A guest script that lists the card's simple mixer controls, then records 1 s of
/// mono three times with `arecord`: at full level, after `amixer sset Capture --
/// -6dB`, and after `amixer sset Capture nocap`; exports full.wav, half.wav, off.wav.
pub const MIXER_CAPTURE_SCRIPT: &str = "set -e
amixer -c 0 scontrols
arecord -q -D hw:0,0 -r 48000 -f S16_LE -c 1 -d 1 -t wav /tmp/full.wav
amixer -c 0 sset Capture -- -6dB
arecord -q -D hw:0,0 -r 48000 -f S16_LE -c 1 -d 1 -t wav /tmp/half.wav
amixer -c 0 sset Capture nocap
arecord -q -D hw:0,0 -r 48000 -f S16_LE -c 1 -d 1 -t wav /tmp/off.wav
for f in full half off; do vsnd-export /tmp/$f.wav $f.wav; done
";

/// Checks what [`MIXER_CAPTURE_SCRIPT`] did: the script succeeded, amixer listed the
/// card's Master and Capture controls and read -6 dB back from their dB scale, the
/// -6 dB recording is 6 dB below the full one, and the switched-off one is silence.
pub fn check_mixer_recordings(what: &str, out: &GuestOutput, errors: &[String]) {
    if out.rc != 0 {
        fail(
            &format!("{what}: amixer or arecord failed"),
            Some(out),
            errors,
        );
    }
    for text in [
        "Simple mixer control 'Master',0",
        "Simple mixer control 'Capture',0",
        "[-6.00dB]",
    ] {
        if !out.console.contains(text) {
            fail(
                &format!("{what}: the guest's console lacks {text:?}"),
                Some(out),
                errors,
            );
        }
    }
    let wav = |name: &str| {
        let bytes = out.files.get(name).unwrap_or_else(|| {
            fail(
                &format!("{what}: the guest exported no {name}"),
                Some(out),
                errors,
            )
        });
        analysis::read_wav(bytes)
            .unwrap_or_else(|e| fail(&format!("{what}: {e}"), Some(out), errors))
    };
    let (full, half, off) = (wav("full.wav"), wav("half.wav"), wav("off.wav"));
    // The steady part: the first and last 50 ms left out.
    let steady = |w: &analysis::Wav| {
        let edge = (w.rate as usize / 20).min(w.samples.len() / 2);
        w.samples[edge..w.samples.len() - edge].to_vec()
    };
    let db = level_db(&steady(&half), &steady(&full));
    if (db - HALF_DB).abs() > DB_SLACK {
        fail(
            &format!("{what}: at -6 dB the recording is {db:.2} dB of the full level"),
            Some(out),
            errors,
        );
    }
    if off.samples.iter().any(|s| *s != 0.0) {
        fail(
            &format!("{what}: switched off, the recording is not silence"),
            Some(out),
            errors,
        );
    }
}
