//! A minimal virtio-snd-shaped echo device on vhost-user-backend, so the frontend's
//! own tests need neither the real device nor GStreamer: it answers every control
//! request with S_OK, completes tx at once, fills rx with a known pattern and lets a
//! test inject events, bogus used ids and slow control replies.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::session::{
    VHOST_USER_F_PROTOCOL_FEATURES as PROTOCOL_FEATURES, VIRTIO_F_VERSION_1 as VERSION_1,
    VIRTIO_RING_F_EVENT_IDX as EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC as INDIRECT_DESC,
};
use virtio_snd_wire::S_OK;

pub fn rx_pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[derive(Default)]
pub struct Echo {
    pub event_idx_offered: AtomicBool,
    /// Off by default, so that the older tests keep counting ring entries per chain.
    pub indirect_offered: AtomicBool,
    event_idx: AtomicBool,
    mem: Mutex<Option<GuestMemoryAtomic<GuestMemoryMmap>>>,
    vrings: Mutex<Option<Vec<VringRwLock>>>,
    /// (stream id, payload) of every tx message, in order.
    pub tx_log: Mutex<Vec<(u32, Vec<u8>)>>,
    /// Every control request's bytes.
    pub ctl_log: Mutex<Vec<Vec<u8>>>,
    pub ctl_delay_ms: AtomicU64,
    pub bad_chains: AtomicUsize,
    pub kicks: AtomicUsize,
    /// Next tx chain is completed with this id instead of its own (frontend error test).
    pub bogus_used_id: Mutex<Option<u16>>,
    pub latency: AtomicU32,
    pub connections: AtomicUsize,
    pending_events: Mutex<VecDeque<(u32, u32)>>,
    /// push_event processes the event queue from the test's thread: one at a time.
    processing: Mutex<()>,
}

impl Echo {
    pub fn new(event_idx: bool) -> Arc<Echo> {
        let e = Echo::default();
        e.event_idx_offered.store(event_idx, Ordering::Relaxed);
        Arc::new(e)
    }

    /// Queues an event and delivers it into the guest's next event buffer.
    pub fn push_event(&self, code: u32, data: u32) {
        self.pending_events.lock().unwrap().push_back((code, data));
        if let Some(vrings) = self.vrings.lock().unwrap().clone() {
            let _ = self.process(1, &vrings);
        }
    }

