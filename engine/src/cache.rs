//! The build cache: step results keyed by blake3 over everything a step depends on.
//!
//! A key is `blake3(parent key ‖ labelled parts)`, where the parts are the canonical step
//! (instruction, every flag, arguments after expansion), the build args and environment the step
//! can see, and the content digests of its inputs (context files after `.dockerignore`, `--from`
//! stage results, the base image's manifest digest). Display text and `--no-cache` are not part of
//! it. Keys are internal: they never appear in OCI JSON.
//!
//! An entry records what the step produced: the time it was first built (so a fully cached
//! rebuild yields the same image ID, as Docker's does) and its layer, if any. Entries live in
//! `KILN_ROOT/kiln/cache/steps/`, written atomically; a missing, torn or foreign entry is a miss.
//!
//! To tell the user *why* a step missed, the cache also remembers, per step position ("slot":
//! context, Dockerfile, stage and step number), the labelled parts of the last key computed there.
//! On a miss, the first part whose digest differs names the reason.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{CacheKey, DiffId};

/// Errors from the cache. Reads never fail (a bad entry is a miss); writes can.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Writing an entry failed.
    #[error("write cache entry {path}: {source}")]
    Write {
        /// The entry's file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// When the step was first built (RFC 3339), reused for the image history.
    pub created: String,
    /// The layer it added, if it added one.
    pub layer: Option<CachedLayer>,
}

/// A layer produced by a cached step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// The uncompressed tar's digest.
    pub diff_id: DiffId,
    /// The uncompressed tar's size in bytes.
    pub size: u64,
    /// The compressed blob that holds it, when the store does not keep the tar itself (a
    /// layer found in a `--cache-from` cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<crate::image::Descriptor>,
}

impl CachedLayer {
    /// The blob that holds the layer: the compressed one when there is one, else the tar.
    pub fn descriptor(&self) -> crate::image::Descriptor {
        match &self.blob {
            Some(b) => b.clone(),
            None => crate::image::Descriptor::new(
                crate::image::media_types::OCI_LAYER,
                self.diff_id.as_uncompressed_digest(),
                self.size,
            ),
        }
    }
}

/// One labelled input of a key, kept to explain misses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPart {
    /// What the part is (`instruction`, `build-arg FOO`, `files /app`).
    pub label: String,
    /// blake3 of the part's bytes, hex.
    pub digest: String,
}

/// Builds a cache key from labelled parts.
pub struct KeyBuilder {
    hasher: blake3::Hasher,
    parts: Vec<KeyPart>,
}

impl KeyBuilder {
    /// Starts a key chained to `parent` (the previous step's key, or `None` for a stage's
    /// first step, which then adds its base image as a part).
    pub fn new(parent: Option<&CacheKey>) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kiln-cache-v1\0");
        let mut parts = Vec::new();
        if let Some(p) = parent {
            hasher.update(p.hex().as_bytes());
            parts.push(KeyPart {
                label: "parent".to_owned(),
                digest: p.hex(),
            });
        }
        Self { hasher, parts }
    }

    /// Adds a labelled part. Lengths are hashed too, so no two part lists collide by
    /// concatenation.
    pub fn part(&mut self, label: &str, bytes: &[u8]) -> &mut Self {
        let digest = blake3::hash(bytes);
        for field in [label.as_bytes(), digest.as_bytes()] {
            self.hasher.update(&(field.len() as u64).to_le_bytes());
            self.hasher.update(field);
        }
        self.parts.push(KeyPart {
            label: label.to_owned(),
            digest: digest.to_hex().to_string(),
        });
        self
    }

    /// The key and its parts.
    pub fn finish(self) -> (CacheKey, Vec<KeyPart>) {
        (CacheKey::from_hash(self.hasher.finalize()), self.parts)
    }
}

