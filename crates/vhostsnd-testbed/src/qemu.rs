//! Real-guest test harness: boots a tiny Linux guest under QEMU with a
//! `vhost-user-snd-pci` device connected to the socket our element serves (or QEMU's
//! own `virtio-sound-pci`, for the benchmark), runs a shell script in the guest
//! (`aplay`, `arecord`, `alsabat`, ...) and hands back the console, the script's exit
//! code and any files the guest exported.
//!
//! # The image
//! `scripts/build-guest-image.sh` builds it from Debian packages (never installed on
//! the host) and caches it outside the work tree, in
//! `${VHOSTSND_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gst-vhostsnd/guest}/<key>/`,
//! keyed on the script and the exact package versions: `vmlinuz` (Debian's 6.12
//! kernel) and `initramfs.cpio.gz` (busybox, alsa-utils with their libraries and
//! ALSA configuration, and the modules `soundcore snd snd-timer snd-pcm virtio_snd`,
//! loaded in that order; virtio-pci is built into the kernel). [`ensure_image`] runs
//! the script once per test process.
//!
//! # How the test script gets into the guest
//! The guest's `/init` runs `/vsnd/cmd.sh` if it exists, otherwise the script in the
//! kernel parameter `vsnd.cmd=<base64>`. The kernel command line is limited to 2047
//! bytes on x86, so [`GuestRun::boot`] only uses `vsnd.cmd=` for short scripts without
//! input files; otherwise it appends a second, uncompressed cpio archive holding
//! `/vsnd/cmd.sh` and `/vsnd/in/<name>` ([`GuestOpts::file`]) to a temporary copy of
//! the initrd (the kernel unpacks concatenated archives). There is no size limit
//! other than guest RAM. The script runs with `sh` in `/vsnd/in` (or `/tmp` when
//! there are no input files), as root, with `/tmp` a tmpfs.
//!
//! # Console protocol (ttyS0, read from QEMU's stdout)
//! - `VSND-INSMOD-FAILED <module>`: a module did not load.
//! - `VSND-BOOTED uptime=<s>`: modules loaded and the kernel RNG is ready (init reads
//!   a byte from /dev/random first: alsabat fails with -11 before that).
//! - anything the script prints, e.g. a marker like `READY` for
//!   [`GuestRun::wait_for`]; the script can also `read` a line that the host sends
//!   with [`GuestRun::send_line`] (the console echoes it).
//! - `VSND-FILE-BEGIN <name> <bytes>`, base64 lines, `VSND-FILE-END <name>`: written
//!   by `vsnd-export FILE [NAME]` in the guest; collected in [`GuestOutput::files`].
//! - `VSND-RC=<n>`: the script's exit code; then the guest powers off.
//!
//! The guest also has `vsnd-wait-card [SECONDS]`, which waits until ALSA card 0 has
//! a PCM device (the virtio_snd probe itself is synchronous in insmod).
//!
//! # Acceleration
//! KVM is tried once per process (a short probe boot) and TCG used when it fails. In
//! the nested VMs these tests run on, `/dev/kvm` opens but the guest dies in the
//! kernel decompressor with `KVM internal error. Suberror: 1` / `emulation failure`
//! on stderr, and QEMU then hangs instead of exiting; the probe watches for that and
//! kills it. `VHOSTSND_QEMU_ACCEL=kvm|tcg` skips the probe. Under TCG the CPU model
//! is `max` (it has RDRAND, so the guest's RNG is ready at once).
//!
//! # The sound device
//! [`GuestOpts::sound`] picks it ([`Sound`]). With [`GuestOpts::socket`], QEMU is the
//! vhost-user client of a `vhost-user-snd-pci` device: the socket must be listening
//! before the boot ([`GuestRun::boot`] waits up to [`GuestOpts::socket_wait`] for the
//! path to appear). If nobody listens QEMU exits at once ("Failed to connect to
//! ...": `boot` or `wait` return that as an error); if the listener accepts but never
//! answers, QEMU blocks before the guest starts and the run ends with the timeout
//! error. With [`GuestOpts::builtin_sound`] the guest gets QEMU's own
//! `virtio-sound-pci` with an `-audiodev` backend instead (the benchmark's reference).
//!
//! # The monitor
//! With [`GuestOpts::monitor`] QEMU gets a human monitor (HMP) on a Unix socket in the
//! temporary directory (`-monitor unix:PATH,server=on,wait=off`), and
//! [`GuestRun::monitor`] sends it one command (`stop`, `cont`, `info status`, ...)
//! and returns the reply, e.g. to pause the VM while the guest plays. Without it the
//! run has no monitor (`-monitor none`).
//!
//! # Host CPU
//! [`GuestRun::qemu_cpu`] reads QEMU's CPU time so far (`/proc/PID/stat`); sampled
//! right after [`GuestRun::wait_for`] returns on a marker the script prints, it
//! brackets a stretch of the script.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The QEMU binary the harness runs.
pub const QEMU: &str = "qemu-system-x86_64";
/// Longest base64 script passed with `vsnd.cmd=` (the rest of the kernel command
/// line is < 300 bytes of the 2047 allowed); longer scripts go in an appended cpio.
pub const MAX_CMDLINE_SCRIPT: usize = 1500;
const CONSOLE_TAIL_LINES: usize = 60;
/// How long [`GuestRun::monitor`] waits for the socket, the banner and the reply.
pub const MONITOR_TIMEOUT: Duration = Duration::from_secs(20);
/// The HMP prompt, which QEMU prints after its banner and after every reply.
const MONITOR_PROMPT: &str = "(qemu) ";

