//! Writing a layer tar from an upper (or snapshot) folder, deterministically.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::override_stat::{OverrideStat, OverrideType};
use super::tarfmt::{self, flag, HeaderBlock, BLOCK};
use super::{
    keep_xattr, lossy, LayerError, Unrepresentable, OPAQUE_MARKER, OPAQUE_XATTR,
    OVERRIDE_STAT_XATTR, WHITEOUT_PREFIX,
};
use crate::digest::{DiffId, HashingWriter};
use crate::fsx;

/// Copy and output buffer size: large, so a big file costs few system calls.
const CHUNK: usize = 1024 * 1024;

/// Longest symlink target recorded as file content under an override (`PATH_MAX`).
const MAX_LINK_TARGET: usize = 4096;

/// A layer tar that was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerTar {
    /// sha256 of the tar bytes.
    pub diff_id: DiffId,
    /// Length of the tar in bytes.
    pub size: u64,
}

/// Writes the layer tar of an upper folder to `out`, hashing it as it goes.
///
/// The tar is deterministic, the same tree gives the same bytes:
/// - entries in byte-wise sorted order of their tar names, a directory (`etc/`) right before its
///   contents (`etc/passwd`); names are relative, without `./` or `/`; the root itself is not
///   an entry. One exception: a directory's opaque marker `.wh..wh..opq` comes right after the
///   directory, before its other contents, as containerd writes it, so consumers that apply it
///   on sight do not delete siblings from the same layer;
/// - POSIX ustar headers with PAX records where a value does not fit (long names and link
///   targets, big sizes and ids, times before 1970) and for xattrs (`SCHILY.xattr.*`:
///   `security.capability` and `user.*` except `user.overlay.*` and the override record);
/// - numeric uid/gid, empty uname/gname, mode with setuid/setgid/sticky, whole-second mtimes
///   clamped to `source_date_epoch` when given, no atime/ctime;
/// - whiteouts (0:0 character devices, or `.wh.<name>` regular files) become `.wh.<name>`
///   entries and opaque directories (`user.overlay.opaque=y`, or a `.wh..wh..opq` regular file)
///   get a `.wh..wh..opq` entry; markers carry mode 0, owner 0:0 and mtime 0;
/// - `user.containers.override_stat`, when present, supplies uid, gid, mode and type; without
///   one, a non-root kiln's own uid and gid are written as 0 ([`super::container_owner`]);
/// - the second and later paths of an inode (same device and inode number) are hardlink entries
///   to the first in tar order;
/// - sockets are skipped, as Docker does; xattrs are read from files and directories only
///   (Linux allows `user.*` on nothing else).
pub fn write_layer<W: Write>(
    upper: &Dir,
    source_date_epoch: Option<i64>,
    out: W,
) -> Result<LayerTar, LayerError> {
    let sink = Direct(HashingWriter::new(out));
    let Direct(mut hashing) = write_tar(upper, source_date_epoch, sink)?;
    hashing.flush().map_err(LayerError::WriteTar)?;
    let (_, hash, size) = hashing.finish();
    Ok(LayerTar {
        diff_id: DiffId::from_bytes(hash),
        size,
    })
}

/// [`write_layer`] on three threads: this one walks the upper and reads its files, a second
/// one hashes the tar, a third writes it to `out`, so that reading, hashing and waiting for the
/// disk overlap. Returns `out` too (to commit it).
pub fn write_layer_pipelined<W: Write + Send>(
    upper: &Dir,
    source_date_epoch: Option<i64>,
    out: W,
) -> Result<(LayerTar, W), LayerError> {
    use sha2::Digest as _;
    use std::sync::mpsc::sync_channel;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(PIPELINE_DEPTH);
        let (hashed_tx, hashed_rx) = sync_channel::<Vec<u8>>(PIPELINE_DEPTH);
        let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(2 * PIPELINE_DEPTH + 2);
        let hasher = scope.spawn(move || {
            let mut h = sha2::Sha256::new();
            let mut size = 0u64;
            for chunk in full_rx {
                h.update(&chunk);
                size += chunk.len() as u64;
                if hashed_tx.send(chunk).is_err() {
                    // The writer failed; it reports why.
                    break;
                }
            }
            (<[u8; 32]>::from(h.finalize()), size)
        });
        let writer = scope.spawn(move || -> io::Result<W> {
            let mut out = out;
            for chunk in hashed_rx {
                out.write_all(&chunk)?;
                // The producer may be gone (it failed): the chunk is then simply dropped.
                let _ = spare_tx.try_send(chunk);
            }
            out.flush()?;
            Ok(out)
        });
        let sink = Pipeline {
            full: full_tx,
            spare: spare_rx,
        };
        // Dropping the sink closes the pipeline, which ends the other threads.
        let produced = write_tar(upper, source_date_epoch, sink).map(drop);
        let panicked = || io::Error::other("layer writer thread panicked");
        let hashed = hasher.join().map_err(|_| LayerError::WriteTar(panicked()));
        let written = writer.join().unwrap_or_else(|_| Err(panicked()));
        // A failed write closes the pipeline and fails the producer too: report the cause.
        let out = written.map_err(LayerError::WriteTar)?;
        produced?;
        let (hash, size) = hashed?;
        Ok((
            LayerTar {
                diff_id: DiffId::from_bytes(hash),
                size,
            },
            out,
        ))
    })
}

