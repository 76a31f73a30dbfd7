//! The virtio-snd protocol as the Linux driver (and a hostile guest) speaks it, checked
//! against the real device over vhost-user with the in-repo fake guest.
//!
//! Every stream is paced by a manual clock whose time only moves when a test moves it,
//! so completions are counted exactly and nothing depends on wall-clock timing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use vhost_user_sound::{Device, Direction, Error, PacerClock, PcmState};
use virtio_snd_frontend::{Completion, Desc, FakeGuest, FakeGuestOptions, Segment, POISON};
use virtio_snd_wire::formats::{self, FMT_S16, FMT_U8};
use virtio_snd_wire::*;
use vm_memory::ByteValued;

const T: Duration = Duration::from_secs(5);
/// 48 kHz (rate code 7), S16LE stereo: 4-byte frames, 480-frame (10 ms) periods.
const RATE: u8 = 7;
const FRAME: u32 = 4;
const PERIOD: u32 = 480 * FRAME;
const BUFFER: u32 = 4 * PERIOD;
const PERIOD_NS: u64 = 10_000_000;
/// Where manual time starts (not 0, so that "origin 0" bugs show).
const T0: u64 = 1_000_000_000;

const PLAY: u32 = 0;
const CAP: u32 = 1;

// ---------------------------------------------------------------------------------
// Test infrastructure
// ---------------------------------------------------------------------------------

/// Held shared by every test, exclusively by the idle-CPU test, so that no other test
/// burns CPU while that one measures the process.
static QUIET: RwLock<()> = RwLock::new(());

fn quiet() -> RwLockReadGuard<'static, ()> {
    QUIET.read().unwrap_or_else(|e| e.into_inner())
}

/// A socket path no other test uses, in a fresh directory.
fn sock_path(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vhostsnd-proto-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("snd.sock")
}

#[derive(Default)]
struct TlState {
    now: u64,
    /// Deadline each pacer (0 playback, 1 capture) is blocked on.
    waiting: [Option<u64>; 2],
    interrupted: [bool; 2],
    /// How often each pacer looked at the time.
    checks: [u64; 2],
}

/// Manual time shared by the two streams' clocks.
struct Timeline {
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

