//! The host source's segment size, from the guest's capture period.
//!
//! GStreamer's audio sources read 10 ms segments by default. An audio server runs
//! its whole graph at its smallest client's latency: PipeWire turns a 10 ms
//! recording stream into a 256-frame (5.3 ms) cycle for every stream of that
//! device, and each cycle the loaded host misses is a quantum of zeros in the
//! microphone's audio. The guest takes its audio a period at a time, and a
//! period's last frame is captured at its end whatever the segment size, so
//! segments of one guest period cost no latency: the device completes each period
//! as its segment comes (one wake-up per period), and the server keeps the cycle a
//! desktop's other streams chose.

use std::time::Duration;

use gst::prelude::*;
use gst_audio::AudioBaseSrc;

/// Segments are never shorter than GStreamer's own default, nor longer than this:
/// the source's buffer is four of them, and a guest with second-long periods
/// gains nothing from second-long reads.
const MAX_SEGMENT: Duration = Duration::from_millis(100);

/// How many segments the source's buffer holds, at least.
const SEGMENTS: u32 = 4;

/// Sizes the segments of every audio source in `pipeline`, and of those it
/// creates later (inside `autoaudiosrc`), to `period`, unless the description set
/// them (a `latency-time` other than the default).
pub fn apply(pipeline: &gst::Pipeline, period: Duration) {
    for element in pipeline.iterate_recurse().into_iter().flatten() {
        if element.is::<AudioBaseSrc>() {
            size(&element, period);
        }
    }
    pipeline.connect_deep_element_added(move |_, _, element| {
        if element.is::<AudioBaseSrc>() {
            size(element, period);
        }
    });
}

fn size(src: &gst::Element, period: Duration) {
    let Some(default) = src
        .find_property("latency-time")
        .and_then(|p| p.downcast::<gst::glib::ParamSpecInt64>().ok())
        .map(|p| p.default_value())
    else {
        return;
    };
    if src.property_value("latency-time").get::<i64>().ok() != Some(default) {
        return;
    }
    let segment = segment_us(period, default);
    src.set_property("latency-time", segment);
    let buffer = src.property::<i64>("buffer-time");
    src.set_property("buffer-time", buffer.max(segment * i64::from(SEGMENTS)));
}

/// One guest period in microseconds, within GStreamer's default and
/// [`MAX_SEGMENT`].
fn segment_us(period: Duration, default: i64) -> i64 {
    let max = MAX_SEGMENT.as_micros() as i64;
    i64::try_from(period.as_micros())
        .unwrap_or(max)
        .clamp(default.min(max), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_segment_is_one_period_within_the_bounds() {
        assert_eq!(segment_us(125 * MS, 10_000), 100_000);
        assert_eq!(segment_us(62 * MS + MS / 2, 10_000), 62_500);
        assert_eq!(segment_us(20 * MS, 10_000), 20_000);
        assert_eq!(segment_us(5 * MS, 10_000), 10_000);
    }

    fn audio_source(pipeline: &gst::Pipeline) -> gst::Element {
        pipeline
            .iterate_recurse()
            .into_iter()
            .flatten()
            .find(|e| e.is::<AudioBaseSrc>())
            .unwrap()
    }

    /// The audio source of `desc` after `apply`.
    fn source(desc: &str, period: Duration) -> gst::Element {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        apply(&pipeline, period);
        audio_source(&pipeline)
    }

    /// An audio source added to a bin after `apply`, as `autoaudiosrc` adds its
    /// child.
    fn later_source(period: Duration) -> gst::Element {
        gst::init().unwrap();
        let pipeline = gst::Pipeline::new();
        let bin = gst::Bin::new();
        pipeline.add(&bin).unwrap();
        apply(&pipeline, period);
        bin.add(&gst::ElementFactory::make("pulsesrc").build().unwrap())
            .unwrap();
        audio_source(&pipeline)
    }

    /// pulsesrc (installed by the README's set-up) talks to a server only from
    /// READY on.
    #[test]
    fn the_pipelines_sources_read_a_period_at_a_time() {
        let src = source("pulsesrc ! fakesink", 40 * MS);
        assert_eq!(src.property::<i64>("latency-time"), 40_000);
        assert_eq!(src.property::<i64>("buffer-time"), 200_000);
        let src = later_source(80 * MS);
        assert_eq!(src.property::<i64>("latency-time"), 80_000);
        assert_eq!(src.property::<i64>("buffer-time"), 320_000);
    }

    #[test]
    fn a_segment_the_description_set_is_kept() {
        let src = source("pulsesrc latency-time=5000 ! fakesink", 40 * MS);
        assert_eq!(src.property::<i64>("latency-time"), 5000);
        assert_eq!(src.property::<i64>("buffer-time"), 200_000);
    }
}
