//! Control queue: requests are `[request (R)][response (W)]` chains. Each is answered
//! with a status header, and for info queries the items, or returned unused when there
//! is no room even for the status.

use std::mem::size_of;
use std::ops::Deref;

use log::Level;
use virtio_queue::DescriptorChain;
use vm_memory::{ByteValued, Le32, Le64};

use crate::card::{Card, Direction};
use crate::io::{split_chain, GuestMem, SegList};
use crate::log_limit::limited;
use crate::mixer;
use crate::pcm::PcmRequest;
use virtio_snd_wire::ctl::*;
use virtio_snd_wire::formats::{self, PcmParams};
use virtio_snd_wire::*;

/// Largest request the device reads (CTL_WRITE: a header and a value); anything
/// longer is not a virtio-snd request.
const MAX_REQUEST: u32 = (size_of::<CtlHdr>() + size_of::<CtlValue>()) as u32;

/// Largest item an info query may ask for. The spec's info structs are 8 to 32
/// bytes; a newer driver may ask for a larger struct (the rest is zeroes), but not for
/// one of any size the guest's buffer could hold, so a reply is at most
/// 16 items x 256 bytes + the status. Larger is BAD_MSG.
pub const MAX_INFO_SIZE: u32 = 256;

/// Largest period the device accepts: a whole 160 ms Linux buffer (the driver's
/// default) at the highest rate, width and channel count offered, 384 kHz x 4 bytes x
/// 8 channels. Each period is copied whole, so this bounds what one message costs.
pub const MAX_PERIOD_BYTES: u32 = 2 << 20;

/// What the device advertises: the config space and the info tables.
pub struct Topology;

impl Topology {
    pub(crate) const JACKS: u32 = 0;
    pub(crate) const STREAMS: u32 = 2;

    /// The config space; `controls` counts the control elements when they are offered.
    pub(crate) fn config(controls: bool) -> VirtioSndConfig {
        VirtioSndConfig {
            jacks: Le32::from(Self::JACKS),
            streams: Le32::from(Self::STREAMS),
            chmaps: Le32::from(Self::chmaps().len() as u32),
            controls: Le32::from(if controls { mixer::CONTROL_COUNT } else { 0 }),
        }
    }

    pub(crate) fn pcm_info(dir: Direction) -> PcmInfo {
        PcmInfo {
            // Both streams on one function node: one ALSA PCM device with a playback
            // and a capture substream.
            hdr: InfoHdr {
                hda_fn_nid: Le32::from(0),
            },
            features: Le32::from(0),
            formats: Le64::from(formats::formats_mask()),
            rates: Le64::from(formats::rates_mask()),
            direction: dir.wire(),
            channels_min: formats::CHANNELS_MIN,
            channels_max: formats::CHANNELS_MAX,
            padding: [0; 5],
        }
    }

    /// The channel positions for `channels` channels, in GStreamer's default channel
    /// order so that interleaved guest audio needs no reordering.
    pub fn layout(channels: u8) -> Option<&'static [u8]> {
        LAYOUTS.get(usize::from(channels).checked_sub(1)?).copied()
    }

    /// One map per channel count and stream.
    pub fn chmaps() -> Vec<ChmapInfo> {
        Direction::ALL
            .iter()
            .flat_map(|d| {
                LAYOUTS.iter().map(move |l| {
                    let mut positions = [0u8; CHMAP_MAX_SIZE];
                    positions[..l.len()].copy_from_slice(l);
                    ChmapInfo {
                        hdr: InfoHdr {
                            hda_fn_nid: Le32::from(0),
                        },
                        direction: d.wire(),
                        channels: l.len() as u8,
                        positions,
                    }
                })
            })
            .collect()
    }
}

const LAYOUTS: [&[u8]; 8] = [
    &[CHMAP_MONO],
    &[CHMAP_FL, CHMAP_FR],
    &[CHMAP_FL, CHMAP_FR, CHMAP_LFE],
    &[CHMAP_FL, CHMAP_FR, CHMAP_RL, CHMAP_RR],
    &[CHMAP_FL, CHMAP_FR, CHMAP_FC, CHMAP_RL, CHMAP_RR],
    &[CHMAP_FL, CHMAP_FR, CHMAP_FC, CHMAP_LFE, CHMAP_RL, CHMAP_RR],
    &[
        CHMAP_FL, CHMAP_FR, CHMAP_FC, CHMAP_LFE, CHMAP_RL, CHMAP_RR, CHMAP_RC,
    ],
    &[
        CHMAP_FL, CHMAP_FR, CHMAP_FC, CHMAP_LFE, CHMAP_RL, CHMAP_RR, CHMAP_SL, CHMAP_SR,
    ],
];

