//! The writable, capability-scoped overlay rootfs that WASI guests see during a RUN step.
//!
//! Layers, top first: the virtual `/dev` (mounted over whatever the layers have there), the
//! step's upper folder, the lower snapshots (never modified), and a virtual layer of shims
//! (guest tools at fixed paths such as `/bin/sh`) below everything. The upper and the lowers
//! share the snapshot format of [`crate::layer`] (whiteouts, opaque directories, ownership
//! records), so once the step ends, [`crate::layer::write_layer`] turns the upper directly
//! into the layer tar: it holds exactly what changed, the parents copied up for it, a whiteout
//! for every deleted lower name and an opaque marker on every directory that replaces a lower
//! one.
//!
//! Paths are resolved here, component by component, against the merged view: `..` stops at
//! the root, symlinks are followed inside the rootfs (an absolute target restarts at its
//! root), at most 40 of them. Host calls only ever name one component relative to a layer
//! directory descriptor and never follow a symlink, so nothing outside the layers is reachable,
//! whatever the layers contain or however they change meanwhile.
//!
//! Guest-visible ownership and mode are set for real where the host can, and recorded in
//! `user.containers.override_stat` where it cannot (`stat` reports the record). Several guest
//! processes may share one overlay: lookups run in parallel, changes one at a time.

mod types;
mod upper;
mod walk;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

pub use types::{
    Creds, Device, DirEntry, NodeKind, NodeStat, OpenOptions, Opened, Shims, TimeSpec, VfsError,
};

use crate::fsx;
use crate::layer::{OverrideStat, OverrideType, WHITEOUT_PREFIX};
use crate::rootfs::ContainerPath;
use upper::{guest_owner, open_node, read_override, Owner, Record, READ_FLAGS};
use walk::{file_type, is_opaque, node_kind, Below, Hit, LayerId, Level, Located};

/// The device number reported for virtual objects (shims, `/dev`).
const VIRTUAL_DEV: u64 = 0x6b69_6c6e;

/// What changes while the overlay is in use, besides the upper folder itself.
#[derive(Default)]
struct State {
    /// Shims (files and directories) that the guest deleted: they never land in the upper.
    hidden: HashSet<ContainerPath>,
}

/// What the host process may do.
struct Host {
    /// Whether kiln runs as root, so it can try to set any owner and mode for real.
    root: bool,
}

/// A host folder bound into the rootfs (`run -v`): what is below its target is the folder,
/// read directly (no layers, whiteouts or ownership records) and written directly unless it
/// is read-only.
struct Mount {
    /// The canonical path it covers.
    target: ContainerPath,
    dir: Dir,
    readonly: bool,
}

/// A merged, writable view of a stack of layer snapshots (see the module documentation).
pub struct Overlay {
    lowers: Vec<Dir>,
    upper: Dir,
    shims: Shims,
    creds: Creds,
    host: Host,
    /// The lowest lower layer visible at the root (an opaque root hides those below it).
    root_floor: usize,
    /// Whether the shims are visible at the root.
    root_shim: bool,
    /// Bind mounts, in the order they were made.
    mounts: Vec<Mount>,
    state: RwLock<State>,
}

/// An inode number for a virtual object, stable for its path.
fn virtual_ino(path: &ContainerPath) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | (1 << 63)
}

fn ns(secs: i64, nsecs: u64) -> i64 {
    secs.saturating_mul(1_000_000_000)
        .saturating_add(i64::try_from(nsecs).unwrap_or(0))
}

/// A guest-visible stat from a host stat and the object's override record.
fn node_stat(st: &Stat, ov: Option<&OverrideStat>) -> NodeStat {
    let owner = guest_owner(st, ov);
    let ft = file_type(st);
    let mut kind = node_kind(ft);
    let mut rdev = st.st_rdev;
    if ft == FileType::RegularFile {
        match ov.and_then(|o| o.kind) {
            Some(OverrideType::Char { major, minor }) => {
                kind = NodeKind::CharDevice;
                rdev = rustix::fs::makedev(major, minor);
            }
            Some(OverrideType::Block { major, minor }) => {
                kind = NodeKind::BlockDevice;
                rdev = rustix::fs::makedev(major, minor);
            }
            Some(OverrideType::Pipe) => kind = NodeKind::Fifo,
            Some(OverrideType::Socket) => kind = NodeKind::Socket,
            _ => {}
        }
    }
    NodeStat {
        kind,
        mode: owner.mode,
        uid: owner.uid,
        gid: owner.gid,
        size: u64::try_from(st.st_size).unwrap_or(0),
        nlink: st.st_nlink,
        ino: st.st_ino,
        dev: st.st_dev,
        rdev,
        atime_ns: ns(st.st_atime, st.st_atime_nsec),
        mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
        ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
        blocks: u64::try_from(st.st_blocks).unwrap_or(0),
    }
}