    fn lock(&self) -> MutexGuard<'_, TlState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.lock().now
    }

    fn advance_to(&self, t: u64) {
        let mut st = self.lock();
        assert!(t >= st.now, "time goes forward only");
        st.now = t;
        drop(st);
        self.pacers.notify_all();
    }

    /// Waits until `cond` holds on the state (the pacers had `T` to get there).
    fn wait_state(&self, what: &str, cond: impl Fn(&TlState) -> bool) -> MutexGuard<'_, TlState> {
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
    fn blocked(&self, stream: u32) -> u64 {
        let i = stream as usize;
        let st = self.wait_state("blocked on a future deadline", |s| {
            s.waiting[i].is_some_and(|d| d > s.now)
        });
        st.waiting[i].unwrap_or_default()
    }

    /// Moves time to the next deadline of the running `streams` and waits until every
    /// one of them served it and blocked again. Returns the new time.
    fn step(&self, streams: &[u32]) -> u64 {
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
struct Rig {
    path: PathBuf,
    dev: Option<Arc<Device>>,
    tl: Arc<Timeline>,
    _quiet: RwLockReadGuard<'static, ()>,
}

impl Rig {
    fn new(test: &str) -> (Rig, FakeGuest) {
        let quiet = quiet();
        let path = sock_path(test);
        let dev = Device::acquire(&path).expect("device on a fresh socket");
        let tl = Timeline::new();
        for dir in Direction::ALL {
            let clock = ManualClock {
                tl: tl.clone(),
                id: dir.stream_id() as usize,
            };
            dev.card().set_clock(dir, Some(Arc::new(clock)));
        }
        let g = connect(&path);
        let rig = Rig {
            path,
            dev: Some(dev),
            tl,
            _quiet: quiet,
        };
        (rig, g)
    }

    fn dev(&self) -> &Arc<Device> {
        self.dev.as_ref().expect("device")
    }

    fn state(&self, dir: Direction) -> PcmState {
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

fn connect(path: &Path) -> FakeGuest {
    FakeGuest::connect(path, T).expect("the fake guest connects")
}

fn set_params(g: &mut FakeGuest, stream: u32) -> u32 {
    g.set_params(stream, BUFFER, PERIOD, 2, FMT_S16, RATE)
        .expect("SET_PARAMS answered")
}

/// SET_PARAMS + PREPARE, both asserted OK.
fn setup(g: &mut FakeGuest, stream: u32) {
    assert_eq!(set_params(g, stream), S_OK, "SET_PARAMS {stream}");
    assert_eq!(g.prepare(stream).unwrap(), S_OK, "PREPARE {stream}");
}

fn period_of(seed: u8) -> Vec<u8> {
    (0..PERIOD)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn tx(g: &mut FakeGuest, seed: u8) -> virtio_snd_frontend::Token {
    g.submit_tx(PLAY, &period_of(seed)).expect("tx submitted")
}

fn rx(g: &mut FakeGuest) -> virtio_snd_frontend::Token {
    g.submit_rx(CAP, PERIOD).expect("rx submitted")
}

/// Nothing completed on `queue` (looked at after a control round trip, so that
/// everything the device did before answering it is visible).
fn assert_quiet(g: &mut FakeGuest, queue: usize, what: &str) {
    let (st, _) = g.pcm_info(0, 1).unwrap();
    assert_eq!(st, S_OK);
    let c = g.try_io(queue).unwrap();
    assert!(
        c.is_empty(),
        "{what}: {} unexpected completions on queue {queue}",
        c.len()
    );
}

fn assert_tx_ok(c: &Completion) {
    assert_eq!(c.status(), Some(S_OK), "tx status");
    assert_eq!(c.used_len, 8, "tx used_len");
}

fn assert_rx_silence(c: &Completion, len: u32, silence: u8) {
    assert_eq!(c.status(), Some(S_OK), "rx status");
    assert_eq!(c.used_len, len + 8, "rx used_len");
    assert_eq!(c.data.len(), len as usize);
    assert!(c.data.iter().all(|b| *b == silence), "rx data is silence");
}

/// Exactly `n` completions on `queue` are available now.
fn take(g: &mut FakeGuest, queue: usize, n: usize) -> Vec<Completion> {
    let c = g.try_io(queue).unwrap();
    assert_eq!(c.len(), n, "completions on queue {queue}");
    c
}

/// The device still answers: PCM_INFO, and a full period on each I/O queue is
/// accepted and returned.
fn alive(g: &mut FakeGuest) {
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
fn play_sequence(g: &mut FakeGuest, tl: &Timeline) {
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

fn query(code: u32, start: u32, count: u32, size: u32) -> Vec<u8> {
    QueryInfo {
        hdr: Hdr { code: code.into() },
        start_id: start.into(),
        count: count.into(),
        size: size.into(),
    }
    .as_slice()
    .to_vec()
}

fn pcm_hdr(code: u32, stream: u32) -> Vec<u8> {
    PcmHdr {
        hdr: Hdr { code: code.into() },
        stream_id: stream.into(),
    }
    .as_slice()
    .to_vec()
}

fn set_params_req(stream: u32, buffer: u32, period: u32) -> PcmSetParams {
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

fn xfer(stream: u32) -> [u8; 4] {
    stream.to_le_bytes()
}

/// Status code in the last 8 bytes of a segment chain's writable data.
fn seg_status(c: &Completion) -> u32 {
    let n = c.data.len();
    assert!(n >= 8, "chain has a status area");
    u32::from_le_bytes([c.data[n - 8], c.data[n - 7], c.data[n - 6], c.data[n - 5]])
}

/// A control reply that claims nothing and wrote nothing.
fn assert_unused(used_len: u32, written: &[u8], what: &str) {
    assert_eq!(used_len, 0, "{what}: used_len");
    assert!(
        written.iter().all(|b| *b == POISON),
        "{what}: the device wrote into the chain"
    );
}

// ---------------------------------------------------------------------------------
// 1. Probe
// ---------------------------------------------------------------------------------

#[test]
fn probe_config_and_info() {
    let (_rig, mut g) = Rig::new("probe");
    let cfg = g.config().unwrap();
    assert_eq!(cfg.jacks.to_native(), 0);
    assert_eq!(cfg.streams.to_native(), 2);
    assert_eq!(cfg.chmaps.to_native(), 16);
    let raw = g.config_bytes(16).unwrap();
    let word = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    assert_eq!(raw.len(), 16);
    assert_eq!((word(0), word(4), word(8), word(12)), (0, 2, 16, 0));

    let info = g.probe().expect("probe succeeds");
    assert!(info.jacks.is_empty());
    assert_eq!(info.pcms.len(), 2);
    for (i, p) in info.pcms.iter().enumerate() {
        let dir = if i == 0 { D_OUTPUT } else { D_INPUT };
        assert_eq!(p.direction, dir, "stream {i} direction");
        assert_eq!(
            (p.channels_min, p.channels_max),
            (1, 8),
            "stream {i} channels"
        );
        assert_eq!(p.features.to_native(), 0);
        let fm = p.formats.to_native();
        let rm = p.rates.to_native();
        assert_eq!(fm, formats::formats_mask());
        assert_eq!(rm, formats::rates_mask());
        assert_ne!(fm & (1 << FMT_S16), 0, "S16 advertised");
        for bit in 0..64u8 {
            if fm & (1 << bit) != 0 {
                assert!(formats::sample_bytes(bit).is_some(), "format {bit} known");
            }
            if rm & (1 << bit) != 0 {
                assert!(formats::rate_hz(bit).is_some(), "rate {bit} known");
            }
        }
        // 384000 Hz (13) is unknown to Linux.
        assert_eq!(rm & (1 << 13), 0);
        assert_eq!(p.padding, [0; 5]);
    }
    assert_eq!(
        info.pcms[0].hdr.hda_fn_nid, info.pcms[1].hdr.hda_fn_nid,
        "one ALSA PCM device"
    );

    // All 16 channel maps: channel counts 1..8 per direction, positions only where
    // there are channels.
    assert_eq!(info.chmaps.len(), 16);
    for dir in [D_OUTPUT, D_INPUT] {
        let mut counts: Vec<u8> = info
            .chmaps
            .iter()
            .filter(|c| c.direction == dir)
            .map(|c| c.channels)
            .collect();
        counts.sort_unstable();
        assert_eq!(counts, (1..=8).collect::<Vec<u8>>(), "direction {dir}");
    }
    for c in &info.chmaps {
        let n = usize::from(c.channels);
        assert!(c.positions[..n].iter().all(|p| *p != 0));
        assert!(c.positions[n..].iter().all(|p| *p == 0));
        assert_eq!(c.hdr.hda_fn_nid, info.pcms[0].hdr.hda_fn_nid);
    }

    // Partial ranges.
    let (st, part) = g.chmap_info(3, 5).unwrap();
    assert_eq!((st, part.len()), (S_OK, 5));
    assert_eq!(part[..], info.chmaps[3..8]);
    let (st, last) = g.chmap_info(15, 1).unwrap();
    assert_eq!((st, last[0]), (S_OK, info.chmaps[15]));
    assert_eq!(g.chmap_info(15, 2).unwrap().0, S_BAD_MSG);
    assert_eq!(g.chmap_info(16, 1).unwrap().0, S_BAD_MSG);
    let (st, one) = g.pcm_info(1, 1).unwrap();
    assert_eq!((st, one[0]), (S_OK, info.pcms[1]));
    assert_eq!(g.pcm_info(2, 1).unwrap().0, S_BAD_MSG);
    assert_eq!(g.pcm_info(0, 3).unwrap().0, S_BAD_MSG);

    // An item size larger than the device's struct: zero-padded items.
    let r = g.control(&query(R_PCM_INFO, 0, 2, 40), 4 + 80).unwrap();
    assert_eq!((r.status(), r.used_len), (S_OK, 84));
    for (i, p) in info.pcms.iter().enumerate() {
        let item = &r.resp[4 + 40 * i..4 + 40 * (i + 1)];
        assert_eq!(&item[..32], p.as_slice());
        assert_eq!(&item[32..], &[0u8; 8]);
    }
    let r = g.control(&query(R_CHMAP_INFO, 14, 2, 30), 4 + 60).unwrap();
    assert_eq!((r.status(), r.used_len), (S_OK, 64));
    assert_eq!(&r.resp[4..28], info.chmaps[14].as_slice());
    assert_eq!(&r.resp[28..34], &[0u8; 6]);
    assert_eq!(&r.resp[34..58], info.chmaps[15].as_slice());
    assert_eq!(&r.resp[58..64], &[0u8; 6]);
    // Smaller than the struct: refused.
    let r = g.control(&query(R_PCM_INFO, 0, 1, 31), 4 + 32).unwrap();
    assert_eq!((r.status(), r.used_len), (S_BAD_MSG, 4));

    // No jacks: an empty query is fine, asking for one is not.
    let (st, jacks) = g.jack_info(0, 0).unwrap();
    assert_eq!((st, jacks.len()), (S_OK, 0));
    assert_eq!(g.jack_info(0, 1).unwrap().0, S_BAD_MSG);
    alive(&mut g);
}

// ---------------------------------------------------------------------------------
// 2. ALSA sequences
// ---------------------------------------------------------------------------------

#[test]
fn open_play_close() {
    let (rig, mut g) = Rig::new("open-play-close");
    g.probe().unwrap();
    play_sequence(&mut g, &rig.tl);
    assert_eq!(rig.state(Direction::Playback), PcmState::Released);
    assert_eq!(rig.state(Direction::Capture), PcmState::Released);
}

#[test]
fn prefilled_playback_waits_for_start() {
    let (rig, mut g) = Rig::new("prefill");
    setup(&mut g, PLAY);
    let toks: Vec<_> = (0..3).map(|i| tx(&mut g, i)).collect();
    // Prepared: the device holds the periods, however much time passes.
    rig.tl.advance_to(T0 + 10 * PERIOD_NS);
    assert_quiet(&mut g, QUEUE_TX, "prepared");
    assert_eq!(g.in_flight(QUEUE_TX), 3);
    let start = rig.tl.now();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(rig.tl.blocked(PLAY), start + PERIOD_NS);
    for (i, t) in toks.iter().enumerate() {
        let now = rig.tl.step(&[PLAY]);
        assert_eq!(now, start + (i as u64 + 1) * PERIOD_NS);
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, *t, "periods complete in order");
        assert_tx_ok(&c[0]);
    }
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
}

#[test]
fn repeated_set_params_and_prepare() {
    let (rig, mut g) = Rig::new("repeat");
    assert_eq!(set_params(&mut g, PLAY), S_OK);
    assert_eq!(
        g.set_params(PLAY, 2 * PERIOD, PERIOD, 2, FMT_S16, RATE)
            .unwrap(),
        S_OK
    );
    assert_eq!(set_params(&mut g, PLAY), S_OK);
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    let old = tx(&mut g, 1);
    // A second PREPARE restarts the position: the queued period goes back first.
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, old);
    assert_tx_ok(&c[0]);
    // SET_PARAMS from Prepared with I/O queued returns it too.
    let old = tx(&mut g, 2);
    assert_eq!(set_params(&mut g, PLAY), S_OK);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, old);
    assert_tx_ok(&c[0]);
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    let t = tx(&mut g, 3);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    rig.tl.step(&[PLAY]);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, t);
    assert_tx_ok(&c[0]);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
}

#[test]
fn pause_keeps_queued_io() {
    let (rig, mut g) = Rig::new("pause");
    setup(&mut g, PLAY);
    setup(&mut g, CAP);
    let t: Vec<_> = (0..3).map(|i| tx(&mut g, i)).collect();
    let r: Vec<_> = (0..3).map(|_| rx(&mut g)).collect();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    rig.tl.step(&[PLAY, CAP]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t[0]);
    assert_eq!(take(&mut g, QUEUE_RX, 1)[0].token, r[0]);

    // Pause: nothing completes while stopped, whatever the time does.
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_quiet(&mut g, QUEUE_TX, "STOP");
    assert_quiet(&mut g, QUEUE_RX, "STOP");
    rig.tl.advance_to(rig.tl.now() + 20 * PERIOD_NS);
    std::thread::sleep(Duration::from_millis(20));
    assert_quiet(&mut g, QUEUE_TX, "stopped");
    assert_quiet(&mut g, QUEUE_RX, "stopped");
    assert_eq!((g.in_flight(QUEUE_TX), g.in_flight(QUEUE_RX)), (2, 2));
    // More I/O may be queued while stopped.
    let t3 = tx(&mut g, 3);

    // Resume: the kept periods complete one per period, in order.
    let resume = rig.tl.now();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    assert_eq!(rig.tl.blocked(PLAY), resume + PERIOD_NS);
    assert_eq!(rig.tl.blocked(CAP), resume + PERIOD_NS);
    for i in 1..3 {
        rig.tl.step(&[PLAY, CAP]);
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, t[i]);
        assert_tx_ok(&c[0]);
        let c = take(&mut g, QUEUE_RX, 1);
        assert_eq!(c[0].token, r[i]);
        assert_rx_silence(&c[0], PERIOD, 0);
    }
    rig.tl.step(&[PLAY, CAP]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t3);
    take(&mut g, QUEUE_RX, 0);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
}

#[test]
fn xrun_recovery() {
    let (rig, mut g) = Rig::new("xrun");
    setup(&mut g, PLAY);
    let t = tx(&mut g, 1);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    rig.tl.step(&[PLAY]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t);
    // Underrun: the guest queued nothing more. Recovery: STOP, RELEASE, PREPARE, START.
    rig.tl.step(&[PLAY]);
    let late = tx(&mut g, 2);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, late);
    assert_tx_ok(&c[0]);
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    let t = tx(&mut g, 3);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    rig.tl.step(&[PLAY]);
    let c = take(&mut g, QUEUE_TX, 1);
    assert_eq!(c[0].token, t);
    assert_tx_ok(&c[0]);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
}

#[test]
fn resume_from_suspend() {
    let (rig, mut g) = Rig::new("suspend");
    setup(&mut g, CAP);
    let r = rx(&mut g);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    rig.tl.step(&[CAP]);
    assert_eq!(take(&mut g, QUEUE_RX, 1)[0].token, r);
    let r = rx(&mut g);
    // Suspend: STOP. Resume: SET_PARAMS (returns the queued period), PREPARE, START.
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(set_params(&mut g, CAP), S_OK);
    let c = take(&mut g, QUEUE_RX, 1);
    assert_eq!(c[0].token, r);
    assert_rx_silence(&c[0], PERIOD, 0);
    assert_eq!(g.prepare(CAP).unwrap(), S_OK);
    let r = rx(&mut g);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    rig.tl.step(&[CAP]);
    let c = take(&mut g, QUEUE_RX, 1);
    assert_eq!(c[0].token, r);
    assert_rx_silence(&c[0], PERIOD, 0);
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
}

#[test]
fn reopen_releases_first() {
    let (rig, mut g) = Rig::new("reopen");
    // A fresh stream may be released (Linux does so when reopening).
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    setup(&mut g, PLAY);
    let t = tx(&mut g, 1);
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    rig.tl.step(&[PLAY]);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t);
    // Closed while stopped, with a period still queued; reopen: RELEASE first.
    let t = tx(&mut g, 2);
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t);
    assert_eq!(g.release(PLAY).unwrap(), S_OK, "RELEASE twice");
    play_sequence(&mut g, &rig.tl);
}

