//! Where credentials come from: docker's config (and its credential helpers) and podman's
//! `auth.json` for the CLI; a fixed table for the server, which never reads the host's files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::auth::Credential;
use super::{RegistryError, DOCKER_HUB_AUTH_KEY};

/// Largest config file or helper answer read.
const MAX_CONFIG_FILE: u64 = 4 << 20;

/// A source of credentials, keyed as docker keys them ([`super::auth_key`]).
pub trait Credentials: Send + Sync {
    /// The credential for `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Credential>, RegistryError>;
}

/// No credentials at all: every pull is anonymous.
pub struct NoCredentials;

impl Credentials for NoCredentials {
    fn get(&self, _key: &str) -> Result<Option<Credential>, RegistryError> {
        Ok(None)
    }
}

/// A fixed table (the server's per-request `X-Registry-Auth`/`X-Registry-Config`).
#[derive(Default)]
pub struct StaticCredentials(pub BTreeMap<String, Credential>);

impl Credentials for StaticCredentials {
    fn get(&self, key: &str) -> Result<Option<Credential>, RegistryError> {
        let want = hostname(key);
        Ok(self
            .0
            .iter()
            .find(|(k, _)| hostname(k) == want)
            .map(|(_, c)| c.clone()))
    }
}

/// The host a docker config key names: `https://index.docker.io/v1/` → `index.docker.io`.
pub fn hostname(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".to_owned(),
        other => other.to_owned(),
    }
}

/// The user's docker config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`,
/// `DOCKER_AUTH_CONFIG`), then podman's `auth.json` files.
pub struct DockerConfig {
    /// docker's config file.
    pub path: PathBuf,
    /// podman's auth files, in the order podman reads them.
    pub podman: Vec<PathBuf>,
}

impl DockerConfig {
    /// The files the environment points at.
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => home.clone().unwrap_or_default().join(".docker"),
        };
        let mut podman = Vec::new();
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
            podman.push(PathBuf::from(p));
        }
        if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR") {
            podman.push(PathBuf::from(r).join("containers/auth.json"));
        }
        match std::env::var_os("XDG_CONFIG_HOME") {
            Some(x) if !x.is_empty() => podman.push(PathBuf::from(x).join("containers/auth.json")),
            _ => {
                if let Some(h) = &home {
                    podman.push(h.join(".config/containers/auth.json"));
                }
            }
        }
        Self {
            path: dir.join("config.json"),
            podman,
        }
    }

    fn read(path: &Path) -> Result<Option<Map<String, Value>>, RegistryError> {
        use std::io::Read;
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cfg_err(path, e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_CONFIG_FILE)
            .read_to_end(&mut bytes)
            .map_err(|e| cfg_err(path, e))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(cfg_err(path, "not a JSON object")),
            Err(e) => Err(cfg_err(path, e)),
        }
    }

    /// Stores a credential (`kiln login`): in the helper the config names, else base64 in
    /// `auths`, as docker does. The file keeps everything else it held, and mode 0600.
    pub fn store(&self, key: &str, cred: &Credential) -> Result<(), RegistryError> {
        let mut cfg = Self::read(&self.path)?.unwrap_or_default();
        if let Some(helper) = helper_for(&cfg, key) {
            let (user, secret) = match cred {
                Credential::Basic { username, password } => (username.clone(), password.clone()),
                Credential::IdentityToken { token, .. } => ("<token>".to_owned(), token.clone()),
                Credential::RegistryToken(t) => ("<token>".to_owned(), t.clone()),
            };
            let body = serde_json::json!({"ServerURL": key, "Username": user, "Secret": secret});
            run_helper(&helper, "store", body.to_string().as_bytes(), key)?;
            // docker leaves an empty entry in `auths` so that the registry is listed.
            let mut auths = take_auths(&mut cfg);
            auths.insert(key.to_owned(), Value::Object(Map::new()));
            cfg.insert("auths".into(), Value::Object(auths));
        } else {
            let mut entry = Map::new();
            match cred {
                Credential::Basic { username, password } => {
                    let raw = format!("{username}:{password}");
                    entry.insert(
                        "auth".into(),
                        base64::engine::general_purpose::STANDARD.encode(raw).into(),
                    );
                }
                Credential::IdentityToken { username, token } => {
                    let raw = format!("{username}:");
                    entry.insert(
                        "auth".into(),
                        base64::engine::general_purpose::STANDARD.encode(raw).into(),
                    );
                    entry.insert("identitytoken".into(), token.clone().into());
                }
                Credential::RegistryToken(t) => {
                    entry.insert("registrytoken".into(), t.clone().into());
                }
            }
            let mut auths = take_auths(&mut cfg);
            auths.insert(key.to_owned(), Value::Object(entry));
            cfg.insert("auths".into(), Value::Object(auths));
        }
        self.write(&cfg)
    }

    /// Removes a credential (`kiln logout`); returns whether there was one.
    pub fn erase(&self, key: &str) -> Result<bool, RegistryError> {
        let Some(mut cfg) = Self::read(&self.path)? else {
            return Ok(false);
        };
        let mut found = false;
        if let Some(helper) = helper_for(&cfg, key) {
            found |= run_helper(&helper, "erase", key.as_bytes(), key).is_ok();
        }
        let mut auths = take_auths(&mut cfg);
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| hostname(k) == hostname(key))
            .cloned()
            .collect();
        for k in keys {
            auths.remove(&k);
            found = true;
        }
        cfg.insert("auths".into(), Value::Object(auths));
        self.write(&cfg)?;
        Ok(found)
    }

    fn write(&self, cfg: &Map<String, Value>) -> Result<(), RegistryError> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| cfg_err(dir, e))?;
        let tmp = self.path.with_extension("json.kiln-tmp");
        let bytes = serde_json::to_vec_pretty(cfg).map_err(|e| cfg_err(&self.path, e))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| cfg_err(&tmp, e))?;
        f.write_all(&bytes)
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|e| cfg_err(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| cfg_err(&self.path, e))
    }
}

