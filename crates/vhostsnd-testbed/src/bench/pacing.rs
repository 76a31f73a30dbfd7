//! Point 1: how precisely the device paces the guest. One 48 kHz stereo S16 stream
//! with 10 ms periods, playback through `vhostsndsrc ! fakesink sync=true` and
//! capture through `audiotestsrc is-live=true ! vhostsndsink`; every completion's
//! time against start + k * period.

use std::time::Instant;

use virtio_snd_wire::formats::FMT_S16;
use virtio_snd_wire::{QUEUE_RX, QUEUE_TX};

use super::setup::{self, CAPTURE, PLAYBACK, QUEUED};
use super::stats::{self, ms};
use super::{Opts, Table};

/// Pacing figures of one run of completions.
pub struct Pacing {
    pub periods: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Residuals against the fitted line (pure jitter, start offset removed).
    pub jitter_p99_ms: f64,
    pub drift_ppm: f64,
    /// Completions more than one period after their ideal time.
    pub late: usize,
}

/// `at[k]` against `at[0] - period + (k + 1) * period`.
pub fn analyse(at: &[Instant], period_ns: u64) -> Pacing {
    let p = period_ns as f64 / 1e9;
    let t0 = at[0];
    let ts: Vec<f64> = at
        .iter()
        .map(|t| t.duration_since(t0).as_secs_f64())
        .collect();
    let err: Vec<f64> = ts
        .iter()
        .enumerate()
        .map(|(k, t)| t - k as f64 * p)
        .collect();
    let abs: Vec<f64> = err.iter().map(|e| e.abs() * 1e3).collect();
    let ks: Vec<f64> = (0..ts.len()).map(|k| k as f64).collect();
    let (a, b) = stats::linfit(&ks, &ts);
    let resid: Vec<f64> = ts
        .iter()
        .zip(&ks)
        .map(|(t, k)| (t - (a + b * k)).abs() * 1e3)
        .collect();
    Pacing {
        periods: at.len(),
        p50_ms: stats::percentile(&abs, 50.0),
        p99_ms: stats::percentile(&abs, 99.0),
        max_ms: stats::max(&abs),
        jitter_p99_ms: stats::percentile(&resid, 99.0),
        drift_ppm: (b / p - 1.0) * 1e6,
        late: err.iter().filter(|e| **e > p).count(),
    }
}

fn playback(secs: f64) -> Result<Pacing, String> {
    let p = setup::params(FMT_S16, 10);
    let sock = setup::socket("pace-play");
    let pipeline = setup::launch(&format!(
        "vhostsndsrc socket={} ! fakesink sync=true",
        sock.display()
    ))?;
    setup::settle();
    let mut g = setup::connect(&sock)?;
    setup::open(&mut g, PLAYBACK, &p)?;
    let period = vec![0u8; p.period_bytes as usize];
    for _ in 0..QUEUED {
        g.submit_tx(PLAYBACK, &period).map_err(|e| e.to_string())?;
    }
    setup::start(&mut g, PLAYBACK)?;
    let n = (secs * 100.0) as usize;
    let mut at = Vec::with_capacity(n);
    while at.len() < n {
        let done = setup::completions(&mut g, QUEUE_TX, "playback")?;
        for c in done {
            at.push(c.at);
            g.submit_tx(PLAYBACK, &period).map_err(|e| e.to_string())?;
        }
    }
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let d: Vec<_> = at.windows(2).take(12).map(|w| w[1] - w[0]).collect();
        eprintln!("first intervals: {d:?}");
    }
    setup::stop(&mut g, PLAYBACK);
    drop(g);
    setup::finish(&pipeline)?;
    Ok(analyse(&at, setup::period_ns(&p)))
}

fn capture(secs: f64) -> Result<Pacing, String> {
    let p = setup::params(FMT_S16, 10);
    let sock = setup::socket("pace-cap");
    let pipeline = setup::launch(&format!(
        "audiotestsrc is-live=true samplesperbuffer=480 wave=silence ! vhostsndsink socket={}",
        sock.display()
    ))?;
    let mut g = setup::capturing_guest(&sock, &p)?;
    let n = (secs * 100.0) as usize;
    let mut at = Vec::with_capacity(n);
    while at.len() < n {
        let done = setup::completions(&mut g, QUEUE_RX, "capture")?;
        for c in done {
            at.push(c.at);
            g.submit_rx(CAPTURE, p.period_bytes)
                .map_err(|e| e.to_string())?;
        }
    }
    setup::stop(&mut g, CAPTURE);
    drop(g);
    setup::finish(&pipeline)?;
    Ok(analyse(&at, setup::period_ns(&p)))
}

pub fn run(opts: &Opts) -> Result<Vec<Table>, String> {
    let secs = if opts.quick { 3.0 } else { 30.0 };
    let mut t = Table::new(
        &format!("1. Pacing precision (48 kHz stereo S16, 10 ms periods, {secs} s)"),
        &[
            "stream",
            "periods",
            "error p50 (ms)",
            "error p99 (ms)",
            "error max (ms)",
            "jitter p99 vs fit (ms)",
            "drift (ppm)",
            "late (> 1 period)",
        ],
    );
    for (name, r) in [("playback", playback(secs)?), ("capture", capture(secs)?)] {
        t.row(vec![
            name.into(),
            r.periods.to_string(),
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.max_ms),
            ms(r.jitter_p99_ms),
            format!("{:.1}", r.drift_ppm),
            r.late.to_string(),
        ]);
    }
    t.note(
        "Error: |completion time - (first completion + k x 10 ms)|, completion time being \
         when the guest (FakeGuest) saw the used element. Drift: slope of a linear fit of \
         completion times against k, relative to 10 ms. Targets: p99 <= 1 ms, |drift| < 50 ppm.",
    );
    Ok(vec![t])
}
