//! The device logs through the `log` crate (it knows no GStreamer); in a GStreamer
//! process its messages go to the `vhostsnd` debug category, so `GST_DEBUG=vhostsnd:6`
//! shows what the guest did. A program with its own logger keeps it.

use std::sync::LazyLock;

use vhost_user_sound::log_limit::{self, LeftOut};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "vhostsnd",
        gst::DebugColorFlags::empty(),
        Some("virtio-snd device (vhost-user)"),
    )
});

struct GstLog;

static LOGGER: GstLog = GstLog;

fn level(l: log::Level) -> gst::DebugLevel {
    match l {
        log::Level::Error => gst::DebugLevel::Error,
        log::Level::Warn => gst::DebugLevel::Warning,
        log::Level::Info => gst::DebugLevel::Info,
        log::Level::Debug => gst::DebugLevel::Debug,
        log::Level::Trace => gst::DebugLevel::Trace,
    }
}

impl log::Log for GstLog {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        CAT.threshold() >= level(meta.level())
    }

    fn log(&self, record: &log::Record) {
        // The rust-vmm crates log what the guest got wrong at ERROR, as often as it
        // gets it wrong.
        let Some((lvl, left_out)) = log_limit::screen(record) else {
            return;
        };
        if CAT.threshold() < level(lvl) {
            return;
        }
        let args = record.args();
        let more = LeftOut(left_out);
        match level(lvl) {
            gst::DebugLevel::Error => gst::error!(CAT, "{args}{more}"),
            gst::DebugLevel::Warning => gst::warning!(CAT, "{args}{more}"),
            gst::DebugLevel::Info => gst::info!(CAT, "{args}{more}"),
            gst::DebugLevel::Debug => gst::debug!(CAT, "{args}{more}"),
            _ => gst::trace!(CAT, "{args}{more}"),
        }
    }

    fn flush(&self) {}
}

/// Routes the device's log to GStreamer's, unless a logger is already installed.
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}
