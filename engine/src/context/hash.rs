//! Content digests of COPY/ADD sources, with a persistent stat cache.
//!
//! The digest (blake3) covers, for every visible item under each source in walk order: its path
//! relative to the source, its type, its permission bits, and a file's size and content hash or a
//! symlink's target. Not owners (COPY sets them) and not times: `touch` keeps the cache, a
//! one-byte edit or a `chmod` changes the digest.
//!
//! The [`StatCache`] maps context paths to `(dev, inode, size, mtime, ctime, mode)` and the
//! content hash seen with them, so an unchanged file costs one `statx` and no read. A file whose
//! ctime is too close to the moment it was hashed is not cached ("racily clean", as git calls
//! it): a write in the same timestamp tick would not change its stat. The cache file is written
//! atomically (temporary name, then rename) and checksummed; a corrupt, truncated or foreign
//! file is ignored. It is not fsynced: losing it costs one re-read of the context.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cap_std::fs::Dir;

use super::sys::{self, Kind, Nanos, Stat};
use super::{Context, ContextError, Source, WalkEntry};

/// What hashing cost; lets callers and tests see that the stat cache works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Items hashed (files, directories, symlinks).
    pub entries: u64,
    /// Regular files looked at (one `statx` each).
    pub files_statted: u64,
    /// Regular files whose contents were read (stat cache misses).
    pub files_read: u64,
    /// Bytes of file contents read.
    pub bytes_read: u64,
}

/// The digest of some sources and what computing it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDigest {
    /// blake3 over the sources' paths, types, modes, link targets and contents.
    pub hash: [u8; 32],
    /// Counters.
    pub stats: HashStats,
    /// Files whose contents differ from what the stat cache last recorded for them (the first
    /// few, in walk order), to explain a cache miss.
    pub changed: Vec<String>,
}

/// How many changed files a digest reports at most.
const MAX_CHANGED: usize = 8;

/// Files whose ctime is within this of the hashing start are not cached (timestamps on Linux
/// come from a coarse clock, at most a few ms behind).
const RACY_MARGIN_NS: Nanos = 20_000_000;
/// The margin for file systems with whole-second timestamps (nanoseconds part zero).
const RACY_MARGIN_COARSE_NS: Nanos = 2_000_000_000;
/// Read buffer for file contents.
const READ_BUF: usize = 256 * 1024;

const MAGIC: &[u8; 8] = b"KILNSTC1";
/// The largest stat cache file kiln loads.
const MAX_CACHE_FILE: u64 = 512 << 20;

#[derive(Debug, Clone, Copy)]
struct Cached {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: Nanos,
    ctime: Nanos,
    mode: u32,
    hash: [u8; 32],
    /// Looked up or stored since loading (not saved).
    seen: bool,
}

impl Cached {
    fn matches(&self, s: &Stat) -> bool {
        self.dev == s.dev
            && self.ino == s.ino
            && self.size == s.size
            && self.mtime == s.mtime
            && self.ctime == s.ctime
            && self.mode == s.mode
    }
}

/// Content hashes of files keyed by context path and validated by stat data.
///
/// Load it once per build ([`StatCache::load`]), pass it to every [`Context::digest`], then
/// [`StatCache::save`] it.
#[derive(Debug, Default)]
pub struct StatCache {
    identity: [u8; 32],
    entries: HashMap<Box<str>, Cached>,
    dirty: bool,
    /// A digest covered the whole context, so entries not seen are gone.
    covered_all: bool,
}

