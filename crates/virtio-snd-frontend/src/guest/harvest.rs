//! Collecting what the device put on the used rings: completions, control replies and
//! events, and waiting for them on the call eventfds.

use super::*;

impl FakeGuest {
    /// Collects what the device published on all used rings, in queue order 0..3 so
    /// that an answer on the control queue implies its earlier I/O completions are
    /// collected too.
    fn harvest(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let mut event_blocks = Vec::new();
        for q in 0..self.queues.len() {
            let qs = &mut self.queues[q];
            let pending = qs.ring.used_pending(&self.ram)?;
            if pending > qs.ring.size() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "device advanced the used idx of queue {q} by {pending}, \
                         more than the {} entries of the ring",
                        qs.ring.size()
                    ),
                ));
            }
            while let Some((id, used_len)) = qs.ring.pop_used(&self.ram)? {
                let inflight = usize::try_from(id)
                    .ok()
                    .and_then(|i| qs.slots.get_mut(i))
                    .and_then(Option::take);
                let Some(inf) = inflight else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "device put descriptor id {id} in the used ring of queue {q}, \
                             but no chain is in flight there"
                        ),
                    ));
                };
                qs.ring.free_chain(id as u16);
                if let Some(t) = inf.table {
                    self.ram.free(t);
                }
                if let Kind::Event { gpa } = inf.kind {
                    let mut b = [0u8; 8];
                    self.ram.read(gpa, &mut b)?;
                    self.events.push_back(SndEvent {
                        code: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                        data: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                        used_len,
                        at: now,
                    });
                    if let Some(block) = inf.block {
                        // Refilled below, like virtsnd_event_notify_cb.
                        event_blocks.push(block);
                    }
                    continue;
                }
                let (pcm, data) = match &inf.kind {
                    Kind::Pcm {
                        data_gpa,
                        data_len,
                        status_gpa,
                        rx,
                    } => {
                        let mut st = PcmStatus::default();
                        self.ram.read(*status_gpa, st.as_mut_slice())?;
                        let data = if *rx && !inf.abandoned {
                            let n = used_len.saturating_sub(STATUS_LEN as u32).min(*data_len);
                            let mut d = vec![0u8; n as usize];
                            self.ram.read(*data_gpa, &mut d)?;
                            d
                        } else {
                            Vec::new()
                        };
                        (Some(st), data)
                    }
                    Kind::Writable(areas) => {
                        let mut d = Vec::new();
                        if !inf.abandoned {
                            for &(gpa, len) in areas {
                                let at = d.len();
                                d.resize(at + len as usize, 0);
                                self.ram.read(gpa, &mut d[at..])?;
                            }
                        }
                        (None, d)
                    }
                    Kind::Opaque | Kind::Event { .. } => (None, Vec::new()),
                };
                if let Some(b) = inf.block {
                    self.ram.free(b);
                }
                if !inf.abandoned {
                    qs.ready.push_back(Completion {
                        token: inf.token,
                        queue: q,
                        used_len,
                        pcm,
                        data,
                        at: now,
                    });
                }
            }
        }
        if !event_blocks.is_empty() {
            for block in event_blocks {
                self.post_event_buffer(block)?;
            }
            self.kick_if_needed(QUEUE_EVENT)?;
        }
        Ok(())
    }

    /// Waits until `done` holds, sleeping on the call eventfds in between. Returns
    /// whether `done` held before `deadline`.
    fn wait_for(&mut self, deadline: Instant, done: impl Fn(&Self) -> bool) -> io::Result<bool> {
        loop {
            self.harvest()?;
            if done(self) {
                return Ok(true);
            }
            // Ask for a notification, then look again: anything published before the
            // request would otherwise not wake us.
            for qs in &self.queues {
                qs.ring.arm_call(&self.ram)?;
            }
            self.harvest()?;
            if done(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let left = deadline - now;
            let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
            self.poll_calls(ms.min(i32::MAX as u128) as i32)?;
        }
    }

    fn poll_calls(&mut self, timeout_ms: i32) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .queues
            .iter()
            .map(|qs| libc::pollfd {
                fd: qs.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: fds is a valid array of fds.len() pollfd structs for the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(io::Error::new(
                e.kind(),
                format!("poll on call eventfds: {e}"),
            ));
        }
        for (qs, p) in self.queues.iter().zip(&fds) {
            if p.revents & libc::POLLIN != 0 {
                match qs.call.read() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn deadline(timeout: Duration) -> Instant {
        let now = Instant::now();
        now.checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
    }

    /// Completions on `queue` available now, in used-ring order (never blocks).
    /// Event-queue completions are not returned here; see [`events`](Self::events).
    pub fn try_io(&mut self, queue: usize) -> io::Result<Vec<Completion>> {
        self.check_queue(queue)?;
        self.harvest()?;
        Ok(self.queues[queue].ready.drain(..).collect())
    }

    /// Waits up to `timeout` for at least one completion on `queue`, then returns all
    /// available ones in used-ring order; an empty Vec means the time ran out.
    pub fn wait_io(&mut self, queue: usize, timeout: Duration) -> io::Result<Vec<Completion>> {
        self.wait_any(&[queue], timeout)
    }

    /// Like [`wait_io`](Self::wait_io) over several queues (e.g. tx and rx together);
    /// completions are grouped by queue in the order given, each in used-ring order.
    pub fn wait_any(&mut self, queues: &[usize], timeout: Duration) -> io::Result<Vec<Completion>> {
        for &q in queues {
            self.check_queue(q)?;
        }
        self.wait_for(Self::deadline(timeout), |s| {
            queues.iter().any(|&q| !s.queues[q].ready.is_empty())
        })?;
        let mut out = Vec::new();
        for &q in queues {
            out.extend(self.queues[q].ready.drain(..));
        }
        Ok(out)
    }

    /// Waits for the completion of one chain; other completions stay queued. Fails
    /// with `TimedOut` (the chain stays in flight) or `NotFound` for a token that is
    /// neither in flight nor completed-and-unclaimed.
    pub fn wait_token(&mut self, token: Token, timeout: Duration) -> io::Result<Completion> {
        let q = token.queue();
        self.check_queue(q)?;
        let found = self.wait_for(Self::deadline(timeout), |s| {
            s.queues[q].ready.iter().any(|c| c.token == token)
        })?;
        if found {
            let qs = &mut self.queues[q];
            if let Some(pos) = qs.ready.iter().position(|c| c.token == token) {
                if let Some(c) = qs.ready.remove(pos) {
                    return Ok(c);
                }
            }
        }
        let in_flight = self.queues[q]
            .slots
            .iter()
            .flatten()
            .any(|f| f.token == token && !f.abandoned);
        if in_flight {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no completion for chain {} on queue {q} within {timeout:?}",
                    token.seq
                ),
            ))
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("chain {} on queue {q} is not in flight", token.seq),
            ))
        }
    }

    /// Drops the completion of `token` when it comes (its buffers are still recycled).
    /// Returns false if it is not in flight.
    pub fn abandon(&mut self, token: Token) -> bool {
        let Some(qs) = self.queues.get_mut(token.queue()) else {
            return false;
        };
        qs.ready.retain(|c| c.token != token);
        match qs.slots.iter_mut().flatten().find(|f| f.token == token) {
            Some(f) => {
                f.abandoned = true;
                true
            }
            None => false,
        }
    }

    /// Events the device sent since the last call (buffers already refilled).
    pub fn events(&mut self) -> io::Result<Vec<SndEvent>> {
        self.harvest()?;
        Ok(self.events.drain(..).collect())
    }

    /// Waits up to `timeout` for at least one event; empty means none came.
    pub fn wait_events(&mut self, timeout: Duration) -> io::Result<Vec<SndEvent>> {
        self.wait_for(Self::deadline(timeout), |s| !s.events.is_empty())?;
        Ok(self.events.drain(..).collect())
    }
}
