//! `vhostsndsrc` is the guest's playback stream. In live mode its streaming thread is
//! the sound card's clock: it waits on the pipeline clock for the end of each period,
//! then completes one guest period and pushes it (or silence: flagged GAP while the
//! guest has no stream set up), so the guest plays exactly as fast as the pipeline runs.
//! With `is-live=false` it completes guest periods as fast as downstream takes them.
//! The output keeps the format it first negotiated and converts the guest's (a sink
//! that renegotiates while playing reopens its device), unless `follow-guest-format`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use super::pool::OutputPool;
use crate::attach::Attached;
use crate::audio;
use crate::convert::Converter;
use crate::mixer::{self, Mixer};
use crate::pipeline_clock::PipelineClock;
use vhost_user_sound::{Card, DeviceEvent, Direction, PacerClock, Pacing, PcmRequest, Playback};
use virtio_snd_wire::formats::{self, PcmParams, DEFAULT_PARAMS};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "vhostsndsrc",
        gst::DebugColorFlags::empty(),
        Some("vhost-user virtio-snd playback source"),
    )
});

const DEFAULT_IS_LIVE: bool = true;
const DEFAULT_FOLLOW_GUEST_FORMAT: bool = false;

#[derive(Debug, Clone)]
struct Settings {
    socket: Option<String>,
    is_live: bool,
    follow_guest_format: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            socket: None,
            is_live: DEFAULT_IS_LIVE,
            follow_guest_format: DEFAULT_FOLLOW_GUEST_FORMAT,
        }
    }
}

/// Where the output stands: the guest's parameters, the format the output carries
/// and the running time of its next sample.
struct Timing {
    params: PcmParams,
    /// The negotiated output format, once negotiated.
    out: Option<gst_audio::AudioInfo>,
    /// Running time of the first sample since the last (re)negotiation.
    base: Option<gst::ClockTime>,
    /// Samples pushed (or skipped) since `base`.
    samples: u64,
    /// The last buffer pushed was GAP (as the output is before its first).
    gap: bool,
    /// Samples were skipped since: the next buffer is a DISCONT.
    discont: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            params: DEFAULT_PARAMS,
            out: None,
            base: None,
            samples: 0,
            gap: true,
            discont: false,
        }
    }
}

impl Timing {
    fn out_rate(&self) -> u32 {
        self.out
            .as_ref()
            .map_or(self.params.rate_hz(), |o| o.rate())
    }

    fn next_ts(&self) -> gst::ClockTime {
        self.base.unwrap_or(gst::ClockTime::ZERO)
            + gst::ClockTime::from_nseconds(formats::frames_to_ns(self.samples, self.out_rate()))
    }

    /// Output frames that take the output `ns` further from its next sample (counted
    /// from `base`, so rounding never adds up).
    fn frames_for(&self, ns: u64) -> u64 {
        let rate = self.out_rate();
        formats::ns_to_frames(formats::frames_to_ns(self.samples, rate) + ns, rate)
            .saturating_sub(self.samples)
    }
}

/// The converter from one guest format to the output's.
struct Conversion {
    from: (u8, u8, u8),
    to: gst_audio::AudioInfo,
    converter: Converter,
}

