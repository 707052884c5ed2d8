//! Pulling: resolve a tag with HEAD, fetch the manifest (choosing a platform from an index),
//! the config and the missing layers (three at a time, each streamed into the store while it
//! is hashed, resumed with `Range` after a broken connection), then name the image.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ureq::http::Method;

use super::platform::PlatformSpec;
use super::transport::{error_detail, read_limited, Body, Session};
use super::{Client, Endpoint, RegistryError, MAX_CONFIG, MAX_MANIFEST};
use crate::digest::Digest;
use crate::image::{media_types, Descriptor, ImageConfig, ImageIndex, ImageManifest};
use crate::progress::Transfer;
use crate::reference::ImageRef;
use crate::store::{Image, Store, StoreError};

/// Layers downloaded at once (docker's default).
const PARALLEL_LAYERS: usize = 3;
/// Times a broken layer download is resumed.
const RESUMES: u32 = 5;
/// Bytes between two `Downloading` events of one layer.
const PROGRESS_STEP: u64 = 1 << 20;

/// The `Accept` list: every manifest and index type kiln reads.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// When a build or `run` pulls its image (docker's `--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull only when the image is not in the store (the default).
    #[default]
    Missing,
    /// Always ask the registry what the tag points at now.
    Always,
    /// Never pull: the image must be in the store.
    Never,
}

impl PullPolicy {
    /// Parses `missing`, `always`, `never` (and docker's `true`/`false` of `--pull`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "missing" | "false" => Ok(Self::Missing),
            "always" | "true" | "" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "invalid pull policy {other:?}: expected always, missing or never"
            )),
        }
    }
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to choose from an index.
    pub platform: PlatformSpec,
    /// Most bytes of layers the pull may add to the store (a tenant's room).
    pub max_bytes: Option<u64>,
    /// Set from elsewhere to stop the pull (a server's client went away).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: PlatformSpec::host(),
            max_bytes: None,
            cancel: None,
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The digest of what the reference points at (an index or a manifest): the repo digest.
    pub digest: Digest,
    /// Whether anything new was stored or tagged (`Downloaded newer image`) rather than the
    /// store already holding it (`Image is up to date`).
    pub updated: bool,
}

/// A manifest fetched from a registry.
struct Fetched {
    media_type: String,
    digest: Digest,
    bytes: Vec<u8>,
}

