//! The image endpoints: list, inspect, history, tag, remove, save and load.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::http::{self, message_line, ApiError, ChannelBody, Query, Resp};
use super::Tenant;
use crate::archive::SaveFormat;
use crate::reference::ImageRef;
use crate::store::RemoveEvent;

fn unix(t: Option<time::OffsetDateTime>) -> i64 {
    t.map_or(0, time::OffsetDateTime::unix_timestamp)
}

/// `GET /images/json`: docker's image summaries; `filters` may hold `reference` and
/// `dangling`.
pub fn list(tenant: &Tenant, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let filters: BTreeMap<String, serde_json::Value> = q.json("filters")?.unwrap_or_default();
    let values = |key: &str| -> Vec<String> {
        match filters.get(key) {
            // {"reference": {"x": true}} (what the CLI sends) or {"reference": ["x"]}.
            Some(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let references = values("reference");
    let dangling = values("dangling");
    let list = tenant.store.list_images()?;
    let mut out = Vec::new();
    for img in &list.images {
        if !dangling.is_empty() {
            let want = dangling.iter().any(|d| d == "true" || d == "1");
            if img.tags.is_empty() != want {
                continue;
            }
        }
        let tags: Vec<String> = img.tags.iter().map(ImageRef::familiar).collect();
        if !references.is_empty() {
            let hit = img.tags.iter().any(|t| {
                let repo = t.familiar_name();
                let tag = t.tag().unwrap_or("<none>");
                references
                    .iter()
                    .any(|p| crate::describe::matches_reference(p, &repo, tag))
            });
            if !hit {
                continue;
            }
        }
        let labels = &img.config.config.labels;
        out.push(json!({
            "Containers": -1,
            "Created": unix(img.created()),
            "Id": img.id().to_string(),
            "Labels": if labels.is_empty() { serde_json::Value::Null } else { json!(labels) },
            "ParentId": "",
            "RepoDigests": img.repo_digests(),
            "RepoTags": tags,
            "SharedSize": -1,
            "Size": img.size(),
            "VirtualSize": img.size(),
        }));
    }
    Ok(http::json(StatusCode::OK, &out))
}

/// `GET /images/{name}/json`.
pub fn inspect(tenant: &Tenant, name: &str) -> Result<Resp, ApiError> {
    let img = tenant.store.resolve(name)?;
    Ok(http::json(StatusCode::OK, &crate::describe::inspect(&img)))
}

/// `GET /images/{name}/history`.
pub fn history(tenant: &Tenant, name: &str) -> Result<Resp, ApiError> {
    let img = tenant.store.resolve(name)?;
    let tags: Vec<String> = img.tags.iter().map(ImageRef::familiar).collect();
    let steps = crate::describe::steps(&img, true);
    let out: Vec<serde_json::Value> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "Id": s.id,
                "Created": unix(s.created),
                "CreatedBy": s.created_by,
                "Tags": if i == 0 && !tags.is_empty() { json!(tags) } else { serde_json::Value::Null },
                "Size": s.size,
                "Comment": s.comment,
            })
        })
        .collect();
    Ok(http::json(StatusCode::OK, &out))
}

/// `POST /images/{name}/tag?repo=&tag=`; with push-on-tag, the tag is also pushed to the
/// tenant's registry before the answer (a failure there fails the request, the tag stays).
pub async fn tag(
    tenant: &std::sync::Arc<Tenant>,
    req: &Request<Incoming>,
    name: &str,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let repo = q
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("repository name (repo) is required"))?;
    let tag = q.get("tag").filter(|t| !t.is_empty()).unwrap_or("latest");
    let target = ImageRef::parse(&format!("{repo}:{tag}"))?;
    tenant.store.tag(name, &target)?;
    if tenant.farm.push.is_some() {
        let t = tenant.clone();
        let creds = super::registry::request_config(req.headers())?;
        http::blocking(move || {
            let client = t.registry_client(creds);
            t.push_tags(&client, std::slice::from_ref(&target), &|_| {})
        })
        .await?
        .map_err(|e| {
            ApiError::internal(format!(
                "tagged here, but the push to the tenant's registry failed: {e}"
            ))
        })?;
    }
    Ok(http::empty(StatusCode::CREATED))
}

/// `DELETE /images/{name}?force=`.
pub fn remove(tenant: &Tenant, req: &Request<Incoming>, name: &str) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let force = q.flag("force");
    if !force {
        let containers = tenant.containers.list()?;
        if let Some(conflict) = crate::describe::in_use(&tenant.store, &containers, name) {
            return Err(ApiError::conflict(conflict));
        }
    }
    let events = tenant.store.remove(name, force)?;
    let out: Vec<serde_json::Value> = events
        .into_iter()
        .map(|e| match e {
            RemoveEvent::Untagged(r) => json!({ "Untagged": r.familiar() }),
            RemoveEvent::Deleted(id) => json!({ "Deleted": id.to_string() }),
        })
        .collect();
    Ok(http::json(StatusCode::OK, &out))
}

/// A `Write` that hands its bytes to an async response body.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /images/get?names=...` and `GET /images/{name}/get`: a docker archive (`docker save`).
pub fn save(
    tenant: &Arc<Tenant>,
    req: &Request<Incoming>,
    name: Option<String>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let names: Vec<String> = match name {
        Some(n) => vec![n],
        None => q.all("names").into_iter().map(str::to_owned).collect(),
    };
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names given (names=...)"));
    }
    // Unknown names fail before the stream starts, with a status the CLI shows.
    for n in &names {
        tenant.store.resolve(n)?;
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let tenant = tenant.clone();
    tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter { tx });
        // A failure mid-stream can only cut the archive short: the client sees a bad tar.
        let _ = crate::archive::save(
            &tenant.store,
            &names,
            SaveFormat::Docker,
            crate::layer::Compression::Gzip,
            out,
        );
    });
    Ok(http::stream(
        "application/x-tar",
        ChannelBody::boxed_body(rx, None),
    ))
}

/// `POST /images/load`: a docker or OCI archive; NDJSON `Loaded image: ...` lines.
pub async fn load(tenant: &Arc<Tenant>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    // `quiet` only silences progress, which kiln does not send: the `Loaded image` lines go out
    // either way, as docker's do.
    let mut body = req.into_body();
    let limit = match super::store_room(tenant).await {
        Ok(l) => l,
        Err(e) => {
            http::drain(&mut body).await;
            return Err(e);
        }
    };
    let (spool_dir, file) = http::spool_file(&tenant.store, "archive")?;
    let file = http::spool_body(body, file, limit, "archive").await?;
    let t = tenant.clone();
    let report = http::blocking(move || {
        use std::io::Seek;
        let mut file = file;
        file.rewind()?;
        let r = crate::archive::load(&t.store, std::io::BufReader::new(file));
        drop(spool_dir);
        Ok::<_, std::io::Error>(r)
    })
    .await?
    .map_err(|e| ApiError::internal(format!("read the archive: {e}")))?;
    let report = report.map_err(|e| {
        if e.is_user_error() {
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::internal(e.to_string())
        }
    })?;
    let mut body = Vec::new();
    for line in report.loaded {
        body.extend_from_slice(&message_line(&json!({ "stream": format!("{line}\n") })));
    }
    Ok(http::stream("application/json", http::full(body)))
}
