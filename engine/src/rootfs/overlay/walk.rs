//! Merged lookups: one directory of the merged view at a time, component by component.
//!
//! A [`Level`] is one merged directory: the descriptors of that directory in every layer that
//! contributes to it (top first), whether the shim layer contributes, or that it is the virtual
//! `/dev`. Every host call names a single component relative to such a descriptor and never
//! follows a symlink (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`), so whatever the layers hold and
//! however they change meanwhile, nothing outside them is ever reached. Symlinks are resolved
//! here, against the merged view.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Stat};
use rustix::io::Errno;

use super::types::{Device, NodeKind, VfsError};
use super::{Overlay, State};
use crate::fsx;
use crate::layer::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};
use crate::rootfs::ContainerPath;

/// Symlinks followed while resolving one path before `ELOOP`, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// A real layer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum LayerId {
    /// The step's writable folder.
    Upper,
    /// A read-only snapshot (0 = bottom).
    Lower(usize),
    /// A host folder bound into the rootfs (the overlay's mount with this index).
    Mount(usize),
}

/// Which bind mount a merged directory belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct MountRef {
    pub index: usize,
    pub readonly: bool,
}

/// A directory descriptor: a layer root borrowed from the overlay, or one opened on the way.
pub(super) enum Fd<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl AsFd for Fd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Fd::Borrowed(b) => *b,
            Fd::Owned(o) => o.as_fd(),
        }
    }
}

/// One directory of the merged view.
pub(super) struct Level<'a> {
    /// Its canonical path.
    pub path: ContainerPath,
    /// The directory in every layer that contributes to it, top first.
    pub layers: Vec<(LayerId, Fd<'a>)>,
    /// Whether the shim layer contributes (it has this directory and nothing above hides it).
    pub shim: bool,
    /// Whether this is the virtual `/dev`.
    pub dev: bool,
    /// The bind mount this directory is in: then it is a plain host directory (no whiteouts,
    /// no ownership records, nothing below it) that takes writes directly unless read-only.
    pub mount: Option<MountRef>,
}

impl Level<'_> {
    /// The descriptor of this directory in `layer`.
    pub fn fd(&self, layer: LayerId) -> Option<BorrowedFd<'_>> {
        self.layers
            .iter()
            .find(|(id, _)| *id == layer)
            .map(|(_, fd)| fd.as_fd())
    }

    /// The descriptor that takes writes to this directory: the upper's when the upper has
    /// it, or the bind mount's folder unless that is read-only.
    pub fn upper(&self) -> Option<BorrowedFd<'_>> {
        match self.mount {
            None => self.fd(LayerId::Upper),
            Some(m) if m.readonly => None,
            Some(m) => self.fd(LayerId::Mount(m.index)),
        }
    }
}

/// What a name in a merged directory is.
#[derive(Clone, Debug)]
pub(super) enum Hit {
    /// The root directory.
    Root,
    /// An object of a real layer (the topmost one that has the name).
    Real { layer: LayerId, st: Stat },
    /// A shim.
    ShimFile(String),
    /// A directory of the shim layer that no real layer has.
    ShimDir,
    /// The virtual `/dev`.
    DevDir,
    /// A device of the virtual `/dev`.
    Device(Device),
    /// The root of the overlay's bind mount with this index.
    Mount(usize),
}

impl Hit {
    pub fn is_dir(&self) -> bool {
        match self {
            Hit::Root | Hit::ShimDir | Hit::DevDir | Hit::Mount(_) => true,
            Hit::Real { st, .. } => file_type(st) == FileType::Directory,
            Hit::ShimFile(_) | Hit::Device(_) => false,
        }
    }

    pub fn is_symlink(&self) -> bool {
        matches!(self, Hit::Real { st, .. } if file_type(st) == FileType::Symlink)
    }
}

/// The outcome of looking a name up in one layer.
pub(super) enum Probe {
    Missing,
    Whiteout,
    Present(Stat),
}

pub(super) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

pub(super) fn node_kind(ft: FileType) -> NodeKind {
    match ft {
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        FileType::CharacterDevice => NodeKind::CharDevice,
        FileType::BlockDevice => NodeKind::BlockDevice,
        FileType::Fifo => NodeKind::Fifo,
        FileType::Socket => NodeKind::Socket,
        _ => NodeKind::File,
    }
}

