//! A fake guest: plays a WAV file into a vhostsnd socket and records the capture
//! stream to a WAV file, through the in-repo vhost-user frontend, so the elements can
//! be tried without a VM. The device paces both directions in real time.
//!
//! cargo run --release --example fake-guest -- --socket /tmp/snd.sock \
//!     [--play in.wav] [--record out.wav] [--seconds N] [--period-ms 10]

mod wav;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::formats::{self, PcmParams};
use virtio_snd_wire::{QUEUE_RX, QUEUE_TX, S_OK};

const PLAYBACK: u32 = 0;
const CAPTURE: u32 = 1;
/// Periods the guest keeps queued, like ALSA's default four-period buffer.
const QUEUED: usize = 4;
const RECORD_RATE: u32 = 48000;
const RECORD_CHANNELS: u8 = 2;

struct Args {
    socket: PathBuf,
    play: Option<PathBuf>,
    record: Option<PathBuf>,
    seconds: Option<f64>,
    period_ms: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        socket: PathBuf::new(),
        play: None,
        record: None,
        seconds: None,
        period_ms: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--socket" => args.socket = value()?.into(),
            "--play" => args.play = Some(value()?.into()),
            "--record" => args.record = Some(value()?.into()),
            "--seconds" => {
                args.seconds = Some(value()?.parse().map_err(|_| "--seconds: a number")?)
            }
            "--period-ms" => {
                args.period_ms = value()?.parse().map_err(|_| "--period-ms: a number")?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.socket.as_os_str().is_empty() {
        return Err("--socket PATH is required".into());
    }
    if args.play.is_none() && args.record.is_none() {
        return Err("nothing to do: give --play and/or --record".into());
    }
    Ok(args)
}

fn stream_params(format: u8, rate: u32, channels: u8, period_ms: u32) -> Result<PcmParams, String> {
    let code = formats::rate_code(rate).ok_or(format!("{rate} Hz is not a virtio-snd rate"))?;
    let mut p = PcmParams {
        format,
        rate: code,
        channels,
        buffer_bytes: 0,
        period_bytes: 0,
    };
    p.period_bytes = (rate * period_ms / 1000).max(1) * p.frame_bytes();
    p.buffer_bytes = QUEUED as u32 * p.period_bytes;
    Ok(p)
}

fn check(what: &str, status: std::io::Result<u32>) -> Result<(), String> {
    match status {
        Ok(S_OK) => Ok(()),
        Ok(s) => Err(format!("{what}: device answered {s:#x}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn open(g: &mut FakeGuest, stream: u32, p: &PcmParams) -> Result<(), String> {
    check("SET_PARAMS", g.set_pcm_params(stream, p))?;
    check("PREPARE", g.prepare(stream))
}

fn run(args: Args) -> Result<(), String> {
    let mut g = FakeGuest::connect(&args.socket, Duration::from_secs(10))
        .map_err(|e| format!("cannot connect to {}: {e}", args.socket.display()))?;

    let mut to_play: VecDeque<Vec<u8>> = VecDeque::new();
    let mut play_secs = 0.0;
    if let Some(path) = &args.play {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let w = wav::read(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let p = stream_params(w.format, w.rate, w.channels, args.period_ms)?;
        play_secs = w.data.len() as f64 / p.byte_rate() as f64;
        let usable = w.data.len() - w.data.len() % p.frame_bytes() as usize;
        to_play = w.data[..usable]
            .chunks(p.period_bytes as usize)
            .map(|c| c.to_vec())
            .collect();
        open(&mut g, PLAYBACK, &p)?;
        for _ in 0..QUEUED {
            if let Some(period) = to_play.pop_front() {
                g.submit_tx(PLAYBACK, &period).map_err(|e| e.to_string())?;
            }
        }
    }
    let record = stream_params(
        formats::FMT_S16,
        RECORD_RATE,
        RECORD_CHANNELS,
        args.period_ms,
    )?;
    let seconds = args
        .seconds
        .unwrap_or(if play_secs > 0.0 { play_secs } else { 5.0 });
    let record_bytes = (seconds * record.byte_rate() as f64) as usize;
    let mut recorded = Vec::new();
    if args.record.is_some() {
        open(&mut g, CAPTURE, &record)?;
        for _ in 0..QUEUED {
            g.submit_rx(CAPTURE, record.period_bytes)
                .map_err(|e| e.to_string())?;
        }
    }

    let started = Instant::now();
    if args.play.is_some() {
        check("START playback", g.start(PLAYBACK))?;
    }
    if args.record.is_some() {
        check("START capture", g.start(CAPTURE))?;
    }
    let mut in_flight_tx = g.in_flight(QUEUE_TX);
    while in_flight_tx > 0 || (args.record.is_some() && recorded.len() < record_bytes) {
        let done = g
            .wait_any(&[QUEUE_TX, QUEUE_RX], Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        if done.is_empty() {
            return Err("the device stopped completing periods".into());
        }
        for c in done {
            if c.status() != Some(S_OK) {
                return Err(format!("period completed with status {:?}", c.status()));
            }
            if c.queue == QUEUE_TX {
                in_flight_tx -= 1;
                if let Some(period) = to_play.pop_front() {
                    g.submit_tx(PLAYBACK, &period).map_err(|e| e.to_string())?;
                    in_flight_tx += 1;
                }
            } else {
                recorded.extend_from_slice(&c.data);
                if recorded.len() < record_bytes {
                    g.submit_rx(CAPTURE, record.period_bytes)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    for stream in [PLAYBACK, CAPTURE] {
        let _ = g.stop(stream);
        let _ = g.release(stream);
    }
    if args.play.is_some() {
        println!("played {play_secs:.3} s of audio in {elapsed:.3} s");
    }
    if let Some(path) = &args.record {
        recorded.truncate(record_bytes);
        let out = wav::write_s16(RECORD_RATE, u16::from(RECORD_CHANNELS), &recorded);
        std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "recorded {:.3} s to {}",
            recorded.len() as f64 / record.byte_rate() as f64,
            path.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
