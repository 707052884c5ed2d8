//! Runs the native `coreutils` binary against temporary folders.
// They spawn the native binary: nothing to run on wasm32-wasip1.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use std::io::Write;

const BIN: &str = env!("CARGO_BIN_EXE_coreutils");

fn run_in(dir: &Path, tool: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .arg(tool)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let input = stdin.unwrap_or_default().to_vec();
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(&input).expect("writes stdin");
    drop(pipe);
    child.wait_with_output().expect("runs")
}

fn ok(dir: &Path, tool: &str, args: &[&str]) -> String {
    let out = run_in(dir, tool, args, None);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn list_matches_tools_txt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let listed = ok(tmp.path(), "--list", &[]);
    let file =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tools.txt")).expect("tools.txt");
    assert_eq!(listed, file);
}

#[test]
fn runs_as_the_tool_its_name_says() {
    let tmp = tempfile::tempdir().expect("tmp");
    for name in ["cat", "[", "grep"] {
        symlink(BIN, tmp.path().join(name)).expect("symlink");
    }
    fs::write(tmp.path().join("f"), "hello\nworld\n").expect("write");
    let cat = Command::new(tmp.path().join("cat"))
        .arg("f")
        .current_dir(tmp.path())
        .output()
        .expect("cat");
    assert_eq!(cat.stdout, b"hello\nworld\n");
    let test = Command::new(tmp.path().join("["))
        .args(["-f", "f", "]"])
        .current_dir(tmp.path())
        .status()
        .expect("[");
    assert!(test.success());
    let grep = Command::new(tmp.path().join("grep"))
        .args(["-c", "o", "f"])
        .current_dir(tmp.path())
        .output()
        .expect("grep");
    assert_eq!(grep.stdout, b"2\n");
}

#[test]
fn tar_round_trip_keeps_contents_modes_and_links() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    fs::create_dir_all(t.join("src/sub")).expect("mkdir");
    fs::write(t.join("src/run.sh"), "#!/bin/sh\necho hi\n").expect("write");
    fs::set_permissions(t.join("src/run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(t.join("src/sub/data.txt"), "data").expect("write");
    symlink("sub/data.txt", t.join("src/link")).expect("symlink");
    ok(t, "tar", &["czf", "a.tgz", "src"]);
    let listing = ok(t, "tar", &["-tzf", "a.tgz"]);
    assert!(
        listing.lines().any(|l| l == "src/sub/data.txt"),
        "{listing}"
    );
    fs::create_dir(t.join("out")).expect("mkdir");
    ok(
        t,
        "tar",
        &["-xzf", "a.tgz", "-C", "out", "--strip-components=1"],
    );
    assert_eq!(
        fs::read_to_string(t.join("out/sub/data.txt")).expect("read"),
        "data"
    );
    assert_eq!(mode(&t.join("out/run.sh")), 0o755);
    assert_eq!(
        fs::read_link(t.join("out/link")).expect("link"),
        Path::new("sub/data.txt")
    );
    assert_eq!(
        ok(t, "stat", &["-c", "%a %F", "out/run.sh"]),
        "755 regular file\n"
    );
}

#[test]
fn tar_never_writes_outside_the_target() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    fs::create_dir(t.join("outside")).expect("mkdir");
    fs::create_dir(t.join("target")).expect("mkdir");
    // An archive with a `..` member, then a symlink out of the folder and a file through it.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    {
        let name = b"../evil";
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
    }
    h.set_cksum();
    b.append(&h, &b"evil"[..]).expect("append");
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    b.append_link(&mut l, "esc", t.join("outside"))
        .expect("link");
    let mut f = tar::Header::new_gnu();
    f.set_size(4);
    f.set_mode(0o644);
    b.append_data(&mut f, "esc/pwned", &b"pwnd"[..])
        .expect("append");
    let mut ok_file = tar::Header::new_gnu();
    ok_file.set_size(2);
    ok_file.set_mode(0o644);
    b.append_data(&mut ok_file, "fine", &b"ok"[..])
        .expect("append");
    fs::write(t.join("bad.tar"), b.into_inner().expect("tar")).expect("write");

    let out = run_in(t, "tar", &["-xf", "bad.tar", "-C", "target"], None);
    assert!(!out.status.success());
    assert!(!t.join("evil").exists());
    assert!(!t.join("outside/pwned").exists());
    assert_eq!(
        fs::read_to_string(t.join("target/fine")).expect("read"),
        "ok"
    );
}

