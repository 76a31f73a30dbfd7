//! Seeded random control requests and descriptor chains on every queue, then a
//! valid sequence: every control request is answered and no chain is lost.

mod common;

use common::*;
use virtio_snd_frontend::Desc;
use virtio_snd_wire::*;

/// xorshift64*, fixed seed: the same garbage every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_garbage_then_a_valid_sequence() {
    let (rig, mut g) = Rig::new("garbage");
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // Writable descriptors only ever point here, so the rings stay intact.
    const SCRATCH: u64 = 64 * 1024;
    let scratch = g.alloc_ram(SCRATCH).unwrap();
    let codes = R_CODES;
    for i in 0..200 {
        // A garbage control request: random length, usually a known code and a small
        // stream id, random everything else.
        let len = rng.below(81) as usize;
        let mut req: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 4 && rng.below(4) != 0 {
            let code = codes[rng.below(codes.len() as u64) as usize];
            req[..4].copy_from_slice(&code.to_le_bytes());
            if len >= 8 {
                req[4..8].copy_from_slice(&(rng.below(3) as u32).to_le_bytes());
            }
            if rng.below(2) == 0 {
                // Exactly the right size for some request.
                let sizes = [8usize, 16, 24];
                req.truncate(sizes[rng.below(3) as usize].min(len));
            }
        }
        let resp_len = rng.below(300) as u32;
        let r = g
            .control(&req, resp_len)
            .unwrap_or_else(|e| panic!("iteration {i}: control request unanswered: {e}"));
        if resp_len < 4 {
            assert_eq!(r.used_len, 0, "iteration {i}");
        } else {
            assert!(r.used_len >= 4 && r.used_len <= resp_len, "iteration {i}");
            assert!(
                [S_OK, S_BAD_MSG, S_NOT_SUPP].contains(&r.status()),
                "iteration {i}: status {:#x}",
                r.status()
            );
        }

        // A random chain on a random queue.
        let queue = [QUEUE_CONTROL, QUEUE_TX, QUEUE_RX][rng.below(3) as usize];
        let n = 1 + rng.below(6) as usize;
        let mut descs = Vec::with_capacity(n);
        for j in 0..n {
            let writable = rng.below(2) == 0;
            let len = match rng.below(4) {
                0 => rng.below(16) as u32,
                1 => rng.below(4096) as u32,
                2 => [4, 8, PERIOD][rng.below(3) as usize],
                _ => rng.next() as u32,
            };
            let addr = match rng.below(8) {
                // Outside RAM, or overflowing.
                0 => g.ram_size() + rng.below(1 << 20),
                1 => u64::MAX - rng.below(64),
                _ => scratch + rng.below(SCRATCH),
            };
            let mut d = if writable {
                // Inside the scratch area, or outside RAM altogether.
                if addr >= scratch && addr < scratch + SCRATCH {
                    let off = addr - scratch;
                    Desc::writable(addr, len.min((SCRATCH - off) as u32))
                } else {
                    Desc::writable(addr, len)
                }
            } else {
                Desc::readable(addr, len)
            };
            if rng.below(10) == 0 {
                d = d.with_link(rng.below(n as u64) as usize);
            }
            if j == 0 && queue != QUEUE_CONTROL && rng.below(2) == 0 {
                // A plausible xfer header at the start of the scratch area.
                let stream = rng.below(3) as u32;
                g.write_ram(scratch, &stream.to_le_bytes()).unwrap();
                d = Desc::readable(scratch, 4);
            }
            descs.push(d);
        }
        let t = g.submit_descs(queue, &descs).unwrap();
        if queue == QUEUE_CONTROL {
            let c = g
                .wait_token(t, T)
                .unwrap_or_else(|e| panic!("iteration {i}: control chain not returned: {e}"));
            assert!(c.used_len <= SCRATCH as u32, "iteration {i}");
        }
        // Accepted I/O waits for its period; a RELEASE now and then returns it all.
        if i % 10 == 9 {
            for s in [PLAY, CAP] {
                let _ = g.stop(s).unwrap();
                assert_eq!(g.release(s).unwrap(), S_OK, "iteration {i}");
            }
            let _ = g.try_io(QUEUE_TX).unwrap();
            let _ = g.try_io(QUEUE_RX).unwrap();
            assert_eq!(g.in_flight(QUEUE_TX), 0, "iteration {i}: tx chain lost");
            assert_eq!(g.in_flight(QUEUE_RX), 0, "iteration {i}: rx chain lost");
            assert_eq!(g.in_flight(QUEUE_CONTROL), 0);
        }
    }
    g.probe().expect("probe after the garbage");
    alive(&mut g);
    play_sequence(&mut g, &rig.tl);
}