/// Runs `scripts/build-guest-image.sh` (once per process) and returns the directory
/// holding `vmlinuz` and `initramfs.cpio.gz`. Also checks that QEMU exists and has
/// `vhost-user-snd-pci`.
pub fn ensure_image() -> Result<PathBuf, String> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE.get_or_init(build_image).clone()
}

fn build_image() -> Result<PathBuf, String> {
    let devices = Command::new(QEMU)
        .args(["-device", "help"])
        .output()
        .map_err(|e| format!("cannot run {QEMU} ({e}); run scripts/install-deps.sh"))?;
    if !String::from_utf8_lossy(&devices.stdout).contains("vhost-user-snd-pci") {
        return Err(format!(
            "{QEMU} has no vhost-user-snd-pci device (QEMU >= 9.0 needed); run scripts/install-deps.sh"
        ));
    }
    // The script lives at the workspace root, two levels above this crate.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .ok_or("the testbed crate is not inside the workspace")?;
    let script = root.join("scripts/build-guest-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}{}",
            script.display(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{} printed no image directory", script.display()))?;
    for f in ["vmlinuz", "initramfs.cpio.gz"] {
        if !dir.join(f).is_file() {
            return Err(format!("guest image {} lacks {f}", dir.display()));
        }
    }
    Ok(dir)
}

/// CPU virtualisation QEMU uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// The accelerator every boot of this process uses: `VHOSTSND_QEMU_ACCEL` if set,
/// else KVM if a probe boot with it succeeds, else TCG. Decided once per process.
pub fn accel() -> Result<Accel, String> {
    static ACCEL: OnceLock<Result<Accel, String>> = OnceLock::new();
    ACCEL.get_or_init(choose_accel).clone()
}

fn choose_accel() -> Result<Accel, String> {
    match std::env::var("VHOSTSND_QEMU_ACCEL").ok().as_deref() {
        Some("kvm") => return Ok(Accel::Kvm),
        Some("tcg") => return Ok(Accel::Tcg),
        Some(other) => return Err(format!("VHOSTSND_QEMU_ACCEL={other}: expected kvm or tcg")),
        None => {}
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("qemu harness: /dev/kvm not usable, using TCG");
        return Ok(Accel::Tcg);
    }
    let mut opts = GuestOpts::new("true").timeout(Duration::from_secs(30));
    opts.accel = Some(Accel::Kvm);
    let probe_start = Instant::now();
    let outcome = GuestRun::boot(opts)?.wait();
    match outcome {
        Ok(out) if out.rc == 0 => {
            eprintln!(
                "qemu harness: KVM works ({:.1} s probe boot)",
                out.wall.as_secs_f64()
            );
            Ok(Accel::Kvm)
        }
        Ok(out) => {
            eprintln!(
                "qemu harness: KVM probe exited with rc {}, using TCG",
                out.rc
            );
            Ok(Accel::Tcg)
        }
        Err(e) => {
            let why = e
                .lines()
                .find(|l| l.contains("KVM") || l.contains("emulation failure"))
                .or_else(|| e.lines().next())
                .unwrap_or("");
            eprintln!(
                "qemu harness: KVM unusable ({}; probe took {:.1} s), using TCG",
                why.trim(),
                probe_start.elapsed().as_secs_f64()
            );
            Ok(Accel::Tcg)
        }
    }
}

/// The sound card the guest gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Sound {
    /// None: ALSA sees no sound card.
    #[default]
    None,
    /// `vhost-user-snd-pci`, QEMU being the vhost-user client of this socket.
    VhostUser(PathBuf),
    /// QEMU's own `virtio-sound-pci` with this `-audiodev` backend, given without its
    /// `id=`, e.g. `wav,path=/tmp/out.wav`.
    Builtin(String),
}

/// What to boot and run.
#[derive(Clone, Debug)]
pub struct GuestOpts {
    /// Shell script the guest runs with `sh`; its exit code is `GuestOutput::rc`.
    pub script: String,
    /// The sound device ([`GuestOpts::socket`], [`GuestOpts::builtin_sound`]).
    pub sound: Sound,
    /// How long `boot` waits for a vhost-user socket path to appear.
    pub socket_wait: Duration,
    /// Appended to the vhost-user `-chardev socket,...` option, e.g.
    /// `",reconnect-ms=500"`.
    pub chardev_extra: String,
    /// The accelerator; `None` takes the process-wide choice of [`accel()`].
    pub accel: Option<Accel>,
    /// Files placed in the guest's `/vsnd/in` (the script's working directory).
    pub files: Vec<(String, Vec<u8>)>,
    /// Whole run, from QEMU start to exit.
    pub timeout: Duration,
    /// Guest RAM in MiB (shared memfd, as vhost-user needs).
    pub memory_mib: u32,
    /// Extra kernel parameters.
    pub kernel_args: Vec<String>,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Give QEMU a human monitor on a Unix socket, for [`GuestRun::monitor`].
    pub monitor: bool,
    /// `controls=on` on the `vhost-user-snd-pci` device: the guest gets the card's
    /// control elements if the device offers them.
    pub controls: bool,
}

impl GuestOpts {
    pub fn new(script: impl Into<String>) -> Self {
        GuestOpts {
            script: script.into(),
            sound: Sound::None,
            socket_wait: Duration::from_secs(10),
            chardev_extra: String::new(),
            accel: None,
            files: Vec::new(),
            timeout: Duration::from_secs(120),
            memory_mib: 256,
            kernel_args: Vec::new(),
            qemu_args: Vec::new(),
            monitor: false,
            controls: false,
        }
    }

    /// A QEMU monitor the test can send commands to ([`GuestRun::monitor`]).
    pub fn monitor(mut self) -> Self {
        self.monitor = true;
        self
    }

    /// A `vhost-user-snd-pci` device served on `path`.
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.sound = Sound::VhostUser(path.into());
        self
    }

    /// `controls=on` on the vhost-user sound device.
    pub fn controls(mut self) -> Self {
        self.controls = true;
        self
    }

    /// QEMU's own `virtio-sound-pci` with the `-audiodev` backend `audiodev` (no
    /// `id=`), e.g. `wav,path=/tmp/out.wav`.
    pub fn builtin_sound(mut self, audiodev: impl Into<String>) -> Self {
        self.sound = Sound::Builtin(audiodev.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn file(mut self, name: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.into(), contents.into()));
        self
    }
}

