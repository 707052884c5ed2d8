//! COPY and ADD: copying files from a source tree (the build context, or another stage's rootfs)
//! into a step's upper folder, with Docker's destination rules.
//!
//! The destination is interpreted against the step's rootfs (its lower layers): a destination
//! that names an existing directory, ends in `/`, or receives several sources is a directory;
//! symlinks on the way are resolved inside the rootfs; directories that already exist below are
//! copied up with their metadata, as overlayfs would, so the layer diff is the same one a kernel
//! overlay would have produced. New files and folders belong to `--chown` (default 0:0), keep
//! their mode unless `--chmod` says otherwise, and keep their modification time.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;

use cap_std::fs::{Dir, DirBuilder, File, Metadata, MetadataExt, OpenOptions};
use cap_std::fs::{DirBuilderExt, OpenOptionsExt};

use crate::ignore::PatternMatcher;
use crate::rootfs::{ContainerPath, EntryKind, LayerView, RootfsError};

/// Errors from copying.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Resolving the destination in the rootfs failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The destination exists and is not a directory, but must be one.
    #[error("cannot copy to {0}: it exists and is not a directory")]
    NotADirectory(ContainerPath),
    /// Reading a source failed.
    #[error("read {path}: {source}")]
    Source {
        /// The source path.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Writing into the upper folder failed.
    #[error("write {path}: {source}")]
    Write {
        /// The destination path in the container.
        path: ContainerPath,
        /// The underlying error.
        source: io::Error,
    },
}

/// A tree files can be copied from: the build context or another stage's rootfs.
pub trait SourceFs: Sync {
    /// Metadata of `path` without following a final symlink.
    fn symlink_metadata(&self, path: &str) -> io::Result<Metadata>;
    /// Opens a regular file.
    fn open_file(&self, path: &str) -> io::Result<File>;
    /// A symlink's target.
    fn link_target(&self, path: &str) -> io::Result<String>;
    /// What its folders are walked through.
    fn tree(&self) -> Tree<'_>;
    /// Whether `path` is hidden from COPY (excluded by `.dockerignore`).
    fn hidden(&self, path: &str) -> bool;
}

/// How a source's folders are walked.
pub enum Tree<'a> {
    /// A plain folder: through open directory handles, a few system calls per file.
    Dir(&'a Dir),
    /// A stage's layers: one level at a time ([`LayerView::child_dir`]), never resolving a
    /// path from the root again.
    Layers(&'a LayerView),
}

/// The build context (or any plain folder) as a source, paths relative to its root.
impl SourceFs for Dir {
    fn symlink_metadata(&self, path: &str) -> io::Result<Metadata> {
        if path.is_empty() {
            self.dir_metadata()
        } else {
            Dir::symlink_metadata(self, path)
        }
    }

    fn open_file(&self, path: &str) -> io::Result<File> {
        self.open(path)
    }

    fn link_target(&self, path: &str) -> io::Result<String> {
        Ok(self
            .read_link_contents(path)?
            .to_string_lossy()
            .into_owned())
    }

    fn tree(&self) -> Tree<'_> {
        Tree::Dir(self)
    }

    fn hidden(&self, _path: &str) -> bool {
        false
    }
}

fn rootfs_io(e: RootfsError) -> io::Error {
    match e {
        RootfsError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

/// Another stage's rootfs as a source; paths are container paths without the leading `/`.
impl SourceFs for LayerView {
    fn symlink_metadata(&self, path: &str) -> io::Result<Metadata> {
        match self
            .lookup(&ContainerPath::parse(path), false)
            .map_err(rootfs_io)?
        {
            Some(e) => Ok(e.meta),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn open_file(&self, path: &str) -> io::Result<File> {
        match self
            .lookup(&ContainerPath::parse(path), false)
            .map_err(rootfs_io)?
        {
            Some(e) => self.open(&e).map_err(rootfs_io),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn link_target(&self, path: &str) -> io::Result<String> {
        match self
            .lookup(&ContainerPath::parse(path), false)
            .map_err(rootfs_io)?
        {
            Some(crate::rootfs::Entry {
                kind: EntryKind::Symlink(t),
                ..
            }) => Ok(t),
            _ => Err(io::ErrorKind::InvalidInput.into()),
        }
    }

    fn tree(&self) -> Tree<'_> {
        Tree::Layers(self)
    }

    fn hidden(&self, _path: &str) -> bool {
        false
    }
}

/// How a `--chmod` value changes modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An octal mode (`755`).
    Octal(u32),
    /// Symbolic clauses (`u+x,go-w`), applied in order.
    Symbolic(Vec<SymbolicClause>),
}

/// One `who op perms` clause of a symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicClause {
    who: u32,
    op: char,
    perms: u32,
    /// `X`: execute only for directories or files that already have an execute bit.
    cond_exec: bool,
}

/// A `--chmod` value that is neither octal nor valid symbolic notation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid chmod value {0:?}")]
pub struct InvalidChmod(pub String);

impl Chmod {
    /// Parses `--chmod`: octal (`0755`, `644`) or symbolic (`u=rwx,go=rx`, `+x`, `a-w`).
    pub fn parse(s: &str) -> Result<Self, InvalidChmod> {
        let bad = || InvalidChmod(s.to_owned());
        if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let v = u32::from_str_radix(s, 8).map_err(|_| bad())?;
            if v > 0o7777 {
                return Err(bad());
            }
            return Ok(Self::Octal(v));
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let mut chars = part.chars().peekable();
            let mut who = 0;
            while let Some(&c) = chars.peek() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => break,
                };
                chars.next();
            }
            let mut any = false;
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(bad());
                }
                let mut perms = 0;
                let mut cond_exec = false;
                while let Some(&c) = chars.peek() {
                    perms |= match c {
                        'r' => 0o444,
                        'w' => 0o222,
                        'x' => 0o111,
                        'X' => {
                            cond_exec = true;
                            0
                        }
                        's' => 0o6000,
                        't' => 0o1000,
                        _ => break,
                    };
                    chars.next();
                }
                clauses.push(SymbolicClause {
                    who,
                    op,
                    perms,
                    cond_exec,
                });
                any = true;
            }
            if !any {
                return Err(bad());
            }
        }
        Ok(Self::Symbolic(clauses))
    }

    /// The new permission bits for an object with `mode` (which includes the file type bits).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Self::Octal(v) => *v,
            Self::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    // No `who` means "all, minus the umask"; builds use no umask here.
                    let who = if c.who == 0 { 0o7777 } else { c.who };
                    let mut perms = c.perms;
                    if c.cond_exec && (is_dir || mode & 0o111 != 0) {
                        perms |= 0o111;
                    }
                    let bits = perms & who;
                    match c.op {
                        '+' => m |= bits,
                        '-' => m &= !bits,
                        _ => m = (m & !who) | bits,
                    }
                }
                m
            }
        }
    }
}

