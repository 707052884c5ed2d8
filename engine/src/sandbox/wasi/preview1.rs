//! kiln's own `wasi_snapshot_preview1`: every host function, over the step's overlay rootfs.
//!
//! Paths are resolved by the overlay (inside the rootfs, component by component); descriptors
//! are the process's [`FdTable`]; pipes and stdio are host objects. Functions return a WASI
//! errno; `proc_exit` ends the process with a [`ProcExit`] trap.

// The host functions take exactly the parameters their ABI gives them.
#![allow(clippy::too_many_arguments)]

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Caller, Linker};

use super::abi::{
    clock, eventtype, fdflags, filetype, fstflags, oflags, rights, whence, Errno,
    LOOKUP_SYMLINK_FOLLOW, SUBSCRIPTION_CLOCK_ABSTIME,
};
use super::fdtable::{fill_random, Object, Open};
use super::mem::Mem;
use super::process::{Proc, ProcExit};
use crate::rootfs::{ContainerPath, Device, NodeKind, NodeStat, OpenOptions, Opened, TimeSpec};

const MODULE: &str = "wasi_snapshot_preview1";

/// Why a host call did not succeed.
pub(crate) enum Fail {
    /// The guest gets this errno.
    Errno(Errno),
    /// The process ends with this status, as a signal's default action would end it.
    Exit(i32),
}

/// Linux's SIGPIPE.
const SIGPIPE: i32 = 13;

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Errno(e)
    }
}

impl From<crate::rootfs::VfsError> for Fail {
    fn from(e: crate::rootfs::VfsError) -> Self {
        Fail::Errno(e.into())
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Errno(e.into())
    }
}

pub(crate) type HostResult = Result<(), Fail>;

