//! One guest connection under the fuzzer: chains built from typed inputs in guarded
//! buffers, their completions checked as they come, and the end-of-session checks.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use virtio_snd_frontend::{Completion, Desc, FakeGuest, FakeGuestOptions, Token};
use virtio_snd_wire::*;

use crate::arena::{Arena, Pool, Slot, TABLE_BYTES};
use crate::input::{Buf, Chain, Connect, DescSpec, Hostile};

/// Guest RAM per session: the arena, the frontend's own buffers and the rings, with
/// room to spare before the tail guard.
const MEM_SIZE: u64 = 4 << 20;
/// How long a control request may take before the device counts as hung. The 100 ms
/// bound is for the end-of-batch check; single requests get Linux's own timeout.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(1);
const TAINTED_TIMEOUT: Duration = Duration::from_millis(10);

/// What a completion is checked against besides its size.
#[derive(Clone, Copy)]
enum Expect {
    Nothing,
    /// A plain control request: a status code at the start of this response buffer.
    Control {
        resp: Slot,
        resp_len: u32,
    },
    /// A plain period on its own queue: a status in this 8-byte buffer.
    Io {
        status: Slot,
        rx: bool,
        data_len: u32,
    },
}

struct Record {
    /// The input of the batch that submitted the chain, for the failure message.
    input: usize,
    slots: Vec<Slot>,
    writable: u64,
    expect: Expect,
}

/// Counters over a run, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub chains: u64,
    pub completions: u64,
    /// Well-formed requests the device accepted (S_OK), and well-formed periods it
    /// played or recorded (S_OK): how deep into its states the inputs got.
    pub requests_ok: u64,
    pub periods_ok: u64,
    /// Inputs that could not be applied (ring or arena full, nothing to resume).
    pub skipped: u64,
    pub connections: u64,
    pub tainted: u64,
}

pub struct Session {
    g: FakeGuest,
    arena: Arena,
    inflight: HashMap<Token, Record>,
    /// A forged avail index or ring base: the device may complete chains the
    /// frontend never made, so neither completions nor memory can be checked.
    pub tainted: bool,
    pub paused: Option<[u16; NUM_QUEUES]>,
    /// A chain linked out of itself: the device may since have written through
    /// another chain's descriptors into any writable buffer, so what writable buffers
    /// hold proves nothing any more (their sizes in the used ring still do).
    stray: bool,
    auto_kick: bool,
    pub connect: Connect,
    /// The input being applied.
    pub input: usize,
}

impl Session {
    pub fn open(path: &Path, c: Connect) -> io::Result<Session> {
        let opts = FakeGuestOptions {
            mem_size: MEM_SIZE,
            queue_size: c.queue_size,
            event_idx: c.event_idx,
            indirect: c.indirect,
            event_buffers: c.event_buffers,
            control_timeout: CONTROL_TIMEOUT,
            ..FakeGuestOptions::default()
        };
        let mut g = FakeGuest::connect_with(path, Duration::from_secs(5), opts)
            .map_err(|e| io::Error::new(e.kind(), format!("connecting a guest: {e}")))?;
        let arena = Arena::new(&mut g)?;
        Ok(Session {
            g,
            arena,
            inflight: HashMap::new(),
            tainted: false,
            paused: None,
            stray: false,
            auto_kick: true,
            connect: c,
            input: 0,
        })
    }

    pub fn guest(&mut self) -> &mut FakeGuest {
        &mut self.g
    }

    /// Puts `chain` on `queue`. Returns None when it does not fit right now (ring or
    /// arena full), which is no error.
    pub fn submit(
        &mut self,
        queue: usize,
        chain: &Chain,
        stats: &mut Stats,
    ) -> Result<Option<Token>, String> {
        let mut slots = Vec::new();
        let mut writable = 0;
        let built = self.build_all(&chain.descs, &mut slots, &mut writable);
        let descs = match built {
            Ok(Some(d)) => d,
            Ok(None) => {
                self.release(slots);
                stats.skipped += 1;
                return Ok(None);
            }
            Err(e) => return Err(format!("building a chain: {e}")),
        };
        let expect = if chain.plain {
            expect_of(queue, chain, &slots)
        } else {
            Expect::Nothing
        };
        match self.g.submit_descs(queue, &descs) {
            Ok(t) => {
                stats.chains += 1;
                self.inflight.insert(
                    t,
                    Record {
                        input: self.input,
                        slots,
                        writable,
                        expect,
                    },
                );
                Ok(Some(t))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::InvalidInput
                ) =>
            {
                self.release(slots);
                stats.skipped += 1;
                Ok(None)
            }
            Err(e) => {
                self.release(slots);
                Err(format!("submitting a chain on queue {queue}: {e}"))
            }
        }
    }

