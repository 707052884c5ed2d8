//! The `kiln` import module: what WASI preview1 lacks (processes, pipes, `dup`, modes, owners).
//! The contract is `guest-tools/ABI.md`.

// The host functions take exactly the parameters their ABI gives them.
#![allow(clippy::too_many_arguments)]

use std::sync::atomic::Ordering;

use wasmtime::Linker;

use super::abi::Errno;
use super::fdtable::{host_pipe, FdTable};
use super::mem::Mem;
use super::preview1::{call, open_stat, HostResult};
use super::process::{resolve_program, start, Launch, Proc};
use crate::rootfs::{ContainerPath, NodeKind, NodeStat};

const MODULE: &str = "kiln";

/// `fds[i]` value for "closed".
const CLOSED: u32 = u32::MAX;
/// flags bit: act on a final symlink itself.
const NOFOLLOW: u32 = 1;
/// `wait` flags bit: do not block.
const WNOHANG: u32 = 1;
/// Child fd 3 is always the rootfs preopen (wasi-libc finds its preopens from fd 3 upwards).
const PREOPEN_FD: usize = 3;
/// Longest argv or environment block a spawn accepts.
const MAX_BLOCK: u32 = 4 << 20;

/// Adds the `kiln` functions to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Proc>) -> wasmtime::Result<()> {
    host_fn!(linker, MODULE, "spawn", spawn, (path: u32, path_len: u32, argv: u32, argv_len: u32, env: u32, env_len: u32, cwd: u32, cwd_len: u32, fds: u32, nfds: u32, pid_out: u32));
    host_fn!(linker, MODULE, "wait", wait, (pid: u32, flags: u32, status_out: u32));
    host_fn!(linker, MODULE, "kill", kill, (pid: u32, sig: i32));
    host_fn!(linker, MODULE, "pipe", pipe, (fds_out: u32));
    host_fn!(linker, MODULE, "dup", dup, (fd: u32, min: u32, out: u32));
    host_fn!(linker, MODULE, "dup2", dup2, (from: u32, to: u32));
    host_fn!(linker, MODULE, "getcwd", getcwd, (buf: u32, len: u32, out: u32));
    host_fn!(linker, MODULE, "chmod", chmod, (path: u32, len: u32, mode: u32, flags: u32));
    host_fn!(linker, MODULE, "chown", chown, (path: u32, len: u32, uid: u32, gid: u32, flags: u32));
    host_fn!(linker, MODULE, "stat", stat, (path: u32, len: u32, flags: u32, out: u32));
    host_fn!(linker, MODULE, "fstat", fstat, (fd: u32, out: u32));
    host_fn!(linker, MODULE, "umask", umask, (mask: u32, out: u32));
    host_fn!(linker, MODULE, "identity", identity, (out: u32));
    host_fn!(linker, MODULE, "uname", uname, (buf: u32, len: u32, out: u32));
    Ok(())
}

/// Splits a block of NUL-terminated strings.
fn strings(m: &Mem<'_>, ptr: u32, len: u32) -> Result<Vec<Vec<u8>>, Errno> {
    if len > MAX_BLOCK {
        return Err(Errno::TOOBIG);
    }
    let block = m.slice(ptr, len)?;
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Ok(Vec::new());
    }
    Ok(block.split(|&b| b == 0).map(<[u8]>::to_vec).collect())
}

/// An absolute guest path argument, resolved inside the rootfs.
fn guest_path(
    m: &Mem<'_>,
    p: &Proc,
    ptr: u32,
    len: u32,
    follow: bool,
) -> Result<ContainerPath, Errno> {
    let path = m.str(ptr, len)?;
    if path.is_empty() {
        return Err(Errno::NOENT);
    }
    Ok(p.step.overlay.resolve(&p.cwd, path, follow)?)
}

