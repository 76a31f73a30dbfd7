//! Hostile vhost-user sessions: QEMU's message sequence with messages dropped,
//! repeated, swapped and corrupted (wrong sizes, unknown codes, bad memory tables,
//! vring indexes and sizes out of range, messages before SET_OWNER), garbage in the
//! rings, and connections closed in the middle of a message.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::Path;
use std::time::Duration;
use vhost::vhost_user::message::FrontendReq;

use rand::rngs::Xoshiro256PlusPlus;
use rand::RngExt;
use virtio_snd_frontend::raw::{Header, RawVhostUser, FLAG_NEED_REPLY, VERSION_1};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Where the session's memory pretends to be in the frontend's address space.
const UADDR: u64 = 0x7f3a_0000_0000;
/// Rings of queue q start at q * RING_STRIDE in the memory.
const RING_STRIDE: u64 = 4096;
const QUEUES: u32 = 4;

/// The message codes of vhost-user (FrontendReq), 1 to 44.
const MAX_KNOWN: u32 = 44;

/// VERSION_1 | PROTOCOL_FEATURES | EVENT_IDX | INDIRECT_DESC.
const FEATURES: u64 = 1 << 32 | 1 << 30 | 1 << 29 | 1 << 28;
/// MQ | REPLY_ACK | CONFIG | RESET_DEVICE.
const PROTOCOL_FEATURES: u64 = 1 << 0 | 1 << 3 | 1 << 9 | 1 << 13;

/// One hostile connection.
#[derive(Clone, Debug)]
pub struct RawSession {
    /// Size of the memfd the memory table maps (the table may claim more).
    pub file_len: u64,
    pub rings: Rings,
    pub steps: Vec<Step>,
    pub end: End,
}

/// What the session's memory holds where the rings are.
#[derive(Clone, Copy, Debug)]
pub enum Rings {
    Zero,
    /// Random bytes everywhere.
    Garbage(u64),
    /// Small avail indexes, heads and descriptors inside the memory.
    Plausible(u64),
}

#[derive(Clone, Debug)]
pub enum Step {
    Msg(Msg),
    /// Signals the kick eventfd of a queue.
    Kick(u8),
    /// Bytes that are no message at all.
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub request: u32,
    pub flags: u32,
    pub payload: Payload,
    /// The size the header announces, if not the payload's.
    pub size: Option<u32>,
    pub fds: Vec<Fd>,
}

#[derive(Clone, Debug)]
pub enum Payload {
    Empty,
    U64(u64),
    State {
        index: u32,
        num: u32,
    },
    Addr {
        index: u32,
        flags: u32,
        desc: u64,
        used: u64,
        avail: u64,
        log: u64,
    },
    MemTable(Vec<Region>),
    /// ADD_MEM_REG / REM_MEM_REG: one region after 8 bytes of padding.
    MemReg(Region),
    Config {
        offset: u32,
        size: u32,
        flags: u32,
    },
    Bytes(Vec<u8>),
}

#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub gpa: u64,
    pub size: u64,
    pub uaddr: u64,
    pub offset: u64,
}

/// A file descriptor attached to a message.
#[derive(Clone, Copy, Debug)]
pub enum Fd {
    Memfd,
    Kick(u8),
    Call(u8),
    DevNull,
}

#[derive(Clone, Debug)]
pub enum End {
    Close,
    /// A header announcing `len` bytes of `request`, `sent` of them sent, then close.
    Partial {
        request: u32,
        len: u32,
        sent: u32,
    },
}

impl RawSession {
    /// Inputs this session counts as: each message and kick.
    pub fn inputs(&self) -> u64 {
        self.steps.len() as u64 + 1
    }
}

fn msg(request: u32, payload: Payload, fds: Vec<Fd>) -> Msg {
    Msg {
        request,
        flags: VERSION_1,
        payload,
        size: None,
        fds,
    }
}

