//! `vhostsndsink` is the guest's capture stream. Rendering (synced to the clock by
//! GstBaseSink) hands each buffer to the device with the clock time it was captured
//! at; the device completes every guest period the buffer fills, right there on the
//! streaming thread, so the guest's recording starts with the audio from its START
//! and lags upstream by at most a period. When upstream stalls the device's pacer
//! completes periods with silence. In PLAYING the device follows the pipeline clock.
//! Rendering never blocks: audio nobody captures is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use crate::attach::Attached;
use crate::audio;
use crate::mixer::{self, Mixer};
use crate::pipeline_clock::PipelineClock;
use vhost_user_sound::{Captured, Card, DeviceEvent, Direction, Pacing, PcmRequest};
use virtio_snd_wire::formats::DEFAULT_PARAMS;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "vhostsndsink",
        gst::DebugColorFlags::empty(),
        Some("vhost-user virtio-snd capture sink"),
    )
});

#[derive(Debug, Clone, Default)]
struct Settings {
    socket: Option<String>,
}

/// Counts dropped buffers so the log says so once a second, not once a buffer.
#[derive(Default)]
struct Drops {
    count: u64,
    last_report: Option<Instant>,
}

#[derive(Default)]
pub struct VhostSndSink {
    settings: Mutex<Settings>,
    attached: Mutex<Option<Attached>>,
    mixer: Mixer,
    negotiated: Mutex<Option<gst_audio::AudioInfo>>,
    /// Upstream's time segment, from its SEGMENT event: GstBaseSink hands out its own
    /// only as a copy, one allocation per buffer.
    segment: Mutex<Option<gst::FormattedSegment<gst::ClockTime>>>,
    /// PLAYING on a clock, which the device follows: buffers have a capture time.
    clocked: AtomicBool,
    /// Who paced capture before the element took over in PLAYING.
    pacing_before: Mutex<Option<Pacing>>,
    drops: Mutex<Drops>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VhostSndSink {
    fn card(&self) -> Option<Arc<Card>> {
        lock(&self.attached).as_ref().map(|a| a.card().clone())
    }

    /// When `buffer`'s first sample was captured, on the pipeline clock the device
    /// follows in PLAYING.
    fn captured_at(&self, buffer: &gst::Buffer) -> Option<u64> {
        if !self.clocked.load(Ordering::Acquire) {
            return None;
        }
        let base = self.obj().base_time()?;
        let running = lock(&self.segment)
            .as_ref()?
            .to_running_time(buffer.pts()?)?;
        Some((base + running).nseconds())
    }

    fn dropped(&self, why: &str) {
        let mut d = lock(&self.drops);
        d.count += 1;
        let due = d
            .last_report
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            gst::debug!(CAT, imp = self, "dropped {} buffer(s): {why}", d.count);
            d.count = 0;
            d.last_report = Some(Instant::now());
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for VhostSndSink {
    const NAME: &'static str = "GstVhostSndSink";
    type Type = super::VhostSndSink;
    type Interfaces = (gst_audio::StreamVolume,);
    type ParentType = gst_base::BaseSink;
}

// SAFETY: GstStreamVolume has no virtual methods: an implementation is an object with
// a double `volume` and a boolean `mute` property, which the element has.
unsafe impl IsImplementable<VhostSndSink> for gst_audio::StreamVolume {}

impl ObjectImpl for VhostSndSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            std::iter::once(
                glib::ParamSpecString::builder("socket")
                    .nick("Socket")
                    .blurb("Path of the vhost-user Unix socket QEMU connects to")
                    .mutable_ready()
                    .build(),
            )
            .chain(mixer::properties(Direction::Capture))
            .collect()
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let card = self.card();
        if self
            .mixer
            .set_property(pspec.name(), value, card.as_deref(), Direction::Capture)
        {
            return;
        }
        if pspec.name() == "socket" {
            let socket: Option<String> = value.get().unwrap_or(None);
            gst::info!(CAT, imp = self, "socket set to {socket:?}");
            lock(&self.settings).socket = socket;
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let card = self.card();
        if let Some(v) = self
            .mixer
            .property(pspec.name(), card.as_deref(), Direction::Capture)
        {
            return v;
        }
        match pspec.name() {
            "socket" => lock(&self.settings).socket.to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        // Rendering only hands audio to the device, which completes the guest's
        // periods at once: GstBaseSink's default 20 ms processing deadline would hold
        // every buffer back 20 ms more for nothing.
        self.obj().set_processing_deadline(gst::ClockTime::ZERO);
    }
}

impl GstObjectImpl for VhostSndSink {}

impl ElementImpl for VhostSndSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Virtual Machine Sound Card Sink",
                "Sink/Audio",
                "Serves a vhost-user virtio-snd sound card and makes its input the \
                 virtual machine's microphone",
                "gst-vhostsnd developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &audio::TEMPLATE_CAPS,
            )
            .map(|t| vec![t])
            .unwrap_or_default()
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        match transition {
            gst::StateChange::NullToReady => {
                let socket = lock(&self.settings).socket.clone();
                // When the guest picks a new capture format, upstream has to
                // renegotiate to it.
                let hook = Box::new(|element: &gst::Element, ev: &DeviceEvent| {
                    if let DeviceEvent::Stream {
                        direction: Direction::Capture,
                        request: PcmRequest::SetParams,
                        ..
                    } = ev
                    {
                        if let Some(pad) = element.static_pad("sink") {
                            pad.push_event(gst::event::Reconfigure::new());
                        }
                    }
                });
                let obj = self.obj();
                match Attached::new(
                    obj.upcast_ref(),
                    socket.as_deref(),
                    Direction::Capture,
                    Some(hook),
                ) {
                    Ok(a) => {
                        self.mixer.attached(a.card(), Direction::Capture);
                        *lock(&self.attached) = Some(a);
                    }
                    Err(msg) => {
                        self.post_error_message(msg);
                        return Err(gst::StateChangeError);
                    }
                }
            }
            gst::StateChange::PausedToPlaying => {
                if let (Some(card), Some(clock)) = (self.card(), self.obj().clock()) {
                    card.set_clock(
                        Direction::Capture,
                        Some(Arc::new(PipelineClock::new(clock))),
                    );
                    self.clocked.store(true, Ordering::Release);
                    // Upstream's audio completes the guest's periods from now on.
                    let was = card.set_pacing(Direction::Capture, Pacing::Element);
                    *lock(&self.pacing_before) = Some(was);
                }
            }
            _ => {}
        }
        let ret = self.parent_change_state(transition);
        match transition {
            gst::StateChange::PlayingToPaused => {
                self.clocked.store(false, Ordering::Release);
                if let Some(card) = self.card() {
                    // As the application left it (the daemon keeps Element, so that
                    // the first period of the next capture waits for its source).
                    if let Some(was) = lock(&self.pacing_before).take() {
                        card.set_pacing(Direction::Capture, was);
                    }
                    card.set_clock(Direction::Capture, None);
                }
            }
            gst::StateChange::ReadyToNull => {
                if let Some(card) = self.card() {
                    card.set_clock(Direction::Capture, None);
                }
                if let Some(a) = lock(&self.attached).take() {
                    self.mixer.detached(a.card(), Direction::Capture);
                }
            }
            _ => {}
        }
        ret
    }
}

