//! vhostsndsrc into sinks that synchronise to the clock, as a host's audio output
//! does, whatever period the guest picks: the pipeline's latency follows the guest's
//! period, so every buffer reaches the sink's buffer in time, alone or with several
//! guests mixed by one `audiomixer`. (A `queue` stands for the audio sink's ring
//! buffer, which takes audio ahead of its time; an appsink that synchronises takes
//! one buffer at a time, so the thread feeding it is what a stall would delay.)

mod support;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_base::prelude::*;
use vhostsnd_testbed::analysis;
use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::formats::{self, PcmParams};
use virtio_snd_wire::{QUEUE_TX, S_OK};

use support::*;

/// Guest periods as Linux's drivers pick them here (10 ms at the smallest, 62.5 ms
/// for aplay and alsabat, 125 ms for arecord), in frames at 48 kHz.
const PERIODS: [u32; 3] = [480, 3000, 6000];
/// What the sink and the mixer add to the latency the sources report, as a host's
/// audio output does with its buffer: these machines' vCPUs stall now and then
/// (`perf sched` showed a 10 ms tick's timer fire 27 ms late with its CPU idle, and a
/// CI run had a 50 ms stall), which no live pipeline without a margin survives.
/// Appsink's default margin (its processing deadline) is 20 ms.
const HEADROOM: gst::ClockTime = gst::ClockTime::from_mseconds(60);
/// audiomixer's output buffers (its default, set so the latency can be checked).
const MIX_BUFFER: gst::ClockTime = gst::ClockTime::from_mseconds(10);
/// Amplitude of each guest's tone, so that three fit into one mix.
const LEVEL: f64 = 0.25;

fn stereo_s16(period_frames: u32) -> PcmParams {
    params(formats::FMT_S16, 48000, 2, period_frames)
}

/// How long a guest period of `period_frames` lasts.
fn period_time(period_frames: u32) -> gst::ClockTime {
    let p = stereo_s16(period_frames);
    gst::ClockTime::from_nseconds(p.bytes_to_ns(u64::from(p.period_bytes)))
}

/// `frames` frames of a `freq` Hz sine at [`LEVEL`], from frame `first`.
fn sine(freq: f64, first: u64, frames: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames as usize * 4);
    for f in first..first + frames {
        let v = LEVEL * (std::f64::consts::TAU * freq * f as f64 / 48000.0).sin();
        let s = ((v * 32767.0) as i16).to_le_bytes();
        out.extend_from_slice(&s);
        out.extend_from_slice(&s);
    }
    out
}

/// A guest that connects to `socket` and plays `secs` of a `freq` Hz tone in
/// periods of `period_frames`, keeping its 4-period buffer full as ALSA does, on a
/// thread of its own. Returns the periods it got back.
fn guest_plays(
    socket: std::path::PathBuf,
    period_frames: u32,
    freq: f64,
    secs: f64,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut g = FakeGuest::connect(&socket, TIMEOUT).expect("the guest connects");
        let p = stereo_s16(period_frames);
        let frames = u64::from(period_frames);
        let periods = (secs * 48000.0 / frames as f64).ceil() as u64;
        assert_eq!(g.set_pcm_params(0, &p).unwrap(), S_OK);
        assert_eq!(g.prepare(0).unwrap(), S_OK);
        let mut sent = 0;
        while sent < periods.min(4) {
            g.submit_tx(0, &sine(freq, sent * frames, frames)).unwrap();
            sent += 1;
        }
        assert_eq!(g.start(0).unwrap(), S_OK);
        let mut done = 0;
        let deadline = Instant::now() + Duration::from_secs_f64(secs + 5.0);
        while (done as u64) < periods && Instant::now() < deadline {
            for c in g.wait_io(QUEUE_TX, Duration::from_millis(200)).unwrap() {
                assert_eq!(c.status(), Some(S_OK));
                done += 1;
                if sent < periods {
                    g.submit_tx(0, &sine(freq, sent * frames, frames)).unwrap();
                    sent += 1;
                }
            }
        }
        assert_eq!(g.stop(0).unwrap(), S_OK);
        assert_eq!(g.release(0).unwrap(), S_OK);
        done
    })
}

