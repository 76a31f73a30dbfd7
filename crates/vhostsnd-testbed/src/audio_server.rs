//! Real desktop audio servers, run headless for tests: PulseAudio 16 or PipeWire 1.4
//! (with pipewire-pulse and WirePlumber), each private to one [`AudioServer`], so
//! that `autoaudiosink`/`autoaudiosrc`, `pulsesink`/`pulsesrc` and the daemon's
//! pipelines meet a real server instead of a fake one.
//!
//! # What a started server has
//! - [`SINK`] (`vsnd_out`), a null sink, the default sink. Whatever plays to it can
//!   be recorded from its monitor [`SINK_MONITOR`] ([`AudioServer::start_recording`],
//!   [`AudioServer::record_sink`]).
//! - [`SOURCE`] (`vsnd_in.monitor`), the default source: the monitor of a second
//!   null sink [`FEED_SINK`] into which `pacat` plays a never-ending sine
//!   ([`Options::tone_hz`], 440 Hz by default), so capture hears a known tone.
//!   PulseAudio's `module-sine-source` would be simpler, but pipewire-pulse does not
//!   implement it; a null sink fed by a client works the same on both.
//!
//! [`AudioServer::start`] returns once the server answers `pactl info`, both
//! defaults are set and the tone is heard on the default source, so a test can play
//! or record at once. Both servers speak the PulseAudio protocol and every helper
//! here uses the PulseAudio tools (`pactl`, `pacat`, `parecord`), so the same code
//! drives both.
//!
//! # How they run
//! As whatever user the tests run as (root in CI), in a fresh directory under
//! `$TMPDIR` holding `run/` (the server's `XDG_RUNTIME_DIR`, mode 0700), `home/`
//! (`HOME`, `XDG_CONFIG_HOME`, `XDG_STATE_HOME`, so no user configuration or
//! WirePlumber's restored state leaks in) and the servers' logs (`*.log`). The
//! servers get a cleared environment apart from `PATH`.
//! - PulseAudio: `pulseaudio --daemonize=no -n --load="module-native-protocol-unix
//!   auth-anonymous=1"` plus flags that keep it alive and quiet (see
//!   [`PULSEAUDIO_ARGS`]): no `default.pa`, so no ALSA probing, no
//!   suspend-on-idle, no stream restore.
//! - PipeWire: `dbus-run-session -- sh -c '...'` starting `pipewire`, then (once
//!   `run/pipewire-0` exists) `wireplumber` and `pipewire-pulse`
//!   ([`PIPEWIRE_SCRIPT`]). WirePlumber wants a session bus; the private one dies
//!   with the group.
//!
//! Each server is its own process group (the feeding `pacat` and a watchdog
//! joining it); dropping the [`AudioServer`] sends the group SIGTERM, then SIGKILL,
//! and removes the directory. The watchdog ([`WATCHDOG_SCRIPT`]) does the same
//! once the test process is gone, so a test binary killed by a timeout leaves no
//! server behind. Ctrl-C in a terminal does not reach the group (it is not the
//! foreground group): the watchdog covers that too, within about two seconds.
//!
//! # Reaching the server
//! - A child process: [`AudioServer::command`] (or [`AudioServer::env`]) sets
//!   `PULSE_SERVER`, `PULSE_COOKIE`, `XDG_RUNTIME_DIR` and `PIPEWIRE_RUNTIME_DIR`.
//! - `pulsesink`/`pulsesrc` in this process: set their `server` property to
//!   [`AudioServer::pulse_server`]. No global state is touched, so tests can run in
//!   parallel.
//! - `autoaudiosink`/`autoaudiosrc` in this process: they make their `pulsesink`
//!   inside, before a property could be set, and libpulse reads `PULSE_SERVER` from
//!   the environment whenever a context is created (pulsesink creates it on the
//!   way to READY). Hold [`AudioServer::set_process_env`]'s guard from before the
//!   pipeline leaves NULL until after it is back in NULL and dropped: the guard
//!   serialises such tests on a lock, and pulsesink shares one connection among all
//!   live sinks with the same server name, so a pipeline outliving its guard could
//!   carry the next test to the wrong server.
//!
//! # Pitfalls seen
//! - PulseAudio's null sink, left with rewinds on (the default), renders about 2 s
//!   ahead while idle and then sleeps: its monitor delivers nothing for up to 2 s
//!   after a stream starts playing into it (start-up took 2.1 s instead of 0.1 s,
//!   and a monitor recording saw the tone 0.5 s late). `norewinds=1` makes it run
//!   in real time, as PipeWire's null sinks do. [`Options::sink_rewinds`] leaves
//!   [`SINK`] as PulseAudio makes it by default, to meet a client with what a
//!   user's desktop does.
//! - A monitor's recording latency bounds how far ahead PulseAudio renders the
//!   sink: recorded in 10 ms fragments, even a rewinding sink runs near real time,
//!   and a client's trouble with render-ahead (vhostsndsrc's stream blocking ~1.7 s
//!   on a format change) does not show; recorded with 2 s it does.
//! - A recording starts some milliseconds after [`AudioServer::start_recording`]
//!   returns (PipeWire's first few milliseconds are silence): wait with
//!   [`Recording::wait_frames`], and find tones by analysis, not by position.
//! - `pacat`/`parecord` without `--latency-msec` ask for two seconds of buffering:
//!   the feeder then makes PulseAudio render the null sink in big blocks, and
//!   `parecord` loses what is buffered when it is stopped. Both are given small
//!   latencies here.
//! - pipewire-pulse needs WirePlumber to link streams at all, and WirePlumber
//!   starts after pipewire-pulse answers: the start-up waits for the tone instead
//!   of trusting `pactl info`.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The default sink: a null sink whose monitor records what was played.
pub const SINK: &str = "vsnd_out";
/// The monitor of [`SINK`].
pub const SINK_MONITOR: &str = "vsnd_out.monitor";
/// The null sink the tone is played into; its monitor is [`SOURCE`].
pub const FEED_SINK: &str = "vsnd_in";
/// The default source, which carries the tone.
pub const SOURCE: &str = "vsnd_in.monitor";
/// Sample rate of both null sinks, the tone and every recording.
pub const RATE: u32 = 48_000;
/// Channels of both null sinks, the tone and every recording (interleaved).
pub const CHANNELS: usize = 2;

