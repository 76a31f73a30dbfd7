//! Just enough RIFF/WAVE for the fake guest: PCM integer and IEEE float, little-endian.

use std::io;

use virtio_snd_wire::formats;

pub struct Wav {
    pub format: u8,
    pub rate: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The virtio-snd format of WAV samples (`tag` 1 = PCM, 3 = IEEE float).
fn virtio_format(tag: u16, bits: u16) -> Option<u8> {
    Some(match (tag, bits) {
        (1, 8) => formats::FMT_U8,
        (1, 16) => formats::FMT_S16,
        (1, 24) => formats::FMT_S24_3,
        (1, 32) => formats::FMT_S32,
        (3, 32) => formats::FMT_FLOAT,
        (3, 64) => formats::FMT_FLOAT64,
        _ => return None,
    })
}

pub fn read(bytes: &[u8]) -> io::Result<Wav> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("not a RIFF/WAVE file"));
    }
    let (mut fmt, mut data) = (None, None);
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = le32(&bytes[pos + 4..]) as usize;
        let body = &bytes[pos + 8..(pos + 8 + len).min(bytes.len())];
        match id {
            b"fmt " if body.len() >= 16 => fmt = Some(body),
            b"data" => data = Some(body),
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    let fmt = fmt.ok_or_else(|| bad("no fmt chunk"))?;
    let data = data.ok_or_else(|| bad("no data chunk"))?;
    let mut tag = le16(fmt);
    let bits = le16(&fmt[14..]);
    if tag == 0xfffe && fmt.len() >= 26 {
        // WAVE_FORMAT_EXTENSIBLE: the real tag starts the sub-format GUID.
        tag = le16(&fmt[24..]);
    }
    let format = virtio_format(tag, bits)
        .ok_or_else(|| bad(&format!("unsupported sample format {tag}/{bits} bits")))?;
    let channels = u8::try_from(le16(&fmt[2..])).map_err(|_| bad("too many channels"))?;
    Ok(Wav {
        format,
        rate: le32(&fmt[4..]),
        channels,
        data: data.to_vec(),
    })
}

/// 16-bit PCM, the format the fake guest records in.
pub fn write_s16(rate: u32, channels: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}
