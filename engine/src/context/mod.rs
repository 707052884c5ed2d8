//! The build context: a folder or a tar stream, filtered by `.dockerignore`, hashed with a stat cache.
//!
//! A [`Context`] is a capability: it holds the context root as an open directory and reaches
//! everything below it one path component at a time without following symlinks (the private `sys` module), so no
//! name in the context, the Dockerfile or a tar can make kiln read or write outside it.
//!
//! What the builder sees follows Docker (BuildKit):
//!
//! - **Ignored files are invisible**: not listed, not resolvable, not hashed. A directory that is
//!   ignored but holds a re-included file (`docs` + `!docs/README.md`) is present with only what
//!   is re-included. The Dockerfile and `.dockerignore` can always be *read* for the build
//!   ([`Context::read_build_file`], [`Context::dockerignore_patterns`]) but are left out of COPY
//!   when ignored, as in Docker.
//! - **Source paths** ([`Context::resolve`]) are relative to the context root whether or not they
//!   start with `/`; `..` stops at the root (`COPY ../../etc/passwd` names `/etc/passwd` *inside*
//!   the context); Go `filepath.Match` wildcards work per component.
//! - **Symlinks** named by a source are followed as in a chroot at the context root (BuildKit's
//!   `fs.RootPath`): an absolute target means the context root, `..` stops there, so a link to
//!   `/etc/passwd` resolves to the context's own `etc/passwd` (usually: not found). Symlinks
//!   *inside* a copied directory are copied as symlinks. At most 255 links are followed.
//! - Only regular files, directories and symlinks make up a context; sockets, fifos and device
//!   nodes are left out as if ignored. File names must be UTF-8 (an ignored non-UTF-8 name is fine).
//!
//! Hashing ([`Context::digest`]) covers paths, types, permission bits, symlink
//! targets and contents (not owners, not times) and keeps a persistent [`StatCache`] so that an
//! unchanged context costs one `statx` per entry.
//!
//! Context tars ([`Context::from_tar`]) are extracted by [`crate::layer::unpack_layer`], the one
//! hardened tar extractor in kiln.

mod hash;
mod sys;

use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;

use crate::ignore::{self, BadPattern, IgnoreError, MatchInfo, PatternMatcher};
use crate::layer::{LayerError, OverrideStat, UnpackOptions, Whiteouts, OVERRIDE_STAT_XATTR};

pub use hash::{ContentDigest, HashStats, StatCache};

/// Limits on a context tar (entries, total bytes, name length): the layer unpacker's.
pub type TarLimits = crate::layer::Limits;

use sys::{Kind, Stat};

/// How many symlinks one source path may go through (BuildKit's limit).
const MAX_LINKS: u32 = 255;
/// How deep a context may nest directories.
const MAX_DEPTH: usize = 512;
/// The largest `.dockerignore` kiln reads.
const MAX_IGNORE_FILE: u64 = 4 << 20;

