//! Devices by socket path: elements (or a daemon) naming the same socket in one
//! process share one card, and the last one to let go closes the socket.

use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use crate::card::{Card, Direction};
use crate::server;

/// Why a device could not be served, or a direction of it not claimed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another live process serves the socket.
    #[error("socket {0} is already served by another running process")]
    InUse(PathBuf),
    /// The path is something other than a socket, which is never replaced.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotSocket(PathBuf),
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A thread, an eventfd or a timerfd of the device could not be created.
    #[error("cannot start the device's threads: {0}")]
    Thread(std::io::Error),
    /// Someone in this process already holds a [`Claim`] on this direction of the card.
    #[error("the {} stream of the card on {path} is already claimed", .direction.name())]
    DirectionTaken {
        /// The card's socket (its registry key).
        path: PathBuf,
        /// The direction asked for.
        direction: Direction,
    },
}

type Devices = HashMap<PathBuf, Weak<Device>>;
type Locked<'a> = MutexGuard<'a, Devices>;

/// Devices by socket path, so that elements naming the same socket share one card.
struct Registry {
    devices: Mutex<Devices>,
    /// Notified whenever a device has closed its socket and left `devices`.
    closed: Condvar,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    devices: Mutex::new(HashMap::new()),
    closed: Condvar::new(),
});

impl Registry {
    fn lock(&self) -> Locked<'_> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live device registered under `key`, if any. A device whose last handle is
    /// gone but whose `Drop` has not finished still listens on the socket, so binding
    /// the path now would find it busy: this waits until it has closed.
    fn live<'a>(&self, mut devices: Locked<'a>, key: &Path) -> (Locked<'a>, Option<Arc<Device>>) {
        loop {
            let Some(weak) = devices.get(key) else {
                return (devices, None);
            };
            if let Some(dev) = weak.upgrade() {
                return (devices, Some(dev));
            }
            devices = self.closed.wait(devices).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One sound card served on one socket. It lives as long as an element (or the
/// daemon) holds it; dropping the last handle closes the socket and removes its file.
pub struct Device {
    key: PathBuf,
    card: Arc<Card>,
    /// Only `None` once `Drop` has stopped it.
    running: Option<Running>,
    claims: Mutex<Claims>,
}

impl Device {
    /// The device serving `path` in this process, created (and listening) if there is
    /// none yet. If the last handle of a device on `path` is being dropped meanwhile,
    /// this waits until that device has closed the socket, then creates a new one.
    pub fn acquire(path: &Path) -> Result<Arc<Device>, Error> {
        let key = registry_key(path);
        let (mut devices, live) = REGISTRY.live(REGISTRY.lock(), &key);
        if let Some(dev) = live {
            return Ok(dev);
        }
        let listener = server::bind(&key)?;
        let dev = Arc::new(Device::serve(listener, key.clone(), true)?);
        devices.insert(key, Arc::downgrade(&dev));
        Ok(dev)
    }

    /// A device on an already listening socket (socket activation), registered under
    /// its path (or `fd:N` for an unnamed socket) so that elements naming that path
    /// share it. The socket file belongs to whoever created it and is left alone.
    pub fn from_listener(listener: UnixListener) -> Result<(Arc<Device>, PathBuf), Error> {
        use std::os::fd::AsRawFd;
        let key = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(registry_key))
            .unwrap_or_else(|| PathBuf::from(format!("fd:{}", listener.as_raw_fd())));
        let (mut devices, live) = REGISTRY.live(REGISTRY.lock(), &key);
        if live.is_some() {
            // `live` may be the last handle by now: dropping it drops the device,
            // whose `Drop` takes the registry lock.
            drop(devices);
            drop(live);
            return Err(Error::InUse(key));
        }
        let dev = Arc::new(Device::serve(listener, key.clone(), false)?);
        devices.insert(key.clone(), Arc::downgrade(&dev));
        Ok((dev, key))
    }

    /// Starts a device on `listener`. The caller holds the registry locked, so nothing
    /// here may lock it, not even on failure: then the threads already started stop
    /// and the socket file (when ours) is removed without a `Device` ever existing.
    fn serve(listener: UnixListener, key: PathBuf, owns_file: bool) -> Result<Device, Error> {
        let file = owns_file.then(|| key.clone());
        let card = match Card::new() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                if let Some(file) = file {
                    let _ = std::fs::remove_file(file);
                }
                return Err(Error::Thread(e));
            }
        };
        match Running::start(listener, file.clone(), card.clone()) {
            Ok(running) => Ok(Device {
                key,
                card,
                running: Some(running),
                claims: Mutex::new(Claims::default()),
            }),
            Err(e) => {
                // The listener is closed by now, but its file would stay behind: a
                // socket nobody serves, left by a device that never existed.
                if let Some(file) = file {
                    let _ = std::fs::remove_file(file);
                }
                Err(e)
            }
        }
    }

    /// The card the host side drives.
    pub fn card(&self) -> &Arc<Card> {
        &self.card
    }

    /// Claims `direction` of the card for the caller alone, until the returned
    /// [`Claim`] is dropped. This is how users that each serve one direction (an
    /// element per direction) keep a second one off the same stream, where the two
    /// would split the guest's periods between them. Users that do not claim (the
    /// daemon holding the card for its elements) are not affected.
    ///
    /// Fails with [`Error::DirectionTaken`] if `direction` is already claimed.
    pub fn claim(self: &Arc<Self>, direction: Direction) -> Result<Claim, Error> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let taken = claims.of(direction);
        if *taken {
            return Err(Error::DirectionTaken {
                path: self.key.clone(),
                direction,
            });
        }
        *taken = true;
        Ok(Claim {
            device: self.clone(),
            direction,
        })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // The socket closes before the entry goes: an acquire that finds the entry
        // dying waits for it, and then binds a path nobody listens on any more.
        drop(self.running.take());
        let mut devices = REGISTRY.lock();
        // Only our own entry: after it goes, another device may register the path.
        if devices
            .get(&self.key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), self))
        {
            devices.remove(&self.key);
        }
        drop(devices);
        REGISTRY.closed.notify_all();
    }
}

