//! Drawing inputs: well-formed messages most of the time (so that the device gets
//! deep into its states), laid out in descriptors correctly or not, and a share of
//! everything a hostile guest or VMM can send.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use vhost_user_sound::{PcmRequest, PcmState};
use virtio_snd_wire::formats::{CHANNELS_MAX, CHANNELS_MIN, FORMATS, RATES};
use virtio_snd_wire::*;

use crate::arena::{MAX_BUF, TABLE_BYTES};
use crate::input::{Action, Buf, Chain, Connect, DescSpec, Hostile, Part};
use crate::vhost_user;

/// VRING_DESC_F_INDIRECT.
pub const F_INDIRECT: u16 = 4;
/// Control request codes the spec does not define.
const UNKNOWN_CODES: [u32; 3] = [0, 0x0106, 0x0201];
/// The control-element requests (the fuzzed device offers its controls).
const CTL_CODES: [u32; 7] = [
    ctl::R_CTL_INFO,
    ctl::R_CTL_ENUM_ITEMS,
    ctl::R_CTL_READ,
    ctl::R_CTL_WRITE,
    ctl::R_CTL_TLV_READ,
    ctl::R_CTL_TLV_WRITE,
    ctl::R_CTL_TLV_COMMAND,
];

/// The generator's idea of a stream, from the requests it drew (not from the
/// device's answers, which would make inputs depend on timing).
#[derive(Clone, Copy)]
struct StreamModel {
    frame: u32,
    period: u32,
    /// The state the stream would be in if the device took every plain request
    /// the way its state machine says.
    state: PcmState,
}

pub struct Generator {
    rng: Xoshiro256PlusPlus,
    streams: [StreamModel; 2],
    queue_size: u16,
    paused: bool,
    stray_links: bool,
}

/// The rng of one batch: a function of the run's seed and the batch's iteration only.
pub fn batch_rng(seed: u64, iteration: u64) -> Xoshiro256PlusPlus {
    // splitmix64's finaliser, so that neighbouring iterations get unrelated streams.
    let mut z = seed ^ iteration.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Xoshiro256PlusPlus::seed_from_u64(z ^ (z >> 31))
}

impl Generator {
    pub fn new(rng: Xoshiro256PlusPlus) -> Self {
        let default = StreamModel {
            frame: 4,
            period: 1920,
            state: PcmState::Idle,
        };
        Generator {
            rng,
            streams: [default; 2],
            queue_size: 64,
            paused: false,
            stray_links: false,
        }
    }

    /// One batch: the connection it starts with, then `n` actions.
    pub fn batch(&mut self, n: usize) -> (Connect, Vec<Action>) {
        let connect = self.connect();
        self.stray_links = self.chance(0.4);
        let actions = (0..n).map(|_| self.action()).collect();
        (connect, actions)
    }

    fn connect(&mut self) -> Connect {
        let queue_size = [64, 64, 64, 32, 16, 8][self.rng.random_range(0..6)];
        self.queue_size = queue_size;
        self.paused = false;
        self.new_driver();
        Connect {
            queue_size,
            event_idx: self.rng.random_bool(0.7),
            indirect: self.rng.random_bool(0.6),
            event_buffers: self.rng.random_range(0..=queue_size),
        }
    }