    fn process(&self, q: usize, vrings: &[VringRwLock]) -> io::Result<()> {
        let _one_at_a_time = self.processing.lock().unwrap();
        let Some(atomic) = self.mem.lock().unwrap().clone() else {
            return Ok(());
        };
        let vring = &vrings[q];
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        loop {
            if event_idx {
                vring.disable_notification().map_err(io::Error::other)?;
            }
            loop {
                let mem = atomic.memory();
                if q == 1 && self.pending_events.lock().unwrap().is_empty() {
                    break;
                }
                let Some(chain) = vring
                    .get_mut()
                    .get_queue_mut()
                    .pop_descriptor_chain(mem.clone())
                else {
                    break;
                };
                let head = chain.head_index();
                let (mut head_out, len) = match self.handle_chain(q, &mem, chain) {
                    Ok(len) => (head, len),
                    Err(_) => {
                        self.bad_chains.fetch_add(1, Ordering::Relaxed);
                        (head, 0)
                    }
                };
                if q == 2 {
                    if let Some(bogus) = self.bogus_used_id.lock().unwrap().take() {
                        head_out = bogus;
                    }
                }
                vring.add_used(head_out, len).map_err(io::Error::other)?;
            }
            vring.signal_used_queue()?;
            if !event_idx || !vring.enable_notification().map_err(io::Error::other)? {
                break;
            }
            if q == 1 && self.pending_events.lock().unwrap().is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Returns the used length.
    fn handle_chain(
        &self,
        q: usize,
        mem: &GuestMemoryMmap,
        chain: impl Iterator<Item = virtio_queue::desc::split::Descriptor>,
    ) -> io::Result<u32> {
        let mut readable = Vec::new();
        let mut writable = Vec::new();
        for d in chain {
            if d.is_write_only() {
                writable.push((d.addr(), d.len()));
            } else {
                if !writable.is_empty() {
                    return Err(io::Error::other("readable after writable"));
                }
                let at = readable.len();
                readable.resize(at + d.len() as usize, 0);
                mem.read_slice(&mut readable[at..], d.addr())
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
        }
        let wtotal: u32 = writable.iter().map(|w| w.1).sum();
        let mut out = vec![0u8; wtotal as usize];
        let used = match q {
            0 => {
                let delay = self.ctl_delay_ms.load(Ordering::Relaxed);
                if delay > 0 {
                    thread::sleep(Duration::from_millis(delay));
                }
                self.ctl_log.lock().unwrap().push(readable.clone());
                for b in out.iter_mut().skip(4) {
                    *b = 0x11;
                }
                if out.len() >= 4 {
                    out[..4].copy_from_slice(&S_OK.to_le_bytes());
                }
                wtotal
            }
            1 => {
                let (code, data) = self
                    .pending_events
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or_default();
                if out.len() >= 8 {
                    out[..4].copy_from_slice(&code.to_le_bytes());
                    out[4..8].copy_from_slice(&data.to_le_bytes());
                }
                wtotal.min(8)
            }
            2 | 3 => {
                if readable.len() < 4 || wtotal < 8 {
                    return Err(io::Error::other("short I/O message"));
                }
                let stream =
                    u32::from_le_bytes([readable[0], readable[1], readable[2], readable[3]]);
                let n = out.len() - 8;
                if q == 2 {
                    self.tx_log
                        .lock()
                        .unwrap()
                        .push((stream, readable[4..].to_vec()));
                } else {
                    for (i, b) in out[..n].iter_mut().enumerate() {
                        *b = rx_pattern(i);
                    }
                }
                out[n..n + 4].copy_from_slice(&S_OK.to_le_bytes());
                let lat = self.latency.load(Ordering::Relaxed);
                out[n + 4..].copy_from_slice(&lat.to_le_bytes());
                if q == 2 {
                    8
                } else {
                    wtotal
                }
            }
            _ => 0,
        };
        let mut off = 0usize;
        for (addr, len) in writable {
            mem.write_slice(&out[off..off + len as usize], addr)
                .map_err(|e| io::Error::other(e.to_string()))?;
            off += len as usize;
        }
        Ok(used)
    }
}

impl VhostUserBackend for Echo {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        4
    }

    fn max_queue_size(&self) -> usize {
        64
    }

    fn features(&self) -> u64 {
        let mut f = VERSION_1 | PROTOCOL_FEATURES;
        if self.event_idx_offered.load(Ordering::Relaxed) {
            f |= EVENT_IDX;
        }
        if self.indirect_offered.load(Ordering::Relaxed) {
            f |= INDIRECT_DESC;
        }
        f
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg: [u32; 4] = [1, 2, 1, 0];
        let bytes: Vec<u8> = cfg.iter().flat_map(|v| v.to_le_bytes()).collect();
        let start = offset as usize;
        let end = start.saturating_add(size as usize);
        bytes
            .get(start..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        *self.mem.lock().unwrap() = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        self.kicks.fetch_add(1, Ordering::Relaxed);
        *self.vrings.lock().unwrap() = Some(vrings.to_vec());
        let q = device_event as usize;
        if q < 4 {
            // Never return Err: that would end the worker thread for good.
            if let Err(e) = self.process(q, vrings) {
                eprintln!("echo: queue {q}: {e}");
            }
        }
        Ok(())
    }
}

pub struct EchoServer {
    pub path: PathBuf,
    pub echo: Arc<Echo>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Serves `echo` on a fresh socket, one connection after the other. A new
/// `VhostUserDaemon` per connection: one daemon refuses the second SET_OWNER.
pub fn serve(echo: Arc<Echo>) -> EchoServer {
    let path = std::env::temp_dir().join(format!(
        "fe-echo-{}-{}.sock",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    serve_at(echo, path)
}

pub fn serve_at(echo: Arc<Echo>, path: PathBuf) -> EchoServer {
    let p = path.clone();
    let e = echo.clone();
    thread::spawn(move || {
        let mut listener = Listener::new(&p, true).expect("listener");
        loop {
            let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
            let mut daemon = VhostUserDaemon::new("echo".into(), e.clone(), mem).expect("daemon");
            if let Err(err) = daemon.start(&mut listener) {
                eprintln!("echo: start: {err}");
                return;
            }
            e.connections.fetch_add(1, Ordering::Relaxed);
            let _ = daemon.wait();
            *e.vrings.lock().unwrap() = None;
            *e.mem.lock().unwrap() = None;
        }
    });
    EchoServer { path, echo }
}