/// The stat of a virtual object.
fn virtual_stat(path: &ContainerPath, kind: NodeKind, mode: u32, rdev: u64) -> NodeStat {
    NodeStat {
        kind,
        mode,
        uid: 0,
        gid: 0,
        size: 0,
        nlink: if kind == NodeKind::Dir { 2 } else { 1 },
        ino: virtual_ino(path),
        dev: VIRTUAL_DEV,
        rdev,
        atime_ns: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        blocks: 0,
    }
}

fn timespec(t: Option<TimeSpec>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeSpec::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeSpec::Set(n)) => Timespec {
            tv_sec: n.div_euclid(1_000_000_000),
            tv_nsec: n.rem_euclid(1_000_000_000) as _,
        },
    }
}

/// Refuses names that the snapshot format reserves for whiteout markers.
fn check_name(name: &str, path: &ContainerPath) -> Result<(), VfsError> {
    if name.starts_with(WHITEOUT_PREFIX) {
        return Err(VfsError::NotPermitted(path.clone()));
    }
    Ok(())
}

impl Overlay {
    /// An overlay of `upper` over `lowers` (bottom first) over `shims`; new files belong to
    /// `creds`.
    pub fn new(lowers: Vec<Dir>, upper: Dir, shims: Shims, creds: Creds) -> Self {
        let opaque = |d: &Dir| fsx::reopen_readable(d).is_ok_and(|fd| is_opaque(fd.as_fd()));
        let (root_floor, root_shim) = if opaque(&upper) {
            (lowers.len(), false)
        } else {
            match lowers.iter().rposition(opaque) {
                Some(i) => (i, false),
                None => (0, !shims.is_empty()),
            }
        };
        Self {
            lowers,
            upper,
            shims,
            creds,
            host: Host {
                root: crate::layer::host_is_root(),
            },
            root_floor,
            root_shim,
            mounts: Vec::new(),
            state: RwLock::new(State::default()),
        }
    }

    /// Binds the host folder `dir` at `target`, as `mount --bind` does: the target is
    /// resolved inside the rootfs (symlinks on the way followed), and made, root-owned, where
    /// it is missing; from then on everything below it is the folder. Targets in `/dev`, the
    /// root itself and a target already bound are refused.
    pub fn mount(
        &mut self,
        target: &ContainerPath,
        dir: Dir,
        readonly: bool,
    ) -> Result<ContainerPath, VfsError> {
        self.make_dirs(target)?;
        let target = self.resolve(&ContainerPath::root(), target.as_str(), true)?;
        if target.is_root() || self.mounts.iter().any(|m| m.target == target) {
            return Err(VfsError::Busy(target));
        }
        if target.starts_with(&ContainerPath::parse("/dev")) {
            return Err(VfsError::ReadOnly(target));
        }
        self.mounts.push(Mount {
            target: target.clone(),
            dir,
            readonly,
        });
        Ok(target)
    }