    fn release(&mut self, slots: Vec<Slot>) {
        for s in slots {
            self.arena.free(s);
        }
    }

    fn build_all(
        &mut self,
        specs: &[DescSpec],
        slots: &mut Vec<Slot>,
        writable: &mut u64,
    ) -> io::Result<Option<Vec<Desc>>> {
        let mut out = Vec::with_capacity(specs.len());
        for d in specs {
            // A link out of the chain (or table) leads to descriptors of someone
            // else's, whose writable size is anyone's guess.
            if d.link.is_some_and(|l| l >= specs.len()) {
                *writable = u64::MAX;
                self.stray = true;
            }
            match self.build(d, slots, writable)? {
                Some(desc) => out.push(desc),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    fn build(
        &mut self,
        d: &DescSpec,
        slots: &mut Vec<Slot>,
        writable: &mut u64,
    ) -> io::Result<Option<Desc>> {
        let ram = self.g.ram_size();
        let mut desc = match &d.buf {
            Buf::Guest { head, len, fill } => {
                let pool = if d.writable { Pool::Write } else { Pool::Read };
                let Some(slot) = self.arena.alloc(pool, *len) else {
                    return Ok(None);
                };
                slots.push(slot);
                if d.writable {
                    self.arena.poison(&mut self.g, slot, *len)?;
                    *writable = writable.saturating_add(u64::from(*len));
                    Desc::writable(slot.addr, *len)
                } else {
                    let bytes = content(head, *len, *fill);
                    self.arena.fill(&mut self.g, slot, &bytes)?;
                    Desc::readable(slot.addr, *len)
                }
            }
            Buf::Hostile { at, len } => {
                let (addr, len) = match *at {
                    Hostile::PastEnd(k) => (ram + k, *len),
                    // Always past the end: a shorter buffer would lie wholly in RAM,
                    // in the tail guard, where the device may write.
                    Hostile::Straddle(k) => (ram - u64::from(k), (*len).max(k + 1)),
                    Hostile::Overflow(k) => (u64::MAX - k, *len),
                };
                if d.writable {
                    *writable = writable.saturating_add(u64::from(len));
                    Desc::writable(addr, len)
                } else {
                    Desc::readable(addr, len)
                }
            }
            // Never writable: the device could then write into the rings.
            Buf::Anywhere { offset, len } => Desc::readable(offset % ram, *len),
            Buf::Table {
                entries,
                len_adjust,
            } => {
                let Some(inner) = self.build_all(entries, slots, writable)? else {
                    return Ok(None);
                };
                // A table that claims more than its entries ends in an older table's
                // entries (an empty one starts there): anyone's descriptors.
                if *len_adjust > 0 {
                    *writable = u64::MAX;
                    self.stray = true;
                }
                let mut bytes = Desc::table_bytes(&inner);
                bytes.truncate(TABLE_BYTES as usize);
                let Some(slot) = self.arena.alloc(Pool::Table, TABLE_BYTES) else {
                    return Ok(None);
                };
                slots.push(slot);
                self.arena.fill(&mut self.g, slot, &bytes)?;
                let len =
                    (bytes.len() as i64 + i64::from(*len_adjust)).clamp(0, i64::from(u32::MAX));
                let mut t = Desc::indirect(slot.addr, len as u32);
                t.writable = d.writable;
                t
            }
        };
        desc.extra_flags |= d.extra_flags;
        desc.link = d.link;
        Ok(Some(desc))
    }

    /// Takes every completion the device published and checks it.
    pub fn harvest(&mut self, stats: &mut Stats) -> Result<(), String> {
        for q in 0..NUM_QUEUES {
            let done = self
                .g
                .try_io(q)
                .map_err(|e| format!("collecting completions: {e}"))?;
            for c in done {
                self.complete(c, stats)?;
            }
        }
        Ok(())
    }

    /// Sends a control chain and, unless the VM is paused, waits for its answer.
    pub fn control(&mut self, chain: &Chain, stats: &mut Stats) -> Result<(), String> {
        let Some(t) = self.submit(QUEUE_CONTROL, chain, stats)? else {
            return Ok(());
        };
        if !self.auto_kick {
            self.g
                .flush(QUEUE_CONTROL)
                .map_err(|e| format!("kicking the control queue: {e}"))?;
        }
        if self.paused.is_some() {
            return Ok(());
        }
        // A tainted session may have stopped the control queue for good: waiting
        // long for it would only slow the run down.
        let timeout = if self.tainted {
            TAINTED_TIMEOUT
        } else {
            CONTROL_TIMEOUT
        };
        match self.g.wait_token(t, timeout) {
            Ok(c) => self.complete(c, stats),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(format!(
                "control request unanswered after {timeout:?} ({} control chains in flight, \
                 {} kicks on the control queue)",
                self.g.in_flight(QUEUE_CONTROL),
                self.g.kicks(QUEUE_CONTROL)
            )),
            Err(e) => Err(format!("waiting for a control answer: {e}")),
        }
    }

    fn complete(&mut self, c: Completion, stats: &mut Stats) -> Result<(), String> {
        // The frontend's own typed requests are not ours to check.
        let Some(rec) = self.inflight.remove(&c.token) else {
            return Ok(());
        };
        stats.completions += 1;
        let res = self
            .check(&c, &rec, stats)
            .map_err(|e| format!("{e} (the chain of input {})", rec.input));
        self.release(rec.slots);
        res
    }

    fn check(&self, c: &Completion, rec: &Record, stats: &mut Stats) -> Result<(), String> {
        if u64::from(c.used_len) > rec.writable {
            return Err(format!(
                "used.len {} on queue {} exceeds the {} writable bytes of the chain",
                c.used_len, c.queue, rec.writable
            ));
        }
        let word = |slot: Slot| -> Result<u32, String> {
            let b = self
                .g
                .read_ram(slot.addr, 4)
                .map_err(|e| format!("reading a status: {e}"))?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        match rec.expect {
            Expect::Nothing => Ok(()),
            Expect::Control { resp, resp_len } => {
                if resp_len < 4 {
                    return Ok(());
                }
                if c.used_len < 4 {
                    return Err(format!(
                        "a well-formed control chain with a {resp_len}-byte response came \
                         back with used.len {}",
                        c.used_len
                    ));
                }
                if self.stray {
                    return Ok(());
                }
                let st = word(resp)?;
                if ![S_OK, S_BAD_MSG, S_NOT_SUPP, S_IO_ERR].contains(&st) {
                    return Err(format!("control status {st:#x} is no virtio-snd status"));
                }
                stats.requests_ok += u64::from(st == S_OK);
                Ok(())
            }
            Expect::Io {
                status,
                rx,
                data_len,
            } => {
                let max = if rx { 8 + data_len } else { 8 };
                if c.used_len < 8 || c.used_len > max {
                    return Err(format!(
                        "a well-formed {} period of {data_len} bytes came back with used.len {}",
                        if rx { "capture" } else { "playback" },
                        c.used_len
                    ));
                }
                if self.stray {
                    return Ok(());
                }
                let st = word(status)?;
                if ![S_OK, S_BAD_MSG, S_IO_ERR].contains(&st) {
                    return Err(format!("I/O status {st:#x} is no virtio-snd I/O status"));
                }
                stats.periods_ok += u64::from(st == S_OK);
                Ok(())
            }
        }
    }

    /// Waits until the device answered every control request in flight (those
    /// queued while the VM was paused come after the resume).
    pub fn settle_control(&mut self, stats: &mut Stats) -> Result<(), String> {
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        while self.g.in_flight(QUEUE_CONTROL) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{} control requests unanswered {CONTROL_TIMEOUT:?} after the VM resumed",
                    self.g.in_flight(QUEUE_CONTROL)
                ));
            }
            let done = self
                .g
                .wait_io(QUEUE_CONTROL, left)
                .map_err(|e| format!("waiting for control answers: {e}"))?;
            for c in done {
                self.complete(c, stats)?;
            }
        }
        Ok(())
    }

