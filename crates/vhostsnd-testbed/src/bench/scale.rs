//! Point 3: CPU and memory per device, and whether many devices keep real time. N
//! devices in this process, each one pipeline with a playback branch
//! (`vhostsndsrc ! fakesink sync=true`) and a capture branch
//! (`audiotestsrc is-live=true ! vhostsndsink`), each driven by a FakeGuest. The guests
//! are shared out over at most two frontend threads that poll their queues every
//! few milliseconds; their own CPU time is measured per thread
//! (CLOCK_THREAD_CPUTIME_ID) and subtracted from the process's. The same number of
//! pipelines without a device, measured before and after, gives what GStreamer alone
//! costs. Every branch carries the guest's format through a capsfilter, so that both
//! sides move the same buffers: left alone, audiotestsrc into fakesink runs at its
//! default 44.1 kHz mono, 8 % fewer buffers a second of half the size.

use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::formats::FMT_S16;
use virtio_snd_wire::{QUEUE_RX, QUEUE_TX, S_OK};

use super::setup::{self, CAPTURE, PLAYBACK, QUEUED};
use super::stats::{self, ms};
use super::{Opts, Table};

const POLL: Duration = Duration::from_millis(4);

/// The format of every branch: the guest's (`setup::params`).
fn caps() -> String {
    format!(
        "audio/x-raw,format=S16LE,layout=interleaved,rate={},channels=2",
        setup::RATE
    )
}

struct Dev {
    g: FakeGuest,
    /// Completion times of the current run, per direction.
    at: [Vec<Instant>; 2],
    /// Polls that found every queued period completed: the guest let the queue run
    /// dry (a starved device would follow).
    empty: [u64; 2],
}

#[derive(Default)]
struct ThreadResult {
    cpu: Duration,
    late: usize,
    empty: u64,
    periods: usize,
    bad_status: usize,
    /// The thread runs at a raised priority (`stats::favour_this_thread`).
    favoured: bool,
}

pub struct ScaleRow {
    pub devices: usize,
    pub secs: f64,
    pub total_ms_per_s_stream: f64,
    pub frontend_ms_per_s_stream: f64,
    pub device_ms_per_s_stream: f64,
    /// The same number of pipelines with GStreamer's own live source and sink in place
    /// of the elements, and no device.
    pub baseline_ms_per_s_stream: f64,
    pub rss_kib_per_dev: f64,
    pub shmem_kib_per_dev: f64,
    pub periods: usize,
    pub expected_periods: usize,
    pub late: usize,
    pub empty: u64,
    pub bad_status: usize,
    /// Every frontend thread ran at a raised priority.
    pub frontend_favoured: bool,
    /// Wake-ups of the pipelines' streaming threads per guest period.
    pub streaming_wakeups_per_period: f64,
    /// Wake-ups per second of the device's own threads (vring workers, pacers,
    /// servers), per stream.
    pub device_wakeups_per_s_stream: f64,
}

impl ScaleRow {
    fn added_ms_per_s_stream(&self) -> f64 {
        self.device_ms_per_s_stream - self.baseline_ms_per_s_stream
    }
}

/// Runs of the largest size in the full benchmark: what vhostsnd adds is a difference
/// of two measurements about 20 % apart, each moved a few percent by the machine's
/// other load; the median of three runs is the figure, and every run is shown.
const ROUNDS: usize = 3;

fn late_count(at: &[Instant], period: Duration) -> usize {
    let Some(&t0) = at.first() else { return 0 };
    at.iter()
        .enumerate()
        .filter(|(k, t)| t.duration_since(t0) > period * (*k as u32 + 1))
        .count()
}