/// The result of a run that reached `VSND-RC=`.
#[derive(Debug)]
pub struct GuestOutput {
    /// Console text (`\r` removed).
    pub console: String,
    /// QEMU's stderr.
    pub qemu_stderr: String,
    /// Exit code of the test script.
    pub rc: i32,
    /// Files exported with `vsnd-export`, by name.
    pub files: BTreeMap<String, Vec<u8>>,
    /// From QEMU start to exit.
    pub wall: Duration,
    pub accel: Accel,
    pub qemu_status: ExitStatus,
}

impl GuestOutput {
    /// Last lines of the console, for assertion messages.
    pub fn tail(&self) -> String {
        tail(&self.console, CONSOLE_TAIL_LINES)
    }
}

#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_closed: bool,
    stderr_closed: bool,
}

struct Shared {
    data: Mutex<Captured>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running guest. Dropping it kills QEMU.
pub struct GuestRun {
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    readers: Vec<thread::JoinHandle<()>>,
    pid: u32,
    started: Instant,
    deadline: Instant,
    accel: Accel,
    initrd_tmp: Option<PathBuf>,
    /// The HMP monitor's Unix socket, with [`GuestOpts::monitor`].
    monitor: Option<PathBuf>,
}

/// Kills the QEMU of a [`GuestRun`] with SIGKILL from any thread.
#[derive(Clone)]
pub struct GuestKiller(Arc<Mutex<Child>>);

impl GuestKiller {
    pub fn kill(&self) -> Result<(), String> {
        let mut child = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match child.try_wait() {
            Ok(Some(_)) => Ok(()),
            _ => child.kill().map_err(|e| format!("cannot kill QEMU: {e}")),
        }
    }
}

impl GuestRun {
    /// Builds the image if needed, picks the accelerator and starts QEMU.
    pub fn boot(opts: GuestOpts) -> Result<GuestRun, String> {
        let image = ensure_image()?;
        let accel = match opts.accel {
            Some(a) => a,
            None => accel()?,
        };
        let mut append = vec![
            "console=ttyS0",
            "quiet",
            "panic=-1",
            "mitigations=off",
            "nokaslr",
            "no_timer_check",
            "tsc=reliable",
            "cryptomgr.notests",
            "audit=0",
            "8250.nr_uarts=1",
            "i8042.noaux",
            "i8042.nokbd",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        append.extend(opts.kernel_args.iter().cloned());
        let encoded = base64_encode(opts.script.as_bytes());
        let mut initrd = image.join("initramfs.cpio.gz");
        let mut initrd_tmp = None;
        if opts.files.is_empty() && encoded.len() <= MAX_CMDLINE_SCRIPT {
            append.push(format!("vsnd.cmd={encoded}"));
        } else {
            let tmp = overlay_initrd(&initrd, &opts)?;
            initrd = tmp.clone();
            initrd_tmp = Some(tmp);
        }

        if let Sound::VhostUser(sock) = &opts.sound {
            let until = Instant::now() + opts.socket_wait;
            while !sock.exists() {
                if Instant::now() >= until {
                    return Err(format!(
                        "vhost-user socket {} did not appear within {:?}",
                        sock.display(),
                        opts.socket_wait
                    ));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }

        let monitor = opts.monitor.then(|| temp_path("vsnd-monitor", "sock"));
        let mem = format!("{}M", opts.memory_mib);
        let mut cmd = Command::new(QEMU);
        cmd.args(accel.qemu_args())
            .args(["-machine", "q35,memory-backend=mem", "-object"])
            .arg(format!("memory-backend-memfd,id=mem,size={mem},share=on"))
            .args(["-m", &mem, "-smp", "1"])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .args(["-serial", "stdio", "-monitor"]);
        match &monitor {
            Some(path) => cmd.arg(format!("unix:{},server=on,wait=off", path.display())),
            None => cmd.arg("none"),
        };
        match &opts.sound {
            Sound::None => {}
            Sound::VhostUser(sock) => {
                cmd.arg("-chardev")
                    .arg(format!(
                        "socket,id=vsnd,path={}{}",
                        sock.display(),
                        opts.chardev_extra
                    ))
                    .arg("-device")
                    .arg(if opts.controls {
                        "vhost-user-snd-pci,chardev=vsnd,controls=on"
                    } else {
                        "vhost-user-snd-pci,chardev=vsnd"
                    });
            }
            Sound::Builtin(audiodev) => {
                cmd.args(["-device", "virtio-sound-pci,audiodev=vsnd", "-audiodev"])
                    .arg(format!("{audiodev},id=vsnd"));
            }
        }
        cmd.arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(append.join(" "))
            .args(&opts.qemu_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(t) = &initrd_tmp {
                    let _ = fs::remove_file(t);
                }
                return Err(format!("cannot start {QEMU}: {e}"));
            }
        };
        let shared = Arc::new(Shared {
            data: Mutex::new(Captured::default()),
            changed: Condvar::new(),
        });
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(spawn_reader(out, shared.clone(), false));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_reader(err, shared.clone(), true));
        }
        let stdin = child.stdin.take();
        Ok(GuestRun {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            stdin,
            shared,
            readers,
            started,
            deadline: started + opts.timeout,
            accel,
            initrd_tmp,
            monitor,
        })
    }

