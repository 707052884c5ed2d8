//! RUN steps in the WASI sandbox: kiln's guest sh and coreutils over the overlay rootfs, real
//! images unpacked and compared, limits, and the execution choice.

use std::time::{Duration, Instant};

use crate::harness::{image_tree, paths, Env};

/// Writes a context with `dockerfile` and `files`, builds it with `extra` flags as `me/run`,
/// and returns (exit code, stderr).
fn try_build(
    env: &Env,
    dockerfile: &str,
    files: &[(&str, &[u8])],
    extra: &[&str],
) -> (i32, String) {
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        env.write(&format!("ctx/{name}"), content);
    }
    let mut args = vec!["build", "--progress=plain", "-t", "me/run"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = env.kiln().args(&args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn build_ok(env: &Env, dockerfile: &str, files: &[(&str, &[u8])], extra: &[&str]) -> String {
    let (code, err) = try_build(env, dockerfile, files, extra);
    assert_eq!(code, 0, "build failed:\n{err}");
    err
}

fn content(tree: &std::collections::BTreeMap<String, crate::harness::FileInfo>, p: &str) -> String {
    String::from_utf8_lossy(
        &tree
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing: {:?}", tree.keys()))
            .content,
    )
    .into_owned()
}

#[test]
fn scratch_run_ships_only_what_it_wrote() {
    let env = Env::new();
    let err = build_ok(
        &env,
        "FROM scratch\nRUN echo hi > /hello && mkdir -p /a/b && ls / > /listing\n",
        &[],
        &[],
    );
    assert!(
        err.contains("rootfs shim"),
        "the executor choice is shown:\n{err}"
    );
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(paths(&tree), ["a", "a/b", "hello", "listing"]);
    assert_eq!(content(&tree, "hello"), "hi\n");
    let listing = content(&tree, "listing");
    for name in ["a", "hello", "listing"] {
        assert!(listing.lines().any(|l| l == name), "{name} in {listing:?}");
    }
    assert_eq!(tree["a/b"].mode, 0o755);
    assert_eq!(tree["hello"].mode, 0o644);
}

#[test]
fn run_changes_lower_files_and_deletes_with_whiteouts() {
    let env = Env::new();
    build_ok(
        &env,
        "FROM scratch\nCOPY f g /\nRUN cat /f /g > /both && rm /f && echo more >> /g\n",
        &[("f", b"one\n"), ("g", b"two\n")],
        &[],
    );
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(paths(&tree), ["both", "g"]);
    assert_eq!(content(&tree, "both"), "one\ntwo\n");
    assert_eq!(content(&tree, "g"), "two\nmore\n");
}

#[test]
fn pipelines_coreutils_and_environment() {
    let env = Env::new();
    build_ok(
        &env,
        "FROM scratch\nENV WHO=kiln\nWORKDIR /w\nARG N=3\n\
         RUN printf 'b\\na\\nc\\n' | sort > sorted && seq $N | tr '\\n' , > seq && echo \"$WHO $(pwd)\" > who\n",
        &[],
        &[],
    );
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(content(&tree, "w/sorted"), "a\nb\nc\n");
    assert_eq!(content(&tree, "w/seq"), "1,2,3,");
    assert_eq!(content(&tree, "w/who"), "kiln /w\n");
}

#[test]
fn failing_run_names_the_step_and_exit_code() {
    let env = Env::new();
    let (code, err) = try_build(
        &env,
        "FROM scratch\nRUN echo about to fail; exit 3\n",
        &[],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("about to fail"), "output is streamed:\n{err}");
    assert!(
        err.contains("Dockerfile:2: RUN echo about to fail; exit 3")
            && err.contains("exit code: 3"),
        "{err}"
    );
}

#[test]
fn run_output_streams_into_progress() {
    let env = Env::new();
    let err = build_ok(
        &env,
        "FROM scratch\nRUN echo to-stdout; echo to-stderr >&2\n",
        &[],
        &[],
    );
    assert!(
        err.contains("to-stdout") && err.contains("to-stderr"),
        "{err}"
    );
}

#[test]
fn cached_run_is_reused_and_a_change_reruns_from_there() {
    let env = Env::new();
    let df = "FROM scratch\nRUN echo 1 > /one\nRUN echo 2 > /two\n";
    build_ok(&env, df, &[], &[]);
    let err = build_ok(&env, df, &[], &[]);
    assert_eq!(err.matches("Using cache").count(), 2, "{err}");
    let err = build_ok(
        &env,
        "FROM scratch\nRUN echo 1 > /one\nRUN echo 3 > /two\n",
        &[],
        &[],
    );
    assert_eq!(err.matches("Using cache").count(), 1, "{err}");
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(content(&tree, "two"), "3\n");
}

#[test]
fn heredoc_runs() {
    let env = Env::new();
    build_ok(
        &env,
        "FROM scratch\nRUN <<EOF\necho first > /h1\necho second > /h2\nEOF\nRUN cat <<EOT > /h3\nbody $((1+1))\nEOT\n",
        &[],
        &[],
    );
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(content(&tree, "h1"), "first\n");
    assert_eq!(content(&tree, "h2"), "second\n");
    assert_eq!(content(&tree, "h3"), "body 2\n");
}

#[test]
fn exec_form_finds_programs_on_path() {
    let env = Env::new();
    build_ok(
        &env,
        "FROM scratch\nRUN [\"mkdir\", \"-p\", \"/made/here\"]\n",
        &[],
        &[],
    );
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(paths(&tree), ["made", "made/here"]);
    let (code, err) = try_build(&env, "FROM scratch\nRUN [\"no-such-program\"]\n", &[], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("executable file not found in $PATH"), "{err}");
}

/// A minimal WASI command nobody here wrote as a guest tool: writes a file and prints.
const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "made-by-wasm\n")
  (data (i32.const 64) "out.txt")
  (func (export "_start")
    ;; iovec at 0: ptr 16, len 13
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 13))
    ;; stdout
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; open /out.txt relative to the preopen (fd 3), create + truncate, write rights
    (drop (call $path_open (i32.const 3) (i32.const 1) (i32.const 64) (i32.const 7)
      (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 96)))
    (drop (call $fd_write (i32.load (i32.const 96)) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn any_wasm_module_in_the_image_runs_in_wasi() {
    let env = Env::new();
    let wasm = wat::parse_str(HELLO_WAT).unwrap();
    let err = build_ok(
        &env,
        "FROM scratch\nCOPY --chmod=755 hello.wasm /bin/hello\nRUN [\"/bin/hello\"]\nRUN hello > /printed\n",
        &[("hello.wasm", &wasm)],
        &[],
    );
    assert!(err.contains("is a WebAssembly module"), "{err}");
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(content(&tree, "out.txt"), "made-by-wasm\n");
    assert_eq!(content(&tree, "printed"), "made-by-wasm\n");
}

#[test]
fn linux_binaries_need_the_native_sandbox() {
    let env = Env::new();
    let elf = std::fs::read("/bin/true").unwrap();
    let df = "FROM scratch\nCOPY --chmod=755 true /usr/local/bin/mytool\nCOPY --chmod=755 true /bin/true\n\
              RUN /bin/true && echo guest-true-ran\nRUN mytool\n";
    let (code, err) = try_build(&env, df, &[("true", &elf)], &["--isolation=wasi"]);
    assert_eq!(code, 1, "{err}");
    // An ELF whose name a guest tool covers runs as that tool when native is denied...
    assert!(err.contains("guest-true-ran"), "{err}");
    // ...any other needs the native sandbox.
    assert!(
        err.contains("Dockerfile:5: RUN needs native binary /usr/local/bin/mytool; native execution is disabled (--isolation=wasi)"),
        "{err}"
    );
}

/// Grows its memory until the host refuses, then traps.
const MEMORY_BOMB_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))"#;

