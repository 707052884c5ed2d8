//! The public vocabulary of the overlay: shims, credentials, devices, stats, open options,
//! errors.

use std::collections::{BTreeSet, HashMap};
use std::io;

use crate::rootfs::ContainerPath;

/// Guest tools that appear at fixed paths of every rootfs (`/bin/sh` -> `sh`) as a virtual
/// read-only layer below all real layers. Their parent directories appear as directories.
#[derive(Debug, Clone, Default)]
pub struct Shims {
    files: HashMap<ContainerPath, String>,
    /// Every directory that holds a shim (directly or further down), with its children's names.
    dirs: HashMap<ContainerPath, BTreeSet<String>>,
}

impl Shims {
    /// Shims at the given absolute paths, each naming a guest tool. A path that is the root,
    /// or that is also the parent of another shim, is ignored.
    pub fn new(entries: impl IntoIterator<Item = (ContainerPath, String)>) -> Self {
        let mut files = HashMap::new();
        let mut dirs: HashMap<ContainerPath, BTreeSet<String>> = HashMap::new();
        for (path, tool) in entries {
            if path.is_root() {
                continue;
            }
            let mut child = path.clone();
            while let Some(name) = child.file_name().map(str::to_owned) {
                let parent = child.parent();
                dirs.entry(parent.clone()).or_default().insert(name);
                child = parent;
            }
            files.insert(path, tool);
        }
        files.retain(|p, _| !dirs.contains_key(p));
        Self { files, dirs }
    }

    /// No shims.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether there are no shims.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The tool of the shim at `path`.
    pub fn tool(&self, path: &ContainerPath) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    /// Whether `path` is a directory of the shim layer.
    pub fn is_dir(&self, path: &ContainerPath) -> bool {
        self.dirs.contains_key(path)
    }

    /// The names inside a directory of the shim layer.
    pub(super) fn children(&self, path: &ContainerPath) -> impl Iterator<Item = &str> {
        self.dirs
            .get(path)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

/// Who the guest is: the owner that new files get (the step's `USER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Creds {
    /// User id of new files.
    pub uid: u32,
    /// Group id of new files.
    pub gid: u32,
}

/// A device node of the virtual `/dev`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Device {
    /// `/dev/null`: reads nothing, swallows writes.
    Null,
    /// `/dev/zero`: reads zeros, swallows writes.
    Zero,
    /// `/dev/full`: reads zeros, writes fail with `ENOSPC`.
    Full,
    /// `/dev/random`.
    Random,
    /// `/dev/urandom`.
    Urandom,
    /// `/dev/stdin`: the process's standard input.
    Stdin,
    /// `/dev/stdout`: the process's standard output.
    Stdout,
    /// `/dev/stderr`: the process's standard error.
    Stderr,
}

impl Device {
    /// Every device, in listing order.
    pub const ALL: [Device; 8] = [
        Device::Full,
        Device::Null,
        Device::Random,
        Device::Stderr,
        Device::Stdin,
        Device::Stdout,
        Device::Urandom,
        Device::Zero,
    ];

    /// The name under `/dev`.
    pub fn name(self) -> &'static str {
        match self {
            Device::Null => "null",
            Device::Zero => "zero",
            Device::Full => "full",
            Device::Random => "random",
            Device::Urandom => "urandom",
            Device::Stdin => "stdin",
            Device::Stdout => "stdout",
            Device::Stderr => "stderr",
        }
    }

    /// The device called `name` under `/dev`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The Linux device number (major, minor) reported by `stat`.
    pub fn numbers(self) -> (u32, u32) {
        match self {
            Device::Null => (1, 3),
            Device::Zero => (1, 5),
            Device::Full => (1, 7),
            Device::Random => (1, 8),
            Device::Urandom => (1, 9),
            Device::Stdin | Device::Stdout | Device::Stderr => (136, 0),
        }
    }
}

/// The type of a filesystem object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

/// What `stat` reports, as the guest should see it (recorded ownership and mode applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStat {
    /// The type.
    pub kind: NodeKind,
    /// Permission bits with setuid/setgid/sticky (`0o7777` at most).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Hard link count.
    pub nlink: u64,
    /// Inode number.
    pub ino: u64,
    /// Device the inode lives on.
    pub dev: u64,
    /// Device number of a device node.
    pub rdev: u64,
    /// Access time, ns since the epoch.
    pub atime_ns: i64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
}

/// How to open a path, as the flags of `open(2)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open for reading.
    pub read: bool,
    /// Open for writing (copies the file up).
    pub write: bool,
    /// Create the file when missing (`O_CREAT`).
    pub create: bool,
    /// With `create`: fail when the path exists (`O_EXCL`).
    pub exclusive: bool,
    /// Truncate to zero length (`O_TRUNC`).
    pub truncate: bool,
    /// Every write goes to the end (`O_APPEND`).
    pub append: bool,
    /// The path must be a directory (`O_DIRECTORY`).
    pub directory: bool,
    /// Follow a final symlink (no `O_NOFOLLOW`).
    pub follow: bool,
}

