//! `RUN --mount`: what a step gets besides its rootfs, as bind mounts of host folders.
//!
//! - `type=cache`: a folder of the store (`kiln/cache-mounts/<sha256 of the id>`) that outlives
//!   the build and is shared by every step and build that names the same id (the target by
//!   default). Made on first use with `mode` (0755), `uid` and `gid` (0). `sharing=shared`
//!   (the default) lets every user in at once, `locked` one at a time, and `private` gives a
//!   step that finds it in use a fresh, temporary folder. Its contents are not part of the
//!   step's cache key, as with BuildKit. Its users hold a `flock` on it (shared or exclusive);
//!   `kiln prune --all` removes the ones nobody holds.
//! - `type=tmpfs`: an empty folder of the store's scratch space, removed after the step.
//! - `type=bind`: a folder of the context (the default), of another stage or of an image
//!   (`from=`, pulled when missing), copied into a folder of the store's scratch space for the
//!   step: read-only by default; with `rw` the step's writes land in that copy and go with it.
//!   Its contents are part of the step's cache key. Binding a single file is refused.
//!
//! The targets are resolved inside the rootfs. The folders made in the step's (fresh) upper to
//! mount on, and the parents copied up for them, are removed afterwards when the step left them
//! empty and did not change their owner or mode: they do not land in its layer. Secrets and
//! ssh agents are refused with a clear message.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use cap_std::fs::Dir;
use rustix::fs::FlockOperation;
use sha2::{Digest as _, Sha256};

use super::BuildError;
use crate::dockerfile::mount::{CacheSharing, Mount, MountType};
use crate::rootfs::{ContainerPath, Creds, Overlay, Shims};
use crate::sandbox::Bind;
use crate::store::Store;

/// A mount a step asked for, checked.
#[derive(Debug, Clone)]
pub(super) struct RunMount {
    kind: Kind,
    target: ContainerPath,
    readonly: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    Cache {
        id: String,
        sharing: CacheSharing,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Tmpfs,
    Bind {
        /// `from=`: a stage or image (`None`: the context).
        from: Option<String>,
        /// `source=`: the folder within it.
        source: String,
        /// The copy made for the step, once made.
        host: Option<PathBuf>,
    },
}

impl RunMount {
    /// Checks a resolved `--mount` (its target relative to `workdir` when not absolute); the
    /// error is the message for the user.
    pub(super) fn new(m: &Mount, workdir: &ContainerPath) -> Result<RunMount, String> {
        if !matches!(
            m.kind,
            MountType::Cache | MountType::Tmpfs | MountType::Bind
        ) {
            return Err(format!(
                "RUN --mount=type={} is not supported by kiln yet (bind, cache and tmpfs are)",
                m.kind
            ));
        }
        let Some(target) = m.target.as_deref() else {
            return Err(format!("RUN --mount=type={}: a target is required", m.kind));
        };
        let target = ContainerPath::resolve(workdir, target);
        if target.is_root() {
            return Err(format!(
                "RUN --mount=type={}: cannot mount on the root folder",
                m.kind
            ));
        }
        let kind = match m.kind {
            MountType::Cache => {
                if m.from.is_some() || m.source.is_some() {
                    return Err(
                        "RUN --mount=type=cache with from= or source= is not supported by kiln yet"
                            .into(),
                    );
                }
                Kind::Cache {
                    id: m.id.clone().unwrap_or_else(|| target.as_str().to_owned()),
                    sharing: m.sharing.unwrap_or(CacheSharing::Shared),
                    mode: m.mode.unwrap_or(0o755),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                }
            }
            MountType::Bind => Kind::Bind {
                from: m.from.clone(),
                source: m.source.clone().unwrap_or_else(|| "/".to_owned()),
                host: None,
            },
            _ => Kind::Tmpfs,
        };
        Ok(RunMount {
            kind,
            target,
            readonly: m.read_only,
        })
    }
}

impl RunMount {
    /// A bind mount's `from=` and `source=`.
    pub(super) fn bind_source(&self) -> Option<(Option<&str>, &str)> {
        match &self.kind {
            Kind::Bind { from, source, .. } => Some((from.as_deref(), source.as_str())),
            _ => None,
        }
    }