/// Runs a host call with the guest's memory and the process state.
pub(crate) fn call(
    caller: &mut Caller<'_, Proc>,
    f: impl FnOnce(&mut Mem<'_>, &mut Proc) -> HostResult,
) -> wasmtime::Result<i32> {
    let Some(memory) = caller.data().memory else {
        return Ok(i32::from(Errno::INVAL.0));
    };
    let (data, proc) = memory.data_and_store_mut(caller);
    let mut mem = Mem(data);
    match f(&mut mem, proc) {
        Ok(()) => Ok(0),
        Err(Fail::Errno(e)) => Ok(i32::from(e.0)),
        Err(Fail::Exit(status)) => Err(wasmtime::Error::new(ProcExit(status))),
    }
}

/// Adds every preview1 function to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Proc>) -> wasmtime::Result<()> {
    host_fn!(linker, MODULE, "args_get", args_get, (argv: u32, buf: u32));
    host_fn!(linker, MODULE, "args_sizes_get", args_sizes_get, (count: u32, size: u32));
    host_fn!(linker, MODULE, "environ_get", environ_get, (env: u32, buf: u32));
    host_fn!(linker, MODULE, "environ_sizes_get", environ_sizes_get, (count: u32, size: u32));
    host_fn!(linker, MODULE, "clock_res_get", clock_res_get, (id: u32, out: u32));
    host_fn!(linker, MODULE, "clock_time_get", clock_time_get, (id: u32, precision: u64, out: u32));
    host_fn!(linker, MODULE, "fd_advise", fd_advise, (fd: u32, offset: u64, len: u64, advice: u32));
    host_fn!(linker, MODULE, "fd_allocate", fd_allocate, (fd: u32, offset: u64, len: u64));
    host_fn!(linker, MODULE, "fd_close", fd_close, (fd: u32));
    host_fn!(linker, MODULE, "fd_datasync", fd_sync, (fd: u32));
    host_fn!(linker, MODULE, "fd_sync", fd_sync, (fd: u32));
    host_fn!(linker, MODULE, "fd_fdstat_get", fd_fdstat_get, (fd: u32, out: u32));
    host_fn!(linker, MODULE, "fd_fdstat_set_flags", fd_fdstat_set_flags, (fd: u32, flags: u32));
    host_fn!(linker, MODULE, "fd_fdstat_set_rights", fd_fdstat_set_rights, (fd: u32, base: u64, inheriting: u64));
    host_fn!(linker, MODULE, "fd_filestat_get", fd_filestat_get, (fd: u32, out: u32));
    host_fn!(linker, MODULE, "fd_filestat_set_size", fd_filestat_set_size, (fd: u32, size: u64));
    host_fn!(linker, MODULE, "fd_filestat_set_times", fd_filestat_set_times, (fd: u32, atim: u64, mtim: u64, flags: u32));
    host_fn!(linker, MODULE, "fd_pread", fd_pread, (fd: u32, iovs: u32, n: u32, offset: u64, out: u32));
    host_fn!(linker, MODULE, "fd_pwrite", fd_pwrite, (fd: u32, iovs: u32, n: u32, offset: u64, out: u32));
    host_fn!(linker, MODULE, "fd_prestat_get", fd_prestat_get, (fd: u32, out: u32));
    host_fn!(linker, MODULE, "fd_prestat_dir_name", fd_prestat_dir_name, (fd: u32, buf: u32, len: u32));
    host_fn!(linker, MODULE, "fd_read", fd_read, (fd: u32, iovs: u32, n: u32, out: u32));
    host_fn!(linker, MODULE, "fd_readdir", fd_readdir, (fd: u32, buf: u32, len: u32, cookie: u64, out: u32));
    host_fn!(linker, MODULE, "fd_renumber", fd_renumber, (from: u32, to: u32));
    host_fn!(linker, MODULE, "fd_seek", fd_seek, (fd: u32, offset: i64, how: u32, out: u32));
    host_fn!(linker, MODULE, "fd_tell", fd_tell, (fd: u32, out: u32));
    host_fn!(linker, MODULE, "fd_write", fd_write, (fd: u32, iovs: u32, n: u32, out: u32));
    host_fn!(linker, MODULE, "path_create_directory", path_create_directory, (fd: u32, path: u32, len: u32));
    host_fn!(linker, MODULE, "path_filestat_get", path_filestat_get, (fd: u32, flags: u32, path: u32, len: u32, out: u32));
    host_fn!(linker, MODULE, "path_filestat_set_times", path_filestat_set_times, (fd: u32, flags: u32, path: u32, len: u32, atim: u64, mtim: u64, fst: u32));
    host_fn!(linker, MODULE, "path_link", path_link, (old_fd: u32, old_flags: u32, old: u32, old_len: u32, new_fd: u32, new: u32, new_len: u32));
    host_fn!(linker, MODULE, "path_open", path_open, (fd: u32, dirflags: u32, path: u32, len: u32, oflags: u32, base: u64, inheriting: u64, fdflags: u32, out: u32));
    host_fn!(linker, MODULE, "path_readlink", path_readlink, (fd: u32, path: u32, len: u32, buf: u32, buf_len: u32, out: u32));
    host_fn!(linker, MODULE, "path_remove_directory", path_remove_directory, (fd: u32, path: u32, len: u32));
    host_fn!(linker, MODULE, "path_rename", path_rename, (fd: u32, old: u32, old_len: u32, new_fd: u32, new: u32, new_len: u32));
    host_fn!(linker, MODULE, "path_symlink", path_symlink, (old: u32, old_len: u32, fd: u32, new: u32, new_len: u32));
    host_fn!(linker, MODULE, "path_unlink_file", path_unlink_file, (fd: u32, path: u32, len: u32));
    host_fn!(linker, MODULE, "poll_oneoff", poll_oneoff, (subs: u32, events: u32, n: u32, out: u32));
    host_fn!(linker, MODULE, "random_get", random_get, (buf: u32, len: u32));
    host_fn!(linker, MODULE, "sched_yield", sched_yield, ());
    host_fn!(linker, MODULE, "sock_accept", sock_accept, (fd: u32, flags: u32, out: u32));
    host_fn!(linker, MODULE, "sock_recv", sock_recv, (fd: u32, iovs: u32, n: u32, flags: u32, out: u32, out_flags: u32));
    host_fn!(linker, MODULE, "sock_send", sock_send, (fd: u32, iovs: u32, n: u32, flags: u32, out: u32));
    host_fn!(linker, MODULE, "sock_shutdown", sock_shutdown, (fd: u32, how: u32));
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_caller: Caller<'_, Proc>, code: u32| -> wasmtime::Result<()> {
            // Like POSIX, only the low 8 bits survive.
            Err(wasmtime::Error::new(ProcExit((code & 0xff) as i32)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_raise",
        |_caller: Caller<'_, Proc>, sig: u32| -> wasmtime::Result<i32> {
            Err(wasmtime::Error::new(ProcExit(128 + (sig & 0x7f) as i32)))
        },
    )?;
    Ok(())
}

// ---- arguments, environment, clocks, randomness ----

fn put_strings(m: &mut Mem<'_>, list: &[Vec<u8>], ptrs: u32, buf: u32) -> HostResult {
    let mut at = buf;
    for (i, s) in list.iter().enumerate() {
        m.put_u32(ptrs + 4 * i as u32, at)?;
        m.put(at, s)?;
        m.put_u8(at + s.len() as u32, 0)?;
        at += s.len() as u32 + 1;
    }
    Ok(())
}

