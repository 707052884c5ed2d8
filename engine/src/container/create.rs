//! A new container's config from its image and the caller's settings (docker's `create`).

use time::OffsetDateTime;

use super::{Config, Containers, LayerRef, SuperviseError};
use crate::build::users::{home_dir, resolve_owner, UserError};
use crate::rootfs::LayerView;
use crate::store::{Store, StoreError};

/// What the caller asks of a new container; unset fields come from the image.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The image as the user named it.
    pub image: String,
    pub name: Option<String>,
    /// Replaces the image's ENTRYPOINT (`Some(empty)` clears it).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD when not empty.
    pub command: Vec<String>,
    /// `K=V` entries applied over the image's environment, in order.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    /// `none` or `host`.
    pub network: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub auto_remove: bool,
    pub memory: u64,
    pub pids: u32,
    /// `HOST:TARGET[:ro]` bind mounts.
    pub binds: Vec<String>,
    /// Bytes the container may write (`None`: no limit).
    pub disk: Option<u64>,
    /// Bytes of log kept (`None`: all).
    pub log_limit: Option<u64>,
    /// Only the WASI sandbox may run it.
    pub wasi_only: bool,
    /// What the caller asked beyond kiln's defaults; [`make_config`] refuses all of it.
    pub privileges: Privileges,
}

