//! `POST /build`: docker's classic builder API. The context arrives as a tar (or compressed
//! tar, or a bare Dockerfile); progress leaves as docker's NDJSON `jsonstream` messages.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::http::{self, message_line, ApiError, ChannelBody, Query, Resp};
use super::{Server, Tenant};
use crate::build::{BuildError, BuildRequest, Cancel, Network};
use crate::context::{Context, TarLimits};
use crate::dockerfile::scope::BuildArgs;
use crate::progress::{ProgressEvent, ProgressSink};
use crate::reference::ImageRef;

/// Largest Dockerfile read.
const MAX_DOCKERFILE: u64 = 16 << 20;
/// Most open files a tenant's `--ulimit nofile` may give a RUN process.
const MAX_STEP_FILES: u32 = 65_536;
/// How often an idle build stream sends a blank line (it is how a client that went away is
/// noticed: the write fails).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// What the query string asks for.
struct Params {
    tags: Vec<ImageRef>,
    dockerfile: String,
    build_args: BuildArgs,
    labels: BTreeMap<String, String>,
    target: Option<String>,
    no_cache: bool,
    quiet: bool,
    network: Network,
    memory: u64,
    pull: crate::registry::PullPolicy,
    /// `extrahosts`: `/etc/hosts` lines for RUN steps.
    extra_hosts: Vec<String>,
    /// `shmsize` (0: the default).
    shm_size: u64,
    /// `ulimits`, applied to the step limits.
    ulimits: Vec<String>,
    /// `platform` (docker build --platform).
    platform: Option<crate::registry::PlatformSpec>,
    /// The caches the build reads and writes.
    caches: (
        Vec<crate::build::remote_cache::CacheLocation>,
        Vec<crate::build::remote_cache::CacheExport>,
    ),
}

fn params(q: &Query, tenant: &Tenant) -> Result<Params, ApiError> {
    if q.get("remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::bad_request(
            "remote build contexts (git or URL) are not supported: send the context in the request body",
        ));
    }
    if q.get("version") == Some("2") {
        return Err(ApiError::bad_request(
            "kiln serve has no BuildKit session API: use the classic builder (DOCKER_BUILDKIT=0)",
        ));
    }
    let network = match tenant.network(q.get("networkmode").unwrap_or(""))? {
        super::NetworkPolicy::Host => Network::Host,
        super::NetworkPolicy::None => Network::None,
    };
    let mut tags = Vec::new();
    for t in q.all("t") {
        let r = ImageRef::parse(t)
            .map_err(|e| ApiError::bad_request(format!("invalid tag {t:?}: {e}")))?;
        if r.digest().is_some() {
            return Err(ApiError::bad_request(format!(
                "invalid tag {t:?}: a tag cannot contain a digest"
            )));
        }
        tags.push(r);
    }
    // A build arg without a value would come from the server's environment in docker; a
    // shared server keeps its environment to itself, so such an arg stays unset.
    let args: BTreeMap<String, Option<String>> = q.json("buildargs")?.unwrap_or_default();
    let entries: Vec<String> = args
        .into_iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k,
        })
        .collect();
    let build_args = BuildArgs::parse(
        entries.iter().map(String::as_str),
        &[][..] as &[(String, String)],
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let cache_from: Vec<String> = q.json("cachefrom")?.unwrap_or_default();
    let caches = tenant.build_caches(&tags, &cache_from)?;
    let memory = match q.number::<i64>("memory")? {
        Some(m) if m > 0 => (m as u64).min(tenant.quotas.step_memory),
        _ => tenant.quotas.step_memory,
    };
    Ok(Params {
        tags,
        dockerfile: q
            .get("dockerfile")
            .filter(|d| !d.is_empty())
            .unwrap_or("Dockerfile")
            .to_owned(),
        build_args,
        labels: q.json("labels")?.unwrap_or_default(),
        target: q.get("target").filter(|t| !t.is_empty()).map(str::to_owned),
        no_cache: q.flag("nocache"),
        quiet: q.flag("q"),
        network,
        memory,
        pull: if q.flag("pull") {
            crate::registry::PullPolicy::Always
        } else {
            crate::registry::PullPolicy::Missing
        },
        caches,
        extra_hosts: q
            .get("extrahosts")
            .unwrap_or("")
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| crate::build::host_line(h).map_err(ApiError::bad_request))
            .collect::<Result<_, _>>()?,
        shm_size: match q.number::<i64>("shmsize")? {
            Some(n) if n > 0 => n as u64,
            _ => 0,
        },
        ulimits: {
            #[derive(serde::Deserialize)]
            struct Ulimit {
                #[serde(rename = "Name")]
                name: String,
                #[serde(rename = "Soft")]
                soft: i64,
                #[serde(rename = "Hard")]
                hard: i64,
            }
            let list: Option<Vec<Ulimit>> = q.json("ulimits")?.flatten();
            let specs: Vec<String> = list
                .unwrap_or_default()
                .into_iter()
                .map(|u| format!("{}={}:{}", u.name, u.soft, u.hard))
                .collect();
            let mut check = crate::sandbox::Limits::default();
            for s in &specs {
                crate::build::apply_ulimit(&mut check, s).map_err(ApiError::bad_request)?;
            }
            specs
        },
        platform: match q.get("platform").filter(|p| !p.is_empty()) {
            Some(p) => {
                Some(crate::registry::PlatformSpec::parse(p).map_err(ApiError::bad_request)?)
            }
            None => None,
        },
    })
}

