//! [`FakeGuest`]: one vhost-user session plus the virtio-snd driver's queues. Putting
//! chains on the queues is in `submit`, collecting what the device completed in
//! `harvest`.

mod harvest;
mod lifecycle;
mod submit;

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;
use vm_memory::ByteValued;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use virtio_snd_wire::{PcmStatus, PcmXfer, VirtioSndConfig, NUM_QUEUES, QUEUE_EVENT};

use super::chain::{Desc, Segment, Token};
use super::completion::{Completion, SndEvent};
use super::memory::{Block, GuestRam};
use super::options::FakeGuestOptions;
use super::ring::{
    self, ring_bytes, DriverRing, RawDesc, VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE,
};
use super::session;

/// Bytes of the PCM xfer header and status.
const XFER_LEN: u64 = 4;
const STATUS_LEN: u64 = 8;
/// Offset of the data in an I/O block: after the xfer header, 8-aligned.
const DATA_OFF: u64 = 8;
/// Guest RAM below this holds the rings; buffers are allocated above it.
const RING_AREA: u64 = 64 * 1024;

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// QEMU and the Linux virtio-snd driver in one: connects to a vhost-user-snd device,
/// gives it guest RAM and four 64-entry queues, and sends requests and audio through
/// them the way the driver does.
///
/// Everything is single-threaded and `&mut self`: completions are collected whenever
/// any call looks at the used rings (control queue first, so that whatever the device
/// completed before answering a control request is visible once the answer is), and
/// kept per queue until asked for. A `FakeGuest` is `Send`, so a thread can own one.
pub struct FakeGuest {
    // Declared first so that it is dropped (the socket closed) before the RAM is
    // unmapped; the device keeps its own mapping either way.
    frontend: Frontend,
    ram: GuestRam,
    queues: Vec<QueueState>,
    events: VecDeque<SndEvent>,
    next_seq: u64,
    negotiated: session::Negotiated,
    opts: FakeGuestOptions,
    auto_kick: bool,
    scratch: Vec<RawDesc>,
}

struct QueueState {
    ring: DriverRing,
    kick: EventFd,
    call: EventFd,
    /// Indexed by head descriptor: what is in flight there.
    slots: Vec<Option<InFlight>>,
    ready: VecDeque<Completion>,
    /// Notifications sent to the device.
    kicks: u64,
}

struct InFlight {
    token: Token,
    block: Option<Block>,
    /// The indirect table holding the chain's descriptors, if it went in one.
    table: Option<Block>,
    kind: Kind,
    /// Nobody will ask for this completion (a timed-out control request): drop it.
    abandoned: bool,
}

enum Kind {
    Pcm {
        data_gpa: u64,
        data_len: u32,
        status_gpa: u64,
        rx: bool,
    },
    /// Control requests and segment chains: read back these writable areas.
    Writable(Vec<(u64, u32)>),
    /// Explicit descriptors: nothing of ours to read back.
    Opaque,
    Event {
        gpa: u64,
    },
}

