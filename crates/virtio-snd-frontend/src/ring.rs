//! The driver side of one split virtqueue, laid out in guest RAM.
//!
//! virtio-queue's `mock::MockSplitQueue` is not used: it borrows the memory for its
//! whole life, always builds chains from descriptor 0, indexes the avail ring with the
//! unwrapped avail idx (so it fails after `size` chains) and has no free list or memory
//! barriers. A real driver needs all of those, and they fit in a page of code.

use std::io;
use std::sync::atomic::{fence, Ordering};

use virtio_bindings::virtio_ring;
use vm_memory::{Bytes, GuestAddress};

use super::memory::GuestRam;

// The bindings give the flags as u32; descriptors and rings hold them in 16 bits.
pub(crate) const VRING_DESC_F_NEXT: u16 = virtio_ring::VRING_DESC_F_NEXT as u16;
pub(crate) const VRING_DESC_F_WRITE: u16 = virtio_ring::VRING_DESC_F_WRITE as u16;
pub(crate) const VRING_DESC_F_INDIRECT: u16 = virtio_ring::VRING_DESC_F_INDIRECT as u16;
const VRING_USED_F_NO_NOTIFY: u16 = virtio_ring::VRING_USED_F_NO_NOTIFY as u16;
/// Bytes of one `struct vring_desc`, in the ring's table and in indirect tables alike.
pub(crate) const DESC_SIZE: usize = std::mem::size_of::<virtio_ring::vring_desc>();

/// Bytes one queue's rings take at most for `size` entries, rounded to a page: the
/// descriptor table, then the avail ring, then the used ring (each naturally aligned).
pub(crate) fn ring_bytes(size: u16) -> u64 {
    let (_, _, end) = layout(0, size);
    (end + 4095) & !4095
}

/// (avail offset, used offset, end) for a queue of `size` entries starting at `base`.
fn layout(base: u64, size: u16) -> (u64, u64, u64) {
    let n = u64::from(size);
    let avail = base + DESC_SIZE as u64 * n;
    // avail: flags, idx, ring[n], used_event.
    let used = (avail + 4 + 2 * n + 2 + 3) & !3;
    // used: flags, idx, ring[n] of (id, len), avail_event.
    let end = used + 4 + 8 * n + 2;
    (avail, used, end)
}

/// `descs` as an indirect table: each entry's `next` is a position in the table itself,
/// so a link past the table stays past it.
pub(crate) fn indirect_table(descs: &[RawDesc]) -> Vec<u8> {
    let index = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(DESC_SIZE * descs.len());
    for (i, d) in descs.iter().enumerate() {
        out.extend_from_slice(&entry(d, (i + 1 < descs.len()).then_some(i + 1), index));
    }
    out
}

/// One `struct vring_desc`, chained (NEXT set) to its `link`, else to the position
/// `following`; `index` turns a position in the chain into the value `next` holds.
fn entry(d: &RawDesc, following: Option<usize>, index: impl Fn(usize) -> u16) -> [u8; DESC_SIZE] {
    let (flags, next) = match d.link.or(following) {
        Some(n) => (d.flags | VRING_DESC_F_NEXT, index(n)),
        None => (d.flags & !VRING_DESC_F_NEXT, 0),
    };
    let mut raw = [0u8; DESC_SIZE];
    raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
    raw[8..12].copy_from_slice(&d.len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    raw
}

/// One descriptor as the driver writes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawDesc {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) flags: u16,
    /// Index within the same chain that `next` should point at, if not the following one.
    pub(crate) link: Option<usize>,
}

pub(crate) struct DriverRing {
    size: u16,
    pub(crate) desc_gpa: u64,
    pub(crate) avail_gpa: u64,
    pub(crate) used_gpa: u64,
    /// Free descriptor indexes (a stack: recently freed descriptors are reused first).
    free: Vec<u16>,
    /// Our own copy of each chain's descriptor indexes, so that freeing a chain never
    /// trusts guest memory the device could have scribbled on.
    chains: Vec<Vec<u16>>,
    avail_idx: u16,
    kicked_idx: u16,
    last_used: u16,
    event_idx: bool,
}

