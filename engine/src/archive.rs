//! Image archives: `save` (docker-archive or OCI archive), `load` (either), and `import` (a
//! root filesystem tarball as a one-layer image, like `docker import`).
//!
//! A docker-archive written here is what Docker 25+ writes: `manifest.json` (+ `repositories`)
//! for every docker version, plus `oci-layout`/`index.json` so OCI tools read it too; layers are
//! stored as uncompressed tars, as `docker save` does. An OCI archive holds gzip (or zstd)
//! layers. Loading never trusts the archive: it is unpacked with the layer module's hostile-input
//! rules into a private folder, every blob is verified against its digest, and every layer's
//! uncompressed digest against the config's `diff_ids`, before anything is tagged.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::build::state::{host_arch, ImageState, Layer};
use crate::digest::{DiffId, Digest, HashingReader};
use crate::image::{
    media_types, CanonicalJson, Descriptor, History, ImageConfig, ImageIndex, ImageManifest,
    ANNOTATION_REF_NAME,
};
use crate::layer::{self, Compression, LayerError, Limits, UnpackOptions, Whiteouts};
use crate::reference::{ImageRef, ReferenceError};
use crate::store::{Image, Store, StoreError, MAX_JSON_BLOB};

/// Errors from saving, loading and importing.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A layer could not be read or written.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A name in the archive is not a valid reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The archive has neither `manifest.json` nor `index.json`.
    #[error("not an image archive: no manifest.json or index.json")]
    NotAnArchive,
    /// A JSON document in the archive is malformed.
    #[error("invalid {what} in archive: {source}")]
    BadJson {
        /// Which document.
        what: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The archive names a file it does not contain.
    #[error("archive references missing file {0:?}")]
    MissingFile(Shown),
    /// A name in the archive resolves outside it (an absolute name, `..` above its top, or a
    /// symlink of the archive's that leads out).
    #[error("archive member {0:?} leads outside the archive")]
    OutsideArchive(Shown),
    /// A name in the archive is not a regular file, or its symlinks loop.
    #[error("archive member {0:?} is not a regular file")]
    NotAFile(Shown),
    /// A layer's content does not match the config's diff ID. The content's own digest is not
    /// shown: an error never echoes a digest of bytes the requester did not supply.
    #[error("layer {index} of {image}: content does not match the config's diff ID {expected}")]
    DiffIdMismatch {
        /// Which image.
        image: String,
        /// Which layer (0 = bottom).
        index: usize,
        /// From the config.
        expected: DiffId,
    },
    /// A JSON document of the archive is larger than kiln reads.
    #[error("archive member {0:?} is larger than {1} bytes")]
    TooLarge(Shown, u64),
    /// The config lists a different number of layers than the manifest.
    #[error("image {0}: manifest and config disagree on the number of layers")]
    LayerCount(String),
    /// A `--change` instruction that `import`/`commit` do not accept, or a bad one.
    #[error("invalid --change {0:?}: {1}")]
    BadChange(String, String),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Writing the archive to its destination failed.
    #[error("write archive: {0}")]
    Write(#[source] io::Error),
    /// An export's destination folder is not empty.
    #[error("{0}: the destination folder is not empty")]
    NotEmpty(PathBuf),
}

impl ArchiveError {
    /// Whether the user's input caused this error (exit code 1).
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Store(e) => e.is_user_error(),
            Self::Io { .. } | Self::Write(_) => false,
            Self::NotEmpty(_) => true,
            _ => true,
        }
    }
}

/// The archive format of `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker save`'s format (also a valid OCI layout).
    Docker,
    /// An OCI image layout in a tar, layers compressed.
    Oci,
}

/// One entry of a docker-archive `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

struct TarOut<W: Write> {
    tar: tar::Builder<W>,
    written: std::collections::BTreeSet<String>,
}

impl<W: Write> TarOut<W> {
    fn new(w: W) -> Self {
        let mut tar = tar::Builder::new(w);
        tar.mode(tar::HeaderMode::Deterministic);
        Self {
            tar,
            written: Default::default(),
        }
    }

