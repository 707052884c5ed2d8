//! The build cache beyond this store: `--cache-to` writes the keys a build computed, with
//! their layers, to a registry or an OCI layout folder; `--cache-from` reads them back, so a
//! fresh machine runs only the steps whose inputs changed.
//!
//! One cache ref is one OCI image manifest (nothing a registry has not seen before: the shape
//! of BuildKit's `image-manifest=true` cache). Its config, of media type
//! [`CACHE_CONFIG_TYPE`], is the index: per step its key (blake3 over the step's inputs, as
//! [`crate::cache`] computes it: content digests, never paths or hosts), when it was first
//! built and which layer it made. A step's effect on the image config is a function of the
//! same inputs, so it is replayed from the Dockerfile, as for a local hit. The manifest's layers
//! are the ordinary compressed layer blobs, shared with pushed images (mounted, not uploaded
//! twice), plus, with `mounts=true`, one zstd tar per `RUN --mount=type=cache` folder.
//!
//! An entry is only ever found by a key computed here from the build's own inputs, so a cache
//! ref cannot make a step of another Dockerfile look built. Layers are fetched only when a
//! later step needs their files or the result needs their blobs, and their digests are checked
//! on the way in; their diff IDs are checked when they are unpacked, as for a pulled image.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::Layer;
use super::BuildError;
use crate::cache::{CacheEntry, CachedLayer};
use crate::digest::{CacheKey, DiffId, Digest};
use crate::image::{media_types, CanonicalJson, Descriptor, ImageIndex, ImageManifest};
use crate::layer::Compression;
use crate::progress::{ProgressEvent, ProgressSink, Transfer};
use crate::reference::ImageRef;
use crate::registry::Client;
use crate::store::Store;

/// The media type of a kiln cache index (the config blob of a cache manifest).
pub const CACHE_CONFIG_TYPE: &str = "application/vnd.kiln.cache.v1+json";
/// Largest cache index read.
const MAX_INDEX: u64 = 8 << 20;
/// Annotation naming the cache mount a layer of a cache manifest holds.
const MOUNT_ANNOTATION: &str = "dev.kiln.cache.mount";

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// A tag in a registry (`type=registry,ref=...`).
    Registry(ImageRef),
    /// An OCI image layout folder (`type=local,dest=...` / `src=...`) and the tag in it.
    Local {
        /// The folder.
        dir: PathBuf,
        /// The tag (`latest` unless `tag=` says otherwise).
        tag: String,
    },
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registry(r) => write!(f, "{}", r.familiar()),
            Self::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// Which steps an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The steps of the target stage and the stages it is built FROM.
    Min,
    /// Every step of every stage the build ran (the default).
    Max,
}

/// `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    /// Where to.
    pub to: CacheLocation,
    /// Which steps.
    pub mode: CacheMode,
    /// How layers stored uncompressed are compressed (`None`: a compressed form the store
    /// already has, else zstd).
    pub compression: Option<Compression>,
    /// Also export the `RUN --mount=type=cache` folders the build uses.
    pub mounts: bool,
    /// A failed export is a warning rather than a failed build.
    pub ignore_error: bool,
}

/// Parses a `--cache-from` value: `type=registry,ref=R`, `type=local,src=DIR[,tag=T]`, or a
/// bare `R` (a registry ref, as buildx reads it).
pub fn parse_cache_from(spec: &str) -> Result<CacheLocation, String> {
    let fields = csv_fields(spec)?;
    if !spec.contains('=') {
        return registry_ref(spec);
    }
    let kind = fields.get("type").map_or("registry", String::as_str);
    let allowed: &[&str] = match kind {
        "registry" => &["type", "ref"],
        "local" => &["type", "src", "tag"],
        other => return Err(unsupported_type(other)),
    };
    check_keys(&fields, allowed)?;
    match kind {
        "registry" => registry_ref(
            fields
                .get("ref")
                .ok_or("type=registry needs ref=NAME:TAG")?,
        ),
        _ => Ok(CacheLocation::Local {
            dir: PathBuf::from(fields.get("src").ok_or("type=local needs src=DIR")?),
            tag: local_tag(&fields)?,
        }),
    }
}