#[test]
fn find_exec_and_xargs_with_print0() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    fs::create_dir_all(t.join("d/e")).expect("mkdir");
    fs::write(t.join("d/a.txt"), "A\n").expect("write");
    fs::write(t.join("d/e/b.txt"), "B\n").expect("write");
    fs::write(t.join("d/e/c.log"), "C\n").expect("write");
    let found = ok(t, "find", &["d", "-name", "*.txt", "-type", "f"]);
    assert_eq!(found, "d/a.txt\nd/e/b.txt\n");
    let each = ok(
        t,
        "find",
        &["d", "-name", "*.txt", "-exec", BIN, "cat", "{}", ";"],
    );
    assert_eq!(each, "A\nB\n");
    let batched = ok(
        t,
        "find",
        &["d", "-type", "f", "-exec", BIN, "wc", "-l", "{}", "+"],
    );
    assert!(batched.contains("3 total"), "{batched}");
    let pruned = ok(
        t,
        "find",
        &["d", "-name", "e", "-prune", "-o", "-type", "f", "-print"],
    );
    assert_eq!(pruned, "d/a.txt\n");
    let deep = ok(
        t,
        "find",
        &[
            "d",
            "-mindepth",
            "2",
            "-maxdepth",
            "2",
            "!",
            "-name",
            "*.log",
        ],
    );
    assert_eq!(deep, "d/e/b.txt\n");

    let list = run_in(t, "find", &["d", "-type", "f", "-print0"], None);
    let out = run_in(t, "xargs", &["-0", BIN, "cat"], Some(&list.stdout));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"A\nB\nC\n");
    let out = run_in(
        t,
        "xargs",
        &["-n", "1", "-I", "{}", BIN, "echo", "[{}]"],
        Some(b"x\ny\n"),
    );
    assert_eq!(out.stdout, b"[x]\n[y]\n");
    ok(t, "find", &["d", "-name", "*.log", "-delete"]);
    assert!(!t.join("d/e/c.log").exists());
}

#[test]
fn grep_recursive_with_line_numbers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    fs::create_dir_all(t.join("src/inner")).expect("mkdir");
    fs::write(t.join("src/a.rs"), "fn main() {}\n// TODO one\n").expect("write");
    fs::write(t.join("src/inner/b.rs"), "todo lower\nTODO two\n").expect("write");
    assert_eq!(
        ok(t, "grep", &["-rn", "TODO", "src"]),
        "src/a.rs:2:// TODO one\nsrc/inner/b.rs:2:TODO two\n"
    );
    assert_eq!(
        ok(t, "grep", &["-ril", "todo", "src"]),
        "src/a.rs\nsrc/inner/b.rs\n"
    );
    assert_eq!(
        ok(t, "grep", &["-c", "-i", "todo", "src/inner/b.rs"]),
        "2\n"
    );
    assert_eq!(
        ok(t, "grep", &["-oE", "[A-Z]+ [a-z]+", "src/inner/b.rs"]),
        "TODO two\n"
    );
    assert_eq!(
        ok(t, "grep", &["-v", "-e", "todo", "-e", "TODO", "src/a.rs"]),
        "fn main() {}\n"
    );
    assert_eq!(
        ok(t, "grep", &["-x", "-F", "TODO two", "src/inner/b.rs"]),
        "TODO two\n"
    );
    assert_eq!(
        ok(t, "grep", &["-w", "main\\(\\)", "src/a.rs"]),
        "fn main() {}\n"
    );
    let none = run_in(t, "grep", &["-q", "absent", "src/a.rs"], None);
    assert_eq!(none.status.code(), Some(1));
    let missing = run_in(t, "grep", &["-s", "x", "nope"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(missing.stderr.is_empty());
}

#[test]
fn chmod_symbolic_recursive_then_stat() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    fs::create_dir_all(t.join("d/sub")).expect("mkdir");
    fs::write(t.join("d/sub/f"), "x").expect("write");
    fs::set_permissions(t.join("d/sub/f"), fs::Permissions::from_mode(0o600)).expect("chmod");
    ok(t, "chmod", &["-R", "u=rwX,go=rX", "d"]);
    assert_eq!(
        ok(t, "stat", &["-c", "%a %n", "d", "d/sub", "d/sub/f"]),
        "755 d\n755 d/sub\n644 d/sub/f\n"
    );
    ok(t, "chmod", &["-w", "d/sub/f"]);
    assert_eq!(ok(t, "stat", &["-c", "%a", "d/sub/f"]), "444\n");
    ok(t, "chmod", &["2750", "d/sub"]);
    assert_eq!(
        ok(t, "stat", &["-c", "%a %A", "d/sub"]),
        "2750 drwxr-s---\n"
    );
    let bad = run_in(t, "chmod", &["u+q", "d"], None);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn install_d_m_and_mkdir_m() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    fs::write(t.join("tool"), "#!/bin/sh\n").expect("write");
    ok(
        t,
        "install",
        &["-D", "-m", "750", "tool", "opt/app/bin/tool"],
    );
    assert_eq!(
        fs::read_to_string(t.join("opt/app/bin/tool")).expect("read"),
        "#!/bin/sh\n"
    );
    assert_eq!(mode(&t.join("opt/app/bin/tool")), 0o750);
    ok(t, "install", &["-d", "-m", "0700", "var/lib/x"]);
    assert_eq!(mode(&t.join("var/lib/x")), 0o700);
    ok(t, "install", &["-m", "u=rw,go=r", "-t", "opt/app", "tool"]);
    assert_eq!(mode(&t.join("opt/app/tool")), 0o644);
    ok(t, "mkdir", &["-p", "-m", "711", "a/b/c"]);
    assert_eq!(mode(&t.join("a/b/c")), 0o711);
    let me = ok(t, "id", &["-u"]);
    ok(
        t,
        "install",
        &["-o", me.trim(), "-m", "600", "tool", "owned"],
    );
    assert_eq!(
        ok(t, "stat", &["-c", "%u %a", "owned"]),
        format!("{} 600\n", me.trim())
    );
}

