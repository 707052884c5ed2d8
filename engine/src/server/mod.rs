//! `kiln serve`: the part of the Docker Engine API that the docker CLI uses, for several
//! tenants at once.
//!
//! Each tenant has a store of its own (images, build cache, containers, logs), so one tenant
//! can neither see nor name another's; a request names its tenant with a bearer token. Without
//! a config file there is one tenant, the default store, reachable only through a 0660 unix
//! socket (the Docker API is root-equivalent for whoever may connect).
//!
//! The engine is synchronous: builds run on blocking threads and stream their progress back
//! through channels; containers run under a supervising thread each, whose output goes to the
//! log and to the clients attached to it.

mod build;
mod config;
mod conn;
mod containers;
mod farm;
mod http;
mod images;
mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

pub use config::{ConfigError, Quotas, ServerConfig, ServerLimits, TenantConfig, TenantRegistry};
use http::{ApiError, Resp};

use crate::build::Cancel;
use crate::container::Containers;
use crate::sandbox::Sandbox;
use crate::store::Store;

/// The API version kiln speaks, and the oldest it accepts.
pub const API_VERSION: &str = "1.43";
const MIN_API_VERSION: (u32, u32) = (1, 24);

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket, created 0660.
    Unix(PathBuf),
    /// A TCP address (loopback unless the operator means otherwise).
    Tcp(String),
}

