//! The vhost-user side: connecting and the message sequence QEMU sends.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::{virtio_config, virtio_ring};
use vmm_sys_util::eventfd::EventFd;

use virtio_snd_wire::NUM_QUEUES;

use super::memory::GuestRam;
use super::options::FakeGuestOptions;
use super::ring::DriverRing;

/// VIRTIO_F_VERSION_1 as a feature mask.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;
/// VIRTIO_RING_F_EVENT_IDX as a feature mask.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_ring::VIRTIO_RING_F_EVENT_IDX;
/// VIRTIO_RING_F_INDIRECT_DESC as a feature mask.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
/// VHOST_USER_F_PROTOCOL_FEATURES as a feature mask.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// Wraps a vhost error with the request that failed, so test failures say what the
/// device refused.
pub(crate) fn vu_err(what: &str, e: vhost::Error) -> io::Error {
    io::Error::other(format!("vhost-user {what}: {e}"))
}

/// Connects to `path`, retrying while the socket does not exist yet or nobody listens
/// (the device may still be starting), until `timeout`.
pub(crate) fn connect_socket(
    path: &Path,
    timeout: Duration,
    msg_timeout: Duration,
) -> io::Result<UnixStream> {
    let start = Instant::now();
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && start.elapsed() < timeout =>
            {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("connecting to {}: {e}", path.display()),
                ))
            }
        }
    };
    // A device that stops answering vhost-user messages must fail the test, not hang
    // it: the vhost crate blocks in recvmsg, which honours SO_RCVTIMEO.
    stream.set_read_timeout(Some(msg_timeout))?;
    stream.set_write_timeout(Some(msg_timeout))?;
    Ok(stream)
}

pub(crate) struct Negotiated {
    pub(crate) device_features: u64,
    pub(crate) acked_features: u64,
    pub(crate) protocol_features: u64,
}

/// Feature and protocol negotiation in QEMU's order (vhost_user_backend_init, then
/// vhost_dev_init, then vhost_dev_start's SET_FEATURES).
pub(crate) fn negotiate(fe: &mut Frontend, opts: &FakeGuestOptions) -> io::Result<Negotiated> {
    let device_features = fe.get_features().map_err(|e| vu_err("GET_FEATURES", e))?;
    for (bit, name) in [
        (
            VHOST_USER_F_PROTOCOL_FEATURES,
            "VHOST_USER_F_PROTOCOL_FEATURES",
        ),
        (VIRTIO_F_VERSION_1, "VIRTIO_F_VERSION_1"),
    ] {
        if device_features & bit == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("device features {device_features:#x} lack {name}"),
            ));
        }
    }
    let offered = fe
        .get_protocol_features()
        .map_err(|e| vu_err("GET_PROTOCOL_FEATURES", e))?;
    if !offered.contains(VhostUserProtocolFeatures::CONFIG) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "device protocol features {:#x} lack CONFIG (QEMU refuses such a device)",
                offered.bits()
            ),
        ));
    }
    let wanted = VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::RESET_DEVICE;
    let acked = offered & wanted;
    fe.set_protocol_features(acked)
        .map_err(|e| vu_err("SET_PROTOCOL_FEATURES", e))?;
    if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
        // From now on every request without a reply of its own gets an ack, so a
        // device that rejects one is noticed at that request.
        fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    if acked.contains(VhostUserProtocolFeatures::MQ) {
        let n = fe.get_queue_num().map_err(|e| vu_err("GET_QUEUE_NUM", e))?;
        if n < NUM_QUEUES as u64 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("device has {n} queues, virtio-snd needs {NUM_QUEUES}"),
            ));
        }
    }
    fe.set_owner().map_err(|e| vu_err("SET_OWNER", e))?;

    let mut understood = VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES | opts.extra_features;
    if opts.event_idx {
        understood |= VIRTIO_RING_F_EVENT_IDX;
    }
    if opts.indirect {
        understood |= VIRTIO_RING_F_INDIRECT_DESC;
    }
    if opts.controls {
        understood |= virtio_snd_wire::ctl::F_CTLS;
    }
    let acked_features = device_features & understood;
    fe.set_features(acked_features)
        .map_err(|e| vu_err("SET_FEATURES", e))?;
    Ok(Negotiated {
        device_features,
        acked_features,
        protocol_features: acked.bits(),
    })
}

pub(crate) fn set_mem_table(fe: &Frontend, ram: &GuestRam) -> io::Result<()> {
    let region = VhostUserMemoryRegionInfo::from_guest_region(ram.region()?)
        .map_err(|e| vu_err("SET_MEM_TABLE region", e))?;
    fe.set_mem_table(&[region])
        .map_err(|e| vu_err("SET_MEM_TABLE", e))?;
    Ok(())
}

/// SET_VRING_NUM, _BASE (`base`: where the device is to take the next chain),
/// _ADDR, _KICK, _CALL for one queue, as QEMU's vhost_virtqueue_start sends them. The
/// ring is enabled separately.
pub(crate) fn setup_vring(
    fe: &Frontend,
    q: usize,
    base: u16,
    ring: &DriverRing,
    ram: &GuestRam,
    kick: &EventFd,
    call: &EventFd,
) -> io::Result<()> {
    let what = |m: &str| format!("{m} (queue {q})");
    fe.set_vring_num(q, ring.size())
        .map_err(|e| vu_err(&what("SET_VRING_NUM"), e))?;
    fe.set_vring_base(q, base)
        .map_err(|e| vu_err(&what("SET_VRING_BASE"), e))?;
    // Ring addresses travel as the frontend's virtual addresses; the device
    // translates them through the SET_MEM_TABLE regions.
    let config = VringConfigData {
        queue_max_size: ring.size(),
        queue_size: ring.size(),
        flags: 0,
        desc_table_addr: ram.host_addr(ring.desc_gpa)?,
        used_ring_addr: ram.host_addr(ring.used_gpa)?,
        avail_ring_addr: ram.host_addr(ring.avail_gpa)?,
        log_addr: None,
    };
    fe.set_vring_addr(q, &config)
        .map_err(|e| vu_err(&what("SET_VRING_ADDR"), e))?;
    // QEMU hands over a kick notifier that is already signalled; do the same so the
    // device meets that at start, as it will under QEMU.
    kick.write(1)?;
    fe.set_vring_kick(q, kick)
        .map_err(|e| vu_err(&what("SET_VRING_KICK"), e))?;
    fe.set_vring_call(q, call)
        .map_err(|e| vu_err(&what("SET_VRING_CALL"), e))?;
    Ok(())
}