    /// A new connection or a rebooted guest: the device starts both streams over.
    fn new_driver(&mut self) {
        for m in self.streams.iter_mut() {
            m.state = PcmState::Idle;
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn action(&mut self) -> Action {
        let roll = self.rng.random_range(0..1000u32);
        match roll {
            0..250 => Action::Control(self.pcm_request()),
            250..400 => Action::Control(self.control_request()),
            400..650 => {
                let (queue, chain) = self.io();
                Action::Io { queue, chain }
            }
            650..700 => Action::Io {
                queue: self.rng.random_range(0..NUM_QUEUES),
                chain: self.garbage_chain(),
            },
            700..730 => Action::Io {
                queue: QUEUE_EVENT,
                chain: self.event_buffer(),
            },
            730..850 => Action::Tick { ns: self.tick() },
            850..910 => Action::Harvest,
            910..935 => Action::Kick {
                queue: self.rng.random_range(0..NUM_QUEUES),
            },
            935..945 => Action::AutoKick(self.chance(0.6)),
            945..955 if !self.paused => {
                self.paused = true;
                Action::Pause
            }
            945..975 if self.paused => {
                self.paused = false;
                let mut skew = [0u16; 4];
                if self.chance(0.1) {
                    skew[self.rng.random_range(0..4)] = self.rng.random();
                }
                Action::Resume { skew }
            }
            975..980 => {
                self.paused = false;
                self.new_driver();
                Action::Reboot {
                    reset: self.chance(0.7),
                }
            }
            980..983 => Action::AvailIdx {
                queue: self.rng.random_range(0..NUM_QUEUES),
                idx: self.rng.random(),
            },
            983..985 => {
                let c = self.connect();
                Action::Reconnect(c)
            }
            985..989 => {
                self.paused = false;
                let session = vhost_user::generate(&mut self.rng);
                let then = self.connect();
                Action::VhostUser { session, then }
            }
            _ => Action::Harvest,
        }
    }

    fn tick(&mut self) -> u64 {
        match self.rng.random_range(0..10) {
            0 => self.rng.random_range(0..1_000_000),
            1..=7 => self.rng.random_range(1_000_000..30_000_000),
            8 => self.rng.random_range(30_000_000..300_000_000),
            _ => self.rng.random_range(1_000_000_000..5_000_000_000),
        }
    }

    fn stream(&mut self) -> u32 {
        match self.rng.random_range(0..20) {
            0 => 2,
            1 => self.rng.random(),
            n => n % 2,
        }
    }

    fn model(&self, stream: u32) -> StreamModel {
        self.streams[(stream as usize).min(1)]
    }

    /// A state-machine step on a stream: mostly the requests Linux sends, in a
    /// plain layout.
    fn pcm_request(&mut self) -> Chain {
        let stream = self.stream();
        let state = self.model(stream).state;
        // Mostly a step the state machine takes (so that streams get everywhere and
        // stay there a while), sometimes any request.
        let req = if self.chance(0.8) {
            let next = match state {
                PcmState::Idle => &[PcmRequest::SetParams][..],
                PcmState::ParamsSet => &[
                    PcmRequest::Prepare,
                    PcmRequest::Prepare,
                    PcmRequest::SetParams,
                ],
                PcmState::Prepared => &[PcmRequest::Start, PcmRequest::Start, PcmRequest::Release],
                PcmState::Running => &[PcmRequest::Stop],
                PcmState::Stopped => &[PcmRequest::Start, PcmRequest::Release, PcmRequest::Prepare],
                PcmState::Released => &[PcmRequest::Prepare, PcmRequest::SetParams],
            };
            next[self.rng.random_range(0..next.len())]
        } else {
            [
                PcmRequest::SetParams,
                PcmRequest::Prepare,
                PcmRequest::Start,
                PcmRequest::Stop,
                PcmRequest::Release,
            ][self.rng.random_range(0..5)]
        };
        let code = match req {
            PcmRequest::SetParams => R_PCM_SET_PARAMS,
            PcmRequest::Prepare => R_PCM_PREPARE,
            PcmRequest::Start => R_PCM_START,
            PcmRequest::Stop => R_PCM_STOP,
            PcmRequest::Release => R_PCM_RELEASE,
        };
        let plain_layout = self.chance(0.9);
        let (bytes, sizes) = if code == R_PCM_SET_PARAMS {
            let (b, frame, period) = self.set_params(stream, true);
            (b, (frame, period))
        } else {
            (code_and_id(code, stream), (0, 0))
        };
        // What the device does with a request in a broken layout is not modelled.
        if plain_layout {
            self.take(stream, req, sizes);
        }
        let parts = vec![Part::Read(bytes), Part::Write(4)];
        if plain_layout {
            plain(parts)
        } else {
            self.layout(parts)
        }
    }

    /// A SET_PARAMS request, and the frame and period sizes it sets if `valid`.
    fn set_params(&mut self, stream: u32, valid: bool) -> (Vec<u8>, u32, u32) {
        let (format, size) = FORMATS[self.rng.random_range(0..FORMATS.len())];
        let (rate, _) = RATES[self.rng.random_range(0..RATES.len())];
        let channels = self.rng.random_range(CHANNELS_MIN..=CHANNELS_MAX);
        let frame = size * u32::from(channels);
        let frames = match self.rng.random_range(0..4) {
            0 => self.rng.random_range(1..64),
            1 | 2 => self.rng.random_range(64..2048),
            _ => self.rng.random_range(1..(MAX_BUF / frame).max(2)),
        };
        // Periods fit a guest buffer, so that a period of data is a period.
        let period = frame * frames.min(MAX_BUF / frame);
        let buffer = period * self.rng.random_range(1..=8);
        let mut fields = (buffer, period, 0u32, channels, format, rate, 0u8);
        if !valid {
            match self.rng.random_range(0..8) {
                0 => fields.0 = self.rng.random(),
                1 => fields.1 = self.rng.random_range(0..4),
                2 => fields.1 = self.rng.random(),
                3 => fields.2 = self.rng.random(),
                4 => fields.3 = self.rng.random(),
                5 => fields.4 = self.rng.random(),
                6 => fields.5 = self.rng.random(),
                _ => fields.6 = self.rng.random(),
            }
        }
        let mut v = code_and_id(R_PCM_SET_PARAMS, stream);
        v.extend_from_slice(&fields.0.to_le_bytes());
        v.extend_from_slice(&fields.1.to_le_bytes());
        v.extend_from_slice(&fields.2.to_le_bytes());
        v.extend_from_slice(&[fields.3, fields.4, fields.5, fields.6]);
        (v, frame, period)
    }

    /// Moves the model of `stream` as the device takes `req` (a plain, well-formed
    /// request; `sizes` those of a SET_PARAMS).
    fn take(&mut self, stream: u32, req: PcmRequest, sizes: (u32, u32)) {
        let Some(m) = self.streams.get_mut(stream as usize) else {
            return;
        };
        if let Some((next, _)) = m.state.apply(req) {
            m.state = next;
            if req == PcmRequest::SetParams {
                (m.frame, m.period) = sizes;
            }
        }
    }

    /// Any control request: every code, random fields, wrong lengths, odd response
    /// areas, in any layout.
    fn control_request(&mut self) -> Chain {
        let code = if self.chance(0.9) {
            let i = self
                .rng
                .random_range(0..R_CODES.len() + CTL_CODES.len() + UNKNOWN_CODES.len());
            R_CODES
                .iter()
                .chain(&CTL_CODES)
                .chain(&UNKNOWN_CODES)
                .nth(i)
                .copied()
                .unwrap_or(0)
        } else {
            self.rng.random()
        };
        let mut model = None;
        let mut req = match code {
            R_JACK_INFO | R_PCM_INFO | R_CHMAP_INFO | ctl::R_CTL_INFO => {
                let start = self.small_or_any(4);
                let count = self.small_or_any(4);
                let size = match self.rng.random_range(0..5) {
                    0 => 32,
                    4 => 96,
                    1 => 24,
                    2 => self.rng.random_range(0..512),
                    _ => self.rng.random(),
                };
                let mut v = code.to_le_bytes().to_vec();
                for f in [start, count, size] {
                    v.extend_from_slice(&f.to_le_bytes());
                }
                v
            }
            ctl::R_CTL_WRITE => {
                // A value for a control that mostly exists, mostly in or near its range.
                let mut v = code_and_id(code, self.small_or_any(5));
                let mut value = [0u8; 512];
                let first = self.small_or_any(140);
                value[..4].copy_from_slice(&first.to_le_bytes());
                if self.chance(0.2) {
                    self.rng.fill(&mut value[4..]);
                }
                v.extend_from_slice(&value);
                v
            }
            ctl::R_CTL_ENUM_ITEMS..=ctl::R_CTL_TLV_COMMAND => {
                code_and_id(code, self.small_or_any(5))
            }
            R_PCM_SET_PARAMS => {
                let stream = self.stream();
                let valid = self.chance(0.3);
                let (b, frame, period) = self.set_params(stream, valid);
                if valid {
                    model = Some((stream, PcmRequest::SetParams, (frame, period)));
                }
                b
            }
            _ => {
                let stream = self.stream();
                model = match code {
                    R_PCM_PREPARE => Some(PcmRequest::Prepare),
                    R_PCM_START => Some(PcmRequest::Start),
                    R_PCM_STOP => Some(PcmRequest::Stop),
                    R_PCM_RELEASE => Some(PcmRequest::Release),
                    _ => None,
                }
                .map(|r| (stream, r, (0, 0)));
                code_and_id(code, stream)
            }
        };
        match self.rng.random_range(0..6) {
            0 => {
                req.truncate(self.rng.random_range(0..=req.len()));
                model = None;
            }
            1 => {
                let n = self.rng.random_range(1..64);
                req.extend((0..n).map(|_| self.rng.random::<u8>()));
                model = None;
            }
            _ => {}
        }
        let resp = match self.rng.random_range(0..9) {
            0 => self.rng.random_range(0..8),
            8 => 4 + 512,
            1 => 4,
            2 => self.rng.random_range(8..2048),
            3 => MAX_BUF,
            _ => 4 + 32 * self.rng.random_range(0..8),
        };
        let parts = vec![Part::Read(req), Part::Write(resp)];
        if self.chance(0.5) {
            // The device takes a request it can answer: the model follows.
            if let (Some((stream, r, sizes)), true) = (model, resp >= 4) {
                self.take(stream, r, sizes);
            }
            plain(parts)
        } else {
            self.layout(parts)
        }
    }

    fn small_or_any(&mut self, small: u32) -> u32 {
        if self.chance(0.8) {
            self.rng.random_range(0..small)
        } else {
            self.rng.random()
        }
    }

    /// A playback or capture period, or something near it.
    fn io(&mut self) -> (usize, Chain) {
        // Mostly for a stream that takes I/O now.
        let takes = |m: &StreamModel| m.state.accepts_io();
        let tx = match (takes(&self.streams[0]), takes(&self.streams[1])) {
            (true, false) => self.chance(0.85),
            (false, true) => self.chance(0.15),
            _ => self.chance(0.5),
        };
        let stream = if self.chance(0.9) {
            u32::from(!tx)
        } else {
            self.stream()
        };
        let m = self.model(stream);
        let len = match self.rng.random_range(0..12) {
            0..7 => m.period,
            7 => 0,
            8 => m.frame * self.rng.random_range(1..4),
            9 => self.rng.random_range(0..MAX_BUF),
            10 => m.period + m.frame,
            _ => m.period.saturating_sub(1),
        }
        .min(MAX_BUF);
        let mut hdr = stream.to_le_bytes().to_vec();
        if self.chance(0.05) {
            hdr.truncate(self.rng.random_range(0..4));
        }
        let data = if tx {
            Part::Fill {
                len,
                fill: self.rng.random(),
            }
        } else {
            Part::Write(len)
        };
        let status = if self.chance(0.95) {
            8
        } else {
            self.rng.random_range(0..16)
        };
        let mut parts = vec![Part::Read(hdr)];
        if len > 0 || self.chance(0.5) {
            parts.push(data);
        }
        parts.push(Part::Write(status));
        let queue = if self.chance(0.95) {
            if tx {
                QUEUE_TX
            } else {
                QUEUE_RX
            }
        } else {
            self.rng.random_range(0..NUM_QUEUES)
        };
        let chain = if self.chance(0.7) {
            plain(parts)
        } else {
            self.layout(parts)
        };
        (queue, chain)
    }

    fn event_buffer(&mut self) -> Chain {
        let parts = match self.rng.random_range(0..6) {
            0 => vec![Part::Write(self.rng.random_range(0..8))],
            1 => vec![Part::Read(vec![0; 8])],
            2 => vec![Part::Write(4), Part::Write(4)],
            _ => vec![Part::Write(8)],
        };
        if self.chance(0.6) {
            plain(parts)
        } else {
            self.layout(parts)
        }
    }

    /// Descriptors with no message in mind.
    fn garbage_chain(&mut self) -> Chain {
        let n = self.rng.random_range(1..=8);
        let descs = (0..n).map(|_| self.random_desc(2)).collect();
        let mut chain = Chain {
            descs,
            plain: false,
        };
        self.links(&mut chain.descs);
        chain
    }

    fn random_desc(&mut self, depth: u32) -> DescSpec {
        let writable = self.chance(0.5);
        let len = self.len_any();
        let buf = match self.rng.random_range(0..10) {
            0..4 => Buf::Guest {
                head: Vec::new(),
                len: len.min(MAX_BUF),
                fill: self.rng.random(),
            },
            4..6 => Buf::Hostile {
                at: self.hostile(),
                len,
            },
            6 | 7 if !writable => Buf::Anywhere {
                offset: self.rng.random(),
                len,
            },
            _ if depth > 0 => self.table_of(depth - 1),
            _ => Buf::Hostile {
                at: self.hostile(),
                len,
            },
        };
        let mut d = DescSpec::new(buf, writable);
        self.maybe_flags(&mut d);
        d
    }

    fn len_any(&mut self) -> u32 {
        match self.rng.random_range(0..6) {
            0 => 0,
            1 => self.rng.random_range(1..16),
            2 => [4, 8, 16, 32][self.rng.random_range(0..4)],
            3 => self.rng.random_range(16..4096),
            4 => self.rng.random_range(4096..=MAX_BUF),
            _ => self.rng.random(),
        }
    }

    fn hostile(&mut self) -> Hostile {
        match self.rng.random_range(0..3) {
            0 => Hostile::PastEnd(if self.chance(0.5) {
                self.rng.random_range(0..4096)
            } else {
                self.rng.random_range(0..1 << 40)
            }),
            1 => Hostile::Straddle(self.rng.random_range(1..4096)),
            _ => Hostile::Overflow(self.rng.random_range(0..4096)),
        }
    }

    fn table_of(&mut self, depth: u32) -> Buf {
        let n = match self.rng.random_range(0..8) {
            0 => 0,
            1 => 64,
            _ => self.rng.random_range(1..8),
        };
        let mut entries: Vec<DescSpec> = (0..n).map(|_| self.random_desc(depth)).collect();
        self.links(&mut entries);
        Buf::Table {
            entries,
            len_adjust: self.len_adjust(),
        }
    }

    /// A table descriptor's length off its table's: longer ones reach older tables'
    /// entries (anyone's descriptors), so only batches with stray links keep them.
    fn len_adjust(&mut self) -> i32 {
        let adjust = match self.rng.random_range(0..10) {
            0 => -self.rng.random_range(1..=16),
            1 => self.rng.random_range(1..16),
            2 => 16 * self.rng.random_range(1..=(TABLE_BYTES / 16) as i32),
            3 => i32::MIN,
            _ => 0,
        };
        if adjust > 0 && !self.stray_links {
            0
        } else {
            adjust
        }
    }

    /// Unusual flag bits now and then: INDIRECT only where the address is outside
    /// RAM (a table read from a guest buffer could name the rings as writable).
    fn maybe_flags(&mut self, d: &mut DescSpec) {
        if !self.chance(0.05) {
            return;
        }
        let mut flags: u16 = self.rng.random::<u16>() & !3;
        if !matches!(d.buf, Buf::Hostile { .. }) {
            flags &= !F_INDIRECT;
        }
        d.extra_flags = flags;
    }

    /// Loops and links past the end, now and then.
    /// Links out of the chain reach other chains' descriptors, after which the
    /// device may write anywhere in the writable pool: only some batches have them,
    /// so that the others can check what the device wrote.
    fn links(&mut self, descs: &mut [DescSpec]) {
        let n = descs.len();
        for d in descs.iter_mut() {
            if self.rng.random_ratio(1, 12) {
                d.link = Some(if self.stray_links && self.chance(0.3) {
                    n + self.rng.random_range(0..300)
                } else {
                    self.rng.random_range(0..n)
                });
            }
        }
    }

    /// A message's parts, laid out the way a broken or hostile driver might: split,
    /// reordered, flipped, shortened, pointed outside RAM, linked in loops, or put
    /// into indirect tables.
    fn layout(&mut self, parts: Vec<Part>) -> Chain {
        let mut descs = Vec::new();
        for p in parts {
            let pieces = match self.rng.random_range(0..10) {
                0..6 => 1,
                6..9 => self.rng.random_range(2..5),
                _ => self.rng.random_range(5..40),
            };
            split(p, pieces, &mut descs, &mut self.rng);
        }
        for _ in 0..self.rng.random_range(0..3) {
            let n = descs.len();
            let i = self.rng.random_range(0..n);
            match self.rng.random_range(0..7) {
                0 => descs[i].writable = !descs[i].writable,
                1 if i + 1 < n => descs.swap(i, i + 1),
                2 => {
                    let len = self.len_any();
                    descs[i].buf = Buf::Hostile {
                        at: self.hostile(),
                        len,
                    };
                }
                3 => set_len(&mut descs[i].buf, 0),
                4 => {
                    let d = self.random_desc(1);
                    descs.insert(i, d);
                }
                5 => {
                    descs.remove(i);
                    if descs.is_empty() {
                        descs.push(self.random_desc(0));
                    }
                }
                _ => {
                    let adj = self.rng.random_range(0..64);
                    if let Buf::Guest { len, .. } = &mut descs[i].buf {
                        *len = (*len + adj).min(MAX_BUF);
                    }
                }
            }
        }
        let n = descs.len();
        if self.chance(0.15) {
            self.links(&mut descs);
        }
        for d in descs.iter_mut() {
            self.maybe_flags(d);
        }
        if self.chance(0.35) {
            // All or a tail of the descriptors go into an indirect table.
            let from = if self.chance(0.8) {
                0
            } else {
                self.rng.random_range(0..n)
            };
            let entries = descs.split_off(from);
            let mut table = DescSpec::new(
                Buf::Table {
                    entries,
                    len_adjust: if self.chance(0.8) {
                        0
                    } else {
                        self.len_adjust()
                    },
                },
                self.chance(0.05),
            );
            if self.chance(0.05) {
                table.link = Some(0);
            }
            descs.push(table);
            if self.chance(0.05) {
                descs.push(self.random_desc(0));
            }
        }
        descs.truncate(usize::from(self.queue_size));
        Chain {
            descs,
            plain: false,
        }
    }
}

/// The parts as a correct driver lays them out: one descriptor each.
fn plain(parts: Vec<Part>) -> Chain {
    let descs = parts
        .into_iter()
        .map(|p| {
            let (buf, writable) = part_buf(p);
            DescSpec::new(buf, writable)
        })
        .collect();
    Chain { descs, plain: true }
}

fn part_buf(p: Part) -> (Buf, bool) {
    match p {
        Part::Read(head) => {
            let len = head.len() as u32;
            (Buf::Guest { head, len, fill: 0 }, false)
        }
        Part::Fill { len, fill } => (
            Buf::Guest {
                head: Vec::new(),
                len,
                fill,
            },
            false,
        ),
        Part::Write(len) => (
            Buf::Guest {
                head: Vec::new(),
                len: len.min(MAX_BUF),
                fill: 0,
            },
            true,
        ),
    }
}

/// Splits one part into `pieces` descriptors at random points (some may be empty).
fn split(p: Part, pieces: u32, out: &mut Vec<DescSpec>, rng: &mut Xoshiro256PlusPlus) {
    let (buf, writable) = part_buf(p);
    let Buf::Guest { head, len, fill } = buf else {
        return;
    };
    if pieces <= 1 || len == 0 {
        out.push(DescSpec::new(Buf::Guest { head, len, fill }, writable));
        return;
    }
    let mut cuts: Vec<u32> = (1..pieces).map(|_| rng.random_range(0..=len)).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    for w in cuts.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        let piece_head = head
            .get(a.min(head.len())..b.min(head.len()))
            .unwrap_or(&[]);
        out.push(DescSpec::new(
            Buf::Guest {
                head: piece_head.to_vec(),
                len: (b - a) as u32,
                fill: fill.wrapping_add(a as u32),
            },
            writable,
        ));
    }
}

fn set_len(buf: &mut Buf, n: u32) {
    match buf {
        Buf::Guest { len, head, .. } => {
            *len = n;
            head.truncate(n as usize);
        }
        Buf::Hostile { len, .. } | Buf::Anywhere { len, .. } => *len = n,
        Buf::Table { len_adjust, .. } => *len_adjust = i32::MIN,
    }
}

/// A request of a code and one id: `virtio_snd_pcm_hdr`, `virtio_snd_ctl_hdr`.
fn code_and_id(code: u32, id: u32) -> Vec<u8> {
    let mut v = code.to_le_bytes().to_vec();
    v.extend_from_slice(&id.to_le_bytes());
    v
}