/// Pulls `r` into `store`, reporting docker's progress lines to `events`.
pub fn pull(
    client: &Client,
    store: &Store,
    r: &ImageRef,
    opts: &PullOptions,
    events: &(dyn Fn(Transfer) + Sync),
) -> Result<Pulled, RegistryError> {
    // Nothing written is collectable until the image is named.
    let _lease = store.lease()?;
    let label = r
        .tag()
        .map(str::to_owned)
        .or_else(|| r.digest().map(Digest::to_string))
        .unwrap_or_default();
    events(Transfer::about(label, format!("Pulling from {}", r.path())));
    let endpoints = client.pull_endpoints(r);
    let mut last = None;
    for (i, ep) in endpoints.iter().enumerate() {
        let is_last = i + 1 == endpoints.len();
        match pull_from(client, store, r, ep, opts, events) {
            Ok(p) => return Ok(p),
            // A mirror that fails is skipped; the registry itself is the last word.
            Err(e) if !is_last && mirror_may_fall_back(&e) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(RegistryError::NotFound(r.familiar())))
}

fn mirror_may_fall_back(e: &RegistryError) -> bool {
    !matches!(
        e,
        RegistryError::DigestMismatch { .. } | RegistryError::Store(_) | RegistryError::Cancelled
    )
}

fn pull_from(
    client: &Client,
    store: &Store,
    r: &ImageRef,
    ep: &Endpoint,
    opts: &PullOptions,
    events: &(dyn Fn(Transfer) + Sync),
) -> Result<Pulled, RegistryError> {
    let session = client.session(&ep.host, r.domain())?;
    let scopes = vec![format!("repository:{}:pull", ep.path)];
    let reference = reference_of(r);
    let top = fetch_manifest(&session, store, ep, &scopes, &reference, r.digest())?;
    store.put_blob_expect(&top.bytes[..], &top.digest)?;
    let manifest_fetched = if media_types::is_index(&top.media_type) {
        let index: ImageIndex = parse_json(&top.bytes, "image index")?;
        let child =
            opts.platform
                .choose(&index.manifests)
                .ok_or_else(|| RegistryError::NoPlatform {
                    reference: r.familiar(),
                    platform: opts.platform.to_string(),
                })?;
        if !media_types::is_manifest(&child.media_type) {
            return Err(RegistryError::Protocol {
                what: format!("{} in {}", child.digest, r.familiar()),
                why: format!("unsupported media type {:?}", child.media_type),
            });
        }
        let m = fetch_manifest(
            &session,
            store,
            ep,
            &scopes,
            &child.digest.to_string(),
            Some(&child.digest),
        )?;
        store.put_blob_expect(&m.bytes[..], &m.digest)?;
        m
    } else {
        Fetched {
            media_type: top.media_type.clone(),
            digest: top.digest,
            bytes: Vec::new(),
        }
    };
    let manifest_bytes = if manifest_fetched.bytes.is_empty() {
        &top.bytes
    } else {
        &manifest_fetched.bytes
    };
    if !media_types::is_manifest(&manifest_fetched.media_type) {
        return Err(RegistryError::Protocol {
            what: r.familiar(),
            why: format!("unsupported media type {:?}", manifest_fetched.media_type),
        });
    }
    let manifest: ImageManifest = parse_json(manifest_bytes, "image manifest")?;
    for l in &manifest.layers {
        check_layer_type(l, r)?;
    }
    // The config.
    let cd = &manifest.config;
    if cd.size > MAX_CONFIG {
        return Err(RegistryError::TooLarge {
            what: format!("config {}", cd.digest),
            limit: MAX_CONFIG,
        });
    }
    if !store.has_blob(&cd.digest) {
        let bytes = fetch_small_blob(&session, ep, &scopes, cd, MAX_CONFIG)?;
        store.put_blob_expect(&bytes[..], &cd.digest)?;
    }
    let config: ImageConfig = store.read_json(&cd.digest, "config")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::Protocol {
            what: format!("image {}", manifest_fetched.digest),
            why: format!(
                "{} layers but {} diff IDs in the config",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    check_room(store, &manifest.layers, opts.max_bytes, r)?;
    let before = store.resolve(&r.to_string()).ok();
    let stop = opts.cancel.clone().unwrap_or_default();
    download_layers(
        &session,
        store,
        ep,
        &scopes,
        &manifest.layers,
        events,
        &stop,
    )?;
    let top_desc = Descriptor::new(top.media_type.clone(), top.digest, top.bytes.len() as u64);
    let tags: Vec<ImageRef> = if r.digest().is_none() {
        vec![r.clone()]
    } else {
        Vec::new()
    };
    store.add_image(&top_desc, &tags)?;
    let updated = before.is_none_or(|b: Image| b.descriptor.digest != top.digest);
    events(Transfer::status(format!("Digest: {}", top.digest)));
    let name = r.familiar();
    events(Transfer::status(if updated {
        format!("Status: Downloaded newer image for {name}")
    } else {
        format!("Status: Image is up to date for {name}")
    }));
    Ok(Pulled {
        digest: top.digest,
        updated,
    })
}

/// What a manifest request names: `r`'s digest, else its tag (`latest` when it has neither).
fn reference_of(r: &ImageRef) -> String {
    match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => crate::reference::DEFAULT_TAG.to_owned(),
    }
}

/// Refuses a download of the blobs the store lacks when they add more than `max` bytes.
fn check_room(
    store: &Store,
    blobs: &[Descriptor],
    max: Option<u64>,
    r: &ImageRef,
) -> Result<(), RegistryError> {
    let Some(max) = max else { return Ok(()) };
    let need = blobs
        .iter()
        .filter(|l| !store.has_blob(&l.digest))
        .map(|l| l.size)
        .fold(0, u64::saturating_add);
    if need > max {
        return Err(RegistryError::TooLarge {
            what: format!(
                "{}: its layers ({need} bytes) do not fit in the store's room, which",
                r.familiar()
            ),
            limit: max,
        });
    }
    Ok(())
}

/// Refuses layers kiln cannot or must not fetch.
fn check_layer_type(l: &Descriptor, r: &ImageRef) -> Result<(), RegistryError> {
    use media_types as mt;
    let ok = [
        mt::OCI_LAYER,
        mt::OCI_LAYER_GZIP,
        mt::OCI_LAYER_ZSTD,
        mt::DOCKER_LAYER,
        mt::DOCKER_LAYER_GZIP,
    ];
    if ok.contains(&l.media_type.as_str()) {
        return Ok(());
    }
    let why = if l.media_type == mt::DOCKER_FOREIGN_LAYER_GZIP
        || l.media_type.contains("nondistributable")
    {
        "a foreign layer (fetched from URLs outside the registry), which kiln does not pull"
            .to_owned()
    } else {
        format!("unsupported layer media type {:?}", l.media_type)
    };
    Err(RegistryError::Protocol {
        what: format!("{} layer {}", r.familiar(), l.digest),
        why,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Protocol {
        what: what.to_owned(),
        why: e.to_string(),
    })
}

/// The manifest `reference` (a tag or digest) of the endpoint's repository: HEAD first (no
/// GET, which Docker Hub counts, when the store has the digest it names), verified against
/// the digest asked for or the one the registry announces.
fn fetch_manifest(
    s: &Session,
    store: &Store,
    ep: &Endpoint,
    scopes: &[String],
    reference: &str,
    expected: Option<&Digest>,
) -> Result<Fetched, RegistryError> {
    let url = format!("/v2/{}/manifests/{reference}", ep.path);
    let not_found = || RegistryError::NotFound(format!("{}/{}:{reference}", ep.host, ep.path));
    // A digest the store already has needs no request at all.
    if let Some(d) = expected {
        if let Some(f) = local_manifest(store, d) {
            return Ok(f);
        }
    } else {
        let resp = s.call(
            Method::HEAD,
            &url,
            scopes,
            &[("Accept", ACCEPT)],
            Body::Empty,
        )?;
        if resp.status().as_u16() == 404 {
            return Err(not_found());
        }
        if resp.status().is_success() {
            let announced = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok());
            if let Some(f) = announced.and_then(|d| local_manifest(store, &d)) {
                return Ok(f);
            }
        }
    }
    let mut resp = s.call(
        Method::GET,
        &url,
        scopes,
        &[("Accept", ACCEPT)],
        Body::Empty,
    )?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Err(not_found());
    }
    if !resp.status().is_success() {
        return Err(RegistryError::Status {
            url: format!("{}{url}", ep.host),
            status,
            detail: error_detail(&mut resp),
        });
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
    };
    let content_type = header("content-type");
    let announced = header("docker-content-digest");
    let what = format!("manifest {}/{}:{reference}", ep.host, ep.path);
    let bytes = read_limited(&mut resp, MAX_MANIFEST, &what)?;
    let digest = Digest::of(&bytes);
    let want = match expected {
        Some(d) => Some(*d),
        None => announced.and_then(|a| a.parse::<Digest>().ok()),
    };
    if let Some(w) = want {
        if w != digest {
            return Err(RegistryError::DigestMismatch { what, expected: w });
        }
    }
    let media_type = media_type_of(&bytes, content_type.as_deref(), &what)?;
    Ok(Fetched {
        media_type,
        digest,
        bytes,
    })
}

/// A manifest or index the store already holds, by digest.
fn local_manifest(store: &Store, d: &Digest) -> Option<Fetched> {
    if !store.has_blob(d) {
        return None;
    }
    let bytes = store.read_blob(d, MAX_MANIFEST).ok()?;
    let media_type = media_type_of(&bytes, None, "").ok()?;
    Some(Fetched {
        media_type,
        digest: *d,
        bytes,
    })
}

/// The media type of a manifest: its own `mediaType`, else the `Content-Type`, else by shape.
pub fn media_type_of(
    bytes: &[u8],
    header: Option<&str>,
    what: &str,
) -> Result<String, RegistryError> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "schemaVersion", default)]
        schema_version: u32,
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let p: Peek = parse_json(bytes, what)?;
    let schema1 = |mt: &str| mt.starts_with("application/vnd.docker.distribution.manifest.v1");
    if p.schema_version == 1 || header.is_some_and(schema1) {
        return Err(RegistryError::Schema1(what.to_owned()));
    }
    if let Some(mt) = p.media_type.filter(|m| !m.is_empty()) {
        return Ok(mt);
    }
    if let Some(h) = header.filter(|h| media_types::is_index(h) || media_types::is_manifest(h)) {
        return Ok(h.to_owned());
    }
    Ok(if p.manifests.is_some() {
        media_types::OCI_INDEX.to_owned()
    } else {
        media_types::OCI_MANIFEST.to_owned()
    })
}

