//! Where the client may connect: a policy checked on the addresses a host name resolves to,
//! so that a name pointing at loopback or a metadata address is refused unless allowed. Every
//! connection goes through it: registries, token realms, redirects.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use super::settings::split_port;

/// Decides whether kiln may connect to `host` at `addr`.
pub trait Egress: Send + Sync {
    /// `Err(why)` refuses the connection.
    fn check(&self, host: &str, addr: IpAddr) -> Result<(), String>;
}

/// An allow-list of registry hosts (`host[:port]`, `*.example.com`, or `*` for any public
/// host). A listed host may resolve anywhere; any other allowed host must resolve to public
/// addresses only (no loopback, private, link-local, CGNAT, multicast or unspecified address).
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    hosts: Vec<String>,
}

impl AllowList {
    /// A list from its entries.
    pub fn new(hosts: Vec<String>) -> Self {
        Self {
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    fn listed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = split_port(&host).0.to_owned();
        self.hosts.iter().any(|h| {
            *h == host
                || *h == name
                || h.strip_prefix("*.")
                    .is_some_and(|suffix| name.ends_with(&format!(".{suffix}")))
        })
    }
}

impl Egress for AllowList {
    fn check(&self, host: &str, addr: IpAddr) -> Result<(), String> {
        if self.listed(host) {
            return Ok(());
        }
        if !self.hosts.iter().any(|h| h == "*") {
            return Err("registry not allowed by this tenant's egress policy".to_owned());
        }
        if !is_public(addr) {
            return Err(format!(
                "resolves to {addr}, which this tenant's egress policy does not allow"
            ));
        }
        Ok(())
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || (s[0] == 0x2001 && s[1] == 0xdb8))
        }
    }
}

/// A resolver that applies an [`Egress`] policy to every address it returns.
pub(crate) struct CheckedResolver {
    inner: DefaultResolver,
    policy: Arc<dyn Egress>,
}

impl CheckedResolver {
    pub(crate) fn new(policy: Arc<dyn Egress>) -> Self {
        Self {
            inner: DefaultResolver::default(),
            policy,
        }
    }
}

impl fmt::Debug for CheckedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckedResolver")
    }
}

/// The error a refused address becomes inside ureq.
#[derive(Debug, thiserror::Error)]
#[error("{host}: {why}")]
pub(crate) struct EgressRefused {
    pub host: String,
    pub why: String,
}

impl Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        for a in addrs.iter() {
            if let Err(why) = self.policy.check(&host, a.ip()) {
                return Err(ureq::Error::Other(Box::new(EgressRefused { host, why })));
            }
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_hosts_reach_private_addresses() {
        let p = AllowList::new(vec!["*".into(), "127.0.0.1:5000".into()]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.check("127.0.0.1:5000", lo).is_ok());
        assert!(p.check("127.0.0.1:5001", lo).is_err());
        assert!(p.check("evil.example", lo).is_err());
        assert!(p
            .check("evil.example", "169.254.169.254".parse().unwrap())
            .is_err());
        assert!(p
            .check("evil.example", "::ffff:10.0.0.1".parse().unwrap())
            .is_err());
        assert!(p.check("evil.example", "fd00::1".parse().unwrap()).is_err());
        assert!(p
            .check("good.example", "93.184.216.34".parse().unwrap())
            .is_ok());
        let only = AllowList::new(vec!["*.corp.example".into()]);
        assert!(only.check("r.corp.example", lo).is_ok());
        assert!(only
            .check("other.example", "93.184.216.34".parse().unwrap())
            .is_err());
    }
}