/// Takes 40 MiB and spins (trapping when it cannot have them).
const HOLD_40M_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 640)) (i32.const -1)) (then unreachable))
    (loop (br 0))))"#;

#[test]
fn a_steps_processes_share_its_memory_limit() {
    let env = Env::new();
    let hold = wat::parse_str(HOLD_40M_WAT).unwrap();
    let (code, err) = try_build(
        &env,
        "FROM scratch\nCOPY --chmod=755 hold /hold\nRUN /hold & /hold & wait\n",
        &[("hold", &hold)],
        &["--run-memory", "64m"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("RUN exceeded its memory limit (64m)"), "{err}");
}

#[test]
fn long_output_is_clipped_live_and_kept_in_the_log() {
    let env = Env::new();
    let err = build_ok(&env, "FROM scratch\nRUN seq 1000000\n", &[], &[]);
    let tail = &err[err.len().saturating_sub(600)..];
    assert!(
        err.contains("[output clipped, log limit 2MiB reached"),
        "{tail}"
    );
    assert!(err.len() < 3 << 20, "the live view stops at 2 MiB");
    let path = err
        .split("the full output is in ")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap();
    let log = std::fs::read_to_string(path).unwrap();
    assert_eq!(log.lines().count(), 1_000_000);
    assert_eq!(log.lines().last(), Some("1000000"));
}

#[test]
fn limits_stop_runaway_steps() {
    let env = Env::new();
    let bomb = wat::parse_str(MEMORY_BOMB_WAT).unwrap();
    let cases: [(&str, &[&str], &str, u64); 6] = [
        (
            "RUN while :; do :; done",
            &["--run-timeout", "1s"],
            "RUN exceeded its timeout limit (1s)",
            60,
        ),
        // A program blocked in the host (sleeping) is stopped at the limit too.
        (
            "RUN sleep 600",
            &["--run-timeout", "1s"],
            "RUN exceeded its timeout limit (1s)",
            20,
        ),
        (
            "RUN [\"/bomb\"]",
            &["--run-memory", "64m"],
            "RUN exceeded its memory limit (64m)",
            60,
        ),
        (
            "RUN yes > /big",
            &["--run-disk", "1m"],
            "RUN exceeded its disk limit (1m)",
            60,
        ),
        // A 1 GiB flood against the default 64 MiB log limit.
        (
            "RUN yes | head -c 1073741824",
            &[],
            "RUN exceeded its log limit (64m)",
            60,
        ),
        (
            "RUN for i in $(seq 40); do sleep 5 & done; wait",
            &["--run-pids", "8"],
            "RUN exceeded its pids limit (8)",
            60,
        ),
    ];
    for (run, flags, want, secs) in cases {
        let started = std::time::Instant::now();
        let (code, err) = try_build(
            &env,
            &format!("FROM scratch\nCOPY --chmod=755 bomb /bomb\n{run}\n"),
            &[("bomb", &bomb)],
            flags,
        );
        assert_eq!(code, 1, "{run}: {}", &err[err.len().saturating_sub(2000)..]);
        assert!(
            err.contains(want),
            "{run}: want {want:?} in:\n{}",
            &err[err.len().saturating_sub(2000)..]
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(secs),
            "{run} took {:?}",
            started.elapsed()
        );
        let out = env.run(&["fsck"]);
        assert!(out.status.success(), "store consistent after {run}");
    }
}

#[test]
fn python_wasi_example_runs_cpython_in_the_sandbox() {
    let example = crate::harness::workspace_root().join("examples/python-wasi");
    assert!(
        example.join("runtime/python.wasm").is_file(),
        "the CPython runtime is missing: run examples/python-wasi/fetch-runtime (.ci/run does)"
    );
    let env = Env::new();
    let out = env
        .kiln()
        .args(["build", "--progress=plain", "-t", "me/python"])
        .arg(&example)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("/usr/local/bin/python is a WebAssembly module"),
        "{err}"
    );
    assert!(err.contains("wrote 2 entries to /out"), "{err}");
    let tree = image_tree(&env.root(), "me/python");
    assert!(
        content(&tree, "out/greeting.txt").starts_with("hello from CPython 3.15 on wasi"),
        "{:?}",
        content(&tree, "out/greeting.txt")
    );
    let squares: serde_json::Value =
        serde_json::from_str(&content(&tree, "out/data/squares.json")).unwrap();
    assert_eq!(squares["7"], 49);
    assert_eq!(
        content(&tree, "out/data/sha256.txt"),
        format!("{}\n", sha256_hex(b"kiln"))
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn unsupported_run_mounts_are_refused_not_ignored() {
    let env = Env::new();
    for (mount, kind) in [
        ("type=secret,id=token", "secret"),
        ("type=ssh", "ssh"),
        ("type=cache,target=/c,from=base", "cache"),
    ] {
        let (code, err) = try_build(
            &env,
            &format!("FROM scratch\nRUN --mount={mount} echo hi\n"),
            &[],
            &[],
        );
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("Dockerfile:2: RUN --mount=type={kind}"))
                && err.contains("is not supported by kiln yet"),
            "{err}"
        );
    }
}

