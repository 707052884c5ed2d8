//! Ids for a program when kiln's user namespace maps one id (a user without subordinate ids).
//!
//! The kernel then refuses every other id: `setresuid(_apt)`, `setgroups`, `chown 100` fail
//! with `EINVAL` or `EPERM`, so `apt-get`, `useradd` and `chown` cannot work. The program runs
//! as that one id (root inside) and its seccomp filter hands the calls about ids to kiln
//! (`SECCOMP_RET_USER_NOTIF`), which answers them as fakeroot does:
//! - `set*id`, `setgroups` and `get*id` work on a table of credentials kept per process
//!   (a new process starts with its parent's), with Linux's rules: only effective uid 0 may
//!   take any id, others may move between their real, effective and saved ones. So `apt-get`
//!   drops to `_apt` and finds that it cannot take root back, and `id -u` after `su bob` is
//!   bob's.
//! - `chown` and friends record the owner in `user.containers.override_stat` (the record the
//!   layer writer reads, as for a layer unpacked without root); `chmod` of a file with a record
//!   updates it too, and setuid and setgid bits are only recorded. The real call runs for
//!   owner 0; kiln sets the rest of a mode.
//!
//! - Files and folders that a process whose fake ids are not root's creates are made by
//!   kiln as the caller would make them, and recorded as that process's.
//! - `stat` and friends show a recorded owner and mode (so `useradd`, which gives the new
//!   `/etc/shadow` the owner it finds on the old one, keeps `root:shadow`).
//!
//! What the kernel checks stays the real identity's: a process that "is" `_apt` may still
//! read and `chmod` root's files. Symlinks and special files take no user xattrs: their owner
//! stays root.
//!
//! Paths are resolved as the program sees them: a thread of kiln's own (`CLONE_FS` unshared)
//! enters the program's root and working directory with `chroot`, and opens with
//! `RESOLVE_NO_MAGICLINKS`, so neither `..` nor `/proc/N/fd` leads out of the rootfs.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::layer::{OverrideStat, OverrideType, OVERRIDE_STAT_XATTR};

/// `fchmodat2` (Linux 6.6), not yet in every libc.
const SYS_FCHMODAT2: i64 = 452;

/// The calls handed to kiln.
pub(crate) const NOTIFIED: &[i64] = &[
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_setgroups,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    SYS_FCHMODAT2,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lchown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
];

/// The calls that create files, handed to kiln so that what a process with a fake id creates
/// is recorded as that id's: `(call, index of its flags argument)` where only calls with
/// `O_CREAT` count, `None` where every call does.
pub(crate) const CREATING: &[(i64, Option<u32>)] = &[
    (libc::SYS_openat, Some(2)),
    (libc::SYS_openat2, None),
    (libc::SYS_mkdirat, None),
    (libc::SYS_mknodat, None),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_open, Some(1)),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_creat, None),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_mkdir, None),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_mknod, None),
];

const REAL: usize = 0;
const EFFECTIVE: usize = 1;
const SAVED: usize = 2;
const FS: usize = 3;
/// "Leave it" in the `set*id` calls.
const KEEP: u32 = u32::MAX;
/// Linux's `NGROUPS_MAX`.
const MAX_GROUPS: usize = 65_536;

/// A process's credentials as it believes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Creds {
    /// Real, effective, saved and filesystem uid.
    pub uid: [u32; 4],
    /// The same for the gid.
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
}

impl Creds {
    pub(crate) fn new(uid: u32, gid: u32, groups: Vec<u32>) -> Self {
        Creds {
            uid: [uid; 4],
            gid: [gid; 4],
            groups,
        }
    }

    /// `CAP_SETUID`, `CAP_SETGID`, `CAP_CHOWN`, `CAP_FOWNER`: effective uid 0 has them.
    fn privileged(&self) -> bool {
        self.uid[EFFECTIVE] == 0
    }
}

/// `setuid`/`setgid` on one of the two id sets.
fn set_one(ids: &mut [u32; 4], privileged: bool, id: u32) -> Result<(), i32> {
    if privileged {
        *ids = [id; 4];
    } else if id == ids[REAL] || id == ids[SAVED] {
        ids[EFFECTIVE] = id;
        ids[FS] = id;
    } else {
        return Err(libc::EPERM);
    }
    Ok(())
}

/// `setreuid`/`setregid`.
fn set_re(ids: &mut [u32; 4], privileged: bool, r: u32, e: u32) -> Result<(), i32> {
    let old = *ids;
    if !privileged {
        let r_ok = r == KEEP || r == old[REAL] || r == old[EFFECTIVE];
        let e_ok = e == KEEP || [old[REAL], old[EFFECTIVE], old[SAVED]].contains(&e);
        if !(r_ok && e_ok) {
            return Err(libc::EPERM);
        }
    }
    if r != KEEP {
        ids[REAL] = r;
    }
    if e != KEEP {
        ids[EFFECTIVE] = e;
    }
    if r != KEEP || (e != KEEP && e != old[REAL]) {
        ids[SAVED] = ids[EFFECTIVE];
    }
    ids[FS] = ids[EFFECTIVE];
    Ok(())
}