/// Parses a `--cache-to` value: `type=registry,ref=R[,mode=max|min][,compression=gzip|zstd]
/// [,mounts=true][,ignore-error=true]` or `type=local,dest=DIR[,tag=T][,...]`.
pub fn parse_cache_to(spec: &str) -> Result<CacheExport, String> {
    let fields = csv_fields(spec)?;
    if !spec.contains('=') {
        return Ok(CacheExport {
            to: registry_ref(spec)?,
            mode: CacheMode::Max,
            compression: None,
            mounts: false,
            ignore_error: false,
        });
    }
    let kind = fields.get("type").map_or("registry", String::as_str);
    let common = ["type", "mode", "compression", "mounts", "ignore-error"];
    let (extra, to): (&[&str], CacheLocation) = match kind {
        "registry" => (
            &["ref"],
            registry_ref(
                fields
                    .get("ref")
                    .ok_or("type=registry needs ref=NAME:TAG")?,
            )?,
        ),
        "local" => (
            &["dest", "tag"],
            CacheLocation::Local {
                dir: PathBuf::from(fields.get("dest").ok_or("type=local needs dest=DIR")?),
                tag: local_tag(&fields)?,
            },
        ),
        other => return Err(unsupported_type(other)),
    };
    let allowed: Vec<&str> = common.iter().chain(extra).copied().collect();
    check_keys(&fields, &allowed)?;
    let flag = |k: &str| -> Result<bool, String> {
        match fields.get(k).map(String::as_str) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(format!("{k}={v:?}: expected true or false")),
        }
    };
    Ok(CacheExport {
        to,
        mode: match fields.get("mode").map(String::as_str) {
            None | Some("max") => CacheMode::Max,
            Some("min") => CacheMode::Min,
            Some(v) => return Err(format!("mode={v:?}: expected min or max")),
        },
        compression: match fields.get("compression").map(String::as_str) {
            None => None,
            Some("gzip") => Some(Compression::Gzip),
            Some("zstd") => Some(Compression::Zstd),
            Some(v) => return Err(format!("compression={v:?}: expected gzip or zstd")),
        },
        mounts: flag("mounts")?,
        ignore_error: flag("ignore-error")?,
    })
}

fn csv_fields(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    if !spec.contains('=') {
        return Ok(out);
    }
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not KEY=VALUE"))?;
        if out
            .insert(k.trim().to_owned(), v.trim().to_owned())
            .is_some()
        {
            return Err(format!("{k} is given twice"));
        }
    }
    Ok(out)
}

fn check_keys(fields: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), String> {
    match fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "kiln does not support {k}= here (it takes {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn unsupported_type(t: &str) -> String {
    format!("type={t} is not supported: kiln keeps build cache in a registry (type=registry) or an OCI layout folder (type=local)")
}

fn registry_ref(s: &str) -> Result<CacheLocation, String> {
    let r = ImageRef::parse(s).map_err(|e| format!("invalid cache ref {s:?}: {e}"))?;
    if r.digest().is_some() {
        return Err(format!("cache ref {s:?} must be a tag, not a digest"));
    }
    Ok(CacheLocation::Registry(r))
}

fn local_tag(fields: &BTreeMap<String, String>) -> Result<String, String> {
    let tag = fields
        .get("tag")
        .cloned()
        .unwrap_or_else(|| "latest".into());
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(tag)
    } else {
        Err(format!("tag={tag:?} is not a valid tag"))
    }
}