impl BaseSinkImpl for VhostSndSink {
    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let params = self
            .card()
            .and_then(|c| c.snapshot(Direction::Capture).params)
            .unwrap_or(DEFAULT_PARAMS);
        let caps = audio::caps(&params).unwrap_or_else(|| audio::TEMPLATE_CAPS.clone());
        Some(match filter {
            Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_audio::AudioInfo::from_caps(caps)
            .map_err(|_| gst::loggable_error!(CAT, "Unparsable caps {caps}"))?;
        gst::debug!(CAT, imp = self, "negotiated {caps}");
        *lock(&self.negotiated) = Some(info);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        lock(&self.negotiated).take();
        lock(&self.segment).take();
        Ok(())
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Segment(s) = event.view() {
            *lock(&self.segment) = s.segment().downcast_ref::<gst::ClockTime>().cloned();
        }
        self.parent_event(event)
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(card) = self.card() else {
            return Err(gst::FlowError::Flushing);
        };
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ["Failed to map buffer"]);
            gst::FlowError::Error
        })?;
        let at = self.captured_at(buffer);
        let negotiated = lock(&self.negotiated);
        let pushed = card.push_capture_as(&map, at, |params| {
            negotiated
                .as_ref()
                .is_some_and(|info| audio::matches(info, params))
        });
        drop(negotiated);
        match pushed {
            Captured::Queued => {}
            Captured::NoFormat => self.dropped("the guest has not set up capture"),
            Captured::OtherFormat => {
                self.dropped("waiting for upstream to switch to the guest's format");
                self.obj()
                    .sink_pad()
                    .push_event(gst::event::Reconfigure::new());
            }
            Captured::NotCapturing => self.dropped("the guest is not capturing"),
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
