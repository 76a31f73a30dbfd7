//! An in-process vhost-user frontend for testing the device: QEMU (the vhost-user
//! messages, guest RAM in a memfd, kick and call eventfds) and the Linux virtio-snd
//! driver (split virtqueues, control requests, I/O messages, event buffers) in one.
//!
//! Tests, benchmarks and the fake-guest example drive the device through
//! [`FakeGuest`] exactly as a VM would, over the same Unix socket, with no VM.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use virtio_snd_frontend::FakeGuest;
//! # use virtio_snd_wire::*;
//! # fn main() -> std::io::Result<()> {
//! let mut g = FakeGuest::connect("/tmp/snd.sock".as_ref(), Duration::from_secs(5))?;
//! let info = g.probe()?;
//! assert_eq!(g.set_params(0, 4 * 1920, 1920, 2, 5, 7)?, S_OK);
//! assert_eq!(g.prepare(0)?, S_OK);
//! let tok = g.submit_tx(0, &[0u8; 1920])?;
//! assert_eq!(g.start(0)?, S_OK);
//! let done = g.wait_token(tok, Duration::from_secs(1))?;
//! assert_eq!(done.status(), Some(S_OK));
//! # let _ = info; Ok(()) }
//! ```

mod chain;
mod completion;
mod control;
mod ctl;
#[cfg(test)]
mod echo_device;
mod guest;
mod memory;
mod options;
pub mod raw;
mod ring;
#[cfg(test)]
mod selftest;
#[cfg(test)]
mod selftest_indirect;
mod session;

pub use chain::{Desc, Segment, Token};
pub use completion::{Completion, ControlReply, SndEvent};
pub use control::DeviceInfo;
pub use guest::FakeGuest;
pub use memory::POISON;
pub use options::FakeGuestOptions;
pub use session::{
    VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};