/// Serves one control chain; returns the number of bytes written to it.
pub fn handle<M>(card: &Card, chain: DescriptorChain<M>, mem: &GuestMem) -> u32
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let Ok((readable, writable)) = split_chain(chain, mem) else {
        limited!(Level::Debug, "control chain is malformed: returned unused");
        return 0;
    };
    if (writable.len() as usize) < size_of::<Hdr>() {
        limited!(
            Level::Debug,
            "control chain has no room for a status: returned unused"
        );
        return 0;
    }
    let (status, payload) = answer(card, &readable, writable.len(), mem);
    let mut out = status.to_le_bytes().to_vec();
    out.extend_from_slice(&payload);
    let len = out.len() as u32;
    match writable.slice(0, len).write(mem, &out) {
        Ok(()) => len,
        Err(_) => 0,
    }
}

fn answer(card: &Card, readable: &SegList, room: u32, mem: &GuestMem) -> (u32, Vec<u8>) {
    let rlen = readable.len();
    if rlen < size_of::<Hdr>() as u32 || rlen > MAX_REQUEST {
        limited!(Level::Debug, "control request of {rlen} bytes");
        return (S_BAD_MSG, Vec::new());
    }
    let mut req = vec![0u8; rlen as usize];
    if readable.read(mem, &mut req).is_err() {
        return (S_BAD_MSG, Vec::new());
    }
    let code = u32::from_le_bytes([req[0], req[1], req[2], req[3]]);
    let room = room - size_of::<Hdr>() as u32;
    match code {
        R_JACK_INFO => query::<JackInfo>(&req, room, &[]),
        R_PCM_INFO => {
            let infos: Vec<PcmInfo> = Direction::ALL
                .iter()
                .map(|d| Topology::pcm_info(*d))
                .collect();
            query(&req, room, &infos)
        }
        R_CHMAP_INFO => query(&req, room, &Topology::chmaps()),
        R_CTL_INFO..=R_CTL_TLV_COMMAND if card.controls_offered() => {
            control_element(card, code, &req, room)
        }
        R_PCM_SET_PARAMS => match read_exact::<PcmSetParams>(&req) {
            Some(p) => match validate(&p) {
                Ok(params) => (
                    card.pcm_request(p.hdr.stream_id.into(), PcmRequest::SetParams, Some(params)),
                    Vec::new(),
                ),
                Err(status) => (status, Vec::new()),
            },
            None => (S_BAD_MSG, Vec::new()),
        },
        R_PCM_PREPARE | R_PCM_RELEASE | R_PCM_START | R_PCM_STOP => {
            let req_kind = match code {
                R_PCM_PREPARE => PcmRequest::Prepare,
                R_PCM_RELEASE => PcmRequest::Release,
                R_PCM_START => PcmRequest::Start,
                _ => PcmRequest::Stop,
            };
            match read_exact::<PcmHdr>(&req) {
                Some(h) => (
                    card.pcm_request(h.stream_id.into(), req_kind, None),
                    Vec::new(),
                ),
                None => (S_BAD_MSG, Vec::new()),
            }
        }
        _ => {
            limited!(Level::Debug, "control request {code:#x} not supported");
            (S_NOT_SUPP, Vec::new())
        }
    }
}

