//! Running a container: the supervising process holds its folder's lock, serves `ctl`, keeps the log
//! and the state, and runs the program with the sandbox's execution choice.

use std::fs;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

use super::{io_at, Container, ContainerError, Containers, RunLock, State, Status};
use crate::progress::Stream;
use crate::rootfs::{ContainerPath, Creds};
use crate::sandbox::{
    Isolation, Limits, NetworkMode, Rootfs, RunControl, RunEvent, RunSpec, Sandbox, SandboxError,
    StdioMode,
};
use crate::store::{Store, StoreError};

/// Where a container's output goes besides its log.
#[derive(Clone)]
pub enum Attach {
    /// Only the log (`run -d`, `start` without `-a`).
    Detached,
    /// Also kiln's stdout and stderr; kiln's stdin is the program's when the container keeps
    /// stdin open (`-i`).
    Foreground,
    /// Also a server's attached clients.
    Remote(Remote),
}

impl std::fmt::Debug for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attach::Detached => "Detached",
            Attach::Foreground => "Foreground",
            Attach::Remote(_) => "Remote",
        })
    }
}

/// Takes a container's output as it comes.
pub type OutputFn = Arc<dyn Fn(Stream, &[u8]) + Send + Sync>;

/// The streams of a server's attached clients.
#[derive(Clone)]
pub struct Remote {
    /// Takes the program's output as it comes.
    pub output: OutputFn,
    /// The program's stdin (when the container keeps stdin open): the read end of a pipe.
    pub stdin: Option<Arc<std::os::fd::OwnedFd>>,
    /// The terminal's first size (rows, columns).
    pub size: Option<(u16, u16)>,
}

impl Attach {
    /// Where the output goes besides the log, if anywhere.
    fn show(&self, stream: Stream, bytes: &[u8]) {
        match self {
            Attach::Detached => {}
            Attach::Foreground => {
                let _ = match stream {
                    Stream::Stdout => {
                        let mut out = io::stdout().lock();
                        out.write_all(bytes).and_then(|()| out.flush())
                    }
                    Stream::Stderr => io::stderr().lock().write_all(bytes),
                };
            }
            Attach::Remote(r) => (r.output)(stream, bytes),
        }
    }

    /// Whether the program gets an input.
    fn has_input(&self) -> bool {
        match self {
            Attach::Detached => false,
            Attach::Foreground => true,
            Attach::Remote(r) => r.stdin.is_some(),
        }
    }
}

/// Why a container could not run (a program that fails has an exit code instead).
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot run the container: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("unpack layer {diff}: {why}")]
    Unpack { diff: String, why: String },
    #[error("{0}")]
    Bind(String),
}

/// Runs `c` to its end under `control` (which also takes signals written to its `ctl`);
/// returns the program's exit status. The container is removed afterwards when it says so.
/// `held`: the container was created running, under this lock
/// ([`Containers::create_running`]).
pub fn supervise(
    store: &Store,
    containers: &Containers,
    sandbox: &Sandbox,
    c: &mut Container,
    attach: &Attach,
    control: &RunControl,
    held: Option<RunLock>,
) -> Result<i32, SuperviseError> {
    let started = held.is_some();
    let Some(lock) = held.or_else(|| super::take_run_lock(&c.dir)) else {
        return Err(ContainerError::Running(c.short_id().to_owned()).into());
    };
    let result = run_locked(store, sandbox, c, attach, control, started);
    let status = match &result {
        Ok(ran) => State {
            status: Status::Exited,
            pid: 0,
            exit_code: ran.status,
            error: ran.error.clone(),
            started_at: c.state.started_at,
            finished_at: Some(OffsetDateTime::now_utc()),
        },
        Err(e) => State {
            status: Status::Exited,
            pid: 0,
            exit_code: 126,
            error: e.to_string(),
            started_at: c.state.started_at,
            finished_at: Some(OffsetDateTime::now_utc()),
        },
    };
    let _ = fs::remove_file(c.dir.join("ctl"));
    if c.config.auto_remove {
        // Its final state would go with it: it is saved only when the container stays.
        drop(lock);
        if let Err(e) = containers.remove(c) {
            c.save_state(status)?;
            return Err(e.into());
        }
        return result.map(|ran| ran.status);
    }
    let saved = c.save_state(status);
    drop(lock);
    saved?;
    result.map(|ran| ran.status)
}

/// How a run ended: the program's status, and why kiln stopped it, if it did.
struct Ran {
    status: i32,
    error: String,
}