#[test]
fn refused_transitions_leave_the_stream_working() {
    let (rig, mut g) = Rig::new("refused");
    for s in [PLAY, CAP] {
        assert_eq!(g.start(s).unwrap(), S_BAD_MSG, "START before SET_PARAMS");
        assert_eq!(
            g.prepare(s).unwrap(),
            S_BAD_MSG,
            "PREPARE before SET_PARAMS"
        );
        assert_eq!(g.stop(s).unwrap(), S_BAD_MSG, "STOP when idle");
        assert_eq!(set_params(&mut g, s), S_OK);
        assert_eq!(g.start(s).unwrap(), S_BAD_MSG, "START before PREPARE");
        assert_eq!(g.stop(s).unwrap(), S_BAD_MSG, "STOP before PREPARE");
        assert_eq!(g.prepare(s).unwrap(), S_OK);
        assert_eq!(g.stop(s).unwrap(), S_BAD_MSG, "STOP when prepared");
    }
    let t: Vec<_> = (0..2).map(|i| tx(&mut g, i)).collect();
    let r: Vec<_> = (0..2).map(|_| rx(&mut g)).collect();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    for s in [PLAY, CAP] {
        assert_eq!(set_params(&mut g, s), S_BAD_MSG, "SET_PARAMS while running");
        assert_eq!(g.prepare(s).unwrap(), S_BAD_MSG, "PREPARE while running");
        assert_eq!(g.release(s).unwrap(), S_BAD_MSG, "RELEASE while running");
        assert_eq!(g.start(s).unwrap(), S_BAD_MSG, "START while running");
    }
    // Refused requests returned nothing and changed nothing.
    assert_quiet(&mut g, QUEUE_TX, "refused requests");
    assert_quiet(&mut g, QUEUE_RX, "refused requests");
    assert_eq!(rig.state(Direction::Playback), PcmState::Running);
    assert_eq!(rig.state(Direction::Capture), PcmState::Running);
    for i in 0..2 {
        rig.tl.step(&[PLAY, CAP]);
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, t[i]);
        assert_tx_ok(&c[0]);
        let c = take(&mut g, QUEUE_RX, 1);
        assert_eq!(c[0].token, r[i]);
        assert_rx_silence(&c[0], PERIOD, 0);
    }
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.stop(PLAY).unwrap(), S_BAD_MSG, "STOP twice");
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    assert_eq!(g.start(PLAY).unwrap(), S_BAD_MSG, "START after RELEASE");
    play_sequence(&mut g, &rig.tl);
}

// ---------------------------------------------------------------------------------
// 3. RELEASE returns pending I/O
// ---------------------------------------------------------------------------------

#[test]
fn release_returns_every_pending_message() {
    let (rig, mut g) = Rig::new("release");
    // Prepared, and stopped after running a while; S16 and U8 capture.
    for stopped in [false, true] {
        setup(&mut g, PLAY);
        assert_eq!(
            g.set_params(CAP, 4 * 480, 480, 1, FMT_U8, RATE).unwrap(),
            S_OK
        );
        assert_eq!(g.prepare(CAP).unwrap(), S_OK);
        let t: Vec<_> = (0..5).map(|i| tx(&mut g, i)).collect();
        let r: Vec<_> = (0..5)
            .map(|i| g.submit_rx_split(CAP, 480, 1 + i).unwrap())
            .collect();
        let mut skip = 0;
        if stopped {
            assert_eq!(g.start(PLAY).unwrap(), S_OK);
            assert_eq!(g.start(CAP).unwrap(), S_OK);
            rig.tl.step(&[PLAY, CAP]);
            take(&mut g, QUEUE_TX, 1);
            take(&mut g, QUEUE_RX, 1);
            assert_eq!(g.stop(PLAY).unwrap(), S_OK);
            assert_eq!(g.stop(CAP).unwrap(), S_OK);
            skip = 1;
        }
        assert_eq!(g.release(PLAY).unwrap(), S_OK);
        let c = take(&mut g, QUEUE_TX, 5 - skip);
        for (c, t) in c.iter().zip(&t[skip..]) {
            assert_eq!(c.token, *t);
            assert_tx_ok(c);
        }
        take(&mut g, QUEUE_RX, 0);
        assert_eq!(g.release(CAP).unwrap(), S_OK);
        let c = take(&mut g, QUEUE_RX, 5 - skip);
        for (c, r) in c.iter().zip(&r[skip..]) {
            assert_eq!(c.token, *r);
            // U8 silence is 0x80: full buffers, used_len = data + 8.
            assert_rx_silence(c, 480, 0x80);
        }
        assert_eq!((g.in_flight(QUEUE_TX), g.in_flight(QUEUE_RX)), (0, 0));
    }
    alive(&mut g);
}

// ---------------------------------------------------------------------------------
// 4. Pacing on the stream clock
// ---------------------------------------------------------------------------------