impl Listen {
    /// `unix:///path` or `tcp://host:port`.
    pub fn parse(s: &str) -> Result<Listen, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            if p.is_empty() {
                return Err(format!("{s}: a unix socket needs a path"));
            }
            Ok(Listen::Unix(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("tcp://") {
            if !a.contains(':') {
                return Err(format!("{s}: a TCP address needs a port"));
            }
            Ok(Listen::Tcp(a.to_owned()))
        } else {
            Err(format!(
                "{s}: listen addresses are unix:///PATH or tcp://HOST:PORT"
            ))
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Options that do not go together.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Setup(String),
    #[error("listen on {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
}

/// One tenant at run time.
pub(crate) struct Tenant {
    pub name: String,
    token: Option<String>,
    pub quotas: Quotas,
    pub store: Store,
    pub containers: Containers,
    /// Builds running now: each holds a permit.
    pub builds: Arc<Semaphore>,
    /// Connections bound to the tenant: each holds a permit.
    pub connections: Arc<Semaphore>,
    /// How long the tenant's clients may leave output unread before they are dropped.
    pub client_stall: Duration,
    /// Held while a container is counted against the tenant's quotas and created or started.
    pub container_quota: Mutex<()>,
    /// Containers this server runs, with their attached clients.
    pub hubs: Mutex<HashMap<String, Arc<containers::Hub>>>,
    /// Whether host folders may be bind-mounted (only the implicit, local tenant).
    pub binds_allowed: bool,
    /// The store's size when last measured, and when.
    usage: Mutex<Option<(std::time::Instant, u64)>>,
    /// The tenant's executors: a configured tenant's compiled modules are cached in its own
    /// store (`kiln/wasm`), so no tenant sees, by timing, what another ran, or evicts it.
    pub sandbox: Arc<Sandbox>,
    /// The server's registry settings with the tenant's own.
    pub registry_settings: Arc<crate::registry::Settings>,
    /// Where the tenant's pulls and pushes may connect (`None`: anywhere, the local tenant).
    pub egress: Option<Arc<dyn crate::registry::Egress>>,
    /// Its build cache and push-on-tag in the shared registry.
    pub farm: config::FarmConfig,
    /// Only the WASI sandbox runs its builds' steps and its containers.
    pub wasi_only: bool,
}

/// The server's shared state.
pub(crate) struct Server {
    tenants: Vec<Arc<Tenant>>,
    /// Builds in progress, cancelled on shutdown.
    running: Mutex<Vec<(u64, Cancel)>>,
    next_build: std::sync::atomic::AtomicU64,
    /// The connection slots, pending and bound.
    conns: conn::Conns,
    limits: ServerLimits,
}

/// Stack of the server's threads (builds run on them).
const SERVER_THREAD_STACK: usize = 16 << 20;

/// Longest request head (line and headers) answered with anything but 431.
const MAX_HEAD: usize = 64 * 1024;
/// Read buffer of a connection: a head that does not fit closes the connection.
const MAX_BUFFER: usize = 256 * 1024;
/// How long a client may take to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server until SIGTERM or SIGINT: then it stops accepting, cancels running builds
/// and stops the containers it runs, and returns once they have ended.
pub fn serve(
    default_root: &std::path::Path,
    listen: &[Listen],
    config: Option<ServerConfig>,
    wasi_only: Option<bool>,
) -> Result<(), ServeError> {
    let implicit = config.is_none();
    if implicit && listen.iter().any(|l| matches!(l, Listen::Tcp(_))) {
        return Err(ServeError::Usage(
            "TCP listeners need a config file with tenants and tokens (--config); without one, kiln serves only a unix socket"
                .into(),
        ));
    }
    let mut limits = config
        .as_ref()
        .map(|c| c.limits.clone())
        .unwrap_or_default();
    if let Some(w) = wasi_only {
        limits.wasi_only = w;
    }
    let mut tenants = Vec::new();
    match &config {
        None => {
            let store = Store::open(default_root)
                .map_err(|e| ServeError::Setup(format!("open the store: {e}")))?;
            // The local tenant is kiln's own user: the user's registry settings, no egress
            // policy; credentials still come only with each request.
            let settings = match crate::registry::Settings::default_path() {
                Some(p) => crate::registry::Settings::load(&p)
                    .map_err(|e| ServeError::Setup(e.to_string()))?,
                None => crate::registry::Settings::default(),
            };
            tenants.push(make_tenant(
                "default".into(),
                None,
                Quotas::default(),
                store,
                true,
                &limits,
                (Arc::new(settings), None, config::FarmConfig::default()),
            )?);
        }
        Some(cfg) => {
            let base = cfg
                .root
                .clone()
                .unwrap_or_else(|| default_root.join("tenants"));
            for t in &cfg.tenants {
                let store = Store::open(&base.join(&t.name)).map_err(|e| {
                    ServeError::Setup(format!("open tenant {}'s store: {e}", t.name))
                })?;
                let mut entries = cfg.registries.clone();
                entries.extend(t.registry.entries.iter().cloned());
                let settings = crate::registry::Settings::from_entries(entries)
                    .map_err(|e| ServeError::Setup(format!("tenant {}: {e}", t.name)))?;
                let egress = t.registry.allow.clone().map(|a| {
                    Arc::new(crate::registry::egress::AllowList::new(a))
                        as Arc<dyn crate::registry::Egress>
                });
                tenants.push(make_tenant(
                    t.name.clone(),
                    Some(t.token.clone()),
                    t.quotas.clone(),
                    store,
                    false,
                    &limits,
                    (Arc::new(settings), egress, t.farm.clone()),
                )?);
            }
        }
    }
    let listen: Vec<Listen> = if listen.is_empty() {
        vec![Listen::Unix(default_root.join("kiln.sock"))]
    } else {
        listen.to_vec()
    };
    let bound = tenants
        .iter()
        .map(|t| t.quotas.connections)
        .fold(0usize, usize::saturating_add);
    let server = Arc::new(Server {
        tenants,
        running: Mutex::new(Vec::new()),
        next_build: std::sync::atomic::AtomicU64::new(0),
        conns: conn::Conns::new(limits.pending_connections, bound),
        limits,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-serve")
        // Builds run on these threads. COPY still recurses once per level of the tree it
        // copies, and a layer's tree is at most 2,048 levels deep (4,096-byte names): 16 MiB
        // leaves each level 8 KiB. The stack is reserved, not committed, until it is used.
        .thread_stack_size(SERVER_THREAD_STACK)
        .build()
        .map_err(|e| ServeError::Setup(format!("start the runtime: {e}")))?;
    rt.block_on(run(server, listen))
}

impl Tenant {
    /// A registry client for one request: the tenant's settings and egress policy, and only
    /// the credentials the request carried.
    pub(crate) fn registry_client(
        &self,
        creds: crate::registry::StaticCredentials,
    ) -> crate::registry::Client {
        crate::registry::Client::new(
            self.registry_settings.clone(),
            Arc::new(farm::FarmCredentials {
                request: creds,
                file: self.farm.registry_auth.clone(),
            }),
            self.egress.clone(),
        )
    }
}

/// The network a build or container gets.
pub(crate) enum NetworkPolicy {
    /// Loopback only.
    None,
    /// The host's network.
    Host,
}

impl Tenant {
    /// The network for docker's `networkmode`/`NetworkMode` value: `host` only when the tenant
    /// is allowed it; docker's default modes (`default`, `bridge`) get loopback only, as kiln
    /// has no bridge.
    pub(crate) fn network(&self, mode: &str) -> Result<NetworkPolicy, ApiError> {
        match mode {
            "" | "default" | "none" | "bridge" => Ok(NetworkPolicy::None),
            "host" if self.quotas.host_network => Ok(NetworkPolicy::Host),
            "host" => Err(ApiError::forbidden(format!(
                "tenant {} may not use the host network",
                self.name
            ))),
            other => Err(ApiError::bad_request(format!(
                "network mode {other:?} is not supported: use none or host"
            ))),
        }
    }
}

impl Server {
    /// Registers a running build; returns its number for [`Server::remove_build`].
    fn add_build(&self, cancel: Cancel) -> u64 {
        let id = self
            .next_build
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut b) = self.running.lock() {
            b.push((id, cancel));
        }
        id
    }

    fn remove_build(&self, id: u64) {
        if let Ok(mut b) = self.running.lock() {
            b.retain(|(i, _)| *i != id);
        }
    }
}

/// RUN steps write at most this much when the tenant has no store quota.
const DEFAULT_STEP_DISK: u64 = 10 << 30;

/// How long a measured store size is trusted: walking a large store for every request would
/// cost more than the quota's slack (each RUN step is also held to the room left).
const USAGE_FRESH: Duration = Duration::from_secs(2);

/// What the tenant's store may still take: refuses with 507 when it is full.
pub(crate) async fn store_room(tenant: &Arc<Tenant>) -> Result<u64, ApiError> {
    let Some(max) = tenant.quotas.store else {
        return Ok(DEFAULT_STEP_DISK);
    };
    let fresh = tenant
        .usage
        .lock()
        .ok()
        .and_then(|u| *u)
        .filter(|(at, _)| at.elapsed() < USAGE_FRESH)
        .map(|(_, used)| used);
    let used = match fresh {
        Some(u) => u,
        None => {
            let root = tenant.store.root().to_path_buf();
            let used = http::blocking(move || disk_usage(&root)).await?;
            if let Ok(mut u) = tenant.usage.lock() {
                *u = Some((std::time::Instant::now(), used));
            }
            used
        }
    };
    if used >= max {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "tenant {}'s store holds {used} bytes, its quota is {max}: remove images first",
                tenant.name
            ),
        ));
    }
    Ok((max - used).min(DEFAULT_STEP_DISK))
}

/// Bytes the files under `root` take on disk (each inode once), not following symlinks. The
/// walk is fd-relative and iterative: no depth or name length hides a file from the quota. A
/// tree that cannot be walked whole counts as full (`u64::MAX`): the quota fails closed.
fn disk_usage(root: &std::path::Path) -> u64 {
    let Ok(dir) = rustix::fs::open(root, crate::fsx::DIR_FLAGS, rustix::fs::Mode::empty()) else {
        return u64::MAX;
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let walked = crate::fsx::walk_tree(
        std::os::fd::AsFd::as_fd(&dir),
        |_, _, st| {
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                return Ok(true);
            }
            if seen.insert((st.st_dev, st.st_ino)) {
                total = total.saturating_add(u64::try_from(st.st_blocks).unwrap_or(0) * 512);
            }
            Ok(false)
        },
        |_, _| Ok(()),
    );
    match walked {
        Ok(()) => total,
        Err(_) => u64::MAX,
    }
}

/// A tenant's registry settings, egress policy, and what it keeps in its registry.
type RegistryAccess = (
    Arc<crate::registry::Settings>,
    Option<Arc<dyn crate::registry::Egress>>,
    config::FarmConfig,
);

fn make_tenant(
    name: String,
    token: Option<String>,
    quotas: Quotas,
    store: Store,
    binds_allowed: bool,
    limits: &ServerLimits,
    (registry_settings, egress, farm): RegistryAccess,
) -> Result<Arc<Tenant>, ServeError> {
    let containers = Containers::new(&store)
        .map_err(|e| ServeError::Setup(format!("open tenant {name}'s containers: {e}")))?;
    // The implicit tenant is kiln's own user: it shares the CLI's cache.
    let sandbox = Arc::new(if token.is_some() {
        Sandbox::with_module_cache(Some(store.root().join("kiln/wasm")))
    } else {
        Sandbox::new()
    });
    Ok(Arc::new(Tenant {
        sandbox,
        builds: Arc::new(Semaphore::new(quotas.concurrent_builds.max(1))),
        connections: Arc::new(Semaphore::new(quotas.connections.max(1))),
        client_stall: limits.client_stall,
        container_quota: Mutex::new(()),
        name,
        token,
        quotas,
        store,
        containers,
        hubs: Mutex::new(HashMap::new()),
        binds_allowed,
        usage: Mutex::new(None),
        registry_settings,
        egress,
        farm,
        wasi_only: limits.wasi_only,
    }))
}

async fn run(server: Arc<Server>, listen: Vec<Listen>) -> Result<(), ServeError> {
    let mut tasks = Vec::new();
    let mut sockets = Vec::new();
    for l in &listen {
        match l {
            Listen::Unix(path) => {
                let listener = bind_unix(path)?;
                sockets.push(path.clone());
                eprintln!("kiln serve: listening on unix://{}", path.display());
                let srv = server.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        let Ok((conn, _)) = listener.accept().await else {
                            continue;
                        };
                        accept(srv.clone(), conn);
                    }
                }));
            }
            Listen::Tcp(addr) => {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServeError::Listen {
                            what: format!("tcp://{addr}"),
                            source,
                        })?;
                eprintln!("kiln serve: listening on tcp://{addr}");
                let srv = server.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        let Ok((conn, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = conn.set_nodelay(true);
                        accept(srv.clone(), conn);
                    }
                }));
            }
        }
    }
    shutdown_signal().await;
    eprintln!("kiln serve: shutting down");
    for t in &tasks {
        t.abort();
    }
    for s in &sockets {
        let _ = std::fs::remove_file(s);
    }
    drain(&server).await;
    Ok(())
}