fn run_locked(
    store: &Store,
    sandbox: &Sandbox,
    c: &mut Container,
    attach: &Attach,
    control: &RunControl,
    started: bool,
) -> Result<Ran, SuperviseError> {
    let _lease = store.lease()?;
    let lowers = snapshots(store, &c.config.layers)?;
    let ctl = Control::serve(c, control.clone())?;
    if !started {
        c.save_state(State {
            status: Status::Running,
            pid: std::process::id(),
            exit_code: 0,
            error: String::new(),
            started_at: Some(OffsetDateTime::now_utc()),
            finished_at: None,
        })?;
    }
    let cfg = &c.config;
    let mut argv = vec![cfg.path.clone()];
    argv.extend(cfg.args.iter().cloned());
    let binds = cfg
        .binds
        .iter()
        .map(|b| super::parse_bind(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(SuperviseError::Bind)?;
    let mut env = vec![format!("HOSTNAME={}", cfg.hostname)];
    env.extend(
        cfg.env
            .iter()
            .filter(|e| !e.starts_with("HOSTNAME="))
            .cloned(),
    );
    if !cfg.env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", cfg.home));
    }
    let spec = RunSpec {
        extra_hosts: Vec::new(),
        argv,
        env,
        cwd: ContainerPath::parse(if cfg.working_dir.is_empty() {
            "/"
        } else {
            &cfg.working_dir
        }),
        creds: Creds {
            uid: cfg.uid,
            gid: cfg.gid,
        },
        limits: Limits {
            timeout: Limits::NO_TIMEOUT,
            memory: cfg.memory,
            pids: cfg.pids,
            files: 65_536,
            disk: cfg.disk.unwrap_or(u64::MAX),
            log: u64::MAX,
            shm: crate::sandbox::Limits::default().shm,
        },
        isolation: if cfg.wasi_only {
            Isolation::Wasi
        } else {
            Isolation::Auto
        },
        stdio: if attach.has_input() && cfg.open_stdin {
            StdioMode::CaptureWithStdin
        } else {
            StdioMode::Capture
        },
        network: if cfg.network == "host" {
            NetworkMode::Host
        } else {
            NetworkMode::None
        },
        hostname: cfg.hostname.clone(),
        control: Some(control.clone()),
        binds,
        terminal: None,
        stdin: match attach {
            Attach::Remote(r) => r.stdin.clone(),
            _ => None,
        },
        orphans: crate::sandbox::Orphans::Killed,
    };
    let mut spec = spec;
    let rootfs = Rootfs {
        lowers,
        upper: c.upper(),
    };
    let log_path = c.log_path();
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_at("open", &log_path))?;
    let log = Arc::new(std::sync::Mutex::new(Log::new(file, cfg.log_limit)?));
    // With a terminal, the program's output is read from its primary side.
    let terminal = if cfg.tty {
        let t = Terminal::open(attach, cfg.open_stdin, control, &log_path, log.clone())?;
        spec.terminal = Some(t.secondary.clone());
        Some(t)
    } else {
        None
    };
    let outcome = sandbox.run(&rootfs, &spec, &mut |event| {
        let RunEvent::Output(stream, bytes) = event else {
            return;
        };
        // The log first: a follower told of new output finds it there.
        if let Ok(mut l) = log.lock() {
            l.write(stream, bytes);
        }
        attach.show(stream, bytes);
    });
    drop(ctl);
    // The terminal's output ends once every copy of its secondary side (the spec holds one)
    // is closed.
    let limits = spec.limits;
    drop(spec);
    if let Some(t) = terminal {
        t.finish();
    }
    let outcome = outcome?;
    if let Some(e) = log.lock().ok().and_then(|mut l| l.error.take()) {
        return Err(io_at("write", &log_path)(e).into());
    }
    let error = match outcome.limit {
        Some(limit) => {
            let (name, value) = limits.describe(limit);
            format!("the container exceeded its {name} limit ({value})")
        }
        None => String::new(),
    };
    Ok(Ran {
        status: outcome.status,
        error,
    })
}

/// A container's log (docker's json-file records), kept up to an optional size: past it, one
/// record says so and later output goes only to attached clients.
struct Log {
    file: fs::File,
    written: u64,
    limit: Option<u64>,
    full: bool,
    /// The first write that failed.
    error: Option<io::Error>,
}

impl Log {
    fn new(file: fs::File, limit: Option<u64>) -> Result<Log, ContainerError> {
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Log {
            file,
            written,
            limit,
            full: false,
            error: None,
        })
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        if self.full || self.error.is_some() {
            return;
        }
        let mut records = log_line(stream, bytes);
        if let Some(limit) = self.limit {
            if self.written + records.len() as u64 > limit {
                self.full = true;
                records = log_line(
                    Stream::Stderr,
                    format!(
                        "kiln: the log reached its limit of {limit} bytes; later output is not kept\n"
                    )
                    .as_bytes(),
                );
            }
        }
        self.written += records.len() as u64;
        self.error = self.file.write_all(&records).err();
    }
}

/// The snapshot folders of `layers`, bottom first, unpacking the missing ones. Hold a lease
/// while using them.
pub fn snapshots(
    store: &Store,
    layers: &[super::LayerRef],
) -> Result<Vec<std::path::PathBuf>, SuperviseError> {
    let mut lowers = Vec::new();
    for l in layers {
        let dir =
            store
                .layer_snapshot(&l.diff_id, &l.digest)
                .map_err(|e| SuperviseError::Unpack {
                    diff: l.diff_id.to_string(),
                    why: e.to_string(),
                })?;
        lowers.push(dir);
    }
    Ok(lowers)
}

