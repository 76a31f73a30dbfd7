//! What a test hands the frontend to build a descriptor chain.

use super::ring::{self, RawDesc, VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};

/// Identifies one submitted chain; completions carry it back.
///
/// Tokens are unique within a [`FakeGuest`](super::FakeGuest) session and know their
/// queue, so `wait_token` needs nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token {
    pub(crate) seq: u64,
    pub(crate) queue: u8,
}

impl Token {
    /// The queue the chain was submitted on.
    pub fn queue(&self) -> usize {
        usize::from(self.queue)
    }

    /// Submission order within the session (starts at 1).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// One explicit descriptor for hostile tests: the address is not checked, so it may
/// point outside guest RAM, overlap the rings, or be 0.
///
/// A chain of them goes into the ring as given, even with indirect descriptors
/// negotiated; [`Desc::indirect`] and [`Desc::table_bytes`] build indirect tables
/// explicitly, well-formed or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Guest physical address.
    pub addr: u64,
    pub len: u32,
    /// Device-writable (VRING_DESC_F_WRITE).
    pub writable: bool,
    /// More flag bits OR-ed in (e.g. VRING_DESC_F_INDIRECT, whether negotiated or not).
    pub extra_flags: u16,
    /// Make `next` point at the `n`-th descriptor of this same chain (with NEXT set)
    /// instead of the following one: `Some(0)` on the last descriptor builds a loop.
    /// In the ring, an index past the chain points at descriptor 0 of the ring's
    /// table; in an indirect table, `next` is the index itself, past the table or not.
    pub link: Option<usize>,
}

impl Desc {
    pub fn readable(addr: u64, len: u32) -> Self {
        Desc {
            addr,
            len,
            writable: false,
            extra_flags: 0,
            link: None,
        }
    }

    pub fn writable(addr: u64, len: u32) -> Self {
        Desc {
            writable: true,
            ..Desc::readable(addr, len)
        }
    }

    pub fn with_flags(mut self, extra_flags: u16) -> Self {
        self.extra_flags = extra_flags;
        self
    }

    pub fn with_link(mut self, index_in_chain: usize) -> Self {
        self.link = Some(index_in_chain);
        self
    }

    /// A descriptor with VRING_DESC_F_INDIRECT that refers to an indirect table of
    /// `len` bytes at `table` (16 per entry, see [`table_bytes`](Self::table_bytes)).
    /// Neither is checked, and the other flags stay free: `writable`, a following
    /// descriptor (NEXT) or a place inside another table are all for the test to pick.
    pub fn indirect(table: u64, len: u32) -> Self {
        Desc::readable(table, len).with_flags(VRING_DESC_F_INDIRECT)
    }

    /// `entries` as the bytes of an indirect table (`struct vring_desc` each, the
    /// layout the device reads from the address of a [`Desc::indirect`]). Each entry
    /// is chained to the following one, the last one ends the chain, and `link`
    /// overrides that with an index into the table. Flags are taken as they are:
    /// an entry may be indirect itself.
    pub fn table_bytes(entries: &[Desc]) -> Vec<u8> {
        let raw: Vec<RawDesc> = entries.iter().map(Desc::raw).collect();
        ring::indirect_table(&raw)
    }

    pub(crate) fn raw(&self) -> RawDesc {
        RawDesc {
            addr: self.addr,
            len: self.len,
            flags: self.extra_flags | if self.writable { VRING_DESC_F_WRITE } else { 0 },
            link: self.link,
        }
    }
}

/// One segment of a chain whose buffers the frontend allocates in guest RAM: the
/// common way to send malformed-but-addressable messages (short headers, status
/// areas too small, readable data after writable data, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    /// A device-readable descriptor holding these bytes.
    Read(&'a [u8]),
    /// A device-writable descriptor of this many bytes (pre-filled with
    /// [`POISON`](super::POISON)); its contents come back in `Completion::data`.
    Write(u32),
}
