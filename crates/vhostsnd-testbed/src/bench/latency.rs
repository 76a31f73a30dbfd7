//! Point 2: latency the device adds. Playback: from the guest's submit (kick) of a
//! period to its first sample leaving vhostsndsrc (pad probe on the src pad, the
//! period recognised by a unique first sample). Capture: from a buffer entering
//! vhostsndsink (pad probe on its sink pad, which writes a unique first sample) to
//! the guest's completion of the period holding it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use virtio_snd_wire::formats::{PcmParams, FMT_S16};
use virtio_snd_wire::{QUEUE_RX, QUEUE_TX};

use super::setup::{self, CAPTURE, PLAYBACK, QUEUED};
use super::stats::{self, ms};
use super::{Opts, Table};

type Seen = Arc<Mutex<Vec<(i16, Instant)>>>;

fn marker(k: usize) -> i16 {
    (k % 32000 + 1) as i16
}

/// Element and pipeline LATENCY answers (min, in ms).
fn latency_query(pipeline: &gst::Pipeline, pad: &gst::Pad) -> (f64, f64) {
    let mut q = gst::query::Latency::new();
    let el = if pad.query(&mut q) {
        q.result().1.nseconds() as f64 / 1e6
    } else {
        f64::NAN
    };
    let mut q = gst::query::Latency::new();
    let pl = if pipeline.query(&mut q) {
        q.result().1.nseconds() as f64 / 1e6
    } else {
        f64::NAN
    };
    (el, pl)
}

pub struct Result2 {
    pub lat_ms: Vec<f64>,
    /// Capture: marked buffers whose audio never reached the guest (a click).
    pub lost: Option<usize>,
    pub status_ms: Vec<f64>,
    pub element_query_ms: f64,
    pub pipeline_query_ms: f64,
}

