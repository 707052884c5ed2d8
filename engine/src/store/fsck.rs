//! `fsck`: re-hash every blob and check that every image and snapshot is whole.
//!
//! Temporary entries and unreferenced blobs are not damage (an interrupted writer leaves them;
//! [`Store::gc`] collects them), so they are counted, not reported.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use super::snapshots::MARKER;
use super::{Store, StoreError, BLOBS, LAYOUT, LAYOUT_VERSION, SNAPSHOTS, TMP};
use crate::digest::{DiffId, Digest};
use crate::image::{
    media_types, Descriptor, ImageConfig, ImageIndex, ImageManifest, OciLayout, ANNOTATION_REF_NAME,
};
use crate::reference::ImageRef;

/// How deep fsck follows indexes nested in indexes.
const MAX_DEPTH: usize = 8;

/// One thing wrong with a store; its `Display` is one line naming the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `oci-layout` is missing or wrong.
    #[error("oci-layout: {0}")]
    Layout(String),
    /// `index.json` does not parse.
    #[error("index.json: {0}")]
    Index(String),
    /// A tag annotation is not a normalised reference.
    #[error("index.json: tag {0:?} is not a normalised image reference")]
    BadTag(String),
    /// A blob's content does not hash to its name.
    #[error("blob {digest}: content hashes to {found}")]
    BlobCorrupt {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to.
        found: Digest,
    },
    /// A blob cannot be read.
    #[error("blob {digest}: {error}")]
    BlobUnreadable {
        /// The blob.
        digest: Digest,
        /// Why.
        error: String,
    },
    /// A file in `blobs/sha256` that is not a blob.
    #[error("blobs/sha256/{0}: not a sha256 blob")]
    StrayBlobFile(String),
    /// An image references a blob that is not stored.
    #[error("image {image}: {what} {digest} is missing")]
    MissingBlob {
        /// The image (its tag, or its manifest digest).
        image: String,
        /// `manifest`, `config`, `layer`.
        what: &'static str,
        /// The missing blob.
        digest: Digest,
    },
    /// A stored blob's size differs from what its descriptor says.
    #[error("image {image}: {what} {digest} is {found} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The image.
        image: String,
        /// `manifest`, `config`, `layer`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        expected: u64,
        /// The stored size.
        found: u64,
    },
    /// An image's manifest, index or config does not make sense.
    #[error("image {image}: {error}")]
    BadImage {
        /// The image.
        image: String,
        /// What is wrong.
        error: String,
    },
    /// One of kiln's own folders lets other users in (made before kiln made them private, or
    /// widened since).
    #[error("{path}: mode {mode:04o} lets other users in (kiln fsck --repair makes it 0700)")]
    OpenFolder {
        /// The folder.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A snapshot folder is incomplete or misnamed.
    #[error("snapshot {name}: {error}")]
    BadSnapshot {
        /// The folder's name.
        name: String,
        /// What is wrong.
        error: String,
    },
}

/// The result of [`Store::fsck`].
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// Everything found wrong; empty for a healthy store.
    pub problems: Vec<Problem>,
    /// Blobs re-hashed.
    pub blobs: usize,
    /// Images (distinct index entries) checked.
    pub images: usize,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Temporary entries present (garbage from interrupted writers, not damage).
    pub temp_entries: usize,
}

impl FsckReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What fsck learned about the stored blobs: size if intact.
struct BlobState {
    intact: BTreeMap<Digest, u64>,
    damaged: BTreeSet<Digest>,
}

impl Store {
    /// Checks the whole store (holding a [`super::Lease`], so `gc` cannot interfere): re-hashes
    /// every blob, checks that every index entry's manifest, config and layers exist with the
    /// right sizes and parse, that tags are normalised references, and that every snapshot is
    /// complete.
    pub fn fsck(&self) -> Result<FsckReport, StoreError> {
        let _lease = self.lease()?;
        let mut report = FsckReport::default();
        self.check_layout_file(&mut report);
        let blobs = self.check_blobs(&mut report)?;
        match self.read_index() {
            Ok(idx) => self.check_images(&idx, &blobs, &mut report),
            Err(e) => report.problems.push(Problem::Index(e.to_string())),
        }
        self.check_snapshots(&mut report)?;
        report.temp_entries = self.entries(TMP)?.len();
        for (rel, mode) in self.open_folders()? {
            report.problems.push(Problem::OpenFolder {
                path: self.display_rel(&rel),
                mode,
            });
        }
        Ok(report)
    }