/// A small blob (a config), read whole and verified.
fn fetch_small_blob(
    s: &Session,
    ep: &Endpoint,
    scopes: &[String],
    d: &Descriptor,
    limit: u64,
) -> Result<Vec<u8>, RegistryError> {
    let url = format!("/v2/{}/blobs/{}", ep.path, d.digest);
    let mut resp = s.call(Method::GET, &url, scopes, &[], Body::Empty)?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        return Err(RegistryError::Status {
            url: format!("{}{url}", ep.host),
            status,
            detail: error_detail(&mut resp),
        });
    }
    let what = format!("blob {}", d.digest);
    let bytes = read_limited(&mut resp, limit.min(d.size), &what)?;
    if Digest::of(&bytes) != d.digest {
        return Err(RegistryError::DigestMismatch {
            what,
            expected: d.digest,
        });
    }
    Ok(bytes)
}

/// Downloads the layers the store lacks, [`PARALLEL_LAYERS`] at a time.
fn download_layers(
    s: &Session,
    store: &Store,
    ep: &Endpoint,
    scopes: &[String],
    layers: &[Descriptor],
    events: &(dyn Fn(Transfer) + Sync),
    failed: &AtomicBool,
) -> Result<(), RegistryError> {
    let mut queue = VecDeque::new();
    let mut seen = std::collections::BTreeSet::new();
    for l in layers {
        let id = short(&l.digest);
        if store.has_blob(&l.digest) {
            events(Transfer::about(id, "Already exists"));
        } else if seen.insert(l.digest) {
            events(Transfer::about(id, "Pulling fs layer"));
            queue.push_back(l.clone());
        }
    }
    for l in queue.iter().skip(PARALLEL_LAYERS) {
        events(Transfer::about(short(&l.digest), "Waiting"));
    }
    let queue = Mutex::new(queue);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_LAYERS {
            scope.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(l) = next else { return };
                if let Err(e) = download_blob(s, store, ep, scopes, &l, events, failed) {
                    failed.store(true, Ordering::Relaxed);
                    if let Ok(mut v) = errors.lock() {
                        v.push(e);
                    }
                    return;
                }
            });
        }
    });
    let first = errors.into_inner().ok().and_then(|v| v.into_iter().next());
    match first {
        Some(e) => Err(e),
        None if failed.load(Ordering::Relaxed) => Err(RegistryError::Cancelled),
        None => Ok(()),
    }
}

