//! Extracting layer tars (and other untrusted tars) without ever writing outside the destination.
//!
//! All resolution is descriptor-relative: each entry's parent is reached from the destination's
//! descriptor one component at a time with `O_NOFOLLOW | O_DIRECTORY`, the last component is
//! created with `O_EXCL` (or `mkdirat`/`symlinkat`/`linkat`/`mknodat`, which never follow it)
//! after removing whatever was there, and metadata is set through the new descriptor. A symlink
//! in the tar can therefore never redirect a later entry, and a racing process that swaps a
//! directory for a symlink makes extraction fail rather than escape (CVE-2018-15664-style
//! races, CVE-2019-14271 / CVE-2021-30465-style symlink-then-write archives).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use super::compress::decompress_auto;
use super::override_stat::{OverrideStat, OverrideType};
use super::reader::{Entry, Kind, Limits, TarReader};
use super::{keep_xattr, lossy, LayerError, Malformed, Refusal};
use super::{OPAQUE_MARKER, OPAQUE_XATTR, OVERRIDE_STAT_XATTR, WHITEOUT_PREFIX};
use crate::digest::{DiffId, HashingReader};
use crate::fsx;

/// Data copy buffer: the only per-archive buffer, whatever the entry sizes.
const CHUNK: usize = 256 * 1024;

/// What to do with OCI whiteout entries (`.wh.<name>`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Unpacking a layer into an empty snapshot folder: a whiteout becomes an overlay whiteout
    /// (a 0:0 character device; a `.wh.<name>` empty file where the kernel refuses the device)
    /// and an opaque marker sets `user.overlay.opaque=y` on its directory (a `.wh..wh..opq`
    /// empty file where user xattrs are unsupported).
    Overlay,
    /// Applying a layer onto an existing tree (flattening for export or run): a whiteout deletes
    /// its target, an opaque marker deletes what the directory held before this archive.
    Apply,
    /// An archive that is not a layer (ADD of a local tar, a build context): `.wh.` entries
    /// are refused, because in an upper folder a `.wh.<name>` file *is* a whiteout marker, so
    /// keeping it as a plain file would delete `<name>` from the image.
    Refuse,
}

/// How [`unpack_layer`] extracts.
///
/// Names are interpreted like Docker does: a leading `/` is stripped (`/etc/passwd` extracts to
/// `etc/passwd` inside the destination) and `.` components are dropped; unlike Docker, any `..`
/// component is refused, even one that would stay inside. A root entry (`./`) that is a
/// directory is skipped; the destination's own metadata is left alone. Later entries replace
/// earlier ones of the same name (a directory over a directory merges). Missing parent
/// directories are created `0755`, owned by 0:0. A 0:0 character device entry is refused in
/// every mode: it is no real device, and in a snapshot, an upper or a tree later used as an
/// overlay lower it would read as a whiteout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// What whiteout entries mean.
    pub whiteouts: Whiteouts,
    /// Whether character and block devices may be created; refused otherwise.
    pub allow_devices: bool,
    /// Reproduce the tar's uid/gid: `lchown` when running as root, else (or when the kernel
    /// refuses the id) record them in `user.containers.override_stat` on files and directories
    /// (Linux allows user xattrs on nothing else, so a symlink or fifo keeps the caller's
    /// ownership). When off, everything belongs to the caller.
    pub same_owner: bool,
    /// Size limits, checked before anything of an entry is written.
    pub limits: Limits,
}

impl UnpackOptions {
    /// Unpacking a layer into an empty snapshot folder ([`Whiteouts::Overlay`], devices allowed,
    /// ownership preserved, default limits).
    pub fn snapshot() -> Self {
        Self {
            whiteouts: Whiteouts::Overlay,
            allow_devices: true,
            same_owner: true,
            limits: Limits::default(),
        }
    }

    /// Applying a layer onto an existing tree ([`Whiteouts::Apply`], devices allowed, ownership
    /// preserved, default limits).
    pub fn apply() -> Self {
        Self {
            whiteouts: Whiteouts::Apply,
            ..Self::snapshot()
        }
    }

    /// Extracting an archive that is not a layer, such as ADD of a local tar or a build context
    /// ([`Whiteouts::Refuse`], no devices, ownership preserved, default limits).
    pub fn archive() -> Self {
        Self {
            whiteouts: Whiteouts::Refuse,
            allow_devices: false,
            ..Self::snapshot()
        }
    }
}