#[test]
fn gzip_round_trip() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let text = "line\n".repeat(1000);
    fs::write(t.join("f.txt"), &text).expect("write");
    ok(t, "gzip", &["-k", "f.txt"]);
    assert!(t.join("f.txt").exists() && t.join("f.txt.gz").exists());
    assert_eq!(ok(t, "zcat", &["f.txt.gz"]), text);
    fs::remove_file(t.join("f.txt")).expect("rm");
    ok(t, "gunzip", &["f.txt.gz"]);
    assert!(!t.join("f.txt.gz").exists());
    assert_eq!(fs::read_to_string(t.join("f.txt")).expect("read"), text);
    let piped = run_in(t, "gzip", &["-c"], Some(b"abc"));
    let back = run_in(t, "gzip", &["-dc"], Some(&piped.stdout));
    assert_eq!(back.stdout, b"abc");
    let exists = run_in(t, "gzip", &["-k", "f.txt"], None);
    assert!(exists.status.success());
    let again = run_in(t, "gzip", &["-k", "f.txt"], None);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn test_env_which_and_ids() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    fs::write(t.join("x"), "").expect("write");
    fs::set_permissions(t.join("x"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(t.join("n"), "").expect("write");
    fs::set_permissions(t.join("n"), fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(run_in(t, "test", &["-x", "x"], None).status.success());
    assert!(!run_in(t, "test", &["-x", "n"], None).status.success());
    assert!(
        run_in(t, "[", &["-d", ".", "-a", "!", "-s", "n", "]"], None)
            .status
            .success()
    );
    assert_eq!(run_in(t, "[", &["1", "-eq"], None).status.code(), Some(2));

    let env = run_in(t, "env", &["-i", "FOO=bar", BIN, "printenv", "FOO"], None);
    assert_eq!(env.stdout, b"bar\n");
    let which = Command::new(BIN)
        .args(["which", "x"])
        .env("PATH", t)
        .output()
        .expect("which");
    assert_eq!(
        String::from_utf8_lossy(&which.stdout).trim(),
        t.join("x").display().to_string()
    );
    let uid = ok(t, "id", &["-u"]);
    assert!(uid.trim().parse::<u32>().is_ok());
    assert!(ok(t, "id", &[]).starts_with(&format!("uid={}", uid.trim())));
    let stat = ok(t, "stat", &["x"]);
    assert!(stat.starts_with("  File: x\n  Size: 0"), "{stat}");
    assert!(stat.contains("Access: (0755/-rwxr-xr-x)"), "{stat}");
}

#[test]
fn uutils_tools_work_through_the_multicall() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    assert_eq!(ok(t, "seq", &["3"]), "1\n2\n3\n");
    let sorted = run_in(t, "sort", &["-u"], Some(b"b\na\nb\n"));
    assert_eq!(sorted.stdout, b"a\nb\n");
    let sed = run_in(t, "sed", &["-e", "s/a/b/g"], Some(b"aaa\n"));
    assert_eq!(sed.stdout, b"bbb\n");
    fs::write(t.join("f"), "x=1\n").expect("write");
    ok(t, "sed", &["-i", "s/1/2/", "f"]);
    assert_eq!(fs::read_to_string(t.join("f")).expect("read"), "x=2\n");
    let sum = ok(t, "sha256sum", &["f"]);
    assert!(sum.ends_with("  f\n"), "{sum}");
}

/// Sets the modification time of `path` (not following symlinks is not needed here).
fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    fs::File::open(path)
        .expect("open")
        .set_modified(t)
        .expect("set mtime");
}

