//! A device serving one VM after another for months: connections that stream and end
//! abruptly, again and again, leave its file descriptors, threads and memory flat.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vhost_user_sound::Device;
use virtio_snd_wire::*;

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Waits until the device has served the previous connection's end (its threads
/// joined), so counts are taken between connections.
fn settled(baseline_threads: usize) {
    let deadline = Instant::now() + T;
    while count("/proc/self/task") > baseline_threads && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_thousand_reconnects_leave_fds_threads_and_memory_flat() {
    let _q = quiet();
    let path = sock_path("long-uptime");
    let dev = Device::acquire(&path).expect("device");
    let idle_threads = count("/proc/self/task");
    let mut first = None;
    for cycle in 0..1000 {
        let mut g = connect(&path);
        match cycle % 3 {
            // Connect and go away.
            0 => {}
            // Stream, and disconnect with I/O in flight.
            1 => {
                start_both(&mut g);
            }
            // Disconnect in the middle of a request the device has not answered.
            _ => {
                let _ = g.submit_control(&pcm_hdr(R_PCM_INFO, 0), 1024).unwrap();
            }
        }
        g.disconnect();
        settled(idle_threads);
        if cycle == 0 {
            first = Some((count("/proc/self/fd"), count("/proc/self/task"), rss_kib()));
        }
    }
    let (fds, threads, rss) = first.expect("a first cycle");
    let (fds_now, threads_now, rss_now) =
        (count("/proc/self/fd"), count("/proc/self/task"), rss_kib());
    assert!(
        fds_now <= fds + 2,
        "fds grew from {fds} to {fds_now} over 1000 connections"
    );
    assert_eq!(threads_now, threads, "threads after 1000 connections");
    assert!(
        rss_now <= rss + 2048,
        "RSS grew from {rss} KiB to {rss_now} KiB over 1000 connections"
    );
    drop(dev);
}