/// `setresuid`/`setresgid`.
fn set_res(ids: &mut [u32; 4], privileged: bool, new: [u32; 3]) -> Result<(), i32> {
    let old = [ids[REAL], ids[EFFECTIVE], ids[SAVED]];
    if !privileged && new.iter().any(|&n| n != KEEP && !old.contains(&n)) {
        return Err(libc::EPERM);
    }
    for (slot, n) in new.into_iter().enumerate() {
        if n != KEEP {
            ids[slot] = n;
        }
    }
    ids[FS] = ids[EFFECTIVE];
    Ok(())
}

/// `setfsuid`/`setfsgid`: the old value, always.
fn set_fs(ids: &mut [u32; 4], privileged: bool, id: u32) -> u32 {
    let old = ids[FS];
    if id != KEEP && (privileged || ids.contains(&id)) {
        ids[FS] = id;
    }
    old
}

/// How kiln answers a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Value(i64),
    Errno(i32),
    /// Let the kernel run the call as it is.
    Continue,
    /// Answered already (with a descriptor, `SECCOMP_ADDFD_FLAG_SEND`).
    Sent,
}

/// The credentials of the processes seen so far, by thread-group id, with their start times
/// (a pid can be reused).
struct Table {
    procs: HashMap<i32, (u64, Creds)>,
    first: Creds,
}

/// Tgid and parent of thread `tid`, and the start time of its thread group.
fn identity(tid: i32) -> Option<(i32, i32, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |name: &str| -> Option<i32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let (tgid, ppid) = (field("Tgid:")?, field("PPid:")?);
    let stat = std::fs::read_to_string(format!("/proc/{tgid}/stat")).ok()?;
    // Field 22, counted after the command name (which may hold anything).
    let start = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    Some((tgid, ppid, start))
}

impl Table {
    /// The credentials of thread `tid`: known, or its parent's (a new process), or the
    /// program's first ones.
    fn creds(&mut self, tid: i32) -> &mut Creds {
        let Some((tgid, ppid, start)) = identity(tid) else {
            // Gone already: whatever is answered, nobody reads it.
            return &mut self.first;
        };
        let known = self.procs.get(&tgid).is_some_and(|(s, _)| *s == start);
        if !known {
            let inherited = self.inherited(ppid, 0);
            if self.procs.len() >= 4096 {
                self.procs
                    .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
            }
            self.procs.insert(tgid, (start, inherited));
        }
        match self.procs.get_mut(&tgid) {
            Some((_, c)) => c,
            None => &mut self.first,
        }
    }

    fn inherited(&self, pid: i32, depth: usize) -> Creds {
        if depth < 64 {
            if let Some((tgid, ppid, start)) = identity(pid) {
                match self.procs.get(&tgid) {
                    Some((s, c)) if *s == start => return c.clone(),
                    _ => return self.inherited(ppid, depth + 1),
                }
            }
        }
        self.first.clone()
    }
}

/// Serves the filter's notifications on `listener` until every filtered process is gone.
/// Runs on a thread of its own: it unshares its filesystem context to `chroot`.
pub(crate) fn serve(listener: OwnedFd, first: Creds) {
    // SAFETY: unshare(2) of this thread's filesystem attributes only.
    if unsafe { libc::unshare(libc::CLONE_FS) } < 0 {
        return;
    }
    let Ok(host_root) = open_path(c"/", libc::O_DIRECTORY) else {
        return;
    };
    // Files made for a caller get exactly the mode computed with its umask.
    // SAFETY: umask(2) of this thread's own filesystem context.
    unsafe { libc::umask(0) };
    let mut table = Table {
        procs: HashMap::new(),
        first,
    };
    let fd = listener.as_raw_fd();
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on a live pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        if pfd.revents & libc::POLLIN == 0 {
            // POLLHUP: no filtered process is left.
            return;
        }
        // SAFETY: the kernel wants a zeroed buffer of its struct's size.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: ioctl(2) into a live struct of the right type.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } < 0 {
            // ENOENT: the caller died meanwhile.
            continue;
        }
        let answer = answer(&mut table, &req, fd, &host_root);
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: 0,
            flags: 0,
        };
        match answer {
            Answer::Value(v) => resp.val = v,
            Answer::Errno(e) => resp.error = -e,
            Answer::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            Answer::Sent => continue,
        }
        // SAFETY: ioctl(2) from a live struct; ENOENT (the caller died) is nothing to do.
        unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    }
}

/// One call to answer: the calling thread, the call and its arguments, the notification's id,
/// and what kiln reaches it with.
#[derive(Clone, Copy)]
struct Call<'a> {
    tid: i32,
    nr: i64,
    a: [u64; 6],
    id: u64,
    listener: RawFd,
    root: &'a OwnedFd,
}