/// Cancels the builds and stops the containers this server runs, and waits for them.
async fn drain(server: &Server) {
    if let Ok(builds) = server.running.lock() {
        for (_, c) in builds.iter() {
            c.cancel();
        }
    }
    for t in &server.tenants {
        let hubs: Vec<Arc<containers::Hub>> = t
            .hubs
            .lock()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default();
        for h in hubs {
            h.signal(libc::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let builds = server.running.lock().map_or(0, |b| b.len());
        let containers: usize = server
            .tenants
            .iter()
            .map(|t| {
                t.hubs
                    .lock()
                    .map_or(0, |h| h.values().filter(|h| h.is_running()).count())
            })
            .sum();
        if builds == 0 && containers == 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            for t in &server.tenants {
                if let Ok(h) = t.hubs.lock() {
                    for hub in h.values() {
                        hub.signal(libc::SIGKILL);
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline + Duration::from_secs(5) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Binds a unix socket at `path` with mode 0660 from the start: it is made in a private
/// folder beside `path`, given its mode there and renamed into place.
fn bind_unix(path: &std::path::Path) -> Result<UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| ServeError::Listen {
        what: format!("unix://{}", path.display()),
        source,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(parent).map_err(err)?;
    let private = tempfile::Builder::new()
        .prefix(".kiln-sock-")
        .tempdir_in(parent)
        .map_err(err)?;
    let tmp = private.path().join("s");
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A socket left by a server that died: take its place unless one answers there.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server is listening there",
                )));
            }
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )))
        }
        Err(_) => {}
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(listener)
}