#[derive(Default)]
pub struct VhostSndSrc {
    settings: Mutex<Settings>,
    attached: Mutex<Option<Attached>>,
    mixer: Mixer,
    timing: Mutex<Timing>,
    conversion: Mutex<Option<Conversion>>,
    waiter: Mutex<Option<Arc<PipelineClock>>>,
    /// The streaming thread's: where a tick puts the guest's period, and the buffers
    /// it goes out in.
    period: Mutex<Vec<u8>>,
    pool: Mutex<OutputPool>,
    flushing: AtomicBool,
    /// The guest set parameters or started since the streaming thread last looked
    /// (set by the device hook): the next tick takes them before it waits. Otherwise
    /// each completed period brings its parameters, and the card is not asked again.
    params_changed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VhostSndSrc {
    fn card(&self) -> Result<Arc<Card>, gst::FlowError> {
        lock(&self.attached)
            .as_ref()
            .map(|a| a.card().clone())
            .ok_or(gst::FlowError::Flushing)
    }

    fn is_live(&self) -> bool {
        lock(&self.settings).is_live
    }

    fn follows_guest_format(&self) -> bool {
        lock(&self.settings).follow_guest_format
    }

    /// Takes on the guest's `params`: a new latency if its period changed, and with
    /// `follow-guest-format` a renegotiation if its format did.
    fn follow(&self, params: PcmParams) -> Result<(), gst::FlowError> {
        let mut timing = lock(&self.timing);
        let (a, b) = (timing.params, params);
        if latency(&a) != latency(&b) {
            // The pipeline planned with the old period: without a new latency, a
            // syncing sink gets every buffer late by the difference. The bin asks
            // for the latency while the message is posted, so the new parameters
            // are in place first.
            timing.params = params;
            drop(timing);
            gst::info!(CAT, imp = self, "guest period changed: new latency");
            let obj = self.obj();
            let _ = obj.post_message(gst::message::Latency::builder().src(&*obj).build());
            timing = lock(&self.timing);
        }
        timing.params = params;
        drop(timing);
        if (a.format, a.rate, a.channels) == (b.format, b.rate, b.channels) {
            return Ok(());
        }
        let Some(caps) = audio::caps(&params) else {
            return Err(gst::FlowError::NotNegotiated);
        };
        gst::info!(CAT, imp = self, "guest format changed: {caps}");
        if !self.follows_guest_format() {
            return Ok(());
        }
        self.obj().set_caps(&caps).map_err(|_| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["Downstream does not accept the guest's format {caps}"]
            );
            gst::FlowError::NotNegotiated
        })
    }

    /// Waits on the pipeline's `clock` from now on (set when going to PLAYING, so
    /// that the ticks do not ask the element for its clock).
    fn set_waiter(&self, clock: Option<gst::Clock>) {
        let mut w = lock(&self.waiter);
        match (&*w, clock) {
            (Some(p), Some(c)) if p.clock() == &c => {}
            (_, c) => *w = c.map(|c| Arc::new(PipelineClock::new(c))),
        }
    }

    /// Live: one period per period of the pipeline clock.
    fn create_live(&self, card: &Card) -> Result<gst::Buffer, gst::FlowError> {
        let period = loop {
            if self.params_changed.swap(false, Ordering::SeqCst) {
                if let Some(p) = card.snapshot(Direction::Playback).params {
                    self.follow(p)?;
                }
            }
            let waiter = lock(&self.waiter).clone();
            let base_time = self.obj().base_time().unwrap_or(gst::ClockTime::ZERO);
            let (ts, period) = {
                let mut t = lock(&self.timing);
                if t.base.is_none() {
                    let now = waiter.as_ref().map_or(base_time, |w| w.clock().time());
                    t.base = Some(now.saturating_sub(base_time));
                    t.samples = 0;
                }
                (t.next_ts(), latency(&t.params))
            };
            let Some(waiter) = waiter else {
                break period;
            };
            if waiter.wait_until((base_time + ts + period).nseconds()) {
                break period;
            }
            if self.flushing.load(Ordering::SeqCst) {
                return Err(gst::FlowError::Flushing);
            }
            // The guest set parameters or started (see the hook): the old tick ends
            // now, and the next one is a whole period of the new.
            card.playback_ticked();
            let elapsed = waiter
                .clock()
                .time()
                .saturating_sub(base_time)
                .saturating_sub(ts);
            if lock(&self.timing).gap {
                // An audio sink holds a GAP buffer until its time plus the whole
                // pipeline latency (its device's buffer included), whereas it takes
                // audio that much ahead: more GAP now would hold the streaming thread
                // past the time the guest's first periods are due. The idle stretch
                // is skipped instead.
                self.skip(elapsed);
            } else if let Some(buffer) = self.silence(elapsed, false) {
                return Ok(buffer);
            }
        };
        if self.flushing.load(Ordering::SeqCst) {
            return Err(gst::FlowError::Flushing);
        }
        let mut data = std::mem::take(&mut *lock(&self.period));
        data.clear();
        let out = match card.take_playback(&mut data) {
            Playback::Data(params) => self
                .follow(params)
                .and_then(|()| self.output(&data, &params)),
            // Silence in a stream the guest set up is audio, not GAP: its sound may
            // follow at any tick, and must not wait behind a GAP (see above).
            quiet => self
                .silence(period, matches!(quiet, Playback::Idle))
                .ok_or(gst::FlowError::NotNegotiated),
        };
        *lock(&self.period) = data;
        out
    }

    /// Offline: as fast as the guest plays and downstream takes.
    fn create_offline(&self, card: &Card) -> Result<gst::Buffer, gst::FlowError> {
        let flushing = || self.flushing.load(Ordering::SeqCst);
        let Some((data, params)) = card.wait_playback(&flushing) else {
            return Err(gst::FlowError::Flushing);
        };
        self.follow(params)?;
        self.output(&data, &params)
    }

    /// The guest's `data`, in the output's format, as the next stretch of output.
    fn output(&self, data: &[u8], params: &PcmParams) -> Result<gst::Buffer, gst::FlowError> {
        let Some(out) = lock(&self.timing).out.clone() else {
            return Err(gst::FlowError::NotNegotiated);
        };
        if audio::matches(&out, params) {
            let buffer = lock(&self.pool).copy_of(data);
            return Ok(self.stamp(buffer, false));
        }
        let from = (params.format, params.rate, params.channels);
        let mut conversion = lock(&self.conversion);
        let current = conversion.take().filter(|c| c.from == from && c.to == out);
        let mut c = match current {
            Some(c) => c,
            None => {
                let converter = audio::audio_info(params)
                    .and_then(|info| Converter::new(&info, &out))
                    .ok_or_else(|| {
                        gst::element_imp_error!(
                            self,
                            gst::CoreError::Negotiation,
                            ["Cannot convert the guest's format to {out:?}"]
                        );
                        gst::FlowError::NotNegotiated
                    })?;
                gst::info!(CAT, imp = self, "converting the guest's audio to {out:?}");
                Conversion {
                    from,
                    to: out,
                    converter,
                }
            }
        };
        let converted = c.converter.convert(data);
        *conversion = Some(c);
        drop(conversion);
        let Some(converted) = converted else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ["GStreamer's audio converter failed on a guest period"]
            );
            return Err(gst::FlowError::Error);
        };
        Ok(self.stamp(gst::Buffer::from_mut_slice(converted), false))
    }

    /// Silence (flagged GAP if `gap`) taking the output `duration` further, as the
    /// next stretch; `None` if that is not a whole frame, or the output is not
    /// negotiated yet.
    fn silence(&self, duration: gst::ClockTime, gap: bool) -> Option<gst::Buffer> {
        let (frames, out) = {
            let t = lock(&self.timing);
            (t.frames_for(duration.nseconds()), t.out.clone()?)
        };
        if frames == 0 {
            return None;
        }
        let mut buffer = lock(&self.pool).buffer((frames * u64::from(out.bpf())) as usize);
        let mut map = buffer.get_mut()?.map_writable().ok()?;
        out.format_info().fill_silence(&mut map);
        drop(map);
        Some(self.stamp(buffer, gap))
    }

    /// Takes the output `duration` further without a buffer: the next one is a
    /// DISCONT.
    fn skip(&self, duration: gst::ClockTime) {
        let mut t = lock(&self.timing);
        let frames = t.frames_for(duration.nseconds());
        if frames > 0 {
            t.samples += frames;
            t.discont = true;
        }
    }

    /// Timestamps `buffer` as the next stretch of output and advances.
    fn stamp(&self, mut buffer: gst::Buffer, gap: bool) -> gst::Buffer {
        let mut t = lock(&self.timing);
        let bpf = t.out.as_ref().map_or(t.params.frame_bytes(), |o| o.bpf());
        let frames = buffer.size() as u64 / u64::from(bpf.max(1));
        let ts = t.next_ts();
        let offset = t.samples;
        t.samples += frames;
        let end = t.next_ts();
        let b = buffer.make_mut();
        b.set_pts(ts);
        b.set_duration(end - ts);
        b.set_offset(offset);
        b.set_offset_end(offset + frames);
        if gap {
            b.set_flags(gst::BufferFlags::GAP);
        }
        if std::mem::take(&mut t.discont) {
            b.set_flags(gst::BufferFlags::DISCONT);
        }
        t.gap = gap;
        buffer
    }
}

