//! `kiln-server.toml`: the tenants, their tokens and their quotas.
//!
//! ```toml
//! root = "/var/lib/kiln/tenants"     # optional; default $KILN_ROOT/tenants
//! client_stall = "30s"   # a client that reads nothing of a response this long is dropped
//! pending_connections = 128  # connections not yet past their first request; the oldest goes
//! isolation = "auto"     # "wasi": builds and containers never run the native sandbox (a pod
//!                        # with no privileges at all can then host the server)
//!
//! [[tenants]]
//! name = "alice"
//! token = "a-long-random-secret"
//! concurrent_builds = 4      # builds at once (default 4)
//! store = "20g"              # bytes the tenant's store may hold (default: no limit)
//! context = "1g"             # largest build context, unpacked (default 1g)
//! step_timeout = "10m"       # wall-clock limit per RUN step
//! step_memory = "4g"         # memory per RUN step (compiling its modules included)
//! step_pids = 1024           # processes per RUN step
//! host_network = false       # whether builds and containers may use the host's network
//! container_log = "64m"      # log kept per container
//! connections = 256          # connections open at once (attached clients included)
//! containers = 256           # containers kept (running or not)
//! running_containers = 32    # containers running at once
//! registries = ["*"]         # registries builds and pulls may reach: `*` is any public
//!                            # address; a listed host[:port] may also be private or loopback
//!
//! cache = "registry.internal:5000/alice/cache"  # a registry build cache: every build reads
//!                            # and writes (mode=max) <cache>:<its first tag>; `cachefrom` may
//!                            # name only refs in this repository or below it
//! cache_mounts = false       # also keep RUN --mount=type=cache folders in it
//! push = "registry.internal:5000/alice"  # push-on-tag: each tag a build or `docker tag`
//!                            # makes is also pushed as <push>/<repository>:<tag>, and a pull
//!                            # of a name looks there first: a lost replica loses no tag
//! registry_auth = "/etc/kiln/alice-auth.json"  # docker config.json with the credentials for
//!                            # those (the request's own credentials come first)
//!
//! [[tenants.registry]]       # this tenant's registry settings (the same keys as the
//! host = "registry.internal" # server's own [[registry]] tables, which every tenant has)
//! ca = "/etc/kiln/internal-ca.pem"
//!
//! [[registry]]               # for every tenant: mirrors, plain HTTP, CAs
//! host = "docker.io"
//! mirrors = ["mirror.internal:5000"]
//! ```
//!
//! Registry credentials come only with each request (`X-Registry-Auth`,
//! `X-Registry-Config`): the server never reads its own user's docker config or helpers.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::registry::settings::RegistryEntry;

/// Why a config file is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where tenants' stores live.
    pub root: Option<PathBuf>,
    pub tenants: Vec<TenantConfig>,
    pub limits: ServerLimits,
    /// Registry settings every tenant has.
    pub registries: Vec<RegistryEntry>,
}

/// Limits of the server as a whole, on clients that no tenant's quota covers yet.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A response (or attach stream) its client reads nothing of for this long is dropped
    /// with its connection.
    pub client_stall: Duration,
    /// Connections that have not yet sent an authenticated request: past this many, the
    /// oldest is closed.
    pub pending_connections: usize,
    /// Only the WASI sandbox runs anything (`isolation = "wasi"`).
    pub wasi_only: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            client_stall: Duration::from_secs(30),
            pending_connections: 128,
            wasi_only: false,
        }
    }
}

/// One tenant.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub name: String,
    pub token: String,
    pub quotas: Quotas,
    pub registry: TenantRegistry,
    pub farm: FarmConfig,
}

/// What a tenant of a farm of replicas keeps in the shared registry.
#[derive(Debug, Clone, Default)]
pub struct FarmConfig {
    /// The build cache repository (`host/path`, no tag).
    pub cache: Option<String>,
    /// Whether cache mounts go into the cache too.
    pub cache_mounts: bool,
    /// Where tags are pushed as they are made (`host/path`).
    pub push: Option<String>,
    /// A docker config file with the tenant's credentials for those.
    pub registry_auth: Option<PathBuf>,
}

