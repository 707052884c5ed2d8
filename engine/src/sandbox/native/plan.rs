//! The namespace and mount plan of one run, computed by pure code.
//!
//! [`build_plan`] turns what the parent learned (layer mounts, the rootfs's missing mount
//! points, network mode, ...) into a list of [`Step`]s that the sandbox's init process
//! executes through the [`Syscall`] seam, so the plan is unit-tested without privileges and
//! the executor does nothing but system calls (no allocation after the clone).

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use super::NativeNetwork;

/// An errno value.
pub(crate) type Errno = i32;

/// Index of a detached mount that setup makes before `pivot_root` and attaches after it.
pub(crate) type Slot = usize;

/// Mount flags (`MS_*`) used by the plan.
pub(crate) const NOSUID: u64 = libc::MS_NOSUID;
pub(crate) const NODEV: u64 = libc::MS_NODEV;
pub(crate) const NOEXEC: u64 = libc::MS_NOEXEC;
pub(crate) const RDONLY: u64 = libc::MS_RDONLY;

/// One setup action of the sandbox's init process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Makes every mount of the new mount namespace private: nothing propagates to the host.
    MakePrivate,
    /// `mount(2)` of a filesystem; with `optional`, a missing target is skipped.
    Mount {
        source: CString,
        target: CString,
        fstype: CString,
        flags: u64,
        data: CString,
        optional: bool,
    },
    /// Bind-mounts `source` onto `target`, then remounts it read-only when `readonly`; with
    /// `optional`, a missing target is skipped.
    Bind {
        source: CString,
        target: CString,
        readonly: bool,
        optional: bool,
    },
    /// Changes the working directory.
    Chdir(CString),
    /// Creates a directory; with `exist_ok`, an existing one is fine.
    Mkdir {
        path: CString,
        mode: u32,
        exist_ok: bool,
    },
    /// Creates a regular file holding `contents`.
    CreateFile {
        path: CString,
        mode: u32,
        contents: Vec<u8>,
    },
    /// Sets the owner, mode and modification time of `path` (not following symlinks).
    SetAttrs {
        path: CString,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: (i64, i64),
    },
    /// Creates the symlink `link` pointing to `target`.
    Symlink { target: CString, link: CString },
    /// Attaches the detached mount `fd` (inherited from the parent) at `target`.
    AttachFd { fd: RawFd, target: CString },
    /// Clones the mount at `source` (a single file or directory) into `slot`.
    CloneTree { source: CString, slot: Slot },
    /// Creates a detached mount of a fresh `fstype` filesystem in `slot`, with `MOUNT_ATTR_*`
    /// attributes `attrs` (through the new mount API, so it is checked before `pivot_root`).
    NewMount {
        fstype: CString,
        attrs: u64,
        slot: Slot,
    },
    /// Attaches the detached mount in `slot` at `target`.
    AttachSlot { slot: Slot, target: CString },
    /// `pivot_root(".", ".")`, detaches the old root, then `chdir("/")`.
    PivotRoot,
    /// Sets the UTS namespace's hostname.
    SetHostname(CString),
    /// Brings the loopback interface of the network namespace up.
    LoopbackUp,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |c: &CStr| c.to_string_lossy().into_owned();
        match self {
            Step::MakePrivate => write!(f, "make mounts private"),
            Step::Mount { target, fstype, .. } => {
                write!(f, "mount {} on {}", s(fstype), s(target))
            }
            Step::Bind { source, target, .. } => {
                write!(f, "bind {} on {}", s(source), s(target))
            }
            Step::Chdir(p) => write!(f, "chdir {}", s(p)),
            Step::Mkdir { path, .. } => write!(f, "mkdir {}", s(path)),
            Step::CreateFile { path, .. } => write!(f, "create {}", s(path)),
            Step::SetAttrs { path, .. } => write!(f, "set attributes of {}", s(path)),
            Step::Symlink { link, .. } => write!(f, "symlink {}", s(link)),
            Step::AttachFd { target, .. } => write!(f, "attach layer mount at {}", s(target)),
            Step::CloneTree { source, .. } => write!(f, "clone mount {}", s(source)),
            Step::NewMount { fstype, .. } => write!(f, "create {} mount", s(fstype)),
            Step::AttachSlot { target, .. } => write!(f, "attach mount at {}", s(target)),
            Step::PivotRoot => write!(f, "pivot_root"),
            Step::SetHostname(h) => write!(f, "set hostname {}", s(h)),
            Step::LoopbackUp => write!(f, "bring loopback up"),
        }
    }
}

