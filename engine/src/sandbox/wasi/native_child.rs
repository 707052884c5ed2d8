//! Linux binaries of a step (its first program, or a guest's child) run in the native sandbox
//! over the same layers and upper, with descriptors taken from the process's table.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::fdtable::{FdTable, Object};
use super::process::{Launch, Step};
use crate::rootfs::Device;
use crate::sandbox::native::{self, NativeNetwork, NativeSpec};
use crate::sandbox::NetworkMode;

/// Runs the Linux binary at guest path `path` (`main`: as the step's first program); returns
/// its status.
pub(crate) fn run(step: &Arc<Step>, path: &str, launch: Launch, main: bool) -> i32 {
    let Launch {
        program,
        env,
        cwd,
        fds,
        fd3,
        ..
    } = launch;
    let stdio = match [0, 1, 2].map(|n| host_fd(&fds, n)) {
        [Ok(a), Ok(b), Ok(c)] => [a, b, c],
        _ => return 126,
    };
    // Descriptors above the stdio ones (fd 3 is the WASI rootfs preopen, never passed).
    let mut extra_fds: Vec<(u32, OwnedFd)> = fds
        .numbers()
        .filter(|&n| n > 3)
        .filter_map(|n| passable(&fds.get(n).ok()?.obj).map(|fd| (n, fd)))
        .collect();
    if let Some(fd) = fd3.as_deref().and_then(|o| passable(&o.obj)) {
        extra_fds.push((3, fd));
    }
    let err_fd = stdio[2].try_clone().ok();
    let complain = |msg: String| {
        if let Some(fd) = &err_fd {
            let _ = rustix::io::write(fd, format!("kiln: {msg}\n").as_bytes());
        }
    };
    let parent = step
        .rootfs
        .upper
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let work = match tempfile::Builder::new()
        .prefix("kiln-work-")
        .tempdir_in(&parent)
    {
        Ok(w) => w,
        Err(e) => {
            complain(format!("{path}: overlay work folder: {e}"));
            return 126;
        }
    };
    let mut argv: Vec<String> = program
        .argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // argv[0] stays as the caller gave it: multicall programs (redis-server, a symlink to
    // redis-check-rdb) choose what to be by it.
    if argv.is_empty() {
        argv.push(path.to_owned());
    }
    let mut limits = step.limits;
    limits.timeout = step.remaining();
    let spec = NativeSpec {
        argv,
        program: Some(path.to_owned()),
        env: env
            .iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect(),
        cwd: cwd.to_string(),
        uid: step.creds.uid,
        gid: step.creds.gid,
        lowers: step.rootfs.lowers.clone(),
        upper: step.rootfs.upper.clone(),
        work: work.path().to_path_buf(),
        network: match step.network {
            NetworkMode::None => NativeNetwork::None,
            NetworkMode::Host => NativeNetwork::Host,
        },
        hostname: step.hostname.clone(),
        extra_hosts: step.extra_hosts.clone(),
        limits,
        stdio,
        extra_fds,
        control: step.control.clone().map(|c| (c, main)),
        tty: main && step.terminal,
        binds: step.binds.clone(),
    };
    match native::run(spec) {
        Ok(outcome) => {
            if let Some(limit) = outcome.limit {
                step.exceeded(limit);
            }
            step.note_not_enforced(outcome.not_enforced);
            outcome.status
        }
        Err(e) => {
            complain(format!("{path}: {e}"));
            126
        }
    }
}

/// A host descriptor for a pipe or an open file.
fn passable(obj: &Object) -> Option<OwnedFd> {
    match obj {
        Object::PipeRead(fd) | Object::PipeWrite(fd) => rustix::io::fcntl_dupfd_cloexec(fd, 3).ok(),
        Object::File { file, .. } => rustix::io::fcntl_dupfd_cloexec(file, 3).ok(),
        _ => None,
    }
}

/// A host descriptor for what the process has at `n` (`/dev/null` for what has none).
fn host_fd(fds: &FdTable, n: u32) -> std::io::Result<OwnedFd> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| -> std::io::Result<OwnedFd> {
        Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
    };
    let null = || -> std::io::Result<OwnedFd> {
        Ok(std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?
            .into())
    };
    let Ok(open) = fds.get(n) else {
        return null();
    };
    match &open.obj {
        Object::PipeRead(fd) | Object::PipeWrite(fd) | Object::Fifo(fd) => dup(fd.as_fd()),
        Object::File { file, .. } => dup(file.as_fd()),
        Object::Device(Device::Zero) => Ok(std::fs::File::open("/dev/zero")?.into()),
        Object::Device(Device::Random | Device::Urandom) => {
            Ok(std::fs::File::open("/dev/urandom")?.into())
        }
        _ => null(),
    }
}
