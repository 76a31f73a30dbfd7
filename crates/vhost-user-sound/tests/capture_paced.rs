//! Capture paced by upstream's audio (`Pacing::Element`: vhostsndsink in PLAYING, the
//! daemon with a capture pipeline): each guest period is completed the moment
//! upstream's audio fills it, and holds the audio from START on; the card's pacer
//! stands by, and gives silence only when upstream stalls (for the first period,
//! after `FIRST_CAPTURE_WAIT_NS` more).
//!
//! The test timeline stands still unless a test moves it, so a completion that comes
//! without it moving came from `push_capture`.

mod common;

use std::time::Duration;

use common::*;
use vhost_user_sound::{Direction, Pacing, FIRST_CAPTURE_WAIT_NS};
use virtio_snd_wire::*;

const MS: u64 = 1_000_000;
/// 2.5 ms at 48 kHz S16 stereo.
const CHUNK: usize = PERIOD as usize / 4;

fn ramp(from: usize, len: usize) -> Vec<u8> {
    (from..from + len)
        .map(|i| (i as u8).wrapping_mul(13) ^ (i >> 8) as u8)
        .collect()
}

fn element_paced(test: &str) -> (Rig, virtio_snd_frontend::FakeGuest) {
    let (rig, mut g) = Rig::new(test);
    let card = rig.dev().card().clone();
    assert_eq!(
        card.set_pacing(Direction::Capture, Pacing::Element),
        Pacing::Internal
    );
    setup(&mut g, CAP);
    for _ in 0..4 {
        rx(&mut g);
    }
    assert_eq!(g.start(CAP).unwrap(), S_OK);
    (rig, g)
}

#[test]
fn a_period_completes_when_upstream_fills_it_with_audio_from_start_on() {
    let (rig, mut g) = element_paced("cap-element-fill");
    let card = rig.dev().card().clone();
    let start = rig.tl.now();
    // Upstream's audio from 5 ms before START, in 2.5 ms buffers: its first two
    // buffers are older than the recording.
    let audio = ramp(0, 10 * CHUNK);
    let older = 2 * CHUNK;
    for (k, chunk) in audio.chunks(CHUNK).enumerate() {
        let at = start - 5 * MS + k as u64 * 2_500_000;
        assert!(card.push_capture(chunk, Some(at)));
        let filled = (k + 1) * CHUNK - older.min((k + 1) * CHUNK);
        if filled % PERIOD as usize != 0 || filled == 0 {
            assert_quiet(&mut g, QUEUE_RX, &format!("after buffer {k}"));
            continue;
        }
        let c = take(&mut g, QUEUE_RX, 1);
        let from = older + filled - PERIOD as usize;
        assert!(
            c[0].data == audio[from..from + PERIOD as usize],
            "the period filled by buffer {k} holds the audio from START on"
        );
        assert_eq!(c[0].latency_bytes(), Some(0), "nothing left queued");
    }
    assert_eq!(rig.tl.now(), start, "completed without the clock moving");
    assert_eq!(card.snapshot(Direction::Capture).periods, 2);
}

#[test]
fn the_first_period_waits_for_upstream_then_gets_silence() {
    let (rig, mut g) = element_paced("cap-element-first");
    let start = rig.tl.now();
    let due = start + PERIOD_NS + FIRST_CAPTURE_WAIT_NS;
    rig.tl.advance_to(due - MS);
    std::thread::sleep(Duration::from_millis(300));
    assert_quiet(&mut g, QUEUE_RX, "before the first period's wait is over");
    rig.tl.advance_to(due);
    let c = g.wait_io(QUEUE_RX, T).unwrap();
    assert_eq!(c.len(), 1, "one period of silence");
    assert_rx_silence(&c[0], PERIOD, 0);
    // The next one a period later: no burst to make up for the wait.
    std::thread::sleep(Duration::from_millis(100));
    assert_quiet(&mut g, QUEUE_RX, "right after the first period");
}

#[test]
fn after_a_stall_upstream_resumes_in_real_time() {
    let (rig, mut g) = element_paced("cap-element-stall");
    let card = rig.dev().card().clone();
    let start = rig.tl.now();
    let audio = ramp(0, 4 * PERIOD as usize);
    let period = |k: usize| &audio[k * PERIOD as usize..(k + 1) * PERIOD as usize];
    assert!(card.push_capture(period(0), Some(start)));
    assert!(take(&mut g, QUEUE_RX, 1)[0].data == period(0));
    rx(&mut g);

    // Upstream stalls: a 4-period buffer's grace is 2.5 periods from the last
    // completion, then silence.
    rig.tl.advance_to(start + 24 * MS);
    std::thread::sleep(Duration::from_millis(100));
    assert_quiet(&mut g, QUEUE_RX, "within the grace");
    rig.tl.advance_to(start + 25 * MS);
    let c = g.wait_io(QUEUE_RX, T).unwrap();
    assert_eq!(c.len(), 1);
    assert_rx_silence(&c[0], PERIOD, 0);
    rx(&mut g);

    // Upstream comes back with what it owed for the silent period: that audio is
    // dropped, and the next period is the one in time.
    assert!(card.push_capture(&audio[PERIOD as usize..3 * PERIOD as usize], None));
    let c = take(&mut g, QUEUE_RX, 1);
    assert!(c[0].data == period(2), "the recording kept real time");
}