/// What the [`Step`]s need from the kernel; [`super::sys::Linux`] is the real one.
pub(crate) trait Syscall {
    fn make_private(&mut self) -> Result<(), Errno>;
    fn mount(
        &mut self,
        source: &CStr,
        target: &CStr,
        fstype: &CStr,
        flags: u64,
        data: &CStr,
    ) -> Result<(), Errno>;
    fn bind(&mut self, source: &CStr, target: &CStr, readonly: bool) -> Result<(), Errno>;
    fn chdir(&mut self, path: &CStr) -> Result<(), Errno>;
    fn mkdir(&mut self, path: &CStr, mode: u32) -> Result<(), Errno>;
    fn create_file(&mut self, path: &CStr, mode: u32, contents: &[u8]) -> Result<(), Errno>;
    fn set_attrs(
        &mut self,
        path: &CStr,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: (i64, i64),
    ) -> Result<(), Errno>;
    fn symlink(&mut self, target: &CStr, link: &CStr) -> Result<(), Errno>;
    fn attach(&mut self, fd: RawFd, target: &CStr) -> Result<(), Errno>;
    fn clone_tree(&mut self, source: &CStr) -> Result<RawFd, Errno>;
    fn new_mount(&mut self, fstype: &CStr, attrs: u64) -> Result<RawFd, Errno>;
    fn pivot_root(&mut self) -> Result<(), Errno>;
    fn set_hostname(&mut self, name: &CStr) -> Result<(), Errno>;
    fn loopback_up(&mut self) -> Result<(), Errno>;
}

/// Runs `steps` through `sys`; detached mounts are kept in `slots` (sized by the plan). On
/// failure, returns the index of the failed step and its errno.
pub(crate) fn execute<S: Syscall>(
    steps: &[Step],
    sys: &mut S,
    slots: &mut [RawFd],
) -> Result<(), (usize, Errno)> {
    for (i, step) in steps.iter().enumerate() {
        let r = match step {
            Step::MakePrivate => sys.make_private(),
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                optional,
            } => skip_missing(sys.mount(source, target, fstype, *flags, data), *optional),
            Step::Bind {
                source,
                target,
                readonly,
                optional,
            } => skip_missing(sys.bind(source, target, *readonly), *optional),
            Step::Chdir(p) => sys.chdir(p),
            Step::Mkdir {
                path,
                mode,
                exist_ok,
            } => match sys.mkdir(path, *mode) {
                Err(libc::EEXIST) if *exist_ok => Ok(()),
                r => r,
            },
            Step::CreateFile {
                path,
                mode,
                contents,
            } => sys.create_file(path, *mode, contents),
            Step::SetAttrs {
                path,
                mode,
                uid,
                gid,
                mtime,
            } => sys.set_attrs(path, *mode, *uid, *gid, *mtime),
            Step::Symlink { target, link } => sys.symlink(target, link),
            Step::AttachFd { fd, target } => sys.attach(*fd, target),
            Step::CloneTree { source, slot } => sys.clone_tree(source).map(|fd| {
                slots[*slot] = fd;
            }),
            Step::NewMount {
                fstype,
                attrs,
                slot,
            } => sys.new_mount(fstype, *attrs).map(|fd| {
                slots[*slot] = fd;
            }),
            Step::AttachSlot { slot, target } => sys.attach(slots[*slot], target),
            Step::PivotRoot => sys.pivot_root(),
            Step::SetHostname(h) => sys.set_hostname(h),
            Step::LoopbackUp => sys.loopback_up(),
        };
        r.map_err(|e| (i, e))?;
    }
    Ok(())
}

fn skip_missing(r: Result<(), Errno>, optional: bool) -> Result<(), Errno> {
    match r {
        Err(libc::ENOENT) if optional => Ok(()),
        r => r,
    }
}

/// The kind of an init-layer entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitKind {
    Dir,
    File,
}

/// A mount point the rootfs lacks, provided by the init layer (a tmpfs lower above the image's
/// layers, as Docker's init layer), so that no mount point is ever created in the upper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitEntry {
    /// Relative path (`etc`, `etc/hosts`).
    pub path: String,
    pub kind: InitKind,
    /// Mode bits (permissions, setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
}