    /// The accelerator this run uses.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// CPU time (user + system, all threads) QEMU has used so far, from
    /// `/proc/PID/stat` (clock-tick resolution, usually 10 ms).
    pub fn qemu_cpu(&self) -> Result<Duration, String> {
        proc_cpu(self.pid).ok_or_else(|| format!("cannot read /proc/{}/stat", self.pid))
    }

    /// Console text so far (`\r` removed).
    pub fn console(&self) -> String {
        clean(&self.shared.lock().stdout)
    }

    /// A handle that SIGKILLs QEMU, usable from other threads.
    pub fn killer(&self) -> GuestKiller {
        GuestKiller(self.child.clone())
    }

    /// SIGKILLs QEMU now; a later `wait` returns the error with the console so far.
    pub fn kill(&self) -> Result<(), String> {
        self.killer().kill()
    }

    /// Sends a line to the guest console (a script can `read` it).
    pub fn send_line(&mut self, line: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| "QEMU stdin is closed".to_string())?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("cannot write to the guest console: {e}"))
    }

    /// Sends one command to QEMU's human monitor ([`GuestOpts::monitor`]), e.g. `stop`,
    /// `cont` or `info status`, and returns its reply without the echo and the prompt
    /// (`""` for `stop` and `cont`, `"VM status: paused"` for `info status`). Each
    /// call connects afresh: QEMU greets with a banner and the `(qemu) ` prompt,
    /// echoes the command (with terminal escapes), runs it and prints the reply and
    /// the prompt again, so the command is done when this returns (`stop` returns
    /// once the vCPUs and devices are stopped, `cont` once they run again). Fails when
    /// the run has no monitor, QEMU has exited, or the socket, banner or reply take
    /// longer than [`MONITOR_TIMEOUT`].
    pub fn monitor(&self, cmd: &str) -> Result<String, String> {
        let path = self
            .monitor
            .as_ref()
            .ok_or("this run has no monitor (GuestOpts::monitor)")?;
        let cmd = cmd.trim();
        if cmd.is_empty() || cmd.contains('\n') {
            return Err(format!("monitor command {cmd:?} is not one line"));
        }
        let until = Instant::now() + MONITOR_TIMEOUT;
        let mut sock = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    let exited = self
                        .child
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .try_wait()
                        .is_ok_and(|s| s.is_some());
                    if exited || Instant::now() >= until {
                        return Err(format!(
                            "cannot connect to the QEMU monitor {}: {e}",
                            path.display()
                        ));
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let mut got = Vec::new();
        read_to_prompt(&mut sock, &mut got, until)
            .map_err(|e| format!("QEMU monitor banner: {e}"))?;
        got.clear();
        sock.write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("cannot send {cmd:?} to the QEMU monitor: {e}"))?;
        read_to_prompt(&mut sock, &mut got, until)
            .map_err(|e| format!("QEMU monitor, {cmd:?}: {e}"))?;
        Ok(monitor_reply(&got))
    }

    /// Waits until a console line contains `marker`. Fails on timeout (the shorter of
    /// `timeout` and the run's deadline), when QEMU exits first, or when the script
    /// ends (`VSND-RC=`) without printing it. The error carries the console tail.
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> Result<(), String> {
        let until = (Instant::now() + timeout).min(self.deadline);
        let mut data = self.shared.lock();
        loop {
            let text = clean(&data.stdout);
            let mut ended = false;
            for line in text.lines() {
                if line.contains(marker) {
                    return Ok(());
                }
                ended |= line.starts_with("VSND-RC=");
            }
            if ended || (data.stdout_closed && data.stderr_closed) {
                return Err(format!(
                    "guest ended without printing {marker:?}\n{}",
                    describe(&text, &data.stderr)
                ));
            }
            let now = Instant::now();
            if now >= until {
                return Err(format!(
                    "no {marker:?} on the guest console after {:.1} s\n{}",
                    (now - self.started).as_secs_f64(),
                    describe(&text, &data.stderr)
                ));
            }
            data = self
                .shared
                .changed
                .wait_timeout(data, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for QEMU to exit (killing it at the deadline) and parses the console.
    pub fn wait(mut self) -> Result<GuestOutput, String> {
        let status = loop {
            let polled = {
                let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
                child.try_wait()
            };
            match polled {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(format!("waiting for QEMU: {e}")),
            }
            if Instant::now() >= self.deadline {
                let _ = self.kill();
                break Err(format!(
                    "guest timed out after {:.1} s (QEMU killed)",
                    (Instant::now() - self.started).as_secs_f64()
                ));
            }
            // Stop early on KVM's fatal error: QEMU keeps running with a dead vCPU.
            if self.accel == Accel::Kvm {
                let err = String::from_utf8_lossy(&self.shared.lock().stderr).into_owned();
                if err.contains("KVM internal error") || err.contains("emulation failure") {
                    let _ = self.kill();
                }
            }
            thread::sleep(Duration::from_millis(20));
        };
        let wall = self.started.elapsed();
        self.stdin = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let (console, stderr) = {
            let data = self.shared.lock();
            (
                clean(&data.stdout),
                String::from_utf8_lossy(&data.stderr).into_owned(),
            )
        };
        let status =
            status.map_err(|e| format!("{e}\n{}", describe(&console, stderr.as_bytes())))?;
        let rc = parse_rc(&console).ok_or_else(|| {
            format!(
                "guest did not report VSND-RC (QEMU {status})\n{}",
                describe(&console, stderr.as_bytes())
            )
        })?;
        let files = parse_files(&console)
            .map_err(|e| format!("{e}\n{}", describe(&console, stderr.as_bytes())))?;
        Ok(GuestOutput {
            console,
            qemu_stderr: stderr,
            rc,
            files,
            wall,
            accel: self.accel,
            qemu_status: status,
        })
    }
}

impl Drop for GuestRun {
    fn drop(&mut self) {
        let _ = self.kill();
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.wait();
        for t in [&self.initrd_tmp, &self.monitor].into_iter().flatten() {
            let _ = fs::remove_file(t);
        }
    }
}

/// Boots, runs the script and waits: `GuestRun::boot(opts)?.wait()`.
pub fn run(opts: GuestOpts) -> Result<GuestOutput, String> {
    GuestRun::boot(opts)?.wait()
}

/// Like [`run`], but a non-zero exit code is an error too (with the console tail).
pub fn run_ok(opts: GuestOpts) -> Result<GuestOutput, String> {
    let out = run(opts)?;
    if out.rc != 0 {
        return Err(format!(
            "guest script failed with rc {}\n{}",
            out.rc,
            describe(&out.console, out.qemu_stderr.as_bytes())
        ));
    }
    Ok(out)
}

fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    shared: Arc<Shared>,
    is_err: bool,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = pipe.read(&mut buf).unwrap_or(0);
            let mut data = shared.lock();
            if n == 0 {
                if is_err {
                    data.stderr_closed = true;
                } else {
                    data.stdout_closed = true;
                }
                shared.changed.notify_all();
                return;
            }
            if is_err {
                data.stderr.extend_from_slice(&buf[..n]);
            } else {
                data.stdout.extend_from_slice(&buf[..n]);
            }
            shared.changed.notify_all();
        }
    })
}