/// The source's (minimum) latency with the guest's `p`: a period is pushed when its
/// last sample is due.
fn latency(p: &PcmParams) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(p.bytes_to_ns(u64::from(p.period_bytes)))
}

#[glib::object_subclass]
impl ObjectSubclass for VhostSndSrc {
    const NAME: &'static str = "GstVhostSndSrc";
    type Type = super::VhostSndSrc;
    type Interfaces = (gst_audio::StreamVolume,);
    type ParentType = gst_base::PushSrc;
}

// SAFETY: GstStreamVolume has no virtual methods: an implementation is an object with
// a double `volume` and a boolean `mute` property, which the element has.
unsafe impl IsImplementable<VhostSndSrc> for gst_audio::StreamVolume {}

impl ObjectImpl for VhostSndSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("socket")
                    .nick("Socket")
                    .blurb("Path of the vhost-user Unix socket QEMU connects to")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("is-live")
                    .nick("Is Live")
                    .blurb(
                        "Pace the guest by the pipeline clock; when false, complete guest \
                         periods as fast as downstream takes them (offline work)",
                    )
                    .default_value(DEFAULT_IS_LIVE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("follow-guest-format")
                    .nick("Follow Guest Format")
                    .blurb(
                        "Renegotiate to every format the guest picks, so that its samples \
                         pass unchanged; when false the output keeps the format first \
                         negotiated (the guest's, else 48 kHz S16LE stereo, or what \
                         downstream restricts it to) and the guest's audio is converted, \
                         so that a sink never reopens its device when the guest changes \
                         format",
                    )
                    .default_value(DEFAULT_FOLLOW_GUEST_FORMAT)
                    .mutable_ready()
                    .build(),
            ]
            .into_iter()
            .chain(mixer::properties(Direction::Playback))
            .collect()
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let card = self.card().ok();
        if self
            .mixer
            .set_property(pspec.name(), value, card.as_deref(), Direction::Playback)
        {
            return;
        }
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "socket" => {
                settings.socket = value.get().unwrap_or(None);
                gst::info!(CAT, imp = self, "socket set to {:?}", settings.socket);
            }
            "is-live" => {
                settings.is_live = value.get().unwrap_or(DEFAULT_IS_LIVE);
                let live = settings.is_live;
                drop(settings);
                self.obj().set_live(live);
            }
            "follow-guest-format" => {
                settings.follow_guest_format = value.get().unwrap_or(DEFAULT_FOLLOW_GUEST_FORMAT);
            }
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let card = self.card().ok();
        if let Some(v) = self
            .mixer
            .property(pspec.name(), card.as_deref(), Direction::Playback)
        {
            return v;
        }
        let settings = lock(&self.settings);
        match pspec.name() {
            "socket" => settings.socket.to_value(),
            "is-live" => settings.is_live.to_value(),
            "follow-guest-format" => settings.follow_guest_format.to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(DEFAULT_IS_LIVE);
        obj.set_format(gst::Format::Time);
    }
}

