//! Downloading `ADD https://...` sources (only when the build's network policy allows it).
//!
//! The body is streamed into a private folder with a size limit, hashed on the way, and named
//! after the last segment of the URL's path, as Docker does. The file gets mode 0600 and, when
//! the server sends `Last-Modified`, that time.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::digest::{Digest, HashingWriter};

/// Largest download accepted.
pub const MAX_DOWNLOAD: u64 = 8 << 30;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed (connection, TLS, HTTP status).
    #[error("fetch {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What the HTTP client said.
        message: String,
    },
    /// The body was larger than allowed.
    #[error("fetch {url}: body is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// `--checksum` did not match.
    #[error("fetch {url}: checksum mismatch: expected {expected}, got {found}")]
    Checksum {
        /// The URL.
        url: String,
        /// From `--checksum`.
        expected: String,
        /// Of the body.
        found: Digest,
    },
    /// Writing the download failed.
    #[error("save download of {url}: {source}")]
    Write {
        /// The URL.
        url: String,
        /// The underlying error.
        source: io::Error,
    },
}

/// A downloaded file.
#[derive(Debug)]
pub struct Fetched {
    /// Its name (the URL path's last segment).
    pub name: String,
    /// Its sha256.
    pub digest: Digest,
    /// Where it is (inside the folder given to [`fetch`]).
    pub path: PathBuf,
}

/// Whether an ADD source is a URL rather than a context path.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The file name Docker gives a download: the last non-empty path segment, without the query.
pub fn file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.rsplit('/')
        .find(|s| !s.is_empty() && *s != "." && *s != "..")
        .unwrap_or("__unnamed__")
        .to_owned()
}

/// Downloads `url` into `dir`, verifying `checksum` (`sha256:<hex>`) when given.
pub fn fetch(url: &str, dir: &Path, checksum: Option<&str>) -> Result<Fetched, FetchError> {
    let http = |e: ureq::Error| FetchError::Http {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(http)?;
    let modified = response
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let name = file_name(url);
    let path = dir.join(&name);
    let werr = |source| FetchError::Write {
        url: url.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(werr)?;
    let mut out = HashingWriter::new(io::BufWriter::new(file));
    let mut body = response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD + 1)
        .reader();
    let n = io::copy(&mut (&mut body).take(MAX_DOWNLOAD + 1), &mut out).map_err(|e| {
        FetchError::Http {
            url: url.to_owned(),
            message: e.to_string(),
        }
    })?;
    if n > MAX_DOWNLOAD {
        return Err(FetchError::TooLarge {
            url: url.to_owned(),
            limit: MAX_DOWNLOAD,
        });
    }
    out.flush().map_err(werr)?;
    let (buf, hash, _) = out.finish();
    let file = buf.into_inner().map_err(|e| werr(e.into_error()))?;
    let digest = Digest::from_bytes(hash);
    if let Some(expected) = checksum {
        if expected != digest.to_string() {
            return Err(FetchError::Checksum {
                url: url.to_owned(),
                expected: expected.to_owned(),
                found: digest,
            });
        }
    }
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(werr)?;
    if let Some(t) = modified {
        file.set_modified(t).map_err(werr)?;
    }
    Ok(Fetched { name, digest, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_path_segment() {
        assert_eq!(
            file_name("https://example.com/a/b/tool.tar.gz?x=1"),
            "tool.tar.gz"
        );
        assert_eq!(file_name("http://example.com/dir/"), "dir");
        assert_eq!(file_name("http://example.com"), "__unnamed__");
        assert_eq!(file_name("http://example.com/../.."), "__unnamed__");
    }
}
