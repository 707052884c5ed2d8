//! A process's file descriptors: numbers -> shared open objects (a `dup` shares the object, and
//! so its offset and flags, as POSIX does).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::abi::{fdflags, filetype, Errno};
use crate::rootfs::{ContainerPath, Device, DirEntry};

/// How often a blocked pipe call looks up from its wait to see whether it was killed.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// An open object.
pub(crate) enum Object {
    /// A host file (read-only in a lower, or read-write in the upper) and its guest path.
    File { file: File, path: ContainerPath },
    /// A directory of the rootfs and its merged listing, taken when a listing starts.
    Dir {
        path: ContainerPath,
        listing: Mutex<Option<Vec<DirEntry>>>,
    },
    /// The read end of a host pipe.
    PipeRead(OwnedFd),
    /// The write end of a host pipe.
    PipeWrite(OwnedFd),
    /// A named pipe of the rootfs (read, write or both, as it was opened; non-blocking).
    Fifo(OwnedFd),
    /// One of kiln's `/dev` nodes.
    Device(Device),
    /// A rootfs shim: a placeholder file with no content.
    Shim,
}

/// An open file description: the object and its status flags.
pub(crate) struct Open {
    pub obj: Object,
    pub flags: Mutex<u16>,
    /// The preopen name of a preopened directory.
    pub preopen: Option<String>,
}

impl Open {
    pub fn new(obj: Object) -> Arc<Open> {
        Arc::new(Open {
            obj,
            flags: Mutex::new(0),
            preopen: None,
        })
    }

    pub fn preopened(path: ContainerPath, name: &str) -> Arc<Open> {
        Arc::new(Open {
            obj: Object::Dir {
                path,
                listing: Mutex::new(None),
            },
            flags: Mutex::new(0),
            preopen: Some(name.to_owned()),
        })
    }

    pub fn fdflags(&self) -> u16 {
        self.flags.lock().map(|f| *f).unwrap_or(0)
    }

    pub fn filetype(&self) -> u8 {
        match &self.obj {
            Object::File { .. } | Object::Shim => filetype::REGULAR_FILE,
            Object::Dir { .. } => filetype::DIRECTORY,
            Object::Device(_) => filetype::CHARACTER_DEVICE,
            _ if self.is_terminal() => filetype::CHARACTER_DEVICE,
            Object::PipeRead(_) | Object::PipeWrite(_) | Object::Fifo(_) => filetype::UNKNOWN,
        }
    }

    /// Whether this is a terminal (`run -t`, `debug sh` at a terminal): guests' `isatty`.
    pub fn is_terminal(&self) -> bool {
        match &self.obj {
            Object::PipeRead(fd) | Object::PipeWrite(fd) => rustix::termios::isatty(fd),
            _ => false,
        }
    }

    /// Reads into `buf`; `killed` is asked while a pipe read waits.
    pub fn read(&self, buf: &mut [u8], killed: &dyn Fn() -> bool) -> Result<usize, Errno> {
        match &self.obj {
            Object::File { file, .. } => Ok((&*file).read(buf)?),
            Object::Dir { .. } => Err(Errno::ISDIR),
            Object::PipeRead(fd) | Object::Fifo(fd) => loop {
                let nonblock = self.fdflags() & fdflags::NONBLOCK != 0;
                wait_ready(fd, rustix::event::PollFlags::IN, nonblock, killed)?;
                match rustix::io::read(fd, &mut *buf) {
                    Ok(n) => return Ok(n),
                    // A named pipe stays non-blocking on the host: wait again.
                    Err(rustix::io::Errno::AGAIN) if !nonblock => {}
                    Err(e) => return Err(e.into()),
                }
            },
            Object::PipeWrite(_) => Err(Errno::BADF),
            Object::Device(d) => Ok(read_device(*d, buf)),
            Object::Shim => Ok(0),
        }
    }

    /// Writes `buf`; returns how much was written.
    pub fn write(&self, buf: &[u8], killed: &dyn Fn() -> bool) -> Result<usize, Errno> {
        match &self.obj {
            Object::File { file, .. } => Ok((&*file).write(buf)?),
            Object::Dir { .. } => Err(Errno::ISDIR),
            Object::PipeWrite(fd) | Object::Fifo(fd) => loop {
                let nonblock = self.fdflags() & fdflags::NONBLOCK != 0;
                wait_ready(fd, rustix::event::PollFlags::OUT, nonblock, killed)?;
                match rustix::io::write(fd, buf) {
                    Ok(n) => return Ok(n),
                    Err(rustix::io::Errno::AGAIN) if !nonblock => {}
                    Err(e) => return Err(e.into()),
                }
            },
            Object::PipeRead(_) => Err(Errno::BADF),
            Object::Device(Device::Full) => Err(Errno::NOSPC),
            Object::Device(_) => Ok(buf.len()),
            Object::Shim => Err(Errno::BADF),
        }
    }

