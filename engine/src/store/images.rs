//! Images: the entries of `index.json`, their tags, and how names and IDs resolve to them.
//!
//! An image is a manifest listed in the index; its ID is its config's digest, like docker's.
//! Resolution follows docker: a name (`redis`, `user/app:1`, `name@sha256:<manifest digest>`)
//! first, then a full or abbreviated image ID (`sha256:<hex>`, any unique hex prefix).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use time::OffsetDateTime;

use super::{Store, StoreError, INDEX, INDEX_LOCK, MAX_INDEX_JSON};
use crate::digest::Digest;
use crate::image::{
    media_types, CanonicalJson, Descriptor, ImageConfig, ImageIndex, ImageManifest,
    ANNOTATION_REF_NAME,
};
use crate::reference::ImageRef;

/// How deep kiln follows indexes nested in indexes.
const MAX_INDEX_DEPTH: usize = 4;

/// An image in the store, with its manifest and config loaded.
#[derive(Debug, Clone)]
pub struct Image {
    /// The index entry, without its tag annotation: an image manifest, or an image index from
    /// which the manifest for this machine's platform was chosen.
    pub descriptor: Descriptor,
    /// The digest of the image manifest (the entry's own digest unless it is an index).
    pub manifest_digest: Digest,
    /// The image manifest.
    pub manifest: ImageManifest,
    /// The image config.
    pub config: ImageConfig,
    /// The image's tags, sorted.
    pub tags: Vec<ImageRef>,
}

impl Image {
    /// The image ID: the config's digest.
    pub fn id(&self) -> Digest {
        self.manifest.config.digest
    }

    /// The sum of the layers' sizes as stored.
    pub fn size(&self) -> u64 {
        self.manifest.layers.iter().map(|l| l.size).sum()
    }

    /// When the image was made, from its config.
    pub fn created(&self) -> Option<OffsetDateTime> {
        self.config.created
    }

    /// `name@sha256:<manifest digest>` for each repository the image is tagged in, familiar form.
    pub fn repo_digests(&self) -> Vec<String> {
        let names: BTreeSet<String> = self.tags.iter().map(ImageRef::familiar_name).collect();
        names
            .into_iter()
            .map(|n| format!("{n}@{}", self.descriptor.digest))
            .collect()
    }
}

/// An index entry whose manifest or config cannot be read.
#[derive(Debug)]
pub struct BrokenImage {
    /// The index entry, without its tag annotation.
    pub descriptor: Descriptor,
    /// Its tags.
    pub tags: Vec<ImageRef>,
    /// What is wrong.
    pub error: StoreError,
}

/// The images in the store, newest first, and the entries that could not be loaded.
#[derive(Debug, Default)]
pub struct ImageList {
    /// The loadable images, newest first.
    pub images: Vec<Image>,
    /// The entries whose manifest or config is missing or damaged (`kiln fsck` says more).
    pub broken: Vec<BrokenImage>,
}

/// One step of [`Store::remove`], in the order docker prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    /// A tag was removed.
    Untagged(ImageRef),
    /// The image (by ID) left the index; its blobs are freed by the next [`Store::gc`].
    Deleted(Digest),
}

impl Store {
    /// Every image in the index.
    pub fn list_images(&self) -> Result<ImageList, StoreError> {
        let idx = self.read_index()?;
        Ok(self.images_in(&idx))
    }

    /// Finds one image by name, `name@digest`, or full or abbreviated ID.
    pub fn resolve(&self, reference: &str) -> Result<Image, StoreError> {
        let mut list = self.list_images()?;
        let i = resolve_in(&list.images, reference)?;
        Ok(list.images.swap_remove(i))
    }