#[test]
fn pacing_follows_the_clock_exactly() {
    let (rig, mut g) = Rig::new("pacing");
    let card = rig.dev().card().clone();
    // 20 ms of downstream latency = 3840 bytes at 192000 B/s.
    card.set_playback_latency(20_000_000);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);
    // Three periods of a ramp, queued for the guest's capture a period at a time:
    // exactly the cushion (two periods plus the largest chunk) the device waits for.
    let pattern: Vec<u8> = (0..3 * PERIOD / 2)
        .flat_map(|i| (i as u16).wrapping_mul(7).to_le_bytes())
        .collect();
    for chunk in pattern.chunks(PERIOD as usize) {
        // Kept for START, though the guest is not capturing yet.
        assert!(!card.push_capture(chunk));
    }
    let t: Vec<_> = (0..5).map(|i| tx(&mut g, i)).collect();
    let r: Vec<_> = (0..5)
        .map(|i| g.submit_rx_split(CAP, PERIOD, 1 + i % 3).unwrap())
        .collect();

    let start = rig.tl.now();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    assert_eq!(rig.tl.blocked(PLAY), start + PERIOD_NS);
    assert_eq!(rig.tl.blocked(CAP), start + PERIOD_NS);

    // One nanosecond short of the first period: nothing.
    let checks = rig.tl.lock().checks;
    rig.tl.advance_to(start + PERIOD_NS - 1);
    drop(rig.tl.wait_state("looked at the time again", |s| {
        (0..2).all(|i| s.checks[i] > checks[i] && s.waiting[i] == Some(start + PERIOD_NS))
    }));
    assert_quiet(&mut g, QUEUE_TX, "before the first period");
    assert_quiet(&mut g, QUEUE_RX, "before the first period");

    // Three periods, one at a time: exactly one completion each, sample-exact capture.
    let mut expect_fifo = pattern.len();
    for i in 0..3 {
        let now = rig.tl.step(&[PLAY, CAP]);
        assert_eq!(now, start + (i as u64 + 1) * PERIOD_NS);
        let c = take(&mut g, QUEUE_TX, 1);
        assert_eq!(c[0].token, t[i]);
        assert_tx_ok(&c[0]);
        assert_eq!(c[0].latency_bytes(), Some(3840), "playback latency");
        let c = take(&mut g, QUEUE_RX, 1);
        assert_eq!(c[0].token, r[i]);
        assert_eq!(c[0].status(), Some(S_OK));
        assert_eq!(c[0].used_len, PERIOD + 8);
        let from = i * PERIOD as usize;
        let want = &pattern[from..from + PERIOD as usize];
        assert!(c[0].data == want, "capture period {i} is sample-exact");
        expect_fifo = expect_fifo.saturating_sub(PERIOD as usize);
        assert_eq!(
            c[0].latency_bytes(),
            Some(expect_fifo as u32),
            "capture latency = audio still queued"
        );
    }
    // Nothing queued any more: silence.
    let now = rig.tl.step(&[PLAY, CAP]);
    assert_eq!(now, start + 4 * PERIOD_NS);
    assert_eq!(take(&mut g, QUEUE_TX, 1)[0].token, t[3]);
    let c = take(&mut g, QUEUE_RX, 1);
    assert_eq!(c[0].token, r[3]);
    assert_rx_silence(&c[0], PERIOD, 0);

    // k periods later, exactly k more completions (underruns included in the count).
    let more: Vec<_> = (0..4).map(|i| tx(&mut g, 10 + i)).collect();
    // Queued while running: a control round trip makes sure the device has them (it
    // takes queued I/O before answering), otherwise the next periods could under-run.
    assert_eq!(g.pcm_info(0, 1).unwrap().0, S_OK);
    let k = 3;
    for _ in 0..k {
        rig.tl.step(&[PLAY, CAP]);
    }
    let c = take(&mut g, QUEUE_TX, k);
    assert_eq!(c[0].token, t[4]);
    assert_eq!(c[1].token, more[0]);
    assert_eq!(c[2].token, more[1]);
    assert_eq!(take(&mut g, QUEUE_RX, 1)[0].token, r[4]);
    assert_eq!(rig.tl.now(), start + 7 * PERIOD_NS);
    assert_eq!(card.snapshot(Direction::Playback).periods, 7);
    assert_eq!(card.snapshot(Direction::Capture).periods, 7);
    assert_eq!(g.in_flight(QUEUE_TX), 2);

    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    assert_eq!(take(&mut g, QUEUE_TX, 2)[1].token, more[3]);
    card.set_playback_latency(0);
}

