//! One registry host: its scheme, its authentication (challenge, tokens per scope), and
//! requests with retries and redirects.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::{self, Response};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::unversioned::transport::DefaultConnector;
use ureq::Agent;

use super::auth::{parse_challenges, Challenge, Credential, TokenResponse};
use super::egress::{CheckedResolver, Egress, EgressRefused};
use super::settings::{is_loopback_host, HostSettings};
use super::{RegistryError, MAX_TOKEN_BODY};

/// Attempts per request for retryable failures (408, 429, 5xx, connection errors).
const ATTEMPTS: u32 = 4;
/// Longest wait a `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Redirects followed per request.
const MAX_REDIRECTS: u32 = 5;
/// A token is fetched again this long before it expires.
const TOKEN_SLACK: Duration = Duration::from_secs(10);

/// How the registry wants to be authenticated, learned from the `/v2/` probe.
#[derive(Debug, Clone)]
enum Scheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A request body.
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A stream of a known or unknown length; sent once (not retried).
    Stream(&'a mut dyn Read, Option<u64>),
}

impl Body<'_> {
    fn replayable(&self) -> bool {
        !matches!(self, Body::Stream(..))
    }
}

struct State {
    base: Option<String>,
    scheme: Option<Scheme>,
    tokens: HashMap<String, (String, Instant)>,
}

/// A connection context for one registry host.
pub(crate) struct Session {
    host: String,
    insecure: bool,
    cred: Option<Credential>,
    agent: Agent,
    state: Mutex<State>,
}

