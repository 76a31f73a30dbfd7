//! Output buffers recycled through a buffer pool sized to the guest's period: a tick
//! copies the period into a buffer that downstream gave back instead of allocating
//! one (GStreamer's own audio sources draw theirs from GstBaseSrc's pool).

use gst::prelude::*;

#[derive(Default)]
pub(super) struct OutputPool {
    /// The pool and the size of its buffers.
    pool: Option<(gst::BufferPool, usize)>,
}

impl OutputPool {
    /// A writable buffer of `size` bytes: from the pool while the periods keep their
    /// size, from a new pool when it changes, newly allocated if no pool can be made.
    pub(super) fn buffer(&mut self, size: usize) -> gst::Buffer {
        if self.pool.as_ref().is_none_or(|(_, s)| *s != size) {
            self.clear();
            self.pool = make(size).map(|p| (p, size));
        }
        self.pool
            .as_ref()
            .and_then(|(p, _)| p.acquire_buffer(None).ok())
            .unwrap_or_else(|| gst::Buffer::with_size(size).unwrap_or_default())
    }

    /// A buffer holding a copy of `data`.
    pub(super) fn copy_of(&mut self, data: &[u8]) -> gst::Buffer {
        let mut buffer = self.buffer(data.len());
        if let Some(b) = buffer.get_mut() {
            if b.copy_from_slice(0, data).is_ok() {
                return buffer;
            }
        }
        gst::Buffer::from_slice(data.to_vec())
    }

    /// Lets the pool go: buffers still downstream are freed when they come back.
    pub(super) fn clear(&mut self) {
        if let Some((p, _)) = self.pool.take() {
            let _ = p.set_active(false);
        }
    }
}

fn make(size: usize) -> Option<gst::BufferPool> {
    let size = u32::try_from(size).ok().filter(|s| *s > 0)?;
    let pool = gst::BufferPool::new();
    let mut config = pool.config();
    config.set_params(None, size, 0, 0);
    pool.set_config(config).ok()?;
    pool.set_active(true).ok()?;
    Some(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_carries_nothing_over() {
        gst::init().unwrap();
        let mut pool = OutputPool::default();
        let mut b = pool.copy_of(&[1u8; 64]);
        {
            let b = b.get_mut().unwrap();
            b.set_flags(gst::BufferFlags::GAP);
            b.set_pts(gst::ClockTime::from_seconds(1));
            b.set_size(32);
        }
        let first = b.as_ptr();
        drop(b);
        let again = pool.buffer(64);
        assert_eq!(again.as_ptr(), first, "the buffer came back to the pool");
        assert_eq!(again.size(), 64);
        assert!(!again.flags().contains(gst::BufferFlags::GAP));
        assert_eq!(again.pts(), None);
        assert_eq!(
            pool.copy_of(&[2u8; 48]).map_readable().unwrap().as_slice(),
            &[2u8; 48]
        );
    }
}
