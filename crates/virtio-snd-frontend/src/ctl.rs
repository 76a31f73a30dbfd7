//! The control-element requests (VIRTIO_SND_F_CTLS), laid out as the Linux driver
//! lays them out: CTL_READ answers the status and a whole value, CTL_WRITE sends a
//! whole value, and CTL_TLV_READ's data comes in a second writable buffer after the
//! status.

use std::io;
use std::mem::size_of;

use vm_memory::{ByteValued, Le32};

use virtio_snd_wire::ctl::*;
use virtio_snd_wire::{Hdr, S_OK};

use super::chain::Segment;
use super::guest::FakeGuest;

fn hdr(code: u32, id: u32) -> CtlHdr {
    CtlHdr {
        hdr: Hdr { code: code.into() },
        control_id: id.into(),
    }
}

impl FakeGuest {
    /// CTL_INFO for `count` controls from `start`.
    pub fn ctl_info(&mut self, start: u32, count: u32) -> io::Result<(u32, Vec<CtlInfo>)> {
        self.query_info(R_CTL_INFO, start, count)
    }

    /// CTL_READ: the status and, on S_OK, the first integer of the value.
    pub fn ctl_read(&mut self, id: u32) -> io::Result<(u32, Option<u32>)> {
        let resp = (size_of::<Hdr>() + size_of::<CtlValue>()) as u32;
        let reply = self.control_obj(&hdr(R_CTL_READ, id), resp)?;
        let value = (reply.status() == S_OK && reply.used_len == resp)
            .then(|| reply.resp.get(4..8))
            .flatten()
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        Ok((reply.status(), value))
    }

    /// CTL_WRITE of a value whose first integer is `value` (the rest zero). Returns
    /// the status.
    pub fn ctl_write(&mut self, id: u32, value: u32) -> io::Result<u32> {
        let mut v = CtlValue::default();
        v.integer[0] = Le32::from(value);
        self.ctl_write_raw(id, &v)
    }

    /// CTL_WRITE of a whole value as given.
    pub fn ctl_write_raw(&mut self, id: u32, value: &CtlValue) -> io::Result<u32> {
        let mut req = hdr(R_CTL_WRITE, id).as_slice().to_vec();
        req.extend_from_slice(value.as_slice());
        Ok(self.control(&req, 4)?.status())
    }

    /// CTL_TLV_READ into a `size`-byte buffer: the status and the TLV's words the
    /// device wrote (its used length past the status).
    pub fn ctl_tlv_read(&mut self, id: u32, size: u32) -> io::Result<(u32, Vec<u32>)> {
        let req = hdr(R_CTL_TLV_READ, id);
        let segs = [
            Segment::Read(req.as_slice()),
            Segment::Write(4),
            Segment::Write(size),
        ];
        let reply = self.control_chain(&segs, self.options().control_timeout)?;
        let words = reply
            .resp
            .get(4..reply.used_len.max(4) as usize)
            .unwrap_or(&[])
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((reply.status(), words))
    }
}