/// While a stream runs with I/O queued, the device takes the guest's new periods from
/// the ring at each period by itself and asks for no kicks (EVENT_IDX, or the used
/// ring's NO_NOTIFY flag without it); once the stream stops, kicks are asked for again.
fn fed_without_kicks(rig: &Rig, g: &mut FakeGuest) {
    setup(g, PLAY);
    setup(g, CAP);
    let mut tq: std::collections::VecDeque<_> = (0..2).map(|i| tx(g, i)).collect();
    let mut rq: std::collections::VecDeque<_> = (0..2).map(|_| rx(g)).collect();
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    let kicks = [g.kicks(QUEUE_TX), g.kicks(QUEUE_RX)];
    for i in 0..20 {
        rig.tl.step(&[PLAY, CAP]);
        let c = take(g, QUEUE_TX, 1);
        assert_eq!(Some(c[0].token), tq.pop_front(), "tx period {i} in order");
        assert_tx_ok(&c[0]);
        let c = take(g, QUEUE_RX, 1);
        assert_eq!(Some(c[0].token), rq.pop_front(), "rx period {i} in order");
        assert_rx_silence(&c[0], PERIOD, 0);
        tq.push_back(tx(g, 2 + i));
        rq.push_back(rx(g));
    }
    // With EVENT_IDX the kick the device last asked for (before START) is still
    // owed once; after that, none.
    for (q, before) in [(QUEUE_TX, kicks[0]), (QUEUE_RX, kicks[1])] {
        let n = g.kicks(q) - before;
        assert!(
            n <= 1,
            "{n} kicks on queue {q} for 20 periods of a running stream"
        );
    }
    assert_eq!(g.stop(PLAY).unwrap(), S_OK);
    let before = g.kicks(QUEUE_TX);
    tq.push_back(tx(g, 99));
    assert_eq!(
        g.kicks(QUEUE_TX),
        before + 1,
        "a stopped stream asks for kicks"
    );
    assert_eq!(g.stop(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    let c = take(g, QUEUE_TX, 3);
    assert!(
        c.iter().map(|c| c.token).eq(tq),
        "RELEASE returns the rest in order"
    );
    let c = take(g, QUEUE_RX, 2);
    assert!(c.iter().map(|c| c.token).eq(rq));
}

#[test]
fn running_streams_are_fed_without_kicks() {
    let (rig, mut g) = Rig::new("no-kicks");
    assert!(
        g.event_idx(),
        "the device offers EVENT_IDX and the guest takes it"
    );
    fed_without_kicks(&rig, &mut g);
    drop(g);
    let opts = FakeGuestOptions {
        event_idx: false,
        ..FakeGuestOptions::default()
    };
    let mut g = FakeGuest::connect_with(&rig.path, T, opts).expect("reconnect");
    assert!(!g.event_idx());
    fed_without_kicks(&rig, &mut g);
}

// ---------------------------------------------------------------------------------
// 5. Hostile guest
// ---------------------------------------------------------------------------------

#[test]
fn hostile_control_requests() {
    let (_rig, mut g) = Rig::new("hostile-control");
    let good_params = set_params_req(PLAY, BUFFER, PERIOD);
    let mut long = good_params.as_slice().to_vec();
    long.push(0);
    let mut oversized = query(R_PCM_INFO, 0, 1, 32);
    oversized.resize(65, 0);
    let mut at_limit = query(R_PCM_INFO, 0, 1, 32);
    at_limit.resize(64, 0);
    let cases: Vec<(&str, Vec<u8>, u32, u32)> = vec![
        ("2-byte request", vec![0x00, 0x01], 64, S_BAD_MSG),
        ("empty request", vec![], 64, S_BAD_MSG),
        ("65-byte request", oversized, 64, S_BAD_MSG),
        ("64-byte PCM_INFO", at_limit, 64, S_BAD_MSG),
        (
            "200-byte request",
            [R_PCM_INFO.to_le_bytes().to_vec(), vec![0; 196]].concat(),
            64,
            S_BAD_MSG,
        ),
        (
            "SET_PARAMS 23 bytes",
            good_params.as_slice()[..23].to_vec(),
            4,
            S_BAD_MSG,
        ),
        ("SET_PARAMS 25 bytes", long, 4, S_BAD_MSG),
        (
            "PREPARE 12 bytes",
            [pcm_hdr(R_PCM_PREPARE, 0), vec![0; 4]].concat(),
            4,
            S_BAD_MSG,
        ),
        (
            "START 4 bytes",
            R_PCM_START.to_le_bytes().to_vec(),
            4,
            S_BAD_MSG,
        ),
        (
            "PCM_INFO 12 bytes",
            query(R_PCM_INFO, 0, 1, 32)[..12].to_vec(),
            64,
            S_BAD_MSG,
        ),
        ("unknown code 0", pcm_hdr(0, 0), 4, S_NOT_SUPP),
        ("unknown code 0x0300", pcm_hdr(0x0300, 0), 4, S_NOT_SUPP),
        (
            "JACK_REMAP",
            vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            4,
            S_NOT_SUPP,
        ),
        (
            "unknown code u32::MAX",
            u32::MAX.to_le_bytes().to_vec(),
            4,
            S_NOT_SUPP,
        ),
        (
            "response too small for one PCM_INFO",
            query(R_PCM_INFO, 0, 1, 32),
            4 + 31,
            S_BAD_MSG,
        ),
        (
            "response too small for two CHMAP_INFO",
            query(R_CHMAP_INFO, 0, 2, 24),
            4 + 47,
            S_BAD_MSG,
        ),
        (
            "count u32::MAX",
            query(R_CHMAP_INFO, 0, u32::MAX, 24),
            4 + 16 * 24,
            S_BAD_MSG,
        ),
        (
            "start u32::MAX",
            query(R_PCM_INFO, u32::MAX, 1, 32),
            64,
            S_BAD_MSG,
        ),
        (
            "start u32::MAX, count 2",
            query(R_PCM_INFO, u32::MAX, 2, 32),
            100,
            S_BAD_MSG,
        ),
        (
            "size u32::MAX",
            query(R_PCM_INFO, 0, 1, u32::MAX),
            64,
            S_BAD_MSG,
        ),
        (
            "count and size u32::MAX",
            query(R_CHMAP_INFO, 0, u32::MAX, u32::MAX),
            64,
            S_BAD_MSG,
        ),
        (
            "count * size wraps 32 bits",
            query(R_JACK_INFO, 0, 0x8000_0000, 0x20),
            64,
            S_BAD_MSG,
        ),
        ("size 0", query(R_PCM_INFO, 0, 1, 0), 64, S_BAD_MSG),
    ];
    for (what, req, resp_len, want) in cases {
        let r = g.control(&req, resp_len).expect(what);
        assert_eq!(r.status(), want, "{what}");
        assert_eq!(r.used_len, 4, "{what}: only a status");
        assert!(
            r.resp[4..].iter().all(|b| *b == POISON),
            "{what}: nothing written after the status"
        );
        alive(&mut g);
    }

    // No room for the 4-byte status: returned unused, nothing written.
    for resp_len in [0, 1, 3] {
        let r = g.control(&query(R_PCM_INFO, 0, 1, 32), resp_len).unwrap();
        assert_unused(r.used_len, &r.resp, "response area < 4 bytes");
        alive(&mut g);
    }
    // Response split over several descriptors, and a status split in two.
    let t = g
        .submit_segments(
            QUEUE_CONTROL,
            &[
                Segment::Read(&query(R_PCM_INFO, 0, 2, 32)),
                Segment::Write(2),
                Segment::Write(30),
                Segment::Write(36),
            ],
        )
        .unwrap();
    let c = g.wait_token(t, T).unwrap();
    assert_eq!(c.used_len, 68);
    assert_eq!(&c.data[..4], &S_OK.to_le_bytes());
    assert_eq!(c.data[4 + 32 + 24], D_INPUT, "second item's direction");
    alive(&mut g);
}

#[test]
fn hostile_pcm_requests() {
    let (rig, mut g) = Rig::new("hostile-pcm");
    // Stream ids out of range, for every PCM request.
    for stream in [2, 3, 0x100, u32::MAX] {
        let r = g
            .control_obj(&set_params_req(stream, BUFFER, PERIOD), 4)
            .unwrap();
        assert_eq!(
            (r.status(), r.used_len),
            (S_BAD_MSG, 4),
            "SET_PARAMS {stream}"
        );
        for code in [R_PCM_PREPARE, R_PCM_START, R_PCM_STOP, R_PCM_RELEASE] {
            let r = g.control(&pcm_hdr(code, stream), 4).unwrap();
            assert_eq!(
                (r.status(), r.used_len),
                (S_BAD_MSG, 4),
                "{code:#x} on stream {stream}"
            );
        }
        alive(&mut g);
    }
    // Bad parameters.
    let bad: &[(&str, u32, u32, u8, u8, u8, u32)] = &[
        (
            "period not whole frames",
            4 * 1922,
            1922,
            2,
            FMT_S16,
            RATE,
            S_BAD_MSG,
        ),
        ("period 2 bytes", 8, 2, 2, FMT_S16, RATE, S_BAD_MSG),
        (
            "buffer not a multiple",
            5000,
            PERIOD,
            2,
            FMT_S16,
            RATE,
            S_BAD_MSG,
        ),
        (
            "buffer < period",
            PERIOD / 2,
            PERIOD,
            2,
            FMT_S16,
            RATE,
            S_BAD_MSG,
        ),
        ("period 0", BUFFER, 0, 2, FMT_S16, RATE, S_BAD_MSG),
        ("all 0", 0, 0, 2, FMT_S16, RATE, S_BAD_MSG),
        ("channels 0", BUFFER, PERIOD, 0, FMT_S16, RATE, S_NOT_SUPP),
        ("channels 9", BUFFER, PERIOD, 9, FMT_S16, RATE, S_NOT_SUPP),
        (
            "channels 255",
            BUFFER,
            PERIOD,
            255,
            FMT_S16,
            RATE,
            S_NOT_SUPP,
        ),
        ("format 0", BUFFER, PERIOD, 2, 0, RATE, S_NOT_SUPP),
        ("format 13", BUFFER, PERIOD, 2, 13, RATE, S_NOT_SUPP),
        ("format 255", BUFFER, PERIOD, 2, 255, RATE, S_NOT_SUPP),
        ("rate 13", BUFFER, PERIOD, 2, FMT_S16, 13, S_NOT_SUPP),
        ("rate 255", BUFFER, PERIOD, 2, FMT_S16, 255, S_NOT_SUPP),
    ];
    for &(what, buffer, period, ch, fmt, rate, want) in bad {
        for stream in [PLAY, CAP] {
            let st = g.set_params(stream, buffer, period, ch, fmt, rate).unwrap();
            assert_eq!(st, want, "{what} (stream {stream})");
            assert_eq!(
                rig.state(Direction::from_stream_id(stream).unwrap()),
                PcmState::Released,
                "{what}: a refused SET_PARAMS changes nothing"
            );
        }
        alive(&mut g);
    }
    let mut req = set_params_req(PLAY, BUFFER, PERIOD);
    req.features = 1.into();
    assert_eq!(g.control_obj(&req, 4).unwrap().status(), S_NOT_SUPP);
    alive(&mut g);
}

#[test]
fn hostile_io_chains() {
    let (_rig, mut g) = Rig::new("hostile-io");
    let data = period_of(7);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);

    // Wrong queue for the stream, unknown streams.
    for (queue, stream) in [(QUEUE_TX, CAP), (QUEUE_TX, 2), (QUEUE_TX, u32::MAX)] {
        let t = g.submit_tx(stream, &data).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!(
            (c.status(), c.used_len),
            (Some(S_IO_ERR), 8),
            "{stream} on {queue}"
        );
    }
    for stream in [PLAY, 2, u32::MAX] {
        let t = g.submit_rx(stream, PERIOD).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!(
            (c.status(), c.used_len),
            (Some(S_IO_ERR), 8),
            "{stream} on rx"
        );
        assert!(c.data.is_empty());
    }
    alive(&mut g);

    // Malformed layouts with a writable status area: BAD_MSG in the last 8 bytes.
    let hdr0 = xfer(PLAY);
    let hdr1 = xfer(CAP);
    let rdata = [0u8; 64];
    let cases: Vec<(&str, usize, Vec<Segment<'_>>)> = vec![
        (
            "tx with writable data",
            QUEUE_TX,
            vec![
                Segment::Read(&hdr0),
                Segment::Write(PERIOD),
                Segment::Write(8),
            ],
        ),
        (
            "tx with header, data and status all writable",
            QUEUE_TX,
            vec![Segment::Write(4 + PERIOD + 8)],
        ),
        (
            "rx with readable data",
            QUEUE_RX,
            vec![
                Segment::Read(&hdr1),
                Segment::Read(&rdata),
                Segment::Write(PERIOD),
                Segment::Write(8),
            ],
        ),
        ("tx without xfer header", QUEUE_TX, vec![Segment::Write(8)]),
        (
            "rx without xfer header",
            QUEUE_RX,
            vec![Segment::Write(PERIOD + 8)],
        ),
        (
            "tx with a 2-byte header",
            QUEUE_TX,
            vec![Segment::Read(&hdr0[..2]), Segment::Write(8)],
        ),
        (
            "rx with a 3-byte header",
            QUEUE_RX,
            vec![Segment::Read(&hdr1[..3]), Segment::Write(PERIOD + 8)],
        ),
        (
            "rx with writable data before a readable descriptor",
            QUEUE_RX,
            vec![
                Segment::Read(&hdr1),
                Segment::Write(PERIOD),
                Segment::Read(&rdata),
                Segment::Write(8),
            ],
        ),
    ];
    for (what, queue, segs) in &cases {
        let t = g.submit_segments(*queue, segs).unwrap();
        let c = g.wait_token(t, T).unwrap();
        // A readable descriptor after a writable one is not a chain at all.
        if what.contains("before a readable") {
            assert_unused(c.used_len, &c.data, what);
        } else {
            assert_eq!(c.used_len, 8, "{what}: used_len");
            assert_eq!(seg_status(&c), S_BAD_MSG, "{what}");
        }
        alive(&mut g);
        setup(&mut g, PLAY);
        setup(&mut g, CAP);
    }

    // No room for an 8-byte status: returned unused, nothing written.
    let no_status: Vec<(&str, usize, Vec<Segment<'_>>)> = vec![
        (
            "tx status of 4 bytes",
            QUEUE_TX,
            vec![
                Segment::Read(&hdr0),
                Segment::Read(&data),
                Segment::Write(4),
            ],
        ),
        (
            "tx without status",
            QUEUE_TX,
            vec![Segment::Read(&hdr0), Segment::Read(&data)],
        ),
        (
            "rx status of 7 bytes",
            QUEUE_RX,
            vec![Segment::Read(&hdr1), Segment::Write(7)],
        ),
        ("rx without writable", QUEUE_RX, vec![Segment::Read(&hdr1)]),
    ];
    for (what, queue, segs) in &no_status {
        let t = g.submit_segments(*queue, segs).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_unused(c.used_len, &c.data, what);
        alive(&mut g);
        setup(&mut g, PLAY);
        setup(&mut g, CAP);
    }

    // Payloads that are not a whole number of frames, or empty.
    for len in [0usize, 1, 2, 3, 1918, 1919] {
        let t = g.submit_tx(PLAY, &data[..len.min(data.len())]).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!((c.status(), c.used_len), (Some(S_IO_ERR), 8), "tx of {len}");
        let t = g.submit_rx(CAP, len as u32).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!((c.status(), c.used_len), (Some(S_IO_ERR), 8), "rx of {len}");
        assert!(c.data.is_empty(), "rx of {len}: no data");
    }
    let odd = vec![0u8; 1922];
    let t = g.submit_tx(PLAY, &odd).unwrap();
    assert_eq!(g.wait_token(t, T).unwrap().status(), Some(S_IO_ERR));
    alive(&mut g);
}

#[test]
fn io_before_prepare_is_refused() {
    let (_rig, mut g) = Rig::new("io-before-prepare");
    let data = period_of(1);
    let check = |g: &mut FakeGuest, when: &str| {
        let t = g.submit_tx(PLAY, &data).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!((c.status(), c.used_len), (Some(S_IO_ERR), 8), "tx {when}");
        let t = g.submit_rx(CAP, PERIOD).unwrap();
        let c = g.wait_token(t, T).unwrap();
        assert_eq!((c.status(), c.used_len), (Some(S_IO_ERR), 8), "rx {when}");
        assert!(c.data.is_empty());
    };
    check(&mut g, "when idle");
    assert_eq!(set_params(&mut g, PLAY), S_OK);
    assert_eq!(set_params(&mut g, CAP), S_OK);
    check(&mut g, "with parameters");
    assert_eq!(g.prepare(PLAY).unwrap(), S_OK);
    assert_eq!(g.prepare(CAP).unwrap(), S_OK);
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    assert_eq!(g.release(CAP).unwrap(), S_OK);
    check(&mut g, "after RELEASE");
    alive(&mut g);
}

#[test]
fn descriptors_outside_guest_ram() {
    let (_rig, mut g) = Rig::new("outside-ram");
    let end = g.ram_size();
    let req = query(R_PCM_INFO, 0, 2, 32);
    let req_gpa = g.alloc_ram(64).unwrap();
    g.write_ram(req_gpa, &req).unwrap();
    let resp_gpa = g.alloc_ram(128).unwrap();
    let hdr_gpa = g.alloc_ram(8).unwrap();
    let data_gpa = g.alloc_ram(u64::from(PERIOD)).unwrap();
    let status_gpa = g.alloc_ram(8).unwrap();
    setup(&mut g, PLAY);
    setup(&mut g, CAP);

    let poison = |g: &mut FakeGuest| {
        g.write_ram(resp_gpa, &[POISON; 128]).unwrap();
        g.write_ram(status_gpa, &[POISON; 8]).unwrap();
        g.write_ram(data_gpa, &vec![POISON; PERIOD as usize])
            .unwrap();
    };
    let bad_addrs = [end, end - 2, end + (1 << 30), u64::MAX - 3, u64::MAX];
    for bad in bad_addrs {
        let cases: Vec<(&str, usize, Vec<Desc>)> = vec![
            (
                "control request",
                QUEUE_CONTROL,
                vec![Desc::readable(bad, 16), Desc::writable(resp_gpa, 68)],
            ),
            (
                "control response",
                QUEUE_CONTROL,
                vec![
                    Desc::readable(req_gpa, 16),
                    Desc::writable(resp_gpa, 8),
                    Desc::writable(bad, 64),
                ],
            ),
            (
                "tx header",
                QUEUE_TX,
                vec![
                    Desc::readable(bad, 4),
                    Desc::readable(data_gpa, PERIOD),
                    Desc::writable(status_gpa, 8),
                ],
            ),
            (
                "tx data",
                QUEUE_TX,
                vec![
                    Desc::readable(hdr_gpa, 4),
                    Desc::readable(bad, PERIOD),
                    Desc::writable(status_gpa, 8),
                ],
            ),
            (
                "tx status",
                QUEUE_TX,
                vec![
                    Desc::readable(hdr_gpa, 4),
                    Desc::readable(data_gpa, PERIOD),
                    Desc::writable(bad, 8),
                ],
            ),
            (
                "rx data",
                QUEUE_RX,
                vec![
                    Desc::readable(hdr_gpa, 4),
                    Desc::writable(bad, PERIOD),
                    Desc::writable(status_gpa, 8),
                ],
            ),
            (
                "rx status",
                QUEUE_RX,
                vec![
                    Desc::readable(hdr_gpa, 4),
                    Desc::writable(data_gpa, PERIOD),
                    Desc::writable(bad, 8),
                ],
            ),
        ];
        for (what, queue, descs) in cases {
            poison(&mut g);
            let stream = if queue == QUEUE_RX { CAP } else { PLAY };
            g.write_ram(hdr_gpa, &xfer(stream)).unwrap();
            let t = g.submit_descs(queue, &descs).unwrap();
            let c = g.wait_token(t, T).expect(what);
            let what = format!("{what} at {bad:#x}");
            assert_eq!(c.used_len, 0, "{what}: used_len");
            let resp = g.read_ram(resp_gpa, 128).unwrap();
            let st = g.read_ram(status_gpa, 8).unwrap();
            let dat = g.read_ram(data_gpa, PERIOD as usize).unwrap();
            assert_unused(0, &resp, &what);
            assert_unused(0, &st, &what);
            assert_unused(0, &dat, &what);
            alive(&mut g);
            setup(&mut g, PLAY);
            setup(&mut g, CAP);
        }
    }
    // The same chains inside RAM are fine.
    g.write_ram(hdr_gpa, &xfer(PLAY)).unwrap();
    let t = g
        .submit_descs(
            QUEUE_TX,
            &[
                Desc::readable(hdr_gpa, 4),
                Desc::readable(data_gpa, PERIOD),
                Desc::writable(status_gpa, 8),
            ],
        )
        .unwrap();
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    let c = g.wait_token(t, T).unwrap();
    assert_eq!(c.used_len, 8);
    assert_eq!(g.read_ram(status_gpa, 4).unwrap(), S_OK.to_le_bytes());
}

#[test]
fn descriptor_loops_and_overlong_chains() {
    let (_rig, mut g) = Rig::new("loops");
    let req = query(R_PCM_INFO, 0, 2, 32);
    let req_gpa = g.alloc_ram(64).unwrap();
    g.write_ram(req_gpa, &req).unwrap();
    let resp_gpa = g.alloc_ram(128).unwrap();
    let hdr_gpa = g.alloc_ram(8).unwrap();
    let data_gpa = g.alloc_ram(u64::from(PERIOD)).unwrap();
    let status_gpa = g.alloc_ram(8).unwrap();
    assert_eq!(g.free_descriptors(QUEUE_TX), 64);
    setup(&mut g, PLAY);
    setup(&mut g, CAP);

    // 62 data descriptors of 4 bytes: a legal chain as long as the queue.
    let full = |stream_status: bool| {
        let mut v = vec![Desc::readable(hdr_gpa, 4)];
        v.extend((0..62).map(|i| Desc::readable(data_gpa + 4 * i, 4)));
        v.push(Desc::writable(status_gpa, 8));
        if stream_status {
            // Loop back to the start: never ends.
            let last = v.len() - 1;
            v[last] = v[last].with_link(0);
        }
        v
    };
    let cases: Vec<(&str, usize, Vec<Desc>)> = vec![
        (
            "control request looping on itself",
            QUEUE_CONTROL,
            vec![Desc::readable(req_gpa, 16).with_link(0)],
        ),
        (
            "control response looping on itself",
            QUEUE_CONTROL,
            vec![
                Desc::readable(req_gpa, 16),
                Desc::writable(resp_gpa, 4).with_link(1),
            ],
        ),
        (
            "control chain looping to its head",
            QUEUE_CONTROL,
            vec![
                Desc::readable(req_gpa, 16),
                Desc::writable(resp_gpa, 68).with_link(0),
            ],
        ),
        (
            "tx looping to its head",
            QUEUE_TX,
            vec![
                Desc::readable(hdr_gpa, 4),
                Desc::readable(data_gpa, PERIOD),
                Desc::writable(status_gpa, 8).with_link(0),
            ],
        ),
        (
            "tx data looping on itself",
            QUEUE_TX,
            vec![
                Desc::readable(hdr_gpa, 4),
                Desc::readable(data_gpa, 4).with_link(1),
            ],
        ),
        (
            "rx status looping on itself",
            QUEUE_RX,
            vec![
                Desc::readable(hdr_gpa, 4),
                Desc::writable(data_gpa, PERIOD),
                Desc::writable(status_gpa, 8).with_link(2),
            ],
        ),
        (
            "64-descriptor tx chain that loops (longer than the queue)",
            QUEUE_TX,
            full(true),
        ),
    ];
    for (what, queue, descs) in cases {
        let stream = if queue == QUEUE_RX { CAP } else { PLAY };
        g.write_ram(hdr_gpa, &xfer(stream)).unwrap();
        g.write_ram(resp_gpa, &[POISON; 128]).unwrap();
        g.write_ram(status_gpa, &[POISON; 8]).unwrap();
        g.write_ram(data_gpa, &vec![POISON; PERIOD as usize])
            .unwrap();
        let t = g.submit_descs(queue, &descs).unwrap();
        let c = g.wait_token(t, T).expect(what);
        assert_eq!(c.used_len, 0, "{what}: used_len");
        assert_unused(0, &g.read_ram(resp_gpa, 128).unwrap(), what);
        assert_unused(0, &g.read_ram(status_gpa, 8).unwrap(), what);
        assert_unused(0, &g.read_ram(data_gpa, PERIOD as usize).unwrap(), what);
        alive(&mut g);
        setup(&mut g, PLAY);
        setup(&mut g, CAP);
    }

    // The same 64 descriptors without the loop are a valid period of 248 bytes.
    g.write_ram(hdr_gpa, &xfer(PLAY)).unwrap();
    g.write_ram(status_gpa, &[POISON; 8]).unwrap();
    let t = g.submit_descs(QUEUE_TX, &full(false)).unwrap();
    assert_eq!(g.release(PLAY).unwrap(), S_OK);
    let c = g.wait_token(t, T).unwrap();
    assert_eq!(c.used_len, 8);
    assert_eq!(g.read_ram(status_gpa, 4).unwrap(), S_OK.to_le_bytes());
    // A chain longer than the queue cannot even be built by the driver.
    assert!(g
        .submit_descs(QUEUE_TX, &vec![Desc::readable(hdr_gpa, 4); 65])
        .is_err());
    alive(&mut g);
}

/// xorshift64*, fixed seed: the same garbage every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_garbage_then_a_valid_sequence() {
    let (rig, mut g) = Rig::new("garbage");
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // Writable descriptors only ever point here, so the rings stay intact.
    const SCRATCH: u64 = 64 * 1024;
    let scratch = g.alloc_ram(SCRATCH).unwrap();
    let codes = [
        R_JACK_INFO,
        R_JACK_REMAP,
        R_PCM_INFO,
        R_PCM_SET_PARAMS,
        R_PCM_PREPARE,
        R_PCM_RELEASE,
        R_PCM_START,
        R_PCM_STOP,
        R_CHMAP_INFO,
    ];
    for i in 0..200 {
        // A garbage control request: random length, usually a known code and a small
        // stream id, random everything else.
        let len = rng.below(81) as usize;
        let mut req: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 4 && rng.below(4) != 0 {
            let code = codes[rng.below(codes.len() as u64) as usize];
            req[..4].copy_from_slice(&code.to_le_bytes());
            if len >= 8 {
                req[4..8].copy_from_slice(&(rng.below(3) as u32).to_le_bytes());
            }
            if rng.below(2) == 0 {
                // Exactly the right size for some request.
                let sizes = [8usize, 16, 24];
                req.truncate(sizes[rng.below(3) as usize].min(len));
            }
        }
        let resp_len = rng.below(300) as u32;
        let r = g
            .control(&req, resp_len)
            .unwrap_or_else(|e| panic!("iteration {i}: control request unanswered: {e}"));
        if resp_len < 4 {
            assert_eq!(r.used_len, 0, "iteration {i}");
        } else {
            assert!(r.used_len >= 4 && r.used_len <= resp_len, "iteration {i}");
            assert!(
                [S_OK, S_BAD_MSG, S_NOT_SUPP].contains(&r.status()),
                "iteration {i}: status {:#x}",
                r.status()
            );
        }

        // A random chain on a random queue.
        let queue = [QUEUE_CONTROL, QUEUE_TX, QUEUE_RX][rng.below(3) as usize];
        let n = 1 + rng.below(6) as usize;
        let mut descs = Vec::with_capacity(n);
        for j in 0..n {
            let writable = rng.below(2) == 0;
            let len = match rng.below(4) {
                0 => rng.below(16) as u32,
                1 => rng.below(4096) as u32,
                2 => [4, 8, PERIOD][rng.below(3) as usize],
                _ => rng.next() as u32,
            };
            let addr = match rng.below(8) {
                // Outside RAM, or overflowing.
                0 => g.ram_size() + rng.below(1 << 20),
                1 => u64::MAX - rng.below(64),
                _ => scratch + rng.below(SCRATCH),
            };
            let mut d = if writable {
                // Inside the scratch area, or outside RAM altogether.
                if addr >= scratch && addr < scratch + SCRATCH {
                    let off = addr - scratch;
                    Desc::writable(addr, len.min((SCRATCH - off) as u32))
                } else {
                    Desc::writable(addr, len)
                }
            } else {
                Desc::readable(addr, len)
            };
            if rng.below(10) == 0 {
                d = d.with_link(rng.below(n as u64) as usize);
            }
            if j == 0 && queue != QUEUE_CONTROL && rng.below(2) == 0 {
                // A plausible xfer header at the start of the scratch area.
                let stream = rng.below(3) as u32;
                g.write_ram(scratch, &stream.to_le_bytes()).unwrap();
                d = Desc::readable(scratch, 4);
            }
            descs.push(d);
        }
        let t = g.submit_descs(queue, &descs).unwrap();
        if queue == QUEUE_CONTROL {
            let c = g
                .wait_token(t, T)
                .unwrap_or_else(|e| panic!("iteration {i}: control chain not returned: {e}"));
            assert!(c.used_len <= SCRATCH as u32, "iteration {i}");
        }
        // Accepted I/O waits for its period; a RELEASE now and then returns it all.
        if i % 10 == 9 {
            for s in [PLAY, CAP] {
                let _ = g.stop(s).unwrap();
                assert_eq!(g.release(s).unwrap(), S_OK, "iteration {i}");
            }
            let _ = g.try_io(QUEUE_TX).unwrap();
            let _ = g.try_io(QUEUE_RX).unwrap();
            assert_eq!(g.in_flight(QUEUE_TX), 0, "iteration {i}: tx chain lost");
            assert_eq!(g.in_flight(QUEUE_RX), 0, "iteration {i}: rx chain lost");
            assert_eq!(g.in_flight(QUEUE_CONTROL), 0);
        }
    }
    g.probe().expect("probe after the garbage");
    alive(&mut g);
    play_sequence(&mut g, &rig.tl);
}

