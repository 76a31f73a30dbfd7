//! Putting requests, I/O periods, event buffers and hand-made descriptor chains on
//! the driver's queues.

use super::*;

impl FakeGuest {
    /// Queues one playback period: [xfer header R][data R, split over
    /// `options().data_split` descriptors][status 8 bytes W] on the tx queue.
    pub fn submit_tx(&mut self, stream_id: u32, data: &[u8]) -> io::Result<Token> {
        self.submit_tx_split(stream_id, data, self.opts.data_split)
    }

    /// [`submit_tx`](Self::submit_tx) with the data split over `parts` descriptors.
    pub fn submit_tx_split(
        &mut self,
        stream_id: u32,
        data: &[u8],
        parts: usize,
    ) -> io::Result<Token> {
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "period too large"))?;
        let block = self.io_block(stream_id, len)?;
        if let Err(e) = self.ram.write(block.addr + DATA_OFF, data) {
            self.ram.free(block);
            return Err(e);
        }
        self.submit_pcm(virtio_snd_wire::QUEUE_TX, block, len, parts, false)
    }

    /// Queues one capture period: [xfer header R][`data_len` bytes W, split over
    /// `options().data_split` descriptors][status 8 bytes W] on the rx queue.
    pub fn submit_rx(&mut self, stream_id: u32, data_len: u32) -> io::Result<Token> {
        self.submit_rx_split(stream_id, data_len, self.opts.data_split)
    }

    /// [`submit_rx`](Self::submit_rx) with the data area split over `parts` descriptors.
    pub fn submit_rx_split(
        &mut self,
        stream_id: u32,
        data_len: u32,
        parts: usize,
    ) -> io::Result<Token> {
        let block = self.io_block(stream_id, data_len)?;
        if let Err(e) = self.ram.poison(block.addr + DATA_OFF, u64::from(data_len)) {
            self.ram.free(block);
            return Err(e);
        }
        self.submit_pcm(virtio_snd_wire::QUEUE_RX, block, data_len, parts, true)
    }

    /// Allocates an I/O block and writes the xfer header and a poisoned status.
    fn io_block(&mut self, stream_id: u32, data_len: u32) -> io::Result<Block> {
        let status_off = DATA_OFF + align8(u64::from(data_len));
        let block = self.ram.alloc(status_off + STATUS_LEN)?;
        let hdr = PcmXfer {
            stream_id: stream_id.into(),
        };
        let res = self
            .ram
            .write(block.addr, hdr.as_slice())
            .and_then(|_| self.ram.poison(block.addr + status_off, STATUS_LEN));
        match res {
            Ok(()) => Ok(block),
            Err(e) => {
                self.ram.free(block);
                Err(e)
            }
        }
    }

    fn submit_pcm(
        &mut self,
        q: usize,
        block: Block,
        data_len: u32,
        parts: usize,
        rx: bool,
    ) -> io::Result<Token> {
        let data_gpa = block.addr + DATA_OFF;
        let status_gpa = data_gpa + align8(u64::from(data_len));
        let data_flags = if rx { VRING_DESC_F_WRITE } else { 0 };
        let mut descs = std::mem::take(&mut self.scratch);
        descs.clear();
        descs.push(RawDesc {
            addr: block.addr,
            len: XFER_LEN as u32,
            flags: 0,
            link: None,
        });
        if data_len > 0 {
            let parts = parts.clamp(1, data_len as usize) as u32;
            let piece = data_len / parts;
            let mut off = 0;
            for i in 0..parts {
                let len = if i + 1 == parts {
                    data_len - off
                } else {
                    piece
                };
                descs.push(RawDesc {
                    addr: data_gpa + u64::from(off),
                    len,
                    flags: data_flags,
                    link: None,
                });
                off += len;
            }
        }
        descs.push(RawDesc {
            addr: status_gpa,
            len: STATUS_LEN as u32,
            flags: VRING_DESC_F_WRITE,
            link: None,
        });
        let kind = Kind::Pcm {
            data_gpa,
            data_len,
            status_gpa,
            rx,
        };
        let res = self.submit(q, &descs, Some(block), kind, false);
        self.scratch = descs;
        res
    }

    /// Submits a chain of explicit descriptors on any queue (hostile tests: addresses
    /// outside RAM, loops, zero lengths, unnegotiated flags, indirect tables built with
    /// [`indirect_table`](Self::indirect_table)). The chain goes into the ring exactly
    /// as given, never into an indirect table of the frontend's. Its completion
    /// carries no data.
    pub fn submit_descs(&mut self, queue: usize, descs: &[Desc]) -> io::Result<Token> {
        let raw: Vec<RawDesc> = descs.iter().map(Desc::raw).collect();
        self.submit(queue, &raw, None, Kind::Opaque, true)
    }

    /// Submits a chain whose buffers the frontend allocates and fills: one descriptor
    /// per segment. The completion's `data` is all writable segments, concatenated.
    pub fn submit_segments(&mut self, queue: usize, segs: &[Segment<'_>]) -> io::Result<Token> {
        let total: u64 = segs
            .iter()
            .map(|s| match s {
                Segment::Read(b) => align8(b.len() as u64),
                Segment::Write(n) => align8(u64::from(*n)),
            })
            .sum();
        let block = self.ram.alloc(total.max(8))?;
        let mut raw = Vec::with_capacity(segs.len());
        let mut areas = Vec::new();
        let mut off = block.addr;
        let mut fill = || -> io::Result<()> {
            for s in segs {
                let (len, flags) = match s {
                    Segment::Read(b) => {
                        self.ram.write(off, b)?;
                        (b.len() as u64, 0)
                    }
                    Segment::Write(n) => {
                        self.ram.poison(off, u64::from(*n))?;
                        areas.push((off, *n));
                        (u64::from(*n), VRING_DESC_F_WRITE)
                    }
                };
                raw.push(RawDesc {
                    addr: off,
                    len: len as u32,
                    flags,
                    link: None,
                });
                off += align8(len);
            }
            Ok(())
        };
        if let Err(e) = fill() {
            self.ram.free(block);
            return Err(e);
        }
        self.submit(queue, &raw, Some(block), Kind::Writable(areas), false)
    }

    /// Submits a control request without waiting: [request R][response area W].
    /// An empty request or a zero-length response leaves that descriptor out.
    pub fn submit_control(&mut self, req: &[u8], resp_len: u32) -> io::Result<Token> {
        let mut segs = Vec::with_capacity(2);
        if !req.is_empty() {
            segs.push(Segment::Read(req));
        }
        if resp_len > 0 {
            segs.push(Segment::Write(resp_len));
        }
        self.submit_segments(virtio_snd_wire::QUEUE_CONTROL, &segs)
    }

    /// Puts a chain on queue `q`. Like Linux's virtqueue_add_split, a chain of more
    /// than one descriptor goes into an indirect table when that was negotiated,
    /// unless `as_given` (explicit chains keep their layout).
    fn submit(
        &mut self,
        q: usize,
        descs: &[RawDesc],
        block: Option<Block>,
        kind: Kind,
        as_given: bool,
    ) -> io::Result<Token> {
        let mut table = None;
        let head = match self.place(q, descs, as_given, &mut table) {
            Ok(h) => h,
            Err(e) => {
                for b in block.into_iter().chain(table) {
                    self.ram.free(b);
                }
                return Err(e);
            }
        };
        self.next_seq += 1;
        let token = Token {
            seq: self.next_seq,
            queue: q as u8,
        };
        self.queues[q].slots[usize::from(head)] = Some(InFlight {
            token,
            block,
            table,
            kind,
            abandoned: false,
        });
        if self.auto_kick {
            self.kick_if_needed(q)?;
        }
        Ok(token)
    }

    /// Writes the chain into the ring, or into an indirect table (left in `table`,
    /// also on error, for the caller to free) with one ring descriptor for it.
    fn place(
        &mut self,
        q: usize,
        descs: &[RawDesc],
        as_given: bool,
        table: &mut Option<Block>,
    ) -> io::Result<u16> {
        self.check_queue(q)?;
        let size = self.queues[q].ring.size();
        if descs.len() > usize::from(size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a chain of {} descriptors never fits a queue of {size}",
                    descs.len()
                ),
            ));
        }
        if as_given || descs.len() < 2 || !self.indirect() {
            return self.queues[q].ring.add_chain(&self.ram, descs);
        }
        let bytes = ring::indirect_table(descs);
        let t = self.ram.alloc(bytes.len() as u64)?;
        *table = Some(t);
        self.ram.write(t.addr, &bytes)?;
        let desc = RawDesc {
            addr: t.addr,
            len: bytes.len() as u32,
            flags: VRING_DESC_F_INDIRECT,
            link: None,
        };
        self.queues[q].ring.add_chain(&self.ram, &[desc])
    }

    pub(super) fn post_event_buffer(&mut self, block: Block) -> io::Result<()> {
        self.ram.poison(block.addr, 8)?;
        let desc = [RawDesc {
            addr: block.addr,
            len: 8,
            flags: VRING_DESC_F_WRITE,
            link: None,
        }];
        let qs = &mut self.queues[QUEUE_EVENT];
        let head = match qs.ring.add_chain(&self.ram, &desc) {
            Ok(h) => h,
            Err(e) => {
                self.ram.free(block);
                return Err(e);
            }
        };
        self.next_seq += 1;
        qs.slots[usize::from(head)] = Some(InFlight {
            token: Token {
                seq: self.next_seq,
                queue: QUEUE_EVENT as u8,
            },
            block: Some(block),
            table: None,
            kind: Kind::Event { gpa: block.addr },
            abandoned: false,
        });
        Ok(())
    }
}
