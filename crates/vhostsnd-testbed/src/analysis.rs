//! Pure signal checks for the audio tests, on interleaved sample slices (f32 in
//! -1.0..1.0; convert i16 with [`i16_to_f32`]), plus a small RIFF/WAVE reader and
//! writer (PCM 16/32-bit integer and 32-bit float).

/// Converts 16-bit samples to f32 in -1.0..1.0.
pub fn i16_to_f32(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|&s| f32::from(s) / 32768.0).collect()
}

/// Converts f32 samples to 16 bits, clamping.
pub fn f32_to_i16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// One channel of an interleaved buffer.
pub fn channel(interleaved: &[f32], channels: usize, ch: usize) -> Vec<f32> {
    assert!(channels > 0 && ch < channels, "channel {ch} of {channels}");
    interleaved
        .iter()
        .skip(ch)
        .step_by(channels)
        .copied()
        .collect()
}

/// All channels of an interleaved buffer.
pub fn deinterleave(interleaved: &[f32], channels: usize) -> Vec<Vec<f32>> {
    (0..channels)
        .map(|c| channel(interleaved, channels, c))
        .collect()
}

/// Root mean square of a slice (0 for an empty one).
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// RMS of each channel of an interleaved buffer.
pub fn rms_per_channel(interleaved: &[f32], channels: usize) -> Vec<f32> {
    deinterleave(interleaved, channels)
        .iter()
        .map(|c| rms(c))
        .collect()
}

/// Duration in seconds of an interleaved buffer.
pub fn duration_secs(interleaved_len: usize, channels: usize, rate: u32) -> f64 {
    (interleaved_len / channels) as f64 / f64::from(rate)
}

/// Generates an interleaved sine with the same signal on every channel.
pub fn sine(freq: f64, rate: u32, channels: usize, frames: usize, amplitude: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(frames * channels);
    for i in 0..frames {
        let v = amplitude
            * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32;
        out.extend(std::iter::repeat_n(v, channels));
    }
    out
}

/// Power of one frequency in a mono signal (Goertzel), normalised so that a full
/// sine of amplitude A gives about A^2 / 4.
pub fn goertzel_power(samples: &[f32], rate: u32, freq: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = samples.len() as f64;
    power / (n * n)
}

/// Dominant frequency of a mono signal in Hz, from the interpolated positions of its
/// rising zero crossings (with hysteresis against noise). Periods more than 5 % off
/// the median are ignored, so gaps and clicks do not bias the result. `None` when
/// fewer than four periods are found. Accurate to far better than 1 % for clean
/// tones of 50 Hz up to about rate/8.
pub fn dominant_frequency(samples: &[f32], rate: u32) -> Option<f64> {
    if samples.len() < 8 {
        return None;
    }
    let mean = samples.iter().map(|&s| f64::from(s)).sum::<f64>() / samples.len() as f64;
    let level = f64::from(rms(samples));
    if level <= 1e-6 {
        return None;
    }
    let hyst = 0.3 * level;
    let mut armed = false;
    let mut crossings = Vec::new();
    for i in 1..samples.len() {
        let prev = f64::from(samples[i - 1]) - mean;
        let cur = f64::from(samples[i]) - mean;
        if prev < -hyst {
            armed = true;
        }
        if armed && prev < 0.0 && cur >= 0.0 {
            let frac = if cur - prev > 0.0 {
                -prev / (cur - prev)
            } else {
                0.0
            };
            crossings.push((i - 1) as f64 + frac);
            armed = false;
        }
    }
    let mut periods: Vec<f64> = crossings.windows(2).map(|w| w[1] - w[0]).collect();
    if periods.len() < 3 {
        return None;
    }
    let mut sorted = periods.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    periods.retain(|p| (p - median).abs() <= 0.05 * median);
    if periods.is_empty() {
        return None;
    }
    let mean_period = periods.iter().sum::<f64>() / periods.len() as f64;
    Some(f64::from(rate) / mean_period)
}

/// Dominant frequency of each channel of an interleaved buffer.
pub fn dominant_frequency_per_channel(
    interleaved: &[f32],
    channels: usize,
    rate: u32,
) -> Vec<Option<f64>> {
    deinterleave(interleaved, channels)
        .iter()
        .map(|c| dominant_frequency(c, rate))
        .collect()
}

