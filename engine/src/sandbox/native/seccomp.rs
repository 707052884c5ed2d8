//! The seccomp filter: Docker's default profile as a classic BPF allowlist.
//!
//! Everything not listed fails with `EPERM`, as in Docker. Differences, all narrower:
//! - only the native architecture is allowed (Docker also allows the 32-bit ABIs on x86_64);
//!   any other architecture kills the process;
//! - `ptrace`, `process_vm_readv`/`process_vm_writev` and `kcmp` are denied (Docker allows them
//!   on kernels >= 4.8); build steps do not debug other processes;
//! - `socket(AF_VSOCK)` is denied (as recent Docker does), other families are allowed;
//! - `clone` with any namespace flag and `unshare`, `setns`, `mount`, `umount2`, `pivot_root`,
//!   `keyctl`, `add_key`, `request_key`, `kexec_*`, `*_module`, `bpf`, `perf_event_open`,
//!   `userfaultfd`, `open_by_handle_at`, `reboot`, `swapon`/`swapoff`, `acct`,
//!   `settimeofday`/`clock_settime`, ... are absent, so denied; `clone3` returns `ENOSYS` so libc
//!   falls back to `clone`, whose flags the filter can inspect; `personality` accepts only the
//!   values Docker accepts.

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
pub(crate) struct SockFprog {
    pub len: u16,
    pub filter: *const SockFilter,
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;
const OFF_ARG0_HI: u32 = 20;

/// The namespace flags `clone` may not carry (Docker's mask 0x7E020000).
const CLONE_NS_FLAGS: u32 = 0x7E02_0000;
/// `personality` values Docker allows.
const PERSONALITIES: [u32; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];
const AF_VSOCK: u32 = 40;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// The x32 ABI bit (x86_64 only).
#[cfg(target_arch = "x86_64")]
const X32_BIT: u32 = 0x4000_0000;

/// System calls newer than the `libc` crate's tables (same number on every architecture).
const SYS_CACHESTAT: i64 = 451;
const SYS_MAP_SHADOW_STACK: i64 = 453;
const SYS_FUTEX_WAKE: i64 = 454;
const SYS_FUTEX_WAIT: i64 = 455;
const SYS_FUTEX_REQUEUE: i64 = 456;
const SYS_LISTMOUNT: i64 = 458;
const SYS_SETXATTRAT: i64 = 463;
const SYS_GETXATTRAT: i64 = 464;
const SYS_LISTXATTRAT: i64 = 465;
const SYS_REMOVEXATTRAT: i64 = 466;

/// Docker's unconditionally allowed system calls that exist on every 64-bit architecture.
const COMMON: &[i64] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_adjtimex,
    libc::SYS_bind,
    libc::SYS_brk,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_chdir,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_getres,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_connect,
    libc::SYS_copy_file_range,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fadvise64,
    libc::SYS_fallocate,
    libc::SYS_fanotify_mark,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    452,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fcntl,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_flock,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_getcpu,
    libc::SYS_getcwd,
    libc::SYS_getdents64,
    libc::SYS_getegid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getgroups,
    libc::SYS_getitimer,
    libc::SYS_getpeername,
    libc::SYS_getpgid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getpriority,
    libc::SYS_getrandom,
    libc::SYS_getresgid,
    libc::SYS_getresuid,
    libc::SYS_get_robust_list,
    libc::SYS_getrusage,
    libc::SYS_getsid,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_gettid,
    libc::SYS_gettimeofday,
    libc::SYS_getuid,
    libc::SYS_getxattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel,
    libc::SYS_ioctl,
    libc::SYS_io_destroy,
    libc::SYS_io_getevents,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_kill,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
    libc::SYS_lgetxattr,
    libc::SYS_linkat,
    libc::SYS_listen,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_lremovexattr,
    libc::SYS_lseek,
    libc::SYS_lsetxattr,
    libc::SYS_madvise,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_mincore,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify,
    libc::SYS_mq_open,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_unlink,
    libc::SYS_mremap,
    libc::SYS_mseal,
    libc::SYS_msgctl,
    libc::SYS_msgget,
    libc::SYS_msgrcv,
    libc::SYS_msgsnd,
    libc::SYS_msync,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_munmap,
    libc::SYS_name_to_handle_at,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pipe2,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_prlimit64,
    libc::SYS_process_mrelease,
    libc::SYS_pselect6,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_read,
    libc::SYS_readahead,
    libc::SYS_readlinkat,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_remap_file_pages,
    libc::SYS_removexattr,
    libc::SYS_renameat2,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield,
    libc::SYS_seccomp,
    libc::SYS_semctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_sendfile,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_setfsgid,
    libc::SYS_setfsuid,
    libc::SYS_setgid,
    libc::SYS_setgroups,
    libc::SYS_setitimer,
    libc::SYS_setpgid,
    libc::SYS_setpriority,
    libc::SYS_setregid,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setreuid,
    libc::SYS_setrlimit,
    libc::SYS_set_robust_list,
    libc::SYS_setsid,
    libc::SYS_setsockopt,
    libc::SYS_set_tid_address,
    libc::SYS_setuid,
    libc::SYS_setxattr,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_shmget,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_signalfd4,
    libc::SYS_socketpair,
    libc::SYS_splice,
    libc::SYS_statfs,
    libc::SYS_statx,
    libc::SYS_symlinkat,
    libc::SYS_sync,
    libc::SYS_syncfs,
    libc::SYS_sysinfo,
    libc::SYS_tee,
    libc::SYS_tgkill,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_times,
    libc::SYS_tkill,
    libc::SYS_truncate,
    libc::SYS_umask,
    libc::SYS_uname,
    libc::SYS_unlinkat,
    libc::SYS_utimensat,
    libc::SYS_vmsplice,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_chroot,
    SYS_CACHESTAT,
    SYS_MAP_SHADOW_STACK,
    SYS_FUTEX_WAKE,
    SYS_FUTEX_WAIT,
    SYS_FUTEX_REQUEUE,
    SYS_LISTMOUNT,
    SYS_SETXATTRAT,
    SYS_GETXATTRAT,
    SYS_LISTXATTRAT,
    SYS_REMOVEXATTRAT,
];