/// What reached an appsink that synchronises: the left channel of its stereo S16
/// input, how late each buffer reached the sink's buffer (the queue named `ring`)
/// against the clock, the pipeline's latency counted in (a real audio sink cannot
/// play what comes late), and when the source pushed each.
#[derive(Default)]
struct Arrivals {
    left: Vec<f32>,
    latest: Duration,
    /// The first buffers that came more than 5 ms late: timestamp, lateness, GAP.
    late: Vec<(gst::ClockTime, Duration, bool)>,
    /// For each buffer the element named `src` pushed, in ns, when it did minus when
    /// its last sample was due.
    pushed: Vec<i64>,
}

/// Records what reaches the sink named `out`, and when a source named `src` (if
/// any) pushes.
fn collect(w: &Watched) -> Arc<Mutex<Arrivals>> {
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    if let Some(src) = w.pipeline.by_name("src") {
        let a = arrivals.clone();
        let el = src.clone();
        src.static_pad("src").expect("the source's pad").add_probe(
            gst::PadProbeType::BUFFER,
            move |_, info| {
                let due = info
                    .buffer()
                    .and_then(|b| b.pts().zip(b.duration()))
                    .zip(el.base_time())
                    .map(|((pts, d), base)| base + pts + d);
                if let (Some(now), Some(due)) = (el.clock().map(|c| c.time()), due) {
                    let delay = now.nseconds() as i64 - due.nseconds() as i64;
                    lock(&a).pushed.push(delay);
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    let out = w.pipeline.by_name("out").expect("the sink");
    let sink = out
        .clone()
        .downcast::<gst_base::BaseSink>()
        .expect("a base sink");
    let a = arrivals.clone();
    let ring = w
        .pipeline
        .by_name("ring")
        .expect("the queue before the sink");
    ring.static_pad("sink").expect("the queue's pad").add_probe(
        gst::PadProbeType::BUFFER,
        move |_, info| {
            // The sink holds the buffer it prerolls on until the pipeline's latency
            // is configured.
            let latency = sink.latency();
            let (Some(buf), Some(clock), true) =
                (info.buffer(), sink.clock(), latency > gst::ClockTime::ZERO)
            else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(due) = sink
                .base_time()
                .zip(buf.pts())
                .map(|(b, pts)| b + pts + latency)
            else {
                return gst::PadProbeReturn::Ok;
            };
            let late = Duration::from_nanos(clock.time().saturating_sub(due).nseconds());
            let mut a = lock(&a);
            a.latest = a.latest.max(late);
            if late > Duration::from_millis(5) && a.late.len() < 10 {
                let gap = buf.flags().contains(gst::BufferFlags::GAP);
                a.late.push((buf.pts().unwrap_or_default(), late, gap));
            }
            gst::PadProbeReturn::Ok
        },
    );
    let a = arrivals.clone();
    let appsink = out.downcast::<gst_app::AppSink>().expect("an appsink");
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                lock(&a).left.extend(
                    map.chunks_exact(4)
                        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0),
                );
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    arrivals
}

/// The streaming threads go on after a failed assertion: they must not panic on the
/// lock the test held.
fn lock(a: &Mutex<Arrivals>) -> std::sync::MutexGuard<'_, Arrivals> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything collected so far, leaving the streaming threads an empty record.
fn take(arrivals: &Mutex<Arrivals>) -> Arrivals {
    std::mem::take(&mut *lock(arrivals))
}

/// The pipeline's latency is the sources' (the longest guest period) plus what the
/// mixer and the sink add, exactly: a latency planned for another period would make
/// buffers late or the sink's margin smaller.
fn assert_latency(w: &Watched, expected: gst::ClockTime, what: &str) {
    assert_eq!(w.latency(), expected, "{what}: the pipeline's latency");
}

/// Lateness past the headroom that a loaded machine may still add; a latency planned
/// for 10 ms periods where the guest has 125 ms makes buffers 55 ms late even so.
const SCHEDULING: Duration = Duration::from_millis(15);

/// Nothing was late, and nothing failed.
fn assert_on_time(w: &Watched, arrivals: &Arrivals, what: &str) {
    assert!(
        arrivals.latest <= SCHEDULING,
        "{what}: a buffer reached the sink {:?} late: {:?}",
        arrivals.latest,
        arrivals.late
    );
    assert!(w.errors().is_empty(), "{what}: {:?}", w.errors());
}

#[test]
fn a_syncing_sink_gets_every_buffer_on_time_whatever_the_guests_period() {
    for (frames, freq) in PERIODS.iter().zip([500.0, 700.0, 1100.0]) {
        let socket = socket_path(&format!("sync-{frames}"));
        let w = Watched::launch(&format!(
            "vhostsndsrc name=src socket={} ! audio/x-raw,format=S16LE,rate=48000,channels=2 ! \
             queue name=ring ! appsink name=out sync=true processing-deadline={}",
            socket.display(),
            HEADROOM.nseconds()
        ));
        let arrivals = collect(&w);
        let period = period_time(*frames);
        let secs = 1.5;
        assert!(guest_plays(socket, *frames, freq, secs).join().unwrap() > 0);
        thread::sleep(Duration::from_nanos(period.nseconds()) + Duration::from_millis(100));
        let what = format!("{} ms periods", period.nseconds() as f64 / 1e6);
        assert_latency(&w, period + HEADROOM, &what);
        let mut arrivals = take(&arrivals);
        assert_on_time(&w, &arrivals, &what);
        // The source pushes each period as its last sample is due, which is the
        // latency it reports: the headroom covers stalls, not a source that is slow.
        arrivals.pushed.sort_unstable();
        let median = arrivals
            .pushed
            .get(arrivals.pushed.len() / 2)
            .copied()
            .unwrap_or(i64::MAX);
        assert!(
            median < 5_000_000,
            "{what}: the median buffer was pushed {median} ns after its last sample was due"
        );
        let (heard, gaps) = tone_gaps(&arrivals.left, freq);
        assert!(gaps.is_empty(), "{what}: gaps at {gaps:?} s");
        assert!(
            (heard - secs).abs() < 0.1,
            "{what}: heard {heard:.3} s of {secs} s"
        );
    }
}

/// Windows of 10 ms, every 5 ms, in which `freq` is weaker than a third of its
/// level: gaps in that guest's audio. Only the stretch from the first to the last
/// window that has the tone is looked at; returns that stretch's length in seconds
/// with the gaps.
fn tone_gaps(left: &[f32], freq: f64) -> (f64, Vec<f64>) {
    let (win, hop) = (480, 240);
    let full = LEVEL * LEVEL / 4.0;
    let power: Vec<f64> = (0..left.len().saturating_sub(win) / hop)
        .map(|i| analysis::goertzel_power(&left[i * hop..i * hop + win], 48000, freq))
        .collect();
    let heard: Vec<usize> = (0..power.len())
        .filter(|&i| power[i] > full / 3.0)
        .collect();
    let (Some(&first), Some(&last)) = (heard.first(), heard.last()) else {
        return (0.0, Vec::new());
    };
    let gaps = (first..=last)
        .filter(|&i| power[i] <= full / 3.0)
        .map(|i| (i * hop) as f64 / 48000.0)
        .collect();
    (((last - first) * hop + win) as f64 / 48000.0, gaps)
}

#[test]
fn several_guests_mixed_into_one_syncing_sink_keep_their_audio() {
    let sockets: Vec<_> = PERIODS
        .iter()
        .map(|f| socket_path(&format!("mix-{f}")))
        .collect();
    let sources: String = sockets
        .iter()
        .map(|s| format!("vhostsndsrc socket={} ! mix. ", s.display()))
        .collect();
    let w = Watched::launch(&format!(
        "audiomixer name=mix latency={h} output-buffer-duration={b} ! \
         audio/x-raw,format=S16LE,rate=48000,channels=2 ! \
         queue name=ring ! appsink name=out sync=true processing-deadline={h} {sources}",
        h = HEADROOM.nseconds(),
        b = MIX_BUFFER.nseconds()
    ));
    let arrivals = collect(&w);
    let freqs = [500.0, 700.0, 1100.0];
    let secs = 2.0;
    let guests: Vec<_> = sockets
        .iter()
        .zip(PERIODS)
        .zip(freqs)
        .map(|((s, frames), f)| guest_plays(s.clone(), frames, f, secs))
        .collect();
    for g in guests {
        assert!(g.join().unwrap() > 0);
    }
    // The last periods leave the mixer after its latency.
    thread::sleep(Duration::from_millis(400));
    let longest = PERIODS
        .iter()
        .map(|&f| period_time(f))
        .max()
        .unwrap_or_default();
    assert_latency(&w, longest + MIX_BUFFER + HEADROOM + HEADROOM, "the mix");
    let arrivals = take(&arrivals);
    for (frames, f) in PERIODS.iter().zip(freqs) {
        let (heard, gaps) = tone_gaps(&arrivals.left, f);
        let what = format!("guest with {frames}-frame periods ({f} Hz)");
        assert!(gaps.is_empty(), "{what}: gaps at {gaps:?} s");
        assert!(
            (heard - secs).abs() < 0.1,
            "{what}: heard for {heard:.3} s of {secs} s"
        );
    }
    assert_on_time(&w, &arrivals, "the mix");
}

/// The `latency_bytes` the guest is told with each period is the time from that
/// period's completion to its last sample leaving the pipeline: with a pipeline
/// latency of 200 ms and 62.5 ms periods, a period starts out 137.5 ms after it was
/// completed. (The queue stands for an audio sink's ring buffer: a sink that blocks
/// its caller until each buffer's time, as fakesink does, would hold vhostsndsrc's
/// streaming thread past its next tick.)
#[test]
fn latency_bytes_is_the_time_from_completion_to_output() {
    init();
    let socket = socket_path("latency-bytes");
    let pipeline = gst::parse::launch(&format!(
        "vhostsndsrc socket={} ! queue ! fakesink name=out sync=true signal-handoffs=true",
        socket.display()
    ))
    .expect("pipeline description")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let latency = Duration::from_millis(200);
    pipeline.set_latency(gst::ClockTime::from_nseconds(latency.as_nanos() as u64));
    // Each period starts with its number (from 1); silence starts with 0.
    let out: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let seen = out.clone();
    let sink = pipeline.by_name("out").expect("fakesink");
    sink.connect("handoff", false, move |args| {
        let buf = args[1].get::<gst::Buffer>().ok()?;
        let map = buf.map_readable().ok()?;
        let mut n = [0u8; 8];
        n.copy_from_slice(map.get(..8)?);
        let n = u64::from_le_bytes(n);
        if n > 0 {
            seen.lock().unwrap().push((n, Instant::now()));
        }
        None
    });
    pipeline.set_state(gst::State::Playing).unwrap();

    let mut g = connect(&socket);
    let p = stereo_s16(3000);
    let period = Duration::from_secs_f64(3000.0 / 48000.0);
    let period_of = |n: u64| {
        let mut d = vec![0u8; p.period_bytes as usize];
        d[..8].copy_from_slice(&n.to_le_bytes());
        d
    };
    assert_eq!(g.set_pcm_params(0, &p).unwrap(), S_OK);
    assert_eq!(g.prepare(0).unwrap(), S_OK);
    let mut tokens = std::collections::HashMap::new();
    for n in 1..=4 {
        tokens.insert(g.submit_tx(0, &period_of(n)).unwrap(), n);
    }
    assert_eq!(g.start(0).unwrap(), S_OK);
    let mut completed = Vec::new();
    let mut next = 5;
    while completed.len() < 24 {
        for c in g.wait_io(QUEUE_TX, TIMEOUT).unwrap() {
            assert_eq!(c.status(), Some(S_OK));
            let n = tokens[&c.token];
            completed.push((n, c.at, c.latency_bytes().unwrap_or(0)));
            tokens.insert(g.submit_tx(0, &period_of(next)).unwrap(), next);
            next += 1;
        }
    }
    thread::sleep(latency + period);
    pipeline.set_state(gst::State::Null).unwrap();

    let out = out.lock().unwrap();
    // The first periods go out before the latency is distributed; look at the rest.
    for &(n, done, latency_bytes) in &completed[8..] {
        let told = Duration::from_secs_f64(f64::from(latency_bytes) / p.byte_rate() as f64);
        assert!(
            told.abs_diff(latency) < Duration::from_millis(2),
            "period {n}: latency_bytes says {told:?}, the pipeline's latency is {latency:?}"
        );
        let &(_, played) = out
            .iter()
            .find(|(m, _)| *m == n)
            .unwrap_or_else(|| panic!("period {n} never reached the sink"));
        let real = played.duration_since(done) + period;
        assert!(
            real.abs_diff(told) < Duration::from_millis(25),
            "period {n}: its last sample left {real:?} after completion, the guest was told {told:?}"
        );
    }
}
