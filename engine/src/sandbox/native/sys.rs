//! The kernel side: the real [`Syscall`], the sandbox's init process and the program's
//! exec stage, and the parent's clone and idmapped-mount helpers.
//!
//! Everything from [`init_main`] on runs in a child cloned from a possibly multithreaded
//! process: it only makes raw system calls on data prepared before the clone (no allocation,
//! no locks, no panics) until `execve` or `_exit`. Id changes go through `syscall(2)`, never
//! glibc's `setresuid`/`setgroups`: those signal every thread the parent had and would wait
//! forever for threads that do not exist in the child.

use std::convert::Infallible;
use std::ffi::{c_char, c_int, CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::plan::{execute, Errno, Step, Syscall};
use super::seccomp::{SockFilter, SockFprog};

/// Setup stages outside the plan, reported by the child as `STAGE_BASE + stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    Identity,
    CgroupNamespace,
    Rlimit,
    Fork,
    Session,
    Stdio,
    Capabilities,
    Groups,
    SetGid,
    SetUid,
    NoNewPrivs,
    Chdir,
    Seccomp,
    Exec,
}

/// Child reports below this are plan step indexes.
pub(crate) const STAGE_BASE: u32 = 1 << 20;

impl Stage {
    const ALL: [Stage; 14] = [
        Stage::Identity,
        Stage::CgroupNamespace,
        Stage::Rlimit,
        Stage::Fork,
        Stage::Session,
        Stage::Stdio,
        Stage::Capabilities,
        Stage::Groups,
        Stage::SetGid,
        Stage::SetUid,
        Stage::NoNewPrivs,
        Stage::Chdir,
        Stage::Seccomp,
        Stage::Exec,
    ];

    /// The stage a child report names, if it names one.
    pub(crate) fn from_code(code: u32) -> Option<Stage> {
        let i = code.checked_sub(STAGE_BASE)?;
        Stage::ALL.get(usize::try_from(i).ok()?).copied()
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Stage::Identity => "become root of the user namespace",
            Stage::CgroupNamespace => "enter a new cgroup namespace",
            Stage::Rlimit => "set resource limits",
            Stage::Fork => "fork the program",
            Stage::Session => "start a session",
            Stage::Stdio => "set up stdin/stdout/stderr",
            Stage::Capabilities => "drop capabilities",
            Stage::Groups => "set supplementary groups",
            Stage::SetGid => "set group id",
            Stage::SetUid => "set user id",
            Stage::NoNewPrivs => "set no_new_privs",
            Stage::Chdir => "change to the working directory",
            Stage::Seccomp => "install the seccomp filter",
            Stage::Exec => "execute the program",
        }
    }
}

/// Most descriptors a program can be given.
pub(crate) const MAX_FDS: usize = 64;

/// What the program's process does between fork and `execve`, prepared by the parent.
pub(crate) struct ExecConfig {
    /// The program's descriptors: (number in the program, inherited descriptor), stdin,
    /// stdout and stderr first.
    pub fds: Vec<(c_int, RawFd)>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    /// Capabilities kept in the bounding set (and, for uid 0, permitted and effective).
    pub caps: u64,
    /// The highest capability number of the running kernel.
    pub last_cap: u32,
    pub cwd: CString,
    /// Paths to try in order (the `PATH` search, done before the clone).
    pub candidates: Vec<CString>,
    /// Own the strings `argv_ptrs` and `env_ptrs` point into.
    _argv: Vec<CString>,
    _env: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    env_ptrs: Vec<*const c_char>,
    pub filter: Vec<SockFilter>,
    /// stdin is a terminal that becomes the program's controlling one (`run -t`).
    pub controlling_tty: bool,
    /// With `controlling_tty`: a socket (this descriptor number, after the `fds` moves) over
    /// which the program's process sends the primary side of a terminal it opens in the
    /// container's own devpts; its secondary side becomes the program's stdio (as runc's
    /// console socket does), so `tty` names `/dev/pts/0` inside.
    pub console: Option<c_int>,
    /// Fake ids (kiln's namespace maps one id): the program keeps that id, its filter hands
    /// the calls about ids to kiln, and the filter's listener goes over this socket (a
    /// descriptor number after the `fds` moves, closed before exec).
    pub fake_ids: Option<c_int>,
}