/// Docker's allowed system calls that only the x86_64 table has.
#[cfg(target_arch = "x86_64")]
const ARCH: &[i64] = &[
    libc::SYS_access,
    libc::SYS_alarm,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_creat,
    libc::SYS_dup2,
    libc::SYS_epoll_create,
    libc::SYS_epoll_ctl_old,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_wait_old,
    libc::SYS_eventfd,
    libc::SYS_fork,
    libc::SYS_futimesat,
    libc::SYS_getdents,
    libc::SYS_getpgrp,
    libc::SYS_getrlimit,
    libc::SYS_get_thread_area,
    libc::SYS_inotify_init,
    libc::SYS_lchown,
    libc::SYS_link,
    libc::SYS_lstat,
    libc::SYS_mkdir,
    libc::SYS_mknod,
    libc::SYS_open,
    libc::SYS_pause,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_readlink,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_rmdir,
    libc::SYS_select,
    libc::SYS_set_thread_area,
    libc::SYS_signalfd,
    libc::SYS_stat,
    libc::SYS_symlink,
    libc::SYS_sync_file_range,
    libc::SYS_time,
    libc::SYS_unlink,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_vfork,
    libc::SYS_arch_prctl,
    libc::SYS_modify_ldt,
    333, // io_pgetevents
];

/// Docker's allowed system calls that only the aarch64 table has.
#[cfg(target_arch = "aarch64")]
const ARCH: &[i64] = &[
    libc::SYS_renameat,
    libc::SYS_sync_file_range,
    292, /* io_pgetevents */
];