/// Frame range (start inclusive, end exclusive) of a tone in a mono signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
}

impl Segment {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn duration_secs(&self, rate: u32) -> f64 {
        self.len() as f64 / f64::from(rate)
    }
}

fn block_len(rate: u32) -> usize {
    (rate as usize / 100).max(1)
}

/// Where the tone is: from the first to the last 10 ms block whose RMS exceeds
/// `threshold_rms`, refined to the first/last sample of those blocks whose magnitude
/// exceeds `threshold_rms`. `None` if no block does.
pub fn detect_tone(samples: &[f32], rate: u32, threshold_rms: f32) -> Option<Segment> {
    let block = block_len(rate);
    let loud: Vec<usize> = samples
        .chunks(block)
        .enumerate()
        .filter(|(_, b)| rms(b) > threshold_rms)
        .map(|(i, _)| i)
        .collect();
    let (&first, &last) = (loud.first()?, loud.last()?);
    let first_start = first * block;
    let last_end = ((last + 1) * block).min(samples.len());
    let start = samples[first_start..last_end]
        .iter()
        .position(|s| s.abs() > threshold_rms)
        .map_or(first_start, |p| first_start + p);
    let end = samples[first_start..last_end]
        .iter()
        .rposition(|s| s.abs() > threshold_rms)
        .map_or(last_end, |p| first_start + p + 1);
    Some(Segment { start, end })
}

/// A stretch inside a tone whose level dropped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// First frame of the first quiet 10 ms window.
    pub start: usize,
    /// End of the last quiet 10 ms window.
    pub end: usize,
    /// Lowest window RMS in the stretch, relative to the median window RMS.
    pub min_ratio: f32,
}

/// Dropout check: every 10 ms window lying inside `segment` (slid in 1 ms steps, so
/// a gap is caught wherever it falls) must have an RMS of at least half the median
/// window RMS. Returns the stretches where that fails, merged.
pub fn find_dropouts(samples: &[f32], rate: u32, segment: Segment) -> Vec<Dropout> {
    let win = block_len(rate);
    let hop = (rate as usize / 1000).max(1);
    let end = segment.end.min(samples.len());
    if segment.start >= end || end - segment.start < win {
        return Vec::new();
    }
    let seg = &samples[segment.start..end];
    let mut prefix = Vec::with_capacity(seg.len() + 1);
    prefix.push(0.0f64);
    for &s in seg {
        let last = *prefix.last().unwrap_or(&0.0);
        prefix.push(last + f64::from(s) * f64::from(s));
    }
    let starts: Vec<usize> = (0..=seg.len() - win).step_by(hop).collect();
    let levels: Vec<f64> = starts
        .iter()
        .map(|&i| ((prefix[i + win] - prefix[i]) / win as f64).max(0.0).sqrt())
        .collect();
    let mut sorted = levels.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    if median <= 0.0 {
        return Vec::new();
    }
    let mut out: Vec<Dropout> = Vec::new();
    let mut prev_quiet = false;
    for (&i, &l) in starts.iter().zip(&levels) {
        let quiet = l < 0.5 * median;
        if quiet {
            let (s, e, r) = (
                segment.start + i,
                segment.start + i + win,
                (l / median) as f32,
            );
            match out.last_mut() {
                Some(d) if prev_quiet => {
                    d.end = e;
                    d.min_ratio = d.min_ratio.min(r);
                }
                _ => out.push(Dropout {
                    start: s,
                    end: e,
                    min_ratio: r,
                }),
            }
        }
        prev_quiet = quiet;
    }
    out
}

/// Sample encoding of a WAV file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WavFormat {
    I16,
    I32,
    F32,
}

/// A decoded WAV file; samples are interleaved f32 whatever the file held.
#[derive(Clone, Debug, PartialEq)]
pub struct Wav {
    pub rate: u32,
    pub channels: usize,
    pub format: WavFormat,
    pub samples: Vec<f32>,
}

