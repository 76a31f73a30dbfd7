//! Shared helpers for the integration tests: booting a real Linux guest against the
//! vhost-user device (`qemu`) and checking the audio that comes out (`analysis`).
//! Each test binary uses a subset, hence the `dead_code` allowances.

#[allow(dead_code)]
pub mod analysis;
#[allow(dead_code)]
pub mod qemu;
