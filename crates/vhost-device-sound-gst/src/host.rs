//! The host side of each direction: a pipeline around the element, built from the
//! user's description, that can fail and come back without the guest noticing more
//! than silence.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use gst::prelude::*;
use log::{error, info};

use crate::{naming, segment};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Playback,
    Capture,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Playback => "playback",
            Side::Capture => "capture",
        }
    }
}

/// How long a failed playback pipeline waits before it is tried again.
const RETRY: Duration = Duration::from_secs(5);

pub struct HostPipeline {
    side: Side,
    launch: String,
    socket: String,
    /// The VM's name on the audio server's streams.
    name: String,
    running: RefCell<Option<(gst::Pipeline, gst::bus::BusWatchGuard)>>,
    /// Whether the pipeline should run (a failed one is retried only then).
    wanted: RefCell<bool>,
    /// The guest's capture period, which sizes the host source's reads.
    period: Cell<Option<Duration>>,
}

impl HostPipeline {
    /// Checks `desc` by building the pipeline once, so that a bad description or a
    /// missing plugin is reported at start-up.
    pub fn new(side: Side, desc: &str, socket: &str, name: &str) -> Result<Rc<Self>, String> {
        let launch = match side {
            Side::Playback => format!("vhostsndsrc name=vhostsnd ! {desc}"),
            Side::Capture => format!("{desc} ! vhostsndsink name=vhostsnd"),
        };
        let p = Rc::new(HostPipeline {
            side,
            launch,
            socket: socket.to_owned(),
            name: name.to_owned(),
            running: RefCell::new(None),
            wanted: RefCell::new(false),
            period: Cell::new(None),
        });
        p.build()?;
        Ok(p)
    }

    fn build(&self) -> Result<gst::Pipeline, String> {
        let what = self.side.name();
        let element = gst::parse::launch(&self.launch)
            .map_err(|e| format!("{what} pipeline '{}': {e}", self.launch))?;
        let pipeline = element
            .downcast::<gst::Pipeline>()
            .map_err(|_| format!("{what} pipeline '{}' is a single element", self.launch))?;
        let vhostsnd = pipeline
            .by_name("vhostsnd")
            .ok_or_else(|| format!("{what} pipeline has no vhostsnd element"))?;
        vhostsnd.set_property("socket", &self.socket);
        naming::apply(&pipeline, &vhostsnd, &self.name, self.side);
        if let (Side::Capture, Some(period)) = (self.side, self.period.get()) {
            segment::apply(&pipeline, period);
        }
        Ok(pipeline)
    }

    /// Runs the pipeline (again). Failures are logged; the guest's card stays.
    pub fn start(self: &Rc<Self>) {
        *self.wanted.borrow_mut() = true;
        if self.running.borrow().is_some() {
            return;
        }
        let what = self.side.name();
        let pipeline = match self.build() {
            Ok(p) => p,
            Err(e) => {
                error!("{e}");
                return;
            }
        };
        let Some(bus) = pipeline.bus() else {
            error!("{what} pipeline has no bus");
            return;
        };
        let weak = Rc::downgrade(self);
        let watch = bus.add_watch_local(move |_, msg| {
            if let Some(this) = weak.upgrade() {
                this.on_message(msg);
            }
            gst::glib::ControlFlow::Continue
        });
        let watch = match watch {
            Ok(w) => w,
            Err(e) => {
                error!("{what}: cannot watch the pipeline's bus: {e}");
                return;
            }
        };
        info!("{what}: starting host pipeline: {}", self.launch);
        *self.running.borrow_mut() = Some((pipeline.clone(), watch));
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            // The bus has the error message with the reason; on_message reports it.
            info!("{what}: host pipeline did not start: {e}");
        }
    }

    /// The guest's period, for the capture pipelines built from now on.
    pub fn set_period(&self, period: Option<Duration>) {
        self.period.set(period);
    }

    /// Whether the pipeline is meant to run (it may be failing and about to retry).
    pub fn wanted(&self) -> bool {
        *self.wanted.borrow()
    }

    pub fn stop(&self) {
        *self.wanted.borrow_mut() = false;
        self.teardown();
    }

    /// Ends the pipeline for good at shutdown, letting it drain first so that file
    /// outputs (wavenc, mp4mux, ...) are complete.
    pub fn finish(&self) {
        *self.wanted.borrow_mut() = false;
        if let Some((pipeline, _)) = self.running.borrow().as_ref() {
            if pipeline.send_event(gst::event::Eos::new()) {
                if let Some(bus) = pipeline.bus() {
                    let _ = bus.timed_pop_filtered(
                        gst::ClockTime::from_seconds(3),
                        &[gst::MessageType::Eos, gst::MessageType::Error],
                    );
                }
            }
        }
        self.teardown();
    }

    fn teardown(&self) {
        if let Some((pipeline, _watch)) = self.running.borrow_mut().take() {
            let _ = pipeline.set_state(gst::State::Null);
            info!("{}: host pipeline stopped", self.side.name());
        }
    }

    fn on_message(self: &Rc<Self>, msg: &gst::Message) {
        let what = self.side.name();
        let failed = match msg.view() {
            gst::MessageView::Error(e) => {
                error!(
                    "{what}: host pipeline failed: {} ({})",
                    e.error(),
                    e.debug().map(|d| d.to_string()).unwrap_or_default()
                );
                true
            }
            gst::MessageView::Eos(_) => {
                info!("{what}: host pipeline ended");
                true
            }
            // vhostsndsrc's latency follows the guest's period; the application
            // redistributes it, as GStreamer leaves that to whoever runs the bus.
            gst::MessageView::Latency(_) => {
                if let Some((pipeline, _)) = self.running.borrow().as_ref() {
                    if let Err(e) = pipeline.recalculate_latency() {
                        info!("{what}: cannot recalculate the latency: {e}");
                    }
                }
                false
            }
            _ => false,
        };
        if !failed {
            return;
        }
        self.teardown();
        match self.side {
            // The device keeps pacing and dropping the guest's audio meanwhile.
            Side::Playback => {
                info!(
                    "{what}: guest audio is dropped; retrying in {} s",
                    RETRY.as_secs()
                );
                let weak = Rc::downgrade(self);
                gst::glib::timeout_add_local_once(RETRY, move || {
                    if let Some(this) = weak.upgrade() {
                        if *this.wanted.borrow() {
                            this.start();
                        }
                    }
                });
            }
            // The guest records silence until it starts capturing again.
            Side::Capture => info!("{what}: the guest records silence"),
        }
    }
}