/// What [`unpack_layer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream, to check against an image config's `diff_ids`.
    pub diff_id: DiffId,
    /// Length of the uncompressed tar stream.
    pub tar_size: u64,
    /// Entries read (extended headers not counted).
    pub entries: u64,
    /// Bytes of file data written.
    pub file_bytes: u64,
    /// xattrs that the destination filesystem or the kernel refused (`EPERM`, `ENOTSUP`), or
    /// that sit on entries that cannot carry them (symlinks, devices, fifos). Docker skips these
    /// too; a caller that needs them can fail on a non-zero count.
    pub skipped_xattrs: u64,
}

/// Extracts a tar, compressed or not (see [`decompress_auto`]), into `dest`.
///
/// With [`Whiteouts::Overlay`] `dest` must be empty. Nothing is ever created, changed or removed
/// outside `dest`; entries that would are refused with [`LayerError::Refused`], and so are
/// entries beyond [`UnpackOptions::limits`]. Memory stays bounded whatever the archive holds:
/// data streams through one fixed buffer, and per entry kiln keeps 16 bytes (a hash of its
/// path, for hardlink checks and opaque directories) plus 16 more for directories (their
/// mtime, restored after their contents are written).
pub fn unpack_layer<R: Read>(
    reader: R,
    dest: &Dir,
    opts: &UnpackOptions,
) -> Result<UnpackStats, LayerError> {
    let root = fsx::open_dir_at(dest.as_fd(), c".")
        .map_err(|e| extract_err(b"", "open destination", e))?;
    if opts.whiteouts == Whiteouts::Overlay
        && !fsx::is_empty_dir(root.as_fd()).map_err(|e| extract_err(b"", "list destination", e))?
    {
        return Err(LayerError::DestinationNotEmpty);
    }
    let hashing = HashingReader::new(decompress_auto(reader)?);
    let mut tar = TarReader::new(hashing, opts.limits);
    let uid = rustix::process::geteuid();
    let mut x = Extractor {
        root: root.as_fd(),
        cwd: None,
        ctx: Ctx {
            opts,
            is_root: super::host_is_root(),
            euid: uid.as_raw(),
            egid: rustix::process::getegid().as_raw(),
            extracted: HashSet::new(),
            dir_times: HashMap::new(),
            buf: vec![0; CHUNK],
            entries: 0,
            file_bytes: 0,
            skipped_xattrs: 0,
        },
    };
    while let Some(entry) = tar.next_entry()? {
        x.ctx.entries += 1;
        x.entry(&entry, &mut tar)?;
    }
    x.leave()?;
    // diff_id covers the whole stream, including padding after the end-of-archive marker.
    let budget = opts.limits.max_total_bytes.saturating_sub(tar.claimed());
    let mut hashing = tar.into_inner();
    let trailing = io::copy(
        &mut (&mut hashing).take(budget.saturating_add(1)),
        &mut io::sink(),
    )
    .map_err(LayerError::ReadArchive)?;
    if trailing > budget {
        return Err(LayerError::Malformed {
            offset: hashing.bytes_read(),
            reason: Malformed::TrailingData,
        });
    }
    let (hash, tar_size) = hashing.finish();
    Ok(UnpackStats {
        diff_id: DiffId::from_bytes(hash),
        tar_size,
        entries: x.ctx.entries,
        file_bytes: x.ctx.file_bytes,
        skipped_xattrs: x.ctx.skipped_xattrs,
    })
}

fn extract_err(path: &[u8], op: &'static str, e: impl Into<io::Error>) -> LayerError {
    LayerError::Extract {
        path: lossy(path),
        op,
        source: e.into(),
    }
}

fn refused(path: &[u8], reason: Refusal) -> LayerError {
    LayerError::Refused {
        path: lossy(path),
        reason,
    }
}

/// A path hash: what kiln remembers about each extracted entry.
type Key = [u8; 16];

fn key(path: &[u8]) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&blake3::hash(path).as_bytes()[..16]);
    k
}

/// A tar name after normalisation: components joined by `/`, no leading `/`, no `.`.
struct Norm {
    path: Vec<u8>,
    /// Where the last component starts.
    name_start: usize,
}