/// QEMU's sequence for a 4-queue device, as `vhost_user_backend_init`,
/// `vhost_dev_init` and `vhost_dev_start` send it.
fn qemu_sequence(file_len: u64) -> Vec<Step> {
    let mut s = vec![
        msg(u32::from(FrontendReq::GET_FEATURES), Payload::Empty, vec![]),
        msg(
            u32::from(FrontendReq::GET_PROTOCOL_FEATURES),
            Payload::Empty,
            vec![],
        ),
        msg(
            u32::from(FrontendReq::SET_PROTOCOL_FEATURES),
            Payload::U64(PROTOCOL_FEATURES),
            vec![],
        ),
        msg(
            u32::from(FrontendReq::GET_QUEUE_NUM),
            Payload::Empty,
            vec![],
        ),
        msg(u32::from(FrontendReq::SET_OWNER), Payload::Empty, vec![]),
        msg(
            u32::from(FrontendReq::SET_FEATURES),
            Payload::U64(FEATURES),
            vec![],
        ),
        msg(
            u32::from(FrontendReq::SET_MEM_TABLE),
            Payload::MemTable(vec![Region {
                gpa: 0,
                size: file_len,
                uaddr: UADDR,
                offset: 0,
            }]),
            vec![Fd::Memfd],
        ),
    ];
    for q in 0..QUEUES {
        let base = UADDR + u64::from(q) * RING_STRIDE;
        s.push(msg(
            u32::from(FrontendReq::SET_VRING_NUM),
            Payload::State { index: q, num: 64 },
            vec![],
        ));
        s.push(msg(
            u32::from(FrontendReq::SET_VRING_BASE),
            Payload::State { index: q, num: 0 },
            vec![],
        ));
        s.push(msg(
            u32::from(FrontendReq::SET_VRING_ADDR),
            Payload::Addr {
                index: q,
                flags: 0,
                desc: base,
                avail: base + 1024,
                used: base + 2048,
                log: 0,
            },
            vec![],
        ));
        s.push(msg(
            u32::from(FrontendReq::SET_VRING_KICK),
            Payload::U64(u64::from(q)),
            vec![Fd::Kick(q as u8)],
        ));
        s.push(msg(
            u32::from(FrontendReq::SET_VRING_CALL),
            Payload::U64(u64::from(q)),
            vec![Fd::Call(q as u8)],
        ));
    }
    for q in 0..QUEUES {
        s.push(msg(
            u32::from(FrontendReq::SET_VRING_ENABLE),
            Payload::State { index: q, num: 1 },
            vec![],
        ));
    }
    let mut steps: Vec<Step> = s.into_iter().map(Step::Msg).collect();
    steps.extend((0..QUEUES as u8).map(Step::Kick));
    steps.push(Step::Msg(msg(
        u32::from(FrontendReq::GET_CONFIG),
        Payload::Config {
            offset: 0,
            size: 12,
            flags: 0,
        },
        vec![],
    )));
    steps
}

pub fn generate(rng: &mut Xoshiro256PlusPlus) -> RawSession {
    let file_len = match rng.random_range(0..8) {
        0 => rng.random_range(0..4) * 4096,
        1 => 4096 * rng.random_range(1..16),
        _ => 64 * 1024,
    };
    let rings = match rng.random_range(0..3) {
        0 => Rings::Zero,
        1 => Rings::Garbage(rng.random()),
        _ => Rings::Plausible(rng.random()),
    };
    let mut steps = qemu_sequence(64 * 1024);
    // A hostile frontend gives up somewhere along the way, or never.
    if rng.random_bool(0.5) {
        let keep = rng.random_range(0..=steps.len());
        steps.truncate(keep);
    }
    let mut out = Vec::with_capacity(steps.len() + 4);
    for step in steps {
        match rng.random_range(0..100) {
            0..5 => continue,
            5..8 => {
                out.push(step.clone());
                out.push(step);
            }
            8..20 => out.push(mutate(step, rng)),
            _ => out.push(step),
        }
        if rng.random_ratio(1, 20) {
            out.push(random_step(rng));
        }
    }
    for i in 0..out.len().saturating_sub(1) {
        if rng.random_ratio(1, 30) {
            out.swap(i, i + 1);
        }
    }
    let end = if rng.random_bool(0.2) {
        let len = rng.random_range(1..512);
        End::Partial {
            request: rng.random_range(1..=MAX_KNOWN),
            len,
            sent: rng.random_range(0..len),
        }
    } else {
        End::Close
    };
    RawSession {
        file_len,
        rings,
        steps: out,
        end,
    }
}

fn random_step(rng: &mut Xoshiro256PlusPlus) -> Step {
    match rng.random_range(0..10) {
        0 => Step::Bytes((0..rng.random_range(1..40)).map(|_| rng.random()).collect()),
        1 => Step::Kick(rng.random_range(0..QUEUES as u8)),
        _ => {
            let request = if rng.random_bool(0.8) {
                rng.random_range(0..=MAX_KNOWN + 2)
            } else {
                rng.random()
            };
            let payload = match rng.random_range(0..6) {
                0 => Payload::Empty,
                1 => Payload::U64(rng.random()),
                2 => Payload::State {
                    index: rng.random_range(0..8),
                    num: rng.random(),
                },
                3 => Payload::MemReg(random_region(rng)),
                4 => Payload::Config {
                    offset: rng.random_range(0..32),
                    size: rng.random_range(0..300),
                    flags: rng.random_range(0..3),
                },
                _ => Payload::Bytes(
                    (0..rng.random_range(0..100))
                        .map(|_| rng.random())
                        .collect(),
                ),
            };
            let fds = match rng.random_range(0..6) {
                0 => vec![Fd::Memfd],
                1 => vec![Fd::DevNull],
                2 => vec![Fd::Kick(0), Fd::Call(0)],
                _ => vec![],
            };
            let m = Msg {
                request,
                flags: VERSION_1,
                payload,
                size: None,
                fds,
            };
            Step::Msg(m)
        }
    }
}