/// What a copy does besides moving bytes.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Owner of everything created (`--chown`); `None` means 0:0.
    pub chown: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--exclude` patterns, matched against source paths.
    pub exclude: Option<PatternMatcher>,
    /// `--parents`: keep each source's path below the destination.
    pub parents: bool,
    /// Clamp file times to this (SOURCE_DATE_EPOCH), seconds.
    pub epoch: Option<i64>,
    /// The snapshot this same step produced last time, with its [`Sources`]: a regular file
    /// there that was copied from a source file with the very same identity and stat (device,
    /// inode, size, mtime, ctime), was given the metadata this copy would give it, and still
    /// has the stat it was left with is hard-linked instead of copied. Snapshots are never
    /// written in place, so sharing the inode is safe; the check is as strong as the stat cache
    /// that keys the build.
    pub reuse: Option<std::sync::Arc<Reuse>>,
    /// Where the copy notes the sources of the regular files it writes, for the next build's
    /// `reuse`.
    pub record: Option<std::sync::Arc<std::sync::Mutex<Sources>>>,
}

/// A previous snapshot of the same step, for [`CopyOptions::reuse`].
#[derive(Debug)]
pub struct Reuse {
    /// The snapshot's folder.
    pub snapshot: Dir,
    /// What its copy recorded.
    pub sources: Sources,
}

/// Where the regular files a copy wrote came from, by container path: what was asked (the
/// source's identity, and the mode, owner and time given to the copy) and the stat the copy was
/// left with (inode, size, mode, owner, mtime). Kept beside the snapshot that the upper becomes,
/// as a file rather than per-file xattrs, which cost an xattr block per file on ext4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(std::collections::HashMap<String, (String, String)>);

impl Sources {
    fn get(&self, path: &str) -> Option<&(String, String)> {
        self.0.get(path)
    }

    /// Three NUL-terminated fields per file: path, want, left.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, (want, left)) in &self.0 {
            for field in [path, want, left] {
                out.extend_from_slice(field.as_bytes());
                out.push(0);
            }
        }
        out
    }

    /// Reads what [`Sources::encode`] wrote; a malformed record ends the reading (what is lost
    /// is only reuse).
    pub fn decode(bytes: &[u8]) -> Self {
        let mut map = std::collections::HashMap::new();
        // Only NUL-terminated fields count: what follows the last NUL is cut off.
        let end = bytes.iter().rposition(|&b| b == 0).unwrap_or(0);
        let mut fields = bytes
            .get(..end)
            .unwrap_or_default()
            .split(|&b| b == 0)
            .map(std::str::from_utf8);
        while let (Some(Ok(path)), Some(Ok(want)), Some(Ok(left))) =
            (fields.next(), fields.next(), fields.next())
        {
            map.insert(path.to_owned(), (want.to_owned(), left.to_owned()));
        }
        Self(map)
    }
}

/// The part of a file's stat that a reused copy must still have.
fn stat_left(st: &rustix::fs::Stat) -> String {
    format!(
        "{}:{}:{:o}:{}:{}:{}.{}",
        st.st_ino, st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime, st.st_mtime_nsec
    )
}

/// Files whose ctime is this close to the copy are not marked reusable: their stat may not yet
/// reflect a write in progress ("racily clean", as in the stat cache).
const RACY_NS: i64 = 20_000_000;

/// One source of a COPY, already resolved (globs expanded, symlinks of the source path itself
/// followed) by the caller. `path` is relative to the source tree's root, `""` for the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    /// Path in the source tree (no leading `/`).
    pub path: String,
    /// The source as written (wildcards matched, no symlink followed): a file copied into a
    /// folder takes its last component as name, and `--parents` keeps it below the
    /// destination.
    pub keep: String,
}

/// Copies `sources` from `src` to `dest` (a container path, already made absolute against
/// WORKDIR; `dest_is_dir` when it ended with `/`) into `upper`, resolving against `lower`.
/// Returns the number of files and folders written.
pub fn copy_into(
    src: &dyn SourceFs,
    sources: &[CopySource],
    dest: &ContainerPath,
    dest_is_dir: bool,
    lower: &LayerView,
    upper: &Dir,
    opts: &CopyOptions,
) -> Result<u64, CopyError> {
    let mut w = Writer::new(lower, upper, opts);
    let (real_dest, existing) = lower.resolve(dest, true)?;
    let existing_dir = match &existing {
        Some(e) => e.kind == EntryKind::Dir,
        None => w.upper_is_dir(&real_dest),
    };
    let into_dir = dest_is_dir || existing_dir || sources.len() > 1 || opts.parents;
    if into_dir {
        if existing.is_some() && !existing_dir {
            return Err(CopyError::NotADirectory(real_dest));
        }
        w.ensure_dir(&real_dest, None)?;
    } else {
        w.ensure_dir(&real_dest.parent(), None)?;
    }
    for s in sources {
        let meta = src
            .symlink_metadata(&s.path)
            .map_err(|e| CopyError::Source {
                path: display_src(&s.path),
                source: e,
            })?;
        let target = if opts.parents && !s.keep.is_empty() {
            let t = real_dest.join(&s.keep);
            w.ensure_dir(&t.parent(), None)?;
            t
        } else if meta.is_dir() {
            real_dest.clone()
        } else if into_dir {
            // Named as the source was written, also when it is a symlink that was followed
            // (BuildKit's `filepath.Base(src)`).
            let written = s.keep.trim_end_matches('/');
            let written = if written.is_empty() { &s.path } else { written };
            let name = written.rsplit('/').next().unwrap_or(written);
            real_dest.join(name)
        } else {
            real_dest.clone()
        };
        if meta.is_dir() {
            w.ensure_dir(&target, Some(&meta))?;
            match src.tree() {
                Tree::Dir(root) => w.copy_tree_fast(src, root, &s.path, &target)?,
                Tree::Layers(view) => w.copy_tree_layers(view, &s.path, &target)?,
            }
        } else {
            w.copy_one(src, &s.path, &meta, &target)?;
        }
    }
    Ok(w.written)
}

/// Creates the folder `path` (resolved in the rootfs) and its missing parents in the upper,
/// copying existing ones up: WORKDIR, and the destination of an extracted ADD archive.
pub fn make_dirs(
    path: &ContainerPath,
    lower: &LayerView,
    upper: &Dir,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let mut w = Writer::new(lower, upper, opts);
    let (real, existing) = lower.resolve(path, true)?;
    if let Some(e) = existing {
        if e.kind != EntryKind::Dir {
            return Err(CopyError::NotADirectory(real));
        }
    }
    w.ensure_dir(&real, None)
}

/// Writes a file with `content` (a COPY heredoc): as `name` inside `dest` when `dest` is a
/// folder, else as `dest`. Mode 0644 unless `--chmod`; time now (clamped to the epoch).
pub fn write_file(
    dest: &ContainerPath,
    dest_is_dir: bool,
    name: &str,
    content: &[u8],
    lower: &LayerView,
    upper: &Dir,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let mut w = Writer::new(lower, upper, opts);
    let (real, existing) = lower.resolve(dest, true)?;
    let is_dir = match &existing {
        Some(e) => e.kind == EntryKind::Dir,
        None => w.upper_is_dir(&real),
    };
    let target = if dest_is_dir || is_dir {
        w.ensure_dir(&real, None)?;
        real.join(name)
    } else {
        w.ensure_dir(&real.parent(), None)?;
        real
    };
    match upper.symlink_metadata(target.rel()) {
        Ok(m) if m.is_dir() => return Err(CopyError::NotADirectory(target)),
        Ok(_) => upper
            .remove_file(target.rel())
            .map_err(Writer::werr(&target))?,
        Err(_) => {}
    }
    // A copy of a source may have been here: its note no longer applies.
    w.forget(target.as_str());
    let mut o = OpenOptions::new();
    o.write(true).create_new(true).mode(0o600);
    let mut f = upper
        .open_with(target.rel(), &o)
        .map_err(Writer::werr(&target))?;
    io::Write::write_all(&mut f, content).map_err(Writer::werr(&target))?;
    drop(f);
    let mode = match &opts.chmod {
        Some(c) => c.apply(0o100644, false),
        None => 0o644,
    };
    let (uid, gid) = w.owner();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    w.finish(&target, mode, uid, gid, Some((now, 0)), false)
}

fn display_src(path: &str) -> String {
    format!("/{path}")
}

struct Writer<'a> {
    lower: &'a LayerView,
    upper: &'a Dir,
    opts: &'a CopyOptions,
    written: u64,
    /// When the copy started (ns since the epoch), for the racily-clean rule.
    started_ns: i64,
    /// The buffer for direct copies of big files, made on first use.
    direct_buf: Option<crate::fsx::direct::Out>,
    /// Whether a folder copy may still share its subfolders with a second thread.
    split: bool,
}

/// A folder being copied: where its entries come from and go.
#[derive(Clone, Copy)]
struct Folder<'a> {
    src: &'a dyn SourceFs,
    src_dir: &'a Dir,
    /// Its path in the source tree.
    from: &'a str,
    /// The folder in the upper that receives its entries.
    dst: &'a rustix::fd::OwnedFd,
    /// The same folder in the previous snapshot, if any.
    prev: Option<&'a rustix::fd::OwnedFd>,
    to: &'a ContainerPath,
}

/// The unit of a direct copy.
const DIRECT_CHUNK: usize = 4 << 20;

impl<'a> Writer<'a> {
    fn new(lower: &'a LayerView, upper: &'a Dir, opts: &'a CopyOptions) -> Self {
        let started_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Self {
            lower,
            upper,
            opts,
            written: 0,
            started_ns,
            direct_buf: None,
            split: true,
        }
    }

    fn werr(path: &ContainerPath) -> impl FnOnce(io::Error) -> CopyError + '_ {
        move |source| CopyError::Write {
            path: path.clone(),
            source,
        }
    }

    fn owner(&self) -> (u32, u32) {
        self.opts.chown.unwrap_or((0, 0))
    }

    fn upper_is_dir(&self, p: &ContainerPath) -> bool {
        p.is_root()
            || self
                .upper
                .symlink_metadata(p.rel())
                .is_ok_and(|m| m.is_dir())
    }

    fn excluded(&self, src_path: &str) -> bool {
        match &self.opts.exclude {
            Some(m) => m.matches_or_parent_matches(src_path).unwrap_or(false),
            None => false,
        }
    }

    /// Makes sure `p` is a directory in the upper: copied up from the lower with its metadata,
    /// or created (from `like`'s mode, else 0755) with the copy's owner.
    fn ensure_dir(&mut self, p: &ContainerPath, like: Option<&Metadata>) -> Result<(), CopyError> {
        if p.is_root() || self.upper_is_dir(p) {
            return Ok(());
        }
        self.ensure_dir(&p.parent(), None)?;
        let lower = self.lower.lookup(p, false)?;
        let (mode, uid, gid, mtime) = match &lower {
            // As the lower has it, recorded owner and mode included.
            Some(e) if e.kind == EntryKind::Dir => {
                let (mode, uid, gid) = match self.lower.dir_record(e) {
                    Some(r) => (r.mode, r.uid, r.gid),
                    None => (e.meta.mode() & 0o7777, e.meta.uid(), e.meta.gid()),
                };
                (mode, uid, gid, Some((e.meta.mtime(), e.meta.mtime_nsec())))
            }
            Some(_) => return Err(CopyError::NotADirectory(p.clone())),
            None => {
                let (uid, gid) = self.owner();
                let base = like.map_or(0o755, |m| m.mode() & 0o7777);
                let mode = match &self.opts.chmod {
                    Some(c) if like.is_some() => c.apply(base, true),
                    _ => base,
                };
                let mtime = like.map(|m| (m.mtime(), m.mtime_nsec()));
                (mode, uid, gid, mtime)
            }
        };
        let mut b = DirBuilder::new();
        b.mode(mode);
        self.upper.create_dir_with(p.rel(), &b).or_else(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(Self::werr(p)(e))
            }
        })?;
        self.finish(p, mode, uid, gid, mtime, true)?;
        Ok(())
    }

    fn finish(
        &mut self,
        p: &ContainerPath,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: Option<(i64, i64)>,
        is_dir: bool,
    ) -> Result<(), CopyError> {
        set_owner(self.upper, p, uid, gid, mode, is_dir).map_err(Self::werr(p))?;
        // chown clears setuid bits: set the mode afterwards.
        self.upper
            .set_permissions(
                p.rel(),
                cap_std::fs::Permissions::from_std(std::fs::Permissions::from_mode(
                    crate::layer::real_mode(mode),
                )),
            )
            .map_err(Self::werr(p))?;
        if let Some((s, ns)) = mtime {
            let s = match self.opts.epoch {
                Some(e) if s > e => e,
                _ => s,
            };
            set_mtime(self.upper, p, s, ns, false).map_err(Self::werr(p))?;
        }
        self.written += 1;
        Ok(())
    }

    /// Copies the folder `from` of another stage's layers into the upper folder `to` (which
    /// exists): an iterative walk, each folder reached from its parent's contributing layers
    /// (the work per entry grows with its depth once, not with the cube of it) and at most one
    /// listing per level held.
    fn copy_tree_layers(
        &mut self,
        view: &LayerView,
        from: &str,
        to: &ContainerPath,
    ) -> Result<(), CopyError> {
        struct Frame {
            dir: crate::rootfs::MergedDir,
            src: String,
            to: ContainerPath,
            entries: std::vec::IntoIter<crate::rootfs::Entry>,
            mtime: Option<(i64, i64)>,
        }
        let serr = |path: &str| {
            let path = display_src(path);
            move |e: RootfsError| CopyError::Source {
                path,
                source: rootfs_io(e),
            }
        };
        let Some(root) = view
            .merged_dir(&ContainerPath::parse(from))
            .map_err(serr(from))?
        else {
            return Err(CopyError::Source {
                path: display_src(from),
                source: io::ErrorKind::NotFound.into(),
            });
        };
        let entries = view.list(&root).map_err(serr(from))?.into_iter();
        let mut stack = vec![Frame {
            dir: root,
            src: from.to_owned(),
            to: to.clone(),
            entries,
            mtime: None,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(e) = top.entries.next() else {
                if let Some(Frame {
                    to,
                    mtime: Some((s, ns)),
                    ..
                }) = stack.pop()
                {
                    // The folder's time, once its contents are written.
                    let s = self.clamp(s);
                    set_mtime(self.upper, &to, s, ns, false).map_err(Self::werr(&to))?;
                }
                continue;
            };
            let Some(name) = e.path.file_name().map(str::to_owned) else {
                continue;
            };
            let child = if top.src.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", top.src)
            };
            if self.excluded(&child) {
                continue;
            }
            let target = top.to.join(&name);
            match &e.kind {
                EntryKind::Dir => {
                    self.make_dir(&target, &e.meta)?;
                    let dir = view.child_dir(&top.dir, &e).map_err(serr(&child))?;
                    let entries = view.list(&dir).map_err(serr(&child))?.into_iter();
                    let mtime = Some((e.meta.mtime(), e.meta.mtime_nsec()));
                    stack.push(Frame {
                        dir,
                        src: child,
                        to: target,
                        entries,
                        mtime,
                    });
                }
                // A symlink is copied as its target, never opened.
                EntryKind::Symlink(t) => {
                    let t = t.clone();
                    self.copy_with(
                        &child,
                        &e.meta,
                        &target,
                        || Err(io::ErrorKind::InvalidInput.into()),
                        || Ok(t),
                    )?;
                }
                _ => {
                    let meta = e.meta.clone();
                    self.copy_with(
                        &child,
                        &meta,
                        &target,
                        || view.open(&e).map_err(rootfs_io),
                        || Err(io::ErrorKind::InvalidInput.into()),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Copies the folder `from` of a plain-folder source into the upper folder `to` (which
    /// exists), working through open directory handles: every call names one component
    /// relative to a handle, never follows a symlink in the upper (`O_NOFOLLOW`, `O_EXCL`,
    /// `RESOLVE_NO_SYMLINKS`), so entries copied earlier cannot redirect later writes.
    fn copy_tree_fast(
        &mut self,
        src: &dyn SourceFs,
        root: &Dir,
        from: &str,
        to: &ContainerPath,
    ) -> Result<(), CopyError> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let serr = |path: &str| {
            let path = display_src(path);
            move |e| CopyError::Source { path, source: e }
        };
        let src_dir = if from.is_empty() {
            root.try_clone()
        } else {
            root.open_dir(from)
        }
        .map_err(serr(from))?;
        let dst = openat2(
            self.upper,
            if to.is_root() { "." } else { to.rel() },
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
        )
        .map_err(|e| Self::werr(to)(e.into()))?;
        let prev = self.opts.reuse.as_deref().and_then(|r| {
            openat2(
                &r.snapshot,
                if to.is_root() { "." } else { to.rel() },
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
            )
            .ok()
        });
        self.tree_fast(Folder {
            src,
            src_dir: &src_dir,
            from,
            dst: &dst,
            prev: prev.as_ref(),
            to,
        })
    }

    fn tree_fast(&mut self, f: Folder<'_>) -> Result<(), CopyError> {
        let Folder {
            src_dir, from, to, ..
        } = f;
        let serr = |path: &str| {
            let path = display_src(path);
            move |e| CopyError::Source { path, source: e }
        };
        let mut entries = Vec::new();
        for e in src_dir.entries().map_err(serr(from))? {
            let e = e.map_err(serr(from))?;
            entries.push(e);
        }
        entries.sort_by_key(|e| e.file_name());
        let folders = entries
            .iter()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count();
        if !self.split || folders < 2 {
            for e in entries {
                self.tree_entry(f, e)?;
            }
            return Ok(());
        }
        // The first folder with several subfolders shares them with a second thread: a copy is
        // mostly create, link and stat calls, and folders are independent of each other.
        self.split = false;
        let (theirs, mine): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .enumerate()
            .partition(|(i, e)| i % 2 == 1 && e.file_type().is_ok_and(|t| t.is_dir()));
        let mut other = Writer {
            direct_buf: None,
            written: 0,
            ..*self
        };
        std::thread::scope(|scope| {
            let helper = scope.spawn(move || -> Result<u64, CopyError> {
                for (_, e) in theirs {
                    other.tree_entry(f, e)?;
                }
                Ok(other.written)
            });
            let done = mine
                .into_iter()
                .try_for_each(|(_, e)| self.tree_entry(f, e));
            let helped = helper.join().unwrap_or_else(|_| {
                Err(CopyError::Write {
                    path: to.clone(),
                    source: io::Error::other("copy thread panicked"),
                })
            });
            done?;
            self.written += helped?;
            Ok(())
        })
    }

    /// One entry of a folder that [`Writer::tree_fast`] copies.
    fn tree_entry(&mut self, f: Folder<'_>, e: cap_std::fs::DirEntry) -> Result<(), CopyError> {
        use rustix::fs::{AtFlags, Mode, OFlags};
        let Folder {
            src,
            src_dir,
            from,
            dst,
            prev,
            to,
        } = f;
        let serr = |path: &str| {
            let path = display_src(path);
            move |e| CopyError::Source { path, source: e }
        };
        let (uid, gid) = self.owner();
        let name_os = e.file_name();
        let name = name_os.to_string_lossy();
        let child = if from.is_empty() {
            name.clone().into_owned()
        } else {
            format!("{from}/{name}")
        };
        if self.excluded(&child) || src.hidden(&child) {
            return Ok(());
        }
        let meta = e.metadata().map_err(serr(&child))?;
        let target = to.join(&name);
        let werr = Self::werr(&target);
        let ft = meta.file_type();
        let mtime = (self.clamp(meta.mtime()), meta.mtime_nsec());
        if ft.is_dir() {
            let mode = self.mode_for(&meta);
            match rustix::fs::mkdirat(dst, &*name_os, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => {}
                Err(err) => return Err(werr(err.into())),
            }
            let sub = rustix::fs::openat(
                dst,
                &*name_os,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|err| match err {
                rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => {
                    CopyError::NotADirectory(target.clone())
                }
                err => Self::werr(&target)(err.into()),
            })?;
            let sub_src = src_dir.open_dir(&*name_os).map_err(serr(&child))?;
            let sub_prev = prev.and_then(|p| crate::fsx::open_dir_at(p.as_fd(), &*name_os).ok());
            self.tree_fast(Folder {
                src,
                src_dir: &sub_src,
                from: &child,
                dst: &sub,
                prev: sub_prev.as_ref(),
                to: &target,
            })?;
            fd_owner(&sub, uid, gid, mode, true).map_err(Self::werr(&target))?;
            rustix::fs::fchmod(&sub, Mode::from_raw_mode(crate::layer::real_mode(mode)))
                .map_err(|err| Self::werr(&target)(err.into()))?;
            fd_times(&sub, mtime).map_err(Self::werr(&target))?;
            self.written += 1;
        } else if ft.is_file() {
            let open = || src_dir.open(&*name_os).map_err(serr(&child));
            self.file_at(open, &meta, dst, &name_os, prev, &target)?;
        } else if ft.is_symlink() {
            let link = rustix::fs::readlinkat(src_dir, &*name_os, Vec::new())
                .map_err(|err| serr(&child)(err.into()))?;
            match rustix::fs::unlinkat(dst, &*name_os, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(rustix::io::Errno::ISDIR) => {
                    return Err(CopyError::NotADirectory(target.clone()))
                }
                Err(err) => return Err(werr(err.into())),
            }
            rustix::fs::symlinkat(link.as_c_str(), dst, &*name_os)
                .map_err(|err| Self::werr(&target)(err.into()))?;
            match rustix::fs::chownat(
                dst,
                &*name_os,
                Some(rustix::process::Uid::from_raw(uid)),
                Some(rustix::process::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                // Without privileges a symlink keeps the builder's owner: Linux allows no
                // user xattrs on symlinks to record another one.
                Ok(()) | Err(rustix::io::Errno::PERM) => {}
                Err(err) => return Err(Self::werr(&target)(err.into())),
            }
            rustix::fs::utimensat(
                dst,
                &*name_os,
                &crate::fsx::times(mtime.0, mtime.1 as u32),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|err| Self::werr(&target)(err.into()))?;
            self.written += 1;
        }
        // Devices, fifos and sockets in a build context are not copied (Docker skips them).
        Ok(())
    }

    /// Writes the regular file `name` into the upper folder `dst` (the path `target`) from the
    /// source file with `meta`, opened by `open` only when needed: hard-linked from the previous
    /// snapshot folder `prev` when [`reusable`], else copied and given its owner, mode and time.
    fn file_at(
        &mut self,
        open: impl FnOnce() -> Result<File, CopyError>,
        meta: &Metadata,
        dst: &rustix::fd::OwnedFd,
        name: &std::ffi::OsStr,
        prev: Option<&rustix::fd::OwnedFd>,
        target: &ContainerPath,
    ) -> Result<(), CopyError> {
        use rustix::fs::{AtFlags, Mode};
        let (uid, gid) = self.owner();
        let mode = self.mode_for(meta);
        let mtime = (self.clamp(meta.mtime()), meta.mtime_nsec());
        let want = format!(
            "{} {mode:o} {uid}:{gid} {}.{}",
            source_identity(meta),
            mtime.0,
            mtime.1
        );
        let key = target.as_str();
        if let Some((p, reuse)) = prev.zip(self.opts.reuse.as_deref()) {
            if let Some((recorded, left)) = reuse.sources.get(key) {
                let same = *recorded == want
                    && rustix::fs::statat(p, name, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| stat_left(&st) == *left);
                if same && self.link(p, dst, name, target)? {
                    self.note(key, want, left.clone());
                    self.written += 1;
                    return Ok(());
                }
            }
        }
        let input = open()?;
        let out = create_file(dst, name).map_err(|err| match err.raw_os_error() {
            Some(libc::EISDIR) => CopyError::NotADirectory(target.clone()),
            _ => Self::werr(target)(err),
        })?;
        let mut i = input.into_std();
        let mut o = std::fs::File::from(out);
        if meta.size() >= crate::fsx::direct::MIN_FILE {
            let buf = self
                .direct_buf
                .get_or_insert_with(|| crate::fsx::direct::Out::new(DIRECT_CHUNK));
            crate::fsx::direct::copy(&i, &o, buf).map_err(Self::werr(target))?;
        } else {
            io::copy(&mut i, &mut o).map_err(Self::werr(target))?;
        }
        fd_owner(&o, uid, gid, mode, false).map_err(Self::werr(target))?;
        rustix::fs::fchmod(&o, Mode::from_raw_mode(crate::layer::real_mode(mode)))
            .map_err(|err| Self::werr(target)(err.into()))?;
        fd_times(&o, mtime).map_err(Self::werr(target))?;
        let settled = meta.ctime() * 1_000_000_000 + meta.ctime_nsec() < self.started_ns - RACY_NS;
        if settled && self.opts.record.is_some() {
            // Bookkeeping only: without the stat, no reuse next time.
            if let Ok(st) = rustix::fs::fstat(&o) {
                self.note(key, want, stat_left(&st));
            }
        }
        self.written += 1;
        Ok(())
    }

    /// Hard-links `name` from the previous snapshot's folder `prev` into `dst`, replacing what
    /// an earlier source of the same COPY put there (a later source wins). False if the link
    /// could not be made (the file is then copied).
    fn link(
        &self,
        prev: &rustix::fd::OwnedFd,
        dst: &rustix::fd::OwnedFd,
        name: &std::ffi::OsStr,
        target: &ContainerPath,
    ) -> Result<bool, CopyError> {
        use rustix::fs::AtFlags;
        let mut linked = rustix::fs::linkat(prev, name, dst, name, AtFlags::empty());
        if linked == Err(rustix::io::Errno::EXIST) {
            match rustix::fs::unlinkat(dst, name, AtFlags::empty()) {
                Ok(()) => {}
                Err(rustix::io::Errno::ISDIR) => {
                    return Err(CopyError::NotADirectory(target.clone()))
                }
                Err(err) => return Err(Self::werr(target)(err.into())),
            }
            linked = rustix::fs::linkat(prev, name, dst, name, AtFlags::empty());
        }
        Ok(linked.is_ok())
    }

    fn note(&self, path: &str, want: String, left: String) {
        if let Some(Ok(mut r)) = self.opts.record.as_deref().map(|r| r.lock()) {
            r.0.insert(path.to_owned(), (want, left));
        }
    }

    fn forget(&self, path: &str) {
        if let Some(Ok(mut r)) = self.opts.record.as_deref().map(|r| r.lock()) {
            r.0.remove(path);
        }
    }

    /// Opens the folder `p` of `root` without following any symlink on the way.
    fn open_beneath(root: &Dir, p: &ContainerPath) -> Option<rustix::fd::OwnedFd> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        openat2(
            root,
            if p.is_root() { "." } else { p.rel() },
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
        )
        .ok()
    }

    fn clamp(&self, s: i64) -> i64 {
        match self.opts.epoch {
            Some(e) if s > e => e,
            _ => s,
        }
    }

    fn mode_for(&self, meta: &Metadata) -> u32 {
        let m = meta.mode() & 0o7777;
        match &self.opts.chmod {
            Some(c) => c.apply(meta.mode(), meta.is_dir()),
            None => m,
        }
    }

    fn make_dir(&mut self, p: &ContainerPath, meta: &Metadata) -> Result<(), CopyError> {
        if self.upper_is_dir(p) {
            return Ok(());
        }
        let mode = self.mode_for(meta);
        let mut b = DirBuilder::new();
        b.mode(0o700);
        self.upper
            .create_dir_with(p.rel(), &b)
            .map_err(Self::werr(p))?;
        let (uid, gid) = self.owner();
        self.finish(
            p,
            mode,
            uid,
            gid,
            Some((meta.mtime(), meta.mtime_nsec())),
            true,
        )
    }

    fn copy_one(
        &mut self,
        src: &dyn SourceFs,
        from: &str,
        meta: &Metadata,
        to: &ContainerPath,
    ) -> Result<(), CopyError> {
        self.copy_with(
            from,
            meta,
            to,
            || src.open_file(from),
            || src.link_target(from),
        )
    }

    /// Copies the non-folder `from` (with `meta`) to `to`, reading it through `open` or, for
    /// a symlink, its target through `link`.
    fn copy_with(
        &mut self,
        from: &str,
        meta: &Metadata,
        to: &ContainerPath,
        open: impl FnOnce() -> io::Result<File>,
        link: impl FnOnce() -> io::Result<String>,
    ) -> Result<(), CopyError> {
        let serr = |e| CopyError::Source {
            path: display_src(from),
            source: e,
        };
        // Replace whatever the upper already holds there (a later source wins, as in Docker).
        match self.upper.symlink_metadata(to.rel()) {
            Ok(m) if m.is_dir() => return Err(CopyError::NotADirectory(to.clone())),
            Ok(_) => self.upper.remove_file(to.rel()).map_err(Self::werr(to))?,
            Err(_) => {}
        }
        let (uid, gid) = self.owner();
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = link().map_err(serr)?;
            // symlinkat in the parent opened beneath the upper: the link's text is data (an
            // absolute target is fine; cap-std would refuse one), and nothing is followed.
            let parent = Self::open_beneath(self.upper, &to.parent())
                .ok_or_else(|| CopyError::NotADirectory(to.parent()))?;
            let name = to.file_name().unwrap_or(".");
            rustix::fs::symlinkat(target.as_str(), &parent, name)
                .map_err(|e| Self::werr(to)(e.into()))?;
            // Without root a symlink keeps kiln's ids, which stand for root: Linux records
            // nothing on a symlink.
            if crate::layer::host_is_root() {
                set_owner(self.upper, to, uid, gid, 0, false).map_err(Self::werr(to))?;
            }
            let s = self.clamp(meta.mtime());
            set_mtime(self.upper, to, s, meta.mtime_nsec(), true).map_err(Self::werr(to))?;
            self.written += 1;
            return Ok(());
        }
        if !ft.is_file() {
            // Devices, fifos and sockets in a build context are not copied (Docker skips them).
            return Ok(());
        }
        let parent = Self::open_beneath(self.upper, &to.parent())
            .ok_or_else(|| CopyError::NotADirectory(to.parent()))?;
        let prev = self
            .opts
            .reuse
            .as_deref()
            .and_then(|r| Self::open_beneath(&r.snapshot, &to.parent()));
        let name = std::ffi::OsString::from(to.file_name().unwrap_or("."));
        self.file_at(
            || open().map_err(serr),
            meta,
            &parent,
            &name,
            prev.as_ref(),
            to,
        )
    }
}

/// A source file's identity and state.
fn source_identity(meta: &Metadata) -> String {
    format!(
        "{}:{}:{}:{}.{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// Sets an open file's or folder's times.
fn fd_times(fd: impl std::os::fd::AsFd, (secs, nsecs): (i64, i64)) -> io::Result<()> {
    rustix::fs::futimens(fd, &crate::fsx::times(secs, nsecs as u32)).map_err(io::Error::from)
}

/// The `user.containers.override_stat` value recording an owner the builder could not set.
fn override_value(uid: u32, gid: u32, mode: u32, dir: bool) -> String {
    crate::layer::OverrideStat {
        uid,
        gid,
        mode: mode & 0o7777,
        kind: Some(if dir {
            crate::layer::OverrideType::Dir
        } else {
            crate::layer::OverrideType::File
        }),
    }
    .to_string()
}

/// Sets ownership of an open file or folder: for real as root, else recorded in
/// `user.containers.override_stat`.
fn fd_owner(
    fd: impl std::os::fd::AsFd,
    uid: u32,
    gid: u32,
    mode: u32,
    is_dir: bool,
) -> io::Result<()> {
    let record = |fd: &dyn std::os::fd::AsFd| {
        let value = override_value(uid, gid, mode, is_dir);
        rustix::fs::fsetxattr(
            fd.as_fd(),
            crate::layer::OVERRIDE_STAT_XATTR,
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(io::Error::from)
    };
    if !crate::layer::host_is_root() {
        return record(&fd);
    }
    match rustix::fs::fchown(
        &fd,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    ) {
        Ok(()) => Ok(()),
        // An id not mapped into this user namespace.
        Err(rustix::io::Errno::PERM) => record(&fd),
        Err(e) => Err(e.into()),
    }
}

/// Creates `name` in `dir` for writing, replacing a file (never following a symlink) that an
/// earlier source of the same COPY put there.
fn create_file(
    dir: &rustix::fd::OwnedFd,
    name: &std::ffi::OsStr,
) -> io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::EXIST) => {
            rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty())
                .map_err(io::Error::from)?;
            rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))
                .map_err(io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Sets ownership: for real where allowed, else recorded in `user.containers.override_stat`.
fn set_owner(
    dir: &Dir,
    p: &ContainerPath,
    uid: u32,
    gid: u32,
    mode: u32,
    is_dir: bool,
) -> io::Result<()> {
    with_proc_path(dir, p, |at| {
        let chown = if crate::layer::host_is_root() {
            rustix::fs::chownat(
                rustix::fs::CWD,
                at,
                Some(rustix::process::Uid::from_raw(uid)),
                Some(rustix::process::Gid::from_raw(gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
        } else {
            Err(rustix::io::Errno::PERM)
        };
        match chown {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::PERM) => {
                let value = override_value(uid, gid, mode, is_dir);
                rustix::fs::lsetxattr(
                    at,
                    crate::layer::OVERRIDE_STAT_XATTR,
                    value.as_bytes(),
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(io::Error::from)
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// Runs `f` with a path naming `p` through an open descriptor of its parent, for the few calls
/// (`lchown`, `lsetxattr`, `utimensat` on a symlink) that cap-std does not offer. The parent is
/// opened through cap-std, so the kernel resolves only the last component, and `f`'s calls do
/// not follow it.
fn with_proc_path<T>(
    dir: &Dir,
    p: &ContainerPath,
    f: impl FnOnce(&std::path::Path) -> io::Result<T>,
) -> io::Result<T> {
    use std::os::fd::AsRawFd;
    let parent = p.parent();
    let name = p.file_name().unwrap_or(".");
    let opened;
    let pfd = if parent.is_root() {
        dir.as_raw_fd()
    } else {
        opened = dir.open_dir(parent.rel())?;
        opened.as_raw_fd()
    };
    f(std::path::Path::new(&format!("/proc/self/fd/{pfd}/{name}")))
}

fn set_mtime(dir: &Dir, p: &ContainerPath, secs: i64, nsecs: i64, symlink: bool) -> io::Result<()> {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nsecs as _,
    };
    let ts = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    let flags = if symlink {
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW
    } else {
        rustix::fs::AtFlags::empty()
    };
    with_proc_path(dir, p, |at| {
        rustix::fs::utimensat(rustix::fs::CWD, at, &ts, flags).map_err(io::Error::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_survive_encoding_and_bad_input_only_loses_reuse() {
        let mut s = Sources::default();
        s.0.insert(
            "/a/b".into(),
            ("1:2:3 644 0:0 5.6".into(), "7:3:100644:0:0:5.6".into()),
        );
        s.0.insert("/odd\nname".into(), ("w".into(), "l".into()));
        assert_eq!(Sources::decode(&s.encode()), s);
        assert_eq!(Sources::decode(b""), Sources::default());
        // A truncated record is dropped, not misread.
        let mut cut = s.encode();
        cut.truncate(cut.len() - 2);
        assert_eq!(Sources::decode(&cut).0.len(), 1);
        assert!(Sources::decode(b"\xff\0a\0b\0").0.is_empty());
    }

    #[test]
    fn chmod_parses_octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap().apply(0o100644, false), 0o755);
        assert_eq!(Chmod::parse("0644").unwrap().apply(0o100755, false), 0o644);
        assert_eq!(Chmod::parse("u+x").unwrap().apply(0o100644, false), 0o744);
        assert_eq!(Chmod::parse("go-w").unwrap().apply(0o100666, false), 0o644);
        assert_eq!(Chmod::parse("a=r").unwrap().apply(0o100777, false), 0o444);
        assert_eq!(Chmod::parse("+X").unwrap().apply(0o40644, true), 0o755);
        assert_eq!(Chmod::parse("+X").unwrap().apply(0o100644, false), 0o644);
        assert_eq!(
            Chmod::parse("u=rwx,g=rx,o=")
                .unwrap()
                .apply(0o100000, false),
            0o750
        );
        for bad in ["", "8", "u*x", "zz", "99999"] {
            assert!(Chmod::parse(bad).is_err(), "{bad}");
        }
    }
}
