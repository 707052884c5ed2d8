//! Hostile RUN steps in the *native* sandbox (Debian's own binaries, Linux namespaces): each test
//! runs an attack and fails if the attack works. `run.rs`
//! (`hostile_native_steps_stay_in_their_sandbox`) covers reading a host file, writing outside the
//! rootfs, mount, the network under `none`, writing `/proc/self/exe`, survivors and fork bombs;
//! this file covers ptrace, kernel modules and kernel knobs, the runc CVE-2024-21626 working
//! directory tricks (descriptors kiln leaves open until `execve`), kiln's command line seen
//! through `/proc/1`, memory bombs and symlinks that a later COPY follows.
//!
//! Attacks that need a system call the shell cannot make use small Perl programs (the Debian
//! minbase image has `perl-base`, no compiler) copied in from the build context; they print one
//! `name result errno` line per attempt, which the tests read back from the image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::harness::{image_tree, Env, FileInfo};

const EPERM: i64 = 1;
const ESRCH: i64 = 3;
const ENOSYS: i64 = 38;

/// What `kiln build` printed and how it ended.
struct Built {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Built {
    /// The last 3000 bytes of stderr, for assertion messages.
    fn tail(&self) -> &str {
        let mut start = self.stderr.len().saturating_sub(3000);
        while !self.stderr.is_char_boundary(start) {
            start += 1;
        }
        &self.stderr[start..]
    }
}

/// Writes a context with `dockerfile` and `files`, builds it as `me/hostile` with
/// `--run-timeout 60s` and `extra` flags.
fn build(env: &Env, dockerfile: &str, files: &[(&str, &[u8])], extra: &[&str]) -> Built {
    let ctx = env.path("ctx");
    if ctx.exists() {
        std::fs::remove_dir_all(&ctx).expect("clear the previous build context");
    }
    std::fs::create_dir_all(&ctx).expect("create the build context");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("write the Dockerfile");
    for (name, content) in files {
        env.write(&format!("ctx/{name}"), content);
    }
    let mut args = vec![
        "build",
        "--progress=plain",
        "--run-timeout",
        "60s",
        "-t",
        "me/hostile",
    ];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().expect("UTF-8 temp path"));
    let out = env.kiln().args(&args).output().expect("spawn kiln");
    Built {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`build`] that must succeed and must have run a step in the native sandbox.
fn build_native_ok(
    env: &Env,
    dockerfile: &str,
    files: &[(&str, &[u8])],
) -> BTreeMap<String, FileInfo> {
    let b = build(env, dockerfile, files, &[]);
    assert_eq!(b.code, 0, "build failed:\n{}", b.tail());
    assert!(
        b.stderr.contains("(native sandbox)"),
        "the steps must run natively:\n{}",
        b.tail()
    );
    image_tree(&env.root(), "me/hostile")
}

fn content(tree: &BTreeMap<String, FileInfo>, p: &str) -> String {
    String::from_utf8_lossy(
        &tree
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing from the image: {:?}", tree.keys()))
            .content,
    )
    .into_owned()
}

/// The `name result errno` lines a probe wrote, by name.
fn probe_results(text: &str) -> BTreeMap<String, (i64, i64)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?.to_owned();
            let r = w.next()?.parse().ok()?;
            let errno = w.next()?.parse().ok()?;
            Some((name, (r, errno)))
        })
        .collect()
}