    /// Adds an image whose manifest (and everything it references) is already stored, with
    /// `tags` (taking each over from any image that had it, which becomes untagged if that was
    /// its last tag, like docker), or untagged when `tags` is empty.
    pub fn add_image(&self, manifest: &Descriptor, tags: &[ImageRef]) -> Result<(), StoreError> {
        if let Some(t) = tags.iter().find(|t| t.digest().is_some()) {
            return Err(StoreError::TagWithDigest(t.familiar()));
        }
        let mut entry = manifest.clone();
        entry.annotations.remove(ANNOTATION_REF_NAME);
        self.update_index(|idx| {
            // Checked under the lease, so a concurrent gc cannot remove what was just verified.
            self.check_complete(&entry)?;
            if tags.is_empty() && !idx.manifests.iter().any(|d| d.digest == entry.digest) {
                idx.manifests.push(entry.clone());
            }
            for t in tags {
                set_tag(idx, &entry, t);
            }
            Ok(())
        })
    }

    /// Tags the image `source` resolves to as `target`, taking the tag over from any other image.
    pub fn tag(&self, source: &str, target: &ImageRef) -> Result<(), StoreError> {
        if target.digest().is_some() {
            return Err(StoreError::TagWithDigest(target.familiar()));
        }
        self.update_index(|idx| {
            let list = self.images_in(idx);
            let i = resolve_in(&list.images, source)?;
            let desc = list
                .images
                .get(i)
                .map(|img| img.descriptor.clone())
                .ok_or_else(|| StoreError::ImageNotFound(source.to_owned()))?;
            set_tag(idx, &desc, target);
            Ok(())
        })
    }

    /// Removes a tag; an image left without tags stays in the store untagged.
    pub fn untag(&self, tag: &ImageRef) -> Result<(), StoreError> {
        let name = tag.to_string();
        self.update_index(|idx| {
            let removed = take_tag(idx, &name);
            if removed.is_empty() {
                return Err(StoreError::ImageNotFound(tag.familiar()));
            }
            keep_untagged(idx, removed);
            Ok(())
        })
    }

    /// `docker rmi` for one argument: by name, removes that tag and deletes the image if it was
    /// the last; by ID (or `name@digest`), removes every tag and the image, refusing an image
    /// with several tags unless `force`.
    pub fn remove(&self, target: &str, force: bool) -> Result<Vec<RemoveEvent>, StoreError> {
        self.update_index(|idx| {
            let list = self.images_in(idx);
            // A tag is found in the index itself, so a damaged image can still be untagged.
            if let Ok(r) = ImageRef::parse(target) {
                let name = r.to_string();
                let removed = take_tag(idx, &name);
                if let Some(entry) = removed.first() {
                    let mut events = vec![RemoveEvent::Untagged(r)];
                    if !idx.manifests.iter().any(|d| d.digest == entry.digest) {
                        let id = list
                            .images
                            .iter()
                            .find(|i| i.descriptor.digest == entry.digest)
                            .map_or(entry.digest, Image::id);
                        events.push(RemoveEvent::Deleted(id));
                    }
                    return Ok(events);
                }
            }
            let i = resolve_in(&list.images, target)?;
            let img = list
                .images
                .get(i)
                .ok_or_else(|| StoreError::ImageNotFound(target.to_owned()))?;
            let id = img.id();
            let same_id: Vec<&Image> = list.images.iter().filter(|i| i.id() == id).collect();
            let tags: Vec<&ImageRef> = same_id.iter().flat_map(|i| &i.tags).collect();
            if tags.len() > 1 && !force {
                return Err(StoreError::Conflict { id: id.short() });
            }
            let mut events: Vec<RemoveEvent> = tags
                .into_iter()
                .map(|t| RemoveEvent::Untagged(t.clone()))
                .collect();
            let gone: BTreeSet<Digest> = same_id.iter().map(|i| i.descriptor.digest).collect();
            idx.manifests.retain(|d| !gone.contains(&d.digest));
            events.push(RemoveEvent::Deleted(id));
            Ok(events)
        })
    }