    fn header(size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }

    fn dir(&mut self, path: &str) -> io::Result<()> {
        if !self.written.insert(path.to_owned()) {
            return Ok(());
        }
        let mut h = Self::header(0, 0o755);
        h.set_entry_type(tar::EntryType::Directory);
        self.tar.append_data(&mut h, path, io::empty())
    }

    fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        if !self.written.insert(path.to_owned()) {
            return Ok(());
        }
        let mut h = Self::header(data.len() as u64, 0o644);
        self.tar.append_data(&mut h, path, data)
    }

    fn reader(&mut self, path: &str, size: u64, r: impl Read) -> io::Result<()> {
        if !self.written.insert(path.to_owned()) {
            return Ok(());
        }
        let mut h = Self::header(size, 0o644);
        self.tar.append_data(&mut h, path, r)
    }

    fn finish(self) -> io::Result<W> {
        self.tar.into_inner()
    }
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// What `save` needs of one image.
struct Saved {
    image: Image,
    manifest: ImageManifest,
    config: Vec<u8>,
    names: Vec<ImageRef>,
}

fn read_image(store: &Store, image: Image, names: Vec<ImageRef>) -> Result<Saved, ArchiveError> {
    let manifest = image.manifest.clone();
    let config = store.read_blob(&manifest.config.digest, MAX_JSON_BLOB)?;
    Ok(Saved {
        image,
        manifest,
        config,
        names,
    })
}

