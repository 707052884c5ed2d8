//! Real runs of Debian binaries. They need root and `~/.cache/kiln/debian-bookworm-minbase-v2.tar.gz`
//! (made by `scripts/make-debian-base --tarball`, which `.ci/run` runs); without them they fail
//! and say what is missing.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::*;

/// The unpacked Debian rootfs, shared by the tests (kept in kiln's cache between runs).
fn debian() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Err(why) = available() {
            panic!("the native sandbox cannot run here: {why}");
        }
        let cache = std::env::home_dir()
            .expect("a home folder")
            .join(".cache/kiln");
        let tarball = cache.join("debian-bookworm-minbase-v2.tar.gz");
        let meta = fs::metadata(&tarball).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run scripts/make-debian-base --tarball (.ci/run does)",
                tarball.display()
            )
        });
        let dir = cache.join(format!(
            "test-native-rootfs-{}-{}",
            meta.len(),
            meta.mtime()
        ));
        if !dir.exists() {
            let tmp = cache.join(format!("test-native-rootfs.tmp-{}", std::process::id()));
            fs::create_dir_all(&tmp).unwrap();
            let d = cap_std::fs::Dir::open_ambient_dir(&tmp, cap_std::ambient_authority()).unwrap();
            let r = crate::layer::decompress_auto(fs::File::open(&tarball).unwrap()).unwrap();
            crate::layer::unpack_layer(r, &d, &crate::layer::UnpackOptions::snapshot()).unwrap();
            if fs::rename(&tmp, &dir).is_err() {
                // Another test process won the race.
                let _ = fs::remove_dir_all(&tmp);
            }
        }
        dir
    })
    .clone()
}

struct Ran {
    outcome: NativeOutcome,
    out: String,
    err: String,
    upper: PathBuf,
    _dir: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

fn reader(fd: OwnedFd) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = fs::File::from(fd).read_to_string(&mut s);
        s
    })
}

/// Runs `argv` over the Debian rootfs with `edit` applied to the spec.
fn run_with(
    argv: &[&str],
    stdin: &[u8],
    edit: impl FnOnce(&mut NativeSpec),
) -> Result<Ran, NativeError> {
    let root = debian();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let mut spec = NativeSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        program: None,
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "HOME=/root".into(),
        ],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        lowers: vec![root],
        upper: upper.clone(),
        work,
        network: NativeNetwork::None,
        hostname: "kiln-test".into(),
        extra_hosts: Vec::new(),
        limits: Limits {
            timeout: Duration::from_secs(60),
            ..Limits::default()
        },
        stdio: [in_r, out_w, err_w],
        extra_fds: Vec::new(),
        control: None,
        tty: false,
        binds: Vec::new(),
    };
    edit(&mut spec);
    let mut w = fs::File::from(in_w);
    w.write_all(stdin).unwrap();
    drop(w);
    let (out, err) = (reader(out_r), reader(err_r));
    let r = run(spec);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    r.map(|outcome| Ran {
        outcome,
        out,
        err,
        upper,
        _dir: dir,
    })
}

fn sh(script: &str) -> Ran {
    sh_with(script, |_| {})
}

fn sh_with(script: &str, edit: impl FnOnce(&mut NativeSpec)) -> Ran {
    run_with(&["/bin/sh", "-c", script], b"", edit).unwrap_or_else(|e| panic!("{script}: {e}"))
}

fn entries(upper: &Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut stack = vec![upper.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            all.push(
                p.strip_prefix(upper)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    all.sort();
    all
}

/// The layer tar of an upper: `(path, uid, gid, kind)`.
fn layer(upper: &Path) -> Vec<(String, u64, u64, tar::EntryType)> {
    let d = cap_std::fs::Dir::open_ambient_dir(upper, cap_std::ambient_authority()).unwrap();
    let mut tarball = Vec::new();
    crate::layer::write_layer(&d, None, &mut tarball).unwrap();
    let mut a = tar::Archive::new(&tarball[..]);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.entry_type(),
            )
        })
        .collect()
}

#[test]
fn runs_dash_and_writes_container_owned_files() {
    let r = sh("echo hi > /x; id -u");
    assert_eq!(
        (r.outcome.status, r.out.as_str(), r.err.as_str()),
        (0, "0\n", "")
    );
    assert_eq!(r.outcome.limit, None);
    let m = fs::metadata(r.upper.join("x")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));
    assert_eq!(fs::read_to_string(r.upper.join("x")).unwrap(), "hi\n");
    // No mount point (proc, dev, sys, etc/hosts, ...) lands in the upper.
    assert_eq!(entries(&r.upper), vec!["x"]);
}

