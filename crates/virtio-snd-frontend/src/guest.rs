//! [`FakeGuest`]: one vhost-user session plus the virtio-snd driver's queues.

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
use super::ring::{ring_bytes, DriverRing, RawDesc, VRING_DESC_F_WRITE};
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
            session::setup_vring(&frontend, q, &ring, &ram, &kick, &call)?;
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
        // Like virtsnd_event_fill: every event-queue entry gets an 8-byte buffer.
        let n = usize::from(guest.opts.event_buffers).min(usize::from(qsize));
        for _ in 0..n {
            let block = guest.ram.alloc(8)?;
            guest.post_event_buffer(block)?;
        }
        guest.kick_if_needed(QUEUE_EVENT)?;
        Ok(guest)
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

    pub fn options(&self) -> &FakeGuestOptions {
        &self.opts
    }

    /// The device configuration, read with a 12-byte GET_CONFIG like QEMU does
    /// without VIRTIO_SND_F_CTLS (`controls` is then 0).
    pub fn config(&mut self) -> io::Result<VirtioSndConfig> {
        let bytes = self.config_bytes(12)?;
        let mut cfg = VirtioSndConfig::default();
        cfg.as_mut_slice()[..12].copy_from_slice(&bytes);
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

    // ---- I/O ----

    /// Queues one playback period: [xfer header R][data R, split over
    /// `options().data_split` descriptors][status 8 bytes W] on the tx queue.
    pub fn submit_tx(&mut self, stream_id: u32, data: &[u8]) -> io::Result<Token> {
        self.submit_tx_split(stream_id, data, self.opts.data_split)
    }

    /// [`submit_tx`](Self::submit_tx) with the data split over `parts` descriptors.
    pub fn submit_tx_split(
        &mut self,
        stream_id: u32,
        data: &[u8],
        parts: usize,
    ) -> io::Result<Token> {
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "period too large"))?;
        let block = self.io_block(stream_id, len)?;
        if let Err(e) = self.ram.write(block.addr + DATA_OFF, data) {
            self.ram.free(block);
            return Err(e);
        }
        self.submit_pcm(virtio_snd_wire::QUEUE_TX, block, len, parts, false)
    }

    /// Queues one capture period: [xfer header R][`data_len` bytes W, split over
    /// `options().data_split` descriptors][status 8 bytes W] on the rx queue.
    pub fn submit_rx(&mut self, stream_id: u32, data_len: u32) -> io::Result<Token> {
        self.submit_rx_split(stream_id, data_len, self.opts.data_split)
    }

    /// [`submit_rx`](Self::submit_rx) with the data area split over `parts` descriptors.
    pub fn submit_rx_split(
        &mut self,
        stream_id: u32,
        data_len: u32,
        parts: usize,
    ) -> io::Result<Token> {
        let block = self.io_block(stream_id, data_len)?;
        if let Err(e) = self.ram.poison(block.addr + DATA_OFF, u64::from(data_len)) {
            self.ram.free(block);
            return Err(e);
        }
        self.submit_pcm(virtio_snd_wire::QUEUE_RX, block, data_len, parts, true)
    }

    /// Allocates an I/O block and writes the xfer header and a poisoned status.
    fn io_block(&mut self, stream_id: u32, data_len: u32) -> io::Result<Block> {
        let status_off = DATA_OFF + align8(u64::from(data_len));
        let block = self.ram.alloc(status_off + STATUS_LEN)?;
        let hdr = PcmXfer {
            stream_id: stream_id.into(),
        };
        let res = self
            .ram
            .write(block.addr, hdr.as_slice())
            .and_then(|_| self.ram.poison(block.addr + status_off, STATUS_LEN));
        match res {
            Ok(()) => Ok(block),
            Err(e) => {
                self.ram.free(block);
                Err(e)
            }
        }
    }

    fn submit_pcm(
        &mut self,
        q: usize,
        block: Block,
        data_len: u32,
        parts: usize,
        rx: bool,
    ) -> io::Result<Token> {
        let data_gpa = block.addr + DATA_OFF;
        let status_gpa = data_gpa + align8(u64::from(data_len));
        let data_flags = if rx { VRING_DESC_F_WRITE } else { 0 };
        let mut descs = std::mem::take(&mut self.scratch);
        descs.clear();
        descs.push(RawDesc {
            addr: block.addr,
            len: XFER_LEN as u32,
            flags: 0,
            link: None,
        });
        if data_len > 0 {
            let parts = parts.clamp(1, data_len as usize) as u32;
            let piece = data_len / parts;
            let mut off = 0;
            for i in 0..parts {
                let len = if i + 1 == parts {
                    data_len - off
                } else {
                    piece
                };
                descs.push(RawDesc {
                    addr: data_gpa + u64::from(off),
                    len,
                    flags: data_flags,
                    link: None,
                });
                off += len;
            }
        }
        descs.push(RawDesc {
            addr: status_gpa,
            len: STATUS_LEN as u32,
            flags: VRING_DESC_F_WRITE,
            link: None,
        });
        let kind = Kind::Pcm {
            data_gpa,
            data_len,
            status_gpa,
            rx,
        };
        let res = self.submit(q, &descs, Some(block), kind);
        self.scratch = descs;
        res
    }

    /// Submits a chain of explicit descriptors on any queue (hostile tests: addresses
    /// outside RAM, loops, zero lengths, unnegotiated flags). Its completion carries no
    /// data.
    pub fn submit_descs(&mut self, queue: usize, descs: &[Desc]) -> io::Result<Token> {
        let raw: Vec<RawDesc> = descs
            .iter()
            .map(|d| RawDesc {
                addr: d.addr,
                len: d.len,
                flags: d.extra_flags | if d.writable { VRING_DESC_F_WRITE } else { 0 },
                link: d.link,
            })
            .collect();
        self.submit(queue, &raw, None, Kind::Opaque)
    }

    /// Submits a chain whose buffers the frontend allocates and fills: one descriptor
    /// per segment. The completion's `data` is all writable segments, concatenated.
    pub fn submit_segments(&mut self, queue: usize, segs: &[Segment<'_>]) -> io::Result<Token> {
        let total: u64 = segs
            .iter()
            .map(|s| match s {
                Segment::Read(b) => align8(b.len() as u64),
                Segment::Write(n) => align8(u64::from(*n)),
            })
            .sum();
        let block = self.ram.alloc(total.max(8))?;
        let mut raw = Vec::with_capacity(segs.len());
        let mut areas = Vec::new();
        let mut off = block.addr;
        let mut fill = || -> io::Result<()> {
            for s in segs {
                let (len, flags) = match s {
                    Segment::Read(b) => {
                        self.ram.write(off, b)?;
                        (b.len() as u64, 0)
                    }
                    Segment::Write(n) => {
                        self.ram.poison(off, u64::from(*n))?;
                        areas.push((off, *n));
                        (u64::from(*n), VRING_DESC_F_WRITE)
                    }
                };
                raw.push(RawDesc {
                    addr: off,
                    len: len as u32,
                    flags,
                    link: None,
                });
                off += align8(len);
            }
            Ok(())
        };
        if let Err(e) = fill() {
            self.ram.free(block);
            return Err(e);
        }
        self.submit(queue, &raw, Some(block), Kind::Writable(areas))
    }

    /// Submits a control request without waiting: [request R][response area W].
    /// An empty request or a zero-length response leaves that descriptor out.
    pub fn submit_control(&mut self, req: &[u8], resp_len: u32) -> io::Result<Token> {
        let mut segs = Vec::with_capacity(2);
        if !req.is_empty() {
            segs.push(Segment::Read(req));
        }
        if resp_len > 0 {
            segs.push(Segment::Write(resp_len));
        }
        self.submit_segments(virtio_snd_wire::QUEUE_CONTROL, &segs)
    }

    fn submit(
        &mut self,
        q: usize,
        descs: &[RawDesc],
        block: Option<Block>,
        kind: Kind,
    ) -> io::Result<Token> {
        let res = self.check_queue(q).and_then(|_| {
            let qs = &mut self.queues[q];
            if descs.len() > usize::from(qs.ring.size()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a chain of {} descriptors never fits a queue of {}",
                        descs.len(),
                        qs.ring.size()
                    ),
                ));
            }
            qs.ring.add_chain(&self.ram, descs)
        });
        let head = match res {
            Ok(h) => h,
            Err(e) => {
                if let Some(b) = block {
                    self.ram.free(b);
                }
                return Err(e);
            }
        };
        self.next_seq += 1;
        let token = Token {
            seq: self.next_seq,
            queue: q as u8,
        };
        self.queues[q].slots[usize::from(head)] = Some(InFlight {
            token,
            block,
            kind,
            abandoned: false,
        });
        if self.auto_kick {
            self.kick_if_needed(q)?;
        }
        Ok(token)
    }

    fn post_event_buffer(&mut self, block: Block) -> io::Result<()> {
        self.ram.poison(block.addr, 8)?;
        let desc = [RawDesc {
            addr: block.addr,
            len: 8,
            flags: VRING_DESC_F_WRITE,
            link: None,
        }];
        let qs = &mut self.queues[QUEUE_EVENT];
        let head = match qs.ring.add_chain(&self.ram, &desc) {
            Ok(h) => h,
            Err(e) => {
                self.ram.free(block);
                return Err(e);
            }
        };
        self.next_seq += 1;
        qs.slots[usize::from(head)] = Some(InFlight {
            token: Token {
                seq: self.next_seq,
                queue: QUEUE_EVENT as u8,
            },
            block: Some(block),
            kind: Kind::Event { gpa: block.addr },
            abandoned: false,
        });
        Ok(())
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

    pub fn write_ram(&mut self, gpa: u64, data: &[u8]) -> io::Result<()> {
        self.ram.write(gpa, data)
    }

    pub fn read_ram(&self, gpa: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.ram.read(gpa, &mut v)?;
        Ok(v)
    }

    // ---- completions ----

    /// Collects what the device published on all used rings, in queue order 0..3 so
    /// that an answer on the control queue implies its earlier I/O completions are
    /// collected too.
    fn harvest(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let mut event_blocks = Vec::new();
        for q in 0..self.queues.len() {
            let qs = &mut self.queues[q];
            let pending = qs.ring.used_pending(&self.ram)?;
            if pending > qs.ring.size() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "device advanced the used idx of queue {q} by {pending}, \
                         more than the {} entries of the ring",
                        qs.ring.size()
                    ),
                ));
            }
            while let Some((id, used_len)) = qs.ring.pop_used(&self.ram)? {
                let inflight = usize::try_from(id)
                    .ok()
                    .and_then(|i| qs.slots.get_mut(i))
                    .and_then(Option::take);
                let Some(inf) = inflight else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "device put descriptor id {id} in the used ring of queue {q}, \
                             but no chain is in flight there"
                        ),
                    ));
                };
                qs.ring.free_chain(id as u16);
                if let Kind::Event { gpa } = inf.kind {
                    let mut b = [0u8; 8];
                    self.ram.read(gpa, &mut b)?;
                    self.events.push_back(SndEvent {
                        code: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                        data: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                        used_len,
                        at: now,
                    });
                    if let Some(block) = inf.block {
                        // Refilled below, like virtsnd_event_notify_cb.
                        event_blocks.push(block);
                    }
                    continue;
                }
                let (pcm, data) = match &inf.kind {
                    Kind::Pcm {
                        data_gpa,
                        data_len,
                        status_gpa,
                        rx,
                    } => {
                        let mut st = PcmStatus::default();
                        self.ram.read(*status_gpa, st.as_mut_slice())?;
                        let data = if *rx && !inf.abandoned {
                            let n = used_len.saturating_sub(STATUS_LEN as u32).min(*data_len);
                            let mut d = vec![0u8; n as usize];
                            self.ram.read(*data_gpa, &mut d)?;
                            d
                        } else {
                            Vec::new()
                        };
                        (Some(st), data)
                    }
                    Kind::Writable(areas) => {
                        let mut d = Vec::new();
                        if !inf.abandoned {
                            for &(gpa, len) in areas {
                                let at = d.len();
                                d.resize(at + len as usize, 0);
                                self.ram.read(gpa, &mut d[at..])?;
                            }
                        }
                        (None, d)
                    }
                    Kind::Opaque | Kind::Event { .. } => (None, Vec::new()),
                };
                if let Some(b) = inf.block {
                    self.ram.free(b);
                }
                if !inf.abandoned {
                    qs.ready.push_back(Completion {
                        token: inf.token,
                        queue: q,
                        used_len,
                        pcm,
                        data,
                        at: now,
                    });
                }
            }
        }
        if !event_blocks.is_empty() {
            for block in event_blocks {
                self.post_event_buffer(block)?;
            }
            self.kick_if_needed(QUEUE_EVENT)?;
        }
        Ok(())
    }

    /// Waits until `done` holds, sleeping on the call eventfds in between. Returns
    /// whether `done` held before `deadline`.
    fn wait_for(&mut self, deadline: Instant, done: impl Fn(&Self) -> bool) -> io::Result<bool> {
        loop {
            self.harvest()?;
            if done(self) {
                return Ok(true);
            }
            // Ask for a notification, then look again: anything published before the
            // request would otherwise not wake us.
            for qs in &self.queues {
                qs.ring.arm_call(&self.ram)?;
            }
            self.harvest()?;
            if done(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let left = deadline - now;
            let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
            self.poll_calls(ms.min(i32::MAX as u128) as i32)?;
        }
    }

    fn poll_calls(&mut self, timeout_ms: i32) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .queues
            .iter()
            .map(|qs| libc::pollfd {
                fd: qs.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: fds is a valid array of fds.len() pollfd structs for the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(io::Error::new(
                e.kind(),
                format!("poll on call eventfds: {e}"),
            ));
        }
        for (qs, p) in self.queues.iter().zip(&fds) {
            if p.revents & libc::POLLIN != 0 {
                match qs.call.read() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn deadline(timeout: Duration) -> Instant {
        let now = Instant::now();
        now.checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
    }

    /// Completions on `queue` available now, in used-ring order (never blocks).
    /// Event-queue completions are not returned here; see [`events`](Self::events).
    pub fn try_io(&mut self, queue: usize) -> io::Result<Vec<Completion>> {
        self.check_queue(queue)?;
        self.harvest()?;
        Ok(self.queues[queue].ready.drain(..).collect())
    }

    /// Waits up to `timeout` for at least one completion on `queue`, then returns all
    /// available ones in used-ring order; an empty Vec means the time ran out.
    pub fn wait_io(&mut self, queue: usize, timeout: Duration) -> io::Result<Vec<Completion>> {
        self.wait_any(&[queue], timeout)
    }

    /// Like [`wait_io`](Self::wait_io) over several queues (e.g. tx and rx together);
    /// completions are grouped by queue in the order given, each in used-ring order.
    pub fn wait_any(&mut self, queues: &[usize], timeout: Duration) -> io::Result<Vec<Completion>> {
        for &q in queues {
            self.check_queue(q)?;
        }
        self.wait_for(Self::deadline(timeout), |s| {
            queues.iter().any(|&q| !s.queues[q].ready.is_empty())
        })?;
        let mut out = Vec::new();
        for &q in queues {
            out.extend(self.queues[q].ready.drain(..));
        }
        Ok(out)
    }

    /// Waits for the completion of one chain; other completions stay queued. Fails
    /// with `TimedOut` (the chain stays in flight) or `NotFound` for a token that is
    /// neither in flight nor completed-and-unclaimed.
    pub fn wait_token(&mut self, token: Token, timeout: Duration) -> io::Result<Completion> {
        let q = token.queue();
        self.check_queue(q)?;
        let found = self.wait_for(Self::deadline(timeout), |s| {
            s.queues[q].ready.iter().any(|c| c.token == token)
        })?;
        if found {
            let qs = &mut self.queues[q];
            if let Some(pos) = qs.ready.iter().position(|c| c.token == token) {
                if let Some(c) = qs.ready.remove(pos) {
                    return Ok(c);
                }
            }
        }
        let in_flight = self.queues[q]
            .slots
            .iter()
            .flatten()
            .any(|f| f.token == token && !f.abandoned);
        if in_flight {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no completion for chain {} on queue {q} within {timeout:?}",
                    token.seq
                ),
            ))
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("chain {} on queue {q} is not in flight", token.seq),
            ))
        }
    }

    /// Drops the completion of `token` when it comes (its buffers are still recycled).
    /// Returns false if it is not in flight.
    pub fn abandon(&mut self, token: Token) -> bool {
        let Some(qs) = self.queues.get_mut(token.queue()) else {
            return false;
        };
        qs.ready.retain(|c| c.token != token);
        match qs.slots.iter_mut().flatten().find(|f| f.token == token) {
            Some(f) => {
                f.abandoned = true;
                true
            }
            None => false,
        }
    }

    /// Events the device sent since the last call (buffers already refilled).
    pub fn events(&mut self) -> io::Result<Vec<SndEvent>> {
        self.harvest()?;
        Ok(self.events.drain(..).collect())
    }

    /// Waits up to `timeout` for at least one event; empty means none came.
    pub fn wait_events(&mut self, timeout: Duration) -> io::Result<Vec<SndEvent>> {
        self.wait_for(Self::deadline(timeout), |s| !s.events.is_empty())?;
        Ok(self.events.drain(..).collect())
    }
}