/// Chunks of tar in flight between the reading and the writing threads.
const PIPELINE_DEPTH: usize = 4;

/// Where full chunks of tar go; each hand-over returns an (empty) buffer for the next chunk.
trait ChunkSink {
    fn put(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>>;
}

/// Writes chunks to a writer, reusing the one buffer.
struct Direct<W>(W);

impl<W: Write> ChunkSink for Direct<W> {
    fn put(&mut self, mut chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        self.0.write_all(&chunk)?;
        chunk.clear();
        Ok(chunk)
    }
}

/// Sends chunks to the hashing thread, reusing the buffers the writing thread sends back.
struct Pipeline {
    full: std::sync::mpsc::SyncSender<Vec<u8>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl ChunkSink for Pipeline {
    fn put(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        self.full
            .send(chunk)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(self.spare.try_recv().unwrap_or_default())
    }
}

/// The first size of a chunk buffer: a small layer never pays for a whole [`CHUNK`] of zeroed
/// memory.
const FIRST_CHUNK: usize = 64 * 1024;

/// The tar being produced: bytes gather in a buffer (doubling up to [`CHUNK`]) that file
/// contents are read into directly, and full buffers go to the sink.
struct Chunks<S: ChunkSink> {
    buf: Vec<u8>,
    fill: usize,
    sink: S,
}

impl<S: ChunkSink> Chunks<S> {
    fn new(sink: S) -> Self {
        Self {
            buf: vec![0; FIRST_CHUNK],
            fill: 0,
            sink,
        }
    }

    /// Hands the filled part of the buffer to the sink.
    fn send(&mut self) -> io::Result<()> {
        if self.fill == 0 {
            return Ok(());
        }
        let mut full = std::mem::take(&mut self.buf);
        full.truncate(self.fill);
        // An empty buffer: [`Chunks::make_room`] sizes it when it is needed.
        self.buf = self.sink.put(full)?;
        self.fill = 0;
        Ok(())
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.make_room()?;
            let n = bytes.len().min(self.buf.len() - self.fill);
            let (now, rest) = bytes.split_at(n);
            self.buf
                .get_mut(self.fill..self.fill + n)
                .unwrap_or_default()
                .copy_from_slice(now);
            self.fill += n;
            bytes = rest;
        }
        Ok(())
    }

    /// Makes sure the buffer has room for [`Chunks::read_from`]: a full [`CHUNK`] goes to the
    /// sink, a smaller buffer doubles.
    fn make_room(&mut self) -> io::Result<()> {
        if self.fill < self.buf.len() {
            return Ok(());
        }
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        let want = if self.buf.capacity() >= CHUNK {
            CHUNK
        } else {
            (self.buf.len() * 2).clamp(FIRST_CHUNK, CHUNK)
        };
        self.buf.resize(want, 0);
        Ok(())
    }

    /// Reads up to `max` bytes of `file` straight into the buffer's room; returns how many (0
    /// at the file's end, or without room).
    fn read_from(&mut self, file: &mut File, max: usize) -> io::Result<usize> {
        let room = (self.buf.len() - self.fill).min(max);
        let n = file.read(
            self.buf
                .get_mut(self.fill..self.fill + room)
                .unwrap_or_default(),
        )?;
        self.fill += n;
        Ok(n)
    }

