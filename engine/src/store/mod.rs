//! The image store: an OCI image layout plus kiln's own state, safe under concurrent writers and
//! `kill -9`.
//!
//! # Layout
//!
//! ```text
//! KILN_ROOT/                    default $XDG_DATA_HOME/kiln (~/.local/share/kiln)
//!   oci-layout                  {"imageLayoutVersion":"1.0.0"}
//!   index.json                  the images: one entry per (manifest, tag), see below
//!   blobs/sha256/<hex>          manifests, configs, layers
//!   kiln/tmp/                   temporary files and folders; anything here is garbage once its
//!                               writer is gone
//!   kiln/snapshots/<hex>/       an unpacked layer, by diff ID: `rootfs/` plus a `complete`
//!                               marker written before the folder is renamed into place
//!   kiln/cache/                 the build cache (owned by [`crate::cache`])
//!   kiln/index.lock, gc.lock    lock files (`flock`)
//! ```
//!
//! Everything outside `kiln/` is a plain OCI image layout, so `skopeo inspect
//! oci:$KILN_ROOT:docker.io/library/redis:latest` and `umoci` read it.
//!
//! # Contract
//!
//! - **Blobs** are written to a temporary file in `kiln/tmp`, hashed while being written,
//!   `fsync`ed and renamed to `blobs/sha256/<hex>` (then the folder is `fsync`ed). A reader never
//!   sees a partial blob. Putting a blob that exists is harmless (idempotent): the fresh, verified
//!   copy replaces the old one, which also repairs a blob that rotted on disk.
//! - **Reads verify**: [`Store::open_blob`] returns a reader that fails with
//!   [`StoreError::DigestMismatch`] at end of file if the content does not hash to its name;
//!   [`Store::read_blob`] is bounded and verified.
//! - **The index** (`index.json`) lists images as manifest descriptors. A tag is an
//!   `org.opencontainers.image.ref.name` annotation holding the full normalised reference
//!   (`docker.io/library/redis:latest`); an image with several tags has one entry per tag; an image
//!   without tags (a build without `-t`, or one whose tag moved to another image) has one entry
//!   without the annotation and shows as `<none>` until `rmi` or `prune`. Every update happens under
//!   an exclusive `flock` on `kiln/index.lock` and is written temp -> `fsync` -> rename -> `fsync`
//!   of the folder, so readers, who take no lock, never see a torn file.
//! - **Snapshots** are unpacked into `kiln/tmp`, completed with a marker and renamed into place;
//!   a snapshot folder without its marker is damage that `fsck` reports.
//! - **Garbage collection** ([`Store::gc`]) keeps what the index references (manifests, configs,
//!   layers, the snapshots of the configs' diff IDs) plus the roots its caller passes (the build
//!   cache's layers) and removes everything else. Writers hold a [`Lease`] (a shared `flock` on
//!   `kiln/gc.lock`) from the moment they write content until that content is referenced from
//!   the index or the cache; every store method that writes takes one for its own duration, and a
//!   build holds one throughout. `gc` takes the lock exclusively, so it waits for running writers
//!   and never sees their content half-referenced. Temporary entries are removed only when older
//!   than a grace period, which protects writers that use `kiln/tmp` without a lease.
//! - **Crashes**: every lock is a `flock`, released by the kernel when a process dies; an
//!   interrupted write leaves at most a temporary entry in `kiln/tmp` (invisible to readers,
//!   ignored by `fsck`, removed by `gc`) or an unreferenced blob (removed by `gc`).
//!
//! - **Scratch folders** ([`Store::temp_dir`]) live in `kiln/tmp` on the store's filesystem, so a
//!   finished step's upper folder becomes a snapshot by renaming ([`Store::adopt_snapshot`]).
//!
//! Only sha256 digests are supported. File access after [`Store::open`] goes through the root's
//! `cap_std::fs::Dir`, except [`Store::temp_dir`], which hands out a path-based
//! `tempfile::TempDir`; paths handed out ([`Store::blob_path`], [`Store::snapshot_dir`]) are for
//! read-only use by code that needs a path (overlay mounts).

