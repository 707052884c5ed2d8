//! Capability-safe file-system primitives under an open directory.
//!
//! Every operation takes a directory fd and ONE path component (never `/`, `.` or `..` from
//! untrusted input, never following a symlink: `O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), so nothing
//! here can leave the directory tree it starts from, whatever the tree contains or however it
//! changes underneath us. Callers build multi-component walks out of these.

use std::ffi::CStr;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};

/// A timestamp as nanoseconds since the Unix epoch (saturating).
pub(crate) type Nanos = i64;

/// What kiln needs from `statx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub size: u64,
    pub mtime: Nanos,
    pub ctime: Nanos,
}

/// The kinds of file a context may hold; anything else (sockets, fifos, devices) is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Stat {
    pub fn kind(&self) -> Kind {
        match FileType::from_raw_mode(self.mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    /// Permission bits, including setuid/setgid/sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    fn from_statx(s: &rustix::fs::Statx) -> Self {
        fn nanos(t: &rustix::fs::StatxTimestamp) -> Nanos {
            t.tv_sec
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.tv_nsec))
        }
        Self {
            dev: (u64::from(s.stx_dev_major) << 32) | u64::from(s.stx_dev_minor),
            ino: s.stx_ino,
            mode: u32::from(s.stx_mode),
            size: s.stx_size,
            mtime: nanos(&s.stx_mtime),
            ctime: nanos(&s.stx_ctime),
        }
    }
}

const STAT_MASK: StatxFlags = StatxFlags::BASIC_STATS;

/// `lstat` of `name` in `dir`.
pub(crate) fn stat_at<P: rustix::path::Arg>(dir: BorrowedFd<'_>, name: P) -> io::Result<Stat> {
    let s = rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, STAT_MASK)?;
    Ok(Stat::from_statx(&s))
}

/// `fstat` of an open file.
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let s = rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, STAT_MASK)?;
    Ok(Stat::from_statx(&s))
}

/// Opens the directory `name` in `dir` for listing, refusing symlinks.
pub(crate) fn open_dir_at<P: rustix::path::Arg>(
    dir: BorrowedFd<'_>,
    name: P,
) -> io::Result<OwnedFd> {
    Ok(crate::fsx::open_dir_at(dir, name)?)
}

/// Opens the file `name` in `dir` for reading, refusing symlinks; `O_NONBLOCK` so that a fifo
/// swapped in behind our back cannot hang us (callers check the type with [`stat_fd`]).
pub(crate) fn open_file_at<P: rustix::path::Arg>(
    dir: BorrowedFd<'_>,
    name: P,
) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )?)
}

/// The target of the symlink `name` in `dir`.
pub(crate) fn read_link_at<P: rustix::path::Arg>(
    dir: BorrowedFd<'_>,
    name: P,
) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// The names in one directory, sorted bytewise, kept NUL-terminated in one buffer (one
/// allocation per directory rather than one per entry).
#[derive(Default)]
pub(crate) struct Names {
    arena: Vec<u8>,
    spans: Vec<Range<usize>>,
}

impl Names {
    /// Lists the directory open as `dir` (which must be a fresh fd: listing consumes its offset),
    /// skipping `.` and `..`.
    pub fn read(dir: &OwnedFd) -> io::Result<Self> {
        let mut names = Self::default();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
        let mut raw = rustix::fs::RawDir::new(dir.as_fd(), &mut buf);
        while let Some(entry) = raw.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes_with_nul();
            if name == b".\0" || name == b"..\0" {
                continue;
            }
            let start = names.arena.len();
            names.arena.extend_from_slice(name);
            names.spans.push(start..names.arena.len());
        }
        let arena = &names.arena;
        names
            .spans
            .sort_unstable_by(|a, b| arena[a.clone()].cmp(&arena[b.clone()]));
        Ok(names)
    }

    /// The names in order.
    pub fn iter(&self) -> impl Iterator<Item = &CStr> {
        self.spans.iter().filter_map(|r| {
            self.arena
                .get(r.clone())
                .and_then(|b| CStr::from_bytes_with_nul(b).ok())
        })
    }
}
