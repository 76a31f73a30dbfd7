//! SIGINT/SIGTERM as an orderly shutdown. The signals are blocked in every thread
//! (masks are inherited, so this runs before any thread exists) and a dedicated thread
//! takes them with sigwait.

use std::io;

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread and all threads it starts later.
pub fn block() -> io::Result<()> {
    let set = shutdown_signals();
    // SAFETY: `set` is a valid, initialised signal set; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Calls `on_signal` (once) from a dedicated thread when SIGINT or SIGTERM arrives.
pub fn on_shutdown(on_signal: impl FnOnce(i32) + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = shutdown_signals();
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised and `sig` is a valid place for the result.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            on_signal(sig);
        })
        .map(|_| ())
}