mod blobs;
mod fsck;
mod gc;
mod images;
mod snapshots;
mod work;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, OpenOptions, OpenOptionsExt};
use rustix::fs::FlockOperation;

use crate::digest::{DiffId, Digest};
use crate::image::{CanonicalJson, ImageIndex, OciLayout};
use crate::reference::ReferenceError;

pub use blobs::{BlobReader, BlobWriter, PrehashedBlobWriter};
pub use fsck::{FsckReport, Problem};
pub use gc::{GcOptions, GcReport, GcRoots};
pub use images::{BrokenImage, Image, ImageList, RemoveEvent};
pub use work::WorkDir;

/// The largest manifest, index or config kiln reads into memory.
pub const MAX_JSON_BLOB: u64 = 8 << 20;
/// The largest `index.json` kiln reads into memory.
pub const MAX_INDEX_JSON: u64 = 64 << 20;
/// The only layout version kiln writes and reads.
const LAYOUT_VERSION: &str = "1.0.0";

const TMP: &str = "kiln/tmp";
const SNAPSHOTS: &str = "kiln/snapshots";
const CACHE: &str = "kiln/cache";
const BLOBS: &str = "blobs/sha256";
const INDEX: &str = "index.json";
const LAYOUT: &str = "oci-layout";
const INDEX_LOCK: &str = "kiln/index.lock";
const GC_LOCK: &str = "kiln/gc.lock";
/// Lock files that serialise the creation of snapshots (striped by diff ID).
const LOCKS: &str = "kiln/locks";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No store root was given and none could be derived from the environment.
    #[error("cannot find a default store folder: neither XDG_DATA_HOME nor HOME is set")]
    NoDefaultRoot,
    /// The folder holds something other than a kiln store.
    #[error("{path} is not a kiln store: it is not empty and has no oci-layout file")]
    NotAStore {
        /// The folder.
        path: PathBuf,
    },
    /// The `oci-layout` file names a version kiln does not know.
    #[error(
        "{path}: unsupported OCI layout {found:?} (expected imageLayoutVersion {LAYOUT_VERSION})"
    )]
    UnsupportedLayout {
        /// The `oci-layout` file.
        path: PathBuf,
        /// What it contains.
        found: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`rename temporary blob`).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading the content to store failed.
    #[error("read blob content: {0}")]
    Source(#[source] io::Error),
    /// A blob is not in the store.
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    /// A blob's content does not hash to the expected digest. The message leaves out the
    /// content's own digest: an error never echoes a digest of bytes the requester did not
    /// supply (a load that named a file it should not reach would learn its hash).
    #[error("content does not match its digest {expected}")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the content.
        found: Digest,
    },
    /// A blob is larger than the caller allows.
    #[error("blob {digest} is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// `index.json` is larger than [`MAX_INDEX_JSON`].
    #[error("index.json is {size} bytes, more than the {MAX_INDEX_JSON} allowed")]
    IndexTooLarge {
        /// Its size.
        size: u64,
    },
    /// A JSON blob does not parse as what it should be.
    #[error("parse {what} {digest}: {source}")]
    BadJson {
        /// `manifest`, `config`, `index`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A store file (`index.json`, `oci-layout`) does not parse.
    #[error("parse {path}: {source}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A document could not be encoded.
    #[error("encode {what}: {source}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// A descriptor's media type is not one kiln can follow.
    #[error("{digest} has media type {media_type:?}, which is not an image manifest or index")]
    UnsupportedMediaType {
        /// The blob.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// An image index nests deeper than kiln follows, or lists no manifest kiln can use.
    #[error("image index {0} has no usable manifest")]
    NoUsableManifest(Digest),
    /// An image refers to a blob that is not in the store.
    #[error("image {manifest} refers to missing blob {missing}")]
    IncompleteImage {
        /// The image's manifest.
        manifest: Digest,
        /// The blob that is missing.
        missing: Digest,
    },
    /// No image matches a name or ID.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// An ID prefix matches several images.
    #[error("image ID prefix {prefix:?} is ambiguous: it matches {count} images")]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// How many images it matches.
        count: usize,
    },
    /// A reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A tag target names a digest.
    #[error("refusing to create a tag with a digest reference: {0}")]
    TagWithDigest(String),
    /// Deleting by ID an image that has several tags needs `force`.
    #[error("conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories")]
    Conflict {
        /// The image's short ID.
        id: String,
    },
    /// Unpacking a snapshot failed.
    #[error("unpack layer {diff_id} into a snapshot: {source}")]
    Unpack {
        /// The layer.
        diff_id: DiffId,
        /// The unpacker's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A layer blob's uncompressed content is not the layer its image names.
    #[error("layer blob {blob} does not hold the layer {expected} its image names")]
    DiffIdMismatch {
        /// The blob.
        blob: Digest,
        /// The diff ID the image gives it.
        expected: DiffId,
    },
    /// A snapshot does not exist or is incomplete.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(DiffId),
}

impl StoreError {
    /// Whether the error is about the user's input (a store folder that is something else, an
    /// unknown or ambiguous image, a bad reference, a conflict) rather than the store or the
    /// system.
    pub fn is_user_error(&self) -> bool {
        match self {
            // An image whose layer is not what its config says came from outside.
            Self::Unpack { source, .. } => source
                .downcast_ref::<StoreError>()
                .is_some_and(|e| matches!(e, Self::DiffIdMismatch { .. })),
            Self::DiffIdMismatch { .. } => true,
            _ => matches!(
                self,
                Self::NotAStore { .. }
                    | Self::ImageNotFound(_)
                    | Self::Ambiguous { .. }
                    | Self::Reference(_)
                    | Self::TagWithDigest(_)
                    | Self::Conflict { .. }
            ),
        }
    }
}

/// A kiln store opened at a root folder. Cheap to share between threads (`&Store`); several
/// processes may open the same root at once.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    dir: Dir,
}