impl ExecConfig {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        fds: Vec<(c_int, RawFd)>,
        uid: u32,
        gid: u32,
        groups: Vec<libc::gid_t>,
        caps: u64,
        last_cap: u32,
        cwd: CString,
        candidates: Vec<CString>,
        argv: Vec<CString>,
        env: Vec<CString>,
        filter: Vec<SockFilter>,
    ) -> Self {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        // The CStrings' heap buffers do not move when the vectors holding them do.
        let argv_ptrs = ptrs(&argv);
        let env_ptrs = ptrs(&env);
        ExecConfig {
            fds,
            uid,
            gid,
            groups,
            caps,
            last_cap,
            cwd,
            candidates,
            _argv: argv,
            _env: env,
            argv_ptrs,
            env_ptrs,
            filter,
            controlling_tty: false,
            console: None,
            fake_ids: None,
        }
    }
}

/// Everything the sandbox's init process needs, prepared by the parent.
pub(crate) struct InitConfig {
    /// Descriptors to keep open (sorted); all others are closed first thing.
    pub keep: Vec<RawFd>,
    /// Read end of the pipe the parent writes one byte to once the id maps are written.
    pub sync: RawFd,
    /// Write end of the pipe for failure reports (`[code: u32, errno: i32]`).
    pub report: RawFd,
    pub steps: Vec<Step>,
    pub slots: Vec<RawFd>,
    /// The detached layer mounts: closed once the plan has attached them, so the program
    /// never inherits a descriptor of a folder outside its rootfs.
    pub mount_fds: Vec<RawFd>,
    /// kiln's argument and environment areas (`[start, end)` addresses, from
    /// `/proc/self/stat`): init, a copy of kiln's memory, zeroes them so that the program
    /// cannot read kiln's command line in `/proc/1/cmdline`.
    pub scrub: Vec<(usize, usize)>,
    /// `(resource, value)` pairs set before the program is forked.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub exec: ExecConfig,
}

fn errno() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(r: c_int) -> Result<(), Errno> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn check_fd(r: libc::c_long) -> Result<RawFd, Errno> {
    if r < 0 {
        Err(errno())
    } else {
        RawFd::try_from(r).map_err(|_| libc::EBADF)
    }
}

/// The real kernel.
pub(crate) struct Linux;

const EMPTY: &CStr = c"";

