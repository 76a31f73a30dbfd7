//! Scaling interleaved samples in place, in any PCM format the device advertises:
//! how the mixer's volume reaches the audio.

use virtio_snd_wire::formats::*;

/// How a format stores one sample (its size is the format table's, `sample_bytes`).
enum Layout {
    /// An integer of `bits` significant bits (LSB-justified), little-endian; unsigned
    /// formats are offset by half their range.
    Int {
        bits: u32,
        signed: bool,
    },
    F32,
    F64,
}

fn layout(format: u8) -> Option<Layout> {
    let int = |bits, signed| Some(Layout::Int { bits, signed });
    match format {
        FMT_S8 => int(8, true),
        FMT_U8 => int(8, false),
        FMT_S16 => int(16, true),
        FMT_U16 => int(16, false),
        FMT_S18_3 => int(18, true),
        FMT_U18_3 => int(18, false),
        FMT_S20_3 => int(20, true),
        FMT_U20_3 => int(20, false),
        FMT_S24_3 | FMT_S24 => int(24, true),
        FMT_U24_3 | FMT_U24 => int(24, false),
        FMT_S32 => int(32, true),
        FMT_U32 => int(32, false),
        FMT_FLOAT => Some(Layout::F32),
        FMT_FLOAT64 => Some(Layout::F64),
        _ => None,
    }
}

/// Multiplies every sample of `data` (in virtio-snd `format`) by `gain` (0 to 1),
/// rounding and clamping to the format's range. A format the device does not know,
/// and a trailing partial sample, are left as they are.
pub(crate) fn apply(format: u8, data: &mut [u8], gain: f64) {
    let (Some(layout), Some(bytes)) = (layout(format), sample_bytes(format)) else {
        return;
    };
    let bytes = bytes as usize;
    match layout {
        Layout::Int { bits, signed } => {
            let half = 1i64 << (bits - 1);
            let mask = (1u64 << bits) - 1;
            for s in data.chunks_exact_mut(bytes) {
                let mut raw = [0u8; 8];
                raw[..bytes].copy_from_slice(s);
                let u = u64::from_le_bytes(raw) & mask;
                let v = if signed {
                    // sign-extend from `bits`
                    ((u << (64 - bits)) as i64) >> (64 - bits)
                } else {
                    u as i64 - half
                };
                let scaled = (v as f64 * gain)
                    .round()
                    .clamp(-(half as f64), (half - 1) as f64);
                let out = if signed {
                    scaled as i64
                } else {
                    scaled as i64 + half
                };
                // padding bits (above `bits`) are written as zeroes
                s.copy_from_slice(&(out as u64 & mask).to_le_bytes()[..bytes]);
            }
        }
        Layout::F32 => {
            for s in data.chunks_exact_mut(4) {
                let v = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                s.copy_from_slice(&((f64::from(v) * gain) as f32).to_le_bytes());
            }
        }
        Layout::F64 => {
            for s in data.chunks_exact_mut(8) {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(s);
                s.copy_from_slice(&(f64::from_le_bytes(raw) * gain).to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_samples_scale_around_zero() {
        let mut d: Vec<u8> = [1000i16, -1000, i16::MIN, i16::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        apply(FMT_S16, &mut d, 0.5);
        let got: Vec<i16> = d
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(got, [500, -500, -16384, 16384]);
    }

    #[test]
    fn unsigned_samples_scale_around_their_midpoint() {
        let mut d = vec![128u8, 228, 28, 0];
        apply(FMT_U8, &mut d, 0.5);
        assert_eq!(d, [128, 178, 78, 64]);
        let mut d = vec![0u8; 6];
        apply(FMT_U24_3, &mut d, 0.0);
        assert_eq!(d, [0, 0, 0x80, 0, 0, 0x80]);
    }

    #[test]
    fn packed_and_padded_formats_keep_their_width() {
        // -4 in 24-bit packed, and in 24-in-32
        let mut d = vec![0xfc, 0xff, 0xff];
        apply(FMT_S24_3, &mut d, 0.5);
        assert_eq!(d, [0xfe, 0xff, 0xff]);
        let mut d = vec![0xfc, 0xff, 0xff, 0x00];
        apply(FMT_S24, &mut d, 0.5);
        assert_eq!(d, [0xfe, 0xff, 0xff, 0x00]);
        // an 18-bit sample's sign is its bit 17
        let mut d = vec![0x00, 0x00, 0x02];
        apply(FMT_S18_3, &mut d, 0.5);
        assert_eq!(d, [0x00, 0x00, 0x03]);
        let mut d = (i32::MIN).to_le_bytes().to_vec();
        apply(FMT_S32, &mut d, 1.0);
        assert_eq!(d, i32::MIN.to_le_bytes());
    }

    #[test]
    fn floats_scale_and_partial_samples_stay() {
        let mut d: Vec<u8> = 0.8f32.to_le_bytes().to_vec();
        d.push(0x7f);
        apply(FMT_FLOAT, &mut d, 0.5);
        assert_eq!(f32::from_le_bytes([d[0], d[1], d[2], d[3]]), 0.4);
        assert_eq!(d[4], 0x7f);
        let mut d = (-0.5f64).to_le_bytes().to_vec();
        apply(FMT_FLOAT64, &mut d, 0.0);
        assert_eq!(f64::from_le_bytes(d.clone().try_into().unwrap()), -0.0);
        let mut d = vec![1u8, 2, 3];
        apply(0, &mut d, 0.5);
        assert_eq!(d, [1, 2, 3]);
    }
}
