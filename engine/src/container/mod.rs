//! Containers: a writable upper over an image's layers, with a config, a state and a log, kept
//! in the store so that they outlive the kiln process that runs them.
//!
//! # Layout
//!
//! ```text
//! KILN_ROOT/kiln/containers/<64-hex id>/
//!   config.json     what to run (written once, at create)
//!   state.json      created | running | exited, with times and the exit code (temp -> rename)
//!   upper/          the container's writes, in the layer-diff format (so `commit` is a diff)
//!   log.json        output, one JSON object per chunk, as docker's json-file driver writes it
//!   ctl             a FIFO: each byte written is a signal for the main program
//! ```
//!
//! The folder itself is held (`flock`) by the process that supervises the running container.
//!
//! # Crashes
//! A running container is supervised by one kiln process (`kiln run` in the foreground, or a
//! detached `kiln` for `run -d` and `start`), which holds the folder's lock for as long as the program
//! runs. Its sandbox dies with it (the native init has `PR_SET_PDEATHSIG`, WebAssembly runs
//! in-process), so a state that says running while nobody holds the lock means the supervisor
//! was killed: readers report the container as exited with status 137 and record that.

mod commit;
mod create;
mod names;
mod supervise;

pub use commit::{commit, CommitError, CommitOptions};
pub use create::{make_config, CreateError, CreateOptions, Privileges, Refusal};
pub use supervise::{snapshots, supervise, Attach, Remote, SuperviseError};

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest::{DiffId, Digest};
use crate::store::Store;

/// The longest config or state file read.
const MAX_JSON: u64 = 4 << 20;

/// Errors of the container store.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No container has that id, id prefix or name.
    #[error("No such container: {0}")]
    NotFound(String),
    /// An id prefix that matches several containers.
    #[error("multiple containers match {0:?}; give more of the id")]
    Ambiguous(String),
    /// The name is taken.
    #[error("the container name \"/{name}\" is already in use by container \"{id}\"; remove (or rename) that container to reuse the name")]
    NameInUse { name: String, id: String },
    /// A name docker would refuse.
    #[error("invalid container name ({0:?}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    /// The operation needs a stopped container.
    #[error("container {0} is running: stop it first, or use -f")]
    Running(String),
    /// The operation needs a running container.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// A config or state file that cannot be read.
    #[error("container {id}: damaged {file}: {why}")]
    Damaged {
        id: String,
        file: &'static str,
        why: String,
    },
    /// A host operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ContainerError {
    /// Whether the user's input caused it (exit code 1 rather than 2).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::NotFound(_)
                | Self::Ambiguous(_)
                | Self::NameInUse { .. }
                | Self::BadName(_)
                | Self::Running(_)
                | Self::NotRunning(_)
        )
    }
}

fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Io { op, path, source }
}

/// An image layer a container runs over.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRef {
    pub diff_id: DiffId,
    pub digest: Digest,
}

/// What a container runs, fixed when it is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Config {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID (config digest).
    pub image_id: Digest,
    /// The image manifest's digest (a GC root while the container exists).
    pub manifest_digest: Digest,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// The program and its arguments (docker's `Path` and `Args`).
    pub path: String,
    pub args: Vec<String>,
    /// The image's `Entrypoint` and `Cmd` as they apply to this container.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The image's environment with `-e` and `--env-file` applied; the program also gets
    /// `HOSTNAME`, and `HOME` unless this sets it.
    pub env: Vec<String>,
    /// The user's home folder in the image's passwd (`/` without an entry).
    #[serde(default)]
    pub home: String,
    pub working_dir: String,
    /// `user[:group]` as given (empty: root).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    /// `none` or `host`.
    pub network: String,
    pub tty: bool,
    pub open_stdin: bool,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Memory limit in bytes, pids limit.
    pub memory: u64,
    pub pids: u32,
    pub layers: Vec<LayerRef>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub stop_signal: String,
    /// Bind mounts, docker's `HOST:TARGET[:ro]` form (`run -v`).
    #[serde(default)]
    pub binds: Vec<String>,
    /// Bytes the container may write (`None`: no limit; a shared server's tenant gets the
    /// room its store has left).
    #[serde(default)]
    pub disk: Option<u64>,
    /// Bytes of log kept (`None`: all of it).
    #[serde(default)]
    pub log_limit: Option<u64>,
    /// Only the WASI sandbox may run it (a server started with `--isolation wasi`).
    #[serde(default)]
    pub wasi_only: bool,
}