#[test]
fn symlinks_in_layers_never_reach_the_host() {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(ctx.join("etc")).unwrap();
    std::fs::write(
        ctx.join("etc/passwd"),
        "root:x:0:0:image root:/root:/bin/sh\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", ctx.join("rel")).unwrap();
    std::os::unix::fs::symlink("/loop2", ctx.join("loop1")).unwrap();
    std::os::unix::fs::symlink("/loop1", ctx.join("loop2")).unwrap();
    build_ok(
        &env,
        "FROM scratch\nCOPY . /\n\
         RUN cat /abs > /via-abs && cat /rel > /via-rel && cat ../../../etc/passwd > /via-dots \
             && (cat /loop1 2> /loop-error || true) && ls /proc /sys > /gone 2>&1 || true\n",
        &[],
        &[],
    );
    let tree = image_tree(&env.root(), "me/run");
    let image_passwd = "root:x:0:0:image root:/root:/bin/sh\n";
    assert_eq!(content(&tree, "via-abs"), image_passwd);
    assert_eq!(content(&tree, "via-rel"), image_passwd);
    assert_eq!(content(&tree, "via-dots"), image_passwd);
    assert!(
        content(&tree, "loop-error").contains("Symbolic link loop"),
        "{:?}",
        content(&tree, "loop-error")
    );
    assert!(
        content(&tree, "gone").contains("No such file"),
        "{:?}",
        content(&tree, "gone")
    );
}

#[test]
fn debug_sh_runs_the_guest_shell_in_the_sandbox() {
    use std::io::Write;
    let env = Env::new();
    let mut child = env
        .kiln()
        .args(["debug", "sh"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo $((6*7)) | tr 0-9 a-j; echo made > f; cat f; pwd; exit 3\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cwd = env.dir.path().to_str().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ec\nmade\n{cwd}\n")
    );
    assert!(
        !env.dir.path().join("f").exists(),
        "writes stay in the sandbox's upper"
    );
}

#[test]
fn debian_shell_steps_run_with_zero_native_execution() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let err = build_ok(
        &env,
        "FROM debian:bookworm\n\
         RUN mkdir -p /opt/app && cp /etc/os-release /opt/app/ \
             && grep '^ID=' /etc/os-release > /opt/app/id && rm -rf /usr/share/doc \
             && chmod 700 /opt/app && echo done\n",
        &[],
        &["--isolation=wasi"],
    );
    assert!(
        err.contains("/usr/bin/dash is a Linux binary and native execution is disabled: kiln's guest sh (WASI)"),
        "{err}"
    );
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(content(&tree, "opt/app/id"), "ID=debian\n");
    assert_eq!(tree["opt/app"].mode, 0o700);
    assert!(tree.contains_key("etc/debian_version"), "the base is there");
    assert!(
        !tree
            .keys()
            .any(|k| k == "usr/share/doc" || k.starts_with("usr/share/doc/")),
        "the deletion is a whiteout that hides the base's files"
    );
    let (code, err) = try_build(
        &env,
        "FROM debian:bookworm\nRUN apt-get --version\n",
        &[],
        &["--isolation=wasi"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("RUN needs native binary /usr/bin/apt-get; native execution is disabled (--isolation=wasi)"),
        "{err}"
    );
}

#[test]
fn debian_binaries_run_in_the_native_sandbox_and_the_layer_keeps_container_owners() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let err = build_ok(
        &env,
        "FROM debian:bookworm\n\
         RUN useradd -m bob && su bob -c 'echo mine > /home/bob/f' && rm /etc/motd \
             && ls /proc/1 > /dev/null && cat /proc/self/status | grep NoNewPrivs > /nnp\n",
        &[],
        &[],
    );
    assert!(
        err.contains("/usr/bin/dash is a Linux binary (native sandbox)"),
        "{err}"
    );
    let tree = image_tree(&env.root(), "me/run");
    let bob = &tree["home/bob"];
    assert_eq!((bob.uid, bob.gid, bob.mode), (1000, 1000, 0o755));
    assert_eq!(tree["home/bob/f"].uid, 1000);
    assert_eq!(content(&tree, "home/bob/f"), "mine\n");
    assert_eq!((tree["etc/shadow"].uid, tree["etc/shadow"].gid), (0, 42));
    assert!(!tree.contains_key("etc/motd"), "deleted through a whiteout");
    assert_eq!(content(&tree, "nnp").split_whitespace().last(), Some("1"));
}

/// User `nobody` (uid and gid 65534) with a home folder of its own, and, for the commands it
/// runs, `/etc/subuid` and `/etc/subgid` replaced by a file of the test's (bind-mounted in a
/// private mount namespace, so the host's files stay as they are).
struct Nobody {
    home: std::path::PathBuf,
    subid: std::path::PathBuf,
}

impl Nobody {
    fn new(env: &Env, subid: &str) -> Nobody {
        use std::os::unix::fs::PermissionsExt;
        assert!(
            std::path::Path::new("/usr/bin/setpriv").is_file(),
            "setpriv is missing: install Debian's util-linux (.ci/run does)"
        );
        // The files to bind over; a machine that never had a subordinate id may lack them.
        for f in ["/etc/subuid", "/etc/subgid"] {
            if !std::path::Path::new(f).exists() {
                std::fs::write(f, "").unwrap();
            }
        }
        let subid = env.write("subid", subid);
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&subid, std::fs::Permissions::from_mode(0o644)).unwrap();
        let home = env.path("nobody");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
        Nobody { home, subid }
    }

    /// kiln with `args`, as this user, with its store and cache in its home.
    fn kiln(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount --bind \"$0\" /etc/subuid && mount --bind \"$0\" /etc/subgid && \
                 exec setpriv --reuid=65534 --regid=65534 --clear-groups -- \"$@\"",
            )
            .arg(&self.subid)
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_ROOT", self.home.join("store"))
            .env("KILN_CACHE_DIR", self.home.join("cache"))
            .env("HOME", &self.home)
            .env("NO_COLOR", "1")
            .env("SOURCE_DATE_EPOCH", "0");
        cmd
    }

    /// A build context of the user's in its home, with this Dockerfile.
    fn context(&self, dockerfile: &str) -> std::path::PathBuf {
        let ctx = self.home.join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        std::os::unix::fs::chown(&ctx, Some(65534), Some(65534)).unwrap();
        ctx
    }

    /// Imports the Debian base, which must be the same image as root's import.
    fn imports_roots_base(&self, env: &Env) {
        let mut as_root = env.kiln();
        as_root
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["import", "-", "debian:bookworm"]);
        assert_eq!(
            import_base(self.kiln(&["import", "-", "debian:bookworm"])),
            import_base(as_root),
            "the same tarball, another image"
        );
    }

    /// Builds `ctx` as `tag` (with the host's network, and `more` options), which must
    /// succeed with its RUN steps in the native sandbox.
    fn build_native(&self, ctx: &std::path::Path, tag: &str, more: &[&str]) {
        let mut args = vec!["build", "--progress=plain", "--network=host", "-t", tag];
        args.extend(more);
        let out = self.kiln(&args).arg(ctx).output().expect("spawn kiln");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}",
            &err[err.len().saturating_sub(3000)..]
        );
        assert!(
            err.contains("/usr/bin/dash is a Linux binary (native sandbox)"),
            "{err}"
        );
    }
}

