//! The test harness: temp stores, a `kiln` command runner, and where the shared fixtures live.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The third-party conformance suites (`shared/conformance`).
///
/// Found through `KILN_CONFORMANCE`, else by walking up from the workspace looking for
/// `shared/conformance` (the checkout sits beside `shared/` on the build machines). A test that
/// needs them fails with a clear message when they are missing; it never passes by skipping.
pub fn conformance_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_CONFORMANCE") {
        return PathBuf::from(p);
    }
    let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
    while let Some(d) = dir {
        let candidate = d.join("shared/conformance");
        if candidate.is_dir() {
            return candidate;
        }
        dir = d.parent();
    }
    let fallback = PathBuf::from("/work/shared/conformance");
    assert!(
        fallback.is_dir(),
        "shared/conformance not found: set KILN_CONFORMANCE to the folder holding the conformance suites"
    );
    fallback
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("engine/ has a parent")
        .to_path_buf()
}

/// A throwaway kiln store plus a scratch folder, removed on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create temp dir"),
        }
    }

    /// `KILN_ROOT` for this environment.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A scratch path inside the environment.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating parents) under the scratch folder and returns its path.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&p, contents).expect("write file");
        p
    }

    /// A `kiln` command bound to this environment's store.
    pub fn kiln(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        // Registry settings and credentials are this environment's own, never the user's.
        c.env("KILN_ROOT", self.root())
            .env("DOCKER_CONFIG", self.path("docker-config"))
            .env("KILN_REGISTRIES_CONFIG", self.path("registries.toml"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_AUTH_CONFIG")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env("NO_COLOR", "1")
            .env_remove("SOURCE_DATE_EPOCH")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs `kiln ARGS` and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.kiln().args(args).output().expect("spawn kiln")
    }

    /// Runs `kiln ARGS`, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `kiln ARGS`, asserts success and returns stderr (progress lines).
    pub fn ok_stderr(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kiln {args:?} failed:\n{stderr}");
        stderr
    }

    /// Runs `kiln ARGS`, asserts it failed with `code`, and returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "kiln {args:?}: expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// One file in a flattened image: kind, mode, owner and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// `f` file, `d` folder, `l` symlink (with its target in `content`), `h` hardlink.
    pub kind: char,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// File content or link target.
    pub content: Vec<u8>,
}

/// Reads an image from a store through kiln's library and flattens its layers (applying OCI
/// whiteouts), keyed by path without a leading `/` (folders end without `/`).
pub fn image_tree(root: &Path, image: &str) -> std::collections::BTreeMap<String, FileInfo> {
    use std::io::Read;
    let store = kiln::store::Store::open(root).expect("open store");
    let img = store.resolve(image).expect("resolve image");
    let mut tree = std::collections::BTreeMap::new();
    for layer in &img.manifest.layers {
        let blob = store.open_blob(&layer.digest).expect("open layer");
        let mut ar = tar::Archive::new(kiln::layer::decompress_auto(blob).expect("decompress"));
        for entry in ar.entries().expect("read tar") {
            let mut entry = entry.expect("tar entry");
            let path = entry
                .path()
                .expect("path")
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned();
            let name = path.rsplit('/').next().unwrap_or("").to_owned();
            let parent = path
                .rsplit_once('/')
                .map(|(p, _)| p.to_owned())
                .unwrap_or_default();
            if name == ".wh..wh..opq" {
                let prefix = format!("{parent}/");
                tree.retain(|k: &String, _| !k.starts_with(&prefix));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let target = if parent.is_empty() {
                    hidden.to_owned()
                } else {
                    format!("{parent}/{hidden}")
                };
                let prefix = format!("{target}/");
                tree.retain(|k: &String, _| k != &target && !k.starts_with(&prefix));
                continue;
            }
            let h = entry.header();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                _ => 'f',
            };
            let mode = h.mode().expect("mode");
            let uid = h.uid().expect("uid");
            let gid = h.gid().expect("gid");
            let mut content = Vec::new();
            if kind == 'l' || kind == 'h' {
                content = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
            } else {
                entry.read_to_end(&mut content).expect("read entry");
            }
            tree.insert(
                path,
                FileInfo {
                    kind,
                    mode,
                    uid,
                    gid,
                    content,
                },
            );
        }
    }
    tree
}

