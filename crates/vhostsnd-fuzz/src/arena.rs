//! Guest buffers with guard bytes around them, and a shadow copy of everything the
//! device may only read, so that after a batch any byte the device wrote where it
//! must not is found.
//!
//! The arena is one allocation in guest RAM, cut once per session into fixed slots:
//! tables, readable buffers and writable buffers each have their own slots of three
//! sizes, and a slot never changes pool or size. That is what keeps the check exact
//! even though the guest is hostile: a stale descriptor left in a ring (a link to
//! descriptor 0, a forged index) still points at a buffer of its own pool and of at
//! most its slot's size, so the device may write through it only into writable
//! slots, never into a guard or a readable buffer.

use std::io;

use virtio_snd_frontend::{FakeGuest, POISON};

/// Guard bytes on each side of every buffer.
pub const GUARD: u64 = 64;
/// Buffer sizes of the slot classes.
pub const CLASSES: [u32; 3] = [64, 1024, 16 * 1024];
/// The largest guest buffer one descriptor can have.
pub const MAX_BUF: u32 = CLASSES[2];
/// Slots per class, for readable and for writable buffers: at most 4 queues of 64
/// entries are in flight, most of them small.
const SLOTS: [usize; 3] = [384, 96, 24];
/// Table slots: 64 entries each.
pub const TABLE_BYTES: u32 = 64 * 16;
const TABLE_SLOTS: usize = 96;
/// Zeros after the last table: a table descriptor that claims more than its table
/// reads at most this far, and finds there only descriptors of 0 bytes.
const TABLE_TAIL: u64 = 2 * TABLE_BYTES as u64;
/// Guarded bytes at the very end of guest RAM, where buffers that run past the end
/// of RAM would be written.
pub const TAIL_GUARD: u64 = 4096;
/// Slots up to this size are read back whole, guard and all, in one go.
const READ_WHOLE: u32 = 4096;

/// Which pool a buffer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Table,
    Read,
    Write,
}

/// One slot handed out for a chain; returned with [`Arena::free`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub addr: u64,
    pool: Pool,
    class: usize,
    index: u32,
}

/// Equal slots, each buffer followed by a guard, the first one preceded by one.
struct Class {
    name: &'static str,
    /// Guest address of the first slot's buffer.
    base: u64,
    size: u32,
    count: u32,
    free: Vec<u32>,
    /// Readable pools: how many bytes of each slot were ever filled this session.
    hi: Vec<u32>,
    writable: bool,
}

impl Class {
    fn stride(&self) -> u64 {
        u64::from(self.size) + GUARD
    }

    fn slot(&self, i: u32) -> u64 {
        self.base + u64::from(i) * self.stride()
    }

    fn end(&self) -> u64 {
        self.slot(self.count)
    }
}

/// The guard pattern: every byte has its top bit set, so any 8 of them read as an
/// address far outside guest RAM (a table overrun finds only refused descriptors),
/// and it depends on the position, so bytes moved around are noticed.
pub fn guard_byte(gpa: u64) -> u8 {
    0x80 | (gpa.wrapping_mul(0x9d) >> 3) as u8
}

fn guard(gpa: u64, len: u64) -> Vec<u8> {
    (gpa..gpa + len).map(guard_byte).collect()
}

pub struct Arena {
    base: u64,
    ram_size: u64,
    tables: Class,
    read: Vec<Class>,
    write: Vec<Class>,
    /// What the readable slots must hold (zero where nothing was ever put: guest
    /// RAM starts zeroed). Allocated zeroed, so untouched pages cost nothing.
    shadow: Vec<u8>,
    scratch: Vec<u8>,
}

