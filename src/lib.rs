//! gst-vhostsnd: a virtual machine's virtio-snd sound card as GStreamer elements.
//!
//! `vhostsndsrc` and `vhostsndsink` each serve a vhost-user virtio-snd device on a
//! Unix socket: what the guest plays comes out of `vhostsndsrc`, what is fed into
//! `vhostsndsink` is what the guest records. Both elements naming one socket in one
//! process share one sound card.

use gst::glib;

mod attach;
pub mod audio;
mod convert;
mod device_log;
mod mixer;
mod pipeline_clock;
pub mod vhostsndsink;
pub mod vhostsndsrc;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    device_log::install();
    vhostsndsrc::register(plugin)?;
    vhostsndsink::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    vhostsnd,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