/// The cache index: the config blob of a cache manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Index {
    /// The kiln that wrote it.
    #[serde(default)]
    kiln: String,
    /// Per layer of the manifest (same order): its diff ID and uncompressed size.
    layers: Vec<IndexLayer>,
    /// The steps.
    steps: Vec<IndexStep>,
    /// Cache mount folders, each a layer of the manifest.
    #[serde(default)]
    mounts: Vec<IndexMount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexLayer {
    diff_id: DiffId,
    size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexStep {
    /// The step's cache key, hex.
    key: String,
    /// When it was first built (RFC 3339).
    created: String,
    /// The layer it made: an index into the manifest's layers.
    #[serde(default)]
    layer: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexMount {
    /// The mount's `id`.
    id: String,
    /// An index into the manifest's layers.
    layer: usize,
}

impl CanonicalJson for Index {}

/// A step a build computed: what an export writes.
#[derive(Debug, Clone)]
pub(super) struct Record {
    /// The stage it belongs to.
    pub stage: usize,
    /// Its key.
    pub key: CacheKey,
    /// When it was first built.
    pub created: String,
    /// Its layer, if it made one.
    pub layer: Option<Layer>,
}

/// One imported cache ref.
struct Source {
    location: CacheLocation,
    manifest: ImageManifest,
    index: Index,
}

/// The caches named by `--cache-from`, read once at the start of a build.
#[derive(Default)]
pub(super) struct Imported {
    sources: Vec<Source>,
    /// Key hex -> (source, step).
    steps: HashMap<String, (usize, usize)>,
}

impl Imported {
    /// Reads each location's index. A cache that cannot be read is a warning, not a failure:
    /// the build then runs the steps it would have found there.
    pub fn load(
        store: &Store,
        client: Option<&Client>,
        from: &[CacheLocation],
        progress: &dyn ProgressSink,
    ) -> Self {
        let mut out = Self::default();
        for loc in from {
            match read_source(store, client, loc) {
                Ok(src) => {
                    let i = out.sources.len();
                    for (n, s) in src.index.steps.iter().enumerate() {
                        out.steps.entry(s.key.clone()).or_insert((i, n));
                    }
                    out.sources.push(src);
                }
                Err(e) => progress.emit(ProgressEvent::Warning {
                    message: format!("cache from {loc} is not used: {e}"),
                }),
            }
        }
        out
    }

    /// The entry for `key`, and the cache it came from.
    pub fn get(&self, key: &CacheKey) -> Option<(CacheEntry, String)> {
        let &(si, n) = self.steps.get(&key.hex())?;
        let src = self.sources.get(si)?;
        let step = src.index.steps.get(n)?;
        let layer = match step.layer {
            None => None,
            Some(li) => {
                let l = src.index.layers.get(li)?;
                let desc = src.manifest.layers.get(li)?;
                Some(CachedLayer {
                    diff_id: l.diff_id,
                    size: l.size,
                    blob: Some(Descriptor::new(
                        desc.media_type.clone(),
                        desc.digest,
                        desc.size,
                    )),
                })
            }
        };
        Some((
            CacheEntry {
                created: step.created.clone(),
                layer,
            },
            src.location.to_string(),
        ))
    }

    /// Whether any cache lists the blob `d`.
    fn source_of(&self, d: &Digest) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| s.manifest.layers.iter().any(|l| l.digest == *d))
    }

    /// Fetches the blobs of `layers` that the store lacks from the caches that list them.
    pub fn fetch(
        &self,
        store: &Store,
        client: Option<&Client>,
        layers: &[Descriptor],
        room: Option<u64>,
        progress: &dyn ProgressSink,
    ) -> Result<(), String> {
        let mut by_source: Vec<(usize, Vec<Descriptor>)> = Vec::new();
        for d in layers {
            if store.has_blob(&d.digest) {
                continue;
            }
            let Some(si) = self
                .sources
                .iter()
                .position(|s| s.manifest.layers.iter().any(|l| l.digest == d.digest))
            else {
                continue;
            };
            match by_source.iter_mut().find(|(i, _)| *i == si) {
                Some((_, v)) => v.push(d.clone()),
                None => by_source.push((si, vec![d.clone()])),
            }
        }
        for (si, blobs) in by_source {
            let Some(src) = self.sources.get(si) else {
                continue;
            };
            fetch_from(store, client, &src.location, &blobs, room, progress)
                .map_err(|e| format!("fetch cached layers from {}: {e}", src.location))?;
        }
        Ok(())
    }

    /// The blob holding the cache mount `id`, and the cache it is in.
    pub fn mount(&self, id: &str) -> Option<(Descriptor, &CacheLocation)> {
        self.sources.iter().find_map(|s| {
            let m = s.index.mounts.iter().find(|m| m.id == id)?;
            let d = s.manifest.layers.get(m.layer)?;
            Some((d.clone(), &s.location))
        })
    }
}