impl Session {
    pub(crate) fn new(
        host: &str,
        hs: HostSettings,
        cred: Option<Credential>,
        egress: Option<Arc<dyn Egress>>,
        user_agent: &str,
    ) -> Result<Self, RegistryError> {
        let mut tls = TlsConfig::builder();
        if let Some(pem) = &hs.ca_pem {
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(RegistryError::Config(format!(
                    "{host}: the ca file holds no PEM certificate"
                )));
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        } else if hs.insecure {
            tls = tls.disable_verification(true);
        }
        let mut cfg = Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(user_agent)
            .accept_encoding("identity")
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(8);
        if egress.is_some() {
            // The policy judges the addresses a registry name resolves to; a proxy from the
            // environment would hide them.
            cfg = cfg.proxy(None);
        }
        let config = cfg.build();
        let agent = match egress {
            Some(policy) => Agent::with_parts(
                config,
                DefaultConnector::default(),
                CheckedResolver::new(policy),
            ),
            None => Agent::new_with_config(config),
        };
        Ok(Self {
            host: host.to_owned(),
            insecure: hs.insecure,
            cred,
            agent,
            state: Mutex::new(State {
                base: None,
                scheme: None,
                tokens: HashMap::new(),
            }),
        })
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, RegistryError> {
        self.state
            .lock()
            .map_err(|_| RegistryError::Config("session state poisoned".into()))
    }

    fn http_err(&self, url: &str, e: ureq::Error) -> RegistryError {
        if let ureq::Error::Other(inner) = &e {
            if let Some(r) = inner.downcast_ref::<EgressRefused>() {
                return RegistryError::Refused {
                    host: r.host.clone(),
                    why: r.why.clone(),
                };
            }
        }
        RegistryError::Http {
            url: url.to_owned(),
            message: e.to_string(),
        }
    }

    /// `https://host` or, for an insecure host whose HTTPS fails, `http://host`; probes `/v2/`
    /// the first time and learns how the registry authenticates.
    pub(crate) fn base(&self) -> Result<String, RegistryError> {
        if let Some(b) = self.state()?.base.clone() {
            return Ok(b);
        }
        let https = format!("https://{}", self.host);
        let (base, resp) = match self.get_plain(&format!("{https}/v2/")) {
            Ok(r) => (https, r),
            Err(e) if self.insecure && !matches!(e, RegistryError::Refused { .. }) => {
                let http = format!("http://{}", self.host);
                match self.get_plain(&format!("{http}/v2/")) {
                    Ok(r) => (http, r),
                    Err(_) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let scheme = match resp.status().as_u16() {
            401 => {
                let challenges = challenges(&resp);
                if let Some(Challenge::Bearer { realm, service, .. }) = challenges
                    .iter()
                    .find(|c| matches!(c, Challenge::Bearer { .. }))
                {
                    Scheme::Bearer {
                        realm: realm.clone(),
                        service: service.clone(),
                    }
                } else {
                    Scheme::Basic
                }
            }
            200..=299 => Scheme::Anonymous,
            404 => {
                return Err(RegistryError::Protocol {
                    what: format!("{base}/v2/"),
                    why: "not a registry (no /v2/ API)".into(),
                })
            }
            // Some registries answer the probe oddly; authenticate on the first challenge.
            _ => Scheme::Anonymous,
        };
        let mut st = self.state()?;
        st.base = Some(base.clone());
        st.scheme = Some(scheme);
        Ok(base)
    }

    /// A GET without credentials, retried on 408, 429 and 5xx.
    fn get_plain(&self, url: &str) -> Result<Response<ureq::Body>, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self
                .agent
                .get(url)
                .call()
                .map_err(|e| self.http_err(url, e))?;
            let retry = matches!(resp.status().as_u16(), 408 | 429 | 500 | 502 | 503 | 504);
            if !retry || attempt >= ATTEMPTS {
                return Ok(resp);
            }
            let wait = retry_after(&resp).unwrap_or_else(|| backoff(attempt));
            std::thread::sleep(wait.min(MAX_RETRY_AFTER));
        }
    }

    /// Logs in: probes, then proves the credential (a token for no scope, or Basic on `/v2/`).
    /// Returns a refresh token the token server handed out, if any.
    pub(crate) fn login(&self) -> Result<Option<String>, RegistryError> {
        let base = self.base()?;
        let scheme = self.state()?.scheme.clone();
        match scheme {
            Some(Scheme::Bearer { realm, service }) => {
                let t = self.fetch_token(&realm, service.as_deref(), &[], true)?;
                Ok(t.refresh)
            }
            Some(Scheme::Basic) => {
                let url = format!("{base}/v2/");
                let mut req = self.agent.get(&url);
                if let Some(h) = self.cred.as_ref().and_then(Credential::basic_header) {
                    req = req.header("Authorization", h);
                }
                let resp = req.call().map_err(|e| self.http_err(&url, e))?;
                if resp.status().is_success() {
                    Ok(None)
                } else {
                    Err(RegistryError::Unauthorized {
                        registry: self.host.clone(),
                        detail: "incorrect username or password".into(),
                    })
                }
            }
            _ => Ok(None),
        }
    }

    /// The `Authorization` value for a request needing `scopes`.
    fn authorization(
        &self,
        scopes: &[String],
        refresh: bool,
    ) -> Result<Option<String>, RegistryError> {
        let scheme = self.state()?.scheme.clone();
        match scheme {
            Some(Scheme::Basic) => Ok(self.cred.as_ref().and_then(Credential::basic_header)),
            Some(Scheme::Bearer { realm, service }) => {
                if let Some(Credential::RegistryToken(t)) = &self.cred {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let key = scope_key(scopes);
                if !refresh {
                    if let Some((tok, until)) = self.state()?.tokens.get(&key) {
                        if Instant::now() + TOKEN_SLACK < *until {
                            return Ok(Some(format!("Bearer {tok}")));
                        }
                    }
                }
                let t = self.fetch_token(&realm, service.as_deref(), scopes, false)?;
                let bearer = format!("Bearer {}", t.token);
                self.state()?.tokens.insert(key, (t.token, t.until));
                Ok(Some(bearer))
            }
            Some(Scheme::Anonymous) | None => Ok(None),
        }
    }

    /// Asks the token server for a token for `scopes`.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        offline: bool,
    ) -> Result<Token, RegistryError> {
        let realm_host = realm
            .split_once("://")
            .map(|(_, r)| r.split(['/', '?']).next().unwrap_or(""))
            .unwrap_or("");
        let secure = realm.starts_with("https://");
        if !secure && !realm.starts_with("http://") {
            return Err(RegistryError::Protocol {
                what: format!("{}: token realm", self.host),
                why: format!("{realm:?} is not an http(s) URL"),
            });
        }
        // Credentials travel in clear only to loopback or to a host marked insecure.
        let may_send = secure || is_loopback_host(realm_host) || self.insecure;
        let cred = self.cred.as_ref().filter(|_| may_send);
        let resp = match cred {
            Some(Credential::IdentityToken { token, .. }) => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", token)
                    .append_pair("client_id", "kiln")
                    .append_pair("scope", &scopes.join(" "));
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                let body = form.finish();
                self.agent
                    .post(realm)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .send(body.as_bytes())
            }
            _ => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
                if let Some(u) = cred.and_then(Credential::username) {
                    q.append_pair("account", u);
                }
                if offline {
                    q.append_pair("client_id", "kiln");
                    q.append_pair("offline_token", "true");
                }
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{sep}{}", q.finish());
                let mut req = self.agent.get(&url);
                if let Some(h) = cred.and_then(Credential::basic_header) {
                    req = req.header("Authorization", h);
                }
                req.call()
            }
        };
        let mut resp = resp.map_err(|e| self.http_err(realm, e))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RegistryError::Unauthorized {
                registry: self.host.clone(),
                detail: error_detail(&mut resp).unwrap_or_else(|| "authentication required".into()),
            });
        }
        if !(200..300).contains(&status) {
            return Err(RegistryError::Status {
                url: realm.to_owned(),
                status,
                detail: error_detail(&mut resp),
            });
        }
        let bytes = read_limited(&mut resp, MAX_TOKEN_BODY, realm)?;
        let t: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                what: format!("token from {realm}"),
                why: e.to_string(),
            })?;
        let token = t
            .token
            .filter(|s| !s.is_empty())
            .or(t.access_token)
            .ok_or_else(|| RegistryError::Protocol {
                what: format!("token from {realm}"),
                why: "no token in the answer".into(),
            })?;
        let life = Duration::from_secs(t.expires_in.unwrap_or(60).clamp(60, 86_400));
        Ok(Token {
            token,
            until: Instant::now() + life,
            refresh: t.refresh_token,
        })
    }

    /// Sends a request to `url` (absolute, or a path on this registry) with the authorization
    /// `scopes` need, retrying what may be retried and following redirects (without
    /// credentials to any other host).
    pub(crate) fn call(
        &self,
        method: http::Method,
        url: &str,
        scopes: &[String],
        headers: &[(&str, &str)],
        mut body: Body<'_>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let base = self.base()?;
        let mut url = self.absolute(&base, url);
        let mut auth_retried = false;
        let mut refresh = false;
        let mut attempt = 0;
        let mut redirects = 0;
        let mut foreign = false;
        // The scopes asked for, plus any a challenge names (`insufficient_scope`).
        let mut want: Vec<String> = scopes.to_vec();
        loop {
            attempt += 1;
            let auth = if foreign {
                None
            } else {
                self.authorization(&want, refresh)?
            };
            refresh = false;
            let mut b = http::Request::builder().method(method.clone()).uri(&url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            if let Some(a) = &auth {
                b = b.header("Authorization", a);
            }
            let sent = match &mut body {
                Body::Empty => b.body(()).map(|r| self.agent.run(r)),
                Body::Bytes(bytes) => b.body(*bytes).map(|r| self.agent.run(r)),
                Body::Stream(reader, len) => {
                    if let Some(n) = len {
                        b = b.header("Content-Length", n.to_string());
                    }
                    b.body(ureq::SendBody::from_reader(*reader))
                        .map(|r| self.agent.run(r))
                }
            };
            let result = sent.map_err(|e| RegistryError::Protocol {
                what: url.clone(),
                why: e.to_string(),
            })?;
            let mut resp = match result {
                Ok(r) => r,
                Err(e) => {
                    let err = self.http_err(&url, e);
                    if body.replayable()
                        && attempt < ATTEMPTS
                        && !matches!(err, RegistryError::Refused { .. })
                    {
                        std::thread::sleep(backoff(attempt));
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = resp.status().as_u16();
            match status {
                401 | 403 if !foreign => {
                    let ch = challenges(&resp);
                    let bearer = ch.iter().find_map(|c| match c {
                        Challenge::Bearer {
                            realm,
                            service,
                            error,
                            scope,
                        } => {
                            for s in scope.iter().flat_map(|s| s.split(' ')) {
                                if !s.is_empty() && !want.iter().any(|w| w == s) {
                                    want.push(s.to_owned());
                                }
                            }
                            Some((realm.clone(), service.clone(), error.clone()))
                        }
                        _ => None,
                    });
                    let insufficient = bearer
                        .as_ref()
                        .is_some_and(|b| b.2.as_deref() == Some("insufficient_scope"));
                    if let Some((realm, service, _)) = bearer {
                        let mut st = self.state()?;
                        st.scheme = Some(Scheme::Bearer { realm, service });
                    } else if ch.contains(&Challenge::Basic) {
                        self.state()?.scheme = Some(Scheme::Basic);
                    }
                    // Once: a token that expired, was revoked, or lacks a scope.
                    if !auth_retried && body.replayable() && (status == 401 || insufficient) {
                        auth_retried = true;
                        refresh = true;
                        attempt -= 1;
                        continue;
                    }
                    let detail = error_detail(&mut resp)
                        .unwrap_or_else(|| "authentication required".to_owned());
                    return Err(RegistryError::Unauthorized {
                        registry: self.host.clone(),
                        detail,
                    });
                }
                301 | 302 | 303 | 307 | 308
                    if matches!(method, http::Method::GET | http::Method::HEAD) =>
                {
                    redirects += 1;
                    let loc = resp
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let Some(loc) = loc.filter(|_| redirects <= MAX_REDIRECTS) else {
                        return Err(RegistryError::Protocol {
                            what: url,
                            why: "too many or broken redirects".into(),
                        });
                    };
                    let next = join_url(&url, &loc);
                    if url_host(&next) != url_host(&url) || !next.starts_with(&base) {
                        foreign = true;
                    }
                    if next.starts_with("http://") && url.starts_with("https://") {
                        return Err(RegistryError::Protocol {
                            what: url,
                            why: "refusing a redirect from HTTPS to plain HTTP".into(),
                        });
                    }
                    url = next;
                    attempt -= 1;
                    continue;
                }
                408 | 429 | 500 | 502 | 503 | 504 if body.replayable() && attempt < ATTEMPTS => {
                    let wait = retry_after(&resp).unwrap_or_else(|| backoff(attempt));
                    std::thread::sleep(wait.min(MAX_RETRY_AFTER));
                    continue;
                }
                _ => return Ok(resp),
            }
        }
    }

    /// `url` made absolute against this registry.
    pub(crate) fn absolute(&self, base: &str, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_owned()
        } else {
            format!("{base}{url}")
        }
    }
}

struct Token {
    token: String,
    until: Instant,
    refresh: Option<String>,
}

fn scope_key(scopes: &[String]) -> String {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort_unstable();
    s.dedup();
    s.join(" ")
}

fn challenges(resp: &Response<ureq::Body>) -> Vec<Challenge> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(5))
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(resp: &Response<ureq::Body>) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The host part of an absolute URL.
pub(crate) fn url_host(url: &str) -> &str {
    url.split_once("://")
        .map(|(_, r)| r.split(['/', '?', '#']).next().unwrap_or(""))
        .unwrap_or("")
}

/// `loc` (a `Location` value) resolved against `url`.
pub(crate) fn join_url(url: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_owned();
    }
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    if loc.starts_with('/') {
        format!("{}{loc}", &url[..host_end])
    } else {
        let dir_end = url
            .rfind('/')
            .filter(|&i| i >= host_end)
            .unwrap_or(host_end);
        format!("{}/{loc}", &url[..dir_end])
    }
}