fn random_region(rng: &mut Xoshiro256PlusPlus) -> Region {
    let pick = |rng: &mut Xoshiro256PlusPlus, typical: u64| match rng.random_range(0..4) {
        0 => rng.random(),
        1 => rng.random_range(0..1 << 20),
        _ => typical,
    };
    Region {
        gpa: pick(rng, 0),
        size: pick(rng, 64 * 1024),
        uaddr: pick(rng, UADDR),
        offset: pick(rng, 0),
    }
}

fn mutate(step: Step, rng: &mut Xoshiro256PlusPlus) -> Step {
    let Step::Msg(mut m) = step else {
        return step;
    };
    match rng.random_range(0..8) {
        0 => m.size = Some(rng.random_range(0..300)),
        1 => m.size = Some(rng.random()),
        2 => m.flags = rng.random(),
        3 => m.flags |= FLAG_NEED_REPLY,
        4 => {
            m.fds = vec![
                [Fd::Memfd, Fd::DevNull, Fd::Kick(1)][rng.random_range(0..3)];
                rng.random_range(0..10)
            ]
        }
        5 => m.request = rng.random_range(0..=MAX_KNOWN + 2),
        _ => mutate_payload(&mut m.payload, rng),
    }
    Step::Msg(m)
}

fn mutate_payload(p: &mut Payload, rng: &mut Xoshiro256PlusPlus) {
    match p {
        Payload::Empty => *p = Payload::U64(rng.random()),
        Payload::U64(v) => *v ^= 1 << rng.random_range(0..64),
        Payload::State { index, num } => {
            if rng.random_bool(0.5) {
                *index = [4, 5, 255, u32::MAX, rng.random()][rng.random_range(0..5)];
            } else {
                *num = [0, 1, 3, 63, 65, 128, 1024, 32768, 65535, 65536, u32::MAX]
                    [rng.random_range(0..11)];
            }
        }
        Payload::Addr {
            index,
            flags,
            desc,
            used,
            avail,
            log,
        } => match rng.random_range(0..6) {
            0 => *index = rng.random_range(4..300),
            1 => *flags = rng.random(),
            2 => *desc = rng.random(),
            3 => *used = UADDR + rng.random_range(0..1 << 20),
            4 => *avail = UADDR - rng.random_range(1..4096),
            _ => *log = rng.random(),
        },
        Payload::MemTable(regions) => match rng.random_range(0..5) {
            0 => regions.clear(),
            1 => regions.push(random_region(rng)),
            2 => {
                let r = regions
                    .first()
                    .copied()
                    .unwrap_or_else(|| random_region(rng));
                regions.extend(std::iter::repeat_n(r, rng.random_range(2..10)));
            }
            _ => {
                if let Some(r) = regions.first_mut() {
                    *r = random_region(rng);
                }
            }
        },
        Payload::MemReg(r) => *r = random_region(rng),
        Payload::Config {
            offset,
            size,
            flags,
        } => match rng.random_range(0..3) {
            0 => *offset = rng.random(),
            1 => *size = rng.random(),
            _ => *flags = rng.random(),
        },
        Payload::Bytes(b) => b.truncate(rng.random_range(0..=b.len())),
    }
}

