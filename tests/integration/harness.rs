//! The test harness: temp stores, a `kiln` command runner, and where the shared fixtures live.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
        c.env("KILN_ROOT", self.root())
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