/// Imports the Debian base tarball on `cmd`'s stdin; the image ID. The import says nothing.
fn import_base(mut cmd: std::process::Command) -> String {
    let tarball = crate::harness::debian_tarball();
    let out = cmd
        .stdin(std::fs::File::open(&tarball).expect("open the Debian base"))
        .output()
        .expect("spawn kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "import failed: {stderr}");
    assert!(stderr.is_empty(), "import said: {stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Rootless with subordinate ids: user `nobody`, granted 65,536 ids from 200000 by
/// `/etc/subuid` and `/etc/subgid` (bind-mounted for this test in a private mount namespace),
/// imports the Debian base as root does and builds with Linux programs in the native sandbox:
/// `apt-get` drops to `_apt`, `useradd`, `su`, `chown` and setuid bits work, and the layers
/// record the container's owners, which the store keeps for real on the subordinate ids.
#[test]
fn rootless_with_subordinate_ids_runs_linux_programs_and_keeps_owners() {
    use std::os::unix::fs::MetadataExt;
    const NOBODY: u32 = 65534;
    const BASE: u32 = 200_000;
    let env = Env::new();
    for helper in [
        "/usr/bin/newuidmap",
        "/usr/bin/newgidmap",
        "/usr/bin/setpriv",
    ] {
        assert!(
            std::path::Path::new(helper).is_file(),
            "{helper} is missing: install Debian's uidmap and util-linux (.ci/run does)"
        );
    }
    let user = Nobody::new(&env, &format!("nobody:{BASE}:65536\n"));
    let home = user.home.clone();
    user.imports_roots_base(&env);
    let ctx = user.context(
        "FROM debian:bookworm\n\
         RUN apt-get update && apt-get install -y --no-install-recommends hello\n\
         RUN useradd -m bob && su bob -c 'echo mine > /home/bob/f' && rm /etc/motd \\\n\
             && echo x > /x && chown 100:101 /x && chmod 4755 /x && id -u > /uid\n",
    );
    user.build_native(&ctx, "me/rootless", &[]);
    let tree = image_tree(&home.join("store"), "me/rootless");
    assert!(
        tree.contains_key("usr/bin/hello"),
        "apt-get installed hello"
    );
    let bob = &tree["home/bob"];
    assert_eq!((bob.uid, bob.gid, bob.mode), (1000, 1000, 0o755));
    assert_eq!(tree["home/bob/f"].uid, 1000);
    assert_eq!(content(&tree, "home/bob/f"), "mine\n");
    assert_eq!((tree["etc/shadow"].uid, tree["etc/shadow"].gid), (0, 42));
    let x = &tree["x"];
    assert_eq!((x.uid, x.gid, x.mode), (100, 101, 0o4755));
    assert_eq!(content(&tree, "uid"), "0\n");
    assert!(!tree.contains_key("etc/motd"), "deleted through a whiteout");
    // Owners are real on disk: container id N is host id BASE + N - 1, and root the user.
    let snapshots = home.join("store/kiln/snapshots");
    let mut owners = std::collections::BTreeSet::new();
    for snap in std::fs::read_dir(&snapshots).unwrap() {
        let shadow = snap.unwrap().path().join("rootfs/etc/shadow");
        if let Ok(m) = std::fs::symlink_metadata(&shadow) {
            owners.insert((m.uid(), m.gid()));
        }
    }
    assert_eq!(
        owners,
        [(NOBODY, BASE + 42 - 1)].into(),
        "root:shadow on disk"
    );
}

/// Rootless without subordinate ids: user `nobody`, with empty `/etc/subuid` and
/// `/etc/subgid` (bind-mounted for this test), gets a user namespace that maps its one id, and
/// Linux programs get fake ids: `apt-get` drops to `_apt` (and finds it cannot come back),
/// `useradd`, `su`, `chown` and setuid bits work, `stat` shows the recorded owners, and the
/// layers record the container's owners. Nothing in the user's store is setuid for real.
#[test]
fn rootless_without_subordinate_ids_fakes_ids_for_linux_programs() {
    use std::os::unix::fs::MetadataExt;
    const NOBODY: u32 = 65534;
    let env = Env::new();
    let user = Nobody::new(&env, "");
    let home = user.home.clone();
    user.imports_roots_base(&env);
    let ctx = user.context(
        "FROM debian:bookworm\n\
         RUN apt-get update && apt-get install -y --no-install-recommends hello\n\
         RUN useradd -m bob && su bob -c 'id -u > /tmp/bob; id -G >> /tmp/bob; echo mine > ~/f' \\\n\
             && rm /etc/motd && echo x > /x && chown 100:101 /x && chmod 4755 /x && id -u > /uid \\\n\
             && stat -c '%u %g %a' /x /etc/shadow /home/bob /usr/bin/passwd > /seen\n\
         USER bob\n\
         WORKDIR /home/bob/app\n\
         RUN mkdir -p d && echo hi > d/f && umask 077 && echo s > secret && id -u > me\n\
         USER root\n\
         ARG OUTSIDE\n\
         RUN perl -e 'for (@ARGV) { chown 7, 7, $_; chmod 04700, $_ }' \"$OUTSIDE\" \\\n\
             /proc/1/root/.. \"/proc/1/root/../../..$OUTSIDE\" /proc/1/cwd/.. \\\n\
             /proc/self/root/.. /proc/1/fd/* /proc/self/fd/*\n",
    );
    // A file of the user's outside the rootfs, by its host path.
    let victim = home.join("outside");
    std::fs::write(&victim, "mine\n").unwrap();
    std::os::unix::fs::chown(&victim, Some(NOBODY), Some(NOBODY)).unwrap();
    let outside = format!("OUTSIDE={}", victim.display());
    user.build_native(&ctx, "me/one-id", &["--build-arg", &outside]);
    let tree = image_tree(&home.join("store"), "me/one-id");
    assert!(
        tree.contains_key("usr/bin/hello"),
        "apt-get installed hello"
    );
    let partial = &tree["var/lib/apt/lists/partial"];
    assert_eq!((partial.uid, partial.gid, partial.mode), (42, 0, 0o700));
    let bob = &tree["home/bob"];
    assert_eq!((bob.uid, bob.gid, bob.mode), (1000, 1000, 0o755));
    assert_eq!(content(&tree, "tmp/bob"), "1000\n1000\n");
    assert_eq!((tree["etc/shadow"].uid, tree["etc/shadow"].gid), (0, 42));
    let x = &tree["x"];
    assert_eq!((x.uid, x.gid, x.mode), (100, 101, 0o4755));
    assert_eq!(content(&tree, "uid"), "0\n");
    assert_eq!(
        content(&tree, "seen"),
        "100 101 4755\n0 42 640\n1000 1000 755\n0 0 4755\n"
    );
    assert!(!tree.contains_key("etc/motd"), "deleted through a whiteout");
    // What bob makes is bob's; WORKDIR keeps /home/bob's recorded owner.
    let owner = |p: &str| (tree[p].uid, tree[p].gid, tree[p].mode);
    assert_eq!(owner("home/bob/f"), (1000, 1000, 0o644));
    assert_eq!(owner("home/bob"), (1000, 1000, 0o755));
    assert_eq!(owner("home/bob/app/d"), (1000, 1000, 0o755));
    assert_eq!(owner("home/bob/app/d/f"), (1000, 1000, 0o644));
    assert_eq!(owner("home/bob/app/secret"), (1000, 1000, 0o600));
    assert_eq!(content(&tree, "home/bob/app/me"), "1000\n");
    // Nothing in the user's store is setuid or setgid for real: it would run as that user.
    let mut setid = Vec::new();
    let mut stack = vec![home.join("store")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.mode() & 0o6000 != 0 {
                setid.push(entry.path());
            }
        }
    }
    assert!(setid.is_empty(), "setuid or setgid on disk: {setid:?}");
    // Raw chown(2) and chmod(2) calls (perl's) on the host path of a file of the user's, and
    // through /proc, reached nothing outside the rootfs (kiln resolves a path in the caller's
    // root, through no magic link): no record of owner 7 anywhere on the host side, the
    // user's store and the test's folder included, and the file's mode unchanged.
    let mut marked = Vec::new();
    let mut stack = vec![env.dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let mut buf = [0u8; 256];
            if let Ok(n) = rustix::fs::lgetxattr(&path, "user.containers.override_stat", &mut buf) {
                if buf[..n].starts_with(b"7:7:") {
                    marked.push(path);
                }
            }
        }
    }
    assert!(marked.is_empty(), "recorded outside the rootfs: {marked:?}");
    let mode = std::fs::metadata(&victim).unwrap().mode();
    assert_eq!(
        mode & 0o7777,
        0o644,
        "chmod reached the host file: {mode:o}"
    );
}

#[test]
fn apt_without_network_fails_and_says_how_to_get_one() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let (code, err) = try_build(
        &env,
        "FROM debian:bookworm\nRUN apt-get update && apt-get install -y redis-server\n",
        &[],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the step has no network; pass --network=host"),
        "{}",
        &err[err.len().saturating_sub(1500)..]
    );
}

