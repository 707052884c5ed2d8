//! Blobs: content-addressed files under `blobs/sha256/`, written atomically and verified on read.

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use cap_std::fs::File;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use super::{Lease, Store, StoreError, TempFile, BLOBS};
use crate::digest::{Digest, HashingWriter};
use crate::fsx::direct;
use crate::image::{CanonicalJson, Descriptor};

/// A blob being written: hashes and counts what passes through, and becomes
/// `blobs/sha256/<hex>` on [`BlobWriter::commit`]. Dropped without committing, it removes its
/// temporary file. Holds a [`Lease`] while alive.
pub struct BlobWriter<'a> {
    out: HashingWriter<BufWriter<File>>,
    pending: PendingBlob<'a>,
}

/// What every blob writer holds: its temporary file in the store and a lease against `gc`.
/// Dropped unpublished, it removes the temporary file.
struct PendingBlob<'a> {
    store: &'a Store,
    temp: TempFile<'a>,
    _lease: Lease,
}

impl<'a> PendingBlob<'a> {
    /// A new temporary blob file.
    fn new(store: &'a Store) -> Result<(Self, File), StoreError> {
        let lease = store.lease()?;
        let (rel, file) = store.create_temp("blob")?;
        let pending = Self {
            store,
            temp: TempFile {
                store,
                rel: Some(rel),
            },
            _lease: lease,
        };
        Ok((pending, file))
    }

    fn rel(&self) -> String {
        self.temp.rel.clone().unwrap_or_default()
    }

    /// Flushes and `fsync`s the written content.
    fn sync(&self, out: BufWriter<File>) -> Result<(), StoreError> {
        let rel = self.rel();
        let file = out
            .into_inner()
            .map_err(|e| self.store.io("write", &rel)(e.into_error()))?;
        file.sync_all().map_err(self.store.io("sync", &rel))
    }

    /// Renames the synced content to `blobs/sha256/<digest>`. Renaming over an existing blob is
    /// fine: same content, and it repairs a rotted copy.
    fn publish(self, digest: &Digest) -> Result<(), StoreError> {
        let Self { store, temp, .. } = self;
        let rel = temp.rel.clone().unwrap_or_default();
        let dest = blob_rel(digest);
        store
            .dir
            .rename(&rel, &store.dir, &dest)
            .map_err(store.io("rename temporary blob to", &dest))?;
        temp.disarm();
        store.sync_dir(BLOBS)
    }
}

impl<'a> BlobWriter<'a> {
    fn new(store: &'a Store) -> Result<Self, StoreError> {
        let (pending, file) = PendingBlob::new(store)?;
        Ok(Self {
            out: HashingWriter::new(BufWriter::with_capacity(1 << 16, file)),
            pending,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.written()
    }

    /// Makes the blob durable and visible; returns its digest and size.
    pub fn commit(self) -> Result<(Digest, u64), StoreError> {
        self.finish(None)
    }

    /// Like [`BlobWriter::commit`], but fails with [`StoreError::DigestMismatch`] (storing
    /// nothing) unless the content hashes to `expected`.
    pub fn commit_expect(self, expected: &Digest) -> Result<u64, StoreError> {
        self.finish(Some(expected)).map(|(_, n)| n)
    }

    fn finish(self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let (buf, hash, size) = self.out.finish();
        self.pending.sync(buf)?;
        let digest = Digest::from_bytes(hash);
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    expected: *expected,
                    found: digest,
                });
            }
        }
        self.pending.publish(&digest)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A blob whose digest its writer computes itself (kiln's layer writer hashes its tar as it
/// produces it): the bytes are not hashed a second time here. The caller must pass the sha256
/// of exactly the bytes written; `fsck` re-verifies every blob.
///
/// Layer blobs are large and read back rarely (export, `fsck`; builds read snapshots), so they
/// bypass the page cache: whole aligned chunks are written with `O_DIRECT`, which moves them to
/// the disk without copying them into the cache or leaving dirty pages that throttle the
/// build's other writes (on this kind of machine a buffered 200 MiB write costs 0.5 s of CPU,
/// a direct one 0.16 s of device time). Where the filesystem refuses `O_DIRECT` the writer
/// falls back to buffered writes whose writeback it starts every [`WRITEBACK_CHUNK`].
pub struct PrehashedBlobWriter<'a> {
    file: std::fs::File,
    out: direct::Out,
    written: u64,
    /// Bytes already handed to the kernel's writeback (buffered mode).
    started: u64,
    pending: PendingBlob<'a>,
}

/// How much a buffered blob writer lets pile up before it starts the kernel writing it to disk:
/// the final `fsync` then waits for the tail only, not for the whole blob.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// The unit of a direct write.
const DIRECT_CHUNK: usize = 4 << 20;

