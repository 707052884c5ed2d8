//! Reading a build-context tar (the body of Docker's `POST /build`, or `kiln build - < ctx.tar`)
//! into a private folder, refusing anything hostile.
//!
//! A small streaming tar reader of our own (ustar, GNU long names, PAX `path`/`linkpath`/`size`)
//! rather than the `tar` crate: that one reads GNU long-name and PAX headers of any size into
//! memory, and memory here must stay bounded whatever the input. Every write goes through
//! [`super::sys`]-style single-component operations under the folder's fd with `O_NOFOLLOW`, so
//! a symlink planted by an earlier entry can never redirect a later write.
//!
//! Deliberate differences from a plain extraction: owners are not applied (COPY sets them);
//! directories get owner `rwx` and files owner `r` added to their mode, so kiln can always read
//! and remove what it extracted.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use super::sys::{self, Kind};

/// Limits on a context tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarLimits {
    /// Most entries (extension headers included).
    pub max_entries: u64,
    /// Most bytes of file contents, in total.
    pub max_bytes: u64,
    /// Longest entry name or link target, in bytes.
    pub max_path_len: usize,
    /// Deepest directory nesting.
    pub max_depth: usize,
}

impl Default for TarLimits {
    /// One million entries, 8 GiB of contents, 4096-byte names, 256 levels.
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_bytes: 8 << 30,
            max_path_len: 4096,
            max_depth: 256,
        }
    }
}

/// Why a tar entry is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The name starts with `/`.
    #[error("absolute path")]
    Absolute,
    /// The name has a `..` component.
    #[error("path leaves the context with `..`")]
    DotDot,
    /// A component of the name is a symlink (extracted earlier).
    #[error("path goes through a symlink")]
    ThroughSymlink,
    /// A component of the name is a file.
    #[error("path goes through a file")]
    ThroughFile,
    /// A hard link whose target is not a file extracted earlier.
    #[error("hard link does not point at an earlier file of the archive")]
    HardlinkOutside,
    /// A character or block device.
    #[error("device nodes are not allowed in a build context")]
    Device,
    /// A named pipe.
    #[error("fifos are not allowed in a build context")]
    Fifo,
    /// A sparse file or an entry type kiln does not know.
    #[error("unsupported entry type")]
    UnsupportedType,
    /// A non-directory entry whose name is an existing directory.
    #[error("entry would replace a directory")]
    ReplacesDirectory,
    /// The name or link target is longer than the limit.
    #[error("name longer than the limit")]
    PathTooLong,
    /// The name nests deeper than the limit.
    #[error("nested deeper than the limit")]
    TooDeep,
    /// A GNU long-name or PAX header larger than 1 MiB.
    #[error("extension header larger than 1 MiB")]
    HugeExtension,
}

/// Errors reading a context tar.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The stream could not be read or decompressed.
    #[error("read build context tar: {0}")]
    Read(io::Error),
    /// The stream is not a well-formed tar.
    #[error("build context tar is corrupt at byte {offset}: {what}")]
    Corrupt {
        /// Offset in the uncompressed stream.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// An entry that kiln will not extract.
    #[error("refusing build context tar entry {name:?}: {reason}")]
    Refused {
        /// The entry name (invalid UTF-8 replaced).
        name: String,
        /// Why.
        reason: Refusal,
    },
    /// More entries than [`TarLimits::max_entries`].
    #[error("build context tar has more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: u64,
    },
    /// More content than [`TarLimits::max_bytes`].
    #[error("build context tar holds more than {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// Writing an entry failed.
    #[error("extract {name:?} from build context tar: {source}")]
    Write {
        /// The entry name.
        name: String,
        /// Why.
        source: io::Error,
    },
}

impl TarError {
    /// Whether the tar itself is at fault (malformed, hostile, over its limits) rather than the
    /// host (reading the stream, writing the folder).
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Corrupt { .. }
            | Self::Refused { .. }
            | Self::TooManyEntries { .. }
            | Self::TooLarge { .. } => true,
            Self::Read(_) | Self::Write { .. } => false,
        }
    }
}

const BLOCK: usize = 512;
const MAX_EXTENSION: u64 = 1 << 20;
const COPY_BUF: usize = 256 * 1024;

