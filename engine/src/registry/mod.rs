//! A registry client: pull images into the store, push them out, log in.
//!
//! The client speaks the OCI distribution API the way docker and containers/image do (see
//! `shared/registry-notes.md`): it probes `/v2/`, answers Basic or Bearer challenges (tokens
//! scoped from the challenge, reused until they expire, fetched again once on
//! `insufficient_scope`, OAuth2 refresh for identity tokens), retries 408/429/5xx honouring
//! `Retry-After`, streams every blob into the store while hashing it, and resumes a broken
//! download with `Range`.
//!
//! Nothing here knows the CLI or the server. A caller supplies [`Settings`] (per-registry TLS,
//! plain HTTP and mirrors), a [`Credentials`] source (the user's docker config for the CLI,
//! the request's headers for the server) and optionally an [`Egress`] policy that every
//! address kiln connects to must pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub mod auth;
pub mod creds;
pub mod egress;
pub mod platform;
pub mod pull;
pub mod push;
pub mod settings;
mod transport;

pub use auth::Credential;
pub use creds::{Credentials, DockerConfig, NoCredentials, StaticCredentials};
pub use egress::Egress;
pub use platform::PlatformSpec;
pub use pull::{fetch_artifact, fetch_blobs, pull, Artifact, PullOptions, PullPolicy, Pulled};
pub use push::{push, push_artifact, push_as, PushOptions, Pushed};
pub use settings::Settings;

use crate::digest::Digest;
use crate::reference::{ImageRef, DEFAULT_DOMAIN};
use transport::Session;

/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// The key Docker Hub's credentials are stored under in docker's config.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
/// Largest manifest or index accepted (the distribution spec's minimum, containers/image's cap).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG: u64 = 8 << 20;
/// Largest token-server answer accepted.
pub const MAX_TOKEN_BODY: u64 = 1 << 20;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connecting or talking to the registry failed.
    #[error("{url}: {message}")]
    Http {
        /// What was asked for.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The registry answered with an error status.
    #[error("{url}: {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        /// What was asked for.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error text, if it sent one.
        detail: Option<String>,
    },
    /// The registry wants credentials that kiln does not have, or refused them.
    #[error("{registry}: unauthorized: {detail}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What the registry said.
        detail: String,
    },
    /// The repository, tag or manifest does not exist.
    #[error("manifest for {0} not found: manifest unknown")]
    NotFound(String),
    /// The registry sent something that is not what it should be.
    #[error("{what}: {why}")]
    Protocol {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// Content did not hash to the digest it was asked for under.
    #[error("{what}: content does not match its digest {expected}")]
    DigestMismatch {
        /// What was being read.
        what: String,
        /// The digest asked for.
        expected: Digest,
    },
    /// A document is larger than kiln accepts.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// Docker's schema 1 manifests are not supported.
    #[error("{0}: Docker Image Format v1 and Docker Image manifest version 2, schema 1 support has been removed; push the image again with a current client")]
    Schema1(String),
    /// No manifest in an index matches the requested platform.
    #[error("no matching manifest for {platform} in the manifest list entries of {reference}")]
    NoPlatform {
        /// The image.
        reference: String,
        /// The platform asked for.
        platform: String,
    },
    /// The configuration asks for something that cannot work.
    #[error("registry configuration: {0}")]
    Config(String),
    /// The egress policy refused a destination.
    #[error("{host}: {why}")]
    Refused {
        /// The host.
        host: String,
        /// Why.
        why: String,
    },
    /// A credential helper or the docker config failed.
    #[error("credentials for {registry}: {why}")]
    Credentials {
        /// The registry.
        registry: String,
        /// Why.
        why: String,
    },
    /// The image is not in the store (push).
    #[error("An image does not exist locally with the tag: {0}")]
    NoLocalImage(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Compressing a layer failed.
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    /// The operation was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl RegistryError {
    /// Whether the error is about the user's input or the remote side rather than kiln.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, RegistryError::Store(e) if !e.is_user_error())
    }
}

/// Where a repository lives: which host to talk to, and the repository's path there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as it appears in URLs.
    pub host: String,
    /// The repository path (`library/alpine`).
    pub path: String,
}

/// The host that serves the registry a reference names (`docker.io` is served elsewhere).
pub fn registry_host(domain: &str) -> &str {
    if domain == DEFAULT_DOMAIN || domain == "index.docker.io" {
        DOCKER_HUB_HOST
    } else {
        domain
    }
}

/// The key credentials for `domain` are kept under in docker's config.
pub fn auth_key(domain: &str) -> String {
    if domain == DEFAULT_DOMAIN
        || domain == "index.docker.io"
        || domain == DOCKER_HUB_HOST
        || domain == DOCKER_HUB_AUTH_KEY
    {
        DOCKER_HUB_AUTH_KEY.to_owned()
    } else {
        domain.to_owned()
    }
}

/// A registry client: one per operation or per request, holding sessions (with their tokens)
/// per registry host.
pub struct Client {
    settings: Arc<Settings>,
    creds: Arc<dyn Credentials>,
    egress: Option<Arc<dyn Egress>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    user_agent: String,
}

impl Client {
    /// A client with these settings and credentials, and an egress policy when given.
    pub fn new(
        settings: Arc<Settings>,
        creds: Arc<dyn Credentials>,
        egress: Option<Arc<dyn Egress>>,
    ) -> Self {
        Self {
            settings,
            creds,
            egress,
            sessions: Mutex::new(HashMap::new()),
            user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The session with `host`, made on first use.
    fn session(&self, host: &str, domain: &str) -> Result<Arc<Session>, RegistryError> {
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| RegistryError::Config("session table poisoned".into()))?;
        if let Some(s) = sessions.get(host) {
            return Ok(s.clone());
        }
        let cred = self.creds.get(&auth_key(domain))?;
        let s = Arc::new(Session::new(
            host,
            self.settings.host(host),
            cred,
            self.egress.clone(),
            &self.user_agent,
        )?);
        sessions.insert(host.to_owned(), s.clone());
        Ok(s)
    }

    /// The endpoints to pull `r` from, in order: its registry's mirrors, then the registry.
    fn pull_endpoints(&self, r: &ImageRef) -> Vec<Endpoint> {
        let host = registry_host(r.domain()).to_owned();
        let mut out: Vec<Endpoint> = self
            .settings
            .mirrors(r.domain())
            .into_iter()
            .map(|m| Endpoint {
                host: m,
                path: r.path().to_owned(),
            })
            .collect();
        out.push(Endpoint {
            host,
            path: r.path().to_owned(),
        });
        out
    }

    /// Checks that `cred` is accepted by the registry `domain` (`kiln login`); returns the
    /// identity token the registry's token server handed out, if any.
    pub fn login(&self, domain: &str, cred: &Credential) -> Result<Option<String>, RegistryError> {
        let host = registry_host(domain);
        let s = Session::new(
            host,
            self.settings.host(host),
            Some(cred.clone()),
            self.egress.clone(),
            &self.user_agent,
        )?;
        s.login()
    }
}