fn answer(table: &mut Table, req: &libc::seccomp_notif, listener: RawFd, root: &OwnedFd) -> Answer {
    let tid = req.pid as i32;
    let nr = i64::from(req.data.nr);
    let a = req.data.args;
    let call = Call {
        tid,
        nr,
        a,
        id: req.id,
        listener,
        root,
    };
    let id = |n: usize| a[n] as u32;
    let creds = table.creds(tid);
    let privileged = creds.privileged();
    let done = |r: Result<(), i32>| match r {
        Ok(()) => Answer::Value(0),
        Err(e) => Answer::Errno(e),
    };
    match nr {
        libc::SYS_getuid => Answer::Value(creds.uid[REAL].into()),
        libc::SYS_geteuid => Answer::Value(creds.uid[EFFECTIVE].into()),
        libc::SYS_getgid => Answer::Value(creds.gid[REAL].into()),
        libc::SYS_getegid => Answer::Value(creds.gid[EFFECTIVE].into()),
        libc::SYS_getresuid | libc::SYS_getresgid => {
            let ids = if nr == libc::SYS_getresuid {
                creds.uid
            } else {
                creds.gid
            };
            for (slot, addr) in a[..3].iter().enumerate() {
                if let Err(e) = write_mem(tid, *addr, &ids[slot].to_ne_bytes()) {
                    return Answer::Errno(e);
                }
            }
            checked(listener, req.id, Answer::Value(0))
        }
        libc::SYS_getgroups => {
            let groups = creds.groups.clone();
            let size = a[0] as i32;
            if size == 0 {
                return Answer::Value(groups.len() as i64);
            }
            if size < 0 || (size as usize) < groups.len() {
                return Answer::Errno(libc::EINVAL);
            }
            let bytes: Vec<u8> = groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
            match write_mem(tid, a[1], &bytes) {
                Ok(()) => checked(listener, req.id, Answer::Value(groups.len() as i64)),
                Err(e) => Answer::Errno(e),
            }
        }
        libc::SYS_setuid => done(set_one(&mut creds.uid, privileged, id(0))),
        libc::SYS_setgid => done(set_one(&mut creds.gid, privileged, id(0))),
        libc::SYS_setreuid => done(set_re(&mut creds.uid, privileged, id(0), id(1))),
        libc::SYS_setregid => done(set_re(&mut creds.gid, privileged, id(0), id(1))),
        libc::SYS_setresuid => done(set_res(&mut creds.uid, privileged, [id(0), id(1), id(2)])),
        libc::SYS_setresgid => done(set_res(&mut creds.gid, privileged, [id(0), id(1), id(2)])),
        libc::SYS_setfsuid => Answer::Value(set_fs(&mut creds.uid, privileged, id(0)).into()),
        libc::SYS_setfsgid => Answer::Value(set_fs(&mut creds.gid, privileged, id(0)).into()),
        libc::SYS_setgroups => {
            let size = a[0] as i32;
            if size < 0 || size as usize > MAX_GROUPS {
                return Answer::Errno(libc::EINVAL);
            }
            if !privileged {
                return Answer::Errno(libc::EPERM);
            }
            let mut bytes = vec![0u8; size as usize * 4];
            if let Err(e) = read_mem(tid, a[1], &mut bytes) {
                return Answer::Errno(e);
            }
            let groups = bytes
                .chunks_exact(4)
                .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if valid(listener, req.id) {
                creds.groups = groups;
            }
            Answer::Value(0)
        }
        libc::SYS_fstat | libc::SYS_newfstatat | libc::SYS_statx => stat(call),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_stat | libc::SYS_lstat => stat(call),
        _ if CREATING.iter().any(|(n, _)| *n == nr) => {
            let (uid, gid) = (creds.uid[FS], creds.gid[FS]);
            if (uid, gid) == (0, 0) {
                // Root's files are root's for real.
                return Answer::Continue;
            }
            create(call, (uid, gid))
        }
        _ => {
            let creds = creds.clone();
            files(call, &creds)
        }
    }
}

