//! Executors for RUN steps (and, later, containers): DESIGN.md's execution choice picks, per
//! program, the WASI sandbox ([`wasi`]) or the native one; both write the same upper format.

pub mod native;
pub mod wasi;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cap_std::fs::Dir;

use crate::progress::Stream;
use crate::rootfs::{ContainerPath, Creds, VfsError};

/// Per-step resource limits (`kiln build --run-*`; the server and the native sandbox use the
/// same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time (`--run-timeout`, default 10m).
    pub timeout: Duration,
    /// Linear memory of every instance and of all a step's instances together (`--run-memory`,
    /// default 4g; compiling a module counts against it).
    pub memory: u64,
    /// Processes alive at once (`--run-pids`, default 1024).
    pub pids: u32,
    /// Open files per process (`--run-files`, default 1024).
    pub files: u32,
    /// Bytes written to the upper (`--run-disk`, default 10g).
    pub disk: u64,
    /// Output kept (`--run-log`, default 64m).
    pub log: u64,
    /// Size of a native program's `/dev/shm` (`--shm-size`, default 64m, as docker's).
    pub shm: u64,
}

impl Limits {
    /// A wall-clock limit that is never reached: a container runs until it ends or is stopped.
    pub const NO_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(600),
            memory: 4 << 30,
            pids: 1024,
            files: 1024,
            disk: 10 << 30,
            log: 64 << 20,
            shm: 64 << 20,
        }
    }
}

/// A limit that a step exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Timeout,
    Memory,
    Pids,
    Files,
    Disk,
    Log,
}

impl Limit {
    /// The limit's name as its flag spells it (`--run-timeout`: `timeout`).
    pub fn name(self) -> &'static str {
        match self {
            Limit::Timeout => "timeout",
            Limit::Memory => "memory",
            Limit::Pids => "pids",
            Limit::Files => "files",
            Limit::Disk => "disk",
            Limit::Log => "log",
        }
    }
}

impl Limits {
    /// The limit's name and its value as the flag spells it: `("timeout", "10m")`.
    pub fn describe(&self, limit: Limit) -> (&'static str, String) {
        let value = match limit {
            Limit::Timeout => format_duration(self.timeout),
            Limit::Memory => format_size(self.memory),
            Limit::Pids => self.pids.to_string(),
            Limit::Files => self.files.to_string(),
            Limit::Disk => format_size(self.disk),
            Limit::Log => format_size(self.log),
        };
        (limit.name(), value)
    }
}

/// Parses a size: `512`, `64k`, `64m`, `2g`, `1t` (binary units, optional `b`/`ib`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        Some((i, 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {s:?} (use e.g. 512m or 2g)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a duration: `30s`, `10m`, `2h`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    let bad = || format!("invalid duration {s:?} (use e.g. 30s, 10m or 1h)");
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t.as_str(), "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("duration {s:?} must be more than zero"));
    }
    Ok(d)
}

fn format_size(n: u64) -> String {
    for (unit, shift) in [("t", 40), ("g", 30), ("m", 20), ("k", 10)] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Which executors a step may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// WASI for modules and guest tools, native for Linux binaries.
    #[default]
    Auto,
    /// WASI only: no native execution at all.
    Wasi,
}

/// The folders a step runs over.
#[derive(Debug, Clone)]
pub struct Rootfs {
    /// Layer snapshots, bottom first (read-only).
    pub lowers: Vec<PathBuf>,
    /// The step's upper: where its changes land, in the layer-diff format.
    pub upper: PathBuf,
}

/// Network access of a step's programs (WASI programs never have sockets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Loopback only.
    #[default]
    None,
    /// The host's network.
    Host,
}

/// The signals kiln passes on to the program it runs (docker's `--sig-proxy`).
pub const FORWARDED_SIGNALS: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// What becomes of a run's other processes when its first one ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Orphans {
    /// Killed, as when a container's main process ends (RUN steps, containers).
    #[default]
    Killed,
    /// Waited for, as a shell's background jobs outlive it on a host (`kiln debug sh`).
    Awaited,
}

/// A process to run over a rootfs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// argv; `argv[0]` is a path, or a name looked up in the `PATH` of `env`.
    pub argv: Vec<String>,
    /// The whole environment, `K=V`.
    pub env: Vec<String>,
    /// The working directory.
    pub cwd: ContainerPath,
    /// The user it runs as (and owner of what it creates).
    pub creds: Creds,
    pub limits: Limits,
    pub isolation: Isolation,
    /// Where the process's stdio goes.
    pub stdio: StdioMode,
    /// Network for native programs.
    pub network: NetworkMode,
    /// The hostname native programs see.
    pub hostname: String,
    /// Lines added to the `/etc/hosts` native programs see (`IP\tNAME`, `--add-host`).
    pub extra_hosts: Vec<String>,
    /// Where signals for the run's main program come from (`kiln stop`, `kiln kill`, a proxied
    /// Ctrl-C); none for a RUN step.
    pub control: Option<RunControl>,
    /// Host folders mounted into the rootfs (`run -v`; native programs only for now).
    pub binds: Vec<Bind>,
    /// A terminal (the secondary side of a pty) that is the program's stdin, stdout and stderr
    /// instead of what `stdio` says, and a native program's controlling terminal (`run -t`).
    pub terminal: Option<Arc<std::os::fd::OwnedFd>>,
    /// With [`StdioMode::CaptureWithStdin`], the program's stdin instead of kiln's own (a pipe
    /// fed by a server's attached client).
    pub stdin: Option<Arc<std::os::fd::OwnedFd>>,
    /// What becomes of WebAssembly processes left when the first one ends.
    pub orphans: Orphans,
}

