//! HTTP plumbing of the server: response bodies, docker's JSON errors, query strings, and
//! request bodies read under limits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Frame, Incoming};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

/// Every response body.
pub type Body = BoxBody<Bytes, io::Error>;
/// Every response.
pub type Resp = Response<Body>;

/// How long a client may leave a request body idle.
pub const BODY_IDLE: Duration = Duration::from_secs(30);

/// A failed request: docker's `{"message": ...}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The response docker sends for it.
    pub fn response(&self) -> Resp {
        json(self.status, &serde_json::json!({ "message": self.message }))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        let status = match &e {
            E::ImageNotFound(_) => StatusCode::NOT_FOUND,
            E::Conflict { .. } => StatusCode::CONFLICT,
            _ if e.is_user_error() => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl From<crate::container::ContainerError> for ApiError {
    fn from(e: crate::container::ContainerError) -> Self {
        use crate::container::ContainerError as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::NameInUse { .. } | E::Running(_) | E::NotRunning(_) => StatusCode::CONFLICT,
            _ if e.is_user_error() => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl From<crate::reference::ReferenceError> for ApiError {
    fn from(e: crate::reference::ReferenceError) -> Self {
        Self::bad_request(e.to_string())
    }
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Resp {
    let body = match serde_json::to_vec(value) {
        Ok(mut b) => {
            b.push(b'\n');
            b
        }
        Err(e) => {
            return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("encode: {e}"));
        }
    };
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(empty_body()))
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &str) -> Resp {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(full(body.as_bytes().to_vec()))
        .unwrap_or_else(|_| Response::new(empty_body()))
}

/// A response without a body.
pub fn empty(status: StatusCode) -> Resp {
    Response::builder()
        .status(status)
        .body(empty_body())
        .unwrap_or_else(|_| Response::new(empty_body()))
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

pub fn empty_body() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A streamed response body fed through a channel. Dropping it (the client went away) drops
/// `guard` too, which is how a build learns that nobody listens any more.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    _guard: Option<Box<dyn Send + Sync>>,
}

impl ChannelBody {
    pub fn boxed_body(rx: mpsc::Receiver<Bytes>, guard: Option<Box<dyn Send + Sync>>) -> Body {
        ChannelBody { rx, _guard: guard }.boxed()
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// A streamed response with `content_type`.
pub fn stream(content_type: &str, body: Body) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", content_type)
        .body(body)
        .unwrap_or_else(|_| Response::new(empty_body()))
}

/// A request's query parameters, in order, repeats kept.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A boolean as docker reads one: `1`, `true`, `True` (anything else but empty, `0` and
    /// `false` counts as true, as Go's `BoolValue`).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "false" | "no"))
    }

    /// A number, or an error naming the parameter.
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }

    /// A JSON-encoded parameter (`buildargs`, `labels`, `filters`).
    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => serde_json::from_str(v)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("invalid {key} parameter: {e}"))),
        }
    }
}

/// Decodes `%XX` escapes of a path segment.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The next piece of a request body, failing when the client stalls for [`BODY_IDLE`].
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, ApiError> {
    loop {
        let frame = tokio::time::timeout(BODY_IDLE, body.frame())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request body stalled for {} s", BODY_IDLE.as_secs()),
                )
            })?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(ApiError::bad_request(format!("read the request body: {e}")))
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Reads a small body (JSON) whole, up to `limit` bytes.
pub async fn read_body(mut body: Incoming, limit: usize) -> Result<Vec<u8>, ApiError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large(limit as u64));
    }
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await? {
        if out.len() + chunk.len() > limit {
            return Err(too_large(limit as u64));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {limit} bytes"),
    )
}

/// Copies a body into `file` (a spool for a context or an archive), at most `limit` bytes;
/// `what` names it in the error.
pub async fn spool_body(
    mut body: Incoming,
    file: std::fs::File,
    limit: u64,
    what: &str,
) -> Result<std::fs::File, ApiError> {
    use tokio::io::AsyncWriteExt;
    let mut out = tokio::fs::File::from_std(file);
    let mut written = 0u64;
    while let Some(chunk) = next_chunk(&mut body).await? {
        written += chunk.len() as u64;
        if written > limit {
            drain(&mut body).await;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the {what} is larger than this tenant's limit of {limit} bytes"),
            ));
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("spool the {what}: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::internal(format!("spool the {what}: {e}")))?;
    Ok(out.into_std().await)
}

/// Most a refused body is read on, so that its sender gets to read the refusal.
const DRAIN_BYTES: u64 = 256 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Reads and drops the rest of a refused body (within bounds): a client still sending would
/// otherwise see a broken pipe instead of the answer.
pub async fn drain(body: &mut Incoming) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut read = 0u64;
    while read < DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    read += d.len() as u64;
                }
            }
            _ => return,
        }
    }
}

/// Runs blocking engine work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))
}

/// A file in a fresh folder of the tenant's store for a request body (a context, an
/// archive); the folder goes when the returned guard drops.
pub fn spool_file(
    store: &crate::store::Store,
    what: &str,
) -> Result<(crate::store::WorkDir, std::fs::File), ApiError> {
    let dir = store
        .temp_dir()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("body"))
        .map_err(|e| ApiError::internal(format!("spool the {what}: {e}")))?;
    Ok((dir, file))
}

/// One NDJSON line of docker's `jsonstream.Message`.
pub fn message_line(value: &serde_json::Value) -> Bytes {
    let mut b = serde_json::to_vec(value).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_repeats_and_flags() {
        let q = Query::parse(Some("t=a&t=b%3Ac&q=1&nocache=false&rm=True"));
        assert_eq!(q.all("t"), vec!["a", "b:c"]);
        assert!(q.flag("q"));
        assert!(!q.flag("nocache"));
        assert!(q.flag("rm"));
        assert!(!q.flag("absent"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("me%2Fredis%3Alatest"), "me/redis:latest");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