/// Where a tenant's pulls and pushes may go, and its own registry settings.
#[derive(Debug, Clone)]
pub struct TenantRegistry {
    /// The egress allow-list (`None`: no policy, the implicit local tenant).
    pub allow: Option<Vec<String>>,
    /// Settings added to the server's.
    pub entries: Vec<RegistryEntry>,
}

impl Default for TenantRegistry {
    fn default() -> Self {
        Self {
            allow: Some(vec!["*".to_owned()]),
            entries: Vec::new(),
        }
    }
}

/// What a tenant may use.
#[derive(Debug, Clone)]
pub struct Quotas {
    pub concurrent_builds: usize,
    /// Bytes the tenant's store may hold (`None`: no limit).
    pub store: Option<u64>,
    /// Largest build context (and loaded archive), in bytes.
    pub context: u64,
    pub step_timeout: Duration,
    pub step_memory: u64,
    pub step_pids: u32,
    pub host_network: bool,
    /// Log kept per container (`None`: all of it).
    pub container_log: Option<u64>,
    /// Connections open at once, attached clients included.
    pub connections: usize,
    /// Containers kept, running or not (`None`: no limit).
    pub containers: Option<usize>,
    /// Containers running at once (`None`: no limit).
    pub running_containers: Option<usize>,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            concurrent_builds: 4,
            store: None,
            context: 1 << 30,
            step_timeout: Duration::from_secs(600),
            step_memory: 4 << 30,
            step_pids: 1024,
            host_network: true,
            container_log: None,
            connections: 1024,
            containers: None,
            running_containers: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    root: Option<PathBuf>,
    client_stall: Option<String>,
    pending_connections: Option<usize>,
    isolation: Option<String>,
    #[serde(default)]
    tenants: Vec<FileTenant>,
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTenant {
    name: String,
    token: String,
    concurrent_builds: Option<usize>,
    store: Option<String>,
    context: Option<String>,
    step_timeout: Option<String>,
    step_memory: Option<String>,
    step_pids: Option<u32>,
    host_network: Option<bool>,
    container_log: Option<String>,
    connections: Option<usize>,
    containers: Option<usize>,
    running_containers: Option<usize>,
    registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<RegistryEntry>,
    cache: Option<String>,
    cache_mounts: Option<bool>,
    push: Option<String>,
    registry_auth: Option<PathBuf>,
}

/// A configured tenant's defaults for what the implicit tenant has no limit on.
const TENANT_CONNECTIONS: usize = 256;
const TENANT_CONTAINERS: usize = 256;
const TENANT_RUNNING: usize = 32;

/// Shortest token accepted: guessing one must be hopeless.
const MIN_TOKEN: usize = 16;

impl ServerConfig {
    /// Reads and checks a config file.
    pub fn load(path: &std::path::Path) -> Result<ServerConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: shown,
            message,
        })
    }

    /// Parses the text of a config file.
    pub fn parse(text: &str) -> Result<ServerConfig, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        if file.tenants.is_empty() {
            return Err("no [[tenants]]: a config file lists at least one tenant".into());
        }
        let defaults = Quotas {
            host_network: false,
            ..Quotas::default()
        };
        let mut tenants: Vec<TenantConfig> = Vec::new();
        for t in file.tenants {
            let ok_name = !t.name.is_empty()
                && t.name.len() <= 64
                && t.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                })
                && !t.name.starts_with(['-', '_']);
            if !ok_name {
                return Err(format!(
                    "tenant name {:?}: use 1-64 of a-z, 0-9, - and _",
                    t.name
                ));
            }
            if t.token.len() < MIN_TOKEN {
                return Err(format!(
                    "tenant {}: the token is shorter than {MIN_TOKEN} characters",
                    t.name
                ));
            }
            if tenants.iter().any(|o| o.name == t.name) {
                return Err(format!("tenant {} is listed twice", t.name));
            }
            if tenants.iter().any(|o| o.token == t.token) {
                return Err(format!(
                    "tenant {} has the same token as another tenant",
                    t.name
                ));
            }
            let size = |v: &Option<String>, what: &str, d: u64| -> Result<u64, String> {
                v.as_deref().map_or(Ok(d), |s| {
                    crate::sandbox::parse_size(s)
                        .map_err(|e| format!("tenant {}: {what}: {e}", t.name))
                })
            };
            let quotas = Quotas {
                concurrent_builds: t.concurrent_builds.unwrap_or(defaults.concurrent_builds),
                store: match &t.store {
                    None => None,
                    Some(_) => Some(size(&t.store, "store", 0)?),
                },
                context: size(&t.context, "context", defaults.context)?,
                step_timeout: match &t.step_timeout {
                    None => defaults.step_timeout,
                    Some(s) => crate::sandbox::parse_duration(s)
                        .map_err(|e| format!("tenant {}: step_timeout: {e}", t.name))?,
                },
                step_memory: size(&t.step_memory, "step_memory", defaults.step_memory)?,
                step_pids: t.step_pids.unwrap_or(defaults.step_pids).max(1),
                host_network: t.host_network.unwrap_or(false),
                container_log: Some(size(&t.container_log, "container_log", 64 << 20)?),
                connections: t.connections.unwrap_or(TENANT_CONNECTIONS),
                containers: Some(t.containers.unwrap_or(TENANT_CONTAINERS)),
                running_containers: Some(t.running_containers.unwrap_or(TENANT_RUNNING)),
            };
            for (what, n) in [
                ("concurrent_builds", quotas.concurrent_builds),
                ("connections", quotas.connections),
            ] {
                if n == 0 {
                    return Err(format!("tenant {}: {what} must be at least 1", t.name));
                }
            }
            let mut allow = t.registries.unwrap_or_else(|| vec!["*".to_owned()]);
            let mut farm = FarmConfig {
                cache_mounts: t.cache_mounts.unwrap_or(false),
                registry_auth: t.registry_auth,
                ..FarmConfig::default()
            };
            for (what, value, slot) in [
                ("cache", t.cache, &mut farm.cache),
                ("push", t.push, &mut farm.push),
            ] {
                let Some(v) = value else { continue };
                let v = v.trim_end_matches('/').to_owned();
                // A repository: it takes a tag, and a repository below it.
                let r = crate::reference::ImageRef::parse(&format!("{v}/x:t"))
                    .ok()
                    .filter(|_| !v.contains([':', '@']) || v.split('/').count() > 1)
                    .filter(|_| !v.rsplit('/').next().unwrap_or("").contains([':', '@']))
                    .ok_or_else(|| {
                        format!(
                            "tenant {}: {what}: {v:?} is not a repository (host/path, no tag)",
                            t.name
                        )
                    })?;
                // The tenant's own registry is one it may reach.
                let host = crate::registry::registry_host(r.domain()).to_owned();
                if !allow.iter().any(|a| a == &host || a == r.domain()) {
                    allow.push(r.domain().to_owned());
                }
                *slot = Some(v);
            }
            if let Some(bad) = allow
                .iter()
                .find(|h| h.is_empty() || h.contains(['/', ' ']))
            {
                return Err(format!(
                    "tenant {}: registries: {bad:?} is not a host[:port], *.domain or *",
                    t.name
                ));
            }
            tenants.push(TenantConfig {
                name: t.name,
                token: t.token,
                quotas,
                registry: TenantRegistry {
                    allow: Some(allow),
                    entries: t.registry,
                },
                farm,
            });
        }
        let mut limits = ServerLimits::default();
        if let Some(s) = &file.client_stall {
            limits.client_stall =
                crate::sandbox::parse_duration(s).map_err(|e| format!("client_stall: {e}"))?;
            if limits.client_stall.is_zero() {
                return Err("client_stall must be longer than 0".into());
            }
        }
        if let Some(n) = file.pending_connections {
            if n == 0 {
                return Err("pending_connections must be at least 1".into());
            }
            limits.pending_connections = n;
        }
        limits.wasi_only = match file.isolation.as_deref() {
            None | Some("auto") => false,
            Some("wasi") => true,
            Some(other) => {
                return Err(format!(
                    "isolation = {other:?}: expected \"auto\" or \"wasi\""
                ))
            }
        };
        Ok(ServerConfig {
            root: file.root,
            tenants,
            limits,
            registries: file.registry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn farm_settings_parse_and_their_registry_becomes_reachable() {
        let c = ServerConfig::parse(
            r#"
isolation = "wasi"
[[tenants]]
name = "alice"
token = "0123456789abcdef0123"
registries = ["*"]
cache = "reg.internal:5000/alice/cache/"
cache_mounts = true
push = "reg.internal:5000/alice"
registry_auth = "/etc/kiln/alice.json"
"#,
        )
        .unwrap();
        assert!(c.limits.wasi_only);
        let t = &c.tenants[0];
        assert_eq!(
            t.farm.cache.as_deref(),
            Some("reg.internal:5000/alice/cache")
        );
        assert!(t.farm.cache_mounts);
        assert_eq!(t.farm.push.as_deref(), Some("reg.internal:5000/alice"));
        assert_eq!(
            t.registry.allow.as_deref(),
            Some(&["*".to_owned(), "reg.internal:5000".to_owned()][..])
        );
        for bad in [
            "cache = \"reg:5000/a/cache:tag\"",
            "push = \"reg:5000/a@sha256:00\"",
        ] {
            let text =
                format!("[[tenants]]\nname = \"a\"\ntoken = \"0123456789abcdef0123\"\n{bad}\n");
            assert!(ServerConfig::parse(&text).is_err(), "{bad}");
        }
        assert!(ServerConfig::parse(
            "isolation = \"none\"\n[[tenants]]\nname = \"a\"\ntoken = \"0123456789abcdef0123\"\n"
        )
        .is_err());
    }

    #[test]
    fn the_shipped_farm_config_parses() {
        let c =
            ServerConfig::parse(include_str!("../../../deploy/k8s/base/kiln-serve.toml")).unwrap();
        assert_eq!(c.tenants.len(), 2);
        assert!(c
            .tenants
            .iter()
            .all(|t| t.farm.cache.is_some() && t.farm.push.is_some()));
    }

    #[test]
    fn parses_tenants_and_quotas() {
        let c = ServerConfig::parse(
            r#"
[[tenants]]
name = "alice"
token = "0123456789abcdef0123"
concurrent_builds = 2
store = "1g"
context = "10m"
host_network = true

[[tenants]]
name = "bob"
token = "fedcba9876543210fedc"
"#,
        )
        .unwrap();
        assert_eq!(c.tenants.len(), 2);
        let a = &c.tenants[0].quotas;
        assert_eq!(a.concurrent_builds, 2);
        assert_eq!(a.store, Some(1 << 30));
        assert_eq!(a.context, 10 << 20);
        assert!(a.host_network);
        let b = &c.tenants[1].quotas;
        assert_eq!(b.store, None);
        assert!(!b.host_network);
        assert_eq!(
            (b.connections, b.containers, b.running_containers),
            (256, Some(256), Some(32))
        );
        assert_eq!(c.limits.client_stall, Duration::from_secs(30));
        let c = ServerConfig::parse(
            "client_stall = \"2s\"\npending_connections = 8\n[[tenants]]\nname = \"a\"\ntoken = \"0123456789abcdef0123\"\nconnections = 3\ncontainers = 5\nrunning_containers = 1\n",
        )
        .unwrap();
        assert_eq!(c.limits.client_stall, Duration::from_secs(2));
        assert_eq!(c.limits.pending_connections, 8);
        let a = &c.tenants[0].quotas;
        assert_eq!(
            (a.connections, a.containers, a.running_containers),
            (3, Some(5), Some(1))
        );
    }

    #[test]
    fn refuses_bad_configs() {
        for (text, want) in [
            ("", "no [[tenants]]"),
            ("[[tenants]]\nname = \"a\"\ntoken = \"short\"\n", "shorter"),
            (
                "[[tenants]]\nname = \"../x\"\ntoken = \"0123456789abcdef0123\"\n",
                "tenant name",
            ),
            (
                "[[tenants]]\nname = \"a\"\ntoken = \"0123456789abcdef0123\"\n[[tenants]]\nname = \"b\"\ntoken = \"0123456789abcdef0123\"\n",
                "same token",
            ),
            (
                "[[tenants]]\nname = \"a\"\ntoken = \"0123456789abcdef0123\"\nquota = 1\n",
                "unknown field",
            ),
            (
                "[[tenants]]\nname = \"a\"\ntoken = \"0123456789abcdef0123\"\nconnections = 0\n",
                "connections must be",
            ),
            (
                "client_stall = \"0s\"\n[[tenants]]\nname = \"a\"\ntoken = \"0123456789abcdef0123\"\n",
                "client_stall",
            ),
        ] {
            let e = ServerConfig::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