/// The cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache kept in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn entry_path(&self, key: &CacheKey) -> PathBuf {
        let hex = key.hex();
        self.dir.join("steps").join(&hex[..2]).join(hex)
    }

    fn slot_path(&self, slot: &str) -> PathBuf {
        self.dir
            .join("slots")
            .join(blake3::hash(slot.as_bytes()).to_hex().as_str())
    }

    /// Looks a key up. Anything unreadable is a miss.
    pub fn get(&self, key: &CacheKey) -> Option<CacheEntry> {
        let bytes = read_bounded(&self.entry_path(key), 64 * 1024)?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records a step's result.
    pub fn put(&self, key: &CacheKey, entry: &CacheEntry) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(entry).map_err(|e| CacheError::Write {
            path: self.entry_path(key),
            source: e.into(),
        })?;
        write_atomic(&self.entry_path(key), &bytes)
    }

    /// Why a key computed at `slot` differs from the last one computed there: the label of the
    /// first part that changed, or `None` when nothing is known about the slot.
    pub fn explain_miss(&self, slot: &str, parts: &[KeyPart]) -> Option<String> {
        let bytes = read_bounded(&self.slot_path(slot), 1024 * 1024)?;
        let old: Vec<KeyPart> = serde_json::from_slice(&bytes).ok()?;
        for (i, part) in parts.iter().enumerate() {
            match old.iter().find(|o| o.label == part.label) {
                None => return Some(format!("{} is new", part.label)),
                Some(o) if o.digest != part.digest => {
                    return Some(if part.label == "parent" {
                        "a previous step changed".to_owned()
                    } else {
                        format!("{} changed", part.label)
                    })
                }
                Some(_) if i + 1 == parts.len() && old.len() != parts.len() => {
                    return Some("the step's inputs changed".to_owned())
                }
                Some(_) => {}
            }
        }
        old.iter()
            .find(|o| !parts.iter().any(|p| p.label == o.label))
            .map(|o| format!("{} was removed", o.label))
    }

    /// Remembers the parts of the key computed at `slot`, for [`explain_miss`](Self::explain_miss).
    pub fn remember(&self, slot: &str, parts: &[KeyPart]) -> Result<(), CacheError> {
        let path = self.slot_path(slot);
        let bytes = serde_json::to_vec(parts).map_err(|e| CacheError::Write {
            path: path.clone(),
            source: e.into(),
        })?;
        write_atomic(&path, &bytes)
    }

    /// Remembers the layer a step at `slot` produced last (so the next build of that step can
    /// reuse its unchanged files).
    pub fn remember_layer(&self, slot: &str, layer: &DiffId) -> Result<(), CacheError> {
        let mut path = self.slot_path(slot);
        path.set_extension("layer");
        write_atomic(&path, layer.to_string().as_bytes())
    }

    /// The layer a step at `slot` produced last, if known.
    pub fn last_layer(&self, slot: &str) -> Option<DiffId> {
        let mut path = self.slot_path(slot);
        path.set_extension("layer");
        let bytes = read_bounded(&path, 128)?;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    /// Every layer that cache entries refer to (roots for garbage collection).
    pub fn referenced_layers(&self) -> Vec<CachedLayer> {
        let mut out = Vec::new();
        let Ok(shards) = fs::read_dir(self.dir.join("steps")) else {
            return out;
        };
        for shard in shards.flatten() {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Some(entry) = read_bounded(&f.path(), 64 * 1024)
                    .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
                {
                    out.extend(entry.layer);
                }
            }
        }
        out
    }

    /// Removes every entry whose layer is not in `keep`, or every entry when `keep` is `None`.
    /// Returns how many entries were removed.
    pub fn prune(&self, keep: Option<&dyn Fn(&DiffId) -> bool>) -> io::Result<u64> {
        let mut removed = 0;
        let Ok(shards) = fs::read_dir(self.dir.join("steps")) else {
            return Ok(0);
        };
        for shard in shards.flatten() {
            for f in fs::read_dir(shard.path())?.flatten() {
                let entry = read_bounded(&f.path(), 64 * 1024)
                    .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok());
                let drop = match (keep, entry) {
                    (None, _) | (_, None) => true,
                    (Some(k), Some(e)) => e.layer.is_some_and(|l| !k(&l.diff_id)),
                };
                if drop {
                    fs::remove_file(f.path())?;
                    removed += 1;
                }
            }
        }
        if keep.is_none() {
            let _ = fs::remove_dir_all(self.dir.join("slots"));
        }
        Ok(removed)
    }
}

fn read_bounded(path: &Path, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 <= limit).then_some(buf)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old
/// content or the new one, never a torn file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let err = |source| CacheError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::fsx::private_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_unambiguous_and_order_sensitive() {
        let k = |parts: &[(&str, &[u8])]| {
            let mut b = KeyBuilder::new(None);
            for (l, v) in parts {
                b.part(l, v);
            }
            b.finish().0
        };
        assert_ne!(k(&[("a", b"bc")]), k(&[("ab", b"c")]));
        assert_ne!(
            k(&[("a", b"1"), ("b", b"2")]),
            k(&[("b", b"2"), ("a", b"1")])
        );
        assert_eq!(k(&[("a", b"1")]), k(&[("a", b"1")]));
    }

    #[test]
    fn round_trip_and_miss_reasons() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path());
        let mut b = KeyBuilder::new(None);
        b.part("instruction", b"COPY a /a").part("files a", b"1");
        let (key, parts) = b.finish();
        assert!(cache.get(&key).is_none());
        let entry = CacheEntry {
            created: "2026-01-01T00:00:00Z".into(),
            layer: None,
        };
        cache.put(&key, &entry).unwrap();
        assert_eq!(cache.get(&key), Some(entry));
        cache.remember("slot", &parts).unwrap();
        let mut b = KeyBuilder::new(None);
        b.part("instruction", b"COPY a /a").part("files a", b"2");
        let (_, parts2) = b.finish();
        assert_eq!(
            cache.explain_miss("slot", &parts2).as_deref(),
            Some("files a changed")
        );
        assert_eq!(cache.explain_miss("other", &parts2), None);
    }

    #[test]
    fn torn_entries_are_misses() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path());
        let (key, _) = KeyBuilder::new(None).finish();
        let p = cache.entry_path(&key);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"{\"created\":").unwrap();
        assert!(cache.get(&key).is_none());
    }
}