/// Writes the images named by `refs` to `out` as an archive. A name that is a tag is recorded
/// as such in the archive; an image ID is saved without a name, as docker does.
pub fn save(
    store: &Store,
    refs: &[String],
    format: SaveFormat,
    compression: Compression,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let mut images: Vec<Saved> = Vec::new();
    for r in refs {
        let image = store.resolve(r)?;
        let name = ImageRef::parse(r).ok().filter(|n| n.tag().is_some());
        match images
            .iter_mut()
            .find(|s| s.image.manifest_digest == image.manifest_digest)
        {
            Some(s) => s.names.extend(name),
            None => images.push(read_image(store, image, name.into_iter().collect())?),
        }
    }
    let mut tar = TarOut::new(out);
    let w = |e| ArchiveError::Write(e);
    tar.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(w)?;
    tar.dir("blobs/").map_err(w)?;
    tar.dir("blobs/sha256/").map_err(w)?;
    let mut index = ImageIndex::empty();
    let mut docker_manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for s in &images {
        let config_digest = s.manifest.config.digest;
        tar.bytes(&blob_name(&config_digest), &s.config)
            .map_err(w)?;
        let config: ImageConfig =
            serde_json::from_slice(&s.config).map_err(|source| ArchiveError::BadJson {
                what: format!("config {config_digest}"),
                source,
            })?;
        let mut layers = Vec::new();
        let mut layer_paths = Vec::new();
        for (desc, diff_id) in s.manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let (out_desc, path) = match format {
                SaveFormat::Docker => {
                    // docker-archive layers are uncompressed tars named by diff ID.
                    let d = diff_id.as_uncompressed_digest();
                    let path = blob_name(&d);
                    if !tar.written.contains(&path) {
                        let tmp = uncompressed_layer(store, desc, diff_id)?;
                        let size = tmp.as_file().metadata().map_err(w)?.len();
                        let f = tmp.reopen().map_err(w)?;
                        tar.reader(&path, size, f).map_err(w)?;
                    }
                    let size = uncompressed_size(store, desc, diff_id)?;
                    (Descriptor::new(media_types::OCI_LAYER, d, size), path)
                }
                SaveFormat::Oci if desc.media_type == oci_layer_type(compression) => {
                    // Already compressed this way (a pulled or pushed layer): as it is.
                    let path = blob_name(&desc.digest);
                    let f = store.open_blob(&desc.digest)?;
                    tar.reader(&path, desc.size, f).map_err(w)?;
                    (desc.clone(), path)
                }
                SaveFormat::Oci => {
                    let tmp = tempfile::tempfile().map_err(w)?;
                    let reader = layer::decompress_auto(store.open_blob(&desc.digest)?)?;
                    let blob = layer::compress_parallel(reader, &tmp, compression)?;
                    let mt = oci_layer_type(compression);
                    let path = blob_name(&blob.digest);
                    let mut f = tmp;
                    io::Seek::seek(&mut f, io::SeekFrom::Start(0)).map_err(w)?;
                    tar.reader(&path, blob.size, f).map_err(w)?;
                    (Descriptor::new(mt, blob.digest, blob.size), path)
                }
            };
            layers.push(out_desc);
            layer_paths.push(path);
        }
        if layers.len() != s.manifest.layers.len() {
            return Err(ArchiveError::LayerCount(s.image.id().to_string()));
        }
        let manifest = ImageManifest {
            layers,
            config: Descriptor::new(
                media_types::OCI_CONFIG,
                config_digest,
                s.config.len() as u64,
            ),
            ..s.manifest.clone()
        };
        let mbytes = manifest
            .to_canonical_json()
            .map_err(|e| ArchiveError::Write(e.into()))?;
        let mdigest = Digest::of(&mbytes);
        tar.bytes(&blob_name(&mdigest), &mbytes).map_err(w)?;
        let names: Vec<&ImageRef> = s.names.iter().collect();
        if names.is_empty() {
            index.manifests.push(Descriptor::new(
                media_types::OCI_MANIFEST,
                mdigest,
                mbytes.len() as u64,
            ));
        }
        for n in &names {
            let mut d = Descriptor::new(media_types::OCI_MANIFEST, mdigest, mbytes.len() as u64);
            d.annotations
                .insert("io.containerd.image.name".to_owned(), n.to_string());
            d.annotations.insert(
                ANNOTATION_REF_NAME.to_owned(),
                n.tag().unwrap_or("latest").to_owned(),
            );
            index.manifests.push(d);
            repositories
                .entry(n.familiar_name())
                .or_default()
                .insert(n.tag().unwrap_or("latest").to_owned(), config_digest.hex());
        }
        docker_manifest.push(DockerManifestEntry {
            config: blob_name(&config_digest),
            repo_tags: Some(names.iter().map(|n| n.familiar()).collect()),
            layers: layer_paths,
        });
    }
    let index_bytes = index
        .to_canonical_json()
        .map_err(|e| ArchiveError::Write(e.into()))?;
    tar.bytes("index.json", &index_bytes).map_err(w)?;
    if format == SaveFormat::Docker {
        let m = serde_json::to_vec(&docker_manifest).map_err(|e| ArchiveError::Write(e.into()))?;
        tar.bytes("manifest.json", &m).map_err(w)?;
        if !repositories.is_empty() {
            let r = serde_json::to_vec(&repositories).map_err(|e| ArchiveError::Write(e.into()))?;
            tar.bytes("repositories", &r).map_err(w)?;
        }
    }
    tar.finish().map_err(w)?.flush().map_err(w)?;
    Ok(())
}

/// The layer as an uncompressed tar in a temporary file, verified against its diff ID.
fn uncompressed_layer(
    store: &Store,
    desc: &Descriptor,
    diff_id: &DiffId,
) -> Result<tempfile::NamedTempFile, ArchiveError> {
    let mut tmp = tempfile::NamedTempFile::new().map_err(ArchiveError::Write)?;
    let reader = layer::decompress_auto(store.open_blob(&desc.digest)?)?;
    let mut hr = HashingReader::new(reader);
    io::copy(&mut hr, tmp.as_file_mut()).map_err(ArchiveError::Write)?;
    let (h, _) = hr.finish();
    if &DiffId::from_bytes(h) != diff_id {
        return Err(ArchiveError::DiffIdMismatch {
            image: desc.digest.to_string(),
            index: 0,
            expected: *diff_id,
        });
    }
    Ok(tmp)
}