fn read_source(
    store: &Store,
    client: Option<&Client>,
    loc: &CacheLocation,
) -> Result<Source, String> {
    let (manifest, config) = match loc {
        CacheLocation::Registry(r) => {
            let client = client.ok_or("this build has no registry client")?;
            let a = crate::registry::fetch_artifact(client, store, r, CACHE_CONFIG_TYPE, MAX_INDEX)
                .map_err(|e| e.to_string())?;
            (a.manifest, a.config)
        }
        CacheLocation::Local { dir, tag } => {
            let index: ImageIndex = serde_json::from_slice(&read_file(
                &dir.join("index.json"),
                crate::registry::MAX_MANIFEST,
            )?)
            .map_err(|e| format!("index.json: {e}"))?;
            let desc = index
                .manifests
                .iter()
                .find(|d| d.annotations.get(crate::image::ANNOTATION_REF_NAME) == Some(tag))
                .ok_or_else(|| format!("index.json has no manifest tagged {tag:?}"))?;
            let bytes = read_layout_blob(dir, &desc.digest, crate::registry::MAX_MANIFEST)?;
            let manifest: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|e| format!("manifest: {e}"))?;
            if manifest.config.media_type != CACHE_CONFIG_TYPE {
                return Err(format!(
                    "its config is {:?}, not a kiln cache index",
                    manifest.config.media_type
                ));
            }
            let config = read_layout_blob(dir, &manifest.config.digest, MAX_INDEX)?;
            (manifest, config)
        }
    };
    let index: Index = serde_json::from_slice(&config).map_err(|e| format!("cache index: {e}"))?;
    if index.layers.len() != manifest.layers.len() {
        return Err(format!(
            "the index lists {} layers, the manifest {}",
            index.layers.len(),
            manifest.layers.len()
        ));
    }
    let bad_step = index
        .steps
        .iter()
        .any(|s| s.layer.is_some_and(|l| l >= index.layers.len()));
    let bad_mount = index.mounts.iter().any(|m| m.layer >= index.layers.len());
    if bad_step || bad_mount {
        return Err("the index names a layer the manifest does not have".into());
    }
    for l in &manifest.layers {
        if !matches!(
            l.media_type.as_str(),
            media_types::OCI_LAYER
                | media_types::OCI_LAYER_GZIP
                | media_types::OCI_LAYER_ZSTD
                | media_types::DOCKER_LAYER_GZIP
        ) {
            return Err(format!(
                "layer {} has media type {:?}",
                l.digest, l.media_type
            ));
        }
    }
    Ok(Source {
        location: loc.clone(),
        manifest,
        index,
    })
}

/// Reads a file of at most `limit` bytes.
fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() as u64 > limit {
        return Err(format!("{} is larger than {limit} bytes", path.display()));
    }
    Ok(buf)
}

/// A blob of an OCI layout, checked against its digest.
fn read_layout_blob(dir: &Path, d: &Digest, limit: u64) -> Result<Vec<u8>, String> {
    let bytes = read_file(&layout_blob(dir, d), limit)?;
    if Digest::of(&bytes) != *d {
        return Err(format!("blob {d} does not match its digest"));
    }
    Ok(bytes)
}

fn layout_blob(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(d.hex())
}