impl<'a> PrehashedBlobWriter<'a> {
    fn new(store: &'a Store) -> Result<Self, StoreError> {
        let (pending, file) = PendingBlob::new(store)?;
        let file = file.into_std();
        let mut out = direct::Out::new(DIRECT_CHUNK);
        out.begin(&file);
        Ok(Self {
            file,
            out,
            written: 0,
            started: 0,
            pending,
        })
    }

    /// Makes the blob durable and visible under `digest` (the sha256 of what was written);
    /// returns its size.
    pub fn commit(mut self, digest: &Digest) -> Result<u64, StoreError> {
        let rel = self.pending.rel();
        // The tail is shorter than a chunk and need not be aligned: it goes through the cache.
        let tail = self
            .out
            .finish(&self.file)
            .map_err(self.pending.store.io("write", &rel))?;
        self.written += tail as u64;
        // Stored already (the empty layer of a step that changed nothing, a layer built
        // before): the copy at hand is kept and this one dropped unsynced, as containerd's
        // content store does. `fsck` finds a rotted copy.
        let stored = self
            .pending
            .store
            .dir
            .symlink_metadata(blob_rel(digest))
            .is_ok_and(|m| m.is_file() && m.len() == self.written);
        if stored {
            return Ok(self.written);
        }
        self.file
            .sync_all()
            .map_err(self.pending.store.io("sync", &rel))?;
        self.pending.publish(digest)?;
        Ok(self.written)
    }

    /// Counts a chunk written; without direct writes, starts the kernel writing back what
    /// piled up.
    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if !self.out.is_direct() && self.written - self.started >= WRITEBACK_CHUNK {
            use std::os::fd::AsRawFd;
            let len = self.written - self.started;
            // SAFETY: sync_file_range(2) on our own open file; it only starts writeback.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    i64::try_from(self.started).unwrap_or(i64::MAX),
                    i64::try_from(len).unwrap_or(i64::MAX),
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.started = self.written;
        }
    }
}

impl Write for PrehashedBlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.push(buf);
        if self.out.is_full() {
            let written = self.out.write_chunk(&self.file)?;
            self.wrote(written);
        }
        Ok(n)
    }

    /// Nothing to do: the content reaches the file in whole chunks, the tail at
    /// [`PrehashedBlobWriter::commit`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blob being read: fails with an `InvalidData` error wrapping
/// [`StoreError::DigestMismatch`] at end of file if the content does not match its digest.
pub struct BlobReader {
    file: File,
    expected: Digest,
    hasher: Sha256,
    size: u64,
    verified: bool,
}

impl BlobReader {
    /// The blob's size on disk.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(chunk) = buf.get(..n) {
            self.hasher.update(chunk);
        }
        if n == 0 && !buf.is_empty() && !self.verified {
            let found = Digest::from_bytes(self.hasher.clone().finalize().into());
            if found != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    StoreError::DigestMismatch {
                        expected: self.expected,
                        found,
                    },
                ));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

fn blob_rel(d: &Digest) -> String {
    format!("{BLOBS}/{}", d.hex())
}