    /// Narrows every one of kiln's own folders that lets other users in to 0700 (through its
    /// descriptor); returns the folders narrowed.
    pub fn repair_modes(&self) -> Result<Vec<String>, StoreError> {
        let _lease = self.lease()?;
        let mut done = Vec::new();
        for (rel, _) in self.open_folders()? {
            let fd = self.private_folder(&rel)?;
            rustix::fs::fchmod(
                &fd,
                rustix::fs::Mode::from_raw_mode(crate::fsx::PRIVATE_DIR_MODE),
            )
            .map_err(|e| self.io("narrow the mode of", &rel)(e.into()))?;
            done.push(self.display_rel(&rel));
        }
        Ok(done)
    }

    /// kiln's own folders (the root, `blobs`, `blobs/sha256`, `kiln` and the folders in it)
    /// whose mode lets group or others in, with that mode.
    fn open_folders(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let mut rels = vec![".".to_owned(), "blobs".to_owned(), BLOBS.to_owned()];
        rels.push("kiln".to_owned());
        for entry in self.dir.read_dir("kiln").map_err(self.io("list", "kiln"))? {
            let entry = entry.map_err(self.io("list", "kiln"))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                rels.push(format!("kiln/{}", entry.file_name().to_string_lossy()));
            }
        }
        let mut open = Vec::new();
        for rel in rels {
            let fd = self.private_folder(&rel)?;
            let st = rustix::fs::fstat(&fd).map_err(|e| self.io("stat", &rel)(e.into()))?;
            let mode = st.st_mode & 0o7777;
            if mode & 0o077 != 0 {
                open.push((rel, mode));
            }
        }
        Ok(open)
    }

    /// One of kiln's own folders, opened for reading without following a symlink.
    fn private_folder(&self, rel: &str) -> Result<rustix::fd::OwnedFd, StoreError> {
        rustix::fs::openat2(
            &self.dir,
            rel,
            crate::fsx::DIR_FLAGS,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
        )
        .map_err(|e| self.io("open", rel)(e.into()))
    }

    fn display_rel(&self, rel: &str) -> String {
        if rel == "." {
            self.root.display().to_string()
        } else {
            self.root.join(rel).display().to_string()
        }
    }

    fn check_layout_file(&self, report: &mut FsckReport) {
        let mut text = String::new();
        let problem = match self
            .dir
            .open(LAYOUT)
            .and_then(|f| f.take(4096).read_to_string(&mut text))
        {
            Err(e) => Some(e.to_string()),
            Ok(_) => match serde_json::from_str::<OciLayout>(&text) {
                Err(e) => Some(e.to_string()),
                Ok(l) if l.image_layout_version != LAYOUT_VERSION => Some(format!(
                    "unsupported imageLayoutVersion {:?}",
                    l.image_layout_version
                )),
                Ok(_) => None,
            },
        };
        report.problems.extend(problem.map(Problem::Layout));
    }

    fn check_blobs(&self, report: &mut FsckReport) -> Result<BlobState, StoreError> {
        let mut state = BlobState {
            intact: BTreeMap::new(),
            damaged: BTreeSet::new(),
        };
        for (name, _) in self.entries(BLOBS)? {
            let rel = format!("{BLOBS}/{name}");
            let is_file = self.dir.symlink_metadata(&rel).is_ok_and(|m| m.is_file());
            let digest = match Digest::from_hex(&name) {
                Ok(d) if is_file => d,
                _ => {
                    report.problems.push(Problem::StrayBlobFile(name));
                    continue;
                }
            };
            report.blobs += 1;
            match self.hash_blob(&digest) {
                Ok((found, size)) if found == digest => {
                    state.intact.insert(digest, size);
                }
                Ok((found, _)) => {
                    state.damaged.insert(digest);
                    report.problems.push(Problem::BlobCorrupt { digest, found });
                }
                Err(e) => {
                    state.damaged.insert(digest);
                    report.problems.push(Problem::BlobUnreadable {
                        digest,
                        error: e.to_string(),
                    });
                }
            }
        }
        Ok(state)
    }

    fn check_images(&self, idx: &ImageIndex, blobs: &BlobState, report: &mut FsckReport) {
        let mut seen = BTreeSet::new();
        for d in &idx.manifests {
            let label = match d.annotations.get(ANNOTATION_REF_NAME) {
                Some(name) => {
                    match ImageRef::parse(name) {
                        Ok(r) if r.to_string() == *name && r.digest().is_none() => {}
                        _ => report.problems.push(Problem::BadTag(name.clone())),
                    }
                    name.clone()
                }
                None => d.digest.to_string(),
            };
            if seen.insert(d.digest) {
                report.images += 1;
                let mut check = ImageCheck {
                    store: self,
                    blobs,
                    image: label,
                    problems: &mut report.problems,
                };
                check.descriptor(d, 0);
            }
        }
    }

    fn check_snapshots(&self, report: &mut FsckReport) -> Result<(), StoreError> {
        for (name, _) in self.entries(SNAPSHOTS)? {
            report.snapshots += 1;
            let bad = |error: &str| Problem::BadSnapshot {
                name: name.clone(),
                error: error.to_owned(),
            };
            let Ok(diff) = DiffId::from_hex(&name) else {
                report.problems.push(bad("not a diff ID"));
                continue;
            };
            let mut marker = String::new();
            let read = self
                .dir
                .open(format!("{SNAPSHOTS}/{name}/{MARKER}"))
                .and_then(|f| f.take(256).read_to_string(&mut marker));
            let state = super::snapshots::marker_state(&marker, &diff);
            if read.is_err() {
                report
                    .problems
                    .push(bad("incomplete (no completion marker)"));
            } else if state == super::snapshots::MarkerState::Invalid {
                report
                    .problems
                    .push(bad("completion marker names another layer"));
            } else if state == super::snapshots::MarkerState::Stale {
                // Made without a flush before a reboot: not trusted, re-made from its blob when
                // needed. Not damage.
            } else if !self.dir.is_dir(format!("{SNAPSHOTS}/{name}/rootfs")) {
                report.problems.push(bad("rootfs folder is missing"));
            }
        }
        Ok(())
    }
}

