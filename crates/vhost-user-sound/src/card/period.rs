//! One period of a stream, played or recorded now: the one place a guest period is
//! completed, whoever's clock says it is due (the card's pacer, vhostsndsrc's
//! streaming thread, or a non-live vhostsndsrc as fast as downstream takes them).

use std::time::Instant;

use vm_memory::GuestAddressSpace;

use virtio_snd_wire as wire;

use super::{Card, Direction, State};

impl Card {
    /// Plays or records one period of `dir` now, appending a playback period's audio to
    /// `out` if given. Returns the frames it covered and whether a guest period was
    /// completed; the caller then calls [`poll_ring`](Self::poll_ring), once for a
    /// batch of periods.
    pub(super) fn run_period(
        &self,
        st: &mut State,
        dir: Direction,
        out: Option<&mut Vec<u8>>,
    ) -> (u64, bool) {
        if st.stream(dir).pending.is_empty() {
            // Kicks are only suppressed while something is queued, but one may be
            // on its way to the vring worker.
            self.poll_ring(st, dir);
        }
        let s = st.stream(dir);
        let Some(params) = s.params else {
            return (0, false);
        };
        let frame = u64::from(params.frame_bytes());
        let period_frames = u64::from(params.period_bytes) / frame;
        s.periods += 1;
        // While QEMU has the ring stopped (the VM is paused) the guest's periods wait.
        let msg = if Self::ring_running(st, dir) {
            st.stream(dir).pending.pop_front()
        } else {
            None
        };
        let s = st.stream(dir);
        let Some(msg) = msg else {
            if dir == Direction::Capture {
                // The guest is late: keep the sink's audio in real time anyway.
                s.capture.skip((period_frames * frame) as usize);
            }
            return (period_frames, false);
        };
        let frames = u64::from(msg.data_len()) / frame;
        let mem = st.mem.as_ref().map(|m| m.memory());
        let s = st.stream(dir);
        match dir {
            Direction::Playback => {
                let latency = (s.downstream_latency_ns as u128 * params.byte_rate() as u128
                    / 1_000_000_000) as u32;
                if let Some(out) = out {
                    let at = out.len();
                    let n = msg.data_len() as usize;
                    out.resize(at + n, 0);
                    let read = mem
                        .as_deref()
                        .is_some_and(|m| msg.data.read(m, &mut out[at..]).is_ok());
                    if !read {
                        out.truncate(at);
                        out.extend_from_slice(&params.silence(n));
                    }
                }
                Self::complete(st, dir, &msg, wire::S_OK, latency, None);
                st.stream(dir).last_completion = Some(Instant::now());
                (frames, true)
            }
            Direction::Capture => {
                let n = msg.data_len() as usize;
                let mut buf = std::mem::take(&mut s.scratch);
                buf.clear();
                let latency = s.capture.fill(&mut buf, n, &params);
                Self::complete(st, dir, &msg, wire::S_OK, latency, Some(&buf));
                st.stream(dir).scratch = buf;
                (frames, true)
            }
        }
    }
}