// ---------------------------------------------------------------------------------
// 6. Disconnect and reconnect
// ---------------------------------------------------------------------------------

/// Both streams running with I/O queued, one period played.
fn mid_stream(g: &mut FakeGuest, tl: &Timeline) {
    setup(g, PLAY);
    setup(g, CAP);
    for i in 0..3 {
        tx(g, i);
        rx(g);
    }
    assert_eq!(g.start(PLAY).unwrap(), S_OK);
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    tl.step(&[PLAY, CAP]);
    take(g, QUEUE_TX, 1);
    take(g, QUEUE_RX, 1);
    assert_eq!((g.in_flight(QUEUE_TX), g.in_flight(QUEUE_RX)), (2, 2));
}

/// A new guest finds a fresh card and can use it.
fn fresh_guest(rig: &Rig) -> FakeGuest {
    let mut g = connect(&rig.path);
    let info = g.probe().expect("probe after reconnect");
    assert_eq!(info.pcms.len(), 2);
    for s in [PLAY, CAP] {
        assert_eq!(g.start(s).unwrap(), S_BAD_MSG, "START without SET_PARAMS");
        assert_eq!(
            g.prepare(s).unwrap(),
            S_BAD_MSG,
            "PREPARE without SET_PARAMS"
        );
    }
    assert_eq!(rig.state(Direction::Playback), PcmState::Idle);
    assert_eq!(rig.state(Direction::Capture), PcmState::Idle);
    assert!(rig
        .dev()
        .card()
        .snapshot(Direction::Playback)
        .params
        .is_none());
    play_sequence(&mut g, &rig.tl);
    assert!(rig.dev().card().snapshot(Direction::Playback).connected);
    g
}

