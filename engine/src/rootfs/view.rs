//! A read-only merged view over a stack of layer snapshots.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};

use cap_std::fs::{Dir, File, FileTypeExt, Metadata, MetadataExt};

/// Symlinks followed while resolving one path before giving up, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// xattr that marks a directory as opaque in the snapshot format.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// Errors from resolving paths in a rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Too many symlinks while resolving a path.
    #[error("too many levels of symbolic links resolving {0}")]
    SymlinkLoop(ContainerPath),
    /// A path component that must be a directory is not one.
    #[error("{0} is not a directory")]
    NotADirectory(ContainerPath),
    /// A file is larger than the caller allows.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: ContainerPath,
        /// The limit.
        limit: u64,
    },
    /// Reading a layer snapshot failed.
    #[error("read {path} in layer {layer}: {source}")]
    Io {
        /// The path inside the rootfs.
        path: ContainerPath,
        /// Index of the layer (0 = bottom).
        layer: usize,
        /// The underlying error.
        source: io::Error,
    },
}

/// An absolute, normalised path inside a container rootfs: starts with `/`, has no empty, `.` or
/// `..` components and no trailing slash (except the root itself). Parsing is lexical and clamps
/// `..` at the root, the way a path inside a chroot behaves.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerPath(String);

impl ContainerPath {
    /// The root, `/`.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// Resolves `path` lexically against `base` (used when `path` is relative), clamping `..`
    /// at the root.
    pub fn resolve(base: &ContainerPath, path: &str) -> Self {
        let mut parts: Vec<&str> = if path.starts_with('/') {
            Vec::new()
        } else {
            base.components().collect()
        };
        for c in path.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        Self::from_parts(parts)
    }

    /// Parses an absolute or relative path as if relative to `/`.
    pub fn parse(path: &str) -> Self {
        Self::resolve(&Self::root(), path)
    }

    fn from_parts<S: AsRef<str>>(parts: impl IntoIterator<Item = S>) -> Self {
        let mut s = String::new();
        for p in parts {
            s.push('/');
            s.push_str(p.as_ref());
        }
        if s.is_empty() {
            s.push('/');
        }
        Self(s)
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The path as text, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path relative to the root (`etc/passwd`; empty for the root), for use with a `Dir`.
    pub fn rel(&self) -> &str {
        &self.0[1..]
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.rel().split('/').filter(|c| !c.is_empty())
    }

    /// The parent folder (the root's parent is the root).
    pub fn parent(&self) -> Self {
        match self.0.rfind('/') {
            Some(0) | None => Self::root(),
            Some(i) => Self(self.0[..i].to_owned()),
        }
    }

    /// The last component (`None` for the root).
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    /// This path with one more component. `name` must be a single normal component; anything
    /// else is resolved lexically so the result stays normalised.
    pub fn join(&self, name: &str) -> Self {
        Self::resolve(self, name)
    }

    /// This path with the single normal component `name` (no `/`, not `.` or `..`) appended,
    /// without re-parsing.
    pub(crate) fn child(&self, name: &str) -> Self {
        debug_assert!(!name.is_empty() && !name.contains('/') && name != "." && name != "..");
        let mut s = String::with_capacity(self.0.len() + 1 + name.len());
        s.push_str(&self.0);
        if !self.is_root() {
            s.push('/');
        }
        s.push_str(name);
        Self(s)
    }

    /// Whether `self` is `other` or below it.
    pub fn starts_with(&self, other: &ContainerPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What kind of object an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link and its target, as stored.
    Symlink(String),
    /// A device, fifo or socket.
    Other,
}

/// A visible object in the merged view.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where it lives, with every symlink on the way resolved.
    pub path: ContainerPath,
    /// Its kind.
    pub kind: EntryKind,
    /// Index of the layer that provides it (0 = bottom).
    pub layer: usize,
    /// Its metadata in that layer.
    pub meta: Metadata,
}

enum Found {
    Missing,
    Whiteout,
    Present(Metadata),
}

/// What one layer shows at a path: the layer and the object's metadata there.
type Visible = (usize, Metadata);

/// A directory of the merged view with the layers that contribute to it (top first), for
/// walking a tree one level at a time without resolving every path from the root again.
#[derive(Debug, Clone)]
pub struct MergedDir {
    /// Its real path (no symlink on the way).
    pub path: ContainerPath,
    contributing: Vec<usize>,
}

/// Read-only merged view over layer snapshots, bottom first.
pub struct LayerView {
    layers: Vec<Dir>,
}

impl LayerView {
    /// A view over `layers` (index 0 is the bottom layer).
    pub fn new(layers: Vec<Dir>) -> Self {
        Self { layers }
    }