/// Checks a build against the tenant's quotas: its parameters, a build slot, and the room its
/// store has left.
async fn admit(
    q: &Query,
    tenant: &Arc<Tenant>,
) -> Result<(Params, tokio::sync::OwnedSemaphorePermit, u64), ApiError> {
    let p = params(q, tenant)?;
    let permit = tenant.builds.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "tenant {} already runs {} builds, its limit; try again when one ends",
                tenant.name, tenant.quotas.concurrent_builds
            ),
        )
    })?;
    let room = super::store_room(tenant).await?;
    Ok((p, permit, room))
}

/// Runs a build and streams its progress.
pub async fn build(
    server: &Arc<Server>,
    tenant: &Arc<Tenant>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let creds = super::registry::request_config(req.headers());
    let mut body = req.into_body();
    let creds = match creds {
        Ok(c) => c,
        Err(e) => {
            http::drain(&mut body).await;
            return Err(e);
        }
    };
    let (p, permit, remaining) = match admit(&q, tenant).await {
        Ok(a) => a,
        Err(e) => {
            // The client is still sending its context: read it away so it gets the answer.
            http::drain(&mut body).await;
            return Err(e);
        }
    };
    let (spool_dir, file) = http::spool_file(&tenant.store, "build context")?;
    let limit = tenant.quotas.context;
    let file = http::spool_body(body, file, limit, "build context").await?;
    let name = p.dockerfile.clone();
    let (context, dockerfile) = http::blocking(move || prepare(file, limit, &name)).await??;
    drop(spool_dir);

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let cancel = Cancel::new();
    let id = server.add_build(cancel.clone());
    let heartbeat = tx.downgrade();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(tx) = heartbeat.upgrade() else {
                return;
            };
            if tx.send(Bytes::from_static(b"\n")).await.is_err() {
                return;
            }
        }
    });
    let srv = server.clone();
    let tenant = tenant.clone();
    let token = cancel.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let client = tenant.registry_client(creds);
        run(
            &tenant,
            &p,
            &context,
            &dockerfile,
            remaining,
            &token,
            tx,
            &client,
        );
        srv.remove_build(id);
    });
    Ok(http::stream(
        "application/json",
        ChannelBody::boxed_body(rx, Some(Box::new(CancelOnDrop(cancel)))),
    ))
}

