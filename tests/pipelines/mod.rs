//! The pipelines the real-guest suites run: a launched pipeline with its bus errors,
//! and vhostsndsrc into an appsink that gathers what came out.

// Each real-guest test binary uses a subset.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use gst::prelude::*;

use vhostsnd_testbed::analysis;
use vhostsnd_testbed::guest::{fail, init, tone_channel_fault};
use vhostsnd_testbed::qemu::GuestOutput;

/// A pipeline from a description, with its bus errors collected.
pub struct Pipeline {
    pub pipeline: gst::Pipeline,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Pipeline {
    pub fn launch(desc: &str) -> Pipeline {
        init();
        let pipeline = gst::parse::launch(desc)
            .expect("pipeline description")
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let errs = errors.clone();
        let bus = pipeline.bus().expect("bus");
        // The default main context is never iterated here; a sync handler sees
        // every message as it is posted.
        bus.set_sync_handler(move |_, msg| {
            if let gst::MessageView::Error(e) = msg.view() {
                errs.lock()
                    .unwrap()
                    .push(format!("{} ({:?})", e.error(), e.debug()));
            }
            gst::BusSyncReply::Drop
        });
        pipeline
            .set_state(gst::State::Playing)
            .expect("pipeline plays");
        Pipeline { pipeline, errors }
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Audio that reached an appsink, split where the format changed.
#[derive(Default)]
pub struct Received {
    pub runs: Vec<(u32, usize, Vec<f32>)>,
}

/// `vhostsndsrc` with `src_props` into an appsink that gathers F32 samples.
pub fn playback_pipeline(socket: &Path, src_props: &str) -> (Pipeline, Arc<Mutex<Received>>) {
    let p = Pipeline::launch(&format!(
        "vhostsndsrc name=src socket={} {src_props} ! audioconvert ! \
         audio/x-raw,format=F32LE ! appsink name=out sync=false",
        socket.display()
    ));
    let received = Arc::new(Mutex::new(Received::default()));
    let r = received.clone();
    let appsink = p
        .pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let info = sample
                    .caps()
                    .and_then(|c| gst_audio::AudioInfo::from_caps(c).ok())
                    .ok_or(gst::FlowError::NotNegotiated)?;
                let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                let samples: Vec<f32> = map
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let (rate, ch) = (info.rate(), info.channels() as usize);
                let mut r = r.lock().unwrap();
                match r.runs.last_mut() {
                    Some((lr, lc, v)) if *lr == rate && *lc == ch => v.extend(samples),
                    _ => r.runs.push((rate, ch, samples)),
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    (p, received)
}

/// Checks that the last run of received audio is the tone: its length, frequency per
/// channel, level, and no dropout inside it.
pub fn check_tone(
    what: &str,
    received: &Received,
    rate: u32,
    freqs: &[f64],
    secs: f64,
    out: &GuestOutput,
    errors: &[String],
) {
    let Some((r, ch, samples)) = received.runs.last() else {
        fail(&format!("{what}: no audio came out"), Some(out), errors);
    };
    if (*r, *ch) != (rate, freqs.len()) {
        fail(
            &format!("{what}: output is {r} Hz {ch} ch"),
            Some(out),
            errors,
        );
    }
    let first = analysis::channel(samples, *ch, 0);
    let Some(seg) = analysis::detect_tone(&first, rate, 0.05) else {
        fail(&format!("{what}: no tone in the output"), Some(out), errors);
    };
    let got = seg.duration_secs(rate);
    // One 10 ms block of slack at each end for the edge detection.
    if (got - secs).abs() > secs * 0.02 + 0.02 {
        fail(
            &format!("{what}: tone lasts {got:.3} s, not {secs} s"),
            Some(out),
            errors,
        );
    }
    for (c, &want) in freqs.iter().enumerate() {
        let chan = analysis::channel(samples, *ch, c);
        if let Some(e) = tone_channel_fault(c, &chan, seg, rate, want) {
            fail(&format!("{what}: {e}"), Some(out), errors);
        }
    }
}
