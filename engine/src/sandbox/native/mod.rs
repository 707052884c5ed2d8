//! The native sandbox: runs one Linux program over kernel overlayfs in fresh namespaces, with
//! Docker's default confinement (DESIGN.md "Native sandbox").
//!
//! # Processes
//! A library cannot re-exec itself, and `fork` from a multithreaded process may only make
//! async-signal-safe calls until `exec`. So the parent prepares *everything* first (the mount
//! plan as C strings, the seccomp program, argv/envp pointer arrays, the `PATH` candidates,
//! the descriptors to keep) and then `clone3`s the sandbox's **init** straight into new user,
//! mount, pid, ipc, uts and (unless [`NativeNetwork::Host`]) net namespaces. Init only makes
//! raw system calls on that prepared data ([`sys`]): it closes every inherited descriptor it
//! does not need, waits for the parent to write its id maps and add it to the run's cgroups,
//! enters a new cgroup namespace, executes the plan, sets the rlimits and forks the
//! **program** process, which drops capabilities, sets ids, `no_new_privs`, marks every
//! descriptor but stdio close-on-exec (`close_range`), installs the seccomp filter and
//! `execve`s. Init stays pid 1 (so `kill -9 $$` in the program works as in Docker), reaps
//! orphans, forwards the signals it receives to the program (as Docker's `--init` does), and
//! exits with the program's status; the kernel then kills everything left in the pid namespace. On timeout the parent SIGKILLs init through its pidfd, with the same effect.
//! Failures before `execve` come back as `(step, errno)` on a close-on-exec pipe.
//!
//! # Identity
//! As root, container ids 0..65535 are mapped onto the fixed host range
//! [`HOST_ID_BASE`]`..+65536`. Files keep *container* ids on disk through **idmapped
//! mounts**: the parent makes a throwaway user namespace with the same mapping and clones each
//! lower (read-only) and the folder holding upper and work with
//! `open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_IDMAP)`. Container root (host
//! 100000) then owns what is 0 on disk and whatever a container uid N creates is N on disk.
//! There is no fallback when idmapped mounts fail: the run fails with the reason.
//!
//! Rootless, kiln runs in a user namespace of its own ([`crate::rootless`]) whose ids are the
//! container's: the sandbox's namespace maps them onto themselves and the clones are plain
//! (idmapping needs root in the initial namespace). Container root is then the user. When that
//! namespace maps fewer ids than a system's users need (one, without subordinate ids), the
//! program keeps id 0 and its ids are fake ([`fakeid`]): kiln answers the calls about ids and
//! records owners.
//!
//! # Mounts
//! Init attaches those detached mounts in a scratch tmpfs (mounted over `/tmp` in its own,
//! private mount namespace) and mounts overlayfs *inside* the user namespace with
//! `userxattr,index=off,redirect_dir=nofollow,metacopy=off`, so whiteouts are 0:0 character devices
//! and opaque directories carry `user.overlay.opaque=y`, kiln's upper format, and renamed lower
//! directories fail with `EXDEV` (programs copy them, as `mv` does) instead of leaving
//! redirects. Mount points the image lacks (`/proc`, `/sys`, `/dev`, `/etc/hosts`, ...) come
//! from an **init layer**, a tmpfs lower above the image layers, as Docker's init layer, so
//! nothing is ever created in the upper for them; `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname` are bind-mounted from that tmpfs, so writes to them never reach the upper.
//! `proc` and `sysfs` are created before `pivot_root` (the kernel requires a visible host
//! instance) and attached after it; every other mount happens after `pivot_root`, so symlinks
//! in the image resolve inside the rootfs. The plan is pure data ([`plan`]) executed through
//! the [`plan::Syscall`] seam.
//!
//! # Limits
//! Wall-clock timeout (kill, [`Limit::Timeout`]); memory and pids through cgroup v2 where the
//! controllers are enabled for our cgroup's children, else v1 hierarchies, else listed in
//! [`NativeOutcome::not_enforced`]; `RLIMIT_NOFILE`, `RLIMIT_NPROC`, `RLIMIT_CORE` = 0. Disk
//! ([`Limit::Disk`]) is enforced while the step runs: `RLIMIT_FSIZE` stops any one file at the
//! limit, and a watcher measures the upper (fd-relative and iterative, so no depth or name
//! length hides anything) several times a second and kills the step past the limit; the upper
//! is measured once more when the step ends.

