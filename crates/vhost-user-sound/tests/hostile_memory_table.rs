//! A memory table whose region is larger than the file that backs it: the pages past
//! the end of the file cannot be touched (SIGBUS), so the device must not use them,
//! and a ring placed there must not take the process down. Found by vhostsnd-fuzz.

mod common;

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;
use vhost::vhost_user::message::FrontendReq;

use common::*;
use vhost_user_sound::Device;
use virtio_snd_frontend::raw::{Header, RawVhostUser, VERSION_1};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Where the region pretends to be in the frontend's address space.
const UADDR: u64 = 0x7f3a_0000_0000;

fn words(ws: &[u64]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn pair(a: u32, b: u32) -> Vec<u8> {
    [a.to_le_bytes(), b.to_le_bytes()].concat()
}

#[test]
fn a_region_past_the_end_of_its_file_does_not_crash_the_device() {
    let _q = quiet();
    let path = sock_path("memtable-past-eof");
    let dev = Device::acquire(&path).expect("device");
    let mut raw = RawVhostUser::connect(&path, T, T).expect("raw connection");
    let send = |raw: &mut RawVhostUser, request: u32, payload: &[u8], fds: &[i32]| {
        let h = Header {
            request,
            flags: VERSION_1,
            size: payload.len() as u32,
        };
        raw.send(h, payload, fds).expect("message sent");
        let _ = raw.discard_replies();
    };
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"past-eof".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: a new fd that nothing else owns. It stays empty: 0 bytes long.
    let memfd = unsafe { File::from_raw_fd(fd) };
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let call = EventFd::new(EFD_NONBLOCK).unwrap();

    send(&mut raw, u32::from(FrontendReq::GET_FEATURES), &[], &[]);
    send(
        &mut raw,
        u32::from(FrontendReq::GET_PROTOCOL_FEATURES),
        &[],
        &[],
    );
    send(
        &mut raw,
        u32::from(FrontendReq::SET_PROTOCOL_FEATURES),
        &words(&[1 << 9]),
        &[],
    );
    send(&mut raw, u32::from(FrontendReq::SET_OWNER), &[], &[]);
    send(
        &mut raw,
        u32::from(FrontendReq::SET_FEATURES),
        &words(&[1 << 32 | 1 << 30]),
        &[],
    );
    // One region of 64 KiB at guest address 0, backed by the empty memfd.
    let table = [pair(1, 0), words(&[0, 64 * 1024, UADDR, 0])].concat();
    send(
        &mut raw,
        u32::from(FrontendReq::SET_MEM_TABLE),
        &table,
        &[memfd.as_raw_fd()],
    );
    // The control queue's rings inside the region, past the end of the file.
    send(
        &mut raw,
        u32::from(FrontendReq::SET_VRING_NUM),
        &pair(0, 64),
        &[],
    );
    send(
        &mut raw,
        u32::from(FrontendReq::SET_VRING_BASE),
        &pair(0, 0),
        &[],
    );
    let addr = [pair(0, 0), words(&[UADDR, UADDR + 2048, UADDR + 1024, 0])].concat();
    send(&mut raw, u32::from(FrontendReq::SET_VRING_ADDR), &addr, &[]);
    send(
        &mut raw,
        u32::from(FrontendReq::SET_VRING_KICK),
        &words(&[0]),
        &[kick.as_raw_fd()],
    );
    send(
        &mut raw,
        u32::from(FrontendReq::SET_VRING_CALL),
        &words(&[0]),
        &[call.as_raw_fd()],
    );
    send(
        &mut raw,
        u32::from(FrontendReq::SET_VRING_ENABLE),
        &pair(0, 1),
        &[],
    );
    kick.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    raw.close();

    // Still here: the next guest gets a working card.
    let mut g = connect(&path);
    g.probe().expect("probe after the bad memory table");
    alive(&mut g);
    drop(g);
    drop(dev);
}