const BYTES_PER_FRAME: usize = 2 * CHANNELS;
const PACTL_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
const LOG_TAIL_LINES: usize = 30;

/// The flags PulseAudio runs with, after `--load` of the native protocol.
/// `-n` skips `default.pa`; `auth-anonymous=1` lets clients in whatever cookie
/// they have (a client in this process keeps its own `HOME`); no CPU limit, as a
/// loaded CI machine would otherwise get the daemon killed by its own watchdog.
pub const PULSEAUDIO_ARGS: &[&str] = &[
    "--daemonize=no",
    "--use-pid-file=no",
    "--system=no",
    "--exit-idle-time=-1",
    "--disallow-exit",
    "--realtime=no",
    "--high-priority=no",
    "--no-cpu-limit",
    "--log-target=stderr",
    "--log-level=info",
    "-n",
    "--load=module-native-protocol-unix auth-anonymous=1",
];

/// What `dbus-run-session -- sh -c` runs for PipeWire, with the log directory as
/// `$1`. The session manager and the pulse server exit when PipeWire's socket is
/// not there yet, hence the wait.
pub const PIPEWIRE_SCRIPT: &str = r#"d="$1"
pipewire >"$d/pipewire.log" 2>&1 &
i=0
while [ ! -S "$XDG_RUNTIME_DIR/pipewire-0" ] && [ "$i" -lt 1000 ]; do sleep 0.01; i=$((i + 1)); done
wireplumber >"$d/wireplumber.log" 2>&1 &
pipewire-pulse >"$d/pipewire-pulse.log" 2>&1 &
wait
"#;

/// The watchdog in the server's process group, with the test process's pid as
/// `$1` and the server's directory as `$2`: once the test process is gone it
/// stops the group as [`AudioServer`]'s Drop would have, directory included. It
/// ignores the SIGTERM it sends the group, so it lives to clean up; not before,
/// as its `sleep` would inherit that and outlive a Drop's SIGTERM by a second.
pub const WATCHDOG_SCRIPT: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
trap '' TERM
kill -TERM 0
sleep 1
rm -rf "$2"
kill -KILL 0
"#;