/// The `stat` calls: a file with a record shows its recorded owner and mode; the others are
/// left to the kernel (so is a path kiln cannot resolve as the caller, `/proc/self/...`).
fn stat(call: Call<'_>) -> Answer {
    let at = |dirfd: u64, path: u64, flags: u64| -> Result<Target, i32> {
        let path = read_path(call.tid, path)?;
        let flags = flags as i32;
        Ok(if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
            Target::Fd(dirfd as i32)
        } else {
            Target::At {
                dirfd: dirfd as i32,
                path,
                follow: flags & libc::AT_SYMLINK_NOFOLLOW == 0,
            }
        })
    };
    let (target, buf) = match call.nr {
        libc::SYS_fstat => (Ok(Target::Fd(call.a[0] as i32)), call.a[1]),
        libc::SYS_newfstatat => (at(call.a[0], call.a[1], call.a[3]), call.a[2]),
        libc::SYS_statx => (at(call.a[0], call.a[1], call.a[2]), call.a[4]),
        #[cfg(target_arch = "x86_64")]
        _ => {
            let path = read_path(call.tid, call.a[0]);
            let target = path.map(|path| Target::At {
                dirfd: libc::AT_FDCWD,
                path,
                follow: call.nr == libc::SYS_stat,
            });
            (target, call.a[1])
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => return Answer::Continue,
    };
    let Ok(target) = target else {
        return Answer::Continue;
    };
    if !valid(call.listener, call.id) {
        return Answer::Errno(libc::EINTR);
    }
    let Ok(file) = open_target(call.tid, &target, call.root) else {
        return Answer::Continue;
    };
    let magic = format!("/proc/thread-self/fd/{}", file.as_raw_fd());
    let Some(record) = rustix::fs::fstat(&file)
        .ok()
        .filter(|st| matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR))
        .and_then(|_| get_record(&magic))
    else {
        return Answer::Continue;
    };
    let bytes = if call.nr == libc::SYS_statx {
        // SAFETY: statx(2) into a zeroed struct of the kernel's layout.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        let sync = call.a[2] as i32 & libc::AT_STATX_SYNC_TYPE;
        let r = unsafe {
            libc::statx(
                file.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH | sync,
                call.a[3] as u32,
                &mut stx,
            )
        };
        if r < 0 {
            return Answer::Continue;
        }
        stx.stx_uid = record.uid;
        stx.stx_gid = record.gid;
        stx.stx_mode = (u32::from(stx.stx_mode) & libc::S_IFMT | record.mode) as u16;
        // SAFETY: the bytes of a plain C struct.
        unsafe { as_bytes(&stx) }.to_vec()
    } else {
        // SAFETY: fstat(2) into a zeroed struct of the kernel's layout.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } < 0 {
            return Answer::Continue;
        }
        st.st_uid = record.uid;
        st.st_gid = record.gid;
        st.st_mode = st.st_mode & libc::S_IFMT | record.mode;
        // SAFETY: the bytes of a plain C struct.
        unsafe { as_bytes(&st) }.to_vec()
    };
    match write_mem(call.tid, buf, &bytes) {
        Ok(()) => checked(call.listener, call.id, Answer::Value(0)),
        Err(e) => Answer::Errno(e),
    }
}

/// The bytes of `value`.
///
/// # Safety
/// `T` must be a plain C struct (no padding that matters, no pointers to follow).
unsafe fn as_bytes<T>(value: &T) -> &[u8] {
    // SAFETY: as the caller promises; the slice lives as long as the borrow.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
}

/// What a creating call makes.
enum Make {
    Open { flags: i32, mode: u32 },
    Dir { mode: u32 },
    File { mode: u32 },
}

