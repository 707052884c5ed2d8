//! Pushing: each layer compressed once (a compressed blob is kept and found again by diff ID
//! and algorithm), `HEAD` before upload, a cross-repository mount when the store knows the
//! blob from another repository of the same registry, otherwise POST + one streamed PATCH +
//! PUT (a monolithic PUT when the registry refuses the PATCH); the manifest last.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ureq::http::Method;

use super::pull::short;
use super::transport::{error_detail, join_url, Body, Session};
use super::{registry_host, Client, Endpoint, RegistryError};
use crate::build::state::{ImageState, Layer};
use crate::digest::{DiffId, Digest};
use crate::image::{media_types, CanonicalJson, Descriptor, ImageManifest};
use crate::layer::Compression;
use crate::progress::Transfer;
use crate::reference::ImageRef;
use crate::store::{Image, Store};

/// Layers uploaded at once.
const PARALLEL_UPLOADS: usize = 3;
/// Largest chunk of the chunked fallback (what GHCR accepts), unless the registry asks for
/// more with `OCI-Chunk-Min-Length`.
const CHUNK: u64 = 4 << 20;
/// Bytes between two `Pushing` events of one layer.
const PROGRESS_STEP: u64 = 1 << 20;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// How layers stored uncompressed are compressed.
    pub compression: Compression,
    /// Set from elsewhere to stop the push (a server's client went away).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            cancel: None,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest's digest in the registry.
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
}

/// Pushes the local image tagged `target` to its registry as `target`.
pub fn push(
    client: &Client,
    store: &Store,
    target: &ImageRef,
    opts: &PushOptions,
    events: &(dyn Fn(Transfer) + Sync),
) -> Result<Pushed, RegistryError> {
    push_as(client, store, &target.to_string(), target, opts, events)
}

/// Pushes the local image `source` (a name or ID) to the registry as `target`. Only when
/// `source` is `target` itself does the local tag then name the pushed manifest.
pub fn push_as(
    client: &Client,
    store: &Store,
    source: &str,
    target: &ImageRef,
    opts: &PushOptions,
    events: &(dyn Fn(Transfer) + Sync),
) -> Result<Pushed, RegistryError> {
    let _lease = store.lease()?;
    let tag = push_tag(target)?;
    let img = store
        .resolve(source)
        .map_err(|_| RegistryError::NoLocalImage(source.to_owned()))?;
    events(Transfer::status(format!(
        "The push refers to repository [{}]",
        target.name()
    )));
    let (ep, session) = target_session(client, target)?;
    let state = ImageState::from_parts(&img.manifest, img.config.clone());
    let all = store.list_images()?.images;
    // Top layer first, as docker lists them.
    // docker names a layer by its diff ID while pushing.
    for l in state.layers.iter().rev() {
        events(Transfer::about(l.diff_id.short(), "Preparing"));
    }
    let mut blobs = Vec::new();
    for l in &state.layers {
        blobs.push(shippable(store, &all, l, opts.compression)?);
    }
    let items: Vec<(String, Descriptor)> = state
        .layers
        .iter()
        .zip(&blobs)
        .rev()
        .map(|(l, b)| (l.diff_id.short(), b.clone()))
        .collect();
    let stop = opts.cancel.clone().unwrap_or_default();
    let sources = mount_sources(&all, target);
    upload_all(&session, store, &ep, items, &sources, events, &stop)?;
    upload_config(&session, store, &ep, &img.manifest.config, &stop)?;
    let docker_types = img.manifest.config.media_type == media_types::DOCKER_CONFIG
        && blobs
            .iter()
            .all(|b| b.media_type.starts_with("application/vnd.docker."));
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(
            if docker_types {
                media_types::DOCKER_MANIFEST
            } else {
                media_types::OCI_MANIFEST
            }
            .to_owned(),
        ),
        artifact_type: None,
        config: img.manifest.config.clone(),
        layers: blobs,
        subject: None,
        annotations: img.manifest.annotations.clone(),
    };
    let (mdesc, bytes) = manifest_bytes(store, &img, manifest)?;
    store.put_blob_expect(&bytes[..], &mdesc.digest)?;
    put_manifest(&session, &ep, &tag, &mdesc, &bytes, &target.familiar())?;
    // The tag now names the manifest the registry has (same image ID; for an image pulled
    // from an index, its platform's manifest), so its repo digest is the registry's and the
    // next push finds every layer already compressed.
    if mdesc.digest != img.descriptor.digest && source == target.to_string() {
        store.add_image(&mdesc, std::slice::from_ref(target))?;
    }
    events(Transfer::status(format!(
        "{tag}: digest: {} size: {}",
        mdesc.digest,
        bytes.len()
    )));
    Ok(Pushed {
        digest: mdesc.digest,
        size: bytes.len() as u64,
    })
}