impl Credentials for DockerConfig {
    fn get(&self, key: &str) -> Result<Option<Credential>, RegistryError> {
        if let Ok(text) = std::env::var("DOCKER_AUTH_CONFIG") {
            if let Ok(Value::Object(cfg)) = serde_json::from_str::<Value>(&text) {
                if let Some(c) = from_auths(&cfg, key)? {
                    return Ok(Some(c));
                }
            }
        }
        if let Some(cfg) = Self::read(&self.path)? {
            if let Some(helper) = helper_for(&cfg, key) {
                return helper_get(&helper, key);
            }
            if let Some(c) = from_auths(&cfg, key)? {
                return Ok(Some(c));
            }
        }
        for p in &self.podman {
            if let Some(cfg) = Self::read(p)? {
                if let Some(c) = from_auths(&cfg, key)? {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }
}

fn cfg_err(path: &Path, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Credentials {
        registry: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Takes `auths` out of a config (an empty table if it has none); put it back when done.
fn take_auths(cfg: &mut Map<String, Value>) -> Map<String, Value> {
    match cfg.remove("auths") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The helper for `key`: `credHelpers` by host, else `credsStore`.
fn helper_for(cfg: &Map<String, Value>, key: &str) -> Option<String> {
    let host = hostname(key);
    let per_host = cfg
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().find(|(k, _)| hostname(k) == host))
        .and_then(|(_, v)| v.as_str());
    per_host
        .or_else(|| cfg.get("credsStore").and_then(Value::as_str))
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// The credential a docker config's JSON text holds for `key` in `auths` (helpers are not
/// run).
pub fn from_config_text(text: &[u8], key: &str) -> Result<Option<Credential>, RegistryError> {
    match serde_json::from_slice(text) {
        Ok(Value::Object(cfg)) => from_auths(&cfg, key),
        _ => Err(RegistryError::Credentials {
            registry: key.to_owned(),
            why: "not a JSON object".into(),
        }),
    }
}

/// The credential `auths` holds for `key`.
fn from_auths(cfg: &Map<String, Value>, key: &str) -> Result<Option<Credential>, RegistryError> {
    let Some(auths) = cfg.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    let host = hostname(key);
    let Some(entry) = auths
        .get(key)
        .or_else(|| {
            auths
                .iter()
                .find(|(k, _)| hostname(k) == host)
                .map(|(_, v)| v)
        })
        .and_then(Value::as_object)
    else {
        return Ok(None);
    };
    let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
    let (mut user, mut pass) = (field("username").to_owned(), field("password").to_owned());
    if !field("auth").is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(field("auth").trim())
            .map_err(|e| RegistryError::Credentials {
                registry: key.to_owned(),
                why: format!("bad base64 in \"auth\": {e}"),
            })?;
        let text = String::from_utf8_lossy(&raw);
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| RegistryError::Credentials {
                registry: key.to_owned(),
                why: "\"auth\" is not user:password".to_owned(),
            })?;
        (user, pass) = (u.to_owned(), p.to_owned());
    }
    if !field("identitytoken").is_empty() {
        return Ok(Some(Credential::IdentityToken {
            username: user,
            token: field("identitytoken").to_owned(),
        }));
    }
    if !field("registrytoken").is_empty() {
        return Ok(Some(Credential::RegistryToken(
            field("registrytoken").to_owned(),
        )));
    }
    if user.is_empty() && pass.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential::Basic {
        username: user,
        password: pass,
    }))
}

/// Runs `docker-credential-<helper> <verb>` with `input` on stdin; returns its stdout.
fn run_helper(helper: &str, verb: &str, input: &[u8], key: &str) -> Result<Vec<u8>, RegistryError> {
    use std::io::Read;
    let err = |why: String| RegistryError::Credentials {
        registry: key.to_owned(),
        why,
    };
    if !helper
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(err(format!("bad credential helper name {helper:?}")));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(format!("run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| err(format!("{program}: {e}")))?;
    }
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(MAX_CONFIG_FILE)
            .read_to_end(&mut out)
            .map_err(|e| err(format!("{program}: {e}")))?;
    }
    let status = child.wait().map_err(|e| err(format!("{program}: {e}")))?;
    if !status.success() {
        let text = String::from_utf8_lossy(&out).trim().to_owned();
        return Err(err(format!("{program} {verb}: {text}")));
    }
    Ok(out)
}

/// `get` from a helper; "credentials not found" is no credential.
fn helper_get(helper: &str, key: &str) -> Result<Option<Credential>, RegistryError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let out = match run_helper(helper, "get", key.as_bytes(), key) {
        Ok(out) => out,
        Err(RegistryError::Credentials { why, .. }) if why.contains("credentials not found") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let a: Answer = serde_json::from_slice(&out).map_err(|e| RegistryError::Credentials {
        registry: key.to_owned(),
        why: format!("docker-credential-{helper} get: {e}"),
    })?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if a.username == "<token>" {
        Credential::IdentityToken {
            username: String::new(),
            token: a.secret,
        }
    } else {
        Credential::Basic {
            username: a.username,
            password: a.secret,
        }
    }))
}

