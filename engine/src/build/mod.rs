//! The builder: walks the plan stage by stage, asks the cache for every step, runs the steps
//! that missed, and commits the target stage's image to the store.
//!
//! Every step has a cache key (see [`crate::cache`]) chained from its stage's base image, so a
//! change at line N misses from N down and nothing above. A step's result is its history entry
//! (with the time it was first built) and, for COPY/ADD/WORKDIR/RUN, a layer; metadata steps are
//! replayed from the Dockerfile, which is why a fully cached rebuild yields the same image ID.
//!
//! The builder never executes a process itself: RUN goes to an [`Executor`], which knows nothing
//! about Dockerfiles.

pub mod plan;
pub mod state;
pub mod users;

mod dispatch;
mod mounts;
pub mod remote_cache;

pub use mounts::prune_cache_mounts;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::context::{Context, ContextError};
use crate::copy::CopyError;
use crate::dockerfile::ParseError;
use crate::layer::LayerError;
use crate::reference::ImageRef;
use crate::rootfs::RootfsError;
use crate::store::StoreError;

pub use dispatch::{apply_changes, apply_changes_to, build};

pub use users::UserError;

/// Network access for build steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Loopback only.
    #[default]
    None,
    /// The host's network.
    Host,
}

/// What to build and how.
pub struct BuildRequest<'a> {
    /// The Dockerfile's text.
    pub dockerfile: &'a str,
    /// Its name for messages (`Dockerfile`, `build/Dockerfile.dev`, `-`).
    pub dockerfile_name: &'a str,
    /// The context.
    pub context: &'a Context,
    /// Identifies this context + Dockerfile for cache-miss explanations (a path, or `-`).
    pub slot_prefix: String,
    /// Names for the result.
    pub tags: Vec<ImageRef>,
    /// `--build-arg` values, resolved.
    pub build_args: crate::dockerfile::scope::BuildArgs,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform`: the platform to build for (`None`: this machine's). kiln does not emulate:
    /// another platform builds only when every stage's image is of it, and a Linux program of
    /// it cannot run here.
    pub platform: Option<crate::registry::PlatformSpec>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`: the stages (by name or number) whose steps ignore the cache.
    pub no_cache_filter: Vec<String>,
    /// `--network`.
    pub network: Network,
    /// `--add-host` lines for the `/etc/hosts` of RUN steps (`IP\tNAME`, see [`host_line`]).
    pub extra_hosts: Vec<String>,
    /// `--label` values, set on the result.
    pub labels: BTreeMap<String, String>,
    /// `SOURCE_DATE_EPOCH`: clamps file times and history/config times.
    pub epoch: Option<i64>,
    /// Where the context's stat cache lives (`None`: don't keep one).
    pub stat_cache: Option<PathBuf>,
    /// Store the result with layers compressed this way (`None`: uncompressed).
    pub compression: Option<crate::layer::Compression>,
    /// Limits per RUN step.
    pub limits: crate::sandbox::Limits,
    /// Which sandboxes RUN may use.
    pub isolation: crate::sandbox::Isolation,
    /// The executors (shared across builds, so compiled modules stay loaded).
    pub sandbox: &'a crate::sandbox::Sandbox,
    /// Ends the build early when cancelled (a server's client went away).
    pub cancel: Option<&'a Cancel>,
    /// When FROM, `COPY --from` and `RUN --mount=from=` pull their images (`--pull`).
    pub pull: crate::registry::PullPolicy,
    /// The registry client images are pulled with (`None`: the store only).
    pub registry: Option<&'a crate::registry::Client>,
    /// Most bytes pulls may add to the store (`None`: no limit).
    pub pull_room: Option<u64>,
    /// `--cache-from`: caches to take step results from, besides the store's own.
    pub cache_from: Vec<remote_cache::CacheLocation>,
    /// `--cache-to`: where to write the build's step results.
    pub cache_to: Vec<remote_cache::CacheExport>,
    /// Names the result will be pushed as (`--push`): each layer of the target stage goes to
    /// their repositories as soon as it is made, while the build goes on.
    pub push_as_made: Vec<ImageRef>,
}

