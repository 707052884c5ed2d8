//! The `kiln` imports, as the host provides them (see `guest-tools/ABI.md`).

use std::ffi::OsString;
use std::io;
use std::os::wasi::ffi::OsStrExt;
use std::path::Path;

use crate::{Fd, Identity, Pid, Spawn, Stat, Status};

#[link(wasm_import_module = "kiln")]
extern "C" {
    #[link_name = "spawn"]
    fn kiln_spawn(
        path: *const u8,
        path_len: u32,
        argv: *const u8,
        argv_len: u32,
        env: *const u8,
        env_len: u32,
        cwd: *const u8,
        cwd_len: u32,
        fds: *const u32,
        nfds: u32,
        pid_out: *mut u32,
    ) -> i32;
    #[link_name = "wait"]
    fn kiln_wait(pid: u32, flags: u32, status_out: *mut i32) -> i32;
    #[link_name = "kill"]
    fn kiln_kill(pid: u32, sig: i32) -> i32;
    #[link_name = "pipe"]
    fn kiln_pipe(fds_out: *mut u32) -> i32;
    #[link_name = "dup"]
    fn kiln_dup(fd: u32, min_fd: u32, fd_out: *mut u32) -> i32;
    #[link_name = "dup2"]
    fn kiln_dup2(from: u32, to: u32) -> i32;
    #[link_name = "getcwd"]
    fn kiln_getcwd(buf: *mut u8, buf_len: u32, len_out: *mut u32) -> i32;
    #[link_name = "uname"]
    fn kiln_uname(buf: *mut u8, buf_len: u32, len_out: *mut u32) -> i32;
    #[link_name = "chmod"]
    fn kiln_chmod(path: *const u8, path_len: u32, mode: u32, flags: u32) -> i32;
    #[link_name = "chown"]
    fn kiln_chown(path: *const u8, path_len: u32, uid: u32, gid: u32, flags: u32) -> i32;
    #[link_name = "stat"]
    fn kiln_stat(path: *const u8, path_len: u32, flags: u32, out: *mut u8) -> i32;
    #[link_name = "fstat"]
    fn kiln_fstat(fd: u32, out: *mut u8) -> i32;
    #[link_name = "umask"]
    fn kiln_umask(mask: u32, old_out: *mut u32) -> i32;
    #[link_name = "identity"]
    fn kiln_identity(out: *mut u32) -> i32;
}

const NOFOLLOW: u32 = 1;
const WNOHANG: u32 = 1;
const ERANGE: i32 = 68;
const EAGAIN: i32 = 6;

fn check(errno: i32) -> io::Result<()> {
    if errno == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(errno))
    }
}

fn len(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::other("argument too long"))
}