use std::os::unix::fs::FileTypeExt as _;

/// Serves one connection, if the server has room for it ([`conn::Conns::admit`]).
fn accept<IO>(server: Arc<Server>, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(conn) = server.conns.admit() else {
        return;
    };
    tokio::spawn(async move {
        let io = conn::Watched::new(io, server.limits.client_stall);
        let srv = server.clone();
        let c = conn.clone();
        let service = service_fn(move |req| {
            let srv = srv.clone();
            let c = c.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(srv, &c, req).await) }
        });
        let serving = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_BUFFER)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::select! {
            _ = serving => {}
            () = conn.evicted() => {}
        }
    });
}

/// Adds the headers docker puts on every response.
fn decorate(mut resp: Resp) -> Resp {
    let h = resp.headers_mut();
    h.insert(
        "Api-Version",
        hyper::header::HeaderValue::from_static(API_VERSION),
    );
    h.insert("Ostype", hyper::header::HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        hyper::header::HeaderValue::from_static(concat!(
            "kiln/",
            env!("CARGO_PKG_VERSION"),
            " (linux)"
        )),
    );
    resp
}

async fn handle(server: Arc<Server>, conn: &Arc<conn::Conn>, req: Request<Incoming>) -> Resp {
    let head: usize = req.uri().to_string().len()
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > MAX_HEAD {
        return decorate(
            ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request head is larger than {MAX_HEAD} bytes"),
            )
            .response(),
        );
    }
    let resp = match authenticate(&server, &req).and_then(|t| conn.claim(&t).map(|()| t)) {
        // Refused: the connection closes after the answer, so it holds no slot.
        Err(e) => {
            let mut body = req.into_body();
            http::drain(&mut body).await;
            let mut r = e.response();
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            r
        }
        Ok(tenant) => match route(&server, &tenant, conn, req).await {
            Ok(r) => r,
            Err(e) => e.response(),
        },
    };
    decorate(resp)
}

