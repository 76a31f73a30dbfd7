//! One period of a stream, played or recorded now: the one place a guest period is
//! completed, whoever's clock says it is due (the card's pacer, vhostsndsrc's
//! streaming thread, or a non-live vhostsndsrc as fast as downstream takes them).
//!
//! The period's audio is copied between guest memory and the host without the card
//! lock: a copy takes as long as the guest's period is large, and the control queue
//! must answer meanwhile. One period per stream is in copy at a time, so periods are
//! still completed in ring order.

use std::sync::MutexGuard;
use std::time::Instant;

use vm_memory::GuestAddressSpace;

use virtio_snd_wire as wire;

use virtio_snd_wire::formats::PcmParams;

use super::{Card, Direction, State};
use crate::gain;
use crate::io::IoMessage;
use crate::pcm::PcmState;

/// Where a period's audio goes or comes from while the card lock is released.
enum Transfer<'o> {
    /// Playback: guest memory appended to the element's buffer.
    Out(&'o mut Vec<u8>),
    /// Capture: the host's audio into guest memory.
    In(Vec<u8>),
}

impl Card {
    /// Plays or records one period of `dir` now, appending a playback period's audio to
    /// `out` if given. Returns the lock, the frames it covered and whether a guest
    /// period was completed; the caller then calls [`poll_ring`](Self::poll_ring),
    /// once for a batch of periods.
    pub(super) fn run_period<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        dir: Direction,
        out: Option<&mut Vec<u8>>,
    ) -> (MutexGuard<'a, State>, u64, bool) {
        st = self.copy_done(st, dir);
        if st.stream(dir).pending.is_empty() {
            // Kicks are only suppressed while something is queued, but one may be
            // on its way to the vring worker.
            self.poll_ring(&mut st, dir);
        }
        let s = st.stream(dir);
        let Some(params) = s.params.filter(|_| s.state == PcmState::Running) else {
            return (st, 0, false);
        };
        let frame = u64::from(params.frame_bytes());
        let period_frames = u64::from(params.period_bytes) / frame;
        s.periods += 1;
        // While QEMU has the ring stopped (the VM is paused) the guest's periods wait.
        let msg = if Self::ring_running(&st, dir) || Self::resume_in_place(&mut st, dir) {
            st.stream(dir).pending.pop_front()
        } else {
            None
        };
        let s = st.stream(dir);
        let Some(msg) = msg else {
            if dir == Direction::Capture {
                // The guest is late: keep the sink's audio in real time anyway.
                s.capture.skip((period_frames * frame) as usize, &params);
            }
            return (st, period_frames, false);
        };
        let frames = u64::from(msg.data_len()) / frame;
        let n = msg.data_len() as usize;
        let (latency, copy) = match (dir, out) {
            (Direction::Playback, out) => {
                let latency = (s.downstream_latency_ns as u128 * params.byte_rate() as u128
                    / 1_000_000_000) as u32;
                (latency, out.map(Transfer::Out))
            }
            (Direction::Capture, _) => {
                let mut buf = std::mem::take(&mut s.scratch);
                buf.clear();
                let latency = s.capture.fill(&mut buf, n, &params);
                (latency, Some(Transfer::In(buf)))
            }
        };
        let gain = st.mixer.gain(dir);
        let (mut st, msg, data_ok) = match copy {
            Some(copy) => match self.copy_unlocked(st, dir, msg, copy, &params, gain) {
                Ok(r) => r,
                Err(st) => return (st, 0, false),
            },
            None => (st, msg, true),
        };
        Self::complete(&st, dir, &msg, wire::S_OK, latency, data_ok);
        if dir == Direction::Playback {
            st.stream(dir).last_completion = Some(Instant::now());
        }
        (st, frames, true)
    }

    /// Copies `msg`'s audio with the card unlocked, scaled by the mixer's `gain` on
    /// the way, as a card's DAC or ADC applies its volume. Returns the lock again, the
    /// message and whether guest memory could be written, or `Err` when the message
    /// is no longer to be completed now: the stream was reset meanwhile (a disconnect,
    /// a device reset, a new driver's rings: it is forgotten), or QEMU stopped the
    /// ring (it waits for the ring again).
    #[allow(clippy::type_complexity)]
    fn copy_unlocked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        dir: Direction,
        msg: IoMessage,
        copy: Transfer<'_>,
        params: &PcmParams,
        gain: Option<f64>,
    ) -> Result<(MutexGuard<'a, State>, IoMessage, bool), MutexGuard<'a, State>> {
        let mem = st.mem.as_ref().map(|m| m.memory());
        let epoch = st.stream(dir).epoch;
        st.stream(dir).copying = true;
        drop(st);
        let n = msg.data_len() as usize;
        let (ok, played, scratch) = match copy {
            Transfer::Out(out) => {
                let at = out.len();
                out.resize(at + n, 0);
                let read = mem
                    .as_deref()
                    .is_some_and(|m| msg.data.read(m, &mut out[at..]).is_ok());
                if !read {
                    out.truncate(at);
                    out.extend_from_slice(&params.silence(n));
                } else if let Some(g) = gain {
                    gain::apply(params.format, &mut out[at..], g);
                }
                (true, Some((out, at)), None)
            }
            Transfer::In(mut buf) => {
                if let Some(g) = gain {
                    gain::apply(params.format, &mut buf, g);
                }
                let ok = mem
                    .as_deref()
                    .is_some_and(|m| msg.data.write(m, &buf).is_ok());
                (ok, None, Some(buf))
            }
        };
        let mut st = self.lock();
        let s = st.stream(dir);
        s.copying = false;
        if let Some(buf) = scratch {
            s.scratch = buf;
        }
        if s.copy_waiters > 0 {
            self.cond.notify_all();
        }
        let forgotten = st.stream(dir).epoch != epoch;
        if forgotten || !Self::ring_running(&st, dir) {
            if let Some((out, at)) = played {
                out.truncate(at);
            }
            if !forgotten {
                st.stream(dir).pending.push_front(msg);
            }
            return Err(st);
        }
        Ok((st, msg, ok))
    }

    /// Waits until no period of `dir` is in copy.
    pub(super) fn copy_done<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        dir: Direction,
    ) -> MutexGuard<'a, State> {
        while st.stream(dir).copying {
            st.stream(dir).copy_waiters += 1;
            st = self.wait(st);
            st.stream(dir).copy_waiters -= 1;
        }
        st
    }
}