/// Parses `HOST:TARGET[:ro|:rw]`: both absolute, the host folder existing (docker's `-v` with
/// a host path; named volumes are not supported).
pub fn parse_bind(spec: &str) -> Result<crate::sandbox::Bind, String> {
    let mut parts = spec.split(':');
    let (host, target) = match (parts.next(), parts.next()) {
        (Some(h), Some(t)) if !h.is_empty() && !t.is_empty() => (h, t),
        _ => {
            return Err(format!(
                "invalid volume specification {spec:?}: use HOST:TARGET[:ro]"
            ))
        }
    };
    let readonly = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(o) => {
            return Err(format!(
                "invalid volume option {o:?} in {spec:?}: use ro or rw"
            ))
        }
    };
    if parts.next().is_some() {
        return Err(format!("invalid volume specification {spec:?}"));
    }
    if !host.starts_with('/') {
        return Err(format!(
            "invalid volume {spec:?}: {host:?} is not an absolute host path (named volumes are not supported)"
        ));
    }
    if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
        return Err(format!(
            "invalid volume {spec:?}: the target must be an absolute path without .."
        ));
    }
    let meta = fs::metadata(host).map_err(|e| format!("volume {spec:?}: {host}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!(
            "volume {spec:?}: {host} is not a folder (kiln binds folders only)"
        ));
    }
    Ok(crate::sandbox::Bind {
        host: PathBuf::from(host),
        target: target.to_owned(),
        readonly,
    })
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// A container's state (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    pub status: Status,
    /// The supervising kiln process while running.
    pub pid: u32,
    pub exit_code: i32,
    /// Why kiln could not run it, or why it ended without an exit code.
    pub error: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub finished_at: Option<OffsetDateTime>,
}

/// A container on disk.
#[derive(Debug, Clone)]
pub struct Container {
    pub config: Config,
    pub state: State,
    dir: PathBuf,
}

impl Container {
    /// The container's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder holding its writes.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.json")
    }

    /// The first 12 hex digits of the id.
    pub fn short_id(&self) -> &str {
        self.config.id.get(..12).unwrap_or(&self.config.id)
    }

    /// Whether its state says it runs.
    pub fn is_running(&self) -> bool {
        self.state.status == Status::Running
    }

    /// Whether a kiln process supervises it right now (it holds the container until it has
    /// written the final state, so this outlasts [`Container::is_running`] by a moment).
    pub fn is_supervised(&self) -> bool {
        supervised(&self.dir)
    }

    /// Writes `state` atomically.
    pub fn save_state(&mut self, state: State) -> Result<(), ContainerError> {
        write_json(&self.dir, "state.json", &state)?;
        self.state = state;
        Ok(())
    }

    /// Asks the supervisor to deliver `sig` to the main program; [`ContainerError::NotRunning`]
    /// when nobody supervises it.
    pub fn signal(&self, sig: i32) -> Result<(), ContainerError> {
        use std::os::unix::fs::OpenOptionsExt;
        let byte = u8::try_from(sig)
            .ok()
            .filter(|b| (1..=64).contains(b))
            .ok_or_else(|| ContainerError::NotRunning(self.config.id.clone()))?;
        let path = self.dir.join("ctl");
        // O_NONBLOCK: opening a FIFO without a reader fails (ENXIO) instead of waiting.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|_| ContainerError::NotRunning(self.short_id().to_owned()))?;
        f.write_all(&[byte])
            .map_err(|_| ContainerError::NotRunning(self.short_id().to_owned()))
    }
}

/// The containers of a store.
#[derive(Debug)]
pub struct Containers {
    dir: PathBuf,
}

impl Containers {
    /// The containers of `store`.
    pub fn new(store: &Store) -> Result<Self, ContainerError> {
        let dir = store.root().join("kiln/containers");
        crate::fsx::private_dir_all(&dir).map_err(io_at("create", &dir))?;
        Ok(Self { dir })
    }

