//! virtio-snd wire structures (virtio spec, "Sound Device"), all little-endian, and the
//! PCM formats and rates they encode ([`formats`]), and the control elements
//! ([`ctl`]).

pub mod ctl;
pub mod formats;

use vm_memory::{ByteValued, Le32, Le64};

pub const QUEUE_CONTROL: usize = 0;
pub const QUEUE_EVENT: usize = 1;
pub const QUEUE_TX: usize = 2;
pub const QUEUE_RX: usize = 3;
pub const NUM_QUEUES: usize = 4;

pub const D_OUTPUT: u8 = 0;
pub const D_INPUT: u8 = 1;

pub const R_JACK_INFO: u32 = 1;
pub const R_JACK_REMAP: u32 = 2;
pub const R_PCM_INFO: u32 = 0x0100;
pub const R_PCM_SET_PARAMS: u32 = 0x0101;
pub const R_PCM_PREPARE: u32 = 0x0102;
pub const R_PCM_RELEASE: u32 = 0x0103;
pub const R_PCM_START: u32 = 0x0104;
pub const R_PCM_STOP: u32 = 0x0105;
pub const R_CHMAP_INFO: u32 = 0x0200;
/// Every jack, PCM and channel-map request code of the spec, in code order.
pub const R_CODES: [u32; 9] = [
    R_JACK_INFO,
    R_JACK_REMAP,
    R_PCM_INFO,
    R_PCM_SET_PARAMS,
    R_PCM_PREPARE,
    R_PCM_RELEASE,
    R_PCM_START,
    R_PCM_STOP,
    R_CHMAP_INFO,
];

pub const S_OK: u32 = 0x8000;
pub const S_BAD_MSG: u32 = 0x8001;
pub const S_NOT_SUPP: u32 = 0x8002;
pub const S_IO_ERR: u32 = 0x8003;

pub const CHMAP_MAX_SIZE: usize = 18;

// Channel positions (enum in the spec), only those the advertised maps use.
pub const CHMAP_MONO: u8 = 2;
pub const CHMAP_FL: u8 = 3;
pub const CHMAP_FR: u8 = 4;
pub const CHMAP_RL: u8 = 5;
pub const CHMAP_RR: u8 = 6;
pub const CHMAP_FC: u8 = 7;
pub const CHMAP_LFE: u8 = 8;
pub const CHMAP_SL: u8 = 9;
pub const CHMAP_SR: u8 = 10;
pub const CHMAP_RC: u8 = 11;

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioSndConfig {
    pub jacks: Le32,
    pub streams: Le32,
    pub chmaps: Le32,
    pub controls: Le32,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Hdr {
    pub code: Le32,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Event {
    pub hdr: Hdr,
    pub data: Le32,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct QueryInfo {
    pub hdr: Hdr,
    pub start_id: Le32,
    pub count: Le32,
    pub size: Le32,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct InfoHdr {
    pub hda_fn_nid: Le32,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct JackInfo {
    pub hdr: InfoHdr,
    pub features: Le32,
    pub hda_reg_defconf: Le32,
    pub hda_reg_caps: Le32,
    pub connected: u8,
    pub padding: [u8; 7],
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PcmHdr {
    pub hdr: Hdr,
    pub stream_id: Le32,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PcmInfo {
    pub hdr: InfoHdr,
    pub features: Le32,
    pub formats: Le64,
    pub rates: Le64,
    pub direction: u8,
    pub channels_min: u8,
    pub channels_max: u8,
    pub padding: [u8; 5],
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PcmSetParams {
    pub hdr: PcmHdr,
    pub buffer_bytes: Le32,
    pub period_bytes: Le32,
    pub features: Le32,
    pub channels: u8,
    pub format: u8,
    pub rate: u8,
    pub padding: u8,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PcmXfer {
    pub stream_id: Le32,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PcmStatus {
    pub status: Le32,
    pub latency_bytes: Le32,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ChmapInfo {
    pub hdr: InfoHdr,
    pub direction: u8,
    pub channels: u8,
    pub positions: [u8; CHMAP_MAX_SIZE],
}

// SAFETY: all of these are plain-old-data repr(C) structs made of integers and byte
// arrays without implicit padding, so every byte pattern is a valid value.
unsafe impl ByteValued for VirtioSndConfig {}
// SAFETY: see above.
unsafe impl ByteValued for Hdr {}
// SAFETY: see above.
unsafe impl ByteValued for Event {}
// SAFETY: see above.
unsafe impl ByteValued for QueryInfo {}
// SAFETY: see above.
unsafe impl ByteValued for InfoHdr {}
// SAFETY: see above.
unsafe impl ByteValued for JackInfo {}
// SAFETY: see above.
unsafe impl ByteValued for PcmHdr {}
// SAFETY: see above.
unsafe impl ByteValued for PcmInfo {}
// SAFETY: see above.
unsafe impl ByteValued for PcmSetParams {}
// SAFETY: see above.
unsafe impl ByteValued for PcmXfer {}
// SAFETY: see above.
unsafe impl ByteValued for PcmStatus {}
// SAFETY: see above.
unsafe impl ByteValued for ChmapInfo {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(size_of::<VirtioSndConfig>(), 16);
        assert_eq!(size_of::<Hdr>(), 4);
        assert_eq!(size_of::<Event>(), 8);
        assert_eq!(size_of::<QueryInfo>(), 16);
        assert_eq!(size_of::<JackInfo>(), 24);
        assert_eq!(size_of::<PcmHdr>(), 8);
        assert_eq!(size_of::<PcmInfo>(), 32);
        assert_eq!(size_of::<PcmSetParams>(), 24);
        assert_eq!(size_of::<PcmXfer>(), 4);
        assert_eq!(size_of::<PcmStatus>(), 8);
        assert_eq!(size_of::<ChmapInfo>(), 24);
    }
}
