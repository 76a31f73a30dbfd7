//! The rig every protocol test runs on: a real device on its own vhost-user socket,
//! the in-repo fake guest connected to it, and both streams paced by a manual clock
//! whose time only moves when a test moves it, so that completions are counted exactly
//! and nothing depends on wall-clock timing.

// Each test binary (one per file in tests/) uses only some of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use vhost_user_sound::{Device, Direction, PacerClock, PcmState};
use virtio_snd_frontend::{Completion, FakeGuest, FakeGuestOptions, POISON};
use virtio_snd_wire::formats::FMT_S16;
use virtio_snd_wire::*;
use vm_memory::ByteValued;

pub const T: Duration = Duration::from_secs(5);
/// 48 kHz (rate code 7), S16LE stereo: 4-byte frames, 480-frame (10 ms) periods.
pub const RATE: u8 = 7;
const FRAME: u32 = 4;
pub const PERIOD: u32 = 480 * FRAME;
pub const BUFFER: u32 = 4 * PERIOD;
pub const PERIOD_NS: u64 = 10_000_000;
/// Where manual time starts (not 0, so that "origin 0" bugs show).
pub const T0: u64 = 1_000_000_000;

pub const PLAY: u32 = 0;
pub const CAP: u32 = 1;

/// Held shared by every test, exclusively by the idle-CPU test, so that no other test
/// burns CPU while that one measures the process. Each file in tests/ is its own
/// process and the measurement is of this process only, so the lock matters only in
/// the idle-CPU test's binary (reconnect.rs); elsewhere nobody takes it exclusively.
pub static QUIET: RwLock<()> = RwLock::new(());

pub fn quiet() -> RwLockReadGuard<'static, ()> {
    QUIET.read().unwrap_or_else(|e| e.into_inner())
}

/// A socket path no other test uses, in a fresh directory.
pub fn sock_path(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vhostsnd-proto-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("snd.sock")
}

#[derive(Default)]
pub struct TlState {
    pub now: u64,
    /// Deadline each pacer (0 playback, 1 capture) is blocked on.
    pub waiting: [Option<u64>; 2],
    interrupted: [bool; 2],
    /// How often each pacer looked at the time.
    pub checks: [u64; 2],
}

/// Manual time shared by the two streams' clocks.
pub struct Timeline {
    st: Mutex<TlState>,
    /// Pacers wait here for time to move.
    pacers: Condvar,
    /// The test waits here for pacers to block.
    test: Condvar,
}