fn put_sizes(m: &mut Mem<'_>, list: &[Vec<u8>], count: u32, size: u32) -> HostResult {
    m.put_u32(count, list.len() as u32)?;
    let total: usize = list.iter().map(|s| s.len() + 1).sum();
    m.put_u32(size, u32::try_from(total).map_err(|_| Errno::TOOBIG)?)?;
    Ok(())
}

fn args_get(m: &mut Mem<'_>, p: &mut Proc, argv: u32, buf: u32) -> HostResult {
    put_strings(m, &p.args, argv, buf)
}

fn args_sizes_get(m: &mut Mem<'_>, p: &mut Proc, count: u32, size: u32) -> HostResult {
    put_sizes(m, &p.args, count, size)
}

fn environ_get(m: &mut Mem<'_>, p: &mut Proc, env: u32, buf: u32) -> HostResult {
    put_strings(m, &p.env, env, buf)
}

fn environ_sizes_get(m: &mut Mem<'_>, p: &mut Proc, count: u32, size: u32) -> HostResult {
    put_sizes(m, &p.env, count, size)
}

fn now_ns(id: u32) -> Result<u64, Errno> {
    let cid = match id {
        clock::REALTIME => libc::CLOCK_REALTIME,
        clock::MONOTONIC => libc::CLOCK_MONOTONIC,
        clock::PROCESS_CPUTIME => libc::CLOCK_PROCESS_CPUTIME_ID,
        clock::THREAD_CPUTIME => libc::CLOCK_THREAD_CPUTIME_ID,
        _ => return Err(Errno::INVAL),
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    if unsafe { libc::clock_gettime(cid, &mut ts) } != 0 {
        return Err(Errno::INVAL);
    }
    Ok((ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64))
}

fn clock_res_get(m: &mut Mem<'_>, _p: &mut Proc, id: u32, out: u32) -> HostResult {
    now_ns(id)?;
    m.put_u64(out, 1)?;
    Ok(())
}

fn clock_time_get(
    m: &mut Mem<'_>,
    _p: &mut Proc,
    id: u32,
    _precision: u64,
    out: u32,
) -> HostResult {
    m.put_u64(out, now_ns(id)?)?;
    Ok(())
}

fn random_get(m: &mut Mem<'_>, _p: &mut Proc, buf: u32, len: u32) -> HostResult {
    fill_random(m.slice_mut(buf, len)?);
    Ok(())
}

fn sched_yield(_m: &mut Mem<'_>, _p: &mut Proc) -> HostResult {
    std::thread::yield_now();
    Ok(())
}

// ---- descriptors ----

fn fd_advise(_m: &mut Mem<'_>, p: &mut Proc, fd: u32, _o: u64, _l: u64, _a: u32) -> HostResult {
    p.fds.get(fd)?;
    Ok(())
}

fn fd_allocate(_m: &mut Mem<'_>, p: &mut Proc, fd: u32, offset: u64, len: u64) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    match &open.obj {
        Object::File { file, .. } => {
            let want = offset.checked_add(len).ok_or(Errno::FBIG)?;
            let have = file.metadata()?.len();
            if want > have {
                p.step.charge_write((want - have) as usize)?;
                file.set_len(want)?;
            }
            Ok(())
        }
        Object::Dir { .. } => Err(Errno::ISDIR.into()),
        _ => Err(Errno::BADF.into()),
    }
}

fn fd_close(_m: &mut Mem<'_>, p: &mut Proc, fd: u32) -> HostResult {
    p.fds.close(fd)?;
    Ok(())
}

fn fd_sync(_m: &mut Mem<'_>, p: &mut Proc, fd: u32) -> HostResult {
    // The upper is committed as a whole when the step ends; there is nothing to force here.
    p.fds.get(fd)?;
    Ok(())
}

fn fd_fdstat_get(m: &mut Mem<'_>, p: &mut Proc, fd: u32, out: u32) -> HostResult {
    let open = p.fds.get(fd)?;
    let mut rec = [0u8; 24];
    rec[0] = open.filetype();
    rec[2..4].copy_from_slice(&open.fdflags().to_le_bytes());
    // wasi-libc's isatty: a character device that cannot seek or tell.
    let rights = if open.is_terminal() {
        rights::ALL & !(rights::FD_SEEK | rights::FD_TELL)
    } else {
        rights::ALL
    };
    rec[8..16].copy_from_slice(&rights.to_le_bytes());
    rec[16..24].copy_from_slice(&rights.to_le_bytes());
    m.put(out, &rec)?;
    Ok(())
}

fn fd_fdstat_set_flags(_m: &mut Mem<'_>, p: &mut Proc, fd: u32, flags: u32) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let flags = flags as u16;
    if let Object::File { file, .. } = &open.obj {
        set_host_append(file, flags & fdflags::APPEND != 0)?;
    }
    if let Ok(mut f) = open.flags.lock() {
        *f = flags & (fdflags::APPEND | fdflags::NONBLOCK);
    }
    Ok(())
}