fn uncompressed_size(
    store: &Store,
    desc: &Descriptor,
    diff_id: &DiffId,
) -> Result<u64, ArchiveError> {
    if desc.digest == diff_id.as_uncompressed_digest() {
        return Ok(desc.size);
    }
    let reader = layer::decompress_auto(store.open_blob(&desc.digest)?)?;
    io::copy(&mut io::BufReader::new(reader), &mut io::sink()).map_err(ArchiveError::Write)
}

/// Writes the files of the image `name` (its layers applied in order, whiteouts honoured,
/// owners kept) into `dest`, which must be missing or empty (`--output type=local`). Device
/// nodes are refused here: the folder is the user's, not the store's.
pub fn export_rootfs(store: &Store, name: &str, dest: &Path) -> Result<(), ArchiveError> {
    let io_err = |op: &'static str| {
        let path = dest.to_path_buf();
        move |source| ArchiveError::Io { op, path, source }
    };
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ArchiveError::NotEmpty(dest.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(io_err("create"))?;
        }
        Err(e) => return Err(io_err("read")(e)),
    }
    let dir = open_dir(dest)?;
    apply_layers(store, name, &dir, false)
}

/// Writes the files of the image `name` as one tar to `out` (`--output type=tar`).
pub fn export_rootfs_tar(store: &Store, name: &str, out: impl Write) -> Result<(), ArchiveError> {
    let _lease = store.lease()?;
    let tmp = store.temp_dir()?;
    let dir = open_dir(tmp.path())?;
    apply_layers(store, name, &dir, true)?;
    layer::write_layer(&dir, None, out)?;
    Ok(())
}

/// Applies the layers of `name` onto `dir`, bottom first.
fn apply_layers(
    store: &Store,
    name: &str,
    dir: &cap_std::fs::Dir,
    devices: bool,
) -> Result<(), ArchiveError> {
    let img = store.resolve(name)?;
    let opts = UnpackOptions {
        allow_devices: devices,
        ..UnpackOptions::apply()
    };
    for l in &img.manifest.layers {
        let blob = store.open_blob(&l.digest)?;
        layer::unpack_layer(io::BufReader::with_capacity(1 << 16, blob), dir, &opts)?;
    }
    Ok(())
}

/// The OCI media type of a layer compressed with `c`.
fn oci_layer_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => media_types::OCI_LAYER_GZIP,
        Compression::Zstd => media_types::OCI_LAYER_ZSTD,
    }
}

/// What `load` did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// `Loaded image: NAME` lines (familiar names), or image IDs for untagged images.
    pub loaded: Vec<String>,
}

/// Loads a docker-archive or OCI archive (possibly compressed) into the store.
///
/// The archive is unpacked with the layer module's hostile-input rules into a private folder;
/// every name its JSON documents give (`manifest.json`'s config and layers, `blobs/sha256/…`
/// for a digest) is then resolved beneath that folder by the kernel and read through the one
/// descriptor that resolution returns ([`Members`]), so no symlink the archive carries can
/// reach a file outside it (docker-archive's symlinked `layer.tar` of a repeated layer, which
/// stays inside, still loads).
pub fn load(store: &Store, input: impl Read) -> Result<LoadReport, ArchiveError> {
    // Hold off garbage collection until the images are in the index.
    let _lease = store.lease()?;
    let tmp = store.temp_dir()?;
    let dir = open_dir(tmp.path())?;
    let opts = UnpackOptions {
        whiteouts: Whiteouts::Refuse,
        allow_devices: false,
        same_owner: false,
        limits: Limits::default(),
    };
    layer::unpack_layer(input, &dir, &opts)?;
    let members = Members { dir };
    let mut report = LoadReport::default();
    if let Some(f) = members.open_if_present("manifest.json")? {
        let bytes = read_limited(f, "manifest.json", MAX_JSON_BLOB)?;
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&bytes).map_err(|source| ArchiveError::BadJson {
                what: "manifest.json".to_owned(),
                source,
            })?;
        for e in entries {
            load_docker_entry(store, &members, e, &mut report)?;
        }
        return Ok(report);
    }
    if let Some(f) = members.open_if_present("index.json")? {
        let bytes = read_limited(f, "index.json", MAX_JSON_BLOB)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| ArchiveError::BadJson {
                what: "index.json".to_owned(),
                source,
            })?;
        for d in index.manifests {
            load_oci_manifest(store, &members, &d, &mut report, 0)?;
        }
        return Ok(report);
    }
    Err(ArchiveError::NotAnArchive)
}

