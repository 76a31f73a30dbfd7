//! The listening socket and the thread that serves one frontend connection after
//! another, for as long as the device exists.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use log::Level;
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::SndBackend;
use crate::card::Card;
use crate::log_limit::limited;
use crate::Error;

/// Binds `path`, replacing a stale socket file but never a live socket or another file.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::NotSocket(path.to_owned()));
        }
        match UnixStream::connect(path) {
            Ok(_) => return Err(Error::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                limited!(Level::Debug, "removing stale socket {}", path.display());
                std::fs::remove_file(path).map_err(|source| Error::Bind {
                    path: path.to_owned(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(Error::Bind {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
    UnixListener::bind(path).map_err(|source| Error::Bind {
        path: path.to_owned(),
        source,
    })
}

struct StopSignal {
    fd: EventFd,
    stopping: AtomicBool,
    conn: Mutex<Option<ShutdownHandle>>,
}

impl StopSignal {
    fn conn(&self) -> std::sync::MutexGuard<'_, Option<ShutdownHandle>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The thread serving the socket. Dropping it closes the connection, stops the thread
/// and removes the socket file (when the device created it).
pub struct Server {
    thread: Option<JoinHandle<()>>,
    stop: Arc<StopSignal>,
    path: Option<PathBuf>,
}

impl Server {
    /// Serves `listener`. `path` is the socket file to remove afterwards, if ours.
    pub fn start(
        listener: UnixListener,
        path: Option<PathBuf>,
        card: Arc<Card>,
    ) -> Result<Server, Error> {
        let stop = Arc::new(StopSignal {
            fd: EventFd::new(EFD_NONBLOCK).map_err(Error::Thread)?,
            stopping: AtomicBool::new(false),
            conn: Mutex::new(None),
        });
        listener.set_nonblocking(true).map_err(Error::Thread)?;
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vhostsnd-server".into())
            .spawn(move || serve(Listener::from(listener), card, &stop2))
            .map_err(Error::Thread)?;
        Ok(Server {
            thread: Some(thread),
            stop,
            path,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.fd.write(1);
        if let Some(conn) = self.stop.conn().as_ref() {
            conn.shutdown();
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                limited!(Level::Warn, "vhostsnd server thread panicked");
            }
        }
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Waits until the listener has a connection (`true`) or the server stops (`false`).
fn wait_for_connection(listener: RawFd, stop: &StopSignal) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: listener,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        if stop.stopping.load(Ordering::SeqCst) {
            return false;
        }
        // SAFETY: `fds` is a valid array of two pollfd structs for the whole call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            limited!(
                Level::Warn,
                "poll on the vhost-user socket failed: {}",
                io::Error::last_os_error()
            );
            return false;
        }
        if fds[1].revents != 0 || stop.stopping.load(Ordering::SeqCst) {
            return false;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            return true;
        }
    }
}

fn serve(mut listener: Listener, card: Arc<Card>, stop: &StopSignal) {
    while wait_for_connection(listener.as_raw_fd(), stop) {
        // A fresh daemon per connection: new vrings and worker thread, nothing left
        // over from the previous guest.
        let backend = SndBackend::new(card.clone());
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = match VhostUserDaemon::new("vhostsnd".into(), backend.clone(), mem) {
            Ok(d) => d,
            Err(e) => {
                limited!(Level::Warn, "cannot create the vhost-user daemon: {e}");
                return;
            }
        };
        if let Err(e) = daemon.start(&mut listener) {
            limited!(Level::Warn, "vhost-user connection failed to start: {e}");
            continue;
        }
        *stop.conn() = daemon.shutdown_handle();
        if stop.stopping.load(Ordering::SeqCst) {
            daemon.request_shutdown();
        }
        limited!(Level::Info, "vhost-user frontend connected");
        card.connected();
        match daemon.wait() {
            Ok(()) => limited!(Level::Info, "vhost-user frontend disconnected"),
            Err(e) => limited!(Level::Info, "vhost-user connection ended: {e}"),
        }
        stop.conn().take();
        // Joins the connection's worker thread first, so nothing of this connection
        // (its rings, its memory) can reach the card after it is reset.
        drop(daemon);
        backend.close_exit_events();
        card.disconnected();
    }
}