    pub fn set_auto_kick(&mut self, on: bool) {
        self.auto_kick = on;
        self.g.set_auto_kick(on);
    }

    /// Notifies every queue of what was published without a kick.
    pub fn flush_all(&mut self) -> io::Result<()> {
        for q in 0..NUM_QUEUES {
            self.g.flush(q)?;
        }
        Ok(())
    }

    /// The driver forgot everything in flight (a reboot): so does the arena.
    pub fn forget_inflight(&mut self) {
        let recs: Vec<Record> = self.inflight.drain().map(|(_, r)| r).collect();
        for r in recs {
            self.release(r.slots);
        }
    }

    /// A valid PCM_INFO, answered within `limit` (a second try is allowed, so that a
    /// host scheduling hiccup is not taken for a device that is stuck). Returns the
    /// slower time seen.
    pub fn alive(&mut self, limit: Duration) -> Result<Duration, String> {
        let mut worst = Duration::ZERO;
        for attempt in 0..2 {
            let t0 = Instant::now();
            let (st, infos) = self
                .g
                .pcm_info(0, 2)
                .map_err(|e| format!("PCM_INFO unanswered: {e}"))?;
            let took = t0.elapsed();
            worst = worst.max(took);
            let dirs: Vec<u8> = infos.iter().map(|i| i.direction).collect();
            if st != S_OK || dirs != [D_OUTPUT, D_INPUT] {
                return Err(format!(
                    "PCM_INFO answered status {st:#x} with directions {dirs:?}"
                ));
            }
            if took <= limit {
                return Ok(worst);
            }
            if attempt == 1 {
                return Err(format!(
                    "PCM_INFO took {took:?} twice in a row (limit {limit:?})"
                ));
            }
        }
        Ok(worst)
    }