    /// A cache mount's `id`, and the mode and owner its folder is made with.
    pub(super) fn cache_id(&self) -> Option<(&str, u32, u32, u32)> {
        match &self.kind {
            Kind::Cache {
                id, mode, uid, gid, ..
            } => Some((id.as_str(), *mode, *uid, *gid)),
            _ => None,
        }
    }

    /// Gives a bind mount the folder made for it.
    pub(super) fn set_bind_host(&mut self, path: PathBuf) {
        if let Kind::Bind { host, .. } = &mut self.kind {
            *host = Some(path);
        }
    }
}

/// The mounts of a running step: what to bind, and what to undo afterwards.
pub(super) struct Mounted {
    pub binds: Vec<Bind>,
    /// Locks on cache folders, held until the step ends.
    _locks: Vec<fs::File>,
    /// Folders that go away with the step (tmpfs, private caches in use elsewhere).
    _scratch: Vec<crate::store::WorkDir>,
    /// The folders that setting up the mounts put in the upper, with their mode and owner,
    /// outermost first.
    made: Vec<(PathBuf, u32, u32, u32)>,
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> BuildError {
    move |source| BuildError::Io { op, source }
}

/// Readies `mounts` for a step over `lowers` + `upper` (host folders, bottom first).
pub(super) fn mount_all(
    store: &Store,
    mounts: &[RunMount],
    lowers: &[PathBuf],
    upper: &std::path::Path,
) -> Result<Mounted, BuildError> {
    let mut out = Mounted {
        binds: Vec::new(),
        _locks: Vec::new(),
        _scratch: Vec::new(),
        made: Vec::new(),
    };
    if mounts.is_empty() {
        return Ok(out);
    }
    let open = |p: &std::path::Path| {
        Dir::open_ambient_dir(p, cap_std::ambient_authority()).map_err(io("open a rootfs folder"))
    };
    let overlay = Overlay::new(
        lowers.iter().map(|p| open(p)).collect::<Result<_, _>>()?,
        open(upper)?,
        Shims::none(),
        Creds { uid: 0, gid: 0 },
    );
    for m in mounts {
        overlay.make_dirs(&m.target).map_err(|e| BuildError::Io {
            op: "make a mount point",
            source: std::io::Error::other(e.to_string()),
        })?;
        let host = match &m.kind {
            Kind::Bind { host, .. } => host.clone().ok_or_else(|| BuildError::Io {
                op: "bind a folder",
                source: std::io::Error::other("the bind mount's copy was not made"),
            })?,
            Kind::Tmpfs => {
                let dir = store.temp_dir()?;
                let path = dir.path().to_path_buf();
                out._scratch.push(dir);
                path
            }
            Kind::Cache {
                id,
                sharing,
                mode,
                uid,
                gid,
            } => {
                let how = match sharing {
                    CacheSharing::Shared => FlockOperation::LockShared,
                    CacheSharing::Locked => FlockOperation::LockExclusive,
                    CacheSharing::Private => FlockOperation::NonBlockingLockExclusive,
                };
                match lock_cache_dir(store, id, *mode, *uid, *gid, how)? {
                    Some((dir, lock)) => {
                        out._locks.push(lock);
                        dir
                    }
                    // Private, and in use: a fresh folder for this step only.
                    None => {
                        let fresh = store.temp_dir()?;
                        let path = fresh.path().to_path_buf();
                        own(&path, *mode, *uid, *gid)?;
                        out._scratch.push(fresh);
                        path
                    }
                }
            }
        };
        out.binds.push(Bind {
            host,
            target: m.target.as_str().to_owned(),
            readonly: m.readonly,
        });
    }
    // The upper was empty: every folder in it now was made for the mounts.
    list_dirs(overlay.upper(), PathBuf::new(), &mut out.made)?;
    Ok(out)
}

/// Every folder below `rel` of `upper`, outermost first, with its mode and owner.
fn list_dirs(
    upper: &Dir,
    rel: PathBuf,
    out: &mut Vec<(PathBuf, u32, u32, u32)>,
) -> Result<(), BuildError> {
    let entries = if rel.as_os_str().is_empty() {
        upper.entries()
    } else {
        upper.read_dir(&rel)
    }
    .map_err(io("list the step's upper"))?;
    for e in entries {
        let e = e.map_err(io("list the step's upper"))?;
        let path = rel.join(e.file_name());
        let meta = upper
            .symlink_metadata(&path)
            .map_err(io("list the step's upper"))?;
        if meta.is_dir() {
            use cap_std::fs::MetadataExt;
            out.push((path.clone(), meta.mode() & 0o7777, meta.uid(), meta.gid()));
            list_dirs(upper, path, out)?;
        }
    }
    Ok(())
}

/// The folder of the store's cache mounts.
fn cache_mounts(store: &Store) -> PathBuf {
    store.root().join("kiln/cache-mounts")
}

/// The cache mount folder for `id` (made on first use), locked `how`; `None` when a
/// non-blocking lock finds it in use.
fn lock_cache_dir(
    store: &Store,
    id: &str,
    mode: u32,
    uid: u32,
    gid: u32,
    how: FlockOperation,
) -> Result<Option<(PathBuf, fs::File)>, BuildError> {
    loop {
        let dir = cache_dir(store, id, mode, uid, gid)?;
        let lock = match fs::File::open(&dir) {
            Ok(f) => f,
            // Pruned meanwhile: make it again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("open a cache mount")(e)),
        };
        match rustix::fs::flock(&lock, how) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(io("lock a cache mount")(e.into())),
        }
        // A prune may have taken it away between the open and the lock.
        let held = rustix::fs::fstat(&lock).map_err(|e| io("lock a cache mount")(e.into()))?;
        match rustix::fs::stat(&dir) {
            Ok(st) if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino) => {
                return Ok(Some((dir, lock)))
            }
            _ => continue,
        }
    }
}

