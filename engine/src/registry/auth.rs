//! Credentials and `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::fmt;

/// What kiln can present to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or personal access token).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token from an earlier login (`identitytoken` in docker's config).
    IdentityToken {
        /// The user name, if known (sent as `account`).
        username: String,
        /// The refresh token.
        token: String,
    },
    /// A bearer token to send as is (`registrytoken`).
    RegistryToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username:?}, ***)"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username:?}, ***)")
            }
            Credential::RegistryToken(_) => write!(f, "RegistryToken(***)"),
        }
    }
}

impl Credential {
    /// The user name, if the credential has one.
    pub fn username(&self) -> Option<&str> {
        match self {
            Credential::Basic { username, .. } | Credential::IdentityToken { username, .. }
                if !username.is_empty() =>
            {
                Some(username)
            }
            _ => None,
        }
    }

    /// The `Authorization` value for Basic auth, when the credential is a password.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(basic(username, password)),
            _ => None,
        }
    }
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`.
    Basic,
    /// `Bearer realm="...",service="...",scope="..."[,error="..."]`.
    Bearer {
        /// The token server's URL.
        realm: String,
        /// The service name to ask the token server for.
        service: Option<String>,
        /// The scope the registry asked for (space-separated).
        scope: Option<String>,
        /// `insufficient_scope`, `invalid_token`.
        error: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value: `Scheme k="v", k=v, Scheme2 ...`. Unknown schemes are
/// skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        let end = rest.find([' ', ',']).unwrap_or(rest.len());
        let scheme = &rest[..end];
        rest = rest[end..].trim_start_matches([' ', ',']);
        let mut params = BTreeMap::new();
        // Parameters: name=value pairs until the next bare token (the next scheme).
        while let Some(eq) = rest.find('=') {
            let name = rest[..eq].trim();
            if name.is_empty() || name.contains([' ', ',']) {
                break;
            }
            let after = &rest[eq + 1..];
            let (value, tail) = if let Some(q) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &q[end.min(q.len())..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            };
            params.insert(name.to_ascii_lowercase(), value);
            rest = tail.trim_start_matches([' ', ',']);
        }
        if scheme.eq_ignore_ascii_case("basic") {
            out.push(Challenge::Basic);
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if let Some(realm) = params.remove("realm") {
                out.push(Challenge::Bearer {
                    realm,
                    service: params.remove("service"),
                    scope: params.remove("scope"),
                    error: params.remove("error"),
                });
            }
        }
    }
    out
}

/// A token server's answer.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_like_docker_hubs_and_distributions() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            [Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
                error: None,
            }]
        );
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            [Challenge::Basic]
        );
        let c = parse_challenges(
            r#"Bearer realm="http://t/x",service="s",scope="repository:a:pull,push repository:b:pull",error="insufficient_scope""#,
        );
        assert!(
            matches!(&c[0], Challenge::Bearer { scope: Some(s), error: Some(e), .. }
            if s == "repository:a:pull,push repository:b:pull" && e == "insufficient_scope")
        );
        // Two challenges in one header, an escaped quote, and an unknown scheme skipped.
        let c = parse_challenges(r#"Negotiate, Basic realm="a\"b", Bearer realm=http://t"#);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges("Bearer service=x").is_empty(), "no realm");
    }

    #[test]
    fn credentials_never_print_their_secrets() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.basic_header().unwrap(), "Basic dTpodW50ZXIy");
    }
}