/// Uploads `items` (an id for progress, and the blob) to the endpoint's repository,
/// [`PARALLEL_UPLOADS`] at a time; `sources` are repositories of the same registry to try a
/// cross-repository mount from, with the blobs each holds.
pub(crate) fn upload_all(
    session: &Session,
    store: &Store,
    ep: &Endpoint,
    items: Vec<(String, Descriptor)>,
    sources: &[(String, Vec<Digest>)],
    events: &(dyn Fn(Transfer) + Sync),
    stop: &AtomicBool,
) -> Result<(), RegistryError> {
    let queue: Mutex<VecDeque<(String, Descriptor)>> = Mutex::new(items.into());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_UPLOADS {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((id, d)) = next else { return };
                let from: Vec<String> = sources
                    .iter()
                    .filter(|(_, blobs)| blobs.contains(&d.digest))
                    .map(|(repo, _)| repo.clone())
                    .collect();
                if let Err(e) = upload(session, store, ep, &id, &d, &from, events, stop) {
                    stop.store(true, Ordering::Relaxed);
                    if let Ok(mut v) = errors.lock() {
                        v.push(e);
                    }
                    return;
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().ok().and_then(|v| v.into_iter().next()) {
        return Err(e);
    }
    if stop.load(Ordering::Relaxed) {
        return Err(RegistryError::Cancelled);
    }
    Ok(())
}

/// Makes sure the registry has the config blob `config` (no progress lines: docker shows none).
fn upload_config(
    session: &Session,
    store: &Store,
    ep: &Endpoint,
    config: &Descriptor,
    stop: &AtomicBool,
) -> Result<(), RegistryError> {
    let quiet = |_: Transfer| {};
    upload(
        session,
        store,
        ep,
        &short(&config.digest),
        config,
        &[],
        &quiet,
        stop,
    )
}

/// PUTs a manifest under `tag` (a tag or a digest) and checks the digest the registry
/// announces; `what` names the target in errors.
pub(crate) fn put_manifest(
    session: &Session,
    ep: &Endpoint,
    tag: &str,
    mdesc: &Descriptor,
    bytes: &[u8],
    what: &str,
) -> Result<(), RegistryError> {
    let url = format!("/v2/{}/manifests/{tag}", ep.path);
    let scopes = [format!("repository:{}:pull,push", ep.path)];
    let mut resp = session.call(
        Method::PUT,
        &url,
        &scopes,
        &[("Content-Type", mdesc.media_type.as_str())],
        Body::Bytes(bytes),
    )?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        return Err(RegistryError::Status {
            url: format!("{}{url}", ep.host),
            status,
            detail: error_detail(&mut resp),
        });
    }
    if let Some(d) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok())
    {
        if d != mdesc.digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest pushed to {what}"),
                expected: mdesc.digest,
            });
        }
    }
    Ok(())
}

/// The tag a push names: a digest reference is refused.
fn push_tag(target: &ImageRef) -> Result<String, RegistryError> {
    target.tag().map(str::to_owned).ok_or_else(|| {
        RegistryError::Config(format!(
            "cannot push a digest reference: {}",
            target.familiar()
        ))
    })
}

