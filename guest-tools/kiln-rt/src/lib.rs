//! The guest side of kiln's `kiln` import module (see `guest-tools/ABI.md`).
//!
//! On `wasm32-wasip1` every function calls the host through the `kiln` imports; elsewhere the
//! same API is implemented with libc, so guest tools build and run natively for tests.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(target_os = "wasi")]
mod wasi;
#[cfg(target_os = "wasi")]
use wasi as sys;

#[cfg(not(target_os = "wasi"))]
mod native;
#[cfg(not(target_os = "wasi"))]
use native as sys;

/// A file descriptor number in this process.
pub type Fd = u32;

/// A child process id.
pub type Pid = u32;

/// Marks a closed slot in [`Spawn::fds`].
pub const CLOSED: Fd = u32::MAX;

/// What [`spawn`] starts.
#[derive(Debug, Clone)]
pub struct Spawn<'a> {
    /// The program, an absolute path (or relative to the current directory).
    pub path: &'a Path,
    /// Its arguments, `argv[0]` included.
    pub argv: &'a [OsString],
    /// Its whole environment, `K=V` entries.
    pub env: &'a [OsString],
    /// Its working directory.
    pub cwd: &'a Path,
    /// Child fd `i` is this process's fd `fds[i]`, or closed when it is [`CLOSED`].
    pub fds: &'a [Fd],
}

/// How a child ended, as the shell's `$?` sees it: 0..=255, or 128+N when killed by signal N.
pub type Status = i32;

/// A POSIX stat record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    /// File type bits (`S_IFMT`) and permission bits, Linux values.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    /// 512-byte blocks.
    pub blocks: u64,
}

/// File type bits of [`Stat::mode`].
pub mod mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFIFO: u32 = 0o010000;
}

impl Stat {
    /// Size of the record the host writes.
    pub const SIZE: usize = 80;

    /// Decodes the host's 80-byte record.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        Stat {
            dev: u64_at(0),
            ino: u64_at(8),
            mode: u32_at(16),
            nlink: u32_at(20),
            uid: u32_at(24),
            gid: u32_at(28),
            rdev: u64_at(32),
            size: u64_at(40),
            atime: u64_at(48) as i64,
            mtime: u64_at(56) as i64,
            ctime: u64_at(64) as i64,
            blocks: u64_at(72),
        }
    }

    /// Encodes the record (the host side uses the same layout).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16..20].copy_from_slice(&self.mode.to_le_bytes());
        b[20..24].copy_from_slice(&self.nlink.to_le_bytes());
        b[24..28].copy_from_slice(&self.uid.to_le_bytes());
        b[28..32].copy_from_slice(&self.gid.to_le_bytes());
        b[32..40].copy_from_slice(&self.rdev.to_le_bytes());
        b[40..48].copy_from_slice(&self.size.to_le_bytes());
        b[48..56].copy_from_slice(&self.atime.to_le_bytes());
        b[56..64].copy_from_slice(&self.mtime.to_le_bytes());
        b[64..72].copy_from_slice(&self.ctime.to_le_bytes());
        b[72..80].copy_from_slice(&self.blocks.to_le_bytes());
        b
    }

    /// The file type bits.
    pub fn file_type(&self) -> u32 {
        self.mode & mode::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == mode::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.file_type() == mode::S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == mode::S_IFLNK
    }
}

/// The ids of this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
}

/// What uname(2) says: the kernel and machine the program runs on, as Linux reports them (a
/// WASI guest gets the host's, with the container's hostname, not `wasm32`/`wasi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uname {
    pub sysname: String,
    pub nodename: String,
    pub release: String,
    pub version: String,
    pub machine: String,
}

/// Makes the process ready: on WASI, changes into the working directory the host started it in
/// (wasi-libc starts every process in `/`). Call it first thing in `main`.
pub fn init() {
    sys::init();
}

/// Makes `path` absolute with the current directory.
pub fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// Starts a child process; it runs concurrently until [`wait`]ed for.
pub fn spawn(req: &Spawn<'_>) -> io::Result<Pid> {
    sys::spawn(req)
}

/// Waits for `pid` to end; with `nohang`, returns `None` at once while it still runs.
pub fn wait(pid: Pid, nohang: bool) -> io::Result<Option<Status>> {
    sys::wait(pid, nohang)
}

/// Sends signal `sig` to child `pid` (0 checks that it exists).
pub fn kill(pid: Pid, sig: i32) -> io::Result<()> {
    sys::kill(pid, sig)
}

/// A pipe: (read end, write end).
pub fn pipe() -> io::Result<(Fd, Fd)> {
    sys::pipe()
}

/// A new fd >= `min` for the same open file.
pub fn dup(fd: Fd, min: Fd) -> io::Result<Fd> {
    sys::dup(fd, min)
}

/// Makes `to` refer to `from`'s open file.
pub fn dup2(from: Fd, to: Fd) -> io::Result<()> {
    sys::dup2(from, to)
}

/// Closes `fd`.
pub fn close(fd: Fd) -> io::Result<()> {
    sys::close(fd)
}

/// Sets the permission bits of `path`; `follow` = false acts on a symlink itself.
pub fn chmod(path: &Path, mode: u32, follow: bool) -> io::Result<()> {
    sys::chmod(&absolute(path)?, mode, follow)
}

/// Sets owner and/or group of `path`.
pub fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>, follow: bool) -> io::Result<()> {
    sys::chown(&absolute(path)?, uid, gid, follow)
}

/// stat (`follow`) or lstat.
pub fn stat(path: &Path, follow: bool) -> io::Result<Stat> {
    sys::stat(&absolute(path)?, follow)
}

/// stat of an open fd.
pub fn fstat(fd: Fd) -> io::Result<Stat> {
    sys::fstat(fd)
}

/// Sets the file-creation mask (or only reads it, with `None`); returns the old one.
pub fn umask(mask: Option<u32>) -> io::Result<u32> {
    sys::umask(mask)
}

/// uid/gid of this process.
pub fn identity() -> io::Result<Identity> {
    sys::identity()
}

/// The system the process runs on (uname(2)).
pub fn uname() -> io::Result<Uname> {
    sys::uname()
}
