//! A guest that does everything wrong as fast as it can gets a few log lines a
//! second per kind of mistake, none above WARNING, however many mistakes it makes.
//! The logger here does what the plugin's and the daemon's do: it passes every
//! record through `log_limit::screen`.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use vhost_user_sound::log_limit::{self, LINES_PER_WINDOW};
use virtio_snd_frontend::Segment;
use virtio_snd_wire::*;

/// Every line that got through, by where it was logged.
struct Capture(Mutex<HashMap<(String, u32), usize>>, Mutex<Vec<log::Level>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, r: &log::Record) {
        if let Some((level, _)) = log_limit::screen(r) {
            let key = (r.target().to_owned(), r.line().unwrap_or(0));
            *self.0.lock().unwrap().entry(key).or_default() += 1;
            self.1.lock().unwrap().push(level);
        }
    }

    fn flush(&self) {}
}

static LOG: std::sync::LazyLock<Capture> =
    std::sync::LazyLock::new(|| Capture(Mutex::default(), Mutex::default()));

#[test]
fn guest_mistakes_log_a_few_lines_a_second() {
    log::set_logger(&*LOG).expect("the only logger");
    log::set_max_level(log::LevelFilter::Trace);
    let (_rig, mut g) = Rig::new("quiet-log");
    let start = Instant::now();
    let mut mistakes = 0;
    while start.elapsed() < Duration::from_secs(2) {
        // I/O before PREPARE, on the wrong queue, without a status, oversized.
        let tok = g.submit_tx(PLAY, &period_of(1)).unwrap();
        g.wait_token(tok, T).unwrap();
        let tok = g.submit_tx(CAP, &period_of(1)).unwrap();
        g.wait_token(tok, T).unwrap();
        let tok = g
            .submit_segments(QUEUE_RX, &[Segment::Read(&xfer(CAP)), Segment::Write(4)])
            .unwrap();
        g.wait_token(tok, T).unwrap();
        // Control requests: unknown, short, refused transitions, bad queries.
        for req in [
            pcm_hdr(0xdead, PLAY),
            vec![1, 2],
            pcm_hdr(R_PCM_START, PLAY),
            pcm_hdr(R_PCM_PREPARE, 7),
            query(R_CHMAP_INFO, 99, 1, 24),
        ] {
            g.control(&req, 64).unwrap();
        }
        mistakes += 8;
    }
    alive(&mut g);
    let secs = start.elapsed().as_secs() + 1;
    let sites = LOG.0.lock().unwrap().clone();
    let lines: usize = sites.values().sum();
    assert!(mistakes > 1000, "only {mistakes} mistakes made");
    for ((target, line), n) in &sites {
        // Each window of a call site lets LINES_PER_WINDOW through; the run may
        // straddle one window more than it lasted.
        let bound = LINES_PER_WINDOW as usize * (secs as usize + 1);
        assert!(
            *n <= bound,
            "{target}:{line} logged {n} lines in {secs} s (bound {bound})"
        );
    }
    let levels = LOG.1.lock().unwrap();
    assert!(
        levels.iter().all(|l| *l >= log::Level::Warn),
        "a guest's mistake logged above WARNING"
    );
    assert!(lines > 0, "the mistakes were not logged at all");
}