impl Norm {
    fn parse(raw: &[u8]) -> Result<Self, Refusal> {
        let mut path = Vec::with_capacity(raw.len());
        let mut name_start = 0;
        for comp in raw.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => continue,
                b".." => return Err(Refusal::LeavesDestination),
                _ => {}
            }
            if !path.is_empty() {
                path.push(b'/');
            }
            name_start = path.len();
            path.extend_from_slice(comp);
        }
        Ok(Self { path, name_start })
    }

    fn parent(&self) -> &[u8] {
        &self.path[..self.name_start.saturating_sub(1)]
    }

    fn name(&self) -> &[u8] {
        &self.path[self.name_start..]
    }

    fn parent_components(&self) -> impl Iterator<Item = &[u8]> {
        self.parent()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
    }
}

/// The parent directory of the previous entry, kept open because entries come grouped.
struct OpenDir {
    path: Vec<u8>,
    fd: OwnedFd,
}

struct Extractor<'a> {
    root: BorrowedFd<'a>,
    /// The open parent of the previous entry; `None` means the root.
    cwd: Option<OpenDir>,
    ctx: Ctx<'a>,
}

/// Everything but the open parent, so both can be borrowed at once.
struct Ctx<'a> {
    opts: &'a UnpackOptions,
    is_root: bool,
    euid: u32,
    egid: u32,
    /// Hashes of the paths this archive extracted (not whiteouts).
    extracted: HashSet<Key>,
    /// mtimes of directory entries, restored whenever kiln leaves the directory.
    dir_times: HashMap<Key, (i64, u32)>,
    buf: Vec<u8>,
    entries: u64,
    file_bytes: u64,
    skipped_xattrs: u64,
}

/// What to create for a non-whiteout entry, decided before anything is written.
enum Plan {
    Dir,
    Regular,
    Symlink,
    HardLink(Norm),
    Special,
}

/// Opens `parent` (creating missing directories when `create`), reusing the open parent of the
/// previous entry when it is the same; `None` when it is missing and `create` is off.
fn enter<'s>(
    root: BorrowedFd<'s>,
    cwd: &'s mut Option<OpenDir>,
    ctx: &Ctx<'_>,
    parent: &[u8],
    create: bool,
    display: &[u8],
) -> Result<Option<BorrowedFd<'s>>, LayerError> {
    let same = matches!(cwd, Some(d) if d.path == parent);
    if !same {
        leave(cwd, ctx)?;
        if parent.is_empty() {
            return Ok(Some(root));
        }
        match ctx.walk(root, parent, create, display)? {
            Some(fd) => {
                *cwd = Some(OpenDir {
                    path: parent.to_vec(),
                    fd,
                })
            }
            None => return Ok(None),
        }
    }
    Ok(match cwd {
        Some(d) => Some(d.fd.as_fd()),
        None => Some(root),
    })
}

/// Leaves the open parent, restoring its mtime (creating children changed it).
fn leave(cwd: &mut Option<OpenDir>, ctx: &Ctx<'_>) -> Result<(), LayerError> {
    if let Some(dir) = cwd.take() {
        ctx.restore_time(dir.fd.as_fd(), &dir.path)?;
    }
    Ok(())
}

