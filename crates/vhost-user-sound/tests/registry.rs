//! Device::acquire and the socket file: one device per path, the file removed with the
//! last handle, and regular files or live foreign sockets left alone.

mod common;

use std::sync::Arc;

use common::*;
use vhost_user_sound::{Device, Error};

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

/// Set in the child process that `failed_start_leaves_the_registry_usable` re-runs
/// itself in.
const CHILD_ENV: &str = "VHOSTSND_REGISTRY_TEST_CHILD";

/// A device whose start fails (here: no fd left for the server's eventfd) is an error,
/// leaves neither a thread nor a socket file behind, and does not wedge the registry:
/// later acquires work. The fd limit is the whole process's and a wedged registry hangs
/// every later acquire, so the test runs in a child process of its own (nothing else
/// opens fds meanwhile, and a deadlock there fails this test instead of hanging it).
#[test]
fn failed_start_leaves_the_registry_usable() {
    if std::env::var_os(CHILD_ENV).is_some() {
        failed_start_child();
        return;
    }
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "failed_start_leaves_the_registry_usable",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipes = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        pipes.push(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out: Vec<String> = pipes.into_iter().map(|t| t.join().unwrap()).collect();
    let log = format!("--- stdout\n{}\n--- stderr\n{}", out[0], out[1]);
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("the child test failed ({s}):\n{log}"),
        None => panic!("the child test hung (a registry deadlock?):\n{log}"),
    }
    assert!(out[0].contains("1 passed"), "the child ran no test:\n{log}");
}

fn failed_start_child() {
    use std::os::unix::net::UnixListener;

    let path = sock_path("failed-start");
    assert_eq!(device_threads(), 0, "device threads before the test");

    // Binding takes the lowest free fd and the server's eventfd the next one: a limit
    // at that next one lets the bind succeed and the start fail.
    let free = free_fds(2);
    let path2 = path.clone();
    let r = with_fd_limit(free[1], || within(move || Device::acquire(&path2)));
    match r {
        None => panic!("Device::acquire deadlocked after its start failed"),
        Some(Ok(_)) => panic!("the device started despite the fd limit (test setup)"),
        Some(Err(e)) => eprintln!("acquire under the fd limit: {e}"),
    }
    assert!(
        !path.exists(),
        "a failed acquire left its socket file behind"
    );
    wait_no_device_threads("a failed acquire");
    let path2 = path.clone();
    let dev = within(move || Device::acquire(&path2))
        .expect("the next acquire deadlocked")
        .expect("the next acquire works");
    let mut g = connect(&path);
    g.probe().unwrap();
    drop(g);
    drop(dev);
    assert!(!path.exists());
    wait_no_device_threads("the dropped device");

    // Likewise on an inherited listener; its socket file is its creator's.
    let listener = UnixListener::bind(&path).unwrap();
    let free = free_fds(1);
    let r = with_fd_limit(free[0], || within(move || Device::from_listener(listener)));
    match r {
        None => panic!("Device::from_listener deadlocked after its start failed"),
        Some(Ok(_)) => panic!("the device started despite the fd limit (test setup)"),
        Some(Err(e)) => eprintln!("from_listener under the fd limit: {e}"),
    }
    wait_no_device_threads("a failed from_listener");
    std::fs::remove_file(&path).unwrap();
    let listener = UnixListener::bind(&path).unwrap();
    let (dev, key) = within(move || Device::from_listener(listener))
        .expect("the next from_listener deadlocked")
        .expect("the next from_listener works");
    assert_eq!(key, path);
    let mut g = connect(&path);
    g.probe().unwrap();
    drop(g);
    drop(dev);
    wait_no_device_threads("the dropped device");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// `f`'s result, run on a thread, unless it takes longer than `T` (a deadlock).
fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let r = rx.recv_timeout(T).ok();
    if r.is_some() {
        let _ = t.join();
    }
    r
}

/// Runs `f` with RLIMIT_NOFILE's soft limit at `limit`, restored afterwards.
fn with_fd_limit<R>(limit: i32, f: impl FnOnce() -> R) -> R {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `old`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let low = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let r = f();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    r
}