impl Syscall for Linux {
    fn make_private(&mut self) -> Result<(), Errno> {
        // SAFETY: plain mount(2) with valid C strings or nulls.
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })
    }

    fn mount(
        &mut self,
        source: &CStr,
        target: &CStr,
        fstype: &CStr,
        flags: u64,
        data: &CStr,
    ) -> Result<(), Errno> {
        // SAFETY: valid C strings.
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        })
    }

    fn bind(&mut self, source: &CStr, target: &CStr, readonly: bool) -> Result<(), Errno> {
        // SAFETY: valid C strings or nulls.
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        })?;
        if !readonly {
            return Ok(());
        }
        let flags = libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC;
        // SAFETY: as above.
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                target.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        })
    }

    fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: valid C string.
        check(unsafe { libc::chdir(path.as_ptr()) })
    }

    fn mkdir(&mut self, path: &CStr, mode: u32) -> Result<(), Errno> {
        // SAFETY: valid C string.
        check(unsafe { libc::mkdir(path.as_ptr(), mode) })
    }

    fn create_file(&mut self, path: &CStr, mode: u32, contents: &[u8]) -> Result<(), Errno> {
        let flags =
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(path.as_ptr(), flags, mode) };
        check(fd)?;
        let mut rest = contents;
        let mut result = Ok(());
        while !rest.is_empty() {
            // SAFETY: writes from a live slice.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                result = Err(e);
                break;
            }
            rest = &rest[usize::try_from(n).unwrap_or(rest.len()).min(rest.len())..];
        }
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(fd) };
        result
    }

    fn set_attrs(
        &mut self,
        path: &CStr,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: (i64, i64),
    ) -> Result<(), Errno> {
        // SAFETY: valid C string and a live timespec array.
        unsafe {
            check(libc::fchownat(
                libc::AT_FDCWD,
                path.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
            check(libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), mode, 0))?;
            let t = libc::timespec {
                tv_sec: mtime.0,
                tv_nsec: mtime.1,
            };
            check(libc::utimensat(
                libc::AT_FDCWD,
                path.as_ptr(),
                [t, t].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            ))
        }
    }

    fn symlink(&mut self, target: &CStr, link: &CStr) -> Result<(), Errno> {
        // SAFETY: valid C strings.
        check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
    }

    fn attach(&mut self, fd: RawFd, target: &CStr) -> Result<(), Errno> {
        // SAFETY: move_mount(2) with valid C strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd,
                EMPTY.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        check_fd(r).map(drop)
    }

    fn clone_tree(&mut self, source: &CStr) -> Result<RawFd, Errno> {
        // SAFETY: open_tree(2) with a valid C string.
        check_fd(unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                source.as_ptr(),
                libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
            )
        })
    }

    fn new_mount(&mut self, fstype: &CStr, attrs: u64) -> Result<RawFd, Errno> {
        // SAFETY: the new mount API with valid C strings; the context fd is closed after use.
        unsafe {
            let fs = check_fd(libc::syscall(
                libc::SYS_fsopen,
                fstype.as_ptr(),
                libc::FSOPEN_CLOEXEC,
            ))?;
            let r = check_fd(libc::syscall(
                libc::SYS_fsconfig,
                fs,
                libc::FSCONFIG_CMD_CREATE,
                std::ptr::null::<c_char>(),
                std::ptr::null::<c_char>(),
                0,
            ))
            .and_then(|_| {
                check_fd(libc::syscall(
                    libc::SYS_fsmount,
                    fs,
                    libc::FSMOUNT_CLOEXEC,
                    attrs,
                ))
            });
            libc::close(fs);
            r
        }
    }

    fn pivot_root(&mut self) -> Result<(), Errno> {
        // SAFETY: pivot_root(2), umount2(2) and chdir(2) with valid C strings.
        unsafe {
            check_fd(libc::syscall(
                libc::SYS_pivot_root,
                c".".as_ptr(),
                c".".as_ptr(),
            ))?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))
        }
    }

    fn set_hostname(&mut self, name: &CStr) -> Result<(), Errno> {
        let b = name.to_bytes();
        // SAFETY: a live byte slice.
        check(unsafe { libc::sethostname(b.as_ptr().cast(), b.len()) })
    }

    fn loopback_up(&mut self) -> Result<(), Errno> {
        // SAFETY: socket and ioctl on a zeroed, correctly named ifreq.
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            check(s)?;
            let mut req: libc::ifreq = std::mem::zeroed();
            req.ifr_name[0] = b'l' as c_char;
            req.ifr_name[1] = b'o' as c_char;
            let mut r = check(libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req));
            if r.is_ok() {
                req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                r = check(libc::ioctl(s, libc::SIOCSIFFLAGS, &req));
            }
            libc::close(s);
            r
        }
    }
}

/// Reports a failure to the parent and exits.
fn fail(report: RawFd, code: u32, err: Errno) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&code.to_ne_bytes());
    msg[4..].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: writes a live buffer (atomic: less than PIPE_BUF), then exits without running
    // any of the parent's cleanup.
    unsafe {
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(126)
    }
}