/// Removes the cache mounts that no step holds (`kiln prune --all`); returns how many.
pub fn prune_cache_mounts(store: &Store) -> std::io::Result<usize> {
    let base = cache_mounts(store);
    let entries = match fs::read_dir(&base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(lock) = fs::File::open(&path) else {
            continue;
        };
        if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        // Renamed aside while locked, so that no step mounts it from now on.
        let doomed = base.join(format!(".rm-{}", name.to_string_lossy()));
        fs::rename(&path, &doomed)?;
        // What steps left in it may be of any depth: removed iteratively.
        let base_fd = rustix::fs::open(&base, crate::fsx::DIR_FLAGS, rustix::fs::Mode::empty())?;
        let name = format!(".rm-{}", name.to_string_lossy());
        crate::fsx::remove_all_at(std::os::fd::AsFd::as_fd(&base_fd), name.as_bytes())?;
        removed += 1;
    }
    Ok(removed)
}

/// The cache mount folder for `id`, made on first use.
fn cache_dir(
    store: &Store,
    id: &str,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, BuildError> {
    let dir = cache_path(store, id)?;
    if dir.is_dir() {
        return Ok(dir);
    }
    make_aside(&dir, |path| own(path, mode, uid, gid))?;
    Ok(dir)
}

/// Where the cache mount `id` lives (its parent made).
fn cache_path(store: &Store, id: &str) -> Result<PathBuf, BuildError> {
    let base = cache_mounts(store);
    crate::fsx::private_dir_all(&base).map_err(io("create the cache mount folder"))?;
    Ok(base.join(hex::encode(Sha256::digest(id.as_bytes()))))
}

/// Makes the folder `dir` aside, fills it with `fill` and renames it into place, so that a
/// concurrent step never sees it half set up; returns whether this call made it (false:
/// another step did first).
fn make_aside(
    dir: &std::path::Path,
    fill: impl FnOnce(&std::path::Path) -> Result<(), BuildError>,
) -> Result<bool, BuildError> {
    let base = dir.parent().unwrap_or(std::path::Path::new("."));
    let fresh = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(base)
        .map_err(io("create a cache mount"))?;
    let path = fresh.path().join("d");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(io("create a cache mount"))?;
    fill(&path)?;
    match fs::rename(&path, dir) {
        Ok(()) => Ok(true),
        Err(_) if dir.is_dir() => Ok(false),
        Err(e) => Err(io("create a cache mount")(e)),
    }
}

/// Gives a new cache folder its owner (when this process may: not as an unprivileged user),
/// then its mode (after the owner, which would clear setgid).
fn own(path: &std::path::Path, mode: u32, uid: u32, gid: u32) -> Result<(), BuildError> {
    if crate::layer::host_is_root() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io("set up a cache mount"))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io("set up a cache mount"))
}