/// Cancels the build when the response body is dropped: the client went away.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Unpacks the spooled context; returns it with the Dockerfile's text.
fn prepare(
    mut file: std::fs::File,
    limit: u64,
    dockerfile: &str,
) -> Result<(Context, String), ApiError> {
    let bad = |e: &dyn std::fmt::Display| ApiError::bad_request(format!("build context: {e}"));
    file.rewind().map_err(|e| bad(&e))?;
    let mut head = [0u8; 512];
    let n = read_up_to(&mut file, &mut head).map_err(|e| bad(&e))?;
    file.rewind().map_err(|e| bad(&e))?;
    let limits = TarLimits {
        max_total_bytes: limit,
        ..TarLimits::default()
    };
    if !looks_like_archive(&head[..n]) && n > 0 {
        // A bare Dockerfile (`curl --data-binary @Dockerfile`): an empty context.
        let mut text = Vec::new();
        file.take(MAX_DOCKERFILE + 1)
            .read_to_end(&mut text)
            .map_err(|e| bad(&e))?;
        if text.len() as u64 > MAX_DOCKERFILE {
            return Err(bad(&"the Dockerfile is larger than 16 MiB"));
        }
        if text.contains(&0) || std::str::from_utf8(&text).is_err() {
            return Err(bad(
                &"the body is neither a tar archive (plain or compressed) nor a Dockerfile",
            ));
        }
        let ctx = Context::from_tar(&[0u8; 1024][..], &limits, &[]).map_err(|e| bad(&e))?;
        return Ok((ctx, String::from_utf8_lossy(&text).into_owned()));
    }
    let mut ctx =
        Context::from_tar(std::io::BufReader::new(file), &limits, &[]).map_err(|e| bad(&e))?;
    let text = ctx
        .read_build_file(dockerfile, MAX_DOCKERFILE)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "Cannot locate specified Dockerfile: {dockerfile} ({e})"
            ))
        })?;
    let base = std::path::Path::new(dockerfile)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_owned());
    let patterns = ctx
        .dockerignore_patterns(&base)
        .map_err(|e| bad(&format!(".dockerignore: {e}")))?;
    ctx.set_ignore_patterns(&patterns)
        .map_err(|e| bad(&format!(".dockerignore: {e}")))?;
    Ok((ctx, String::from_utf8_lossy(&text).into_owned()))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A tar (by its `ustar` magic) or a compressed stream (gzip, bzip2, xz, zstd).
fn looks_like_archive(head: &[u8]) -> bool {
    const MAGICS: [&[u8]; 4] = [
        &[0x1f, 0x8b],
        b"BZh",
        &[0xfd, b'7', b'z', b'X', b'Z', 0],
        &[0x28, 0xb5, 0x2f, 0xfd],
    ];
    head.get(257..262) == Some(b"ustar")
        || MAGICS.iter().any(|m| head.starts_with(m))
        || (head.len() >= 512 && head.iter().all(|b| *b == 0))
}

/// Renders engine events as docker's classic builder messages.
struct Sink {
    tx: mpsc::Sender<Bytes>,
    quiet: bool,
    /// The step whose container is shown as `Running in`.
    running: Mutex<Option<String>>,
}

impl Sink {
    fn send(&self, value: serde_json::Value) {
        let _ = self.tx.blocking_send(message_line(&value));
    }

    fn stream(&self, text: String) {
        self.send(json!({ "stream": text }));
    }
}