/// CPU time (utime + stime) of process `pid` from /proc/PID/stat.
fn proc_cpu(pid: u32) -> Option<Duration> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\r', "")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn describe(console: &str, stderr: &[u8]) -> String {
    let mut s = format!(
        "--- guest console (last {CONSOLE_TAIL_LINES} lines) ---\n{}\n",
        tail(console, CONSOLE_TAIL_LINES)
    );
    let err = String::from_utf8_lossy(stderr);
    if !err.trim().is_empty() {
        let _ = write!(s, "--- QEMU stderr ---\n{}\n", tail(&err, 30));
    }
    s
}

/// Reads the monitor into `got` until what came is a line (the banner, or the echo
/// of a command and its reply) followed by the `(qemu) ` prompt.
fn read_to_prompt(sock: &mut UnixStream, got: &mut Vec<u8>, until: Instant) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    loop {
        let text = strip_escapes(&clean(got));
        if text.contains('\n') && text.ends_with(MONITOR_PROMPT) {
            return Ok(());
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no prompt within {MONITOR_TIMEOUT:?}, got {text:?}"
            ));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| format!("cannot set a timeout: {e}"))?;
        match sock.read(&mut buf) {
            Ok(0) => return Err(format!("QEMU closed the monitor, got {text:?}")),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("{e}, got {text:?}")),
        }
    }
}

