//! Raw fd I/O: the shell writes and reads its fds directly, unbuffered (fds move under it with
//! every redirection, and `read` must not consume more than it uses).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;

#[cfg(target_os = "wasi")]
use std::os::wasi::ffi::{OsStrExt, OsStringExt};

#[cfg(not(target_os = "wasi"))]
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Borrows `fd` as a `File` without taking ownership.
fn borrow(fd: u32) -> Option<ManuallyDrop<File>> {
    let raw = RawFd::try_from(fd).ok()?;
    // SAFETY: the `File` is never dropped, so the fd is not closed; an fd that is not open
    // only makes the reads and writes fail with EBADF.
    Some(ManuallyDrop::new(unsafe { File::from_raw_fd(raw) }))
}

/// Writes everything to `fd`.
pub fn write_fd(fd: u32, data: &[u8]) -> io::Result<()> {
    let mut f = borrow(fd).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    f.write_all(data)
}

/// Writes to `fd`, ignoring errors (diagnostics).
pub fn write_all(fd: u32, data: &[u8]) {
    let _ = write_fd(fd, data);
}

/// One `read` from `fd`.
pub fn read_fd(fd: u32, buf: &mut [u8]) -> io::Result<usize> {
    let mut f = borrow(fd).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        match f.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Appends one line from `fd` to `buf` (through its newline), a byte per read so that nothing
/// after it is consumed; false at end of input with nothing read.
pub fn read_line(fd: u32, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    let mut any = false;
    loop {
        if read_fd(fd, &mut byte)? == 0 {
            return Ok(any);
        }
        any = true;
        buf.push(byte[0]);
        if byte[0] == b'\n' {
            return Ok(true);
        }
    }
}

/// Reads `fd` to its end.
pub fn read_to_end(fd: u32) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = read_fd(fd, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
}

pub fn os_string(b: Vec<u8>) -> OsString {
    OsString::from_vec(b)
}

pub fn path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

pub fn into_bytes(s: OsString) -> Vec<u8> {
    s.into_vec()
}
