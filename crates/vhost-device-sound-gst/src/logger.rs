//! Log lines on stderr: the daemon's own (always) and the device's (`-v`).

use std::time::{SystemTime, UNIX_EPOCH};

use vhost_user_sound::log_limit;

struct StderrLog;

static LOGGER: StderrLog = StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        // The rust-vmm crates log what the guest got wrong at ERROR, as often as it
        // gets it wrong.
        let Some((level, left_out)) = log_limit::screen(record) else {
            return;
        };
        if level > log::max_level() {
            return;
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        eprintln!(
            "[{t:.3}] {level:<5} {}{}",
            record.args(),
            log_limit::LeftOut(left_out)
        );
    }

    fn flush(&self) {}
}

/// Installs the logger: the daemon's messages are at `Info`, so they always show;
/// the device's debug messages show with `-vv`.
pub fn init(verbose: u8) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(match verbose {
        0 | 1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    });
    let gst_level = match verbose {
        0 => gst::DebugLevel::Warning,
        1 => gst::DebugLevel::Info,
        _ => gst::DebugLevel::Debug,
    };
    for name in ["vhostsndsrc", "vhostsndsink"] {
        gst::log::set_threshold_for_name(name, gst_level);
    }
}