fn spawn(
    m: &mut Mem<'_>,
    p: &mut Proc,
    path: u32,
    path_len: u32,
    argv: u32,
    argv_len: u32,
    env: u32,
    env_len: u32,
    cwd: u32,
    cwd_len: u32,
    fds: u32,
    nfds: u32,
    pid_out: u32,
) -> HostResult {
    let path = m.str(path, path_len)?.to_owned();
    let argv = strings(m, argv, argv_len)?;
    let env = strings(m, env, env_len)?;
    let cwd = m.str(cwd, cwd_len)?;
    let cwd = p
        .step
        .overlay
        .resolve(&ContainerPath::root(), cwd, true)
        .map_err(Errno::from)?;
    if nfds > 1024 {
        return Err(Errno::INVAL.into());
    }
    let mut table = FdTable::new(p.step.limits.files as usize);
    let mut fd3 = None;
    for i in 0..nfds {
        let parent = m.u32(fds + 4 * i)?;
        if parent == CLOSED {
            continue;
        }
        let open = p.fds.get(parent)?.clone();
        if i as usize == PREOPEN_FD {
            fd3 = Some(open);
            continue;
        }
        table.set(i, open)?;
    }
    table.set(
        PREOPEN_FD as u32,
        super::fdtable::Open::preopened(ContainerPath::root(), "/"),
    )?;
    let program = resolve_program(&p.step, &cwd, &path, argv)?;
    let child = start(
        &p.step,
        Launch {
            program,
            env,
            cwd,
            umask: p.umask,
            fds: table,
            fd3,
        },
    )?;
    let pid = p.step.next_pid();
    p.children.insert(pid, child);
    m.put_u32(pid_out, pid)?;
    Ok(())
}

fn wait(m: &mut Mem<'_>, p: &mut Proc, pid: u32, flags: u32, status_out: u32) -> HostResult {
    let child = p.children.get(&pid).ok_or(Errno::CHILD)?;
    let slot = child.slot.clone();
    let nohang = flags & WNOHANG != 0;
    let status = slot.wait(nohang, &|| p.stopping());
    match status {
        Some(s) => {
            if let Some(mut c) = p.children.remove(&pid) {
                if let Some(t) = c.thread.take() {
                    let _ = t.join();
                }
            }
            m.put_u32(status_out, s as u32)?;
            Ok(())
        }
        None if nohang => Err(Errno::AGAIN.into()),
        None => Err(Errno::INTR.into()),
    }
}

fn kill(_m: &mut Mem<'_>, p: &mut Proc, pid: u32, sig: i32) -> HostResult {
    let child = p.children.get(&pid).ok_or(Errno::SRCH)?;
    if !(0..=64).contains(&sig) {
        return Err(Errno::INVAL.into());
    }
    if sig != 0 {
        child.signal.store(sig, Ordering::SeqCst);
        p.step.runtime.interrupt();
    }
    Ok(())
}

fn pipe(m: &mut Mem<'_>, p: &mut Proc, fds_out: u32) -> HostResult {
    let (r, w) = host_pipe()?;
    let rfd = p.fds.insert(r)?;
    let wfd = match p.fds.insert(w) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = p.fds.close(rfd);
            return Err(e.into());
        }
    };
    m.put_u32(fds_out, rfd)?;
    m.put_u32(fds_out + 4, wfd)?;
    Ok(())
}

fn dup(m: &mut Mem<'_>, p: &mut Proc, fd: u32, min: u32, out: u32) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let new = p.fds.insert_from(open, min)?;
    m.put_u32(out, new)?;
    Ok(())
}

fn dup2(_m: &mut Mem<'_>, p: &mut Proc, from: u32, to: u32) -> HostResult {
    p.fds.dup2(from, to)?;
    Ok(())
}

fn getcwd(m: &mut Mem<'_>, p: &mut Proc, buf: u32, len: u32, out: u32) -> HostResult {
    let cwd = p.cwd.as_str().as_bytes();
    if cwd.len() > len as usize {
        return Err(Errno::RANGE.into());
    }
    m.put(buf, cwd)?;
    m.put_u32(out, cwd.len() as u32)?;
    Ok(())
}

fn chmod(m: &mut Mem<'_>, p: &mut Proc, path: u32, len: u32, mode: u32, flags: u32) -> HostResult {
    let follow = flags & NOFOLLOW == 0;
    let real = guest_path(m, p, path, len, follow)?;
    p.step.overlay.chmod(&real, mode & 0o7777, follow)?;
    Ok(())
}

