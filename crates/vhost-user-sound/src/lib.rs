//! A virtio-snd sound card served over vhost-user, for any host audio engine to drive.
//!
//! A [`Device`] listens on a Unix socket; QEMU (`-device vhost-user-snd-pci`) or any
//! other vhost-user frontend connects to it, and the guest's virtio-snd driver sees a
//! sound card with one playback and one capture stream on one PCM device. The host
//! side talks to the card through its [`Card`]:
//!
//! - **Playback** (what the guest plays): by default the card's own pacer completes
//!   the guest's periods in real time and drops their audio. An engine that wants the
//!   audio takes over with [`Card::set_pacing`] and completes one period per tick with
//!   [`Card::take_playback`] (a live output, on the engine's clock given by
//!   [`Card::set_clock`]), or as fast as it can with [`Card::wait_playback`].
//! - **Capture** (what the guest records): the engine hands over audio with
//!   [`Card::push_capture`], stamped on the stream's clock; each guest period is
//!   completed as soon as it is there, holding audio from START on. The card's pacer
//!   gives silence when the engine stalls (after [`FIRST_CAPTURE_WAIT_NS`] more for
//!   the first period), or when there is no engine.
//! - **Events**: [`Card::subscribe`] reports connections, every PCM request of the
//!   guest and its mixer changes ([`DeviceEvent`]); [`Card::snapshot`] tells a
//!   stream's state and format.
//! - **Mixer**: each stream has a volume and a mute the card applies to its audio
//!   ([`Card::set_volume`], [`Card::set_mute`], [`Card::level`]). With
//!   [`Card::offer_controls`] (and QEMU's `controls=on`) the guest sees them as its
//!   card's "Master Playback" and "Capture" volume and switch, and is told of every
//!   change the host makes.
//!
//! Completion timing is the guest's audio clock: the card never completes a live
//! period early, and it never waits for the host to complete one late (under-runs are
//! silence, never a stall). Whatever the guest sends, the card answers with a virtio
//! status and keeps serving.
//!
//! The device knows nothing of GStreamer; gst-plugin-vhostsnd's `vhostsndsrc` and
//! `vhostsndsink` are built on it.
//!
//! # Example
//!
//! A guest plays one period and the host takes it. `virtio-snd-frontend` plays the
//! part of QEMU and the guest's driver here.
//!
//! ```
//! use std::time::Duration;
//!
//! use vhost_user_sound::{Device, Direction, Pacing, Playback};
//! use virtio_snd_frontend::FakeGuest;
//! use virtio_snd_wire::formats::{FMT_S16, PcmParams};
//! use virtio_snd_wire::S_OK;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("vhost-user-sound-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let socket = dir.join("snd.sock");
//!
//! // The host: a card on `socket`, whose playback periods the host completes itself.
//! let device = Device::acquire(&socket)?;
//! let card = device.card();
//! card.set_pacing(Direction::Playback, Pacing::Element);
//!
//! // The guest: S16LE, 48 kHz, stereo, 10 ms periods; it queues a period and starts.
//! let mut guest = FakeGuest::connect(&socket, Duration::from_secs(5))?;
//! guest.probe()?;
//! let params = PcmParams {
//!     format: FMT_S16,
//!     rate: virtio_snd_wire::formats::rate_code(48000).ok_or("rate")?,
//!     channels: 2,
//!     buffer_bytes: 4 * 1920,
//!     period_bytes: 1920,
//! };
//! assert_eq!(guest.set_pcm_params(0, &params)?, S_OK);
//! assert_eq!(guest.prepare(0)?, S_OK);
//! let period = guest.submit_tx(0, &[7u8; 1920])?;
//! assert_eq!(guest.start(0)?, S_OK);
//!
//! // The host's tick: the guest's period is completed, and its audio is the host's.
//! let mut audio = Vec::new();
//! match card.take_playback(&mut audio) {
//!     Playback::Data(p) => {
//!         assert_eq!(p, params);
//!         assert_eq!(audio, [7u8; 1920]);
//!     }
//!     Playback::Idle | Playback::Silence => panic!("the guest's period was not there"),
//! }
//! let done = guest.wait_token(period, Duration::from_secs(1))?;
//! assert_eq!(done.status(), Some(S_OK));
//! # drop(device);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod alarm;
mod backend;
mod card;
mod clock;
mod control;
mod gain;
mod io;
pub mod log_limit;
mod mixer;
mod pcm;
mod registry;
mod server;

pub use card::{
    Captured, Card, DeviceEvent, Direction, Listener, MixerChange, Pacing, Playback,
    StreamSnapshot, FIRST_CAPTURE_WAIT_NS, HELD_NS,
};
pub use clock::{MonotonicClock, PacerClock};
pub use control::{Topology, MAX_INFO_SIZE, MAX_PERIOD_BYTES};
pub use io::MAX_CHAIN;
pub use mixer::{StreamLevel, CONTROL_COUNT, VOLUME_STEPS};
pub use pcm::{PcmRequest, PcmState};
pub use registry::{Claim, Device, Error};