impl StatCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads the cache file `name` from `dir`; a missing, unreadable, corrupt or foreign file
    /// gives an empty cache.
    pub fn load(dir: &Dir, name: &str) -> Self {
        let mut bytes = Vec::new();
        let read = dir
            .open(name)
            .and_then(|f| f.take(MAX_CACHE_FILE).read_to_end(&mut bytes));
        match read {
            Ok(_) => decode(&bytes).unwrap_or_default(),
            Err(_) => Self::default(),
        }
    }

    /// Writes the cache to `name` in `dir` (temporary file, then rename) if it changed; returns
    /// whether it wrote.
    pub fn save(&mut self, dir: &Dir, name: &str) -> Result<bool, ContextError> {
        if self.covered_all {
            let before = self.entries.len();
            self.entries.retain(|_, c| c.seen);
            self.dirty |= self.entries.len() != before;
        }
        if !self.dirty {
            return Ok(false);
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let err = |source| ContextError::StatCacheWrite {
            name: name.to_owned(),
            source,
        };
        let bytes = self.encode();
        let written = dir
            .create(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .and_then(|()| dir.rename(&tmp, dir, name));
        if let Err(e) = written {
            // Best effort: the temporary file is garbage either way.
            let _ = dir.remove_file(&tmp);
            return Err(err(e));
        }
        self.dirty = false;
        Ok(true)
    }

    /// How many files the cache knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache knows no file.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes the cache belong to the context `identity`, dropping another context's entries.
    fn bind(&mut self, identity: &[u8; 32]) {
        if &self.identity != identity {
            self.identity = *identity;
            self.dirty |= !self.entries.is_empty();
            self.entries.clear();
        }
    }

    /// The content hash last recorded for `path`, whatever its stat data says now.
    fn previous(&self, path: &str) -> Option<[u8; 32]> {
        self.entries.get(path).map(|c| c.hash)
    }

    fn lookup(&mut self, path: &str, stat: &Stat) -> Option<[u8; 32]> {
        let c = self.entries.get_mut(path)?;
        if !c.matches(stat) {
            return None;
        }
        c.seen = true;
        Some(c.hash)
    }

    fn store(&mut self, path: &str, stat: &Stat, hash: [u8; 32]) {
        let c = Cached {
            dev: stat.dev,
            ino: stat.ino,
            size: stat.size,
            mtime: stat.mtime,
            ctime: stat.ctime,
            mode: stat.mode,
            hash,
            seen: true,
        };
        match self.entries.get_mut(path) {
            Some(old) => *old = c,
            None => {
                self.entries.insert(path.into(), c);
            }
        }
        self.dirty = true;
    }

    fn forget(&mut self, path: &str) {
        if self.entries.remove(path).is_some() {
            self.dirty = true;
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.entries.len() * 112);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.identity);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (path, c) in &self.entries {
            out.extend_from_slice(&(path.len() as u64).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            for v in [c.dev, c.ino, c.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [c.mtime, c.ctime] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&c.mode.to_le_bytes());
            out.extend_from_slice(&c.hash);
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }
}

/// Reads bytes off the front of a slice; `None` when it runs out.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

fn decode(bytes: &[u8]) -> Option<StatCache> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut cur = Cursor(body);
    if cur.take(8)? != MAGIC {
        return None;
    }
    let identity = cur.array()?;
    let count = usize::try_from(cur.u64()?).ok()?;
    // Each entry takes at least 84 bytes, which bounds the allocation by the file size.
    let mut entries = HashMap::with_capacity(count.min(body.len() / 84));
    for _ in 0..count {
        let len = usize::try_from(cur.u64()?).ok()?;
        let path = std::str::from_utf8(cur.take(len)?).ok()?;
        let c = Cached {
            dev: cur.u64()?,
            ino: cur.u64()?,
            size: cur.u64()?,
            mtime: i64::from_le_bytes(cur.array()?),
            ctime: i64::from_le_bytes(cur.array()?),
            mode: u32::from_le_bytes(cur.array()?),
            hash: cur.array()?,
            seen: false,
        };
        entries.insert(path.into(), c);
    }
    if !cur.0.is_empty() {
        return None;
    }
    Some(StatCache {
        identity,
        entries,
        dirty: false,
        covered_all: false,
    })
}

/// State of one digest computation.
struct Hashing<'c> {
    cache: &'c mut StatCache,
    hasher: blake3::Hasher,
    stats: HashStats,
    buf: Vec<u8>,
    /// Files changed after this instant are not cached.
    start: Nanos,
    /// Whether the stat cache applies (not in a tar context: it is new every time, and its
    /// modes may come from recorded xattrs rather than from the stat the cache checks).
    use_cache: bool,
    /// Files whose contents changed since the stat cache saw them.
    changed: Vec<String>,
}

