//! What the guest's PCM parameters mean in GStreamer terms, shared by both elements.

use std::sync::LazyLock;

use gst_audio::{AudioChannelPosition as Pos, AudioFormat, AudioInfo};

use vhost_user_sound::{DeviceEvent, Direction, PcmRequest, Topology};
use virtio_snd_wire as wire;
use virtio_snd_wire::formats::{self, PcmParams};

/// virtio-snd format codes and the GStreamer formats with the same memory layout.
const FORMATS: &[(u8, AudioFormat)] = &[
    (formats::FMT_S8, AudioFormat::S8),
    (formats::FMT_U8, AudioFormat::U8),
    (formats::FMT_S16, AudioFormat::S16le),
    (formats::FMT_U16, AudioFormat::U16le),
    (formats::FMT_S18_3, AudioFormat::S18le),
    (formats::FMT_U18_3, AudioFormat::U18le),
    (formats::FMT_S20_3, AudioFormat::S20le),
    (formats::FMT_U20_3, AudioFormat::U20le),
    (formats::FMT_S24_3, AudioFormat::S24le),
    (formats::FMT_U24_3, AudioFormat::U24le),
    (formats::FMT_S24, AudioFormat::S2432le),
    (formats::FMT_U24, AudioFormat::U2432le),
    (formats::FMT_S32, AudioFormat::S32le),
    (formats::FMT_U32, AudioFormat::U32le),
    (formats::FMT_FLOAT, AudioFormat::F32le),
    (formats::FMT_FLOAT64, AudioFormat::F64le),
];

pub fn gst_format(code: u8) -> Option<AudioFormat> {
    FORMATS.iter().find(|(c, _)| *c == code).map(|(_, f)| *f)
}

fn position(p: u8) -> Pos {
    match p {
        wire::CHMAP_MONO => Pos::Mono,
        wire::CHMAP_FL => Pos::FrontLeft,
        wire::CHMAP_FR => Pos::FrontRight,
        wire::CHMAP_RL => Pos::RearLeft,
        wire::CHMAP_RR => Pos::RearRight,
        wire::CHMAP_FC => Pos::FrontCenter,
        wire::CHMAP_LFE => Pos::Lfe1,
        wire::CHMAP_SL => Pos::SideLeft,
        wire::CHMAP_SR => Pos::SideRight,
        wire::CHMAP_RC => Pos::RearCenter,
        _ => Pos::None,
    }
}

/// The GStreamer description of audio in the guest's format.
pub fn audio_info(p: &PcmParams) -> Option<AudioInfo> {
    let format = gst_format(p.format)?;
    let positions: Vec<Pos> = Topology::layout(p.channels)?
        .iter()
        .map(|c| position(*c))
        .collect();
    AudioInfo::builder(format, p.rate_hz(), u32::from(p.channels))
        .positions(&positions)
        .build()
        .ok()
}

pub fn caps(p: &PcmParams) -> Option<gst::Caps> {
    audio_info(p)?.to_caps().ok()
}

/// Whether negotiated caps carry exactly the guest's format.
///
/// Called for every buffer both elements handle, so it compares fields instead of
/// building the guest's `AudioInfo` (an allocation for its channel positions).
pub fn matches(info: &AudioInfo, p: &PcmParams) -> bool {
    gst_format(p.format) == Some(info.format())
        && info.rate() == p.rate_hz()
        && info.channels() == u32::from(p.channels)
        && Topology::layout(p.channels).is_some()
}

/// Everything the device can carry: the elements' template caps.
pub static TEMPLATE_CAPS: LazyLock<gst::Caps> = LazyLock::new(|| {
    gst_audio::AudioCapsBuilder::new_interleaved()
        .format_list(FORMATS.iter().map(|(_, f)| *f))
        .rate_list(formats::RATES.iter().map(|(_, r)| *r as i32))
        .channels_range(i32::from(formats::CHANNELS_MIN)..=i32::from(formats::CHANNELS_MAX))
        .build()
});

fn request_name(r: PcmRequest) -> &'static str {
    match r {
        PcmRequest::SetParams => "set-params",
        PcmRequest::Prepare => "prepare",
        PcmRequest::Start => "start",
        PcmRequest::Stop => "stop",
        PcmRequest::Release => "release",
    }
}

/// The element message an application sees for a device event concerning `dir`
/// (connection events concern both), or `None`.
pub fn event_message(ev: &DeviceEvent, dir: Direction) -> Option<gst::Structure> {
    match ev {
        DeviceEvent::Connected | DeviceEvent::Disconnected => Some(
            gst::Structure::builder("vhostsnd-connection")
                .field("connected", matches!(ev, DeviceEvent::Connected))
                .build(),
        ),
        DeviceEvent::Stream {
            direction,
            request,
            params,
        } if *direction == dir => {
            let mut s = gst::Structure::builder("vhostsnd-stream")
                .field("event", request_name(*request))
                .field("stream", direction.stream_id())
                .field("direction", direction.name());
            if let Some(p) = params {
                if let Some(f) = gst_format(p.format) {
                    s = s.field("format", f.to_str());
                }
                s = s
                    .field("rate", p.rate_hz() as i32)
                    .field("channels", i32::from(p.channels))
                    .field("period-bytes", p.period_bytes)
                    .field("buffer-bytes", p.buffer_bytes);
            }
            Some(s.build())
        }
        DeviceEvent::Stream { .. } | DeviceEvent::Mixer { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_format_maps_with_the_same_sample_size() {
        gst::init().unwrap();
        for (code, size) in formats::FORMATS {
            let f = gst_format(*code).unwrap();
            let info = gst_audio::AudioFormatInfo::from_format(f);
            assert_eq!(info.width() / 8, *size, "{f:?}");
        }
    }

    #[test]
    fn channel_layouts_need_no_reordering() {
        gst::init().unwrap();
        for channels in 1..=8u8 {
            let p = PcmParams {
                channels,
                ..formats::DEFAULT_PARAMS
            };
            let info = audio_info(&p).unwrap();
            assert_eq!(info.channels(), u32::from(channels));
            assert!(!info.is_unpositioned(), "{channels} channels");
            let caps = caps(&p).unwrap();
            let back = AudioInfo::from_caps(&caps).unwrap();
            assert_eq!(back.positions(), info.positions());
        }
    }
}