/// Records of docker's json-file log format for `bytes`: one per line (a last line without
/// its newline is a record of its own, as docker writes partial lines).
fn log_line(stream: Stream, bytes: &[u8]) -> Vec<u8> {
    let time = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let stream = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    let mut out = Vec::new();
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let record = serde_json::json!({
            "log": String::from_utf8_lossy(line),
            "stream": stream,
            "time": time,
        });
        if let Ok(mut text) = serde_json::to_vec(&record) {
            text.push(b'\n');
            out.extend(text);
        }
    }
    out
}

/// A container's pty: the program gets the secondary side; threads copy the primary side's
/// output to the log (and kiln's stdout when attached) and kiln's stdin to it (`-i`).
struct Terminal {
    secondary: Arc<std::os::fd::OwnedFd>,
    output: std::thread::JoinHandle<()>,
}

impl Terminal {
    fn open(
        attach: &Attach,
        input: bool,
        control: &RunControl,
        log_path: &std::path::Path,
        log: Arc<std::sync::Mutex<Log>>,
    ) -> Result<Terminal, ContainerError> {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let pty_err = |e: rustix::io::Errno| io_at("set up a terminal", log_path)(e.into());
        let primary = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .map_err(pty_err)?;
        grantpt(&primary).map_err(pty_err)?;
        unlockpt(&primary).map_err(pty_err)?;
        let name = ptsname(&primary, Vec::new()).map_err(pty_err)?;
        let secondary = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(pty_err)?;
        let size = match attach {
            Attach::Foreground => rustix::termios::tcgetwinsize(io::stdout()).ok(),
            Attach::Remote(Remote {
                size: Some((rows, cols)),
                ..
            }) => Some(rustix::termios::Winsize {
                ws_row: *rows,
                ws_col: *cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            }),
            _ => None,
        };
        if let Some(ws) = size {
            let _ = rustix::termios::tcsetwinsize(&primary, ws);
        }
        control.set_terminal(
            primary
                .try_clone()
                .map_err(io_at("set up a terminal", log_path))?,
        );
        let reader = primary
            .try_clone()
            .map_err(io_at("set up a terminal", log_path))?;
        if input {
            let writer = fs::File::from(primary);
            match attach {
                // Ends with kiln (it blocks in a read of kiln's stdin).
                Attach::Foreground => {
                    let _ = std::thread::Builder::new()
                        .name("kiln-tty-in".into())
                        .spawn(move || {
                            let mut writer = writer;
                            let _ = io::copy(&mut io::stdin().lock(), &mut writer);
                        });
                }
                // Ends when the client's pipe closes.
                Attach::Remote(Remote {
                    stdin: Some(fd), ..
                }) => {
                    let reader = fd
                        .try_clone()
                        .map_err(io_at("set up a terminal", log_path))?;
                    let _ = std::thread::Builder::new()
                        .name("kiln-tty-in".into())
                        .spawn(move || {
                            let mut writer = writer;
                            let _ = io::copy(&mut fs::File::from(reader), &mut writer);
                        });
                }
                _ => {}
            }
        }
        let attach = attach.clone();
        let output = std::thread::Builder::new()
            .name("kiln-tty-out".into())
            .spawn(move || {
                let mut reader = fs::File::from(reader);
                let mut buf = vec![0u8; 16 * 1024];
                // EIO once every copy of the secondary side is closed.
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut l) = log.lock() {
                        l.write(Stream::Stdout, &buf[..n]);
                    }
                    attach.show(Stream::Stdout, &buf[..n]);
                }
            })
            .map_err(io_at("start a thread for", log_path))?;
        Ok(Terminal {
            secondary: Arc::new(secondary),
            output,
        })
    }

    /// Waits for the output once the program's copies of the secondary side are closed.
    fn finish(self) {
        drop(self.secondary);
        let _ = self.output.join();
    }
}

/// The `ctl` FIFO and the thread that turns its bytes into signals.
struct Control {
    stop: Arc<AtomicBool>,
    /// Our own write end: a 0 byte wakes the thread when it must stop.
    waker: fs::File,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Control {
    fn serve(c: &Container, control: RunControl) -> Result<Control, ContainerError> {
        let path = c.dir.join("ctl");
        let _ = fs::remove_file(&path);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_at("create", &path)(e.into()))?;
        // Read and write: the FIFO never reports end of file while we hold it.
        let fifo = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_at("open", &path))?;
        let waker = fifo.try_clone().map_err(io_at("open", &path))?;
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-ctl".into())
            .spawn(move || {
                let mut fifo = fifo;
                let mut buf = [0u8; 64];
                loop {
                    match fifo.read(&mut buf) {
                        Ok(n) => {
                            for &sig in buf[..n].iter().filter(|s| (1..=64).contains(*s)) {
                                control.signal(i32::from(sig));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                }
            })
            .map_err(io_at("start a thread for", &path))?;
        Ok(Control {
            stop,
            waker,
            thread: Some(thread),
        })
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.write_all(&[0]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