impl Store {
    /// Starts writing a blob (see [`BlobWriter`]); use it to stream content (a layer tar) into
    /// the store without an intermediate copy.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>, StoreError> {
        BlobWriter::new(self)
    }

    /// Starts writing a blob whose digest the caller computes (see [`PrehashedBlobWriter`]).
    pub fn prehashed_blob_writer(&self) -> Result<PrehashedBlobWriter<'_>, StoreError> {
        PrehashedBlobWriter::new(self)
    }

    /// Stores everything `reader` yields; returns its digest and size. Idempotent.
    pub fn put_blob(&self, reader: impl Read) -> Result<(Digest, u64), StoreError> {
        let mut w = self.blob_writer()?;
        copy_into(reader, &mut w)?;
        w.commit()
    }

    /// Stores everything `reader` yields if it hashes to `expected` (else
    /// [`StoreError::DigestMismatch`], storing nothing); returns the size.
    pub fn put_blob_expect(&self, reader: impl Read, expected: &Digest) -> Result<u64, StoreError> {
        let mut w = self.blob_writer()?;
        copy_into(reader, &mut w)?;
        w.commit_expect(expected)
    }

    /// Stores `value` in its canonical JSON form; returns its descriptor.
    pub fn put_json<T: CanonicalJson>(
        &self,
        media_type: &str,
        value: &T,
    ) -> Result<Descriptor, StoreError> {
        let bytes = value
            .to_canonical_json()
            .map_err(|source| StoreError::Encode {
                what: "json blob",
                source,
            })?;
        let (digest, size) = self.put_blob(&bytes[..])?;
        Ok(Descriptor::new(media_type, digest, size))
    }

    /// The compressed blob of media type `media_type` that was made for the layer `diff` and is
    /// still stored, if any (see [`Store::remember_compressed`]).
    pub fn compressed_form(
        &self,
        diff: &crate::digest::DiffId,
        media_type: &str,
    ) -> Option<Descriptor> {
        let path = self.compressed_memo(diff, media_type)?;
        let text = std::fs::read_to_string(path).ok()?;
        let d = text.trim().parse::<Digest>().ok()?;
        let size = self.blob_size(&d).ok()?;
        Some(Descriptor::new(media_type, d, size))
    }

    /// Remembers that `desc` is a compressed form of the layer `diff`, so that pushes, cache
    /// exports and `build --compression` compress each layer once.
    pub fn remember_compressed(
        &self,
        diff: &crate::digest::DiffId,
        desc: &Descriptor,
    ) -> Result<(), StoreError> {
        let Some(path) = self.compressed_memo(diff, &desc.media_type) else {
            return Ok(());
        };
        let dir = self.cache_dir().join("compressed");
        let rel = "kiln/cache/compressed";
        crate::fsx::private_dir_all(&dir).map_err(self.io("create", rel))?;
        std::fs::write(path, desc.digest.to_string()).map_err(self.io("write", rel))
    }

    fn compressed_memo(&self, diff: &crate::digest::DiffId, media_type: &str) -> Option<PathBuf> {
        use crate::image::media_types as mt;
        let tag = match media_type {
            mt::OCI_LAYER_GZIP => "gzip",
            mt::OCI_LAYER_ZSTD => "zstd",
            _ => return None,
        };
        Some(
            self.cache_dir()
                .join("compressed")
                .join(format!("{}-{tag}", diff.hex())),
        )
    }

    /// Whether the blob is present (not whether it is intact: [`Store::fsck`] checks that).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.dir.is_file(blob_rel(digest))
    }

    /// The blob's path, for code that needs one (read-only use; the store may replace or remove
    /// the file at any time when no [`Lease`] is held).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(blob_rel(digest))
    }

    /// The blob's size on disk.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let rel = blob_rel(digest);
        match self.dir.metadata(&rel) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound(*digest)),
            Err(e) => Err(self.io("stat", &rel)(e)),
        }
    }

    /// Opens a blob for reading through a verifying reader.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader, StoreError> {
        let rel = blob_rel(digest);
        let file = match self.dir.open(&rel) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobNotFound(*digest))
            }
            Err(e) => return Err(self.io("open blob", &rel)(e)),
        };
        let size = file.metadata().map_err(self.io("stat", &rel))?.len();
        Ok(BlobReader {
            file,
            expected: *digest,
            hasher: Sha256::new(),
            size,
            verified: false,
        })
    }

    /// Reads a whole blob of at most `max_len` bytes, verified.
    pub fn read_blob(&self, digest: &Digest, max_len: u64) -> Result<Vec<u8>, StoreError> {
        let mut r = self.open_blob(digest)?;
        if r.size > max_len {
            return Err(StoreError::TooLarge {
                digest: *digest,
                size: r.size,
                max: max_len,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(r.size).unwrap_or(0));
        // The bound also holds if the file grows while being read (it never should).
        (&mut r)
            .take(max_len + 1)
            .read_to_end(&mut buf)
            .map_err(|e| unwrap_mismatch(e, self, digest))?;
        if buf.len() as u64 > max_len {
            return Err(StoreError::TooLarge {
                digest: *digest,
                size: buf.len() as u64,
                max: max_len,
            });
        }
        Ok(buf)
    }

    /// Reads a JSON blob (at most [`super::MAX_JSON_BLOB`] bytes) as `T`; `what` names it in
    /// errors (`manifest`, `config`).
    pub fn read_json<T: DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &'static str,
    ) -> Result<T, StoreError> {
        let bytes = self.read_blob(digest, super::MAX_JSON_BLOB)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            what,
            digest: *digest,
            source,
        })
    }

    /// Re-hashes a blob; returns what its content hashes to and its size.
    pub(super) fn hash_blob(&self, digest: &Digest) -> Result<(Digest, u64), StoreError> {
        let rel = blob_rel(digest);
        let mut file = match self.dir.open(&rel) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobNotFound(*digest))
            }
            Err(e) => return Err(self.io("open blob", &rel)(e)),
        };
        let mut w = HashingWriter::new(io::sink());
        io::copy(&mut file, &mut w).map_err(self.io("read blob", &rel))?;
        let (_, hash, n) = w.finish();
        Ok((Digest::from_bytes(hash), n))
    }
}