/// docker's layer id: the first 12 hex digits of the digest.
pub fn short(d: &Digest) -> String {
    d.hex()[..12].to_owned()
}

/// Streams one layer into the store, resuming with `Range` when the connection breaks; the
/// blob is kept only if it hashes to its digest.
fn download_blob(
    s: &Session,
    store: &Store,
    ep: &Endpoint,
    scopes: &[String],
    l: &Descriptor,
    events: &(dyn Fn(Transfer) + Sync),
    cancel: &AtomicBool,
) -> Result<(), RegistryError> {
    let id = short(&l.digest);
    let url = format!("/v2/{}/blobs/{}", ep.path, l.digest);
    let what = format!("layer {}", l.digest);
    let mut w = store.blob_writer()?;
    let mut resumes = 0;
    let mut buf = vec![0u8; 256 << 10];
    let mut next_event = 0;
    loop {
        let offset = w.written();
        let range = format!("bytes={offset}-");
        let headers: Vec<(&str, &str)> = if offset > 0 {
            vec![("Range", range.as_str())]
        } else {
            Vec::new()
        };
        let mut resp = s.call(Method::GET, &url, scopes, &headers, Body::Empty)?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Err(RegistryError::NotFound(format!(
                "{}/{}@{}",
                ep.host, ep.path, l.digest
            )));
        }
        if offset > 0 && status == 200 {
            // The server ignored Range: start over.
            w = store.blob_writer()?;
        } else if offset > 0 && status == 206 {
            let starts_right = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok())
                == Some(offset);
            if !starts_right {
                return Err(RegistryError::Protocol {
                    what,
                    why: "the registry resumed at the wrong offset".into(),
                });
            }
        } else if !(200..300).contains(&status) {
            return Err(RegistryError::Status {
                url: format!("{}{url}", ep.host),
                status,
                detail: error_detail(&mut resp),
            });
        }
        let start = w.written();
        let mut body = resp.body_mut().with_config().limit(u64::MAX).reader();
        let broke = loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(RegistryError::Cancelled);
            }
            let n = match std::io::Read::read(&mut body, &mut buf) {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(e.to_string()),
            };
            let chunk = buf.get(..n).unwrap_or_default();
            w.write_all(chunk).map_err(StoreError::Source)?;
            if w.written() > l.size {
                return Err(RegistryError::Protocol {
                    what,
                    why: format!("the registry sent more than the {} bytes announced", l.size),
                });
            }
            if w.written() >= next_event {
                next_event = w.written() + PROGRESS_STEP;
                events(Transfer {
                    id: Some(id.clone()),
                    status: "Downloading".into(),
                    current: Some(w.written()),
                    total: Some(l.size),
                });
            }
        };
        if w.written() == l.size {
            break;
        }
        // Short or broken: resume while it makes progress.
        resumes += 1;
        if resumes > RESUMES || (w.written() == start && resumes > 2) {
            return Err(RegistryError::Http {
                url: format!("{}{url}", ep.host),
                message: broke.unwrap_or_else(|| {
                    format!("body ended after {} of {} bytes", w.written(), l.size)
                }),
            });
        }
    }
    events(Transfer::about(id.clone(), "Verifying Checksum"));
    match w.commit_expect(&l.digest) {
        Ok(_) => {}
        Err(StoreError::DigestMismatch { expected, .. }) => {
            return Err(RegistryError::DigestMismatch { what, expected })
        }
        Err(e) => return Err(e.into()),
    }
    events(Transfer::about(id.clone(), "Download complete"));
    events(Transfer::about(id, "Pull complete"));
    Ok(())
}