/// The files kiln provides in `/etc` (bind-mounted, never written to the upper).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EtcFile {
    /// `hosts`, `resolv.conf` or `hostname`.
    pub name: &'static str,
    pub contents: Vec<u8>,
}

/// Everything [`build_plan`] needs.
#[derive(Debug, Clone)]
pub(crate) struct PlanInput {
    /// A host folder that setup mounts its scratch tmpfs over (in the
    /// sandbox's own mount namespace only).
    pub scratch: CString,
    /// The idmapped layer mounts, bottom first.
    pub lower_fds: Vec<RawFd>,
    /// The idmapped mount holding the upper and work folders.
    pub upper_base_fd: RawFd,
    /// The upper and work folders relative to that mount (`""` for its root).
    pub upper_rel: String,
    pub work_rel: String,
    /// Mount points the rootfs lacks.
    pub init: Vec<InitEntry>,
    /// The `/etc` files to bind-mount (those the rootfs has as something else are left out).
    pub etc: Vec<EtcFile>,
    /// Host device nodes to bind into `/dev` (`null`, `zero`, ...), those the host has.
    pub devices: Vec<&'static str>,
    pub network: NativeNetwork,
    pub hostname: String,
    /// Bytes the `/dev/shm` tmpfs may hold.
    pub shm_size: u64,
    /// The working directory and its ancestors, outermost first (`/a`, `/a/b`).
    pub cwd_dirs: Vec<String>,
    /// Bind mounts (`run -v`): the detached, idmapped host folder and the folders of its
    /// target, outermost first (the last one is the mount point).
    pub binds: Vec<(RawFd, Vec<String>)>,
}

/// A plan: the steps and how many detached-mount slots they use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    pub slots: usize,
}