    /// Reads `index.json` (a missing one reads as empty; `fsck` reports it).
    pub(super) fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let file = match self.dir.open(INDEX) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ImageIndex::empty()),
            Err(e) => return Err(self.io("open", INDEX)(e)),
        };
        let size = file.metadata().map_err(self.io("stat", INDEX))?.len();
        if size > MAX_INDEX_JSON {
            return Err(StoreError::IndexTooLarge { size });
        }
        let mut bytes = Vec::new();
        file.take(MAX_INDEX_JSON)
            .read_to_end(&mut bytes)
            .map_err(self.io("read", INDEX))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadFile {
            path: self.root.join(INDEX),
            source,
        })
    }

    /// Replaces `index.json` atomically. The caller holds `kiln/index.lock`.
    pub(super) fn write_index(&self, idx: &ImageIndex) -> Result<(), StoreError> {
        let bytes = idx
            .to_canonical_json()
            .map_err(|source| StoreError::Encode {
                what: "index.json",
                source,
            })?;
        self.write_atomic(INDEX, &bytes)
    }

    /// Runs `f` on the index under a lease and the index lock, writing the result if it changed.
    fn update_index<R>(
        &self,
        f: impl FnOnce(&mut ImageIndex) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let _lease = self.lease()?;
        self.update_index_leased(f)
    }

    /// [`Store::update_index`] for a caller that already excludes gc (holds a lease or is gc).
    pub(super) fn update_index_leased<R>(
        &self,
        f: impl FnOnce(&mut ImageIndex) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let _lock = self.lock_exclusive(INDEX_LOCK)?;
        let mut idx = self.read_index()?;
        let before = idx.clone();
        let r = f(&mut idx)?;
        if idx != before {
            self.write_index(&idx)?;
        }
        Ok(r)
    }

    /// Groups the index entries by manifest and loads each.
    pub(super) fn images_in(&self, idx: &ImageIndex) -> ImageList {
        let mut order = Vec::new();
        let mut groups: BTreeMap<Digest, (Descriptor, Vec<ImageRef>)> = BTreeMap::new();
        for d in &idx.manifests {
            let mut base = d.clone();
            let name = base.annotations.remove(ANNOTATION_REF_NAME);
            let group = groups.entry(d.digest).or_insert_with(|| {
                order.push(d.digest);
                (base, Vec::new())
            });
            if let Some(r) = name.and_then(|n| ImageRef::parse(&n).ok()) {
                if r.digest().is_none() {
                    group.1.push(r);
                }
            }
        }
        let mut list = ImageList::default();
        for digest in order {
            let Some((descriptor, mut tags)) = groups.remove(&digest) else {
                continue;
            };
            tags.sort();
            tags.dedup();
            match self.load(&descriptor) {
                Ok((manifest_digest, manifest, config)) => list.images.push(Image {
                    descriptor,
                    manifest_digest,
                    manifest,
                    config,
                    tags,
                }),
                Err(error) => list.broken.push(BrokenImage {
                    descriptor,
                    tags,
                    error,
                }),
            }
        }
        // Newest first, like `docker images`; ties in a stable order.
        list.images.sort_by(|a, b| {
            b.created()
                .cmp(&a.created())
                .then_with(|| a.id().cmp(&b.id()))
                .then_with(|| a.descriptor.digest.cmp(&b.descriptor.digest))
        });
        list
    }

    /// Loads an entry's image manifest (choosing this platform's from an index) and config.
    fn load(&self, desc: &Descriptor) -> Result<(Digest, ImageManifest, ImageConfig), StoreError> {
        let (digest, manifest) = self.platform_manifest(desc, 0)?;
        let config = self.read_json(&manifest.config.digest, "config")?;
        Ok((digest, manifest, config))
    }

    fn platform_manifest(
        &self,
        desc: &Descriptor,
        depth: usize,
    ) -> Result<(Digest, ImageManifest), StoreError> {
        if media_types::is_manifest(&desc.media_type) {
            return Ok((desc.digest, self.read_json(&desc.digest, "manifest")?));
        }
        if !media_types::is_index(&desc.media_type) {
            return Err(StoreError::UnsupportedMediaType {
                digest: desc.digest,
                media_type: desc.media_type.clone(),
            });
        }
        if depth >= MAX_INDEX_DEPTH {
            return Err(StoreError::NoUsableManifest(desc.digest));
        }
        let index: ImageIndex = self.read_json(&desc.digest, "index")?;
        let (arch, os) = (host_arch(), "linux");
        let mut candidates: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| self.has_blob(&d.digest))
            .collect();
        // This platform's manifests first, then the rest in index order.
        candidates.sort_by_key(|d| {
            !d.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        });
        for child in candidates {
            if let Ok(found) = self.platform_manifest(child, depth + 1) {
                return Ok(found);
            }
        }
        Err(StoreError::NoUsableManifest(desc.digest))
    }

    /// Checks that an image's manifest, config and layers are all stored.
    fn check_complete(&self, desc: &Descriptor) -> Result<(), StoreError> {
        let (digest, manifest, _) = self.load(desc)?;
        for layer in &manifest.layers {
            if !self.has_blob(&layer.digest) {
                return Err(StoreError::IncompleteImage {
                    manifest: digest,
                    missing: layer.digest,
                });
            }
        }
        Ok(())
    }
}