impl Wav {
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels
    }

    pub fn duration_secs(&self) -> f64 {
        duration_secs(self.samples.len(), self.channels, self.rate)
    }

    pub fn channel(&self, ch: usize) -> Vec<f32> {
        channel(&self.samples, self.channels, ch)
    }
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a RIFF/WAVE file: PCM 16/32-bit integer or 32-bit float, plain or
/// WAVE_FORMAT_EXTENSIBLE. A data chunk whose size runs past the end of the file (as
/// `arecord` writes to a pipe) is cut to what is there.
pub fn read_wav(bytes: &[u8]) -> Result<Wav, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut pos = 12;
    let mut fmt: Option<(u16, usize, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = le_u32(bytes, pos + 4).ok_or("truncated chunk header")? as usize;
        let body = pos + 8;
        if id == b"fmt " {
            let f = bytes
                .get(body..body + size.min(bytes.len() - body))
                .ok_or("truncated fmt chunk")?;
            let mut tag = le_u16(f, 0).ok_or("short fmt chunk")?;
            let channels = le_u16(f, 2).ok_or("short fmt chunk")? as usize;
            let rate = le_u32(f, 4).ok_or("short fmt chunk")?;
            let bits = le_u16(f, 14).ok_or("short fmt chunk")?;
            if tag == 0xfffe {
                tag = le_u16(f, 24).ok_or("short extensible fmt chunk")?;
            }
            fmt = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = fmt.ok_or("data chunk before fmt chunk")?;
            if channels == 0 {
                return Err("zero channels".into());
            }
            let format = match (tag, bits) {
                (1, 16) => WavFormat::I16,
                (1, 32) => WavFormat::I32,
                (3, 32) => WavFormat::F32,
                _ => return Err(format!("unsupported WAV format tag {tag} with {bits} bits")),
            };
            let end = body.saturating_add(size).min(bytes.len());
            let data = &bytes[body..end];
            let samples = match format {
                WavFormat::I16 => data
                    .chunks_exact(2)
                    .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
                    .collect(),
                WavFormat::I32 => data
                    .chunks_exact(4)
                    .map(|c| {
                        (f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])) / 2147483648.0)
                            as f32
                    })
                    .collect::<Vec<f32>>(),
                WavFormat::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            };
            let mut samples: Vec<f32> = samples;
            samples.truncate(samples.len() / channels * channels);
            return Ok(Wav {
                rate,
                channels,
                format,
                samples,
            });
        }
        pos = body.saturating_add(size + (size & 1));
    }
    Err("no data chunk".into())
}

