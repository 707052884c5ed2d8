//! The build context: ignore rules, source resolution (escapes, symlinks, wildcards), hostile
//! context tars, and content digests with the stat cache.

use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use kiln::context::{Context, ContextError, EntryKind, Source, SourceKind, StatCache, TarLimits};
use kiln::ignore::read_ignore_file;

fn write(root: &Path, rel: &str, contents: &[u8]) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("create parent");
    }
    std::fs::write(&p, contents).expect("write file");
}

fn patterns(text: &str) -> Vec<String> {
    read_ignore_file(text)
}

fn entry_paths(ctx: &Context, src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in ctx.resolve(src).expect("resolve") {
        for e in ctx.entries(&s).expect("entries") {
            out.push(e.path);
        }
    }
    out
}

fn assert_not_found(r: Result<Vec<Source>, ContextError>, shown: &str) {
    match r {
        Err(e @ ContextError::NotFound { .. }) => {
            let msg = e.to_string();
            assert_eq!(
                msg,
                format!("failed to compute cache key: \"{shown}\" not found")
            );
        }
        other => panic!("expected not found for {shown}, got {other:?}"),
    }
}

/// Waits until files written now are past the stat cache's racy window.
fn settle() {
    std::thread::sleep(Duration::from_millis(60));
}

#[test]
fn ignore_rules_hide_files_and_reinclude() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for f in [
        "a.txt",
        "b.log",
        "secret",
        "docs/README.md",
        "docs/internal.md",
        "src/main.rs",
        "src/x.log",
    ] {
        write(root, f, f.as_bytes());
    }
    write(root, "Dockerfile", b"FROM scratch\n");
    write(
        root,
        ".dockerignore",
        b"*.log\n**/*.log\nsecret\ndocs\n!docs/README.md\nDockerfile\n.dockerignore\n",
    );
    let opened = Context::from_dir(root, &[]).expect("open");
    let pats = opened
        .dockerignore_patterns("Dockerfile")
        .expect("read .dockerignore");
    let ctx = Context::from_dir(root, &pats).expect("open with patterns");

    assert_eq!(
        entry_paths(&ctx, "."),
        ["", "a.txt", "docs", "docs/README.md", "src", "src/main.rs"]
    );
    assert_not_found(ctx.resolve("secret"), "/secret");
    assert_not_found(ctx.resolve("b.log"), "/b.log");
    assert_not_found(ctx.resolve("docs/internal.md"), "/docs/internal.md");
    assert_eq!(entry_paths(&ctx, "docs"), ["docs", "docs/README.md"]);
    // The Dockerfile and .dockerignore are readable for the build but not copyable.
    assert_not_found(ctx.resolve("Dockerfile"), "/Dockerfile");
    assert_not_found(ctx.resolve(".dockerignore"), "/.dockerignore");
    assert_eq!(
        ctx.read_build_file("Dockerfile", 1024)
            .expect("read Dockerfile"),
        b"FROM scratch\n"
    );
    assert!(matches!(
        ctx.read_build_file("Dockerfile", 4),
        Err(ContextError::FileTooLarge { .. })
    ));
    assert!(ctx.open_file("secret").is_err());
    assert!(ctx.open_file("a.txt").is_ok());
}

#[test]
fn ignored_directory_without_reincludes_is_skipped_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "node_modules/x/y.js", b"y");
    write(dir.path(), "app.js", b"a");
    let ctx = Context::from_dir(dir.path(), &patterns("node_modules")).expect("open");
    assert_eq!(entry_paths(&ctx, "/"), ["", "app.js"]);
    assert_not_found(ctx.resolve("node_modules/x"), "/node_modules/x");
    assert_not_found(ctx.resolve("node_*"), "/node_*");
}

#[test]
fn dockerfile_specific_ignore_file_takes_precedence() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), ".dockerignore", b"a\n");
    write(
        dir.path(),
        "build/app.Dockerfile.dockerignore",
        b"# comment\n/b\n!c\n",
    );
    let ctx = Context::from_dir(dir.path(), &[]).expect("open");
    assert_eq!(
        ctx.dockerignore_patterns("build/app.Dockerfile")
            .expect("patterns"),
        ["b", "!c"]
    );
    assert_eq!(
        ctx.dockerignore_patterns("Dockerfile").expect("patterns"),
        ["a"]
    );
    std::fs::remove_file(dir.path().join(".dockerignore")).expect("rm");
    assert!(ctx
        .dockerignore_patterns("Dockerfile")
        .expect("patterns")
        .is_empty());
}

