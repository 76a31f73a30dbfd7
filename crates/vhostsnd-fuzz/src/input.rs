//! The fuzzer's inputs as typed values: what a hostile guest and a hostile VMM can
//! do to the device, one [`Action`] at a time. A batch of actions is a pure function
//! of (seed, iteration), so it can be generated again to replay a failure.

use crate::vhost_user::RawSession;

/// One input.
#[derive(Clone, Debug)]
pub enum Action {
    /// A request on the control queue; the device must answer it before the next
    /// action (unless the VM is paused, when it is answered after the resume).
    Control(Chain),
    /// A chain on any queue, shaped like an I/O message or not; it completes when the
    /// device is done with it.
    Io { queue: usize, chain: Chain },
    /// Moves the pacers' virtual clock forward.
    Tick { ns: u64 },
    /// Collects and checks every completion so far.
    Harvest,
    /// Notifies the device about a queue, whether or not anything is new.
    Kick { queue: usize },
    /// With auto-kick off, chains are published without notifying the device.
    AutoKick(bool),
    /// Writes a forged avail index; the session cannot be trusted afterwards.
    AvailIdx { queue: usize, idx: u16 },
    /// VM pause: every ring stopped.
    Pause,
    /// VM continue; `skew` is added to each ring base the device reported (0 is an
    /// honest resume, anything else forges the bases and taints the session).
    Resume { skew: [u16; 4] },
    /// The guest reboots: rings stopped, RESET_DEVICE if `reset`, fresh rings.
    Reboot { reset: bool },
    /// The guest goes away and a new one connects.
    Reconnect(Connect),
    /// The guest goes away, a hostile VMM talks raw vhost-user, then a guest
    /// connects again as `then` says.
    VhostUser { session: RawSession, then: Connect },
}

/// How a guest sets the device up when it connects.
#[derive(Clone, Copy, Debug)]
pub struct Connect {
    /// Entries per virtqueue (a power of two).
    pub queue_size: u16,
    pub event_idx: bool,
    pub indirect: bool,
    /// Buffers the frontend itself keeps on the event queue; the rest of the queue
    /// is free for hostile event buffers.
    pub event_buffers: u16,
}

/// One descriptor chain as the guest lays it out.
#[derive(Clone, Debug)]
pub struct Chain {
    pub descs: Vec<DescSpec>,
    /// The layout is what a correct driver sends, so the device's answer can be
    /// checked beyond its size (a status code it may use).
    pub plain: bool,
}

/// One descriptor: where its buffer is, and how it is flagged and linked.
#[derive(Clone, Debug)]
pub struct DescSpec {
    pub buf: Buf,
    pub writable: bool,
    /// `next` points at this index (of the chain in the ring, or of the table the
    /// descriptor is in) instead of the following descriptor.
    pub link: Option<usize>,
    /// More flag bits (never INDIRECT on a buffer the device could take for a
    /// table of descriptors that point into the rings).
    pub extra_flags: u16,
}

/// The memory a descriptor refers to.
#[derive(Clone, Debug)]
pub enum Buf {
    /// A guest buffer of `len` bytes with guard bytes around it: readable ones hold
    /// `head` followed by a pattern drawn from `fill`, writable ones are poisoned.
    Guest { head: Vec<u8>, len: u32, fill: u32 },
    /// An address the device must refuse.
    Hostile { at: Hostile, len: u32 },
    /// Any address in guest RAM, rings included (readable descriptors only).
    Anywhere { offset: u64, len: u32 },
    /// An indirect table holding `entries`; the descriptor's length is the table's
    /// plus `len_adjust` (a multiple of 16 or not, shorter or longer).
    Table {
        entries: Vec<DescSpec>,
        len_adjust: i32,
    },
}

/// Where a descriptor outside guest RAM points.
#[derive(Clone, Copy, Debug)]
pub enum Hostile {
    /// This many bytes past the end of RAM.
    PastEnd(u64),
    /// This many bytes before the end of RAM, so that the buffer runs past it.
    Straddle(u32),
    /// This many bytes below the top of the address space.
    Overflow(u64),
}

impl DescSpec {
    pub fn new(buf: Buf, writable: bool) -> Self {
        DescSpec {
            buf,
            writable,
            link: None,
            extra_flags: 0,
        }
    }

    /// The bytes a device may write through this descriptor at most, tables
    /// included (the device may follow every entry).
    pub fn writable_bytes(&self) -> u64 {
        match &self.buf {
            Buf::Table { entries, .. } => entries.iter().map(DescSpec::writable_bytes).sum(),
            Buf::Guest { len, .. } | Buf::Hostile { len, .. } | Buf::Anywhere { len, .. } => {
                if self.writable {
                    u64::from(*len)
                } else {
                    0
                }
            }
        }
    }

    /// How many guest buffers this descriptor takes (tables count with their entries).
    pub fn buffers(&self) -> usize {
        match &self.buf {
            Buf::Guest { .. } => 1,
            Buf::Table { entries, .. } => 1 + entries.iter().map(DescSpec::buffers).sum::<usize>(),
            Buf::Hostile { .. } | Buf::Anywhere { .. } => 0,
        }
    }
}

impl Chain {
    pub fn writable_bytes(&self) -> u64 {
        self.descs.iter().map(DescSpec::writable_bytes).sum()
    }
}

/// A well-formed message's parts before a layout is chosen for them.
#[derive(Clone, Debug)]
pub enum Part {
    Read(Vec<u8>),
    /// Readable: `len` bytes of a pattern (playback data).
    Fill {
        len: u32,
        fill: u32,
    },
    Write(u32),
}