    /// Sends what is left and returns the sink.
    fn finish(mut self) -> io::Result<S> {
        self.send()?;
        Ok(self.sink)
    }
}

/// Writes the layer tar of `upper` to `sink` and returns the sink.
fn write_tar<S: ChunkSink>(upper: &Dir, epoch: Option<i64>, sink: S) -> Result<S, LayerError> {
    let mut w = TarWriter {
        out: Chunks::new(sink),
        epoch,
        pax: Vec::new(),
        xattr_list: vec![0; fsx::XATTR_MAX],
        xattr_value: vec![0; fsx::XATTR_MAX],
        attrs: Attrs::default(),
        path: Vec::new(),
        links: HashMap::new(),
        entries: 0,
    };
    let root = fsx::open_dir_at(upper.as_fd(), c".").map_err(|e| w.upper_err(b"", "open", e))?;
    w.read_attrs(root.as_fd(), b"")?;
    let opaque = w.attrs.opaque;
    w.walk(root.as_fd(), opaque)?;
    w.out
        .write_all(&[0u8; 2 * BLOCK])
        .map_err(LayerError::WriteTar)?;
    w.out.finish().map_err(LayerError::WriteTar)
}

/// xattrs of one file or directory, sorted out.
#[derive(Default)]
struct Attrs {
    /// xattrs that go into the tar, sorted by name.
    kept: Vec<(Vec<u8>, Vec<u8>)>,
    /// Raw `user.containers.override_stat`.
    override_raw: Option<Vec<u8>>,
    /// `user.overlay.opaque` is `y`.
    opaque: bool,
}

/// Longest tar name kiln writes: what the unpacker accepts ([`super::Limits`]).
const MAX_PATH: usize = 4096;

/// Most entries kiln writes into one layer: what the unpacker accepts.
const MAX_ENTRIES: u64 = 500_000;

/// A path for an error message: lossy UTF-8, its middle left out past 256 bytes (a step's tree
/// may be thousands of levels deep).
fn shown(path: &[u8]) -> String {
    if path.len() <= 256 {
        return lossy(path);
    }
    format!(
        "{}...{} ({} bytes)",
        lossy(&path[..120]),
        lossy(&path[path.len() - 120..]),
        path.len()
    )
}

/// A directory being archived by [`TarWriter::walk`].
struct Frame {
    fd: OwnedFd,
    /// The names of `kids`.
    arena: Vec<u8>,
    /// Its children, sorted.
    kids: Vec<Child>,
    /// The next child to archive.
    next: usize,
    /// Length of its tar name (`TarWriter::path` while it is current).
    path_len: usize,
}

/// A directory child, as listed before sorting.
struct Child {
    /// Range of the name in the tar, inside the directory's name arena.
    name: (usize, usize),
    what: ChildKind,
}

enum ChildKind {
    /// A whiteout marker; the name already has its `.wh.` prefix.
    Whiteout,
    /// A node to archive; `stat` is its `lstat`.
    Node(Stat),
}

impl Child {
    fn is_dir(&self) -> bool {
        matches!(&self.what, ChildKind::Node(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory)
    }
}

/// One header's worth of metadata.
struct Meta<'a> {
    typeflag: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    link: &'a [u8],
    major: u32,
    minor: u32,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Metadata every entry of a node shares.
#[derive(Clone, Copy)]
struct Base {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

impl Meta<'static> {
    /// A header-only entry of type `typeflag` with `base`'s metadata.
    fn plain(base: Base, typeflag: u8) -> Self {
        Meta {
            typeflag,
            mode: base.mode,
            uid: base.uid,
            gid: base.gid,
            mtime: base.mtime,
            size: 0,
            link: b"",
            major: 0,
            minor: 0,
            xattrs: &[],
        }
    }

    /// A whiteout or opaque marker: an empty regular file owned by 0:0, mode 0, mtime 0.
    fn marker() -> Self {
        let zero = Base {
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        Self::plain(zero, flag::REGULAR)
    }
}

struct TarWriter<S: ChunkSink> {
    out: Chunks<S>,
    epoch: Option<i64>,
    pax: Vec<u8>,
    xattr_list: Vec<u8>,
    xattr_value: Vec<u8>,
    attrs: Attrs,
    /// The current directory's tar name: empty at the root, else ending in `/`.
    path: Vec<u8>,
    /// First tar name of every multiply-linked inode seen, by (device, inode).
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Entries listed so far.
    entries: u64,
}

impl<S: ChunkSink> TarWriter<S> {
    fn upper_err(&self, name: &[u8], op: &'static str, e: impl Into<io::Error>) -> LayerError {
        LayerError::ReadUpper {
            path: shown(&[&self.path[..], name].concat()),
            op,
            source: e.into(),
        }
    }