impl Extractor<'_> {
    fn leave(&mut self) -> Result<(), LayerError> {
        leave(&mut self.cwd, &self.ctx)
    }

    fn entry<R: Read>(&mut self, e: &Entry, tar: &mut TarReader<R>) -> Result<(), LayerError> {
        let norm = Norm::parse(&e.path).map_err(|r| refused(&e.path, r))?;
        if norm.path.is_empty() {
            return match e.kind {
                Kind::Dir => Ok(()),
                _ => Err(refused(&e.path, Refusal::NamesRoot)),
            };
        }
        let wh = WHITEOUT_PREFIX.as_bytes();
        if norm.parent_components().any(|c| c.starts_with(b".wh..wh.")) {
            // AUFS metadata (`.wh..wh.plnk/...`); Docker skips it too.
            if self.ctx.opts.whiteouts == Whiteouts::Refuse {
                return Err(refused(&e.path, Refusal::WhiteoutNotAllowed));
            }
            return Ok(());
        }
        if norm.parent_components().any(|c| c.starts_with(wh)) {
            return Err(refused(&e.path, Refusal::WhiteoutAsDirectory));
        }
        if norm.name().starts_with(wh) {
            return self.whiteout(e, &norm);
        }
        let plan = match e.kind {
            Kind::Dir => Plan::Dir,
            Kind::Regular => Plan::Regular,
            Kind::Symlink => Plan::Symlink,
            Kind::HardLink => Plan::HardLink(self.ctx.link_target(e)?),
            Kind::Char | Kind::Block if !self.ctx.opts.allow_devices => {
                return Err(refused(&e.path, Refusal::DeviceNotAllowed))
            }
            Kind::Char if e.major == 0 && e.minor == 0 => {
                return Err(refused(&e.path, Refusal::WhiteoutDevice))
            }
            Kind::Char | Kind::Block | Kind::Fifo => Plan::Special,
        };
        let root = self.root;
        let name = norm.name();
        let Some(pfd) = enter(root, &mut self.cwd, &self.ctx, norm.parent(), true, &e.path)? else {
            return Err(extract_err(
                &e.path,
                "create parent directory",
                Errno::NOENT,
            ));
        };
        let ctx = &mut self.ctx;
        match plan {
            Plan::Dir => ctx.dir(pfd, name, &norm.path, e)?,
            Plan::Regular => ctx.regular(pfd, name, e, tar)?,
            Plan::Symlink => ctx.symlink(pfd, name, e)?,
            Plan::HardLink(target) => ctx.hardlink(root, pfd, name, e, &target)?,
            Plan::Special => ctx.special(pfd, name, e)?,
        }
        ctx.extracted.insert(key(&norm.path));
        Ok(())
    }

    /// A `.wh.` entry.
    fn whiteout(&mut self, e: &Entry, norm: &Norm) -> Result<(), LayerError> {
        let mode = self.ctx.opts.whiteouts;
        if mode == Whiteouts::Refuse {
            return Err(refused(&e.path, Refusal::WhiteoutNotAllowed));
        }
        let name = norm.name();
        if name == OPAQUE_MARKER.as_bytes() {
            return self.opaque(e, norm.parent());
        }
        if name.starts_with(b".wh..wh.") {
            // Other AUFS metadata (`.wh..wh.aufs`); Docker skips it too.
            return Ok(());
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(refused(&e.path, Refusal::BadWhiteout));
        }
        let create = mode == Whiteouts::Overlay;
        let Some(pfd) = enter(
            self.root,
            &mut self.cwd,
            &self.ctx,
            norm.parent(),
            create,
            &e.path,
        )?
        else {
            // Applying: nothing below to delete.
            return Ok(());
        };
        match fsx::remove_all_at(pfd, target) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(extract_err(&e.path, "remove whiteout target", err)),
        }
        if mode == Whiteouts::Apply {
            return Ok(());
        }
        match rustix::fs::mknodat(pfd, target, FileType::CharacterDevice, Mode::empty(), 0) {
            Ok(()) => Ok(()),
            // Without the right to create a 0:0 device (before Linux 5.8, or in some user
            // namespaces) the marker file is the accepted fallback.
            Err(Errno::PERM) => create_marker(pfd, name, &e.path),
            Err(err) => Err(extract_err(&e.path, "create whiteout", err)),
        }
    }

    /// A `.wh..wh..opq` entry for the directory `parent`.
    fn opaque(&mut self, e: &Entry, parent: &[u8]) -> Result<(), LayerError> {
        let overlay = self.ctx.opts.whiteouts == Whiteouts::Overlay;
        let Some(pfd) = enter(
            self.root,
            &mut self.cwd,
            &self.ctx,
            parent,
            overlay,
            &e.path,
        )?
        else {
            return Ok(());
        };
        if overlay {
            return match fsx::set_xattr(pfd, OPAQUE_XATTR.as_bytes(), b"y") {
                Ok(()) => Ok(()),
                Err(err)
                    if matches!(
                        Errno::from_io_error(&err),
                        Some(Errno::PERM | Errno::NOTSUP)
                    ) =>
                {
                    create_marker(pfd, OPAQUE_MARKER.as_bytes(), &e.path)
                }
                Err(err) => Err(extract_err(&e.path, "mark directory opaque", err)),
            };
        }
        // Applying: delete what this archive did not put there.
        let children =
            fsx::children(pfd).map_err(|err| extract_err(&e.path, "list directory", err))?;
        let mut child_path = Vec::new();
        for child in children {
            child_path.clear();
            if !parent.is_empty() {
                child_path.extend_from_slice(parent);
                child_path.push(b'/');
            }
            child_path.extend_from_slice(&child);
            if !self.ctx.extracted.contains(&key(&child_path)) {
                fsx::remove_all_at(pfd, &child)
                    .map_err(|err| extract_err(&e.path, "remove opaque directory contents", err))?;
            }
        }
        Ok(())
    }
}