    pub fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        match &self.obj {
            Object::File { file, .. } => {
                Ok(std::os::unix::fs::FileExt::read_at(file, buf, offset)?)
            }
            Object::Device(d) => Ok(read_device(*d, buf)),
            Object::Shim => Ok(0),
            Object::Dir { .. } => Err(Errno::ISDIR),
            _ => Err(Errno::SPIPE),
        }
    }

    pub fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        match &self.obj {
            Object::File { file, .. } => {
                Ok(std::os::unix::fs::FileExt::write_at(file, buf, offset)?)
            }
            Object::Device(Device::Full) => Err(Errno::NOSPC),
            Object::Device(_) => Ok(buf.len()),
            Object::Dir { .. } => Err(Errno::ISDIR),
            _ => Err(Errno::SPIPE),
        }
    }

    pub fn seek(&self, pos: SeekFrom) -> Result<u64, Errno> {
        match &self.obj {
            Object::File { file, .. } => Ok((&*file).seek(pos)?),
            Object::Device(_) | Object::Shim => Ok(0),
            Object::Dir { .. } => Err(Errno::ISDIR),
            _ => Err(Errno::SPIPE),
        }
    }
}

/// Waits until `fd` is ready for `what`, asking `killed` every slice.
fn wait_ready(
    fd: &OwnedFd,
    what: rustix::event::PollFlags,
    nonblock: bool,
    killed: &dyn Fn() -> bool,
) -> Result<(), Errno> {
    loop {
        let mut fds = [rustix::event::PollFd::new(fd, what)];
        let timeout = if nonblock {
            rustix::event::Timespec::default()
        } else {
            rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: POLL_SLICE.as_nanos() as _,
            }
        };
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) if nonblock => return Err(Errno::AGAIN),
            Ok(0) => {
                if killed() {
                    return Err(Errno::INTR);
                }
            }
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn read_device(d: Device, buf: &mut [u8]) -> usize {
    match d {
        Device::Null | Device::Stdin | Device::Stdout | Device::Stderr => 0,
        Device::Zero | Device::Full => {
            buf.fill(0);
            buf.len()
        }
        Device::Random | Device::Urandom => {
            fill_random(buf);
            buf.len()
        }
    }
}

/// Fills `buf` from the kernel's random source.
pub(crate) fn fill_random(buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writes at most the remaining length into `buf`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n <= 0 {
            continue;
        }
        done += n as usize;
    }
}

/// A process's descriptor table.
pub(crate) struct FdTable {
    slots: Vec<Option<Arc<Open>>>,
    max: usize,
}

impl FdTable {
    /// An empty table that holds at most `max` descriptors.
    pub fn new(max: usize) -> Self {
        FdTable {
            slots: Vec::new(),
            max,
        }
    }

    pub fn get(&self, fd: u32) -> Result<&Arc<Open>, Errno> {
        self.slots
            .get(fd as usize)
            .and_then(Option::as_ref)
            .ok_or(Errno::BADF)
    }

    fn open_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Puts `open` at the lowest free number >= `min`.
    pub fn insert_from(&mut self, open: Arc<Open>, min: u32) -> Result<u32, Errno> {
        if self.open_count() >= self.max {
            return Err(Errno::MFILE);
        }
        let min = min as usize;
        let at = (min..)
            .find(|&i| self.slots.get(i).is_none_or(Option::is_none))
            .ok_or(Errno::MFILE)?;
        if at >= self.max.max(1024) * 4 {
            return Err(Errno::MFILE);
        }
        if self.slots.len() <= at {
            self.slots.resize(at + 1, None);
        }
        self.slots[at] = Some(open);
        Ok(at as u32)
    }

    /// Puts `open` at the lowest free number.
    pub fn insert(&mut self, open: Arc<Open>) -> Result<u32, Errno> {
        self.insert_from(open, 0)
    }

    /// Puts `open` at exactly `fd`, replacing what was there.
    pub fn set(&mut self, fd: u32, open: Arc<Open>) -> Result<(), Errno> {
        let at = fd as usize;
        if at >= self.max.max(1024) * 4 {
            return Err(Errno::BADF);
        }
        if self.slots.len() <= at {
            self.slots.resize(at + 1, None);
        }
        if self.slots[at].is_none() && self.open_count() >= self.max {
            return Err(Errno::MFILE);
        }
        self.slots[at] = Some(open);
        Ok(())
    }

    pub fn close(&mut self, fd: u32) -> Result<Arc<Open>, Errno> {
        self.slots
            .get_mut(fd as usize)
            .and_then(Option::take)
            .ok_or(Errno::BADF)
    }

    /// `dup2`: `to` refers to `from`'s object.
    pub fn dup2(&mut self, from: u32, to: u32) -> Result<(), Errno> {
        let open = self.get(from)?.clone();
        if from != to {
            self.set(to, open)?;
        }
        Ok(())
    }

    /// `fd_renumber`: moves `from` onto `to`.
    pub fn renumber(&mut self, from: u32, to: u32) -> Result<(), Errno> {
        self.get(to)?;
        let open = self.close(from)?;
        self.set(to, open)
    }

    /// The numbers in use, in order.
    pub fn numbers(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u32)
    }

    /// Drops every descriptor (a process ends).
    pub fn clear(&mut self) {
        self.slots.clear();
    }
}

/// A host pipe: (read end, write end).
pub(crate) fn host_pipe() -> io::Result<(Arc<Open>, Arc<Open>)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((
        Open::new(Object::PipeRead(r)),
        Open::new(Object::PipeWrite(w)),
    ))
}