/// A host folder mounted into a rootfs (`run -v HOST:TARGET[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// An absolute host path to an existing folder.
    pub host: PathBuf,
    /// The absolute path inside the rootfs (resolved there, created when missing).
    pub target: String,
    pub readonly: bool,
}

/// Where a run's stdin, stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdioMode {
    /// stdin is `/dev/null`; stdout and stderr are captured as [`RunEvent::Output`] (RUN).
    #[default]
    Capture,
    /// The process uses kiln's own stdin, stdout and stderr (`kiln debug sh`).
    Inherit,
    /// stdin is kiln's own (or [`RunSpec::stdin`]); stdout and stderr are captured
    /// (`kiln run -i`).
    CaptureWithStdin,
}

/// Signals for a running program, from another thread: the main program of the run gets them,
/// as `docker kill` delivers to a container's pid 1. A native program's init forwards them to
/// the program; a WebAssembly program has no signal handlers, so a signal whose default action
/// terminates ends it (and its whole run) with status 128+N, and the others are ignored.
/// Signals sent before the program starts are delivered when it does.
#[derive(Clone, Default)]
pub struct RunControl {
    inner: Arc<Mutex<Control>>,
}

#[derive(Default)]
struct Control {
    /// The primary side of the run's terminal, for window-size changes.
    terminal: Option<std::os::fd::OwnedFd>,
    main: MainTarget,
    pending: Option<i32>,
    natives: Vec<(u64, std::os::fd::OwnedFd)>,
    next_token: u64,
}

/// Makes a running WebAssembly program look at its stop flag (a set flag alone is seen only
/// when the program waits in a host call).
pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
enum MainTarget {
    #[default]
    NotStarted,
    /// The flag that stops it, and what makes it look at the flag now.
    Wasm(Arc<AtomicI32>, Waker),
    Native(u64),
}

impl fmt::Debug for RunControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunControl").finish_non_exhaustive()
    }
}

/// Whether a signal's default action ends a process.
fn terminates(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    )
}

