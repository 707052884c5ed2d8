//! Rootless kiln with subordinate ids: a user without root whom `/etc/subuid` and
//! `/etc/subgid` grant ids runs kiln inside a user namespace of its own, as podman and buildah
//! do. There the user is root over 65,536 ids: its own uid and gid stand for 0, and container
//! ids 1..65535 for the subordinate ranges (written by the setuid `newuidmap` and
//! `newgidmap`). Unpacking gives files their owners for real, setuid bits stay, and the native
//! sandbox runs Linux programs with an identity mapping over the same files; what the kernel
//! still refuses there (device nodes, ids past the range) is recorded as it is without root.
//!
//! [`enter`] runs first in `main`, while the process has one thread: it forks; the child
//! unshares a user namespace and waits; the parent writes the id maps with the two helpers and
//! lets the child go on, which unshares a mount namespace (so that it may clone mounts for the
//! native sandbox) and executes kiln again; the parent forwards the signals sent to it and ends
//! as the child ends. The child dies with the parent (`PR_SET_PDEATHSIG`).
//! A user without subordinate ids gets a namespace that maps its one uid and gid to 0, made in
//! the process itself (no helper needed), which then executes kiln again so that its memory
//! belongs to the namespace. Owners are recorded there ([`crate::layer::host_is_root`]), and
//! Linux programs get fake ids (`sandbox::native::fakeid`).

use std::io;
use std::os::unix::process::CommandExt;

/// Ids mapped into kiln's namespace besides the user's own: container ids 1..=65535.
const SUBORDINATE_IDS: u64 = 65_535;

/// The ids a namespace needs for a system's users (0..=65535): with fewer, kiln records owners
/// and fakes ids instead of setting them.
pub const SYSTEM_IDS: u32 = 65_536;

/// Why the namespace could not be made; kiln then goes on without it.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `newuidmap` or `newgidmap` refused.
    #[error("{tool} failed: {why}")]
    Helper {
        /// The helper.
        tool: &'static str,
        /// Its message or status.
        why: String,
    },
}

/// What [`enter`] did.
#[derive(Debug)]
pub enum Entered {
    /// Carry on in this process: kiln is root, already in its namespace, or has no
    /// subordinate ids.
    Here,
    /// kiln ran in its namespace and ended with this exit code; exit with it.
    Ran(u8),
    /// The namespace could not be made: carry on here, one-uid mode.
    Failed(RootlessError),
}

/// A subordinate range: `count` ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First host id.
    pub start: u64,
    /// Number of ids.
    pub count: u64,
}

/// The ranges of `/etc/subuid` or `/etc/subgid` text granted to `name` or `id`, in file order,
/// cut to [`SUBORDINATE_IDS`] ids in all. Malformed lines are skipped, as shadow's tools do.
pub fn subordinate_ranges(text: &str, name: &str, id: u32) -> Vec<IdRange> {
    let id = id.to_string();
    let mut out = Vec::new();
    let mut left = SUBORDINATE_IDS;
    for line in text.lines() {
        let mut f = line.trim().split(':');
        let (Some(owner), Some(start), Some(count), None) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if owner != name && owner != id {
            continue;
        }
        let (Ok(start), Ok(count)) = (start.parse::<u64>(), count.parse::<u64>()) else {
            continue;
        };
        let count = count.min(left);
        if count == 0
            || start
                .checked_add(count)
                .is_none_or(|end| end > u64::from(u32::MAX))
        {
            continue;
        }
        out.push(IdRange { start, count });
        left -= count;
        if left == 0 {
            break;
        }
    }
    out
}

/// The `ID HOST COUNT` triples for `newuidmap`/`newgidmap`: 0 is `own`, then the ranges.
pub fn map_args(own: u32, ranges: &[IdRange]) -> Vec<String> {
    let mut args = vec!["0".to_owned(), own.to_string(), "1".to_owned()];
    let mut next = 1u64;
    for r in ranges {
        args.extend([next.to_string(), r.start.to_string(), r.count.to_string()]);
        next += r.count;
    }
    args
}

/// How many ids, from 0 up, this process's user namespace maps; `None` in the initial
/// namespace (which maps every id onto itself).
pub fn namespace_ids() -> Option<u32> {
    mapped_from_zero(&std::fs::read_to_string("/proc/self/uid_map").ok()?)
}

/// The `(inside, outside, count)` extents of a `uid_map` or `gid_map` text.
fn extents(map: &str) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for line in map.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [inside, outside, count] = f[..] {
            out.push((inside, outside, count));
        }
    }
    out
}

/// [`namespace_ids`] of a `uid_map` text.
fn mapped_from_zero(uid_map: &str) -> Option<u32> {
    let mut ranges = extents(uid_map);
    if ranges == [(0, 0, u64::from(u32::MAX))] {
        return None;
    }
    ranges.sort_unstable();
    let mut end = 0u64;
    for (inside, _, count) in ranges {
        if inside != end {
            break;
        }
        end += count;
    }
    Some(u32::try_from(end).unwrap_or(u32::MAX))
}