fn stage_fail(report: RawFd, stage: Stage, err: Errno) -> ! {
    fail(report, STAGE_BASE + stage as u32, err)
}

/// Closes every descriptor except the sorted `keep` ones.
fn close_others(keep: &[RawFd]) {
    let mut next: u32 = 0;
    for &fd in keep {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd > next {
            // SAFETY: close_range(2) on descriptors this process owns.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0) };
        }
        next = fd.saturating_add(1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0) };
}

/// The sandbox's init process (pid 1 of the new pid namespace): sets the sandbox up, forks
/// the program, reaps every orphan until the program ends and exits with its status, which
/// makes the kernel kill whatever is left in the namespace.
pub(crate) fn init_main(cfg: &mut InitConfig) -> ! {
    let report = cfg.report;
    // SAFETY: only raw system calls on prepared data from here on (see the module doc).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        // Not dumpable from the start: /proc/1/environ and /proc/1/mem stay closed to the
        // program (whose own execve makes it dumpable again).
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        for &(start, end) in &cfg.scrub {
            if start != 0 && end > start {
                std::ptr::write_bytes(start as *mut u8, 0, end - start);
            }
        }
        if let Some(&(start, end)) = cfg.scrub.first() {
            let name = b"kiln-init";
            if start != 0 && end - start > name.len() {
                std::ptr::copy_nonoverlapping(name.as_ptr(), start as *mut u8, name.len());
            }
        }
        close_others(&cfg.keep);
        let mut byte = 0u8;
        if libc::read(cfg.sync, (&raw mut byte).cast(), 1) != 1 {
            libc::_exit(125);
        }
        // Still unmapped here: become the namespace's root (host HOST_ID_BASE as root; kiln's
        // user rootless).
        // With one mapped id, the namespace inherits kiln's "setgroups deny".
        if libc::syscall(libc::SYS_setresgid, 0, 0, 0) < 0
            || (libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0
                && !(cfg.exec.fake_ids.is_some() && errno() == libc::EPERM))
            || libc::syscall(libc::SYS_setresuid, 0, 0, 0) < 0
        {
            stage_fail(report, Stage::Identity, errno());
        }
        // Changing ids cleared the parent-death signal: set it again, then make sure the
        // parent did not die meanwhile (it holds the pipe's write end until we end).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        let mut pfd = libc::pollfd {
            fd: cfg.sync,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & libc::POLLHUP != 0 {
            libc::_exit(125);
        }
        libc::close(cfg.sync);
        if libc::unshare(libc::CLONE_NEWCGROUP) < 0 && errno() != libc::EINVAL {
            stage_fail(report, Stage::CgroupNamespace, errno());
        }
        libc::umask(0);
        if let Err((step, err)) = execute(&cfg.steps, &mut Linux, &mut cfg.slots) {
            fail(report, u32::try_from(step).unwrap_or(u32::MAX), err);
        }
        for &fd in cfg.slots.iter().chain(&cfg.mount_fds) {
            libc::close(fd);
        }
        for &(resource, value) in &cfg.rlimits {
            let lim = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource, &lim) < 0 {
                stage_fail(report, Stage::Rlimit, errno());
            }
        }
        // Every signal init may be sent waits, blocked, for `sigwaitinfo` below (a blocked
        // signal reaches a namespace's init even without a handler); the program unblocks
        // them before `execve`.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in 1..32 {
            if !matches!(
                sig,
                libc::SIGKILL
                    | libc::SIGSTOP
                    | libc::SIGSEGV
                    | libc::SIGBUS
                    | libc::SIGFPE
                    | libc::SIGILL
                    | libc::SIGTRAP
                    | libc::SIGSYS
            ) {
                libc::sigaddset(&mut set, sig);
            }
        }
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let child = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
        if child < 0 {
            stage_fail(report, Stage::Fork, errno());
        }
        if child == 0 {
            exec_main(&cfg.exec, report);
        }
        for (_, fd) in &cfg.exec.fds {
            libc::close(*fd);
        }
        libc::close(report);
        drop_capabilities(0, 0);
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        let program = libc::pid_t::try_from(child).unwrap_or(-1);
        // Reap every orphan until the program ends; forward every other signal to it, as
        // Docker's `--init` does (`kiln stop` sends SIGTERM here).
        loop {
            let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
            if sig < 0 {
                if errno() != libc::EINTR {
                    libc::_exit(125);
                }
                continue;
            }
            if sig != libc::SIGCHLD {
                libc::kill(program, sig);
                continue;
            }
            loop {
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid == program {
                    let code = if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        libc::WEXITSTATUS(status)
                    };
                    libc::_exit(code);
                }
                if pid <= 0 {
                    break;
                }
            }
        }
    }
}

