//! Shared set-up: GStreamer, sockets, pipelines and guests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gst::prelude::*;
use virtio_snd_frontend::{Completion, FakeGuest};
use virtio_snd_wire::formats::{self, PcmParams};
use virtio_snd_wire::S_OK;

pub const PLAYBACK: u32 = 0;
pub const CAPTURE: u32 = 1;
pub const RATE: u32 = 48000;
/// Periods a guest keeps queued (ALSA's usual four-period buffer).
pub const QUEUED: usize = 4;

pub use crate::init;

/// A fresh socket path for this process.
pub fn socket(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("vsnd-bench-{}-{tag}-{n}.sock", std::process::id()))
}

/// 48 kHz stereo in `format`, periods of `period_ms`, a four-period buffer.
pub fn params(format: u8, period_ms: u32) -> PcmParams {
    let mut p = PcmParams {
        format,
        rate: formats::rate_code(RATE).expect("48 kHz"),
        channels: 2,
        buffer_bytes: 0,
        period_bytes: 0,
    };
    p.period_bytes = RATE * period_ms / 1000 * p.frame_bytes();
    p.buffer_bytes = QUEUED as u32 * p.period_bytes;
    p
}

pub fn period_ns(p: &PcmParams) -> u64 {
    p.bytes_to_ns(u64::from(p.period_bytes))
}

/// A pipeline from a launch line, set to PLAYING (live pipelines do not preroll).
pub fn launch(desc: &str) -> Result<gst::Pipeline, String> {
    let el = gst::parse::launch(desc).map_err(|e| format!("{desc}: {e}"))?;
    let pipeline = el
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("{desc}: PLAYING: {e}"))?;
    Ok(pipeline)
}

/// Stops a pipeline and checks that its bus holds no error.
pub fn finish(pipeline: &gst::Pipeline) -> Result<(), String> {
    let bus = pipeline.bus().expect("bus");
    let err = bus
        .iter_filtered(&[gst::MessageType::Error])
        .next()
        .map(|m| format!("{m:?}"));
    let _ = pipeline.set_state(gst::State::Null);
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn ok(what: &str, r: std::io::Result<u32>) -> Result<(), String> {
    match r {
        Ok(S_OK) => Ok(()),
        Ok(s) => Err(format!("{what}: status {s:#x}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// A guest connected to `path` (waiting for the socket to appear).
pub fn connect(path: &Path) -> Result<FakeGuest, String> {
    FakeGuest::connect(path, Duration::from_secs(10))
        .map_err(|e| format!("connect {}: {e}", path.display()))
}

/// SET_PARAMS + PREPARE.
pub fn open(g: &mut FakeGuest, stream: u32, p: &PcmParams) -> Result<(), String> {
    ok("SET_PARAMS", g.set_pcm_params(stream, p))?;
    ok("PREPARE", g.prepare(stream))
}

pub fn start(g: &mut FakeGuest, stream: u32) -> Result<(), String> {
    ok("START", g.start(stream))
}

pub fn stop(g: &mut FakeGuest, stream: u32) {
    let _ = g.stop(stream);
    let _ = g.release(stream);
}

/// A VM connects long after the pipeline started: let the pipeline's start-up pass
/// before the guest runs, so that it is not part of what is measured.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// The next completions on `queue` (waiting up to 2 s), each checked to be OK.
pub fn completions(g: &mut FakeGuest, queue: usize, what: &str) -> Result<Vec<Completion>, String> {
    let done = g
        .wait_io(queue, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    if done.is_empty() {
        return Err(format!("{what}: no completion within 2 s"));
    }
    if let Some(c) = done.iter().find(|c| c.status() != Some(S_OK)) {
        return Err(format!("{what} status {:?}", c.status()));
    }
    Ok(done)
}

/// A guest on `sock` that records as ALSA starts a capture (its whole buffer queued,
/// then START), once the pipeline's start-up has passed.
pub fn capturing_guest(sock: &Path, p: &PcmParams) -> Result<FakeGuest, String> {
    settle();
    let mut g = connect(sock)?;
    open(&mut g, CAPTURE, p)?;
    for _ in 0..QUEUED {
        g.submit_rx(CAPTURE, p.period_bytes)
            .map_err(|e| e.to_string())?;
    }
    start(&mut g, CAPTURE)?;
    Ok(g)
}