/// A map for a child namespace that gives it the ids of this one below `limit` as they are,
/// one line per extent of `map` (this namespace's `uid_map` or `gid_map`): the kernel takes
/// an extent only when one extent of the parent's holds it whole.
pub fn identity_map(map: &str, limit: u32) -> String {
    let mut out = String::new();
    for (inside, _, count) in extents(map) {
        let end = (inside + count).min(u64::from(limit));
        if inside < end {
            out.push_str(&format!("{inside} {inside} {}\n", end - inside));
        }
    }
    out
}

/// The user's name, from the passwd database.
fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        f.next()?;
        (f.next()? == uid.to_string()).then(|| name.to_owned())
    })
}

/// A helper's path, if installed.
fn helper(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn sys(op: &'static str) -> impl FnOnce(io::Error) -> RootlessError {
    move |source| RootlessError::Sys { op, source }
}

/// Puts kiln in its own user namespace when it runs without root and the user has subordinate
/// ids; see the module doc. Call it first in `main`, before any thread starts.
pub fn enter() -> Entered {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    if uid == 0 {
        return Entered::Here;
    }
    let name = user_name(uid).unwrap_or_default();
    let read = |p| std::fs::read_to_string(p).unwrap_or_default();
    let uids = subordinate_ranges(&read("/etc/subuid"), &name, uid);
    let gids = subordinate_ranges(&read("/etc/subgid"), &name, gid);
    let (Some(newuidmap), Some(newgidmap)) = (helper("newuidmap"), helper("newgidmap")) else {
        return one_id(uid, gid);
    };
    if uids.is_empty() || gids.is_empty() {
        return one_id(uid, gid);
    }
    match reexec(
        (&newuidmap, map_args(uid, &uids)),
        (&newgidmap, map_args(gid, &gids)),
    ) {
        Ok(code) => Entered::Ran(code),
        Err(e) => Entered::Failed(e),
    }
}

/// Without subordinate ids: a user namespace that maps the user's one uid and gid to 0, made
/// in this process (as `unshare -r`), with a mount namespace of its own. Owners are recorded
/// there ([`crate::layer::host_is_root`] is false) and the native sandbox fakes the calls about
/// other ids ([`crate::sandbox::native`]).
fn one_id(uid: u32, gid: u32) -> Entered {
    // SAFETY: unshare(2) of this (single-threaded, `enter`'s contract) process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } < 0 {
        return Entered::Failed(sys("unshare a user namespace")(io::Error::last_os_error()));
    }
    // Without CAP_SETGID outside, the gid map needs setgroups(2) denied first.
    let mapped = std::fs::write("/proc/self/setgroups", "deny")
        .and_then(|()| std::fs::write("/proc/self/uid_map", format!("0 {uid} 1\n")))
        .and_then(|()| std::fs::write("/proc/self/gid_map", format!("0 {gid} 1\n")));
    if let Err(e) = mapped {
        return Entered::Failed(sys("map kiln's user namespace")(e));
    }
    // Executed again, kiln's memory belongs to the namespace: its /proc files, and those of
    // the sandbox processes it clones (undumpable, as init is), are then its own root's, not
    // the real root's, which is unmapped here (writing the sandbox's id maps needs them).
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Entered::Failed(sys("find the kiln executable")(e)),
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    Entered::Failed(sys("run kiln in its user namespace")(err))
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: plain sigset manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

type MapCommand<'a> = (&'a std::path::Path, Vec<String>);

fn reexec(uid_map: MapCommand<'_>, gid_map: MapCommand<'_>) -> Result<u8, RootlessError> {
    let exe = std::env::current_exe().map_err(sys("find the kiln executable"))?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| sys("pipe")(e.into()))?;
    let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| sys("pipe")(e.into()))?;
    // The signals the parent passes on (when another process sent them), and its child's end.
    let mut signals = crate::sandbox::FORWARDED_SIGNALS.to_vec();
    signals.push(libc::SIGCHLD);
    let set = sigset(&signals);
    let mut old = sigset(&[]);
    // SAFETY: blocks signals in this (only) thread; the child restores the mask before exec.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    let parent = std::process::id();
    // SAFETY: the process has one thread (`enter`'s contract), so the child may do anything.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        return Err(sys("fork")(e));
    }
    if pid == 0 {
        drop((ready_r, go_w));
        child(ready_w, go_r, parent, &old, exe, args);
    }
    drop((ready_w, go_r));
    let result = parent_side(pid, ready_r, go_w, uid_map, gid_map, &set);
    if result.is_err() {
        // SAFETY: restores the mask saved above; kiln goes on in this process.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
    result
}