impl Timeline {
    fn new() -> Arc<Self> {
        Arc::new(Timeline {
            st: Mutex::new(TlState {
                now: T0,
                ..TlState::default()
            }),
            pacers: Condvar::new(),
            test: Condvar::new(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, TlState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now(&self) -> u64 {
        self.lock().now
    }

    pub fn advance_to(&self, t: u64) {
        let mut st = self.lock();
        assert!(t >= st.now, "time goes forward only");
        st.now = t;
        drop(st);
        self.pacers.notify_all();
    }

    /// Waits until `cond` holds on the state (the pacers had `T` to get there).
    pub fn wait_state(
        &self,
        what: &str,
        cond: impl Fn(&TlState) -> bool,
    ) -> MutexGuard<'_, TlState> {
        let deadline = Instant::now() + T;
        let mut st = self.lock();
        while !cond(&st) {
            let now = Instant::now();
            assert!(now < deadline, "pacer never got to: {what}");
            st = self
                .test
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st
    }

    /// Waits until the pacer of `stream` is blocked on a deadline in the future, and
    /// returns that deadline.
    pub fn blocked(&self, stream: u32) -> u64 {
        let i = stream as usize;
        let st = self.wait_state("blocked on a future deadline", |s| {
            s.waiting[i].is_some_and(|d| d > s.now)
        });
        st.waiting[i].unwrap_or_default()
    }

    /// Moves time to the next deadline of the running `streams` and waits until every
    /// one of them served it and blocked again. Returns the new time.
    pub fn step(&self, streams: &[u32]) -> u64 {
        let next = streams
            .iter()
            .map(|s| self.blocked(*s))
            .min()
            .expect("a stream to step");
        self.advance_to(next);
        for s in streams {
            self.blocked(*s);
        }
        next
    }
}

struct ManualClock {
    tl: Arc<Timeline>,
    id: usize,
}

impl PacerClock for ManualClock {
    fn now(&self) -> u64 {
        self.tl.now()
    }

    fn wait_until(&self, deadline: u64) -> bool {
        let mut st = self.tl.lock();
        let i = self.id;
        loop {
            st.checks[i] += 1;
            if st.interrupted[i] {
                st.interrupted[i] = false;
                st.waiting[i] = None;
                self.tl.test.notify_all();
                return false;
            }
            if st.now >= deadline {
                st.waiting[i] = None;
                self.tl.test.notify_all();
                return true;
            }
            st.waiting[i] = Some(deadline);
            self.tl.test.notify_all();
            st = self.tl.pacers.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn interrupt(&self) {
        let mut st = self.tl.lock();
        st.interrupted[self.id] = true;
        st.waiting[self.id] = None;
        drop(st);
        self.tl.pacers.notify_all();
        self.tl.test.notify_all();
    }
}

/// A device on its own socket, both streams on one manual timeline.
pub struct Rig {
    pub path: PathBuf,
    dev: Option<Arc<Device>>,
    pub tl: Arc<Timeline>,
    _quiet: RwLockReadGuard<'static, ()>,
}

impl Rig {
    pub fn new(test: &str) -> (Rig, FakeGuest) {
        Self::with_options(test, FakeGuestOptions::default())
    }

    /// [`new`](Self::new) with a guest set up by `opts`.
    pub fn with_options(test: &str, opts: FakeGuestOptions) -> (Rig, FakeGuest) {
        Self::build(test, opts, false)
    }

    /// [`new`](Self::new) on a card that offers its control elements.
    pub fn with_controls(test: &str) -> (Rig, FakeGuest) {
        Self::build(test, FakeGuestOptions::default(), true)
    }

    /// [`with_controls`](Self::with_controls) with a guest set up by `opts`.
    pub fn with_controls_and(opts: FakeGuestOptions, test: &str) -> (Rig, FakeGuest) {
        Self::build(test, opts, true)
    }

    fn build(test: &str, opts: FakeGuestOptions, controls: bool) -> (Rig, FakeGuest) {
        let quiet = quiet();
        let path = sock_path(test);
        let dev = Device::acquire(&path).expect("device on a fresh socket");
        dev.card().offer_controls(controls);
        let tl = Timeline::new();
        for dir in Direction::ALL {
            let clock = ManualClock {
                tl: tl.clone(),
                id: dir.stream_id() as usize,
            };
            dev.card().set_clock(dir, Some(Arc::new(clock)));
        }
        let g = FakeGuest::connect_with(&path, T, opts).expect("the fake guest connects");
        let rig = Rig {
            path,
            dev: Some(dev),
            tl,
            _quiet: quiet,
        };
        (rig, g)
    }

    pub fn dev(&self) -> &Arc<Device> {
        self.dev.as_ref().expect("device")
    }

    pub fn state(&self, dir: Direction) -> PcmState {
        self.dev().card().snapshot(dir).state
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.dev.take());
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn connect(path: &Path) -> FakeGuest {
    FakeGuest::connect(path, T).expect("the fake guest connects")
}

pub fn set_params(g: &mut FakeGuest, stream: u32) -> u32 {
    g.set_params(stream, BUFFER, PERIOD, 2, FMT_S16, RATE)
        .expect("SET_PARAMS answered")
}

/// SET_PARAMS + PREPARE, both asserted OK.
pub fn setup(g: &mut FakeGuest, stream: u32) {
    assert_eq!(set_params(g, stream), S_OK, "SET_PARAMS {stream}");
    assert_eq!(g.prepare(stream).unwrap(), S_OK, "PREPARE {stream}");
}

/// Both streams set up and started, with one period queued on each.
pub fn start_both(g: &mut FakeGuest) {
    setup(g, PLAY);
    setup(g, CAP);
    let _ = tx(g, 1);
    let _ = rx(g);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
}

pub fn period_of(seed: u8) -> Vec<u8> {
    (0..PERIOD)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

pub fn tx(g: &mut FakeGuest, seed: u8) -> virtio_snd_frontend::Token {
    g.submit_tx(PLAY, &period_of(seed)).expect("tx submitted")
}

pub fn rx(g: &mut FakeGuest) -> virtio_snd_frontend::Token {
    g.submit_rx(CAP, PERIOD).expect("rx submitted")
}

/// Nothing completed on `queue` (looked at after a control round trip, so that
/// everything the device did before answering it is visible).
pub fn assert_quiet(g: &mut FakeGuest, queue: usize, what: &str) {
    let (st, _) = g.pcm_info(0, 1).unwrap();
    assert_eq!(st, S_OK);
    let c = g.try_io(queue).unwrap();
    assert!(
        c.is_empty(),
        "{what}: {} unexpected completions on queue {queue}",
        c.len()
    );
}

pub fn assert_tx_ok(c: &Completion) {
    assert_eq!(c.status(), Some(S_OK), "tx status");
    assert_eq!(c.used_len, 8, "tx used_len");
}

pub fn assert_rx_silence(c: &Completion, len: u32, silence: u8) {
    assert_eq!(c.status(), Some(S_OK), "rx status");
    assert_eq!(c.used_len, len + 8, "rx used_len");
    assert_eq!(c.data.len(), len as usize);
    assert!(c.data.iter().all(|b| *b == silence), "rx data is silence");
}

/// Exactly `n` completions on `queue` are available now.
#[track_caller]
pub fn take(g: &mut FakeGuest, queue: usize, n: usize) -> Vec<Completion> {
    let c = g.try_io(queue).unwrap();
    assert_eq!(c.len(), n, "completions on queue {queue}");
    c
}

/// The device still answers: PCM_INFO, and a full period on each I/O queue is
/// accepted and returned.
pub fn alive(g: &mut FakeGuest) {
    let (st, infos) = g.pcm_info(0, 2).expect("PCM_INFO answered");
    assert_eq!(
        (st, infos.len()),
        (S_OK, 2),
        "PCM_INFO after the bad request"
    );
    // Leftovers of the hostile request are not our business here.
    let _ = g.try_io(QUEUE_TX).unwrap();
    let _ = g.try_io(QUEUE_RX).unwrap();
    let _ = g.stop(PLAY).unwrap();
    let _ = g.stop(CAP).unwrap();
    setup(g, PLAY);
    setup(g, CAP);
    let t = tx(g, 9);
    let r = rx(g);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    let c = g.wait_token(t, T).expect("tx returned by RELEASE");
    assert_tx_ok(&c);
    let c = g.wait_token(r, T).expect("rx returned by RELEASE");
    assert_rx_silence(&c, PERIOD, 0);
}

/// SET_PARAMS, PREPARE, pre-filled playback and queued capture, START, two periods
/// played and recorded, STOP, RELEASE: everything asserted.
pub fn play_sequence(g: &mut FakeGuest, tl: &Timeline) {
    setup(g, PLAY);
    setup(g, CAP);
    let t1 = tx(g, 1);
    let t2 = tx(g, 2);
    let r1 = rx(g);
    let r2 = rx(g);
    assert_quiet(g, QUEUE_TX, "prepared");
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    for (t, r) in [(t1, r1), (t2, r2)] {
        tl.step(&[PLAY, CAP]);
        let c = take(g, QUEUE_TX, 1);
        assert_eq!(c[0].token, t);
        assert_tx_ok(&c[0]);
        let c = take(g, QUEUE_RX, 1);
        assert_eq!(c[0].token, r);
        assert_rx_silence(&c[0], PERIOD, 0);
    }
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    assert_eq!(g.in_flight(QUEUE_TX), 0);
    assert_eq!(g.in_flight(QUEUE_RX), 0);
}

pub fn query(code: u32, start: u32, count: u32, size: u32) -> Vec<u8> {
    QueryInfo {
        hdr: Hdr { code: code.into() },
        start_id: start.into(),
        count: count.into(),
        size: size.into(),
    }
    .as_slice()
    .to_vec()
}

pub fn pcm_hdr(code: u32, stream: u32) -> Vec<u8> {
    PcmHdr {
        hdr: Hdr { code: code.into() },
        stream_id: stream.into(),
    }
    .as_slice()
    .to_vec()
}

pub fn set_params_req(stream: u32, buffer: u32, period: u32) -> PcmSetParams {
    PcmSetParams {
        hdr: PcmHdr {
            hdr: Hdr {
                code: R_PCM_SET_PARAMS.into(),
            },
            stream_id: stream.into(),
        },
        buffer_bytes: buffer.into(),
        period_bytes: period.into(),
        features: 0.into(),
        channels: 2,
        format: FMT_S16,
        rate: RATE,
        padding: 0,
    }
}

pub fn xfer(stream: u32) -> [u8; 4] {
    stream.to_le_bytes()
}

/// A control reply that claims nothing and wrote nothing.
pub fn assert_unused(used_len: u32, written: &[u8], what: &str) {
    assert_eq!(used_len, 0, "{what}: used_len");
    assert!(
        written.iter().all(|b| *b == POISON),
        "{what}: the device wrote into the chain"
    );
}

/// The CPU this process spends over three periods of both streams and a second of
/// real time: next to none for a device that neither spins nor polls.
pub fn cpu_over_three_periods_and_a_second(tl: &Timeline) -> Duration {
    let cpu = cpu_time();
    for _ in 0..3 {
        tl.step(&[PLAY, CAP]);
    }
    std::thread::sleep(Duration::from_secs(1));
    cpu_time() - cpu
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// This process's CPU time so far (user and system).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(r, 0, "getrusage");
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Counts the log lines at WARNING and at ERROR, of the device and of the libraries it
/// calls, after `log_limit::screen` as the plugin's and the daemon's loggers do.
pub struct LogCounter {
    warnings: AtomicUsize,
    errors: AtomicUsize,
}

impl LogCounter {
    pub const fn new() -> Self {
        LogCounter {
            warnings: AtomicUsize::new(0),
            errors: AtomicUsize::new(0),
        }
    }

    /// Makes this the process's logger (once per test binary).
    pub fn install(&'static self) {
        log::set_logger(self).expect("the only logger");
        log::set_max_level(log::LevelFilter::Warn);
    }

    pub fn warnings(&self) -> usize {
        self.warnings.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }
}

impl log::Log for LogCounter {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record) {
        match vhost_user_sound::log_limit::screen(r) {
            Some((log::Level::Error, _)) => self.errors.fetch_add(1, Ordering::Relaxed),
            Some((log::Level::Warn, _)) => self.warnings.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    fn flush(&self) {}
}