/// Encodes interleaved f32 samples as a WAV file in `format`.
pub fn write_wav(format: WavFormat, rate: u32, channels: usize, samples: &[f32]) -> Vec<u8> {
    let (tag, bits): (u16, u16) = match format {
        WavFormat::I16 => (1, 16),
        WavFormat::I32 => (1, 32),
        WavFormat::F32 => (3, 32),
    };
    let bytes_per = usize::from(bits / 8);
    let data_len = samples.len() * bytes_per;
    let mut out = Vec::with_capacity(44 + data_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((36 + data_len) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(channels as u16).to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * (channels * bytes_per) as u32).to_le_bytes());
    out.extend_from_slice(&((channels * bytes_per) as u16).to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    for &s in samples {
        match format {
            WavFormat::I16 => out.extend_from_slice(&f32_to_i16(&[s])[0].to_le_bytes()),
            WavFormat::I32 => {
                let v = (f64::from(s) * 2147483648.0)
                    .round()
                    .clamp(-2147483648.0, 2147483647.0) as i32;
                out.extend_from_slice(&v.to_le_bytes());
            }
            WavFormat::F32 => out.extend_from_slice(&s.to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48000;

    #[test]
    fn frequency_is_accurate_across_the_band() {
        for &f in &[200.0, 261.63, 440.0, 997.0, 1000.0, 2500.0, 4000.0] {
            let s = sine(f, RATE, 1, RATE as usize / 2, 0.5);
            let got = dominant_frequency(&s, RATE).expect("a frequency");
            assert!((got - f).abs() / f < 0.001, "{f} Hz measured as {got}");
        }
        // 44.1 kHz and a quiet tone with noise.
        let mut s = sine(1234.0, 44100, 1, 44100, 0.05);
        let mut x = 1u32;
        for v in &mut s {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            *v += ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.01;
        }
        let got = dominant_frequency(&s, 44100).expect("a frequency");
        assert!(
            (got - 1234.0).abs() / 1234.0 < 0.01,
            "noisy 1234 Hz measured as {got}"
        );
        assert_eq!(dominant_frequency(&vec![0.0; 4800], RATE), None);
    }

    #[test]
    fn per_channel_frequencies_and_levels() {
        let left = sine(440.0, RATE, 1, 24000, 0.5);
        let right = sine(880.0, RATE, 1, 24000, 0.25);
        let stereo: Vec<f32> = left
            .iter()
            .zip(&right)
            .flat_map(|(&l, &r)| [l, r])
            .collect();
        let f = dominant_frequency_per_channel(&stereo, 2, RATE);
        assert!((f[0].expect("left") - 440.0).abs() < 0.5);
        assert!((f[1].expect("right") - 880.0).abs() < 0.5);
        let r = rms_per_channel(&stereo, 2);
        assert!((r[0] - 0.5 / 2f32.sqrt()).abs() < 1e-3, "{r:?}");
        assert!((r[1] - 0.25 / 2f32.sqrt()).abs() < 1e-3, "{r:?}");
        assert!((duration_secs(stereo.len(), 2, RATE) - 0.5).abs() < 1e-9);
        assert!(goertzel_power(&left, RATE, 440.0) > 100.0 * goertzel_power(&left, RATE, 880.0));
    }

    #[test]
    fn tone_segment_is_found() {
        let mut s = vec![0.0f32; 4800];
        s.extend(sine(1000.0, RATE, 1, 48000, 0.5));
        s.extend(vec![0.0f32; 9600]);
        let seg = detect_tone(&s, RATE, 0.05).expect("a tone");
        assert!(seg.start.abs_diff(4800) <= 48, "{seg:?}");
        assert!(seg.end.abs_diff(4800 + 48000) <= 48, "{seg:?}");
        assert!((seg.duration_secs(RATE) - 1.0).abs() < 0.002);
        assert_eq!(detect_tone(&vec![0.001; 48000], RATE, 0.05), None);
    }

    #[test]
    fn clean_tone_has_no_dropouts() {
        for &f in &[200.0, 441.0, 3999.0] {
            let s = sine(f, RATE, 1, 96000, 0.5);
            let seg = detect_tone(&s, RATE, 0.05).expect("a tone");
            assert_eq!(find_dropouts(&s, RATE, seg), vec![], "{f} Hz");
        }
    }

    #[test]
    fn injected_10ms_dropout_is_found() {
        for &offset in &[30_000usize, 30_240, 55_123] {
            let mut s = sine(440.0, RATE, 1, 96000, 0.5);
            for v in &mut s[offset..offset + 480] {
                *v = 0.0;
            }
            let seg = detect_tone(&s, RATE, 0.05).expect("a tone");
            let d = find_dropouts(&s, RATE, seg);
            assert_eq!(d.len(), 1, "offset {offset}: {d:?}");
            assert!(d[0].start <= offset + 480 && d[0].end >= offset, "{d:?}");
            // Windows start every 1 ms, so one overlaps at least 9 ms of the gap.
            assert!(d[0].min_ratio < 0.35, "{d:?}");
        }
        // A 10 ms stretch at -20 dB counts as a dropout too.
        let mut s = sine(440.0, RATE, 1, 96000, 0.5);
        for v in &mut s[40_000..40_480] {
            *v *= 0.1;
        }
        let seg = detect_tone(&s, RATE, 0.05).expect("a tone");
        assert_eq!(find_dropouts(&s, RATE, seg).len(), 1);
    }

    #[test]
    fn wav_roundtrip() {
        let s: Vec<f32> = sine(440.0, RATE, 2, 1000, 0.5);
        for fmt in [WavFormat::I16, WavFormat::I32, WavFormat::F32] {
            let bytes = write_wav(fmt, RATE, 2, &s);
            let w = read_wav(&bytes).expect("reads back");
            assert_eq!(
                (w.rate, w.channels, w.format, w.frames()),
                (RATE, 2, fmt, 1000)
            );
            let tol = if fmt == WavFormat::I16 { 1e-4 } else { 1e-7 };
            for (a, b) in w.samples.iter().zip(&s) {
                assert!((a - b).abs() < tol, "{fmt:?}: {a} vs {b}");
            }
        }
        // A streaming header (data size 0x7fffffff) is cut to the bytes present.
        let mut bytes = write_wav(WavFormat::I16, RATE, 2, &s);
        bytes[40..44].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        assert_eq!(read_wav(&bytes).expect("reads").frames(), 1000);
        assert!(read_wav(b"RIFX").is_err());
    }
}