    fn unrepresentable(&self, name: &[u8], reason: Unrepresentable) -> LayerError {
        LayerError::Unrepresentable {
            path: shown(&[&self.path[..], name].concat()),
            reason,
        }
    }

    /// Archives the children of `root` (whose own entry, if any, is already written) and
    /// everything below them, depth first in name order.
    ///
    /// Iterative, not recursive: the tree is a step's, as deep as it made it. The stack holds
    /// one frame per open directory, with that directory's sorted listing; its depth is bounded
    /// by the longest name a layer may carry ([`Unrepresentable::PathTooLong`]), and the whole
    /// listing by the most entries a layer may hold.
    fn walk(&mut self, root: BorrowedFd<'_>, opaque: bool) -> Result<(), LayerError> {
        let root =
            rustix::io::fcntl_dupfd_cloexec(root, 0).map_err(|e| self.upper_err(b"", "open", e))?;
        let first = self.list(root, opaque)?;
        let mut stack = vec![first];
        let mut name = Vec::new();
        while let Some(top) = stack.last_mut() {
            let Some(kid) = top.kids.get(top.next) else {
                stack.pop();
                continue;
            };
            top.next += 1;
            self.path.truncate(top.path_len);
            name.clear();
            name.extend_from_slice(&top.arena[kid.name.0..kid.name.1]);
            match &kid.what {
                ChildKind::Whiteout => {
                    let full = [&self.path[..], &name].concat();
                    self.header(&full, &Meta::marker())?;
                }
                ChildKind::Node(st) => {
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                        let st = *st;
                        let (fd, opaque) = self.enter_directory(top.fd.as_fd(), &name, &st)?;
                        let frame = self.list(fd, opaque)?;
                        stack.push(frame);
                    } else {
                        self.node(top.fd.as_fd(), &name, st)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Lists directory `fd` (whose tar name is `self.path`) for [`Self::walk`], sorted, and
    /// writes its opaque marker.
    fn list(&mut self, fd: OwnedFd, opaque: bool) -> Result<Frame, LayerError> {
        let mut opaque = opaque;
        let mut arena: Vec<u8> = Vec::new();
        let mut kids: Vec<Child> = Vec::new();
        let listing =
            rustix::fs::Dir::read_from(&fd).map_err(|e| self.upper_err(b"", "list", e))?;
        for entry in listing {
            let entry = entry.map_err(|e| self.upper_err(b"", "list", e))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(
                    self.unrepresentable(name, Unrepresentable::TooManyEntries(MAX_ENTRIES))
                );
            }
            let st = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.upper_err(name, "stat", e))?;
            let ft = FileType::from_raw_mode(st.st_mode);
            let start = arena.len();
            let what = if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                if ft != FileType::RegularFile {
                    return Err(self.unrepresentable(name, Unrepresentable::WhiteoutName));
                }
                if name == OPAQUE_MARKER.as_bytes() {
                    opaque = true;
                    continue;
                }
                ChildKind::Whiteout
            } else if ft == FileType::CharacterDevice && st.st_rdev == 0 {
                arena.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                ChildKind::Whiteout
            } else if ft == FileType::Socket {
                continue;
            } else {
                ChildKind::Node(st)
            };
            arena.extend_from_slice(name);
            kids.push(Child {
                name: (start, arena.len()),
                what,
            });
        }
        let key = |c: &Child| {
            let slash: &[u8] = if c.is_dir() { b"/" } else { b"" };
            (c.name, slash)
        };
        kids.sort_by(|a, b| {
            let ((a0, a1), sa) = key(a);
            let ((b0, b1), sb) = key(b);
            arena[a0..a1]
                .iter()
                .chain(sa)
                .cmp(arena[b0..b1].iter().chain(sb))
        });
        // A 0:0 device `x` and a `.wh.x` file both say "x is deleted"; write it once.
        kids.dedup_by(|b, a| {
            matches!(
                (&a.what, &b.what),
                (ChildKind::Whiteout, ChildKind::Whiteout)
            ) && arena[a.name.0..a.name.1] == arena[b.name.0..b.name.1]
        });
        if opaque {
            let name = [&self.path[..], OPAQUE_MARKER.as_bytes()].concat();
            self.header(&name, &Meta::marker())?;
        }
        Ok(Frame {
            fd,
            arena,
            kids,
            next: 0,
            path_len: self.path.len(),
        })
    }

    /// Reads the xattrs of an open file or directory into `self.attrs`.
    fn read_attrs(&mut self, fd: BorrowedFd<'_>, name: &[u8]) -> Result<(), LayerError> {
        let attrs = &mut self.attrs;
        attrs.kept.clear();
        attrs.override_raw = None;
        attrs.opaque = false;
        let res = fsx::for_each_xattr(fd, &mut self.xattr_list, &mut self.xattr_value, |n, v| {
            if n == OVERRIDE_STAT_XATTR.as_bytes() {
                attrs.override_raw = Some(v.to_vec());
            } else if n == OPAQUE_XATTR.as_bytes() {
                attrs.opaque = v == b"y";
            } else if keep_xattr(n) {
                attrs.kept.push((n.to_vec(), v.to_vec()));
            }
        });
        res.map_err(|e| self.upper_err(name, "read xattrs", e))?;
        self.attrs.kept.sort();
        Ok(())
    }

    /// The parsed override record of the last [`Self::read_attrs`].
    fn override_stat(&self, name: &[u8]) -> Result<Option<OverrideStat>, LayerError> {
        match &self.attrs.override_raw {
            None => Ok(None),
            Some(raw) => OverrideStat::parse(raw).map(Some).ok_or_else(|| {
                self.unrepresentable(name, Unrepresentable::BadOverride { value: lossy(raw) })
            }),
        }
    }

    fn clamp(&self, mtime: i64) -> i64 {
        match self.epoch {
            Some(epoch) => mtime.min(epoch),
            None => mtime,
        }
    }

    /// Archives one non-whiteout child of `dir`.
    fn node(&mut self, dir: BorrowedFd<'_>, name: &[u8], st: &Stat) -> Result<(), LayerError> {
        let ft = FileType::from_raw_mode(st.st_mode);
        let full = [&self.path[..], name].concat();
        let (uid, gid) = super::container_owner(st.st_uid, st.st_gid);
        let base = Base {
            mode: st.st_mode & 0o7777,
            uid,
            gid,
            mtime: self.clamp(st.st_mtime),
        };
        match ft {
            // Directories are entered by the walk (`enter_directory`).
            FileType::Directory => Ok(()),
            FileType::RegularFile => self.regular(dir, name, &full, base),
            FileType::Symlink => {
                if let Some(first) = self.seen_before(st, &full) {
                    return self.header(
                        &full,
                        &Meta {
                            link: &first,
                            ..Meta::plain(base, flag::HARDLINK)
                        },
                    );
                }
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| self.upper_err(name, "read link", e))?;
                let meta = Meta {
                    link: target.as_bytes(),
                    ..Meta::plain(base, flag::SYMLINK)
                };
                self.header(&full, &meta)
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                if let Some(first) = self.seen_before(st, &full) {
                    return self.header(
                        &full,
                        &Meta {
                            link: &first,
                            ..Meta::plain(base, flag::HARDLINK)
                        },
                    );
                }
                let (typeflag, major, minor) = match ft {
                    FileType::CharacterDevice => (
                        flag::CHAR,
                        rustix::fs::major(st.st_rdev),
                        rustix::fs::minor(st.st_rdev),
                    ),
                    FileType::BlockDevice => (
                        flag::BLOCK,
                        rustix::fs::major(st.st_rdev),
                        rustix::fs::minor(st.st_rdev),
                    ),
                    _ => (flag::FIFO, 0, 0),
                };
                self.header(
                    &full,
                    &Meta {
                        major,
                        minor,
                        ..Meta::plain(base, typeflag)
                    },
                )
            }
            _ => Ok(()),
        }
    }