/// The control-element requests. Every one names a control the card has, and values
/// are checked against its range: a bad one is BAD_MSG and changes nothing.
fn control_element(card: &Card, code: u32, req: &[u8], room: u32) -> (u32, Vec<u8>) {
    match code {
        R_CTL_INFO => return query(req, room, &mixer::infos()),
        // No control's TLV is writable (whatever the request holds).
        R_CTL_TLV_WRITE | R_CTL_TLV_COMMAND => return (S_NOT_SUPP, Vec::new()),
        _ => {}
    }
    let (hdr, value) = match code {
        R_CTL_WRITE if req.len() == size_of::<CtlHdr>() + size_of::<CtlValue>() => {
            let (h, v) = req.split_at(size_of::<CtlHdr>());
            (read_exact::<CtlHdr>(h), read_exact::<CtlValue>(v))
        }
        R_CTL_WRITE => (None, None),
        _ => (read_exact::<CtlHdr>(req), None),
    };
    let Some(hdr) = hdr else {
        limited!(
            Level::Debug,
            "control request {code:#x} of {} bytes",
            req.len()
        );
        return (S_BAD_MSG, Vec::new());
    };
    let id = u32::from(hdr.control_id);
    let Some(current) = card.read_control(id) else {
        limited!(
            Level::Debug,
            "control request {code:#x} for unknown control {id}"
        );
        return (S_BAD_MSG, Vec::new());
    };
    match code {
        // No control is enumerated.
        R_CTL_ENUM_ITEMS => (S_BAD_MSG, Vec::new()),
        R_CTL_READ if room as usize >= size_of::<CtlValue>() => {
            let mut v = CtlValue::default();
            v.integer[0] = Le32::from(current);
            (S_OK, v.as_slice().to_vec())
        }
        R_CTL_WRITE => match value.map(|v| card.write_control(id, v.integer[0].into())) {
            Some(Ok(())) => (S_OK, Vec::new()),
            _ => {
                limited!(Level::Debug, "control {id}: value out of range");
                (S_BAD_MSG, Vec::new())
            }
        },
        R_CTL_TLV_READ if mixer::has_tlv(id) => {
            let tlv: Vec<u8> = mixer::db_scale_tlv()
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            if tlv.len() > room as usize {
                return (S_BAD_MSG, Vec::new());
            }
            (S_OK, tlv)
        }
        _ => (S_BAD_MSG, Vec::new()),
    }
}

fn read_exact<T: ByteValued>(req: &[u8]) -> Option<T> {
    (req.len() == size_of::<T>()).then(|| T::from_slice(req).copied())?
}

/// Answers an info query over `items`, each written as `size` bytes (zero-padded: a
/// driver may ask for a larger struct than the one the device knows).
fn query<T: ByteValued>(req: &[u8], room: u32, items: &[T]) -> (u32, Vec<u8>) {
    let Some(q) = read_exact::<QueryInfo>(req) else {
        return (S_BAD_MSG, Vec::new());
    };
    let (start, count, size) = (
        u32::from(q.start_id) as u64,
        u32::from(q.count) as u64,
        u32::from(q.size) as u64,
    );
    let item = size_of::<T>() as u64;
    let fits = start
        .checked_add(count)
        .is_some_and(|end| end <= items.len() as u64)
        && size >= item
        && size <= u64::from(MAX_INFO_SIZE)
        && count * size <= u64::from(room);
    if !fits {
        limited!(
            Level::Debug,
            "info query start={start} count={count} size={size} does not fit"
        );
        return (S_BAD_MSG, Vec::new());
    }
    let mut out = Vec::with_capacity((count * size) as usize);
    for it in &items[start as usize..(start + count) as usize] {
        out.extend_from_slice(it.as_slice());
        out.resize(out.len() + (size - item) as usize, 0);
    }
    (S_OK, out)
}