/// Device nodes of the minimal `/dev` (bound from the host's).
pub(crate) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Files masked like Docker's default `maskedPaths` (a file gets `/dev/null` bound over it).
const MASKED_FILES: [&str; 6] = [
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/sched_debug",
];
/// Directories masked like Docker's (an empty read-only tmpfs over them).
const MASKED_DIRS: [&str; 5] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Docker's default `readonlyPaths`.
const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn c(s: &str) -> CString {
    // Callers pass kiln's own literals or strings validated to hold no NUL byte.
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Computes the setup steps of a run.
pub(crate) fn build_plan(input: &PlanInput) -> Plan {
    let mut steps = Vec::new();
    let mut slots = 0;
    let mut slot = || {
        slots += 1;
        slots - 1
    };
    let mkdir = |path: &str, mode: u32| Step::Mkdir {
        path: c(path),
        mode,
        exist_ok: false,
    };
    let mount = |source: &str, target: &str, fstype: &str, flags: u64, data: &str| Step::Mount {
        source: c(source),
        target: c(target),
        fstype: c(fstype),
        flags,
        data: c(data),
        optional: false,
    };

    // Before pivot_root, in host paths: a scratch tmpfs holds the layer mounts, the init
    // layer, kiln's /etc files and the overlay's mount point.
    steps.push(Step::MakePrivate);
    steps.push(Step::Mount {
        source: c("tmpfs"),
        target: input.scratch.clone(),
        fstype: c("tmpfs"),
        flags: NOSUID | NODEV,
        data: c("mode=0700"),
        optional: false,
    });
    steps.push(Step::Chdir(input.scratch.clone()));
    steps.push(mkdir("i", 0o755));
    for e in &input.init {
        let path = c(&format!("i/{}", e.path));
        steps.push(match e.kind {
            InitKind::Dir => Step::Mkdir {
                path: path.clone(),
                mode: 0o700,
                exist_ok: false,
            },
            InitKind::File => Step::CreateFile {
                path: path.clone(),
                mode: 0o600,
                contents: Vec::new(),
            },
        });
        steps.push(Step::SetAttrs {
            path,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
        });
    }
    for (k, fd) in input.lower_fds.iter().enumerate() {
        steps.push(mkdir(&format!("l{k}"), 0o700));
        steps.push(Step::AttachFd {
            fd: *fd,
            target: c(&format!("l{k}")),
        });
    }
    steps.push(mkdir("u", 0o700));
    steps.push(Step::AttachFd {
        fd: input.upper_base_fd,
        target: c("u"),
    });
    steps.push(mkdir("r", 0o755));
    let mut lowerdir = String::from("i");
    for k in (0..input.lower_fds.len()).rev() {
        lowerdir.push_str(&format!(":l{k}"));
    }
    let sub = |rel: &str| {
        if rel.is_empty() {
            "u".to_owned()
        } else {
            format!("u/{rel}")
        }
    };
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},userxattr,index=off,redirect_dir=nofollow,metacopy=off",
        sub(&input.upper_rel),
        sub(&input.work_rel)
    );
    steps.push(mount("overlay", "r", "overlay", 0, &data));

    steps.push(mkdir("f", 0o755));
    let mut etc_slots = Vec::new();
    for file in &input.etc {
        let path = c(&format!("f/{}", file.name));
        steps.push(Step::CreateFile {
            path: path.clone(),
            mode: 0o644,
            contents: file.contents.clone(),
        });
        let s = slot();
        steps.push(Step::CloneTree {
            source: path,
            slot: s,
        });
        etc_slots.push((s, file.name));
    }
    let mut dev_slots = Vec::new();
    for dev in &input.devices {
        let s = slot();
        steps.push(Step::CloneTree {
            source: c(&format!("/dev/{dev}")),
            slot: s,
        });
        dev_slots.push((s, *dev));
    }
    let proc_slot = slot();
    steps.push(Step::NewMount {
        fstype: c("proc"),
        attrs: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC,
        slot: proc_slot,
    });
    // sysfs needs a network namespace of the sandbox's own.
    let sys_slot = (input.network == NativeNetwork::None).then(|| {
        let s = slot();
        steps.push(Step::NewMount {
            fstype: c("sysfs"),
            attrs: libc::MOUNT_ATTR_RDONLY
                | libc::MOUNT_ATTR_NOSUID
                | libc::MOUNT_ATTR_NODEV
                | libc::MOUNT_ATTR_NOEXEC,
            slot: s,
        });
        s
    });
    steps.push(Step::Chdir(c("r")));
    steps.push(Step::PivotRoot);

    // After pivot_root every path resolves inside the rootfs.
    steps.push(Step::AttachSlot {
        slot: proc_slot,
        target: c("/proc"),
    });
    if let Some(s) = sys_slot {
        steps.push(Step::AttachSlot {
            slot: s,
            target: c("/sys"),
        });
    }
    steps.push(mount(
        "tmpfs",
        "/dev",
        "tmpfs",
        NOSUID | libc::MS_STRICTATIME,
        "mode=755,size=65536k",
    ));
    for (s, dev) in dev_slots {
        let target = format!("/dev/{dev}");
        steps.push(Step::CreateFile {
            path: c(&target),
            mode: 0o666,
            contents: Vec::new(),
        });
        steps.push(Step::AttachSlot {
            slot: s,
            target: c(&target),
        });
    }
    steps.push(mkdir("/dev/pts", 0o755));
    steps.push(mount(
        "devpts",
        "/dev/pts",
        "devpts",
        NOSUID | NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    ));
    steps.push(mkdir("/dev/shm", 0o1777));
    steps.push(mount(
        "shm",
        "/dev/shm",
        "tmpfs",
        NOSUID | NODEV | NOEXEC,
        &format!("mode=1777,size={}k", input.shm_size.div_ceil(1024).max(1)),
    ));
    steps.push(mkdir("/dev/mqueue", 0o755));
    steps.push(mount(
        "mqueue",
        "/dev/mqueue",
        "mqueue",
        NOSUID | NODEV | NOEXEC,
        "",
    ));
    for (target, link) in [
        ("pts/ptmx", "/dev/ptmx"),
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        steps.push(Step::Symlink {
            target: c(target),
            link: c(link),
        });
    }
    for (s, name) in etc_slots {
        steps.push(Step::AttachSlot {
            slot: s,
            target: c(&format!("/etc/{name}")),
        });
    }
    for path in MASKED_FILES {
        steps.push(Step::Bind {
            source: c("/dev/null"),
            target: c(path),
            readonly: false,
            optional: true,
        });
    }
    for path in MASKED_DIRS {
        steps.push(Step::Mount {
            source: c("tmpfs"),
            target: c(path),
            fstype: c("tmpfs"),
            flags: RDONLY | NOSUID | NODEV | NOEXEC,
            data: c("size=0"),
            optional: true,
        });
    }
    for path in READONLY {
        steps.push(Step::Bind {
            source: c(path),
            target: c(path),
            readonly: true,
            optional: true,
        });
    }
    // Bind mounts: their targets resolve inside the rootfs (after pivot_root).
    for (fd, dirs) in &input.binds {
        for dir in dirs {
            steps.push(Step::Mkdir {
                path: c(dir),
                mode: 0o755,
                exist_ok: true,
            });
        }
        if let Some(target) = dirs.last() {
            steps.push(Step::AttachFd {
                fd: *fd,
                target: c(target),
            });
        }
    }
    for dir in &input.cwd_dirs {
        steps.push(Step::Mkdir {
            path: c(dir),
            mode: 0o755,
            exist_ok: true,
        });
    }
    steps.push(Step::SetHostname(c(&input.hostname)));
    if input.network == NativeNetwork::None {
        steps.push(Step::LoopbackUp);
    }
    Plan { steps, slots }
}