/// Which server to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// PulseAudio 16 (Debian bookworm's).
    PulseAudio,
    /// PipeWire 1.4 with pipewire-pulse and WirePlumber 0.5 (bookworm-backports).
    PipeWire,
}

impl Kind {
    /// Both kinds.
    pub const ALL: [Kind; 2] = [Kind::PulseAudio, Kind::PipeWire];

    /// A short lower-case name, for messages and file names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PulseAudio => "pulseaudio",
            Kind::PipeWire => "pipewire",
        }
    }

    /// The programs this kind needs on `PATH`, the PulseAudio tools included.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Kind::PulseAudio => &["pulseaudio", "pactl", "pacat", "parecord"],
            Kind::PipeWire => &[
                "dbus-run-session",
                "pipewire",
                "wireplumber",
                "pipewire-pulse",
                "pactl",
                "pacat",
                "parecord",
            ],
        }
    }

    /// Whether [`Kind::programs`] are all installed.
    pub fn check_installed(self) -> Result<(), String> {
        let missing: Vec<&str> = self
            .programs()
            .iter()
            .copied()
            .filter(|p| find_in_path(p).is_none())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: not on PATH: {} (scripts/install-deps.sh installs them)",
                self.name(),
                missing.join(", ")
            ))
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How [`AudioServer::start_with`] sets the server up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Frequency of the sine on [`SOURCE`].
    pub tone_hz: f64,
    /// Its amplitude, full scale being 1.0.
    pub tone_amplitude: f32,
    /// How long start-up may take before it fails (CI machines can be slow).
    pub ready_timeout: Duration,
    /// PulseAudio only: create [`SINK`] with rewinds on, as `module-null-sink`
    /// and a desktop's sinks have them by default, instead of with `norewinds=1`.
    /// Such a sink renders up to 2 s ahead of real time and rewrites that when a
    /// stream joins or changes (see the pitfalls in the [module docs](self)): what
    /// a user's desktop does to a client, which a real-time sink hides. Its
    /// monitor then delivers in bursts, so recordings of it start late; record it
    /// with [`AudioServer::start_recording_with_latency`] of 2 s, as a 10 ms
    /// recording holds the sink near real time again. [`SOURCE`] stays real time
    /// either way, as a microphone is. No effect on PipeWire.
    pub sink_rewinds: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tone_hz: 440.0,
            tone_amplitude: 0.5,
            ready_timeout: Duration::from_secs(30),
            sink_rewinds: false,
        }
    }
}

/// How long start-up took, from spawning the server.
#[derive(Clone, Copy, Debug)]
pub struct StartupTimes {
    /// Until `pactl info` first answered.
    pub answering: Duration,
    /// Until [`AudioServer::start`] returned: sinks made, defaults set, tone heard.
    pub ready: Duration,
}

/// A running audio server; dropping it stops it and removes its directory.
pub struct AudioServer {
    kind: Kind,
    opts: Options,
    dir: PathBuf,
    leader: Child,
    pgid: i32,
    watchdog: Option<Child>,
    helpers: Vec<Child>,
    feeder: Option<JoinHandle<()>>,
    feeder_stop: Arc<AtomicBool>,
    times: StartupTimes,
}

impl AudioServer {
    /// Starts a server of `kind` with the default [`Options`].
    pub fn start(kind: Kind) -> Result<AudioServer, String> {
        AudioServer::start_with(kind, Options::default())
    }