/// Errors from opening, resolving, walking or hashing a build context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context folder could not be opened.
    #[error("open build context {}: {source}", path.display())]
    Open {
        /// The folder given.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The private folder for an extracted context tar could not be created.
    #[error("create temporary folder for the build context: {0}")]
    TempDir(io::Error),
    /// A file-system operation inside the context failed.
    #[error("{op} {path:?} in build context: {source}")]
    Io {
        /// What was being done (`stat`, `open`, `read`, ...).
        op: &'static str,
        /// The context-relative path.
        path: String,
        /// Why it failed.
        source: io::Error,
    },
    /// A COPY/ADD source that matches nothing (or only ignored files).
    #[error("failed to compute cache key: \"/{path}\" not found")]
    NotFound {
        /// The source as written, cleaned, relative to the context root.
        path: String,
    },
    /// A COPY/ADD source wildcard that is not valid `filepath.Match` syntax.
    #[error("invalid source path: {0}")]
    BadPattern(#[from] BadPattern),
    /// The `.dockerignore` patterns are invalid.
    #[error(".dockerignore: {0}")]
    Ignore(#[from] IgnoreError),
    /// A symlink chain longer than 255 links (or a loop).
    #[error("too many levels of symbolic links resolving \"/{path}\" in build context")]
    TooManyLinks {
        /// The source being resolved.
        path: String,
    },
    /// A file name that is not UTF-8 and not ignored.
    #[error("file name is not valid UTF-8: {path:?} in build context")]
    NonUtf8Name {
        /// The path, with invalid bytes replaced.
        path: String,
    },
    /// Directories nested deeper than kiln walks.
    #[error("build context nests directories deeper than {max} levels at {path:?}")]
    TooDeep {
        /// Where the limit was hit.
        path: String,
        /// The limit.
        max: usize,
    },
    /// A file read for the build (Dockerfile, `.dockerignore`) that is too large.
    #[error("{path:?} in build context is larger than {max} bytes")]
    FileTooLarge {
        /// The context-relative path.
        path: String,
        /// The limit.
        max: u64,
    },
    /// A path that was expected to be a regular file.
    #[error("{path:?} in build context is not a regular file")]
    NotAFile {
        /// The context-relative path.
        path: String,
    },
    /// A context tar that is malformed, hostile or over its limits (or could not be written).
    #[error("build context tar: {0}")]
    Tar(#[from] LayerError),
    /// The stat cache could not be written.
    #[error("write stat cache {name:?}: {source}")]
    StatCacheWrite {
        /// The cache file name.
        name: String,
        /// Why it failed.
        source: io::Error,
    },
}

impl ContextError {
    /// Whether the user's input caused this (a missing source, a bad pattern, a hostile or
    /// malformed tar, a missing context folder) rather than the host.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Open { .. }
            | Self::NotFound { .. }
            | Self::BadPattern(_)
            | Self::Ignore(_)
            | Self::TooManyLinks { .. }
            | Self::NonUtf8Name { .. }
            | Self::TooDeep { .. }
            | Self::FileTooLarge { .. }
            | Self::NotAFile { .. } => true,
            Self::Tar(e) => match e {
                LayerError::Refused { .. }
                | LayerError::Malformed { .. }
                | LayerError::Truncated { .. } => true,
                // Corrupt compressed data surfaces as a read error.
                LayerError::ReadArchive(io) => matches!(
                    io.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                _ => false,
            },
            Self::TempDir(_) | Self::Io { .. } | Self::StatCacheWrite { .. } => false,
        }
    }

    fn io(op: &'static str, path: &str, source: impl Into<io::Error>) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            source: source.into(),
        }
    }
}

/// A build context: an open folder (or an extracted tar) plus its ignore rules.
pub struct Context {
    /// The context root; every access goes through it.
    root: Dir,
    matcher: PatternMatcher,
    /// Names this context in a stat cache file (root device, inode and path).
    identity: [u8; 32],
    /// A stable name for this context's stat cache, for folder contexts.
    cache_id: Option<String>,
    /// The private folder of an extracted tar, removed on drop (after `root` is closed).
    _extracted: Option<tempfile::TempDir>,
    /// Whether real modes may be recorded in `user.containers.override_stat` (an extracted
    /// tar: without root, the unpacker keeps owner access and records the mode it widened).
    overrides: bool,
}

/// Whether a COPY/ADD source is a file or a directory (after following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A regular file.
    File,
    /// A directory (its visible contents are copied).
    Dir,
}

/// One COPY/ADD source found by [`Context::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path as matched, relative to the context root (`""` is the root). Its last component
    /// is the name a copied file gets when the destination is a folder.
    pub path: String,
    /// Where `path` leads after following symlinks, relative to the context root.
    pub resolved: String,
    /// What `resolved` is.
    pub kind: SourceKind,
}

/// What an [`Entry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes.
    File {
        /// Its size.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symlink (copied as a link, never followed).
    Symlink {
        /// The link target as stored.
        target: String,
    },
}

/// One visible item under a [`Source`], in walk order (a directory before its contents, names
/// sorted bytewise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The context-relative path (for [`Context::open_file`]).
    pub path: String,
    /// The path relative to the source (`""` for the source itself).
    pub rel: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// A path inside the context after following symlinks, with what is needed to open it.
struct Followed {
    /// Context-relative, no symlinks in it.
    rel: String,
    stat: Stat,
    /// The directory holding it (`None`: the context root).
    parent: Option<OwnedFd>,
    /// Its last component (`""` for the context root itself).
    name: String,
}

/// One item met by [`Context::walk`].
struct WalkEntry<'a> {
    /// Context-relative path.
    path: &'a str,
    /// Relative to the walk's start.
    rel: &'a str,
    stat: &'a Stat,
    kind: Kind,
    /// Where to open or read it (files and symlinks; directories implied by a re-included file
    /// have none).
    at: Option<(BorrowedFd<'a>, &'a CStr)>,
}

/// What a walk visitor returns: keep going or stop.
type Visit<'v> = dyn FnMut(&WalkEntry<'_>) -> Result<bool, ContextError> + 'v;

