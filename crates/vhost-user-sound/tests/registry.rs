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