impl FakeGuest {
    /// Connects to the device at `path` with default options (retrying until the
    /// socket accepts or `timeout` passes) and sets it up as QEMU + Linux would.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<FakeGuest> {
        Self::connect_with(path, timeout, FakeGuestOptions::default())
    }

    /// [`connect`](Self::connect) with explicit options.
    pub fn connect_with(
        path: &Path,
        timeout: Duration,
        opts: FakeGuestOptions,
    ) -> io::Result<FakeGuest> {
        let qsize = opts.queue_size;
        let stream = session::connect_socket(path, timeout, opts.msg_timeout)?;
        let mut frontend = Frontend::from_stream(stream, NUM_QUEUES as u64);
        let negotiated = session::negotiate(&mut frontend, &opts)?;
        let event_idx = negotiated.acked_features & session::VIRTIO_RING_F_EVENT_IDX != 0;

        let rings = ring_bytes(qsize);
        let reserved = (rings * NUM_QUEUES as u64).max(RING_AREA);
        let ram = GuestRam::new(opts.mem_size, reserved)?;
        session::set_mem_table(&frontend, &ram)?;

        let mut queues = Vec::with_capacity(NUM_QUEUES);
        for q in 0..NUM_QUEUES {
            let mut ring = DriverRing::new(rings * q as u64, qsize)?;
            ring.set_event_idx(event_idx);
            let kick = EventFd::new(EFD_NONBLOCK)?;
            let call = EventFd::new(EFD_NONBLOCK)?;
            session::setup_vring(&frontend, q, 0, &ring, &ram, &kick, &call)?;
            queues.push(QueueState {
                ring,
                kick,
                call,
                slots: (0..qsize).map(|_| None).collect(),
                ready: VecDeque::new(),
                kicks: 0,
            });
        }
        for q in 0..NUM_QUEUES {
            frontend
                .set_vring_enable(q, true)
                .map_err(|e| session::vu_err(&format!("SET_VRING_ENABLE (queue {q})"), e))?;
        }

        let mut guest = FakeGuest {
            frontend,
            ram,
            queues,
            events: VecDeque::new(),
            next_seq: 0,
            negotiated,
            auto_kick: true,
            scratch: Vec::with_capacity(8),
            opts,
        };
        guest.fill_event_queue()?;
        Ok(guest)
    }

    /// Like virtsnd_event_fill: every event-queue entry gets an 8-byte buffer.
    fn fill_event_queue(&mut self) -> io::Result<()> {
        let n = usize::from(self.opts.event_buffers).min(usize::from(self.opts.queue_size));
        for _ in 0..n {
            let block = self.ram.alloc(8)?;
            self.post_event_buffer(block)?;
        }
        self.kick_if_needed(QUEUE_EVENT)
    }

    /// Closes the socket at once, as when QEMU is killed. (Dropping does the same.)
    pub fn disconnect(self) {}

    /// Stops the rings the way QEMU does when the VM stops (SET_VRING_ENABLE 0 and
    /// GET_VRING_BASE on every queue), then closes the socket. Errors are returned
    /// after all queues were tried.
    pub fn shutdown(mut self) -> io::Result<()> {
        let mut first_err = None;
        for q in 0..NUM_QUEUES {
            if let Err(e) = self.frontend.set_vring_enable(q, false) {
                first_err.get_or_insert(session::vu_err("SET_VRING_ENABLE 0", e));
            }
        }
        for q in 0..NUM_QUEUES {
            if let Err(e) = self.frontend.get_vring_base(q) {
                first_err.get_or_insert(session::vu_err("GET_VRING_BASE", e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The virtio feature bits the device offered.
    pub fn device_features(&self) -> u64 {
        self.negotiated.device_features
    }

    /// The virtio feature bits acknowledged (SET_FEATURES).
    pub fn features(&self) -> u64 {
        self.negotiated.acked_features
    }

    /// The vhost-user protocol feature bits acknowledged.
    pub fn protocol_features(&self) -> u64 {
        self.negotiated.protocol_features
    }

    /// Whether VIRTIO_RING_F_EVENT_IDX is in use.
    pub fn event_idx(&self) -> bool {
        self.features() & session::VIRTIO_RING_F_EVENT_IDX != 0
    }

    /// Whether VIRTIO_RING_F_INDIRECT_DESC is in use (see [`FakeGuestOptions::indirect`]).
    pub fn indirect(&self) -> bool {
        self.features() & session::VIRTIO_RING_F_INDIRECT_DESC != 0
    }

    pub fn options(&self) -> &FakeGuestOptions {
        &self.opts
    }

    /// Whether VIRTIO_SND_F_CTLS is in use (see [`FakeGuestOptions::controls`]).
    pub fn controls(&self) -> bool {
        self.features() & virtio_snd_wire::ctl::F_CTLS != 0
    }

    /// The device configuration, read like QEMU does: 16 bytes with
    /// VIRTIO_SND_F_CTLS, 12 without (`controls` is then 0).
    pub fn config(&mut self) -> io::Result<VirtioSndConfig> {
        let size = if self.controls() { 16 } else { 12 };
        let bytes = self.config_bytes(size)?;
        let mut cfg = VirtioSndConfig::default();
        cfg.as_mut_slice()[..size as usize].copy_from_slice(&bytes);
        Ok(cfg)
    }

    /// GET_CONFIG for `size` bytes at offset 0 (16 includes `controls`).
    pub fn config_bytes(&mut self, size: u32) -> io::Result<Vec<u8>> {
        let buf = vec![0u8; size as usize];
        let (_, data) = self
            .frontend
            .get_config(0, size, VhostUserConfigFlags::empty(), &buf)
            .map_err(|e| session::vu_err(&format!("GET_CONFIG ({size} bytes)"), e))?;
        Ok(data)
    }

    /// With auto-kick off, submissions only publish chains; [`kick`](Self::kick) or
    /// [`flush`](Self::flush) notifies the device (to test batching). On by default.
    pub fn set_auto_kick(&mut self, on: bool) {
        self.auto_kick = on;
    }

    /// Notifies the device about `queue` unconditionally (spurious kicks included).
    pub fn kick(&mut self, queue: usize) -> io::Result<()> {
        self.check_queue(queue)?;
        let qs = &mut self.queues[queue];
        qs.ring.needs_kick(&self.ram)?;
        qs.kicks += 1;
        qs.kick.write(1)
    }

    /// Notifies the device about `queue` if it asked for it (EVENT_IDX / NO_NOTIFY),
    /// as the Linux driver does.
    pub fn flush(&mut self, queue: usize) -> io::Result<()> {
        self.check_queue(queue)?;
        self.kick_if_needed(queue)
    }

    fn kick_if_needed(&mut self, q: usize) -> io::Result<()> {
        let qs = &mut self.queues[q];
        if qs.ring.needs_kick(&self.ram)? {
            qs.kicks += 1;
            qs.kick.write(1)?;
        }
        Ok(())
    }

    /// How many times `queue` was kicked (the device sees a kick as a wake-up of its
    /// vring worker; under QEMU each one is also a VM exit).
    pub fn kicks(&self, queue: usize) -> u64 {
        self.queues.get(queue).map_or(0, |qs| qs.kicks)
    }

    fn check_queue(&self, q: usize) -> io::Result<()> {
        if q < self.queues.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("queue {q} does not exist (virtio-snd has {NUM_QUEUES})"),
            ))
        }
    }

    /// Chains submitted on `queue` and not yet completed (event buffers included).
    pub fn in_flight(&self, queue: usize) -> usize {
        self.queues
            .get(queue)
            .map_or(0, |qs| qs.slots.iter().filter(|s| s.is_some()).count())
    }

    /// Free descriptors on `queue`: how long a chain can be submitted now.
    pub fn free_descriptors(&self, queue: usize) -> usize {
        self.queues.get(queue).map_or(0, |qs| qs.ring.num_free())
    }

    /// Bytes of guest RAM currently allocated to buffers (for leak checks).
    pub fn ram_in_use(&self) -> u64 {
        self.ram.heap_in_use()
    }

    /// Size of guest RAM, which starts at guest address 0; addresses at or above it
    /// are outside RAM.
    pub fn ram_size(&self) -> u64 {
        self.ram.size()
    }

    /// Allocates `len` bytes of guest RAM for the rest of the session (for explicit
    /// descriptors that should point at valid memory); returns its guest address.
    pub fn alloc_ram(&mut self, len: u64) -> io::Result<u64> {
        self.ram.alloc(len).map(|b| b.addr)
    }

    /// Writes `idx` as `queue`'s avail index in guest memory, as a broken or hostile
    /// driver might; the frontend's own view of the ring stays as it was.
    pub fn set_avail_idx(&mut self, queue: usize, idx: u16) -> io::Result<()> {
        self.check_queue(queue)?;
        let at = self.queues[queue].ring.avail_gpa + 2;
        self.ram.write(at, &idx.to_le_bytes())
    }

    /// Writes `entries` as an indirect table into guest RAM allocated for the rest of
    /// the session (see [`Desc::table_bytes`]) and returns the [`Desc::indirect`] that
    /// refers to all of it, for [`submit_descs`](Self::submit_descs) or for another
    /// table. To build many tables, reuse RAM from [`alloc_ram`](Self::alloc_ram).
    pub fn indirect_table(&mut self, entries: &[Desc]) -> io::Result<Desc> {
        let bytes = Desc::table_bytes(entries);
        let len = u32::try_from(bytes.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "indirect table too large"))?;
        let gpa = self.alloc_ram(u64::from(len))?;
        self.ram.write(gpa, &bytes)?;
        Ok(Desc::indirect(gpa, len))
    }

    pub fn write_ram(&mut self, gpa: u64, data: &[u8]) -> io::Result<()> {
        self.ram.write(gpa, data)
    }

    pub fn read_ram(&self, gpa: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.ram.read(gpa, &mut v)?;
        Ok(v)
    }
}
