//! Guest RAM: a memfd shared with the device, and a small allocator for buffers in it.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;

use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap,
};

/// Byte written into every device-writable area before it is handed to the device, so
/// that a test can tell "the device wrote zeros" from "the device wrote nothing".
pub const POISON: u8 = 0xa5;

/// Smallest allocation: 64 bytes keeps every buffer 8-byte aligned and the number of
/// size classes small.
const MIN_CLASS_SHIFT: u32 = 6;

/// The guest's RAM, seen from the driver side.
///
/// It is a memfd because vhost-user only works with memory the device can map: the fd
/// travels to the device in SET_MEM_TABLE and both processes then share the pages.
pub(crate) struct GuestRam {
    mem: GuestMemoryMmap<()>,
    size: u64,
    heap: Heap,
}

impl GuestRam {
    /// Creates `size` bytes of zeroed shared memory at guest address 0, with the first
    /// `reserved` bytes kept out of the buffer allocator (the rings live there).
    pub(crate) fn new(size: u64, reserved: u64) -> io::Result<Self> {
        if size <= reserved || size > isize::MAX as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("guest RAM size {size} must exceed the {reserved} bytes the rings need"),
            ));
        }
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd
        // or -1, and we check for -1.
        let fd = unsafe { libc::memfd_create(c"vhostsnd-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("memfd_create: {e}")));
        }
        // SAFETY: fd is a freshly created descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size)
            .map_err(|e| io::Error::new(e.kind(), format!("sizing guest RAM memfd: {e}")))?;
        let len = usize::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "guest RAM too large"))?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(0),
            len,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| io::Error::other(format!("mapping guest RAM: {e}")))?;
        Ok(GuestRam {
            mem,
            size,
            heap: Heap::new(reserved, size),
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Our own virtual address of guest address `gpa` (vhost-user ring addresses are
    /// given in the frontend's address space, not as guest addresses).
    pub(crate) fn host_addr(&self, gpa: u64) -> io::Result<u64> {
        self.mem
            .get_host_address(GuestAddress(gpa))
            .map(|p| p as u64)
            .map_err(|e| io::Error::other(format!("guest address {gpa:#x}: {e}")))
    }

    /// The one region (memfd-backed) of the RAM, for SET_MEM_TABLE.
    pub(crate) fn region(&self) -> io::Result<&GuestRegionMmap<()>> {
        self.mem
            .find_region(GuestAddress(0))
            .ok_or_else(|| io::Error::other("guest RAM has no region at 0"))
    }

    pub(crate) fn mem(&self) -> &GuestMemoryMmap<()> {
        &self.mem
    }

    pub(crate) fn write(&self, gpa: u64, data: &[u8]) -> io::Result<()> {
        self.mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|e| io::Error::other(format!("writing guest RAM at {gpa:#x}: {e}")))
    }

    pub(crate) fn read(&self, gpa: u64, buf: &mut [u8]) -> io::Result<()> {
        self.mem
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|e| io::Error::other(format!("reading guest RAM at {gpa:#x}: {e}")))
    }

    /// Fills `len` bytes at `gpa` with [`POISON`].
    pub(crate) fn poison(&self, gpa: u64, len: u64) -> io::Result<()> {
        const CHUNK: [u8; 512] = [POISON; 512];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK.len() as u64) as usize;
            self.write(gpa + done, &CHUNK[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    pub(crate) fn alloc(&mut self, len: u64) -> io::Result<Block> {
        self.heap.alloc(len)
    }

    pub(crate) fn free(&mut self, block: Block) {
        self.heap.free(block)
    }

    pub(crate) fn heap_in_use(&self) -> u64 {
        self.heap.in_use
    }
}

/// An allocated buffer area in guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) addr: u64,
    class: u32,
}

/// Power-of-two size classes over a bump region: O(1) per period, and a steady
/// workload (the same period size over and over) reuses the same few blocks forever,
/// so hours of I/O never exhaust the RAM.
struct Heap {
    bump: u64,
    end: u64,
    free: Vec<Vec<u64>>,
    in_use: u64,
}

impl Heap {
    fn new(start: u64, end: u64) -> Self {
        let align = 1 << MIN_CLASS_SHIFT;
        Heap {
            bump: (start + align - 1) & !(align - 1),
            end,
            free: Vec::new(),
            in_use: 0,
        }
    }

    fn class_of(len: u64) -> u32 {
        let len = len.max(1 << MIN_CLASS_SHIFT);
        64 - (len - 1).leading_zeros()
    }

    fn alloc(&mut self, len: u64) -> io::Result<Block> {
        let class = Self::class_of(len);
        let size = 1u64 << class;
        if let Some(addr) = self.free.get_mut(class as usize).and_then(Vec::pop) {
            self.in_use += size;
            return Ok(Block { addr, class });
        }
        // Blocks are aligned to their own size (up to 4 KiB) like a buddy allocator,
        // which keeps small buffers from straddling pages for no reason.
        let align = size.min(4096);
        let start = (self.bump + align - 1) & !(align - 1);
        if let Some(end) = start.checked_add(size).filter(|e| *e <= self.end) {
            self.bump = end;
            self.in_use += size;
            return Ok(Block { addr: start, class });
        }
        // Out of fresh memory: borrow a free block of a bigger class rather than fail.
        for bigger in (class + 1) as usize..self.free.len() {
            if let Some(addr) = self.free[bigger].pop() {
                self.in_use += 1 << bigger;
                return Ok(Block {
                    addr,
                    class: bigger as u32,
                });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "guest RAM exhausted: cannot allocate {len} bytes ({} bytes in flight); \
                 use a bigger mem_size",
                self.in_use
            ),
        ))
    }

    fn free(&mut self, block: Block) {
        let class = block.class as usize;
        if self.free.len() <= class {
            self.free.resize_with(class + 1, Vec::new);
        }
        self.free[class].push(block.addr);
        self.in_use -= 1 << block.class;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_reuses_blocks_and_reports_exhaustion() {
        let mut h = Heap::new(100, 100 + 64 * 1024);
        let a = h.alloc(1920).unwrap();
        assert_eq!(a.addr % 2048, 0);
        h.free(a);
        let b = h.alloc(2000).unwrap();
        assert_eq!(a, b);
        for _ in 0..100_000 {
            let x = h.alloc(1000).unwrap();
            h.free(x);
        }
        let big = h.alloc(32 * 1024).unwrap();
        assert!(h.alloc(32 * 1024).is_err());
        h.free(big);
        // A smaller request may take the free bigger block once fresh memory ran out.
        assert!(h.alloc(20 * 1024).is_ok());
        assert_eq!(Heap::class_of(1), 6);
        assert_eq!(Heap::class_of(64), 6);
        assert_eq!(Heap::class_of(65), 7);
    }
}