/// An image by name from the store, pulled first when `policy` says so.
pub fn ensure(
    client: &Client,
    store: &Store,
    name: &str,
    policy: PullPolicy,
    opts: &PullOptions,
    events: &(dyn Fn(Transfer) + Sync),
) -> Result<Image, RegistryError> {
    let local = store.resolve(name);
    let want_pull = match policy {
        PullPolicy::Never => false,
        PullPolicy::Missing => local.is_err(),
        PullPolicy::Always => true,
    };
    if !want_pull {
        return Ok(local?);
    }
    let r = match ImageRef::parse(name) {
        Ok(r) => r,
        // An image ID is only ever local.
        Err(_) => return Ok(local?),
    };
    pull(client, store, &r, opts, events)?;
    Ok(store.resolve(&r.to_string())?)
}

/// The tags of `r`'s repository (`kiln pull --all-tags`), following `Link` pages.
pub fn list_tags(client: &Client, r: &ImageRef) -> Result<Vec<String>, RegistryError> {
    #[derive(serde::Deserialize)]
    struct Tags {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    let ep = Endpoint {
        host: super::registry_host(r.domain()).to_owned(),
        path: r.path().to_owned(),
    };
    let s = client.session(&ep.host, r.domain())?;
    let scopes = [format!("repository:{}:pull", ep.path)];
    let mut url = format!("/v2/{}/tags/list", ep.path);
    let mut out = Vec::new();
    for _ in 0..1000 {
        let mut resp = s.call(Method::GET, &url, &scopes, &[], Body::Empty)?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Err(RegistryError::NotFound(r.name()));
        }
        if !resp.status().is_success() {
            return Err(RegistryError::Status {
                url,
                status,
                detail: error_detail(&mut resp),
            });
        }
        let next = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once('<'))
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(u, _)| u.to_owned());
        let bytes = read_limited(&mut resp, MAX_MANIFEST, "tag list")?;
        let t: Tags = parse_json(&bytes, "tag list")?;
        out.extend(t.tags.unwrap_or_default());
        match next {
            Some(n) => url = n,
            None => return Ok(out),
        }
    }
    Err(RegistryError::Protocol {
        what: format!("tags of {}", r.name()),
        why: "more than 1000 pages".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_document_and_schema1_is_refused() {
        let oci = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(
            media_type_of(oci, Some("application/json"), "x").unwrap(),
            media_types::OCI_INDEX
        );
        let bare = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            media_type_of(bare, Some(media_types::DOCKER_MANIFEST), "x").unwrap(),
            media_types::DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(bare, None, "x").unwrap(),
            media_types::OCI_MANIFEST
        );
        let s1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        let e = media_type_of(s1, None, "old").unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        let e = media_type_of(
            bare,
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            "old",
        )
        .unwrap_err();
        assert!(matches!(e, RegistryError::Schema1(_)));
        assert!(media_type_of(b"not json", None, "x").is_err());
        assert_eq!(PullPolicy::parse("").unwrap(), PullPolicy::Always);
        assert_eq!(PullPolicy::parse("never").unwrap(), PullPolicy::Never);
        assert!(PullPolicy::parse("sometimes").is_err());
    }
}

