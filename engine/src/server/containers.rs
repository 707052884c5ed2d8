//! The container endpoints. A container the server starts runs under a supervising thread of
//! the server; its [`Hub`] carries its output to attached clients and their input to it.

use std::io::{BufRead, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::http::{self, ApiError, ChannelBody, Query, Resp};
use super::Tenant;
use crate::container::{Attach, Container, CreateOptions, Remote};
use crate::progress::Stream;
use crate::sandbox::RunControl;

/// A container's link to the clients attached to it.
pub struct Hub {
    /// The current run's signals and terminal.
    pub control: Mutex<RunControl>,
    running: AtomicBool,
    clients: Mutex<Vec<Client>>,
    /// The read end of the pipe an attached client feeds, for the next run.
    stdin: Mutex<Option<Arc<OwnedFd>>>,
    size: Mutex<Option<(u16, u16)>>,
    /// Runs that ended, and the last one's status.
    exits: AtomicU64,
    /// Told when output arrives and when a run ends: log followers and waiters wait on it.
    changed: tokio::sync::Notify,
    last_status: Mutex<i32>,
    /// How long output waits for a client whose queue is full before the client is dropped.
    stall: Duration,
    next_client: AtomicU64,
}

/// Output bytes queued for an attached client: past them, the container's output waits for
/// the client (as docker's does), at most [`Hub::stall`], and then the client is dropped.
const CLIENT_QUEUE_BYTES: usize = 256 << 10;

struct Client {
    id: u64,
    tx: Queue,
    stdout: bool,
    stderr: bool,
    /// Frames with docker's 8-byte stream header (no terminal).
    multiplexed: bool,
}

impl Hub {
    fn new(stall: Duration) -> Self {
        Hub {
            stall,
            next_client: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            control: Mutex::new(RunControl::new()),
            running: AtomicBool::new(false),
            clients: Mutex::new(Vec::new()),
            stdin: Mutex::new(None),
            size: Mutex::new(None),
            exits: AtomicU64::new(0),
            last_status: Mutex::new(0),
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub fn signal(&self, sig: i32) {
        if let Ok(c) = self.control.lock() {
            c.signal(sig);
        }
    }

    /// Sends a piece of output to the attached clients that want it. A client whose queue is
    /// full is waited for (the container's output waits with it) until [`Hub::stall`] has
    /// passed, then dropped; the clients' list is not locked meanwhile.
    fn broadcast(&self, stream: Stream, bytes: &[u8]) {
        self.changed.notify_waiters();
        let mut waiting = Vec::new();
        let mut gone = Vec::new();
        if let Ok(clients) = self.clients.lock() {
            for c in clients.iter() {
                let wanted = match stream {
                    Stream::Stdout => c.stdout,
                    Stream::Stderr => c.stderr,
                };
                if !wanted {
                    if c.tx.is_closed() {
                        gone.push(c.id);
                    }
                    continue;
                }
                let frame = if c.multiplexed {
                    frame(stream, bytes)
                } else {
                    Bytes::copy_from_slice(bytes)
                };
                match c.tx.try_send(&frame) {
                    Ok(()) => {}
                    Err(Refused::Full) => waiting.push((c.id, c.tx.clone(), frame)),
                    Err(Refused::Closed) => gone.push(c.id),
                }
            }
        }
        let deadline = std::time::Instant::now() + self.stall;
        let mut pause = Duration::from_millis(1);
        while !waiting.is_empty() {
            waiting.retain(|(id, tx, f)| match tx.try_send(f) {
                Ok(()) => false,
                Err(Refused::Full) => true,
                Err(Refused::Closed) => {
                    gone.push(*id);
                    false
                }
            });
            if waiting.is_empty() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                gone.extend(waiting.iter().map(|(id, _, _)| *id));
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        if !gone.is_empty() {
            if let Ok(mut clients) = self.clients.lock() {
                clients.retain(|c| !gone.contains(&c.id));
            }
        }
    }

    /// The run ended: attached clients get end of file.
    fn finish(&self, status: i32) {
        if let Ok(mut s) = self.last_status.lock() {
            *s = status;
        }
        if let Ok(mut c) = self.clients.lock() {
            c.clear();
        }
        if let Ok(mut s) = self.stdin.lock() {
            *s = None;
        }
        self.running.store(false, Ordering::SeqCst);
        self.exits.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// The sending side of an attached client's output: at most [`CLIENT_QUEUE_BYTES`] queued
/// (one chunk, however large, always fits an empty queue).
#[derive(Clone)]
struct Queue {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

/// Why a chunk was not queued.
enum Refused {
    Full,
    Closed,
}

impl Queue {
    fn new() -> (
        Queue,
        mpsc::UnboundedReceiver<Bytes>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (
            Queue {
                tx,
                queued: queued.clone(),
            },
            rx,
            queued,
        )
    }

    fn try_send(&self, chunk: &Bytes) -> Result<(), Refused> {
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        let before = self.queued.load(Ordering::SeqCst);
        if before > 0 && before + chunk.len() > CLIENT_QUEUE_BYTES {
            return Err(Refused::Full);
        }
        self.queued.fetch_add(chunk.len(), Ordering::SeqCst);
        self.tx.send(chunk.clone()).map_err(|_| Refused::Closed)
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// docker's multiplexed-stream frame: stream byte, three zeros, big-endian length, payload.
fn frame(stream: Stream, bytes: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + bytes.len());
    out.push(match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    });
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
    Bytes::from(out)
}

impl Tenant {
    fn hub(&self, id: &str) -> Arc<Hub> {
        let mut hubs = match self.hubs.lock() {
            Ok(h) => h,
            Err(p) => p.into_inner(),
        };
        hubs.entry(id.to_owned())
            .or_insert_with(|| Arc::new(Hub::new(self.client_stall)))
            .clone()
    }

    fn drop_hub(&self, id: &str) {
        let gone = self.hubs.lock().ok().and_then(|mut h| h.remove(id));
        if let Some(hub) = gone {
            hub.changed.notify_waiters();
        }
    }

    fn container(&self, key: &str) -> Result<Container, ApiError> {
        Ok(self.containers.get(key)?)
    }

    /// Marks `hub`'s container as running, within the tenant's `running_containers`.
    fn count_running(&self, hub: &Hub) -> Result<(), ApiError> {
        let _counting = self
            .container_quota
            .lock()
            .map_err(|_| ApiError::internal("container quota lock poisoned"))?;
        if let Some(max) = self.quotas.running_containers {
            let running = self
                .hubs
                .lock()
                .map_or(0, |h| h.values().filter(|h| h.is_running()).count());
            if running >= max {
                return Err(ApiError::forbidden(format!(
                    "tenant {} runs {running} containers, its limit is {max}: stop some first",
                    self.name
                )));
            }
        }
        hub.running.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The parts of docker's create body kiln uses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    hostname: String,
    user: String,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    image: String,
    working_dir: String,
    tty: bool,
    open_stdin: bool,
    host_config: HostConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfig {
    auto_remove: bool,
    network_mode: String,
    memory: i64,
    pids_limit: Option<i64>,
    binds: Option<Vec<String>>,
    // What kiln refuses (`Privileges`): read so that it is refused, not ignored.
    privileged: bool,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    devices: Option<Vec<DeviceMapping>>,
    security_opt: Option<Vec<String>>,
    pid_mode: String,
    ipc_mode: String,
    userns_mode: String,
    #[serde(rename = "UTSMode")]
    uts_mode: String,
    port_bindings: Option<serde_json::Map<String, serde_json::Value>>,
    publish_all_ports: bool,
    mounts: Option<Vec<MountSpec>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DeviceMapping {
    path_on_host: String,
}

/// One `HostConfig.Mounts` entry (docker's `--mount`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MountSpec {
    #[serde(rename = "Type")]
    kind: String,
    source: String,
    target: String,
}

impl HostConfig {
    /// What the request asks beyond kiln's defaults.
    fn privileges(&self) -> crate::container::Privileges {
        crate::container::Privileges {
            privileged: self.privileged,
            cap_add: self.cap_add.clone().unwrap_or_default(),
            cap_drop: self.cap_drop.clone().unwrap_or_default(),
            devices: self
                .devices
                .iter()
                .flatten()
                .map(|d| d.path_on_host.clone())
                .collect(),
            security_opt: self.security_opt.clone().unwrap_or_default(),
            namespaces: vec![
                ("pid", self.pid_mode.clone()),
                ("ipc", self.ipc_mode.clone()),
                ("userns", self.userns_mode.clone()),
                ("uts", self.uts_mode.clone()),
            ],
            publish: self
                .port_bindings
                .iter()
                .flat_map(|m| m.keys().cloned())
                .collect(),
            publish_all: self.publish_all_ports,
            mounts: self
                .mounts
                .iter()
                .flatten()
                .map(|m| format!("type={},source={},target={}", m.kind, m.source, m.target))
                .collect(),
        }
    }
}

/// Longest grace period a stop may ask for (`stop?t=`), in seconds.
const MAX_STOP_GRACE: u64 = 3600;

/// Largest JSON body accepted.
const MAX_JSON: usize = 1 << 20;

/// `POST /containers/create?name=`.
pub async fn create(tenant: &Arc<Tenant>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let name = q.get("name").filter(|n| !n.is_empty()).map(str::to_owned);
    let body = http::read_body(req.into_body(), MAX_JSON).await?;
    let b: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if b.image.is_empty() {
        return Err(ApiError::bad_request("no image given (Image)"));
    }
    let network = match tenant.network(&b.host_config.network_mode)? {
        super::NetworkPolicy::Host => "host",
        super::NetworkPolicy::None => "none",
    };
    let privileges = b.host_config.privileges();
    let host_mounts = b
        .host_config
        .mounts
        .iter()
        .flatten()
        .any(|m| m.kind == "bind");
    let binds = b.host_config.binds.unwrap_or_default();
    if (!binds.is_empty() || host_mounts) && !tenant.binds_allowed {
        return Err(ApiError::forbidden(
            "bind mounts of host folders are not allowed for tenants of a shared server",
        ));
    }
    let memory = match b.host_config.memory {
        m if m > 0 => (m as u64).min(tenant.quotas.step_memory),
        _ => tenant.quotas.step_memory,
    };
    // A container's processes count as a step's do: the tenant's `step_pids` at most.
    let max_pids = tenant.quotas.step_pids;
    let pids = match b.host_config.pids_limit {
        Some(p) if p > 0 => u32::try_from(p).unwrap_or(u32::MAX).min(max_pids),
        _ => max_pids,
    };
    // A tenant with a store quota: the container may write what the store has room for.
    let disk = match tenant.quotas.store {
        Some(_) => Some(super::store_room(tenant).await?),
        None => None,
    };
    let opts = CreateOptions {
        image: b.image.clone(),
        name,
        entrypoint: b.entrypoint,
        command: b.cmd.unwrap_or_default(),
        env: b.env.unwrap_or_default(),
        workdir: Some(b.working_dir).filter(|w| !w.is_empty()),
        user: Some(b.user).filter(|u| !u.is_empty()),
        hostname: Some(b.hostname).filter(|h| !h.is_empty()),
        network: network.to_owned(),
        tty: b.tty,
        open_stdin: b.open_stdin,
        auto_remove: b.host_config.auto_remove,
        memory,
        pids,
        binds,
        disk,
        log_limit: tenant.quotas.container_log,
        wasi_only: tenant.wasi_only,
        privileges,
    };
    let t = tenant.clone();
    let created = http::blocking(move || {
        let config = crate::container::make_config(&t.store, &opts).map_err(|e| match &e {
            crate::container::CreateError::NoImage { .. } => {
                ApiError::not_found(format!("No such image: {}", opts.image))
            }
            _ if e.is_user_error() => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        })?;
        let _counting = t
            .container_quota
            .lock()
            .map_err(|_| ApiError::internal("container quota lock poisoned"))?;
        if let Some(max) = t.quotas.containers {
            let have = t.containers.list()?.len();
            if have >= max {
                return Err(ApiError::forbidden(format!(
                    "tenant {} has {have} containers, its limit is {max}: remove some first (docker rm)",
                    t.name
                )));
            }
        }
        Ok::<_, ApiError>(t.containers.create(config)?)
    })
    .await??;
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "Id": created.config.id, "Warnings": [] }),
    ))
}

/// `GET /containers/json?all=`.
pub fn list(tenant: &Tenant, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let all = q.flag("all");
    let now = time::OffsetDateTime::now_utc();
    let mut list = tenant.containers.list()?;
    list.sort_by_key(|c| std::cmp::Reverse(c.config.created));
    let out: Vec<serde_json::Value> = list
        .iter()
        .filter(|c| all || c.is_running())
        .map(|c| {
            json!({
                "Id": c.config.id,
                "Names": [format!("/{}", c.config.name)],
                "Image": c.config.image,
                "ImageID": c.config.image_id.to_string(),
                "Command": std::iter::once(&c.config.path)
                    .chain(&c.config.args)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                "Created": c.config.created.unix_timestamp(),
                "Ports": [],
                "Labels": c.config.labels,
                "State": c.state.status.as_str(),
                "Status": crate::describe::status_text(c, now),
                "HostConfig": {"NetworkMode": c.config.network},
                "NetworkSettings": {"Networks": {}},
                "Mounts": [],
            })
        })
        .collect();
    Ok(http::json(StatusCode::OK, &out))
}

/// `GET /containers/{id}/json`.
pub fn inspect(tenant: &Tenant, id: &str) -> Result<Resp, ApiError> {
    let c = tenant.container(id)?;
    Ok(http::json(
        StatusCode::OK,
        &crate::describe::inspect_container(&c),
    ))
}

/// `POST /containers/{id}/start`: 204 once the program runs, 304 when it already does.
pub async fn start(tenant: &Arc<Tenant>, id: &str) -> Result<Resp, ApiError> {
    let c = tenant.container(id)?;
    if c.is_running() {
        return Ok(http::empty(StatusCode::NOT_MODIFIED));
    }
    let hub = tenant.hub(&c.config.id);
    tenant.count_running(&hub)?;
    let control = RunControl::new();
    if let Ok(mut slot) = hub.control.lock() {
        *slot = control.clone();
    }
    let weak = Arc::downgrade(&hub);
    let attach = Attach::Remote(Remote {
        output: Arc::new(move |stream, bytes| {
            if let Some(h) = weak.upgrade() {
                h.broadcast(stream, bytes);
            }
        }),
        stdin: hub.stdin.lock().ok().and_then(|mut s| s.take()),
        size: hub.size.lock().ok().and_then(|s| *s),
    });
    let before = c.state.started_at;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<Result<i32, String>>();
    let t = tenant.clone();
    let h = hub.clone();
    let key = c.config.id.clone();
    std::thread::Builder::new()
        .name("kiln-container".into())
        .spawn(move || {
            let mut c = c;
            let r = crate::container::supervise(
                &t.store,
                &t.containers,
                &t.sandbox,
                &mut c,
                &attach,
                &control,
                None,
            );
            drop(attach);
            let status = match &r {
                Ok(s) => *s,
                Err(_) => 126,
            };
            h.finish(status);
            if t.containers.get(&key).is_err() {
                t.drop_hub(&key);
            }
            let _ = done_tx.send(r.map_err(|e| e.to_string()));
        })
        .map_err(|e| {
            hub.running.store(false, Ordering::SeqCst);
            ApiError::internal(format!("start a thread: {e}"))
        })?;
    // Answer once the program runs (or could not start).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match done_rx.try_recv() {
            Ok(Err(e)) => return Err(ApiError::bad_request(e)),
            Ok(Ok(_)) => return Ok(http::empty(StatusCode::NO_CONTENT)),
            Err(_) => {}
        }
        match tenant.containers.get(id) {
            Ok(now) if now.state.started_at != before => {
                if now.state.status == crate::container::Status::Exited
                    && !now.state.error.is_empty()
                {
                    return Err(ApiError::bad_request(now.state.error));
                }
                return Ok(http::empty(StatusCode::NO_CONTENT));
            }
            Err(_) => return Ok(http::empty(StatusCode::NO_CONTENT)),
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ApiError::internal(
                "the container did not start within 30 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1`: hijacks the connection;
/// the program's output follows (multiplexed without a terminal, raw with one) and what the
/// client sends is its stdin.
pub async fn attach(
    tenant: &Arc<Tenant>,
    id: &str,
    conn: &Arc<super::conn::Conn>,
    mut req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let c = tenant.container(id)?;
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    if !upgrade {
        return Err(ApiError::bad_request(
            "attach needs a connection upgrade (Connection: Upgrade, Upgrade: tcp)",
        ));
    }
    let hub = tenant.hub(&c.config.id);
    let tty = c.config.tty;
    let (tx, mut rx, queued) = Queue::new();
    if let Ok(mut clients) = hub.clients.lock() {
        clients.push(Client {
            id: hub.next_client.fetch_add(1, Ordering::Relaxed),
            tx,
            stdout: q.flag("stdout"),
            stderr: q.flag("stderr"),
            multiplexed: !tty,
        });
    }
    let input = if q.flag("stdin") && c.config.open_stdin {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| ApiError::internal(format!("create a pipe: {e}")))?;
        if let Ok(mut s) = hub.stdin.lock() {
            *s = Some(Arc::new(r));
        }
        Some(w)
    } else {
        None
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The hijacked stream still counts against the tenant's connections.
    let conn = conn.clone();
    tokio::spawn(async move {
        let _conn = conn;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let (mut rd, mut wr) = tokio::io::split(io);
        let feeder = input.and_then(|w| {
            let mut pipe = tokio::net::unix::pipe::Sender::from_owned_fd(w).ok()?;
            Some(tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if pipe.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }))
        });
        while let Some(chunk) = rx.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            queued.fetch_sub(chunk.len(), Ordering::SeqCst);
            let _ = wr.flush().await;
        }
        let _ = wr.shutdown().await;
        if let Some(f) = feeder {
            f.abort();
        }
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("Content-Type", content_type)
        .header("Connection", "Upgrade")
        .header("Upgrade", "tcp")
        .body(http::empty_body())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`: answers when the
/// condition holds, with the exit status.
pub fn wait(tenant: &Arc<Tenant>, id: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let condition = q.get("condition").unwrap_or("not-running").to_owned();
    if !matches!(
        condition.as_str(),
        "" | "not-running" | "next-exit" | "removed"
    ) {
        return Err(ApiError::bad_request(format!(
            "invalid condition: {condition:?}"
        )));
    }
    let c = tenant.container(id)?;
    let hub = tenant.hub(&c.config.id);
    let exits = hub.exits.load(Ordering::SeqCst);
    let finished = c.state.finished_at;
    let key = c.config.id.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let t = tenant.clone();
    tokio::spawn(async move {
        let status = loop {
            let changed = hub.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let ended_here = hub.exits.load(Ordering::SeqCst) > exits;
            let (t2, k) = (t.clone(), key.clone());
            let Ok(state) = http::blocking(move || t2.containers.get(&k)).await else {
                return;
            };
            match state {
                // Removed (`--rm`) before the run's end was told to the hub: wait for it.
                Err(_) if hub.is_running() => {}
                Err(_) => break hub.last_status.lock().map_or(0, |s| *s),
                Ok(now) => {
                    let stopped = !now.is_running() && !hub.is_running();
                    let done = match condition.as_str() {
                        "next-exit" => stopped && (ended_here || now.state.finished_at != finished),
                        "removed" => false,
                        _ => stopped,
                    };
                    if done {
                        break now.state.exit_code;
                    }
                }
            }
            // The hub tells of a run's end; a second's poll covers a container this server
            // does not run.
            tokio::select! {
                () = &mut changed => {}
                () = tx.closed() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        let _ = tx
            .send(http::message_line(
                &json!({ "StatusCode": status, "Error": null }),
            ))
            .await;
    });
    Ok(http::stream(
        "application/json",
        ChannelBody::boxed_body(rx, None),
    ))
}

/// `POST /containers/{id}/resize?h=&w=`.
pub fn resize(tenant: &Arc<Tenant>, id: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let c = tenant.container(id)?;
    let h: u16 = q.number("h")?.unwrap_or(0);
    let w: u16 = q.number("w")?.unwrap_or(0);
    let hub = tenant.hub(&c.config.id);
    if let Ok(mut s) = hub.size.lock() {
        *s = Some((h, w));
    }
    if let Ok(control) = hub.control.lock() {
        control.resize(h, w);
    }
    Ok(http::empty(StatusCode::OK))
}

fn signal_param(q: &Query, default: &str) -> Result<i32, ApiError> {
    let s = q.get("signal").filter(|s| !s.is_empty()).unwrap_or(default);
    crate::container::parse_signal(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `POST /containers/{id}/stop?t=&signal=`: the stop signal, then SIGKILL after `t` seconds.
pub async fn stop(
    tenant: &Arc<Tenant>,
    id: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let c = tenant.container(id)?;
    if !c.is_running() {
        return Ok(http::empty(StatusCode::NOT_MODIFIED));
    }
    let default = if c.config.stop_signal.is_empty() {
        "TERM"
    } else {
        c.config.stop_signal.as_str()
    };
    let first = signal_param(&q, default)?;
    // Each stop holds a thread for its grace period: a tenant may not ask for days.
    let grace: i64 = q.number("t")?.unwrap_or(10);
    let grace = u64::try_from(grace)
        .ok()
        .filter(|g| *g <= MAX_STOP_GRACE)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "t={grace} is out of range: a stop waits 0 to {MAX_STOP_GRACE} seconds"
            ))
        })?;
    let grace = Duration::from_secs(grace);
    let t = tenant.clone();
    http::blocking(move || stop_container(&t.containers, &c, first, grace)).await?;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// Sends `first` and waits up to `grace` for the container to stop; then SIGKILL, and a wait
/// for that.
fn stop_container(
    containers: &crate::container::Containers,
    c: &Container,
    first: i32,
    grace: Duration,
) {
    let _ = c.signal(first);
    if !crate::container::wait_stopped(containers, &c.config.id, grace) && first != libc::SIGKILL {
        let _ = c.signal(libc::SIGKILL);
        crate::container::wait_stopped(containers, &c.config.id, Duration::from_secs(30));
    }
}

/// `POST /containers/{id}/kill?signal=`: with SIGKILL (the default) it answers once the
/// container has stopped, as docker does.
pub async fn kill(
    tenant: &Arc<Tenant>,
    id: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let c = tenant.container(id)?;
    let sig = signal_param(&q, "KILL")?;
    if !c.is_running() {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.config.id
        )));
    }
    if sig == libc::SIGKILL {
        let t = tenant.clone();
        http::blocking(move || stop_container(&t.containers, &c, sig, Duration::from_secs(30)))
            .await?;
    } else {
        c.signal(sig)?;
    }
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// `DELETE /containers/{id}?force=`.
pub async fn remove(
    tenant: &Arc<Tenant>,
    id: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let c = tenant.container(id)?;
    let force = q.flag("force");
    if c.is_supervised() && !force {
        return Err(ApiError::conflict(format!(
            "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
            c.config.id
        )));
    }
    let t = tenant.clone();
    http::blocking(move || {
        if c.is_supervised() {
            stop_container(&t.containers, &c, libc::SIGKILL, Duration::from_secs(30));
        }
        t.containers.remove(&c)?;
        t.drop_hub(&c.config.id);
        Ok::<_, ApiError>(())
    })
    .await??;
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// One record of a container's json-file log.
#[derive(Deserialize)]
struct LogRecord {
    log: String,
    stream: String,
    time: String,
}

/// `GET /containers/{id}/logs?stdout=&stderr=&follow=&tail=&timestamps=`.
pub fn logs(tenant: &Arc<Tenant>, id: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let c = tenant.container(id)?;
    let (stdout, stderr) = (q.flag("stdout"), q.flag("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request("you must choose at least one stream"));
    }
    let follow = q.flag("follow");
    let timestamps = q.flag("timestamps");
    let tail: Option<usize> = match q.get("tail").unwrap_or("all") {
        "all" | "" | "-1" => None,
        n => Some(
            n.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid tail value {n:?}")))?,
        ),
    };
    let tty = c.config.tty;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let hub = tenant.hub(&c.config.id);
    let t = tenant.clone();
    // An async task: a follower waits for the hub to tell of new output (or for a second)
    // rather than hold a blocking thread, and reads the log in batches off the async threads.
    tokio::spawn(async move {
        let encode = |rec: LogRecord| -> Option<Bytes> {
            let stream = if rec.stream == "stderr" {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            if (stream == Stream::Stdout && !stdout) || (stream == Stream::Stderr && !stderr) {
                return None;
            }
            let text = if timestamps {
                format!("{} {}", rec.time, rec.log)
            } else {
                rec.log
            };
            Some(if tty {
                Bytes::from(text.into_bytes())
            } else {
                frame(stream, text.as_bytes())
            })
        };
        let path = c.log_path();
        let Ok(Some((file, pos, records))) = http::blocking(move || {
            let mut file = std::fs::File::open(path).ok()?;
            let mut pos = 0u64;
            let mut records = Vec::new();
            read_records(&mut file, &mut pos, |r| {
                records.push(r);
                true
            });
            Some((file, pos, records))
        })
        .await
        else {
            return;
        };
        let skip = tail.map_or(0, |n| records.len().saturating_sub(n));
        for chunk in records.into_iter().skip(skip).filter_map(encode) {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut at = Some((file, pos));
        let mut idle = 0u32;
        loop {
            let changed = hub.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some((mut file, mut pos)) = at.take() else {
                return;
            };
            let Ok((file, pos, batch)) = http::blocking(move || {
                let mut batch = Vec::new();
                read_records(&mut file, &mut pos, |r| {
                    batch.push(r);
                    batch.len() < 256
                });
                (file, pos, batch)
            })
            .await
            else {
                return;
            };
            at = Some((file, pos));
            let progressed = !batch.is_empty();
            for chunk in batch.into_iter().filter_map(encode) {
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
            if progressed {
                idle = 0;
                continue;
            }
            // The run ended: what it wrote is all read. A container this server does not
            // run (one the CLI started) is asked about every few seconds.
            idle += 1;
            if !hub.is_running() && (hub.exits.load(Ordering::SeqCst) > 0 || idle % 4 == 0) {
                let key = c.config.id.clone();
                let t = t.clone();
                let running = http::blocking(move || {
                    t.containers.get(&key).is_ok_and(|now| now.is_running())
                })
                .await
                .unwrap_or(false);
                if !running {
                    return;
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = tx.closed() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(http::stream(
        content_type,
        ChannelBody::boxed_body(rx, None),
    ))
}

/// Reads the complete records after `pos`; returns whether there were any.
fn read_records(
    file: &mut std::fs::File,
    pos: &mut u64,
    mut each: impl FnMut(LogRecord) -> bool,
) -> bool {
    if file.seek(SeekFrom::Start(*pos)).is_err() {
        return false;
    }
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    let mut any = false;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => {
                *pos += n as u64;
                any = true;
                if let Ok(rec) = serde_json::from_str::<LogRecord>(&line) {
                    if !each(rec) {
                        return any;
                    }
                }
            }
            _ => return any,
        }
    }
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`.
pub async fn commit(tenant: &Arc<Tenant>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let key = q
        .get("container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("no container given (container=)"))?
        .to_owned();
    let c = tenant.container(&key)?;
    let tag = match q.get("repo").filter(|r| !r.is_empty()) {
        Some(repo) => {
            let tag = q.get("tag").filter(|t| !t.is_empty()).unwrap_or("latest");
            Some(crate::reference::ImageRef::parse(&format!("{repo}:{tag}"))?)
        }
        None => None,
    };
    let changes: Vec<String> = q
        .all("changes")
        .into_iter()
        .flat_map(|c| c.lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let comment = q
        .get("comment")
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let author = q.get("author").filter(|a| !a.is_empty()).map(str::to_owned);
    let t = tenant.clone();
    let id = http::blocking(move || {
        let _lease = t
            .store
            .lease()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let (id, manifest) = crate::container::commit(
            &t.store,
            &c,
            &crate::container::CommitOptions {
                changes: &changes,
                message: comment.as_deref(),
                author: author.as_deref(),
                epoch: None,
            },
        )
        .map_err(|e| {
            if e.is_user_error() {
                ApiError::bad_request(e.to_string())
            } else {
                ApiError::internal(e.to_string())
            }
        })?;
        let tags: Vec<_> = tag.into_iter().collect();
        t.store.add_image(&manifest, &tags)?;
        Ok::<_, ApiError>(id)
    })
    .await??;
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "Id": id.to_string() }),
    ))
}
