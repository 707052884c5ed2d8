//! The same API on Linux, with libc: guest tools build and run natively for tests.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::{Fd, Identity, Pid, Spawn, Stat, Status, CLOSED};

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn init() {}

fn cstrings(list: &[OsString]) -> io::Result<Vec<CString>> {
    list.iter().map(|s| cstr(s.as_bytes())).collect()
}

/// `kiln:<tool>` names a guest tool: natively, the binary of that name beside this one.
fn program(path: &Path) -> io::Result<CString> {
    let bytes = path.as_os_str().as_bytes();
    match bytes.strip_prefix(b"kiln:") {
        Some(tool) => {
            let exe = std::env::current_exe()?;
            let dir = exe.parent().unwrap_or(Path::new("/"));
            cstr(
                dir.join(std::ffi::OsStr::from_bytes(tool))
                    .as_os_str()
                    .as_bytes(),
            )
        }
        None => cstr(bytes),
    }
}

pub fn spawn(req: &Spawn<'_>) -> io::Result<Pid> {
    let path = program(req.path)?;
    let cwd = cstr(req.cwd.as_os_str().as_bytes())?;
    let argv = cstrings(req.argv)?;
    let env = cstrings(req.env)?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
    env_p.push(std::ptr::null());
    let fds: Vec<libc::c_int> = req
        .fds
        .iter()
        .map(|&f| if f == CLOSED { -1 } else { f as libc::c_int })
        .collect();
    // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
    let high = 1000 + fds.len() as libc::c_int;
    // SAFETY: fork; the child only calls async-signal-safe functions on prepared data.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child; raw fd plumbing then exec or _exit.
        unsafe {
            // Park the sources above every target so a target never clobbers a later source.
            for (i, &f) in fds.iter().enumerate() {
                if f >= 0 && libc::dup2(f, high + i as libc::c_int) < 0 {
                    libc::_exit(127);
                }
            }
            for (i, &f) in fds.iter().enumerate() {
                let target = i as libc::c_int;
                if f >= 0 {
                    if libc::dup2(high + i as libc::c_int, target) < 0 {
                        libc::_exit(127);
                    }
                } else {
                    libc::close(target);
                }
            }
            for i in 0..fds.len() {
                libc::close(high + i as libc::c_int);
            }
            // Nothing else leaks into the child.
            libc::syscall(
                libc::SYS_close_range,
                fds.len() as libc::c_uint,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            );
            // Rust ignores SIGPIPE; an exec'd program must start with the default action
            // (like every child of a shell), or `yes | head -1` never ends quietly.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if libc::chdir(cwd.as_ptr()) != 0 {
                libc::_exit(127);
            }
            libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
            let code = if *libc::__errno_location() == libc::ENOENT {
                127
            } else {
                126
            };
            libc::_exit(code);
        }
    }
    Ok(pid as Pid)
}

pub fn wait(pid: Pid, nohang: bool) -> io::Result<Option<Status>> {
    let mut status = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: plain syscall writing into `status`.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        break;
    }
    if libc::WIFEXITED(status) {
        Ok(Some(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Ok(Some(128 + libc::WTERMSIG(status)))
    } else {
        Ok(Some(255))
    }
}

pub fn kill(pid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::kill(pid as libc::pid_t, sig) }).map(drop)
}

pub fn pipe() -> io::Result<(Fd, Fd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: writes two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0] as Fd, fds[1] as Fd))
}

pub fn dup(fd: Fd, min: Fd) -> io::Result<Fd> {
    // SAFETY: plain syscall.
    let r =
        cvt(unsafe { libc::fcntl(fd as libc::c_int, libc::F_DUPFD_CLOEXEC, min as libc::c_int) })?;
    Ok(r as Fd)
}

pub fn dup2(from: Fd, to: Fd) -> io::Result<()> {
    if from == to {
        // SAFETY: plain syscall; checks that the fd is open.
        cvt(unsafe { libc::fcntl(from as libc::c_int, libc::F_GETFD) })?;
        return Ok(());
    }
    // SAFETY: plain syscall.
    cvt(unsafe { libc::dup3(from as libc::c_int, to as libc::c_int, libc::O_CLOEXEC) }).map(drop)
}

pub fn close(fd: Fd) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::close(fd as libc::c_int) }).map(drop)
}

fn at_flags(follow: bool) -> libc::c_int {
    if follow {
        0
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    }
}

pub fn chmod(path: &Path, mode: u32, follow: bool) -> io::Result<()> {
    let p = cstr(path.as_os_str().as_bytes())?;
    if !follow {
        // Linux cannot chmod a symlink; like chmod(1), leave it alone.
        let st = stat(path, false)?;
        if st.is_symlink() {
            return Ok(());
        }
    }
    // SAFETY: plain syscall on a C string.
    cvt(unsafe { libc::fchmodat(libc::AT_FDCWD, p.as_ptr(), mode as libc::mode_t, 0) }).map(drop)
}

pub fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>, follow: bool) -> io::Result<()> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let uid = uid.unwrap_or(u32::MAX);
    let gid = gid.unwrap_or(u32::MAX);
    // SAFETY: plain syscall on a C string.
    cvt(unsafe { libc::fchownat(libc::AT_FDCWD, p.as_ptr(), uid, gid, at_flags(follow)) }).map(drop)
}

fn from_libc(st: &libc::stat) -> Stat {
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    Stat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: st.st_size as u64,
        atime: ns(st.st_atime, st.st_atime_nsec),
        mtime: ns(st.st_mtime, st.st_mtime_nsec),
        ctime: ns(st.st_ctime, st.st_ctime_nsec),
        blocks: st.st_blocks as u64,
    }
}

pub fn stat(path: &Path, follow: bool) -> io::Result<Stat> {
    let p = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: zeroed stat is a valid value; the syscall fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall on a C string and an out struct.
    cvt(unsafe { libc::fstatat(libc::AT_FDCWD, p.as_ptr(), &mut st, at_flags(follow)) })?;
    Ok(from_libc(&st))
}

pub fn fstat(fd: Fd) -> io::Result<Stat> {
    // SAFETY: zeroed stat is a valid value; the syscall fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall with an out struct.
    cvt(unsafe { libc::fstat(fd as libc::c_int, &mut st) })?;
    Ok(from_libc(&st))
}

pub fn umask(mask: Option<u32>) -> io::Result<u32> {
    // SAFETY: umask cannot fail.
    let old = unsafe { libc::umask(mask.unwrap_or(0o022) as libc::mode_t) };
    if mask.is_none() {
        // SAFETY: restores the mask just read.
        unsafe { libc::umask(old) };
    }
    Ok(old as u32)
}

pub fn identity() -> io::Result<Identity> {
    // SAFETY: these calls cannot fail.
    unsafe {
        Ok(Identity {
            uid: libc::getuid(),
            gid: libc::getgid(),
            euid: libc::geteuid(),
            egid: libc::getegid(),
        })
    }
}

pub fn uname() -> io::Result<crate::Uname> {
    // SAFETY: `utsname` is plain data; uname(2) fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let field = |f: &[libc::c_char]| -> String {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok(crate::Uname {
        sysname: field(&u.sysname),
        nodename: field(&u.nodename),
        release: field(&u.release),
        version: field(&u.version),
        machine: field(&u.machine),
    })
}