/// Counts bytes for error offsets.
struct Counting<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Detects gzip, bzip2, xz and zstd by their magic numbers; anything else is read as plain tar.
fn decompress<'a, R: Read + 'a>(mut r: R) -> Result<Box<dyn Read + 'a>, TarError> {
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        match r.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TarError::Read(e)),
        }
    }
    let head = magic.get(..got).unwrap_or_default().to_vec();
    let stream = io::Cursor::new(head).chain(r);
    Ok(match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::read::MultiBzDecoder::new(stream)),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00] => {
            // Bounded decoder memory: xz dictionaries can ask for 1.5 GiB.
            let dec = xz2::stream::Stream::new_stream_decoder(256 << 20, xz2::stream::CONCATENATED)
                .map_err(|e| TarError::Read(e.into()))?;
            Box::new(xz2::read::XzDecoder::new_stream(stream, dec))
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            let mut dec = zstd::stream::read::Decoder::new(stream).map_err(TarError::Read)?;
            // Bounded window: at most 128 MiB, zstd's own default limit, made explicit.
            dec.window_log_max(27).map_err(TarError::Read)?;
            Box::new(dec)
        }
        _ => Box::new(stream),
    })
}

/// One entry's header fields after extensions are applied.
struct Header {
    name: Vec<u8>,
    link: Vec<u8>,
    typeflag: u8,
    size: u64,
    mode: u32,
    mtime: i64,
}

/// Extensions that apply to the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
}

/// Parses a numeric header field: octal text, or base-256 when the high bit is set.
fn numeric(field: &[u8]) -> Option<u64> {
    match field.split_first() {
        Some((&first, rest)) if first & 0x80 != 0 => {
            if first == 0xff {
                return None;
            }
            rest.iter().try_fold(u64::from(first & 0x7f), |v, &b| {
                v.checked_mul(256)?.checked_add(u64::from(b))
            })
        }
        _ => {
            let s = field
                .iter()
                .position(|&b| b != b' ')
                .map_or(&[][..], |i| &field[i..]);
            let end = s
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(s.len());
            let (digits, tail) = s.split_at(end);
            if !tail.iter().all(|&b| b == 0 || b == b' ') {
                return None;
            }
            digits.iter().try_fold(0u64, |v, &b| {
                let d = b.checked_sub(b'0').filter(|d| *d < 8)?;
                v.checked_mul(8)?.checked_add(u64::from(d))
            })
        }
    }
}

fn cstr_field(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Some(stored) = block.get(148..156).and_then(numeric) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// Parses PAX records (`"%d %s=%s\n"`) into `pending`. Errors carry offset 0; the caller
/// fills it in.
fn parse_pax(data: &[u8], pending: &mut Pending, name: &str) -> Result<(), TarError> {
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(corrupt_pax)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > sp + 1 && l <= rest.len())
            .ok_or_else(corrupt_pax)?;
        let record = &rest[sp + 1..len];
        rest = &rest[len..];
        let record = record.strip_suffix(b"\n").ok_or_else(corrupt_pax)?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(corrupt_pax)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pending.path = Some(value.to_vec()),
            b"linkpath" => pending.link = Some(value.to_vec()),
            b"size" => {
                let size = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(corrupt_pax)?;
                pending.size = Some(size);
            }
            k if k.starts_with(b"GNU.sparse") => {
                return Err(TarError::Refused {
                    name: name.to_owned(),
                    reason: Refusal::UnsupportedType,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

fn corrupt_pax() -> TarError {
    TarError::Corrupt {
        offset: 0,
        what: "malformed PAX header",
    }
}

/// Splits an entry name into components, refusing absolute names, `..`, and names over the
/// limits. `Ok(empty)` is the archive root (`.`, `./`).
fn components<'a>(name: &'a [u8], limits: &TarLimits) -> Result<Vec<&'a [u8]>, Refusal> {
    if name.len() > limits.max_path_len {
        return Err(Refusal::PathTooLong);
    }
    if name.first() == Some(&b'/') {
        return Err(Refusal::Absolute);
    }
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Refusal::DotDot),
            c => out.push(c),
        }
    }
    if out.len() > limits.max_depth {
        return Err(Refusal::TooDeep);
    }
    Ok(out)
}

/// A directory whose mode and mtime are applied after all entries (creating children changes
/// its mtime, and a read-only mode would stop them being created).
struct DeferredDir {
    components: Vec<Vec<u8>>,
    mode: u32,
    mtime: i64,
}

struct Extractor<'a> {
    root: &'a Dir,
    limits: &'a TarLimits,
    /// The parent directory of the previous entry, reused for its siblings.
    last_parent: Option<(Vec<Vec<u8>>, OwnedFd)>,
    deferred: Vec<DeferredDir>,
    buf: Vec<u8>,
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn refused(name: &[u8], reason: Refusal) -> TarError {
    TarError::Refused {
        name: lossy(name),
        reason,
    }
}

