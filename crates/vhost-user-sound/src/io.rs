//! tx/rx messages: a descriptor chain checked and turned into an [`IoMessage`] that can
//! be completed later, from any thread.
//!
//! Layouts (virtio spec, "PCM I/O Messages"):
//! playback `[xfer (R)][data (R)...][status (W)]`, capture `[xfer (R)][data (W)...][status (W)]`.
//! Header, data and status may share or span descriptors; everything is located by byte
//! offset so odd but legal layouts work, and everything is range-checked against guest
//! RAM before it is kept.

use std::ops::Deref;

use smallvec::SmallVec;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use virtio_snd_wire::{PcmStatus, PcmXfer};

pub type GuestMem = GuestMemoryMmap<()>;

const XFER_LEN: u32 = std::mem::size_of::<PcmXfer>() as u32;
const STATUS_LEN: u32 = std::mem::size_of::<PcmStatus>() as u32;

/// Most descriptors a chain may have: QEMU's VIRTQUEUE_MAX_SIZE. Linux stays well
/// below it: a period of MAX_PERIOD_BYTES in 4 KiB pages is 515 descriptors at most.
pub const MAX_CHAIN: usize = 1024;

/// A run of guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub addr: GuestAddress,
    pub len: u32,
}

/// Runs a list keeps in place: a period in one run, or split once where it crosses a
/// page, with no allocation per message.
const INLINE_SEGS: usize = 2;

/// A list of guest memory runs addressed as one contiguous byte range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegList {
    segs: SmallVec<[Seg; INLINE_SEGS]>,
    /// The runs' total length (at most `u32::MAX`: `split_chain` refuses more).
    len: u32,
}

impl SegList {
    /// Appends `seg`, unless the list would be longer than `u32::MAX` bytes.
    fn push(&mut self, seg: Seg) -> Result<(), &'static str> {
        self.len = self
            .len
            .checked_add(seg.len)
            .ok_or("chain length overflows")?;
        self.segs.push(seg);
        Ok(())
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sub-range `[start, start + len)`, which must lie inside the list.
    pub fn slice(&self, mut start: u32, mut len: u32) -> SegList {
        let mut out = SegList::default();
        for s in &self.segs {
            if len == 0 {
                break;
            }
            if start >= s.len {
                start -= s.len;
                continue;
            }
            let take = (s.len - start).min(len);
            // A sub-range is never longer than the list.
            out.len += take;
            out.segs.push(Seg {
                addr: s.addr.unchecked_add(u64::from(start)),
                len: take,
            });
            len -= take;
            start = 0;
        }
        out
    }

    /// Copies guest memory into `buf`, which must be exactly as long as the list.
    pub fn read(&self, mem: &GuestMem, buf: &mut [u8]) -> Result<(), vm_memory::GuestMemoryError> {
        let mut off = 0usize;
        for s in &self.segs {
            let end = off + s.len as usize;
            mem.read_slice(&mut buf[off..end], s.addr)?;
            off = end;
        }
        Ok(())
    }

    /// Copies `buf` into guest memory; `buf` must be exactly as long as the list.
    pub fn write(&self, mem: &GuestMem, buf: &[u8]) -> Result<(), vm_memory::GuestMemoryError> {
        let mut off = 0usize;
        for s in &self.segs {
            let end = off + s.len as usize;
            mem.write_slice(&buf[off..end], s.addr)?;
            off = end;
        }
        Ok(())
    }
}

/// Why a chain could not be accepted as an I/O message.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Nowhere to write a status: the descriptor goes back unused.
    NoStatus,
    /// A status can be written: answer with it.
    Reply {
        status: SegList,
        reason: &'static str,
    },
}

/// A chain as the device sees it: where its header, payload and status are.
#[derive(Debug)]
pub struct IoMessage {
    pub head: u16,
    pub stream_id: u32,
    /// Payload: readable for playback, writable for capture.
    pub data: SegList,
    pub status: SegList,
}

impl IoMessage {
    pub fn data_len(&self) -> u32 {
        self.data.len()
    }

    /// Bytes the device writes when it completes the message (capture data + status).
    pub fn used_len(&self, output: bool) -> u32 {
        if output {
            STATUS_LEN
        } else {
            self.data.len() + STATUS_LEN
        }
    }
}