/// Copies `blobs` from a cache location into the store, each checked against its digest.
fn fetch_from(
    store: &Store,
    client: Option<&Client>,
    loc: &CacheLocation,
    blobs: &[Descriptor],
    room: Option<u64>,
    progress: &dyn ProgressSink,
) -> Result<(), String> {
    match loc {
        CacheLocation::Registry(r) => {
            let client = client.ok_or("this build has no registry client")?;
            let events = |t: Transfer| progress.emit(ProgressEvent::Transfer(t));
            crate::registry::fetch_blobs(client, store, r, blobs, room, &events)
                .map_err(|e| e.to_string())
        }
        CacheLocation::Local { dir, .. } => {
            for d in blobs {
                let f = std::fs::File::open(layout_blob(dir, &d.digest))
                    .map_err(|e| format!("blob {}: {e}", d.digest))?;
                store
                    .put_blob_expect(f.take(d.size.saturating_add(1)), &d.digest)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}

/// Writes the records `records` (and, with `mounts=true`, the cache mounts `mount_ids`) to
/// `exp.to`.
pub(super) fn export(
    store: &Store,
    client: Option<&Client>,
    exp: &CacheExport,
    records: &[&Record],
    mount_ids: &BTreeSet<String>,
    imported: &Imported,
    progress: &dyn ProgressSink,
) -> Result<(), String> {
    let _lease = store.lease().map_err(|e| e.to_string())?;
    let mut index = Index {
        kiln: env!("CARGO_PKG_VERSION").to_owned(),
        ..Index::default()
    };
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut by_diff: HashMap<DiffId, usize> = HashMap::new();
    let all = store.list_images().map_err(|e| e.to_string())?.images;
    for r in records {
        let layer = match &r.layer {
            None => None,
            Some(l) => Some(match by_diff.get(&l.diff_id) {
                Some(&i) => i,
                None => {
                    let blob = if store.has_blob(&l.desc.digest)
                        && l.desc.media_type == media_types::OCI_LAYER
                    {
                        crate::registry::push::cache_blob(store, &all, l, exp.compression)
                            .map_err(|e| e.to_string())?
                    } else {
                        l.desc.clone()
                    };
                    let size = if l.desc.media_type == media_types::OCI_LAYER {
                        l.desc.size
                    } else {
                        uncompressed_size(store, imported, l)
                    };
                    layers.push(blob);
                    index.layers.push(IndexLayer {
                        diff_id: l.diff_id,
                        size,
                    });
                    by_diff.insert(l.diff_id, layers.len() - 1);
                    layers.len() - 1
                }
            }),
        };
        if !index.steps.iter().any(|s| s.key == r.key.hex()) {
            index.steps.push(IndexStep {
                key: r.key.hex(),
                created: r.created.clone(),
                layer,
            });
        }
    }
    if exp.mounts {
        for id in mount_ids {
            if let Some(blob) = super::mounts::export_cache_mount(store, id)
                .map_err(|e| format!("cache mount {id:?}: {e}"))?
            {
                let (desc, diff_id, size) = blob;
                let mut desc = desc;
                desc.annotations
                    .insert(MOUNT_ANNOTATION.to_owned(), id.clone());
                layers.push(desc);
                index.layers.push(IndexLayer { diff_id, size });
                index.mounts.push(IndexMount {
                    id: id.clone(),
                    layer: layers.len() - 1,
                });
            }
        }
    }
    let config = store
        .put_json(CACHE_CONFIG_TYPE, &index)
        .map_err(|e| e.to_string())?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_types::OCI_MANIFEST.to_owned()),
        artifact_type: None,
        config,
        layers,
        subject: None,
        annotations: BTreeMap::from([(
            "dev.kiln.cache.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )]),
    };
    progress.emit(ProgressEvent::Transfer(Transfer::status(format!(
        "exporting cache to {}: {} steps, {} layers{}",
        exp.to,
        index.steps.len(),
        index.layers.len() - index.mounts.len(),
        if index.mounts.is_empty() {
            String::new()
        } else {
            format!(", {} cache mounts", index.mounts.len())
        }
    ))));
    match &exp.to {
        CacheLocation::Registry(r) => {
            let client = client.ok_or("this build has no registry client")?;
            // Blobs the store does not hold must come from a cache of the same registry
            // (found there, or mounted); others are fetched first.
            let mut sources: Vec<(String, Vec<Digest>)> = Vec::new();
            let mut need = Vec::new();
            for l in &manifest.layers {
                if store.has_blob(&l.digest) {
                    continue;
                }
                match imported.source_of(&l.digest).map(|s| &s.location) {
                    Some(CacheLocation::Registry(from)) if from.domain() == r.domain() => {
                        match sources.iter_mut().find(|(p, _)| p == from.path()) {
                            Some((_, v)) => v.push(l.digest),
                            None => sources.push((from.path().to_owned(), vec![l.digest])),
                        }
                    }
                    _ => need.push(l.clone()),
                }
            }
            imported.fetch(store, Some(client), &need, None, progress)?;
            let quiet = |_: Transfer| {};
            crate::registry::push_artifact(client, store, r, &manifest, &sources, &quiet)
                .map_err(|e| e.to_string())?;
        }
        CacheLocation::Local { dir, tag } => {
            imported.fetch(store, client, &manifest.layers, None, progress)?;
            write_layout(store, dir, tag, &manifest).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The uncompressed size of a layer: its tar's, when the store keeps the tar; else what the
/// cache that listed it says; else 0 (the index then lacks only a hint).
fn uncompressed_size(store: &Store, imported: &Imported, l: &Layer) -> u64 {
    if store.has_blob(&l.diff_id.as_uncompressed_digest()) {
        if let Ok(n) = store.blob_size(&l.diff_id.as_uncompressed_digest()) {
            return n;
        }
    }
    imported
        .sources
        .iter()
        .find_map(|s| s.index.layers.iter().find(|x| x.diff_id == l.diff_id))
        .map_or(0, |x| x.size)
}

/// Writes `manifest` and its blobs into the OCI layout `dir` under `tag`, keeping the other
/// tags and blobs there.
fn write_layout(
    store: &Store,
    dir: &Path,
    tag: &str,
    manifest: &ImageManifest,
) -> std::io::Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let copy = |d: &Digest| -> std::io::Result<()> {
        let dest = blobs.join(d.hex());
        if dest.is_file() {
            return Ok(());
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&blobs)?;
        let mut src = store.open_blob(d).map_err(std::io::Error::other)?;
        std::io::copy(&mut src, &mut tmp)?;
        tmp.persist(&dest).map_err(|e| e.error)?;
        Ok(())
    };
    for l in &manifest.layers {
        copy(&l.digest)?;
    }
    copy(&manifest.config.digest)?;
    let bytes = manifest
        .to_canonical_json()
        .map_err(std::io::Error::other)?;
    let mdigest = Digest::of(&bytes);
    let mpath = blobs.join(mdigest.hex());
    if !mpath.is_file() {
        write_atomic(&mpath, &bytes)?;
    }
    let index_path = dir.join("index.json");
    let mut index: ImageIndex = match std::fs::read(&index_path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|_| ImageIndex::empty()),
        Err(_) => ImageIndex::empty(),
    };
    index.manifests.retain(|d| {
        d.annotations
            .get(crate::image::ANNOTATION_REF_NAME)
            .is_none_or(|t| t != tag)
    });
    let mut desc = Descriptor::new(media_types::OCI_MANIFEST, mdigest, bytes.len() as u64);
    desc.annotations
        .insert(crate::image::ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
    index.manifests.push(desc);
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_atomic(
        &index_path,
        &index.to_canonical_json().map_err(std::io::Error::other)?,
    )
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Fails an export unless it may be ignored; a warning either way.
pub(super) fn export_failed(
    exp: &CacheExport,
    why: String,
    progress: &dyn ProgressSink,
) -> Result<(), BuildError> {
    if exp.ignore_error {
        progress.emit(ProgressEvent::Warning {
            message: format!("cache export to {} failed (ignored): {why}", exp.to),
        });
        Ok(())
    } else {
        Err(BuildError::CacheExport {
            to: exp.to.to_string(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_buildx_reads_them() {
        let e = parse_cache_to(
            "type=registry,ref=localhost:5000/c:main,mode=min,compression=zstd,mounts=true",
        )
        .unwrap();
        assert_eq!(e.mode, CacheMode::Min);
        assert_eq!(e.compression, Some(Compression::Zstd));
        assert!(e.mounts && !e.ignore_error);
        assert!(matches!(e.to, CacheLocation::Registry(ref r) if r.tag() == Some("main")));
        let bare = parse_cache_to("localhost:5000/c").unwrap();
        assert_eq!(bare.mode, CacheMode::Max);
        assert!(matches!(bare.to, CacheLocation::Registry(ref r) if r.tag() == Some("latest")));
        assert_eq!(
            parse_cache_from("type=local,src=/tmp/c,tag=v1").unwrap(),
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "v1".into()
            }
        );
        for bad in [
            "type=gha",
            "type=inline",
            "type=registry",
            "type=registry,ref=x,mode=most",
            "type=registry,ref=x,oci-mediatypes=true",
            "type=registry,ref=x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "type=local,dest=/x,tag=../../a",
        ] {
            assert!(parse_cache_to(bad).is_err(), "{bad}");
        }
        assert!(parse_cache_from("type=local,dest=/x").is_err());
    }
}