/// A creating call of a process whose fake filesystem ids are not root's: kiln makes the file
/// as the caller would (its root, directory and umask), records `owner` on it when it is new,
/// and answers with the result (an open's descriptor goes into the caller). What kiln cannot
/// resolve as the caller (a path through `/proc/self`), or cannot record (a FIFO), the kernel
/// makes, root's.
fn create(call: Call<'_>, owner: (u32, u32)) -> Answer {
    #[cfg(target_arch = "x86_64")]
    let legacy = |nr| match nr {
        libc::SYS_open => Some((
            libc::AT_FDCWD,
            call.a[0],
            Make::Open {
                flags: call.a[1] as i32,
                mode: call.a[2] as u32,
            },
        )),
        libc::SYS_creat => Some((
            libc::AT_FDCWD,
            call.a[0],
            Make::Open {
                flags: libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                mode: call.a[1] as u32,
            },
        )),
        libc::SYS_mkdir => Some((
            libc::AT_FDCWD,
            call.a[0],
            Make::Dir {
                mode: call.a[1] as u32,
            },
        )),
        libc::SYS_mknod => Some((
            libc::AT_FDCWD,
            call.a[0],
            Make::File {
                mode: call.a[1] as u32,
            },
        )),
        _ => None,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let legacy = |_| None;
    let (dirfd, path_at, make) = match call.nr {
        libc::SYS_openat => (
            call.a[0] as i32,
            call.a[1],
            Make::Open {
                flags: call.a[2] as i32,
                mode: call.a[3] as u32,
            },
        ),
        libc::SYS_openat2 => {
            let mut how = [0u8; 24];
            if call.a[3] < 24 || read_mem(call.tid, call.a[2], &mut how).is_err() {
                return Answer::Continue;
            }
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&how[i * 8..i * 8 + 8]);
                u64::from_ne_bytes(w)
            };
            // Resolve restrictions of the caller's own: the kernel's business.
            if word(2) != 0 || call.a[3] != 24 {
                return Answer::Continue;
            }
            (
                call.a[0] as i32,
                call.a[1],
                Make::Open {
                    flags: word(0) as i32,
                    mode: word(1) as u32,
                },
            )
        }
        libc::SYS_mkdirat => (
            call.a[0] as i32,
            call.a[1],
            Make::Dir {
                mode: call.a[2] as u32,
            },
        ),
        libc::SYS_mknodat => (
            call.a[0] as i32,
            call.a[1],
            Make::File {
                mode: call.a[2] as u32,
            },
        ),
        other => match legacy(other) {
            Some(call) => call,
            None => return Answer::Continue,
        },
    };
    match make {
        Make::Open { flags, .. }
            if flags & libc::O_CREAT == 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE =>
        {
            return Answer::Continue;
        }
        // A FIFO or device takes no record; a regular file's type bits may be 0.
        Make::File { mode } if !matches!(mode & libc::S_IFMT, 0 | libc::S_IFREG) => {
            return Answer::Continue;
        }
        _ => {}
    }
    let Ok(path) =
        read_path(call.tid, path_at).and_then(|p| CString::new(p).map_err(|_| libc::EINVAL))
    else {
        return Answer::Continue;
    };
    if !valid(call.listener, call.id) {
        return Answer::Errno(libc::EINTR);
    }
    let umask = umask_of(call.tid);
    let made = in_caller(call.tid, dirfd, call.root, |base| {
        make_at(base, &path, &make, umask)
    });
    let fd = match made {
        Ok(made) => made,
        // An existing file: the kernel opens it (nothing is created, nothing to record).
        Err(libc::EEXIST) if matches!(make, Make::Open { flags, .. } if flags & libc::O_EXCL == 0) => {
            return Answer::Continue
        }
        // ENOENT, EEXIST and the like are the call's answer; a path kiln does not resolve
        // (ELOOP: a magic link) the kernel's.
        Err(libc::ELOOP | libc::EXDEV) => return Answer::Continue,
        Err(e) => return Answer::Errno(e),
    };
    let magic = format!("/proc/thread-self/fd/{}", fd.as_raw_fd());
    if let Ok(st) = rustix::fs::fstat(&fd) {
        let kind = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            OverrideType::Dir
        } else {
            OverrideType::File
        };
        let record = OverrideStat {
            uid: owner.0,
            gid: owner.1,
            mode: make.mode() & 0o7777 & !umask,
            kind: Some(kind),
        };
        // A file kiln could not mark is root's, as the kernel would have made it.
        let _ = set_record(&magic, Some(record));
    }
    let Make::Open { flags, .. } = make else {
        return Answer::Value(0);
    };
    let addfd = libc::seccomp_notif_addfd {
        id: call.id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: fd.as_raw_fd() as u32,
        newfd: 0,
        newfd_flags: (flags & libc::O_CLOEXEC) as u32,
    };
    // SAFETY: ioctl(2) from a live struct; on success it has answered the call.
    if unsafe { libc::ioctl(call.listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) } < 0 {
        return Answer::Errno(errno());
    }
    Answer::Sent
}

impl Make {
    fn mode(&self) -> u32 {
        match *self {
            Make::Open { mode, .. } | Make::Dir { mode } | Make::File { mode } => mode,
        }
    }
}

/// Makes what `make` asks at `path` below `base` (setuid and setgid bits only in the record):
/// the new file's descriptor (`EEXIST` when there is one already).
fn make_at(base: &OwnedFd, path: &CStr, make: &Make, umask: u32) -> Result<OwnedFd, i32> {
    use rustix::fs::OFlags;
    let nofollow = OFlags::PATH | OFlags::NOFOLLOW;
    match *make {
        Make::Open { flags, mode } => {
            let flags = OFlags::from_bits_retain((flags & !libc::O_CLOEXEC) as u32);
            let mode = mode & 0o1777 & !umask;
            // Only a new file is kiln's to make (opening one never blocks, as a FIFO's open
            // may, which would stall every call kiln answers).
            resolve(base, path, flags | OFlags::EXCL, mode)
        }
        Make::Dir { mode } => {
            rustix::fs::mkdirat(
                base,
                path,
                rustix::fs::Mode::from_raw_mode(mode & 0o1777 & !umask),
            )
            .map_err(|e| e.raw_os_error())?;
            resolve(base, path, nofollow | OFlags::DIRECTORY, 0)
        }
        Make::File { mode } => {
            let kind = rustix::fs::FileType::RegularFile;
            rustix::fs::mknodat(
                base,
                path,
                kind,
                rustix::fs::Mode::from_raw_mode(mode & 0o1777 & !umask),
                0,
            )
            .map_err(|e| e.raw_os_error())?;
            resolve(base, path, nofollow, 0)
        }
    }
}