/// A shared hold on the store that keeps [`Store::gc`] from running (see the module docs).
/// Released on drop, or by the kernel when the process dies.
#[derive(Debug)]
pub struct Lease {
    _lock: File,
}

/// An exclusive `flock` on one of the store's lock files, released on drop.
struct LockGuard {
    _file: File,
}

impl Store {
    /// The default root: `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
    pub fn default_root() -> Result<PathBuf, StoreError> {
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from) {
            // The XDG spec says relative values are invalid and must be ignored.
            if x.is_absolute() {
                return Ok(x.join("kiln"));
            }
        }
        // `home_dir` falls back to the password database when HOME is unset.
        let home = std::env::home_dir()
            .filter(|h| !h.as_os_str().is_empty())
            .ok_or(StoreError::NoDefaultRoot)?;
        Ok(home.join(".local/share/kiln"))
    }

    /// Opens the store at `root`, creating the folder and the layout if needed.
    ///
    /// Refuses a folder that is neither empty nor a (possibly half-initialised) OCI layout, so a
    /// mistyped `--root` never scribbles into a home folder.
    ///
    /// # Ambient Authority
    ///
    /// This is the store's only ambient filesystem access: it opens `root` by path. Everything
    /// else goes through the `Dir` opened here.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let io_at = |op, p: &Path| {
            let path = p.to_path_buf();
            move |source| StoreError::Io { op, path, source }
        };
        crate::fsx::private_dir_all(root).map_err(io_at("create store folder", root))?;
        let dir = Dir::open_ambient_dir(root, ambient_authority())
            .map_err(io_at("open store folder", root))?;
        let store = Store {
            root: root.to_path_buf(),
            dir,
        };
        store.check_layout()?;
        let mut private = cap_std::fs::DirBuilder::new();
        cap_std::fs::DirBuilderExt::mode(&mut private, crate::fsx::PRIVATE_DIR_MODE);
        private.recursive(true);
        for sub in [BLOBS, TMP, SNAPSHOTS, CACHE, LOCKS] {
            store
                .dir
                .create_dir_with(sub, &private)
                .map_err(store.io("create folder", sub))?;
        }
        if !store.exists(INDEX)? || !store.exists(LAYOUT)? {
            let _lock = store.lock_exclusive(INDEX_LOCK)?;
            if !store.exists(INDEX)? {
                store.write_index(&ImageIndex::empty())?;
            }
            if !store.exists(LAYOUT)? {
                let layout = OciLayout {
                    image_layout_version: LAYOUT_VERSION.to_owned(),
                };
                let bytes = layout
                    .to_canonical_json()
                    .map_err(|source| StoreError::Encode {
                        what: "oci-layout",
                        source,
                    })?;
                store.write_atomic(LAYOUT, &bytes)?;
            }
        }
        Ok(store)
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The build cache's folder (`kiln/cache`); its contents belong to [`crate::cache`].
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join(CACHE)
    }

    /// Where RUN steps' full output is kept when the live view clipped it or the step failed
    /// (`kiln/logs`).
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("kiln/logs")
    }

    /// Takes a [`Lease`]: until it is dropped, [`Store::gc`] waits. Hold one from writing content
    /// until that content is referenced (by the index or the cache), and while using snapshots.
    /// Do not call [`Store::gc`] or [`Store::remove_snapshot`] from a thread that holds one: they
    /// would wait for it forever.
    pub fn lease(&self) -> Result<Lease, StoreError> {
        Ok(Lease {
            _lock: self.flock(GC_LOCK, FlockOperation::LockShared)?,
        })
    }

    fn check_layout(&self) -> Result<(), StoreError> {
        if self.exists(LAYOUT)? {
            let path = self.root.join(LAYOUT);
            let mut text = String::new();
            self.dir
                .open(LAYOUT)
                .and_then(|f| f.take(4096).read_to_string(&mut text))
                .map_err(self.io("read", LAYOUT))?;
            let layout: OciLayout =
                serde_json::from_str(&text).map_err(|source| StoreError::BadFile {
                    path: path.clone(),
                    source,
                })?;
            if layout.image_layout_version != LAYOUT_VERSION {
                return Err(StoreError::UnsupportedLayout {
                    path,
                    found: layout.image_layout_version,
                });
            }
            return Ok(());
        }
        // No oci-layout yet: accept an empty folder or one that another `kiln` is initialising.
        let entries = self.dir.entries().map_err(self.io("list", "."))?;
        for entry in entries {
            let entry = entry.map_err(self.io("list", "."))?;
            let name = entry.file_name();
            if !["index.json", "blobs", "kiln"].iter().any(|n| name == *n) {
                return Err(StoreError::NotAStore {
                    path: self.root.clone(),
                });
            }
        }
        Ok(())
    }

    /// An error mapper naming `rel` under the root.
    fn io(&self, op: &'static str, rel: &str) -> impl FnOnce(io::Error) -> StoreError {
        let path = self.root.join(rel);
        move |source| StoreError::Io { op, path, source }
    }

    fn exists(&self, rel: &str) -> Result<bool, StoreError> {
        self.dir.try_exists(rel).map_err(self.io("stat", rel))
    }

    fn flock(&self, rel: &str, op: FlockOperation) -> Result<File, StoreError> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).mode(0o644);
        let file = self
            .dir
            .open_with(rel, &opts)
            .map_err(self.io("open lock file", rel))?;
        loop {
            match rustix::fs::flock(&file, op) {
                Ok(()) => return Ok(file),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(self.io("lock", rel)(e.into())),
            }
        }
    }

    fn lock_exclusive(&self, rel: &str) -> Result<LockGuard, StoreError> {
        Ok(LockGuard {
            _file: self.flock(rel, FlockOperation::LockExclusive)?,
        })
    }

    /// Creates a new, uniquely named file in `kiln/tmp`; returns its path relative to the root.
    fn create_temp(&self, prefix: &str) -> Result<(String, File), StoreError> {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true).mode(0o644);
        loop {
            let rel = format!("{TMP}/{}", unique_name(prefix));
            match self.dir.open_with(&rel, &opts) {
                Ok(f) => return Ok((rel, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io("create temporary file", &rel)(e)),
            }
        }
    }

    /// Creates a new, uniquely named folder in `kiln/tmp`; returns its path relative to the root.
    fn create_temp_dir(&self, prefix: &str) -> Result<String, StoreError> {
        loop {
            let rel = format!("{TMP}/{}", unique_name(prefix));
            match self.dir.create_dir(&rel) {
                Ok(()) => return Ok(rel),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io("create temporary folder", &rel)(e)),
            }
        }
    }

    /// `fsync`s a folder, making renames into it durable.
    fn sync_dir(&self, rel: &str) -> Result<(), StoreError> {
        let d = self
            .dir
            .open_dir(rel)
            .map_err(self.io("open folder", rel))?;
        let readable =
            crate::fsx::reopen_readable(&d).map_err(|e| self.io("open folder", rel)(e.into()))?;
        rustix::fs::fsync(&readable).map_err(|e| self.io("sync folder", rel)(e.into()))
    }

    /// Replaces the file `rel` (directly under the root) atomically: temp -> fsync -> rename ->
    /// fsync of the root.
    fn write_atomic(&self, rel: &str, bytes: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let (tmp, mut file) = self.create_temp(rel)?;
        let guard = TempFile {
            store: self,
            rel: Some(tmp.clone()),
        };
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(self.io("write", &tmp))?;
        self.dir
            .rename(&tmp, &self.dir, rel)
            .map_err(self.io("rename into place", rel))?;
        guard.disarm();
        self.sync_dir(".")
    }

    /// Removes a file or a whole tree under the root, making read-only folders writable first
    /// (layers often contain `0555` folders, which an unprivileged owner cannot empty).
    fn remove_tree(&self, rel: &str) -> Result<(), StoreError> {
        let meta = match self.dir.symlink_metadata(rel) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("stat", rel)(e)),
        };
        if !meta.is_dir() {
            return self.dir.remove_file(rel).map_err(self.io("remove", rel));
        }
        // Folders are made writable on the way (layers often contain `0555` folders, which an
        // unprivileged owner cannot empty); iteratively, as a step's tree may be of any depth.
        let (parent, name) = rel.rsplit_once('/').unwrap_or((".", rel));
        let parent = rustix::fs::openat2(
            &self.dir,
            parent,
            crate::fsx::DIR_FLAGS,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
        )
        .map_err(|e| self.io("open", rel)(e.into()))?;
        crate::fsx::remove_all_at(std::os::fd::AsFd::as_fd(&parent), name.as_bytes())
            .map_err(self.io("remove", rel))
    }
}