/// The tenant whose token the request carries.
fn authenticate(server: &Server, req: &Request<Incoming>) -> Result<Arc<Tenant>, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    for t in &server.tenants {
        match (&t.token, given) {
            (None, _) => return Ok(t.clone()),
            (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()) => {
                return Ok(t.clone())
            }
            _ => {}
        }
    }
    Err(unauthorized(if given.is_some() {
        "the bearer token is not valid"
    } else {
        "this server needs \"Authorization: Bearer <token>\" (set it in HttpHeaders of the docker CLI's config.json)"
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let a = blake3::hash(a);
    let b = blake3::hash(b);
    a == b
}

/// Strips `/v1.NN` from the path, refusing versions kiln does not speak.
fn unversioned(path: &str) -> Result<&str, ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (ver, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let parsed = ver
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    let Some(v) = parsed else {
        return Ok(path);
    };
    let max = API_VERSION
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .unwrap_or((1, 43));
    if v > max {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if v < MIN_API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too old. Minimum supported API version is {}.{}, please upgrade your client to a newer version",
            MIN_API_VERSION.0, MIN_API_VERSION.1
        )));
    }
    Ok(if tail.is_empty() { "/" } else { tail })
}

async fn route(
    server: &Arc<Server>,
    tenant: &Arc<Tenant>,
    conn: &Arc<conn::Conn>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let path = unversioned(req.uri().path())?.to_owned();
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(http::percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(ping(&method)),
        (&Method::GET, ["version"]) => Ok(version()),
        (&Method::GET, ["info"]) => info(tenant),
        (&Method::POST, ["build"]) => build::build(server, tenant, req).await,
        (&Method::POST, ["build", "prune"]) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "build cache pruning is not supported by kiln serve",
        )),
        (&Method::GET, ["images", "json"]) => images::list(tenant, &req),
        (&Method::GET, ["images", "get"]) => images::save(tenant, &req, None),
        (&Method::POST, ["images", "load"]) => images::load(tenant, req).await,
        (&Method::POST, ["images", "create"]) => registry::create(tenant, req).await,
        (&Method::POST, ["auth"]) => registry::auth(tenant, req).await,
        (&Method::POST, ["images", name @ .., "push"]) if !name.is_empty() => {
            registry::push_image(tenant, &name.join("/"), req).await
        }
        (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            images::save(tenant, &req, Some(name.join("/")))
        }
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            images::inspect(tenant, &name.join("/"))
        }
        (&Method::GET, ["images", name @ .., "history"]) if !name.is_empty() => {
            images::history(tenant, &name.join("/"))
        }
        (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            images::tag(tenant, &req, &name.join("/")).await
        }
        (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            images::remove(tenant, &req, &name.join("/"))
        }
        (&Method::POST, ["containers", "create"]) => containers::create(tenant, req).await,
        (&Method::GET, ["containers", "json"]) => containers::list(tenant, &req),
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(tenant, id),
        (&Method::POST, ["containers", id, "start"]) => containers::start(tenant, id).await,
        (&Method::POST, ["containers", id, "attach"]) => {
            containers::attach(tenant, id, conn, req).await
        }
        (&Method::POST, ["containers", id, "wait"]) => containers::wait(tenant, id, &req),
        (&Method::POST, ["containers", id, "resize"]) => containers::resize(tenant, id, &req),
        (&Method::POST, ["containers", id, "stop"]) => containers::stop(tenant, id, &req).await,
        (&Method::POST, ["containers", id, "kill"]) => containers::kill(tenant, id, &req).await,
        (&Method::GET, ["containers", id, "logs"]) => containers::logs(tenant, id, &req),
        (&Method::DELETE, ["containers", id]) => containers::remove(tenant, id, &req).await,
        (&Method::POST, ["commit"]) => containers::commit(tenant, req).await,
        _ => Err(ApiError::not_found("page not found")),
    }
}