fn drive(
    mut devs: Vec<Dev>,
    period: Vec<u8>,
    win: Arc<OnceLock<(Instant, Instant)>>,
    barrier: Arc<Barrier>,
) -> Result<ThreadResult, String> {
    let period_len = period.len() as u32;
    let favoured = stats::favour_this_thread();
    let started = devs.iter_mut().try_for_each(|d| {
        for _ in 0..QUEUED {
            d.g.submit_tx(PLAYBACK, &period)
                .map_err(|e| e.to_string())?;
            d.g.submit_rx(CAPTURE, period_len)
                .map_err(|e| e.to_string())?;
        }
        setup::start(&mut d.g, PLAYBACK)?;
        setup::start(&mut d.g, CAPTURE)
    });
    // Passed whatever happened, so that the main thread never waits forever.
    barrier.wait();
    started?;
    // The main thread publishes the window right after the barrier.
    let win = loop {
        if let Some(w) = win.get() {
            break *w;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut res = ThreadResult {
        favoured,
        ..ThreadResult::default()
    };
    let mut cpu0 = None;
    loop {
        let now = Instant::now();
        if cpu0.is_none() && now >= win.0 {
            cpu0 = Some(stats::thread_cpu());
            for d in &mut devs {
                d.at = [Vec::new(), Vec::new()];
                d.empty = [0, 0];
            }
        }
        if now >= win.1 {
            res.cpu = stats::thread_cpu() - cpu0.unwrap_or_default();
            break;
        }
        for d in &mut devs {
            for (i, q) in [QUEUE_TX, QUEUE_RX].into_iter().enumerate() {
                let done = d.g.try_io(q).map_err(|e| e.to_string())?;
                if done.len() >= QUEUED {
                    d.empty[i] += 1;
                }
                for c in done {
                    if c.status() != Some(S_OK) {
                        res.bad_status += 1;
                    }
                    d.at[i].push(c.at);
                    if i == 0 {
                        d.g.submit_tx(PLAYBACK, &period)
                    } else {
                        d.g.submit_rx(CAPTURE, period_len)
                    }
                    .map_err(|e| e.to_string())?;
                }
            }
        }
        std::thread::sleep(POLL);
    }
    for d in &mut devs {
        for i in 0..2 {
            res.late += late_count(&d.at[i], Duration::from_millis(10));
            res.periods += d.at[i].len();
            res.empty += d.empty[i];
        }
        setup::stop(&mut d.g, PLAYBACK);
        setup::stop(&mut d.g, CAPTURE);
    }
    Ok(res)
}

/// CPU per stream of `n` pipelines that do what the device's pipelines do without a
/// device: a live source into a synchronised fakesink, and a live source into a sink.
fn baseline(n: usize, warm: Duration, secs: f64) -> Result<f64, String> {
    let mut pipelines = Vec::new();
    let branch = format!(
        "audiotestsrc is-live=true samplesperbuffer=480 wave=silence ! {} ! fakesink sync=true",
        caps()
    );
    for _ in 0..n {
        pipelines.push(setup::launch(&format!("{branch} {branch}"))?);
    }
    std::thread::sleep(warm);
    let cpu0 = stats::process_cpu();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let cpu = (stats::process_cpu() - cpu0).as_secs_f64();
    for pl in &pipelines {
        setup::finish(pl)?;
    }
    Ok(cpu * 1e3 / (2 * n) as f64 / secs)
}

fn one(n: usize, secs: f64) -> Result<ScaleRow, String> {
    let p = setup::params(FMT_S16, 10);
    let warm = Duration::from_millis(if secs < 5.0 { 500 } else { 1000 });
    // GStreamer alone is measured before and after the devices' window and the two
    // averaged: foreign load that rises or falls during the run then moves both
    // sides of the difference alike.
    let base_before = baseline(n, warm, secs.min(5.0))?;
    let (rss0, shm0) = stats::rss_kib();
    let mut pipelines = Vec::new();
    let mut devs = Vec::new();
    let caps = caps();
    for _ in 0..n {
        let sock = setup::socket("scale");
        pipelines.push(setup::launch(&format!(
            "vhostsndsrc socket={s} ! {caps} ! fakesink sync=true \
             audiotestsrc is-live=true samplesperbuffer=480 wave=silence ! {caps} ! vhostsndsink socket={s}",
            s = sock.display(),
        ))?);
        let mut g = setup::connect(&sock)?;
        setup::open(&mut g, PLAYBACK, &p)?;
        setup::open(&mut g, CAPTURE, &p)?;
        devs.push(Dev {
            g,
            at: [Vec::new(), Vec::new()],
            empty: [0, 0],
        });
    }
    let threads = n.min(2);
    let barrier = Arc::new(Barrier::new(threads + 1));
    // The window is fixed once every guest runs (the barrier).
    let win_cell = Arc::new(OnceLock::<(Instant, Instant)>::new());
    let mut handles = Vec::new();
    let per = n.div_ceil(threads);
    let mut rest = devs;
    for _ in 0..threads {
        let mine: Vec<Dev> = rest.drain(..per.min(rest.len())).collect();
        let b = barrier.clone();
        let w = win_cell.clone();
        let period = vec![0u8; p.period_bytes as usize];
        handles.push(std::thread::spawn(move || drive(mine, period, w, b)));
    }
    barrier.wait();
    let t0 = Instant::now() + warm;
    let win = (t0, t0 + Duration::from_secs_f64(secs));
    let _ = win_cell.set(win);
    sleep_until(win.0);
    let (rss1, shm1) = stats::rss_kib();
    let woken0 = stats::thread_wakeups();
    let cpu0 = stats::process_cpu();
    sleep_until(win.1);
    let cpu1 = stats::process_cpu();
    let woken1 = stats::thread_wakeups();
    let mut res = Vec::new();
    for h in handles {
        res.push(h.join().map_err(|_| "frontend thread panicked")??);
    }
    for pl in &pipelines {
        setup::finish(pl)?;
    }
    drop(pipelines);
    let base = (base_before + baseline(n, warm, secs.min(5.0))?) / 2.0;
    let streams = (2 * n) as f64;
    let total = (cpu1 - cpu0).as_secs_f64() * 1e3 / streams / secs;
    let fe: f64 = res.iter().map(|r| r.cpu.as_secs_f64()).sum::<f64>() * 1e3 / streams / secs;
    // GStreamer names streaming threads after their source element; the device's
    // threads are vhostsnd-* (server, pacers) and vhost-user-backend's vring_worker.
    let streaming = stats::wakeups_between(&woken0, &woken1, |n| {
        n.starts_with("vhostsndsrc") || n.starts_with("audiotestsrc")
    });
    let device_threads = stats::wakeups_between(&woken0, &woken1, |n| {
        n.starts_with("vhostsnd-") || n.starts_with("vring_worker")
    });
    Ok(ScaleRow {
        devices: n,
        secs,
        total_ms_per_s_stream: total,
        frontend_ms_per_s_stream: fe,
        device_ms_per_s_stream: total - fe,
        baseline_ms_per_s_stream: base,
        rss_kib_per_dev: rss1.saturating_sub(rss0) as f64 / n as f64,
        shmem_kib_per_dev: shm1.saturating_sub(shm0) as f64 / n as f64,
        periods: res.iter().map(|r| r.periods).sum(),
        expected_periods: (streams * secs * 100.0) as usize,
        late: res.iter().map(|r| r.late).sum(),
        empty: res.iter().map(|r| r.empty).sum(),
        bad_status: res.iter().map(|r| r.bad_status).sum(),
        frontend_favoured: res.iter().all(|r| r.favoured),
        streaming_wakeups_per_period: streaming as f64 / (streams * secs * 100.0),
        device_wakeups_per_s_stream: device_threads as f64 / streams / secs,
    })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

pub fn run(opts: &Opts) -> Result<Vec<Table>, String> {
    let (mut sizes, secs) = if opts.quick {
        (vec![1, 8], 1.5)
    } else {
        (vec![1, 8, 32, 64], 10.0)
    };
    // BENCH_DEVICES=32 (or 8,64) runs other sizes, e.g. for a profile.
    if let Ok(v) = std::env::var("BENCH_DEVICES") {
        sizes = v.split(',').filter_map(|n| n.trim().parse().ok()).collect();
    }
    let mut t = Table::new(
        &format!("3. CPU cost and scale (each device: playback + capture, 48 kHz stereo S16, 10 ms periods; {secs} s window)"),
        &[
            "devices",
            "total CPU (ms/s per stream)",
            "frontend CPU (ms/s per stream)",
            "device-side CPU (ms/s per stream)",
            "GStreamer alone (ms/s per stream)",
            "added by vhostsnd (ms/s per stream)",
            "added, each run (ms/s per stream)",
            "RSS per device (KiB)",
            "of which guest RAM (shmem, KiB)",
            "periods / expected",
            "late completions",
            "guest queue found empty",
            "streaming-thread wake-ups per period",
            "device-thread wake-ups (per s per stream)",
        ],
    );
    let mut favoured = true;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    // BENCH_ROUNDS=5 runs the largest size that many times instead.
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(if opts.quick { 1 } else { ROUNDS })
        .max(1);
    for &n in &sizes {
        let mut runs = Vec::new();
        for _ in 0..if n == largest { rounds } else { 1 } {
            let r = one(n, secs)?;
            if r.bad_status > 0 {
                return Err(format!("{n} devices: {} completions failed", r.bad_status));
            }
            runs.push(r);
        }
        let each = runs
            .iter()
            .map(|r| ms(r.added_ms_per_s_stream()))
            .collect::<Vec<_>>()
            .join(", ");
        runs.sort_by(|a, b| {
            a.added_ms_per_s_stream()
                .total_cmp(&b.added_ms_per_s_stream())
        });
        let r = runs.swap_remove(runs.len() / 2);
        favoured &= r.frontend_favoured && runs.iter().all(|r| r.frontend_favoured);
        t.row(vec![
            r.devices.to_string(),
            ms(r.total_ms_per_s_stream),
            ms(r.frontend_ms_per_s_stream),
            ms(r.device_ms_per_s_stream),
            ms(r.baseline_ms_per_s_stream),
            ms(r.added_ms_per_s_stream()),
            each,
            format!("{:.0}", r.rss_kib_per_dev),
            format!("{:.0}", r.shmem_kib_per_dev),
            format!("{} / {}", r.periods, r.expected_periods),
            r.late.to_string(),
            r.empty.to_string(),
            format!("{:.2}", r.streaming_wakeups_per_period),
            format!("{:.2}", r.device_wakeups_per_s_stream),
        ]);
        let _ = r.secs;
    }
    t.note(
        "CPU: process user+system time (getrusage) over the window, divided by streams \
         (2 per device) and seconds of audio; frontend: the FakeGuest threads' own \
         CLOCK_THREAD_CPUTIME_ID (they run at nice -10, as QEMU and the guest would have \
         vCPUs of their own, so that late completions are the device's); device-side = total - frontend (it includes the \
         pipelines: audiotestsrc, fakesink, the elements and the device threads). \
         GStreamer alone: the same number of pipelines with `audiotestsrc is-live=true ! \
         CAPS ! fakesink sync=true` in place of each branch, no device, measured just before \
         and just after (for at most 5 s each) and averaged; every branch of both runs \
         carries the guest's format (48 kHz stereo S16, 480-frame buffers) through the \
         same capsfilter CAPS; added by vhostsnd = device-side - GStreamer alone. The \
         largest size runs three times (BENCH_ROUNDS), each run with its own GStreamer-alone \
         measurements: its row is the run with the median added CPU, and every run's added \
         CPU is listed in order. RSS: \
         VmRSS growth from before the first pipeline to the start of the window, per \
         device; guest RAM (the FakeGuest's memfd, mapped by both the frontend and the \
         device) is the RssShmem part. Wake-ups: voluntary context switches over the window \
         (/proc), of the streaming threads (vhostsndsrc's, and the audiotestsrc that feeds \
         vhostsndsink) per guest period, and of the device's own threads (vring workers, \
         pacers, servers) per second and stream. Targets: 64 devices, 0 late; device-side <= 1 \
         ms/s per stream; <= 1024 KiB per device.",
    );
    if !favoured {
        t.note(
            "The frontend threads ran at normal priority (raising it needs CAP_SYS_NICE): \
             late completions may be theirs.",
        );
    }
    Ok(vec![t])
}