    /// Starts a server of `kind`; see the [module docs](self) for what it has.
    pub fn start_with(kind: Kind, opts: Options) -> Result<AudioServer, String> {
        kind.check_installed()?;
        let dir = fresh_dir(kind)?;
        let t0 = Instant::now();
        let leader = match spawn_server(kind, &dir) {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let pgid = leader.id() as i32;
        let mut server = AudioServer {
            kind,
            opts,
            dir,
            leader,
            pgid,
            watchdog: None,
            helpers: Vec::new(),
            feeder: None,
            feeder_stop: Arc::new(AtomicBool::new(false)),
            times: StartupTimes {
                answering: Duration::ZERO,
                ready: Duration::ZERO,
            },
        };
        // From here on, Drop cleans up whatever fails.
        server.spawn_watchdog()?;
        let deadline = t0 + server.opts.ready_timeout;
        server.wait_answering(deadline)?;
        server.times.answering = t0.elapsed();
        server.make_devices(deadline)?;
        server.start_feeder()?;
        server.wait_ready(deadline)?;
        server.times.ready = t0.elapsed();
        Ok(server)
    }

    /// The kind of server.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The options it was started with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// How long start-up took.
    pub fn startup_times(&self) -> StartupTimes {
        self.times
    }

    /// The server's private directory (logs, `run/`, `home/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's `XDG_RUNTIME_DIR`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The process group of the server and its helpers.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The PulseAudio server string (`unix:/…/run/pulse/native`), for
    /// `PULSE_SERVER` or the `server` property of `pulsesink`/`pulsesrc`.
    pub fn pulse_server(&self) -> String {
        format!("unix:{}", self.runtime_dir().join("pulse/native").display())
    }

    /// The environment a client needs to reach this server. `PULSE_COOKIE` keeps
    /// libpulse from creating a cookie in the client's real `HOME`;
    /// `PIPEWIRE_RUNTIME_DIR` is for `pipewiresink`/`pipewiresrc` (PipeWire only:
    /// with PulseAudio they find no server there, as they should).
    pub fn env(&self) -> Vec<(String, String)> {
        let run = self.runtime_dir().display().to_string();
        vec![
            ("PULSE_SERVER".into(), self.pulse_server()),
            (
                "PULSE_COOKIE".into(),
                self.cookie_path().display().to_string(),
            ),
            ("XDG_RUNTIME_DIR".into(), run.clone()),
            ("PIPEWIRE_RUNTIME_DIR".into(), run),
        ]
    }

    /// A command for `program` that reaches this server: the caller's environment
    /// plus [`AudioServer::env`], less the variables that would point elsewhere.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("PIPEWIRE_REMOTE")
            .env_remove("PULSE_RUNTIME_PATH")
            .env_remove("PULSE_PROP")
            .envs(self.env());
        cmd
    }

    /// Points this process's libpulse (and so in-process `autoaudiosink`,
    /// `autoaudiosrc`) at this server until the guard is dropped, which restores
    /// the previous values. Only one guard exists at a time, across all servers:
    /// a second caller blocks. See the [module docs](self) for how long to hold
    /// it. C code reading the environment in other threads while it is changed
    /// is a data race: take the guard before starting threads that might.
    pub fn set_process_env(&self) -> ProcessEnvGuard {
        static LOCK: Mutex<()> = Mutex::new(());
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let vars = self.env();
        let saved = vars
            .iter()
            .map(|(k, _)| (k.clone(), std::env::var_os(k)))
            .collect();
        for (k, v) in &vars {
            std::env::set_var(k, v);
        }
        ProcessEnvGuard { saved, _lock: lock }
    }