/// Sends a raw `PING` to a redis on `port` (retrying while it starts) and returns the reply.
pub(crate) fn ping_redis(port: u16) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            s.write_all(b"PING\r\n").unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap_or(0);
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn redis_seed_builds_and_a_new_line_reuses_the_cache_above_it() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let seed = crate::harness::workspace_root().join("examples/redis");
    let out = env
        .kiln()
        .args([
            "build",
            "--progress=plain",
            "--network=host",
            "-t",
            "me/redis",
        ])
        .arg(&seed)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}",
        &err[err.len().saturating_sub(3000)..]
    );
    let tree = image_tree(&env.root(), "me/redis");
    assert!(
        tree.contains_key("usr/bin/redis-server"),
        "redis-server is installed"
    );
    // As with the official image, apt leaves no packages or package caches in the layer.
    let left: Vec<&String> = tree
        .keys()
        .filter(|p| {
            (p.starts_with("var/cache/apt/") && (p.ends_with(".deb") || p.ends_with(".bin")))
                || (p.starts_with("var/lib/apt/lists/") && p.ends_with("_Packages"))
        })
        .collect();
    assert!(left.is_empty(), "apt left {left:?}");
    // `kiln run` starts it in the native sandbox; a client on the host gets PONG.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let port_arg = port.to_string();
    env.ok(&[
        "run",
        "-d",
        "--network=host",
        "--name",
        "seed",
        "me/redis",
        "redis-server",
        "--port",
        &port_arg,
        "--save",
        "",
    ]);
    let pong = ping_redis(port);
    let logs = env.ok(&["logs", "seed"]);
    env.ok(&["stop", "seed"]);
    assert_eq!(pong, "+PONG\r\n", "redis log:\n{logs}");
    assert!(logs.contains("Ready to accept connections"), "{logs}");
    env.ok(&["rm", "seed"]);
    // The seed's cache lesson: a line added under the redis line rebuilds only from there.
    let df = std::fs::read_to_string(seed.join("Dockerfile")).unwrap();
    let df = df.replace(
        "CMD [\"redis-server\"]",
        "RUN apt-get install -y gcc\nCMD [\"redis-server\"]",
    );
    let (code, err) = try_build(&env, &df, &[], &["--network=host"]);
    assert_eq!(code, 0, "{}", &err[err.len().saturating_sub(3000)..]);
    assert_eq!(
        err.matches("Using cache").count(),
        1,
        "the apt line is reused:\n{err}"
    );
    assert!(err.contains("Setting up gcc"), "only the new line runs");
    let tree = image_tree(&env.root(), "me/run");
    assert!(tree.contains_key("usr/bin/gcc-12") && tree.contains_key("usr/bin/redis-server"));
}

#[test]
fn the_debian_bases_follow_the_official_images_conventions() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    crate::harness::debian_slim(&env);
    let full = image_tree(&env.root(), "debian:bookworm");
    let slim = image_tree(&env.root(), "debian:bookworm-slim");
    for tree in [&full, &slim] {
        for f in [
            "etc/apt/apt.conf.d/docker-clean",
            "etc/apt/apt.conf.d/docker-gzip-indexes",
            "etc/apt/apt.conf.d/docker-no-languages",
            "etc/dpkg/dpkg.cfg.d/docker-apt-speedup",
        ] {
            assert!(tree.contains_key(f), "{f} is missing");
        }
        assert!(
            !tree.keys().any(|p| p.ends_with(".deb")),
            "a .deb file is left in the base"
        );
    }
    // slim: copyrights only, no man pages or translations, and dpkg keeps it so.
    assert!(slim.contains_key("etc/dpkg/dpkg.cfg.d/docker"));
    assert!(slim.contains_key("usr/share/doc/dpkg/copyright"));
    assert!(full.keys().any(|p| p.starts_with("usr/share/man/man1/")));
    assert!(!slim.keys().any(|p| p.starts_with("usr/share/man/man1/")
        || (p.starts_with("usr/share/locale/") && p.ends_with(".mo"))
        || (p.starts_with("usr/share/doc/") && p.ends_with("changelog.Debian.gz"))));
    assert!(slim.len() < full.len());
    // Packages installed later unpack no docs either: dpkg's path filters say so.
    let cfg = env.ok(&[
        "run",
        "--rm",
        "debian:bookworm-slim",
        "cat",
        "/etc/dpkg/dpkg.cfg.d/docker",
    ]);
    assert!(
        cfg.contains("path-exclude /usr/share/man/*")
            && cfg.contains("path-include /usr/share/doc/*/copyright"),
        "{cfg}"
    );
}