#[test]
fn bad_ignore_pattern_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Context::from_dir(dir.path(), &patterns("!\n"))
        .err()
        .expect("must fail");
    assert_eq!(
        err.to_string(),
        ".dockerignore: illegal exclusion pattern: \"!\""
    );
}

#[test]
fn dotdot_is_clamped_at_the_context_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx_root = dir.path().join("ctx");
    write(&ctx_root, "etc/passwd", b"inside");
    write(dir.path(), "outside", b"outside");
    let ctx = Context::from_dir(&ctx_root, &[]).expect("open");
    let s = ctx.resolve("../../../etc/passwd").expect("clamped");
    assert_eq!(s[0].resolved, "etc/passwd");
    assert_eq!(s[0].kind, SourceKind::File);
    let s = ctx.resolve("/etc/../etc/./passwd").expect("clean");
    assert_eq!(s[0].path, "etc/passwd");
    assert_not_found(ctx.resolve("../outside"), "/outside");
    assert_eq!(ctx.resolve("..").expect("root")[0].resolved, "");
}

#[test]
fn symlinks_resolve_inside_the_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("outside");
    write(&outside, "x", b"outside x");
    let root = dir.path().join("ctx");
    write(&root, "x", b"inside x");
    write(&root, "sub/file", b"f");
    write(&root, "secret", b"s");
    symlink("/etc/passwd", root.join("abs")).expect("symlink");
    symlink("../../x", root.join("sub/rel")).expect("symlink");
    symlink(outside.join("x"), root.join("abs_outside")).expect("symlink");
    symlink("sub", root.join("ldir")).expect("symlink");
    symlink("loop2", root.join("loop1")).expect("symlink");
    symlink("loop1", root.join("loop2")).expect("symlink");
    symlink("secret", root.join("to_secret")).expect("symlink");
    let ctx = Context::from_dir(&root, &patterns("secret")).expect("open");

    // An absolute target means the context root: /etc/passwd is not in the context.
    assert_not_found(ctx.resolve("abs"), "/abs");
    // `..` in a target stops at the root.
    let s = ctx.resolve("sub/rel").expect("rel link");
    assert_eq!(
        (s[0].path.as_str(), s[0].resolved.as_str()),
        ("sub/rel", "x")
    );
    // A link to an absolute path outside names that path inside the context.
    assert_not_found(ctx.resolve("abs_outside"), "/abs_outside");
    // Through a directory symlink.
    let s = ctx.resolve("ldir/file").expect("dir link");
    assert_eq!(s[0].resolved, "sub/file");
    let mut content = String::new();
    std::io::Read::read_to_string(
        &mut ctx.open_file(&s[0].resolved).expect("open"),
        &mut content,
    )
    .expect("read");
    assert_eq!(content, "f");
    // Loops end with an error, not a hang.
    assert!(matches!(
        ctx.resolve("loop1"),
        Err(ContextError::TooManyLinks { .. })
    ));
    // A link to an ignored file finds nothing.
    assert_not_found(ctx.resolve("to_secret"), "/to_secret");
    // Inside a copied directory, symlinks stay symlinks.
    let root_src = &ctx.resolve(".").expect("root")[0];
    let entries = ctx.entries(root_src).expect("entries");
    let abs = entries
        .iter()
        .find(|e| e.path == "abs")
        .expect("abs listed");
    assert_eq!(
        abs.kind,
        EntryKind::Symlink {
            target: "/etc/passwd".into()
        }
    );
    assert!(entries.iter().all(|e| e.path != "secret"));
}