mod cgroup;
mod console;
mod fakeid;
mod layers;
mod plan;
mod seccomp;
mod sys;
#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sandbox::{Limit, Limits, RunControl};

use plan::{build_plan, EtcFile, PlanInput, DEVICES};
use sys::{ExecConfig, InitConfig, Stage, STAGE_BASE};

/// First host uid/gid of the range container ids 0..65535 map onto.
pub const HOST_ID_BASE: u32 = 100_000;
/// Number of container ids mapped.
pub const ID_COUNT: u32 = 65_536;

/// Docker's default capabilities: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
/// NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
pub const DOCKER_CAPS: u64 = 0xa804_25fb;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The network a run sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NativeNetwork {
    /// Its own network namespace with only loopback, up.
    #[default]
    None,
    /// The host's network.
    Host,
}

/// One program to run in the native sandbox.
#[derive(Debug)]
pub struct NativeSpec {
    /// The program's arguments, `argv[0]` first.
    pub argv: Vec<String>,
    /// The file to execute (absolute, inside the rootfs); `None`: `argv[0]`, an absolute path
    /// or a name searched in `env`'s `PATH`.
    pub program: Option<String>,
    /// The whole environment, `K=V`.
    pub env: Vec<String>,
    /// Absolute working directory inside the rootfs, created (root-owned, 0755) if missing.
    pub cwd: String,
    /// Container user and group to run as; supplementary groups come from the rootfs's
    /// `/etc/group` (none without one).
    pub uid: u32,
    pub gid: u32,
    /// Layer snapshot folders, bottom first (read-only; never modified).
    pub lowers: Vec<PathBuf>,
    /// The step's upper folder (becomes the layer diff).
    pub upper: PathBuf,
    /// An empty folder on the same mount as `upper` (overlayfs workdir).
    pub work: PathBuf,
    pub network: NativeNetwork,
    pub hostname: String,
    /// Lines added to `/etc/hosts` (`IP\tNAME`).
    pub extra_hosts: Vec<String>,
    pub limits: Limits,
    /// The program's stdin, stdout and stderr.
    pub stdio: [OwnedFd; 3],
    /// More descriptors the program gets, at the given numbers (3 and up; `cmd 8<<EOF`).
    pub extra_fds: Vec<(u32, OwnedFd)>,
    /// Where signals come from, and whether this program is the run's main one (init forwards
    /// what it receives to the program).
    pub control: Option<(RunControl, bool)>,
    /// stdin is a terminal: it becomes the program's controlling terminal (`run -t`).
    pub tty: bool,
    /// Host folders mounted into the rootfs (`run -v`).
    pub binds: Vec<crate::sandbox::Bind>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeOutcome {
    /// The exit code, or 128+N after a kill by signal N.
    pub status: i32,
    /// The limit that stopped it (or that it exceeded), if any.
    pub limit: Option<Limit>,
    /// Limits this host could not enforce, with the reason.
    pub not_enforced: Vec<String>,
}

/// Why a native run could not happen (a program that fails is a [`NativeOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The spec is unusable.
    #[error("invalid native run: {0}")]
    Invalid(String),
    /// The host cannot run the native sandbox.
    #[error("native sandbox unavailable: {0}")]
    Unavailable(String),
    /// The rootfs cannot host the sandbox's mount points.
    #[error("rootfs: {0}")]
    Rootfs(String),
    /// A host operation failed.
    #[error("{op}: {source}")]
    Host {
        op: String,
        #[source]
        source: io::Error,
    },
    /// Setting the sandbox up failed.
    #[error("sandbox setup: {step}: {source}")]
    Setup {
        step: String,
        #[source]
        source: io::Error,
    },
    /// The program could not be executed.
    #[error("cannot execute {program}: {source}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
}

fn host(op: impl Into<String>) -> impl FnOnce(io::Error) -> NativeError {
    let op = op.into();
    move |source| NativeError::Host { op, source }
}