/// The `n` lowest fd numbers not open in this process.
fn free_fds(n: usize) -> Vec<i32> {
    (0..)
        // SAFETY: F_GETFD on any number only reads the fd's flags, or fails.
        .filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } == -1)
        .take(n)
        .collect()
}

/// How many of this process's threads are a device's (pacers and server).
fn device_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("vhostsnd-"))
        .count()
}

fn wait_no_device_threads(what: &str) {
    let deadline = std::time::Instant::now() + T;
    while device_threads() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} left {} device threads behind",
            device_threads()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// An acquire racing the drop of the last handle on the same path gets a device: it
/// waits for the closing one to let go of the socket instead of finding it still bound
/// (a spurious `InUse`).
#[test]
fn acquire_racing_the_last_drop_gets_a_device() {
    let _q = quiet();
    let path = sock_path("drop-race");
    // Devices on another path coming and going meanwhile hold the registry now and
    // then, so that the dropping and the acquiring thread both wait for it, in either
    // order.
    let other = sock_path("drop-race-other");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let other = other.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                drop(Device::acquire(&other).unwrap());
            }
        })
    };
    let mut failures = Vec::new();
    let iterations = 300;
    for i in 0..iterations {
        let old = Device::acquire(&path).unwrap();
        let dying = Arc::downgrade(&old);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let b = barrier.clone();
        let p = path.clone();
        let t = std::thread::spawn(move || {
            b.wait();
            // Every other round acquires the moment the old device starts dying, the
            // others as soon as they can (before or after the drop).
            if i % 2 == 0 {
                while dying.strong_count() > 0 {
                    std::hint::spin_loop();
                }
            }
            Device::acquire(&p)
        });
        barrier.wait();
        drop(old);
        match t.join().unwrap() {
            Ok(dev) => drop(dev),
            Err(e) => failures.push(format!("round {i}: {e}")),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {iterations} acquires failed: {failures:?}",
        failures.len()
    );
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    let _ = std::fs::remove_dir_all(other.parent().unwrap());
}

/// Each direction of a card has at most one claim at a time; a released one can be
/// claimed again, and a claim keeps its device alive.
#[test]
fn one_claim_per_direction() {
    use vhost_user_sound::Direction;
    let _q = quiet();
    let path = sock_path("claims");
    let dev = Device::acquire(&path).unwrap();
    let play = dev.claim(Direction::Playback).unwrap();
    assert_eq!(play.direction(), Direction::Playback);
    assert!(Arc::ptr_eq(play.device(), &dev));
    match Device::acquire(&path).unwrap().claim(Direction::Playback) {
        Err(Error::DirectionTaken { path: p, direction }) => {
            assert_eq!(p, path);
            assert_eq!(direction, Direction::Playback);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("playback claimed twice"),
    }
    let cap = dev.claim(Direction::Capture).expect("capture is free");
    assert!(dev.claim(Direction::Capture).is_err());
    drop(play);
    let play = dev.claim(Direction::Playback).expect("released playback");
    drop(dev);
    assert!(path.exists(), "the claims hold the device");
    drop(cap);
    drop(play);
    assert!(!path.exists(), "the last claim closes the device");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// The daemon's `--socket-fd`: the device registered from an inherited listener is
/// the one its elements find by the socket's path, however that path was spelt.
#[test]
fn an_inherited_socket_is_found_by_its_path() {
    let _q = quiet();
    let path = sock_path("inherited");
    // The same file, relative to the working directory (as a service manager
    // started elsewhere may have bound it).
    let cwd = std::env::current_dir().expect("working directory");
    let up: std::path::PathBuf = cwd.components().skip(1).map(|_| "..").collect();
    let spelt = up.join(path.strip_prefix("/").expect("absolute temp dir"));
    let listener = std::os::unix::net::UnixListener::bind(&spelt).expect("bind");
    let (dev, key) = Device::from_listener(listener).expect("device on the listener");
    assert_eq!(key, path);
    let found = Device::acquire(&path).expect("the elements' acquire");
    assert!(Arc::ptr_eq(&dev, &found), "a second device for one socket");
}
