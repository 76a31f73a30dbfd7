//! Control elements (VIRTIO_SND_F_CTLS): the mixer controls a device may offer, their
//! requests, values and change notifications.

use vm_memory::{ByteValued, Le16, Le32};

use super::{Hdr, InfoHdr};

/// VIRTIO_SND_F_CTLS as a feature mask: the device has control elements, and the
/// config space's `controls` field counts them.
pub const F_CTLS: u64 = 1 << 0;

pub const R_CTL_INFO: u32 = 0x0300;
pub const R_CTL_ENUM_ITEMS: u32 = 0x0301;
pub const R_CTL_READ: u32 = 0x0302;
pub const R_CTL_WRITE: u32 = 0x0303;
pub const R_CTL_TLV_READ: u32 = 0x0304;
pub const R_CTL_TLV_WRITE: u32 = 0x0305;
pub const R_CTL_TLV_COMMAND: u32 = 0x0306;

/// The event a device sends when a control changed.
pub const EVT_CTL_NOTIFY: u32 = 0x1200;
/// Bits of [`CtlEvent::mask`]: what changed.
pub const CTL_EVT_MASK_VALUE: u16 = 1 << 0;
pub const CTL_EVT_MASK_INFO: u16 = 1 << 1;
pub const CTL_EVT_MASK_TLV: u16 = 1 << 2;

pub const CTL_ROLE_UNDEFINED: u32 = 0;
pub const CTL_ROLE_VOLUME: u32 = 1;
pub const CTL_ROLE_MUTE: u32 = 2;
pub const CTL_ROLE_GAIN: u32 = 3;

pub const CTL_TYPE_BOOLEAN: u32 = 0;
pub const CTL_TYPE_INTEGER: u32 = 1;
pub const CTL_TYPE_INTEGER64: u32 = 2;
pub const CTL_TYPE_ENUMERATED: u32 = 3;
pub const CTL_TYPE_BYTES: u32 = 4;
pub const CTL_TYPE_IEC958: u32 = 5;

/// Bits of [`CtlInfo::access`].
pub const CTL_ACCESS_READ: u32 = 1 << 0;
pub const CTL_ACCESS_WRITE: u32 = 1 << 1;
pub const CTL_ACCESS_VOLATILE: u32 = 1 << 2;
pub const CTL_ACCESS_INACTIVE: u32 = 1 << 3;
pub const CTL_ACCESS_TLV_READ: u32 = 1 << 4;
pub const CTL_ACCESS_TLV_WRITE: u32 = 1 << 5;
pub const CTL_ACCESS_TLV_COMMAND: u32 = 1 << 6;

/// ALSA's TLV type for a linear dB scale (`SNDRV_CTL_TLVT_DB_SCALE`), whose 8 bytes
/// of data are the minimum in 0.01 dB and the step in 0.01 dB, or'ed with
/// [`TLV_DB_SCALE_MUTE`] when the lowest value is silence.
pub const TLV_DB_SCALE: u32 = 1;
pub const TLV_DB_SCALE_MUTE: u32 = 0x1_0000;

/// Values in one [`CtlValue`] (its integer view).
pub const CTL_VALUE_INTEGERS: usize = 128;
/// Bytes in a control name, NUL-padded.
pub const CTL_NAME_SIZE: usize = 44;

/// `virtio_snd_ctl_hdr`: the request for one control.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CtlHdr {
    pub hdr: Hdr,
    pub control_id: Le32,
}

/// The `integer` member of `virtio_snd_ctl_info`'s value union.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CtlInteger {
    pub min: Le32,
    pub max: Le32,
    pub step: Le32,
}

/// `virtio_snd_ctl_info`. The value union holds 64-bit members, so C aligns it to 8
/// bytes: 4 bytes of padding precede it and the struct is 96 bytes, the size the
/// Linux driver asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CtlInfo {
    pub hdr: InfoHdr,
    pub role: Le32,
    pub type_: Le32,
    pub access: Le32,
    pub count: Le32,
    pub index: Le32,
    pub name: [u8; CTL_NAME_SIZE],
    pub padding: [u8; 4],
    pub integer: CtlInteger,
    /// The rest of the value union (the 64-bit integer member's tail).
    pub value_tail: [u8; 12],
}

impl Default for CtlInfo {
    fn default() -> Self {
        CtlInfo {
            hdr: InfoHdr::default(),
            role: Le32::default(),
            type_: Le32::default(),
            access: Le32::default(),
            count: Le32::default(),
            index: Le32::default(),
            name: [0; CTL_NAME_SIZE],
            padding: [0; 4],
            integer: CtlInteger::default(),
            value_tail: [0; 12],
        }
    }
}

impl CtlInfo {
    /// The name up to its first NUL.
    pub fn name(&self) -> &[u8] {
        let end = self
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.name.len());
        &self.name[..end]
    }
}

/// `virtio_snd_ctl_value`, seen as its 128 32-bit integers (booleans and integers use
/// the first `count` of them).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CtlValue {
    pub integer: [Le32; CTL_VALUE_INTEGERS],
}

impl Default for CtlValue {
    fn default() -> Self {
        CtlValue {
            integer: [Le32::default(); CTL_VALUE_INTEGERS],
        }
    }
}

/// `virtio_snd_ctl_event`, sent on the event queue.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CtlEvent {
    pub hdr: Hdr,
    pub control_id: Le16,
    pub mask: Le16,
}

// SAFETY: plain-old-data repr(C) structs of integers and byte arrays; the only gap
// the C layout has (before CtlInfo's value union) is an explicit field, so every byte
// pattern is a valid value.
unsafe impl ByteValued for CtlHdr {}
// SAFETY: see above.
unsafe impl ByteValued for CtlInteger {}
// SAFETY: see above.
unsafe impl ByteValued for CtlInfo {}
// SAFETY: see above.
unsafe impl ByteValued for CtlValue {}
// SAFETY: see above.
unsafe impl ByteValued for CtlEvent {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn sizes_match_the_c_layout() {
        assert_eq!(size_of::<CtlHdr>(), 8);
        assert_eq!(size_of::<CtlInfo>(), 96);
        assert_eq!(offset_of!(CtlInfo, name), 24);
        assert_eq!(offset_of!(CtlInfo, integer), 72);
        assert_eq!(size_of::<CtlValue>(), 512);
        assert_eq!(size_of::<CtlEvent>(), 8);
    }
}