impl Mounted {
    /// After the step: removes from `upper` the folders made for the mounts that the step
    /// left empty and with the same mode and owner (innermost first), so that they do not land
    /// in its layer.
    pub(super) fn finish(self, upper: &std::path::Path) -> Result<(), BuildError> {
        if self.made.is_empty() {
            return Ok(());
        }
        let dir = Dir::open_ambient_dir(upper, cap_std::ambient_authority())
            .map_err(io("open the step's upper"))?;
        for (rel, mode, uid, gid) in self.made.iter().rev() {
            use cap_std::fs::MetadataExt;
            // cap-std stays inside the upper whatever the step made of the parents.
            let Ok(meta) = dir.symlink_metadata(rel) else {
                continue;
            };
            if meta.is_dir()
                && (meta.mode() & 0o7777, meta.uid(), meta.gid()) == (*mode, *uid, *gid)
            {
                // Fails, and so keeps it, when the step put something in it.
                let _ = dir.remove_dir(rel);
            }
        }
        Ok(())
    }
}

/// Writes the cache mount `id` of this store as a zstd-compressed tar blob (`--cache-to
/// ...,mounts=true`), holding a shared lock on it meanwhile; `None` when the store has no such
/// folder. Returns the blob, its tar's diff ID and the tar's size.
pub(super) fn export_cache_mount(
    store: &Store,
    id: &str,
) -> Result<Option<(crate::image::Descriptor, crate::digest::DiffId, u64)>, BuildError> {
    let dir = cache_path(store, id)?;
    let lock = match fs::File::open(&dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open a cache mount")(e)),
    };
    rustix::fs::flock(&lock, FlockOperation::LockShared)
        .map_err(|e| io("lock a cache mount")(e.into()))?;
    let folder = Dir::open_ambient_dir(&dir, cap_std::ambient_authority())
        .map_err(io("open a cache mount"))?;
    let mut enc = zstd::stream::write::Encoder::new(store.blob_writer()?, 3)
        .map_err(io("compress a cache mount"))?;
    let tar = crate::layer::write_layer(&folder, None, &mut enc)?;
    let w = enc.finish().map_err(io("compress a cache mount"))?;
    let (digest, size) = w.commit()?;
    Ok(Some((
        crate::image::Descriptor::new(crate::image::media_types::OCI_LAYER_ZSTD, digest, size),
        tar.diff_id,
        tar.size,
    )))
}

/// Makes the cache mount `id` from the stored tar blob `blob` when this store has no such
/// folder yet (`--cache-from` of a cache exported with `mounts=true`), unpacking at most
/// `room` bytes of files; returns whether it did.
pub(super) fn seed_cache_mount(
    store: &Store,
    id: &str,
    (mode, uid, gid): (u32, u32, u32),
    blob: &crate::digest::Digest,
    room: Option<u64>,
) -> Result<bool, BuildError> {
    let dir = cache_path(store, id)?;
    if dir.exists() {
        return Ok(false);
    }
    make_aside(&dir, |path| {
        let dest = Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .map_err(io("create a cache mount"))?;
        let mut opts = crate::layer::UnpackOptions::archive();
        if let Some(r) = room {
            opts.limits.max_total_bytes = opts.limits.max_total_bytes.min(r);
        }
        crate::layer::unpack_layer(store.open_blob(blob)?, &dest, &opts)?;
        own(path, mode, uid, gid)
    })
}