#[test]
fn wildcards_match_per_component() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in [
        "a.txt",
        "b.txt",
        "c.md",
        "sub/one/f",
        "sub/two/f",
        "sub/two/g",
        "x[1].txt",
    ] {
        write(dir.path(), f, b"x");
    }
    let ctx = Context::from_dir(dir.path(), &patterns("b.txt")).expect("open");
    let paths = |src: &str| -> Vec<String> {
        ctx.resolve(src)
            .expect("resolve")
            .into_iter()
            .map(|s| s.path)
            .collect()
    };
    assert_eq!(paths("*.txt"), ["a.txt", "x[1].txt"]);
    assert_eq!(paths("/sub/*/f"), ["sub/one/f", "sub/two/f"]);
    assert_eq!(paths("[ac].*"), ["a.txt", "c.md"]);
    assert_eq!(paths("x[[]1].txt"), ["x[1].txt"]);
    assert_eq!(paths("su?"), ["sub"]);
    assert_not_found(ctx.resolve("*.rs"), "/*.rs");
    assert!(matches!(
        ctx.resolve("a["),
        Err(ContextError::BadPattern(_))
    ));
}

/// One raw tar header block plus data, so tests can write what tar libraries refuse to.
fn raw_entry(name: &[u8], typeflag: u8, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn from_tar(bytes: &[u8], limits: &TarLimits) -> Result<Context, ContextError> {
    Context::from_tar(bytes, limits, &[])
}

#[test]
fn hostile_context_tars_are_refused() {
    let canary = tempfile::tempdir().expect("tempdir");
    let canary_path = canary
        .path()
        .to_str()
        .expect("utf-8 temp path")
        .as_bytes()
        .to_vec();
    std::fs::write(canary.path().join("victim"), b"v").expect("write victim");
    let limits = TarLimits::default();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            tar_of(&[raw_entry(b"a/../../evil", b'0', b"", b"x")]),
            "leaves the destination",
        ),
        (
            "symlink then write through",
            tar_of(&[
                raw_entry(b"l", b'2', &canary_path, b""),
                raw_entry(b"l/pwned", b'0', b"", b"x"),
            ]),
            "is a symlink; refusing to write through it",
        ),
        (
            "symlink then dir through",
            tar_of(&[
                raw_entry(b"l", b'2', &canary_path, b""),
                raw_entry(b"l/d/", b'5', b"", b""),
            ]),
            "is a symlink; refusing to write through it",
        ),
        (
            "hardlink outside",
            tar_of(&[raw_entry(b"h", b'1', b"../../../etc/passwd", b"")]),
            "leaves the destination",
        ),
        (
            "hardlink absolute",
            tar_of(&[raw_entry(b"h", b'1', b"/etc/passwd", b"")]),
            "is absolute",
        ),
        (
            "hardlink through symlink",
            tar_of(&[
                raw_entry(b"l", b'2', &canary_path, b""),
                raw_entry(b"h", b'1', b"l/victim", b""),
            ]),
            "hardlink target",
        ),
        (
            "char device",
            tar_of(&[raw_entry(b"null", b'3', b"", b"")]),
            "device nodes are not allowed",
        ),
        (
            "block device",
            tar_of(&[raw_entry(b"sda", b'4', b"", b"")]),
            "device nodes are not allowed",
        ),
        (
            "sparse",
            tar_of(&[raw_entry(b"s", b'S', b"", b"")]),
            "sparse",
        ),
        (
            "whiteout",
            tar_of(&[raw_entry(b"a/.wh.b", b'0', b"", b"")]),
            "whiteout entries are not allowed",
        ),
    ];
    let mut failures = Vec::new();
    for (what, bytes, expect) in &cases {
        match from_tar(bytes, &limits) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains(expect)
                    || !msg.starts_with("build context tar: refusing tar entry")
                {
                    failures.push(format!("{what}: unexpected error {msg:?}"));
                }
                if !e.is_user_error() {
                    failures.push(format!("{what}: not a user error"));
                }
            }
        }
    }
    let leaked: Vec<_> = std::fs::read_dir(canary.path())
        .expect("list canary")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        leaked,
        ["victim"],
        "something was written outside the context"
    );
    assert_eq!(
        std::fs::read(canary.path().join("victim")).expect("read"),
        b"v"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn context_tar_absolute_names_and_fifos_stay_inside() {
    // As in Docker, a leading `/` means the context root; a fifo is extracted but is no part of
    // the context.
    let bytes = tar_of(&[
        raw_entry(b"/tmp/kiln-abs-name-test", b'0', b"", b"inside"),
        raw_entry(b"p", b'6', b"", b""),
    ]);
    let ctx = from_tar(&bytes, &TarLimits::default()).expect("extract");
    assert!(!Path::new("/tmp/kiln-abs-name-test").exists());
    let s = ctx
        .resolve("/tmp/kiln-abs-name-test")
        .expect("inside the context");
    assert_eq!(s[0].kind, SourceKind::File);
    assert_not_found(ctx.resolve("p"), "/p");
    assert_eq!(
        entry_paths(&ctx, "."),
        ["", "tmp", "tmp/kiln-abs-name-test"]
    );
}

#[test]
fn context_tars_over_limits_are_refused() {
    let small = TarLimits {
        max_entries: 2,
        max_total_bytes: 10,
        ..TarLimits::default()
    };
    let many = tar_of(&[
        raw_entry(b"a", b'0', b"", b"1"),
        raw_entry(b"b", b'0', b"", b"2"),
        raw_entry(b"c", b'0', b"", b"3"),
    ]);
    let check = |bytes: &[u8], limits: &TarLimits, expect: &str| {
        let err = from_tar(bytes, limits).err().expect("must be refused");
        let msg = err.to_string();
        assert!(
            msg.starts_with("build context tar: ") && msg.contains(expect),
            "{msg}"
        );
        assert!(err.is_user_error(), "{msg}");
    };
    check(&many, &small, "more than 2 entries");
    let big = tar_of(&[raw_entry(b"a", b'0', b"", b"01234567890")]);
    check(&big, &small, "exceeds the 10-byte limit");
    // A PAX header claiming 2 GiB is refused before anything is buffered.
    let mut pax = raw_entry(b"pax", b'x', b"", b"");
    pax[124..136].copy_from_slice(b"20000000000\0");
    pax[148..156].copy_from_slice(b"        ");
    let sum: u32 = pax[..512].iter().map(|&b| u32::from(b)).sum();
    pax[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    check(
        &tar_of(&[pax]),
        &TarLimits::default(),
        "extended header of 2147483648 bytes",
    );
    let truncated = raw_entry(b"a", b'0', b"", b"0123456789");
    check(
        &truncated[..515],
        &TarLimits::default(),
        "archive ends inside",
    );
    let mut bad_sum = raw_entry(b"a", b'0', b"", b"");
    bad_sum[0] = b'b';
    check(&tar_of(&[bad_sum]), &TarLimits::default(), "checksum");
}

/// The mtime of every entry of [`sample_tar`].
const MTIME: i64 = 1_600_000_000;

/// Builds the same small tree as a folder and as tars in every supported compression.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(MTIME as u64);
    b.append_data(&mut dir, "app/", std::io::empty())
        .expect("dir");
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o640);
    file.set_size(5);
    file.set_mtime(MTIME as u64);
    b.append_data(&mut file, "app/main.py", &b"print"[..])
        .expect("file");
    let long = format!("app/{}/deep.txt", "n".repeat(150));
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o600);
    file.set_size(4);
    file.set_mtime(MTIME as u64);
    b.append_data(&mut file, &long, &b"deep"[..])
        .expect("long name");
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mtime(MTIME as u64);
    link.set_mode(0o777);
    b.append_link(&mut link, "app/link", "main.py")
        .expect("symlink");
    let mut hard = tar::Header::new_gnu();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    hard.set_mtime(MTIME as u64);
    hard.set_mode(0o640);
    b.append_link(&mut hard, "app/hard", "app/main.py")
        .expect("hardlink");
    b.into_inner().expect("finish tar")
}