/// Loads one image of a docker-archive's `manifest.json`.
fn load_docker_entry(
    store: &Store,
    members: &Members,
    e: DockerManifestEntry,
    report: &mut LoadReport,
) -> Result<(), ArchiveError> {
    let config_bytes = read_limited(members.open(&e.config)?, &e.config, MAX_JSON_BLOB)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|source| ArchiveError::BadJson {
            what: Shown::new(&e.config).0,
            source,
        })?;
    if config.rootfs.diff_ids.len() != e.layers.len() {
        return Err(ArchiveError::LayerCount(Shown::new(&e.config).0));
    }
    let mut layers = Vec::new();
    for (i, (path, expected)) in e.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
        let image = Shown::new(&e.config).0;
        layers.push(store_layer(store, members.open(path)?, expected, image, i)?);
    }
    let (config_digest, config_size) = store.put_blob(&config_bytes[..])?;
    let state = ImageState { layers, config };
    let manifest = state.manifest(Descriptor::new(
        media_types::OCI_CONFIG,
        config_digest,
        config_size,
    ));
    let mdesc = store.put_json(media_types::OCI_MANIFEST, &manifest)?;
    let mut refs = Vec::new();
    for t in e.repo_tags.unwrap_or_default() {
        refs.push(ImageRef::parse(&t)?);
    }
    store.add_image(&mdesc, &refs)?;
    if refs.is_empty() {
        report
            .loaded
            .push(format!("Loaded image ID: {config_digest}"));
    }
    for r in refs {
        report
            .loaded
            .push(format!("Loaded image: {}", r.familiar()));
    }
    Ok(())
}

fn load_oci_manifest(
    store: &Store,
    members: &Members,
    d: &Descriptor,
    report: &mut LoadReport,
    depth: usize,
) -> Result<(), ArchiveError> {
    let bytes = copy_json_blob(store, members, &d.digest)?;
    if media_types::is_index(&d.media_type) {
        if depth > 4 {
            return Err(ArchiveError::NotAnArchive);
        }
        let idx: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| ArchiveError::BadJson {
                what: d.digest.to_string(),
                source,
            })?;
        // Load the entry for this machine's platform; skip others (and attestations).
        for m in idx.manifests {
            let ok = m
                .platform
                .as_ref()
                .is_none_or(|p| p.os == "linux" && p.architecture == host_arch());
            if ok && media_types::is_manifest(&m.media_type) {
                let mut m = m;
                m.annotations.extend(d.annotations.clone());
                return load_oci_manifest(store, members, &m, report, depth + 1);
            }
        }
        return Ok(());
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|source| ArchiveError::BadJson {
            what: d.digest.to_string(),
            source,
        })?;
    let config_bytes = copy_json_blob(store, members, &manifest.config.digest)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|source| ArchiveError::BadJson {
            what: manifest.config.digest.to_string(),
            source,
        })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ArchiveError::LayerCount(d.digest.to_string()));
    }
    for (i, (l, expected)) in manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
    {
        let name = blob_name(&l.digest);
        let mut f = members.open(&name)?;
        // Verify the uncompressed content before accepting the blob as is; both passes read
        // the one descriptor.
        let mut hr = HashingReader::new(layer::decompress_auto(&f)?);
        io::copy(&mut hr, &mut io::sink()).map_err(|e| member_io(&name, e))?;
        if &DiffId::from_bytes(hr.finish().0) != expected {
            return Err(ArchiveError::DiffIdMismatch {
                image: d.digest.to_string(),
                index: i,
                expected: *expected,
            });
        }
        io::Seek::rewind(&mut f).map_err(|e| member_io(&name, e))?;
        store.put_blob_expect(f, &l.digest)?;
    }
    let mdesc = Descriptor::new(media_types::OCI_MANIFEST, d.digest, bytes.len() as u64);
    let name = d
        .annotations
        .get("io.containerd.image.name")
        .or_else(|| d.annotations.get(ANNOTATION_REF_NAME));
    match name.map(|n| ImageRef::parse(n)) {
        Some(Ok(r)) => {
            store.add_image(&mdesc, std::slice::from_ref(&r))?;
            report
                .loaded
                .push(format!("Loaded image: {}", r.familiar()));
        }
        _ => {
            store.add_image(&mdesc, &[])?;
            report
                .loaded
                .push(format!("Loaded image ID: {}", manifest.config.digest));
        }
    }
    Ok(())
}

