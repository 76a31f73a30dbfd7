//! Control-queue requests, raw and typed, and the driver's probe sequence.

use std::io;
use std::mem::size_of;
use std::time::Duration;

use vm_memory::ByteValued;

use virtio_snd_wire::formats::PcmParams;
use virtio_snd_wire::*;

use super::chain::{Segment, Token};
use super::completion::ControlReply;
use super::guest::FakeGuest;

/// What the Linux driver learns at probe.
#[derive(Clone, Debug, Default)]
pub struct DeviceInfo {
    pub config: VirtioSndConfig,
    pub jacks: Vec<JackInfo>,
    pub pcms: Vec<PcmInfo>,
    pub chmaps: Vec<ChmapInfo>,
    pub controls: Vec<ctl::CtlInfo>,
}

fn status_err(what: &str, status: u32) -> io::Error {
    io::Error::other(format!("{what} answered status {status:#x}, not S_OK"))
}

impl FakeGuest {
    /// Sends `req` with a `resp_len`-byte response area and waits (up to
    /// `options().control_timeout`) for the answer. Any bytes may be sent: short,
    /// oversized, unknown codes.
    pub fn control(&mut self, req: &[u8], resp_len: u32) -> io::Result<ControlReply> {
        self.control_with_timeout(req, resp_len, self.options().control_timeout)
    }

    /// [`control`](Self::control) with an explicit timeout. On `TimedOut` the request
    /// is abandoned: its late completion is recycled silently.
    pub fn control_with_timeout(
        &mut self,
        req: &[u8],
        resp_len: u32,
        timeout: Duration,
    ) -> io::Result<ControlReply> {
        let token = self.submit_control(req, resp_len)?;
        self.control_reply(token, req, timeout)
    }