impl DriverRing {
    pub(crate) fn new(base: u64, size: u16) -> io::Result<Self> {
        if size == 0 || !size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("queue size {size} is not a power of two"),
            ));
        }
        let (avail, used, _) = layout(base, size);
        Ok(DriverRing {
            size,
            desc_gpa: base,
            avail_gpa: avail,
            used_gpa: used,
            free: (0..size).rev().collect(),
            chains: vec![Vec::new(); usize::from(size)],
            avail_idx: 0,
            kicked_idx: 0,
            last_used: 0,
            event_idx: false,
        })
    }

    pub(crate) fn size(&self) -> u16 {
        self.size
    }

    pub(crate) fn set_event_idx(&mut self, on: bool) {
        self.event_idx = on;
    }

    pub(crate) fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Writes a chain into free descriptors and publishes it in the avail ring.
    /// Returns the head index.
    pub(crate) fn add_chain(&mut self, ram: &GuestRam, descs: &[RawDesc]) -> io::Result<u16> {
        if descs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a descriptor chain needs at least one descriptor",
            ));
        }
        if descs.len() > self.free.len() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "queue has {} free descriptors, the chain needs {}; wait for completions",
                    self.free.len(),
                    descs.len()
                ),
            ));
        }
        let at = self.free.len() - descs.len();
        let head = self.free[self.free.len() - 1];
        // Reuse the head's index Vec (empty while the head is free): no allocation.
        let mut idx = std::mem::take(&mut self.chains[usize::from(head)]);
        idx.clear();
        idx.extend(self.free.drain(at..).rev());
        self.chains[usize::from(head)] = idx;
        if let Err(e) = self.write_chain(ram, head, descs) {
            self.free_chain(head);
            return Err(e);
        }
        self.publish(ram, head)?;
        Ok(head)
    }

    /// Puts `head` in the next avail ring entry and publishes it. Publishing a chain
    /// already in flight again is what a hostile driver does.
    pub(crate) fn publish(&mut self, ram: &GuestRam, head: u16) -> io::Result<()> {
        let slot = self.avail_idx % self.size;
        ram.write(
            self.avail_gpa + 4 + 2 * u64::from(slot),
            &head.to_le_bytes(),
        )?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // Release: the descriptors and the ring entry are visible before the new idx.
        ram.mem()
            .store(
                self.avail_idx.to_le(),
                GuestAddress(self.avail_gpa + 2),
                Ordering::Release,
            )
            .map_err(|e| io::Error::other(format!("publishing avail idx: {e}")))
    }

    fn write_chain(&self, ram: &GuestRam, head: u16, descs: &[RawDesc]) -> io::Result<()> {
        let idx = &self.chains[usize::from(head)];
        // An out-of-range link points at descriptor 0 of the table.
        let index = |n: usize| idx.get(n).copied().unwrap_or(0);
        for (i, (d, at)) in descs.iter().zip(idx).enumerate() {
            let raw = entry(d, (i + 1 < descs.len()).then_some(i + 1), index);
            ram.write(self.desc_gpa + (DESC_SIZE * usize::from(*at)) as u64, &raw)?;
        }
        Ok(())
    }

    /// Whether the device asked to be kicked for what was published since the last
    /// kick (avail_event with EVENT_IDX, else the used ring's NO_NOTIFY flag). Marks the
    /// published entries as kicked.
    pub(crate) fn needs_kick(&mut self, ram: &GuestRam) -> io::Result<bool> {
        let old = self.kicked_idx;
        let new = self.avail_idx;
        self.kicked_idx = new;
        if old == new {
            return Ok(false);
        }
        // The avail idx store must be visible before we read the device's suppression
        // state, or both sides could decide the other one will act.
        fence(Ordering::SeqCst);
        if self.event_idx {
            let ev = self.load16(self.used_gpa + 4 + 8 * u64::from(self.size), ram)?;
            Ok(new.wrapping_sub(ev).wrapping_sub(1) < new.wrapping_sub(old))
        } else {
            let flags = self.load16(self.used_gpa, ram)?;
            Ok(flags & VRING_USED_F_NO_NOTIFY == 0)
        }
    }

    /// Takes the next used element, if the device published one: (id, len).
    pub(crate) fn pop_used(&mut self, ram: &GuestRam) -> io::Result<Option<(u32, u32)>> {
        let used_idx = self.load16(self.used_gpa + 2, ram)?;
        if used_idx == self.last_used {
            return Ok(None);
        }
        let slot = self.last_used % self.size;
        let mut elem = [0u8; 8];
        ram.read(self.used_gpa + 4 + 8 * u64::from(slot), &mut elem)?;
        self.last_used = self.last_used.wrapping_add(1);
        let id = u32::from_le_bytes([elem[0], elem[1], elem[2], elem[3]]);
        let len = u32::from_le_bytes([elem[4], elem[5], elem[6], elem[7]]);
        Ok(Some((id, len)))
    }

    /// How many used elements the device published that we have not taken; more than
    /// the ring size means the device moved used idx too far.
    pub(crate) fn used_pending(&self, ram: &GuestRam) -> io::Result<u16> {
        Ok(self
            .load16(self.used_gpa + 2, ram)?
            .wrapping_sub(self.last_used))
    }

    /// Asks the device to signal the call eventfd for the next used element (EVENT_IDX
    /// used_event); without EVENT_IDX the device always signals. The caller must check
    /// the used ring again after this before sleeping.
    pub(crate) fn arm_call(&self, ram: &GuestRam) -> io::Result<()> {
        if self.event_idx {
            ram.mem()
                .store(
                    self.last_used.to_le(),
                    GuestAddress(self.avail_gpa + 4 + 2 * u64::from(self.size)),
                    Ordering::Release,
                )
                .map_err(|e| io::Error::other(format!("writing used_event: {e}")))?;
            fence(Ordering::SeqCst);
        }
        Ok(())
    }

    /// Returns the descriptors of the chain headed by `head` to the free list.
    /// Returns false if `head` is not the head of a chain we made available.
    pub(crate) fn free_chain(&mut self, head: u16) -> bool {
        match self.chains.get_mut(usize::from(head)) {
            Some(c) if !c.is_empty() => {
                // Keep the Vec's capacity: the next chain on this head reuses it.
                self.free.extend(c.iter().rev());
                c.clear();
                true
            }
            _ => false,
        }
    }

    fn load16(&self, gpa: u64, ram: &GuestRam) -> io::Result<u16> {
        ram.mem()
            .load::<u16>(GuestAddress(gpa), Ordering::Acquire)
            .map(u16::from_le)
            .map_err(|e| io::Error::other(format!("reading ring at {gpa:#x}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_fits_a_page_for_64_entries() {
        let (avail, used, end) = layout(0, 64);
        assert_eq!(avail, 1024);
        assert_eq!(used % 4, 0);
        assert!(used >= avail + 134);
        assert!(end <= 4096);
        assert_eq!(ring_bytes(64), 4096);
    }
}