struct WalkState {
    path: String,
    /// Length of the walk start's path in `path`.
    start_len: usize,
    /// Ignored directories entered because a re-include might match below them; emitted as soon
    /// as something visible is found inside.
    pending: Vec<(String, Stat)>,
}

impl WalkState {
    fn rel<'p>(&self, path: &'p str) -> &'p str {
        if self.start_len == 0 {
            path
        } else {
            path.get(self.start_len + 1..).unwrap_or("")
        }
    }
}

fn not_found(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// `path` cleaned as if under `/`, without the leading `/`: `..` cannot climb above the root.
fn clean_rel(path: &str) -> String {
    let rooted = format!("/{path}");
    ignore::clean(&rooted).trim_start_matches('/').to_owned()
}

/// BuildKit's `containsWildcards`: `*`, `?` or `[` not escaped by `\`.
fn has_wildcards(component: &str) -> bool {
    let mut bytes = component.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                bytes.next();
            }
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
    }
    false
}

impl Context {
    /// Opens the folder `path` as a build context ignoring `ignore_patterns` (as read by
    /// [`ignore::read_ignore_file`]).
    ///
    /// # Ambient Authority
    ///
    /// This is where a folder context is reached by path, once; everything after goes through
    /// the opened directory. [`Context::from_tar`] is the other entry point (it creates a private
    /// temporary folder).
    pub fn from_dir(path: &Path, ignore_patterns: &[String]) -> Result<Self, ContextError> {
        let open_err = |source| ContextError::Open {
            path: path.to_owned(),
            source,
        };
        let root = Dir::open_ambient_dir(path, cap_std::ambient_authority()).map_err(open_err)?;
        let canonical = std::fs::canonicalize(path).map_err(open_err)?;
        Self::with_root(root, ignore_patterns, Some(canonical), None)
    }