/// Builds the filter program.
/// `fake_ids`: the calls of [`super::fakeid::NOTIFIED`] go to kiln (one mapped id).
pub(crate) fn filter(fake_ids: bool) -> Vec<SockFilter> {
    let ins = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    let mut p = vec![
        ins(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        ins(BPF_JEQ_K, 1, 0, AUDIT_ARCH),
        ins(BPF_RET_K, 0, 0, RET_KILL),
        ins(BPF_LD_W_ABS, 0, 0, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        p.push(ins(BPF_JGE_K, 0, 1, X32_BIT));
        p.push(ins(BPF_RET_K, 0, 0, RET_EPERM));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = BPF_JGE_K;
    let nr = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    if fake_ids {
        for n in super::fakeid::NOTIFIED {
            p.push(ins(BPF_JEQ_K, 0, 1, nr(*n)));
            p.push(ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
        }
        for (n, flags) in super::fakeid::CREATING {
            match flags {
                None => {
                    p.push(ins(BPF_JEQ_K, 0, 1, nr(*n)));
                    p.push(ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
                }
                // Only with O_CREAT among the flags in argument `i`.
                Some(i) => {
                    p.push(ins(BPF_JEQ_K, 0, 4, nr(*n)));
                    p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LO + 8 * i));
                    p.push(ins(BPF_JSET_K, 0, 1, libc::O_CREAT as u32));
                    p.push(ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
                    p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_NR));
                }
            }
        }
    }

    // clone: no namespace flags.
    p.push(ins(BPF_JEQ_K, 0, 5, nr(libc::SYS_clone)));
    p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LO));
    p.push(ins(BPF_JSET_K, 1, 0, CLONE_NS_FLAGS));
    p.push(ins(BPF_RET_K, 0, 0, RET_ALLOW));
    p.push(ins(BPF_RET_K, 0, 0, RET_EPERM));
    p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_NR));
    // clone3: ENOSYS, so libc uses clone.
    p.push(ins(BPF_JEQ_K, 0, 1, nr(libc::SYS_clone3)));
    p.push(ins(BPF_RET_K, 0, 0, RET_ENOSYS));
    // socket: anything but AF_VSOCK.
    p.push(ins(BPF_JEQ_K, 0, 5, nr(libc::SYS_socket)));
    p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LO));
    p.push(ins(BPF_JEQ_K, 0, 1, AF_VSOCK));
    p.push(ins(BPF_RET_K, 0, 0, RET_EPERM));
    p.push(ins(BPF_RET_K, 0, 0, RET_ALLOW));
    p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_NR));
    // personality: Docker's values only (the high word must be 0).
    let n = PERSONALITIES.len() as u8;
    p.push(ins(BPF_JEQ_K, 0, 5 + n, nr(libc::SYS_personality)));
    p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_ARG0_HI));
    p.push(ins(BPF_JEQ_K, 0, 1 + n, 0));
    p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LO));
    for (i, v) in PERSONALITIES.iter().enumerate() {
        p.push(ins(BPF_JEQ_K, n - i as u8, 0, *v));
    }
    p.push(ins(BPF_RET_K, 0, 0, RET_EPERM));
    p.push(ins(BPF_RET_K, 0, 0, RET_ALLOW));
    p.push(ins(BPF_LD_W_ABS, 0, 0, OFF_NR));
    for n in COMMON.iter().chain(ARCH) {
        p.push(ins(BPF_JEQ_K, 0, 1, nr(*n)));
        p.push(ins(BPF_RET_K, 0, 0, RET_ALLOW));
    }
    p.push(ins(BPF_RET_K, 0, 0, RET_EPERM));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interprets `prog` for one system call (the subset of classic BPF the filter uses).
    fn eval(prog: &[SockFilter], arch: u32, nr: i64, arg0: u64) -> u32 {
        eval_args(prog, arch, nr, [arg0, 0, 0, 0, 0, 0])
    }

    fn eval_args(prog: &[SockFilter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_ne_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
                }
                BPF_RET_K => return i.k,
                code => {
                    let hit = match code {
                        BPF_JEQ_K => acc == i.k,
                        BPF_JGE_K => acc >= i.k,
                        BPF_JSET_K => acc & i.k != 0,
                        _ => panic!("unexpected instruction {code:#x}"),
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
            }
        }
    }

    #[test]
    fn allows_what_docker_allows_and_denies_the_rest() {
        let p = filter(false);
        assert!(p.len() < 4096);
        let run = |nr, arg| eval(&p, AUDIT_ARCH, nr, arg);
        for nr in [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_openat,
            libc::SYS_exit_group,
            libc::SYS_chroot,
            libc::SYS_setuid,
        ] {
            assert_eq!(run(nr, 0), RET_ALLOW, "{nr}");
        }
        for nr in [
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_open_by_handle_at,
            libc::SYS_reboot,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_acct,
            libc::SYS_settimeofday,
            libc::SYS_clock_settime,
            libc::SYS_process_vm_readv,
            libc::SYS_kcmp,
            libc::SYS_open_tree,
            libc::SYS_move_mount,
            libc::SYS_fsopen,
            libc::SYS_mount_setattr,
        ] {
            assert_eq!(run(nr, 0), RET_EPERM, "{nr}");
        }
        assert_eq!(run(libc::SYS_clone, libc::SIGCHLD as u64), RET_ALLOW);
        assert_eq!(
            run(
                libc::SYS_clone,
                (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64
            ),
            RET_EPERM
        );
        assert_eq!(run(libc::SYS_clone, libc::CLONE_NEWNS as u64), RET_EPERM);
        assert_eq!(run(libc::SYS_clone3, 0), RET_ENOSYS);
        assert_eq!(run(libc::SYS_socket, libc::AF_INET as u64), RET_ALLOW);
        assert_eq!(run(libc::SYS_socket, 40), RET_EPERM);
        assert_eq!(run(libc::SYS_personality, 0), RET_ALLOW);
        assert_eq!(run(libc::SYS_personality, 0xffff_ffff), RET_ALLOW);
        assert_eq!(run(libc::SYS_personality, 0x0040_0000), RET_EPERM);
        assert_eq!(run(libc::SYS_personality, 1 << 32), RET_EPERM);
        assert_eq!(eval(&p, 0x4000_0003, libc::SYS_read, 0), RET_KILL);
    }

    #[test]
    fn fake_ids_hand_the_calls_about_ids_to_kiln_and_keep_the_rest() {
        let fake = filter(true);
        let plain = filter(false);
        for nr in super::super::fakeid::NOTIFIED {
            assert_eq!(
                eval(&fake, AUDIT_ARCH, *nr, 0),
                libc::SECCOMP_RET_USER_NOTIF,
                "{nr}"
            );
        }
        for (nr, arg) in [
            (libc::SYS_read, 0),
            (libc::SYS_mount, 0),
            (
                libc::SYS_clone,
                (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64,
            ),
            (libc::SYS_socket, 40),
        ] {
            assert_eq!(
                eval(&fake, AUDIT_ARCH, nr, arg),
                eval(&plain, AUDIT_ARCH, nr, arg),
                "{nr}"
            );
        }
        assert_eq!(eval(&fake, 0x4000_0003, libc::SYS_getuid, 0), RET_KILL);
        // Creating calls only: an open without O_CREAT stays the kernel's.
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        let openat = |flags: i32| {
            let mut data = [0u64; 6];
            data[2] = flags as u64;
            eval_args(&fake, AUDIT_ARCH, libc::SYS_openat, data)
        };
        assert_eq!(openat(libc::O_RDONLY), RET_ALLOW);
        assert_eq!(
            openat(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
            notify
        );
        assert_eq!(eval(&fake, AUDIT_ARCH, libc::SYS_mkdirat, 0), notify);
        assert_eq!(eval(&plain, AUDIT_ARCH, libc::SYS_mkdirat, 0), RET_ALLOW);
    }
}