fn set_host_append(file: &std::fs::File, on: bool) -> Result<(), Errno> {
    let cur = rustix::fs::fcntl_getfl(file)?;
    let new = if on {
        cur | rustix::fs::OFlags::APPEND
    } else {
        cur - rustix::fs::OFlags::APPEND
    };
    rustix::fs::fcntl_setfl(file, new)?;
    Ok(())
}

fn fd_fdstat_set_rights(_m: &mut Mem<'_>, p: &mut Proc, fd: u32, _b: u64, _i: u64) -> HostResult {
    p.fds.get(fd)?;
    Ok(())
}

fn device_stat(d: Device) -> NodeStat {
    let minor = match d {
        Device::Null => 3,
        Device::Zero => 5,
        Device::Full => 7,
        Device::Random => 8,
        Device::Urandom => 9,
        Device::Stdin | Device::Stdout | Device::Stderr => 0,
    };
    NodeStat {
        kind: NodeKind::CharDevice,
        mode: 0o666,
        uid: 0,
        gid: 0,
        size: 0,
        nlink: 1,
        ino: 0,
        dev: 0,
        rdev: (1 << 8) | minor,
        atime_ns: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        blocks: 0,
    }
}

/// The stat of an open object.
pub(crate) fn open_stat(p: &Proc, open: &Open) -> Result<NodeStat, Errno> {
    Ok(match &open.obj {
        Object::File { file, path } => p.step.overlay.fstat(path, file)?,
        Object::Dir { path, .. } => p.step.overlay.stat(path, true)?,
        Object::Device(d) => device_stat(*d),
        Object::Shim => NodeStat {
            kind: NodeKind::File,
            mode: 0o755,
            ..device_stat(Device::Null)
        },
        Object::PipeRead(_) | Object::PipeWrite(_) | Object::Fifo(_) => NodeStat {
            kind: NodeKind::Fifo,
            mode: 0o600,
            rdev: 0,
            ..device_stat(Device::Null)
        },
    })
}

fn kind_filetype(k: NodeKind) -> u8 {
    match k {
        NodeKind::File => filetype::REGULAR_FILE,
        NodeKind::Dir => filetype::DIRECTORY,
        NodeKind::Symlink => filetype::SYMBOLIC_LINK,
        NodeKind::CharDevice => filetype::CHARACTER_DEVICE,
        NodeKind::BlockDevice => filetype::BLOCK_DEVICE,
        NodeKind::Socket => filetype::SOCKET_STREAM,
        NodeKind::Fifo => filetype::UNKNOWN,
    }
}

fn put_filestat(m: &mut Mem<'_>, out: u32, st: &NodeStat) -> HostResult {
    let mut rec = [0u8; 64];
    rec[0..8].copy_from_slice(&st.dev.to_le_bytes());
    rec[8..16].copy_from_slice(&st.ino.to_le_bytes());
    rec[16] = kind_filetype(st.kind);
    rec[24..32].copy_from_slice(&st.nlink.to_le_bytes());
    rec[32..40].copy_from_slice(&st.size.to_le_bytes());
    rec[40..48].copy_from_slice(&(st.atime_ns.max(0) as u64).to_le_bytes());
    rec[48..56].copy_from_slice(&(st.mtime_ns.max(0) as u64).to_le_bytes());
    rec[56..64].copy_from_slice(&(st.ctime_ns.max(0) as u64).to_le_bytes());
    m.put(out, &rec)?;
    Ok(())
}

fn fd_filestat_get(m: &mut Mem<'_>, p: &mut Proc, fd: u32, out: u32) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let st = open_stat(p, &open)?;
    put_filestat(m, out, &st)
}

fn fd_filestat_set_size(_m: &mut Mem<'_>, p: &mut Proc, fd: u32, size: u64) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    match &open.obj {
        Object::File { file, .. } => {
            let have = file.metadata()?.len();
            if size > have {
                p.step.charge_write((size - have) as usize)?;
            }
            file.set_len(size).map_err(|e| match e.raw_os_error() {
                Some(libc::EBADF) | Some(libc::EINVAL) => Errno::BADF,
                _ => e.into(),
            })?;
            Ok(())
        }
        Object::Dir { .. } => Err(Errno::ISDIR.into()),
        _ => Err(Errno::INVAL.into()),
    }
}

