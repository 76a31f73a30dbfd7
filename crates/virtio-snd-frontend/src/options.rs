//! Knobs for how the fake guest sets the device up.

use std::time::Duration;

/// How [`FakeGuest::connect_with`](super::FakeGuest::connect_with) sets up a session.
/// `Default` is what QEMU + Linux do.
#[derive(Clone, Debug)]
pub struct FakeGuestOptions {
    /// Guest RAM in bytes. Every in-flight buffer lives here; 16 MiB holds 4 queues of
    /// 64 periods of up to 64 KiB each. The memfd is only backed where touched, so
    /// large values cost little.
    pub mem_size: u64,
    /// Entries per virtqueue (a power of two; QEMU's vhost-user-snd uses 64).
    pub queue_size: u16,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX when the device offers it, as Linux does.
    pub event_idx: bool,
    /// Negotiate VIRTIO_RING_F_INDIRECT_DESC when the device offers it, as Linux does.
    /// Then every chain of more than one descriptor that the frontend lays out itself
    /// (I/O periods, control requests, segments) takes one ring entry pointing at an
    /// indirect table in guest RAM; explicit [`Desc`](super::Desc) chains stay as given.
    pub indirect: bool,
    /// Negotiate VIRTIO_SND_F_CTLS when the device offers it, as Linux (6.9 and
    /// later) does behind QEMU's `controls=on`: the config is then read with its
    /// `controls` field and the probe asks for every control's info.
    pub controls: bool,
    /// Further virtio feature bits to acknowledge if the device offers them (the
    /// frontend itself understands only VERSION_1, EVENT_IDX, INDIRECT_DESC, CTLS and
    /// PROTOCOL_FEATURES).
    pub extra_features: u64,
    /// Event buffers posted at connect (Linux fills the whole event queue).
    pub event_buffers: u16,
    /// How long the typed control calls wait for a reply. Linux gives up after
    /// `msg_timeout_ms` = 1000 ms and fails the probe or the operation.
    pub control_timeout: Duration,
    /// How long to wait for the device to answer a vhost-user message before
    /// declaring it hung (socket receive timeout).
    pub msg_timeout: Duration,
    /// How many descriptors `submit_tx`/`submit_rx` split the data area into.
    pub data_split: usize,
}

impl Default for FakeGuestOptions {
    fn default() -> Self {
        FakeGuestOptions {
            mem_size: 16 << 20,
            queue_size: 64,
            event_idx: true,
            indirect: true,
            controls: true,
            extra_features: 0,
            event_buffers: 64,
            control_timeout: Duration::from_millis(1000),
            msg_timeout: Duration::from_secs(5),
            data_split: 1,
        }
    }
}