#[test]
fn disconnect_mid_stream_and_reconnect() {
    let (rig, mut g) = Rig::new("reconnect");
    g.probe().unwrap();
    mid_stream(&mut g, &rig.tl);
    g.disconnect();
    let mut g = fresh_guest(&rig);
    for round in 0..5 {
        mid_stream(&mut g, &rig.tl);
        if round % 2 == 0 {
            g.disconnect();
        } else {
            g.shutdown().expect("QEMU-style stop");
        }
        g = fresh_guest(&rig);
    }
    // A QEMU-style stop of an idle guest, then one more.
    g.shutdown().expect("QEMU-style stop");
    let g = fresh_guest(&rig);
    g.shutdown().expect("QEMU-style stop");
    let mut g = fresh_guest(&rig);
    alive(&mut g);
}

#[test]
fn shutdown_mid_stream_then_reconnect() {
    let (rig, mut g) = Rig::new("shutdown");
    mid_stream(&mut g, &rig.tl);
    g.shutdown().expect("QEMU-style stop");
    let mut g = fresh_guest(&rig);
    alive(&mut g);
}

// ---------------------------------------------------------------------------------
// 7. The event queue never spins
// ---------------------------------------------------------------------------------

fn cpu_time() -> Duration {
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

#[test]
fn event_queue_does_not_spin() {
    // Alone in the process while measuring.
    let _alone = QUIET.write().unwrap_or_else(|e| e.into_inner());
    let path = sock_path("event-spin");
    let dev = Device::acquire(&path).unwrap();
    let mut g = connect(&path);
    g.probe().unwrap();
    assert_eq!(g.in_flight(QUEUE_EVENT), 64, "event queue filled");
    // Spurious kicks on every queue, as QEMU gives at start.
    for q in [QUEUE_EVENT, QUEUE_CONTROL, QUEUE_TX, QUEUE_RX, QUEUE_EVENT] {
        g.kick(q).unwrap();
    }
    g.pcm_info(0, 2).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let before = cpu_time();
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(100),
        "an idle device used {used:?} of CPU in 500 ms"
    );
    // Still served, and the event buffers stay with the device.
    let t0 = Instant::now();
    g.probe().expect("probe");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(g.events().unwrap().is_empty());
    assert_eq!(g.in_flight(QUEUE_EVENT), 64);
    drop(g);
    drop(dev);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

// ---------------------------------------------------------------------------------
// 8. Device::acquire and the socket file
// ---------------------------------------------------------------------------------

#[test]
fn acquire_shares_and_cleans_up() {
    let _q = quiet();
    let path = sock_path("acquire");
    let a = Device::acquire(&path).unwrap();
    let b = Device::acquire(&path).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "one device per path");
    // The same path spelled differently is the same device.
    let dotted = path.parent().unwrap().join(".").join("snd.sock");
    let c = Device::acquire(&dotted).unwrap();
    assert!(Arc::ptr_eq(&a, &c));
    drop(c);
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    drop(a);
    assert!(path.exists(), "still served by the second handle");
    let mut g = connect(&path);
    g.probe().unwrap();
    drop(g);
    drop(b);
    assert!(!path.exists(), "socket file removed with the last handle");
    // And a new device can take the path again.
    let d = Device::acquire(&path).unwrap();
    let mut g = connect(&path);
    g.probe().unwrap();
    drop(g);
    drop(d);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn acquire_refuses_a_regular_file() {
    let _q = quiet();
    let path = sock_path("regular-file");
    std::fs::write(&path, b"not a socket").unwrap();
    match Device::acquire(&path) {
        Err(Error::NotSocket(p)) => assert_eq!(p, path),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a regular file was replaced by a socket"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn acquire_replaces_a_stale_socket() {
    let _q = quiet();
    let path = sock_path("stale");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "std leaves the socket file behind");
    let dev = Device::acquire(&path).expect("stale socket replaced");
    let mut g = connect(&path);
    g.probe().expect("served on the replaced socket");
    drop(g);
    drop(dev);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn acquire_refuses_a_live_foreign_socket() {
    let _q = quiet();
    let path = sock_path("in-use");
    let foreign = std::os::unix::net::UnixListener::bind(&path).unwrap();
    match Device::acquire(&path) {
        Err(Error::InUse(p)) => assert_eq!(p, path),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a live socket was taken over"),
    }
    assert!(path.exists(), "the other listener's socket is left alone");
    // The foreign listener still owns the path.
    let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    foreign.set_nonblocking(true).unwrap();
    assert!(foreign.accept().is_ok());
    drop(foreign);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