/// Playback with `depth` periods kept queued by the guest.
fn playback(secs: f64, depth: usize) -> Result<Result2, String> {
    let p = setup::params(FMT_S16, 10);
    let sock = setup::socket("lat-play");
    let pipeline = setup::launch(&format!(
        "vhostsndsrc name=src socket={} ! fakesink sync=true",
        sock.display()
    ))?;
    let src = pipeline.by_name("src").ok_or("no src")?;
    let pad = src.static_pad("src").ok_or("no src pad")?;
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let now = Instant::now();
        if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
            if !b.flags().contains(gst::BufferFlags::GAP) {
                if let Ok(m) = b.map_readable() {
                    if m.len() >= 2 {
                        let v = i16::from_le_bytes([m[0], m[1]]);
                        if v != 0 {
                            s2.lock().unwrap().push((v, now));
                        }
                    }
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    setup::settle();
    let mut g = setup::connect(&sock)?;
    setup::open(&mut g, PLAYBACK, &p)?;
    let mut submitted: HashMap<i16, Instant> = HashMap::new();
    let mut k = 0usize;
    let mut period = vec![0u8; p.period_bytes as usize];
    let mut submit = |g: &mut virtio_snd_frontend::FakeGuest,
                      submitted: &mut HashMap<i16, Instant>|
     -> Result<(), String> {
        let m = marker(k);
        k += 1;
        period[..2].copy_from_slice(&m.to_le_bytes());
        period[2..4].copy_from_slice(&m.to_le_bytes());
        g.submit_tx(PLAYBACK, &period).map_err(|e| e.to_string())?;
        submitted.insert(m, Instant::now());
        Ok(())
    };
    for _ in 0..depth {
        submit(&mut g, &mut submitted)?;
    }
    setup::start(&mut g, PLAYBACK)?;
    let n = (secs * 100.0) as usize;
    let mut status_ms = Vec::new();
    let mut done_n = 0;
    let mut lat_ms = Vec::new();
    while done_n < n {
        let done = setup::completions(&mut g, QUEUE_TX, "playback")?;
        for c in done {
            done_n += 1;
            if let Some(b) = c.latency_bytes() {
                status_ms.push(b as f64 * 1e3 / p.byte_rate() as f64);
            }
            submit(&mut g, &mut submitted)?;
        }
        // Match what left the element so far.
        for (m, out) in seen.lock().unwrap().drain(..) {
            if let Some(t) = submitted.remove(&m) {
                // Periods queued before START also wait for the start-up: skipped.
                if !(0..depth).any(|k| marker(k) == m) {
                    lat_ms.push(out.duration_since(t).as_secs_f64() * 1e3);
                }
            }
        }
    }
    let (el, pl) = latency_query(&pipeline, &pad);
    setup::stop(&mut g, PLAYBACK);
    drop(g);
    setup::finish(&pipeline)?;
    Ok(Result2 {
        lat_ms,
        lost: None,
        status_ms,
        element_query_ms: el,
        pipeline_query_ms: pl,
    })
}

/// Capture, with upstream's buffers held back by up to `jitter_ms` each (a
/// deterministic pseudo-random spread, on upstream's streaming thread).
fn capture(secs: f64, jitter_ms: u64) -> Result<(Result2, PcmParams), String> {
    let p = setup::params(FMT_S16, 10);
    let sock = setup::socket("lat-cap");
    let pipeline = setup::launch(&format!(
        "audiotestsrc name=up is-live=true samplesperbuffer=480 wave=silence ! vhostsndsink name=sink socket={}",
        sock.display()
    ))?;
    if jitter_ms > 0 {
        let up = pipeline.by_name("up").ok_or("no source")?;
        let pad = up.static_pad("src").ok_or("no source pad")?;
        let k = std::sync::atomic::AtomicU64::new(0);
        let spread = jitter_ms * 1000;
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let i = k.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let us = i.wrapping_mul(2_654_435_761) % (spread + 1);
            std::thread::sleep(Duration::from_micros(us));
            gst::PadProbeReturn::Ok
        });
    }
    let sink = pipeline.by_name("sink").ok_or("no sink")?;
    let pad = sink.static_pad("sink").ok_or("no sink pad")?;
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let k = std::sync::atomic::AtomicUsize::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = &mut info.data {
            let b = b.make_mut();
            if let Ok(mut m) = b.map_writable() {
                if m.len() >= 4 {
                    let v = marker(k.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                    m[..2].copy_from_slice(&v.to_le_bytes());
                    m[2..4].copy_from_slice(&v.to_le_bytes());
                    s2.lock().unwrap().push((v, Instant::now()));
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    let mut g = setup::capturing_guest(&sock, &p)?;
    let n = (secs * 100.0) as usize;
    let mut entered: HashMap<i16, Instant> = HashMap::new();
    let (mut lat_ms, mut status_ms) = (Vec::new(), Vec::new());
    let mut done_n = 0;
    // The first second fills the pipeline; only later markers count.
    let warm = Instant::now() + Duration::from_millis(if secs < 5.0 { 300 } else { 1000 });
    while done_n < n {
        let done = setup::completions(&mut g, QUEUE_RX, "capture")?;
        entered.extend(seen.lock().unwrap().drain(..));
        for c in done {
            done_n += 1;
            if let Some(b) = c.latency_bytes() {
                status_ms.push(b as f64 * 1e3 / p.byte_rate() as f64);
            }
            for f in c.data.chunks_exact(4) {
                let v = i16::from_le_bytes([f[0], f[1]]);
                if v != 0 {
                    if let Some(t) = entered.remove(&v) {
                        if c.at > warm {
                            lat_ms.push(c.at.duration_since(t).as_secs_f64() * 1e3);
                        }
                    }
                }
            }
            g.submit_rx(CAPTURE, p.period_bytes)
                .map_err(|e| e.to_string())?;
        }
    }
    // Marked after the warm-up and well before the end, yet never completed.
    let end = Instant::now() - Duration::from_millis(100);
    entered.extend(seen.lock().unwrap().drain(..));
    let lost = entered.values().filter(|t| **t > warm && **t < end).count();
    let (el, pl) = latency_query(&pipeline, &pad);
    setup::stop(&mut g, CAPTURE);
    drop(g);
    setup::finish(&pipeline)?;
    Ok((
        Result2 {
            lat_ms,
            lost: Some(lost),
            status_ms,
            element_query_ms: el,
            pipeline_query_ms: pl,
        },
        p,
    ))
}

pub fn run(opts: &Opts) -> Result<Vec<Table>, String> {
    let secs = if opts.quick { 1.5 } else { 10.0 };
    let mut t = Table::new(
        &format!("2. Added latency (48 kHz stereo S16, 10 ms periods, {secs} s per row)"),
        &[
            "case",
            "samples",
            "measured p50 (ms)",
            "measured p99 (ms)",
            "added p50 (ms)",
            "added p99 (ms)",
            "status latency_bytes p50 (ms)",
            "element LATENCY min (ms)",
            "pipeline LATENCY min (ms)",
            "buffers lost (clicks)",
        ],
    );
    let mut add = |name: String, r: &Result2, ahead_ms: f64| {
        let added: Vec<f64> = r.lat_ms.iter().map(|l| l - ahead_ms).collect();
        t.row(vec![
            name,
            r.lat_ms.len().to_string(),
            ms(stats::percentile(&r.lat_ms, 50.0)),
            ms(stats::percentile(&r.lat_ms, 99.0)),
            ms(stats::percentile(&added, 50.0)),
            ms(stats::percentile(&added, 99.0)),
            ms(stats::percentile(&r.status_ms, 50.0)),
            ms(r.element_query_ms),
            ms(r.pipeline_query_ms),
            r.lost.map_or("-".into(), |n| n.to_string()),
        ]);
    };
    for depth in [1usize, QUEUED] {
        let r = playback(secs, depth)?;
        add(
            format!("playback, guest keeps {depth} period(s) queued: submit -> src pad"),
            &r,
            (depth - 1) as f64 * 10.0,
        );
    }
    for jitter in [0, 5] {
        let (r, _) = capture(secs, jitter)?;
        let name = match jitter {
            0 => "capture: sink pad -> guest rx completion".to_string(),
            j => format!(
                "capture, upstream buffers held back 0-{j} ms: sink pad -> guest rx completion"
            ),
        };
        add(name, &r, 0.0);
    }
    t.note(
        "Added = measured minus the periods queued ahead of the measured one by the \
         guest itself ((depth - 1) x 10 ms). The playback status latency_bytes is the \
         downstream latency the pipeline reported in its LATENCY event; the capture one \
         is the audio still queued in the device after the completion. Buffers lost: \
         marked upstream buffers (after the warm-up) whose marker never reached the \
         guest. Targets: playback added <= one period + 1 ms (11 ms); capture <= one \
         period + 2 ms (12 ms) at p99, with no buffer lost.",
    );
    Ok(vec![t])
}