    /// Runs `pactl ARGS` against this server, returning its stdout.
    pub fn pactl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.tool("pactl");
        cmd.args(args);
        let out = run_with_timeout(cmd, PACTL_TIMEOUT)
            .map_err(|e| self.fail(&format!("pactl {}: {e}", args.join(" "))))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(self.fail(&format!(
                "pactl {} failed ({}): {}",
                args.join(" "),
                out.status,
                out.stderr.trim()
            )))
        }
    }

    /// `pactl list sink-inputs`: the streams playing now.
    pub fn sink_inputs(&self) -> Result<String, String> {
        self.pactl(&["list", "sink-inputs"])
    }

    /// `pactl list source-outputs`: the streams recording now.
    pub fn source_outputs(&self) -> Result<String, String> {
        self.pactl(&["list", "source-outputs"])
    }

    /// Starts recording [`SINK_MONITOR`], i.e. whatever plays to the default sink.
    pub fn start_recording(&self) -> Result<Recording, String> {
        self.start_recording_from(SINK_MONITOR)
    }

    /// Starts recording `source` (S16LE, [`RATE`], [`CHANNELS`]) with `parecord`.
    /// The first audio arrives some tens of milliseconds later: wait for it with
    /// [`Recording::wait_frames`] when the start matters.
    pub fn start_recording_from(&self, source: &str) -> Result<Recording, String> {
        // Small fragments: what parecord holds is lost when it is stopped.
        self.start_recording_with_latency(source, Duration::from_millis(10))
    }

    /// [`AudioServer::start_recording_from`] with `parecord --latency-msec` of
    /// `latency` instead of 10 ms. A monitor's recording latency bounds how far
    /// ahead PulseAudio renders its sink: 10 ms keeps even a sink with
    /// [`Options::sink_rewinds`] near real time, which hides what such a sink does
    /// to its clients; 2 s leaves it free, as on a desktop where nobody records
    /// the monitor. The audio then arrives in bursts of up to `latency`, and what
    /// `parecord` holds when stopped is lost: wait for the frames wanted first.
    pub fn start_recording_with_latency(
        &self,
        source: &str,
        latency: Duration,
    ) -> Result<Recording, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.join(format!("parecord-{n}.log"));
        let stderr =
            fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut cmd = self.tool("parecord");
        cmd.args(stream_args())
            .arg(format!("--latency-msec={}", latency.as_millis().max(1)))
            .arg(format!("--client-name=vsnd-record-{n}"))
            .arg("-d")
            .arg(source)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .map_err(|e| self.fail(&format!("cannot run parecord: {e}")))?;
        let Some(mut stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("parecord has no stdout".into());
        };
        let data = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&data);
        let reader = thread::Builder::new()
            .name(format!("vsnd-record-{n}"))
            .spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match stdout.read(&mut buf) {
                        Ok(0) => return,
                        Ok(k) => lock(&sink).extend_from_slice(&buf[..k]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| format!("cannot start the recording thread: {e}"));
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Recording {
            child,
            data,
            reader: Some(reader),
            log,
            source: source.to_string(),
            server_dir: self.dir.clone(),
            started: Instant::now(),
        })
    }

    /// Records `secs` seconds of audio from `source`: interleaved S16LE frames at
    /// [`RATE`], exactly `secs * RATE` frames unless the recording failed.
    pub fn record(&self, source: &str, secs: f64) -> Result<Vec<i16>, String> {
        let frames = (secs * f64::from(RATE)).round() as usize;
        let rec = self.start_recording_from(source)?;
        let timeout = Duration::from_secs_f64(secs + 10.0);
        rec.wait_frames(frames, timeout)?;
        let mut samples = rec.stop()?;
        samples.truncate(frames * CHANNELS);
        Ok(samples)
    }

    /// Records `secs` seconds of [`SINK_MONITOR`] (see [`AudioServer::record`]).
    pub fn record_sink(&self, secs: f64) -> Result<Vec<i16>, String> {
        self.record(SINK_MONITOR, secs)
    }

    /// Records `secs` seconds of the default source, which carries the tone.
    pub fn record_source(&self, secs: f64) -> Result<Vec<i16>, String> {
        self.record(SOURCE, secs)
    }

    /// The last lines of each of the server's logs, for failure messages.
    pub fn logs(&self) -> String {
        log_tails(&self.dir)
    }

    /// Whether the server's main process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.leader.try_wait(), Ok(None))
    }

    fn cookie_path(&self) -> PathBuf {
        self.dir.join("home/.config/pulse/cookie")
    }

    /// Our own PulseAudio tools run with nothing of the caller's environment
    /// but `PATH`, so nothing there can point them elsewhere.
    fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear().envs(self.env()).stdin(Stdio::null());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOME", self.dir.join("home"));
        cmd
    }

    fn fail(&self, what: &str) -> String {
        format!("{} server: {what}\n{}", self.kind, self.logs())
    }

    fn spawn_watchdog(&mut self) -> Result<(), String> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("sh")
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(self.pgid)
            .spawn()
            .map_err(|e| self.fail(&format!("cannot start the watchdog: {e}")))?;
        self.watchdog = Some(child);
        Ok(())
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.leader.try_wait().ok().flatten()
    }

    fn wait_answering(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Some(status) = self.exited() {
                return Err(self.fail(&format!("exited during start-up ({status})")));
            }
            let mut cmd = self.tool("pactl");
            cmd.arg("info");
            let last = match run_with_timeout(cmd, PACTL_TIMEOUT) {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) => out.stderr.trim().to_string(),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(self.fail(&format!(
                    "`pactl info` got no answer within {:.0} s: {last}",
                    self.opts.ready_timeout.as_secs_f64()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn make_devices(&self, deadline: Instant) -> Result<(), String> {
        for name in [SINK, FEED_SINK] {
            let mut args = vec![
                "load-module".to_string(),
                "module-null-sink".into(),
                format!("sink_name={name}"),
                format!("rate={RATE}"),
                format!("channels={CHANNELS}"),
                "format=s16le".into(),
                format!("sink_properties=device.description={name}"),
            ];
            if self.kind == Kind::PulseAudio && !(name == SINK && self.opts.sink_rewinds) {
                // With rewinds, an idle null sink renders ~2 s ahead and then sleeps:
                // its monitor stays silent (no data at all) for up to 2 s after a
                // stream starts. Without them it runs in real time, like PipeWire's.
                args.push("norewinds=1".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.pactl(&args)?;
        }
        self.set_default("set-default-sink", SINK, deadline)?;
        self.set_default("set-default-source", SOURCE, deadline)
    }

    /// `pactl SET NAME`. pipewire-pulse answers "Not supported" until WirePlumber has
    /// published its default-device metadata, which can come after `pactl info`
    /// answers: that one is asked again until `deadline`.
    fn set_default(&self, set: &str, name: &str, deadline: Instant) -> Result<(), String> {
        loop {
            let mut cmd = self.tool("pactl");
            cmd.args([set, name]);
            let out = run_with_timeout(cmd, PACTL_TIMEOUT)
                .map_err(|e| self.fail(&format!("pactl {set} {name}: {e}")))?;
            if out.status.success() {
                return Ok(());
            }
            let early = self.kind == Kind::PipeWire && out.stderr.contains("Not supported");
            if !early || Instant::now() >= deadline {
                return Err(self.fail(&format!(
                    "pactl {set} {name} failed ({}): {}",
                    out.status,
                    out.stderr.trim()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_feeder(&mut self) -> Result<(), String> {
        let log = self.dir.join("pacat-tone.log");
        let stderr =
            fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut cmd = self.tool("pacat");
        cmd.arg("--playback")
            .args(stream_args())
            // With the default 2 s buffer PulseAudio renders the null sink, and so
            // the source, in big bursts; too small a buffer underruns under load
            // (PipeWire then plays silence into the source).
            .arg("--latency-msec=100")
            .arg("--client-name=vsnd-tone")
            .arg("-d")
            .arg(FEED_SINK)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(self.pgid);
        let mut child = cmd
            .spawn()
            .map_err(|e| self.fail(&format!("cannot run pacat: {e}")))?;
        let stdin = child.stdin.take();
        self.helpers.push(child);
        let Some(stdin) = stdin else {
            return Err("pacat has no stdin".into());
        };
        let stop = Arc::clone(&self.feeder_stop);
        let (hz, amp) = (self.opts.tone_hz, self.opts.tone_amplitude);
        let feeder = thread::Builder::new()
            .name("vsnd-tone".into())
            .spawn(move || feed_tone(stdin, hz, amp, &stop))
            .map_err(|e| format!("cannot start the tone thread: {e}"))?;
        self.feeder = Some(feeder);
        Ok(())
    }

    /// Ready means: the defaults are ours (WirePlumber applies them a little
    /// after pactl asked) and the tone comes out of the default source, which
    /// proves the session manager links streams.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            let info = self.pactl(&["info"])?;
            if info.contains(&format!("Default Sink: {SINK}\n"))
                && info.contains(&format!("Default Source: {SOURCE}\n"))
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(self.fail(&format!("the defaults were not applied:\n{info}")));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let rec = self.start_recording_from(SOURCE)?;
        let window = RATE as usize / 50 * CHANNELS;
        // A sine of amplitude A has an RMS of A/sqrt(2); half of that is
        // unmistakably the tone and not noise or a fade.
        let want = self.opts.tone_amplitude / std::f32::consts::SQRT_2 / 2.0;
        loop {
            let heard = {
                let data = lock(&rec.data);
                let samples = bytes_to_i16(&data);
                let tail = &samples[samples.len().saturating_sub(window)..];
                tail.len() == window && rms_i16(tail) > want
            };
            if heard {
                return rec.stop().map(|_| ());
            }
            if let Some(status) = self.exited() {
                return Err(self.fail(&format!("exited during start-up ({status})")));
            }
            if Instant::now() >= deadline {
                let got = rec.stop().map(|s| s.len() / CHANNELS);
                return Err(self.fail(&format!(
                    "the tone was not heard on {SOURCE} within {:.0} s (recorded {got:?} frames)\n{}",
                    self.opts.ready_timeout.as_secs_f64(),
                    self.sink_inputs().unwrap_or_default()
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for AudioServer {
    fn drop(&mut self) {
        self.feeder_stop.store(true, Ordering::Relaxed);
        // First, so that it does not start its own clean-up.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        signal_group(self.pgid, libc::SIGTERM);
        // The leader exiting is not enough: dbus-run-session goes at once and
        // leaves PipeWire's processes still shutting down.
        wait_group_gone(self.pgid, STOP_TIMEOUT);
        signal_group(self.pgid, libc::SIGKILL);
        wait_group_gone(self.pgid, STOP_TIMEOUT);
        let _ = self.leader.kill();
        let _ = self.leader.wait();
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// While alive, this process's environment points libpulse at one server; see
/// [`AudioServer::set_process_env`].
pub struct ProcessEnvGuard {
    saved: Vec<(String, Option<std::ffi::OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

impl Drop for ProcessEnvGuard {
    fn drop(&mut self) {
        for (k, v) in &self.saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}

/// A running `parecord`; [`Recording::stop`] ends it and hands back the audio.
/// Dropping it without `stop` discards the audio.
pub struct Recording {
    child: Child,
    data: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    log: PathBuf,
    source: String,
    server_dir: PathBuf,
    started: Instant,
}

impl Recording {
    /// The source being recorded.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Frames recorded so far.
    pub fn frames(&self) -> usize {
        lock(&self.data).len() / BYTES_PER_FRAME
    }

    /// A copy of what was recorded so far (interleaved S16LE frames).
    pub fn snapshot(&self) -> Vec<i16> {
        bytes_to_i16(&lock(&self.data))
    }

    /// Waits until at least `frames` frames have been recorded.
    pub fn wait_frames(&self, frames: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.frames();
            if have >= frames {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "only {have} of {frames} frames within {:.1} s",
                    timeout.as_secs_f64()
                )));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops `parecord` and returns everything it recorded: interleaved S16LE
    /// frames at [`RATE`] with [`CHANNELS`] channels. Fails if `parecord` had
    /// exited on its own with an error.
    pub fn stop(mut self) -> Result<Vec<i16>, String> {
        let early = self.child.try_wait().ok().flatten();
        self.end();
        if let Some(status) = early.filter(|s| !s.success()) {
            return Err(self.failure(&format!("parecord exited early ({status})")));
        }
        Ok(bytes_to_i16(&lock(&self.data)))
    }

    fn end(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM, not SIGKILL: parecord then writes out what it holds.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    fn failure(&self, what: &str) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "recording {} ({:.1} s in): {what}\nparecord: {}\n{}",
            self.source,
            self.started.elapsed().as_secs_f64(),
            log.trim(),
            log_tails(&self.server_dir)
        )
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.end();
    }
}

/// Output of a command run with [`run_with_timeout`].
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with its stdout and stderr captured, killing it (and
/// failing) after `timeout`; std has no wait with a timeout.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<CommandOutput, String> {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{program} timed out after {:.1} s",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(format!("cannot wait for {program}: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Ok(status) => Ok(CommandOutput {
            status,
            stdout,
            stderr,
        }),
        Err(e) => Err(format!("{e}\nstdout: {stdout}\nstderr: {stderr}")),
    }
}

/// Converts raw S16LE bytes to samples, dropping a trailing odd byte.
pub fn bytes_to_i16(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn stream_args() -> [String; 4] {
    [
        "--raw".into(),
        "--format=s16le".into(),
        format!("--rate={RATE}"),
        format!("--channels={CHANNELS}"),
    ]
}

fn rms_i16(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|&s| (f64::from(s) / 32768.0).powi(2))
        .sum();
    (sum / samples.len() as f64).sqrt() as f32
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn signal_group(pgid: i32, sig: libc::c_int) {
    // Never signal group 0 or 1 (ours, init's) by mistake.
    if pgid > 1 {
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Pids of the processes of group `pgid` that are still running. Zombies do not
/// count: the orphans of the group are reparented to init, which need not reap
/// them (here it does not), so `kill(-pgid, 0)` would find them forever.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold anything, so split at
        // the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[0] != "X" && fields[2] == pgid.to_string()
        {
            out.push(pid);
        }
    }
    out
}

fn wait_group_gone(pgid: i32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !live_group_members(pgid).is_empty() {
        thread::sleep(Duration::from_millis(10));
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn fresh_dir(kind: Kind) -> Result<PathBuf, String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "vhostsnd-audio-{}-{n}-{}",
        std::process::id(),
        kind.name()
    ));
    // A leftover of an earlier process that had the same pid.
    let _ = fs::remove_dir_all(&dir);
    let mk =
        |p: &Path| fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()));
    mk(&dir.join("home/.config/pulse"))?;
    mk(&dir.join("home/.state"))?;
    let run = dir.join("run");
    mk(&run)?;
    // PulseAudio refuses a runtime directory others can enter.
    fs::set_permissions(&run, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot chmod {}: {e}", run.display()))?;
    // The socket path must fit in sun_path (108 bytes).
    let socket = run.join("pulse/native");
    if socket.as_os_str().len() >= 100 {
        let _ = fs::remove_dir_all(&dir);
        return Err(format!(
            "{} is too long for a unix socket path: set TMPDIR shorter",
            socket.display()
        ));
    }
    Ok(dir)
}

fn spawn_server(kind: Kind, dir: &Path) -> Result<Child, String> {
    let log_name = match kind {
        Kind::PulseAudio => "pulseaudio.log",
        Kind::PipeWire => "dbus-run-session.log",
    };
    let log = dir.join(log_name);
    let out =
        fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot dup {}: {e}", log.display()))?;
    let mut cmd = match kind {
        Kind::PulseAudio => {
            let mut c = Command::new("pulseaudio");
            c.args(PULSEAUDIO_ARGS);
            c
        }
        Kind::PipeWire => {
            let mut c = Command::new("dbus-run-session");
            c.args(["--", "sh", "-c", PIPEWIRE_SCRIPT, "sh"]).arg(dir);
            c
        }
    };
    let home = dir.join("home");
    cmd.env_clear()
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_STATE_HOME", home.join(".state"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.spawn()
        .map_err(|e| format!("{kind}: cannot run {:?}: {e}", cmd.get_program()))
}

fn feed_tone(mut out: ChildStdin, hz: f64, amplitude: f32, stop: &AtomicBool) {
    let step = 2.0 * std::f64::consts::PI * hz / f64::from(RATE);
    let mut phase = 0.0f64;
    let frames = RATE as usize / 100;
    let mut buf = Vec::with_capacity(frames * BYTES_PER_FRAME);
    while !stop.load(Ordering::Relaxed) {
        buf.clear();
        for _ in 0..frames {
            let v = (f64::from(amplitude) * phase.sin() * 32767.0).round() as i16;
            for _ in 0..CHANNELS {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            phase = (phase + step) % (2.0 * std::f64::consts::PI);
        }
        // pacat takes it at the sink's pace: the pipe's backpressure is the clock.
        if out.write_all(&buf).is_err() {
            return;
        }
    }
}

fn log_tails(dir: &Path) -> String {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    let mut out = String::new();
    for p in logs {
        let text = fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        out.push_str(&format!("--- {} ---\n", name.unwrap_or_default()));
        for l in tail {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