    /// A control request laid out as `segs` (one descriptor each), answered within
    /// `timeout`; the reply's response is every writable segment, concatenated.
    pub fn control_chain(
        &mut self,
        segs: &[Segment<'_>],
        timeout: Duration,
    ) -> io::Result<ControlReply> {
        let token = self.submit_segments(QUEUE_CONTROL, segs)?;
        let req = segs
            .iter()
            .find_map(|s| match s {
                Segment::Read(b) => Some(*b),
                Segment::Write(_) => None,
            })
            .unwrap_or_default();
        self.control_reply(token, req, timeout)
    }

    /// Waits for the answer to the control request `req` sent as `token`. On
    /// `TimedOut` the request is abandoned: its late completion is recycled silently.
    fn control_reply(
        &mut self,
        token: Token,
        req: &[u8],
        timeout: Duration,
    ) -> io::Result<ControlReply> {
        match self.wait_token(token, timeout) {
            Ok(c) => Ok(ControlReply {
                used_len: c.used_len,
                resp: c.data,
                at: c.at,
            }),
            Err(e) => {
                self.abandon(token);
                let code = req
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                Err(io::Error::new(
                    e.kind(),
                    format!("control request (code {code:#x?}): {e}"),
                ))
            }
        }
    }

    /// Sends a wire struct as the request.
    pub fn control_obj<T: ByteValued>(
        &mut self,
        req: &T,
        resp_len: u32,
    ) -> io::Result<ControlReply> {
        self.control(req.as_slice(), resp_len)
    }

    /// An INFO query (`code` = R_JACK_INFO, R_PCM_INFO or R_CHMAP_INFO) for `count`
    /// items of `T` from `start`. Returns the status and the items the used length
    /// covers (`(used_len - 4) / size_of::<T>()`, at most `count`), so a device that
    /// under-reports its used length is caught.
    pub fn query_info<T: ByteValued + Default>(
        &mut self,
        code: u32,
        start: u32,
        count: u32,
    ) -> io::Result<(u32, Vec<T>)> {
        let size = size_of::<T>() as u64;
        let resp_len = u64::from(count)
            .checked_mul(size)
            .and_then(|n| n.checked_add(4))
            .filter(|n| *n < self.ram_size() / 2)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{count} info items do not fit guest RAM; use control() to send such a request"),
                )
            })?;
        let req = QueryInfo {
            hdr: Hdr { code: code.into() },
            start_id: start.into(),
            count: count.into(),
            size: (size as u32).into(),
        };
        let reply = self.control_obj(&req, resp_len as u32)?;
        let covered = (u64::from(reply.used_len).saturating_sub(4) / size).min(u64::from(count));
        let items = reply
            .resp
            .get(4..)
            .unwrap_or(&[])
            .chunks_exact(size as usize)
            .take(covered as usize)
            .map(|chunk| {
                let mut item = T::default();
                item.as_mut_slice().copy_from_slice(chunk);
                item
            })
            .collect();
        Ok((reply.status(), items))
    }

    pub fn pcm_info(&mut self, start: u32, count: u32) -> io::Result<(u32, Vec<PcmInfo>)> {
        self.query_info(R_PCM_INFO, start, count)
    }

    pub fn chmap_info(&mut self, start: u32, count: u32) -> io::Result<(u32, Vec<ChmapInfo>)> {
        self.query_info(R_CHMAP_INFO, start, count)
    }

    pub fn jack_info(&mut self, start: u32, count: u32) -> io::Result<(u32, Vec<JackInfo>)> {
        self.query_info(R_JACK_INFO, start, count)
    }

    /// PCM_SET_PARAMS with `format` and `rate` as virtio-snd codes (FMT_*, rate
    /// codes from `formats::RATES`). Returns the status.
    pub fn set_params(
        &mut self,
        stream: u32,
        buffer_bytes: u32,
        period_bytes: u32,
        channels: u8,
        format: u8,
        rate: u8,
    ) -> io::Result<u32> {
        let req = PcmSetParams {
            hdr: PcmHdr {
                hdr: Hdr {
                    code: R_PCM_SET_PARAMS.into(),
                },
                stream_id: stream.into(),
            },
            buffer_bytes: buffer_bytes.into(),
            period_bytes: period_bytes.into(),
            features: 0.into(),
            channels,
            format,
            rate,
            padding: 0,
        };
        Ok(self.control_obj(&req, 4)?.status())
    }

    /// PCM_SET_PARAMS from a [`PcmParams`].
    pub fn set_pcm_params(&mut self, stream: u32, p: &PcmParams) -> io::Result<u32> {
        self.set_params(
            stream,
            p.buffer_bytes,
            p.period_bytes,
            p.channels,
            p.format,
            p.rate,
        )
    }

    /// A request that is just a `virtio_snd_pcm_hdr` (PREPARE, START, STOP, RELEASE).
    pub fn pcm_simple(&mut self, code: u32, stream: u32) -> io::Result<u32> {
        let req = PcmHdr {
            hdr: Hdr { code: code.into() },
            stream_id: stream.into(),
        };
        Ok(self.control_obj(&req, 4)?.status())
    }

    pub fn prepare(&mut self, stream: u32) -> io::Result<u32> {
        self.pcm_simple(R_PCM_PREPARE, stream)
    }

    pub fn start(&mut self, stream: u32) -> io::Result<u32> {
        self.pcm_simple(R_PCM_START, stream)
    }

    pub fn stop(&mut self, stream: u32) -> io::Result<u32> {
        self.pcm_simple(R_PCM_STOP, stream)
    }

    pub fn release(&mut self, stream: u32) -> io::Result<u32> {
        self.pcm_simple(R_PCM_RELEASE, stream)
    }

    /// What virtsnd_probe does: read the config, then JACK_INFO (if jacks),
    /// PCM_INFO (if streams), CHMAP_INFO (if chmaps) and CTL_INFO (if controls, with
    /// VIRTIO_SND_F_CTLS) for everything announced.
    /// Fails like the probe does: on any status other than S_OK, on fewer items than
    /// announced, or on a reply slower than `control_timeout`.
    pub fn probe(&mut self) -> io::Result<DeviceInfo> {
        let config = self.config()?;
        let mut info = DeviceInfo {
            config,
            ..DeviceInfo::default()
        };
        let jacks = config.jacks.to_native();
        let streams = config.streams.to_native();
        let chmaps = config.chmaps.to_native();
        let controls = config.controls.to_native();
        if jacks > 0 {
            let (st, items) = self.jack_info(0, jacks)?;
            if st != S_OK {
                return Err(status_err("JACK_INFO", st));
            }
            info.jacks = items;
        }
        if streams > 0 {
            let (st, items) = self.pcm_info(0, streams)?;
            if st != S_OK {
                return Err(status_err("PCM_INFO", st));
            }
            info.pcms = items;
        }
        if chmaps > 0 {
            let (st, items) = self.chmap_info(0, chmaps)?;
            if st != S_OK {
                return Err(status_err("CHMAP_INFO", st));
            }
            info.chmaps = items;
        }
        if controls > 0 && self.controls() {
            let (st, items) = self.ctl_info(0, controls)?;
            if st != S_OK {
                return Err(status_err("CTL_INFO", st));
            }
            info.controls = items;
        }
        let counts = [
            ("jacks", jacks, info.jacks.len()),
            ("streams", streams, info.pcms.len()),
            ("chmaps", chmaps, info.chmaps.len()),
            (
                "controls",
                if self.controls() { controls } else { 0 },
                info.controls.len(),
            ),
        ];
        for (what, announced, got) in counts {
            if announced as usize != got {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("config announces {announced} {what}, the INFO reply covers {got}"),
                ));
            }
        }
        Ok(info)
    }
}