    fn lock(&self) -> Result<fs::File, ContainerError> {
        let path = self.dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_at("open", &path))?;
        flock(&f, FlockOperation::LockExclusive).map_err(io_at("lock", &path))?;
        Ok(f)
    }

    /// A fresh 64-hex id.
    pub fn new_id() -> String {
        let mut id = [0u8; 32];
        let random = rustix::rand::getrandom(&mut id, rustix::rand::GetRandomFlags::empty());
        if random.ok() != Some(id.len()) {
            let mut seed = [0u8; 20];
            let t = OffsetDateTime::now_utc().unix_timestamp_nanos();
            seed[..16].copy_from_slice(&t.to_le_bytes());
            seed[16..].copy_from_slice(&std::process::id().to_le_bytes());
            id = *blake3::hash(&seed).as_bytes();
        }
        hex::encode(id)
    }

    /// Creates a container: its folder, config and state. An empty name gets a generated one.
    pub fn create(&self, config: Config) -> Result<Container, ContainerError> {
        self.make(config, false).map(|(c, _)| c)
    }

    /// Creates a container that this process runs at once (`kiln run` in the foreground): it
    /// appears already running, held by the returned lock, so its state is written once
    /// rather than twice (a state replaced by a rename also makes ext4 write the new one out).
    pub fn create_running(&self, config: Config) -> Result<(Container, RunLock), ContainerError> {
        let (c, lock) = self.make(config, true)?;
        let lock = lock.ok_or_else(|| ContainerError::Running(c.short_id().to_owned()))?;
        Ok((c, lock))
    }

    fn make(
        &self,
        mut config: Config,
        running: bool,
    ) -> Result<(Container, Option<RunLock>), ContainerError> {
        let _lock = self.lock()?;
        let existing = self.list_unlocked()?;
        if config.name.is_empty() {
            config.name = names::generate(|n| existing.iter().any(|c| c.config.name == n));
        } else {
            check_name(&config.name)?;
            if let Some(c) = existing.iter().find(|c| c.config.name == config.name) {
                return Err(ContainerError::NameInUse {
                    name: config.name,
                    id: c.config.id.clone(),
                });
            }
        }
        let tmp = self.dir.join(format!(".new-{}", config.id));
        let upper = tmp.join("upper");
        fs::create_dir_all(&upper).map_err(io_at("create", &upper))?;
        // The folder is not visible before the rename below: no temporary files inside it.
        write_new_json(&tmp, "config.json", &config)?;
        // The lock is the folder's, so it holds across the rename.
        let held = if running { take_run_lock(&tmp) } else { None };
        let state = match held {
            Some(_) => State {
                status: Status::Running,
                pid: std::process::id(),
                started_at: Some(OffsetDateTime::now_utc()),
                ..State::default()
            },
            None => State::default(),
        };
        write_new_json(&tmp, "state.json", &state)?;
        let dir = self.dir.join(&config.id);
        fs::rename(&tmp, &dir).map_err(io_at("create", &dir))?;
        Ok((Container { config, state, dir }, held))
    }

    fn load(&self, id: &str) -> Result<Container, ContainerError> {
        let dir = self.dir.join(id);
        let config: Config = read_json(&dir, id, "config.json")?;
        if config.id != id {
            return Err(ContainerError::Damaged {
                id: id.to_owned(),
                file: "config.json",
                why: format!("it names another container ({:?})", config.id),
            });
        }
        let state: State = read_json(&dir, id, "state.json")?;
        let mut c = Container { config, state, dir };
        if c.state.status == Status::Running {
            // Holding the lock proves no supervisor runs it; the state is read again under
            // it, since a supervisor that just finished wrote its own.
            if let Some(_held) = take_run_lock(&c.dir) {
                c.state = read_json(&c.dir, id, "state.json")?;
                if c.state.status == Status::Running {
                    // The supervisor died (kill -9): record what happened to its sandbox.
                    let state = State {
                        status: Status::Exited,
                        pid: 0,
                        exit_code: 137,
                        error: "the kiln process running the container was killed".into(),
                        started_at: c.state.started_at,
                        finished_at: Some(OffsetDateTime::now_utc()),
                    };
                    let _ = c.save_state(state);
                }
            }
        }
        Ok(c)
    }

    fn ids(&self) -> Result<Vec<String>, ContainerError> {
        let mut ids = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io_at("read", &self.dir))? {
            let e = e.map_err(io_at("read", &self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                ids.push(name);
            }
        }
        Ok(ids)
    }

    fn list_unlocked(&self) -> Result<Vec<Container>, ContainerError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            match self.load(&id) {
                Ok(c) => out.push(c),
                // Removed meanwhile.
                Err(ContainerError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.config.created));
        Ok(out)
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>, ContainerError> {
        self.list_unlocked()
    }

    /// The container with this name, full id or unique id prefix.
    pub fn get(&self, key: &str) -> Result<Container, ContainerError> {
        let key = key.strip_prefix('/').unwrap_or(key);
        let all = self.list_unlocked()?;
        if let Some(c) = all
            .iter()
            .find(|c| c.config.id == key || c.config.name == key)
        {
            return Ok(c.clone());
        }
        let hits: Vec<&Container> = if key.is_empty() {
            Vec::new()
        } else {
            all.iter()
                .filter(|c| c.config.id.starts_with(key))
                .collect()
        };
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ContainerError::NotFound(key.to_owned())),
            _ => Err(ContainerError::Ambiguous(key.to_owned())),
        }
    }

    /// Removes a stopped container and everything it wrote.
    pub fn remove(&self, c: &Container) -> Result<(), ContainerError> {
        let _lock = self.lock()?;
        if supervised(&c.dir) {
            return Err(ContainerError::Running(c.short_id().to_owned()));
        }
        let doomed = self.dir.join(format!(".rm-{}", c.config.id));
        match fs::rename(&c.dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at("remove", &c.dir)(e)),
        }
        // The usual folder (an upper the program did not write to, the files of the layout)
        // goes with a call per entry; anything else with a walk of the tree.
        let known = ["upper", "config.json", "state.json", "log.json", "ctl"];
        let quick = known.iter().all(|name| {
            let path = doomed.join(name);
            let gone = if *name == "upper" {
                fs::remove_dir(&path)
            } else {
                fs::remove_file(&path)
            };
            gone.is_ok() || gone.is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        }) && fs::remove_dir(&doomed).is_ok();
        if quick {
            return Ok(());
        }
        // What the container wrote may be of any depth: removed iteratively.
        let parent = doomed.parent().unwrap_or(&self.dir);
        let name = doomed.file_name().unwrap_or_default().as_encoded_bytes();
        rustix::fs::open(parent, crate::fsx::DIR_FLAGS, rustix::fs::Mode::empty())
            .map_err(io::Error::from)
            .and_then(|d| crate::fsx::remove_all_at(std::os::fd::AsFd::as_fd(&d), name))
            .map_err(io_at("remove", &doomed))
    }

    /// Layers and manifests that containers use (roots for garbage collection).
    pub fn gc_roots(&self) -> Result<crate::store::GcRoots, ContainerError> {
        let mut roots = crate::store::GcRoots::default();
        for c in self.list_unlocked()? {
            roots.blobs.insert(c.config.manifest_digest);
            roots.blobs.insert(c.config.image_id);
            for l in &c.config.layers {
                roots.add_layer(&l.diff_id);
                roots.blobs.insert(l.digest);
            }
        }
        Ok(roots)
    }
}