/// Sets the permitted and effective capabilities to `keep` and the inheritable ones to none.
///
/// # Safety
/// A raw capset(2); no other effect.
unsafe fn set_capabilities(keep: u64) -> c_int {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let lo = (keep & 0xffff_ffff) as u32;
    let hi = (keep >> 32) as u32;
    let data = [
        Data {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        Data {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header and data live for the call.
    unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as c_int }
}

/// Drops every capability outside `keep` from the bounding set, then sets `keep` as the
/// permitted and effective set.
///
/// # Safety
/// Raw prctl(2)/capset(2) calls.
unsafe fn drop_capabilities(keep: u64, last_cap: u32) -> c_int {
    let last = if last_cap == 0 { 63 } else { last_cap.min(63) };
    for cap in 0..=last {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl on the calling thread.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        }
    }
    // SAFETY: as above.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        set_capabilities(keep)
    }
}

/// Opens a terminal in the container's devpts, makes its secondary side stdin, stdout and
/// stderr (owned by `uid`, as docker leaves it), and sends its primary side over `sock`, which
/// is then closed. Returns -1 on failure (errno set).
///
/// # Safety
/// Raw system calls on the calling process's descriptors.
unsafe fn open_console(sock: c_int, uid: u32) -> c_int {
    // SAFETY: plain system calls; the message buffers live on this stack frame.
    unsafe {
        let primary = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if primary < 0 {
            return -1;
        }
        let unlock: c_int = 0;
        if libc::ioctl(primary, libc::TIOCSPTLCK, &unlock) < 0 {
            return -1;
        }
        let secondary = libc::ioctl(primary, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY);
        if secondary < 0 {
            return -1;
        }
        // Best effort: the program can use its descriptors either way.
        libc::fchown(secondary, uid, u32::MAX);
        for n in 0..3 {
            if libc::dup2(secondary, n) < 0 {
                return -1;
            }
        }
        if secondary > 2 {
            libc::close(secondary);
        }
        let sent = send_fd(sock, primary);
        libc::close(primary);
        libc::close(sock);
        sent
    }
}

/// Sends descriptor `fd` over unix socket `sock` (`SCM_RIGHTS`); 0, or -1 with errno.
///
/// # Safety
/// Raw system calls on the calling process's descriptors.
unsafe fn send_fd(sock: c_int, fd: c_int) -> c_int {
    let mut byte = [0u8; 1];
    let mut iov = one_byte(&mut byte);
    let mut control = [0u64; 4];
    // SAFETY: sendmsg(2) from buffers on this stack frame.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) as usize;
        let msg = fd_msghdr(&mut iov, &mut control, space);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return -1;
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
        if libc::sendmsg(sock, &msg, 0) < 0 {
            -1
        } else {
            0
        }
    }
}

/// The one byte a descriptor travels with.
fn one_byte(byte: &mut [u8; 1]) -> libc::iovec {
    libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    }
}

/// A message of `iov` with `control_len` bytes of `control` for the descriptor; both must
/// outlive its use.
fn fd_msghdr(iov: &mut libc::iovec, control: &mut [u64; 4], control_len: usize) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zeroed is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_len;
    msg
}