/// A device's threads and socket. Kept apart from [`Device`] so that a device that
/// fails to start can stop what it started without a `Device` (whose `Drop` takes the
/// registry lock, which the starting thread holds).
struct Running {
    card: Arc<Card>,
    server: Option<server::Server>,
    pacers: Vec<JoinHandle<()>>,
}

impl Running {
    fn start(
        listener: UnixListener,
        file: Option<PathBuf>,
        card: Arc<Card>,
    ) -> Result<Running, Error> {
        let mut running = Running {
            card: card.clone(),
            server: None,
            pacers: Vec::new(),
        };
        for dir in Direction::ALL {
            let card = card.clone();
            let t = std::thread::Builder::new()
                .name(format!("vhostsnd-{}", dir.name()))
                .spawn(move || while card.pace(dir) {})
                .map_err(Error::Thread)?;
            running.pacers.push(t);
        }
        running.server = Some(server::Server::start(listener, file, card)?);
        Ok(running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.server.take());
        self.card.lock().shutdown = true;
        self.card.wake();
        for t in self.pacers.drain(..) {
            let _ = t.join();
        }
    }
}

/// Which directions of a card are claimed.
#[derive(Default)]
struct Claims {
    playback: bool,
    capture: bool,
}

impl Claims {
    fn of(&mut self, direction: Direction) -> &mut bool {
        match direction {
            Direction::Playback => &mut self.playback,
            Direction::Capture => &mut self.capture,
        }
    }
}

/// One direction of a card, claimed with [`Device::claim`]; dropping it releases the
/// direction. It holds the device, so the card lives at least as long.
pub struct Claim {
    device: Arc<Device>,
    direction: Direction,
}

impl Claim {
    /// The device whose direction this is.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The direction claimed.
    pub fn direction(&self) -> Direction {
        self.direction
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = self.device.claims.lock().unwrap_or_else(|e| e.into_inner());
        *claims.of(self.direction) = false;
    }
}

/// The name a socket is registered under: its directory's canonical path and its
/// file name, so that every spelling of one socket (relative, with `..`, through a
/// symbolic link) finds one device; `fd:N` (an unnamed inherited socket) as it is.
fn registry_key(path: &Path) -> PathBuf {
    if path.to_str().is_some_and(|p| p.starts_with("fd:")) {
        return path.to_owned();
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(absolute),
        _ => absolute,
    }
}