impl GstObjectImpl for VhostSndSrc {}

impl ElementImpl for VhostSndSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Virtual Machine Sound Card Source",
                "Source/Audio",
                "Serves a vhost-user virtio-snd sound card and outputs what the virtual \
                 machine plays",
                "gst-vhostsnd developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
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
        if transition == gst::StateChange::NullToReady {
            let socket = lock(&self.settings).socket.clone();
            let obj = self.obj();
            // A guest that sets parameters or starts cuts the current tick short:
            // the new format and latency go downstream at once, before its audio,
            // and its first period is completed one period after START, not at
            // whatever point of the old tick START fell on.
            let hook = Box::new(|element: &gst::Element, ev: &DeviceEvent| {
                if let DeviceEvent::Stream {
                    direction: Direction::Playback,
                    request: PcmRequest::SetParams | PcmRequest::Start,
                    ..
                } = ev
                {
                    if let Some(src) = element.downcast_ref::<super::VhostSndSrc>() {
                        src.imp().params_changed.store(true, Ordering::SeqCst);
                        if let Some(w) = lock(&src.imp().waiter).as_ref() {
                            w.interrupt();
                        }
                    }
                }
            });
            match Attached::new(
                obj.upcast_ref(),
                socket.as_deref(),
                Direction::Playback,
                Some(hook),
            ) {
                Ok(a) => {
                    self.mixer.attached(a.card(), Direction::Playback);
                    *lock(&self.attached) = Some(a);
                }
                Err(msg) => {
                    self.post_error_message(msg);
                    return Err(gst::StateChangeError);
                }
            }
        }
        let live = self.is_live();
        if transition == gst::StateChange::PausedToPlaying && live {
            let clock = self.obj().clock();
            self.set_waiter(clock.clone());
            if let Ok(card) = self.card() {
                // The card stands by on the element's clock, in case the streaming
                // thread stops ticking (see Card::take_playback).
                let clock = clock.map(|c| Arc::new(PipelineClock::new(c)) as Arc<dyn PacerClock>);
                card.set_clock(Direction::Playback, clock);
                card.set_pacing(Direction::Playback, Pacing::Element);
            }
        }
        let ret = self.parent_change_state(transition);
        match transition {
            gst::StateChange::PlayingToPaused if live => {
                if let Ok(card) = self.card() {
                    card.set_pacing(Direction::Playback, Pacing::Internal);
                    card.set_clock(Direction::Playback, None);
                }
            }
            gst::StateChange::ReadyToNull => {
                if let Some(a) = lock(&self.attached).take() {
                    self.mixer.detached(a.card(), Direction::Playback);
                }
                lock(&self.waiter).take();
            }
            _ => {}
        }
        ret
    }
}