fn validate(p: &PcmSetParams) -> Result<PcmParams, u32> {
    let params = PcmParams {
        format: p.format,
        rate: p.rate,
        channels: p.channels,
        buffer_bytes: p.buffer_bytes.into(),
        period_bytes: p.period_bytes.into(),
    };
    if u32::from(p.features) != 0
        || formats::sample_bytes(p.format).is_none()
        || formats::rate_hz(p.rate).is_none()
        || !(formats::CHANNELS_MIN..=formats::CHANNELS_MAX).contains(&p.channels)
    {
        return Err(S_NOT_SUPP);
    }
    let frame = params.frame_bytes();
    let (period, buffer) = (params.period_bytes, params.buffer_bytes);
    if period == 0 || period % frame != 0 || buffer < period || buffer % period != 0 {
        return Err(S_BAD_MSG);
    }
    if period > MAX_PERIOD_BYTES {
        return Err(S_NOT_SUPP);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        stream: u32,
        period: u32,
        buffer: u32,
        channels: u8,
        format: u8,
        rate: u8,
    ) -> PcmSetParams {
        PcmSetParams {
            hdr: PcmHdr {
                hdr: Hdr {
                    code: Le32::from(R_PCM_SET_PARAMS),
                },
                stream_id: Le32::from(stream),
            },
            buffer_bytes: Le32::from(buffer),
            period_bytes: Le32::from(period),
            features: Le32::from(0),
            channels,
            format,
            rate,
            padding: 0,
        }
    }

    #[test]
    fn params_are_validated() {
        assert!(validate(&req(0, 1920, 7680, 2, formats::FMT_S16, 7)).is_ok());
        // not a whole number of frames
        assert_eq!(
            validate(&req(0, 1922, 7688, 2, formats::FMT_S16, 7)),
            Err(S_BAD_MSG)
        );
        // buffer not a multiple of the period
        assert_eq!(
            validate(&req(0, 1920, 5000, 2, formats::FMT_S16, 7)),
            Err(S_BAD_MSG)
        );
        assert_eq!(
            validate(&req(0, 0, 0, 2, formats::FMT_S16, 7)),
            Err(S_BAD_MSG)
        );
        // a huge buffer is the guest's business: nothing is allocated for it
        assert!(validate(&req(0, 1920, 1920 * 2048, 2, formats::FMT_S16, 7)).is_ok());
        // a period is copied whole: bounded
        let max = MAX_PERIOD_BYTES;
        assert!(validate(&req(0, max, 2 * max, 8, formats::FMT_S32, 7)).is_ok());
        assert_eq!(
            validate(&req(0, max + 32, 2 * (max + 32), 8, formats::FMT_S32, 7)),
            Err(S_NOT_SUPP)
        );
        assert_eq!(
            validate(&req(0, 1920, 7680, 9, formats::FMT_S16, 7)),
            Err(S_NOT_SUPP)
        );
        assert_eq!(
            validate(&req(0, 1920, 7680, 0, formats::FMT_S16, 7)),
            Err(S_NOT_SUPP)
        );
        assert_eq!(validate(&req(0, 1920, 7680, 2, 0, 7)), Err(S_NOT_SUPP));
        assert_eq!(
            validate(&req(0, 1920, 7680, 2, formats::FMT_S16, 13)),
            Err(S_NOT_SUPP)
        );
    }

    #[test]
    fn queries_check_bounds_and_pad() {
        let items = Topology::chmaps();
        assert_eq!(items.len(), 16);
        let q = |start: u32, count: u32, size: u32| {
            QueryInfo {
                hdr: Hdr {
                    code: Le32::from(R_CHMAP_INFO),
                },
                start_id: Le32::from(start),
                count: Le32::from(count),
                size: Le32::from(size),
            }
            .as_slice()
            .to_vec()
        };
        let (s, out) = query(&q(0, 16, 24), 1000, &items);
        assert_eq!((s, out.len()), (S_OK, 16 * 24));
        let (s, out) = query(&q(15, 1, 32), 1000, &items);
        assert_eq!((s, out.len()), (S_OK, 32));
        assert_eq!(&out[24..], &[0u8; 8]);
        assert_eq!(query(&q(15, 2, 24), 1000, &items).0, S_BAD_MSG);
        assert_eq!(query(&q(u32::MAX, 2, 24), 1000, &items).0, S_BAD_MSG);
        assert_eq!(query(&q(0, 1, 23), 1000, &items).0, S_BAD_MSG);
        assert_eq!(query(&q(0, 16, 24), 100, &items).0, S_BAD_MSG);
        assert_eq!(query(&q(0, 16, u32::MAX), 1000, &items).0, S_BAD_MSG);
        // room for gigabytes does not make a reply of gigabytes
        assert_eq!(query(&q(0, 1, MAX_INFO_SIZE), u32::MAX, &items).0, S_OK);
        assert_eq!(
            query(&q(0, 1, MAX_INFO_SIZE + 1), u32::MAX, &items).0,
            S_BAD_MSG
        );
        assert_eq!(query(&q(0, 1, 24)[..12], 1000, &items).0, S_BAD_MSG);
    }
}
