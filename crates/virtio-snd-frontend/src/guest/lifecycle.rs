//! What QEMU does to a running device besides I/O: stopping and starting its rings
//! when the VM is paused and resumed (virsh suspend/resume, snapshots), the new
//! rings of a guest driver that reset the device (reboot, module reload), and what a
//! hostile frontend does: swapping guest RAM under running rings, publishing a chain
//! twice.

use super::*;

impl FakeGuest {
    /// Stops every ring as QEMU's vhost_dev_stop does when the VM stops:
    /// SET_VRING_ENABLE 0, then GET_VRING_BASE on each queue. Returns where the
    /// device says each ring stood (its next available index), which
    /// [`resume`](Self::resume) hands back. The guest does nothing meanwhile: it is
    /// paused.
    pub fn pause(&mut self) -> io::Result<[u16; NUM_QUEUES]> {
        for q in 0..NUM_QUEUES {
            self.frontend
                .set_vring_enable(q, false)
                .map_err(|e| session::vu_err(&format!("SET_VRING_ENABLE 0 (queue {q})"), e))?;
        }
        let mut bases = [0; NUM_QUEUES];
        for (q, base) in bases.iter_mut().enumerate() {
            let b = self
                .frontend
                .get_vring_base(q)
                .map_err(|e| session::vu_err(&format!("GET_VRING_BASE (queue {q})"), e))?;
            *base = u16::try_from(b).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("GET_VRING_BASE (queue {q}) answered {b}"),
                )
            })?;
        }
        Ok(bases)
    }

    /// Starts the rings again as QEMU's vhost_dev_start does when the VM continues:
    /// SET_FEATURES, SET_MEM_TABLE, then for each queue SET_VRING_NUM, SET_VRING_BASE
    /// (`bases`, as [`pause`](Self::pause) returned them), SET_VRING_ADDR, KICK and
    /// CALL, and SET_VRING_ENABLE 1. The rings, and what is in flight on them, are
    /// the guest's as before.
    pub fn resume(&mut self, bases: [u16; NUM_QUEUES]) -> io::Result<()> {
        self.frontend
            .set_features(self.negotiated.acked_features)
            .map_err(|e| session::vu_err("SET_FEATURES", e))?;
        session::set_mem_table(&self.frontend, &self.ram)?;
        for (q, base) in bases.iter().enumerate() {
            let qs = &self.queues[q];
            session::setup_vring(
                &self.frontend,
                q,
                *base,
                &qs.ring,
                &self.ram,
                &qs.kick,
                &qs.call,
            )?;
        }
        for q in 0..NUM_QUEUES {
            self.frontend
                .set_vring_enable(q, true)
                .map_err(|e| session::vu_err(&format!("SET_VRING_ENABLE (queue {q})"), e))?;
        }
        Ok(())
    }

    /// After [`pause`](Self::pause): the guest reset the device and a new driver set
    /// up fresh rings in the same place, as after a reboot. Everything in flight is
    /// forgotten (the old driver is gone), the rings start at index 0 (QEMU resets
    /// its own copy of the avail index with the device), and the new driver fills the
    /// event queue again.
    pub fn restart_driver(&mut self) -> io::Result<()> {
        let size = self.opts.queue_size;
        for q in 0..NUM_QUEUES {
            let base = self.queues[q].ring.desc_gpa;
            self.ram.write(base, &vec![0; ring_bytes(size) as usize])?;
            let mut ring = DriverRing::new(base, size)?;
            ring.set_event_idx(self.event_idx());
            let qs = &mut self.queues[q];
            qs.ring = ring;
            for slot in qs.slots.iter_mut() {
                if let Some(f) = slot.take() {
                    for block in f.block.into_iter().chain(f.table) {
                        self.ram.free(block);
                    }
                }
            }
            qs.ready.clear();
        }
        self.resume([0; NUM_QUEUES])?;
        self.fill_event_queue()
    }

    /// RESET_DEVICE (when the device offers it): the device forgets the driver's
    /// state. The rings stay as they are; a new driver sets them up again with
    /// [`restart_driver`](Self::restart_driver).
    pub fn reset_device(&mut self) -> io::Result<()> {
        self.frontend
            .reset_device()
            .map_err(|e| session::vu_err("RESET_DEVICE", e))
    }

    /// SET_MEM_TABLE with fresh zeroed RAM of the same size while the rings run, as a
    /// hostile or broken frontend might: the rings the device serves now read as
    /// zeroes, and the driver's own state goes with the old RAM (nothing is in flight,
    /// the rings are empty at index 0). [`reset_device`](Self::reset_device) and
    /// [`restart_driver`](Self::restart_driver) make a working device of it again.
    pub fn swap_memory(&mut self) -> io::Result<()> {
        let size = self.opts.queue_size;
        let reserved = (ring_bytes(size) * NUM_QUEUES as u64).max(RING_AREA);
        let ram = GuestRam::new(self.opts.mem_size, reserved)?;
        session::set_mem_table(&self.frontend, &ram)?;
        self.ram = ram;
        let event_idx = self.event_idx();
        for qs in &mut self.queues {
            let mut ring = DriverRing::new(qs.ring.desc_gpa, size)?;
            ring.set_event_idx(event_idx);
            qs.ring = ring;
            qs.slots.iter_mut().for_each(|s| *s = None);
            qs.ready.clear();
        }
        Ok(())
    }

    /// Publishes the chain of `token`, still in flight, once more on its queue's avail
    /// ring (and kicks, if auto-kick is on): the device sees the same head index again.
    pub fn republish(&mut self, token: Token) -> io::Result<()> {
        let q = token.queue();
        self.check_queue(q)?;
        let head = self.queues[q]
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|f| f.token == token))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the chain is not in flight"))?;
        self.queues[q].ring.publish(&self.ram, head as u16)?;
        if self.auto_kick {
            self.kick_if_needed(q)?;
        }
        Ok(())
    }
}
