//! Writing the upper: copy-up, ownership records, whiteouts and opaque markers.
//!
//! Everything here works through descriptors of upper directories that the merged walk opened
//! (`O_NOFOLLOW`, one component at a time) and names a single component, never following it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use super::types::VfsError;
use super::walk::{file_type, is_whiteout, marker_name, Fd, Hit, LayerId, Level};
use super::{Overlay, State};
use crate::fsx;
use crate::layer::{
    OverrideStat, OverrideType, OPAQUE_MARKER, OPAQUE_XATTR, OVERRIDE_STAT_XATTR, SOURCE_XATTR,
    WHITEOUT_PREFIX,
};
use crate::rootfs::ContainerPath;

/// Flags to open a regular file of a layer for reading: never a symlink, never blocking on
/// something that changed into a fifo, never a controlling terminal.
pub(super) const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// Flags to create a file in the upper.
const CREATE_FLAGS: OFlags = OFlags::RDWR
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The `security.capability` xattr: copied last, because `chown` clears it.
const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// Ownership and mode as the guest sees them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// How an owner and mode change is kept.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Record {
    /// In the layers, on an object just made (no stale record to remove).
    New,
    /// In the layers, on an existing object (a record that no longer applies is removed).
    Replace,
    /// In a bind mount: only for real, never recorded; a new object keeps the host's owner
    /// when the host cannot give it the guest's.
    Bind { new: bool },
}

impl Record {
    /// The record for an object just made in `level`.
    pub fn new(level: &Level<'_>) -> Self {
        match level.mount {
            Some(_) => Record::Bind { new: true },
            None => Record::New,
        }
    }
}

/// The override record of an open file or directory, if it has a valid one.
pub(super) fn read_override(fd: BorrowedFd<'_>) -> Option<OverrideStat> {
    let mut buf = [0u8; 128];
    let n = rustix::fs::fgetxattr(fd, OVERRIDE_STAT_XATTR, &mut buf).ok()?;
    OverrideStat::parse(buf.get(..n)?)
}

/// Opens a regular file or directory of a layer readably (for xattrs), `None` for anything
/// else (device nodes, fifos and sockets are never opened) or when it cannot be opened.
pub(super) fn open_node(dir: BorrowedFd<'_>, name: &str, st: &Stat) -> Option<OwnedFd> {
    match file_type(st) {
        FileType::Directory => fsx::open_dir_at(dir, name).ok(),
        FileType::RegularFile => {
            let fd = rustix::fs::openat(dir, name, READ_FLAGS, Mode::empty()).ok()?;
            let now = rustix::fs::fstat(&fd).ok()?;
            (file_type(&now) == FileType::RegularFile).then_some(fd)
        }
        _ => None,
    }
}

/// The guest's view of an object: its override record where there is one, else its real stat.
pub(super) fn guest_owner(st: &Stat, ov: Option<&OverrideStat>) -> Owner {
    match ov {
        Some(o) => Owner {
            uid: o.uid,
            gid: o.gid,
            mode: o.mode,
        },
        None => {
            let (uid, gid) = crate::layer::container_owner(st.st_uid, st.st_gid);
            Owner {
                uid,
                gid,
                mode: st.st_mode & 0o7777,
            }
        }
    }
}

fn timestamps(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Sets a directory's times back to `st`'s, through a descriptor that may be `O_PATH`.
pub(super) fn restore_dir_times(dir: BorrowedFd<'_>, st: &Stat) -> Result<(), Errno> {
    rustix::fs::utimensat(dir, c".", &timestamps(st), AtFlags::empty())
}

/// Whether an xattr of a layer travels with a copy-up (set by [`Overlay::set_owner_mode`]
/// or not at all otherwise).
fn copied_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        && !name.starts_with(b"user.overlay.")
        && name != OVERRIDE_STAT_XATTR.as_bytes()
        && name != SOURCE_XATTR.as_bytes()
}