/// The last line of a file the step wrote (`...; echo $?` leaves the status there).
fn last_line(tree: &BTreeMap<String, FileInfo>, p: &str) -> String {
    content(tree, p)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// A file or folder on the host, removed when the test ends (pass or fail).
struct HostPath(PathBuf);

impl Drop for HostPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// A host process, killed when the test ends.
struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A value unique to this test run, for marker names and contents.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Tries to reach a host process by pid (ptrace attach and seize, `kill(pid, 0)`,
/// `process_vm_readv`), then ptrace-attaches to a child of its own.
const PTRACE_PL: &str = r#"use strict; use warnings;
my $pid = 0 + shift @ARGV;
sub rec { my ($name, $r) = @_; my $e = $r == -1 ? 0 + $! : 0; print "$name $r $e\n"; }
$! = 0; rec("ptrace_attach", syscall(101, 16, $pid, 0, 0));
$! = 0; rec("ptrace_seize", syscall(101, 0x4206, $pid, 0, 0));
$! = 0; rec("kill0", kill(0, $pid) ? 0 : -1);
my $buf = "\0" x 16;
my $local = pack("pQ", $buf, 16);
my $remote = pack("QQ", 0x400000, 16);
$! = 0; rec("process_vm_readv", syscall(310, $pid, $local, 1, $remote, 1, 0));
my $child = fork();
if (defined $child && $child == 0) { sleep 30; exit 0; }
$! = 0; rec("ptrace_sibling", syscall(101, 16, $child, 0, 0));
kill 9, $child; waitpid $child, 0;
"#;

#[test]
fn hostile_native_ptrace_cannot_reach_host_processes() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let tag = std::process::id();
    let marker = format!("1234{tag}");
    let host = HostProcess(
        Command::new("sleep")
            .arg(&marker)
            .stdin(Stdio::null())
            .spawn()
            .expect("start a host sleep"),
    );
    let hostpid = host.0.id();
    let tracer = |pid: u32| -> String {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("the host process is still running")
            .lines()
            .find(|l| l.starts_with("TracerPid:"))
            .unwrap_or("TracerPid: missing")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(tracer(hostpid), "TracerPid: 0", "traced before the build");
    let df = format!(
        "FROM debian:bookworm\n\
         COPY ptrace.pl /ptrace.pl\n\
         RUN for d in /proc/[0-9]*; do printf '%s: ' \"$d\"; tr '\\0' ' ' < \"$d/cmdline\"; echo; done > /r-procs; \
             if [ -e /proc/{hostpid} ]; then echo visible; else echo hidden; fi > /r-visible; \
             perl /ptrace.pl {hostpid} > /r-ptrace 2>&1; true\n"
    );
    let tree = build_native_ok(&env, &df, &[("ptrace.pl", PTRACE_PL.as_bytes())]);

    // The host process is invisible in the step's pid namespace.
    let procs = content(&tree, "r-procs");
    assert!(
        !procs
            .lines()
            .any(|l| l.contains(&format!("sleep {marker}"))),
        "the host process is visible in the sandbox:\n{procs}"
    );
    assert!(
        procs.lines().count() >= 2,
        "the step should see its own processes:\n{procs}"
    );
    assert_eq!(last_line(&tree, "r-visible"), "hidden", "{procs}");

    // Every way to touch it by pid fails, with ESRCH (not in the namespace) or EPERM (seccomp).
    let text = content(&tree, "r-ptrace");
    let results = probe_results(&text);
    for name in ["ptrace_attach", "ptrace_seize", "kill0", "process_vm_readv"] {
        let (r, errno) = *results
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the probe's output:\n{text}"));
        assert_eq!(r, -1, "{name} on host pid {hostpid} succeeded:\n{text}");
        assert!(
            errno == ESRCH || errno == EPERM,
            "{name} on host pid {hostpid}: unexpected errno {errno}:\n{text}"
        );
    }
    // Docker allows tracing a sibling of the same uid (kernel >= 4.8); kiln's seccomp filter
    // denies ptrace altogether. Either is safe, so this is only reported.
    let sibling = results.get("ptrace_sibling").copied();
    eprintln!("ptrace of a process in the same sandbox: {sibling:?} (result, errno)");
    assert!(sibling.is_some(), "the probe did not finish:\n{text}");

    // The host process runs on, untraced.
    assert_eq!(
        tracer(hostpid),
        "TracerPid: 0",
        "the host process got traced"
    );
    let mut host = host;
    assert!(
        host.0.try_wait().expect("wait on the host sleep").is_none(),
        "the host process died"
    );
}

/// Tries `init_module` with an ELF-looking image, `finit_module` on a binary of the image and
/// `delete_module`.
const MODULES_PL: &str = r#"use strict; use warnings;
sub rec { my ($name, $r) = @_; my $e = $r == -1 ? 0 + $! : 0; print "$name $r $e\n"; }
my $image = "\x7fELF" . ("\0" x 4092);
my $params = "";
my $name = "loop";
$! = 0; rec("init_module", syscall(175, $image, length($image), $params));
open(my $f, "<", "/bin/true") or die "open /bin/true: $!";
$! = 0; rec("finit_module", syscall(313, fileno($f), $params, 0));
$! = 0; rec("delete_module", syscall(176, $name, 0));
"#;

/// Kernel knobs that run a host program as root: changing any of them is an escape.
const HOST_KNOBS: [&str; 3] = [
    "/proc/sys/kernel/modprobe",
    "/proc/sys/kernel/core_pattern",
    "/sys/kernel/uevent_helper",
];

#[test]
fn hostile_native_kernel_modules_and_helper_knobs_are_out_of_reach() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let before: Vec<Option<String>> = HOST_KNOBS
        .iter()
        .map(|p| std::fs::read_to_string(p).ok())
        .collect();
    let evil = format!("/tmp/kiln-evil-{}", unique());
    let df = format!(
        "FROM debian:bookworm\n\
         COPY modules.pl /modules.pl\n\
         RUN perl /modules.pl > /r-modules 2>&1; \
             (echo {evil} > /proc/sys/kernel/modprobe) > /r-modprobe 2>&1; echo $? >> /r-modprobe; \
             (echo '|{evil} %p' > /proc/sys/kernel/core_pattern) > /r-core 2>&1; echo $? >> /r-core; \
             (echo {evil} > /sys/kernel/uevent_helper) > /r-uevent 2>&1; echo $? >> /r-uevent; \
             (echo 1 > /proc/sys/kernel/modules_disabled) > /r-disable 2>&1; echo $? >> /r-disable; \
             true\n"
    );
    let tree = build_native_ok(&env, &df, &[("modules.pl", MODULES_PL.as_bytes())]);

    let text = content(&tree, "r-modules");
    let results = probe_results(&text);
    for name in ["init_module", "finit_module", "delete_module"] {
        let (r, errno) = *results
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the probe's output:\n{text}"));
        assert_eq!(r, -1, "{name} succeeded:\n{text}");
        // EPERM from the seccomp filter (or a missing capability); ENOSYS from a kernel
        // without module support. Anything else (EFAULT, ENOEXEC, ENOENT) means the call
        // reached the module loader.
        assert!(
            errno == EPERM || errno == ENOSYS,
            "{name} reached the kernel's module loader (errno {errno}):\n{text}"
        );
    }
    for f in ["r-modprobe", "r-core", "r-uevent", "r-disable"] {
        assert_ne!(
            last_line(&tree, f),
            "0",
            "{f}: the write succeeded:\n{}",
            content(&tree, f)
        );
    }
    let after: Vec<Option<String>> = HOST_KNOBS
        .iter()
        .map(|p| std::fs::read_to_string(p).ok())
        .collect();
    for ((knob, b), a) in HOST_KNOBS.iter().zip(&before).zip(&after) {
        assert_eq!(b, a, "{knob} changed on the host");
        assert!(
            !a.as_deref().unwrap_or("").contains("kiln-evil"),
            "{knob} on the host points at the step's program"
        );
    }
}

#[test]
fn hostile_native_workdir_through_proc_fds_never_reaches_the_host() {
    // runc CVE-2024-21626: a descriptor to a host folder leaked into the container, and
    // `WORKDIR /proc/self/fd/N` made it the step's working directory, outside the rootfs, from
    // where `../../..` walked the host. The descriptors a leak would use are whatever the
    // sandbox's init inherited from kiln, at kiln's own numbers, so the scan is wide.
    //
    // A step whose working directory is outside its rootfs then tries what a leaked folder
    // allows: read the host marker by relative paths, write a probe file there, and, if the
    // folder looks like kiln's scratch folder (`$KILN_ROOT/kiln/tmp`, with the step's upper
    // `work-*` beside the overlay's `kiln-work-*`), swap the upper for the symlink
    // `../../kiln-loot-*`, so that kiln packs a loot folder of the store into the step's layer.
    // The loot is in `$KILN_ROOT` and in `$KILN_ROOT/kiln`, as kiln may follow the symlink
    // where the step left it (`kiln/tmp/`) or after moving it one level down
    // (`kiln/tmp/snapshot-*/`).
    let env = Env::new();
    crate::harness::debian_base(&env);
    let id = unique();
    let marker_path = PathBuf::from(format!("/var/tmp/kiln-marker-{id}"));
    let marker = format!("kiln-marker-content-{id}");
    std::fs::write(&marker_path, format!("{marker}\n")).expect("write the host marker");
    let _marker_guard = HostPath(marker_path.clone());
    let loot = format!("kiln-loot-content-{id}");
    let loot_dir = format!("kiln-loot-{id}");
    for dir in [env.root(), env.root().join("kiln")] {
        std::fs::create_dir_all(dir.join(&loot_dir)).expect("create the loot folder");
        std::fs::write(
            dir.join(&loot_dir).join("loot"),
            format!("{loot} from {}\n", dir.display()),
        )
        .expect("write the loot");
    }
    let probe = format!("kiln-escape-probe-{id}");
    let rel = |depth: usize| format!("{}var/tmp/kiln-marker-{id}", "../".repeat(depth));
    let attack = format!(
        "(cat {r3} {r4} {r8}; ls -la . .. ../../..) > /r-read 2>&1; \
         if [ . -ef \"$(readlink /proc/self/cwd)\" ]; then w=inside; else w=OUTSIDE; fi; echo $w > /r-where; \
         if [ $w = OUTSIDE ]; then \
             echo escaped > ./{probe}; \
             for u in work-*; do [ -d \"$u\" ] && mv \"$u\" \"$u.x\" && ln -s ../../{loot_dir} \"$u\"; done; \
         fi 2> /dev/null; true",
        r3 = rel(3),
        r4 = rel(4),
        r8 = rel(8),
    );
    let mut workdirs: Vec<String> = (3..=128).map(|n| format!("/proc/self/fd/{n}")).collect();
    workdirs.extend(
        [
            "/proc/thread-self/fd/5",
            "/dev/fd/4",
            "/proc/1/cwd",
            "/proc/1/root",
            "/proc/self/cwd",
        ]
        .map(String::from),
    );
    let mut ran = Vec::new();
    let mut violations = Vec::new();
    for workdir in &workdirs {
        let df = format!("FROM debian:bookworm\nWORKDIR {workdir}\nRUN {attack}\n");
        let b = build(&env, &df, &[], &[]);
        if b.code != 0 && b.code != 1 {
            violations.push(format!(
                "WORKDIR {workdir}: exit {} (0 or 1 expected): {}",
                b.code,
                b.stderr.lines().last().unwrap_or("")
            ));
        }
        assert!(
            !b.stderr.contains("panicked"),
            "WORKDIR {workdir}: kiln panicked:\n{}",
            b.tail()
        );
        if b.stderr.contains(&marker) || b.stdout.contains(&marker) {
            violations.push(format!("WORKDIR {workdir}: the host marker was read"));
        }
        if let Some(found) = find_named(env.dir.path(), &probe) {
            violations.push(format!(
                "WORKDIR {workdir}: the step wrote on the host: {}",
                found.display()
            ));
            let _ = std::fs::remove_file(found);
        }
        if b.code == 0 {
            let tree = image_tree(&env.root(), "me/hostile");
            let where_ = tree
                .get("r-where")
                .map(|_| last_line(&tree, "r-where"))
                .unwrap_or_else(|| {
                    "r-where is missing: the layer is not what the step wrote".to_owned()
                });
            if where_ != "inside" {
                violations.push(format!(
                    "WORKDIR {workdir}: the step's working directory is outside its rootfs ({where_}); it saw:\n{}",
                    tree.get("r-read")
                        .map(|_| content(&tree, "r-read"))
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| !l.starts_with("cat:"))
                        .take(8)
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            for (needle, what) in [(&marker, "the host marker"), (&loot, "the store's loot")] {
                if let Some(path) = holder(&tree, needle) {
                    violations.push(format!(
                        "WORKDIR {workdir}: {what} reached the image at /{path}: {}",
                        content(&tree, &path).trim_end()
                    ));
                }
            }
            ran.push(workdir.clone());
        } else if b.code == 1 && !b.stderr.contains("Dockerfile:3") {
            violations.push(format!(
                "WORKDIR {workdir}: the failure does not name the step:\n{}",
                b.tail()
            ));
        }
    }
    eprintln!("steps that ran: {ran:?}");
    assert!(
        ran.contains(&"/proc/self/cwd".to_owned()),
        "WORKDIR /proc/self/cwd (the root) should run: {ran:?}"
    );
    assert!(
        violations.is_empty(),
        "{} WORKDIR attacks worked:\n{}",
        violations.len(),
        violations.join("\n")
    );

    // The same walks from a normal working directory, through /proc magic links.
    let df = format!(
        "FROM debian:bookworm\n\
         RUN (cat /proc/1/cwd/{r} /proc/1/root/var/tmp/kiln-marker-{id} /proc/self/root/../../{r} \
                  /proc/self/cwd/{r}; \
              cd /proc/self/cwd/.. && ls -la && cat {r}; \
              cd /proc/1/cwd/../../.. && ls -la && cat {r}; \
              for n in $(seq 3 128); do cat /proc/self/fd/$n/{r} /proc/self/fd/$n/var/tmp/kiln-marker-{id}; done; \
              ls -la /proc/self/fd/) > /r-walks 2>&1; true\n",
        r = rel(8),
    );
    let tree = build_native_ok(&env, &df, &[]);
    assert_eq!(
        holder(&tree, &marker),
        None,
        "walks through /proc read the host marker"
    );
    assert!(
        !content(&tree, "r-walks").is_empty(),
        "the walks wrote nothing"
    );
}

/// The first file under `dir` (not following symlinks) named `name`.
fn find_named(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name() == name {
                return Some(p);
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    None
}

/// The path of the first file of `tree` whose content holds `needle`.
fn holder(tree: &BTreeMap<String, FileInfo>, needle: &str) -> Option<String> {
    let needle = needle.as_bytes();
    tree.iter()
        .find(|(_, info)| info.content.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path.clone())
}

#[test]
fn hostile_native_steps_cannot_read_kilns_command_line_or_environment() {
    // The sandbox's pid 1 is a clone of kiln itself (no exec), so its `/proc/1/cmdline` is
    // kiln's command line: a build argument the Dockerfile never declares, which Docker never
    // shows to a RUN step, must not be readable there, and neither may kiln's environment.
    let env = Env::new();
    crate::harness::debian_base(&env);
    let id = unique();
    let arg_secret = format!("kiln-arg-secret-{id}");
    let env_secret = format!("kiln-env-secret-{id}");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).expect("create the build context");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm\n\
         RUN for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ /proc/[0-9]*/task/*/cmdline; do \
                 printf '%s: ' \"$f\"; tr '\\0' ' ' < \"$f\"; echo; \
             done > /r-proc 2>&1; env > /r-env; true\n",
    )
    .expect("write the Dockerfile");
    let build_arg = format!("UNDECLARED_TOKEN={arg_secret}");
    let out = env
        .kiln()
        .env("KILN_HOSTILE_ENV_SECRET", &env_secret)
        .args([
            "build",
            "--progress=plain",
            "--run-timeout",
            "60s",
            "--build-arg",
            &build_arg,
            "-t",
            "me/hostile",
        ])
        .arg(&ctx)
        .output()
        .expect("spawn kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build failed:\n{stderr}");
    assert!(stderr.contains("(native sandbox)"), "{stderr}");
    let tree = image_tree(&env.root(), "me/hostile");
    let seen = content(&tree, "r-proc");
    assert!(
        !seen.contains(&arg_secret),
        "an undeclared --build-arg is readable by the step through /proc:\n{seen}"
    );
    assert!(
        !seen.contains(&env_secret) && !content(&tree, "r-env").contains(&env_secret),
        "kiln's environment is readable by the step:\n{seen}"
    );
}

#[test]
fn hostile_native_memory_bombs_meet_the_memory_limit() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    // One 40 MiB process fits under 64m, so the limit is the step's, not a per-process
    // rlimit: two of them at once must not.
    let fits = "perl -e 'vec($x, 40*2**20 - 1, 8) = 1; sleep 1'";
    let b = build(
        &env,
        &format!("FROM debian:bookworm\nRUN {fits}\n"),
        &[],
        &["--run-memory", "64m"],
    );
    assert_eq!(b.code, 0, "40 MiB under a 64m limit:\n{}", b.tail());
    let cases = [
        "perl -e '$x = \"a\" x (2**31); print length($x)'",
        "x=a; while :; do x=$x$x; done",
        "for i in 1 2; do perl -e 'vec($x, 40*2**20 - 1, 8) = 1; sleep 3' & done; wait",
        "head -c 200000000 /dev/zero > /dev/shm/big; sleep 1",
    ];
    for run in cases {
        let started = std::time::Instant::now();
        let b = build(
            &env,
            &format!("FROM debian:bookworm\nRUN {run}\n"),
            &[],
            &["--run-memory", "64m"],
        );
        assert!(
            b.stderr.contains("(native sandbox)"),
            "{run}: not native:\n{}",
            b.tail()
        );
        assert!(
            !b.stderr.contains("not enforced"),
            "{run}: this host enforces memory limits (cgroup memory controller), kiln says it cannot:\n{}",
            b.tail()
        );
        assert_eq!(b.code, 1, "{run}:\n{}", b.tail());
        assert!(
            b.stderr.contains("RUN exceeded its memory limit (64m)"),
            "{run}:\n{}",
            b.tail()
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{run} took too long"
        );
    }
    let out = env.run(&["fsck"]);
    assert!(
        out.status.success(),
        "store inconsistent after the memory bombs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Swaps `/swapdst` between a folder and a symlink to the host folder, forever, with
/// `renameat2(RENAME_EXCHANGE)`, from a detached process that tries to outlive its step.
const SWAP_PL: &str = r#"use strict; use warnings;
my ($target) = @ARGV;
mkdir "/swapdst" or die "mkdir: $!";
symlink($target, "/swaplink") or die "symlink: $!";
my ($a, $b) = ("/swapdst", "/swaplink");
exit 0 if fork();
setpgrp(0, 0);
exit 0 if fork();
close STDIN; close STDOUT; close STDERR;
while (1) { syscall(316, -100, $a, -100, $b, 2); }
"#;

#[test]
fn hostile_native_symlinks_left_for_a_later_copy_resolve_inside_the_image() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let id = unique();
    let host_dir = PathBuf::from(format!("/var/tmp/kiln-swap-{id}"));
    std::fs::create_dir_all(&host_dir).expect("create the host folder");
    let _guard = HostPath(host_dir.clone());
    let h = host_dir.display().to_string();
    let rel_h = h.trim_start_matches('/');
    let df = format!(
        "FROM debian:bookworm\n\
         COPY swap.pl /swap.pl\n\
         RUN ln -s /../../../../{rel_h} /dst1 \
             && ln -s {h} /dst2 \
             && ln -s ../../../../../../{rel_h} /dst3 \
             && ln -s /dst3 /dst4 \
             && mkdir /dst5 && ln -s ../../../../../../../{rel_h} /dst5/sub \
             && ln -s /proc/1/root{h} /dst6 \
             && mkdir /w && ln -s /../../../../{rel_h} /w/link \
             && perl /swap.pl {h} && sleep 1\n\
         COPY f /dst1/f1\n\
         COPY f /dst2/f2\n\
         COPY f /dst3/f3\n\
         COPY f /dst4/f4\n\
         COPY f /dst5/sub/f5\n\
         COPY f /dst6/f6\n\
         COPY f /dst2/\n\
         COPY f /swapdst/f9\n\
         WORKDIR /w/link\n\
         COPY f ./f7\n\
         ADD f /dst1/f8\n\
         RUN echo written-by-run > /dst2/f10\n"
    );
    let b = build(
        &env,
        &df,
        &[("f", b"payload\n"), ("swap.pl", SWAP_PL.as_bytes())],
        &[],
    );
    let on_host: Vec<String> = std::fs::read_dir(&host_dir)
        .expect("the host folder is still there")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        on_host.is_empty(),
        "COPY through a symlink wrote on the host: {on_host:?} in {h}\n{}",
        b.tail()
    );
    assert_eq!(b.code, 0, "build failed:\n{}", b.tail());
    assert!(b.stderr.contains("(native sandbox)"), "{}", b.tail());
    assert!(
        !std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("/swap.pl"))
            .unwrap_or(false),
        "the swapper outlived its step"
    );

    // As in Docker, each symlink resolves inside the rootfs (an absolute target means the
    // rootfs root, `..` stops there), so every copy lands in the image.
    let tree = image_tree(&env.root(), "me/hostile");
    for f in ["f", "f1", "f2", "f3", "f4", "f5", "f7", "f8"] {
        assert_eq!(
            content(&tree, &format!("{rel_h}/{f}")),
            "payload\n",
            "{f} did not land in the image's {h}"
        );
    }
    assert_eq!(content(&tree, &format!("proc/1/root{h}/f6")), "payload\n");
    assert_eq!(content(&tree, &format!("{rel_h}/f10")), "written-by-run\n");
    // Wherever the swap stopped, the copy is in the image.
    let swapped = ["swapdst/f9".to_owned(), format!("{rel_h}/f9")];
    assert!(
        swapped.iter().any(|p| tree.contains_key(p)),
        "COPY /swapdst/f9 is missing from the image: {:?}",
        tree.keys()
            .filter(|k| k.contains("swap"))
            .collect::<Vec<_>>()
    );
}

fn sha256_of(p: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).expect("read")))
}

/// runc's CVE-2019-5736: a container process reopens the runtime's own executable through
/// `/proc/<pid>/exe` and overwrites it. The sandbox's pid 1 is a clone of kiln, so its
/// `/proc/1/exe` is the kiln binary on the host: every way a step has at it (writes through
/// the link, through its open descriptors, through `/proc/1/mem`, through `/proc/self/exe` of
/// a process that execs) must fail, and the binary must hash the same after the build.
#[test]
fn hostile_native_steps_cannot_overwrite_kiln_through_proc_exe() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let kiln = Path::new(env!("CARGO_BIN_EXE_kiln"));
    let before = sha256_of(kiln);
    let tree = build_native_ok(
        &env,
        "FROM debian:bookworm\n\
         RUN for p in /proc/1/exe /proc/self/exe /proc/1/fd/* /proc/1/mem /proc/1/map_files/*; do \
                 (echo pwned > \"$p\") 2>/dev/null && echo \"wrote $p\"; \
                 (echo pwned >> \"$p\") 2>/dev/null && echo \"appended $p\"; \
                 (: > \"$p\") 2>/dev/null && echo \"truncated $p\"; \
             done > /r-exe; \
             (exec 3</proc/1/exe; echo pwned >/proc/self/fd/3) 2>/dev/null && echo reopened >> /r-exe; \
             ls -l /proc/1/exe >> /r-exe 2>&1; true\n",
        &[],
    );
    let seen = content(&tree, "r-exe");
    for verb in ["wrote", "appended", "truncated", "reopened"] {
        assert!(
            !seen.lines().any(|l| l.starts_with(verb)),
            "a step reached kiln's executable:\n{seen}"
        );
    }
    assert_eq!(sha256_of(kiln), before, "the kiln binary changed");
}

/// BuildKit's CVE-2024-23652: after a step, the folders made to mount a `--mount` on are
/// removed again; a step that swaps the mount's parent for a symlink to a host folder must
/// not steer that clean-up onto the host. The host canary holds an empty folder at the same
/// path, with the mode the clean-up would accept.
#[test]
fn hostile_native_mount_stub_cleanup_never_follows_a_planted_symlink() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let canary = env.path("canary");
    std::fs::create_dir_all(canary.join("b/c")).expect("create the canary");
    env.write("canary/keep", "canary\n");
    let canary_s = canary.to_str().expect("UTF-8 temp path");
    let tree = build_native_ok(
        &env,
        &format!(
            "FROM debian:bookworm\n\
             RUN --mount=type=cache,target=/a/b/c \
                 (mv /a /moved 2>&1 || echo no-mv) > /r-swap; \
                 (ln -s {canary_s} /a 2>&1 || echo no-ln) >> /r-swap; ls -la / >> /r-swap; true\n"
        ),
        &[],
    );
    assert!(
        canary.join("b/c").is_dir(),
        "the mount's clean-up removed the host's {}/b/c:\n{}",
        canary.display(),
        content(&tree, "r-swap")
    );
    assert_eq!(
        std::fs::read_to_string(canary.join("keep")).expect("read the canary"),
        "canary\n"
    );
    // The swap happened in the step: the layer holds the planted symlink, not a clean-up of it.
    let a = tree.get("a").expect("the step's /a");
    assert_eq!((a.kind, a.content.as_slice()), ('l', canary_s.as_bytes()));
}

/// `--run-disk` holds while a native step runs, however the step writes: one huge file
/// (stopped by RLIMIT_FSIZE at the limit), a big file at the bottom of a tree deeper than
/// PATH_MAX (a path walk would never see it), and many small files (the watcher, which measures
/// the upper several times a second, kills the step; the overshoot is printed). Each fails with
/// the limit's message.
#[test]
fn hostile_native_disk_bombs_meet_the_disk_limit_while_they_run() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    // A step stopped in the middle says so ("stopped"); without live enforcement, dd would
    // finish (10 GiB, 300 MiB) and the loop would write all 300 files.
    let cases = [
        (
            "a 10 GiB file",
            "RUN dd if=/dev/zero of=/big bs=1M count=10240 || { echo \"dd stopped: $?\"; exit 1; }",
        ),
        (
            "300 MiB below 3,000 levels",
            "RUN mkdir /t && cd /t && i=0 && while [ $i -lt 3000 ]; do mkdir d && cd -P d || exit 9; i=$((i+1)); done \
             && { dd if=/dev/zero of=f bs=1M count=300 || { echo \"dd stopped: $?\"; exit 1; }; }",
        ),
        (
            "300 files of 1 MiB",
            "RUN i=0; while [ $i -lt 300 ]; do i=$((i+1)); dd if=/dev/zero of=/f$i bs=1M count=1 2>/dev/null || exit 9; echo \"wrote $i\"; done",
        ),
    ];
    for (case, step) in cases {
        let b = build(
            &env,
            &format!("FROM debian:bookworm\n{step}\n"),
            &[],
            &["--run-disk", "100m"],
        );
        assert_eq!(b.code, 1, "{case}: {}", b.tail());
        assert!(
            b.stderr.contains("RUN exceeded its disk limit (100m)"),
            "{case}: {}",
            b.tail()
        );
        let written = b
            .stderr
            .lines()
            .filter_map(|l| l.trim().strip_prefix("wrote "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .max();
        match written {
            Some(n) => {
                eprintln!("{case}: stopped after {n} MiB (limit 100 MiB)");
                assert!(
                    n < 250,
                    "{case}: {n} MiB written before the step was stopped"
                );
            }
            None => assert!(b.stderr.contains("dd stopped"), "{case}: {}", b.tail()),
        }
    }
}