/// An `/etc/hosts` line for docker's `--add-host NAME:IP` (or `NAME=IP`, needed for IPv6).
pub fn host_line(spec: &str) -> Result<String, String> {
    let (name, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .ok_or_else(|| format!("invalid --add-host {spec:?}: expected NAME:IP"))?;
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid_name {
        return Err(format!(
            "invalid --add-host {spec:?}: {name:?} is not a host name"
        ));
    }
    if ip == "host-gateway" {
        return Err(format!(
            "--add-host {spec:?}: kiln has no host gateway (a step shares the host's network with --network=host, or has none)"
        ));
    }
    let ip: std::net::IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("invalid --add-host {spec:?}: {ip:?} is not an IP address"))?;
    Ok(format!("{ip}\t{name}"))
}

/// Applies docker's `--ulimit NAME=SOFT[:HARD]` to the limits of RUN steps: `nofile` (open
/// files per process) and `nproc` (processes) are kiln's own limits; kiln gives one value, the
/// hard one. Others are refused.
pub fn apply_ulimit(limits: &mut crate::sandbox::Limits, spec: &str) -> Result<(), String> {
    let bad = || format!("invalid --ulimit {spec:?}: expected NAME=SOFT[:HARD]");
    let (name, values) = spec.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = values.split_once(':').unwrap_or((values, values));
    let soft: u32 = soft.parse().map_err(|_| bad())?;
    let hard: u32 = hard.parse().map_err(|_| bad())?;
    if soft > hard {
        return Err(format!(
            "--ulimit {spec:?}: the soft limit is above the hard one"
        ));
    }
    match name {
        "nofile" => limits.files = hard.max(4),
        "nproc" => limits.pids = hard.max(1),
        other => {
            return Err(format!(
                "--ulimit {other}: kiln sets nofile and nproc for RUN steps (and keeps core at 0); it does not set {other}"
            ))
        }
    }
    Ok(())
}

/// Cancels a running build from another thread: the RUN step in progress is killed and no
/// further step starts; the build then fails with [`BuildError::Cancelled`].
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    inner: std::sync::Arc<std::sync::Mutex<CancelState>>,
}

#[derive(Debug, Default)]
struct CancelState {
    cancelled: bool,
    running: Option<crate::sandbox::RunControl>,
}

impl Cancel {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the build: kills the running step, if any.
    pub fn cancel(&self) {
        if let Ok(mut s) = self.inner.lock() {
            s.cancelled = true;
            if let Some(c) = s.running.take() {
                c.signal(libc::SIGKILL);
            }
        }
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.lock().map_or(true, |s| s.cancelled)
    }

    /// The control of a step about to run, or `None` when the build is cancelled.
    pub(crate) fn step(&self) -> Option<crate::sandbox::RunControl> {
        let mut s = self.inner.lock().ok()?;
        if s.cancelled {
            return None;
        }
        let c = crate::sandbox::RunControl::new();
        s.running = Some(c.clone());
        Some(c)
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The image ID (the config's digest).
    pub image_id: crate::digest::Digest,
    /// The manifest's digest.
    pub manifest: crate::digest::Digest,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error("{file}:{}: {}", .error.line, .error.kind)]
    Parse {
        /// The Dockerfile's name.
        file: String,
        /// The parse error (its text is this error's: it is not repeated as a cause).
        error: ParseError,
    },
    /// An instruction failed for a reason in the input.
    #[error("{file}:{line}: {message}")]
    Step {
        /// The Dockerfile's name.
        file: String,
        /// The instruction's line.
        line: usize,
        /// What went wrong.
        message: String,
    },
    /// A RUN step's program failed.
    #[error("{file}:{line}: {message}")]
    Exit {
        /// The Dockerfile's name.
        file: String,
        /// The instruction's line.
        line: usize,
        /// What went wrong.
        message: String,
        /// The program's exit status.
        code: i32,
    },
    /// A sandbox could not be set up.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// The context failed.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing or reading a layer failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// Copying failed for an internal reason.
    #[error(transparent)]
    Copy(CopyError),
    /// Reading a rootfs failed.
    #[error(transparent)]
    Rootfs(RootfsError),
    /// The cache could not be written.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// The build was cancelled.
    #[error("the build was cancelled")]
    Cancelled,
    /// `--cache-to` failed (the image was built).
    #[error("export the build cache to {to}: {why}")]
    CacheExport {
        /// Where to.
        to: String,
        /// What went wrong.
        why: String,
    },
    /// A file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl BuildError {
    /// Whether the user's input caused this (exit code 1) rather than kiln or the machine.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Parse { .. }
            | Self::Step { .. }
            | Self::Exit { .. }
            | Self::CacheExport { .. } => true,
            Self::Context(e) => e.is_user_error(),
            Self::Store(e) => e.is_user_error(),
            Self::Layer(_) => true,
            _ => false,
        }
    }
}
