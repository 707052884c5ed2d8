//! `POST /images/create` (pull), `POST /images/{name}/push`, `POST /auth`, and the
//! credentials requests carry (`X-Registry-Auth`, `X-Registry-Config`). The server uses those
//! and the tenant's settings only, never its own user's docker config or helpers, and every
//! connection passes the tenant's egress policy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::http::{self, message_line, ApiError, ChannelBody, Query, Resp};
use super::Tenant;
use crate::progress::Transfer;
use crate::reference::ImageRef;
use crate::registry::creds::hostname;
use crate::registry::{
    auth_key, pull, push, Credential, PlatformSpec, PullOptions, PushOptions, RegistryError,
    StaticCredentials,
};

/// Largest credentials header or `/auth` body read.
const MAX_AUTH: usize = 64 << 10;

/// docker's `AuthConfig`.
#[derive(Debug, Default, Deserialize)]
struct AuthConfig {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    serveraddress: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

impl AuthConfig {
    fn credential(&self) -> Option<Credential> {
        let (mut user, mut pass) = (self.username.clone(), self.password.clone());
        if user.is_empty() && !self.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (u, p) = text.split_once(':')?;
            (user, pass) = (u.to_owned(), p.to_owned());
        }
        if !self.identitytoken.is_empty() {
            return Some(Credential::IdentityToken {
                username: user,
                token: self.identitytoken.clone(),
            });
        }
        if !self.registrytoken.is_empty() {
            return Some(Credential::RegistryToken(self.registrytoken.clone()));
        }
        if user.is_empty() && pass.is_empty() {
            return None;
        }
        Some(Credential::Basic {
            username: user,
            password: pass,
        })
    }
}

/// A header's base64url JSON (docker pads or not; some clients send standard base64).
fn decode_header<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    name: &str,
) -> Result<Option<T>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let bad = |why: &str| ApiError::bad_request(format!("{name}: {why}"));
    let text = v.to_str().map_err(|_| bad("not text"))?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_AUTH {
        return Err(bad("too long"));
    }
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let raw = URL_SAFE
        .decode(text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(text))
        .or_else(|_| STANDARD.decode(text))
        .map_err(|_| bad("not base64"))?;
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| bad(&format!("not the JSON docker sends: {e}")))
}

/// The credentials of `X-Registry-Auth`, for the registry of `domain`.
fn request_auth(headers: &HeaderMap, domain: &str) -> Result<StaticCredentials, ApiError> {
    let mut map = BTreeMap::new();
    if let Some(a) = decode_header::<AuthConfig>(headers, "x-registry-auth")? {
        if let Some(c) = a.credential() {
            map.insert(auth_key(domain), c);
        }
    }
    Ok(StaticCredentials(map))
}

/// The credentials of `X-Registry-Config` (a build's, for every registry it may pull from).
pub(crate) fn request_config(headers: &HeaderMap) -> Result<StaticCredentials, ApiError> {
    let mut map = BTreeMap::new();
    if let Some(all) = decode_header::<BTreeMap<String, AuthConfig>>(headers, "x-registry-config")?
    {
        for (key, a) in all {
            if let Some(c) = a.credential() {
                map.insert(key, c);
            }
        }
    }
    Ok(StaticCredentials(map))
}

