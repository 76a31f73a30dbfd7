//! What the element tests share: plugin registration, socket paths, tones in every
//! format the tests use, and a guest connected through the in-repo frontend.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use virtio_snd_frontend::FakeGuest;
use virtio_snd_wire::formats::{self, PcmParams};
use virtio_snd_wire::{QUEUE_RX, S_OK};

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub use vhostsnd_testbed::{init, socket_path};

pub fn connect(path: &std::path::Path) -> FakeGuest {
    FakeGuest::connect(path, TIMEOUT).expect("the fake guest connects")
}

/// Guest parameters with `period_frames`-frame periods and a four-period buffer.
pub fn params(format: u8, rate_hz: u32, channels: u8, period_frames: u32) -> PcmParams {
    let mut p = PcmParams {
        format,
        rate: formats::rate_code(rate_hz).expect("known rate"),
        channels,
        buffer_bytes: 0,
        period_bytes: 0,
    };
    p.period_bytes = period_frames * p.frame_bytes();
    p.buffer_bytes = 4 * p.period_bytes;
    p
}

/// `frames` frames of a tone (a different frequency per channel, starting at
/// `first_frame`) in the guest's format, as the guest would write it.
pub fn tone(p: &PcmParams, first_frame: u64, frames: u64) -> Vec<u8> {
    let rate = f64::from(p.rate_hz());
    let mut out = Vec::with_capacity((frames * u64::from(p.frame_bytes())) as usize);
    for f in first_frame..first_frame + frames {
        for c in 0..p.channels {
            let freq = 440.0 * f64::from(c + 1);
            let v = 0.5 * (2.0 * std::f64::consts::PI * freq * f as f64 / rate).sin();
            match p.format {
                formats::FMT_S16 => out.extend_from_slice(&((v * 32767.0) as i16).to_le_bytes()),
                formats::FMT_S32 => {
                    out.extend_from_slice(&((v * 2147483647.0) as i32).to_le_bytes())
                }
                formats::FMT_FLOAT => out.extend_from_slice(&(v as f32).to_le_bytes()),
                formats::FMT_U8 => out.push((v * 127.0 + 128.0) as u8),
                other => panic!("tone: format {other} not used by the tests"),
            }
        }
    }
    out
}

/// Every element message on `bus` so far, as (structure name, structure).
pub fn element_messages(bus: &gst::Bus) -> Vec<gst::Structure> {
    let mut out = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        if let Some(s) = msg.structure() {
            out.push(s.to_owned());
        }
    }
    out
}

/// Waits until `bus` has posted an element message matching `pred`.
pub fn wait_message(bus: &gst::Bus, pred: impl Fn(&gst::StructureRef) -> bool) -> gst::Structure {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[gst::MessageType::Element],
        ) {
            if let Some(s) = msg.structure() {
                if pred(s) {
                    return s.to_owned();
                }
            }
        }
    }
    panic!("no matching element message within {TIMEOUT:?}");
}

/// A harnessed vhostsndsink on `socket` that renders at once (no sync) and whose
/// device paces capture by the harness's test clock.
pub fn sink_harness(socket: &std::path::Path) -> gst_check::Harness {
    init();
    let el = gst::ElementFactory::make("vhostsndsink")
        .property("socket", socket.to_str().expect("utf-8 path"))
        .property("async", false)
        .property("sync", false)
        .build()
        .expect("vhostsndsink");
    // A harness plays an element with a sink pad at once, so it is configured first.
    gst_check::Harness::with_element(&el, Some("sink"), None)
}

/// Puts a private bus on a harnessed element so its element messages can be read.
pub fn watch_bus(element: &gst::Element) -> gst::Bus {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    bus
}

/// Pushes `data` into a harnessed vhostsndsink.
pub fn push_audio(h: &mut gst_check::Harness, data: Vec<u8>) {
    assert_eq!(
        h.push(gst::Buffer::from_mut_slice(data)),
        Ok(gst::FlowSuccess::Ok)
    );
}

/// The one capture period the guest received (and queues another buffer for).
pub fn completed(g: &mut FakeGuest, p: &PcmParams) -> Vec<u8> {
    let mut done = g.wait_io(QUEUE_RX, TIMEOUT).unwrap();
    assert_eq!(done.len(), 1);
    let c = done.remove(0);
    assert_eq!(c.status(), Some(S_OK));
    g.submit_rx(1, p.period_bytes).unwrap();
    c.data
}

/// A playing pipeline whose bus messages are collected (errors are read back), its
/// latency recalculated as an application does.
pub struct Watched {
    pub pipeline: gst::Pipeline,
    messages: Arc<Mutex<Vec<gst::Message>>>,
}

impl Watched {
    pub fn launch(desc: &str) -> Watched {
        init();
        let pipeline = gst::parse::launch(desc)
            .expect("pipeline description")
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        let bin = pipeline.clone();
        // One recalculation at a time, as from gst-launch-1.0's bus watch: two at once
        // may configure the older one's result last.
        let recalculating = Arc::new(Mutex::new(()));
        pipeline
            .bus()
            .expect("bus")
            .set_sync_handler(move |_, msg| {
                if let gst::MessageView::Latency(_) = msg.view() {
                    // What an application's bus watch does, away from the thread that
                    // posted it.
                    let bin = bin.clone();
                    let one = recalculating.clone();
                    std::thread::spawn(move || {
                        let _one = one.lock().unwrap();
                        bin.recalculate_latency()
                    });
                }
                m.lock().unwrap().push(msg.clone());
                gst::BusSyncReply::Drop
            });
        pipeline
            .set_state(gst::State::Playing)
            .expect("pipeline plays");
        Watched { pipeline, messages }
    }

    pub fn errors(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| match m.view() {
                gst::MessageView::Error(e) => Some(format!("{} ({:?})", e.error(), e.debug())),
                _ => None,
            })
            .collect()
    }

    pub fn latency(&self) -> gst::ClockTime {
        let mut q = gst::query::Latency::new();
        assert!(self.pipeline.query(&mut q), "latency query answered");
        q.result().1
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
