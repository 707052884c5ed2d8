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

/// Large sequential writes that bypass the page cache (`O_DIRECT`).
///
/// On a virtual machine whose host takes back free guest memory, every new page-cache page
/// costs a fault on the host, and dirty pages throttle every other writer until they are
/// flushed: writing 200 MiB through the cache costs 0.5 s of CPU here, writing it directly
/// 0.16 s of device time. Build outputs that are not read back soon (layer blobs, big files of
/// a COPY) are therefore written in whole aligned chunks with `O_DIRECT`, and only their
/// unaligned tail through the cache. Filesystems that refuse `O_DIRECT` (at `fcntl` or at the
/// first write) get buffered writes.
pub(crate) mod direct {
    use std::fs::File;
    use std::io::{self, Read, Write};
    use std::os::fd::AsFd;

    use rustix::fs::OFlags;

    /// Alignment `O_DIRECT` needs of buffer address, file offset and length (4 KiB covers
    /// every logical block size in use).
    pub(crate) const ALIGN: usize = 4096;

    /// Files smaller than this are copied through the page cache (`copy_file_range`).
    pub(crate) const MIN_FILE: u64 = 4 << 20;

    /// A reusable buffer of `len` bytes whose start is [`ALIGN`]ed.
    pub(crate) struct AlignedBuf {
        raw: Vec<u8>,
        start: usize,
        len: usize,
    }

    impl AlignedBuf {
        /// `len` is rounded up to a multiple of [`ALIGN`].
        pub(crate) fn new(len: usize) -> Self {
            let len = len.div_ceil(ALIGN).max(1) * ALIGN;
            let raw = vec![0u8; len + ALIGN];
            let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
            Self { raw, start, len }
        }

        pub(crate) fn len(&self) -> usize {
            self.len
        }

        pub(crate) fn get(&self, n: usize) -> &[u8] {
            let n = n.min(self.len);
            self.raw.get(self.start..self.start + n).unwrap_or_default()
        }

        pub(crate) fn get_mut(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
            let end = range.end.min(self.len);
            let begin = range.start.min(end);
            self.raw
                .get_mut(self.start + begin..self.start + end)
                .unwrap_or_default()
        }
    }

    /// Turns `O_DIRECT` on or off for an open file.
    pub(crate) fn set(fd: impl AsFd, on: bool) -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        rustix::fs::fcntl_setfl(&fd, flags)?;
        Ok(())
    }

    /// Writes `data` (a whole number of [`ALIGN`] blocks from an aligned buffer, at an
    /// aligned offset) to `file`, which has `O_DIRECT` while `*direct`. A direct write the
    /// device refuses (`EINVAL`) writes nothing: `O_DIRECT` is then dropped for good and the
    /// data written through the cache.
    pub(crate) fn write(mut file: &File, data: &[u8], direct: &mut bool) -> io::Result<()> {
        if *direct {
            match file.write_all(data) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    *direct = false;
                    set(file, false)?;
                }
                other => return other,
            }
        }
        file.write_all(data)
    }

    /// Copies `input` to the start of the new, empty file `out` with direct writes, through
    /// `buf`; returns the bytes copied.
    pub(crate) fn copy(mut input: &File, out: &File, buf: &mut AlignedBuf) -> io::Result<u64> {
        let mut direct = set(out, true).is_ok();
        let mut total = 0u64;
        loop {
            // Fill the buffer: a direct write needs whole blocks.
            let mut fill = 0;
            while fill < buf.len() {
                match input.read(buf.get_mut(fill..buf.len())) {
                    Ok(0) => break,
                    Ok(n) => fill += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let whole = fill - fill % ALIGN;
            write(out, buf.get(whole), &mut direct)?;
            total += fill as u64;
            if whole < fill {
                // The unaligned tail ends the file: it goes through the cache.
                if direct {
                    direct = false;
                    set(out, false)?;
                }
                let tail = buf.get(fill).get(whole..).unwrap_or_default();
                (&*out).write_all(tail)?;
            }
            if fill < buf.len() {
                break;
            }
        }
        if direct {
            set(out, false)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::direct;

    #[test]
    fn direct_copies_are_exact_at_every_alignment() {
        let t = tempfile::tempdir().unwrap();
        let mut buf = direct::AlignedBuf::new(64 * 1024);
        for len in [0usize, 1, 4095, 4096, 65_536, 65_537, 200_000, 3 * 65_536] {
            let data: Vec<u8> = (0..len as u32).map(|i| (i * 7 + i / 251) as u8).collect();
            let src = t.path().join(format!("src{len}"));
            let dst = t.path().join(format!("dst{len}"));
            std::fs::write(&src, &data).unwrap();
            let input = std::fs::File::open(&src).unwrap();
            let out = std::fs::File::create(&dst).unwrap();
            assert_eq!(direct::copy(&input, &out, &mut buf).unwrap(), len as u64);
            drop(out);
            assert!(
                std::fs::read(&dst).unwrap() == data,
                "copy of {len} bytes differs"
            );
        }
    }
}