/// The paths of a flattened image.
pub fn paths(tree: &std::collections::BTreeMap<String, FileInfo>) -> Vec<&str> {
    tree.keys().map(String::as_str).collect()
}

/// Fails the test with a clear message when a tool a test needs is missing.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run .ci/run once (it installs the test tools)"
    );
}

/// Lines of stderr that are Docker-style step progress, for assertions on caching.
pub fn step_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("Step ") || l.starts_with(" ---> "))
        .map(str::to_owned)
        .collect()
}

/// Imports the Debian base (`scripts/make-debian-base --tarball`, which `.ci/run` runs) into
/// `env`'s store as `debian:bookworm`.
pub fn debian_base(env: &Env) {
    debian_base_in(&env.root());
}

/// The Debian base tarball that `scripts/make-debian-base --tarball` caches.
pub fn debian_tarball() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".cache")))
        .expect("a home folder");
    let tarball = cache.join("kiln/debian-bookworm-minbase-v2.tar.gz");
    assert!(
        tarball.is_file(),
        "the Debian base tarball is missing: run scripts/make-debian-base --tarball (.ci/run does)"
    );
    tarball
}

/// Imports the Debian base into the store at `root` as `debian:bookworm`.
pub fn debian_base_in(root: &Path) {
    import_debian(root, &debian_tarball(), "debian:bookworm");
}

/// Imports the slim Debian base (beside the full one) into `env`'s store as
/// `debian:bookworm-slim`.
pub fn debian_slim(env: &Env) {
    let slim = debian_tarball().with_file_name("debian-bookworm-slim-v2.tar.gz");
    assert!(
        slim.is_file(),
        "the slim Debian base tarball is missing: run scripts/make-debian-base --tarball (.ci/run does)"
    );
    import_debian(&env.root(), &slim, "debian:bookworm-slim");
}

fn import_debian(root: &Path, tarball: &Path, name: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args([
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "CMD [\"bash\"]",
        ])
        .arg(tarball)
        .arg(name)
        .stdin(Stdio::null())
        .output()
        .expect("spawn kiln");
    assert!(
        out.status.success(),
        "kiln import of the Debian base failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process that is killed when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pty for driving `kiln run -it` (or `docker run -it`) as a user at a terminal would: the child gets the
/// secondary side as stdin, stdout and stderr; the test reads and types on the primary side.
pub struct Pty {
    pub primary: std::fs::File,
    secondary: std::os::fd::OwnedFd,
}

impl Pty {
    pub fn new(rows: u16, cols: u16) -> Pty {
        use std::os::fd::FromRawFd;
        let (mut p, mut s) = (-1, -1);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors it opened.
        let r =
            unsafe { libc::openpty(&mut p, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        unsafe {
            Pty {
                primary: std::fs::File::from_raw_fd(p),
                secondary: std::os::fd::OwnedFd::from_raw_fd(s),
            }
        }
    }

    /// Starts `cmd` on the secondary side, as its session's controlling terminal.
    pub fn spawn(&self, mut cmd: Command) -> KillOnDrop {
        use std::os::unix::process::CommandExt;
        cmd.stdin(self.secondary.try_clone().unwrap())
            .stdout(self.secondary.try_clone().unwrap())
            .stderr(self.secondary.try_clone().unwrap());
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        KillOnDrop(cmd.spawn().unwrap())
    }

    /// Reads until the screen shows `want`; returns all read so far.
    pub fn expect(&mut self, seen: &mut String, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.primary);
        while !seen.contains(want) {
            assert!(
                Instant::now() < deadline,
                "waited for {want:?}; the screen:\n{seen}"
            );
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polls one live descriptor.
            if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.primary.read(&mut buf) {
                Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Changes the window size, as a terminal window being resized does (the foreground
    /// program gets SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.primary);
        // SAFETY: TIOCSWINSZ reads the winsize on this stack frame.
        let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    pub fn type_line(&mut self, line: &str) {
        self.primary.write_all(line.as_bytes()).unwrap();
        self.primary.write_all(b"\r").unwrap();
    }
}