/// What a caller may ask of a container beyond kiln's defaults (docker's `--privileged`,
/// `--cap-add`, `--device`, host namespaces, ...). kiln refuses every one of them, clearly,
/// rather than accept and ignore it: a container gets Docker's default capabilities, kiln's
/// seccomp filter, no_new_privs, a minimal `/dev` and namespaces of its own, always. Each edge
/// fills this from its flags or its request; [`make_config`] checks it first.
#[derive(Debug, Clone, Default)]
pub struct Privileges {
    /// `--privileged`.
    pub privileged: bool,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--device` (host paths).
    pub devices: Vec<String>,
    /// `--security-opt`.
    pub security_opt: Vec<String>,
    /// `--pid`, `--ipc`, `--userns`, `--uts` as given (an empty value is the default).
    pub namespaces: Vec<(&'static str, String)>,
    /// `-p` / `--publish`.
    pub publish: Vec<String>,
    /// `-P` / `--publish-all`.
    pub publish_all: bool,
    /// `--mount` (docker's long form of `-v`), as given.
    pub mounts: Vec<String>,
}

/// Why kiln refuses what a caller asked of a container ([`Privileges`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `--privileged`.
    #[error("--privileged is refused: kiln never gives a container more than Docker's default capabilities")]
    Privileged,
    /// `--cap-add`.
    #[error("--cap-add {0} is refused: kiln never gives a container more than Docker's default capabilities")]
    CapAdd(String),
    /// `--cap-drop`.
    #[error("--cap-drop is not supported yet")]
    CapDrop,
    /// `--device`.
    #[error("--device {0} is refused: a container sees only kiln's own minimal /dev")]
    Device(String),
    /// A `--security-opt` other than `no-new-privileges`.
    #[error("--security-opt {0} is refused: kiln always runs a container with no-new-privileges, its seccomp filter and Docker's default capabilities")]
    SecurityOpt(String),
    /// A host (or another container's) namespace.
    #[error("--{flag}={mode} is refused: a container never shares a namespace with the host or another container")]
    Namespace {
        /// `pid`, `ipc`, `userns`, `uts`.
        flag: &'static str,
        /// What was asked.
        mode: String,
    },
    /// `-p`, `-P`.
    #[error("published ports (-p, -P) are not supported yet")]
    Publish,
    /// `--mount`.
    #[error("--mount is not supported yet; use -v HOST:TARGET[:ro]")]
    Mount,
}

impl Privileges {
    /// The first thing asked that kiln refuses, if any.
    pub fn check(&self) -> Result<(), Refusal> {
        if self.privileged {
            return Err(Refusal::Privileged);
        }
        if let Some(c) = self.cap_add.first() {
            return Err(Refusal::CapAdd(c.clone()));
        }
        if !self.cap_drop.is_empty() {
            return Err(Refusal::CapDrop);
        }
        if let Some(d) = self.devices.first() {
            return Err(Refusal::Device(d.clone()));
        }
        // kiln always sets no_new_privs: asking for it asks for nothing more.
        if let Some(o) = self.security_opt.iter().find(|o| {
            !matches!(
                o.as_str(),
                "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
            )
        }) {
            return Err(Refusal::SecurityOpt(o.clone()));
        }
        for (flag, mode) in &self.namespaces {
            // The defaults, as docker names them: a namespace of the container's own.
            let default =
                matches!(mode.as_str(), "" | "private") || (*flag == "ipc" && mode == "shareable");
            if !default {
                return Err(Refusal::Namespace {
                    flag,
                    mode: mode.clone(),
                });
            }
        }
        if !self.publish.is_empty() || self.publish_all {
            return Err(Refusal::Publish);
        }
        if !self.mounts.is_empty() {
            return Err(Refusal::Mount);
        }
        Ok(())
    }
}

/// Why a container cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The image is not in the store.
    #[error("Unable to find image '{image}' locally: {source}")]
    NoImage {
        image: String,
        #[source]
        source: StoreError,
    },
    /// Neither the caller nor the image gives a command.
    #[error("no command specified")]
    NoCommand,
    /// A relative working directory.
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    BadWorkdir(String),
    /// A bind mount that cannot be used.
    #[error("{0}")]
    BadBind(String),
    /// The caller asked for more than kiln gives a container.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The user is not in the image.
    #[error(transparent)]
    User(#[from] UserError),
    /// The image's layers could not be prepared.
    #[error(transparent)]
    Layers(#[from] SuperviseError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A layer folder could not be opened.
    #[error("open the image's layers: {0}")]
    Open(std::io::Error),
}

impl CreateError {
    /// Whether the caller's input caused it.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::NoImage { .. }
                | Self::NoCommand
                | Self::BadWorkdir(_)
                | Self::BadBind(_)
                | Self::Refused(_)
                | Self::User(_)
        )
    }
}

/// The PATH a container gets when its image sets none (docker's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The config of a new container: the image's ENTRYPOINT, CMD, ENV, WORKDIR and USER with the
/// caller's settings applied as docker applies them; user and HOME from the image's passwd.
pub fn make_config(store: &Store, opts: &CreateOptions) -> Result<Config, CreateError> {
    opts.privileges.check()?;
    let image = store
        .resolve(&opts.image)
        .map_err(|source| CreateError::NoImage {
            image: opts.image.clone(),
            source,
        })?;
    let ic = &image.config.config;
    let layers: Vec<LayerRef> = image
        .config
        .rootfs
        .diff_ids
        .iter()
        .zip(&image.manifest.layers)
        .map(|(diff_id, desc)| LayerRef {
            diff_id: *diff_id,
            digest: desc.digest,
        })
        .collect();
    let (entrypoint, cmd) = match &opts.entrypoint {
        Some(e) => (
            e.iter().filter(|a| !a.is_empty()).cloned().collect(),
            opts.command.clone(),
        ),
        None if !opts.command.is_empty() => (ic.entrypoint.clone(), opts.command.clone()),
        None => (ic.entrypoint.clone(), ic.cmd.clone()),
    };
    let mut argv: Vec<String> = entrypoint.clone();
    argv.extend(cmd.iter().cloned());
    let Some((path, rest)) = argv.split_first() else {
        return Err(CreateError::NoCommand);
    };
    let id = Containers::new_id();
    let hostname = opts
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| id[..12].to_owned());

    let _lease = store.lease()?;
    let lowers = super::snapshots(store, &layers)?;
    let view = LayerView::new(
        lowers
            .iter()
            .map(|p| cap_std::fs::Dir::open_ambient_dir(p, cap_std::ambient_authority()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CreateError::Open)?,
    );
    let user = opts
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| ic.user.clone());
    let (uid, gid) = if user.is_empty() {
        (0, 0)
    } else {
        resolve_owner(&user, &view)?
    };

    let mut env = Env::default();
    for e in ic.env.iter().chain(&opts.env) {
        env.set(e);
    }
    if !env.has("PATH") {
        env.set(DEFAULT_PATH);
    }
    let home = home_dir(uid, &view)?;
    for v in &opts.binds {
        super::parse_bind(v).map_err(CreateError::BadBind)?;
    }
    let working_dir = match opts.workdir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) if !w.starts_with('/') => return Err(CreateError::BadWorkdir(w.to_owned())),
        Some(w) => w.to_owned(),
        None if ic.working_dir.is_empty() => "/".to_owned(),
        None => ic.working_dir.clone(),
    };
    Ok(Config {
        id,
        name: opts.name.clone().unwrap_or_default(),
        image: opts.image.clone(),
        image_id: image.id(),
        manifest_digest: image.manifest_digest,
        created: OffsetDateTime::now_utc(),
        path: path.clone(),
        args: rest.to_vec(),
        entrypoint,
        cmd,
        env: env.0,
        home,
        working_dir,
        user,
        uid,
        gid,
        hostname,
        network: opts.network.clone(),
        tty: opts.tty,
        open_stdin: opts.open_stdin,
        auto_remove: opts.auto_remove,
        memory: opts.memory,
        pids: opts.pids,
        layers,
        labels: ic.labels.clone(),
        stop_signal: ic.stop_signal.clone(),
        binds: opts.binds.clone(),
        disk: opts.disk,
        wasi_only: opts.wasi_only,
        log_limit: opts.log_limit,
    })
}

/// An environment in order, later settings replacing earlier ones in place.
#[derive(Default)]
struct Env(Vec<String>);

impl Env {
    fn key(e: &str) -> &str {
        e.split_once('=').map_or(e, |(k, _)| k)
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|e| Self::key(e) == key)
    }

    fn set(&mut self, entry: &str) {
        let key = Self::key(entry);
        match self.0.iter_mut().find(|e| Self::key(e) == key) {
            Some(e) => *e = entry.to_owned(),
            None => self.0.push(entry.to_owned()),
        }
    }
}
