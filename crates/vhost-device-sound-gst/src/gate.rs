//! The microphone gate: the host source runs while the guest captures and the host
//! allows it (`--capture-allowed`, the control socket's `audio-input`), and at no
//! other time. Denied, the guest records silence on the card's own clock.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gst::glib;
use gst::glib::thread_guard::ThreadGuard;
use log::info;

use vhost_user_sound::{Device, Direction, Pacing};

use crate::control::Control;
use crate::host::HostPipeline;

pub struct Gate {
    capturing: AtomicBool,
    allowed: AtomicBool,
    device: Arc<Device>,
    /// Only touched on the main context (`reconcile`).
    capture: ThreadGuard<Option<Rc<HostPipeline>>>,
    ctx: glib::MainContext,
    control: OnceLock<Arc<Control>>,
}

impl Gate {
    /// On the main context. `capture` is `None` with `--no-capture`.
    pub fn new(
        device: Arc<Device>,
        capture: Option<Rc<HostPipeline>>,
        allowed: bool,
        ctx: glib::MainContext,
    ) -> Arc<Self> {
        let gate = Arc::new(Gate {
            capturing: AtomicBool::new(false),
            allowed: AtomicBool::new(allowed),
            device,
            capture: ThreadGuard::new(capture),
            ctx,
            control: OnceLock::new(),
        });
        gate.pace();
        gate
    }

    /// Where the control socket hears of the source opening and closing.
    pub fn report_to(&self, control: Arc<Control>) {
        let _ = self.control.set(control);
    }

    /// The guest started (`true`) or stopped capturing.
    pub fn guest_captures(self: &Arc<Self>, capturing: bool) {
        self.capturing.store(capturing, Ordering::SeqCst);
        self.reconcile_soon();
    }

    /// The host allowed (`true`) or denied the microphone.
    pub fn set_allowed(self: &Arc<Self>, allowed: bool) {
        self.allowed.store(allowed, Ordering::SeqCst);
        self.reconcile_soon();
    }

    /// Who completes the guest's capture periods: the source's audio while it may
    /// run (its first period waits for the source), the card's clock with silence
    /// while it may not.
    fn pace(&self) {
        let open_allowed = self.allowed.load(Ordering::SeqCst) && self.has_source();
        let pacing = if open_allowed {
            Pacing::Element
        } else {
            Pacing::Internal
        };
        self.device.card().set_pacing(Direction::Capture, pacing);
    }

    fn has_source(&self) -> bool {
        self.capture.get_ref().is_some()
    }

    fn reconcile_soon(self: &Arc<Self>) {
        let this = self.clone();
        self.ctx.invoke(move || this.reconcile());
    }

    /// Opens or closes the source to match. On the main context.
    fn reconcile(&self) {
        let Some(capture) = self.capture.get_ref().as_ref() else {
            return;
        };
        let allowed = self.allowed.load(Ordering::SeqCst);
        let want = allowed && self.capturing.load(Ordering::SeqCst);
        if want && !capture.wanted() {
            self.pace();
            info!("capture: opening the host source");
            capture.set_period(self.period());
            capture.start();
            self.report(true);
        } else if !want && capture.wanted() {
            capture.stop();
            info!("capture: host source closed");
            self.report(false);
            self.pace();
        } else {
            self.pace();
        }
    }

    /// The guest's capture period, if it set its parameters.
    fn period(&self) -> Option<Duration> {
        let p = self.device.card().snapshot(Direction::Capture).params?;
        Some(Duration::from_nanos(
            p.bytes_to_ns(u64::from(p.period_bytes)),
        ))
    }

    fn report(&self, open: bool) {
        if let Some(c) = self.control.get() {
            c.set_open(open);
        }
    }
}
