//! The virtio-snd device, served over vhost-user. Nothing in here knows GStreamer:
//! the elements talk to a [`Device`] through its [`Card`].

mod backend;
mod card;
mod clock;
mod control;
mod io;
mod pcm;
mod registry;
mod server;

pub use card::{silence, Card, DeviceEvent, Direction, Pacing, Playback, StreamSnapshot};
pub use clock::{MonotonicClock, PacerClock};
pub use control::Topology;
pub use pcm::{PcmRequest, PcmState};
pub use registry::{Device, Error};
pub use virtio_snd_wire::formats::PcmParams;