/// Copies the xattrs that travel from `src` to `dst`; `security.capability` when `caps`.
fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, caps: bool) -> io::Result<()> {
    let mut list = vec![0u8; fsx::XATTR_MAX];
    let mut value = vec![0u8; fsx::XATTR_MAX];
    let mut result = Ok(());
    fsx::for_each_xattr(src, &mut list, &mut value, |n, v| {
        let wanted = if caps {
            n == CAPABILITY_XATTR
        } else {
            copied_xattr(n)
        };
        if wanted && result.is_ok() {
            match fsx::set_xattr(dst, n, v) {
                Ok(()) => {}
                // No CAP_SETFCAP, or no user xattrs here: the copy is still the best we can do.
                Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::PERM | Errno::NOTSUP)) => {
                }
                Err(e) => result = Err(e),
            }
        }
    })?;
    result
}

impl Overlay {
    /// Gives the open upper file or directory `fd` the guest-visible owner and mode `want`:
    /// for real as far as the host allows (a non-root host keeps owner read/write, and search
    /// on directories, so it can still work on it, and sets no setuid or setgid bit), and
    /// records `want` in
    /// `user.containers.override_stat` whenever the real values differ. In a bind mount
    /// ([`Record::Bind`]) the change is made for real or fails, as it would on the host.
    pub(super) fn set_owner_mode(
        &self,
        fd: BorrowedFd<'_>,
        want: Owner,
        dir: bool,
        record: Record,
        path: &ContainerPath,
    ) -> Result<(), VfsError> {
        let cur = rustix::fs::fstat(fd).map_err(VfsError::host("stat", path))?;
        let real_owner = crate::layer::container_owner(cur.st_uid, cur.st_gid);
        if let Record::Bind { new } = record {
            if real_owner != (want.uid, want.gid) && (self.host.root || !new) {
                rustix::fs::fchown(
                    fd,
                    Some(Uid::from_raw(want.uid)),
                    Some(Gid::from_raw(want.gid)),
                )
                .map_err(VfsError::host("chown", path))?;
            }
            if cur.st_mode & 0o7777 != want.mode {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(want.mode))
                    .map_err(VfsError::host("chmod", path))?;
            }
            return Ok(());
        }
        let (mut uid, mut gid) = real_owner;
        let mut chowned = false;
        if self.host.root && (uid, gid) != (want.uid, want.gid) {
            match rustix::fs::fchown(
                fd,
                Some(Uid::from_raw(want.uid)),
                Some(Gid::from_raw(want.gid)),
            ) {
                Ok(()) => {
                    (uid, gid) = (want.uid, want.gid);
                    chowned = true;
                }
                // An id not mapped into this user namespace, or no CAP_CHOWN after all.
                Err(Errno::PERM | Errno::INVAL) => {}
                Err(e) => return Err(VfsError::host("chown", path)(e)),
            }
        }
        let need = if dir { 0o700 } else { 0o600 };
        // Not root: nothing becomes setuid or setgid for real (it would run as kiln's user).
        let real = if self.host.root {
            want.mode
        } else {
            crate::layer::real_mode(want.mode) | need
        };
        if chowned || cur.st_mode & 0o7777 != real {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(real))
                .map_err(VfsError::host("chmod", path))?;
        }
        if (uid, gid, real) != (want.uid, want.gid, want.mode) {
            let record = OverrideStat {
                uid: want.uid,
                gid: want.gid,
                mode: want.mode,
                kind: Some(if dir {
                    OverrideType::Dir
                } else {
                    OverrideType::File
                }),
            };
            fsx::set_xattr(
                fd,
                OVERRIDE_STAT_XATTR.as_bytes(),
                record.to_string().as_bytes(),
            )
            .map_err(VfsError::io("record ownership", path))?;
        } else if record == Record::Replace {
            match rustix::fs::fremovexattr(fd, OVERRIDE_STAT_XATTR) {
                Ok(()) | Err(Errno::NODATA | Errno::NOTSUP) => {}
                Err(e) => return Err(VfsError::host("remove ownership record", path)(e)),
            }
        }
        Ok(())
    }

    /// Sets the owner of the symlink `name` in the upper directory `dir` when the host can;
    /// a symlink cannot carry a record otherwise (Linux allows no user xattrs on symlinks).
    pub(super) fn set_link_owner(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        uid: u32,
        gid: u32,
        path: &ContainerPath,
    ) -> Result<(), VfsError> {
        if !self.host.root {
            return Ok(());
        }
        match rustix::fs::chownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) | Err(Errno::PERM | Errno::INVAL) => Ok(()),
            Err(e) => Err(VfsError::host("chown", path)(e)),
        }
    }

    /// Makes every directory of `stack` exist in the upper, copying up the ones that only
    /// lower layers (or the shims) have, with their metadata.
    /// Inside a bind mount there is nothing to copy: its folder takes writes directly, or
    /// refuses them (`EROFS`) when read-only.
    pub(super) fn ensure_upper(&self, stack: &mut [Level<'_>]) -> Result<(), VfsError> {
        if let Some(level) = stack.iter().rev().find(|l| l.mount.is_some()) {
            return match level.upper() {
                Some(_) => Ok(()),
                None => Err(VfsError::ReadOnly(
                    stack
                        .last()
                        .map_or_else(ContainerPath::root, |l| l.path.clone()),
                )),
            };
        }
        for i in 1..stack.len() {
            if stack[i].upper().is_some() {
                continue;
            }
            let (before, rest) = stack.split_at_mut(i);
            let parent = &before[i - 1];
            let level = &mut rest[0];
            if level.dev {
                return Err(VfsError::ReadOnly(level.path.clone()));
            }
            let path = level.path.clone();
            let name = path.file_name().unwrap_or_default();
            let pfd = parent
                .upper()
                .ok_or_else(|| VfsError::NotFound(parent.path.clone()))?;
            let fd = match fsx::open_dir_at(pfd, name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let src = level.layers.first().map(|(_, fd)| fd.as_fd());
                    self.copy_up_dir(pfd, name, src, &path)?
                }
                Err(e) => return Err(VfsError::host("open directory", &path)(e)),
            };
            level.layers.insert(0, (LayerId::Upper, Fd::Owned(fd)));
        }
        Ok(())
    }

    /// Creates the directory `name` in the upper directory `pfd` as a copy of the lower
    /// directory `src` (its metadata, not its contents), or as a shim directory (0755, root)
    /// when there is none. The parent keeps its times.
    fn copy_up_dir(
        &self,
        pfd: BorrowedFd<'_>,
        name: &str,
        src: Option<BorrowedFd<'_>>,
        path: &ContainerPath,
    ) -> Result<OwnedFd, VfsError> {
        let parent_st = rustix::fs::fstat(pfd).map_err(VfsError::host("stat", path))?;
        let (want, times) = match src {
            Some(s) => {
                let st = rustix::fs::fstat(s).map_err(VfsError::host("stat", path))?;
                (guest_owner(&st, read_override(s).as_ref()), Some(st))
            }
            None => (
                Owner {
                    uid: 0,
                    gid: 0,
                    mode: 0o755,
                },
                None,
            ),
        };
        rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
            .map_err(VfsError::host("copy up directory", path))?;
        let fd = fsx::open_dir_at(pfd, name).map_err(VfsError::host("open directory", path))?;
        if let Some(s) = src {
            copy_xattrs(s, fd.as_fd(), false).map_err(VfsError::io("copy xattrs", path))?;
        }
        self.set_owner_mode(fd.as_fd(), want, true, Record::New, path)?;
        if let Some(st) = times {
            rustix::fs::futimens(&fd, &timestamps(&st))
                .map_err(VfsError::host("set times", path))?;
        }
        restore_dir_times(pfd, &parent_st).map_err(VfsError::host("set times", path))?;
        Ok(fd)
    }

    /// Copies the object `name` of the merged directory `level` (whose upper directory
    /// exists) into the upper, unless it is there already: a regular file with its data when
    /// `data` (else empty), a directory without its contents, a symlink as a symlink. Mode,
    /// owner, times and xattrs come along; a lower hard link is broken. A shim becomes an
    /// empty 0755 file owned by root. The parent directory keeps its times.
    pub(super) fn copy_up(
        &self,
        level: &Level<'_>,
        name: &str,
        hit: &Hit,
        data: bool,
    ) -> Result<(), VfsError> {
        let path = level.path.child(name);
        let upper = level
            .upper()
            .ok_or_else(|| VfsError::NotFound(level.path.clone()))?;
        let parent_st = rustix::fs::fstat(upper).map_err(VfsError::host("stat", &path))?;
        match hit {
            Hit::Real {
                layer: LayerId::Upper | LayerId::Mount(_),
                ..
            }
            | Hit::Root => return Ok(()),
            Hit::DevDir | Hit::Device(_) => return Err(VfsError::ReadOnly(path)),
            Hit::Mount(_) => return Err(VfsError::Busy(path)),
            Hit::ShimDir => {
                self.copy_up_dir(upper, name, None, &path)?;
            }
            Hit::ShimFile(_) => {
                self.clear_name(upper, name, &path)?;
                let fd = rustix::fs::openat(upper, name, CREATE_FLAGS, Mode::from_raw_mode(0o600))
                    .map_err(VfsError::host("copy up", &path))?;
                let want = Owner {
                    uid: 0,
                    gid: 0,
                    mode: 0o755,
                };
                self.set_owner_mode(fd.as_fd(), want, false, Record::New, &path)?;
            }
            Hit::Real { layer, st } => {
                let src = level
                    .fd(*layer)
                    .ok_or_else(|| VfsError::NotFound(path.clone()))?;
                self.copy_node(src, upper, name, st, data, &path)?;
            }
        }
        restore_dir_times(upper, &parent_st).map_err(VfsError::host("set times", &path))
    }

    /// Copies one object `name` from the lower directory `src` to the upper directory `dst`.
    fn copy_node(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &str,
        st: &Stat,
        data: bool,
        path: &ContainerPath,
    ) -> Result<(), VfsError> {
        match file_type(st) {
            FileType::Directory => {
                let sfd = fsx::open_dir_at(src, name).map_err(VfsError::host("open", path))?;
                self.copy_up_dir(dst, name, Some(sfd.as_fd()), path)?;
                Ok(())
            }
            FileType::RegularFile => {
                let sfd = rustix::fs::openat(src, name, READ_FLAGS, Mode::empty())
                    .map_err(VfsError::host("open", path))?;
                let sst = rustix::fs::fstat(&sfd).map_err(VfsError::host("stat", path))?;
                if file_type(&sst) != FileType::RegularFile {
                    return Err(VfsError::host("copy up", path)(Errno::AGAIN));
                }
                let want = guest_owner(&sst, read_override(sfd.as_fd()).as_ref());
                let dfd = rustix::fs::openat(dst, name, CREATE_FLAGS, Mode::from_raw_mode(0o600))
                    .map_err(VfsError::host("copy up", path))?;
                let mut out = std::fs::File::from(dfd);
                if data {
                    let mut input = std::fs::File::from(
                        sfd.try_clone().map_err(VfsError::io("copy up", path))?,
                    );
                    io::copy(&mut input, &mut out).map_err(VfsError::io("copy up", path))?;
                }
                copy_xattrs(sfd.as_fd(), out.as_fd(), false)
                    .map_err(VfsError::io("copy xattrs", path))?;
                self.set_owner_mode(out.as_fd(), want, false, Record::New, path)?;
                copy_xattrs(sfd.as_fd(), out.as_fd(), true)
                    .map_err(VfsError::io("copy xattrs", path))?;
                rustix::fs::futimens(&out, &timestamps(&sst))
                    .map_err(VfsError::host("set times", path))
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src, name, Vec::new())
                    .map_err(VfsError::host("read link", path))?;
                rustix::fs::symlinkat(target.as_c_str(), dst, name)
                    .map_err(VfsError::host("copy up", path))?;
                self.set_link_owner(dst, name, st.st_uid, st.st_gid, path)?;
                rustix::fs::utimensat(dst, name, &timestamps(st), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(VfsError::host("set times", path))
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                let ft = file_type(st);
                let made =
                    rustix::fs::mknodat(dst, name, ft, Mode::from_raw_mode(0o600), st.st_rdev);
                match made {
                    Ok(()) => {
                        self.set_link_owner(dst, name, st.st_uid, st.st_gid, path)?;
                        let pfd = rustix::fs::openat(
                            dst,
                            name,
                            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(VfsError::host("open", path))?;
                        fsx::chmod_o_path(pfd.as_fd(), st.st_mode & 0o7777)
                            .map_err(VfsError::io("chmod", path))?;
                    }
                    Err(Errno::PERM) => {
                        // No CAP_MKNOD: an empty file that records what it stands for.
                        let fd =
                            rustix::fs::openat(dst, name, CREATE_FLAGS, Mode::from_raw_mode(0o600))
                                .map_err(VfsError::host("copy up", path))?;
                        let (major, minor) =
                            (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                        let kind = if ft == FileType::BlockDevice {
                            OverrideType::Block { major, minor }
                        } else {
                            OverrideType::Char { major, minor }
                        };
                        let record = OverrideStat {
                            uid: st.st_uid,
                            gid: st.st_gid,
                            mode: st.st_mode & 0o7777,
                            kind: Some(kind),
                        };
                        fsx::set_xattr(
                            fd.as_fd(),
                            OVERRIDE_STAT_XATTR.as_bytes(),
                            record.to_string().as_bytes(),
                        )
                        .map_err(VfsError::io("record ownership", path))?;
                    }
                    Err(e) => return Err(VfsError::host("copy up", path)(e)),
                }
                rustix::fs::utimensat(dst, name, &timestamps(st), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(VfsError::host("set times", path))
            }
            _ => Err(VfsError::AccessDenied(path.clone())),
        }
    }

    /// Copies the directory `name` of `level` into the upper with its whole merged subtree,
    /// and marks it opaque, so that it no longer depends on any lower layer and can move.
    /// Shims inside are left out: they never land in the upper.
    pub(super) fn copy_up_tree(
        &self,
        level: &Level<'_>,
        name: &str,
        hit: &Hit,
        state: &State,
    ) -> Result<(), VfsError> {
        let path = level.path.child(name);
        self.copy_up(level, name, hit, true)?;
        let hit = self
            .lookup(level, name, state)?
            .ok_or_else(|| VfsError::NotFound(path.clone()))?;
        let sub = self.descend(level, name, &hit, state)?;
        let upper = sub
            .upper()
            .ok_or_else(|| VfsError::NotFound(path.clone()))?;
        let upper_st = rustix::fs::fstat(upper).map_err(VfsError::host("stat", &path))?;
        for child in self.list(&sub, state)?.into_keys() {
            let Some(chit) = self.lookup(&sub, &child, state)? else {
                continue;
            };
            match &chit {
                Hit::ShimFile(_) => {}
                Hit::Real {
                    layer: LayerId::Upper,
                    ..
                } if !chit.is_dir() => {}
                _ if chit.is_dir() => self.copy_up_tree(&sub, &child, &chit, state)?,
                _ => self.copy_up(&sub, &child, &chit, true)?,
            }
        }
        self.make_opaque(upper, &path)?;
        restore_dir_times(upper, &upper_st).map_err(VfsError::host("set times", &path))
    }

    /// Marks the upper directory `dir` opaque and drops the whiteouts inside it, which an
    /// opaque directory does not need.
    pub(super) fn make_opaque(
        &self,
        dir: BorrowedFd<'_>,
        path: &ContainerPath,
    ) -> Result<(), VfsError> {
        let by_xattr = match fsx::set_xattr(dir, OPAQUE_XATTR.as_bytes(), b"y") {
            Ok(()) => true,
            Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::PERM | Errno::NOTSUP)) => {
                false
            }
            Err(e) => return Err(VfsError::io("mark opaque", path)(e)),
        };
        for child in fsx::children(dir).map_err(VfsError::io("list", path))? {
            let is_marker = child.starts_with(WHITEOUT_PREFIX.as_bytes());
            if is_marker && (by_xattr || child != OPAQUE_MARKER.as_bytes()) {
                rustix::fs::unlinkat(dir, child.as_slice(), AtFlags::empty())
                    .map_err(VfsError::host("remove whiteout", path))?;
                continue;
            }
            match rustix::fs::statat(dir, child.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if is_whiteout(&st) => {
                    rustix::fs::unlinkat(dir, child.as_slice(), AtFlags::empty())
                        .map_err(VfsError::host("remove whiteout", path))?
                }
                Ok(_) | Err(Errno::NOENT) => {}
                Err(e) => return Err(VfsError::host("stat", path)(e)),
            }
        }
        if !by_xattr {
            let made = rustix::fs::openat(dir, OPAQUE_MARKER, CREATE_FLAGS, Mode::empty());
            match made {
                Ok(_) | Err(Errno::EXIST) => {}
                Err(e) => return Err(VfsError::host("mark opaque", path)(e)),
            }
        }
        Ok(())
    }

    /// Records in the upper directory `dir` that `name` is deleted: a 0:0 character device,
    /// or an empty `.wh.<name>` file where the host cannot make device nodes.
    pub(super) fn whiteout(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &ContainerPath,
    ) -> Result<(), VfsError> {
        match rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0) {
            Ok(()) => Ok(()),
            Err(Errno::PERM) => {
                let made = rustix::fs::openat(
                    dir,
                    marker_name(name).as_str(),
                    CREATE_FLAGS,
                    Mode::empty(),
                );
                match made {
                    Ok(_) | Err(Errno::EXIST) => Ok(()),
                    Err(e) => Err(VfsError::host("whiteout", path)(e)),
                }
            }
            Err(e) => Err(VfsError::host("whiteout", path)(e)),
        }
    }

    /// Removes a whiteout of `name` from the upper directory `dir`, so something new can take
    /// the name. Returns whether there was one.
    /// Clears `name` of the merged directory `level` for a new object: as
    /// [`Self::clear_name`] in the upper; in a bind mount, names are only what they are.
    pub(super) fn clear_name_in(
        &self,
        level: &Level<'_>,
        name: &str,
        path: &ContainerPath,
    ) -> Result<(), VfsError> {
        if level.mount.is_some() {
            return Ok(());
        }
        let upper = level
            .upper()
            .ok_or_else(|| VfsError::NotFound(level.path.clone()))?;
        self.clear_name(upper, name, path).map(drop)
    }

    pub(super) fn clear_name(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &ContainerPath,
    ) -> Result<bool, VfsError> {
        let mut found = false;
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if is_whiteout(&st) => {
                rustix::fs::unlinkat(dir, name, AtFlags::empty())
                    .map_err(VfsError::host("remove whiteout", path))?;
                found = true;
            }
            Ok(_) => return Err(VfsError::Exists(path.clone())),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(VfsError::host("stat", path)(e)),
        }
        match rustix::fs::unlinkat(dir, marker_name(name).as_str(), AtFlags::empty()) {
            Ok(()) => found = true,
            Err(Errno::NOENT | Errno::NAMETOOLONG) => {}
            Err(e) => return Err(VfsError::host("remove whiteout", path)(e)),
        }
        Ok(found)
    }

    /// Removes `name` (recursively for a directory) from the upper directory `dir`, with any
    /// marker file for it.
    pub(super) fn remove_upper(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &ContainerPath,
    ) -> Result<(), VfsError> {
        match fsx::remove_all_at(dir, name.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(VfsError::io("remove", path)(e)),
        }
        match rustix::fs::unlinkat(dir, marker_name(name).as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT | Errno::NAMETOOLONG) => Ok(()),
            Err(e) => Err(VfsError::host("remove whiteout", path)(e)),
        }
    }
}