/// Copies the JSON blob `digest` from the unpacked archive into the store, verifying it;
/// returns its bytes.
fn copy_json_blob(
    store: &Store,
    members: &Members,
    digest: &Digest,
) -> Result<Vec<u8>, ArchiveError> {
    let name = blob_name(digest);
    let bytes = read_limited(members.open(&name)?, &name, MAX_JSON_BLOB)?;
    store.put_blob_expect(&bytes[..], digest)?;
    Ok(bytes)
}

/// Stores a layer file from an archive as an uncompressed blob, provided its content matches
/// the config's diff ID: nothing is kept otherwise.
fn store_layer(
    store: &Store,
    f: fs::File,
    expected: &DiffId,
    image: String,
    index: usize,
) -> Result<Layer, ArchiveError> {
    let reader = layer::decompress_auto(f)?;
    let mut w = store.blob_writer()?;
    io::copy(&mut io::BufReader::new(reader), &mut w).map_err(ArchiveError::Write)?;
    let digest = expected.as_uncompressed_digest();
    let size = match w.commit_expect(&digest) {
        Ok(size) => size,
        Err(StoreError::DigestMismatch { .. }) => {
            return Err(ArchiveError::DiffIdMismatch {
                image,
                index,
                expected: *expected,
            })
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Layer {
        desc: Descriptor::new(media_types::OCI_LAYER, digest, size),
        diff_id: *expected,
    })
}

fn open_dir(p: &Path) -> Result<cap_std::fs::Dir, ArchiveError> {
    cap_std::fs::Dir::open_ambient_dir(p, cap_std::ambient_authority()).map_err(|source| {
        ArchiveError::Io {
            op: "open",
            path: p.to_owned(),
            source,
        }
    })
}

/// An archive's name, as an error shows it: at most 200 characters of it.
pub struct Shown(String);

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl Shown {
    fn new(name: &str) -> Self {
        const MAX: usize = 200;
        match name.char_indices().nth(MAX) {
            Some((end, _)) => Self(format!("{}...", &name[..end])),
            None => Self(name.to_owned()),
        }
    }
}

/// The members of an unpacked archive, named the way its JSON documents name them.
///
/// A name is resolved by `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` below the folder's
/// descriptor: the kernel refuses an absolute name, a `..` above the top, and a symlink of the
/// archive's that leads out (CVE-class: `evil -> /` then `evil/etc/shadow`), with no window
/// between a check and the open. The file is then used only through that descriptor, after
/// `fstat` says it is a regular file. Symlinks that stay inside are followed, as docker does:
/// docker-archives before Docker 25 link a repeated layer's `layer.tar` to its first copy.
struct Members {
    dir: cap_std::fs::Dir,
}

impl Members {
    /// Opens member `name` for reading.
    fn open(&self, name: &str) -> Result<fs::File, ArchiveError> {
        self.open_if_present(name)?
            .ok_or_else(|| ArchiveError::MissingFile(Shown::new(name)))
    }

    /// Opens member `name` for reading; `None` when the archive has no such member.
    fn open_if_present(&self, name: &str) -> Result<Option<fs::File>, ArchiveError> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        use rustix::io::Errno;
        // O_NONBLOCK: an open must not wait, whatever the name turns out to be.
        let fd = match openat2(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(Errno::XDEV) => return Err(ArchiveError::OutsideArchive(Shown::new(name))),
            Err(Errno::LOOP | Errno::ISDIR | Errno::INVAL | Errno::NAMETOOLONG) => {
                return Err(ArchiveError::NotAFile(Shown::new(name)))
            }
            Err(e) => return Err(member_io(name, e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| member_io(name, e.into()))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(ArchiveError::NotAFile(Shown::new(name)));
        }
        Ok(Some(fs::File::from(fd)))
    }
}

fn member_io(name: &str, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        op: "read archive member",
        path: PathBuf::from(Shown::new(name).0),
        source,
    }
}