/// Removes the terminal escapes (`ESC [ ... letter`) QEMU's line editor echoes.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() || c == '~' {
                    break;
                }
            }
        }
    }
    out
}

/// The reply in what the monitor printed after a command: without the echoed first
/// line and the final prompt.
fn monitor_reply(raw: &[u8]) -> String {
    let text = strip_escapes(&clean(raw));
    let text = text.strip_suffix(MONITOR_PROMPT).unwrap_or(&text);
    let reply = text.split_once('\n').map_or("", |(_, rest)| rest);
    reply.trim_end().to_string()
}

/// The exit code from the last `VSND-RC=<n>` console line.
pub fn parse_rc(console: &str) -> Option<i32> {
    console
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("VSND-RC="))
        .and_then(|v| v.trim().parse().ok())
}

/// The `VSND-FILE-BEGIN name bytes` ... `VSND-FILE-END name` blocks of a console.
pub fn parse_files(console: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    let mut lines = console.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix("VSND-FILE-BEGIN ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let name = parts.next().unwrap_or("").to_string();
        let size: Option<usize> = parts.next().and_then(|s| s.parse().ok());
        let mut b64 = String::new();
        let mut ended = false;
        for l in lines.by_ref() {
            let l = l.trim();
            if l.starts_with("VSND-FILE-END") {
                ended = true;
                break;
            }
            // Kernel messages that slipped in start with '['; base64 never does.
            if !l.starts_with('[') {
                b64.push_str(l);
            }
        }
        if !ended {
            return Err(format!(
                "exported file {name:?} is truncated (no VSND-FILE-END)"
            ));
        }
        let bytes = base64_decode(&b64).map_err(|e| format!("exported file {name:?}: {e}"))?;
        if let Some(size) = size {
            if size != bytes.len() {
                return Err(format!(
                    "exported file {name:?}: {} bytes decoded, {size} announced",
                    bytes.len()
                ));
            }
        }
        files.insert(name, bytes);
    }
    Ok(files)
}

