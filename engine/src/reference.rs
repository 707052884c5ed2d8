//! Docker image references: parsing and normalisation exactly like `docker` does.
//!
//! [`ImageRef::parse`] is `ParseNormalizedNamed` followed by `TagNameOnly` from
//! `github.com/distribution/reference`: `redis` becomes `docker.io/library/redis:latest`,
//! `user/repo` becomes `docker.io/user/repo:latest`, `localhost:5000/x:1` keeps its registry, and
//! `name@sha256:<hex>` stays a digest reference (no tag is added). [`ImageRef::familiar`] gives
//! the short form docker shows (`redis:latest`, `user/repo:1`).
//!
//! The grammar (from upstream's `reference.go`):
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] remote-name
//! domain           := host [':' port-number]
//! host             := domain-name | '[' IPv6address ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! remote-name      := path-component ['/' path-component]*
//! path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
//! separator        := /[_.]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! ```
//!
//! Upstream matches this with one regular expression; here each piece is a small hand-written
//! matcher, arranged so that the same inputs are accepted and split the same way (including the
//! quirk that a first component which looks like a domain but is not a valid one, such as
//! `foo_bar.com/x`, is read as part of the path). Digests must be `sha256`, the only algorithm
//! kiln's store supports.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry that names without a domain refer to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of Docker Hub's official images.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag added to a name that has neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest repository path (without the domain) upstream accepts.
pub const MAX_PATH_LEN: usize = 255;

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference {input:?}: {kind}")]
pub struct ReferenceError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub kind: ReferenceErrorKind,
}

/// The ways a reference can be invalid; the messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceErrorKind {
    /// The input does not follow the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// The input would be valid if it were lowercase.
    #[error("repository name must be lowercase")]
    NameContainsUppercase,
    /// The repository part (after domain normalisation) has uppercase letters.
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    RemoteNameUppercase(String),
    /// The repository path is longer than [`MAX_PATH_LEN`].
    #[error("repository name must not be more than {MAX_PATH_LEN} characters")]
    NameTooLong,
    /// The input is 64 hex digits, which docker reserves for image IDs.
    #[error("invalid repository name, cannot specify 64-byte hexadecimal strings")]
    HexIdentifier,
    /// The digest uses an algorithm other than sha256.
    #[error("unsupported digest algorithm")]
    UnsupportedDigest,
    /// The digest is sha256 but not 64 lowercase hex digits.
    #[error("invalid checksum digest format")]
    InvalidDigest,
    /// A tag given on its own does not match `[\w][\w.-]{0,127}`.
    #[error("invalid tag format")]
    InvalidTag,
}

/// A normalised Docker image reference: a repository (`domain/path`) with a tag, a digest, or
/// both. Constructed only by [`ImageRef::parse`] (and [`ImageRef::with_tag`]), so every value is
/// in canonical form and its [`Display`](fmt::Display) is the full name
/// (`docker.io/library/redis:latest`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// Empty only in the upstream quirk described in the module docs.
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises `s` like docker's `ParseNormalizedNamed` + `TagNameOnly`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let err = |kind| ReferenceError {
            input: s.to_owned(),
            kind,
        };
        if is_hex_identifier(s) {
            return Err(err(ReferenceErrorKind::HexIdentifier));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder
            .split_once(':')
            .map_or(remainder.as_str(), |(r, _)| r);
        if remote.to_lowercase() != remote {
            return Err(err(ReferenceErrorKind::RemoteNameUppercase(
                remote.to_owned(),
            )));
        }
        let mut r = parse_full(&format!("{domain}/{remainder}")).map_err(err)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_owned());
        }
        Ok(r)
    }

    /// The same repository with `tag` instead of any tag or digest it had.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !is_tag(tag) {
            return Err(ReferenceError {
                input: tag.to_owned(),
                kind: ReferenceErrorKind::InvalidTag,
            });
        }
        Ok(Self {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    /// The registry part (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (`library/redis`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full repository name without tag or digest (`docker.io/library/redis`).
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The tag, if any (`latest`).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The repository name as docker shows it (`redis`, `user/repo`, `localhost:5000/x`).
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_owned(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The whole reference as docker shows it (`redis:latest`, `user/repo@sha256:...`).
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        self.push_suffix(&mut s);
        s
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Self::parse(s)
    }
}

/// Upstream's `splitDockerDomain`: decides whether the first component names a registry and
/// adds `docker.io` and `library/` where docker would.
fn split_docker_domain(name: &str) -> (String, String) {
    let Some((maybe_domain, rest)) = name.split_once('/') else {
        return (
            DEFAULT_DOMAIN.to_owned(),
            format!("{OFFICIAL_REPO_PREFIX}{name}"),
        );
    };
    let (domain, mut remote) = if maybe_domain == "localhost" {
        (maybe_domain.to_owned(), rest.to_owned())
    } else if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN.to_owned(), rest.to_owned())
    } else if maybe_domain.contains(['.', ':']) || maybe_domain.to_lowercase() != maybe_domain {
        (maybe_domain.to_owned(), rest.to_owned())
    } else {
        (DEFAULT_DOMAIN.to_owned(), name.to_owned())
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        remote = format!("{OFFICIAL_REPO_PREFIX}{remote}");
    }
    (domain, remote)
}

