//! A streaming tar reader for untrusted archives, with limits checked before any data is read.
//!
//! It understands POSIX ustar + PAX (`path`, `linkpath`, `size`, `uid`, `gid`, `mtime`,
//! `SCHILY.xattr.*`), GNU long names and links (`L`, `K`) and V7 headers, and follows Go's
//! `archive/tar` (what Docker and BuildKit use) where tar dialects differ: header-only types
//! (links, devices, directories, fifos) carry no data whatever their size field says, a `\0`
//! type with a trailing `/` is a directory, global PAX headers are ignored, and a clean end of
//! input at a header boundary ends the archive. Memory is bounded: an extended header is read
//! only when it is smaller than a fixed limit, and entry data is streamed by the caller.

use std::io::{self, Read};

use super::tarfmt::{self, flag, PaxRecords, BLOCK};
use super::{lossy, LayerError, Malformed, Refusal};

/// Largest PAX extended header kiln reads (generous: a few long names and xattrs).
const MAX_PAX: u64 = 1024 * 1024;

/// Most extended headers (PAX, GNU long name/link, global) accepted in front of one entry.
const MAX_EXTENSIONS: u32 = 8;

/// Limits on an archive, checked from headers before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries (not counting extended headers).
    pub max_entries: u64,
    /// Most bytes all headers together may claim: file data and extended-header data.
    pub max_total_bytes: u64,
    /// Longest entry name or link target, in bytes.
    pub max_path_len: usize,
}

