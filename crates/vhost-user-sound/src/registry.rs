//! Devices by socket path: elements (or a daemon) naming the same socket in one
//! process share one card, and the last one to let go closes the socket.

use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::thread::JoinHandle;

use crate::card::{Card, Direction};
use crate::server;

/// Why a device could not be served.
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
    /// A thread or an eventfd of the device could not be created.
    #[error("cannot start the device's threads: {0}")]
    Thread(std::io::Error),
}

/// Devices by socket path, so that elements naming the same socket share one card.
static DEVICES: LazyLock<Mutex<HashMap<PathBuf, Weak<Device>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// One sound card served on one socket. It lives as long as an element (or the
/// daemon) holds it; dropping the last handle closes the socket and removes its file.
pub struct Device {
    key: PathBuf,
    card: Arc<Card>,
    server: Option<server::Server>,
    pacers: Vec<JoinHandle<()>>,
}

impl Device {
    /// The device serving `path` in this process, created (and listening) if there is
    /// none yet.
    pub fn acquire(path: &Path) -> Result<Arc<Device>, Error> {
        let key = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let mut devices = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dev) = devices.get(&key).and_then(Weak::upgrade) {
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
            .and_then(|a| a.as_pathname().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from(format!("fd:{}", listener.as_raw_fd())));
        let mut devices = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
        if devices.get(&key).is_some_and(|w| w.strong_count() > 0) {
            return Err(Error::InUse(key));
        }
        let dev = Arc::new(Device::serve(listener, key.clone(), false)?);
        devices.insert(key.clone(), Arc::downgrade(&dev));
        Ok((dev, key))
    }

    fn serve(listener: UnixListener, key: PathBuf, owns_file: bool) -> Result<Device, Error> {
        let card = Arc::new(Card::new());
        let mut dev = Device {
            key: key.clone(),
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
            dev.pacers.push(t);
        }
        let file = owns_file.then_some(key);
        dev.server = Some(server::Server::start(listener, file, card)?);
        Ok(dev)
    }

    /// The card the host side drives.
    pub fn card(&self) -> &Arc<Card> {
        &self.card
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Holding the registry lock while the socket closes keeps a concurrent
        // `acquire` of the same path from seeing it still bound.
        let mut devices = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
        if devices
            .get(&self.key)
            .is_some_and(|w| w.strong_count() == 0)
        {
            devices.remove(&self.key);
        }
        drop(self.server.take());
        drop(devices);
        self.card.lock().shutdown = true;
        self.card.wake();
        for t in self.pacers.drain(..) {
            let _ = t.join();
        }
    }
}