fn ping(method: &Method) -> Resp {
    let mut r = if method == Method::HEAD {
        http::empty(StatusCode::OK)
    } else {
        http::text(StatusCode::OK, "OK")
    };
    let h = r.headers_mut();
    for (k, v) in [
        ("Builder-Version", "1"),
        ("Docker-Experimental", "false"),
        ("Swarm", "inactive"),
        ("Cache-Control", "no-cache, no-store, must-revalidate"),
        ("Pragma", "no-cache"),
    ] {
        h.insert(k, hyper::header::HeaderValue::from_static(v));
    }
    r
}

fn kernel_version() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

fn version() -> Resp {
    let v = env!("CARGO_PKG_VERSION");
    http::json(
        StatusCode::OK,
        &serde_json::json!({
            "Platform": {"Name": "kiln"},
            "Components": [{
                "Name": "Engine",
                "Version": v,
                "Details": {
                    "ApiVersion": API_VERSION,
                    "MinAPIVersion": format!("{}.{}", MIN_API_VERSION.0, MIN_API_VERSION.1),
                    "Os": "linux",
                    "Arch": go_arch(),
                    "KernelVersion": kernel_version(),
                },
            }],
            "Version": v,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": format!("{}.{}", MIN_API_VERSION.0, MIN_API_VERSION.1),
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": kernel_version(),
            "BuildTime": "",
        }),
    )
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

fn info(tenant: &Tenant) -> Result<Resp, ApiError> {
    let list = tenant.containers.list()?;
    let running = list.iter().filter(|c| c.is_running()).count();
    let images = tenant.store.list_images()?.images.len();
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    Ok(http::json(
        StatusCode::OK,
        &serde_json::json!({
            "ID": format!("kiln-{}", tenant.name),
            "Containers": list.len(),
            "ContainersRunning": running,
            "ContainersPaused": 0,
            "ContainersStopped": list.len() - running,
            "Images": images,
            "Driver": "kiln",
            "DriverStatus": [],
            "Plugins": {"Volume": [], "Network": ["host", "none"], "Authorization": null, "Log": ["json-file"]},
            "MemoryLimit": true,
            "SwapLimit": false,
            "KernelVersion": kernel_version(),
            "OperatingSystem": "kiln",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "NCPU": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "Name": host,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "DockerRootDir": tenant.store.root(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "none",
            "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
            "SecurityOptions": ["name=seccomp,profile=kiln", "name=userns"],
            "Labels": [format!("kiln.tenant={}", tenant.name)],
            "Warnings": null,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes() {
        assert_eq!(unversioned("/v1.43/images/json").unwrap(), "/images/json");
        assert_eq!(unversioned("/v1.24/_ping").unwrap(), "/_ping");
        assert_eq!(unversioned("/_ping").unwrap(), "/_ping");
        assert!(unversioned("/v1.51/info")
            .unwrap_err()
            .message
            .contains("too new"));
        assert!(unversioned("/v1.12/info")
            .unwrap_err()
            .message
            .contains("too old"));
        assert_eq!(unversioned("/version").unwrap(), "/version");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            Listen::parse("unix:///run/kiln.sock").unwrap(),
            Listen::Unix("/run/kiln.sock".into())
        );
        assert_eq!(
            Listen::parse("tcp://127.0.0.1:2375").unwrap(),
            Listen::Tcp("127.0.0.1:2375".into())
        );
        assert!(Listen::parse("http://x").is_err());
        assert!(Listen::parse("tcp://localhost").is_err());
    }
}
