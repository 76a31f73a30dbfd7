//! Test and benchmark support for gst-vhostsnd: a real Linux guest booted in QEMU
//! against a vhost-user sound device ([`qemu`]), analysis of the audio that comes out
//! ([`analysis`]), and the benchmark suite behind `cargo run --example bench`
//! ([`bench`](mod@bench)).

pub mod analysis;
pub mod audio_server;
pub mod bench;
pub mod guest;
pub mod mixer;
pub mod qemu;

use std::path::PathBuf;
use std::sync::Once;

/// GStreamer, initialised once, with the vhostsnd plugin registered statically.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        gst::init().expect("GStreamer initialises");
        gstvhostsnd::plugin_register_static().expect("the plugin registers");
    });
}

/// A socket path no other test uses, in a fresh directory.
pub fn socket_path(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vhostsnd-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("snd.sock")
}