fn send_pidfd(pidfd: &std::os::fd::OwnedFd, sig: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal(2) on a pidfd we own.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

impl RunControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `sig` (1..=64) to the run's main program.
    pub fn signal(&self, sig: i32) {
        let Ok(mut c) = self.inner.lock() else { return };
        match &c.main {
            MainTarget::NotStarted => {
                if c.pending != Some(libc::SIGKILL) {
                    c.pending = Some(sig);
                }
            }
            MainTarget::Wasm(flag, wake) => {
                if terminates(sig) {
                    let _ = flag.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
                    wake();
                    // The run ends with its main program: native children go with it.
                    for (_, pidfd) in &c.natives {
                        send_pidfd(pidfd, libc::SIGKILL);
                    }
                }
            }
            MainTarget::Native(token) => {
                if let Some((_, pidfd)) = c.natives.iter().find(|(t, _)| t == token) {
                    send_pidfd(pidfd, sig);
                }
            }
        }
    }

    /// The run's terminal: [`RunControl::resize`] sets its window size.
    pub fn set_terminal(&self, primary: std::os::fd::OwnedFd) {
        if let Ok(mut c) = self.inner.lock() {
            c.terminal = Some(primary);
        }
    }

    /// Sets the window size of the run's terminal (the program gets SIGWINCH from the kernel).
    pub fn resize(&self, rows: u16, cols: u16) {
        let Ok(c) = self.inner.lock() else { return };
        if let Some(t) = &c.terminal {
            let ws = rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let _ = rustix::termios::tcsetwinsize(t, ws);
        }
    }

    /// The main program is a WebAssembly process whose `flag` holds the signal that stops it;
    /// `wake` makes it look at the flag. (A signal already pending is seen when it starts.)
    pub(crate) fn set_wasm_main(&self, flag: Arc<AtomicI32>, wake: Waker) {
        let Ok(mut c) = self.inner.lock() else { return };
        if let Some(sig) = c.pending.take() {
            if terminates(sig) {
                flag.store(sig, Ordering::SeqCst);
            }
        }
        c.main = MainTarget::Wasm(flag, wake);
    }

    /// A native sandbox's init started (`main`: it runs the main program); returns the token
    /// that [`RunControl::unregister`] takes.
    pub(crate) fn register_native(&self, pidfd: std::os::fd::OwnedFd, main: bool) -> u64 {
        let Ok(mut c) = self.inner.lock() else {
            return 0;
        };
        c.next_token += 1;
        let token = c.next_token;
        if main {
            if let Some(sig) = c.pending.take() {
                send_pidfd(&pidfd, sig);
            }
            c.main = MainTarget::Native(token);
        }
        c.natives.push((token, pidfd));
        token
    }

    /// The native sandbox `token` ended.
    pub(crate) fn unregister(&self, token: u64) {
        if let Ok(mut c) = self.inner.lock() {
            c.natives.retain(|(t, _)| *t != token);
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The exit status as a shell reports it (128+N for a kill by signal N).
    pub status: i32,
    /// The limit that stopped it, if one did.
    pub limit: Option<Limit>,
    /// A Linux binary it needed and could not run.
    pub needs_native: Option<String>,
    /// Which executor ran the first program, and why.
    pub executor: String,
    /// Limits this host could not enforce on native programs, with the reason.
    pub not_enforced: Vec<String>,
}

/// What a running step reports.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The first program starts: which executor runs it, and why.
    Started { executor: &'a str },
    /// Output it wrote.
    Output(Stream, &'a [u8]),
}

/// Why a sandbox could not run at all (a process that fails is a [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// wasmtime could not be set up.
    #[error("WebAssembly engine: {0}")]
    Engine(String),
    /// A module could not be compiled or linked.
    #[error("WebAssembly module: {0}")]
    Module(String),
    /// Compiling a module ran out of the step's time or memory.
    #[error("compiling the module exceeded the step's {} limit", .0.name())]
    CompileLimit(Limit),
    /// This kiln carries no guest tools (a fuzzing build).
    #[error("this kiln was built without its guest tools")]
    NoTools,
    /// The rootfs failed.
    #[error(transparent)]
    Rootfs(#[from] VfsError),
    /// A host resource failed.
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The executors of one kiln process, or of one tenant of `kiln serve` (the WebAssembly
/// engine is made on first use).
pub struct Sandbox {
    /// The engine, or why it could not be made.
    wasi: OnceLock<Result<Arc<wasi::WasiRuntime>, String>>,
    /// Where the engine keeps compiled modules (`None`: nowhere).
    module_cache: Option<std::path::PathBuf>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// The executors of this kiln process: compiled modules are cached in
    /// [`wasi::default_cache_dir`].
    pub fn new() -> Self {
        Self::with_module_cache(wasi::default_cache_dir())
    }

    /// Executors whose compiled modules are cached in `dir` (a tenant of `kiln serve` has its
    /// own: no tenant sees what another compiled, or evicts it). kiln's own guest tools are
    /// cached in [`wasi::default_cache_dir`] whatever `dir` is.
    pub fn with_module_cache(dir: Option<std::path::PathBuf>) -> Self {
        Self {
            wasi: OnceLock::new(),
            module_cache: dir,
        }
    }

    /// The engine, made once; a caller that comes while another thread makes it waits for
    /// that one.
    fn wasi(&self) -> Result<&Arc<wasi::WasiRuntime>, SandboxError> {
        self.wasi
            .get_or_init(|| {
                wasi::WasiRuntime::new(self.module_cache.clone(), wasi::default_cache_dir())
                    .map_err(|e| match e {
                        SandboxError::Engine(m) => m,
                        other => other.to_string(),
                    })
            })
            .as_ref()
            .map_err(|m| SandboxError::Engine(m.clone()))
    }

    /// Runs `spec` over `rootfs`, streaming what happens to `on_event`. The upper then holds
    /// the step's changes in the layer-diff format. Each program runs where DESIGN.md's
    /// execution choice puts it: WebAssembly modules and kiln's guest tools in the WASI sandbox,
    /// Linux binaries in the native one (when allowed and available).
    pub fn run(
        &self,
        rootfs: &Rootfs,
        spec: &RunSpec,
        on_event: &mut dyn FnMut(RunEvent<'_>),
    ) -> Result<RunOutcome, SandboxError> {
        let rt = self.wasi()?;
        let open = |p: &std::path::Path| {
            Dir::open_ambient_dir(p, cap_std::ambient_authority()).map_err(|source| {
                SandboxError::Io {
                    op: "open a rootfs folder",
                    source,
                }
            })
        };
        let lowers = rootfs
            .lowers
            .iter()
            .map(|p| open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let upper = open(&rootfs.upper)?;
        // Asked when a step first meets a Linux binary: the probe forks.
        let native: fn() -> Result<(), wasi::NativeDenied> = match spec.isolation {
            Isolation::Wasi => || Err(wasi::NativeDenied::Disabled),
            Isolation::Auto => || native::available().map_err(wasi::NativeDenied::Unavailable),
        };
        wasi::run(rt, lowers, upper, rootfs, native, spec, on_event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999t").is_err());
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1y").is_err());
        let l = Limits::default();
        assert_eq!(l.describe(Limit::Timeout), ("timeout", "10m".to_owned()));
        assert_eq!(l.describe(Limit::Memory), ("memory", "4g".to_owned()));
        assert_eq!(l.describe(Limit::Log), ("log", "64m".to_owned()));
    }
}