/// Splits a chain into readable and writable runs, refusing chains that put readable
/// descriptors after writable ones, that overflow, or that point outside guest RAM.
pub fn split_chain<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMem,
) -> Result<(SegList, SegList), &'static str>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let mut readable = SegList::default();
    let mut writable = SegList::default();
    let mut ended = true;
    for (n, desc) in chain.enumerate() {
        // The ring bounds a direct chain, but an indirect table may hold 65535 entries
        // and each kept one costs 16 bytes until the message completes: a queue of 64
        // messages all pointing at one such table would hold 64 MiB of the device's.
        if n >= MAX_CHAIN {
            return Err("more than MAX_CHAIN descriptors in the chain");
        }
        // The iterator stops quietly at a loop (after queue-size descriptors, or the
        // table's size), a bad `next` or a nested table; the last descriptor then still
        // says there is more.
        ended = !desc.has_next();
        let seg = Seg {
            addr: desc.addr(),
            len: desc.len(),
        };
        if seg.len == 0 {
            continue;
        }
        if !mem.check_range(seg.addr, seg.len as usize) {
            return Err("descriptor outside guest memory");
        }
        if desc.is_write_only() {
            writable.push(seg)?;
        } else {
            if !writable.is_empty() {
                return Err("readable descriptor after a writable one");
            }
            readable.push(seg)?;
        }
    }
    if !ended {
        return Err("descriptor chain loops or is longer than the queue");
    }
    Ok((readable, writable))
}

/// Checks the layout of a tx (`output`) or rx chain and reads its header.
pub fn parse<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMem,
    output: bool,
) -> Result<IoMessage, Malformed>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let head = chain.head_index();
    let (readable, writable) = split_chain(chain, mem).map_err(|_| Malformed::NoStatus)?;
    let wlen = writable.len();
    if wlen < STATUS_LEN {
        return Err(Malformed::NoStatus);
    }
    let status = writable.slice(wlen - STATUS_LEN, STATUS_LEN);
    let reply = |reason| Malformed::Reply {
        status: status.clone(),
        reason,
    };
    let rlen = readable.len();
    if rlen < XFER_LEN {
        return Err(reply("no xfer header"));
    }
    let mut hdr = [0u8; XFER_LEN as usize];
    readable
        .slice(0, XFER_LEN)
        .read(mem, &mut hdr)
        .map_err(|_| reply("unreadable xfer header"))?;
    let stream_id = u32::from_le_bytes(hdr);
    let data = if output {
        if wlen != STATUS_LEN {
            return Err(reply("playback chain with writable data"));
        }
        readable.slice(XFER_LEN, rlen - XFER_LEN)
    } else {
        if rlen != XFER_LEN {
            return Err(reply("capture chain with readable data"));
        }
        writable.slice(0, wlen - STATUS_LEN)
    };
    Ok(IoMessage {
        head,
        stream_id,
        data,
        status,
    })
}

pub fn write_status(
    mem: &GuestMem,
    status: &SegList,
    code: u32,
    latency_bytes: u32,
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut buf = [0u8; STATUS_LEN as usize];
    buf[..4].copy_from_slice(&code.to_le_bytes());
    buf[4..].copy_from_slice(&latency_bytes.to_le_bytes());
    status.write(mem, &buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(v: &[(u64, u32)]) -> SegList {
        let mut l = SegList::default();
        for &(a, len) in v {
            l.push(Seg {
                addr: GuestAddress(a),
                len,
            })
            .unwrap();
        }
        l
    }

    #[test]
    fn slices_cross_segment_boundaries() {
        let l = segs(&[(0x1000, 4), (0x2000, 10), (0x3000, 8)]);
        assert_eq!(l.len(), 22);
        assert_eq!(l.slice(4, 10), segs(&[(0x2000, 10)]));
        assert_eq!(l.slice(2, 4), segs(&[(0x1002, 2), (0x2000, 2)]));
        assert_eq!(l.slice(14, 8), segs(&[(0x3000, 8)]));
        assert_eq!(l.slice(12, 6), segs(&[(0x2008, 2), (0x3000, 4)]));
        assert_eq!(l.slice(22, 0), segs(&[]));
    }

    #[test]
    fn read_write_round_trip() {
        let mem = GuestMem::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let l = segs(&[(0x100, 3), (0x800, 5)]);
        l.write(&mem, b"abcdefgh").unwrap();
        let mut out = [0u8; 8];
        l.read(&mem, &mut out).unwrap();
        assert_eq!(&out, b"abcdefgh");
        write_status(&mem, &segs(&[(0x10, 2), (0x20, 6)]), 0x8000, 7).unwrap();
        let mut st = [0u8; 8];
        segs(&[(0x10, 2), (0x20, 6)]).read(&mem, &mut st).unwrap();
        assert_eq!(st, [0, 0x80, 0, 0, 7, 0, 0, 0]);
    }
}