fn chown(
    m: &mut Mem<'_>,
    p: &mut Proc,
    path: u32,
    len: u32,
    uid: u32,
    gid: u32,
    flags: u32,
) -> HostResult {
    let follow = flags & NOFOLLOW == 0;
    let real = guest_path(m, p, path, len, follow)?;
    let uid = (uid != CLOSED).then_some(uid);
    let gid = (gid != CLOSED).then_some(gid);
    p.step.overlay.chown(&real, uid, gid, follow)?;
    Ok(())
}

fn type_bits(k: NodeKind) -> u32 {
    match k {
        NodeKind::File => libc::S_IFREG,
        NodeKind::Dir => libc::S_IFDIR,
        NodeKind::Symlink => libc::S_IFLNK,
        NodeKind::CharDevice => libc::S_IFCHR,
        NodeKind::BlockDevice => libc::S_IFBLK,
        NodeKind::Fifo => libc::S_IFIFO,
        NodeKind::Socket => libc::S_IFSOCK,
    }
}

fn put_stat(m: &mut Mem<'_>, out: u32, st: &NodeStat) -> HostResult {
    let mut b = [0u8; 80];
    b[0..8].copy_from_slice(&st.dev.to_le_bytes());
    b[8..16].copy_from_slice(&st.ino.to_le_bytes());
    b[16..20].copy_from_slice(&(type_bits(st.kind) | (st.mode & 0o7777)).to_le_bytes());
    b[20..24].copy_from_slice(&(st.nlink.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    b[24..28].copy_from_slice(&st.uid.to_le_bytes());
    b[28..32].copy_from_slice(&st.gid.to_le_bytes());
    b[32..40].copy_from_slice(&st.rdev.to_le_bytes());
    b[40..48].copy_from_slice(&st.size.to_le_bytes());
    b[48..56].copy_from_slice(&st.atime_ns.to_le_bytes());
    b[56..64].copy_from_slice(&st.mtime_ns.to_le_bytes());
    b[64..72].copy_from_slice(&st.ctime_ns.to_le_bytes());
    b[72..80].copy_from_slice(&st.blocks.to_le_bytes());
    m.put(out, &b)?;
    Ok(())
}

fn stat(m: &mut Mem<'_>, p: &mut Proc, path: u32, len: u32, flags: u32, out: u32) -> HostResult {
    let follow = flags & NOFOLLOW == 0;
    let real = guest_path(m, p, path, len, follow)?;
    let st = p.step.overlay.stat(&real, follow)?;
    put_stat(m, out, &st)
}

fn fstat(m: &mut Mem<'_>, p: &mut Proc, fd: u32, out: u32) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let st = open_stat(p, &open)?;
    put_stat(m, out, &st)
}

fn umask(m: &mut Mem<'_>, p: &mut Proc, mask: u32, out: u32) -> HostResult {
    m.put_u32(out, p.umask)?;
    if mask != CLOSED {
        p.umask = mask & 0o777;
    }
    Ok(())
}

/// The host's kernel and machine (the image's platform is the host's: kiln does not emulate),
/// with the container's hostname: what uname(2) gives a Linux program in the native sandbox.
fn uname(m: &mut Mem<'_>, p: &mut Proc, buf: u32, len: u32, out: u32) -> HostResult {
    let u = rustix::system::uname();
    let host = if p.step.hostname.is_empty() {
        "localhost"
    } else {
        p.step.hostname.as_str()
    };
    let mut data = Vec::new();
    for field in [
        u.sysname().to_bytes(),
        host.as_bytes(),
        u.release().to_bytes(),
        u.version().to_bytes(),
        u.machine().to_bytes(),
    ] {
        data.extend_from_slice(field);
        data.push(0);
    }
    if data.len() > len as usize {
        return Err(Errno::RANGE.into());
    }
    m.put(buf, &data)?;
    m.put_u32(out, data.len() as u32)?;
    Ok(())
}

fn identity(m: &mut Mem<'_>, p: &mut Proc, out: u32) -> HostResult {
    let c = p.step.creds;
    for (i, v) in [c.uid, c.gid, c.uid, c.gid].into_iter().enumerate() {
        m.put_u32(out + 4 * i as u32, v)?;
    }
    Ok(())
}
