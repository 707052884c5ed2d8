//! Per-registry settings: plain HTTP, extra CAs, mirrors.
//!
//! The file is TOML, a list of `[[registry]]` tables (the CLI reads
//! `$KILN_REGISTRIES_CONFIG`, else `$XDG_CONFIG_HOME/kiln/registries.toml`, else
//! `~/.config/kiln/registries.toml`; the server takes the same tables in its own config):
//!
//! ```toml
//! [[registry]]
//! host = "docker.io"                 # a reference's domain, or a host[:port]
//! mirrors = ["mirror.internal:5000"] # tried in order for pulls, then the registry itself
//!
//! [[registry]]
//! host = "mirror.internal:5000"
//! insecure = true                    # HTTPS without verification, then plain HTTP
//!
//! [[registry]]
//! host = "registry.internal"
//! ca = "/etc/kiln/registry-ca.pem"   # trust this CA (instead of the public roots)
//! ```
//!
//! As in docker, loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) are insecure without a
//! setting; every other host needs `insecure = true` for plain HTTP.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{registry_host, RegistryError};

/// One `[[registry]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// A reference's domain (`docker.io`) or a `host[:port]`.
    pub host: String,
    /// Allow plain HTTP and unverified TLS.
    #[serde(default)]
    pub insecure: bool,
    /// A PEM file of CA certificates to trust for this host.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Hosts to try first when pulling from this registry.
    #[serde(default)]
    pub mirrors: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

/// What the client needs to know to reach one host.
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    /// Plain HTTP (after HTTPS fails) and unverified TLS are allowed.
    pub insecure: bool,
    /// PEM bytes of the CAs to trust instead of the public roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// Every registry's settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    by_host: BTreeMap<String, RegistryEntry>,
    ca: BTreeMap<String, Vec<u8>>,
}

impl Settings {
    /// Settings from `[[registry]]` entries; reads each `ca` file now.
    pub fn from_entries(entries: Vec<RegistryEntry>) -> Result<Self, RegistryError> {
        let mut s = Settings::default();
        for e in entries {
            if e.host.is_empty() || e.host.contains('/') {
                return Err(RegistryError::Config(format!(
                    "host {:?} must be a registry host[:port]",
                    e.host
                )));
            }
            if let Some(ca) = &e.ca {
                let pem = std::fs::read(ca).map_err(|err| {
                    RegistryError::Config(format!("read ca {}: {err}", ca.display()))
                })?;
                s.ca.insert(registry_host(&e.host).to_owned(), pem);
            }
            s.by_host.insert(registry_host(&e.host).to_owned(), e);
        }
        Ok(s)
    }

    /// Parses the TOML text of a settings file.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let f: File = toml::from_str(text).map_err(|e| RegistryError::Config(e.to_string()))?;
        Self::from_entries(f.registry)
    }

    /// Reads a settings file; a missing file means no settings.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text)
                .map_err(|e| RegistryError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(RegistryError::Config(format!("{}: {e}", path.display()))),
        }
    }

    /// The CLI's settings file.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("KILN_REGISTRIES_CONFIG") {
            return Some(PathBuf::from(p));
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(x) if !x.is_empty() => PathBuf::from(x),
            _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
        };
        Some(base.join("kiln/registries.toml"))
    }

    /// The settings for `host` (as it appears in URLs).
    pub fn host(&self, host: &str) -> HostSettings {
        let entry = self.by_host.get(host);
        HostSettings {
            insecure: entry.is_some_and(|e| e.insecure) || is_loopback_host(host),
            ca_pem: self.ca.get(host).cloned(),
        }
    }

    /// The mirrors configured for the registry `domain`, in order.
    pub fn mirrors(&self, domain: &str) -> Vec<String> {
        self.by_host
            .get(registry_host(domain))
            .map(|e| e.mirrors.clone())
            .unwrap_or_default()
    }
}

/// Whether `host[:port]` names this machine's loopback (docker treats it as insecure).
pub fn is_loopback_host(host: &str) -> bool {
    let name = split_port(host).0;
    if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host[:port]` split into the host and the port, if any (`[::1]:5000` too).
pub fn split_port(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_insecure_and_others_need_a_setting() {
        let s = Settings::parse(
            "[[registry]]\nhost = \"reg.example:5000\"\ninsecure = true\n\
             [[registry]]\nhost = \"docker.io\"\nmirrors = [\"m.example\"]\n",
        )
        .unwrap();
        assert!(s.host("127.0.0.1:5000").insecure);
        assert!(s.host("localhost:1").insecure);
        assert!(s.host("[::1]:5000").insecure);
        assert!(s.host("reg.example:5000").insecure);
        assert!(!s.host("reg.example").insecure);
        assert!(!s.host("10.0.0.1:5000").insecure, "no RFC 1918 rule");
        assert_eq!(s.mirrors("docker.io"), ["m.example"]);
        assert!(s.mirrors("quay.io").is_empty());
        assert!(Settings::parse("[[registry]]\nhost = \"a/b\"\n").is_err());
        assert!(Settings::parse("[[registry]]\nhost = \"a\"\nbogus = 1\n").is_err());
    }

    #[test]
    fn ports_split_off_hosts() {
        assert_eq!(split_port("a:5"), ("a", Some("5")));
        assert_eq!(split_port("a"), ("a", None));
        assert_eq!(split_port("[::1]:5"), ("::1", Some("5")));
        assert_eq!(split_port("::1"), ("::1", None));
    }
}