impl Arena {
    /// Takes the arena out of `g`'s RAM for the rest of the session and writes the
    /// guards (and the one at the end of RAM).
    pub fn new(g: &mut FakeGuest) -> io::Result<Arena> {
        let mut off = 0;
        let mut carve = |name, count: usize, size: u32, writable, gap: u64| {
            let c = Class {
                name,
                base: off + GUARD,
                size,
                count: count as u32,
                free: (0..count as u32).rev().collect(),
                hi: if writable { Vec::new() } else { vec![0; count] },
                writable,
            };
            off = c.end() + gap;
            c
        };
        let tables = carve("table", TABLE_SLOTS, TABLE_BYTES, false, TABLE_TAIL);
        let read: Vec<Class> = CLASSES
            .iter()
            .zip(SLOTS)
            .map(|(size, n)| carve("readable", n, *size, false, 0))
            .collect();
        let write: Vec<Class> = CLASSES
            .iter()
            .zip(SLOTS)
            .map(|(size, n)| carve("writable", n, *size, true, 0))
            .collect();
        let len = off;
        let base = g.alloc_ram(len)?;
        let ram_size = g.ram_size();
        if base + len + TAIL_GUARD > ram_size {
            return Err(io::Error::other(format!(
                "guest RAM of {ram_size} bytes too small for a {len}-byte arena and the tail guard"
            )));
        }
        let mut arena = Arena {
            base,
            ram_size,
            tables: shift(tables, base),
            read: read.into_iter().map(|c| shift(c, base)).collect(),
            write: write.into_iter().map(|c| shift(c, base)).collect(),
            shadow: vec![0; len as usize],
            scratch: Vec::new(),
        };
        for c in arena.classes() {
            g.write_ram(c.base - GUARD, &guard(c.base - GUARD, GUARD))?;
            for i in 0..c.count {
                let at = c.slot(i) + u64::from(c.size);
                g.write_ram(at, &guard(at, GUARD))?;
            }
        }
        let tail = ram_size - TAIL_GUARD;
        g.write_ram(tail, &guard(tail, TAIL_GUARD))?;
        arena.scratch.reserve(MAX_BUF as usize);
        Ok(arena)
    }

    fn classes(&self) -> impl Iterator<Item = &Class> {
        std::iter::once(&self.tables)
            .chain(self.read.iter())
            .chain(self.write.iter())
    }

    /// A slot of `pool` that holds `len` bytes, or None when they are all in use.
    pub fn alloc(&mut self, pool: Pool, len: u32) -> Option<Slot> {
        let (classes, class): (&mut [Class], usize) = match pool {
            Pool::Table => (std::slice::from_mut(&mut self.tables), 0),
            Pool::Read => (&mut self.read, CLASSES.iter().position(|c| len <= *c)?),
            Pool::Write => (&mut self.write, CLASSES.iter().position(|c| len <= *c)?),
        };
        // A bigger slot will do when the right size has run out.
        for (k, c) in classes.iter_mut().enumerate().skip(class) {
            if let Some(index) = c.free.pop() {
                return Some(Slot {
                    addr: c.slot(index),
                    pool,
                    class: k,
                    index,
                });
            }
        }
        None
    }

    fn class_mut(&mut self, slot: Slot) -> &mut Class {
        match slot.pool {
            Pool::Table => &mut self.tables,
            Pool::Read => &mut self.read[slot.class],
            Pool::Write => &mut self.write[slot.class],
        }
    }

    pub fn free(&mut self, slot: Slot) {
        self.class_mut(slot).free.push(slot.index);
    }

    /// Puts device-readable bytes into a readable or table slot (and the shadow).
    pub fn fill(&mut self, g: &mut FakeGuest, slot: Slot, bytes: &[u8]) -> io::Result<()> {
        g.write_ram(slot.addr, bytes)?;
        let at = (slot.addr - self.base) as usize;
        self.shadow[at..at + bytes.len()].copy_from_slice(bytes);
        let c = self.class_mut(slot);
        if let Some(hi) = c.hi.get_mut(slot.index as usize) {
            *hi = (*hi).max(bytes.len() as u32);
        }
        Ok(())
    }

    /// Poisons `len` bytes of a writable slot, so that what the device wrote shows.
    pub fn poison(&mut self, g: &mut FakeGuest, slot: Slot, len: u32) -> io::Result<()> {
        self.scratch.clear();
        self.scratch.resize(len as usize, POISON);
        g.write_ram(slot.addr, &self.scratch)
    }