    /// An empty rootfs (`FROM scratch`).
    pub fn empty() -> Self {
        Self { layers: Vec::new() }
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer snapshots, bottom first.
    pub fn layers(&self) -> &[Dir] {
        &self.layers
    }

    /// The `user.containers.override_stat` record of a directory `e` found here (the owner
    /// and mode it has where kiln could not set them for real), if any.
    pub fn dir_record(&self, e: &Entry) -> Option<crate::layer::OverrideStat> {
        if e.kind != EntryKind::Dir {
            return None;
        }
        let layer = self.layers.get(e.layer)?;
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        // The path has its symlinks resolved already; a readable descriptor takes fgetxattr.
        let dir = rustix::fs::openat2(
            layer,
            if e.path.is_root() { "." } else { e.path.rel() },
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )
        .ok()?;
        let mut buf = [0u8; 256];
        let n = rustix::fs::fgetxattr(&dir, crate::layer::OVERRIDE_STAT_XATTR, &mut buf).ok()?;
        crate::layer::OverrideStat::parse(&buf[..n])
    }

    fn io(path: &str, layer: usize, source: io::Error) -> RootfsError {
        RootfsError::Io {
            path: ContainerPath::parse(path),
            layer,
            source,
        }
    }

    fn stat(&self, layer: usize, rel: &str) -> Result<Found, RootfsError> {
        let dir = &self.layers[layer];
        match dir.symlink_metadata(rel) {
            Ok(m) => {
                if m.file_type().is_char_device() && m.rdev() == 0 {
                    return Ok(Found::Whiteout);
                }
                Ok(Found::Present(m))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // An OCI-style marker file also hides the name.
                let (parent, name) = match rel.rfind('/') {
                    Some(i) => (&rel[..i], &rel[i + 1..]),
                    None => ("", rel),
                };
                let marker = if parent.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{parent}/.wh.{name}")
                };
                match dir.symlink_metadata(&marker) {
                    Ok(_) => Ok(Found::Whiteout),
                    Err(_) => Ok(Found::Missing),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(Found::Missing),
            Err(e) => Err(Self::io(rel, layer, e)),
        }
    }

    fn is_opaque(&self, layer: usize, rel: &str) -> Result<bool, RootfsError> {
        let dir = if rel.is_empty() {
            self.layers[layer].try_clone()
        } else {
            self.layers[layer].open_dir(rel)
        }
        .map_err(|e| Self::io(rel, layer, e))?;
        let readable =
            crate::fsx::reopen_readable(&dir).map_err(|e| Self::io(rel, layer, e.into()))?;
        let mut buf = [0u8; 8];
        match rustix::fs::fgetxattr(&readable, OPAQUE_XATTR, &mut buf) {
            Ok(n) => Ok(buf.get(..n) == Some(b"y")),
            Err(_) => Ok(false),
        }
    }

    /// One step of a lookup: the topmost visible object at `rel` among the layers that
    /// contribute its parent folder (`contributing`, top first), and the layers that contribute
    /// it as a folder (empty unless it is one).
    fn step(
        &self,
        contributing: &[usize],
        rel: &str,
    ) -> Result<(Option<Visible>, Vec<usize>), RootfsError> {
        let mut found = None;
        let mut next = Vec::new();
        for &l in contributing {
            match self.stat(l, rel)? {
                Found::Missing => {}
                Found::Whiteout => break,
                Found::Present(m) => {
                    if m.is_dir() {
                        let opaque = self.is_opaque(l, rel)?;
                        if found.is_none() {
                            found = Some((l, m));
                        }
                        next.push(l);
                        if opaque {
                            break;
                        }
                    } else {
                        if found.is_none() {
                            found = Some((l, m));
                        }
                        break;
                    }
                }
            }
        }
        if found.as_ref().is_some_and(|(_, m)| !m.is_dir()) {
            next.clear();
        }
        Ok((found, next))
    }

    /// Finds the topmost visible object at exactly `parts` (no symlink following), and the
    /// layers that contribute a directory at that path, top first.
    fn raw(&self, parts: &[String]) -> Result<Option<(usize, Metadata, Vec<usize>)>, RootfsError> {
        let mut contributing: Vec<usize> = (0..self.layers.len()).rev().collect();
        let mut rel = String::new();
        let mut found = None;
        for name in parts {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(name);
            let (f, next) = self.step(&contributing, &rel)?;
            if f.is_none() {
                return Ok(None);
            }
            found = f;
            contributing = next;
        }
        match found {
            Some((l, m)) => Ok(Some((l, m, contributing))),
            // The root itself: a directory contributed by every layer.
            None => {
                let top = self.layers.len().checked_sub(1);
                match top {
                    Some(t) => {
                        let m = self.layers[t]
                            .dir_metadata()
                            .map_err(|e| Self::io("/", t, e))?;
                        Ok(Some((t, m, contributing)))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    fn read_link(&self, layer: usize, rel: &str) -> Result<String, RootfsError> {
        let target = self.layers[layer]
            .read_link_contents(rel)
            .map_err(|e| Self::io(rel, layer, e))?;
        Ok(target.to_string_lossy().into_owned())
    }

    /// Resolves `path` inside the rootfs, following symlinks on the way (and the last component
    /// too when `follow` is set). Returns `None` when nothing is visible there.
    pub fn lookup(&self, path: &ContainerPath, follow: bool) -> Result<Option<Entry>, RootfsError> {
        Ok(self.resolve(path, follow)?.1)
    }

    /// Like [`lookup`](Self::lookup), but also returns the resolved path when the final object
    /// does not exist (so a caller can create it there).
    pub fn resolve(
        &self,
        path: &ContainerPath,
        follow: bool,
    ) -> Result<(ContainerPath, Option<Entry>), RootfsError> {
        let mut resolved: Vec<String> = Vec::new();
        let mut queue: std::collections::VecDeque<String> =
            path.components().map(str::to_owned).collect();
        let mut links = 0;
        let mut last = None;
        while let Some(c) = queue.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved.pop();
                    last = None;
                    continue;
                }
                _ => {}
            }
            resolved.push(c);
            let is_final = queue.is_empty();
            match self.raw(&resolved)? {
                None => {
                    if is_final {
                        return Ok((ContainerPath::from_parts(&resolved), None));
                    }
                    // A missing intermediate: the rest cannot exist either, but report where
                    // the full path would be.
                    resolved.extend(queue.drain(..));
                    return Ok((ContainerPath::from_parts(&resolved), None));
                }
                Some((layer, meta, _)) => {
                    if meta.file_type().is_symlink() && (follow || !is_final) {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(RootfsError::SymlinkLoop(path.clone()));
                        }
                        let rel = resolved.join("/");
                        let target = self.read_link(layer, &rel)?;
                        resolved.pop();
                        if target.starts_with('/') {
                            resolved.clear();
                        }
                        let mut front: Vec<String> = target
                            .split('/')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect();
                        front.extend(queue.drain(..));
                        queue = front.into();
                        last = None;
                        continue;
                    }
                    if !is_final && !meta.is_dir() {
                        return Err(RootfsError::NotADirectory(ContainerPath::from_parts(
                            &resolved,
                        )));
                    }
                    last = Some((layer, meta));
                }
            }
        }
        let p = ContainerPath::from_parts(&resolved);
        let entry = match last {
            Some((layer, meta)) => Some(self.entry(p.clone(), layer, meta)?),
            None => match self.raw(&resolved)? {
                Some((layer, meta, _)) => Some(self.entry(p.clone(), layer, meta)?),
                None => None,
            },
        };
        Ok((p, entry))
    }

    fn entry(
        &self,
        path: ContainerPath,
        layer: usize,
        meta: Metadata,
    ) -> Result<Entry, RootfsError> {
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_symlink() {
            EntryKind::Symlink(self.read_link(layer, path.rel())?)
        } else {
            EntryKind::Other
        };
        Ok(Entry {
            path,
            kind,
            layer,
            meta,
        })
    }

    /// The merged listing of the directory at `path` (symlinks followed), sorted by name.
    /// Whiteout markers and names hidden by them are left out.
    pub fn read_dir(&self, path: &ContainerPath) -> Result<Vec<Entry>, RootfsError> {
        match self.merged_dir(path)? {
            Some(dir) => self.list(&dir),
            None => Ok(Vec::new()),
        }
    }

    /// The directory at `path` (symlinks followed) for a walk; `None` when nothing is there.
    pub fn merged_dir(&self, path: &ContainerPath) -> Result<Option<MergedDir>, RootfsError> {
        let (real, entry) = self.resolve(path, true)?;
        match entry {
            Some(e) if e.kind == EntryKind::Dir => {}
            Some(_) => return Err(RootfsError::NotADirectory(real)),
            None => return Ok(None),
        }
        let parts: Vec<String> = real.components().map(str::to_owned).collect();
        Ok(self.raw(&parts)?.map(|(_, _, contributing)| MergedDir {
            path: real,
            contributing,
        }))
    }

    /// The folder `entry` of a listing of `parent` ([`LayerView::list`]), one step down: no
    /// path is resolved from the root again.
    pub fn child_dir(&self, parent: &MergedDir, entry: &Entry) -> Result<MergedDir, RootfsError> {
        if entry.kind != EntryKind::Dir {
            return Err(RootfsError::NotADirectory(entry.path.clone()));
        }
        let (_, contributing) = self.step(&parent.contributing, entry.path.rel())?;
        Ok(MergedDir {
            path: entry.path.clone(),
            contributing,
        })
    }

    /// The merged listing of `dir`, sorted by name, whiteouts and what they hide left out.
    pub fn list(&self, dir: &MergedDir) -> Result<Vec<Entry>, RootfsError> {
        let real = &dir.path;
        // Top layer first: the first layer to mention a name decides it.
        let mut names: BTreeMap<String, Option<(usize, Metadata)>> = BTreeMap::new();
        for &l in &dir.contributing {
            let dir = if real.is_root() {
                self.layers[l].try_clone()
            } else {
                self.layers[l].open_dir(real.rel())
            }
            .map_err(|e| Self::io(real.as_str(), l, e))?;
            for item in dir.entries().map_err(|e| Self::io(real.as_str(), l, e))? {
                let item = item.map_err(|e| Self::io(real.as_str(), l, e))?;
                let name = item.file_name().to_string_lossy().into_owned();
                if let Some(hidden) = name.strip_prefix(".wh.") {
                    if hidden != ".wh..opq" {
                        names.entry(hidden.to_owned()).or_insert(None);
                    }
                    continue;
                }
                if names.contains_key(&name) {
                    continue;
                }
                let meta = item
                    .metadata()
                    .map_err(|e| Self::io(real.join(&name).as_str(), l, e))?;
                if meta.file_type().is_char_device() && meta.rdev() == 0 {
                    names.insert(name, None);
                } else {
                    names.insert(name, Some((l, meta)));
                }
            }
        }
        let mut out = Vec::new();
        for (name, v) in names {
            if let Some((l, meta)) = v {
                out.push(self.entry(real.join(&name), l, meta)?);
            }
        }
        Ok(out)
    }

    /// Opens a regular file found by [`lookup`](Self::lookup).
    pub fn open(&self, entry: &Entry) -> Result<File, RootfsError> {
        self.layers[entry.layer]
            .open(entry.path.rel())
            .map_err(|e| Self::io(entry.path.as_str(), entry.layer, e))
    }

    /// Reads a whole regular file (symlinks followed) if it exists, refusing files over `limit`.
    pub fn read_file(
        &self,
        path: &ContainerPath,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, RootfsError> {
        let Some(entry) = self.lookup(path, true)? else {
            return Ok(None);
        };
        if entry.kind != EntryKind::File {
            return Ok(None);
        }
        if entry.meta.len() > limit {
            return Err(RootfsError::TooLarge {
                path: entry.path,
                limit,
            });
        }
        let mut buf = Vec::new();
        self.open(&entry)?
            .take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Self::io(entry.path.as_str(), entry.layer, e))?;
        if buf.len() as u64 > limit {
            return Err(RootfsError::TooLarge {
                path: entry.path,
                limit,
            });
        }
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;
    use std::os::unix::fs::symlink;

    fn layers(n: usize) -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
        let t = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..n)
            .map(|i| {
                let p = t.path().join(format!("l{i}"));
                std::fs::create_dir(&p).unwrap();
                p
            })
            .collect();
        (t, paths)
    }

    fn view(paths: &[std::path::PathBuf]) -> LayerView {
        LayerView::new(
            paths
                .iter()
                .map(|p| Dir::open_ambient_dir(p, ambient_authority()).unwrap())
                .collect(),
        )
    }

    #[test]
    fn paths_clamp_at_root() {
        assert_eq!(
            ContainerPath::parse("../../etc/./passwd").as_str(),
            "/etc/passwd"
        );
        let base = ContainerPath::parse("/app/src");
        assert_eq!(ContainerPath::resolve(&base, "../x").as_str(), "/app/x");
        assert_eq!(ContainerPath::resolve(&base, "/y/").as_str(), "/y");
        assert_eq!(ContainerPath::parse("").as_str(), "/");
        assert_eq!(ContainerPath::parse("/a/b").parent().as_str(), "/a");
        assert_eq!(ContainerPath::parse("/a").parent().as_str(), "/");
        assert!(ContainerPath::parse("/a/b").starts_with(&ContainerPath::parse("/a")));
        assert!(!ContainerPath::parse("/ab").starts_with(&ContainerPath::parse("/a")));
    }

    #[test]
    fn upper_layers_win_and_whiteouts_hide() {
        let (_t, p) = layers(2);
        std::fs::create_dir_all(p[0].join("etc")).unwrap();
        std::fs::write(p[0].join("etc/a"), "lower").unwrap();
        std::fs::write(p[0].join("etc/gone"), "x").unwrap();
        std::fs::create_dir_all(p[1].join("etc")).unwrap();
        std::fs::write(p[1].join("etc/a"), "upper").unwrap();
        std::fs::write(p[1].join("etc/.wh.gone"), "").unwrap();
        let v = view(&p);
        let a = v.read_file(&ContainerPath::parse("/etc/a"), 100).unwrap();
        assert_eq!(a.as_deref(), Some(&b"upper"[..]));
        assert!(v
            .lookup(&ContainerPath::parse("/etc/gone"), true)
            .unwrap()
            .is_none());
        let names: Vec<_> = v
            .read_dir(&ContainerPath::parse("/etc"))
            .unwrap()
            .into_iter()
            .map(|e| e.path.to_string())
            .collect();
        assert_eq!(names, ["/etc/a"]);
    }

    #[test]
    fn opaque_dir_hides_lower_contents() {
        let (_t, p) = layers(2);
        std::fs::create_dir_all(p[0].join("d")).unwrap();
        std::fs::write(p[0].join("d/old"), "x").unwrap();
        std::fs::create_dir_all(p[1].join("d")).unwrap();
        std::fs::write(p[1].join("d/new"), "y").unwrap();
        rustix::fs::setxattr(
            p[1].join("d"),
            OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let v = view(&p);
        assert!(v
            .lookup(&ContainerPath::parse("/d/old"), true)
            .unwrap()
            .is_none());
        assert_eq!(v.read_dir(&ContainerPath::parse("/d")).unwrap().len(), 1);
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        let (_t, p) = layers(1);
        std::fs::create_dir_all(p[0].join("etc")).unwrap();
        std::fs::write(p[0].join("etc/passwd"), "inside").unwrap();
        symlink("/etc/passwd", p[0].join("abs")).unwrap();
        symlink("../../../../etc/passwd", p[0].join("rel")).unwrap();
        symlink("/etc", p[0].join("etcdir")).unwrap();
        symlink("loop2", p[0].join("loop1")).unwrap();
        symlink("loop1", p[0].join("loop2")).unwrap();
        let v = view(&p);
        for link in ["/abs", "/rel", "/etcdir/passwd"] {
            let got = v.read_file(&ContainerPath::parse(link), 100).unwrap();
            assert_eq!(got.as_deref(), Some(&b"inside"[..]), "{link}");
        }
        assert!(matches!(
            v.lookup(&ContainerPath::parse("/loop1"), true),
            Err(RootfsError::SymlinkLoop(_))
        ));
        let (resolved, e) = v
            .resolve(&ContainerPath::parse("/etcdir/new"), true)
            .unwrap();
        assert_eq!(resolved.as_str(), "/etc/new");
        assert!(e.is_none());
    }
}