    /// Makes `path` and its missing parents (0755, root-owned), resolving symlinks on the way
    /// inside the rootfs, as `mkdir -p` does; returns the canonical paths of the directories it
    /// made, outermost first.
    pub fn make_dirs(&self, path: &ContainerPath) -> Result<Vec<ContainerPath>, VfsError> {
        let mut made = Vec::new();
        let mut dir = ContainerPath::root();
        for name in path.components() {
            dir = self.resolve(&ContainerPath::root(), dir.child(name).as_str(), true)?;
            match self.stat(&dir, true) {
                Ok(st) if st.kind == NodeKind::Dir => {}
                Ok(_) => return Err(VfsError::NotADirectory(dir)),
                Err(VfsError::NotFound(_)) => {
                    self.mkdir(&dir, 0o755, 0)?;
                    self.chown(&dir, Some(0), Some(0), false)?;
                    made.push(dir.clone());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(made)
    }

    /// Whether `path` is a bind mount's target or has one below it (it cannot move).
    fn holds_mount(&self, path: &ContainerPath) -> bool {
        self.mounts.iter().any(|m| m.target.starts_with(path))
    }

    /// The file system that the directory `level` belongs to (`None`: the layers).
    fn filesystem(level: &Level<'_>) -> Option<usize> {
        level.mount.map(|m| m.index)
    }

    /// The step's upper folder.
    pub fn upper(&self) -> &Dir {
        &self.upper
    }

    /// The owner that new files get.
    pub fn creds(&self) -> Creds {
        self.creds
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves `path` (absolute, or relative to the canonical `base`) to a canonical path
    /// with every symlink on the way resolved (and a final one when `follow`). The final
    /// component need not exist; `ENOENT`/`ENOTDIR`/`ELOOP` when a parent is missing, not a
    /// directory, or loops.
    pub fn resolve(
        &self,
        base: &ContainerPath,
        path: &str,
        follow: bool,
    ) -> Result<ContainerPath, VfsError> {
        let state = self.read();
        Ok(self.locate(base, path, follow, &state)?.path())
    }

    /// The stat of `path` as the guest sees it; `ENOENT` when missing.
    pub fn stat(&self, path: &ContainerPath, follow: bool) -> Result<NodeStat, VfsError> {
        let state = self.read();
        let loc = self.locate_path(path, follow, &state)?;
        self.stat_located(&loc)
    }

    fn stat_located(&self, loc: &Located<'_>) -> Result<NodeStat, VfsError> {
        let path = loc.path();
        Ok(match loc.existing()? {
            Hit::Root => self.root_stat()?,
            Hit::Real {
                layer: LayerId::Mount(_),
                st,
            } => node_stat(st, None),
            Hit::Real { layer, st } => {
                let name = loc.name.as_deref().unwrap_or_default();
                let ov = loc
                    .parent()
                    .fd(*layer)
                    .and_then(|fd| open_node(fd, name, st))
                    .and_then(|fd| read_override(fd.as_fd()));
                node_stat(st, ov.as_ref())
            }
            Hit::Mount(i) => {
                let st = rustix::fs::fstat(&self.mounts[*i].dir)
                    .map_err(VfsError::host("stat", &path))?;
                node_stat(&st, None)
            }
            Hit::ShimFile(_) => virtual_stat(&path, NodeKind::File, 0o755, 0),
            Hit::ShimDir | Hit::DevDir => virtual_stat(&path, NodeKind::Dir, 0o755, 0),
            Hit::Device(d) => {
                let (major, minor) = d.numbers();
                virtual_stat(
                    &path,
                    NodeKind::CharDevice,
                    0o666,
                    rustix::fs::makedev(major, minor),
                )
            }
        })
    }

    /// The root: the upper's times, the ownership and mode of the topmost layer that records
    /// them (0755 root when none does).
    fn root_stat(&self) -> Result<NodeStat, VfsError> {
        let root = ContainerPath::root();
        let st = rustix::fs::fstat(&self.upper).map_err(VfsError::host("stat", &root))?;
        let readable = |d: &Dir| fsx::reopen_readable(d).ok();
        let mut out = node_stat(&st, None);
        let owner = match readable(&self.upper).and_then(|fd| read_override(fd.as_fd())) {
            Some(ov) => guest_owner(&st, Some(&ov)),
            None => match self.lowers[self.root_floor..].last() {
                Some(top) => {
                    let lst = rustix::fs::fstat(top).map_err(VfsError::host("stat", &root))?;
                    let ov = readable(top).and_then(|fd| read_override(fd.as_fd()));
                    guest_owner(&lst, ov.as_ref())
                }
                None => Owner {
                    uid: 0,
                    gid: 0,
                    mode: 0o755,
                },
            },
        };
        (out.uid, out.gid, out.mode) = (owner.uid, owner.gid, owner.mode);
        Ok(out)
    }

    /// Opens `path` like `open(2)`: writing copies the file up first, `create` makes a new
    /// file (`mode & !umask`, owned by the creds) in the upper, `exclusive`, `truncate`,
    /// `directory` and a refused final symlink (`follow` off) behave as `O_EXCL`, `O_TRUNC`,
    /// `O_DIRECTORY` and `O_NOFOLLOW` do. Parent symlinks are always followed.
    pub fn open(
        &self,
        path: &ContainerPath,
        opts: &OpenOptions,
        mode: u32,
        umask: u32,
    ) -> Result<Opened, VfsError> {
        let writes = opts.write || opts.append;
        let changes = writes || opts.truncate;
        let follow = opts.follow && !(opts.create && opts.exclusive);
        if !changes && !opts.create {
            let state = self.read();
            let loc = self.locate_path(path, follow, &state)?;
            return self.open_existing(loc, opts);
        }
        let state = self.write();
        let mut loc = self.locate_path(path, follow, &state)?;
        let cpath = loc.path();
        let Some(hit) = loc.hit.clone() else {
            if !opts.create {
                return Err(VfsError::NotFound(cpath));
            }
            if loc.in_dev() {
                return Err(VfsError::ReadOnly(cpath));
            }
            if opts.directory {
                return Err(VfsError::InvalidArgument(cpath));
            }
            let name = loc.name.clone().unwrap_or_default();
            check_name(&name, &cpath)?;
            self.ensure_upper(&mut loc.stack)?;
            let upper = loc
                .parent()
                .upper()
                .ok_or_else(|| VfsError::NotFound(cpath.clone()))?;
            self.clear_name_in(loc.parent(), &name, &cpath)?;
            let access = if writes { OFlags::RDWR } else { OFlags::RDONLY };
            let fd = rustix::fs::openat(
                upper,
                name.as_str(),
                access | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| match e {
                Errno::EXIST => VfsError::Exists(cpath.clone()),
                e => VfsError::host("create", &cpath)(e),
            })?;
            let want = Owner {
                uid: self.creds.uid,
                gid: self.creds.gid,
                mode: mode & !umask & 0o7777,
            };
            self.set_owner_mode(fd.as_fd(), want, false, Record::new(loc.parent()), &cpath)?;
            if opts.append {
                rustix::fs::fcntl_setfl(&fd, OFlags::APPEND)
                    .map_err(VfsError::host("set flags", &cpath))?;
            }
            return Ok(Opened::File(fd.into()));
        };
        if opts.create && opts.exclusive {
            return Err(VfsError::Exists(cpath));
        }
        if hit.is_dir() || hit.is_symlink() || opts.directory || !changes {
            return self.open_existing(loc, opts);
        }
        let name = loc.name.clone().unwrap_or_default();
        match &hit {
            Hit::Device(d) => return Ok(Opened::Device(*d)),
            Hit::Real { st, .. } if file_type(st) == FileType::Fifo => {
                return self.open_existing(loc, opts);
            }
            Hit::Real { st, .. } if file_type(st) != FileType::RegularFile => {
                return Err(VfsError::AccessDenied(cpath))
            }
            _ => {}
        }
        self.ensure_upper(&mut loc.stack)?;
        self.copy_up(loc.parent(), &name, &hit, !opts.truncate)?;
        let upper = loc
            .parent()
            .upper()
            .ok_or_else(|| VfsError::NotFound(cpath.clone()))?;
        let mut flags = OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        flags |= if writes { OFlags::RDWR } else { OFlags::RDONLY };
        if opts.truncate {
            flags |= OFlags::TRUNC;
        }
        if opts.append {
            flags |= OFlags::APPEND;
        }
        let fd = rustix::fs::openat(upper, name.as_str(), flags, Mode::empty())
            .map_err(VfsError::host("open", &cpath))?;
        self.regular_file(fd, &cpath)
    }

    /// Checks that an opened descriptor is a regular file, and makes it blocking.
    fn regular_file(
        &self,
        fd: rustix::fd::OwnedFd,
        path: &ContainerPath,
    ) -> Result<Opened, VfsError> {
        let st = rustix::fs::fstat(&fd).map_err(VfsError::host("stat", path))?;
        if file_type(&st) != FileType::RegularFile {
            return Err(VfsError::AccessDenied(path.clone()));
        }
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(VfsError::host("get flags", path))?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
            .map_err(VfsError::host("set flags", path))?;
        Ok(Opened::File(fd.into()))
    }

    /// Opens an existing object without changing anything.
    fn open_existing(&self, loc: Located<'_>, opts: &OpenOptions) -> Result<Opened, VfsError> {
        let path = loc.path();
        let hit = loc.existing()?;
        let changes = opts.write || opts.append || opts.truncate;
        if hit.is_symlink() {
            return Err(VfsError::SymlinkLoop(path));
        }
        if hit.is_dir() {
            if changes {
                return Err(VfsError::IsADirectory(path));
            }
            return Ok(Opened::Dir(path));
        }
        if opts.directory {
            return Err(VfsError::NotADirectory(path));
        }
        match hit {
            Hit::Device(d) => Ok(Opened::Device(*d)),
            Hit::ShimFile(tool) => Ok(Opened::Shim(tool.clone())),
            Hit::Real { layer, st } if file_type(st) == FileType::Fifo => {
                // Opening a named pipe changes nothing in the layers; it is opened without
                // blocking, so a host thread never waits for the other end here.
                let name = loc.name.as_deref().unwrap_or_default();
                let dir = loc
                    .parent()
                    .fd(*layer)
                    .ok_or_else(|| VfsError::NotFound(path.clone()))?;
                let access = match (opts.read, changes) {
                    (true, true) => OFlags::RDWR,
                    (false, true) => OFlags::WRONLY,
                    _ => OFlags::RDONLY,
                };
                let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(dir, name, flags, Mode::empty())
                    .map_err(VfsError::host("open", &path))?;
                let st = rustix::fs::fstat(&fd).map_err(VfsError::host("stat", &path))?;
                if file_type(&st) != FileType::Fifo {
                    return Err(VfsError::AccessDenied(path));
                }
                Ok(Opened::Fifo(fd))
            }
            Hit::Real { layer, st } => {
                if file_type(st) != FileType::RegularFile {
                    return Err(VfsError::AccessDenied(path));
                }
                let name = loc.name.as_deref().unwrap_or_default();
                let dir = loc
                    .parent()
                    .fd(*layer)
                    .ok_or_else(|| VfsError::NotFound(path.clone()))?;
                let fd = rustix::fs::openat(dir, name, READ_FLAGS, Mode::empty())
                    .map_err(VfsError::host("open", &path))?;
                self.regular_file(fd, &path)
            }
            Hit::Root | Hit::ShimDir | Hit::DevDir | Hit::Mount(_) => Ok(Opened::Dir(path)),
        }
    }

    /// The stat of an opened file (its host stat with its ownership record applied).
    pub fn fstat(&self, path: &ContainerPath, file: &std::fs::File) -> Result<NodeStat, VfsError> {
        let st = rustix::fs::fstat(file).map_err(VfsError::host("stat", path))?;
        Ok(node_stat(&st, read_override(file.as_fd()).as_ref()))
    }

    /// The merged listing of a directory (symlinks followed), sorted by name, without `.`,
    /// `..`, whiteouts and what they hide; shims and `/dev` included.
    pub fn read_dir(&self, path: &ContainerPath) -> Result<Vec<DirEntry>, VfsError> {
        let state = self.read();
        let loc = self.locate_path(path, true, &state)?;
        if !loc.existing()?.is_dir() {
            return Err(VfsError::NotADirectory(loc.path()));
        }
        let level = self.enter(&loc, &state)?;
        Ok(self
            .list(&level, &state)?
            .into_iter()
            .map(|(name, l)| DirEntry {
                name,
                kind: l.kind,
                ino: l.ino,
            })
            .collect())
    }

    /// Creates a directory (`mode & !umask`, owned by the creds). A directory that takes the
    /// place of a deleted lower directory is opaque.
    pub fn mkdir(&self, path: &ContainerPath, mode: u32, umask: u32) -> Result<(), VfsError> {
        let state = self.write();
        let mut loc = self.locate_path(path, false, &state)?;
        let cpath = vacant(&loc)?;
        let name = loc.name.clone().unwrap_or_default();
        check_name(&name, &cpath)?;
        self.ensure_upper(&mut loc.stack)?;
        let below = self.below_upper(loc.parent(), &name, &state)?;
        let upper = loc
            .parent()
            .upper()
            .ok_or_else(|| VfsError::NotFound(cpath.clone()))?;
        self.clear_name_in(loc.parent(), &name, &cpath)?;
        rustix::fs::mkdirat(upper, name.as_str(), Mode::from_raw_mode(0o700)).map_err(
            |e| match e {
                Errno::EXIST => VfsError::Exists(cpath.clone()),
                e => VfsError::host("mkdir", &cpath)(e),
            },
        )?;
        let fd = fsx::open_dir_at(upper, name.as_str()).map_err(VfsError::host("open", &cpath))?;
        let want = Owner {
            uid: self.creds.uid,
            gid: self.creds.gid,
            mode: mode & !umask & 0o7777,
        };
        self.set_owner_mode(fd.as_fd(), want, true, Record::new(loc.parent()), &cpath)?;
        if matches!(
            below,
            Below::Lower { dir: true } | Below::Shim { dir: true }
        ) {
            self.make_opaque(fd.as_fd(), &cpath)?;
        }
        Ok(())
    }

    /// Removes a non-directory (`EISDIR` for a directory); a name that a lower layer has gets
    /// a whiteout.
    pub fn unlink(&self, path: &ContainerPath) -> Result<(), VfsError> {
        let mut state = self.write();
        let mut loc = self.locate_path(path, false, &state)?;
        let cpath = loc.path();
        let hit = loc.existing()?.clone();
        if hit.is_dir() {
            return Err(VfsError::IsADirectory(cpath));
        }
        if loc.in_dev() {
            return Err(VfsError::ReadOnly(cpath));
        }
        self.remove(&mut loc, &hit, &mut state)
    }

    /// Removes an empty directory (`ENOTEMPTY` judged on the merged view); a name that a
    /// lower layer has gets a whiteout.
    pub fn rmdir(&self, path: &ContainerPath) -> Result<(), VfsError> {
        let mut state = self.write();
        let mut loc = self.locate_path(path, false, &state)?;
        let cpath = loc.path();
        let hit = loc.existing()?.clone();
        match hit {
            Hit::Root | Hit::DevDir | Hit::Mount(_) => return Err(VfsError::Busy(cpath)),
            _ if !hit.is_dir() => return Err(VfsError::NotADirectory(cpath)),
            _ => {}
        }
        let level = self.enter(&loc, &state)?;
        if !self.list(&level, &state)?.is_empty() {
            return Err(VfsError::NotEmpty(cpath));
        }
        drop(level);
        self.remove(&mut loc, &hit, &mut state)
    }

    /// Removes the located object from the merged view: from the upper, then hidden from
    /// the layers below with a whiteout (or, for a shim, in memory).
    fn remove(&self, loc: &mut Located<'_>, hit: &Hit, state: &mut State) -> Result<(), VfsError> {
        let cpath = loc.path();
        let name = loc.name.clone().unwrap_or_default();
        if let Hit::ShimFile(_) | Hit::ShimDir = hit {
            state.hidden.insert(cpath);
            return Ok(());
        }
        self.ensure_upper(&mut loc.stack)?;
        let below = self.below_upper(loc.parent(), &name, state)?;
        let upper = loc
            .parent()
            .upper()
            .ok_or_else(|| VfsError::NotFound(cpath.clone()))?;
        match hit {
            Hit::Real {
                layer: LayerId::Upper,
                ..
            } => self.remove_upper(upper, &name, &cpath)?,
            Hit::Real {
                layer: LayerId::Mount(_),
                st,
            } => {
                let flags = if file_type(st) == FileType::Directory {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rustix::fs::unlinkat(upper, name.as_str(), flags)
                    .map_err(VfsError::host("remove", &cpath))?;
            }
            _ => {}
        }
        match below {
            Below::Lower { .. } => self.whiteout(upper, &name, &cpath)?,
            Below::Shim { .. } => {
                state.hidden.insert(cpath);
            }
            Below::Nothing => {}
        }
        Ok(())
    }

    /// Renames like `rename(2)`: replaces a non-directory or an empty directory, `EINVAL`
    /// when moving a directory into itself, never `EXDEV` (a directory with lower contents is
    /// copied up whole first, and its old name gets a whiteout).
    pub fn rename(&self, from: &ContainerPath, to: &ContainerPath) -> Result<(), VfsError> {
        let mut state = self.write();
        let mut src = self.locate_path(from, false, &state)?;
        let mut dst = self.locate_path(to, false, &state)?;
        let (fpath, tpath) = (src.path(), dst.path());
        let shit = src.existing()?.clone();
        let (Some(sname), Some(tname)) = (src.name.clone(), dst.name.clone()) else {
            return Err(VfsError::Busy(ContainerPath::root()));
        };
        if matches!(shit, Hit::DevDir) || matches!(dst.hit, Some(Hit::DevDir | Hit::Mount(_))) {
            return Err(VfsError::Busy(fpath));
        }
        if self.holds_mount(&fpath) {
            return Err(VfsError::Busy(fpath));
        }
        if Self::filesystem(src.parent()) != Self::filesystem(dst.parent()) {
            return Err(VfsError::CrossDevice(tpath));
        }
        if src.in_dev() || dst.in_dev() {
            return Err(VfsError::ReadOnly(fpath));
        }
        if fpath == tpath {
            return Ok(());
        }
        if shit.is_dir() && tpath.starts_with(&fpath) {
            return Err(VfsError::InvalidArgument(tpath));
        }
        check_name(&tname, &tpath)?;
        if let Some(dhit) = &dst.hit {
            if shit.is_dir() {
                if !dhit.is_dir() {
                    return Err(VfsError::NotADirectory(tpath));
                }
                let level = self.enter(&dst, &state)?;
                if !self.list(&level, &state)?.is_empty() {
                    return Err(VfsError::NotEmpty(tpath));
                }
            } else if dhit.is_dir() {
                return Err(VfsError::IsADirectory(tpath));
            }
        }
        // Bring the source into the upper, self-contained.
        self.ensure_upper(&mut src.stack)?;
        if shit.is_dir() {
            let level = self.descend(src.parent(), &sname, &shit, &state)?;
            let self_contained = level.layers.len() == 1 && level.upper().is_some() && !level.shim;
            drop(level);
            if !self_contained {
                self.copy_up_tree(src.parent(), &sname, &shit, &state)?;
            }
        } else {
            self.copy_up(src.parent(), &sname, &shit, true)?;
        }
        self.ensure_upper(&mut dst.stack)?;
        let sup = src
            .parent()
            .upper()
            .ok_or_else(|| VfsError::NotFound(fpath.clone()))?;
        let dup = dst
            .parent()
            .upper()
            .ok_or_else(|| VfsError::NotFound(tpath.clone()))?;
        match &dst.hit {
            Some(Hit::Real {
                layer: LayerId::Upper,
                st,
            }) if file_type(st) == FileType::Directory => {
                // Empty in the merged view: only whiteouts are left in it.
                self.remove_upper(dup, &tname, &tpath)?;
            }
            Some(Hit::Real {
                layer: LayerId::Upper | LayerId::Mount(_),
                ..
            }) => {}
            _ => {
                self.clear_name_in(dst.parent(), &tname, &tpath)?;
            }
        }
        rustix::fs::renameat(sup, sname.as_str(), dup, tname.as_str())
            .map_err(VfsError::host("rename", &fpath))?;
        match self.below_upper(src.parent(), &sname, &state)? {
            Below::Lower { .. } => self.whiteout(sup, &sname, &fpath)?,
            Below::Shim { .. } => {
                state.hidden.insert(fpath);
            }
            Below::Nothing => {}
        }
        if shit.is_dir()
            && matches!(
                self.below_upper(dst.parent(), &tname, &state)?,
                Below::Lower { dir: true } | Below::Shim { dir: true }
            )
        {
            let fd =
                fsx::open_dir_at(dup, tname.as_str()).map_err(VfsError::host("open", &tpath))?;
            self.make_opaque(fd.as_fd(), &tpath)?;
        }
        Ok(())
    }

    /// Creates a symlink at `path` pointing to `target` (stored as given), owned by the creds
    /// when the host can set its owner.
    pub fn symlink(&self, target: &str, path: &ContainerPath) -> Result<(), VfsError> {
        let state = self.write();
        let mut loc = self.locate_path(path, false, &state)?;
        let cpath = vacant(&loc)?;
        if target.is_empty() {
            return Err(VfsError::NotFound(cpath));
        }
        let name = loc.name.clone().unwrap_or_default();
        check_name(&name, &cpath)?;
        self.ensure_upper(&mut loc.stack)?;
        let upper = loc
            .parent()
            .upper()
            .ok_or_else(|| VfsError::NotFound(cpath.clone()))?;
        self.clear_name_in(loc.parent(), &name, &cpath)?;
        rustix::fs::symlinkat(target, upper, name.as_str())
            .map_err(VfsError::host("symlink", &cpath))?;
        self.set_link_owner(upper, &name, self.creds.uid, self.creds.gid, &cpath)
    }

    /// Makes `new` a hard link to `existing` (not following a final symlink): `existing` is
    /// copied up first and linked in the upper.
    pub fn link(&self, existing: &ContainerPath, new: &ContainerPath) -> Result<(), VfsError> {
        let state = self.write();
        let mut src = self.locate_path(existing, false, &state)?;
        let mut dst = self.locate_path(new, false, &state)?;
        let (spath, dpath) = (src.path(), dst.path());
        let shit = src.existing()?.clone();
        match &shit {
            _ if shit.is_dir() => return Err(VfsError::NotPermitted(spath)),
            Hit::Device(_) | Hit::ShimFile(_) => return Err(VfsError::NotPermitted(spath)),
            _ => {}
        }
        vacant(&dst)?;
        if Self::filesystem(src.parent()) != Self::filesystem(dst.parent()) {
            return Err(VfsError::CrossDevice(dpath));
        }
        let sname = src.name.clone().unwrap_or_default();
        let dname = dst.name.clone().unwrap_or_default();
        check_name(&dname, &dpath)?;
        self.ensure_upper(&mut src.stack)?;
        self.copy_up(src.parent(), &sname, &shit, true)?;
        self.ensure_upper(&mut dst.stack)?;
        let sup = src
            .parent()
            .upper()
            .ok_or_else(|| VfsError::NotFound(spath.clone()))?;
        let dup = dst
            .parent()
            .upper()
            .ok_or_else(|| VfsError::NotFound(dpath.clone()))?;
        self.clear_name_in(dst.parent(), &dname, &dpath)?;
        rustix::fs::linkat(sup, sname.as_str(), dup, dname.as_str(), AtFlags::empty())
            .map_err(VfsError::host("link", &dpath))
    }

    /// The target of a symlink, as stored; `EINVAL` when `path` is not a symlink.
    pub fn readlink(&self, path: &ContainerPath) -> Result<String, VfsError> {
        let state = self.read();
        let loc = self.locate_path(path, false, &state)?;
        match loc.existing()? {
            Hit::Real { layer, st } if file_type(st) == FileType::Symlink => {
                let name = loc.name.as_deref().unwrap_or_default();
                self.read_link_in(loc.parent(), *layer, name)
            }
            _ => Err(VfsError::InvalidArgument(loc.path())),
        }
    }

    /// Locates `path` and brings it into the upper for a metadata change. Devices, `/dev`,
    /// shims and the root are left where they are: the caller decides what to do with them.
    fn copy_up_for_change<'a>(
        &'a self,
        path: &ContainerPath,
        follow: bool,
        state: &State,
    ) -> Result<(Located<'a>, Hit), VfsError> {
        let mut loc = self.locate_path(path, follow, state)?;
        let hit = loc.existing()?.clone();
        if let Hit::Real { .. } | Hit::ShimDir = hit {
            self.ensure_upper(&mut loc.stack)?;
            let name = loc.name.clone().unwrap_or_default();
            self.copy_up(loc.parent(), &name, &hit, true)?;
        }
        Ok((loc, hit))
    }

    /// Sets access and/or modification time (copying up first); devices and shims keep theirs.
    pub fn set_times(
        &self,
        path: &ContainerPath,
        atime: Option<TimeSpec>,
        mtime: Option<TimeSpec>,
        follow: bool,
    ) -> Result<(), VfsError> {
        let state = self.write();
        let (loc, hit) = self.copy_up_for_change(path, follow, &state)?;
        let cpath = loc.path();
        let times = Timestamps {
            last_access: timespec(atime),
            last_modification: timespec(mtime),
        };
        match hit {
            Hit::Root => rustix::fs::utimensat(&self.upper, c".", &times, AtFlags::empty())
                .map_err(VfsError::host("set times", &cpath)),
            Hit::Real { .. } | Hit::ShimDir => {
                let name = loc.name.as_deref().unwrap_or_default();
                let upper = loc
                    .parent()
                    .upper()
                    .ok_or_else(|| VfsError::NotFound(cpath.clone()))?;
                rustix::fs::utimensat(upper, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(VfsError::host("set times", &cpath))
            }
            Hit::Mount(i) => {
                let m = &self.mounts[i];
                if m.readonly {
                    return Err(VfsError::ReadOnly(cpath));
                }
                rustix::fs::utimensat(&m.dir, c".", &times, AtFlags::empty())
                    .map_err(VfsError::host("set times", &cpath))
            }
            Hit::ShimFile(_) | Hit::DevDir | Hit::Device(_) => Ok(()),
        }
    }

    /// Changes permission bits (copying up first); a symlink itself has none to change.
    pub fn chmod(&self, path: &ContainerPath, mode: u32, follow: bool) -> Result<(), VfsError> {
        self.change_owner_mode(path, follow, true, |cur, _| Owner {
            mode: mode & 0o7777,
            ..cur
        })
    }

    /// Changes owner and/or group (copying up first): for real when the host can, recorded
    /// in `user.containers.override_stat` otherwise. Like Linux, this clears the setuid and
    /// setgid bits of a regular file.
    pub fn chown(
        &self,
        path: &ContainerPath,
        uid: Option<u32>,
        gid: Option<u32>,
        follow: bool,
    ) -> Result<(), VfsError> {
        let changing = uid.is_some() || gid.is_some();
        self.change_owner_mode(path, follow, false, |cur, dir| Owner {
            uid: uid.unwrap_or(cur.uid),
            gid: gid.unwrap_or(cur.gid),
            mode: if changing && !dir {
                cur.mode & !0o6000
            } else {
                cur.mode
            },
        })
    }

    fn change_owner_mode(
        &self,
        path: &ContainerPath,
        follow: bool,
        symlink_noop: bool,
        change: impl Fn(Owner, bool) -> Owner,
    ) -> Result<(), VfsError> {
        let state = self.write();
        if symlink_noop
            && !follow
            && self
                .locate_path(path, false, &state)?
                .existing()?
                .is_symlink()
        {
            return Ok(());
        }
        let (loc, hit) = self.copy_up_for_change(path, follow, &state)?;
        let cpath = loc.path();
        let (dir, name, record) = match &hit {
            Hit::Root => (
                fsx::reopen_readable(&self.upper).map_err(VfsError::host("open", &cpath))?,
                None,
                Record::Replace,
            ),
            Hit::Mount(i) => {
                let m = &self.mounts[*i];
                if m.readonly {
                    return Err(VfsError::ReadOnly(cpath));
                }
                (
                    fsx::reopen_readable(&m.dir).map_err(VfsError::host("open", &cpath))?,
                    None,
                    Record::Bind { new: false },
                )
            }
            Hit::Real { .. } | Hit::ShimDir => {
                let upper = loc
                    .parent()
                    .upper()
                    .ok_or_else(|| VfsError::NotFound(cpath.clone()))?;
                let dup = fsx::open_dir_at(upper, c".").map_err(VfsError::host("open", &cpath))?;
                let record = match loc.parent().mount {
                    Some(_) => Record::Bind { new: false },
                    None => Record::Replace,
                };
                (dup, loc.name.clone(), record)
            }
            Hit::ShimFile(_) => return Err(VfsError::NotPermitted(cpath)),
            Hit::DevDir | Hit::Device(_) => return Err(VfsError::ReadOnly(cpath)),
        };
        let Some(name) = name else {
            let st = rustix::fs::fstat(&dir).map_err(VfsError::host("stat", &cpath))?;
            let ov = match record {
                Record::Bind { .. } => None,
                _ => read_override(dir.as_fd()),
            };
            let cur = guest_owner(&st, ov.as_ref());
            return self.set_owner_mode(dir.as_fd(), change(cur, true), true, record, &cpath);
        };
        let st = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(VfsError::host("stat", &cpath))?;
        match file_type(&st) {
            FileType::Symlink => {
                let cur = guest_owner(&st, None);
                let want = change(cur, false);
                if (want.uid, want.gid) != (cur.uid, cur.gid) {
                    self.set_link_owner(dir.as_fd(), &name, want.uid, want.gid, &cpath)?;
                }
                Ok(())
            }
            FileType::Directory | FileType::RegularFile => {
                let fd = open_node(dir.as_fd(), &name, &st)
                    .ok_or_else(|| VfsError::AccessDenied(cpath.clone()))?;
                let is_dir = file_type(&st) == FileType::Directory;
                let ov = match record {
                    Record::Bind { .. } => None,
                    _ => read_override(fd.as_fd()),
                };
                let cur = guest_owner(&st, ov.as_ref());
                self.set_owner_mode(fd.as_fd(), change(cur, is_dir), is_dir, record, &cpath)
            }
            _ => {
                let cur = guest_owner(&st, None);
                let want = change(cur, false);
                self.set_link_owner(dir.as_fd(), &name, want.uid, want.gid, &cpath)?;
                let pfd = rustix::fs::openat(
                    &dir,
                    name.as_str(),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(VfsError::host("open", &cpath))?;
                fsx::chmod_o_path(pfd.as_fd(), want.mode).map_err(VfsError::io("chmod", &cpath))
            }
        }
    }
}

/// The path of a located name that something new may take: nothing is there, and it is not
/// in the virtual `/dev`.
fn vacant(loc: &Located<'_>) -> Result<ContainerPath, VfsError> {
    let path = loc.path();
    if loc.hit.is_some() {
        return Err(VfsError::Exists(path));
    }
    if loc.in_dev() {
        return Err(VfsError::ReadOnly(path));
    }
    Ok(path)
}