fn times(atim: u64, mtim: u64, flags: u32) -> Result<(Option<TimeSpec>, Option<TimeSpec>), Errno> {
    let flags = flags as u16;
    let pick = |set: u16, now: u16, v: u64| -> Result<Option<TimeSpec>, Errno> {
        match (flags & set != 0, flags & now != 0) {
            (true, true) => Err(Errno::INVAL),
            (true, false) => Ok(Some(TimeSpec::Set(v as i64))),
            (false, true) => Ok(Some(TimeSpec::Now)),
            (false, false) => Ok(None),
        }
    };
    Ok((
        pick(fstflags::ATIM, fstflags::ATIM_NOW, atim)?,
        pick(fstflags::MTIM, fstflags::MTIM_NOW, mtim)?,
    ))
}

fn fd_filestat_set_times(
    _m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    atim: u64,
    mtim: u64,
    flags: u32,
) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let (a, t) = times(atim, mtim, flags)?;
    match &open.obj {
        Object::File { path, .. } | Object::Dir { path, .. } => {
            p.step.overlay.set_times(path, a, t, true)?;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn killed_check(p: &Proc) -> impl Fn() -> bool + '_ {
    move || p.stopping()
}

fn fd_read(m: &mut Mem<'_>, p: &mut Proc, fd: u32, iovs: u32, n: u32, out: u32) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let vecs = m.iovecs(iovs, n)?;
    let streaming = matches!(open.obj, Object::PipeRead(_));
    let mut total = 0usize;
    let stop = killed_check(p);
    for (ptr, len) in vecs {
        if len == 0 {
            continue;
        }
        let buf = m.slice_mut(ptr, len)?;
        let got = match open.read(buf, &stop) {
            Ok(k) => k,
            Err(e) if total > 0 && e != Errno::INTR => break,
            Err(e) => return Err(e.into()),
        };
        total += got;
        // A pipe returns what is there: never wait for more once something arrived.
        if got < len as usize || streaming {
            break;
        }
    }
    m.put_u32(out, total as u32)?;
    Ok(())
}

fn fd_write(m: &mut Mem<'_>, p: &mut Proc, fd: u32, iovs: u32, n: u32, out: u32) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let vecs = m.iovecs(iovs, n)?;
    let is_file = matches!(open.obj, Object::File { .. });
    let mut total = 0usize;
    let stop = killed_check(p);
    for (ptr, len) in vecs {
        let buf = m.slice(ptr, len)?;
        let mut done = 0;
        while done < buf.len() {
            if is_file {
                p.step.charge_write(buf.len() - done)?;
            }
            match open.write(&buf[done..], &stop) {
                Ok(0) => break,
                Ok(k) => done += k,
                // A write to a pipe nobody reads: what SIGPIPE's default action does on Linux
                // (WASI has no signals), so `yes | head -1` ends like it does under dash.
                Err(Errno::PIPE) if matches!(open.obj, Object::PipeWrite(_)) => {
                    return Err(Fail::Exit(128 + SIGPIPE));
                }
                Err(_) if total + done > 0 => {
                    m.put_u32(out, (total + done) as u32)?;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        total += done;
    }
    m.put_u32(out, total as u32)?;
    Ok(())
}

fn fd_pread(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    iovs: u32,
    n: u32,
    offset: u64,
    out: u32,
) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let mut total = 0u64;
    for (ptr, len) in m.iovecs(iovs, n)? {
        let buf = m.slice_mut(ptr, len)?;
        let got = open.pread(buf, offset + total)?;
        total += got as u64;
        if got < len as usize {
            break;
        }
    }
    m.put_u32(out, total as u32)?;
    Ok(())
}

fn fd_pwrite(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    iovs: u32,
    n: u32,
    offset: u64,
    out: u32,
) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let mut total = 0u64;
    for (ptr, len) in m.iovecs(iovs, n)? {
        let buf = m.slice(ptr, len)?;
        if matches!(open.obj, Object::File { .. }) {
            p.step.charge_write(buf.len())?;
        }
        let put = open.pwrite(buf, offset + total)?;
        total += put as u64;
        if put < buf.len() {
            break;
        }
    }
    m.put_u32(out, total as u32)?;
    Ok(())
}

fn fd_prestat_get(m: &mut Mem<'_>, p: &mut Proc, fd: u32, out: u32) -> HostResult {
    let open = p.fds.get(fd)?;
    let name = open.preopen.as_deref().ok_or(Errno::BADF)?;
    m.put_u32(out, 0)?;
    m.put_u32(out + 4, name.len() as u32)?;
    Ok(())
}

fn fd_prestat_dir_name(m: &mut Mem<'_>, p: &mut Proc, fd: u32, buf: u32, len: u32) -> HostResult {
    let open = p.fds.get(fd)?;
    let name = open.preopen.as_deref().ok_or(Errno::BADF)?;
    if (len as usize) < name.len() {
        return Err(Errno::NAMETOOLONG.into());
    }
    m.put(buf, name.as_bytes())?;
    Ok(())
}

fn fd_readdir(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    buf: u32,
    len: u32,
    cookie: u64,
    out: u32,
) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let Object::Dir { path, listing } = &open.obj else {
        return Err(Errno::NOTDIR.into());
    };
    let mut cached = listing.lock().map_err(|_| Errno::IO)?;
    if cookie == 0 || cached.is_none() {
        *cached = Some(p.step.overlay.read_dir(path)?);
    }
    let entries = cached.as_deref().unwrap_or(&[]);
    let self_ino = p.step.overlay.stat(path, true).map(|s| s.ino).unwrap_or(0);
    let mut bytes = Vec::new();
    let total = entries.len() as u64 + 2;
    let mut i = cookie;
    while i < total && bytes.len() < len as usize {
        let (name, ino, kind) = match i {
            0 => (".", self_ino, filetype::DIRECTORY),
            1 => ("..", 0, filetype::DIRECTORY),
            _ => {
                let e = &entries[(i - 2) as usize];
                (e.name.as_str(), e.ino, kind_filetype(e.kind))
            }
        };
        let mut rec = [0u8; 24];
        rec[0..8].copy_from_slice(&(i + 1).to_le_bytes());
        rec[8..16].copy_from_slice(&ino.to_le_bytes());
        rec[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        rec[20] = kind;
        bytes.extend_from_slice(&rec);
        bytes.extend_from_slice(name.as_bytes());
        i += 1;
    }
    let n = bytes.len().min(len as usize);
    m.put(buf, &bytes[..n])?;
    m.put_u32(out, n as u32)?;
    Ok(())
}

fn fd_renumber(_m: &mut Mem<'_>, p: &mut Proc, from: u32, to: u32) -> HostResult {
    p.fds.renumber(from, to)?;
    Ok(())
}

fn fd_seek(m: &mut Mem<'_>, p: &mut Proc, fd: u32, offset: i64, how: u32, out: u32) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let pos = match how as u8 {
        whence::SET => SeekFrom::Start(u64::try_from(offset).map_err(|_| Errno::INVAL)?),
        whence::CUR => SeekFrom::Current(offset),
        whence::END => SeekFrom::End(offset),
        _ => return Err(Errno::INVAL.into()),
    };
    let at = open.seek(pos)?;
    m.put_u64(out, at)?;
    Ok(())
}

fn fd_tell(m: &mut Mem<'_>, p: &mut Proc, fd: u32, out: u32) -> HostResult {
    let open = p.fds.get(fd)?.clone();
    let at = open.seek(SeekFrom::Current(0))?;
    m.put_u64(out, at)?;
    Ok(())
}

// ---- paths ----

/// The guest path of directory descriptor `fd`.
fn dir_of(p: &Proc, fd: u32) -> Result<ContainerPath, Errno> {
    match &p.fds.get(fd)?.obj {
        Object::Dir { path, .. } => Ok(path.clone()),
        _ => Err(Errno::NOTDIR),
    }
}

/// Resolves `path` relative to directory `fd`.
pub(crate) fn resolve_at(
    p: &Proc,
    fd: u32,
    path: &str,
    follow: bool,
) -> Result<ContainerPath, Errno> {
    if path.is_empty() {
        return Err(Errno::NOENT);
    }
    let base = dir_of(p, fd)?;
    Ok(p.step.overlay.resolve(&base, path, follow)?)
}

fn path_create_directory(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    path: u32,
    len: u32,
) -> HostResult {
    let real = resolve_at(p, fd, m.str(path, len)?, false)?;
    p.step.overlay.mkdir(&real, 0o777, p.umask)?;
    Ok(())
}

fn path_filestat_get(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    flags: u32,
    path: u32,
    len: u32,
    out: u32,
) -> HostResult {
    let follow = flags & LOOKUP_SYMLINK_FOLLOW != 0;
    let real = resolve_at(p, fd, m.str(path, len)?, follow)?;
    let st = p.step.overlay.stat(&real, follow)?;
    put_filestat(m, out, &st)
}

fn path_filestat_set_times(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    flags: u32,
    path: u32,
    len: u32,
    atim: u64,
    mtim: u64,
    fst: u32,
) -> HostResult {
    let follow = flags & LOOKUP_SYMLINK_FOLLOW != 0;
    let real = resolve_at(p, fd, m.str(path, len)?, follow)?;
    let (a, t) = times(atim, mtim, fst)?;
    p.step.overlay.set_times(&real, a, t, follow)?;
    Ok(())
}

fn path_link(
    m: &mut Mem<'_>,
    p: &mut Proc,
    old_fd: u32,
    old_flags: u32,
    old: u32,
    old_len: u32,
    new_fd: u32,
    new: u32,
    new_len: u32,
) -> HostResult {
    let from = resolve_at(
        p,
        old_fd,
        m.str(old, old_len)?,
        old_flags & LOOKUP_SYMLINK_FOLLOW != 0,
    )?;
    let to = resolve_at(p, new_fd, m.str(new, new_len)?, false)?;
    p.step.overlay.link(&from, &to)?;
    Ok(())
}

fn path_open(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    dirflags: u32,
    path: u32,
    len: u32,
    oflags: u32,
    base: u64,
    _inheriting: u64,
    fdflags: u32,
    out: u32,
) -> HostResult {
    let follow = dirflags & LOOKUP_SYMLINK_FOLLOW != 0;
    let oflags = oflags as u16;
    let fdflags = fdflags as u16;
    let real = resolve_at(p, fd, m.str(path, len)?, follow)?;
    let write = base & rights::FD_WRITE != 0;
    let opts = OpenOptions {
        read: base & rights::FD_READ != 0 || !write,
        write,
        create: oflags & oflags::CREAT != 0,
        exclusive: oflags & oflags::EXCL != 0,
        truncate: oflags & oflags::TRUNC != 0,
        append: fdflags & fdflags::APPEND != 0,
        directory: oflags & oflags::DIRECTORY != 0,
        follow,
    };
    let opened = p.step.overlay.open(&real, &opts, 0o666, p.umask)?;
    let open = match opened {
        Opened::File(file) => {
            if opts.append {
                set_host_append(&file, true)?;
            }
            Open::new(Object::File { file, path: real })
        }
        Opened::Dir(path) => Open::new(Object::Dir {
            path,
            listing: std::sync::Mutex::new(None),
        }),
        Opened::Device(Device::Stdin) => p.fds.get(0)?.clone(),
        Opened::Device(Device::Stdout) => p.fds.get(1)?.clone(),
        Opened::Device(Device::Stderr) => p.fds.get(2)?.clone(),
        Opened::Device(d) => Open::new(Object::Device(d)),
        Opened::Shim(_) => Open::new(Object::Shim),
        Opened::Fifo(fd) => Open::new(Object::Fifo(fd)),
    };
    if let Ok(mut f) = open.flags.lock() {
        *f |= fdflags & (fdflags::APPEND | fdflags::NONBLOCK);
    }
    let new = p.fds.insert(open)?;
    m.put_u32(out, new)?;
    Ok(())
}

fn path_readlink(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    path: u32,
    len: u32,
    buf: u32,
    buf_len: u32,
    out: u32,
) -> HostResult {
    let real = resolve_at(p, fd, m.str(path, len)?, false)?;
    let target = p.step.overlay.readlink(&real)?;
    let n = target.len().min(buf_len as usize);
    m.put(buf, &target.as_bytes()[..n])?;
    m.put_u32(out, n as u32)?;
    Ok(())
}

fn path_remove_directory(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    path: u32,
    len: u32,
) -> HostResult {
    let real = resolve_at(p, fd, m.str(path, len)?, false)?;
    p.step.overlay.rmdir(&real)?;
    Ok(())
}

fn path_rename(
    m: &mut Mem<'_>,
    p: &mut Proc,
    fd: u32,
    old: u32,
    old_len: u32,
    new_fd: u32,
    new: u32,
    new_len: u32,
) -> HostResult {
    let from = resolve_at(p, fd, m.str(old, old_len)?, false)?;
    let to = resolve_at(p, new_fd, m.str(new, new_len)?, false)?;
    p.step.overlay.rename(&from, &to)?;
    Ok(())
}

fn path_symlink(
    m: &mut Mem<'_>,
    p: &mut Proc,
    old: u32,
    old_len: u32,
    fd: u32,
    new: u32,
    new_len: u32,
) -> HostResult {
    let target = m.str(old, old_len)?.to_owned();
    let at = resolve_at(p, fd, m.str(new, new_len)?, false)?;
    p.step.overlay.symlink(&target, &at)?;
    Ok(())
}

fn path_unlink_file(m: &mut Mem<'_>, p: &mut Proc, fd: u32, path: u32, len: u32) -> HostResult {
    let real = resolve_at(p, fd, m.str(path, len)?, false)?;
    p.step.overlay.unlink(&real)?;
    Ok(())
}

// ---- polling ----

struct Sub {
    userdata: u64,
    kind: u8,
    fd: u32,
    deadline: Option<Instant>,
}

fn poll_oneoff(
    m: &mut Mem<'_>,
    p: &mut Proc,
    subs: u32,
    events: u32,
    n: u32,
    out: u32,
) -> HostResult {
    if n == 0 || n > 4096 {
        return Err(Errno::INVAL.into());
    }
    let start = Instant::now();
    let mut list = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = subs + i * 48;
        let userdata = m.u64(at)?;
        let kind = m.slice(at + 8, 1)?[0];
        let mut sub = Sub {
            userdata,
            kind,
            fd: 0,
            deadline: None,
        };
        match kind {
            eventtype::CLOCK => {
                let id = m.u32(at + 16)?;
                let timeout = m.u64(at + 24)?;
                let flags = m.u16(at + 40)?;
                let rel = if flags & SUBSCRIPTION_CLOCK_ABSTIME != 0 {
                    timeout.saturating_sub(now_ns(id)?)
                } else {
                    timeout
                };
                sub.deadline = Some(start + Duration::from_nanos(rel));
            }
            eventtype::FD_READ | eventtype::FD_WRITE => sub.fd = m.u32(at + 16)?,
            _ => return Err(Errno::INVAL.into()),
        }
        list.push(sub);
    }
    let mut ready: Vec<(u64, u8, u16)> = Vec::new();
    loop {
        // Descriptors: files and devices are always ready; pipes are asked.
        let mut pollfds = Vec::new();
        let mut owners = Vec::new();
        let opens: Vec<Option<Arc<Open>>> = list
            .iter()
            .map(|s| match s.kind {
                eventtype::CLOCK => None,
                _ => p.fds.get(s.fd).ok().cloned(),
            })
            .collect();
        for (s, o) in list.iter().zip(&opens) {
            if s.kind == eventtype::CLOCK {
                continue;
            }
            match o {
                None => ready.push((s.userdata, s.kind, Errno::BADF.0)),
                Some(open) => match &open.obj {
                    Object::PipeRead(fd) | Object::PipeWrite(fd) => {
                        let what = if s.kind == eventtype::FD_READ {
                            rustix::event::PollFlags::IN
                        } else {
                            rustix::event::PollFlags::OUT
                        };
                        pollfds.push(rustix::event::PollFd::new(fd, what));
                        owners.push((s.userdata, s.kind));
                    }
                    _ => ready.push((s.userdata, s.kind, 0)),
                },
            }
        }
        let now = Instant::now();
        for s in &list {
            if let Some(d) = s.deadline {
                if d <= now {
                    ready.push((s.userdata, eventtype::CLOCK, 0));
                }
            }
        }
        let wait = if ready.is_empty() {
            let next = list.iter().filter_map(|s| s.deadline).min();
            let slice = Duration::from_millis(50);
            match next {
                Some(d) => d.saturating_duration_since(now).min(slice),
                None => slice,
            }
        } else {
            Duration::ZERO
        };
        if !pollfds.is_empty() || !wait.is_zero() {
            let ts = rustix::event::Timespec {
                tv_sec: wait.as_secs() as _,
                tv_nsec: wait.subsec_nanos() as _,
            };
            if pollfds.is_empty() {
                std::thread::sleep(wait);
            } else {
                match rustix::event::poll(&mut pollfds, Some(&ts)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(Errno::from(e).into()),
                }
                for (pf, (ud, kind)) in pollfds.iter().zip(&owners) {
                    if !pf.revents().is_empty() {
                        ready.push((*ud, *kind, 0));
                    }
                }
            }
        }
        if !ready.is_empty() {
            break;
        }
        if p.stopping() {
            return Err(Errno::INTR.into());
        }
    }
    for (i, (userdata, kind, err)) in ready.iter().enumerate() {
        let at = events + i as u32 * 32;
        let mut rec = [0u8; 32];
        rec[0..8].copy_from_slice(&userdata.to_le_bytes());
        rec[8..10].copy_from_slice(&err.to_le_bytes());
        rec[10] = *kind;
        m.put(at, &rec)?;
    }
    m.put_u32(out, ready.len() as u32)?;
    Ok(())
}

// ---- sockets: none in the sandbox ----

fn sock_accept(_m: &mut Mem<'_>, _p: &mut Proc, _fd: u32, _f: u32, _o: u32) -> HostResult {
    Err(Errno::NOTSOCK.into())
}

fn sock_recv(
    _m: &mut Mem<'_>,
    _p: &mut Proc,
    _fd: u32,
    _i: u32,
    _n: u32,
    _f: u32,
    _o: u32,
    _of: u32,
) -> HostResult {
    Err(Errno::NOTSOCK.into())
}

fn sock_send(
    _m: &mut Mem<'_>,
    _p: &mut Proc,
    _fd: u32,
    _i: u32,
    _n: u32,
    _f: u32,
    _o: u32,
) -> HostResult {
    Err(Errno::NOTSOCK.into())
}

fn sock_shutdown(_m: &mut Mem<'_>, _p: &mut Proc, _fd: u32, _h: u32) -> HostResult {
    Err(Errno::NOTSOCK.into())
}