impl BaseSrcImpl for VhostSndSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(false, Ordering::SeqCst);
        self.params_changed.store(true, Ordering::SeqCst);
        *lock(&self.timing) = Timing::default();
        lock(&self.conversion).take();
        if let Ok(card) = self.card() {
            if let Some(p) = card.snapshot(Direction::Playback).params {
                lock(&self.timing).params = p;
            }
            if !self.is_live() {
                card.set_pacing(Direction::Playback, Pacing::OnDemand);
            }
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Ok(card) = self.card() {
            card.set_pacing(Direction::Playback, Pacing::Internal);
        }
        lock(&self.pool).clear();
        Ok(())
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let (guest, out) = {
            let t = lock(&self.timing);
            (
                audio::caps(&t.params),
                t.out.as_ref().and_then(|o| o.to_caps().ok()),
            )
        };
        let caps = if self.follows_guest_format() {
            guest.unwrap_or_else(|| audio::TEMPLATE_CAPS.clone())
        } else {
            // Anything the converter makes, what the output carries first (a
            // downstream reconfiguration keeps it if it can), then the guest's format.
            let mut caps = gst::Caps::new_empty();
            for c in [out, guest].into_iter().flatten() {
                caps.merge(c);
            }
            caps.merge(audio::TEMPLATE_CAPS.clone());
            caps
        };
        Some(match filter {
            Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn fixate(&self, caps: gst::Caps) -> gst::Caps {
        // Downstream lists what it takes in its own order (opusenc: mono first): the
        // output carries what it carries already, or the guest's format, if
        // downstream takes it; where downstream leaves a choice, the nearest to it.
        let (p, out) = {
            let t = lock(&self.timing);
            (t.params, t.out.as_ref().and_then(|o| o.to_caps().ok()))
        };
        let mut caps = [out, audio::caps(&p)]
            .into_iter()
            .flatten()
            .map(|want| caps.intersect_with_mode(&want, gst::CapsIntersectMode::First))
            .find(|c| !c.is_empty())
            .unwrap_or(caps);
        caps.truncate();
        if let Some(s) = caps.make_mut().structure_mut(0) {
            s.fixate_field_nearest_int("rate", p.rate_hz() as i32);
            s.fixate_field_nearest_int("channels", i32::from(p.channels));
            if let Some(f) = audio::gst_format(p.format) {
                s.fixate_field_str("format", f.to_str());
            }
        }
        self.parent_fixate(caps)
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_audio::AudioInfo::from_caps(caps)
            .map_err(|_| gst::loggable_error!(CAT, "Unparsable caps {caps}"))?;
        let mut t = lock(&self.timing);
        if self.follows_guest_format() && !audio::matches(&info, &t.params) {
            return Err(gst::loggable_error!(
                CAT,
                "{caps} is not the guest's format"
            ));
        }
        // The running time of the next sample goes on from the old format's samples.
        if t.base.is_some() {
            t.base = Some(t.next_ts());
            t.samples = 0;
        }
        t.out = Some(info);
        gst::debug!(CAT, imp = self, "negotiated {caps}");
        Ok(())
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let min = latency(&lock(&self.timing).params);
            let live = self.is_live();
            // No maximum: what the source pushed is downstream's to hold, and the
            // guest's periods wait in guest memory, so no delay downstream loses
            // audio. (The guest's buffer as a maximum made a mixer of guests with
            // different periods fail to configure its latency.)
            q.set(live, if live { min } else { gst::ClockTime::ZERO }, None);
            return true;
        }
        BaseSrcImplExt::parent_query(self, query)
    }

    fn event(&self, event: &gst::Event) -> bool {
        if let gst::EventView::Latency(l) = event.view() {
            if let Ok(card) = self.card() {
                card.set_playback_latency(l.latency().nseconds());
            }
        }
        self.parent_event(event)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(true, Ordering::SeqCst);
        if let Some(w) = lock(&self.waiter).as_ref() {
            w.interrupt();
        }
        if let Ok(card) = self.card() {
            card.wake();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(false, Ordering::SeqCst);
        self.params_changed.store(true, Ordering::SeqCst);
        if let Some(w) = lock(&self.waiter).as_ref() {
            w.clear_interrupt();
        }
        Ok(())
    }
}

impl PushSrcImpl for VhostSndSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let card = self.card()?;
        let buffer = if self.is_live() {
            self.create_live(&card)?
        } else {
            self.create_offline(&card)?
        };
        gst::log!(CAT, imp = self, "pushing {buffer:?}");
        Ok(CreateSuccess::NewBuffer(buffer))
    }
}
