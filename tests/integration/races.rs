//! Races against kiln's host-side work on paths someone else changes at the same time: a
//! program in a container (or in a build's cache mount, or a local user's process in a build
//! context) swaps a folder and a symlink to a host folder in a loop while kiln commits, mounts
//! or copies that path. Each operation succeeds or fails with one line; the host canary's
//! bytes reach no image, and the canary itself is untouched.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{image_tree, Env};

/// A host folder with a secret file, outside every store and context.
struct Canary {
    dir: tempfile::TempDir,
    secret: Vec<u8>,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::Builder::new()
            .prefix("kiln-race-canary-")
            .tempdir_in("/tmp")
            .expect("canary dir");
        let secret = format!("kiln-race-canary-{}", std::process::id()).into_bytes();
        std::fs::write(dir.path().join("secret"), &secret).expect("write the canary");
        Canary { dir, secret }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The canary folder holds its one file, as written.
    fn assert_intact(&self) {
        let names: Vec<_> = std::fs::read_dir(self.path())
            .expect("read the canary dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
        assert_eq!(
            std::fs::read(self.path().join("secret")).expect("read the canary"),
            self.secret
        );
    }

    /// No file of `image` (in the store at `root`) holds the canary's bytes.
    fn assert_not_in(&self, root: &Path, image: &str) {
        for (path, info) in image_tree(root, image) {
            assert!(
                !info
                    .content
                    .windows(self.secret.len())
                    .any(|w| w == self.secret),
                "{image}: {path} holds the host canary"
            );
        }
    }
}

/// The one line a refused operation prints (kiln's own, not a hint).
fn assert_one_line(err: &str) {
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("kiln:") || l.starts_with("error"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
}

/// Removes a container when dropped, also when a test fails midway.
struct Removed<'a>(&'a Env, &'a str);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "-f", self.1]);
    }
}

#[test]
fn commit_of_a_running_container_never_follows_what_it_swaps() {
    let env = Env::new();
    crate::harness::debian_base_in(&env.root());
    let canary = Canary::new();
    let swap = format!(
        "cd / && while :; do rm -rf d; mkdir d; echo inside > d/f; rm -rf d; ln -s {} d; rm -f d; done",
        canary.path().display()
    );
    env.ok(&[
        "run",
        "-d",
        "--name",
        "racer",
        "debian:bookworm",
        "bash",
        "-c",
        &swap,
    ]);
    let racer = Removed(&env, "racer");
    std::thread::sleep(Duration::from_millis(300));
    let (mut committed, mut links, mut dirs) = (0, 0, 0);
    for i in 0..20 {
        let tag = format!("me/commit:{i}");
        let t0 = Instant::now();
        let out = env.run(&["commit", "racer", &tag]);
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("commit {i}: {:?} {}", t0.elapsed(), err.trim());
        if out.status.success() {
            canary.assert_not_in(&env.root(), &tag);
            committed += 1;
            match image_tree(&env.root(), &tag).get("d").map(|d| d.kind) {
                Some('l') => links += 1,
                Some('d') => dirs += 1,
                _ => {}
            }
        } else {
            assert_one_line(&err);
        }
    }
    let running = env.ok(&["ps"]);
    assert!(
        running.contains("racer"),
        "the swapper stopped early: {running}"
    );
    drop(racer);
    eprintln!(
        "{committed} of 20 commits of the running swapper succeeded; /d was a symlink in {links}, a folder in {dirs}"
    );
    assert!(committed > 0);
    canary.assert_intact();
}

#[test]
fn a_cache_mount_one_build_swaps_gives_another_build_nothing_of_the_host() {
    let env = Env::new();
    let canary = Canary::new();
    let ctx = |name: &str, run: &str| -> PathBuf {
        let dir = env.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM scratch\nRUN --mount=type=cache,id=shared,target=/c {run}\n"),
        )
        .unwrap();
        dir
    };
    let swapper = ctx(
        "swapper",
        &format!(
            "i=0; while [ $i -lt 4000 ]; do rm -rf /c/d; mkdir /c/d; echo inside > /c/d/f; \
             rm -rf /c/d; ln -s {} /c/d; rm -f /c/d; i=$((i+1)); done",
            canary.path().display()
        ),
    );
    let reader = ctx(
        "reader",
        "i=0; while [ $i -lt 4000 ]; do cat /c/d/secret /c/d/f >> /found 2>/dev/null; \
         i=$((i+1)); done; echo done >> /found",
    );
    let mut a = env.kiln();
    a.args(["build", "--no-cache", "-t", "me/swapper"])
        .arg(&swapper);
    let a = std::thread::spawn(move || a.output().expect("spawn kiln"));
    std::thread::sleep(Duration::from_millis(200));
    let out = env
        .kiln()
        .args(["build", "--no-cache", "-t", "me/reader"])
        .arg(&reader)
        .output()
        .expect("spawn kiln");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = a.join().expect("the swapper's build");
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    canary.assert_not_in(&env.root(), "me/reader");
    let tree = image_tree(&env.root(), "me/reader");
    let found = String::from_utf8_lossy(&tree["found"].content).into_owned();
    assert!(found.ends_with("done\n"), "{found}");
    eprintln!(
        "the reader saw /c/d/f {} times",
        found.matches("inside").count()
    );
    canary.assert_intact();
}

#[test]
fn a_context_swapped_during_copy_never_brings_in_a_host_file() {
    let env = Env::new();
    let canary = Canary::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /all\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (d, target, stop) = (ctx.join("d"), canary.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let _ = std::fs::create_dir(&d);
                let _ = std::fs::write(d.join("f"), b"inside\n");
                let _ = std::fs::remove_dir_all(&d);
                let _ = std::os::unix::fs::symlink(&target, &d);
                let _ = std::fs::remove_file(&d);
                swaps += 1;
            }
            swaps
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut built = 0;
    for i in 0..30 {
        let tag = format!("me/copy:{i}");
        let out = env
            .kiln()
            .args(["build", "--no-cache", "-t", &tag])
            .arg(&ctx)
            .output()
            .expect("spawn kiln");
        if out.status.success() {
            canary.assert_not_in(&env.root(), &tag);
            built += 1;
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            eprintln!("build {i}: {}", err.trim());
            assert_one_line(&err);
        }
        if Instant::now() > deadline {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let swaps = swapper.join().expect("the swapper");
    eprintln!("{built} builds succeeded while the context was swapped {swaps} times");
    assert!(built > 0, "no build got through");
    canary.assert_intact();
}