impl ProgressSink for Sink {
    fn emit(&self, ev: ProgressEvent) {
        if self.quiet {
            return;
        }
        match ev {
            ProgressEvent::StepStarted {
                index, total, text, ..
            } => self.stream(format!("Step {index}/{total} : {text}\n")),
            ProgressEvent::StepCached { from: None, .. } => {
                self.stream(" ---> Using cache\n".into())
            }
            ProgressEvent::StepCached { from: Some(f), .. } => {
                self.stream(format!(" ---> Using cache from {f}\n"))
            }
            ProgressEvent::CacheMiss { .. } => {}
            ProgressEvent::Exec { id, .. } => {
                self.stream(format!(" ---> Running in {id}\n"));
                if let Ok(mut r) = self.running.lock() {
                    *r = Some(id);
                }
            }
            ProgressEvent::StepOutput { text, .. } => self.stream(text),
            ProgressEvent::StepDone { image_id, .. } => {
                if let Some(id) = self.running.lock().ok().and_then(|mut r| r.take()) {
                    self.stream(format!(" ---> Removed intermediate container {id}\n"));
                }
                self.stream(match image_id {
                    Some(id) => format!(" ---> {}\n", short(&id)),
                    None => " ---> \n".into(),
                });
            }
            ProgressEvent::Triggers { count, .. } => self.stream(format!(
                "# Executing {count} build trigger{}\n",
                if count == 1 { "" } else { "s" }
            )),
            ProgressEvent::Warning { message } => self.stream(format!("[Warning] {message}\n")),
            ProgressEvent::Built { image_id } => {
                self.send(json!({ "aux": { "ID": image_id } }));
                self.stream(format!("Successfully built {}\n", short(&image_id)));
            }
            ProgressEvent::Tagged { name } => self.stream(format!("Successfully tagged {name}\n")),
            ProgressEvent::Transfer(t) => self.send(t.to_json()),
        }
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

#[allow(clippy::too_many_arguments)]
fn run(
    tenant: &Tenant,
    p: &Params,
    context: &Context,
    dockerfile: &str,
    room: u64,
    cancel: &Cancel,
    tx: mpsc::Sender<Bytes>,
    client: &crate::registry::Client,
) {
    let sink = Sink {
        tx,
        quiet: p.quiet,
        running: Mutex::new(None),
    };
    let base = std::path::Path::new(&p.dockerfile)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_owned());
    let q = &tenant.quotas;
    let req = BuildRequest {
        dockerfile,
        dockerfile_name: &base,
        context,
        slot_prefix: format!("serve\0{}", p.dockerfile),
        tags: p.tags.clone(),
        build_args: p.build_args.clone(),
        target: p.target.clone(),
        platform: p.platform.clone(),
        no_cache: p.no_cache,
        no_cache_filter: Vec::new(),
        extra_hosts: p.extra_hosts.clone(),
        network: p.network,
        labels: p.labels.clone(),
        epoch: None,
        stat_cache: None,
        compression: None,
        limits: crate::sandbox::Limits {
            timeout: q.step_timeout,
            memory: p.memory,
            pids: q.step_pids,
            files: 1024,
            disk: room,
            log: 64 << 20,
            shm: if p.shm_size > 0 {
                p.shm_size
            } else {
                crate::sandbox::Limits::default().shm
            },
        },
        isolation: if tenant.wasi_only {
            crate::sandbox::Isolation::Wasi
        } else {
            crate::sandbox::Isolation::Auto
        },
        sandbox: &tenant.sandbox,
        cancel: Some(cancel),
        pull: p.pull,
        registry: Some(client),
        pull_room: tenant.quotas.store.map(|_| room),
        cache_from: p.caches.0.clone(),
        cache_to: p.caches.1.clone(),
        // Push-on-tag: the layers go to the tenant's registry while the build goes on.
        push_as_made: p
            .tags
            .iter()
            .filter_map(|t| tenant.farm.pushed_name(t))
            .collect(),
    };
    // A tenant's --ulimit stays within its quotas.
    let mut req = req;
    for u in &p.ulimits {
        if crate::build::apply_ulimit(&mut req.limits, u).is_ok() {
            req.limits.pids = req.limits.pids.min(q.step_pids);
            req.limits.files = req.limits.files.min(MAX_STEP_FILES);
        }
    }
    let built = crate::build::build(&tenant.store, &req, &sink).and_then(|out| {
        let events = |t: crate::progress::Transfer| sink.emit(ProgressEvent::Transfer(t));
        tenant
            .push_tags(client, &p.tags, &events)
            .map(|()| out)
            .map_err(|e| BuildError::Step {
                file: base.clone(),
                line: 0,
                message: format!(
                    "built and tagged here, but the push to the tenant's registry failed: {e}"
                ),
            })
    });
    match built {
        Ok(out) => {
            if p.quiet {
                sink.stream(format!("{}\n", out.image_id));
            }
        }
        Err(e) => {
            let message = e.to_string();
            let detail = match &e {
                BuildError::Exit { code, .. } => json!({ "code": code, "message": message }),
                _ => json!({ "message": message }),
            };
            sink.send(json!({ "errorDetail": detail, "error": message }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_sniffing() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(looks_like_archive(&tar));
        assert!(looks_like_archive(&[0x1f, 0x8b, 8, 0]));
        assert!(looks_like_archive(&[0x28, 0xb5, 0x2f, 0xfd, 1]));
        assert!(!looks_like_archive(b"FROM scratch\nCOPY a /a\n"));
    }
}