fn strings(list: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in list {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    out
}

pub fn uname() -> io::Result<crate::Uname> {
    let mut buf = vec![0u8; 1024];
    let mut n = 0u32;
    // SAFETY: the host writes at most `buf.len()` bytes into `buf` and one u32 into `n`.
    check(unsafe { kiln_uname(buf.as_mut_ptr(), buf.len() as u32, &mut n) })?;
    let data = buf.get(..n as usize).unwrap_or_default();
    let mut fields = data
        .split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let mut next = || fields.next().unwrap_or_default();
    Ok(crate::Uname {
        sysname: next(),
        nodename: next(),
        release: next(),
        version: next(),
        machine: next(),
    })
}

pub fn init() {
    let mut buf = vec![0u8; 4096];
    loop {
        let mut n = 0u32;
        // SAFETY: the host writes at most `buf.len()` bytes into `buf` and one u32 into `n`.
        let r = unsafe { kiln_getcwd(buf.as_mut_ptr(), buf.len() as u32, &mut n) };
        if r == ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if r == 0 {
            let cwd = std::ffi::OsStr::from_bytes(&buf[..(n as usize).min(buf.len())]);
            // A cwd that vanished leaves the process in `/`, as wasi-libc starts it.
            let _ = std::env::set_current_dir(cwd);
        }
        return;
    }
}

pub fn spawn(req: &Spawn<'_>) -> io::Result<Pid> {
    let path = if req.path.as_os_str().as_bytes().starts_with(b"kiln:") {
        req.path.to_path_buf()
    } else {
        crate::absolute(req.path)?
    };
    let path = path.as_os_str().as_bytes();
    let cwd = crate::absolute(req.cwd)?;
    let cwd = cwd.as_os_str().as_bytes();
    let argv = strings(req.argv);
    let env = strings(req.env);
    let mut pid = 0u32;
    // SAFETY: every pointer/length pair names a live buffer; the host writes one u32 to `pid`.
    check(unsafe {
        kiln_spawn(
            path.as_ptr(),
            len(path.len())?,
            argv.as_ptr(),
            len(argv.len())?,
            env.as_ptr(),
            len(env.len())?,
            cwd.as_ptr(),
            len(cwd.len())?,
            req.fds.as_ptr(),
            len(req.fds.len())?,
            &mut pid,
        )
    })?;
    Ok(pid)
}

pub fn wait(pid: Pid, nohang: bool) -> io::Result<Option<Status>> {
    let mut status = 0i32;
    let flags = if nohang { WNOHANG } else { 0 };
    // SAFETY: the host writes one i32 to `status`.
    match unsafe { kiln_wait(pid, flags, &mut status) } {
        0 => Ok(Some(status)),
        EAGAIN if nohang => Ok(None),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

pub fn kill(pid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe { kiln_kill(pid, sig) })
}

pub fn pipe() -> io::Result<(Fd, Fd)> {
    let mut fds = [0u32; 2];
    // SAFETY: the host writes two u32s to `fds`.
    check(unsafe { kiln_pipe(fds.as_mut_ptr()) })?;
    Ok((fds[0], fds[1]))
}

pub fn dup(fd: Fd, min: Fd) -> io::Result<Fd> {
    let mut out = 0u32;
    // SAFETY: the host writes one u32 to `out`.
    check(unsafe { kiln_dup(fd, min, &mut out) })?;
    Ok(out)
}

pub fn dup2(from: Fd, to: Fd) -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe { kiln_dup2(from, to) })
}

pub fn close(fd: Fd) -> io::Result<()> {
    // wasi-libc's close() is fd_close.
    extern "C" {
        fn close(fd: i32) -> i32;
    }
    // SAFETY: closing a number has no memory effects; errors come back through errno.
    if unsafe { close(fd as i32) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn flags(follow: bool) -> u32 {
    if follow {
        0
    } else {
        NOFOLLOW
    }
}

pub fn chmod(path: &Path, mode: u32, follow: bool) -> io::Result<()> {
    let p = path.as_os_str().as_bytes();
    // SAFETY: `p` is a live buffer of the given length.
    check(unsafe { kiln_chmod(p.as_ptr(), len(p.len())?, mode, flags(follow)) })
}

pub fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>, follow: bool) -> io::Result<()> {
    let p = path.as_os_str().as_bytes();
    let uid = uid.unwrap_or(crate::CLOSED);
    let gid = gid.unwrap_or(crate::CLOSED);
    // SAFETY: `p` is a live buffer of the given length.
    check(unsafe { kiln_chown(p.as_ptr(), len(p.len())?, uid, gid, flags(follow)) })
}

pub fn stat(path: &Path, follow: bool) -> io::Result<Stat> {
    let p = path.as_os_str().as_bytes();
    let mut out = [0u8; Stat::SIZE];
    // SAFETY: `p` is live; the host writes `Stat::SIZE` bytes to `out`.
    check(unsafe { kiln_stat(p.as_ptr(), len(p.len())?, flags(follow), out.as_mut_ptr()) })?;
    Ok(Stat::from_bytes(&out))
}

pub fn fstat(fd: Fd) -> io::Result<Stat> {
    let mut out = [0u8; Stat::SIZE];
    // SAFETY: the host writes `Stat::SIZE` bytes to `out`.
    check(unsafe { kiln_fstat(fd, out.as_mut_ptr()) })?;
    Ok(Stat::from_bytes(&out))
}

pub fn umask(mask: Option<u32>) -> io::Result<u32> {
    let mut old = 0u32;
    // SAFETY: the host writes one u32 to `old`.
    check(unsafe { kiln_umask(mask.unwrap_or(u32::MAX), &mut old) })?;
    Ok(old)
}

pub fn identity() -> io::Result<Identity> {
    let mut ids = [0u32; 4];
    // SAFETY: the host writes four u32s to `ids`.
    check(unsafe { kiln_identity(ids.as_mut_ptr()) })?;
    Ok(Identity {
        uid: ids[0],
        gid: ids[1],
        euid: ids[2],
        egid: ids[3],
    })
}