/// The key a `kiln login` argument is stored under (`docker.io` → docker's Hub key).
pub fn login_key(server: Option<&str>) -> String {
    match server {
        None => DOCKER_HUB_AUTH_KEY.to_owned(),
        Some(s) => {
            let host = hostname(s);
            if host == "index.docker.io" {
                DOCKER_HUB_AUTH_KEY.to_owned()
            } else {
                host
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalise_like_docker() {
        assert_eq!(hostname("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(hostname("docker.io"), "index.docker.io");
        assert_eq!(hostname("registry-1.docker.io"), "index.docker.io");
        assert_eq!(hostname("http://localhost:5000/v2/"), "localhost:5000");
        assert_eq!(login_key(None), DOCKER_HUB_AUTH_KEY);
        assert_eq!(login_key(Some("docker.io")), DOCKER_HUB_AUTH_KEY);
        assert_eq!(login_key(Some("https://q.io/v1/")), "q.io");
    }

    #[test]
    fn a_docker_config_round_trips_and_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"q.io":{"identitytoken":"tok","auth":"bWU6"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let c = DockerConfig {
            path: path.clone(),
            podman: vec![],
        };
        assert_eq!(
            c.get(DOCKER_HUB_AUTH_KEY).unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            c.get("https://q.io").unwrap(),
            Some(Credential::IdentityToken {
                username: "me".into(),
                token: "tok".into()
            })
        );
        assert_eq!(c.get("other.io").unwrap(), None);
        let cred = Credential::Basic {
            username: "al".into(),
            password: "pw:x".into(),
        };
        c.store("localhost:5000", &cred).unwrap();
        assert_eq!(c.get("localhost:5000").unwrap(), Some(cred));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("psFormat"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(c.erase("localhost:5000").unwrap());
        assert_eq!(c.get("localhost:5000").unwrap(), None);
        assert!(!c.erase("localhost:5000").unwrap());
    }

    #[test]
    fn podman_auth_files_are_read_after_dockers() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth.json");
        std::fs::write(&auth, r#"{"auths":{"quay.io":{"auth":"YTpi"}}}"#).unwrap();
        let c = DockerConfig {
            path: dir.path().join("missing.json"),
            podman: vec![auth],
        };
        assert_eq!(
            c.get("quay.io").unwrap(),
            Some(Credential::Basic {
                username: "a".into(),
                password: "b".into()
            })
        );
    }
}
