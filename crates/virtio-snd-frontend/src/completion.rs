//! What comes back from the device.

use std::time::Instant;

use virtio_snd_wire::PcmStatus;

use super::chain::Token;

/// One used element, in used-ring order.
#[derive(Clone, Debug)]
pub struct Completion {
    pub token: Token,
    pub queue: usize,
    /// The length the device put in the used element (bytes it claims to have written).
    pub used_len: u32,
    /// The 8-byte status area of a `submit_tx`/`submit_rx` chain as the device left it
    /// (it reads as 0xa5a5a5a5 if the device never wrote it); None for other chains.
    pub pcm: Option<PcmStatus>,
    /// rx: the first `used_len - 8` bytes of the data area (at most its length);
    /// control and segment chains: all device-writable bytes, in order, whatever
    /// `used_len` says; tx and explicit-descriptor chains: empty.
    pub data: Vec<u8>,
    /// When the frontend saw the used element: the guest's notion of "now" for it.
    pub at: Instant,
}

impl Completion {
    /// The virtio-snd status code of an I/O completion.
    pub fn status(&self) -> Option<u32> {
        self.pcm.map(|s| s.status.to_native())
    }

    /// The device's latency report of an I/O completion.
    pub fn latency_bytes(&self) -> Option<u32> {
        self.pcm.map(|s| s.latency_bytes.to_native())
    }
}

/// The answer to a control request.
#[derive(Clone, Debug)]
pub struct ControlReply {
    /// What the device put in the used element.
    pub used_len: u32,
    /// The whole response area (as long as requested), whatever `used_len` says;
    /// bytes the device did not write read as 0xa5.
    pub resp: Vec<u8>,
    pub at: Instant,
}

impl ControlReply {
    /// The status code: the response's first 4 bytes, little-endian (0xa5a5a5a5 if
    /// the device did not write them, 0 if the response area was shorter than that).
    pub fn status(&self) -> u32 {
        match self.resp.get(..4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    }
}

/// One notification from the event queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SndEvent {
    /// `virtio_snd_event.hdr.code` (e.g. 0x1000 jack connected, 0x1100 period elapsed).
    pub code: u32,
    /// `virtio_snd_event.data` (the jack or stream id).
    pub data: u32,
    /// The device's used length (8 for a well-formed event).
    pub used_len: u32,
    pub at: Instant,
}