/// Writes the initrd plus an appended cpio with the script and input files to a
/// temporary file.
fn overlay_initrd(base: &Path, opts: &GuestOpts) -> Result<PathBuf, String> {
    let mut data = fs::read(base).map_err(|e| format!("cannot read {}: {e}", base.display()))?;
    // The kernel looks for the next archive at a 4-byte boundary after zero padding.
    data.resize(data.len().div_ceil(512) * 512, 0);
    let mut cpio = CpioWriter::default();
    cpio.dir("vsnd");
    cpio.dir("vsnd/in");
    cpio.file("vsnd/cmd.sh", opts.script.as_bytes(), 0o755);
    for (name, contents) in &opts.files {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!(
                "input file name {name:?} must be a plain file name"
            ));
        }
        cpio.file(&format!("vsnd/in/{name}"), contents, 0o644);
    }
    data.extend_from_slice(&cpio.finish());
    let path = temp_path("vsnd-initrd", "img");
    fs::write(&path, &data).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// A fresh path in the temporary directory: `<prefix>-<pid>-<n>-<nanos>.<ext>`.
fn temp_path(prefix: &str, ext: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}.{ext}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Minimal writer for the "newc" cpio format the kernel's initramfs unpacker reads.
#[derive(Default)]
struct CpioWriter {
    out: Vec<u8>,
    ino: u32,
}

