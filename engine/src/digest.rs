//! Content identifiers: OCI digests, layer diff IDs and kiln's internal cache keys.
//!
//! Parse, don't validate: the constructors are the only validators, so a `Digest` in hand is always
//! `sha256:` followed by 64 lowercase hex digits and can be used as a file name without checks.
//! `Digest` (the hash of a blob as stored or shipped, possibly compressed) and `DiffId` (the hash
//! of an uncompressed layer tar) are distinct types because mixing them up is a classic bug.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A digest string that is not `sha256:<64 lowercase hex>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
pub struct InvalidDigest(pub String);

/// A sha256 value, shared representation of [`Digest`] and [`DiffId`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Sha256Hex([u8; 32]);

impl Sha256Hex {
    fn parse(s: &str) -> Result<Self, InvalidDigest> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| InvalidDigest(s.to_owned()))?;
        Self::parse_hex(hex_part).ok_or_else(|| InvalidDigest(s.to_owned()))
    }

    fn parse_hex(h: &str) -> Option<Self> {
        if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(h, &mut out).ok()?;
        Some(Self(out))
    }

    fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

macro_rules! sha256_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Sha256Hex);

        impl $name {
            /// The sha256 of `bytes`.
            pub fn of(bytes: &[u8]) -> Self {
                Self(Sha256Hex(Sha256::digest(bytes).into()))
            }

            /// Wraps a finished sha256 value.
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(Sha256Hex(bytes))
            }

            /// Parses the bare 64-digit hex form (no `sha256:` prefix), as used in file names.
            pub fn from_hex(h: &str) -> Result<Self, InvalidDigest> {
                Sha256Hex::parse_hex(h).map(Self).ok_or_else(|| InvalidDigest(h.to_owned()))
            }

            /// The 64 lowercase hex digits, without the algorithm prefix.
            pub fn hex(&self) -> String {
                self.0.hex()
            }

            /// The first 12 hex digits, as docker shows IDs.
            pub fn short(&self) -> String {
                self.0.hex()[..12].to_owned()
            }

            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &(self.0).0
            }
        }

        impl FromStr for $name {
            type Err = InvalidDigest;
            fn from_str(s: &str) -> Result<Self, InvalidDigest> {
                Sha256Hex::parse(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "sha256:{}", self.0.hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(sha256:{})", stringify!($name), self.0.hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

sha256_id!(
    /// The digest of a blob as stored or shipped (a manifest, a config, a possibly compressed
    /// layer): `sha256:<hex>`.
    Digest
);

sha256_id!(
    /// The digest of an *uncompressed* layer tar: what an image config's `rootfs.diff_ids` lists.
    DiffId
);

impl DiffId {
    /// The blob digest of this layer when it is stored uncompressed (then both hashes agree).
    pub fn as_uncompressed_digest(&self) -> Digest {
        Digest(self.0)
    }
}

/// A kiln cache key: blake3 over a step's inputs. Internal only; never written into OCI JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// Wraps a finished blake3 hash.
    pub fn from_hash(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }

    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 64-digit hex form.
    pub fn from_hex(h: &str) -> Result<Self, InvalidDigest> {
        Sha256Hex::parse_hex(h)
            .map(|v| Self(v.0))
            .ok_or_else(|| InvalidDigest(h.to_owned()))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.hex())
    }
}

/// A writer that hashes everything written through it with sha256 and counts the bytes.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Returns the inner writer, the raw sha256 and the byte count.
    pub fn finish(self) -> (W, [u8; 32], u64) {
        (self.inner, self.hasher.finalize().into(), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes everything read through it with sha256 and counts the bytes.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Returns the raw sha256 of what was read and the byte count.
    pub fn finish(self) -> ([u8; 32], u64) {
        (self.hasher.finalize().into(), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let s = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_writer_matches() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (buf, h, n) = w.finish();
        assert_eq!(buf, b"hello");
        assert_eq!(n, 5);
        assert_eq!(Digest::from_bytes(h), Digest::of(b"hello"));
    }
}