/// Docker's rule for container names.
fn check_name(name: &str) -> Result<(), ContainerError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(ContainerError::BadName(name.to_owned()))
    }
}

fn flock(f: &fs::File, op: FlockOperation) -> io::Result<()> {
    loop {
        match rustix::fs::flock(f, op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a supervisor holds the container's folder locked.
fn supervised(dir: &Path) -> bool {
    let Ok(f) = fs::File::open(dir) else {
        return false;
    };
    flock(&f, FlockOperation::NonBlockingLockShared).is_err()
}

/// A container's folder held by the process that runs it (see "Crashes" above); released
/// when dropped.
#[derive(Debug)]
pub struct RunLock {
    _folder: fs::File,
}

/// The container folder's lock, exclusively, unless a supervisor holds it.
pub(crate) fn take_run_lock(dir: &Path) -> Option<RunLock> {
    let f = fs::File::open(dir).ok()?;
    flock(&f, FlockOperation::NonBlockingLockExclusive)
        .ok()
        .map(|()| RunLock { _folder: f })
}

fn encode_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, ContainerError> {
    serde_json::to_vec_pretty(value).map_err(|e| ContainerError::Io {
        op: "encode",
        path: path.to_owned(),
        source: io::Error::other(e),
    })
}

/// Writes `name` in a folder that nobody else sees yet.
fn write_new_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), ContainerError> {
    let path = dir.join(name);
    fs::write(&path, encode_json(&path, value)?).map_err(io_at("write", &path))
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), ContainerError> {
    let bytes = encode_json(&dir.join(name), value)?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io_at("write", &tmp))?;
    f.write_all(&bytes).map_err(io_at("write", &tmp))?;
    drop(f);
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(io_at("write", &path))
}

fn read_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    id: &str,
    name: &'static str,
) -> Result<T, ContainerError> {
    let path = dir.join(name);
    let mut text = Vec::new();
    fs::File::open(&path)
        .and_then(|f| f.take(MAX_JSON).read_to_end(&mut text))
        .map_err(io_at("read", &path))?;
    serde_json::from_slice(&text).map_err(|e| ContainerError::Damaged {
        id: id.to_owned(),
        file: name,
        why: e.to_string(),
    })
}

/// A signal name or number kiln does not know.
#[derive(Debug, thiserror::Error)]
#[error("invalid signal: {0}")]
pub struct BadSignal(pub String);

/// A signal by name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(s: &str) -> Result<i32, BadSignal> {
    const NAMES: &[(&str, i32)] = &[
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("PIPE", libc::SIGPIPE),
        ("ALRM", libc::SIGALRM),
        ("TERM", libc::SIGTERM),
        ("CONT", libc::SIGCONT),
        ("STOP", libc::SIGSTOP),
        ("WINCH", libc::SIGWINCH),
    ];
    let t = s.trim().to_ascii_uppercase();
    let name = t.strip_prefix("SIG").unwrap_or(&t);
    if let Ok(n) = name.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| BadSignal(s.to_owned()))
}

/// Waits until nothing supervises `id` any more; false on timeout.
pub fn wait_stopped(containers: &Containers, id: &str, timeout: Duration) -> bool {
    // A timeout past the clock's end waits for as long as it takes.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        match containers.get(id) {
            Ok(c) if c.is_supervised() => {}
            _ => return true,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