/// The endpoint of `target`'s repository and the session with its registry.
fn target_session(
    client: &Client,
    target: &ImageRef,
) -> Result<(Endpoint, Arc<Session>), RegistryError> {
    let ep = Endpoint {
        host: registry_host(target.domain()).to_owned(),
        path: target.path().to_owned(),
    };
    let session = client.session(&ep.host, target.domain())?;
    Ok((ep, session))
}

/// The manifest to push: the stored one when it lists exactly these blobs (a pulled image
/// goes back byte for byte, with its registry digest), else the new one.
fn manifest_bytes(
    store: &Store,
    img: &Image,
    manifest: ImageManifest,
) -> Result<(Descriptor, Vec<u8>), RegistryError> {
    if img.manifest.layers == manifest.layers && img.manifest.config == manifest.config {
        let bytes = store.read_blob(&img.manifest_digest, super::MAX_MANIFEST)?;
        let mt = img
            .manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media_types::OCI_MANIFEST.to_owned());
        let desc = Descriptor::new(mt, img.manifest_digest, bytes.len() as u64);
        return Ok((desc, bytes));
    }
    let mt = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| media_types::OCI_MANIFEST.to_owned());
    let bytes = manifest
        .to_canonical_json()
        .map_err(|e| RegistryError::Protocol {
            what: "manifest".into(),
            why: e.to_string(),
        })?;
    let desc = Descriptor::new(mt, Digest::of(&bytes), bytes.len() as u64);
    Ok((desc, bytes))
}

/// The blob that goes to the registry for a layer: a compressed blob as it is stored, else
/// the compressed form the store already holds for that diff ID, else a new one.
pub(crate) fn shippable(
    store: &Store,
    all: &[Image],
    l: &Layer,
    compression: Compression,
) -> Result<Descriptor, RegistryError> {
    use media_types as mt;
    if matches!(
        l.desc.media_type.as_str(),
        mt::OCI_LAYER_GZIP | mt::OCI_LAYER_ZSTD | mt::DOCKER_LAYER_GZIP
    ) {
        return Ok(l.desc.clone());
    }
    let want = match compression {
        Compression::Gzip => mt::OCI_LAYER_GZIP,
        Compression::Zstd => mt::OCI_LAYER_ZSTD,
    };
    if let Some(d) = store
        .compressed_form(&l.diff_id, want)
        .or_else(|| find_compressed(store, all, &l.diff_id, want))
    {
        return Ok(d);
    }
    let reader = io::BufReader::with_capacity(1 << 20, store.open_blob(&l.desc.digest)?);
    let mut w = store.blob_writer()?;
    let blob = crate::layer::compress_parallel(reader, &mut w, compression)?;
    w.commit_expect(&blob.digest)?;
    let desc = Descriptor::new(want, blob.digest, blob.size);
    store.remember_compressed(&l.diff_id, &desc)?;
    Ok(desc)
}

/// The blob for a layer of a build cache: in `compression` when given; otherwise any
/// compressed form the store already has (so a cache shares its blobs with the pushed images),
/// else a new zstd one (several times faster to make than gzip, at about the same size).
pub(crate) fn cache_blob(
    store: &Store,
    all: &[Image],
    l: &Layer,
    compression: Option<Compression>,
) -> Result<Descriptor, RegistryError> {
    if let Some(c) = compression {
        return shippable(store, all, l, c);
    }
    if l.desc.media_type != media_types::OCI_LAYER {
        return Ok(l.desc.clone());
    }
    for mt in [media_types::OCI_LAYER_GZIP, media_types::OCI_LAYER_ZSTD] {
        if let Some(d) = store
            .compressed_form(&l.diff_id, mt)
            .or_else(|| find_compressed(store, all, &l.diff_id, mt))
        {
            return Ok(d);
        }
    }
    shippable(store, all, l, Compression::Zstd)
}

/// A stored blob of media type `want` that some image uses for layer `diff`.
fn find_compressed(store: &Store, all: &[Image], diff: &DiffId, want: &str) -> Option<Descriptor> {
    all.iter().find_map(|img| {
        img.manifest
            .layers
            .iter()
            .zip(&img.config.rootfs.diff_ids)
            .find(|(d, id)| *id == diff && d.media_type == want && store.has_blob(&d.digest))
            .map(|(d, _)| d.clone())
    })
}

