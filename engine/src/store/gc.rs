//! Garbage collection: mark from the index and the caller's roots, sweep the rest.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use cap_std::fs::Dir;

use super::{Store, StoreError, BLOBS, GC_LOCK, SNAPSHOTS, TMP};
use crate::digest::{DiffId, Digest};
use crate::image::{
    media_types, Descriptor, ImageConfig, ImageIndex, ImageManifest, ANNOTATION_REF_NAME,
};

/// How deep marking follows indexes nested in indexes.
const MAX_DEPTH: usize = 8;

/// Content that must survive a collection although no image references it (the build cache's
/// layers).
#[derive(Debug, Clone, Default)]
pub struct GcRoots {
    /// Blobs to keep.
    pub blobs: BTreeSet<Digest>,
    /// Snapshots to keep.
    pub snapshots: BTreeSet<DiffId>,
}

impl GcRoots {
    /// Keeps a layer: its snapshot, and its blob when stored uncompressed.
    pub fn add_layer(&mut self, diff: &DiffId) {
        self.snapshots.insert(*diff);
        self.blobs.insert(diff.as_uncompressed_digest());
    }
}

/// What a collection removes besides unreferenced content.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Also remove untagged images (docker's "dangling" images).
    pub dangling_images: bool,
    /// Temporary entries younger than this are kept: a writer that uses `kiln/tmp` without a
    /// lease may still be working on them.
    pub tmp_grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            dangling_images: true,
            tmp_grace: Duration::from_secs(15 * 60),
        }
    }
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Untagged images removed from the index, by image ID.
    pub images: Vec<Digest>,
    /// Blobs removed.
    pub blobs: Vec<Digest>,
    /// Snapshots removed.
    pub snapshots: Vec<DiffId>,
    /// Temporary files and folders removed.
    pub temp_entries: usize,
    /// Bytes freed (file sizes).
    pub reclaimed_bytes: u64,
}

impl Store {
    /// Removes untagged images (if asked), then every blob, snapshot and old temporary entry
    /// that neither the index nor the extra roots reference. Waits for all [`super::Lease`]s to
    /// be released and holds writers off while it runs; `roots` is called once writers are held
    /// off, so it sees everything they referenced (the build cache's entries). Refuses to sweep
    /// anything when an index entry cannot be read, since what it references would be unknown.
    pub fn gc(
        &self,
        roots: impl FnOnce() -> GcRoots,
        opts: &GcOptions,
    ) -> Result<GcReport, StoreError> {
        let _gc = self.lock_exclusive(GC_LOCK)?;
        let roots = roots();
        let mut report = GcReport::default();
        if opts.dangling_images {
            report.images = self.update_index_leased(|idx| {
                let dangling: Vec<Descriptor> = idx
                    .manifests
                    .iter()
                    .filter(|d| !d.annotations.contains_key(ANNOTATION_REF_NAME))
                    .cloned()
                    .collect();
                idx.manifests
                    .retain(|d| d.annotations.contains_key(ANNOTATION_REF_NAME));
                let gone = ImageIndex {
                    manifests: dangling,
                    ..ImageIndex::empty()
                };
                let list = self.images_in(&gone);
                let mut ids: Vec<Digest> = list.images.iter().map(|i| i.id()).collect();
                ids.extend(list.broken.iter().map(|b| b.descriptor.digest));
                Ok(ids)
            })?;
        }

        let idx = self.read_index()?;
        let mut keep_blobs = roots.blobs.clone();
        let mut keep_snapshots = roots.snapshots.clone();
        let mut visited = BTreeSet::new();
        for d in &idx.manifests {
            self.mark(d, 0, &mut visited, &mut keep_blobs, &mut keep_snapshots)?;
        }

        for (name, _) in self.entries(BLOBS)? {
            let Ok(digest) = Digest::from_hex(&name) else {
                continue;
            };
            if keep_blobs.contains(&digest) {
                continue;
            }
            let rel = format!("{BLOBS}/{name}");
            report.reclaimed_bytes += self.tree_size(&rel);
            self.dir
                .remove_file(&rel)
                .map_err(self.io("remove blob", &rel))?;
            report.blobs.push(digest);
        }

        for (name, _) in self.entries(SNAPSHOTS)? {
            let Ok(diff) = DiffId::from_hex(&name) else {
                continue;
            };
            if keep_snapshots.contains(&diff) {
                continue;
            }
            let rel = format!("{SNAPSHOTS}/{name}");
            report.reclaimed_bytes += self.tree_size(&rel);
            self.discard_snapshot(&rel)?;
            report.snapshots.push(diff);
        }

        let now = SystemTime::now();
        for (name, modified) in self.entries(TMP)? {
            let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
            if age < opts.tmp_grace {
                continue;
            }
            let rel = format!("{TMP}/{name}");
            report.reclaimed_bytes += self.tree_size(&rel);
            self.remove_tree(&rel)?;
            report.temp_entries += 1;
        }
        Ok(report)
    }

    /// Marks what `d` references: the blob itself and, for manifests and indexes, their
    /// contents, plus the snapshots of an image config's layers.
    fn mark(
        &self,
        d: &Descriptor,
        depth: usize,
        visited: &mut BTreeSet<Digest>,
        blobs: &mut BTreeSet<Digest>,
        snapshots: &mut BTreeSet<DiffId>,
    ) -> Result<(), StoreError> {
        blobs.insert(d.digest);
        if !visited.insert(d.digest) || !self.has_blob(&d.digest) {
            return Ok(());
        }
        if media_types::is_manifest(&d.media_type) {
            let m: ImageManifest = self.read_json(&d.digest, "manifest")?;
            blobs.insert(m.config.digest);
            blobs.extend(m.layers.iter().map(|l| l.digest));
            let is_image_config = m.config.media_type == media_types::OCI_CONFIG
                || m.config.media_type == media_types::DOCKER_CONFIG;
            if is_image_config && self.has_blob(&m.config.digest) {
                let c: ImageConfig = self.read_json(&m.config.digest, "config")?;
                snapshots.extend(c.rootfs.diff_ids);
            }
        } else if media_types::is_index(&d.media_type) {
            if depth >= MAX_DEPTH {
                return Err(StoreError::NoUsableManifest(d.digest));
            }
            let index: ImageIndex = self.read_json(&d.digest, "index")?;
            for child in &index.manifests {
                self.mark(child, depth + 1, visited, blobs, snapshots)?;
            }
        }
        Ok(())
    }

    /// The names and modification times of the entries of a store folder.
    pub(super) fn entries(&self, rel: &str) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.dir.read_dir(rel).map_err(self.io("list", rel))? {
            let entry = entry.map_err(self.io("list", rel))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.into_std())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((name, modified));
        }
        out.sort();
        Ok(out)
    }

    /// The total size of the files in a file or tree, not following symlinks. Best effort (it
    /// only feeds the report): what cannot be read counts as zero.
    fn tree_size(&self, rel: &str) -> u64 {
        tree_size(&self.dir, Path::new(rel))
    }
}

fn tree_size(dir: &Dir, rel: &Path) -> u64 {
    let Ok(rel) = std::ffi::CString::new(rel.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    crate::fsx::tree_bytes(std::os::fd::AsFd::as_fd(dir), &rel).unwrap_or(0)
}