/// The whole of member `f`, refused when larger than `max`.
fn read_limited(f: fs::File, name: &str, max: u64) -> Result<Vec<u8>, ArchiveError> {
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| member_io(name, e))?;
    if buf.len() as u64 > max {
        return Err(ArchiveError::TooLarge(Shown::new(name), max));
    }
    Ok(buf)
}

/// Imports a root filesystem tarball (possibly compressed) as a one-layer image, like
/// `docker import`: the tar is unpacked with the hostile-input rules, then written back as a
/// deterministic layer. `config` carries the `--change` instructions already applied. Returns
/// the image ID and the manifest digest; the caller records the image in the index.
pub fn import(
    store: &Store,
    input: impl Read,
    source: &str,
    mut config: ImageConfig,
    epoch: Option<i64>,
    message: Option<&str>,
) -> Result<(Digest, Digest), ArchiveError> {
    let tmp = store.temp_dir()?;
    let root = tmp.path().join("rootfs");
    fs::create_dir(&root).map_err(|source| ArchiveError::Io {
        op: "create",
        path: root.clone(),
        source,
    })?;
    // Device nodes are taken whoever runs kiln: without CAP_MKNOD (rootless) each becomes an
    // empty file with the device recorded on it (`user.containers.override_stat`), which the
    // layer writer turns back into the same tar entry.
    let opts = UnpackOptions {
        whiteouts: Whiteouts::Refuse,
        allow_devices: true,
        same_owner: true,
        limits: Limits::default(),
    };
    let root_dir = open_dir(&root)?;
    layer::unpack_layer(input, &root_dir, &opts)?;
    // The layer is hashed as it is written (on its own thread), not again by the store.
    let w = store.prehashed_blob_writer()?;
    let (tar, w) = layer::write_layer_pipelined(&root_dir, epoch, w)?;
    let digest = tar.diff_id.as_uncompressed_digest();
    let size = w.commit(&digest)?;
    let diff_id = tar.diff_id;
    let created = match epoch {
        Some(e) => OffsetDateTime::from_unix_timestamp(e).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        None => OffsetDateTime::now_utc(),
    };
    if config.architecture.is_empty() {
        config.architecture = host_arch().to_owned();
    }
    if config.os.is_empty() {
        config.os = "linux".to_owned();
    }
    config.created = Some(created);
    config.rootfs.diff_ids = vec![diff_id];
    config.history = vec![History {
        created: Some(created),
        created_by: String::new(),
        author: String::new(),
        comment: message.map_or_else(|| format!("Imported from {source}"), str::to_owned),
        empty_layer: false,
    }];
    let state = ImageState {
        config,
        layers: vec![Layer {
            desc: Descriptor::new(media_types::OCI_LAYER, digest, size),
            diff_id,
        }],
    };
    let (cbytes, _) = state
        .config_bytes()
        .map_err(|e| ArchiveError::Write(e.into()))?;
    let (cdigest, csize) = store.put_blob(&cbytes[..])?;
    let manifest = state.manifest(Descriptor::new(media_types::OCI_CONFIG, cdigest, csize));
    let mdesc = store.put_json(media_types::OCI_MANIFEST, &manifest)?;
    Ok((cdigest, mdesc.digest))
}
