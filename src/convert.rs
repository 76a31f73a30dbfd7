//! The guest's audio in another format: GStreamer's own converter (sample format,
//! channel mix and resampling in one, as `audioconvert ! audioresample` use it), for
//! which gstreamer-audio has no safe binding.

use std::ptr::{self, NonNull};

use gst::glib::ffi::gpointer;
use gst::glib::translate::ToGlibPtr;
use gst_audio::{ffi, AudioInfo};

/// Converts interleaved frames of one `AudioInfo` into another, keeping its filters'
/// state from one call to the next so that consecutive periods join without a seam.
pub struct Converter {
    raw: NonNull<ffi::GstAudioConverter>,
    in_bpf: usize,
    out_bpf: usize,
}

// SAFETY: a GstAudioConverter holds no thread-bound state; `&mut self` on every call
// keeps it used from one thread at a time.
unsafe impl Send for Converter {}

impl Converter {
    /// `None` if GStreamer cannot convert between the two (it logs why).
    pub fn new(from: &AudioInfo, to: &AudioInfo) -> Option<Converter> {
        let from_ptr: *const ffi::GstAudioInfo = from.to_glib_none().0;
        let to_ptr: *const ffi::GstAudioInfo = to.to_glib_none().0;
        // SAFETY: both infos are valid for the call and only read (the converter keeps
        // copies); a NULL config (transfer full) asks for the defaults.
        let raw = unsafe {
            ffi::gst_audio_converter_new(
                ffi::GST_AUDIO_CONVERTER_FLAG_NONE,
                from_ptr as *mut _,
                to_ptr as *mut _,
                ptr::null_mut(),
            )
        };
        Some(Converter {
            raw: NonNull::new(raw)?,
            in_bpf: from.bpf() as usize,
            out_bpf: to.bpf() as usize,
        })
    }

    /// `input`'s whole frames in the output format: as many frames as the resampler
    /// has ready, so their count can differ from the input's by its phase.
    pub fn convert(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let in_frames = input.len() / self.in_bpf.max(1);
        // SAFETY: the converter is valid until drop.
        let out_frames =
            unsafe { ffi::gst_audio_converter_get_out_frames(self.raw.as_ptr(), in_frames) };
        let mut out = vec![0u8; out_frames.checked_mul(self.out_bpf)?];
        let mut ins = [input.as_ptr() as gpointer];
        let mut outs = [out.as_mut_ptr() as gpointer];
        // SAFETY: one interleaved plane each way, `in_frames` readable frames and
        // `out_frames` writable ones; without FLAG_IN_WRITABLE the input is only read.
        let ok = unsafe {
            ffi::gst_audio_converter_samples(
                self.raw.as_ptr(),
                ffi::GST_AUDIO_CONVERTER_FLAG_NONE,
                ins.as_mut_ptr(),
                in_frames,
                outs.as_mut_ptr(),
                out_frames,
            )
        };
        (ok != 0).then_some(out)
    }
}

impl Drop for Converter {
    fn drop(&mut self) {
        // SAFETY: created by gst_audio_converter_new and freed once, here.
        unsafe { ffi::gst_audio_converter_free(self.raw.as_ptr()) }
    }
}
