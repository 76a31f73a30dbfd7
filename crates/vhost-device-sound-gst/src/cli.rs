//! Command line, compatible with vhost-device-sound's where the two overlap.

use std::path::PathBuf;

use clap::{ArgGroup, Parser, ValueEnum};

pub const DEFAULT_PLAYBACK: &str = "audioconvert ! audioresample ! autoaudiosink";
pub const DEFAULT_CAPTURE: &str = "autoaudiosrc ! audioconvert ! audioresample";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Host audio through GStreamer (the only backend; accepted for compatibility).
    Gstreamer,
}

/// A vhost-user virtio-snd device whose host side is GStreamer: what the guest plays
/// goes to the host's speakers (or any pipeline), the host's microphone (or any
/// pipeline) is what the guest records.
#[derive(Debug, Parser)]
#[command(name = "vhost-device-sound-gst", version, about, long_about = None)]
#[command(group(ArgGroup::new("listen").required(true).args(["socket", "socket_fd"])))]
pub struct Args {
    /// Path of the vhost-user Unix socket to create and listen on.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// An already listening Unix socket inherited from a service manager (systemd
    /// socket activation passes it as fd 3).
    #[arg(long, value_name = "FD")]
    pub socket_fd: Option<i32>,

    /// Audio backend.
    #[arg(long, value_enum, default_value_t = Backend::Gstreamer)]
    pub backend: Backend,

    /// Where the guest's playback goes: a gst-launch description that follows
    /// `vhostsndsrc !`.
    #[arg(long, value_name = "DESC", default_value = DEFAULT_PLAYBACK)]
    pub playback: String,

    /// What the guest records: a gst-launch description that is followed by
    /// `! vhostsndsink`. It runs only while the guest is capturing.
    #[arg(long, value_name = "DESC", default_value = DEFAULT_CAPTURE)]
    pub capture: String,

    /// The VM's name in the host's audio server: its playback and capture streams
    /// are listed under it (application, media and node name), each with its own
    /// volume. Default: the socket file's name without its extension.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Serve a control socket at PATH: `audio-input 1|0` allows or denies the
    /// microphone at run time, `status` answers a JSON line, `subscribe` streams the
    /// device's changes as JSON lines.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// Whether the guest may have the microphone from the start (`false`: it records
    /// silence and the host source stays closed until `audio-input 1`).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub capture_allowed: bool,

    /// Give the guest the card's mixer controls (VIRTIO_SND_F_CTLS): its "Master
    /// Playback" and "Capture" volume and switch, which scale what the guest plays and
    /// records. QEMU needs `controls=on` on its vhost-user-snd-pci device as well;
    /// without it the guest gets no sound card.
    #[arg(long)]
    pub controls: bool,

    /// Never open a capture source: the guest records silence.
    #[arg(long, conflicts_with = "capture")]
    pub no_capture: bool,

    /// More logging (-v: device and element information, -vv: debugging).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