    /// Reads a context tar (plain, gzip, bzip2, xz or zstd, detected by magic) into a private
    /// temporary folder, removed when the context is dropped, with [`crate::layer::unpack_layer`].
    ///
    /// Refuses, with one error naming the entry, anything that could write outside that folder
    /// or exhaust the host: `..`, writes through a symlink, hard links that do not point at an
    /// earlier file of the tar, device nodes, `.wh.` whiteout names, and more entries or bytes
    /// than `limits` allow. As in Docker, a leading `/` means the context root. Owners are not
    /// kept (COPY sets them); fifos are extracted but, like sockets, are no part of a context.
    ///
    /// # Ambient Authority
    ///
    /// Creates the private folder under the system temporary directory (`TMPDIR`).
    pub fn from_tar<R: Read>(
        reader: R,
        limits: &TarLimits,
        ignore_patterns: &[String],
    ) -> Result<Self, ContextError> {
        let temp = tempfile::Builder::new()
            .prefix("kiln-context-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(ContextError::TempDir)?;
        let root = Dir::open_ambient_dir(temp.path(), cap_std::ambient_authority())
            .map_err(ContextError::TempDir)?;
        // Private from creation, and exactly 0700 whatever the umask: other users must not see
        // or plant files in the context.
        rustix::fs::chmodat(
            &root,
            ".",
            rustix::fs::Mode::from_raw_mode(0o700),
            rustix::fs::AtFlags::empty(),
        )
        .map_err(|e| ContextError::TempDir(e.into()))?;
        let opts = UnpackOptions {
            whiteouts: Whiteouts::Refuse,
            allow_devices: false,
            same_owner: false,
            limits: *limits,
        };
        crate::layer::unpack_layer(reader, &root, &opts)?;
        Self::with_root(root, ignore_patterns, None, Some(temp))
    }

    fn with_root(
        root: Dir,
        ignore_patterns: &[String],
        canonical: Option<PathBuf>,
        extracted: Option<tempfile::TempDir>,
    ) -> Result<Self, ContextError> {
        let matcher = PatternMatcher::new(ignore_patterns)?;
        let stat = sys::stat_fd(root.as_fd()).map_err(|e| ContextError::io("stat", "", e))?;
        let mut h = blake3::Hasher::new();
        h.update(b"kiln-context-identity\0");
        h.update(&stat.dev.to_le_bytes());
        h.update(&stat.ino.to_le_bytes());
        let cache_id = canonical.map(|p| {
            h.update(p.as_os_str().as_encoded_bytes());
            blake3::hash(p.as_os_str().as_encoded_bytes()).to_hex()[..32].to_owned()
        });
        Ok(Self {
            root,
            matcher,
            identity: *h.finalize().as_bytes(),
            cache_id,
            overrides: extracted.is_some(),
            _extracted: extracted,
        })
    }

    /// A stable name for this context's stat cache file (a hash of the folder's canonical path),
    /// or `None` for a tar context, which is new every time and gains nothing from a cache.
    pub fn cache_id(&self) -> Option<&str> {
        self.cache_id.as_deref()
    }

    /// The context folder itself, unfiltered: for code that must see the raw tree (it is the
    /// caller's job to apply [`Self::is_ignored`]).
    pub fn root(&self) -> &Dir {
        &self.root
    }

    /// Whether the ignore rules hide the context path `path` (its own name, not following a
    /// final symlink). An ignored directory that holds a re-included file is not hidden. Paths
    /// that cannot be examined count as hidden.
    pub fn is_ignored(&self, path: &str) -> bool {
        let path = clean_rel(path);
        match self.ignored(&path) {
            Ok(false) => false,
            Ok(true) if !self.matcher.has_exclusions() => true,
            Ok(true) => {
                !matches!(self.lstat(&path), Ok(Some(f)) if self.visible(&f).unwrap_or(false))
            }
            Err(_) => true,
        }
    }

    /// Looks `path` up without following any symlink (a symlink on the way means `None`).
    fn lstat(&self, path: &str) -> Result<Option<Followed>, ContextError> {
        let mut parent: Option<OwnedFd> = None;
        let mut comps = path.split('/').filter(|c| !c.is_empty()).peekable();
        while let Some(comp) = comps.next() {
            let dir = parent.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
            if comps.peek().is_none() {
                return match sys::stat_at(dir, comp) {
                    Ok(stat) => Ok(Some(Followed {
                        rel: path.to_owned(),
                        stat,
                        parent,
                        name: comp.to_owned(),
                    })),
                    Err(e) if not_found(&e) => Ok(None),
                    Err(e) => Err(ContextError::io("stat", path, e)),
                };
            }
            match sys::open_dir_at(dir, comp) {
                Ok(fd) => parent = Some(fd),
                Err(_) => return Ok(None),
            }
        }
        self.follow("", false)
    }

    /// Replaces the ignore rules.
    pub fn set_ignore_patterns(&mut self, patterns: &[String]) -> Result<(), ContextError> {
        self.matcher = PatternMatcher::new(patterns)?;
        Ok(())
    }

    /// The ignore patterns for a build with the Dockerfile at `dockerfile` (context-relative):
    /// `<dockerfile>.dockerignore` if it exists, else `.dockerignore`, else none.
    pub fn dockerignore_patterns(&self, dockerfile: &str) -> Result<Vec<String>, ContextError> {
        for candidate in [
            format!("{}.dockerignore", clean_rel(dockerfile)),
            ".dockerignore".to_owned(),
        ] {
            match self.read_build_file(&candidate, MAX_IGNORE_FILE) {
                Ok(bytes) => return Ok(ignore::read_ignore_file(&String::from_utf8_lossy(&bytes))),
                Err(ContextError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Vec::new())
    }

    /// Reads a file the build itself needs (the Dockerfile, `.dockerignore`), even if the ignore
    /// rules hide it from COPY. Symlinks are followed inside the context; at most `max` bytes.
    pub fn read_build_file(&self, path: &str, max: u64) -> Result<Vec<u8>, ContextError> {
        let f = self
            .follow(path, false)?
            .ok_or_else(|| ContextError::NotFound {
                path: clean_rel(path),
            })?;
        let file = self.open_followed_file(&f)?;
        let mut out = Vec::new();
        file.take(max.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| ContextError::io("read", &f.rel, e))?;
        if u64::try_from(out.len()).map_or(true, |n| n > max) {
            return Err(ContextError::FileTooLarge { path: f.rel, max });
        }
        Ok(out)
    }

    /// Opens a visible regular file for reading (`path` as in [`Entry::path`]).
    pub fn open_file(&self, path: &str) -> Result<cap_std::fs::File, ContextError> {
        let f = match self.follow(path, true)? {
            Some(f) if self.visible(&f)? => f,
            _ => {
                return Err(ContextError::NotFound {
                    path: clean_rel(path),
                })
            }
        };
        Ok(cap_std::fs::File::from_std(self.open_followed_file(&f)?))
    }

    /// Finds the sources a COPY/ADD `src` names: relative to the context root (a leading `/`
    /// changes nothing), `..` stopping at the root, `filepath.Match` wildcards per component,
    /// symlinks followed inside the context, ignored files invisible. Matches come in name order.
    pub fn resolve(&self, src: &str) -> Result<Vec<Source>, ContextError> {
        let cleaned = clean_rel(src);
        let not_found = || ContextError::NotFound {
            path: cleaned.clone(),
        };
        let components: Vec<&str> = cleaned.split('/').filter(|c| !c.is_empty()).collect();
        let Some(first_wild) = components.iter().position(|c| has_wildcards(c)) else {
            return match self.source(&cleaned)? {
                Some(s) => Ok(vec![s]),
                None => Err(not_found()),
            };
        };
        let wild = components.get(first_wild..).unwrap_or_default();
        for pattern in wild {
            glob_syntax(pattern)?;
        }
        let base = components.get(..first_wild).unwrap_or_default().join("/");
        let dir = match self.follow(&base, true)? {
            Some(f) if f.stat.kind() == Kind::Dir => f,
            _ => return Err(not_found()),
        };
        let fd = self.open_followed_dir(&dir)?;
        let mut matches = Vec::new();
        self.glob(&fd, &mut dir.rel.clone(), wild, &mut matches)?;
        let mut out = Vec::new();
        for m in matches {
            if let Some(s) = self.source(&m)? {
                out.push(s);
            }
        }
        if out.is_empty() {
            return Err(not_found());
        }
        Ok(out)
    }

    /// Every visible item under `source`, the source itself first.
    pub fn entries(&self, source: &Source) -> Result<Vec<Entry>, ContextError> {
        let start = self
            .follow(&source.resolved, true)?
            .ok_or_else(|| ContextError::NotFound {
                path: source.path.clone(),
            })?;
        let mut out = Vec::new();
        self.walk(&start, &mut |e| {
            let kind = match (e.kind, e.at) {
                (Kind::File, _) => EntryKind::File { size: e.stat.size },
                (Kind::Symlink, Some((dir, name))) => {
                    let target = sys::read_link_at(dir, name)
                        .map_err(|err| ContextError::io("read link", e.path, err))?;
                    let target =
                        String::from_utf8(target).map_err(|_| ContextError::NonUtf8Name {
                            path: e.path.to_owned(),
                        })?;
                    EntryKind::Symlink { target }
                }
                _ => EntryKind::Dir,
            };
            out.push(Entry {
                path: e.path.to_owned(),
                rel: e.rel.to_owned(),
                kind,
                mode: e.stat.perm(),
                mtime_ns: e.stat.mtime,
            });
            Ok(true)
        })?;
        Ok(out)
    }

    /// The visible source at the context path `path`, after following symlinks.
    fn source(&self, path: &str) -> Result<Option<Source>, ContextError> {
        let Some(f) = self.follow(path, true)? else {
            return Ok(None);
        };
        let kind = match f.stat.kind() {
            Kind::File => SourceKind::File,
            Kind::Dir => SourceKind::Dir,
            Kind::Symlink | Kind::Other => return Ok(None),
        };
        if !self.visible(&f)? {
            return Ok(None);
        }
        Ok(Some(Source {
            path: path.to_owned(),
            resolved: f.rel,
            kind,
        }))
    }

    /// Matches `patterns` (one per component) below the directory `dir` (context path `base`),
    /// appending context paths of matches to `out`. Like BuildKit's walk, directories are only
    /// entered for real (a symlink to a directory does not match an inner component).
    fn glob(
        &self,
        dir: &OwnedFd,
        base: &mut String,
        patterns: &[&str],
        out: &mut Vec<String>,
    ) -> Result<(), ContextError> {
        let Some((pattern, rest)) = patterns.split_first() else {
            return Ok(());
        };
        let names = sys::Names::read(dir).map_err(|e| ContextError::io("list", base, e))?;
        let base_len = base.len();
        for name in names.iter() {
            let lossy = String::from_utf8_lossy(name.to_bytes());
            if !ignore::glob_match(pattern, &lossy)? {
                continue;
            }
            base.truncate(base_len);
            if !base.is_empty() {
                base.push('/');
            }
            base.push_str(&lossy);
            if self.ignored(base)? && !self.matcher.has_exclusions() {
                continue;
            }
            if name.to_str().is_err() {
                return Err(ContextError::NonUtf8Name { path: base.clone() });
            }
            if rest.is_empty() {
                out.push(base.clone());
                continue;
            }
            match sys::stat_at(dir.as_fd(), name) {
                Ok(s) if s.kind() == Kind::Dir => {
                    let sub = sys::open_dir_at(dir.as_fd(), name)
                        .map_err(|e| ContextError::io("open", base, e))?;
                    self.glob(&sub, base, rest, out)?;
                }
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(ContextError::io("stat", base, e)),
            }
        }
        base.truncate(base_len);
        Ok(())
    }

    /// Resolves `path` inside the context like a chroot (BuildKit's `fs.RootPath`): symlinks are
    /// followed with absolute targets meaning the context root, `..` is lexical and stops at the
    /// root. `Ok(None)` when nothing is there; with `filtered`, also when a symlink on the way is
    /// ignored. The result itself is not checked against the ignore rules (see [`Self::visible`]).
    fn follow(&self, path: &str, filtered: bool) -> Result<Option<Followed>, ContextError> {
        let original = path;
        let mut path = clean_rel(path);
        let mut links = 0;
        'restart: loop {
            if path.is_empty() {
                let stat =
                    sys::stat_fd(self.root.as_fd()).map_err(|e| ContextError::io("stat", "", e))?;
                return Ok(Some(Followed {
                    rel: path,
                    stat,
                    parent: None,
                    name: String::new(),
                }));
            }
            let mut parent: Option<OwnedFd> = None;
            let mut start = 0;
            loop {
                let end = path[start..].find('/').map_or(path.len(), |i| start + i);
                let comp = &path[start..end];
                let dir = parent.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
                let stat = match sys::stat_at(dir, comp) {
                    Ok(s) => s,
                    Err(e) if not_found(&e) || e.raw_os_error() == Some(libc::EINVAL) => {
                        return Ok(None)
                    }
                    Err(e) => return Err(ContextError::io("stat", &path[..end], e)),
                };
                let last = end == path.len();
                match stat.kind() {
                    Kind::Symlink => {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(ContextError::TooManyLinks {
                                path: clean_rel(original),
                            });
                        }
                        if filtered && self.ignored(&path[..end])? {
                            return Ok(None);
                        }
                        let target = sys::read_link_at(dir, comp)
                            .map_err(|e| ContextError::io("read link", &path[..end], e))?;
                        let target = String::from_utf8_lossy(&target);
                        let dir_part = path[..start].trim_end_matches('/');
                        let rest = &path[end..];
                        let next = if target.starts_with('/') {
                            format!("{target}{rest}")
                        } else {
                            format!("{dir_part}/{target}{rest}")
                        };
                        path = clean_rel(&next);
                        continue 'restart;
                    }
                    _ if last => {
                        let name = comp.to_owned();
                        return Ok(Some(Followed {
                            rel: path,
                            stat,
                            parent,
                            name,
                        }));
                    }
                    Kind::Dir => {
                        let fd = sys::open_dir_at(dir, comp)
                            .map_err(|e| ContextError::io("open", &path[..end], e))?;
                        parent = Some(fd);
                        start = end + 1;
                    }
                    Kind::File | Kind::Other => return Ok(None),
                }
            }
        }
    }

    /// Whether the ignore rules hide `path` (ignoring the re-include rule for directories).
    fn ignored(&self, path: &str) -> Result<bool, ContextError> {
        Ok(!self.matcher.is_empty() && self.matcher.matches_or_parent_matches(path)?)
    }

    /// Whether a resolved path is part of the filtered context: not ignored, or an ignored
    /// directory holding something re-included.
    fn visible(&self, f: &Followed) -> Result<bool, ContextError> {
        if f.stat.kind() == Kind::Other {
            return Ok(false);
        }
        if !self.ignored(&f.rel)? {
            return Ok(true);
        }
        if f.stat.kind() != Kind::Dir || !self.matcher.has_exclusions() {
            return Ok(false);
        }
        let mut found = false;
        self.walk(f, &mut |_| {
            found = true;
            Ok(false)
        })?;
        Ok(found)
    }

    fn open_followed_dir(&self, f: &Followed) -> Result<OwnedFd, ContextError> {
        let dir = f.parent.as_ref().map_or(self.root.as_fd(), |p| p.as_fd());
        let name = if f.name.is_empty() {
            "."
        } else {
            f.name.as_str()
        };
        sys::open_dir_at(dir, name).map_err(|e| ContextError::io("open", &f.rel, e))
    }

    fn open_followed_file(&self, f: &Followed) -> Result<std::fs::File, ContextError> {
        if f.stat.kind() != Kind::File {
            return Err(ContextError::NotAFile {
                path: f.rel.clone(),
            });
        }
        let dir = f.parent.as_ref().map_or(self.root.as_fd(), |p| p.as_fd());
        let fd = sys::open_file_at(dir, f.name.as_str())
            .map_err(|e| ContextError::io("open", &f.rel, e))?;
        let now = sys::stat_fd(fd.as_fd()).map_err(|e| ContextError::io("stat", &f.rel, e))?;
        if now.kind() != Kind::File {
            return Err(ContextError::NotAFile {
                path: f.rel.clone(),
            });
        }
        Ok(std::fs::File::from(fd))
    }

    /// Walks the visible tree from `start` in order, calling `visit` for each item until it
    /// returns `false`.
    fn walk(&self, start: &Followed, visit: &mut Visit<'_>) -> Result<(), ContextError> {
        let mut st = WalkState {
            path: start.rel.clone(),
            start_len: start.rel.len(),
            pending: Vec::new(),
        };
        let (ignored, info) = self.start_info(&start.rel)?;
        let mut stat = start.stat;
        match stat.kind() {
            Kind::Dir => {
                if ignored && !self.matcher.has_exclusions() {
                    return Ok(());
                }
                let fd = self.open_followed_dir(start)?;
                self.apply_recorded_mode(fd.as_fd(), &mut stat);
                if ignored {
                    st.pending.push((start.rel.clone(), stat));
                } else if !visit(&WalkEntry {
                    path: &start.rel,
                    rel: "",
                    stat: &stat,
                    kind: Kind::Dir,
                    at: None,
                })? {
                    return Ok(());
                }
                self.walk_dir(&mut st, &fd, &info, 0, visit)?;
            }
            Kind::File | Kind::Symlink if !ignored => {
                if stat.kind() == Kind::File && self.overrides {
                    let file = self.open_followed_file(start)?;
                    self.apply_recorded_mode(file.as_fd(), &mut stat);
                }
                let name =
                    CString::new(start.name.as_str()).map_err(|_| ContextError::NotAFile {
                        path: start.rel.clone(),
                    })?;
                let dir = start
                    .parent
                    .as_ref()
                    .map_or(self.root.as_fd(), |p| p.as_fd());
                visit(&WalkEntry {
                    path: &start.rel,
                    rel: "",
                    stat: &stat,
                    kind: stat.kind(),
                    at: Some((dir, &name)),
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// In a tar context, replaces the permission bits in `stat` by the mode the unpacker
    /// recorded when it had to widen them (see [`Context::from_tar`]).
    fn apply_recorded_mode(&self, fd: BorrowedFd<'_>, stat: &mut Stat) {
        if !self.overrides {
            return;
        }
        let mut buf = [0u8; 128];
        if let Ok(n) = rustix::fs::fgetxattr(fd, OVERRIDE_STAT_XATTR, &mut buf[..]) {
            if let Some(o) = buf.get(..n).and_then(OverrideStat::parse) {
                stat.mode = (stat.mode & !0o7777) | o.mode;
            }
        }
    }

    /// Whether `path` is ignored, and the match results to hand to its children.
    fn start_info(&self, path: &str) -> Result<(bool, MatchInfo), ContextError> {
        let mut info = MatchInfo::default();
        let mut ignored = false;
        if self.matcher.is_empty() || path.is_empty() {
            return Ok((false, info));
        }
        let ends = path
            .match_indices('/')
            .map(|(i, _)| i)
            .chain(std::iter::once(path.len()));
        for end in ends {
            let mut next = MatchInfo::default();
            ignored = self
                .matcher
                .matches_using_parent_results(&path[..end], &info, &mut next)?;
            info = next;
        }
        Ok((ignored, info))
    }

    fn walk_dir(
        &self,
        st: &mut WalkState,
        dir: &OwnedFd,
        info: &MatchInfo,
        depth: usize,
        visit: &mut Visit<'_>,
    ) -> Result<bool, ContextError> {
        if depth >= MAX_DEPTH {
            return Err(ContextError::TooDeep {
                path: st.path.clone(),
                max: MAX_DEPTH,
            });
        }
        let names = sys::Names::read(dir).map_err(|e| ContextError::io("list", &st.path, e))?;
        let base = st.path.len();
        let filtering = !self.matcher.is_empty();
        let mut child_info = MatchInfo::default();
        for name in names.iter() {
            st.path.truncate(base);
            if !st.path.is_empty() {
                st.path.push('/');
            }
            let utf8 = match name.to_str() {
                Ok(s) => {
                    st.path.push_str(s);
                    true
                }
                Err(_) => {
                    st.path.push_str(&String::from_utf8_lossy(name.to_bytes()));
                    false
                }
            };
            let ignored = filtering
                && self
                    .matcher
                    .matches_using_parent_results(&st.path, info, &mut child_info)?;
            if ignored && !self.matcher.has_exclusions() {
                continue;
            }
            let mut stat = match sys::stat_at(dir.as_fd(), name) {
                Ok(s) => s,
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(ContextError::io("stat", &st.path, e)),
            };
            let kind = stat.kind();
            if kind == Kind::Other || (ignored && kind != Kind::Dir) {
                continue;
            }
            let sub = match kind {
                Kind::Dir => Some(
                    sys::open_dir_at(dir.as_fd(), name)
                        .map_err(|e| ContextError::io("open", &st.path, e))?,
                ),
                _ => None,
            };
            if self.overrides {
                match &sub {
                    Some(fd) => self.apply_recorded_mode(fd.as_fd(), &mut stat),
                    None if kind == Kind::File => {
                        let fd = sys::open_file_at(dir.as_fd(), name)
                            .map_err(|e| ContextError::io("open", &st.path, e))?;
                        self.apply_recorded_mode(fd.as_fd(), &mut stat);
                    }
                    None => {}
                }
            }
            if ignored {
                if let Some(sub) = sub {
                    let before = st.pending.len();
                    st.pending.push((st.path.clone(), stat));
                    let sub_info = std::mem::take(&mut child_info);
                    if !self.walk_dir(st, &sub, &sub_info, depth + 1, visit)? {
                        return Ok(false);
                    }
                    st.pending.truncate(before);
                }
                continue;
            }
            if !utf8 {
                return Err(ContextError::NonUtf8Name {
                    path: st.path.clone(),
                });
            }
            for (path, stat) in std::mem::take(&mut st.pending) {
                let e = WalkEntry {
                    path: &path,
                    rel: st.rel(&path),
                    stat: &stat,
                    kind: Kind::Dir,
                    at: None,
                };
                if !visit(&e)? {
                    return Ok(false);
                }
            }
            let e = WalkEntry {
                path: &st.path,
                rel: st.rel(&st.path),
                stat: &stat,
                kind,
                at: Some((dir.as_fd(), name)),
            };
            if !visit(&e)? {
                return Ok(false);
            }
            if let Some(sub) = sub {
                let sub_info = std::mem::take(&mut child_info);
                if !self.walk_dir(st, &sub, &sub_info, depth + 1, visit)? {
                    return Ok(false);
                }
            }
        }
        st.path.truncate(base);
        Ok(true)
    }
}

/// Checks a wildcard component's syntax up front, so a malformed pattern is reported even when
/// the folder it applies to is empty.
fn glob_syntax(pattern: &str) -> Result<(), BadPattern> {
    ignore::glob_match(pattern, "").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_recorded(path: &Path, value: &[u8]) {
        rustix::fs::setxattr(
            path,
            OVERRIDE_STAT_XATTR,
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .expect("set user xattr (the test folder must support them)");
    }

    /// Without root, the unpacker widens modes to keep owner access and records the real ones;
    /// a tar context must report (and hash) the recorded modes.
    #[test]
    fn recorded_modes_win_in_tar_contexts() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ro"), b"x").expect("write");
        std::fs::write(dir.path().join("junk"), b"y").expect("write");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        set_recorded(&dir.path().join("ro"), b"0:0:0444");
        set_recorded(&dir.path().join("d"), b"0:0:0555:dir");
        set_recorded(&dir.path().join("junk"), b"not a record");
        let junk_mode = std::fs::metadata(dir.path().join("junk"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .expect("stat");

        let mut ctx = Context::from_dir(dir.path(), &[]).expect("open");
        let root = ctx.resolve(".").expect("root");
        let plain = ctx
            .digest(&root, &mut StatCache::new())
            .expect("digest")
            .hash;
        ctx.overrides = true;
        let modes: Vec<(String, u32)> = ctx
            .entries(&root[0])
            .expect("entries")
            .into_iter()
            .map(|e| (e.path, e.mode))
            .collect();
        assert!(modes.contains(&("ro".to_owned(), 0o444)), "{modes:?}");
        assert!(modes.contains(&("d".to_owned(), 0o555)), "{modes:?}");
        assert!(modes.contains(&("junk".to_owned(), junk_mode)), "{modes:?}");
        let file = ctx.resolve("ro").expect("ro");
        assert_eq!(ctx.entries(&file[0]).expect("entries")[0].mode, 0o444);

        let mut cache = StatCache::new();
        let recorded = ctx.digest(&root, &mut cache).expect("digest");
        assert_ne!(recorded.hash, plain, "recorded modes must be hashed");
        assert!(cache.is_empty(), "tar contexts bypass the stat cache");
        let again = ctx.digest(&root, &mut cache).expect("digest");
        assert_eq!((again.hash, again.stats.files_read), (recorded.hash, 2));
    }
}