/// Our ls against the host's GNU ls, byte for byte, in the C locale and UTC.
#[cfg(target_os = "linux")]
#[test]
fn ls_matches_gnu_ls() {
    let version = Command::new("ls")
        .arg("--version")
        .output()
        .expect("host ls");
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("GNU coreutils"),
        "this test compares with GNU ls, which the host must provide"
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    fs::create_dir_all(d.join("dir/sub")).expect("mkdir");
    fs::create_dir(d.join("sticky")).expect("mkdir");
    fs::write(d.join("a.txt"), "hello\n").expect("write");
    fs::write(d.join("run.sh"), "#!/bin/sh\n").expect("write");
    fs::write(d.join("big"), vec![0u8; 5000]).expect("write");
    fs::write(d.join(".hidden"), "").expect("write");
    fs::write(d.join("dir/inner"), "x").expect("write");
    fs::hard_link(d.join("a.txt"), d.join("hard")).expect("link");
    symlink("a.txt", d.join("link")).expect("symlink");
    symlink("nowhere", d.join("broken")).expect("symlink");
    symlink("dir", d.join("dlink")).expect("symlink");
    let chmod = |p: &str, m: u32| {
        fs::set_permissions(d.join(p), fs::Permissions::from_mode(m)).expect("chmod")
    };
    chmod("run.sh", 0o755);
    chmod("dir/sub", 0o4755);
    chmod("sticky", 0o1777);
    for (i, p) in [
        "a.txt",
        "run.sh",
        "big",
        ".hidden",
        "dir/inner",
        "dir/sub",
        "sticky",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&d.join(p), 1_500_000_000 + 86_400 * 40 * i as u64);
    }
    set_mtime(&d.join("dir"), 1_000_000_000);
    set_mtime(d, 1_000_000_000);
    let cases: &[&[&str]] = &[
        &["-l"],
        &["-la"],
        &["-lA"],
        &["-1"],
        &["-a"],
        &["-R"],
        &["-lR"],
        &["-li"],
        &["-ln"],
        &["-lh"],
        &["-lt"],
        &["-ltr"],
        &["-lS"],
        &["-F"],
        &["-p"],
        &["-lF"],
        &["-C"],
        &["-d", "dir", "sticky"],
        &["-l", "a.txt", "dir", "sticky"],
        &["a.txt", "dir"],
        &["dlink"],
        &["-l", "dlink"],
        &["-lL"],
        &["-l", "--color=never"],
        &["missing", "a.txt"],
    ];
    for args in cases {
        let gnu = Command::new("ls")
            .args(*args)
            .current_dir(d)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .output()
            .expect("GNU ls");
        let ours = Command::new(BIN)
            .arg("ls")
            .args(*args)
            .current_dir(d)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .output()
            .expect("our ls");
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&gnu.stdout),
            "ls {args:?}"
        );
        assert_eq!(ours.status.code(), gnu.status.code(), "ls {args:?}");
        assert_eq!(ours.stderr.is_empty(), gnu.stderr.is_empty(), "ls {args:?}");
    }
}

