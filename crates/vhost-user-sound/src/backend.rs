//! The vhost-user side: vhost-user-backend calls in here from its threads.

use std::io as stdio;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use log::Level;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::{
    ByteValued, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryRegion,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::card::{Card, Direction};
use crate::control::{self, Topology};
use crate::io::GuestMem;
use crate::log_limit::limited;
use virtio_snd_wire::ctl::F_CTLS;
use virtio_snd_wire::{NUM_QUEUES, QUEUE_CONTROL, QUEUE_EVENT, QUEUE_RX, QUEUE_TX};

/// Where the config's `controls` field starts: QEMU asks for no more than this
/// without `controls=on`.
const CONTROLS_OFFSET: u32 = 12;

/// QEMU's vhost-user-snd uses 64-entry queues.
const QUEUE_SIZE: usize = 64;

#[derive(Clone)]
pub struct SndBackend {
    card: Arc<Card>,
    exit_fds: Arc<Mutex<Vec<OwnedFd>>>,
    /// Held while one control request is taken, answered and returned. QEMU reads
    /// where the ring stands right after stopping it (GET_VRING_BASE): a request
    /// taken before and returned after would be answered on a stopped ring, into the
    /// rings of whatever driver comes next.
    serving_control: Arc<Mutex<()>>,
}

impl SndBackend {
    pub fn new(card: Arc<Card>) -> Self {
        SndBackend {
            card,
            exit_fds: Arc::default(),
            serving_control: Arc::default(),
        }
    }

    /// Closes the exit eventfds handed to this connection's worker threads. To be
    /// called once the daemon is dropped (its threads joined, its epoll closed):
    /// vhost-user-backend registers the consumer's fd with `into_raw_fd` and never
    /// closes it, which leaked one fd per connection.
    pub fn close_exit_events(&self) {
        self.exit_fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn serve_control(&self, vring: &VringRwLock) {
        let Some(atomic) = self.card.memory() else {
            return;
        };
        let mem = atomic.memory();
        if !self.card.control_usable(QUEUE_CONTROL, vring, &*mem) {
            return;
        }
        loop {
            loop {
                let _serving = self
                    .serving_control
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let chain = {
                    let mut v = vring.get_mut();
                    // Stopped (ready cleared) before stop_vring waits for us.
                    if !v.get_queue().ready() {
                        break;
                    }
                    v.get_queue_mut().pop_descriptor_chain(&*mem)
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let len = control::handle(&self.card, chain, &mem);
                if let Err(e) = vring.add_used(head, len) {
                    limited!(
                        Level::Warn,
                        "control queue: cannot return descriptor {head}: {e}"
                    );
                }
            }
            // With EVENT_IDX the guest kicks again only once asked to; a request
            // queued meanwhile is served now rather than never.
            match vring.enable_notification() {
                Ok(true) if self.card.control_usable(QUEUE_CONTROL, vring, &*mem) => continue,
                Ok(true) => break,
                Ok(false) => break,
                Err(e) => {
                    limited!(Level::Debug, "control queue: cannot ask for kicks: {e}");
                    break;
                }
            }
        }
        if !vring.needs_notification().unwrap_or(true) {
            return;
        }
        if let Err(e) = vring.signal_used_queue() {
            limited!(Level::Debug, "control queue: cannot signal the guest: {e}");
        }
    }
}

impl VhostUserBackend for SndBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        let controls = if self.card.controls_offered() {
            F_CTLS
        } else {
            0
        };
        controls
            | 1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::RESET_DEVICE
    }

    fn acked_features(&self, features: u64) {
        self.card.set_controls_acked(features & F_CTLS != 0);
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let controls = self.card.controls_offered();
        if controls && offset.saturating_add(size) <= CONTROLS_OFFSET {
            // QEMU sizes the config by its own `controls` property and reads the
            // rest as all-ones: the guest would count 2^32-1 controls.
            limited!(
                Level::Warn,
                "the device offers controls but QEMU was started without them: the guest \
                 will have no sound card; add controls=on to -device vhost-user-snd-pci"
            );
        }
        let config = Topology::config(controls);
        let bytes = config.as_slice();
        let start = (offset as usize).min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        let mut out = bytes[start..end].to_vec();
        out.resize(size as usize, 0);
        out
    }

    /// A region larger than what its file holds would be mapped all the same, and the
    /// first touch past the file's end kills the process (SIGBUS): such a table is
    /// refused, and the device touches no guest memory until a good one comes.
    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMem>) -> stdio::Result<()> {
        if let Err(e) = backed_by_files(&mem.memory()) {
            self.card.forget_memory();
            limited!(Level::Warn, "memory table refused: {e}");
            return Err(e);
        }
        self.card.set_memory(mem);
        Ok(())
    }

    fn reset_device(&self) {
        self.card.reset();
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // Without an exit event, dropping the daemon after a disconnect would wait
        // forever for its worker thread.
        let (consumer, notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        // SAFETY: the worker takes the consumer apart with `into_raw_fd` and never
        // closes that fd; it becomes ours to close once the worker is gone (see
        // `close_exit_events`), and nothing else closes it.
        let owned = unsafe { OwnedFd::from_raw_fd(consumer.as_raw_fd()) };
        self.exit_fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(owned);
        Some((consumer, notifier))
    }

    fn stop_vring(&self, queue_index: u32) -> stdio::Result<()> {
        let _no_request_in_flight = (queue_index as usize == QUEUE_CONTROL).then(|| {
            self.serving_control
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        });
        self.card.ring_stopped(queue_index as usize);
        Ok(())
    }

    /// Never fails: an error here would end the worker thread, and with it every queue.
    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> stdio::Result<()> {
        self.card.set_vrings(vrings);
        let Some(vring) = vrings.get(device_event as usize) else {
            return Ok(());
        };
        self.card.ring_started(device_event as usize);
        match device_event as usize {
            QUEUE_CONTROL => {
                // I/O the guest queued before this request was queued in the stream
                // state before it: take it first, so that RELEASE (or PREPARE) returns
                // it instead of the I/O being failed once its queue is served.
                for dir in Direction::ALL {
                    self.card.ring_started(dir.queue());
                    self.card.serve_ring(dir);
                }
                self.serve_control(vring);
                // Control changes made while the VM was stopped wait for the event
                // ring, which sees no event of its own until the guest takes one.
                self.card.serve_events();
            }
            // The event buffers stay with the device until there is something to
            // report (a control changed); taking none of them otherwise and returning
            // is what keeps this from spinning (pitfall 1 in the notes).
            QUEUE_EVENT => self.card.serve_events(),
            QUEUE_TX => self.card.serve_ring(Direction::Playback),
            QUEUE_RX => self.card.serve_ring(Direction::Capture),
            _ => {}
        }
        Ok(())
    }
}

/// Checks that every region lies within the file it maps.
fn backed_by_files(mem: &GuestMem) -> stdio::Result<()> {
    for region in mem.iter() {
        let Some(fo) = region.file_offset() else {
            continue;
        };
        let end = fo.start().checked_add(region.len());
        let size = fo.file().metadata()?.len();
        if end.is_none_or(|end| end > size) {
            return Err(stdio::Error::new(
                stdio::ErrorKind::InvalidInput,
                format!(
                    "a region of {} bytes at file offset {} lies past the end of its \
                     {size}-byte file",
                    region.len(),
                    fo.start()
                ),
            ));
        }
    }
    Ok(())
}