/// Repositories of `target`'s registry (other than its own) that images in the store are
/// tagged in, with their blobs: candidates for a cross-repository mount.
fn mount_sources(all: &[Image], target: &ImageRef) -> Vec<(String, Vec<Digest>)> {
    let mut out: Vec<(String, Vec<Digest>)> = Vec::new();
    for img in all {
        for t in &img.tags {
            if t.domain() != target.domain() || t.path() == target.path() {
                continue;
            }
            let blobs: Vec<Digest> = img.manifest.layers.iter().map(|l| l.digest).collect();
            match out.iter_mut().find(|(r, _)| r == t.path()) {
                Some((_, b)) => b.extend(blobs),
                None => out.push((t.path().to_owned(), blobs)),
            }
        }
    }
    out
}

/// Makes sure the registry has blob `d` in the endpoint's repository.
#[allow(clippy::too_many_arguments)]
fn upload(
    s: &Session,
    store: &Store,
    ep: &Endpoint,
    id: &str,
    d: &Descriptor,
    mount_from: &[String],
    events: &(dyn Fn(Transfer) + Sync),
    cancel: &AtomicBool,
) -> Result<(), RegistryError> {
    let id = id.to_owned();
    let scopes = vec![format!("repository:{}:pull,push", ep.path)];
    let head = s.call(
        Method::HEAD,
        &format!("/v2/{}/blobs/{}", ep.path, d.digest),
        &scopes,
        &[],
        Body::Empty,
    )?;
    if head.status().is_success() {
        events(Transfer::about(id, "Layer already exists"));
        return Ok(());
    }
    let mut location = None;
    for from in mount_from.iter().take(3) {
        let mut mscopes = scopes.clone();
        mscopes.push(format!("repository:{from}:pull"));
        let url = format!(
            "/v2/{}/blobs/uploads/?mount={}&from={}",
            ep.path, d.digest, from
        );
        let resp = match s.call(Method::POST, &url, &mscopes, &[], Body::Empty) {
            Ok(r) => r,
            Err(RegistryError::Unauthorized { .. }) => continue,
            Err(e) => return Err(e),
        };
        match resp.status().as_u16() {
            201 => {
                events(Transfer::about(id, format!("Mounted from {from}")));
                return Ok(());
            }
            202 => {
                location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                break;
            }
            _ => {}
        }
    }
    let location = match location {
        Some(l) => l,
        None => start_upload(s, ep, &scopes)?,
    };
    let base = s.base()?;
    let location = join_url(&format!("{base}/v2/{}/blobs/uploads/", ep.path), &location);
    let size = d.size;
    let mut reader = Progress::of(store, d, &id, events, cancel)?;
    let resp = s.call(
        Method::PATCH,
        &location,
        &scopes,
        &[("Content-Type", "application/octet-stream")],
        Body::Stream(&mut reader, Some(size)),
    );
    let (put_url, mode) = match resp {
        Ok(r) if r.status().as_u16() == 202 => {
            let next = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| location.clone(), |l| join_url(&location, l));
            (next, Fallback::None)
        }
        // The registry takes no PATCH at all: the body goes with the PUT.
        Ok(r) if matches!(r.status().as_u16(), 405 | 501) => (
            join_url(&location, &start_upload(s, ep, &scopes)?),
            Fallback::Monolithic,
        ),
        // A PATCH this large is refused (GHCR caps one at 4 MiB), or the connection broke
        // under it: chunks with Content-Range, each retried on its own.
        Ok(r) if matches!(r.status().as_u16(), 400 | 413 | 416) => {
            let min = r
                .headers()
                .get("oci-chunk-min-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let fresh = join_url(&location, &start_upload(s, ep, &scopes)?);
            let piece = CHUNK.max(min);
            let next = upload_chunks(s, store, &fresh, &scopes, d, piece, &id, events, cancel)?;
            (next, Fallback::None)
        }
        Err(RegistryError::Http { .. }) if !cancel.load(Ordering::Relaxed) => {
            let fresh = join_url(&location, &start_upload(s, ep, &scopes)?);
            let next = upload_chunks(s, store, &fresh, &scopes, d, CHUNK, &id, events, cancel)?;
            (next, Fallback::None)
        }
        Ok(mut r) => {
            let status = r.status().as_u16();
            return Err(RegistryError::Status {
                url: location,
                status,
                detail: error_detail(&mut r),
            });
        }
        Err(e) => return Err(e),
    };
    let sep = if put_url.contains('?') { '&' } else { '?' };
    let put_url = format!("{put_url}{sep}digest={}", d.digest);
    let resp = if mode == Fallback::Monolithic {
        let mut reader = Progress::of(store, d, &id, events, cancel)?;
        s.call(
            Method::PUT,
            &put_url,
            &scopes,
            &[("Content-Type", "application/octet-stream")],
            Body::Stream(&mut reader, Some(size)),
        )?
    } else {
        s.call(Method::PUT, &put_url, &scopes, &[], Body::Empty)?
    };
    let mut resp = resp;
    if resp.status().as_u16() != 201 && !resp.status().is_success() {
        let status = resp.status().as_u16();
        return Err(RegistryError::Status {
            url: put_url,
            status,
            detail: error_detail(&mut resp),
        });
    }
    events(Transfer::about(id, "Pushed"));
    Ok(())
}