fn write_err(name: &[u8], source: impl Into<io::Error>) -> TarError {
    TarError::Write {
        name: lossy(name),
        source: source.into(),
    }
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Reads the tar in `reader` into the empty folder `root`.
pub(super) fn extract<R: Read>(
    reader: R,
    root: &Dir,
    limits: &TarLimits,
) -> Result<(), super::ContextError> {
    let mut r = Counting {
        inner: decompress(reader)?,
        offset: 0,
    };
    let mut ex = Extractor {
        root,
        limits,
        last_parent: None,
        deferred: Vec::new(),
        buf: Vec::new(),
    };
    ex.run(&mut r)?;
    ex.finish()?;
    Ok(())
}

impl Extractor<'_> {
    fn run<R: Read>(&mut self, r: &mut Counting<R>) -> Result<(), TarError> {
        let mut pending = Pending::default();
        let mut entries: u64 = 0;
        let mut bytes: u64 = 0;
        let mut block = [0u8; BLOCK];
        loop {
            if !read_block(r, &mut block)? {
                return Ok(());
            }
            if block.iter().all(|&b| b == 0) {
                return Ok(());
            }
            let offset = r.offset;
            let corrupt = |what| TarError::Corrupt { offset, what };
            if !checksum_ok(&block) {
                return Err(corrupt("bad header checksum"));
            }
            entries += 1;
            if entries > self.limits.max_entries {
                return Err(TarError::TooManyEntries {
                    max: self.limits.max_entries,
                });
            }
            let typeflag = block[156];
            let size = numeric(&block[124..136]).ok_or_else(|| corrupt("bad size field"))?;
            let ustar_name = self.header_name(&block);
            if matches!(typeflag, b'x' | b'g' | b'L' | b'K') {
                if size > MAX_EXTENSION {
                    return Err(refused(&ustar_name, Refusal::HugeExtension));
                }
                let mut data = vec![0u8; usize::try_from(size).unwrap_or(0)];
                read_exact(r, &mut data)?;
                skip(r, padding(size))?;
                match typeflag {
                    b'x' => parse_pax(&data, &mut pending, &lossy(&ustar_name)).map_err(
                        |e| match e {
                            TarError::Corrupt { what, .. } => corrupt(what),
                            other => other,
                        },
                    )?,
                    b'L' => pending.path = Some(cstr_field(&data).to_vec()),
                    b'K' => pending.link = Some(cstr_field(&data).to_vec()),
                    _ => {}
                }
                continue;
            }
            let header = Header {
                name: pending.path.take().unwrap_or(ustar_name),
                link: pending
                    .link
                    .take()
                    .unwrap_or_else(|| cstr_field(&block[157..257]).to_vec()),
                typeflag,
                size: pending.size.take().unwrap_or(size),
                mode: numeric(&block[100..108]).ok_or_else(|| corrupt("bad mode field"))? as u32
                    & 0o7777,
                mtime: numeric(&block[136..148])
                    .and_then(|m| i64::try_from(m).ok())
                    .unwrap_or(0),
            };
            // Header-only types carry no data whatever their size field says (as Go's reader).
            let data = if matches!(typeflag, b'1'..=b'6') {
                0
            } else {
                header.size
            };
            bytes = bytes.saturating_add(data);
            if bytes > self.limits.max_bytes {
                return Err(TarError::TooLarge {
                    max: self.limits.max_bytes,
                });
            }
            self.entry(&header, r)?;
            skip(r, padding(data))?;
        }
    }

    /// The name from the ustar header: `prefix/name` for POSIX ustar, `name` otherwise.
    fn header_name(&self, block: &[u8; BLOCK]) -> Vec<u8> {
        let name = cstr_field(&block[0..100]);
        let prefix = cstr_field(&block[345..500]);
        if &block[257..263] == b"ustar\0" && !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(name);
            full
        } else {
            name.to_vec()
        }
    }

    fn entry<R: Read>(&mut self, h: &Header, r: &mut Counting<R>) -> Result<(), TarError> {
        match h.typeflag {
            b'3' | b'4' => return Err(refused(&h.name, Refusal::Device)),
            b'6' => return Err(refused(&h.name, Refusal::Fifo)),
            b'0' | b'\0' | b'7' | b'1' | b'2' | b'5' => {}
            _ => return Err(refused(&h.name, Refusal::UnsupportedType)),
        }
        let comps = components(&h.name, self.limits).map_err(|why| refused(&h.name, why))?;
        let Some((last, parents)) = comps.split_last() else {
            // The archive root: nothing to create.
            return Ok(());
        };
        let parent = self.parent(parents, &h.name, true)?;
        let pfd = parent.as_fd();
        match h.typeflag {
            b'5' => {
                match rustix::fs::mkdirat(pfd, *last, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::EXIST) => {
                        if !sys::stat_at(pfd, *last).is_ok_and(|s| s.kind() == Kind::Dir) {
                            remove_non_dir(pfd, last, &h.name)?;
                            rustix::fs::mkdirat(pfd, *last, Mode::from_raw_mode(0o700))
                                .map_err(|e| write_err(&h.name, e))?;
                        }
                    }
                    Err(e) => return Err(write_err(&h.name, e)),
                }
                self.deferred.push(DeferredDir {
                    components: comps.iter().map(|c| c.to_vec()).collect(),
                    mode: h.mode,
                    mtime: h.mtime,
                });
            }
            b'2' => {
                if h.link.len() > self.limits.max_path_len {
                    return Err(refused(&h.name, Refusal::PathTooLong));
                }
                remove_non_dir(pfd, last, &h.name)?;
                rustix::fs::symlinkat(h.link.as_slice(), pfd, *last)
                    .map_err(|e| write_err(&h.name, e))?;
                rustix::fs::utimensat(pfd, *last, &timestamps(h.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| write_err(&h.name, e))?;
            }
            b'1' => {
                let target = components(&h.link, self.limits)
                    .map_err(|_| refused(&h.name, Refusal::HardlinkOutside))?;
                let Some((tlast, tparents)) = target.split_last() else {
                    return Err(refused(&h.name, Refusal::HardlinkOutside));
                };
                let tparent = self
                    .parent(tparents, &h.name, false)
                    .map_err(|_| refused(&h.name, Refusal::HardlinkOutside))?;
                match sys::stat_at(tparent.as_fd(), *tlast).map(|s| s.kind()) {
                    Ok(Kind::File) | Ok(Kind::Symlink) => {}
                    _ => return Err(refused(&h.name, Refusal::HardlinkOutside)),
                }
                // Re-open the entry's parent: looking up the target may have replaced the
                // cached one.
                let parent = self.parent(parents, &h.name, true)?;
                remove_non_dir(parent.as_fd(), last, &h.name)?;
                rustix::fs::linkat(
                    tparent.as_fd(),
                    *tlast,
                    parent.as_fd(),
                    *last,
                    AtFlags::empty(),
                )
                .map_err(|e| write_err(&h.name, e))?;
            }
            _ => {
                remove_non_dir(pfd, last, &h.name)?;
                let fd = rustix::fs::openat(
                    pfd,
                    *last,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| write_err(&h.name, e))?;
                let mut file = std::fs::File::from(fd);
                self.copy(r, &mut file, h.size, &h.name)?;
                rustix::fs::fchmod(&file, Mode::from_raw_mode(h.mode | 0o400))
                    .map_err(|e| write_err(&h.name, e))?;
                rustix::fs::futimens(&file, &timestamps(h.mtime))
                    .map_err(|e| write_err(&h.name, e))?;
            }
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of entry data into `out`.
    fn copy<R: Read>(
        &mut self,
        r: &mut Counting<R>,
        out: &mut std::fs::File,
        size: u64,
        name: &[u8],
    ) -> Result<(), TarError> {
        if self.buf.is_empty() {
            self.buf.resize(COPY_BUF, 0);
        }
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left.min(COPY_BUF as u64)).unwrap_or(COPY_BUF);
            let chunk = self.buf.get_mut(..want).unwrap_or_default();
            let n = match r.read(chunk) {
                Ok(0) => {
                    return Err(TarError::Corrupt {
                        offset: r.offset,
                        what: "archive ends inside a file",
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TarError::Read(e)),
            };
            out.write_all(chunk.get(..n).unwrap_or_default())
                .map_err(|e| write_err(name, e))?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Opens (and with `create`, makes) the directory `comps` below the root, one component at
    /// a time without following symlinks.
    fn parent(&mut self, comps: &[&[u8]], name: &[u8], create: bool) -> Result<OwnedFd, TarError> {
        if let Some((cached, fd)) = &self.last_parent {
            if cached.len() == comps.len() && cached.iter().zip(comps).all(|(a, b)| a == b) {
                return fd.try_clone().map_err(|e| write_err(name, e));
            }
        }
        let mut fd = sys::open_dir_at(self.root.as_fd(), ".").map_err(|e| write_err(name, e))?;
        for comp in comps {
            let mut created = false;
            if create {
                match rustix::fs::mkdirat(&fd, *comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) => created = true,
                    Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(write_err(name, e)),
                }
            }
            fd = match sys::open_dir_at(fd.as_fd(), *comp) {
                Ok(next) => next,
                Err(e) => {
                    return Err(match sys::stat_at(fd.as_fd(), *comp).map(|s| s.kind()) {
                        Ok(Kind::Symlink) => refused(name, Refusal::ThroughSymlink),
                        Ok(Kind::File) | Ok(Kind::Other) => refused(name, Refusal::ThroughFile),
                        _ => write_err(name, e),
                    })
                }
            };
            if created {
                // Implied parents are 0755 whatever the umask, so digests do not depend on it.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                    .map_err(|e| write_err(name, e))?;
            }
        }
        let keep = fd.try_clone().map_err(|e| write_err(name, e))?;
        self.last_parent = Some((comps.iter().map(|c| c.to_vec()).collect(), keep));
        Ok(fd)
    }

    /// Applies directory modes and mtimes, deepest first.
    fn finish(&mut self) -> Result<(), TarError> {
        let deferred = std::mem::take(&mut self.deferred);
        for d in deferred.iter().rev() {
            let comps: Vec<&[u8]> = d.components.iter().map(Vec::as_slice).collect();
            let Some((last, parents)) = comps.split_last() else {
                continue;
            };
            let name = comps.join(&b'/');
            let parent = self.parent(parents, &name, false)?;
            let dir = sys::open_dir_at(parent.as_fd(), *last).map_err(|e| write_err(&name, e))?;
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(d.mode | 0o700))
                .map_err(|e| write_err(&name, e))?;
            rustix::fs::futimens(&dir, &timestamps(d.mtime)).map_err(|e| write_err(&name, e))?;
        }
        Ok(())
    }
}

/// Removes a file or symlink at `name` so an entry can take its place; refuses to replace a
/// directory.
fn remove_non_dir(dir: BorrowedFd<'_>, name: &[u8], entry: &[u8]) -> Result<(), TarError> {
    match sys::stat_at(dir, name) {
        Ok(s) if s.kind() == Kind::Dir => Err(refused(entry, Refusal::ReplacesDirectory)),
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| write_err(entry, e)),
        Err(_) => Ok(()),
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Reads one header block; `false` at a clean end of stream.
fn read_block<R: Read>(r: &mut Counting<R>, block: &mut [u8; BLOCK]) -> Result<bool, TarError> {
    let mut got = 0;
    while got < BLOCK {
        match r.read(&mut block[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(TarError::Corrupt {
                    offset: r.offset,
                    what: "archive ends inside a header",
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TarError::Read(e)),
        }
    }
    Ok(true)
}

fn read_exact<R: Read>(r: &mut Counting<R>, buf: &mut [u8]) -> Result<(), TarError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => TarError::Corrupt {
            offset: r.offset,
            what: "archive ends inside an extension header",
        },
        _ => TarError::Read(e),
    })
}

fn skip<R: Read>(r: &mut Counting<R>, n: u64) -> Result<(), TarError> {
    // A short skip only happens at the end of the stream, where missing padding is harmless
    // (entry data itself is checked by `copy`).
    io::copy(&mut r.by_ref().take(n), &mut io::sink()).map_err(TarError::Read)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(numeric(b"0000644\0"), Some(0o644));
        assert_eq!(numeric(b"   755 \0"), Some(0o755));
        assert_eq!(numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(numeric(b"0009\0"), None);
        assert_eq!(numeric(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(numeric(&[0xff, 0xff]), None);
        assert_eq!(
            numeric(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }

    #[test]
    fn pax_records() {
        let mut p = Pending::default();
        parse_pax(b"20 path=a/long/name\n11 size=42\n", &mut p, "x").expect("valid pax");
        assert_eq!(p.path.as_deref(), Some(&b"a/long/name"[..]));
        assert_eq!(p.size, Some(42));
        assert!(parse_pax(b"99 path=x\n", &mut Pending::default(), "x").is_err());
        assert!(parse_pax(b"5 a=b", &mut Pending::default(), "x").is_err());
    }

    #[test]
    fn names_are_checked() {
        let l = TarLimits::default();
        assert_eq!(components(b"./a//b/", &l), Ok(vec![&b"a"[..], b"b"]));
        assert_eq!(components(b"/etc/passwd", &l), Err(Refusal::Absolute));
        assert_eq!(components(b"a/../../x", &l), Err(Refusal::DotDot));
        assert_eq!(components(b"./", &l), Ok(vec![]));
    }
}