impl Default for Limits {
    /// 500,000 entries, 8 GiB, 4096-byte paths.
    fn default() -> Self {
        Self {
            max_entries: 500_000,
            max_total_bytes: 8 * 1024 * 1024 * 1024,
            max_path_len: 4096,
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

/// One entry's header, with extended headers applied.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The name as the archive spells it.
    pub(crate) path: Vec<u8>,
    /// Link target for hardlinks and symlinks.
    pub(crate) link: Vec<u8>,
    pub(crate) kind: Kind,
    /// Permission bits with setuid/setgid/sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: i64,
    pub(crate) mtime_nsec: u32,
    /// Bytes of data that follow (0 for all but regular files).
    pub(crate) size: u64,
    pub(crate) major: u32,
    pub(crate) minor: u32,
    /// `SCHILY.xattr.*` records, in archive order.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads entries one at a time; the caller streams each entry's data with [`Self::read_data`].
pub(crate) struct TarReader<R> {
    inner: R,
    limits: Limits,
    offset: u64,
    data_left: u64,
    pad_left: u64,
    entries: u64,
    claimed: u64,
    ended: bool,
    last_path: Vec<u8>,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R, limits: Limits) -> Self {
        Self {
            inner,
            limits,
            offset: 0,
            data_left: 0,
            pad_left: 0,
            entries: 0,
            claimed: 0,
            ended: false,
            last_path: Vec::new(),
        }
    }

    /// Bytes claimed by the headers read so far.
    pub(crate) fn claimed(&self) -> u64 {
        self.claimed
    }

    /// The underlying reader, positioned after the end-of-archive marker (or at end of input).
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    /// Reads the current entry's data; 0 at its end.
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, LayerError> {
        if self.data_left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.data_left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::ReadArchive(e)),
            }
        };
        if n == 0 {
            return Err(LayerError::Truncated {
                path: lossy(&self.last_path),
            });
        }
        self.data_left -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }

    /// Skips what is left of the current entry's data and padding.
    fn skip_rest(&mut self) -> Result<(), LayerError> {
        let n = self.data_left + self.pad_left;
        if n == 0 {
            return Ok(());
        }
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())
            .map_err(LayerError::ReadArchive)?;
        self.offset += copied;
        // Input that ends inside the last entry's padding (its data complete) ends the archive
        // there: Go's reader, and so dockerd, take such archives, and the docker CLI sends one
        // when it adds a Dockerfile from outside the context.
        if copied < self.data_left {
            return Err(LayerError::Truncated {
                path: lossy(&self.last_path),
            });
        }
        self.data_left = 0;
        self.pad_left = 0;
        Ok(())
    }

    /// Reads one block; `false` at a clean end of input.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool, LayerError> {
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut block[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::ReadArchive(e)),
            }
        }
        if got == 0 {
            return Ok(false);
        }
        if got < BLOCK {
            return Err(self.malformed(self.offset, Malformed::TruncatedHeader));
        }
        self.offset += BLOCK as u64;
        Ok(true)
    }

    fn malformed(&self, offset: u64, reason: Malformed) -> LayerError {
        LayerError::Malformed { offset, reason }
    }

    /// Reads the data of an extended header (already checked to be small), with its padding.
    fn read_extension(&mut self, size: u64, path: &[u8]) -> Result<Vec<u8>, LayerError> {
        let mut data = Vec::new();
        let got = (&mut self.inner)
            .take(size)
            .read_to_end(&mut data)
            .map_err(LayerError::ReadArchive)?;
        self.offset += got as u64;
        if got as u64 != size {
            return Err(LayerError::Truncated { path: lossy(path) });
        }
        self.pad_left = tarfmt::padding(size);
        self.skip_rest()?;
        Ok(data)
    }

    /// The next entry, or `None` after the end-of-archive marker.
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>, LayerError> {
        self.skip_rest()?;
        if self.ended {
            return Ok(None);
        }
        let mut block = [0u8; BLOCK];
        let mut pax: Option<Vec<u8>> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut extensions = 0u32;
        let header_offset = loop {
            let at = self.offset;
            let pending = extensions > 0;
            if !self.read_block(&mut block)? {
                return self.end(pending, at);
            }
            if block == [0u8; BLOCK] {
                // A second zero block, or the end of input, ends the archive.
                let next_at = self.offset;
                let mut next = [0u8; BLOCK];
                if self.read_block(&mut next)? && next != [0u8; BLOCK] {
                    return Err(self.malformed(next_at, Malformed::DataAfterEnd));
                }
                return self.end(pending, at);
            }
            if !tarfmt::checksum_ok(&block).map_err(|r| self.malformed(at, r))? {
                return Err(self.malformed(at, Malformed::Checksum));
            }
            let typeflag = block[tarfmt::TYPEFLAG];
            if !matches!(
                typeflag,
                flag::PAX | flag::PAX_GLOBAL | flag::GNU_LONGNAME | flag::GNU_LONGLINK
            ) {
                break at;
            }
            extensions += 1;
            if extensions > MAX_EXTENSIONS {
                return Err(self.malformed(at, Malformed::TooManyExtensions));
            }
            let size =
                tarfmt::parse_unsigned(tarfmt::field_bytes(&block, tarfmt::SIZE), tarfmt::SIZE)
                    .map_err(|r| self.malformed(at, r))?;
            let limit = match typeflag {
                flag::GNU_LONGNAME | flag::GNU_LONGLINK => self.limits.max_path_len as u64 + 1,
                _ => MAX_PAX,
            };
            let name = tarfmt::field_str(&block, tarfmt::NAME).to_vec();
            if size > limit {
                return Err(LayerError::Refused {
                    path: lossy(&name),
                    reason: Refusal::ExtensionTooLarge { size, limit },
                });
            }
            // Extended headers count against the byte limit too, or an archive of nothing but
            // megabyte-sized PAX headers could keep kiln busy without bound.
            self.claim(size, &name)?;
            let mut data = self.read_extension(size, &name)?;
            match typeflag {
                flag::PAX => pax = Some(data),
                flag::GNU_LONGNAME | flag::GNU_LONGLINK => {
                    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                    data.truncate(end);
                    if typeflag == flag::GNU_LONGNAME {
                        long_name = Some(data);
                    } else {
                        long_link = Some(data);
                    }
                }
                // Global headers are ignored, as Docker does.
                _ => {}
            }
        };
        let entry = self.build(&block, header_offset, pax, long_name, long_link)?;
        self.last_path.clear();
        self.last_path.extend_from_slice(&entry.path);
        self.data_left = entry.size;
        self.pad_left = tarfmt::padding(entry.size);
        Ok(Some(entry))
    }

    /// Adds `size` to the bytes claimed so far, refusing to go past the limit.
    fn claim(&mut self, size: u64, path: &[u8]) -> Result<(), LayerError> {
        if self.limits.max_total_bytes.saturating_sub(self.claimed) < size {
            return Err(LayerError::Refused {
                path: lossy(path),
                reason: Refusal::TooLarge {
                    claimed: size,
                    before: self.claimed,
                    limit: self.limits.max_total_bytes,
                },
            });
        }
        self.claimed += size;
        Ok(())
    }

    fn end(&mut self, pending_extension: bool, at: u64) -> Result<Option<Entry>, LayerError> {
        self.ended = true;
        if pending_extension {
            return Err(self.malformed(at, Malformed::DanglingExtension));
        }
        Ok(None)
    }

    /// Turns a header block plus its extended headers into an [`Entry`], checking limits.
    fn build(
        &mut self,
        block: &[u8; BLOCK],
        at: u64,
        pax: Option<Vec<u8>>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry, LayerError> {
        let num = |f: tarfmt::Field| {
            tarfmt::parse_unsigned(tarfmt::field_bytes(block, f), f).map_err(|r| {
                LayerError::Malformed {
                    offset: at,
                    reason: r,
                }
            })
        };
        let posix = tarfmt::field_bytes(block, tarfmt::MAGIC) == tarfmt::USTAR_MAGIC;
        let mut path = match long_name {
            Some(n) => n,
            None => {
                let name = tarfmt::field_str(block, tarfmt::NAME);
                let prefix = tarfmt::field_str(block, tarfmt::PREFIX);
                if posix && !prefix.is_empty() {
                    [prefix, b"/", name].concat()
                } else {
                    name.to_vec()
                }
            }
        };
        let mut link =
            long_link.unwrap_or_else(|| tarfmt::field_str(block, tarfmt::LINKNAME).to_vec());
        let mut uid = num(tarfmt::UID)?;
        let mut gid = num(tarfmt::GID)?;
        let mut size = num(tarfmt::SIZE)?;
        let mut mtime =
            tarfmt::parse_signed(tarfmt::field_bytes(block, tarfmt::MTIME), tarfmt::MTIME)
                .map_err(|r| LayerError::Malformed {
                    offset: at,
                    reason: r,
                })?;
        let mut mtime_nsec = 0;
        let mut xattrs = Vec::new();
        let mut sparse = false;
        if let Some(pax) = &pax {
            let bad = |r| LayerError::Malformed {
                offset: at,
                reason: r,
            };
            for record in PaxRecords::new(pax) {
                let (key, value) = record.map_err(bad)?;
                match key {
                    b"path" => path = value.to_vec(),
                    b"linkpath" => link = value.to_vec(),
                    b"size" => size = tarfmt::pax_u64(value, "size").map_err(bad)?,
                    b"uid" => uid = tarfmt::pax_u64(value, "uid").map_err(bad)?,
                    b"gid" => gid = tarfmt::pax_u64(value, "gid").map_err(bad)?,
                    b"mtime" => (mtime, mtime_nsec) = tarfmt::pax_time(value).map_err(bad)?,
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            xattrs.push((name.to_vec(), value.to_vec()));
                        } else if key.starts_with(b"GNU.sparse.") {
                            sparse = true;
                        }
                    }
                }
            }
        }
        let refuse = |reason| LayerError::Refused {
            path: lossy(&path),
            reason,
        };
        let typeflag = block[tarfmt::TYPEFLAG];
        let kind = match typeflag {
            flag::REGULAR_OLD if path.ends_with(b"/") => Kind::Dir,
            flag::REGULAR | flag::REGULAR_OLD | flag::CONTIGUOUS => Kind::Regular,
            flag::HARDLINK => Kind::HardLink,
            flag::SYMLINK => Kind::Symlink,
            flag::CHAR => Kind::Char,
            flag::BLOCK => Kind::Block,
            flag::DIR => Kind::Dir,
            flag::FIFO => Kind::Fifo,
            flag::GNU_SPARSE => return Err(refuse(Refusal::Sparse)),
            other => return Err(refuse(Refusal::UnsupportedType(char::from(other)))),
        };
        if sparse {
            return Err(refuse(Refusal::Sparse));
        }
        let limit = self.limits.max_path_len;
        for p in [&path, &link] {
            if p.len() > limit {
                return Err(refuse(Refusal::PathTooLong {
                    len: p.len(),
                    limit,
                }));
            }
            if p.contains(&0) {
                return Err(refuse(Refusal::NulByte));
            }
        }
        let id = |v: u64| u32::try_from(v).map_err(|_| refuse(Refusal::IdOutOfRange(v)));
        let (uid, gid) = (id(uid)?, id(gid)?);
        let (mut major, mut minor) = (0, 0);
        if matches!(kind, Kind::Char | Kind::Block) {
            major = id(num(tarfmt::DEVMAJOR)?)?;
            minor = id(num(tarfmt::DEVMINOR)?)?;
        }
        if kind != Kind::Regular {
            size = 0;
        }
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(refuse(Refusal::TooManyEntries {
                limit: self.limits.max_entries,
            }));
        }
        self.claim(size, &path)?;
        let mode = u32::try_from(num(tarfmt::MODE)? & 0o7777).unwrap_or(0);
        Ok(Entry {
            path,
            link,
            kind,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size,
            major,
            minor,
            xattrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tarfmt::HeaderBlock;

    fn header(name: &[u8], typeflag: u8, size: u64) -> Vec<u8> {
        let mut h = HeaderBlock::ustar();
        h.set_bytes(tarfmt::NAME, name);
        h.set_octal(tarfmt::MODE, 0o644);
        h.set_octal(tarfmt::SIZE, size);
        h.set_type(typeflag);
        h.finish();
        h.0.to_vec()
    }

    fn entry(name: &[u8], typeflag: u8, data: &[u8]) -> Vec<u8> {
        let mut v = header(name, typeflag, data.len() as u64);
        v.extend_from_slice(data);
        v.resize(v.len() + tarfmt::padding(data.len() as u64) as usize, 0);
        v
    }

    /// (name, kind, data) of an entry.
    type Got = (Vec<u8>, Kind, Vec<u8>);

    fn read_all(bytes: &[u8], limits: Limits) -> Result<Vec<Got>, LayerError> {
        let mut r = TarReader::new(bytes, limits);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut data = vec![0u8; 7];
            let mut got = Vec::new();
            loop {
                let n = r.read_data(&mut data)?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&data[..n]);
            }
            out.push((e.path, e.kind, got));
        }
        Ok(out)
    }

    #[test]
    fn header_only_types_carry_no_data() {
        // Like Go: a directory's size field is ignored, the next header follows at once.
        let mut tar = header(b"d/", flag::DIR, 5);
        tar.extend(entry(b"f", flag::REGULAR, b"hello world"));
        tar.extend(header(b"old-style-dir/", flag::REGULAR_OLD, 0));
        let got = read_all(&tar, Limits::default()).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].1, got[0].2.len()), (Kind::Dir, 0));
        assert_eq!(got[1].2, b"hello world");
        assert_eq!(got[2].1, Kind::Dir);
    }

    #[test]
    fn long_names_prefix_and_gnu() {
        let mut prefixed = HeaderBlock::ustar();
        prefixed.set_bytes(tarfmt::NAME, b"name");
        prefixed.set_bytes(tarfmt::PREFIX, b"some/prefix");
        prefixed.set_octal(tarfmt::SIZE, 0);
        prefixed.set_type(flag::REGULAR);
        prefixed.finish();
        let mut tar = prefixed.0.to_vec();
        let long = vec![b'n'; 300];
        tar.extend(entry(
            b"././@LongLink",
            flag::GNU_LONGNAME,
            &[&long[..], b"\0"].concat(),
        ));
        tar.extend(header(b"truncated", flag::REGULAR, 0));
        let got = read_all(&tar, Limits::default()).unwrap();
        assert_eq!(got[0].0, b"some/prefix/name");
        assert_eq!(got[1].0, long);
    }

    #[test]
    fn extension_data_counts_against_the_byte_limit() {
        let limits = Limits {
            max_total_bytes: 1000,
            ..Limits::default()
        };
        let mut pax = Vec::new();
        tarfmt::push_pax_record(&mut pax, b"comment", &[b'c'; 590]);
        let mut tar = entry(b"p", flag::PAX, &pax);
        tar.extend(entry(b"p", flag::PAX, &pax));
        tar.extend(header(b"f", flag::REGULAR, 0));
        let err = read_all(&tar, limits).unwrap_err();
        assert!(
            matches!(
                err,
                LayerError::Refused {
                    reason: Refusal::TooLarge { before: 603, .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn dangling_extension_and_missing_end_marker() {
        let mut pax = Vec::new();
        tarfmt::push_pax_record(&mut pax, b"path", b"x");
        let err = read_all(&entry(b"p", flag::PAX, &pax), Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                LayerError::Malformed {
                    reason: Malformed::DanglingExtension,
                    ..
                }
            ),
            "{err}"
        );
        // No end-of-archive blocks at all: a clean end at a header boundary is accepted.
        let got = read_all(&entry(b"f", flag::REGULAR, b"x"), Limits::default()).unwrap();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn an_end_inside_the_last_padding_ends_the_archive_but_not_inside_data() {
        // What the docker CLI sends when it adds a Dockerfile: the last entry's data, then
        // nothing (no padding, no end marker).
        let mut tar = entry(b"a", flag::REGULAR, b"first");
        tar.extend_from_slice(&header(b"b", flag::REGULAR, 3));
        tar.extend_from_slice(b"end");
        let got = read_all(&tar, Limits::default()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].2, b"end");
        let cut = &tar[..tar.len() - 1];
        let err = read_all(cut, Limits::default()).unwrap_err();
        assert!(matches!(err, LayerError::Truncated { .. }), "{err}");
    }
}