/// The caller's umask (022 when `/proc` does not say).
fn umask_of(tid: i32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// The calls on files: `chown` and `chmod` in their forms.
fn files(call: Call<'_>, creds: &Creds) -> Answer {
    let (target, change) = match call.nr {
        libc::SYS_fchown => (
            Target::Fd(call.a[0] as i32),
            Change::Owner(call.a[1] as u32, call.a[2] as u32),
        ),
        libc::SYS_fchmod => (Target::Fd(call.a[0] as i32), Change::Mode(call.a[1] as u32)),
        libc::SYS_fchownat | libc::SYS_fchmodat | SYS_FCHMODAT2 => {
            let flags = if call.nr == libc::SYS_fchownat {
                call.a[4]
            } else if call.nr == SYS_FCHMODAT2 {
                call.a[3]
            } else {
                0
            } as i32;
            let path = match read_path(call.tid, call.a[1]) {
                Ok(p) => p,
                Err(e) => return Answer::Errno(e),
            };
            let change = if call.nr == libc::SYS_fchownat {
                Change::Owner(call.a[2] as u32, call.a[3] as u32)
            } else {
                Change::Mode(call.a[2] as u32)
            };
            let target = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
                Target::Fd(call.a[0] as i32)
            } else {
                Target::At {
                    dirfd: call.a[0] as i32,
                    path,
                    follow: flags & libc::AT_SYMLINK_NOFOLLOW == 0,
                }
            };
            (target, change)
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chown | libc::SYS_lchown | libc::SYS_chmod => {
            let path = match read_path(call.tid, call.a[0]) {
                Ok(p) => p,
                Err(e) => return Answer::Errno(e),
            };
            let change = if call.nr == libc::SYS_chmod {
                Change::Mode(call.a[1] as u32)
            } else {
                Change::Owner(call.a[1] as u32, call.a[2] as u32)
            };
            let target = Target::At {
                dirfd: libc::AT_FDCWD,
                path,
                follow: call.nr != libc::SYS_lchown,
            };
            (target, change)
        }
        _ => return Answer::Errno(libc::ENOSYS),
    };
    // What was read from the caller's memory is what it asked only while it still waits.
    if !valid(call.listener, call.id) {
        return Answer::Errno(libc::EINTR);
    }
    let file = match open_target(call.tid, &target, call.root) {
        Ok(f) => f,
        Err(e) => return Answer::Errno(e),
    };
    apply(creds, &file, change)
}

enum Target {
    Fd(i32),
    At {
        dirfd: i32,
        path: Vec<u8>,
        follow: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Owner(u32, u32),
    Mode(u32),
}

/// Applies `change` to the file open (`O_PATH`) at `file`.
fn apply(creds: &Creds, file: &OwnedFd, change: Change) -> Answer {
    let st = match rustix::fs::fstat(file) {
        Ok(st) => st,
        Err(e) => return Answer::Errno(e.raw_os_error()),
    };
    let kind = st.st_mode & libc::S_IFMT;
    let recordable = kind == libc::S_IFREG || kind == libc::S_IFDIR;
    let record_kind = Some(if kind == libc::S_IFDIR {
        OverrideType::Dir
    } else {
        OverrideType::File
    });
    let magic = format!("/proc/thread-self/fd/{}", file.as_raw_fd());
    let record = if recordable { get_record(&magic) } else { None };
    // The owner as the program knows it: the record's, else the real one (kiln's one id is
    // root here).
    let (uid, gid) = record.map_or((st.st_uid, st.st_gid), |r| (r.uid, r.gid));
    let mode = record.map_or(st.st_mode & 0o7777, |r| r.mode);
    match change {
        Change::Mode(new) => {
            let new = new & 0o7777;
            // Setuid and setgid bits are recorded, never set for real: in kiln's store the
            // file would run as kiln's user.
            if recordable && (record.is_some() || new & 0o6000 != 0) {
                let r = OverrideStat {
                    uid,
                    gid,
                    mode: new,
                    kind: record_kind,
                };
                if let Err(e) = set_record(&magic, Some(r)) {
                    return Answer::Errno(e);
                }
            }
            let Ok(path) = CString::new(magic) else {
                return Answer::Errno(libc::EINVAL);
            };
            // SAFETY: chmod(2) of a C string (the descriptor's magic link).
            if unsafe { libc::chmod(path.as_ptr(), new & !0o6000) } < 0 {
                return Answer::Errno(errno());
            }
            Answer::Value(0)
        }
        Change::Owner(new_uid, new_gid) => {
            let to_uid = if new_uid == KEEP { uid } else { new_uid };
            let to_gid = if new_gid == KEEP { gid } else { new_gid };
            // Only the ids are checked as Linux would: whose a file is, is the real identity's
            // business (what this process creates is root's for real).
            if !creds.privileged() {
                let own_group = to_gid == creds.gid[EFFECTIVE] || creds.groups.contains(&to_gid);
                if to_uid != uid || (to_gid != gid && !own_group) {
                    return Answer::Errno(libc::EPERM);
                }
            }
            if (to_uid, to_gid) == (0, 0) || !recordable {
                // Root's own: the real call does it (and clears setuid bits as Linux does).
                if record.is_some() {
                    if let Err(e) = set_record(&magic, None) {
                        return Answer::Errno(e);
                    }
                }
                return if (new_uid == KEEP || new_uid == 0) && (new_gid == KEEP || new_gid == 0) {
                    Answer::Continue
                } else {
                    // A symlink or special file: it keeps root, as what kiln cannot record.
                    Answer::Value(0)
                };
            }
            let mut mode = mode;
            if kind == libc::S_IFREG && (new_uid != KEEP || new_gid != KEEP) {
                mode &= !0o4000;
                if mode & 0o010 != 0 {
                    mode &= !0o2000;
                }
            }
            let r = OverrideStat {
                uid: to_uid,
                gid: to_gid,
                mode,
                kind: record_kind,
            };
            match set_record(&magic, Some(r)) {
                Ok(()) => Answer::Value(0),
                Err(e) => Answer::Errno(e),
            }
        }
    }
}

fn get_record(path: &str) -> Option<OverrideStat> {
    let path = CString::new(path).ok()?;
    let name = CString::new(OVERRIDE_STAT_XATTR).ok()?;
    let mut buf = [0u8; 256];
    // SAFETY: getxattr(2) into a live buffer of the given size.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    OverrideStat::parse(&buf[..n])
}

fn set_record(path: &str, record: Option<OverrideStat>) -> Result<(), i32> {
    let path = CString::new(path).map_err(|_| libc::EINVAL)?;
    let name = CString::new(OVERRIDE_STAT_XATTR).map_err(|_| libc::EINVAL)?;
    // SAFETY: setxattr(2)/removexattr(2) with live C strings and buffer.
    let r = unsafe {
        match record {
            Some(r) => {
                let value = r.to_string();
                libc::setxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            }
            None => libc::removexattr(path.as_ptr(), name.as_ptr()),
        }
    };
    if r < 0 {
        let e = errno();
        if record.is_none() && e == libc::ENODATA {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn open_path(path: &CStr, flags: i32) -> Result<OwnedFd, i32> {
    // SAFETY: open(2) of a C string; the descriptor is owned once.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC | flags) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens (`O_PATH`) the file a call names, resolved as the caller would.
fn open_target(tid: i32, target: &Target, host_root: &OwnedFd) -> Result<OwnedFd, i32> {
    let proc_path =
        |rest: String| CString::new(format!("/proc/{tid}/{rest}")).map_err(|_| libc::EINVAL);
    let (dirfd, path, follow) = match target {
        Target::Fd(fd) => {
            let p = if *fd == libc::AT_FDCWD {
                proc_path("cwd".into())?
            } else {
                proc_path(format!("fd/{fd}"))?
            };
            return open_path(&p, 0);
        }
        Target::At {
            dirfd,
            path,
            follow,
        } => (*dirfd, path, *follow),
    };
    if path.is_empty() {
        return Err(libc::ENOENT);
    }
    let path = CString::new(path.clone()).map_err(|_| libc::EINVAL)?;
    let flags = rustix::fs::OFlags::PATH
        | rustix::fs::OFlags::CLOEXEC
        | if follow {
            rustix::fs::OFlags::empty()
        } else {
            rustix::fs::OFlags::NOFOLLOW
        };
    in_caller(tid, dirfd, host_root, |base| resolve(base, &path, flags, 0))
}

/// `openat2` below `base` as the caller would open, but never through a magic link.
fn resolve(
    base: &OwnedFd,
    path: &CStr,
    flags: rustix::fs::OFlags,
    mode: u32,
) -> Result<OwnedFd, i32> {
    rustix::fs::openat2(
        base,
        path,
        flags | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(mode),
        rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| e.raw_os_error())
}

/// Runs `f` with this thread in the caller's root and `f`'s argument the caller's directory
/// `dirfd` (`AT_FDCWD`: its working directory), so that paths resolve as they do for the
/// caller; then comes back.
fn in_caller<R>(
    tid: i32,
    dirfd: i32,
    host_root: &OwnedFd,
    f: impl FnOnce(&OwnedFd) -> Result<R, i32>,
) -> Result<R, i32> {
    let proc_path =
        |rest: String| CString::new(format!("/proc/{tid}/{rest}")).map_err(|_| libc::EINVAL);
    let base = if dirfd == libc::AT_FDCWD {
        proc_path("cwd".into())?
    } else {
        proc_path(format!("fd/{dirfd}"))?
    };
    let base = open_path(&base, 0)?;
    let root = open_path(&proc_path("root".into())?, libc::O_DIRECTORY)?;
    // SAFETY: this thread's own root and working directory (CLONE_FS unshared in `serve`);
    // both are restored before returning.
    unsafe {
        if libc::fchdir(root.as_raw_fd()) < 0 || libc::chroot(c".".as_ptr()) < 0 {
            return Err(errno());
        }
        let result = f(&base);
        let restored = libc::fchdir(host_root.as_raw_fd()) == 0
            && libc::chroot(c".".as_ptr()) == 0
            && libc::chdir(c"/".as_ptr()) == 0;
        if !restored {
            // This thread cannot resolve paths safely any more.
            libc::_exit(125);
        }
        result
    }
}

/// Reads the caller's memory at `addr`.
fn read_mem(tid: i32, addr: u64, buf: &mut [u8]) -> Result<(), i32> {
    vm_io(tid, addr, buf.as_mut_ptr(), buf.len(), false)
}

/// Writes `bytes` into the caller's memory at `addr`.
fn write_mem(tid: i32, addr: u64, bytes: &[u8]) -> Result<(), i32> {
    vm_io(tid, addr, bytes.as_ptr().cast_mut(), bytes.len(), true)
}

/// `process_vm_readv` (into `local`) or `process_vm_writev` (from it), all `len` bytes or
/// `EFAULT`. `local` must be valid for `len` bytes, and writable when reading.
fn vm_io(tid: i32, addr: u64, local: *mut u8, len: usize, write: bool) -> Result<(), i32> {
    let local = libc::iovec {
        iov_base: local.cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the local side is a live buffer of `len` bytes (the callers' slices); the remote
    // side is checked by the kernel.
    let n = unsafe {
        if write {
            libc::process_vm_writev(tid, &local, 1, &remote, 1, 0)
        } else {
            libc::process_vm_readv(tid, &local, 1, &remote, 1, 0)
        }
    };
    if n < 0 {
        return Err(errno());
    }
    if n as usize != len {
        return Err(libc::EFAULT);
    }
    Ok(())
}

/// A NUL-terminated path from the caller's memory (at most `PATH_MAX`), read page by page so
/// that a string near the end of a mapping is read whole.
fn read_path(tid: i32, addr: u64) -> Result<Vec<u8>, i32> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let len = (PAGE - at % PAGE) as usize;
        let mut chunk = vec![0u8; len];
        read_mem(tid, at, &mut chunk)?;
        if let Some(end) = chunk.iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        at += len as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// Whether the caller still waits in the call (it may have died, and its pid been reused).
fn valid(listener: RawFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: ioctl(2) with a live u64.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
}

/// `answer` if the caller still waits: what was written to its memory went to it.
fn checked(listener: RawFd, id: u64, answer: Answer) -> Answer {
    if valid(listener, id) {
        answer
    } else {
        Answer::Errno(libc::EINTR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_drops_to_its_user_and_cannot_come_back() {
        let mut c = Creds::new(0, 0, vec![0]);
        // setgroups, setresgid, setresuid, as apt's DropPrivileges does.
        assert!(c.privileged());
        assert_eq!(set_res(&mut c.gid, true, [65534; 3]), Ok(()));
        assert_eq!(set_res(&mut c.uid, true, [42; 3]), Ok(()));
        assert_eq!(c.uid, [42; 4]);
        assert_eq!(c.gid, [65534; 4]);
        assert!(!c.privileged());
        assert_eq!(set_one(&mut c.uid, false, 0), Err(libc::EPERM));
        assert_eq!(set_re(&mut c.uid, false, KEEP, 0), Err(libc::EPERM));
        assert_eq!(
            set_res(&mut c.gid, false, [KEEP, 0, KEEP]),
            Err(libc::EPERM)
        );
    }

    #[test]
    fn seteuid_keeps_the_saved_id_to_come_back_with() {
        let mut c = Creds::new(0, 0, vec![]);
        // seteuid(42) is setresuid(-1, 42, -1).
        assert_eq!(set_res(&mut c.uid, true, [KEEP, 42, KEEP]), Ok(()));
        assert_eq!(c.uid, [0, 42, 0, 42]);
        assert!(!c.privileged());
        assert_eq!(set_res(&mut c.uid, false, [KEEP, 0, KEEP]), Ok(()));
        assert_eq!(c.uid, [0; 4]);
        // setreuid(1000, 1000) as root: the saved id follows.
        assert_eq!(set_re(&mut c.uid, true, 1000, 1000), Ok(()));
        assert_eq!(c.uid, [1000; 4]);
    }

    #[test]
    fn setfs_answers_the_old_value() {
        let mut ids = [5, 6, 7, 6];
        assert_eq!(set_fs(&mut ids, false, 9), 6);
        assert_eq!(ids[FS], 6);
        assert_eq!(set_fs(&mut ids, false, 7), 6);
        assert_eq!(ids[FS], 7);
        assert_eq!(set_fs(&mut ids, true, KEEP), 7);
    }
}