    /// Writes the entry of directory `name` of `dir` and makes it the current one
    /// (`self.path`); returns it, open, and whether it is opaque. Its contents come next.
    fn enter_directory(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
    ) -> Result<(OwnedFd, bool), LayerError> {
        let dir_name = [&self.path[..], name, b"/"].concat();
        if dir_name.len() > MAX_PATH {
            return Err(self.unrepresentable(name, Unrepresentable::PathTooLong(MAX_PATH)));
        }
        let (uid, gid) = super::container_owner(st.st_uid, st.st_gid);
        let mut base = Base {
            mode: st.st_mode & 0o7777,
            uid,
            gid,
            mtime: self.clamp(st.st_mtime),
        };
        let fd = fsx::open_dir_at(dir, name).map_err(|e| self.upper_err(name, "open", e))?;
        self.read_attrs(fd.as_fd(), name)?;
        if let Some(ov) = self.override_stat(name)? {
            if !matches!(ov.kind, None | Some(OverrideType::Dir)) {
                return Err(self.mismatch(name, ov.kind, "directory"));
            }
            (base.uid, base.gid, base.mode) = (ov.uid, ov.gid, ov.mode);
        }
        let attrs = std::mem::take(&mut self.attrs);
        let written = self.header(
            &dir_name,
            &Meta {
                xattrs: &attrs.kept,
                ..Meta::plain(base, flag::DIR)
            },
        );
        self.attrs = attrs;
        written?;
        self.path = dir_name;
        Ok((fd, self.attrs.opaque))
    }