/// Whether this host can run the native sandbox, with the reason when not (found out once per
/// process: the probe forks).
pub fn available() -> Result<(), String> {
    static AVAILABLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    AVAILABLE.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err(
            "the native sandbox needs root, or a user namespace of kiln's own, which this \
             host refused (see kiln's warning)"
                .into(),
        );
    }
    let fs =
        fs::read_to_string("/proc/filesystems").map_err(|e| format!("/proc/filesystems: {e}"))?;
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Err("the kernel has no overlayfs".into());
    }
    let max = fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        return Err("user namespaces are disabled (user.max_user_namespaces = 0)".into());
    }
    if !Path::new("/proc/self/ns/user").exists() {
        return Err("the kernel has no user namespaces".into());
    }
    if !can_create_user_namespace() {
        return Err("this process may not create user namespaces (inside another sandbox?)".into());
    }
    Ok(())
}

/// Tries it: a forked child calls `unshare(CLONE_NEWUSER)` and reports by its exit status.
fn can_create_user_namespace() -> bool {
    // SAFETY: the child only calls async-signal-safe functions (unshare, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        // SAFETY: in the forked child; no allocation, no locks.
        unsafe {
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            libc::_exit(i32::from(!ok));
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for the child just forked.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, NativeError> {
    CString::new(s).map_err(|_| NativeError::Invalid(format!("{what} holds a NUL byte: {s:?}")))
}

/// The working directory and its ancestors, outermost first.
fn cwd_dirs(cwd: &str) -> Result<Vec<String>, NativeError> {
    if !cwd.starts_with('/') {
        return Err(NativeError::Invalid(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }
    let mut dirs = Vec::new();
    let mut cur = String::new();
    for name in cwd.split('/').filter(|n| !n.is_empty() && *n != ".") {
        cur.push('/');
        cur.push_str(name);
        dirs.push(cur.clone());
    }
    Ok(dirs)
}

/// The paths `execve` tries for `argv0`.
fn candidates(argv0: &str, env: &[String]) -> Vec<String> {
    if argv0.contains('/') {
        return vec![argv0.to_owned()];
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
        .collect()
}

/// The deepest folder holding both `a` and `b`, and their paths relative to it.
fn common_base(a: &Path, b: &Path) -> (PathBuf, String, String) {
    let ac: Vec<Component> = a.components().collect();
    let bc: Vec<Component> = b.components().collect();
    let n = ac.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    let base: PathBuf = ac[..n].iter().collect();
    let rel = |c: &[Component]| c.iter().collect::<PathBuf>().to_string_lossy().into_owned();
    (base, rel(&ac[n..]), rel(&bc[n..]))
}

/// How container ids meet the files' owners ([module doc](self#identity)).
#[derive(Debug, Clone, Copy)]
enum Ids {
    /// Onto [`HOST_ID_BASE`], with idmapped mounts (kiln in the initial user namespace).
    Shifted,
    /// Onto themselves, this many (kiln in a user namespace of its own).
    Same(u32),
}

impl Ids {
    fn here() -> Ids {
        match crate::rootless::namespace_ids() {
            None => Ids::Shifted,
            Some(n) => Ids::Same(n.min(ID_COUNT)),
        }
    }

    fn count(self) -> u32 {
        match self {
            Ids::Shifted => ID_COUNT,
            Ids::Same(n) => n,
        }
    }

    /// Too few ids for a system's users (one, without subordinate ids): the program keeps
    /// id 0 and kiln answers the calls about ids ([`fakeid`]).
    fn fake(self) -> bool {
        self.count() < ID_COUNT
    }
}

fn write_id_maps(pid: libc::pid_t, ids: Ids) -> io::Result<()> {
    for kind in ["uid_map", "gid_map"] {
        let map = match ids {
            Ids::Shifted => format!("0 {HOST_ID_BASE} {ID_COUNT}\n"),
            // Line by line as kiln's own map: an extent must lie within one of the parent's.
            Ids::Same(n) => {
                crate::rootless::identity_map(&fs::read_to_string(format!("/proc/self/{kind}"))?, n)
            }
        };
        fs::write(format!("/proc/{pid}/{kind}"), &map)?;
    }
    Ok(())
}

/// A user namespace with the sandbox's mapping, for idmapped mounts: made once per process
/// (it lives as long as the descriptor does).
fn idmap_userns() -> Result<BorrowedFd<'static>, NativeError> {
    static NS: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    if let Some(ns) = NS.get() {
        return Ok(ns.as_fd());
    }
    let ns = new_idmap_userns()?;
    Ok(NS.get_or_init(|| ns).as_fd())
}

fn new_idmap_userns() -> Result<OwnedFd, NativeError> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| host("pipe")(e.into()))?;
    let rfd = r.as_raw_fd();
    // SAFETY: the child only makes raw close_range/read/_exit calls.
    let child =
        unsafe { sys::clone_into(libc::CLONE_NEWUSER as u64, || sys::hold_until_written(rfd)) }
            .map_err(host("clone a user namespace"))?;
    let ns = write_id_maps(child.pid, Ids::Shifted)
        .and_then(|()| fs::File::open(format!("/proc/{}/ns/user", child.pid)))
        .map(OwnedFd::from);
    // Other processes cloned meanwhile may hold copies of `w`: write rather than close.
    let _ = fs::File::from(w).write_all(&[1]);
    sys::wait_pid(child.pid).map_err(host("wait for the user namespace holder"))?;
    ns.map_err(host("write the id maps of a user namespace"))
}

/// Watches the bytes a running step puts in its upper (regular file sizes plus symlink
/// lengths, what its layer would carry) against its disk limit.
struct DiskWatch {
    upper: OwnedFd,
    limit: u64,
    /// When to measure next (`None`: no limit, never).
    next: Option<Instant>,
    /// Measurements in a row that could not walk the whole upper.
    failed: u32,
}

/// Shortest time between two measurements of a running step's upper.
const DISK_TICK: Duration = Duration::from_millis(100);

/// Measurements in a row that may fail (a tree renamed while walked) before the step counts as
/// over its limit: the watch fails closed.
const DISK_FAILURES: u32 = 20;

impl DiskWatch {
    fn new(upper: &Path, limit: u64) -> Result<Self, NativeError> {
        let upper = rustix::fs::open(upper, crate::fsx::DIR_FLAGS, rustix::fs::Mode::empty())
            .map_err(|e| host(format!("open the upper {}", upper.display()))(e.into()))?;
        Ok(Self {
            upper,
            limit,
            next: (limit != u64::MAX).then(|| Instant::now() + DISK_TICK),
            failed: 0,
        })
    }

    /// The upper's size, `None` when it cannot be walked whole.
    fn size(&self) -> Option<u64> {
        crate::fsx::tree_bytes(self.upper.as_fd(), c".").ok()
    }

    /// Measures when due; whether the step is over its limit. Measuring takes at most a
    /// twentieth of the time (the next one waits twenty times as long as this one took).
    fn over(&mut self) -> bool {
        let now = Instant::now();
        if self.next.is_none_or(|next| now < next) {
            return false;
        }
        let size = self.size();
        self.next = Some(Instant::now() + DISK_TICK.max(now.elapsed() * 20));
        match size {
            Some(n) => {
                self.failed = 0;
                n > self.limit
            }
            None => {
                self.failed += 1;
                self.failed >= DISK_FAILURES
            }
        }
    }
}

fn rlimit(resource: libc::__rlimit_resource_t, want: u64) -> (libc::__rlimit_resource_t, u64) {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit into a live struct.
    unsafe { libc::getrlimit(resource, &mut cur) };
    (resource, want.min(cur.rlim_max))
}

/// `hosts` with `extra` lines after it (`--add-host`).
fn with_extra(mut hosts: Vec<u8>, extra: &[String]) -> Vec<u8> {
    if !extra.is_empty() && !hosts.ends_with(b"\n") && !hosts.is_empty() {
        hosts.push(b'\n');
    }
    for line in extra {
        hosts.extend_from_slice(line.as_bytes());
        hosts.push(b'\n');
    }
    hosts
}

/// Runs one program in the native sandbox; see the module doc.
pub fn run(spec: NativeSpec) -> Result<NativeOutcome, NativeError> {
    available().map_err(NativeError::Unavailable)?;
    let NativeSpec {
        argv,
        program,
        env,
        cwd,
        uid,
        gid,
        lowers,
        upper,
        work,
        network,
        hostname,
        extra_hosts,
        limits,
        stdio,
        extra_fds,
        control,
        tty,
        binds,
    } = spec;
    if extra_fds.len() + 3 > sys::MAX_FDS {
        return Err(NativeError::Invalid(format!(
            "too many descriptors to pass ({} at most)",
            sys::MAX_FDS
        )));
    }
    if let Some((n, _)) = extra_fds.iter().find(|(n, _)| *n < 3 || *n > 1023) {
        return Err(NativeError::Invalid(format!(
            "descriptor {n} cannot be passed (3..=1023 can)"
        )));
    }
    let Some(argv0) = argv.first().cloned() else {
        return Err(NativeError::Invalid("empty argv".into()));
    };
    if hostname.len() > 64 {
        return Err(NativeError::Invalid(format!(
            "hostname {hostname:?} is too long"
        )));
    }
    let ids = Ids::here();
    if !ids.fake() && (uid >= ids.count() || gid >= ids.count()) {
        return Err(NativeError::Invalid(format!(
            "user {uid}:{gid} is outside the mapped range 0..{}",
            ids.count()
        )));
    }
    let dirs = cwd_dirs(&cwd)?;
    let argv_c = argv
        .iter()
        .map(|a| cstring("argument", a))
        .collect::<Result<Vec<_>, _>>()?;
    let env_c = env
        .iter()
        .map(|e| cstring("environment variable", e))
        .collect::<Result<Vec<_>, _>>()?;
    let cands = program
        .map_or_else(|| candidates(&argv0, &env), |p| vec![p])
        .iter()
        .map(|c| cstring("program path", c))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd_c = cstring("working directory", &cwd)?;
    cstring("hostname", &hostname)?;

    // overlayfs refuses a folder twice among the lowers (ELOOP). Layers with the same diff ID
    // share a snapshot (two empty layers, say); only the topmost copy matters, since it shadows
    // everything the lower one has.
    let lowers = dedup_lowers(lowers);
    // What the rootfs has and lacks.
    let upper = fs::canonicalize(&upper).map_err(host(format!("upper {}", upper.display())))?;
    let work = fs::canonicalize(&work).map_err(host(format!("work {}", work.display())))?;
    let mut top_down = vec![upper.clone()];
    top_down.extend(lowers.iter().rev().cloned());
    let (init, bound) = layers::mount_points(
        &top_down,
        &["proc", "sys", "dev"],
        &["hosts", "resolv.conf", "hostname"],
    )
    .map_err(|b| NativeError::Rootfs(b.0))?;
    let groups = layers::supplementary_groups(
        layers::read_file(&top_down, "etc/passwd").as_deref(),
        layers::read_file(&top_down, "etc/group").as_deref(),
        uid,
    );
    let etc = bound
        .into_iter()
        .map(|name| EtcFile {
            name,
            contents: match (name, network) {
                ("hosts", NativeNetwork::None) => {
                    with_extra(plan::loopback_hosts(&hostname), &extra_hosts)
                }
                ("hosts", NativeNetwork::Host) => with_extra(
                    fs::read("/etc/hosts").unwrap_or_else(|_| plan::loopback_hosts(&hostname)),
                    &extra_hosts,
                ),
                ("resolv.conf", NativeNetwork::None) => plan::NO_RESOLV.to_vec(),
                ("resolv.conf", NativeNetwork::Host) => {
                    fs::read("/etc/resolv.conf").unwrap_or_default()
                }
                _ => format!("{hostname}\n").into_bytes(),
            },
        })
        .collect();

    // The layer mounts: idmapped, or plain in kiln's own namespace.
    let userns = match ids {
        Ids::Shifted => Some(idmap_userns()?),
        Ids::Same(_) => None,
    };
    let clone = |path: &Path, readonly: bool| sys::mount_clone(path, userns, readonly);
    let lower_fds = lowers
        .iter()
        .map(|l| clone(l, true).map_err(host(format!("mount of {}", l.display()))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut bind_fds = Vec::new();
    for b in &binds {
        let fd = clone(&b.host, b.readonly)
            .map_err(host(format!("bind mount of {}", b.host.display())))?;
        bind_fds.push((fd, cwd_dirs(&b.target)?));
    }
    let (base, upper_rel, work_rel) = common_base(&upper, &work);
    let base_fd = clone(&base, false).map_err(host(format!("mount of {}", base.display())))?;

    let input = PlanInput {
        // Any existing folder that container root (an unmapped host uid) can reach serves as
        // the scratch mount point in the sandbox's private mount namespace; the work folder
        // may sit below a 0700 folder (a KILN_ROOT under `mktemp -d`), /tmp never does.
        scratch: CString::from(c"/tmp"),
        lower_fds: lower_fds.iter().map(AsRawFd::as_raw_fd).collect(),
        upper_base_fd: base_fd.as_raw_fd(),
        upper_rel,
        work_rel,
        init,
        etc,
        devices: DEVICES
            .into_iter()
            .filter(|d| Path::new("/dev").join(d).exists())
            .collect(),
        network,
        hostname,
        shm_size: limits.shm,
        cwd_dirs: dirs,
        binds: bind_fds
            .iter()
            .map(|(fd, dirs)| (fd.as_raw_fd(), dirs.clone()))
            .collect(),
    };
    let plan = build_plan(&input);
    let last_cap = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let mut fds_raw: Vec<(i32, RawFd)> = stdio
        .iter()
        .enumerate()
        .map(|(i, fd)| (i as i32, fd.as_raw_fd()))
        .chain(extra_fds.iter().map(|(n, fd)| (*n as i32, fd.as_raw_fd())))
        .collect();
    // A terminal: the program opens its own in the container's devpts and sends its primary
    // side here; a relay joins it to the terminal the caller gave (stdin).
    let console = if tty {
        let (n, ours, theirs) = descriptor_socket(&mut fds_raw)?;
        let outer = stdio[0]
            .try_clone()
            .map_err(host("duplicate the terminal"))?;
        let relay = console::Relay::start(ours, outer).map_err(host("start the terminal relay"))?;
        Some((n, theirs, relay))
    } else {
        None
    };
    // Fake ids: the program's filter sends its listener here, and a thread answers it.
    let fake = if ids.fake() {
        let (n, ours, theirs) = descriptor_socket(&mut fds_raw)?;
        let first = fakeid::Creds::new(uid, gid, groups.clone());
        let thread = std::thread::Builder::new()
            .name("kiln-fakeid".into())
            .spawn(move || {
                if let Some(listener) = sys::recv_fd(&ours) {
                    fakeid::serve(listener, first);
                }
            })
            .map_err(host("start the id supervisor"))?;
        Some((n, theirs, thread))
    } else {
        None
    };
    let mut exec = ExecConfig::new(
        fds_raw,
        uid,
        gid,
        groups,
        DOCKER_CAPS,
        last_cap,
        cwd_c,
        cands,
        argv_c,
        env_c,
        seccomp::filter(ids.fake()),
    );
    exec.controlling_tty = tty;
    exec.console = console.as_ref().map(|(n, _, _)| *n);
    exec.fake_ids = fake.as_ref().map(|(n, _, _)| *n);
    let disk = DiskWatch::new(&upper, limits.disk)?;
    let cgroups = cgroup::Cgroups::create(&limits);
    let result = start_and_wait(
        plan,
        exec,
        &input,
        &limits,
        &cgroups,
        (stdio, extra_fds),
        (lower_fds, base_fd, ids),
        control.as_ref(),
        disk,
    );
    if let Some((_, theirs, relay)) = console {
        // Every process of the container is gone: the relay drains the terminal and stops.
        drop(theirs);
        relay.finish();
    }
    if let Some((_, theirs, thread)) = fake {
        // The supervisor ends with the last filtered process, or now if none was started.
        drop(theirs);
        let _ = thread.join();
    }
    let limit_hit = cgroups.exceeded();
    cgroups.remove();
    let (status, stopped) = result?;
    let limit = match (stopped, limit_hit) {
        (Some(Limit::Timeout), _) => Some(Limit::Timeout),
        (_, Some(l)) => Some(l),
        (stopped, None) => stopped,
    };
    Ok(NativeOutcome {
        status,
        limit,
        not_enforced: cgroups.not_enforced.clone(),
    })
}

/// A socket pair whose second end the program gets at the next free descriptor number (to send
/// kiln a descriptor over): that number, kiln's end, the program's end.
fn descriptor_socket(fds: &mut Vec<(i32, RawFd)>) -> Result<(i32, OwnedFd, OwnedFd), NativeError> {
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| host("socketpair")(e.into()))?;
    let n = fds.iter().map(|(n, _)| *n).max().unwrap_or(2) + 1;
    fds.push((n, theirs.as_raw_fd()));
    Ok((n, ours, theirs))
}

/// `lowers` (bottom first) with every folder kept only at its topmost position.
fn dedup_lowers(lowers: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    let mut top_down: Vec<PathBuf> = lowers
        .into_iter()
        .rev()
        .filter(|l| seen.insert(l.clone()))
        .collect();
    top_down.reverse();
    top_down
}

/// This process's argument and environment areas (fields 48-51 of `/proc/self/stat`).
fn process_areas() -> Vec<(usize, usize)> {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return Vec::new();
    };
    // Fields after the command name, which is in parentheses and may hold anything.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Vec::new();
    };
    let f: Vec<usize> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // Field N is f[N - 3].
    match (f.get(45), f.get(46), f.get(47), f.get(48)) {
        (Some(&a), Some(&b), Some(&c), Some(&d)) => vec![(a, b), (c, d)],
        _ => Vec::new(),
    }
}

/// Clones the sandbox's init, releases it, waits for it; returns the status and whether the
/// timeout killed it.
#[allow(clippy::too_many_arguments)]
fn start_and_wait(
    plan: plan::Plan,
    exec: ExecConfig,
    input: &PlanInput,
    limits: &Limits,
    cgroups: &cgroup::Cgroups,
    fds: ([OwnedFd; 3], Vec<(u32, OwnedFd)>),
    (lower_fds, base_fd, ids): (Vec<OwnedFd>, OwnedFd, Ids),
    control: Option<&(RunControl, bool)>,
    mut disk: DiskWatch,
) -> Result<(i32, Option<Limit>), NativeError> {
    let cloexec = rustix::pipe::PipeFlags::CLOEXEC;
    let (sync_r, sync_w) = rustix::pipe::pipe_with(cloexec).map_err(|e| host("pipe")(e.into()))?;
    let (report_r, report_w) =
        rustix::pipe::pipe_with(cloexec).map_err(|e| host("pipe")(e.into()))?;
    let mut keep: Vec<RawFd> = vec![sync_r.as_raw_fd(), report_w.as_raw_fd()];
    keep.extend(&input.lower_fds);
    keep.push(input.upper_base_fd);
    keep.extend(input.binds.iter().map(|(fd, _)| *fd));
    keep.extend(exec.fds.iter().map(|(_, source)| *source));
    keep.sort_unstable();
    keep.dedup();
    let steps = plan.steps;
    let mut cfg = InitConfig {
        keep,
        sync: sync_r.as_raw_fd(),
        report: report_w.as_raw_fd(),
        slots: vec![-1; plan.slots],
        mount_fds: input
            .lower_fds
            .iter()
            .copied()
            .chain([input.upper_base_fd])
            .chain(input.binds.iter().map(|(fd, _)| *fd))
            .collect(),
        scrub: process_areas(),
        steps,
        rlimits: vec![
            rlimit(libc::RLIMIT_NOFILE, u64::from(limits.files)),
            // With a pids cgroup, that is the limit (and it reports hits); RLIMIT_NPROC, which
            // counts the shared host uid, is then only a backstop.
            rlimit(
                libc::RLIMIT_NPROC,
                if cgroups.enforces_pids() {
                    u64::from(limits.pids).saturating_mul(2)
                } else {
                    u64::from(limits.pids)
                },
            ),
            (libc::RLIMIT_CORE, 0),
            // No one file past the disk limit: the kernel stops it (SIGXFSZ, EFBIG) at once.
            rlimit(libc::RLIMIT_FSIZE, limits.disk),
        ],
        exec,
    };
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if input.network == NativeNetwork::None {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: init_main only makes raw system calls on `cfg`, prepared above.
    let child = unsafe { sys::clone_into(flags as u64, || sys::init_main(&mut cfg)) }
        .map_err(host("clone the sandbox"))?;
    drop((sync_r, report_w, fds, lower_fds, base_fd));
    // Held open until init ends: init takes a hang-up for the death of this process.
    let mut sync_w = fs::File::from(sync_w);
    let released = write_id_maps(child.pid, ids)
        .map_err(host("write the sandbox's id maps"))
        .and_then(|()| {
            cgroups
                .add(child.pid)
                .map_err(host("join the run's cgroups"))
        })
        .and_then(|()| sync_w.write_all(&[1]).map_err(host("start the sandbox")));
    if let Err(e) = released {
        sys::kill_pidfd(child.pidfd.as_fd());
        let _ = sys::wait_pid(child.pid);
        return Err(e);
    }
    let registered = control.and_then(|(c, main)| {
        let pidfd = child.pidfd.try_clone().ok()?;
        Some((c, c.register_native(pidfd, *main)))
    });

    let deadline = Instant::now().checked_add(limits.timeout);
    let mut stopped = None;
    loop {
        let now = Instant::now();
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
        if left.is_zero() {
            sys::kill_pidfd(child.pidfd.as_fd());
            stopped = Some(Limit::Timeout);
            break;
        }
        if disk.over() {
            sys::kill_pidfd(child.pidfd.as_fd());
            stopped = Some(Limit::Disk);
            break;
        }
        let wake = disk
            .next
            .map_or(left, |next| left.min(next.saturating_duration_since(now)));
        let ms = i32::try_from(wake.as_millis()).unwrap_or(i32::MAX).max(1);
        let mut pfd = libc::pollfd {
            fd: child.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            break;
        }
        if r == 0 {
            continue;
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            sys::kill_pidfd(child.pidfd.as_fd());
            break;
        }
    }
    if let Some((c, token)) = registered {
        c.unregister(token);
    }
    let status = sys::wait_pid(child.pid).map_err(host("wait for the sandbox"))?;
    drop(sync_w);
    let mut report = Vec::new();
    fs::File::from(report_r)
        .take(8)
        .read_to_end(&mut report)
        .map_err(host("read the sandbox's report"))?;
    if let (Ok(code), Ok(errno)) = (
        <[u8; 4]>::try_from(report.get(..4).unwrap_or_default()),
        <[u8; 4]>::try_from(report.get(4..8).unwrap_or_default()),
    ) {
        let (code, errno) = (u32::from_ne_bytes(code), i32::from_ne_bytes(errno));
        let source = io::Error::from_raw_os_error(errno);
        let program = cfg
            .exec
            .candidates
            .first()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(match Stage::from_code(code) {
            Some(Stage::Exec) => NativeError::Exec { program, source },
            Some(stage) => NativeError::Setup {
                step: stage.describe().to_owned(),
                source,
            },
            None if code < STAGE_BASE => NativeError::Setup {
                step: usize::try_from(code)
                    .ok()
                    .and_then(|i| cfg.steps.get(i))
                    .map(ToString::to_string)
                    .unwrap_or_else(|| format!("step {code}")),
                source,
            },
            None => NativeError::Setup {
                step: format!("stage {code}"),
                source,
            },
        });
    }
    let code = if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    };
    // Once more, now that nothing writes: a step that failed at the limit (a file stopped by
    // RLIMIT_FSIZE) hit it too. An upper that cannot be walked counts as over: fail closed.
    if stopped.is_none() {
        stopped = match disk.size() {
            _ if disk.limit == u64::MAX => None,
            Some(n) if n > disk.limit || (code != 0 && n >= disk.limit) => Some(Limit::Disk),
            Some(_) => None,
            None => Some(Limit::Disk),
        };
    }
    Ok((code, stopped))
}