impl CpioWriter {
    fn entry(&mut self, name: &str, mode: u32, contents: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            contents.len(),
            0,
            0,
            0,
            0,
            namesize,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(contents);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, contents: &[u8], perm: u32) {
        self.entry(name, 0o100000 | perm, contents);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decodes standard base64, ignoring whitespace.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return Err(format!("invalid base64 character {:?}", c as char)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).expect("decodes"), data);
        }
        assert_eq!(base64_encode(b"hi\n"), "aGkK");
    }

    #[test]
    fn console_parsing() {
        let console = "x\nVSND-FILE-BEGIN a.txt 3\naGkK\nVSND-FILE-END a.txt\nVSND-RC=7\n";
        assert_eq!(parse_rc(console), Some(7));
        let files = parse_files(console).expect("parses");
        assert_eq!(files["a.txt"], b"hi\n");
        assert!(parse_files("VSND-FILE-BEGIN a 3\naGkK\n").is_err());
        assert!(parse_files("VSND-FILE-BEGIN a 4\naGkK\nVSND-FILE-END a\n").is_err());
    }

    #[test]
    fn monitor_reply_parsing() {
        // What QEMU 10.0's HMP printed after `info status` and `stop`.
        let raw =
            b"i\x1b[K\x1b[Din\x1b[K\x1b[D\x1b[Dinfo status\x1b[K\r\nVM status: paused\r\n(qemu) ";
        assert_eq!(monitor_reply(raw), "VM status: paused");
        assert_eq!(monitor_reply(b"s\x1b[K\x1b[Dstop\x1b[K\r\n(qemu) "), "");
        let banner = "QEMU 10.0.2 monitor - type 'help' for more information\r\n(qemu) ";
        assert!(strip_escapes(&clean(banner.as_bytes())).ends_with(MONITOR_PROMPT));
    }
}