impl OpenOptions {
    /// Read-only, following a final symlink.
    pub fn read_only() -> Self {
        Self {
            read: true,
            follow: true,
            ..Self::default()
        }
    }
}

/// What [`Overlay::open`](super::Overlay::open) opened.
#[derive(Debug)]
pub enum Opened {
    /// A regular file: read-only in whatever layer holds it, or read-write in the upper when
    /// writing was asked for.
    File(std::fs::File),
    /// A directory, by its canonical path.
    Dir(ContainerPath),
    /// A device of the virtual `/dev`.
    Device(Device),
    /// A shim: the guest tool it stands for.
    Shim(String),
    /// A named pipe, opened without blocking (the caller waits for it to be ready).
    Fifo(rustix::fd::OwnedFd),
}

/// One entry of a merged directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The name (not a path).
    pub name: String,
    /// Its type.
    pub kind: NodeKind,
    /// Its inode number.
    pub ino: u64,
}

/// A timestamp to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    /// The current time.
    Now,
    /// This time, ns since the epoch.
    Set(i64),
}

/// Why an overlay operation failed; each variant stands for one POSIX errno ([`Self::errno`]).
#[derive(thiserror::Error, Debug)]
pub enum VfsError {
    /// `ENOENT`.
    #[error("{0}: no such file or directory")]
    NotFound(ContainerPath),
    /// `EEXIST`.
    #[error("{0}: file exists")]
    Exists(ContainerPath),
    /// `ENOTDIR`.
    #[error("{0}: not a directory")]
    NotADirectory(ContainerPath),
    /// `EISDIR`.
    #[error("{0}: is a directory")]
    IsADirectory(ContainerPath),
    /// `ENOTEMPTY`.
    #[error("{0}: directory not empty")]
    NotEmpty(ContainerPath),
    /// `ELOOP`: too many symlinks, or a symlink where none may be followed.
    #[error("{0}: too many levels of symbolic links")]
    SymlinkLoop(ContainerPath),
    /// `EINVAL`.
    #[error("{0}: invalid argument")]
    InvalidArgument(ContainerPath),
    /// `EROFS`: the virtual `/dev` and the shims cannot be changed.
    #[error("{0}: read-only file system")]
    ReadOnly(ContainerPath),
    /// `EPERM`.
    #[error("{0}: operation not permitted")]
    NotPermitted(ContainerPath),
    /// `EACCES`: device nodes, fifos and sockets of the layers are never opened.
    #[error("{0}: permission denied")]
    AccessDenied(ContainerPath),
    /// `EBUSY`: the root and `/dev` cannot be removed or renamed.
    #[error("{0}: device or resource busy")]
    Busy(ContainerPath),
    /// `EXDEV`: a rename or link between a bind mount and the rest of the rootfs.
    #[error("{0}: invalid cross-device link")]
    CrossDevice(ContainerPath),
    /// A host filesystem call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path in the rootfs.
        path: ContainerPath,
        /// The host error.
        #[source]
        source: io::Error,
    },
}

impl VfsError {
    /// The POSIX errno (`libc::ENOENT`, ...) that a guest should see.
    pub fn errno(&self) -> i32 {
        match self {
            VfsError::NotFound(_) => libc::ENOENT,
            VfsError::Exists(_) => libc::EEXIST,
            VfsError::NotADirectory(_) => libc::ENOTDIR,
            VfsError::IsADirectory(_) => libc::EISDIR,
            VfsError::NotEmpty(_) => libc::ENOTEMPTY,
            VfsError::SymlinkLoop(_) => libc::ELOOP,
            VfsError::InvalidArgument(_) => libc::EINVAL,
            VfsError::ReadOnly(_) => libc::EROFS,
            VfsError::NotPermitted(_) => libc::EPERM,
            VfsError::AccessDenied(_) => libc::EACCES,
            VfsError::Busy(_) => libc::EBUSY,
            VfsError::CrossDevice(_) => libc::EXDEV,
            VfsError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// A host error during `op` on `path`.
    pub(super) fn host<'p>(
        op: &'static str,
        path: &'p ContainerPath,
    ) -> impl FnOnce(rustix::io::Errno) -> Self + 'p {
        move |e| VfsError::Io {
            op,
            path: path.clone(),
            source: e.into(),
        }
    }

    /// A host I/O error during `op` on `path`.
    pub(super) fn io<'p>(
        op: &'static str,
        path: &'p ContainerPath,
    ) -> impl FnOnce(io::Error) -> Self + 'p {
        move |source| VfsError::Io {
            op,
            path: path.clone(),
            source,
        }
    }
}