/// How an upload goes on when the streamed PATCH is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    /// The PATCH went through (or the chunks did): an empty PUT ends it.
    None,
    /// The whole body goes with the PUT.
    Monolithic,
}

/// Uploads the blob in `piece`-byte PATCHes with `Content-Range`, each retried on its own;
/// returns the location to PUT.
#[allow(clippy::too_many_arguments)]
fn upload_chunks(
    s: &Session,
    store: &Store,
    location: &str,
    scopes: &[String],
    d: &Descriptor,
    piece: u64,
    id: &str,
    events: &(dyn Fn(Transfer) + Sync),
    cancel: &AtomicBool,
) -> Result<String, RegistryError> {
    let mut blob = store.open_blob(&d.digest)?;
    let mut location = location.to_owned();
    let mut start = 0u64;
    let mut buf = Vec::new();
    while start < d.size {
        if cancel.load(Ordering::Relaxed) {
            return Err(RegistryError::Cancelled);
        }
        buf.clear();
        (&mut blob)
            .take(piece)
            .read_to_end(&mut buf)
            .map_err(crate::store::StoreError::Source)?;
        if buf.is_empty() {
            break;
        }
        let end = start + buf.len() as u64 - 1;
        let range = format!("{start}-{end}");
        let mut resp = s.call(
            Method::PATCH,
            &location,
            scopes,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", range.as_str()),
            ],
            Body::Bytes(&buf),
        )?;
        if resp.status().as_u16() != 202 {
            let status = resp.status().as_u16();
            return Err(RegistryError::Status {
                url: location,
                status,
                detail: error_detail(&mut resp),
            });
        }
        if let Some(l) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
            location = join_url(&location, l);
        }
        start = end + 1;
        events(Transfer {
            id: Some(id.to_owned()),
            status: "Pushing".into(),
            current: Some(start),
            total: Some(d.size),
        });
    }
    Ok(location)
}

/// POST to start an upload; returns its location.
fn start_upload(s: &Session, ep: &Endpoint, scopes: &[String]) -> Result<String, RegistryError> {
    let url = format!("/v2/{}/blobs/uploads/", ep.path);
    let mut resp = s.call(Method::POST, &url, scopes, &[], Body::Empty)?;
    if resp.status().as_u16() != 202 {
        let status = resp.status().as_u16();
        return Err(RegistryError::Status {
            url: format!("{}{url}", ep.host),
            status,
            detail: error_detail(&mut resp),
        });
    }
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| RegistryError::Protocol {
            what: format!("{}{url}", ep.host),
            why: "no Location for the upload".into(),
        })
}