#[test]
fn context_tars_in_every_compression_give_the_same_digest() {
    let plain = sample_tar();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&plain).expect("gz");
        e.finish().expect("gz")
    };
    let zst = zstd::encode_all(&plain[..], 1).expect("zstd");
    let xz = {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(&plain).expect("xz");
        e.finish().expect("xz")
    };
    let bz = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(&plain).expect("bz2");
        e.finish().expect("bz2")
    };
    let mut digests = Vec::new();
    for (what, bytes) in [
        ("plain", &plain),
        ("gzip", &gz),
        ("zstd", &zst),
        ("xz", &xz),
        ("bzip2", &bz),
    ] {
        let ctx = Context::from_tar(&bytes[..], &TarLimits::default(), &[])
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(ctx.cache_id(), None);
        let src = ctx.resolve(".").expect("root");
        let entries = ctx.entries(&src[0]).expect("entries");
        let main = entries
            .iter()
            .find(|e| e.path == "app/main.py")
            .expect("main.py");
        assert_eq!(
            (main.mode, &main.kind),
            (0o640, &EntryKind::File { size: 5 }),
            "{what}"
        );
        assert!(
            entries.iter().any(|e| e.path.ends_with("/deep.txt")),
            "{what}: long name"
        );
        let d = ctx.digest(&src, &mut StatCache::new()).expect("digest");
        digests.push(d.hash);
    }
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "digests differ across compressions"
    );

    // The same tree as a folder hashes the same (times and owners are not part of the digest).
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "app/main.py", b"print");
    write(
        dir.path(),
        &format!("app/{}/deep.txt", "n".repeat(150)),
        b"deep",
    );
    std::fs::set_permissions(
        dir.path().join("app/main.py"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    std::fs::set_permissions(
        dir.path().join(format!("app/{}/deep.txt", "n".repeat(150))),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::set_permissions(
        dir.path().join("app"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::set_permissions(
        dir.path().join(format!("app/{}", "n".repeat(150))),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::hard_link(dir.path().join("app/main.py"), dir.path().join("app/hard"))
        .expect("hardlink");
    symlink("main.py", dir.path().join("app/link")).expect("symlink");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let ctx = Context::from_dir(dir.path(), &[]).expect("open");
    let d = ctx
        .digest(&ctx.resolve(".").expect("root"), &mut StatCache::new())
        .expect("digest");
    // Same entries too, apart from times; the tar's times were applied.
    let tar_ctx = Context::from_tar(&plain[..], &TarLimits::default(), &[]).expect("tar");
    let without_times = |c: &Context| -> Vec<_> {
        c.entries(&c.resolve(".").expect("root")[0])
            .expect("entries")
            .into_iter()
            .map(|mut e| {
                let in_tar = ["app", "app/main.py", "app/link", "app/hard"]
                    .contains(&e.path.as_str())
                    || e.path.ends_with("/deep.txt");
                if c.cache_id().is_none() && in_tar {
                    assert_eq!(e.mtime_ns, MTIME * 1_000_000_000, "{e:?}");
                }
                e.mtime_ns = 0;
                e
            })
            .collect()
    };
    assert_eq!(without_times(&ctx), without_times(&tar_ctx));
    assert_eq!(d.hash, digests[0], "folder and tar digests differ");
}

#[test]
fn digest_ignores_touch_but_not_edits_or_chmod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "a.txt", b"hello");
    write(root, "sub/b.txt", b"world");
    write(root, "ignored.log", b"x");
    let ctx = Context::from_dir(root, &patterns("*.log")).expect("open");
    let all = ctx.resolve(".").expect("root");
    let digest = |cache: &mut StatCache| ctx.digest(&all, cache).expect("digest");
    let mut cache = StatCache::new();
    let base = digest(&mut cache).hash;

    let f = std::fs::File::options()
        .write(true)
        .open(root.join("a.txt"))
        .expect("open");
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .expect("touch");
    drop(f);
    assert_eq!(digest(&mut cache).hash, base, "touch changed the digest");

    std::fs::write(root.join("ignored.log"), b"changed").expect("edit ignored");
    assert_eq!(
        digest(&mut cache).hash,
        base,
        "an ignored file changed the digest"
    );

    std::fs::write(root.join("a.txt"), b"hellO").expect("edit");
    let edited = digest(&mut cache).hash;
    assert_ne!(edited, base, "a one-byte edit kept the digest");

    std::fs::set_permissions(root.join("a.txt"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let chmodded = digest(&mut cache).hash;
    assert_ne!(chmodded, edited, "chmod kept the digest");

    // Selecting fewer sources changes the digest; the order of a source list matters.
    let a = ctx.resolve("a.txt").expect("a");
    let b = ctx.resolve("sub/b.txt").expect("b");
    let ab = ctx
        .digest(&[a[0].clone(), b[0].clone()], &mut cache)
        .expect("ab")
        .hash;
    let ba = ctx
        .digest(&[b[0].clone(), a[0].clone()], &mut cache)
        .expect("ba")
        .hash;
    assert_ne!(ab, chmodded);
    assert_ne!(ab, ba);
}

#[test]
fn stat_cache_avoids_reads_and_survives_a_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("ctx");
    for i in 0..300 {
        write(
            &root,
            &format!("d{}/f{i}.txt", i % 7),
            format!("file {i}").as_bytes(),
        );
    }
    let store = dir.path().join("stat");
    std::fs::create_dir(&store).expect("mkdir");
    let store = cap_std::fs::Dir::open_ambient_dir(&store, cap_std::ambient_authority())
        .expect("open store");
    settle();

    let ctx = Context::from_dir(&root, &[]).expect("open");
    let name = format!(
        "{}.bin",
        ctx.cache_id().expect("folder contexts have a cache id")
    );
    let all = ctx.resolve(".").expect("root");
    let mut cache = StatCache::load(&store, &name);
    assert!(cache.is_empty());
    let first = ctx.digest(&all, &mut cache).expect("digest");
    assert_eq!(
        (first.stats.files_statted, first.stats.files_read),
        (300, 300)
    );
    let second = ctx.digest(&all, &mut cache).expect("digest");
    assert_eq!(second.hash, first.hash);
    assert_eq!(
        (second.stats.files_statted, second.stats.files_read),
        (300, 0)
    );
    assert!(
        cache.save(&store, &name).expect("save"),
        "first save writes"
    );
    assert!(
        !cache.save(&store, &name).expect("save"),
        "an unchanged cache is not rewritten"
    );

    // A new process: a fresh context and a cache loaded from disk.
    let ctx = Context::from_dir(&root, &[]).expect("reopen");
    let mut cache = StatCache::load(&store, &name);
    assert_eq!(cache.len(), 300);
    let third = ctx.digest(&all, &mut cache).expect("digest");
    assert_eq!((third.hash, third.stats.files_read), (first.hash, 0));

    // One edited file is the only one read again.
    std::fs::write(root.join("d3/f3.txt"), b"file 3!").expect("edit");
    settle();
    let fourth = ctx.digest(&all, &mut cache).expect("digest");
    assert_ne!(fourth.hash, first.hash);
    assert_eq!(fourth.stats.files_read, 1);
    assert_eq!(fourth.stats.bytes_read, 7);

    // A corrupt or foreign cache file is ignored, never trusted.
    let mut bytes = std::fs::read(dir.path().join("stat").join(&name)).expect("read cache");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(dir.path().join("stat").join(&name), &bytes).expect("corrupt");
    assert!(StatCache::load(&store, &name).is_empty());
    std::fs::write(dir.path().join("stat").join(&name), b"not a cache").expect("foreign");
    let mut cache = StatCache::load(&store, &name);
    let fifth = ctx.digest(&all, &mut cache).expect("digest");
    assert_eq!((fifth.hash, fifth.stats.files_read), (fourth.hash, 300));

    // A cache of another context is dropped, not reused.
    let other_dir = tempfile::tempdir().expect("tempdir");
    write(other_dir.path(), "d3/f3.txt", b"file 3!");
    let other = Context::from_dir(other_dir.path(), &[]).expect("open other");
    let d = other
        .digest(&other.resolve("d3/f3.txt").expect("src"), &mut cache)
        .expect("digest");
    assert_eq!(d.stats.files_read, 1);
    assert_eq!(
        cache.len(),
        0,
        "racily new file is not cached, the foreign entries are gone"
    );
}

#[test]
fn racily_new_files_are_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "f", b"aaaa");
    let ctx = Context::from_dir(dir.path(), &[]).expect("open");
    let src = ctx.resolve("f").expect("f");
    let mut cache = StatCache::new();
    let first = ctx.digest(&src, &mut cache).expect("digest");
    // Rewritten within the same timestamp tick, same size: only a re-read can tell.
    std::fs::write(dir.path().join("f"), b"bbbb").expect("rewrite");
    let second = ctx.digest(&src, &mut cache).expect("digest");
    assert_eq!(second.stats.files_read, 1);
    assert_ne!(first.hash, second.hash);
}
