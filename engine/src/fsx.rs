//! Descriptor-relative filesystem helpers over rustix: xattrs, recursive removal, timestamps.
//!
//! Everything takes an already-open directory descriptor and a single name component, and
//! never follows a symlink in that component, so no call here can be steered outside the tree
//! it was given.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// Flags for opening a directory to work in: never follows a symlink in the last component.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Largest xattr name list and value Linux allows (`XATTR_LIST_MAX`, `XATTR_SIZE_MAX`).
pub(crate) const XATTR_MAX: usize = 64 * 1024;

/// Opens `name` in `dir` as a directory, refusing symlinks.
pub(crate) fn open_dir_at<P: rustix::path::Arg>(
    dir: BorrowedFd<'_>,
    name: P,
) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
}

/// Reopens a directory for reading. cap-std holds directories as `O_PATH` descriptors, which
/// `fsync`, `syncfs` and the xattr calls reject.
pub(crate) fn reopen_readable(dir: impl AsFd) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(dir, c".", DIR_FLAGS, Mode::empty())
}

/// Whether a directory has no entries besides `.` and `..`.
pub(crate) fn is_empty_dir(dir: BorrowedFd<'_>) -> io::Result<bool> {
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Access and modification time both set to `secs.nanos`.
pub(crate) fn times(secs: i64, nanos: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nanos.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The names in a directory, without `.` and `..`.
pub(crate) fn children(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            out.push(name);
        }
    }
    Ok(out)
}

/// Removes `name` from `dir`, recursively if it is a directory; never follows symlinks.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = open_dir_at(dir, name)?;
    for child in children(sub.as_fd())? {
        remove_all_at(sub.as_fd(), &child)?;
    }
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Calls `f(name, value)` for every xattr of the open file `fd`, in the order the kernel lists
/// them. `list` and `value` are scratch buffers of [`XATTR_MAX`] bytes. A filesystem without
/// xattr support has none.
pub(crate) fn for_each_xattr(
    fd: BorrowedFd<'_>,
    list: &mut [u8],
    value: &mut [u8],
    mut f: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    let n = match rustix::fs::flistxattr(fd, &mut *list) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => 0,
        Err(e) => return Err(e.into()),
    };
    let names = &list[..n.min(list.len())];
    for name in names.split_inclusive(|&b| b == 0) {
        let Ok(cname) = CStr::from_bytes_with_nul(name) else {
            continue;
        };
        let len = match rustix::fs::fgetxattr(fd, cname, &mut *value) {
            Ok(len) => len,
            // Removed between listing and reading.
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        f(cname.to_bytes(), &value[..len.min(value.len())]);
    }
    Ok(())
}

/// Sets an xattr on an open file or directory.
pub(crate) fn set_xattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(
        fd,
        name,
        value,
        rustix::fs::XattrFlags::empty(),
    )?)
}

/// Changes the mode of the inode behind an `O_PATH` descriptor without following anything.
///
/// `fchmod` refuses `O_PATH` descriptors and `fchmodat` cannot decline to follow a symlink
/// (before `fchmodat2`), so device nodes and fifos, which must not be opened for real, are
/// changed through their `/proc/self/fd` magic link: it names exactly the inode we hold.
pub(crate) fn chmod_o_path(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::chmod(link.as_str(), Mode::from_raw_mode(mode))?)
}
