//! The control socket (`--control-socket PATH`): the host's microphone policy at run
//! time (as Qubes' `audio-input`), the device's status, and a stream of its changes.
//!
//! One command per line, one JSON line per answer; several clients at once:
//! - `audio-input 1` / `audio-input 0`: allow or deny the microphone;
//! - `status`: connected, each stream's state and format, microphone allowed, open;
//! - `subscribe`: after its answer, one JSON line per change: the guest's starts and
//!   stops of either direction, connects and disconnects, permission changes, and the
//!   host source opening and closing.
//!
//! A bad command gets `{"error": ...}` and the connection goes on.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

use log::{info, warn};
use serde_json::{json, Value};

use vhost_user_sound::{Device, Direction};
use virtio_snd_wire::formats::PcmParams;

/// How many changes a subscriber may lag behind before it is dropped.
const BACKLOG: usize = 256;
/// The longest command line read.
const MAX_LINE: usize = 256;

/// The guest's format `p` as the control socket shows it.
pub fn format(p: &PcmParams) -> Option<Value> {
    let f = gstvhostsnd::audio::gst_format(p.format)?;
    Some(json!({ "format": f.to_str().as_str(), "rate": p.rate_hz(), "channels": p.channels }))
}

/// What changes the microphone permission asks of the daemon's main loop.
pub type OnPermission = Box<dyn Fn(bool) + Send + Sync>;

struct Inner {
    allowed: bool,
    open: bool,
    subscribers: Vec<SyncSender<String>>,
}

pub struct Control {
    inner: Mutex<Inner>,
    device: Arc<Device>,
    on_permission: OnPermission,
}

impl Control {
    pub fn new(device: Arc<Device>, allowed: bool, on_permission: OnPermission) -> Arc<Self> {
        Arc::new(Control {
            inner: Mutex::new(Inner {
                allowed,
                open: false,
                subscribers: Vec::new(),
            }),
            device,
            on_permission,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host source opened or closed.
    pub fn set_open(&self, open: bool) {
        self.lock().open = open;
        self.publish(json!({ "event": "microphone", "open": open }));
    }

    /// Sends `event` to every subscriber; one that lags too far behind is dropped.
    pub fn publish(&self, event: Value) {
        let line = event.to_string();
        self.lock()
            .subscribers
            .retain(|s| match s.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    warn!("control socket: a subscriber fell {BACKLOG} changes behind, dropped");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }

    fn set_allowed(&self, allowed: bool) {
        let changed = {
            let mut inner = self.lock();
            let changed = inner.allowed != allowed;
            inner.allowed = allowed;
            changed
        };
        if changed {
            info!(
                "control socket: microphone {}",
                if allowed { "allowed" } else { "denied" }
            );
            self.publish(json!({ "event": "microphone-allowed", "allowed": allowed }));
            (self.on_permission)(allowed);
        }
    }

    fn stream_status(&self, dir: Direction) -> Value {
        let card = self.device.card();
        let snap = card.snapshot(dir);
        let level = card.level(dir);
        json!({
            "state": snap.state.name(),
            "format": snap.params.as_ref().and_then(format),
            "volume": level.volume,
            "mute": level.mute,
        })
    }

    fn status(&self) -> Value {
        let (allowed, open) = {
            let inner = self.lock();
            (inner.allowed, inner.open)
        };
        json!({
            "connected": self.device.card().snapshot(Direction::Playback).connected,
            "playback": self.stream_status(Direction::Playback),
            "capture": self.stream_status(Direction::Capture),
            "microphone_allowed": allowed,
            "microphone_open": open,
        })
    }

    /// The answer to one command line, and whether the client subscribed.
    fn answer(&self, line: &str) -> (Value, bool) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["audio-input", v @ ("0" | "1")] => {
                self.set_allowed(*v == "1");
                (
                    json!({ "ok": true, "microphone_allowed": *v == "1" }),
                    false,
                )
            }
            ["audio-input", ..] => (json!({ "error": "usage: audio-input 0|1" }), false),
            ["status"] => (self.status(), false),
            ["subscribe"] => (json!({ "ok": true, "subscribed": true }), true),
            [] => (json!({ "error": "empty command" }), false),
            _ => {
                let shown: String = line.chars().take(64).collect();
                (
                    json!({ "error": format!("unknown command: {shown}") }),
                    false,
                )
            }
        }
    }

    fn client(self: Arc<Self>, stream: UnixStream) {
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf);
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let (reply, subscribe) = if buf.len() > MAX_LINE {
                // Skip the rest of the over-long line.
                let mut rest = Vec::new();
                if reader.read_until(b'\n', &mut rest).is_err() {
                    return;
                }
                (
                    json!({ "error": format!("line longer than {MAX_LINE} bytes") }),
                    false,
                )
            } else {
                let line = String::from_utf8_lossy(&buf);
                self.answer(line.trim())
            };
            if writeln!(out, "{reply}").is_err() {
                return;
            }
            if subscribe {
                let (tx, rx) = mpsc::sync_channel(BACKLOG);
                self.lock().subscribers.push(tx);
                let Ok(mut w) = out.try_clone() else {
                    return;
                };
                std::thread::spawn(move || {
                    for line in rx {
                        if writeln!(w, "{line}").is_err() {
                            return;
                        }
                    }
                });
            }
        }
    }

    /// Listens on `path` (a stale socket file is replaced) and serves every client
    /// on its own thread. Returns the path, for removal at shutdown.
    pub fn serve(self: &Arc<Self>, path: &Path) -> Result<PathBuf, String> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(format!(
                    "--control-socket {}: exists and is not a socket",
                    path.display()
                ));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("--control-socket {}: {e}", path.display()))?;
        let this = self.clone();
        std::thread::Builder::new()
            .name("control-socket".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let c = this.clone();
                    let spawned = std::thread::Builder::new()
                        .name("control-client".into())
                        .spawn(move || c.client(stream));
                    if let Err(e) = spawned {
                        warn!("control socket: cannot serve a client: {e}");
                    }
                }
            })
            .map_err(|e| format!("cannot start the control socket's thread: {e}"))?;
        info!("control socket on {}", path.display());
        Ok(path.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> (Arc<Control>, Arc<std::sync::atomic::AtomicUsize>) {
        let dir = std::env::temp_dir().join(format!("vsnd-ctl-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let dev = Device::acquire(&dir.join("snd.sock")).expect("device");
        let changes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = changes.clone();
        let control = Control::new(
            dev,
            false,
            Box::new(move |_| {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        );
        (control, changes)
    }

    #[test]
    fn commands_are_answered_and_bad_ones_get_an_error() {
        let (c, changes) = control();
        assert_eq!(c.answer("audio-input 1").0["microphone_allowed"], true);
        assert_eq!(c.answer("status").0["microphone_allowed"], true);
        assert_eq!(c.answer("audio-input 0").0["ok"], true);
        assert!(c.answer("audio-input 2").0["error"].is_string());
        assert!(c.answer("reboot now").0["error"].is_string());
        let s = c.answer("status").0;
        assert_eq!(s["connected"], false);
        assert_eq!(s["capture"]["state"], "idle");
        assert_eq!(s["microphone_allowed"], false);
        assert!(c.answer("subscribe").1);
        // Only real changes reach the daemon: allowed, then denied.
        assert_eq!(changes.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