/// A manifest fetched by reference with its config blob, neither stored: a kiln cache ref.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The manifest.
    pub manifest: ImageManifest,
    /// Its digest.
    pub digest: Digest,
    /// The config blob's bytes (verified against the manifest).
    pub config: Vec<u8>,
}

/// Fetches the image manifest `r` names and its config, which must be of media type
/// `config_type` and at most `max_config` bytes. [`RegistryError::NotFound`] when the tag does
/// not exist.
pub fn fetch_artifact(
    client: &Client,
    store: &Store,
    r: &ImageRef,
    config_type: &str,
    max_config: u64,
) -> Result<Artifact, RegistryError> {
    let ep = Endpoint {
        host: super::registry_host(r.domain()).to_owned(),
        path: r.path().to_owned(),
    };
    let session = client.session(&ep.host, r.domain())?;
    let scopes = vec![format!("repository:{}:pull", ep.path)];
    let reference = reference_of(r);
    let m = fetch_manifest(&session, store, &ep, &scopes, &reference, r.digest())?;
    if !media_types::is_manifest(&m.media_type) || media_types::is_index(&m.media_type) {
        return Err(RegistryError::Protocol {
            what: r.familiar(),
            why: format!("{:?} is not an image manifest", m.media_type),
        });
    }
    let manifest: ImageManifest = parse_json(&m.bytes, "manifest")?;
    if manifest.config.media_type != config_type {
        return Err(RegistryError::Protocol {
            what: r.familiar(),
            why: format!(
                "its config is {:?}, not {config_type:?}",
                manifest.config.media_type
            ),
        });
    }
    if manifest.config.size > max_config {
        return Err(RegistryError::TooLarge {
            what: format!("config {}", manifest.config.digest),
            limit: max_config,
        });
    }
    let config = fetch_small_blob(&session, &ep, &scopes, &manifest.config, max_config)?;
    Ok(Artifact {
        manifest,
        digest: m.digest,
        config,
    })
}

/// Downloads the blobs `blobs` of `r`'s repository that the store lacks, three at a time,
/// each kept only if it hashes to its digest; refused when they would add more than
/// `max_bytes` to the store.
pub fn fetch_blobs(
    client: &Client,
    store: &Store,
    r: &ImageRef,
    blobs: &[Descriptor],
    max_bytes: Option<u64>,
    events: &(dyn Fn(Transfer) + Sync),
) -> Result<(), RegistryError> {
    check_room(store, blobs, max_bytes, r)?;
    let ep = Endpoint {
        host: super::registry_host(r.domain()).to_owned(),
        path: r.path().to_owned(),
    };
    let session = client.session(&ep.host, r.domain())?;
    let scopes = vec![format!("repository:{}:pull", ep.path)];
    download_layers(
        &session,
        store,
        &ep,
        &scopes,
        blobs,
        events,
        &AtomicBool::new(false),
    )
}