/// Checks one image's descriptors recursively, collecting problems.
struct ImageCheck<'a> {
    store: &'a Store,
    blobs: &'a BlobState,
    image: String,
    problems: &'a mut Vec<Problem>,
}

impl ImageCheck<'_> {
    /// Whether the blob is stored intact with the descriptor's size (reporting why not).
    fn present(&mut self, d: &Descriptor, what: &'static str) -> bool {
        if self.blobs.damaged.contains(&d.digest) {
            return false; // already reported as a blob problem
        }
        match self.blobs.intact.get(&d.digest) {
            None => {
                self.problems.push(Problem::MissingBlob {
                    image: self.image.clone(),
                    what,
                    digest: d.digest,
                });
                false
            }
            Some(&found) if found != d.size => {
                self.problems.push(Problem::SizeMismatch {
                    image: self.image.clone(),
                    what,
                    digest: d.digest,
                    expected: d.size,
                    found,
                });
                false
            }
            Some(_) => true,
        }
    }

    fn bad(&mut self, error: String) {
        self.problems.push(Problem::BadImage {
            image: self.image.clone(),
            error,
        });
    }

    fn descriptor(&mut self, d: &Descriptor, depth: usize) {
        if media_types::is_manifest(&d.media_type) {
            if self.present(d, "manifest") {
                self.manifest(&d.digest);
            }
        } else if media_types::is_index(&d.media_type) {
            if self.present(d, "index") {
                self.index(&d.digest, depth);
            }
        } else {
            self.bad(format!(
                "{} has media type {:?}, which is not an image manifest or index",
                d.digest, d.media_type
            ));
        }
    }

    fn index(&mut self, digest: &Digest, depth: usize) {
        if depth >= MAX_DEPTH {
            self.bad(format!(
                "index {digest} nests more than {MAX_DEPTH} levels deep"
            ));
            return;
        }
        let index: ImageIndex = match self.store.read_json(digest, "index") {
            Ok(i) => i,
            Err(e) => return self.bad(e.to_string()),
        };
        // A pulled index often lists platforms that were never fetched: only what is stored
        // must be whole, and at least one manifest must be.
        let stored: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|c| self.store.has_blob(&c.digest))
            .collect();
        if stored.is_empty() {
            self.bad(format!("none of the manifests of index {digest} is stored"));
        }
        for child in stored {
            self.descriptor(child, depth + 1);
        }
    }

    fn manifest(&mut self, digest: &Digest) {
        let m: ImageManifest = match self.store.read_json(digest, "manifest") {
            Ok(m) => m,
            Err(e) => return self.bad(e.to_string()),
        };
        for layer in &m.layers {
            self.present(layer, "layer");
        }
        if !self.present(&m.config, "config") {
            return;
        }
        let is_image_config = m.config.media_type == media_types::OCI_CONFIG
            || m.config.media_type == media_types::DOCKER_CONFIG;
        if !is_image_config {
            return;
        }
        match self
            .store
            .read_json::<ImageConfig>(&m.config.digest, "config")
        {
            Err(e) => self.bad(e.to_string()),
            Ok(c) if c.rootfs.diff_ids.len() != m.layers.len() => self.bad(format!(
                "config {} lists {} diff IDs for {} layers",
                m.config.digest,
                c.rootfs.diff_ids.len(),
                m.layers.len()
            )),
            Ok(_) => {}
        }
    }
}