    fn mismatch(
        &self,
        name: &[u8],
        claimed: Option<OverrideType>,
        actual: &'static str,
    ) -> LayerError {
        let claimed = match claimed {
            None | Some(OverrideType::File) => "file",
            Some(OverrideType::Dir) => "dir",
            Some(OverrideType::Symlink) => "symlink",
            Some(OverrideType::Pipe) => "pipe",
            Some(OverrideType::Socket) => "socket",
            Some(OverrideType::Char { .. }) => "char",
            Some(OverrideType::Block { .. }) => "block",
        };
        self.unrepresentable(name, Unrepresentable::OverrideMismatch { claimed, actual })
    }

    /// The first tar name of this inode if it was archived before; records it otherwise.
    fn seen_before(&mut self, st: &Stat, full: &[u8]) -> Option<Vec<u8>> {
        if st.st_nlink <= 1 {
            return None;
        }
        let key = (st.st_dev, st.st_ino);
        if let Some(first) = self.links.get(&key) {
            return Some(first.clone());
        }
        self.links.insert(key, full.to_vec());
        None
    }

    /// Archives a regular file (or what its override record says it stands for).
    fn regular(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        full: &[u8],
        mut base: Base,
    ) -> Result<(), LayerError> {
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = rustix::fs::openat(dir, name, flags, Mode::empty())
            .map_err(|e| self.upper_err(name, "open", e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.upper_err(name, "stat", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(self.unrepresentable(name, Unrepresentable::Changed));
        }
        if let Some(first) = self.seen_before(&st, full) {
            return self.header(
                full,
                &Meta {
                    link: &first,
                    ..Meta::plain(base, flag::HARDLINK)
                },
            );
        }
        self.read_attrs(fd.as_fd(), name)?;
        let kind = match self.override_stat(name)? {
            Some(ov) => {
                (base.uid, base.gid, base.mode) = (ov.uid, ov.gid, ov.mode);
                ov.kind
            }
            None => None,
        };
        let mut file = File::from(fd);
        match kind {
            None | Some(OverrideType::File) => {
                let size = u64::try_from(st.st_size).unwrap_or(0);
                let attrs = std::mem::take(&mut self.attrs);
                let meta = Meta {
                    size,
                    xattrs: &attrs.kept,
                    ..Meta::plain(base, flag::REGULAR)
                };
                let written = self.header(full, &meta);
                self.attrs = attrs;
                written?;
                self.file_data(&mut file, size, name)
            }
            Some(OverrideType::Symlink) => {
                let mut target = Vec::new();
                (&mut file)
                    .take(MAX_LINK_TARGET as u64 + 1)
                    .read_to_end(&mut target)
                    .map_err(|e| self.upper_err(name, "read", e))?;
                if target.len() > MAX_LINK_TARGET {
                    return Err(self.unrepresentable(
                        name,
                        Unrepresentable::LinkTargetTooLong(MAX_LINK_TARGET),
                    ));
                }
                self.header(
                    full,
                    &Meta {
                        link: &target,
                        ..Meta::plain(base, flag::SYMLINK)
                    },
                )
            }
            Some(OverrideType::Pipe) => self.header(full, &Meta::plain(base, flag::FIFO)),
            Some(OverrideType::Char { major, minor }) => self.header(
                full,
                &Meta {
                    major,
                    minor,
                    ..Meta::plain(base, flag::CHAR)
                },
            ),
            Some(OverrideType::Block { major, minor }) => self.header(
                full,
                &Meta {
                    major,
                    minor,
                    ..Meta::plain(base, flag::BLOCK)
                },
            ),
            Some(OverrideType::Socket) => Ok(()),
            Some(OverrideType::Dir) => Err(self.mismatch(name, kind, "regular file")),
        }
    }

    /// Copies exactly `size` bytes of a file into the tar, then the padding.
    fn file_data(&mut self, file: &mut File, size: u64, name: &[u8]) -> Result<(), LayerError> {
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX);
            self.out.make_room().map_err(LayerError::WriteTar)?;
            let n = match self.out.read_from(file, want) {
                Ok(0) => return Err(self.unrepresentable(name, Unrepresentable::Changed)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.upper_err(name, "read", e)),
            };
            left -= n as u64;
        }
        self.pad(size)
    }

