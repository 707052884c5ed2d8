//! A tenant on a farm of replicas: the shared registry is the truth, each replica's store a
//! cache of it. A tenant's builds read and write its registry build cache, the tags it makes
//! are pushed as they are made, and a pull looks in its repository first, so a replica that
//! dies loses no step result and no tag (see README, "A farm of replicas").

use std::path::PathBuf;

use super::config::FarmConfig;
use super::http::ApiError;
use super::Tenant;
use crate::build::remote_cache::{CacheExport, CacheLocation, CacheMode};
use crate::progress::Transfer;
use crate::reference::ImageRef;
use crate::registry::{Credential, Credentials, RegistryError, StaticCredentials};

/// Largest credentials file read.
const MAX_AUTH_FILE: u64 = 1 << 20;

/// The request's credentials, then the tenant's `registry_auth` file (read on each use, so it
/// can be rotated without a restart).
pub(crate) struct FarmCredentials {
    pub request: StaticCredentials,
    pub file: Option<PathBuf>,
}

impl Credentials for FarmCredentials {
    fn get(&self, key: &str) -> Result<Option<Credential>, RegistryError> {
        if let Some(c) = self.request.get(key)? {
            return Ok(Some(c));
        }
        let Some(path) = &self.file else {
            return Ok(None);
        };
        use std::io::Read;
        let mut text = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_AUTH_FILE).read_to_end(&mut text))
            .map_err(|e| RegistryError::Credentials {
                registry: key.to_owned(),
                why: format!("{}: {e}", path.display()),
            })?;
        crate::registry::creds::from_config_text(&text, key)
    }
}

impl FarmConfig {
    /// The cache ref a build with these tags reads and writes: `<cache>:<tag>`, the tag made
    /// from the first `-t` name (readable, and a hash of the whole name so that two names
    /// never share one), `untagged` without one.
    pub(crate) fn cache_ref(&self, tags: &[ImageRef]) -> Option<ImageRef> {
        let cache = self.cache.as_deref()?;
        let tag = match tags.first() {
            None => "untagged".to_owned(),
            Some(t) => {
                let name = t.familiar();
                let readable: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                            c
                        } else {
                            '-'
                        }
                    })
                    .take(100)
                    .collect();
                let hash = blake3::hash(t.to_string().as_bytes()).to_hex();
                format!("{}-{}", readable.trim_start_matches(['.', '-']), &hash[..8])
            }
        };
        ImageRef::parse(&format!("{cache}:{tag}")).ok()
    }

    /// Whether `r` lies in the tenant's cache repository or below it.
    fn owns_cache_ref(&self, r: &ImageRef) -> bool {
        let Some(cache) = self.cache.as_deref() else {
            return false;
        };
        let Ok(base) = ImageRef::parse(&format!("{cache}:x")) else {
            return false;
        };
        r.domain() == base.domain()
            && (r.path() == base.path() || r.path().starts_with(&format!("{}/", base.path())))
    }

    /// Where `r` is kept in the tenant's registry: `<push>/<repository>:<tag>`.
    pub(crate) fn pushed_name(&self, r: &ImageRef) -> Option<ImageRef> {
        let push = self.push.as_deref()?;
        let repo = r.familiar_name();
        let tag = r.tag()?;
        ImageRef::parse(&format!("{push}/{repo}:{tag}")).ok()
    }
}

impl Tenant {
    /// The caches a build reads (`cachefrom`, which must name refs in the tenant's cache
    /// repository, then the automatic one) and writes (the automatic one).
    pub(crate) fn build_caches(
        &self,
        tags: &[ImageRef],
        cache_from: &[String],
    ) -> Result<(Vec<CacheLocation>, Vec<CacheExport>), ApiError> {
        let mut from = Vec::new();
        for c in cache_from {
            let r = ImageRef::parse(c)
                .map_err(|e| ApiError::bad_request(format!("cachefrom {c:?}: {e}")))?;
            if !self.farm.owns_cache_ref(&r) {
                return Err(ApiError::forbidden(match &self.farm.cache {
                    Some(cache) => format!(
                        "cachefrom {c:?}: tenant {} may use only build caches under {cache}",
                        self.name
                    ),
                    None => format!(
                        "cachefrom {c:?}: kiln serve takes cache refs only from a tenant's registry build cache, and tenant {} has none (cache = ... in the server's config)",
                        self.name
                    ),
                }));
            }
            from.push(CacheLocation::Registry(r));
        }
        let mut to = Vec::new();
        if let Some(r) = self.farm.cache_ref(tags) {
            from.push(CacheLocation::Registry(r.clone()));
            to.push(CacheExport {
                to: CacheLocation::Registry(r),
                mode: CacheMode::Max,
                // The blobs push-on-tag made when it has them, else zstd.
                compression: None,
                mounts: self.farm.cache_mounts,
                // The image is built either way; the next build on another replica then
                // runs more steps, which the warning says.
                ignore_error: true,
            });
        }
        Ok((from, to))
    }

    /// Push-on-tag: pushes each of `tags` to the tenant's registry. A failure is reported to
    /// `events` and returned: the tag exists here, but not yet where a replica that replaces
    /// this one would find it.
    pub(crate) fn push_tags(
        &self,
        client: &crate::registry::Client,
        tags: &[ImageRef],
        events: &(dyn Fn(Transfer) + Sync),
    ) -> Result<(), RegistryError> {
        for t in tags {
            let Some(target) = self.farm.pushed_name(t) else {
                continue;
            };
            let quiet = |_: Transfer| {};
            let pushed = crate::registry::push_as(
                client,
                &self.store,
                &t.to_string(),
                &target,
                &crate::registry::PushOptions::default(),
                &quiet,
            )?;
            events(Transfer::status(format!(
                "pushed {} as {} ({})",
                t.familiar(),
                target.familiar(),
                pushed.digest
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_refs_stay_in_the_tenants_repository() {
        let f = FarmConfig {
            cache: Some("reg.internal:5000/alice/cache".into()),
            push: Some("reg.internal:5000/alice".into()),
            ..FarmConfig::default()
        };
        let app = ImageRef::parse("app").unwrap();
        let r = f.cache_ref(std::slice::from_ref(&app)).unwrap();
        assert_eq!(r.path(), "alice/cache");
        assert!(r.tag().unwrap().starts_with("app-latest-"), "{r}");
        let other = f
            .cache_ref(&[ImageRef::parse("app-latest").unwrap()])
            .unwrap();
        assert_ne!(r, other);
        assert_eq!(
            f.cache_ref(&[]).unwrap().tag(),
            Some("untagged"),
            "untagged builds share one ref"
        );
        for (c, ok) in [
            ("reg.internal:5000/alice/cache:x", true),
            ("reg.internal:5000/alice/cache/sub:x", true),
            ("reg.internal:5000/alice/cachex:x", false),
            ("reg.internal:5000/bob/cache:x", false),
            ("other:5000/alice/cache:x", false),
        ] {
            assert_eq!(f.owns_cache_ref(&ImageRef::parse(c).unwrap()), ok, "{c}");
        }
        assert_eq!(
            f.pushed_name(&app).unwrap().to_string(),
            "reg.internal:5000/alice/app:latest"
        );
        assert_eq!(
            f.pushed_name(&ImageRef::parse("me/tool:1").unwrap())
                .unwrap()
                .to_string(),
            "reg.internal:5000/alice/me/tool:1"
        );
    }
}