fn payload_bytes(p: &Payload) -> Vec<u8> {
    let mut v = Vec::new();
    let region = |v: &mut Vec<u8>, r: &Region| {
        for f in [r.gpa, r.size, r.uaddr, r.offset] {
            v.extend_from_slice(&f.to_le_bytes());
        }
    };
    match p {
        Payload::Empty => {}
        Payload::U64(x) => v.extend_from_slice(&x.to_le_bytes()),
        Payload::State { index, num } => {
            v.extend_from_slice(&index.to_le_bytes());
            v.extend_from_slice(&num.to_le_bytes());
        }
        Payload::Addr {
            index,
            flags,
            desc,
            used,
            avail,
            log,
        } => {
            v.extend_from_slice(&index.to_le_bytes());
            v.extend_from_slice(&flags.to_le_bytes());
            for a in [desc, used, avail, log] {
                v.extend_from_slice(&a.to_le_bytes());
            }
        }
        Payload::MemTable(regions) => {
            v.extend_from_slice(&(regions.len() as u32).to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            for r in regions {
                region(&mut v, r);
            }
        }
        Payload::MemReg(r) => {
            v.extend_from_slice(&0u64.to_le_bytes());
            region(&mut v, r);
        }
        Payload::Config {
            offset,
            size,
            flags,
        } => {
            for f in [offset, size, flags] {
                v.extend_from_slice(&f.to_le_bytes());
            }
            v.resize(v.len() + (*size as usize).min(256), 0);
        }
        Payload::Bytes(b) => v.extend_from_slice(b),
    }
    v
}

/// The files a session hands the device.
struct Files {
    memfd: File,
    null: File,
    kick: Vec<EventFd>,
    call: Vec<EventFd>,
}

impl Files {
    fn new(s: &RawSession) -> io::Result<Files> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags and returns a new
        // fd or -1, which is checked.
        let fd = unsafe { libc::memfd_create(c"vhostsnd-fuzz-raw".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor owned by nobody else.
        let mut memfd = unsafe { File::from_raw_fd(fd) };
        memfd.set_len(s.file_len)?;
        let ring_area = (RING_STRIDE * u64::from(QUEUES)).min(s.file_len) as usize;
        let content = ring_content(s.rings, ring_area, s.file_len);
        memfd.write_all(&content)?;
        let mut kick = Vec::new();
        let mut call = Vec::new();
        for _ in 0..QUEUES {
            kick.push(EventFd::new(EFD_NONBLOCK)?);
            call.push(EventFd::new(EFD_NONBLOCK)?);
        }
        Ok(Files {
            memfd,
            null: File::open("/dev/null")?,
            kick,
            call,
        })
    }

    fn raw(&self, fd: Fd) -> RawFd {
        let q = |i: u8| usize::from(i) % QUEUES as usize;
        match fd {
            Fd::Memfd => self.memfd.as_raw_fd(),
            Fd::DevNull => self.null.as_raw_fd(),
            Fd::Kick(i) => self.kick[q(i)].as_raw_fd(),
            Fd::Call(i) => self.call[q(i)].as_raw_fd(),
        }
    }
}

fn ring_content(rings: Rings, len: usize, file_len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = match rings {
        Rings::Zero => return v,
        Rings::Garbage(s) | Rings::Plausible(s) => s | 1,
    };
    let mut next = move || {
        // xorshift: the ring bytes are data, not inputs; any stream will do.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    if let Rings::Garbage(_) = rings {
        v.iter_mut().for_each(|b| *b = next() as u8);
        return v;
    }
    for q in 0..(len as u64 / RING_STRIDE) {
        let base = (q * RING_STRIDE) as usize;
        for d in 0..64usize {
            let at = base + 16 * d;
            let addr = next() % file_len.max(1);
            let dlen = (next() % 512) as u32;
            let flags = (next() % 8) as u16;
            let nxt = (next() % 70) as u16;
            v[at..at + 8].copy_from_slice(&addr.to_le_bytes());
            v[at + 8..at + 12].copy_from_slice(&dlen.to_le_bytes());
            v[at + 12..at + 14].copy_from_slice(&flags.to_le_bytes());
            v[at + 14..at + 16].copy_from_slice(&nxt.to_le_bytes());
        }
        let avail = base + 1024;
        let idx = (next() % 6) as u16;
        v[avail + 2..avail + 4].copy_from_slice(&idx.to_le_bytes());
        for i in 0..64usize {
            let head = (next() % 66) as u16;
            v[avail + 4 + 2 * i..avail + 6 + 2 * i].copy_from_slice(&head.to_le_bytes());
        }
    }
    v
}

/// Plays the session on a new connection to `path`. The device may hang up at any
/// point (that is its right); only failing to connect is an error.
pub fn run(s: &RawSession, path: &Path) -> io::Result<()> {
    let files = Files::new(s)?;
    let mut conn = RawVhostUser::connect(path, Duration::from_secs(5), Duration::from_secs(5))
        .map_err(|e| io::Error::new(e.kind(), format!("raw vhost-user connection: {e}")))?;
    for step in &s.steps {
        let sent = match step {
            Step::Msg(m) => {
                let payload = payload_bytes(&m.payload);
                let fds: Vec<RawFd> = m.fds.iter().map(|f| files.raw(*f)).collect();
                let header = Header {
                    request: m.request,
                    flags: m.flags,
                    size: m.size.unwrap_or(payload.len() as u32),
                };
                conn.send(header, &payload, &fds)
            }
            Step::Kick(q) => files.kick[usize::from(*q) % QUEUES as usize]
                .write(1)
                .map(|_| ()),
            Step::Bytes(b) => conn.send_raw(b, &[]),
        };
        if sent.is_err() || conn.discard_replies().is_err() {
            // The device closed the connection: the rest of the session goes nowhere.
            return Ok(());
        }
    }
    if let End::Partial { request, len, sent } = &s.end {
        let payload = vec![0u8; *len as usize];
        // Whether the device was still listening does not matter.
        let _ = conn.send_partial_and_close(*request, VERSION_1, &payload, *sent as usize);
    }
    Ok(())
}