/// `/etc/hosts` for a sandbox without network: loopback names only.
pub(crate) fn loopback_hosts(hostname: &str) -> Vec<u8> {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
    .into_bytes()
}

/// `/etc/resolv.conf` for a sandbox without network: no name server.
pub(crate) const NO_RESOLV: &[u8] = b"# kiln: --network=none, no name server\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn input(network: NativeNetwork) -> PlanInput {
        PlanInput {
            scratch: c("/tmp/step/work"),
            lower_fds: vec![10, 11],
            upper_base_fd: 12,
            upper_rel: "upper".into(),
            work_rel: "work".into(),
            init: vec![
                InitEntry {
                    path: "etc".into(),
                    kind: InitKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: (5, 0),
                },
                InitEntry {
                    path: "etc/hosts".into(),
                    kind: InitKind::File,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: (0, 0),
                },
            ],
            etc: vec![EtcFile {
                name: "hosts",
                contents: loopback_hosts("box"),
            }],
            devices: DEVICES.to_vec(),
            network,
            hostname: "box".into(),
            shm_size: 64 << 20,
            cwd_dirs: vec!["/app".into(), "/app/src".into()],
            binds: Vec::new(),
        }
    }

    fn find(plan: &Plan, pred: impl Fn(&Step) -> bool) -> Vec<(usize, &Step)> {
        plan.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| pred(s))
            .collect()
    }

    fn pivot(plan: &Plan) -> usize {
        plan.steps
            .iter()
            .position(|s| *s == Step::PivotRoot)
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn overlay_uses_init_layer_on_top_and_plain_diff_options() {
        let plan = build_plan(&input(NativeNetwork::None));
        let overlay = find(
            &plan,
            |s| matches!(s, Step::Mount { fstype, .. } if fstype.as_bytes() == b"overlay"),
        );
        assert_eq!(overlay.len(), 1);
        let Step::Mount { data, target, .. } = overlay[0].1 else {
            unreachable!()
        };
        assert_eq!(target.as_bytes(), b"r");
        assert_eq!(
            data.to_str().ok(),
            Some("lowerdir=i:l1:l0,upperdir=u/upper,workdir=u/work,userxattr,index=off,redirect_dir=nofollow,metacopy=off")
        );
        assert!(overlay[0].0 < pivot(&plan));
        // The layer mounts are attached before the overlay is made.
        let attach = find(&plan, |s| matches!(s, Step::AttachFd { .. }));
        assert_eq!(attach.len(), 3);
        assert!(attach.iter().all(|(i, _)| *i < overlay[0].0));
        // The init layer gets the missing mount points with their attributes.
        assert!(plan.steps.contains(&Step::SetAttrs {
            path: c("i/etc"),
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: (5, 0)
        }));
    }

    #[test]
    fn proc_is_made_before_pivot_and_attached_after_with_safe_flags() {
        let plan = build_plan(&input(NativeNetwork::None));
        let p = pivot(&plan);
        let made = find(
            &plan,
            |s| matches!(s, Step::NewMount { fstype, .. } if fstype.as_bytes() == b"proc"),
        );
        let Step::NewMount { attrs, slot, .. } = made[0].1 else {
            unreachable!()
        };
        assert!(made[0].0 < p);
        let want = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
        assert_eq!(*attrs, want);
        let attached = find(&plan, |s| {
            *s == Step::AttachSlot {
                slot: *slot,
                target: c("/proc"),
            }
        });
        assert!(attached[0].0 > p);
        // Every mount made after pivot_root targets an absolute path inside the rootfs.
        for s in &plan.steps[p..] {
            if let Step::Mount { target, .. }
            | Step::AttachSlot { target, .. }
            | Step::Bind { target, .. } = s
            {
                assert!(target.as_bytes().starts_with(b"/"), "{s}");
            }
        }
    }

    #[test]
    fn dev_is_minimal() {
        let plan = build_plan(&input(NativeNetwork::None));
        let p = pivot(&plan);
        for dev in DEVICES {
            let cloned = find(
                &plan,
                |s| matches!(s, Step::CloneTree { source, .. } if source.as_bytes() == format!("/dev/{dev}").as_bytes()),
            );
            assert_eq!(cloned.len(), 1, "{dev}");
            assert!(cloned[0].0 < p);
            let Step::CloneTree { slot, .. } = cloned[0].1 else {
                unreachable!()
            };
            let target = c(&format!("/dev/{dev}"));
            assert!(plan.steps.contains(&Step::AttachSlot {
                slot: *slot,
                target
            }));
        }
        assert!(plan.steps.contains(&Step::Mount {
            source: c("devpts"),
            target: c("/dev/pts"),
            fstype: c("devpts"),
            flags: NOSUID | NOEXEC,
            data: c("newinstance,ptmxmode=0666,mode=0620"),
            optional: false
        }));
        assert!(plan.steps.contains(&Step::Symlink {
            target: c("/proc/self/fd/2"),
            link: c("/dev/stderr")
        }));
        let shm = find(
            &plan,
            |s| matches!(s, Step::Mount { target, .. } if target.as_bytes() == b"/dev/shm"),
        );
        assert_eq!(shm.len(), 1);
        // /proc/kcore is masked, /proc/sys read-only.
        assert!(plan.steps.contains(&Step::Bind {
            source: c("/dev/null"),
            target: c("/proc/kcore"),
            readonly: false,
            optional: true
        }));
        assert!(plan.steps.contains(&Step::Bind {
            source: c("/proc/sys"),
            target: c("/proc/sys"),
            readonly: true,
            optional: true
        }));
    }

    #[test]
    fn etc_files_are_bound_not_created_in_the_rootfs() {
        let plan = build_plan(&input(NativeNetwork::None));
        let p = pivot(&plan);
        // The file's contents live in the scratch tmpfs ...
        let made = find(
            &plan,
            |s| matches!(s, Step::CreateFile { path, .. } if path.as_bytes() == b"f/hosts"),
        );
        assert_eq!(made.len(), 1);
        assert!(made[0].0 < p);
        // ... and the only thing done to the rootfs's /etc/hosts is a mount over it.
        let touching: Vec<_> = plan.steps[p..]
            .iter()
            .filter(|s| format!("{s}").contains("/etc/hosts"))
            .collect();
        assert_eq!(touching.len(), 1);
        assert!(matches!(touching[0], Step::AttachSlot { .. }));
        let Step::CreateFile { contents, .. } = made[0].1 else {
            unreachable!()
        };
        assert!(String::from_utf8_lossy(contents).contains("127.0.0.1\tlocalhost"));
    }

    #[test]
    fn network_none_vs_host() {
        let none = build_plan(&input(NativeNetwork::None));
        assert!(none.steps.contains(&Step::LoopbackUp));
        assert!(none.steps.contains(&Step::AttachSlot {
            slot: none.slots - 1,
            target: c("/sys")
        }));
        let host = build_plan(&input(NativeNetwork::Host));
        assert!(!host.steps.contains(&Step::LoopbackUp));
        assert!(find(
            &host,
            |s| matches!(s, Step::NewMount { fstype, .. } if fstype.as_bytes() == b"sysfs")
        )
        .is_empty());
        assert_eq!(host.slots + 1, none.slots);
    }

    #[test]
    fn cwd_is_created_after_pivot() {
        let plan = build_plan(&input(NativeNetwork::None));
        let p = pivot(&plan);
        let dirs = find(&plan, |s| matches!(s, Step::Mkdir { exist_ok: true, .. }));
        assert_eq!(dirs.len(), 2);
        assert!(dirs.iter().all(|(i, _)| *i > p));
    }

    /// Records what runs, failing one call.
    struct Recorder {
        calls: Vec<String>,
        fail_on: &'static str,
        errno: Errno,
    }

    impl Recorder {
        fn call(&mut self, what: String) -> Result<(), Errno> {
            let fail = what.starts_with(self.fail_on);
            self.calls.push(what);
            if fail {
                Err(self.errno)
            } else {
                Ok(())
            }
        }
    }

    impl Syscall for Recorder {
        fn make_private(&mut self) -> Result<(), Errno> {
            self.call("private".into())
        }
        fn mount(
            &mut self,
            _: &CStr,
            target: &CStr,
            fstype: &CStr,
            _: u64,
            _: &CStr,
        ) -> Result<(), Errno> {
            self.call(format!("mount {fstype:?} {target:?}"))
        }
        fn bind(&mut self, source: &CStr, target: &CStr, ro: bool) -> Result<(), Errno> {
            self.call(format!("bind {source:?} {target:?} {ro}"))
        }
        fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
            self.call(format!("chdir {path:?}"))
        }
        fn mkdir(&mut self, path: &CStr, _: u32) -> Result<(), Errno> {
            self.call(format!("mkdir {path:?}"))
        }
        fn create_file(&mut self, path: &CStr, _: u32, _: &[u8]) -> Result<(), Errno> {
            self.call(format!("create {path:?}"))
        }
        fn set_attrs(
            &mut self,
            path: &CStr,
            _: u32,
            _: u32,
            _: u32,
            _: (i64, i64),
        ) -> Result<(), Errno> {
            self.call(format!("attrs {path:?}"))
        }
        fn symlink(&mut self, _: &CStr, link: &CStr) -> Result<(), Errno> {
            self.call(format!("symlink {link:?}"))
        }
        fn attach(&mut self, fd: RawFd, target: &CStr) -> Result<(), Errno> {
            self.call(format!("attach {fd} {target:?}"))
        }
        fn clone_tree(&mut self, source: &CStr) -> Result<RawFd, Errno> {
            self.call(format!("clone {source:?}"))
                .map(|()| 100 + self.calls.len() as RawFd)
        }
        fn new_mount(&mut self, fstype: &CStr, _: u64) -> Result<RawFd, Errno> {
            self.call(format!("new {fstype:?}"))
                .map(|()| 100 + self.calls.len() as RawFd)
        }
        fn pivot_root(&mut self) -> Result<(), Errno> {
            self.call("pivot".into())
        }
        fn set_hostname(&mut self, name: &CStr) -> Result<(), Errno> {
            self.call(format!("hostname {name:?}"))
        }
        fn loopback_up(&mut self) -> Result<(), Errno> {
            self.call("lo".into())
        }
    }

    #[test]
    fn execute_runs_steps_in_order_and_reports_the_failed_one() {
        let plan = build_plan(&input(NativeNetwork::None));
        let mut rec = Recorder {
            calls: Vec::new(),
            fail_on: "never",
            errno: 0,
        };
        let mut slots = vec![-1; plan.slots];
        assert_eq!(execute(&plan.steps, &mut rec, &mut slots), Ok(()));
        assert_eq!(rec.calls.len(), plan.steps.len());
        assert!(slots.iter().all(|fd| *fd > 100));
        // Detached mounts are attached from the slot they were made in.
        let proc_new = rec
            .calls
            .iter()
            .position(|c| c == "new \"proc\"")
            .map(|i| 100 + i as RawFd + 1);
        assert!(rec
            .calls
            .contains(&format!("attach {} \"/proc\"", proc_new.unwrap_or(0))));

        let mut rec = Recorder {
            calls: Vec::new(),
            fail_on: "pivot",
            errno: libc::EINVAL,
        };
        let mut slots = vec![-1; plan.slots];
        assert_eq!(
            execute(&plan.steps, &mut rec, &mut slots),
            Err((pivot(&plan), libc::EINVAL))
        );

        // A missing optional target is skipped; a missing required one is not.
        let mut rec = Recorder {
            calls: Vec::new(),
            fail_on: "bind \"/dev/null\"",
            errno: libc::ENOENT,
        };
        let mut slots = vec![-1; plan.slots];
        assert_eq!(execute(&plan.steps, &mut rec, &mut slots), Ok(()));
        let mut rec = Recorder {
            calls: Vec::new(),
            fail_on: "mkdir \"r\"",
            errno: libc::ENOENT,
        };
        assert!(execute(&plan.steps, &mut rec, &mut slots).is_err());
    }
}