    /// Guards, readable buffers and the end of RAM as the session left them.
    pub fn verify_memory(&self) -> Result<(), String> {
        match self.arena.verify(&self.g) {
            Ok(r) => r,
            Err(e) => Err(format!("reading guest RAM back: {e}")),
        }
    }
}

/// What a plain chain's completion must look like, where its shape says.
fn expect_of(queue: usize, chain: &Chain, slots: &[Slot]) -> Expect {
    let lens: Vec<(bool, u32)> = chain
        .descs
        .iter()
        .map(|d| match &d.buf {
            Buf::Guest { len, .. } => (d.writable, *len),
            _ => (d.writable, 0),
        })
        .collect();
    // A plain chain has one guest buffer per descriptor, in order.
    if slots.len() != lens.len() {
        return Expect::Nothing;
    }
    match (queue, lens.as_slice()) {
        (QUEUE_CONTROL, [(false, _), (true, resp_len)]) => Expect::Control {
            resp: slots[1],
            resp_len: *resp_len,
        },
        (QUEUE_TX, [(false, 4), (false, data_len), (true, 8)]) => Expect::Io {
            status: slots[2],
            rx: false,
            data_len: *data_len,
        },
        (QUEUE_TX, [(false, 4), (true, 8)]) => Expect::Io {
            status: slots[1],
            rx: false,
            data_len: 0,
        },
        (QUEUE_RX, [(false, 4), (true, data_len), (true, 8)]) => Expect::Io {
            status: slots[2],
            rx: true,
            data_len: *data_len,
        },
        (QUEUE_RX, [(false, 4), (true, 8)]) => Expect::Io {
            status: slots[1],
            rx: true,
            data_len: 0,
        },
        _ => Expect::Nothing,
    }
}

/// A readable buffer's bytes: `head`, then a pattern that differs per input.
fn content(head: &[u8], len: u32, fill: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(len as usize);
    v.extend_from_slice(&head[..head.len().min(len as usize)]);
    let mut x = fill | 1;
    while v.len() < len as usize {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.extend_from_slice(&x.to_le_bytes()[..(len as usize - v.len()).min(4)]);
    }
    v
}