#[test]
fn the_same_script_gives_the_same_layer_under_wasi_and_native() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let df = "FROM debian:bookworm\n\
              RUN mkdir -p /opt/app/sub && echo hi > /opt/app/f && chmod 640 /opt/app/f \
                  && ln -s f /opt/app/link && rm /etc/motd && touch /etc/issue \
                  && mv /etc/issue.net /opt/app/ && chown 1000:1000 /opt/app/sub\n";
    let mut layers = Vec::new();
    for isolation in ["--isolation=wasi", "--isolation=auto"] {
        let ctx = env.path("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), df).unwrap();
        let out = env
            .kiln()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "build",
                "--no-cache",
                "--progress=plain",
                isolation,
                "-t",
                "me/eq",
            ])
            .arg(&ctx)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let executor = if isolation.ends_with("wasi") {
            "kiln's guest sh (WASI)"
        } else {
            "(native sandbox)"
        };
        assert!(err.contains(executor), "{err}");
        let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "me/eq"])).unwrap();
        layers.push(v[0]["RootFS"]["Layers"].as_array().unwrap().last().cloned());
    }
    assert_eq!(layers[0], layers[1], "both executors write the same layer");
}

#[test]
fn hostile_native_steps_stay_in_their_sandbox() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let tag = std::process::id();
    let secret = std::path::PathBuf::from(format!("/var/tmp/kiln-host-secret-{tag}"));
    let escape = std::path::PathBuf::from(format!("/var/tmp/kiln-escape-{tag}"));
    std::fs::write(&secret, "host-secret\n").unwrap();
    let df = format!(
        "FROM debian:bookworm\n\
         RUN (cat {secret} 2>&1 || true) > /r-read; \
             (echo x > /proc/1/root/../../..{escape} 2>&1; echo $?) > /r-write; \
             (mount -t tmpfs none /mnt 2>&1; echo $?) > /r-mount; \
             (bash -c 'echo > /dev/tcp/1.1.1.1/53' 2>&1; echo $?) > /r-net; \
             (echo x > /proc/self/exe 2>&1; echo $?) > /r-exe; \
             (setsid sh -c 'exec sleep 31{tag}' > /dev/null 2>&1 &); \
             (sh -c 'sleep 32{tag} &'); true\n",
        secret = secret.display(),
        escape = escape.display(),
    );
    build_ok(&env, &df, &[], &[]);
    let _ = std::fs::remove_file(&secret);
    let tree = image_tree(&env.root(), "me/run");
    assert!(
        content(&tree, "r-read").contains("No such file"),
        "{}",
        content(&tree, "r-read")
    );
    assert!(!escape.exists(), "a write escaped the rootfs");
    let last_status = |f: &str| content(&tree, f).lines().last().unwrap_or("").to_owned();
    assert_ne!(last_status("r-write"), "0");
    assert_ne!(last_status("r-mount"), "0", "{}", content(&tree, "r-mount"));
    assert_ne!(last_status("r-net"), "0", "{}", content(&tree, "r-net"));
    assert_ne!(last_status("r-exe"), "0");
    // Nothing the step started outlives it (double fork, setsid).
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    for sleeper in [format!("sleep 31{tag}"), format!("sleep 32{tag}")] {
        assert!(
            !ps.lines().any(|l| l.trim() == sleeper),
            "{sleeper} survived the step"
        );
    }
    // A fork bomb meets the pids limit, the step ends, and the host goes on.
    let started = std::time::Instant::now();
    let (code, err) = try_build(
        &env,
        "FROM debian:bookworm\nRUN bomb() { bomb | bomb & }; bomb; sleep 5\n",
        &[],
        &["--run-pids", "64", "--run-timeout", "30s"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("RUN exceeded its pids limit (64)"),
        "{}",
        &err[err.len().saturating_sub(1500)..]
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

/// The entries of the top layer of `image`, as the tar names them.
fn top_layer_entries(env: &Env, image: &str) -> Vec<String> {
    let store = kiln::store::Store::open(&env.root()).unwrap();
    let img = store.resolve(image).unwrap();
    let layer = img.manifest.layers.last().unwrap();
    let blob = store.open_blob(&layer.digest).unwrap();
    let mut ar = tar::Archive::new(kiln::layer::decompress_auto(blob).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A step that counts its runs in a cache mount and leaves junk in a tmpfs mount.
const COUNTING_STEP: &str =
    "RUN --mount=type=cache,id=runs,target=/var/cache/count,sharing=locked \
    --mount=type=tmpfs,target=/scratch/deep \
    n=$(cat /var/cache/count/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /var/cache/count/n; \
    ls -A /scratch/deep; echo junk > /scratch/deep/j; echo \"$BUST $n\" > /seen\n";

#[test]
fn run_mounts_cache_outlives_builds_and_neither_mount_lands_in_the_layer() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let wasi = format!("FROM scratch\nRUN mkdir -p /var/cache\nARG BUST\n{COUNTING_STEP}");
    let native = format!("FROM debian:bookworm\nARG BUST\n{COUNTING_STEP}");
    // The same cache id in both executors, across builds whose step differs (BUST).
    for (i, (dockerfile, executor)) in [
        (&wasi, "WASI"),
        (&native, "native sandbox"),
        (&wasi, "WASI"),
    ]
    .into_iter()
    .enumerate()
    {
        let bust = format!("BUST={i}");
        let err = build_ok(&env, dockerfile, &[], &["--build-arg", &bust]);
        assert!(err.contains(executor), "{err}");
        let tree = image_tree(&env.root(), "me/run");
        assert_eq!(
            String::from_utf8_lossy(&tree["seen"].content),
            format!("{i} {}\n", i + 1),
            "the cache mount kept its count"
        );
        // Only what the step wrote outside its mounts: no mount point, no copied-up parent.
        assert_eq!(top_layer_entries(&env, "me/run"), ["seen"], "{executor}");
        assert!(!paths(&tree).iter().any(|p| p.starts_with("scratch")));
        assert!(!paths(&tree).contains(&"var/cache/count"));
    }
    // A build of the same step hits kiln's cache: the step does not run again.
    let err = build_ok(&env, &wasi, &[], &["--build-arg", "BUST=2"]);
    assert!(err.contains("Using cache"), "{err}");
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(String::from_utf8_lossy(&tree["seen"].content), "2 3\n");
    // `prune --all` empties the cache mounts with the build cache.
    env.ok(&["prune", "--all", "--force"]);
    build_ok(&env, &wasi, &[], &["--build-arg", "BUST=9"]);
    let tree = image_tree(&env.root(), "me/run");
    assert_eq!(String::from_utf8_lossy(&tree["seen"].content), "9 1\n");
}

/// BuildKit's CVE-2024-9675: a cache mount's `id` names a folder of the store's, never a path:
/// `id=../../..`, an absolute `id` and one with odd bytes all land below
/// `kiln/cache-mounts`, and what the step writes there appears nowhere else on the host.
#[test]
fn cache_mount_ids_never_name_a_host_path() {
    let env = Env::new();
    let marker = format!("kiln-cache-id-{}", std::process::id());
    let ids = [
        format!("../../../../../../../../tmp/{marker}"),
        "/etc".to_owned(),
        format!("/tmp/{marker}"),
        "..".to_owned(),
        "a/../../b".to_owned(),
    ];
    for (i, id) in ids.iter().enumerate() {
        let dockerfile = format!(
            "FROM scratch\nRUN --mount=type=cache,id={id},target=/c echo {marker} > /c/{marker}-{i}\n"
        );
        build_ok(&env, &dockerfile, &[], &[]);
    }
    // Every write is in one of the store's cache folders.
    let base = env.root().join("kiln/cache-mounts");
    let mut found = 0;
    for e in std::fs::read_dir(&base).unwrap().flatten() {
        if let Ok(inner) = std::fs::read_dir(e.path()) {
            found += inner
                .flatten()
                .filter(|f| f.file_name().to_string_lossy().starts_with(&marker))
                .count();
        }
    }
    assert_eq!(
        found,
        ids.len(),
        "not every write landed in kiln/cache-mounts"
    );
    for outside in [
        std::path::Path::new("/tmp").join(&marker),
        std::path::Path::new("/etc").join(format!("{marker}-1")),
        env.dir.path().join(&marker),
        env.root().join(&marker),
    ] {
        assert!(!outside.exists(), "{} was written", outside.display());
    }
}

/// A module cheap to make and dear to compile: `_start` does nothing, and beside it `funcs`
/// functions of `chunks` rounds of arithmetic each (10 bytes a round), which Cranelift must
/// all compile before anything runs.
fn compile_bomb(funcs: u32, chunks: u32) -> Vec<u8> {
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u32, out);
        out.extend_from_slice(body);
    }
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 = () -> (), 1 = (i32) -> i32.
    section(1, &[2, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f], &mut m);
    let mut funcs_sec = Vec::new();
    leb(funcs + 1, &mut funcs_sec);
    funcs_sec.push(0);
    funcs_sec.extend(std::iter::repeat_n(1, funcs as usize));
    section(3, &funcs_sec, &mut m);
    section(7, b"\x01\x06_start\x00\x00", &mut m);
    let mut body = vec![0u8]; // no locals besides the parameter
    for i in 0..chunks {
        // x = (x * x) ^ i
        body.extend_from_slice(&[0x20, 0, 0x20, 0, 0x6c, 0x41]);
        leb(i & 0x3f, &mut body);
        body.extend_from_slice(&[0x73, 0x21, 0]);
    }
    body.extend_from_slice(&[0x20, 0, 0x0b]);
    let mut code = Vec::new();
    leb(funcs + 1, &mut code);
    code.extend_from_slice(&[2, 0, 0x0b]);
    for _ in 0..funcs {
        leb(body.len() as u32, &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut m);
    m
}

/// Every kiln compiler child now alive.
fn compiler_children() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("__compile-wasm"))
        .collect()
}