/// Upstream's `Parse` for a string that is `domain/remainder`.
fn parse_full(s: &str) -> Result<ImageRef, ReferenceErrorKind> {
    let Some(parts) = match_reference(s) else {
        let lower = s.to_lowercase();
        if lower != s && match_reference(&lower).is_some() {
            return Err(ReferenceErrorKind::NameContainsUppercase);
        }
        return Err(ReferenceErrorKind::InvalidFormat);
    };
    if parts.path.len() > MAX_PATH_LEN {
        return Err(ReferenceErrorKind::NameTooLong);
    }
    let digest = match parts.digest {
        None => None,
        Some(d) => Some(parse_digest(d)?),
    };
    Ok(ImageRef {
        domain: parts.domain.to_owned(),
        path: parts.path.to_owned(),
        tag: parts.tag.map(str::to_owned),
        digest,
    })
}

/// `go-digest`'s `Parse` restricted to the algorithms kiln supports.
fn parse_digest(d: &str) -> Result<Digest, ReferenceErrorKind> {
    let (alg, _) = d.split_once(':').ok_or(ReferenceErrorKind::InvalidFormat)?;
    if alg != "sha256" {
        return Err(ReferenceErrorKind::UnsupportedDigest);
    }
    d.parse().map_err(|_| ReferenceErrorKind::InvalidDigest)
}

/// The pieces of a syntactically valid reference.
struct Parts<'a> {
    domain: &'a str,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Matches `name [":" tag] ["@" digest]` the way upstream's anchored regular expression does.
fn match_reference(s: &str) -> Option<Parts<'_>> {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            if !is_digest_syntax(d) {
                return None;
            }
            (r, Some(d))
        }
        None => (s, None),
    };
    // A tag follows the last ':' after the last '/'; a ':' before that belongs to a port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&rest[..at], Some(&rest[at + 1..]))
        }
        None => (rest, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return None;
        }
    }
    let (domain, path) = match_name(name)?;
    Some(Parts {
        domain,
        path,
        tag,
        digest,
    })
}

/// Splits a name into domain and path, preferring a domain like the regex's optional group.
fn match_name(name: &str) -> Option<(&str, &str)> {
    if let Some((domain, path)) = name.split_once('/') {
        if is_domain_and_port(domain) && is_remote_name(path) {
            return Some((domain, path));
        }
    }
    is_remote_name(name).then_some(("", name))
}

fn is_remote_name(s: &str) -> bool {
    s.split('/').all(is_path_component)
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separator `[._] | __ | -+`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let run = |mut i: usize| {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    let Some(mut i) = run(0) else {
        return false;
    };
    while i < b.len() {
        i = match b[i] {
            b'.' => i + 1,
            b'_' if b.get(i + 1) == Some(&b'_') => i + 2,
            b'_' => i + 1,
            b'-' => {
                let mut j = i;
                while j < b.len() && b[j] == b'-' {
                    j += 1;
                }
                j
            }
            _ => return false,
        };
        match run(i) {
            Some(next) => i = next,
            None => return false,
        }
    }
    true
}

/// `host [':' port]` with host a domain name or a bracketed IPv6 address.
fn is_domain_and_port(s: &str) -> bool {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return false;
        };
        let addr = &inner[..close];
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        (None, &inner[close + 1..])
    } else {
        match s.find(':') {
            Some(i) => (Some(&s[..i]), &s[i..]),
            None => (Some(s), ""),
        }
    };
    if let Some(h) = host {
        if !h.split('.').all(is_domain_component) {
            return false;
        }
    }
    match port.strip_prefix(':') {
        Some(p) => !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()),
        None => port.is_empty(),
    }
}

fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = s.as_bytes();
    match b.split_first() {
        Some((first, rest)) => {
            word(*first)
                && rest.len() <= 127
                && rest.iter().all(|c| word(*c) || *c == b'.' || *c == b'-')
        }
        None => false,
    }
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`.
fn is_digest_syntax(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(u8::is_ascii_alphanumeric)
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

/// 64 lowercase hex digits: docker's image-ID form, never a repository name.
fn is_hex_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn full(s: &str) -> String {
        ImageRef::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    fn kind(s: &str) -> ReferenceErrorKind {
        match ImageRef::parse(s) {
            Ok(r) => panic!("{s} parsed as {r}"),
            Err(e) => e.kind,
        }
    }

    #[test]
    fn normalises_like_docker() {
        for (input, want) in [
            ("redis", "docker.io/library/redis:latest"),
            ("redis:7", "docker.io/library/redis:7"),
            ("user/repo", "docker.io/user/repo:latest"),
            ("localhost:5000/x:1", "localhost:5000/x:1"),
            ("localhost/x", "localhost/x:latest"),
            ("index.docker.io/debian", "docker.io/library/debian:latest"),
            (
                "docker.io/library/foo/bar",
                "docker.io/library/foo/bar:latest",
            ),
            ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),
            ("LOCALDOMAIN/debian", "LOCALDOMAIN/debian:latest"),
            ("[fc00::1]:5000/docker", "[fc00::1]:5000/docker:latest"),
            ("foo_bar.com/x", "foo_bar.com/x:latest"),
            ("test-com:8080/foo", "test-com:8080/foo:latest"),
            ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest"),
            (
                "lowercase:Uppercase",
                "docker.io/library/lowercase:Uppercase",
            ),
            ("dock__er/docker", "docker.io/dock__er/docker:latest"),
            (
                "docker---rules/docker",
                "docker.io/docker---rules/docker:latest",
            ),
        ] {
            assert_eq!(full(input), want, "{input}");
        }
    }

    #[test]
    fn parse_docker_ref_table() {
        let d = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest".to_owned()),
            (
                "busybox:latest",
                "docker.io/library/busybox:latest".to_owned(),
            ),
            (
                &format!("busybox@{d}")[..],
                format!("docker.io/library/busybox@{d}"),
            ),
            (
                "library/busybox",
                "docker.io/library/busybox:latest".to_owned(),
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest".to_owned(),
            ),
            (
                "docker.io/library/busybox",
                "docker.io/library/busybox:latest".to_owned(),
            ),
            (
                "gcr.io/library/busybox",
                "gcr.io/library/busybox:latest".to_owned(),
            ),
        ] {
            assert_eq!(full(input), want, "{input}");
        }
        let both = ImageRef::parse(&format!("busybox:latest@{d}")).unwrap();
        assert_eq!(both.tag(), Some("latest"));
        assert_eq!(both.digest().map(ToString::to_string).as_deref(), Some(d));
        assert_eq!(both.familiar(), format!("busybox:latest@{d}"));
    }

    #[test]
    fn repository_info_table() {
        // (familiar, full, ambiguous, domain, path) from upstream's TestParseRepositoryInfo.
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            ("localhost/fooo", "localhost/fooo", "", "localhost", "fooo"),
            (
                "localhost/fooo/bar",
                "localhost/fooo/bar",
                "",
                "localhost",
                "fooo/bar",
            ),
            (
                "LOCALDOMAIN/fooo",
                "LOCALDOMAIN/fooo",
                "",
                "LOCALDOMAIN",
                "fooo",
            ),
            (
                "fooo/bar",
                "docker.io/fooo/bar",
                "index.docker.io/fooo/bar",
                "docker.io",
                "fooo/bar",
            ),
            (
                "ubuntu",
                "docker.io/library/ubuntu",
                "library/ubuntu",
                "docker.io",
                "library/ubuntu",
            ),
            (
                "nonlibrary/ubuntu",
                "docker.io/nonlibrary/ubuntu",
                "",
                "docker.io",
                "nonlibrary/ubuntu",
            ),
            (
                "other/library",
                "docker.io/other/library",
                "",
                "docker.io",
                "other/library",
            ),
            (
                "127.0.0.1:8000/privatebase",
                "127.0.0.1:8000/privatebase",
                "",
                "127.0.0.1:8000",
                "privatebase",
            ),
            (
                "example.com:8000/private/moonbase",
                "example.com:8000/private/moonbase",
                "",
                "example.com:8000",
                "private/moonbase",
            ),
            (
                "ubuntu-12.04-base",
                "docker.io/library/ubuntu-12.04-base",
                "index.docker.io/library/ubuntu-12.04-base",
                "docker.io",
                "library/ubuntu-12.04-base",
            ),
            (
                "foo",
                "docker.io/library/foo",
                "docker.io/foo",
                "docker.io",
                "library/foo",
            ),
            (
                "library/foo/bar",
                "docker.io/library/foo/bar",
                "",
                "docker.io",
                "library/foo/bar",
            ),
            (
                "store/foo/bar",
                "docker.io/store/foo/bar",
                "",
                "docker.io",
                "store/foo/bar",
            ),
            ("Foo/bar", "Foo/bar", "", "Foo", "bar"),
            ("FOO/bar", "FOO/bar", "", "FOO", "bar"),
        ];
        for &(familiar, fullname, ambiguous, domain, path) in cases {
            for input in [familiar, fullname, ambiguous] {
                if input.is_empty() {
                    continue;
                }
                let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
                assert_eq!(r.familiar_name(), familiar, "{input}");
                assert_eq!(r.name(), fullname, "{input}");
                assert_eq!(r.domain(), domain, "{input}");
                assert_eq!(r.path(), path, "{input}");
                assert_eq!(r.tag(), Some("latest"));
                assert_eq!(r.familiar(), format!("{familiar}:latest"));
            }
        }
    }

    #[test]
    fn valid_repository_names() {
        for name in [
            "docker/docker",
            "library/debian",
            "debian",
            "localhost/library/debian",
            "docker.io/docker/docker",
            "index.docker.io/library/debian",
            "127.0.0.1:5000/docker/docker",
            "192.168.0.1",
            "192.168.0.1:8/debian",
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "[fc00::1]:5000/docker/docker",
            "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "Docker/docker",
            "DOCKER/docker",
            "docker-rules/docker",
            "d/docker",
            "jess/t",
        ] {
            assert!(ImageRef::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn invalid_repository_names() {
        let too_long = format!("{}/docker", "a".repeat(256));
        for name in [
            "https://github.com/docker/docker",
            "docker/Docker",
            "-docker",
            "-docker/docker",
            "-docker.io/docker/docker",
            "docker///docker",
            "docker.io/docker/Docker",
            "docker.io/docker///docker",
            "[fc00::1]",
            "[fc00::1]:5000",
            "fc00::1:5000/debian",
            "[fe80::1%eth0]:5000/debian",
            "[2001:db8:3:4::192.0.2.33]:5000/debian",
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "docker-/docker",
            "-docker-/docker",
            "____/____",
            "_docker/_docker",
            "dock..er/docker",
            "dock_.er/docker",
            "dock-.er/docker",
            "docker/",
            "",
            ":justtag",
            "aa/asdf$$^/aa",
            &too_long,
        ] {
            assert!(ImageRef::parse(name).is_err(), "{name:?} should be invalid");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            kind("Uppercase:tag"),
            ReferenceErrorKind::RemoteNameUppercase("library/Uppercase".into())
        );
        assert_eq!(
            kind("test:5000/Uppercase/lowercase:tag"),
            ReferenceErrorKind::RemoteNameUppercase("Uppercase/lowercase".into())
        );
        assert_eq!(kind(""), ReferenceErrorKind::InvalidFormat);
        assert_eq!(
            kind(&format!("domain.com/{}:tag", "a".repeat(256))),
            ReferenceErrorKind::NameTooLong
        );
        assert_eq!(kind(&"b".repeat(64)), ReferenceErrorKind::HexIdentifier);
        assert_eq!(
            kind("repo@sha256:ffffffffffffffffffffffffffffffffff"),
            ReferenceErrorKind::InvalidDigest
        );
        assert_eq!(
            kind("validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
            ReferenceErrorKind::UnsupportedDigest
        );
        assert_eq!(
            kind(&format!("a/b:{}", "t".repeat(129))),
            ReferenceErrorKind::InvalidFormat
        );
        let e = ImageRef::parse("Uppercase:tag").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid reference \"Uppercase:tag\": invalid reference format: repository name (library/Uppercase) must be lowercase"
        );
    }

    #[test]
    fn upstream_parse_table() {
        // Upstream's TestReferenceParse inputs, given an explicit domain so normalisation is a
        // no-op: (input, domain, path, tag, digest).
        let long_path = format!("{}a", "a/".repeat(127));
        let long_input = format!("{long_path}:tag-puts-this-over-max");
        let max_path = "a".repeat(255);
        let max_input = format!("example.com/{max_path}:tag");
        type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            ("test.com/repo:tag", "test.com", "repo", Some("tag"), None),
            ("test:5000/repo", "test:5000", "repo", None, None),
            ("test:5000/repo:tag", "test:5000", "repo", Some("tag"), None),
            ("test:5000/repo@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "test:5000", "repo", None, Some(D)),
            ("test:5000/repo:tag@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "test:5000", "repo", Some("tag"), Some(D)),
            ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com", "bar/baz/quux", Some("some-long-tag"), None),
            ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io", "test.example.com/my-app", Some("test.example.com"), None),
            ("xn--7o8h.com/myimage:xn--7o8h.com@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "xn--7o8h.com", "myimage", Some("xn--7o8h.com"), Some(D)),
            ("192.168.1.1/repo", "192.168.1.1", "repo", None, None),
            ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", Some("5050"), None),
            ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", None, None),
            ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]", "repo", Some("tag"), None),
            ("[2001:db8::1]:5000/repo:tag@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "[2001:db8::1]:5000", "repo", Some("tag"), Some(D)),
            ("[::1]:5000/repo", "[::1]:5000", "repo", None, None),
            (&long_input, "docker.io", &long_path, Some("tag-puts-this-over-max"), None),
            (&max_input, "example.com", &max_path, Some("tag"), None),
        ];
        for (input, domain, path, tag, digest) in cases {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.domain(), domain, "{input}");
            assert_eq!(r.path(), path, "{input}");
            let want_tag = if tag.is_none() && digest.is_none() {
                Some("latest")
            } else {
                tag
            };
            assert_eq!(r.tag(), want_tag, "{input}");
            assert_eq!(
                r.digest().map(ToString::to_string).as_deref(),
                digest,
                "{input}"
            );
        }
        for bad in [
            "[2001:db8::1]:5000",
            "[fe80::1%eth0]:5000/repo",
            "[fe80::1%@invalidzone]:5000/repo",
            "@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn familiar_forms() {
        assert_eq!(ImageRef::parse("redis").unwrap().familiar(), "redis:latest");
        assert_eq!(
            ImageRef::parse("user/repo:ver").unwrap().familiar(),
            "user/repo:ver"
        );
        assert_eq!(
            ImageRef::parse("docker.io/library/a/b:1")
                .unwrap()
                .familiar(),
            "library/a/b:1"
        );
        assert_eq!(
            ImageRef::parse("localhost:5000/x:1").unwrap().familiar(),
            "localhost:5000/x:1"
        );
        let r = ImageRef::parse("redis:7").unwrap();
        assert_eq!(
            r.with_tag("8").unwrap().to_string(),
            "docker.io/library/redis:8"
        );
        assert!(r.with_tag("-x").is_err());
        // The printed full form parses back to the same reference.
        for s in [
            "redis",
            "a.b/c/d:e",
            "localhost/x@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ] {
            let r = ImageRef::parse(s).unwrap();
            assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
            assert_eq!(ImageRef::parse(&r.familiar()).unwrap(), r);
        }
    }
}
