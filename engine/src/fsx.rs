//! Descriptor-relative filesystem helpers over rustix: xattrs, recursive removal, timestamps.
//!
//! Everything takes an already-open directory descriptor and a single name component, and
//! never follows a symlink in that component, so no call here can be steered outside the tree
//! it was given; the exception is [`private_dir_all`], which makes kiln's own folders. Walks
//! over trees ([`walk_tree`]) are iterative and hold a fixed number of descriptors, whatever
//! the depth of a tree a step made.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// Flags for opening a directory to work in: never follows a symlink in the last component.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Largest xattr name list and value Linux allows (`XATTR_LIST_MAX`, `XATTR_SIZE_MAX`).
pub(crate) const XATTR_MAX: usize = 64 * 1024;

/// Mode of kiln's own folders (the store, its state, the compiled-module cache): only their
/// owner may enter them. A store holds tenants' setuid-root files and device nodes, which any
/// local user who could reach them would use to become root (Docker's CVE-2021-41091).
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path` and any missing parents as private folders ([`PRIVATE_DIR_MODE`], given at
/// creation, never by a later chmod). Folders that exist keep their mode (`kiln fsck` reports
/// a store folder that is wider).
///
/// # Ambient Authority
///
/// Takes a path: for kiln's own folders, never for a name that comes from outside.
pub(crate) fn private_dir_all(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
}

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

/// Removes `name` from `dir`, with everything below it if it is a directory; never follows
/// symlinks. Folders are made writable and searchable by their owner on the way (layers often
/// hold `0555` folders, which an unprivileged owner could not empty). Iterative
/// ([`walk_tree`]): a tree a step made may be of any depth.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    make_enterable(dir, name, &st)?;
    let sub = open_dir_at(dir, name)?;
    walk_tree(
        sub.as_fd(),
        |d, n, st| {
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                make_enterable(d, n, st)?;
                return Ok(true);
            }
            match rustix::fs::unlinkat(d, n, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(false),
                Err(e) => Err(e.into()),
            }
        },
        |parent, n| Ok(rustix::fs::unlinkat(parent, n, AtFlags::REMOVEDIR)?),
    )?;
    drop(sub);
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Gives a folder's owner read, write and search permission on it, if it lacks any.
fn make_enterable(dir: BorrowedFd<'_>, name: &[u8], st: &rustix::fs::Stat) -> io::Result<()> {
    let mode = st.st_mode & 0o7777;
    if mode & 0o700 != 0o700 {
        // `name` was just seen as a folder; a folder is never a symlink to follow.
        rustix::fs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(mode | 0o700),
            AtFlags::empty(),
        )?;
    }
    Ok(())
}

/// Bytes in the tree `name` of `dir` (or in `dir` itself for `"."`): the sizes of its regular
/// files and the lengths of its symlinks, what a layer of it would carry. Iterative and
/// fd-relative ([`walk_tree`]): no depth or name length hides anything.
pub(crate) fn tree_bytes(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<u64> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Ok(u64::try_from(st.st_size).unwrap_or(0));
    }
    let sub = open_dir_at(dir, name)?;
    let mut total = 0u64;
    walk_tree(
        sub.as_fd(),
        |_, _, st| {
            let ft = FileType::from_raw_mode(st.st_mode);
            if ft == FileType::Directory {
                return Ok(true);
            }
            if matches!(ft, FileType::RegularFile | FileType::Symlink) {
                total = total.saturating_add(u64::try_from(st.st_size).unwrap_or(0));
            }
            Ok(false)
        },
        |_, _| Ok(()),
    )?;
    Ok(total)
}

/// Walks the tree below the open directory `root` depth first, never following a symlink,
/// without recursion and with at most three descriptors open, however deep the tree is: a
/// folder is entered by name from its parent, and left through its `..`, whose device and
/// inode must be those of the parent it was entered from (a tree moved while it is walked
/// fails the walk with `ESTALE` rather than lead it elsewhere). Memory per level is the names
/// of the subfolders still to enter.
///
/// `entry(dir, name, stat)` is called for each entry of each folder (in listing order) and
/// says whether to enter it (only folders are entered); `left(parent, name)` is called when
/// the folder `name` of `parent` is done.
pub(crate) fn walk_tree(
    root: BorrowedFd<'_>,
    mut entry: impl FnMut(BorrowedFd<'_>, &[u8], &rustix::fs::Stat) -> io::Result<bool>,
    mut left: impl FnMut(BorrowedFd<'_>, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    /// A subfolder to enter: its name, and the device and inode it was listed with.
    type Todo = (Vec<u8>, (u64, u64));
    struct Level {
        id: (u64, u64),
        todo: Vec<Todo>,
        name: Vec<u8>,
    }
    fn id(st: &rustix::fs::Stat) -> (u64, u64) {
        (st.st_dev, st.st_ino)
    }
    let mut list = |dir: BorrowedFd<'_>| -> io::Result<Vec<Todo>> {
        let mut todo = Vec::new();
        for e in rustix::fs::Dir::read_from(dir)? {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if entry(dir, name, &st)? && FileType::from_raw_mode(st.st_mode) == FileType::Directory
            {
                todo.push((name.to_vec(), id(&st)));
            }
        }
        Ok(todo)
    };
    let mut cur = open_dir_at(root, c".")?;
    let top = rustix::fs::fstat(&cur)?;
    let first = list(cur.as_fd())?;
    let mut stack = vec![Level {
        id: id(&top),
        todo: first,
        name: Vec::new(),
    }];
    while let Some(level) = stack.last_mut() {
        if let Some((name, want)) = level.todo.pop() {
            let sub = match open_dir_at(cur.as_fd(), name.as_slice()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if id(&rustix::fs::fstat(&sub)?) != want {
                return Err(Errno::STALE.into());
            }
            let todo = list(sub.as_fd())?;
            stack.push(Level {
                id: want,
                todo,
                name,
            });
            cur = sub;
            continue;
        }
        let done = stack.pop();
        let (Some(done), Some(parent)) = (done, stack.last()) else {
            break;
        };
        let up = open_dir_at(cur.as_fd(), c"..")?;
        if id(&rustix::fs::fstat(&up)?) != parent.id {
            return Err(Errno::STALE.into());
        }
        cur = up;
        left(cur.as_fd(), &done.name)?;
    }
    Ok(())
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
    struct AlignedBuf {
        raw: Vec<u8>,
        start: usize,
        len: usize,
        /// What `len` may grow to.
        max: usize,
    }

    /// The first size of a buffer: most blobs are small, and a large zeroed buffer costs its
    /// size in page faults and `memset` before a byte is written.
    const FIRST: usize = 64 * 1024;

    impl AlignedBuf {
        /// Grows to `max` bytes (rounded up to a multiple of [`ALIGN`]) as it is filled.
        fn new(max: usize) -> Self {
            let max = max.div_ceil(ALIGN).max(1) * ALIGN;
            let mut b = Self {
                raw: Vec::new(),
                start: 0,
                len: 0,
                max,
            };
            b.resize(FIRST.min(max));
            b
        }

        /// Doubles the buffer (up to `max`), keeping its contents.
        fn grow(&mut self) {
            if self.len < self.max {
                self.resize((self.len * 2).min(self.max));
            }
        }

        fn resize(&mut self, len: usize) {
            let mut raw = vec![0u8; len + ALIGN];
            let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
            let kept = self.len.min(len);
            if let (Some(to), Some(from)) = (
                raw.get_mut(start..start + kept),
                self.raw.get(self.start..self.start + kept),
            ) {
                to.copy_from_slice(from);
            }
            *self = Self {
                raw,
                start,
                len,
                max: self.max,
            };
        }

        fn get(&self, range: std::ops::Range<usize>) -> &[u8] {
            let end = range.end.min(self.len);
            let begin = range.start.min(end);
            self.raw
                .get(self.start + begin..self.start + end)
                .unwrap_or_default()
        }

        fn get_mut(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
            let end = range.end.min(self.len);
            let begin = range.start.min(end);
            self.raw
                .get_mut(self.start + begin..self.start + end)
                .unwrap_or_default()
        }
    }

    /// Turns `O_DIRECT` on or off for an open file.
    fn set(fd: impl AsFd, on: bool) -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        rustix::fs::fcntl_setfl(&fd, flags)?;
        Ok(())
    }

    /// Bytes on their way to a file: gathered in an aligned buffer of one chunk, written in
    /// whole chunks with `O_DIRECT` while the file takes it, the unaligned tail through the
    /// cache. Reusable from one file to the next ([`Out::begin`]).
    pub(crate) struct Out {
        buf: AlignedBuf,
        fill: usize,
        direct: bool,
    }

    impl Out {
        /// A buffer of `chunk` bytes (rounded up to [`ALIGN`]).
        pub(crate) fn new(chunk: usize) -> Self {
            Self {
                buf: AlignedBuf::new(chunk),
                fill: 0,
                direct: false,
            }
        }

        /// Starts writing `file` (new, empty): `O_DIRECT` on where the filesystem allows it.
        pub(crate) fn begin(&mut self, file: &File) {
            self.fill = 0;
            self.direct = set(file, true).is_ok();
        }

        /// Whether chunks still go to the disk directly.
        pub(crate) fn is_direct(&self) -> bool {
            self.direct
        }

        /// The free part of the buffer, to read into; [`Out::filled`] says how much was.
        pub(crate) fn room(&mut self) -> &mut [u8] {
            if self.fill == self.buf.len {
                self.buf.grow();
            }
            let len = self.buf.len;
            self.buf.get_mut(self.fill..len)
        }

        pub(crate) fn filled(&mut self, n: usize) {
            self.fill = (self.fill + n).min(self.buf.len);
        }

        /// Copies as much of `bytes` as fits; returns how much.
        pub(crate) fn push(&mut self, bytes: &[u8]) -> usize {
            let room = self.room();
            let n = room.len().min(bytes.len());
            room.get_mut(..n)
                .unwrap_or_default()
                .copy_from_slice(bytes.get(..n).unwrap_or_default());
            self.filled(n);
            n
        }

        /// Whether a whole chunk waits for [`Out::write_chunk`].
        pub(crate) fn is_full(&self) -> bool {
            self.fill == self.buf.max
        }

        /// Writes the full buffer to `file` (at an aligned offset: only whole chunks came
        /// before); returns the bytes written. A direct write the device refuses (`EINVAL`)
        /// writes nothing: `O_DIRECT` is then dropped for good and the chunk written through
        /// the cache.
        pub(crate) fn write_chunk(&mut self, mut file: &File) -> io::Result<usize> {
            let data = self.buf.get(0..self.fill);
            if self.direct {
                match file.write_all(data) {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        self.direct = false;
                        set(file, false)?;
                        file.write_all(data)?;
                    }
                    other => other?,
                }
            } else {
                file.write_all(data)?;
            }
            let n = self.fill;
            self.fill = 0;
            Ok(n)
        }

        /// Writes what is left (shorter than a chunk, so through the cache) and turns
        /// `O_DIRECT` off; returns the bytes written.
        pub(crate) fn finish(&mut self, mut file: &File) -> io::Result<usize> {
            if self.direct {
                self.direct = false;
                set(file, false)?;
            }
            file.write_all(self.buf.get(0..self.fill))?;
            let n = self.fill;
            self.fill = 0;
            Ok(n)
        }
    }

    /// Copies `input` to the new, empty file `out` through `buf`, with direct writes where
    /// the filesystem takes them; returns the bytes copied.
    pub(crate) fn copy(mut input: &File, out: &File, buf: &mut Out) -> io::Result<u64> {
        buf.begin(out);
        let mut total = 0u64;
        loop {
            let n = match input.read(buf.room()) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            buf.filled(n);
            if buf.is_full() {
                total += buf.write_chunk(out)? as u64;
            }
        }
        total += buf.finish(out)? as u64;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::direct;
    use super::*;

    /// A tree far deeper than PATH_MAX and than any recursion a test thread's 2 MiB stack
    /// allows (the removal this replaced recursed once per level), with a file at the bottom
    /// and a read-only folder halfway: it is measured and removed whole.
    #[test]
    fn deep_trees_are_measured_and_removed_without_recursion() {
        let t = tempfile::tempdir().unwrap();
        let root = rustix::fs::open(t.path(), DIR_FLAGS, Mode::empty()).unwrap();
        rustix::fs::mkdirat(&root, "top", Mode::from_raw_mode(0o755)).unwrap();
        let mut cur = open_dir_at(root.as_fd(), "top").unwrap();
        for level in 0..30_000 {
            rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            let next = open_dir_at(cur.as_fd(), "d").unwrap();
            if level == 15_000 {
                rustix::fs::chmodat(&cur, "d", Mode::from_raw_mode(0o555), AtFlags::empty())
                    .unwrap();
            }
            cur = next;
        }
        let f = rustix::fs::openat(
            &cur,
            "f",
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&f, &[7u8; 1000]).unwrap();
        rustix::fs::symlinkat("0123456789", &cur, "l").unwrap();
        drop((f, cur));
        assert_eq!(tree_bytes(root.as_fd(), c"top").unwrap(), 1010);
        remove_all_at(root.as_fd(), b"top").unwrap();
        assert!(children(root.as_fd()).unwrap().is_empty());
    }

    /// A folder swapped for another while a walk is inside it: the walk fails rather than
    /// climb out through the new `..`.
    #[test]
    fn a_tree_moved_under_a_walk_fails_it() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
        std::fs::create_dir_all(t.path().join("elsewhere")).unwrap();
        let root = rustix::fs::open(t.path().join("a"), DIR_FLAGS, Mode::empty()).unwrap();
        let moved = std::cell::Cell::new(false);
        let r = walk_tree(
            root.as_fd(),
            |_, name, _| {
                if name == b"c" && !moved.get() {
                    // While the walk is in a/b: move b away, under `elsewhere`.
                    std::fs::rename(t.path().join("a/b"), t.path().join("elsewhere/b")).unwrap();
                    moved.set(true);
                }
                Ok(true)
            },
            |_, _| Ok(()),
        );
        assert!(moved.get());
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ESTALE));
    }

    #[test]
    fn direct_copies_are_exact_at_every_alignment() {
        let t = tempfile::tempdir().unwrap();
        let mut buf = direct::Out::new(64 * 1024);
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