/// Turns a verifying reader's `InvalidData` error back into the [`StoreError`] it carries.
fn unwrap_mismatch(e: io::Error, store: &Store, digest: &Digest) -> StoreError {
    let io_err = store.io("read blob", &blob_rel(digest));
    if e.kind() != io::ErrorKind::InvalidData {
        return io_err(e);
    }
    match e.into_inner().map(|inner| inner.downcast::<StoreError>()) {
        Some(Ok(err)) => *err,
        Some(Err(other)) => io_err(io::Error::new(io::ErrorKind::InvalidData, other)),
        None => io_err(io::ErrorKind::InvalidData.into()),
    }
}

fn copy_into(mut reader: impl Read, w: &mut BlobWriter<'_>) -> Result<(), StoreError> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::Source(e)),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        let rel = w.pending.rel();
        w.write_all(chunk)
            .map_err(w.pending.store.io("write", &rel))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MAX_JSON_BLOB;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("s")).unwrap();
        (t, s)
    }

    fn tmp_entries(s: &Store) -> usize {
        std::fs::read_dir(s.root().join("kiln/tmp"))
            .unwrap()
            .count()
    }

    /// Deterministic bytes that no two offsets share a pattern of.
    fn noise(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn prehashed_blobs_of_every_alignment_read_back_verified() {
        let (_t, s) = store();
        // Empty, shorter than a block, whole blocks, exactly one direct chunk, and chunks plus
        // an unaligned tail, written in odd-sized pieces.
        for len in [
            0,
            1,
            4095,
            4096,
            DIRECT_CHUNK,
            DIRECT_CHUNK + 1,
            2 * DIRECT_CHUNK + 4097,
        ] {
            let data = noise(len);
            let mut w = s.prehashed_blob_writer().unwrap();
            for piece in data.chunks(100_003) {
                w.write_all(piece).unwrap();
            }
            let d = Digest::of(&data);
            assert_eq!(w.commit(&d).unwrap(), len as u64);
            let mut back = Vec::new();
            s.open_blob(&d).unwrap().read_to_end(&mut back).unwrap();
            assert!(back == data, "blob of {len} bytes differs");
        }
        assert_eq!(tmp_entries(&s), 0);
    }

    #[test]
    fn put_is_idempotent_and_reads_verify() {
        let (_t, s) = store();
        let (d1, n1) = s.put_blob(&b"hello"[..]).unwrap();
        let (d2, n2) = s.put_blob(&b"hello"[..]).unwrap();
        assert_eq!((d1, n1), (d2, n2));
        assert_eq!(d1, Digest::of(b"hello"));
        assert!(s.has_blob(&d1));
        assert_eq!(s.read_blob(&d1, 5).unwrap(), b"hello");
        assert_eq!(tmp_entries(&s), 0);
        let mut text = String::new();
        s.open_blob(&d1).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
    }

    #[test]
    fn corrupted_blob_fails_on_read() {
        let (_t, s) = store();
        let (d, _) = s.put_blob(&b"hello"[..]).unwrap();
        std::fs::write(s.blob_path(&d), "jello").unwrap();
        match s.read_blob(&d, 100) {
            Err(StoreError::DigestMismatch { expected, found }) => {
                assert_eq!(expected, d);
                assert_eq!(found, Digest::of(b"jello"));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        let err = io::copy(&mut s.open_blob(&d).unwrap(), &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Putting the right content again repairs it.
        s.put_blob(&b"hello"[..]).unwrap();
        assert_eq!(s.read_blob(&d, 100).unwrap(), b"hello");
    }

    #[test]
    fn expected_digest_is_enforced() {
        let (_t, s) = store();
        let wrong = Digest::of(b"other");
        match s.put_blob_expect(&b"hello"[..], &wrong) {
            Err(StoreError::DigestMismatch { expected, found }) => {
                assert_eq!(expected, wrong);
                assert_eq!(found, Digest::of(b"hello"));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        assert!(!s.has_blob(&Digest::of(b"hello")));
        assert_eq!(tmp_entries(&s), 0);
        assert_eq!(
            s.put_blob_expect(&b"hello"[..], &Digest::of(b"hello"))
                .unwrap(),
            5
        );
    }

    #[test]
    fn reads_are_bounded() {
        let (_t, s) = store();
        let (d, _) = s.put_blob(&[7u8; 100][..]).unwrap();
        assert!(matches!(
            s.read_blob(&d, 99),
            Err(StoreError::TooLarge {
                size: 100,
                max: 99,
                ..
            })
        ));
        assert!(matches!(
            s.read_blob(&Digest::of(b"nope"), MAX_JSON_BLOB),
            Err(StoreError::BlobNotFound(_))
        ));
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let (_t, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"partial").unwrap();
        assert_eq!(w.written(), 7);
        assert_eq!(tmp_entries(&s), 1);
        drop(w);
        assert_eq!(tmp_entries(&s), 0);
        assert!(!s.has_blob(&Digest::of(b"partial")));
    }
}
