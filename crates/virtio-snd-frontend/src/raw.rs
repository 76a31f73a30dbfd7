//! Raw vhost-user messages for hostile tests: headers and payloads written to the
//! socket as given, sizes that lie, file descriptors of any kind, and connections
//! closed in the middle of a message. [`FakeGuest`](super::FakeGuest) only ever sends
//! what QEMU sends; this is for everything else.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::session;

/// Bytes of a vhost-user message header: request, flags, payload size.
pub const HEADER_LEN: usize = 12;
/// The protocol version in the low bits of `flags`; every valid message carries it.
pub const VERSION_1: u32 = 0x1;
/// `flags` bit of a message that answers another.
pub const FLAG_REPLY: u32 = 0x4;
/// `flags` bit asking the backend to acknowledge the message (REPLY_ACK).
pub const FLAG_NEED_REPLY: u32 = 0x8;

/// A vhost-user message header; `size` need not match the payload that follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub request: u32,
    pub flags: u32,
    pub size: u32,
}

impl Header {
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        b[0..4].copy_from_slice(&self.request.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8; HEADER_LEN]) -> Self {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            request: word(0),
            flags: word(4),
            size: word(8),
        }
    }
}

/// One connection to a vhost-user backend that sends bytes exactly as told.
pub struct RawVhostUser {
    stream: UnixStream,
}

impl RawVhostUser {
    /// Connects to `path`, retrying until `timeout` while nobody listens yet. Reads
    /// and writes give up after `msg_timeout`, so a backend that stops reading (or
    /// never answers) fails the caller instead of hanging it.
    pub fn connect(path: &Path, timeout: Duration, msg_timeout: Duration) -> io::Result<Self> {
        let stream = session::connect_socket(path, timeout, msg_timeout)?;
        Ok(RawVhostUser { stream })
    }

    /// Sends `header` and `payload` in one write, with `fds` attached (SCM_RIGHTS).
    /// Nothing is checked: the header's size, flags and request are sent as they are.
    pub fn send(&mut self, header: Header, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let head = header.to_bytes();
        self.send_bytes(&[&head[..], payload], fds)
    }

    /// Sends a header announcing `payload.len()` bytes, then only the first `sent` of
    /// them, then closes the connection: the backend is left in the middle of reading
    /// a message.
    pub fn send_partial_and_close(
        mut self,
        request: u32,
        flags: u32,
        payload: &[u8],
        sent: usize,
    ) -> io::Result<()> {
        let header = Header {
            request,
            flags,
            size: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        };
        let head = header.to_bytes();
        let cut = sent.min(payload.len());
        self.send_bytes(&[&head[..], &payload[..cut]], &[])
    }

    /// Sends arbitrary bytes (a header cut short, two messages in one write, ...).
    pub fn send_raw(&mut self, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
        self.send_bytes(&[bytes], fds)
    }

    fn send_bytes(&mut self, parts: &[&[u8]], fds: &[RawFd]) -> io::Result<()> {
        if fds.is_empty() {
            for p in parts {
                self.stream.write_all(p)?;
            }
            return Ok(());
        }
        // The fds ride on the first byte; whatever sendmsg did not take goes after.
        let all: Vec<u8> = parts.concat();
        if all.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file descriptors need at least one byte to travel with",
            ));
        }
        let n = self
            .stream
            .send_with_fds(&[&all[..]], fds)
            .map_err(|e| io::Error::other(format!("sendmsg with {} fds: {e}", fds.len())))?;
        self.stream.write_all(&all[n..])
    }

    /// Reads whatever replies the backend has sent so far without waiting, and drops
    /// them; returns how many bytes that was. A backend that closed the connection
    /// gives `Ok(0)` from then on.
    pub fn discard_replies(&mut self) -> io::Result<usize> {
        self.stream.set_nonblocking(true)?;
        let mut total = 0;
        let mut buf = [0u8; 4096];
        let res = loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break Ok(total),
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A backend that gave up on us resets the connection: not our error.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break Ok(total),
                Err(e) => break Err(e),
            }
        };
        self.stream.set_nonblocking(false)?;
        res
    }

    /// Waits for one reply (header and payload), up to the connection's read timeout.
    /// `None` means the backend closed the connection.
    pub fn recv_reply(&mut self) -> io::Result<Option<(Header, Vec<u8>)>> {
        let mut head = [0u8; HEADER_LEN];
        match self.stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        let header = Header::from_bytes(&head);
        // A reply is at most a few hundred bytes; a bigger size is the backend's lie,
        // and reading it all would wait for bytes that never come.
        let mut payload = vec![0u8; (header.size as usize).min(4096)];
        self.stream.read_exact(&mut payload)?;
        Ok(Some((header, payload)))
    }

    /// Closes the connection (dropping does the same).
    pub fn close(self) {}
}