/// Reads at most `limit` bytes of a body; more is an error.
pub(crate) fn read_limited(
    resp: &mut Response<ureq::Body>,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    resp.body_mut()
        .with_config()
        .limit(u64::MAX)
        .reader()
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| RegistryError::Http {
            url: what.to_owned(),
            message: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(RegistryError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    Ok(out)
}

/// The first message of a distribution error body (`{"errors":[{"code","message"}]}`).
pub(crate) fn error_detail(resp: &mut Response<ureq::Body>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let bytes = read_limited(resp, 64 << 10, "error").ok()?;
    let e: Errors = serde_json::from_slice(&bytes).ok()?;
    let first = e.errors.into_iter().next()?;
    let text = match (first.code.is_empty(), first.message.is_empty()) {
        (false, false) => format!("{}: {}", first.code.to_lowercase(), first.message),
        (false, true) => first.code.to_lowercase(),
        _ => first.message,
    };
    Some(text.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_like_a_browser() {
        assert_eq!(
            join_url(
                "http://r:5000/v2/a/blobs/uploads/",
                "/v2/a/blobs/uploads/u?x=1"
            ),
            "http://r:5000/v2/a/blobs/uploads/u?x=1"
        );
        assert_eq!(join_url("http://r/v2/a", "https://cdn/x"), "https://cdn/x");
        assert_eq!(join_url("http://r/v2/a/b", "c"), "http://r/v2/a/c");
        assert_eq!(url_host("https://cdn.example:8443/x?y"), "cdn.example:8443");
        assert_eq!(scope_key(&["b".into(), "a".into(), "b".into()]), "a b");
    }
}
