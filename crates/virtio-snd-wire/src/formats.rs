//! The PCM formats and rates the device advertises, and the arithmetic on them.

/// virtio-snd PCM format codes the device advertises, with their sample size in bytes.
/// 20-bit-in-32 formats are left out: GStreamer has no raw format for them.
pub const FORMATS: &[(u8, u32)] = &[
    (FMT_S8, 1),
    (FMT_U8, 1),
    (FMT_S16, 2),
    (FMT_U16, 2),
    (FMT_S18_3, 3),
    (FMT_U18_3, 3),
    (FMT_S20_3, 3),
    (FMT_U20_3, 3),
    (FMT_S24_3, 3),
    (FMT_U24_3, 3),
    (FMT_S24, 4),
    (FMT_U24, 4),
    (FMT_S32, 4),
    (FMT_U32, 4),
    (FMT_FLOAT, 4),
    (FMT_FLOAT64, 8),
];

pub const FMT_S8: u8 = 3;
pub const FMT_U8: u8 = 4;
pub const FMT_S16: u8 = 5;
pub const FMT_U16: u8 = 6;
pub const FMT_S18_3: u8 = 7;
pub const FMT_U18_3: u8 = 8;
pub const FMT_S20_3: u8 = 9;
pub const FMT_U20_3: u8 = 10;
pub const FMT_S24_3: u8 = 11;
pub const FMT_U24_3: u8 = 12;
pub const FMT_S24: u8 = 15;
pub const FMT_U24: u8 = 16;
pub const FMT_S32: u8 = 17;
pub const FMT_U32: u8 = 18;
pub const FMT_FLOAT: u8 = 19;
pub const FMT_FLOAT64: u8 = 20;

/// virtio-snd rate codes and their frequencies. 384000 (code 13) is left out because
/// the Linux driver does not know it.
pub const RATES: &[(u8, u32)] = &[
    (0, 5512),
    (1, 8000),
    (2, 11025),
    (3, 16000),
    (4, 22050),
    (5, 32000),
    (6, 44100),
    (7, 48000),
    (8, 64000),
    (9, 88200),
    (10, 96000),
    (11, 176400),
    (12, 192000),
];

pub const CHANNELS_MIN: u8 = 1;
pub const CHANNELS_MAX: u8 = 8;

pub fn formats_mask() -> u64 {
    FORMATS.iter().fold(0, |m, (code, _)| m | 1 << code)
}

pub fn rates_mask() -> u64 {
    RATES.iter().fold(0, |m, (code, _)| m | 1 << code)
}

pub fn sample_bytes(format: u8) -> Option<u32> {
    FORMATS.iter().find(|(c, _)| *c == format).map(|(_, s)| *s)
}

pub fn rate_hz(rate: u8) -> Option<u32> {
    RATES.iter().find(|(c, _)| *c == rate).map(|(_, r)| *r)
}

pub fn rate_code(hz: u32) -> Option<u8> {
    RATES.iter().find(|(_, r)| *r == hz).map(|(c, _)| *c)
}

/// A stream's parameters as the guest set them, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcmParams {
    pub format: u8,
    pub rate: u8,
    pub channels: u8,
    pub buffer_bytes: u32,
    pub period_bytes: u32,
}

impl PcmParams {
    pub fn frame_bytes(&self) -> u32 {
        sample_bytes(self.format).unwrap_or(1) * u32::from(self.channels)
    }

    pub fn rate_hz(&self) -> u32 {
        rate_hz(self.rate).unwrap_or(48000)
    }

    pub fn byte_rate(&self) -> u64 {
        u64::from(self.frame_bytes()) * u64::from(self.rate_hz())
    }

    /// Nanoseconds that `bytes` of audio last.
    pub fn bytes_to_ns(&self, bytes: u64) -> u64 {
        let frames = bytes / u64::from(self.frame_bytes());
        frames_to_ns(frames, self.rate_hz())
    }

    /// `len` bytes of silence in this format: unsigned formats centre on half scale.
    pub fn silence(&self, len: usize) -> Vec<u8> {
        let pattern: &[u8] = match self.format {
            FMT_U8 => &[0x80],
            FMT_U16 => &[0x00, 0x80],
            FMT_U18_3 => &[0x00, 0x00, 0x02],
            FMT_U20_3 => &[0x00, 0x00, 0x08],
            FMT_U24_3 => &[0x00, 0x00, 0x80],
            FMT_U24 => &[0x00, 0x00, 0x80, 0x00],
            FMT_U32 => &[0x00, 0x00, 0x00, 0x80],
            _ => return vec![0; len],
        };
        pattern.iter().copied().cycle().take(len).collect()
    }
}

pub fn frames_to_ns(frames: u64, rate: u32) -> u64 {
    (u128::from(frames) * 1_000_000_000 / u128::from(rate.max(1))) as u64
}

/// Whole frames at `rate` Hz in `ns` nanoseconds.
pub fn ns_to_frames(ns: u64, rate: u32) -> u64 {
    (u128::from(ns) * u128::from(rate) / 1_000_000_000) as u64
}

/// S16LE, 48000 Hz, stereo, 10 ms periods: what the elements use before a guest chooses.
pub const DEFAULT_PARAMS: PcmParams = PcmParams {
    format: FMT_S16,
    rate: 7,
    channels: 2,
    buffer_bytes: 4 * 1920,
    period_bytes: 1920,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_lookups() {
        assert_eq!(rates_mask(), 0x1fff);
        assert!(formats_mask() & (1 << FMT_S16) != 0);
        assert_eq!(formats_mask() & (1 << 13), 0);
        assert_eq!(rate_hz(6), Some(44100));
        assert_eq!(rate_code(192000), Some(12));
        assert_eq!(rate_code(384000), None);
        assert_eq!(sample_bytes(FMT_FLOAT64), Some(8));
        assert_eq!(sample_bytes(13), None);
        assert_eq!(DEFAULT_PARAMS.frame_bytes(), 4);
        assert_eq!(DEFAULT_PARAMS.bytes_to_ns(1920), 10_000_000);
    }

    #[test]
    fn silence_centres_unsigned_formats() {
        let with = |format| PcmParams {
            format,
            ..DEFAULT_PARAMS
        };
        assert_eq!(with(FMT_S16).silence(4), [0; 4]);
        assert_eq!(with(FMT_U8).silence(3), [0x80; 3]);
        assert_eq!(with(FMT_U16).silence(4), [0, 0x80, 0, 0x80]);
        assert_eq!(with(FMT_U24).silence(5), [0, 0, 0x80, 0, 0]);
    }
}