/// Receives a descriptor that [`send_fd`] sends (a terminal primary, a seccomp listener);
/// `None` if the socket closed first (the program failed before).
pub(crate) fn recv_fd(sock: &OwnedFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = one_byte(&mut byte);
    let mut control = [0u64; 4];
    // SAFETY: recvmsg(2) into buffers on this stack frame; a received descriptor is owned
    // exactly once.
    unsafe {
        let space = std::mem::size_of_val(&control);
        let mut msg = fd_msghdr(&mut iov, &mut control, space);
        let n = loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 || errno() != libc::EINTR {
                break n;
            }
        };
        if n <= 0 {
            return None;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return None;
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>());
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    }
}

/// The program's process: drops privileges, installs the filter and executes.
fn exec_main(cfg: &ExecConfig, report: RawFd) -> ! {
    // SAFETY: raw system calls on prepared data only (see the module doc).
    unsafe {
        if libc::setsid() < 0 {
            stage_fail(report, Stage::Session, errno());
        }
        libc::umask(0o022);
        // Signals: default dispositions (Rust ignores SIGPIPE) and nothing blocked.
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());

        // Every source is first moved above every target, so a target never clobbers a
        // source still to be placed; then each lands on its number.
        let top = cfg.fds.iter().map(|(n, _)| *n).max().unwrap_or(2) + 1;
        let mut high = [-1; MAX_FDS];
        for (i, (_, fd)) in cfg.fds.iter().enumerate().take(MAX_FDS) {
            high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, top.max(10));
            if high[i] < 0 {
                stage_fail(report, Stage::Stdio, errno());
            }
        }
        for (i, (n, _)) in cfg.fds.iter().enumerate().take(MAX_FDS) {
            if libc::dup2(high[i], *n) < 0 {
                stage_fail(report, Stage::Stdio, errno());
            }
        }
        if let Some(sock) = cfg.console {
            if open_console(sock, cfg.uid) < 0 {
                stage_fail(report, Stage::Stdio, errno());
            }
        }
        // A session leader without a terminal (setsid above) takes its stdin's.
        if cfg.controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            stage_fail(report, Stage::Stdio, errno());
        }
        // Bounding set first (needs CAP_SETPCAP), then the ids, then what is left.
        let last = if cfg.last_cap == 0 {
            63
        } else {
            cfg.last_cap.min(63)
        };
        for cap in 0..=last {
            if cfg.caps & (1 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) < 0
                && errno() != libc::EINVAL
            {
                stage_fail(report, Stage::Capabilities, errno());
            }
        }
        // Fake ids: the process stays the one mapped id (root); kiln answers for the rest.
        let fake = cfg.fake_ids.is_some();
        if !fake && libc::syscall(libc::SYS_setgroups, cfg.groups.len(), cfg.groups.as_ptr()) < 0 {
            stage_fail(report, Stage::Groups, errno());
        }
        if !fake && libc::syscall(libc::SYS_setresgid, cfg.gid, cfg.gid, cfg.gid) < 0 {
            stage_fail(report, Stage::SetGid, errno());
        }
        if !fake && libc::syscall(libc::SYS_setresuid, cfg.uid, cfg.uid, cfg.uid) < 0 {
            stage_fail(report, Stage::SetUid, errno());
        }
        let keep = if cfg.uid == 0 || fake { cfg.caps } else { 0 };
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        if set_capabilities(keep) < 0 {
            stage_fail(report, Stage::Capabilities, errno());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            stage_fail(report, Stage::NoNewPrivs, errno());
        }
        if libc::chdir(cfg.cwd.as_ptr()) < 0 {
            stage_fail(report, Stage::Chdir, errno());
        }
        // The working directory must be inside the rootfs (runc's CVE-2024-21626: a
        // `/proc/self/fd/N` path could lead to a folder outside it); the kernel's getcwd
        // marks one that is not reachable from the root.
        let mut buf = [0u8; 4096];
        let n = libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len());
        if n <= 0 || buf[0] != b'/' {
            stage_fail(report, Stage::Chdir, libc::ENOENT);
        }
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        // ...but the descriptors the program was given stay open across exec.
        for (n, _) in cfg.fds.iter().filter(|(n, _)| *n >= 3) {
            libc::fcntl(*n, libc::F_SETFD, 0);
        }
        let prog = SockFprog {
            len: u16::try_from(cfg.filter.len()).unwrap_or(0),
            filter: cfg.filter.as_ptr(),
        };
        let flags = if fake {
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        } else {
            0
        };
        let listener = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &raw const prog,
        );
        if listener < 0 {
            stage_fail(report, Stage::Seccomp, errno());
        }
        if let Some(sock) = cfg.fake_ids {
            let listener = listener as c_int;
            let sent = send_fd(sock, listener);
            libc::close(listener);
            libc::close(sock);
            if sent < 0 {
                stage_fail(report, Stage::Seccomp, errno());
            }
        }
        let mut err = libc::ENOENT;
        let mut denied = false;
        for path in &cfg.candidates {
            libc::execve(path.as_ptr(), cfg.argv_ptrs.as_ptr(), cfg.env_ptrs.as_ptr());
            match errno() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => denied = true,
                e => {
                    err = e;
                    break;
                }
            }
        }
        if denied && err == libc::ENOENT {
            err = libc::EACCES;
        }
        stage_fail(report, Stage::Exec, err)
    }
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A cloned child: its pid and pidfd.
pub(crate) struct Child {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
}