/// The ownership, mode and type an entry asks for.
fn wanted(e: &Entry, kind: OverrideType) -> OverrideStat {
    OverrideStat {
        uid: e.uid,
        gid: e.gid,
        mode: e.mode,
        kind: Some(kind),
    }
}

/// Creates an empty `.wh.` marker file; one that is already there is fine.
fn create_marker(dir: BorrowedFd<'_>, name: &[u8], display: &[u8]) -> Result<(), LayerError> {
    match rustix::fs::openat(dir, name, CREATE_FLAGS, Mode::from_raw_mode(0o600)) {
        Ok(_) | Err(Errno::EXIST) => Ok(()),
        Err(err) => Err(extract_err(display, "create whiteout marker", err)),
    }
}

/// Flags for creating a file: never follows or reuses what is there.
const CREATE_FLAGS: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

impl Ctx<'_> {
    /// Opens the directory `path` below `root` one component at a time, never following a
    /// symlink, creating missing components when `create`.
    fn walk(
        &self,
        root: BorrowedFd<'_>,
        path: &[u8],
        create: bool,
        display: &[u8],
    ) -> Result<Option<OwnedFd>, LayerError> {
        let mut cur: Option<OwnedFd> = None;
        let mut start = 0;
        for comp in path.split(|&b| b == b'/') {
            let end = start + comp.len();
            let at = cur.as_ref().map_or(root, |fd| fd.as_fd());
            let next = match fsx::open_dir_at(at, comp) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(at, comp, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(err) => {
                            return Err(extract_err(display, "create parent directory", err))
                        }
                    }
                    let fd = fsx::open_dir_at(at, comp)
                        .map_err(|err| self.classify(at, comp, &path[..end], display, err))?;
                    self.implicit_dir(fd.as_fd(), display)?;
                    if start > 0 {
                        self.restore_time(at, &path[..start - 1])?;
                    }
                    fd
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(err) => return Err(self.classify(at, comp, &path[..end], display, err)),
            };
            cur = Some(next);
            start = end + 1;
        }
        Ok(cur)
    }

    /// Explains why a parent component could not be opened as a directory.
    fn classify(
        &self,
        at: BorrowedFd<'_>,
        comp: &[u8],
        prefix: &[u8],
        display: &[u8],
        err: Errno,
    ) -> LayerError {
        match rustix::fs::statat(at, comp, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => refused(
                display,
                Refusal::ThroughSymlink {
                    parent: lossy(prefix),
                },
            ),
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => refused(
                display,
                Refusal::ParentNotDirectory {
                    parent: lossy(prefix),
                },
            ),
            _ => extract_err(display, "open parent directory", err),
        }
    }

    /// Gives a directory created for a missing parent the owner and mode Docker gives it.
    fn implicit_dir(&self, fd: BorrowedFd<'_>, display: &[u8]) -> Result<(), LayerError> {
        let record = self.set_owner(fd, 0, 0, None, display)?;
        let want = OverrideStat {
            uid: 0,
            gid: 0,
            mode: 0o755,
            kind: Some(OverrideType::Dir),
        };
        self.set_mode_and_record(fd, want, record, None, display)
    }

    /// Restores the mtime of directory `path` (open as `fd`) if the archive gave it one.
    fn restore_time(&self, fd: BorrowedFd<'_>, path: &[u8]) -> Result<(), LayerError> {
        if let Some(&(secs, nanos)) = self.dir_times.get(&key(path)) {
            rustix::fs::futimens(fd, &fsx::times(secs, nanos))
                .map_err(|e| extract_err(path, "set directory times", e))?;
        }
        Ok(())
    }

    /// Sets the owner of an open file or directory if asked to; whether it must be recorded.
    fn set_owner(
        &self,
        fd: BorrowedFd<'_>,
        uid: u32,
        gid: u32,
        existing: Option<&Stat>,
        display: &[u8],
    ) -> Result<bool, LayerError> {
        if !self.opts.same_owner {
            return Ok(false);
        }
        if !self.is_root {
            return Ok((uid, gid) != super::container_owner(self.euid, self.egid));
        }
        if existing.is_some_and(|st| (st.st_uid, st.st_gid) == (uid, gid)) {
            return Ok(false);
        }
        match rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))) {
            Ok(()) => Ok(false),
            // An id not mapped into this user namespace, or no CAP_CHOWN after all.
            Err(Errno::INVAL | Errno::PERM) => Ok(true),
            Err(e) => Err(extract_err(display, "chown", e)),
        }
    }

    /// Sets the mode (keeping the caller able to use the entry when not root) and records
    /// `want` when ownership or mode could not be set for real. On an `existing` directory only
    /// what differs is written, and a stale record is removed.
    fn set_mode_and_record(
        &self,
        fd: BorrowedFd<'_>,
        mut want: OverrideStat,
        mut record: bool,
        existing: Option<&Stat>,
        display: &[u8],
    ) -> Result<(), LayerError> {
        let kind = want.kind.unwrap_or(OverrideType::File);
        let mut real = want.mode;
        if !self.is_root {
            // Without CAP_DAC_OVERRIDE a 0500 directory could not be filled, nor a 0000 file
            // archived later; keep owner access and record the real mode instead. Nor does a
            // file become setuid or setgid for real: it would run as kiln's user.
            let need = if kind == OverrideType::Dir {
                0o700
            } else {
                0o600
            };
            let kept = super::real_mode(real) | need;
            if kept != real {
                real = kept;
                record = true;
            }
        }
        if !matches!(kind, OverrideType::File | OverrideType::Dir) {
            record = true;
        }
        if existing.is_none_or(|st| st.st_mode & 0o7777 != real) {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(real))
                .map_err(|e| extract_err(display, "chmod", e))?;
        }
        let name = OVERRIDE_STAT_XATTR.as_bytes();
        if !record {
            if existing.is_some() {
                match rustix::fs::fremovexattr(fd, name) {
                    Ok(()) | Err(Errno::NODATA | Errno::NOTSUP) => {}
                    Err(e) => return Err(extract_err(display, "remove stale ownership record", e)),
                }
            }
        } else {
            if !self.opts.same_owner {
                (want.uid, want.gid) = super::container_owner(self.euid, self.egid);
            }
            let value = want.to_string();
            let mut current = [0u8; 64];
            let unchanged = existing.is_some()
                && rustix::fs::fgetxattr(fd, name, &mut current[..])
                    .is_ok_and(|n| current.get(..n) == Some(value.as_bytes()));
            if !unchanged {
                fsx::set_xattr(fd, name, value.as_bytes())
                    .map_err(|e| extract_err(display, "record ownership", e))?;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and times of a file or directory the archive created (or, for a
    /// directory, found `existing`), through its descriptor. Order matters: chown clears setuid
    /// bits and file capabilities, so mode and xattrs come after it, and times come last.
    fn finish_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        e: &Entry,
        kind: OverrideType,
        existing: Option<&Stat>,
    ) -> Result<(), LayerError> {
        let record = self.set_owner(fd, e.uid, e.gid, existing, &e.path)?;
        self.set_mode_and_record(fd, wanted(e, kind), record, existing, &e.path)?;
        for (name, value) in &e.xattrs {
            if !keep_xattr(name) {
                continue;
            }
            match fsx::set_xattr(fd, name, value) {
                Ok(()) => {}
                Err(err)
                    if matches!(
                        Errno::from_io_error(&err),
                        Some(Errno::PERM | Errno::NOTSUP)
                    ) =>
                {
                    self.skipped_xattrs += 1;
                }
                Err(err) => return Err(extract_err(&e.path, "set xattr", err)),
            }
        }
        let same_time = existing.is_some_and(|st| {
            st.st_mtime == e.mtime && st.st_mtime_nsec == u64::from(e.mtime_nsec)
        });
        if same_time {
            return Ok(());
        }
        rustix::fs::futimens(fd, &fsx::times(e.mtime, e.mtime_nsec))
            .map_err(|err| extract_err(&e.path, "set times", err))
    }

    /// Runs `create` once; if the name is taken, removes what is there and runs it again.
    fn replace<T>(
        dir: BorrowedFd<'_>,
        name: &[u8],
        display: &[u8],
        op: &'static str,
        mut create: impl FnMut() -> Result<T, Errno>,
    ) -> Result<T, LayerError> {
        match create() {
            Err(Errno::EXIST) => {
                fsx::remove_all_at(dir, name)
                    .map_err(|e| extract_err(display, "replace existing entry", e))?;
                create().map_err(|e| extract_err(display, op, e))
            }
            other => other.map_err(|e| extract_err(display, op, e)),
        }
    }

    fn dir(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        e: &Entry,
    ) -> Result<(), LayerError> {
        let open = |pfd| {
            fsx::open_dir_at(pfd, name).map_err(|err| extract_err(&e.path, "open directory", err))
        };
        if self.unchanged_dir(pfd, name, e) {
            self.dir_times.insert(key(path), (e.mtime, e.mtime_nsec));
            return Ok(());
        }
        let (fd, existing) = match rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => (open(pfd)?, None),
            Err(Errno::EXIST) => match fsx::open_dir_at(pfd, name) {
                // Merge: layers re-declare `etc/`, `usr/`, ...; write only what differs.
                Ok(fd) => {
                    let st =
                        rustix::fs::fstat(&fd).map_err(|err| extract_err(&e.path, "stat", err))?;
                    (fd, Some(st))
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    Self::replace(pfd, name, &e.path, "create directory", || {
                        rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
                    })?;
                    (open(pfd)?, None)
                }
                Err(err) => return Err(extract_err(&e.path, "open directory", err)),
            },
            Err(err) => return Err(extract_err(&e.path, "create directory", err)),
        };
        self.finish_fd(fd.as_fd(), e, OverrideType::Dir, existing.as_ref())?;
        self.dir_times.insert(key(path), (e.mtime, e.mtime_nsec));
        Ok(())
    }

    /// Whether directory `name` already has exactly the entry's metadata, as one `lstat` can
    /// tell when ownership is real (root) and no xattrs are to be set. Archives re-declaring
    /// the same directory many times then cost one system call per entry.
    fn unchanged_dir(&self, pfd: BorrowedFd<'_>, name: &[u8], e: &Entry) -> bool {
        if !self.is_root || !self.opts.same_owner || e.xattrs.iter().any(|(n, _)| keep_xattr(n)) {
            return false;
        }
        rustix::fs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            FileType::from_raw_mode(st.st_mode) == FileType::Directory
                && (st.st_uid, st.st_gid) == (e.uid, e.gid)
                && st.st_mode & 0o7777 == e.mode
                && st.st_mtime == e.mtime
                && st.st_mtime_nsec == u64::from(e.mtime_nsec)
        })
    }

    fn regular<R: Read>(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        tar: &mut TarReader<R>,
    ) -> Result<(), LayerError> {
        let fd = Self::replace(pfd, name, &e.path, "create file", || {
            rustix::fs::openat(pfd, name, CREATE_FLAGS, Mode::from_raw_mode(0o600))
        })?;
        let mut file = File::from(fd);
        loop {
            let n = tar.read_data(&mut self.buf)?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n])
                .map_err(|err| extract_err(&e.path, "write", err))?;
            self.file_bytes += n as u64;
        }
        self.finish_fd(file.as_fd(), e, OverrideType::File, None)
    }

    fn symlink(&mut self, pfd: BorrowedFd<'_>, name: &[u8], e: &Entry) -> Result<(), LayerError> {
        Self::replace(pfd, name, &e.path, "create symlink", || {
            rustix::fs::symlinkat(e.link.as_slice(), pfd, name)
        })?;
        self.lchown_special(pfd, name, e)?;
        self.skipped_xattrs += e.xattrs.iter().filter(|(n, _)| keep_xattr(n)).count() as u64;
        rustix::fs::utimensat(
            pfd,
            name,
            &fsx::times(e.mtime, e.mtime_nsec),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| extract_err(&e.path, "set times", err))
    }

    /// Owner of a symlink, device or fifo: set as root, otherwise lost (no user xattrs there).
    fn lchown_special(
        &self,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
    ) -> Result<(), LayerError> {
        if !self.opts.same_owner || !self.is_root {
            return Ok(());
        }
        match rustix::fs::chownat(
            pfd,
            name,
            Some(Uid::from_raw(e.uid)),
            Some(Gid::from_raw(e.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) | Err(Errno::INVAL) => Ok(()),
            Err(err) => Err(extract_err(&e.path, "chown", err)),
        }
    }

    /// Checks a hardlink's target: relative, inside, and extracted earlier by this archive.
    fn link_target(&self, e: &Entry) -> Result<Norm, LayerError> {
        let target = || lossy(&e.link);
        if e.link.starts_with(b"/") {
            return Err(refused(
                &e.path,
                Refusal::AbsoluteLinkTarget { target: target() },
            ));
        }
        let norm = Norm::parse(&e.link)
            .map_err(|_| refused(&e.path, Refusal::LinkTargetLeaves { target: target() }))?;
        if norm.path.is_empty() || !self.extracted.contains(&key(&norm.path)) {
            return Err(refused(
                &e.path,
                Refusal::LinkTargetUnknown { target: target() },
            ));
        }
        Ok(norm)
    }

    fn hardlink(
        &mut self,
        root: BorrowedFd<'_>,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        target: &Norm,
    ) -> Result<(), LayerError> {
        let opened;
        let tdir = if target.parent().is_empty() {
            root
        } else {
            opened = self
                .walk(root, target.parent(), false, &e.path)?
                .ok_or_else(|| {
                    extract_err(&e.path, "open hardlink target directory", Errno::NOENT)
                })?;
            opened.as_fd()
        };
        Self::replace(pfd, name, &e.path, "create hardlink", || {
            rustix::fs::linkat(tdir, target.name(), pfd, name, AtFlags::empty())
        })?;
        Ok(())
    }

    /// A character or block device, or a fifo.
    fn special(&mut self, pfd: BorrowedFd<'_>, name: &[u8], e: &Entry) -> Result<(), LayerError> {
        let (ft, kind) = match e.kind {
            Kind::Char => (
                FileType::CharacterDevice,
                OverrideType::Char {
                    major: e.major,
                    minor: e.minor,
                },
            ),
            Kind::Block => (
                FileType::BlockDevice,
                OverrideType::Block {
                    major: e.major,
                    minor: e.minor,
                },
            ),
            _ => (FileType::Fifo, OverrideType::Pipe),
        };
        let dev = rustix::fs::makedev(e.major, e.minor);
        let made = Self::replace(pfd, name, &e.path, "create device", || {
            match rustix::fs::mknodat(pfd, name, ft, Mode::from_raw_mode(0o600), dev) {
                // No CAP_MKNOD: fall back to an empty file with the device recorded on it.
                Err(Errno::PERM) if ft != FileType::Fifo => Ok(false),
                other => other.map(|()| true),
            }
        })?;
        if !made {
            let fd = rustix::fs::openat(pfd, name, CREATE_FLAGS, Mode::from_raw_mode(0o600))
                .map_err(|err| extract_err(&e.path, "create device placeholder", err))?;
            let record = self.set_owner(fd.as_fd(), e.uid, e.gid, None, &e.path)?;
            self.set_mode_and_record(fd.as_fd(), wanted(e, kind), record, None, &e.path)?;
            return rustix::fs::futimens(&fd, &fsx::times(e.mtime, e.mtime_nsec))
                .map_err(|err| extract_err(&e.path, "set times", err));
        }
        self.lchown_special(pfd, name, e)?;
        let path_fd = rustix::fs::openat(
            pfd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| extract_err(&e.path, "open device", err))?;
        let st = rustix::fs::fstat(&path_fd).map_err(|err| extract_err(&e.path, "stat", err))?;
        if FileType::from_raw_mode(st.st_mode) != ft {
            return Err(extract_err(&e.path, "open device", Errno::NOENT));
        }
        fsx::chmod_o_path(path_fd.as_fd(), e.mode)
            .map_err(|err| extract_err(&e.path, "chmod", err))?;
        self.skipped_xattrs += e.xattrs.iter().filter(|(n, _)| keep_xattr(n)).count() as u64;
        rustix::fs::utimensat(
            pfd,
            name,
            &fsx::times(e.mtime, e.mtime_nsec),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| extract_err(&e.path, "set times", err))
    }
}
