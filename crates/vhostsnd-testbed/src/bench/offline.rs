//! Point 4: offline throughput. `vhostsndsrc is-live=false ! fakesink sync=false`, the
//! guest keeping its tx queue full: how fast guest audio gets through, per format and
//! period size.

use std::time::{Duration, Instant};

use virtio_snd_frontend::{FakeGuest, FakeGuestOptions};
use virtio_snd_wire::formats::{FMT_FLOAT, FMT_S16, FMT_S32};
use virtio_snd_wire::QUEUE_TX;

use super::setup::{self, PLAYBACK};
use super::stats;
use super::{Opts, Table};

/// Descriptors per tx chain on the ring: one indirect table, as Linux uses, or the
/// xfer header, data and status each in its own.
fn chain_len(g: &FakeGuest) -> usize {
    if g.indirect() {
        1
    } else {
        3
    }
}

pub struct Throughput {
    pub bytes: u64,
    pub secs: f64,
    pub byte_rate: u64,
    pub total_cpu: f64,
    pub frontend_cpu: f64,
}

fn refill(g: &mut FakeGuest, period: &[u8]) -> Result<(), String> {
    while g.free_descriptors(QUEUE_TX) >= chain_len(g) {
        g.submit_tx(PLAYBACK, period).map_err(|e| e.to_string())?;
    }
    g.flush(QUEUE_TX).map_err(|e| e.to_string())
}

pub fn one(format: u8, period_ms: u32, secs: f64, batch_kick: bool) -> Result<Throughput, String> {
    let mut p = setup::params(format, period_ms);
    let sock = setup::socket("offline");
    let pipeline = setup::launch(&format!(
        "vhostsndsrc socket={} is-live=false ! fakesink sync=false",
        sock.display()
    ))?;
    let mut g = setup::connect(&sock)?;
    // The guest's buffer is everything it keeps queued.
    p.buffer_bytes = p.period_bytes
        * (usize::from(FakeGuestOptions::default().queue_size) / chain_len(&g)) as u32;
    setup::open(&mut g, PLAYBACK, &p)?;
    let period = vec![0x11u8; p.period_bytes as usize];
    refill(&mut g, &period)?;
    setup::start(&mut g, PLAYBACK)?;
    // Like Linux's virtsnd_pcm_msg_send: queue every period there is room for, then
    // notify the device once if it asked for it. (Control requests need auto-kick: it
    // is back on below.)
    g.set_auto_kick(!batch_kick);
    // Warm up, then measure.
    let warm = Instant::now() + Duration::from_millis(200);
    let (mut t0, mut cpu0, mut fe0) = (None, Duration::ZERO, Duration::ZERO);
    let mut bytes = 0u64;
    let end_after = Duration::from_secs_f64(secs);
    loop {
        let done = setup::completions(&mut g, QUEUE_TX, "offline")?;
        let now = Instant::now();
        match t0 {
            None if now >= warm => {
                t0 = Some(now);
                cpu0 = stats::process_cpu();
                fe0 = stats::thread_cpu();
            }
            Some(t) if now.duration_since(t) >= end_after => break,
            Some(_) => {}
            None => {}
        }
        if t0.is_some() {
            bytes += done.len() as u64 * u64::from(p.period_bytes);
        }
        refill(&mut g, &period)?;
    }
    let elapsed = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let total_cpu = (stats::process_cpu() - cpu0).as_secs_f64();
    let frontend_cpu = (stats::thread_cpu() - fe0).as_secs_f64();
    g.set_auto_kick(true);
    setup::stop(&mut g, PLAYBACK);
    drop(g);
    setup::finish(&pipeline)?;
    Ok(Throughput {
        bytes,
        secs: elapsed,
        byte_rate: p.byte_rate(),
        total_cpu,
        frontend_cpu,
    })
}

pub fn run(opts: &Opts) -> Result<Vec<Table>, String> {
    let secs = if opts.quick { 0.3 } else { 3.0 };
    let mut t = Table::new(
        &format!("4. Offline throughput (vhostsndsrc is-live=false ! fakesink sync=false, 48 kHz stereo, {secs} s per row)"),
        &[
            "format, period",
            "guest kicks",
            "MB/s",
            "x real time",
            "periods/s",
            "device-side CPU (us/period)",
            "frontend CPU (us/period)",
        ],
    );
    for (name, fmt) in [("S16", FMT_S16), ("S32", FMT_S32), ("FLOAT", FMT_FLOAT)] {
        for (period_ms, batch) in [(10u32, false), (10, true), (40, false), (40, true)] {
            let r = one(fmt, period_ms, secs, batch)?;
            let p = setup::params(fmt, period_ms);
            let periods = r.bytes as f64 / f64::from(p.period_bytes);
            t.row(vec![
                format!("{name}, {period_ms} ms ({} B)", p.period_bytes),
                (if batch {
                    "once per refill"
                } else {
                    "every period"
                })
                .into(),
                format!("{:.1}", r.bytes as f64 / r.secs / 1e6),
                format!("{:.0}", r.bytes as f64 / r.secs / r.byte_rate as f64),
                format!("{:.0}", periods / r.secs),
                format!("{:.2}", (r.total_cpu - r.frontend_cpu) * 1e6 / periods),
                format!("{:.2}", r.frontend_cpu * 1e6 / periods),
            ]);
        }
    }
    t.note(
        "The guest (FakeGuest, this process's main thread) keeps every tx descriptor in \
         use (64 chains, each in an indirect table as Linux queues them, in the 64-entry \
         queue: a 64-period buffer), asking \
         after every period or once per refill (as Linux's virtsnd_pcm_msg_send does) \
         whether the device wants a kick (EVENT_IDX). MB = 10^6 bytes. CPU \
         is process time over the window; frontend = the guest thread's own time. \
         Target: >= 1000 MB/s for S16 stereo 10 ms periods.",
    );
    Ok(vec![t])
}