/// A registry error as the API reports it.
pub(crate) fn api_error(e: &RegistryError) -> ApiError {
    match e {
        RegistryError::Store(s) if !s.is_user_error() => ApiError::internal(e.to_string()),
        RegistryError::NotFound(_) => ApiError::not_found(e.to_string()),
        RegistryError::Unauthorized { .. } => {
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
        }
        RegistryError::Refused { .. } => ApiError::forbidden(e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

/// Runs `job` on a blocking thread, streaming the [`Transfer`] lines it reports; an error ends
/// the stream with docker's error message.
/// A client that went away (its response body dropped) stops the job.
fn stream_job(
    job: impl FnOnce(
            &(dyn Fn(Transfer) + Sync),
            Arc<AtomicBool>,
        ) -> Result<Vec<serde_json::Value>, RegistryError>
        + Send
        + 'static,
) -> Resp {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let stop = Arc::new(AtomicBool::new(false));
    let guard = StopOnDrop(stop.clone());
    tokio::task::spawn_blocking(move || {
        let send = |v: serde_json::Value| {
            let _ = tx.blocking_send(message_line(&v));
        };
        let events = |t: Transfer| send(t.to_json());
        match job(&events, stop) {
            Ok(tail) => tail.into_iter().for_each(send),
            Err(e) => {
                let message = e.to_string();
                send(json!({ "errorDetail": { "message": message }, "error": message }));
            }
        }
    });
    http::stream(
        "application/json",
        ChannelBody::boxed_body(rx, Some(Box::new(guard))),
    )
}

/// Sets its flag when dropped (with the response body).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `POST /images/create?fromImage=NAME&tag=TAG[&platform=P]`: docker pull.
pub async fn create(tenant: &Arc<Tenant>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    if q.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "kiln serve does not import from fromSrc: use `docker load`, or `kiln import` on the host",
        ));
    }
    let from = q
        .get("fromImage")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("fromImage is required"))?;
    let tag = q.get("tag").filter(|t| !t.is_empty());
    let text = match tag {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_owned(),
    };
    let r = ImageRef::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let platform = match q.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => PlatformSpec::parse(p).map_err(ApiError::bad_request)?,
        None => PlatformSpec::host(),
    };
    let creds = request_auth(req.headers(), r.domain())?;
    let room = super::store_room(tenant).await?;
    let limited = tenant.quotas.store.is_some();
    let t = tenant.clone();
    Ok(stream_job(move |events, stop| {
        let client = t.registry_client(creds);
        let opts = PullOptions {
            platform,
            max_bytes: limited.then_some(room),
            cancel: Some(stop),
        };
        // A name the tenant pushed (push-on-tag) comes from its own registry first: a replica
        // that replaces another finds the tags that one made.
        if let Some(mine) = t.farm.pushed_name(&r).filter(|_| r.digest().is_none()) {
            let had = t.store.resolve(&mine.to_string()).is_ok();
            match pull(&client, &t.store, &mine, &opts, events) {
                Ok(_) => {
                    t.store.tag(&mine.to_string(), &r)?;
                    if !had {
                        t.store.untag(&mine)?;
                    }
                    return Ok(Vec::new());
                }
                Err(RegistryError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        pull(&client, &t.store, &r, &opts, events)?;
        Ok(Vec::new())
    }))
}

/// `POST /images/{name}/push?tag=TAG`: docker push.
pub async fn push_image(
    tenant: &Arc<Tenant>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let text = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{name}:{t}"),
        None => name.to_owned(),
    };
    let r = ImageRef::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if tenant.store.resolve(&r.to_string()).is_err() {
        return Err(ApiError::not_found(format!(
            "An image does not exist locally with the tag: {}",
            r.familiar_name()
        )));
    }
    let creds = request_auth(req.headers(), r.domain())?;
    let t = tenant.clone();
    Ok(stream_job(move |events, stop| {
        let client = t.registry_client(creds);
        let opts = PushOptions {
            cancel: Some(stop),
            ..PushOptions::default()
        };
        let pushed = push(&client, &t.store, &r, &opts, events)?;
        Ok(vec![json!({
            "progressDetail": {},
            "aux": {
                "Tag": r.tag().unwrap_or_default(),
                "Digest": pushed.digest.to_string(),
                "Size": pushed.size,
            }
        })])
    }))
}

/// `POST /auth`: docker login checks the credentials here; the CLI keeps them.
pub async fn auth(tenant: &Arc<Tenant>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body = http::read_body(req.into_body(), MAX_AUTH).await?;
    let a: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("auth config: {e}")))?;
    let cred = a
        .credential()
        .ok_or_else(|| ApiError::bad_request("a username and password are required"))?;
    let domain = match hostname(&a.serveraddress) {
        h if h.is_empty() || h == "index.docker.io" => crate::reference::DEFAULT_DOMAIN.to_owned(),
        h => h,
    };
    let t = tenant.clone();
    let token = http::blocking(move || {
        t.registry_client(StaticCredentials::default())
            .login(&domain, &cred)
    })
    .await?
    .map_err(|e| api_error(&e))?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "Status": "Login Succeeded", "IdentityToken": token.unwrap_or_default() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_headers_decode_as_docker_sends_them() {
        let mut h = HeaderMap::new();
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE.encode(v);
        h.insert(
            "x-registry-auth",
            enc(r#"{"username":"u","password":"p","serveraddress":"127.0.0.1:5000"}"#)
                .parse()
                .unwrap(),
        );
        let c = request_auth(&h, "127.0.0.1:5000").unwrap();
        use crate::registry::Credentials;
        assert_eq!(
            c.get("127.0.0.1:5000").unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        h.insert("x-registry-auth", enc("{}").parse().unwrap());
        assert_eq!(request_auth(&h, "x").unwrap().0.len(), 0);
        h.insert(
            "x-registry-config",
            enc(r#"{"https://index.docker.io/v1/":{"auth":"dTpw"},"q.io":{"identitytoken":"t"}}"#)
                .parse()
                .unwrap(),
        );
        let c = request_config(&h).unwrap();
        assert!(
            matches!(c.get("https://index.docker.io/v1/").unwrap(), Some(Credential::Basic { username, .. }) if username == "u")
        );
        assert!(matches!(
            c.get("q.io").unwrap(),
            Some(Credential::IdentityToken { .. })
        ));
        h.insert("x-registry-config", "!!!".parse().unwrap());
        assert!(request_config(&h).is_err());
    }
}