/// Whether a stat is an overlay whiteout (a 0:0 character device).
pub(super) fn is_whiteout(st: &Stat) -> bool {
    file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

/// The OCI marker file name that deletes `name`.
pub(super) fn marker_name(name: &str) -> String {
    format!("{WHITEOUT_PREFIX}{name}")
}

/// Looks `name` up in one layer's directory `dir`, without following anything.
pub(super) fn probe(dir: BorrowedFd<'_>, name: &str) -> Result<Probe, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if is_whiteout(&st) => Ok(Probe::Whiteout),
        Ok(st) => Ok(Probe::Present(st)),
        Err(Errno::NOENT) => {
            match rustix::fs::statat(dir, marker_name(name).as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => Ok(Probe::Whiteout),
                Err(Errno::NOENT | Errno::NAMETOOLONG) => Ok(Probe::Missing),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Whether the directory open at `dir` (a readable descriptor) hides the layers below it.
pub(super) fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 4];
    let by_xattr = matches!(rustix::fs::fgetxattr(dir, OPAQUE_XATTR, &mut buf), Ok(n) if buf.get(..n) == Some(&b"y"[..]));
    by_xattr || rustix::fs::statat(dir, OPAQUE_MARKER, AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

/// A path resolved up to its last component.
pub(super) struct Located<'a> {
    /// The merged directories from the root to the parent of the object (only the root when
    /// the object is the root).
    pub stack: Vec<Level<'a>>,
    /// The last component; `None` for the root.
    pub name: Option<String>,
    /// What is there.
    pub hit: Option<Hit>,
}

impl<'a> Located<'a> {
    /// The merged directory holding the object (the root for the root).
    pub fn parent(&self) -> &Level<'a> {
        let last = self.stack.len() - 1;
        &self.stack[last]
    }

    /// The canonical path of the object.
    pub fn path(&self) -> ContainerPath {
        match &self.name {
            Some(n) => self.parent().path.child(n),
            None => ContainerPath::root(),
        }
    }

    /// The object, or `ENOENT`.
    pub fn existing(&self) -> Result<&Hit, VfsError> {
        self.hit
            .as_ref()
            .ok_or_else(|| VfsError::NotFound(self.path()))
    }

    /// Whether the object is the virtual `/dev` or inside it.
    pub fn in_dev(&self) -> bool {
        self.parent().dev || matches!(self.hit, Some(Hit::DevDir))
    }
}

/// One name of a merged listing.
pub(super) struct Listed {
    pub kind: NodeKind,
    pub ino: u64,
}

impl Overlay {
    /// The merged root directory.
    pub(super) fn root_level(&self) -> Level<'_> {
        let mut layers = Vec::with_capacity(self.lowers.len() + 1);
        layers.push((LayerId::Upper, Fd::Borrowed(self.upper.as_fd())));
        for i in (self.root_floor..self.lowers.len()).rev() {
            layers.push((LayerId::Lower(i), Fd::Borrowed(self.lowers[i].as_fd())));
        }
        Level {
            path: ContainerPath::root(),
            layers,
            shim: self.root_shim,
            dev: false,
            mount: None,
        }
    }

    /// The bind mount whose target is `name` of `level`.
    fn mount_at(&self, level: &Level<'_>, name: &str) -> Option<usize> {
        if self.mounts.is_empty() {
            return None;
        }
        let path = level.path.child(name);
        self.mounts.iter().position(|m| m.target == path)
    }

    /// What `name` is in the merged directory `level`.
    pub(super) fn lookup(
        &self,
        level: &Level<'_>,
        name: &str,
        state: &State,
    ) -> Result<Option<Hit>, VfsError> {
        if level.dev {
            return Ok(Device::from_name(name).map(Hit::Device));
        }
        if level.path.is_root() && name == "dev" {
            return Ok(Some(Hit::DevDir));
        }
        if let Some(i) = self.mount_at(level, name) {
            return Ok(Some(Hit::Mount(i)));
        }
        if level.mount.is_some() {
            let Some((id, fd)) = level.layers.first() else {
                return Ok(None);
            };
            return match rustix::fs::statat(fd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Ok(Some(Hit::Real { layer: *id, st })),
                Err(Errno::NOENT) => Ok(None),
                Err(e) => Err(VfsError::host("look up", &level.path.child(name))(e)),
            };
        }
        if name.starts_with(WHITEOUT_PREFIX) {
            return Ok(None);
        }
        for (id, fd) in &level.layers {
            match probe(fd.as_fd(), name) {
                Ok(Probe::Missing) => {}
                Ok(Probe::Whiteout) => return Ok(None),
                Ok(Probe::Present(st)) => return Ok(Some(Hit::Real { layer: *id, st })),
                Err(e) => return Err(VfsError::host("look up", &level.path.child(name))(e)),
            }
        }
        if level.shim {
            let path = level.path.child(name);
            if !state.hidden.contains(&path) {
                if let Some(tool) = self.shims.tool(&path) {
                    return Ok(Some(Hit::ShimFile(tool.to_owned())));
                }
                if self.shims.is_dir(&path) {
                    return Ok(Some(Hit::ShimDir));
                }
            }
        }
        Ok(None)
    }

    /// The merged directory `name` of `level`, which `hit` says is there.
    pub(super) fn descend<'a>(
        &'a self,
        level: &Level<'a>,
        name: &str,
        hit: &Hit,
        state: &State,
    ) -> Result<Level<'a>, VfsError> {
        let path = level.path.child(name);
        let layer = match hit {
            Hit::DevDir => {
                return Ok(Level {
                    path,
                    layers: Vec::new(),
                    shim: false,
                    dev: true,
                    mount: None,
                })
            }
            Hit::ShimDir => {
                return Ok(Level {
                    path,
                    layers: Vec::new(),
                    shim: true,
                    dev: false,
                    mount: None,
                })
            }
            Hit::Mount(i) => {
                let m = &self.mounts[*i];
                return Ok(Level {
                    path,
                    layers: vec![(LayerId::Mount(*i), Fd::Borrowed(m.dir.as_fd()))],
                    shim: false,
                    dev: false,
                    mount: Some(MountRef {
                        index: *i,
                        readonly: m.readonly,
                    }),
                });
            }
            Hit::Real { layer, st } if file_type(st) == FileType::Directory => *layer,
            _ => return Err(VfsError::NotADirectory(path)),
        };
        let start = level
            .layers
            .iter()
            .position(|(id, _)| *id == layer)
            .unwrap_or(level.layers.len());
        let mut layers = Vec::new();
        let mut cut = false;
        for (i, (id, fd)) in level.layers.iter().enumerate().skip(start) {
            // Opening with `O_DIRECTORY | O_NOFOLLOW` both tests and enters: anything but a
            // directory (a file, a symlink, a whiteout device) fails without being opened, and
            // ends the merge, as does an OCI marker for a missing name.
            let sub = match fsx::open_dir_at(fd.as_fd(), name) {
                Ok(sub) => sub,
                Err(Errno::NOENT) if i > start => {
                    match probe(fd.as_fd(), name).map_err(VfsError::host("look up", &path))? {
                        Probe::Missing => continue,
                        _ => {
                            cut = true;
                            break;
                        }
                    }
                }
                Err(Errno::NOTDIR | Errno::LOOP) if i > start => {
                    cut = true;
                    break;
                }
                Err(Errno::NOTDIR | Errno::LOOP) => return Err(VfsError::NotADirectory(path)),
                Err(Errno::NOENT) => return Err(VfsError::NotFound(path)),
                Err(e) => return Err(VfsError::host("open directory", &path)(e)),
            };
            let below = i + 1 < level.layers.len() || level.shim;
            let opaque = below && is_opaque(sub.as_fd());
            layers.push((*id, Fd::Owned(sub)));
            if opaque {
                cut = true;
                break;
            }
        }
        let shim = !cut && level.shim && !state.hidden.contains(&path) && self.shims.is_dir(&path);
        Ok(Level {
            path,
            layers,
            shim,
            dev: false,
            mount: level.mount,
        })
    }

    /// Reads the target of the symlink `name` of `level` in `layer`.
    pub(super) fn read_link_in(
        &self,
        level: &Level<'_>,
        layer: LayerId,
        name: &str,
    ) -> Result<String, VfsError> {
        let path = level.path.child(name);
        let fd = level
            .fd(layer)
            .ok_or_else(|| VfsError::NotFound(path.clone()))?;
        let target = rustix::fs::readlinkat(fd, name, Vec::new())
            .map_err(VfsError::host("read link", &path))?;
        Ok(String::from_utf8_lossy(target.as_bytes()).into_owned())
    }

    /// Resolves `path` (absolute, or relative to the canonical `base`) inside the merged view:
    /// `..` stops at the root, symlinks on the way are followed inside the rootfs (an absolute
    /// target restarts at its root), and the last one too when `follow` is set or the path ends
    /// in `/`. The last component need not exist; every one before it must be a directory.
    pub(super) fn locate<'a>(
        &'a self,
        base: &ContainerPath,
        path: &str,
        follow: bool,
        state: &State,
    ) -> Result<Located<'a>, VfsError> {
        let must_dir = path.ends_with('/');
        let mut components: Vec<String> = Vec::new();
        if !path.starts_with('/') {
            components.extend(base.components().map(str::to_owned));
        }
        components.extend(path.split('/').filter(|c| !c.is_empty()).map(str::to_owned));
        self.walk(vec![self.root_level()], components, follow, must_dir, state)
    }

    /// Walks `components` from the merged directory on top of `stack`.
    fn walk<'a>(
        &'a self,
        mut stack: Vec<Level<'a>>,
        components: Vec<String>,
        follow: bool,
        must_dir: bool,
        state: &State,
    ) -> Result<Located<'a>, VfsError> {
        let mut queue: VecDeque<String> = components.into();
        let mut pending: Option<(String, Option<Hit>)> = None;
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            if let Some((name, hit)) = pending.take() {
                let top = &stack[stack.len() - 1];
                let next = match &hit {
                    None => return Err(VfsError::NotFound(top.path.child(&name))),
                    Some(h) => self.descend(top, &name, h, state)?,
                };
                stack.push(next);
            }
            match c.as_str() {
                "." => continue,
                ".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let top = &stack[stack.len() - 1];
            let hit = self.lookup(top, &c, state)?;
            if let Some(Hit::Real { layer, st }) = &hit {
                if file_type(st) == FileType::Symlink && (follow || must_dir || !queue.is_empty()) {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(VfsError::SymlinkLoop(top.path.child(&c)));
                    }
                    let target = self.read_link_in(top, *layer, &c)?;
                    if target.starts_with('/') {
                        stack.truncate(1);
                    }
                    for part in target.split('/').rev().filter(|s| !s.is_empty()) {
                        queue.push_front(part.to_owned());
                    }
                    continue;
                }
            }
            pending = Some((c, hit));
        }
        self.finish_locate(stack, pending, must_dir, state)
    }

    fn finish_locate<'a>(
        &'a self,
        mut stack: Vec<Level<'a>>,
        pending: Option<(String, Option<Hit>)>,
        must_dir: bool,
        state: &State,
    ) -> Result<Located<'a>, VfsError> {
        let (name, hit) = match pending {
            Some(p) => p,
            None => {
                // The path ended in a directory already entered (`.`, `..`, a symlink to a
                // directory) or at the root.
                if stack.len() == 1 {
                    return Ok(Located {
                        stack,
                        name: None,
                        hit: Some(Hit::Root),
                    });
                }
                let top = stack
                    .pop()
                    .map(|l| l.path)
                    .unwrap_or_else(ContainerPath::root);
                let name = top.file_name().unwrap_or_default().to_owned();
                let hit = self.lookup(&stack[stack.len() - 1], &name, state)?;
                (name, hit)
            }
        };
        if must_dir && hit.as_ref().is_some_and(|h| !h.is_dir()) {
            return Err(VfsError::NotADirectory(
                stack[stack.len() - 1].path.child(&name),
            ));
        }
        Ok(Located {
            stack,
            name: Some(name),
            hit,
        })
    }

    /// Locates a canonical path.
    pub(super) fn locate_path<'a>(
        &'a self,
        path: &ContainerPath,
        follow: bool,
        state: &State,
    ) -> Result<Located<'a>, VfsError> {
        self.locate(&ContainerPath::root(), path.as_str(), follow, state)
    }

    /// The merged directory at the located object, which must be a directory.
    pub(super) fn enter<'a>(
        &'a self,
        loc: &Located<'a>,
        state: &State,
    ) -> Result<Level<'a>, VfsError> {
        let hit = loc.existing()?;
        match (&loc.name, hit) {
            (None, _) => Ok(self.root_level()),
            (Some(name), hit) => self.descend(loc.parent(), name, hit, state),
        }
    }

    /// The merged listing of the directory `level`: names that are visible, sorted.
    pub(super) fn list(
        &self,
        level: &Level<'_>,
        state: &State,
    ) -> Result<BTreeMap<String, Listed>, VfsError> {
        let mut out: BTreeMap<String, Option<Listed>> = BTreeMap::new();
        if level.dev {
            for d in Device::ALL {
                out.insert(
                    d.name().to_owned(),
                    Some(Listed {
                        kind: NodeKind::CharDevice,
                        ino: super::virtual_ino(&level.path.child(d.name())),
                    }),
                );
            }
        }
        if level.path.is_root() {
            out.insert(
                "dev".to_owned(),
                Some(Listed {
                    kind: NodeKind::Dir,
                    ino: super::virtual_ino(&ContainerPath::parse("/dev")),
                }),
            );
        }
        for (_, fd) in &level.layers {
            let dir = fsx::open_dir_at(fd.as_fd(), c".")
                .map_err(VfsError::host("open directory", &level.path))?;
            let mut markers = Vec::new();
            let mut names = Vec::new();
            for entry in
                rustix::fs::Dir::read_from(&dir).map_err(VfsError::host("list", &level.path))?
            {
                let entry = entry.map_err(VfsError::host("list", &level.path))?;
                let raw = entry.file_name().to_bytes();
                if raw == b"." || raw == b".." {
                    continue;
                }
                let name = String::from_utf8_lossy(raw).into_owned();
                if level.mount.is_some() {
                    let ft = match entry.file_type() {
                        FileType::Unknown => {
                            match rustix::fs::statat(&dir, raw, AtFlags::SYMLINK_NOFOLLOW) {
                                Ok(st) => file_type(&st),
                                Err(Errno::NOENT) => continue,
                                Err(e) => {
                                    return Err(VfsError::host("stat", &level.path.child(&name))(e))
                                }
                            }
                        }
                        ft => ft,
                    };
                    names.push((
                        name,
                        Some(Listed {
                            kind: node_kind(ft),
                            ino: entry.ino(),
                        }),
                    ));
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                    if !hidden.starts_with(WHITEOUT_PREFIX) && !hidden.is_empty() {
                        markers.push(hidden.to_owned());
                    }
                    continue;
                }
                if out.contains_key(&name) {
                    continue;
                }
                let mut ft = entry.file_type();
                let whiteout = if ft == FileType::CharacterDevice || ft == FileType::Unknown {
                    match rustix::fs::statat(&dir, raw, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => {
                            ft = file_type(&st);
                            is_whiteout(&st)
                        }
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(VfsError::host("stat", &level.path.child(&name))(e)),
                    }
                } else {
                    false
                };
                names.push((
                    name,
                    (!whiteout).then(|| Listed {
                        kind: node_kind(ft),
                        ino: entry.ino(),
                    }),
                ));
            }
            for (name, listed) in names {
                out.insert(name, listed);
            }
            for name in markers {
                out.entry(name).or_insert(None);
            }
        }
        if level.shim {
            for name in self.shims.children(&level.path) {
                if out.contains_key(name) {
                    continue;
                }
                let path = level.path.child(name);
                if state.hidden.contains(&path) {
                    continue;
                }
                let kind = if self.shims.is_dir(&path) {
                    NodeKind::Dir
                } else {
                    NodeKind::File
                };
                out.insert(
                    name.to_owned(),
                    Some(Listed {
                        kind,
                        ino: super::virtual_ino(&path),
                    }),
                );
            }
        }
        Ok(out
            .into_iter()
            .filter_map(|(name, listed)| listed.map(|l| (name, l)))
            .collect())
    }

    /// What the layers below the upper have at `name` of `level` (ignoring the upper).
    pub(super) fn below_upper(
        &self,
        level: &Level<'_>,
        name: &str,
        state: &State,
    ) -> Result<Below, VfsError> {
        let path = level.path.child(name);
        if level.mount.is_some() {
            return Ok(Below::Nothing);
        }
        for (id, fd) in &level.layers {
            if *id == LayerId::Upper {
                continue;
            }
            match probe(fd.as_fd(), name).map_err(VfsError::host("look up", &path))? {
                Probe::Missing => {}
                Probe::Whiteout => return Ok(Below::Nothing),
                Probe::Present(st) => {
                    return Ok(Below::Lower {
                        dir: file_type(&st) == FileType::Directory,
                    })
                }
            }
        }
        if level.shim && !state.hidden.contains(&path) {
            if self.shims.tool(&path).is_some() {
                return Ok(Below::Shim { dir: false });
            }
            if self.shims.is_dir(&path) {
                return Ok(Below::Shim { dir: true });
            }
        }
        Ok(Below::Nothing)
    }
}

/// What the layers below the upper hold at a name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Below {
    Nothing,
    Lower { dir: bool },
    Shim { dir: bool },
}