#[test]
fn compiling_a_module_counts_against_the_steps_time_and_memory() {
    let env = Env::new();
    let bomb = compile_bomb(400, 20_000);
    eprintln!("the bomb: {} MiB", bomb.len() >> 20);
    let df = "FROM scratch\nCOPY --chmod=755 bomb /bomb\nRUN /bomb\n";
    // A compiled-module cache of its own: an artifact of the bomb that some other run
    // managed to compile must not spare this one the compile.
    let cache = tempfile::tempdir().unwrap();
    let build = |extra: &[&str]| {
        let ctx = env.path("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), df).unwrap();
        std::fs::write(ctx.join("bomb"), &bomb).unwrap();
        let out = env
            .kiln()
            .env("KILN_CACHE_DIR", cache.path())
            .args(["build", "--progress=plain", "-t", "me/run"])
            .args(extra)
            .arg(&ctx)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let t0 = Instant::now();
    let (code, err) = build(&["--run-timeout", "3s"]);
    let took = t0.elapsed();
    eprintln!("with --run-timeout 3s: ended after {took:?}");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("RUN exceeded its timeout limit (3s)"), "{err}");
    assert!(
        took < Duration::from_secs(30),
        "the compile ran on for {took:?}"
    );
    assert_eq!(compiler_children(), Vec::<String>::new());

    let t0 = Instant::now();
    let (code, err) = build(&["--run-memory", "128m"]);
    eprintln!("with --run-memory 128m: ended after {:?}", t0.elapsed());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("RUN exceeded its memory limit (128m)"),
        "{err}"
    );
    assert_eq!(compiler_children(), Vec::<String>::new());

    // A module that compiles within the limits runs as before.
    let small = compile_bomb(2, 100);
    build_ok(
        &env,
        "FROM scratch\nCOPY --chmod=755 small /small\nRUN /small && echo ran > /ran\n",
        &[("small", &small)],
        &["--run-memory", "128m", "--run-timeout", "30s"],
    );
}

#[test]
fn copy_from_a_stage_with_a_tree_2000_levels_deep_takes_seconds() {
    let env = Env::new();
    crate::harness::debian_base_in(&env.root());
    build_ok(
        &env,
        "FROM debian:bookworm AS deep\n\
         RUN perl -e 'for (1..2000) { mkdir \"d\" or die; chdir \"d\" or die } open(F, \">f\") or die; print F \"bottom\\n\"'\n",
        &[],
        &[],
    );
    let t0 = Instant::now();
    build_ok(
        &env,
        "FROM debian:bookworm AS deep\n\
         RUN perl -e 'for (1..2000) { mkdir \"d\" or die; chdir \"d\" or die } open(F, \">f\") or die; print F \"bottom\\n\"'\n\
         FROM scratch\n\
         COPY --from=deep /d /copied/d\n",
        &[],
        &[],
    );
    let took = t0.elapsed();
    eprintln!("the copy took {took:?}");
    let tree = image_tree(&env.root(), "me/run");
    let bottom = format!("copied/{}f", "d/".repeat(2000));
    assert_eq!(content(&tree, &bottom), "bottom\n");
    // Before the walk went one level at a time, this copy took over 20 minutes.
    assert!(took < Duration::from_secs(300), "the copy took {took:?}");
}

