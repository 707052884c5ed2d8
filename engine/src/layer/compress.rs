//! Compressing layer tars into shippable blobs, and reading blobs in any common compression.

use std::io::{self, BufReader, Chain, Cursor, Read, Write};

use super::LayerError;
use crate::digest::{Digest, HashingWriter};

/// Copy buffer size for [`compress`].
const CHUNK: usize = 256 * 1024;

/// Largest memory an xz stream may ask for while decoding (xz's own default for `-9` is 64 MiB).
const XZ_MEMLIMIT: u64 = 256 * 1024 * 1024;

/// How to compress a blob that leaves the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip at the default level, Docker-compatible (`application/vnd.oci.image.layer.v1.tar+gzip`).
    Gzip,
    /// zstd at the default level (`application/vnd.oci.image.layer.v1.tar+zstd`).
    Zstd,
}

/// A compressed blob that was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressedBlob {
    /// sha256 of the compressed bytes.
    pub digest: Digest,
    /// Length of the compressed bytes.
    pub size: u64,
}

/// Compresses everything `reader` yields into `writer`, hashing the output.
///
/// The output is deterministic for a given input: gzip headers carry no name and mtime 0.
pub fn compress<R: Read, W: Write>(
    mut reader: R,
    writer: W,
    compression: Compression,
) -> Result<CompressedBlob, LayerError> {
    let hashing = HashingWriter::new(writer);
    let mut hashing = match compression {
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(hashing, flate2::Compression::default());
            pump(&mut reader, &mut enc)?;
            enc.finish().map_err(LayerError::Compress)?
        }
        Compression::Zstd => {
            let mut enc =
                zstd::stream::write::Encoder::new(hashing, zstd::DEFAULT_COMPRESSION_LEVEL)
                    .map_err(LayerError::Compress)?;
            pump(&mut reader, &mut enc)?;
            enc.finish().map_err(LayerError::Compress)?
        }
    };
    hashing.flush().map_err(LayerError::Compress)?;
    let (_, hash, size) = hashing.finish();
    Ok(CompressedBlob {
        digest: Digest::from_bytes(hash),
        size,
    })
}

/// Input each member of a [`compress_parallel`] blob covers.
const MEMBER: usize = 4 << 20;

/// Like [`compress`], on every core: the input is cut into 4 MiB pieces, each compressed on
/// its own into a gzip member or zstd frame, and the pieces are written in order. Readers take
/// such concatenations as one stream (RFC 1952 members; zstd frames), Go's and docker's too.
/// The output depends only on the input, not on the number of cores; an input of one piece is
/// byte for byte what [`compress`] writes.
pub fn compress_parallel<R: Read, W: Write>(
    mut reader: R,
    writer: W,
    compression: Compression,
) -> Result<CompressedBlob, LayerError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8));
    let mut out = HashingWriter::new(writer);
    loop {
        let mut pieces = Vec::with_capacity(threads);
        for _ in 0..threads {
            let mut piece = Vec::with_capacity(MEMBER);
            (&mut reader)
                .take(MEMBER as u64)
                .read_to_end(&mut piece)
                .map_err(LayerError::Compress)?;
            if piece.is_empty() {
                break;
            }
            let last = piece.len() < MEMBER;
            pieces.push(piece);
            if last {
                break;
            }
        }
        let done = pieces.len() < threads || pieces.last().is_some_and(|p| p.len() < MEMBER);
        if pieces.is_empty() {
            break;
        }
        let packed: Vec<Result<Vec<u8>, LayerError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = pieces
                .iter()
                .map(|p| scope.spawn(move || compress_piece(p, compression)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LayerError::Compress(io::Error::other(
                            "compression thread panicked",
                        )))
                    })
                })
                .collect()
        });
        for p in packed {
            out.write_all(&p?).map_err(LayerError::Compress)?;
        }
        if done {
            break;
        }
    }
    out.flush().map_err(LayerError::Compress)?;
    if out.written() == 0 {
        // An empty input is still one (empty) member, as `compress` writes it.
        let empty = compress_piece(&[], compression)?;
        out.write_all(&empty).map_err(LayerError::Compress)?;
    }
    let (_, hash, size) = out.finish();
    Ok(CompressedBlob {
        digest: Digest::from_bytes(hash),
        size,
    })
}

fn compress_piece(piece: &[u8], compression: Compression) -> Result<Vec<u8>, LayerError> {
    let mut v = Vec::with_capacity(piece.len() / 2 + 64);
    if compression == Compression::Gzip && piece.len() >= MEMBER / 2 && incompressible(piece) {
        // Deflate gains nothing on random bytes (already-compressed files) and takes ten
        // times longer over them than over text: such a piece is stored, as deflate's own
        // "stored" blocks, in a gzip member like the others.
        let mut enc = flate2::GzBuilder::new()
            .mtime(0)
            .write(&mut v, flate2::Compression::none());
        enc.write_all(piece).map_err(LayerError::Compress)?;
        enc.finish().map_err(LayerError::Compress)?;
        return Ok(v);
    }
    compress(piece, &mut v, compression)?;
    Ok(v)
}