/// A blob reader that reports `Pushing` progress and stops when cancelled.
struct Progress<'a, R> {
    inner: R,
    done: u64,
    next: u64,
    id: String,
    size: u64,
    events: &'a (dyn Fn(Transfer) + Sync),
    cancel: &'a AtomicBool,
}

impl<'a> Progress<'a, crate::store::BlobReader> {
    /// The stored blob `d`, read with `Pushing` progress under `id`.
    fn of(
        store: &Store,
        d: &Descriptor,
        id: &str,
        events: &'a (dyn Fn(Transfer) + Sync),
        cancel: &'a AtomicBool,
    ) -> Result<Self, RegistryError> {
        Ok(Progress {
            inner: store.open_blob(&d.digest)?,
            done: 0,
            next: 0,
            id: id.to_owned(),
            size: d.size,
            events,
            cancel,
        })
    }
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done >= self.next || n == 0 {
            self.next = self.done + PROGRESS_STEP;
            (self.events)(Transfer {
                id: Some(self.id.clone()),
                status: "Pushing".into(),
                current: Some(self.done),
                total: Some(self.size),
            });
        }
        Ok(n)
    }
}

/// Pushes `manifest` as `target` (a tag): its config blob must be in the store; each layer
/// blob is found in the repository, mounted from one of `sources` (repositories of the same
/// registry, with the blobs each holds) or from a repository the store's images are tagged in,
/// or uploaded from the store.
pub fn push_artifact(
    client: &Client,
    store: &Store,
    target: &ImageRef,
    manifest: &ImageManifest,
    sources: &[(String, Vec<Digest>)],
    events: &(dyn Fn(Transfer) + Sync),
) -> Result<Pushed, RegistryError> {
    let _lease = store.lease()?;
    let tag = push_tag(target)?;
    let (ep, session) = target_session(client, target)?;
    let all = store.list_images()?.images;
    let mut from = mount_sources(&all, target);
    from.extend(
        sources
            .iter()
            .filter(|(repo, _)| repo != target.path())
            .cloned(),
    );
    let items: Vec<(String, Descriptor)> = manifest
        .layers
        .iter()
        .map(|d| (short(&d.digest), d.clone()))
        .collect();
    let stop = AtomicBool::new(false);
    upload_all(&session, store, &ep, items, &from, events, &stop)?;
    upload_config(&session, store, &ep, &manifest.config, &stop)?;
    let bytes = manifest
        .to_canonical_json()
        .map_err(|e| RegistryError::Protocol {
            what: "manifest".into(),
            why: e.to_string(),
        })?;
    let mt = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| media_types::OCI_MANIFEST.to_owned());
    let mdesc = Descriptor::new(mt, Digest::of(&bytes), bytes.len() as u64);
    put_manifest(&session, &ep, &tag, &mdesc, &bytes, &target.familiar())?;
    Ok(Pushed {
        digest: mdesc.digest,
        size: bytes.len() as u64,
    })
}

/// Uploads one layer of an image being built to `target`'s repository (compressed as `push`
/// would, or as [`cache_blob`] chooses for a build cache when `compression` is `None`; mounted
/// or found there when it can be), so that the push or cache export at the end of the build
/// finds it there already.
pub fn push_layer(
    client: &Client,
    store: &Store,
    target: &ImageRef,
    layer: &Layer,
    compression: Option<Compression>,
) -> Result<(), RegistryError> {
    let all = store.list_images()?.images;
    let d = cache_blob(store, &all, layer, compression)?;
    let (ep, session) = target_session(client, target)?;
    let from: Vec<String> = mount_sources(&all, target)
        .into_iter()
        .filter(|(_, blobs)| blobs.contains(&d.digest))
        .map(|(repo, _)| repo)
        .collect();
    let quiet = |_: Transfer| {};
    upload(
        &session,
        store,
        &ep,
        &layer.diff_id.short(),
        &d,
        &from,
        &quiet,
        &AtomicBool::new(false),
    )
}