/// The child: unshare, report, wait for the maps, then become kiln in the namespace.
fn child(
    ready: std::os::fd::OwnedFd,
    go: std::os::fd::OwnedFd,
    parent: u32,
    mask: &libc::sigset_t,
    exe: std::path::PathBuf,
    args: Vec<std::ffi::OsString>,
) -> ! {
    // SAFETY: the calls below act on this process only; every path ends in exec or _exit.
    unsafe {
        let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
        let _ = rustix::io::write(&ready, &[u8::from(ok)]);
        let mut byte = [0u8];
        if !ok || rustix::io::read(&go, &mut byte) != Ok(1) || byte[0] != 1 {
            libc::_exit(125);
        }
        // Root in the namespace now: a mount namespace of its own, no supplementary groups
        // (they are unmapped here), and death with the parent.
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            libc::_exit(125);
        }
        libc::setgroups(0, std::ptr::null());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() as u32 != parent {
            libc::_exit(125);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
    }
    let err = std::process::Command::new(exe).args(args).exec();
    eprintln!("kiln: run kiln in its user namespace: {err}");
    // SAFETY: ends the child.
    unsafe { libc::_exit(125) }
}

fn parent_side(
    pid: libc::pid_t,
    ready: std::os::fd::OwnedFd,
    go: std::os::fd::OwnedFd,
    uid_map: MapCommand<'_>,
    gid_map: MapCommand<'_>,
    set: &libc::sigset_t,
) -> Result<u8, RootlessError> {
    let mut byte = [0u8];
    let unshared = rustix::io::read(&ready, &mut byte) == Ok(1) && byte[0] == 1;
    let mapped = if unshared {
        write_map("newuidmap", pid, &uid_map).and_then(|()| write_map("newgidmap", pid, &gid_map))
    } else {
        Err(RootlessError::Sys {
            op: "unshare a user namespace",
            source: io::Error::from_raw_os_error(libc::EPERM),
        })
    };
    let _ = rustix::io::write(&go, &[u8::from(mapped.is_ok())]);
    drop(go);
    if let Err(e) = mapped {
        reap(pid);
        return Err(e);
    }
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for one of the blocked signals into a live siginfo.
        let sig = unsafe { libc::sigwaitinfo(set, &mut info) };
        if sig == libc::SIGCHLD || sig < 0 {
            let mut status = 0;
            // SAFETY: polls our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r != pid {
                continue;
            }
            if libc::WIFSIGNALED(status) {
                die_like(libc::WTERMSIG(status));
            }
            return Ok(u8::try_from(libc::WEXITSTATUS(status)).unwrap_or(255));
        }
        // Signals another process sent are passed on; the terminal's reach the child itself.
        if info.si_code == libc::SI_USER || info.si_code == libc::SI_QUEUE {
            // SAFETY: signals our own child.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// Ends this process by `sig`, as the child ended.
fn die_like(sig: libc::c_int) -> ! {
    // SAFETY: default disposition, unblocked, then raised; _exit if it does not end us.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let one = sigset(&[sig]);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}

fn write_map(
    tool: &'static str,
    pid: libc::pid_t,
    map: &MapCommand<'_>,
) -> Result<(), RootlessError> {
    let out = std::process::Command::new(map.0)
        .arg(pid.to_string())
        .args(&map.1)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| RootlessError::Helper {
            tool,
            why: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Err(RootlessError::Helper {
        tool,
        why: if why.is_empty() {
            out.status.to_string()
        } else {
            why
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_or_uid_cut_to_what_is_needed() {
        let text = "alice:100000:65536\n# note\nbob:x:1\n1001:300000:10\nbob:200000:65536\n\
                    1001:400000:100000\n";
        assert_eq!(
            subordinate_ranges(text, "alice", 1000),
            vec![IdRange {
                start: 100_000,
                count: 65_535
            }]
        );
        let carol = subordinate_ranges(text, "carol", 1001);
        let range = |start, count| IdRange { start, count };
        assert_eq!(carol, [range(300_000, 10), range(400_000, 65_525)]);
        assert!(subordinate_ranges(text, "dave", 7).is_empty());
        assert!(subordinate_ranges("eve:4294967290:100\n", "eve", 9).is_empty());
        assert_eq!(
            map_args(1001, &carol),
            ["0", "1001", "1", "1", "300000", "10", "11", "400000", "65525"]
        );
    }

    #[test]
    fn namespace_ids_count_the_ids_mapped_from_zero() {
        assert_eq!(mapped_from_zero("         0          0 4294967295\n"), None);
        assert_eq!(
            mapped_from_zero(
                "         0       1001          1\n         1     100000      65535\n"
            ),
            Some(65_536)
        );
        assert_eq!(mapped_from_zero("0 1001 1\n5 100000 10\n"), Some(1));
        assert_eq!(mapped_from_zero(""), Some(0));
        assert_eq!(
            identity_map(
                "         0       1001          1\n         1     100000      65535\n",
                65_536
            ),
            "0 0 1\n1 1 65535\n"
        );
        assert_eq!(
            identity_map("0 1001 1\n1 100000 99999\n", 1000),
            "0 0 1\n1 1 999\n"
        );
    }
}