#[test]
fn cp_keeps_modes_links_and_gnu_dir_semantics() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    fs::create_dir_all(d.join("src/sub")).expect("mkdir");
    fs::write(d.join("src/run.sh"), "#!/bin/sh\n").expect("write");
    fs::set_permissions(d.join("src/run.sh"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    fs::write(d.join("src/sub/f"), "f").expect("write");
    symlink("run.sh", d.join("src/link")).expect("symlink");
    set_mtime(&d.join("src/sub/f"), 1_000_000_000);
    fs::create_dir(d.join("dst")).expect("mkdir");

    ok(d, "cp", &["src/run.sh", "plain"]);
    assert_eq!(
        mode(&d.join("plain")),
        0o755,
        "set-id bits dropped, umask applied"
    );
    ok(d, "cp", &["-a", "src", "dst"]);
    assert_eq!(mode(&d.join("dst/src/run.sh")), 0o4755);
    assert!(fs::symlink_metadata(d.join("dst/src/link"))
        .expect("link")
        .file_type()
        .is_symlink());
    let mtime = fs::metadata(d.join("dst/src/sub/f"))
        .expect("stat")
        .modified()
        .expect("mtime");
    assert_eq!(
        mtime,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000)
    );
    ok(d, "cp", &["-r", "src/.", "merged"]);
    assert!(d.join("merged/sub/f").is_file());
    ok(d, "cp", &["-rT", "src", "dst"]);
    assert!(d.join("dst/run.sh").is_file());
    ok(d, "cp", &["-L", "src/link", "deref"]);
    assert!(fs::symlink_metadata(d.join("deref"))
        .expect("stat")
        .is_file());
    fs::write(d.join("keep"), "old").expect("write");
    ok(d, "cp", &["-n", "src/sub/f", "keep"]);
    assert_eq!(fs::read(d.join("keep")).expect("read"), b"old");
    ok(d, "cp", &["--parents", "src/sub/f", "dst"]);
    assert!(d.join("dst/src/sub/f").is_file());
    let out = run_in(d, "cp", &["-r", "src", "src/sub"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("into itself"));
    let out = run_in(d, "cp", &["src", "x"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "cp: -r not specified; omitting directory 'src'\n"
    );
}

#[test]
fn dd_blocks_notrunc_and_summary() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    fs::write(d.join("in"), "0123456789").expect("write");
    let out = run_in(
        d,
        "dd",
        &["if=in", "of=out", "bs=2", "skip=1", "count=2"],
        None,
    );
    assert!(out.status.success());
    assert_eq!(fs::read(d.join("out")).expect("read"), b"2345");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("2+0 records in\n2+0 records out\n4 bytes copied, "),
        "{err}"
    );
    fs::write(d.join("t"), "XXXXXXXX").expect("write");
    let out = run_in(
        d,
        "dd",
        &["of=t", "bs=1", "seek=2", "conv=notrunc", "status=none"],
        Some(b"ab"),
    );
    assert!(out.status.success() && out.stderr.is_empty());
    assert_eq!(fs::read(d.join("t")).expect("read"), b"XXabXXXX");
    let out = run_in(
        d,
        "dd",
        &[
            "if=in",
            "of=sync",
            "ibs=4",
            "obs=3",
            "conv=sync",
            "status=noxfer",
        ],
        None,
    );
    assert_eq!(fs::read(d.join("sync")).expect("read"), b"0123456789\0\0");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "2+1 records in\n4+0 records out\n"
    );
}

#[test]
fn sort_check_modes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let out = run_in(d, "sort", &["-c"], Some(b"a\nc\nb\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "sort: -:3: disorder: b\n"
    );
    let out = run_in(d, "sort", &["-C", "-n"], Some(b"2\n10\n"));
    assert_eq!(out.status.code(), Some(0));
    let out = run_in(
        d,
        "sort",
        &["--check=quiet", "-t:", "-k2,2n"],
        Some(b"x:10\ny:2\n"),
    );
    assert_eq!((out.status.code(), out.stderr.len()), (Some(1), 0));
    let out = run_in(d, "sort", &["-cu"], Some(b"a\na\n"));
    assert_eq!(out.status.code(), Some(1));
}