/// Whether deflate would not shrink `piece`: four 16 KiB samples, spread over it, each
/// compressed at the fastest level, all stay above 97% of their size.
fn incompressible(piece: &[u8]) -> bool {
    const SAMPLE: usize = 16 << 10;
    (0..4).all(|i| {
        let start = piece.len() / 4 * i;
        let sample = piece.get(start..start + SAMPLE).unwrap_or_default();
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        if enc.write_all(sample).is_err() {
            return false;
        }
        enc.finish()
            .is_ok_and(|out| !sample.is_empty() && out.len() * 100 > sample.len() * 97)
    })
}

/// Copies `reader` into `writer` with a large buffer.
fn pump<R: Read, W: Write>(reader: &mut R, writer: &mut W) -> Result<(), LayerError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LayerError::Compress(e)),
        };
        writer.write_all(&buf[..n]).map_err(LayerError::Compress)?;
    }
}

/// A compression format, as detected from a blob's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No compression (or one kiln does not recognise).
    Plain,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
}

impl Format {
    fn detect(magic: &[u8]) -> Self {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if magic.starts_with(b"BZh") {
            Self::Bzip2
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Self::Xz
        } else {
            Self::Plain
        }
    }
}

/// The prefix that was peeked at, followed by the rest of the input.
type Peeked<R> = Chain<Cursor<[u8; 6]>, R>;

/// A reader that decompresses whatever [`decompress_auto`] detected.
pub struct Decompressor<R: Read> {
    format: Format,
    inner: Inner<R>,
}

enum Inner<R: Read> {
    Plain(Peeked<R>),
    Gzip(Box<flate2::read::MultiGzDecoder<Peeked<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Peeked<R>>>>),
    Bzip2(Box<bzip2::read::MultiBzDecoder<Peeked<R>>>),
    Xz(Box<xz2::read::XzDecoder<Peeked<R>>>),
}

impl<R: Read> Decompressor<R> {
    /// The detected format.
    pub fn format(&self) -> Format {
        self.format
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(r) => r.read(buf),
            Inner::Gzip(r) => r.read(buf),
            Inner::Zstd(r) => r.read(buf),
            Inner::Bzip2(r) => r.read(buf),
            Inner::Xz(r) => r.read(buf),
        }
    }
}

/// Wraps `reader` in the decompressor its magic bytes call for: gzip, zstd, bzip2, xz, or none.
///
/// Concatenated streams (several gzip members, zstd frames, bzip2 or xz streams) are read
/// through, as Go's readers do. xz decoding memory is capped at 256 MiB and zstd's window at
/// its default maximum (128 MiB), so a hostile header cannot make kiln allocate without bound.
pub fn decompress_auto<R: Read>(mut reader: R) -> Result<Decompressor<R>, LayerError> {
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        match reader.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LayerError::ReadArchive(e)),
        }
    }
    let format = Format::detect(&magic[..got]);
    // Short input: move the bytes read to the end of the array and start the cursor there.
    let skip = magic.len() - got;
    magic.copy_within(..got, skip);
    let mut prefix = Cursor::new(magic);
    prefix.set_position(skip as u64);
    let chained = prefix.chain(reader);
    let inner = match format {
        Format::Plain => Inner::Plain(chained),
        Format::Gzip => Inner::Gzip(Box::new(flate2::read::MultiGzDecoder::new(chained))),
        Format::Zstd => Inner::Zstd(Box::new(
            zstd::stream::read::Decoder::new(chained).map_err(LayerError::ReadArchive)?,
        )),
        Format::Bzip2 => Inner::Bzip2(Box::new(bzip2::read::MultiBzDecoder::new(chained))),
        Format::Xz => {
            let stream =
                xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, xz2::stream::CONCATENATED)
                    .map_err(|e| LayerError::ReadArchive(e.into()))?;
            Inner::Xz(Box::new(xz2::read::XzDecoder::new_stream(chained, stream)))
        }
    };
    Ok(Decompressor { format, inner })
}

/// Reads the chunks a channel delivers, in order, until every sender is gone: the input of a
/// compressor fed by another thread (a layer compressed while it is written).
pub struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    /// Reads what `rx` receives.
    pub fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let rest = self.chunk.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

/// A writer that passes everything to `inner` and a copy of it to a channel (see
/// [`ChannelReader`]); a receiver that went away is ignored.
pub struct Tee<W> {
    /// Where the bytes go.
    pub inner: W,
    /// Where their copy goes.
    pub copy: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let _ = self.copy.send(buf.get(..n).unwrap_or_default().to_vec());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