    fn pad(&mut self, size: u64) -> Result<(), LayerError> {
        let pad = tarfmt::padding(size) as usize;
        self.out
            .write_all(&[0u8; BLOCK][..pad])
            .map_err(LayerError::WriteTar)
    }

    /// Writes a header (preceded by a PAX header when something does not fit ustar).
    fn header(&mut self, name: &[u8], m: &Meta<'_>) -> Result<(), LayerError> {
        let mut h = HeaderBlock::ustar();
        let pax = &mut self.pax;
        pax.clear();
        // PAX records in byte-wise key order: SCHILY.xattr.*, gid, linkpath, mtime, path, size, uid.
        for (k, v) in m.xattrs {
            tarfmt::push_pax_record(pax, &[&b"SCHILY.xattr."[..], k].concat(), v);
        }
        if !h.set_octal(tarfmt::GID, m.gid.into()) {
            tarfmt::push_pax_record(pax, b"gid", m.gid.to_string().as_bytes());
            h.set_octal(tarfmt::GID, 0);
        }
        if m.link.len() > tarfmt::LINKNAME.len {
            tarfmt::push_pax_record(pax, b"linkpath", m.link);
        }
        h.set_bytes(tarfmt::LINKNAME, m.link);
        let mtime_fits = u64::try_from(m.mtime).is_ok_and(|t| h.set_octal(tarfmt::MTIME, t));
        if !mtime_fits {
            tarfmt::push_pax_record(pax, b"mtime", m.mtime.to_string().as_bytes());
            h.set_octal(tarfmt::MTIME, 0);
        }
        if name.len() > tarfmt::NAME.len {
            tarfmt::push_pax_record(pax, b"path", name);
        }
        h.set_bytes(tarfmt::NAME, name);
        if !h.set_octal(tarfmt::SIZE, m.size) {
            tarfmt::push_pax_record(pax, b"size", m.size.to_string().as_bytes());
            h.set_octal(tarfmt::SIZE, 0);
        }
        if !h.set_octal(tarfmt::UID, m.uid.into()) {
            tarfmt::push_pax_record(pax, b"uid", m.uid.to_string().as_bytes());
            h.set_octal(tarfmt::UID, 0);
        }
        h.set_octal(tarfmt::MODE, (m.mode & 0o7777).into());
        h.set_octal(tarfmt::DEVMAJOR, m.major.into());
        h.set_octal(tarfmt::DEVMINOR, m.minor.into());
        h.set_type(m.typeflag);
        h.finish();
        if !self.pax.is_empty() {
            let mut ph = HeaderBlock::ustar();
            ph.set_bytes(tarfmt::NAME, b"././@PaxHeader");
            ph.set_octal(tarfmt::MODE, 0o644);
            ph.set_octal(tarfmt::UID, 0);
            ph.set_octal(tarfmt::GID, 0);
            ph.set_octal(tarfmt::MTIME, 0);
            ph.set_octal(tarfmt::SIZE, self.pax.len() as u64);
            ph.set_type(flag::PAX);
            ph.finish();
            self.out.write_all(&ph.0).map_err(LayerError::WriteTar)?;
            self.out
                .write_all(&self.pax)
                .map_err(LayerError::WriteTar)?;
            self.pad(self.pax.len() as u64)?;
        }
        self.out.write_all(&h.0).map_err(LayerError::WriteTar)
    }
}