impl Hashing<'_> {
    fn record(&mut self, tag: u8, rel: &str, mode: u32) {
        self.hasher.update(&[tag]);
        self.hasher.update(&(rel.len() as u64).to_le_bytes());
        self.hasher.update(rel.as_bytes());
        self.hasher.update(&mode.to_le_bytes());
    }

    fn entry(&mut self, e: &WalkEntry<'_>) -> Result<(), ContextError> {
        self.stats.entries += 1;
        match (e.kind, e.at) {
            (Kind::File, Some((dir, name))) => {
                self.stats.files_statted += 1;
                let cached = match self.use_cache {
                    true => self.cache.lookup(e.path, e.stat),
                    false => None,
                };
                let (size, content) = match cached {
                    Some(h) => (e.stat.size, h),
                    None => {
                        let before = self.cache.previous(e.path);
                        let (size, content) = self.read_file(e.path, dir, name)?;
                        if before.is_some_and(|b| b != content) && self.changed.len() < MAX_CHANGED
                        {
                            self.changed.push(e.path.to_owned());
                        }
                        (size, content)
                    }
                };
                self.record(b'f', e.rel, e.stat.perm());
                self.hasher.update(&size.to_le_bytes());
                self.hasher.update(&content);
            }
            (Kind::Symlink, Some((dir, name))) => {
                let target = sys::read_link_at(dir, name)
                    .map_err(|err| ContextError::io("read link", e.path, err))?;
                self.record(b'l', e.rel, e.stat.perm());
                self.hasher.update(&(target.len() as u64).to_le_bytes());
                self.hasher.update(&target);
            }
            _ => self.record(b'd', e.rel, e.stat.perm()),
        }
        Ok(())
    }

    /// Hashes a file's contents, streaming; caches the result unless the file is racily new or
    /// changed while being read.
    fn read_file(
        &mut self,
        path: &str,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &std::ffi::CStr,
    ) -> Result<(u64, [u8; 32]), ContextError> {
        let fd = sys::open_file_at(dir, name).map_err(|e| ContextError::io("open", path, e))?;
        let stat = sys::stat_fd(std::os::fd::AsFd::as_fd(&fd))
            .map_err(|e| ContextError::io("stat", path, e))?;
        if stat.kind() != Kind::File {
            return Err(ContextError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mut file = std::fs::File::from(fd);
        let mut h = blake3::Hasher::new();
        let mut total: u64 = 0;
        if self.buf.is_empty() {
            self.buf.resize(READ_BUF, 0);
        }
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ContextError::io("read", path, e)),
            };
            h.update(self.buf.get(..n).unwrap_or_default());
            total += n as u64;
        }
        self.stats.files_read += 1;
        self.stats.bytes_read += total;
        let hash = *h.finalize().as_bytes();
        let after = sys::stat_fd(std::os::fd::AsFd::as_fd(&file))
            .map_err(|e| ContextError::io("stat", path, e))?;
        let margin = if stat.ctime % 1_000_000_000 == 0 {
            RACY_MARGIN_COARSE_NS
        } else {
            RACY_MARGIN_NS
        };
        let settled = stat.ctime < self.start.saturating_sub(margin);
        if self.use_cache {
            if settled && after == stat && total == stat.size {
                self.cache.store(path, &stat, hash);
            } else {
                self.cache.forget(path);
            }
        }
        // Hash what was read, with the size that was read.
        Ok((total, hash))
    }
}

fn now_ns() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Context {
    /// The content digest of `sources` (from [`Context::resolve`]), using and updating `cache`.
    ///
    /// For `COPY . /dst`, pass the single source of `resolve(".")`: the whole filtered context is
    /// then hashed in one walk.
    pub fn digest(
        &self,
        sources: &[Source],
        cache: &mut StatCache,
    ) -> Result<ContentDigest, ContextError> {
        cache.bind(&self.identity);
        let mut hashing = Hashing {
            cache,
            hasher: blake3::Hasher::new(),
            stats: HashStats::default(),
            buf: Vec::new(),
            start: now_ns(),
            use_cache: !self.overrides,
            changed: Vec::new(),
        };
        hashing.hasher.update(b"kiln-context-v1\0");
        for source in sources {
            hashing.hasher.update(b"S");
            hashing
                .hasher
                .update(&(source.path.len() as u64).to_le_bytes());
            hashing.hasher.update(source.path.as_bytes());
            let start =
                self.follow(&source.resolved, true)?
                    .ok_or_else(|| ContextError::NotFound {
                        path: source.path.clone(),
                    })?;
            if start.rel.is_empty() {
                hashing.cache.covered_all = true;
            }
            self.walk(&start, &mut |e| hashing.entry(e).map(|()| true))?;
        }
        Ok(ContentDigest {
            hash: *hashing.hasher.finalize().as_bytes(),
            stats: hashing.stats,
            changed: hashing.changed,
        })
    }
}