/// A temporary file or folder that is removed on drop unless disarmed (renamed into place).
struct TempFile<'a> {
    store: &'a Store,
    rel: Option<String>,
}

impl TempFile<'_> {
    fn disarm(mut self) {
        self.rel = None;
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if let Some(rel) = self.rel.take() {
            // Best effort: whatever is left is garbage that `gc` removes.
            let _ = self.store.remove_tree(&rel);
        }
    }
}

/// A name no other live writer uses: prefix, process ID, a per-process counter and the clock.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{n}-{nanos:09}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_layout_and_reopens() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("s");
        let s = Store::open(&root).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("oci-layout")).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let idx: ImageIndex =
            serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
        assert!(idx.manifests.is_empty());
        for d in ["blobs/sha256", "kiln/tmp", "kiln/snapshots", "kiln/cache"] {
            assert!(root.join(d).is_dir(), "{d}");
        }
        assert_eq!(s.cache_dir(), root.join("kiln/cache"));
        drop(s);
        Store::open(&root).unwrap();
    }

    #[test]
    fn open_refuses_a_foreign_folder() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("notes.txt"), "mine").unwrap();
        match Store::open(t.path()) {
            Err(StoreError::NotAStore { path }) => assert_eq!(path, t.path()),
            other => panic!("expected NotAStore, got {other:?}"),
        }
        assert!(!t.path().join("index.json").exists());
    }

    #[test]
    fn open_refuses_an_unknown_layout_version() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"9.9"}"#,
        )
        .unwrap();
        assert!(matches!(
            Store::open(t.path()),
            Err(StoreError::UnsupportedLayout { .. })
        ));
    }

    #[test]
    fn removes_read_only_trees() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let ro = t.path().join("kiln/tmp/x/ro");
        std::fs::create_dir_all(ro.join("sub")).unwrap();
        std::fs::write(ro.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(ro.join("sub"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        s.remove_tree("kiln/tmp/x").unwrap();
        assert!(!t.path().join("kiln/tmp/x").exists());
    }
}