/// Clones a child into new namespaces (`flags`: `CLONE_NEW*`); the child runs `child` and
/// must never return from it.
///
/// # Safety
/// `child` runs in a copy of a possibly multithreaded process: it may only make
/// async-signal-safe calls and must end in `execve` or `_exit`.
pub(crate) unsafe fn clone_into(
    flags: u64,
    child: impl FnOnce() -> Infallible,
) -> io::Result<Child> {
    let mut pidfd: c_int = -1;
    let args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: (&raw mut pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without a stack behaves like fork; the child only runs `child`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if r == 0 {
        child();
    }
    Ok(Child {
        pid: libc::pid_t::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?,
        // SAFETY: the kernel stored a fresh pidfd that nothing else owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
    })
}

/// Makes a detached clone of the mount at `path`, read-only when `readonly`, and with its ids
/// shifted through `userns`'s mapping when given one (on-disk id N is container id N).
pub(crate) fn mount_clone(
    path: &Path,
    userns: Option<BorrowedFd<'_>>,
    readonly: bool,
) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_tree(2) with a valid C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    let fd = check_fd(r).map_err(io::Error::from_raw_os_error)?;
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut set = 0;
    if userns.is_some() {
        set |= libc::MOUNT_ATTR_IDMAP;
    }
    if readonly {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    if set == 0 {
        return Ok(fd);
    }
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    // SAFETY: mount_setattr(2) on our descriptor with a live mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_EMPTY_PATH,
            &raw const attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    check_fd(r).map_err(io::Error::from_raw_os_error)?;
    Ok(fd)
}

/// Waits for `pid` to end; returns its wait status.
pub(crate) fn wait_pid(pid: libc::pid_t) -> io::Result<c_int> {
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Sends SIGKILL through a pidfd.
pub(crate) fn kill_pidfd(pidfd: BorrowedFd<'_>) {
    // SAFETY: pidfd_send_signal(2) on our child's pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Closes every descriptor but `read`, blocks until the parent writes to (or closes) the pipe,
/// then exits: the body of the short-lived process that only holds a user namespace open.
pub(crate) fn hold_until_written(read: RawFd) -> ! {
    let mut byte = 0u8;
    close_others(&[read]);
    // SAFETY: raw read and _exit only.
    unsafe {
        libc::read(read, (&raw mut byte).cast(), 1);
        libc::_exit(0)
    }
}
