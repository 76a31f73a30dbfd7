//! A real Linux guest's mixer on the card's controls (QEMU `controls=on`, the
//! elements' `controls=true`): `amixer` finds the card's Master and Capture
//! controls with their dB scale, moves the level the host hears and the guest
//! records (-6 dB is half the amplitude, a switch off is silence), and sees the
//! host's changes as control events.

mod pipelines;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gst::prelude::*;
use vhostsnd_testbed::analysis::{self, WavFormat};
use vhostsnd_testbed::guest::{boot, fail, socket, tone_segments, tone_wav};
use vhostsnd_testbed::mixer::{
    check_mixer_recordings, level_db, DB_SLACK, HALF_DB, MIXER_CAPTURE_SCRIPT,
};
use vhostsnd_testbed::qemu::{GuestOpts, GuestOutput};

use pipelines::*;

fn console_has(out: &GuestOutput, text: &str, errors: &[String]) {
    if !out.console.contains(text) {
        fail(
            &format!("the guest's console lacks {text:?}"),
            Some(out),
            errors,
        );
    }
}

/// The guest records at full level, at -6 dB and switched off, setting each with
/// `amixer`; the element's properties follow.
#[test]
fn amixer_sets_the_level_the_guest_records() {
    let sock = socket("mixer-capture");
    let p = Pipeline::launch(&format!(
        "audiotestsrc is-live=true freq=1000 volume=0.5 ! audioconvert ! audioresample ! \
         vhostsndsink name=sink controls=true socket={}",
        sock.display()
    ));
    let out = boot(
        GuestOpts::new(MIXER_CAPTURE_SCRIPT)
            .socket(&sock)
            .controls(),
    );
    check_mixer_recordings("vhostsndsink", &out, &p.errors());
    let sink = p.pipeline.by_name("sink").expect("sink");
    assert!(
        sink.property::<bool>("mute"),
        "the guest's nocap mutes the sink"
    );
    let volume = sink.property::<f64>("volume");
    assert!((volume - 0.501).abs() < 0.001, "volume {volume}");
}

/// The guest plays a tone at full level, at -6 dB and muted; the host hears two
/// tones, the second 6 dB down. Then the host unmutes and sets a quarter of the
/// volume: the guest's mixer shows it, and `amixer events` saw it come.
#[test]
fn amixer_sets_the_level_the_host_hears_and_sees_the_hosts_changes() {
    let sock = socket("mixer-playback");
    let (p, received) = playback_pipeline(&sock, "controls=true");
    let src = p.pipeline.by_name("src").expect("src");
    // Once the guest has muted and played its third tone (1 s), the host unmutes it
    // at a quarter of the volume.
    let muted = Arc::new(AtomicBool::new(false));
    let m = muted.clone();
    src.connect_notify(Some("mute"), move |el, _| {
        if el.property::<bool>("mute") && !m.swap(true, Ordering::SeqCst) {
            let el = el.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2500));
                el.set_property("volume", 0.25);
                el.set_property("mute", false);
            });
        }
    });
    let wav = tone_wav(WavFormat::I16, 48000, &[440.0, 660.0], 1.0);
    let play = "aplay -q -D hw:0,0 tone.wav";
    let script = format!(
        "amixer -c 0 events & ev=$!\n\
         sleep 0.5\n\
         {play} || exit 1\n\
         sleep 0.5\n\
         amixer -c 0 -q sset Master -- -6dB || exit 2\n\
         {play} || exit 1\n\
         sleep 0.5\n\
         amixer -c 0 -q sset Master mute || exit 2\n\
         {play} || exit 1\n\
         i=0\n\
         until amixer -c 0 sget Master | grep -q '\\[on\\]'; do\n\
           i=$((i+1)); [ $i -lt 100 ] || exit 3; sleep 0.1\n\
         done\n\
         sleep 0.3\n\
         amixer -c 0 sget Master\n\
         kill $ev\n"
    );
    let out = boot(
        GuestOpts::new(script)
            .socket(&sock)
            .controls()
            .file("tone.wav", wav),
    );
    let errors = p.errors();
    if out.rc != 0 {
        fail(
            &format!("the guest's script failed ({})", out.rc),
            Some(&out),
            &errors,
        );
    }
    // The host's quarter volume: -12.04 dB, shown as the nearest 0.5 dB step.
    console_has(&out, "[-12.00dB] [on]", &errors);
    // amixer prints to the console as events come (its stdout is the serial
    // console, line-buffered).
    let switch_events = out
        .console
        .lines()
        .filter(|l| l.contains("event value") && l.contains("Master Playback Switch"))
        .count();
    // The guest's mute and the host's unmute.
    if switch_events < 2 {
        fail(
            &format!("amixer events saw {switch_events} switch changes, not 2"),
            Some(&out),
            &errors,
        );
    }
    let last = received.lock().unwrap().runs.last().cloned();
    let Some((rate, ch, samples)) = last else {
        fail("no audio came out", Some(&out), &errors);
    };
    let first = analysis::channel(&samples, ch, 0);
    let segs = tone_segments(&first, rate, 0.02);
    if segs.len() != 2 {
        fail(
            &format!(
                "{} tones came out, not 2 (the third was muted): {segs:?}",
                segs.len()
            ),
            Some(&out),
            &errors,
        );
    }
    let part = |s: &analysis::Segment| {
        let margin = rate as usize / 20;
        first[s.start + margin..s.end - margin].to_vec()
    };
    let db = level_db(&part(&segs[1]), &part(&segs[0]));
    if (db - HALF_DB).abs() > DB_SLACK {
        fail(
            &format!("at -6 dB the host hears {db:.2} dB of the full level"),
            Some(&out),
            &errors,
        );
    }
}