#[test]
fn bind_mounts_show_the_context_or_a_stage_and_never_land_in_the_layer() {
    let env = Env::new();
    env.write("ctx/a.txt", "context one\n");
    env.write("ctx/tool.txt", "a tool\n");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch AS tools\nCOPY tool.txt /opt/tool.txt\n\
         FROM scratch\n\
         RUN --mount=type=bind,target=/src cat /src/a.txt > /from-context\n\
         RUN --mount=type=bind,from=tools,source=/opt,target=/t cat /t/tool.txt > /from-stage\n\
         RUN --mount=type=bind,target=/src,rw echo scribble > /src/new.txt && cat /src/new.txt > /rw\n\
         RUN --mount=type=bind,target=/src echo x > /src/ro.txt || echo refused > /ro\n",
    );
    let ctx = env.path("ctx");
    env.ok(&["build", "-t", "binds:1", ctx.to_str().unwrap()]);
    let tree = image_tree(&env.root(), "binds:1");
    assert_eq!(tree["from-context"].content, b"context one\n".to_vec());
    assert_eq!(tree["from-stage"].content, b"a tool\n".to_vec());
    assert_eq!(tree["rw"].content, b"scribble\n".to_vec());
    assert_eq!(tree["ro"].content, b"refused\n".to_vec());
    // Neither the mounted files nor the mount points are in the image; the context is as it was.
    assert!(
        tree.keys()
            .all(|p| !p.starts_with("src") && !p.starts_with("t/")),
        "{:?}",
        tree.keys()
    );
    assert!(!ctx.join("new.txt").exists() && !ctx.join("ro.txt").exists());
    // The bound folder's content is part of the step's key.
    let out = env
        .kiln()
        .args(["build", "-t", "binds:1", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("Using cache")
            .count(),
        5
    );
    env.write("ctx/a.txt", "context two\n");
    env.ok(&["build", "-t", "binds:2", ctx.to_str().unwrap()]);
    assert_eq!(
        image_tree(&env.root(), "binds:2")["from-context"].content,
        b"context two\n".to_vec()
    );
    // A single file cannot be bound (yet): one clear line.
    env.write(
        "one/Dockerfile",
        "FROM scratch\nRUN --mount=type=bind,source=a.txt,target=/x cat /x\n",
    );
    env.write("one/a.txt", "x");
    let err = env.fails(&["build", env.path("one").to_str().unwrap()], 1);
    assert!(
        err.contains("Dockerfile:2") && err.contains("binds folders only"),
        "{err}"
    );
}

#[test]
fn bind_mounts_reach_linux_programs_in_the_native_sandbox() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    env.write("ctx/data/a.txt", "for bash\n");
    env.write(
        "ctx/Dockerfile",
        "FROM debian:bookworm\n\
         RUN --mount=type=bind,source=data,target=/mnt/data bash -c 'cat /mnt/data/a.txt > /from-bind; touch /mnt/data/no 2> /ro-error || true'\n",
    );
    env.ok(&["build", "-t", "nb:1", env.path("ctx").to_str().unwrap()]);
    let tree = image_tree(&env.root(), "nb:1");
    assert_eq!(tree["from-bind"].content, b"for bash\n".to_vec());
    let ro = String::from_utf8_lossy(&tree["ro-error"].content).into_owned();
    assert!(ro.contains("Read-only file system"), "{ro}");
    assert!(!tree.contains_key("mnt/data/a.txt"));
}

#[test]
fn a_bind_source_symlink_resolves_in_its_stage_never_on_the_host() {
    // CVE-2024-1753 (buildah): a `from=` stage's symlink to `/` was followed on the host.
    let env = Env::new();
    env.write(
        "ctx/Dockerfile",
        "FROM scratch AS evil\n\
         RUN mkdir -p /etc && echo stage > /etc/marker && ln -s /etc /escape && ln -s / /root-link\n\
         FROM scratch\n\
         RUN --mount=type=bind,from=evil,source=/escape,target=/m ls /m > /via-escape\n\
         RUN --mount=type=bind,from=evil,source=/root-link,target=/r ls /r > /via-root\n\
         COPY --from=evil / /copied/\n",
    );
    env.ok(&["build", "-t", "esc:1", env.path("ctx").to_str().unwrap()]);
    let tree = image_tree(&env.root(), "esc:1");
    assert_eq!(tree["via-escape"].content, b"marker\n".to_vec());
    let root = String::from_utf8_lossy(&tree["via-root"].content).into_owned();
    // The stage's own root: its folders, none of the host's.
    assert!(root.contains("escape") && root.contains("etc"), "{root}");
    assert!(
        !root.contains("proc") && !root.contains("usr") && !root.contains("home"),
        "{root}"
    );
    // COPY --from keeps absolute symlinks as they are (their text is data).
    assert_eq!(tree["copied/escape"].kind, 'l');
    assert_eq!(tree["copied/escape"].content, b"/etc".to_vec());
    assert_eq!(tree["copied/root-link"].content, b"/".to_vec());
}

#[test]
fn add_host_shm_size_and_ulimit_reach_native_run_steps() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let out = build_ok(
        &env,
        "FROM debian:bookworm\nRUN grep -w db /etc/hosts && df -k /dev/shm | tail -1 && ulimit -n && ulimit -p\n",
        &[],
        &[
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "v6=::1",
            "--shm-size",
            "32m",
            "--ulimit",
            "nofile=512:2048",
            "--ulimit",
            "nproc=300",
        ],
    );
    assert!(out.contains("10.1.2.3\tdb"), "{out}");
    assert!(out.contains(" 32768 "), "/dev/shm is 32 MiB:\n{out}");
    assert!(out.lines().any(|l| l == "2048"), "nofile:\n{out}");
    // nproc is the step's process limit: a pids cgroup of 300 when the host has one (then
    // RLIMIT_NPROC, which counts the shared host uid, is a backstop at twice that), else
    // RLIMIT_NPROC itself. The default is 1024.
    assert!(
        out.lines().any(|l| l == "300" || l == "600"),
        "nproc:\n{out}"
    );
    for (flag, value, why) in [
        ("--add-host", "db", "expected NAME:IP"),
        ("--add-host", "db:not-an-ip", "is not an IP address"),
        ("--add-host", "db:host-gateway", "no host gateway"),
        ("--ulimit", "stack=1024", "does not set stack"),
        ("--ulimit", "nofile=9:3", "soft limit is above the hard one"),
    ] {
        let (code, err) = try_build(
            &env,
            "FROM debian:bookworm\nRUN true\n",
            &[],
            &[flag, value],
        );
        assert_eq!(code, 1, "{flag} {value}: {err}");
        assert!(err.contains(why), "{flag} {value}: {err}");
    }
}