    /// Compares guest RAM with what the device may not have changed: every guard,
    /// every readable buffer and table, and the end of RAM. Returns where the first
    /// difference is.
    pub fn verify(&self, g: &FakeGuest) -> io::Result<Result<(), String>> {
        for c in self.classes() {
            if let Some(e) = self.check_guard(g, c, c.base - GUARD, "before the first")? {
                return Ok(Err(e));
            }
            for i in 0..c.count {
                let at = c.slot(i);
                let after = at + u64::from(c.size);
                let filled = c.hi.get(i as usize).copied().unwrap_or(0);
                if !c.writable && filled > 0 && c.size <= READ_WHOLE {
                    let ram = g.read_ram(at, c.stride() as usize)?;
                    let (buf, grd) = ram.split_at(c.size as usize);
                    if let Some(e) = self.compare(c, i, buf)? {
                        return Ok(Err(e));
                    }
                    if let Some(k) =
                        (0..GUARD as usize).find(|k| grd[*k] != guard_byte(after + *k as u64))
                    {
                        return Ok(Err(self.wrote(
                            after + k as u64,
                            grd[k],
                            format!(
                                "in the guard after {} buffer {i} ({}-byte slots)",
                                c.name, c.size
                            ),
                        )));
                    }
                    continue;
                }
                if filled > 0 {
                    let ram = g.read_ram(at, filled as usize)?;
                    if let Some(e) = self.compare(c, i, &ram)? {
                        return Ok(Err(e));
                    }
                }
                if let Some(e) = self.check_guard(g, c, after, &format!("after {i}"))? {
                    return Ok(Err(e));
                }
            }
        }
        let tail_at = self.ram_size - TAIL_GUARD;
        let tail = g.read_ram(tail_at, TAIL_GUARD as usize)?;
        if let Some(i) = (0..tail.len()).find(|i| tail[*i] != guard_byte(tail_at + *i as u64)) {
            return Ok(Err(format!(
                "the device wrote {:#04x} at guest address {:#x}, {} bytes before the end of \
                 guest RAM, where no descriptor may write (a buffer that runs past the end of \
                 RAM was written in part)",
                tail[i],
                tail_at + i as u64,
                TAIL_GUARD - i as u64
            )));
        }
        Ok(Ok(()))
    }

    fn check_guard(
        &self,
        g: &FakeGuest,
        c: &Class,
        at: u64,
        which: &str,
    ) -> io::Result<Option<String>> {
        let ram = g.read_ram(at, GUARD as usize)?;
        Ok((0..ram.len())
            .find(|k| ram[*k] != guard_byte(at + *k as u64))
            .map(|k| {
                self.wrote(
                    at + k as u64,
                    ram[k],
                    format!(
                        "in the guard {which} {} buffer ({}-byte slots)",
                        c.name, c.size
                    ),
                )
            }))
    }

    /// Slot `i` of readable class `c` as read back (a prefix of it) against the shadow.
    fn compare(&self, c: &Class, i: u32, ram: &[u8]) -> io::Result<Option<String>> {
        let at = c.slot(i);
        let off = (at - self.base) as usize;
        let shadow = &self.shadow[off..off + ram.len()];
        Ok(first_diff(ram, shadow).map(|k| {
            format!(
                "the device wrote {:#04x} (expected {:#04x}) at guest address {:#x}, byte {k} \
                 of device-readable {} buffer {i} ({}-byte slots)",
                ram[k],
                shadow[k],
                at + k as u64,
                c.name,
                c.size
            )
        }))
    }

    fn wrote(&self, gpa: u64, found: u8, where_: String) -> String {
        format!(
            "the device wrote {found:#04x} (expected {:#04x}) at guest address {gpa:#x}, {where_}",
            guard_byte(gpa)
        )
    }
}

/// A class carved at arena offsets, moved to the arena's guest address.
fn shift(mut c: Class, base: u64) -> Class {
    c.base += base;
    c
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}