/// Docker's name for this machine's CPU architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Resolves `s` among `images` the way docker does.
fn resolve_in(images: &[Image], s: &str) -> Result<usize, StoreError> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let is_hex = !hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let id_form = s.starts_with("sha256:") || hex.len() == 64;
    if !id_form {
        if let Ok(r) = ImageRef::parse(s) {
            let found = match r.digest() {
                Some(d) => images.iter().position(|i| i.descriptor.digest == *d),
                None => images.iter().position(|i| i.tags.contains(&r)),
            };
            if let Some(i) = found {
                return Ok(i);
            }
        }
    }
    if is_hex {
        let ids: BTreeSet<Digest> = images
            .iter()
            .map(Image::id)
            .filter(|id| id.hex().starts_with(hex))
            .collect();
        if ids.len() > 1 {
            return Err(StoreError::Ambiguous {
                prefix: s.to_owned(),
                count: ids.len(),
            });
        }
        if let Some(i) = ids
            .first()
            .and_then(|id| images.iter().position(|i| i.id() == *id))
        {
            return Ok(i);
        }
    }
    Err(StoreError::ImageNotFound(s.to_owned()))
}

/// Removes every entry carrying the tag `name`; returns them (without the annotation).
fn take_tag(idx: &mut ImageIndex, name: &str) -> Vec<Descriptor> {
    let mut removed = Vec::new();
    idx.manifests.retain(|d| {
        if d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(name) {
            let mut plain = d.clone();
            plain.annotations.remove(ANNOTATION_REF_NAME);
            removed.push(plain);
            false
        } else {
            true
        }
    });
    removed
}

/// Re-adds, untagged, each of `entries` that no longer has any entry in the index.
fn keep_untagged(idx: &mut ImageIndex, entries: Vec<Descriptor>) {
    for e in entries {
        if !idx.manifests.iter().any(|d| d.digest == e.digest) {
            idx.manifests.push(e);
        }
    }
}

/// Points `tag` at `entry` (which has no tag annotation).
fn set_tag(idx: &mut ImageIndex, entry: &Descriptor, tag: &ImageRef) {
    let name = tag.to_string();
    let previous = take_tag(idx, &name);
    // The image is tagged now, so its untagged entry (if any) goes.
    idx.manifests
        .retain(|d| d.digest != entry.digest || d.annotations.contains_key(ANNOTATION_REF_NAME));
    let mut tagged = entry.clone();
    tagged
        .annotations
        .insert(ANNOTATION_REF_NAME.to_owned(), name);
    idx.manifests.push(tagged);
    keep_untagged(idx, previous);
}