#[test]
fn etc_files_are_kiln_s_and_writes_to_them_stay_out_of_the_upper() {
    let r = sh("cat /etc/hostname; hostname; grep -c localhost /etc/hosts; echo 1.2.3.4 x >> /etc/hosts; cat /etc/resolv.conf >/dev/null");
    assert_eq!(r.outcome.status, 0, "{}", r.err);
    assert_eq!(r.out, "kiln-test\nkiln-test\n2\n");
    assert_eq!(entries(&r.upper), Vec::<String>::new());
}

#[test]
fn chown_records_container_ids() {
    let r = sh("touch /x2 && chown 1000:1000 /x2");
    assert_eq!(r.outcome.status, 0, "{}", r.err);
    let m = fs::metadata(r.upper.join("x2")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
}

#[test]
fn useradd_copies_up_etc_and_owns_the_home() {
    let r = sh("useradd -m bob && id -u bob");
    assert_eq!(r.outcome.status, 0, "{}", r.err);
    let uid: u32 = r.out.trim().parse().unwrap();
    let m = fs::metadata(r.upper.join("home/bob")).unwrap();
    assert_eq!((m.uid(), m.gid()), (uid, uid));
    let tar = layer(&r.upper);
    assert!(
        tar.contains(&(
            "home/bob/".into(),
            u64::from(uid),
            u64::from(uid),
            tar::EntryType::Directory
        )),
        "{tar:?}"
    );
    assert!(tar
        .iter()
        .any(|(p, u, g, _)| p == "etc/passwd" && *u == 0 && *g == 0));
    assert!(
        tar.iter().any(|(p, _, g, _)| p == "etc/shadow" && *g == 42),
        "shadow keeps group shadow"
    );
}

#[test]
fn rm_leaves_an_overlay_whiteout() {
    let r = sh("rm /etc/motd");
    assert_eq!(r.outcome.status, 0, "{}", r.err);
    let m = fs::symlink_metadata(r.upper.join("etc/motd")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!((m.rdev(), m.uid(), m.gid()), (0, 0, 0));
    let tar = layer(&r.upper);
    assert!(tar.iter().any(|(p, ..)| p == "etc/.wh.motd"), "{tar:?}");
}

#[test]
fn renaming_a_lower_directory_copies_it() {
    let r = sh("mv /etc/apt /etc/apt2 && test -f /etc/apt2/sources.list -o -d /etc/apt2/apt.conf.d && ! test -e /etc/apt");
    assert_eq!(r.outcome.status, 0, "{}", r.err);
    assert!(fs::symlink_metadata(r.upper.join("etc/apt"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(r.upper.join("etc/apt2/apt.conf.d").is_dir());
}

#[test]
fn pid_namespace_has_its_own_init() {
    let r = sh("echo $$; grep ^PPid /proc/1/status; ls /proc | grep -c '^[0-9]'");
    assert_eq!(r.outcome.status, 0, "{}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines[0], "2");
    assert_eq!(lines[1], "PPid:\t0");
    let pids: u32 = lines[2].parse().unwrap();
    assert!(pids <= 4, "{pids} processes visible");
}

#[test]
fn confinement_matches_docker_defaults() {
    let r = sh("grep -E '^(CapEff|CapBnd|CapInh|NoNewPrivs|Seccomp):' /proc/self/status; unshare -U true 2>/dev/null && echo unshared; cat /proc/kcore 2>/dev/null | head -c1 | wc -c; ls /dev | tr '\\n' ' '");
    assert_eq!(r.outcome.status, 0, "{}", r.err);
    assert_eq!(
        r.out,
        "CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\n0\nfd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero "
    );
    let r = sh_with("grep -E '^(CapEff|Uid|Groups):' /proc/self/status", |s| {
        s.uid = 1000;
        s.gid = 1000;
    });
    assert_eq!(
        r.out, "Uid:\t1000\t1000\t1000\t1000\nGroups:\t \nCapEff:\t0000000000000000\n",
        "{:?} {}",
        r.outcome, r.err
    );
}

#[test]
fn network_none_has_only_loopback() {
    let r = sh("ls /sys/class/net; cat /sys/class/net/lo/operstate; perl -MIO::Socket::INET -e 'exit(IO::Socket::INET->new(PeerAddr => q(1.1.1.1:53), Timeout => 2) ? 0 : 3)'");
    assert_eq!(r.outcome.status, 3, "{}", r.err);
    assert_eq!(r.out, "lo\nunknown\n");
}

#[test]
fn exit_codes_propagate() {
    let r = sh("exit 7");
    assert_eq!(r.outcome.status, 7);
    let r = sh("kill -9 $$");
    assert_eq!(r.outcome.status, 137);
}

fn stray(marker: &str) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == marker.as_bytes()))
    })
}

#[test]
fn timeout_kills_every_process() {
    let start = Instant::now();
    let r = sh_with("sleep 101 & (sleep 101 &) ; sleep 101", |s| {
        s.limits.timeout = Duration::from_secs(1);
    });
    assert_eq!(r.outcome.limit, Some(Limit::Timeout));
    assert_eq!(r.outcome.status, 137);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(!stray("101"), "a sleep survived the sandbox");
}

#[test]
fn stdio_passes_through_pipes() {
    let r = run_with(&["tr", "a-z", "A-Z"], b"hello\n", |_| {});
    let r = r.unwrap();
    assert_eq!((r.outcome.status, r.out.as_str()), (0, "HELLO\n"));
    let r = sh("echo oops >&2; exit 1");
    assert_eq!((r.outcome.status, r.err.as_str()), (1, "oops\n"));
}

#[test]
fn cwd_is_resolved_and_created_inside_the_rootfs() {
    let r = sh_with("pwd", |s| s.cwd = "/work/dir".into());
    assert_eq!((r.outcome.status, r.out.as_str()), (0, "/work/dir\n"));
    assert!(r.upper.join("work/dir").is_dir());
}

#[test]
fn a_missing_program_is_an_error() {
    let r = run_with(&["no-such-program"], b"", |_| {});
    assert!(
        matches!(r, Err(NativeError::Exec { .. })),
        "{:?}",
        r.map(|r| r.outcome)
    );
}

#[test]
fn memory_limit_is_enforced_or_reported() {
    let r = sh_with("head -c 400m /dev/zero | tail -n 1 >/dev/null", |s| {
        s.limits.memory = 64 << 20
    });
    assert!(
        !r.outcome
            .not_enforced
            .iter()
            .any(|n| n.starts_with("memory")),
        "this host should enforce memory limits: {:?}",
        r.outcome.not_enforced
    );
    assert_ne!(r.outcome.status, 0);
    assert_eq!(r.outcome.limit, Some(Limit::Memory));
}

#[test]
fn disk_limit_is_reported() {
    // Stopped while it runs: RLIMIT_FSIZE ends the writer (SIGXFSZ) at the limit.
    let r = sh_with("head -c 2m /dev/zero > /big", |s| s.limits.disk = 1 << 20);
    assert_eq!(
        (r.outcome.status, r.outcome.limit),
        (128 + libc::SIGXFSZ, Some(Limit::Disk))
    );
}

#[test]
fn extra_descriptors_reach_the_program_at_their_numbers() {
    let (r, w) = pipe();
    let mut w = fs::File::from(w);
    w.write_all(b"five\n").unwrap();
    drop(w);
    let r = sh_with("cat <&5; ls /proc/self/fd | tr '\\n' ' '", |s| {
        s.extra_fds.push((5, r))
    });
    assert_eq!(r.outcome.status, 0, "{}", r.err);
    let mut lines = r.out.lines();
    assert_eq!(lines.next(), Some("five"));
    // 0 1 2, the one given, and ls's own directory descriptor: nothing else leaks in.
    assert_eq!(lines.next().map(str::trim), Some("0 1 2 3 5"));
}

#[test]
fn a_layer_twice_among_the_lowers_keeps_its_topmost_place() {
    let p = |s: &str| PathBuf::from(s);
    assert_eq!(
        dedup_lowers(vec![p("/base"), p("/empty"), p("/x"), p("/empty"), p("/y")]),
        vec![p("/base"), p("/x"), p("/empty"), p("/y")]
    );
    // And the sandbox runs over such a stack.
    let empty = tempfile::tempdir().unwrap();
    let r = sh_with("echo ok", |s| {
        s.lowers = vec![
            s.lowers[0].clone(),
            empty.path().to_path_buf(),
            empty.path().to_path_buf(),
        ]
    });
    assert_eq!((r.outcome.status, r.out.as_str()), (0, "ok\n"), "{}", r.err);
}

#[test]
fn upper_and_work_may_sit_below_a_private_folder() {
    // A KILN_ROOT under `mktemp -d`: container root cannot traverse the 0700 folder.
    let private = tempfile::tempdir_in("/var/tmp").unwrap();
    fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let nested = private.path().join("kiln/kiln/tmp");
    fs::create_dir_all(nested.join("upper")).unwrap();
    fs::create_dir_all(nested.join("kiln-work-x")).unwrap();
    let r = sh_with("echo ok > /f; cat /f", |s| {
        s.upper = nested.join("upper");
        s.work = nested.join("kiln-work-x");
    });
    assert_eq!((r.outcome.status, r.out.as_str()), (0, "ok\n"), "{}", r.err);
    assert!(nested.join("upper/f").exists());
}
