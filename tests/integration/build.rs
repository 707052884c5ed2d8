//! `kiln build` end to end: real Dockerfiles and contexts, images unpacked and compared.

use crate::harness::{image_tree, paths, Env};

/// Builds `dockerfile` with `files` as the context; returns the image ID and stderr.
fn build(env: &Env, dockerfile: &str, files: &[(&str, &str)], extra: &[&str]) -> (String, String) {
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        env.write(&format!("ctx/{name}"), content);
    }
    let mut args = vec!["build", "-q", "--progress=plain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let mut cmd = env.kiln();
    let out = cmd.args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{stderr}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (id, stderr)
}

fn build_plain(env: &Env, extra: &[&str]) -> String {
    let ctx = env.path("ctx");
    let mut args = vec!["build", "--progress=plain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = env.kiln().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{stderr}");
    stderr
}

#[test]
fn hello_example_builds_the_expected_tree_and_config() {
    let env = Env::new();
    let ctx = crate::harness::workspace_root().join("examples/hello");
    let out = env.ok(&["build", "-q", "-t", "example/hello", ctx.to_str().unwrap()]);
    let id = out.trim();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "-q prints only the ID: {out:?}"
    );
    let tree = image_tree(&env.root(), "example/hello");
    assert_eq!(
        paths(&tree),
        [
            "srv",
            "srv/README",
            "srv/greeting.sha256",
            "srv/greeting.txt",
            "srv/sizes.txt"
        ]
    );
    assert_eq!(
        String::from_utf8_lossy(&tree["srv/sizes.txt"].content),
        "16 greeting.txt\n50 README\n66 total\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&tree["srv/greeting.sha256"].content),
        "ff9371bfd6d641bcb856f8e568b72d4dbf234481e97fa8fa7c51f4108e4429bb  greeting.txt\n"
    );
    assert_eq!(tree["srv/greeting.txt"].content, b"hello from kiln\n");
    assert_eq!(tree["srv/greeting.txt"].mode, 0o644);
    assert_eq!(tree["srv/README"].mode, 0o755);
    assert_eq!(
        tree["srv/README"].content,
        b"This image was built by kiln from examples/hello.\n"
    );
    assert_eq!((tree["srv"].uid, tree["srv"].gid), (0, 0));
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "example/hello"])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["Cmd"], serde_json::json!(["/srv/greeting.txt"]));
    assert_eq!(config["WorkingDir"], "/srv");
    assert_eq!(
        config["Labels"]["org.opencontainers.image.description"],
        "hello from kiln"
    );
    assert_eq!(config["Env"][1], "GREETING=hello from kiln");
    assert_eq!(inspect[0]["Id"], id);
}

#[test]
fn image_config_and_history_follow_docker() {
    let env = Env::new();
    let df = "FROM scratch\n\
              ENV A=1 B=\"two words\"\n\
              LABEL x=y\n\
              EXPOSE 80 53/udp\n\
              VOLUME /data\n\
              USER 1000:1000\n\
              WORKDIR /app\n\
              STOPSIGNAL SIGTERM\n\
              HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD [\"/bin/check\"]\n\
              ENTRYPOINT [\"/bin/app\"]\n\
              CMD echo help\n\
              ONBUILD COPY . /src\n\
              SHELL [\"/bin/bash\", \"-c\"]\n\
              MAINTAINER someone\n";
    build(&env, df, &[], &["-t", "me/cfg"]);
    let raw = env.ok(&["inspect", "me/cfg"]);
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let c = &v[0]["Config"];
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "A=1",
            "B=two words"
        ])
    );
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "80/tcp": {}})
    );
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/bin/check"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 3);
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/app"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-c", "echo help"]));
    assert_eq!(c["OnBuild"], serde_json::json!(["COPY . /src"]));
    assert_eq!(c["Shell"], serde_json::json!(["/bin/bash", "-c"]));
    assert_eq!(v[0]["Author"], "someone");
    let hist = env.ok(&["history", "--no-trunc", "--format", "json", "me/cfg"]);
    for want in [
        "ENV A=1 B=two words",
        "EXPOSE map[53/udp:{} 80/tcp:{}]",
        "WORKDIR /app",
        "HEALTHCHECK &{[\\\"CMD\\\" \\\"/bin/check\\\"] \\\"30s\\\" \\\"3s\\\" \\\"0s\\\" \\\"0s\\\" '\\\\x03'}",
        "CMD [\\\"/bin/sh\\\" \\\"-c\\\" \\\"echo help\\\"]",
        "ONBUILD COPY . /src",
    ] {
        assert!(hist.contains(want), "history lacks {want:?}:\n{hist}");
    }
}

#[test]
fn a_fully_cached_rebuild_reports_every_step_cached_and_keeps_the_id() {
    let env = Env::new();
    let df = "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY c /c\n";
    let files = [("a", "1"), ("b", "2"), ("c", "3")];
    let (id1, _) = build(&env, df, &files, &[]);
    let stderr = build_plain(&env, &[]);
    assert_eq!(stderr.matches("Using cache").count(), 3, "{stderr}");
    assert!(
        stderr.contains(&format!("Successfully built {}", &id1[7..19])),
        "{stderr}"
    );
}

#[test]
fn inserting_a_step_rebuilds_from_there_down_only() {
    // The seed's cache lesson: three steps, then a new one after the second.
    let env = Env::new();
    let files = [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")];
    build(
        &env,
        "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY c /c\n",
        &files,
        &[],
    );
    std::fs::write(
        env.path("ctx/Dockerfile"),
        "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY d /d\nCOPY c /c\n",
    )
    .unwrap();
    let stderr = build_plain(&env, &[]);
    let steps = crate::harness::step_lines(&stderr);
    let cached: Vec<bool> = stderr
        .split("Step ")
        .skip(1)
        .map(|s| s.contains("Using cache"))
        .collect();
    assert_eq!(cached, [false, true, true, false, false], "{steps:#?}");
    assert!(stderr.contains("Cache miss"), "a miss says why:\n{stderr}");
}

#[test]
fn touch_keeps_the_cache_and_a_one_byte_edit_misses_it() {
    let env = Env::new();
    let files = [("f", "hello")];
    build(&env, "FROM scratch\nCOPY f /f\n", &files, &[]);
    let f = env.path("ctx/f");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(later)
        .unwrap();
    // Files changed within a few ms of hashing are not trusted to the stat cache ("racily
    // clean"); people do not edit that close to a build, so neither does the test.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let stderr = build_plain(&env, &[]);
    assert!(
        stderr.contains("Using cache"),
        "touch must keep the cache:\n{stderr}"
    );
    std::fs::write(&f, "hellp").unwrap();
    let stderr = build_plain(&env, &[]);
    assert!(
        !stderr.contains("Using cache"),
        "an edit must miss:\n{stderr}"
    );
    assert!(
        stderr.contains("Cache miss: file \"f\" changed"),
        "{stderr}"
    );
    let stderr = build_plain(&env, &["--no-cache"]);
    assert!(!stderr.contains("Using cache"), "--no-cache:\n{stderr}");
}

/// Classic-builder CVE-2024-24557: the cache ignored some config fields, so an image with a
/// different HEALTHCHECK or ONBUILD could be served from another's cache.
#[test]
fn cve_2024_24557_healthcheck_and_onbuild_are_in_the_cache_key() {
    let env = Env::new();
    let files = [("f", "x")];
    for (first, second) in [
        ("HEALTHCHECK CMD [\"/a\"]", "HEALTHCHECK CMD [\"/b\"]"),
        ("ONBUILD COPY x /x", "ONBUILD COPY y /y"),
    ] {
        let (a, _) = build(
            &env,
            &format!("FROM scratch\n{first}\nCOPY f /f\n"),
            &files,
            &[],
        );
        let (b, stderr) = build(
            &env,
            &format!("FROM scratch\n{second}\nCOPY f /f\n"),
            &files,
            &[],
        );
        assert_ne!(a, b, "{first} vs {second}");
        assert!(
            !stderr.contains("Using cache"),
            "{first} vs {second}:\n{stderr}"
        );
    }
}

#[test]
fn source_date_epoch_gives_identical_images_in_fresh_stores() {
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let env = Env::new();
            let ctx = crate::harness::workspace_root().join("examples/hello");
            let out = env
                .kiln()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["build", "-q", ctx.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
}

#[test]
fn parse_errors_name_the_line_and_exit_1() {
    let env = Env::new();
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\n\n# comment\nCOPY a /a\n\n\nRUNN echo hi\n",
    );
    let err = env.fails(&["build", env.path("ctx").to_str().unwrap()], 1);
    assert!(
        err.contains("Dockerfile:7: unknown instruction: RUNN"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("kiln:")).count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("unknown instruction").count(), 1, "{err}");
}

#[test]
fn multi_stage_builds_skip_unused_stages_and_copy_from_stages() {
    let env = Env::new();
    let df = "FROM scratch AS unused\nCOPY missing-file /x\n\
              FROM scratch AS builder\nCOPY a /out/a\nCOPY b /out/sub/b\n\
              FROM scratch\nCOPY --from=builder /out/ /app/\nCOPY --from=1 /out/a /single\n";
    let (_, stderr) = build(&env, df, &[("a", "A"), ("b", "B")], &["-t", "me/multi"]);
    assert!(
        !stderr.contains("missing-file"),
        "the unused stage must not run:\n{stderr}"
    );
    let tree = image_tree(&env.root(), "me/multi");
    assert_eq!(
        paths(&tree),
        ["app", "app/a", "app/sub", "app/sub/b", "single"]
    );
    assert_eq!(tree["single"].content, b"A");
    // --target builds the named stage.
    build(&env, df, &[], &["-t", "me/builder", "--target", "builder"]);
    let tree = image_tree(&env.root(), "me/builder");
    assert_eq!(paths(&tree), ["out", "out/a", "out/sub", "out/sub/b"]);
}

#[test]
fn copy_honours_dockerignore_globs_chown_chmod_and_exclude() {
    let env = Env::new();
    let df = "FROM scratch\n\
              COPY passwd group /etc/\n\
              COPY --chown=app:staff --chmod=u=rwx,go=rx src/ /app/\n\
              COPY --exclude=*.tmp *.txt /txt/\n";
    let files = [
        (
            "passwd",
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        ),
        ("group", "root:x:0:\nstaff:x:50:\n"),
        ("src/main.c", "int main;"),
        ("src/secret.key", "k"),
        ("a.txt", "a"),
        ("b.txt", "b"),
        ("c.tmp", "c"),
        (".dockerignore", "src/*.key\n"),
    ];
    build(&env, df, &files, &["-t", "me/copy"]);
    let tree = image_tree(&env.root(), "me/copy");
    assert_eq!(
        paths(&tree),
        [
            "app",
            "app/main.c",
            "etc",
            "etc/group",
            "etc/passwd",
            "txt",
            "txt/a.txt",
            "txt/b.txt"
        ]
    );
    let main = &tree["app/main.c"];
    assert_eq!((main.uid, main.gid, main.mode), (1000, 50, 0o755));
}

#[test]
fn copy_sources_never_leave_the_context() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", env.path("ctx/link")).unwrap();
    let (_, _) = build(
        &env,
        "FROM scratch\nCOPY ../../../etc/hostname /x\n",
        &[("etc/hostname", "inside")],
        &["-t", "me/esc"],
    );
    let tree = image_tree(&env.root(), "me/esc");
    assert_eq!(
        tree["x"].content, b"inside",
        "`..` is clamped at the context root"
    );
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY link /x\n");
    let out = env.run(&["build", "-t", "me/esc2", env.path("ctx").to_str().unwrap()]);
    if out.status.success() {
        let tree = image_tree(&env.root(), "me/esc2");
        let host = std::fs::read("/etc/passwd").unwrap();
        assert!(
            tree.values().all(|f| f.content != host),
            "host /etc/passwd leaked into the image"
        );
    } else {
        assert_eq!(out.status.code(), Some(1));
    }
}

#[test]
fn add_extracts_local_archives_and_refuses_urls_without_network() {
    let env = Env::new();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o600);
    h.set_cksum();
    b.append_data(&mut h, "inner/file", &b"hello"[..]).unwrap();
    let gz = b.into_inner().unwrap().finish().unwrap();
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    std::fs::write(env.path("ctx/a.tar.gz"), &gz).unwrap();
    build(
        &env,
        "FROM scratch\nADD a.tar.gz /opt/\nCOPY a.tar.gz /kept/\n",
        &[],
        &["-t", "me/add"],
    );
    let tree = image_tree(&env.root(), "me/add");
    assert_eq!(tree["opt/inner/file"].content, b"hello");
    assert_eq!(tree["opt/inner/file"].mode, 0o600);
    assert_eq!(tree["kept/a.tar.gz"].content, gz, "COPY never extracts");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nADD https://example.com/x /x\n",
    );
    let err = env.fails(&["build", env.path("ctx").to_str().unwrap()], 1);
    assert!(
        err.contains("Dockerfile:2:") && err.contains("--network=host"),
        "{err}"
    );
}

#[test]
fn onbuild_triggers_run_when_a_later_build_uses_the_image() {
    let env = Env::new();
    build(
        &env,
        "FROM scratch\nONBUILD COPY trigger.txt /from-trigger\n",
        &[],
        &["-t", "me/base"],
    );
    build(
        &env,
        "FROM me/base\nCOPY own.txt /own\n",
        &[("trigger.txt", "T"), ("own.txt", "O")],
        &["-t", "me/child"],
    );
    let tree = image_tree(&env.root(), "me/child");
    assert_eq!(paths(&tree), ["from-trigger", "own"]);
    // As docker says it, right under the FROM line.
    let out = env.ok_stderr(&[
        "build",
        "--no-cache",
        "--progress=plain",
        env.path("ctx").to_str().unwrap(),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.starts_with("Step 1/2 : FROM me/base"))
        .expect("the FROM line");
    assert_eq!(
        lines.get(from + 1),
        Some(&"# Executing 1 build trigger"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "me/child"])).unwrap();
    assert!(
        v[0]["Config"]["OnBuild"].is_null(),
        "triggers are consumed: {}",
        v[0]["Config"]
    );
}

#[test]
fn context_and_dockerfile_from_stdin() {
    let env = Env::new();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("Dockerfile", &b"FROM scratch\nCOPY f /f\n"[..]),
        ("f", b"from tar"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut child = env
        .kiln()
        .args(["build", "-q", "-t", "me/stdin", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &tar).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        image_tree(&env.root(), "me/stdin")["f"].content,
        b"from tar"
    );

    std::fs::create_dir_all(env.path("ctx2")).unwrap();
    env.write("ctx2/g", "g");
    let mut child = env
        .kiln()
        .args([
            "build",
            "-q",
            "-t",
            "me/stdin2",
            "-f",
            "-",
            env.path("ctx2").to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"FROM scratch\nCOPY g /g\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(image_tree(&env.root(), "me/stdin2")["g"].content, b"g");
}

#[test]
fn build_args_and_global_args_expand_in_from_copy_and_env() {
    let env = Env::new();
    let df = "ARG BASE=scratch\nFROM ${BASE}\nARG DEST=/default\nARG WHO\nENV WHO=${WHO:-nobody}\nCOPY f ${DEST}\n";
    build(
        &env,
        df,
        &[("f", "x")],
        &[
            "-t",
            "me/args",
            "--build-arg",
            "DEST=/given",
            "--build-arg",
            "WHO=me",
        ],
    );
    let tree = image_tree(&env.root(), "me/args");
    assert_eq!(paths(&tree), ["given"]);
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "me/args"])).unwrap();
    assert_eq!(v[0]["Config"]["Env"][1], "WHO=me");
}

#[test]
fn iidfile_and_missing_base_images() {
    let env = Env::new();
    let iid = env.path("iid");
    let (id, _) = build(
        &env,
        "FROM scratch\nCOPY f /f\n",
        &[("f", "x")],
        &["--iidfile", iid.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    env.write("ctx/Dockerfile", "FROM redis\n");
    let err = env.fails(&["build", env.path("ctx").to_str().unwrap()], 1);
    assert!(
        err.contains("Dockerfile:1:") && err.contains("redis"),
        "{err}"
    );
}

/// Serves `body` at any path over HTTP on loopback, for `count` requests; returns the port.
fn serve(body: &'static [u8], count: usize) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    port
}

#[test]
fn add_fetches_urls_with_network_host_and_verifies_checksums() {
    let env = Env::new();
    let body: &[u8] = b"downloaded\n";
    let port = serve(body, 3);
    let url = format!("http://127.0.0.1:{port}/files/tool.txt?version=1");
    let sum = format!("sha256:{}", kiln::digest::Digest::of(body).hex());
    let df = format!("FROM scratch\nADD --checksum={sum} {url} /opt/\n");
    build(&env, &df, &[], &["-t", "me/url", "--network=host"]);
    let tree = image_tree(&env.root(), "me/url");
    let f = &tree["opt/tool.txt"];
    assert_eq!((f.content.as_slice(), f.mode), (body, 0o600));
    // A wrong checksum fails the build and names the mismatch.
    let bad = format!(
        "FROM scratch\nADD --checksum=sha256:{} {url} /opt/\n",
        "0".repeat(64)
    );
    env.write("ctx/Dockerfile", &bad);
    let err = env.fails(
        &["build", "--network=host", env.path("ctx").to_str().unwrap()],
        1,
    );
    assert!(
        err.contains("Dockerfile:2:") && err.contains("checksum mismatch"),
        "{err}"
    );
}

#[test]
fn concurrent_builds_share_one_store_safely() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    for i in 0..20 {
        env.write(&format!("ctx/data/f{i}"), format!("file {i}\n"));
    }
    let mut children = Vec::new();
    for n in 0..6 {
        let df = env.write(
            &format!("Dockerfile.{n}"),
            format!("FROM scratch\nCOPY data /data\nENV N={n}\nCOPY data/f{n} /only\n"),
        );
        children.push(
            env.kiln()
                .args(["build", "-q", "-t", &format!("me/par:{n}"), "-f"])
                .arg(&df)
                .arg(env.path("ctx"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for n in 0..6 {
        let tree = image_tree(&env.root(), &format!("me/par:{n}"));
        assert_eq!(tree["only"].content, format!("file {n}\n").as_bytes());
        assert_eq!(tree.keys().filter(|k| k.starts_with("data/")).count(), 20);
    }
    env.ok(&["fsck"]);
}

#[test]
fn kill_9_during_a_build_leaves_a_store_that_fsck_passes_and_builds_again() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    // Enough data that the COPY is still running when the build is killed.
    let chunk = vec![7u8; 1 << 20];
    for i in 0..64 {
        env.write(&format!("ctx/big/f{i}"), &chunk);
    }
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY big /big\n");
    for delay_ms in [5u64, 50, 200] {
        let mut child = env
            .kiln()
            .args(["build", "-q", "-t", "me/killed"])
            .arg(env.path("ctx"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let out = env.run(&["fsck"]);
        assert!(
            out.status.success(),
            "fsck after kill -9 at {delay_ms} ms:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    env.ok(&[
        "build",
        "-q",
        "-t",
        "me/killed",
        env.path("ctx").to_str().unwrap(),
    ]);
    let tree = image_tree(&env.root(), "me/killed");
    assert_eq!(tree["big/f63"].content.len(), 1 << 20);
    env.ok(&["fsck"]);
}

#[test]
fn from_an_earlier_stage_and_copy_parents() {
    let env = Env::new();
    let df = "FROM scratch AS base\nCOPY a/b/file /base/\nENV FROM_BASE=1\n\
              FROM base\nCOPY --parents a/b/file /tree/\n";
    build(&env, df, &[("a/b/file", "deep")], &["-t", "me/stages"]);
    let tree = image_tree(&env.root(), "me/stages");
    assert_eq!(tree["base/file"].content, b"deep");
    assert_eq!(tree["tree/a/b/file"].content, b"deep");
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "me/stages"])).unwrap();
    assert!(v[0]["Config"]["Env"].to_string().contains("FROM_BASE=1"));
}

#[test]
fn save_and_load_round_trip_in_both_formats() {
    let env = Env::new();
    let (id, _) = build(
        &env,
        "FROM scratch\nCOPY f /f\nCMD [\"/f\"]\n",
        &[("f", "x")],
        &["-t", "me/rt:1"],
    );
    for format in ["docker", "oci"] {
        let archive = env.path(&format!("rt-{format}.tar"));
        env.ok(&[
            "save",
            "--format",
            format,
            "-o",
            archive.to_str().unwrap(),
            "me/rt:1",
        ]);
        let other = Env::new();
        let out = other.ok(&["load", "-i", archive.to_str().unwrap()]);
        assert!(out.contains("Loaded image: me/rt:1"), "{format}: {out}");
        let v: serde_json::Value =
            serde_json::from_str(&other.ok(&["inspect", "me/rt:1"])).unwrap();
        assert_eq!(v[0]["Id"], id.as_str(), "{format}: the image ID survives");
        assert_eq!(image_tree(&other.root(), "me/rt:1")["f"].content, b"x");
        other.ok(&["fsck"]);
    }
}

#[test]
fn import_makes_a_one_layer_image_with_changes() {
    let env = Env::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o755);
    h.set_cksum();
    b.append_data(&mut h, "bin/tool", &b"abc"[..]).unwrap();
    let rootfs = env.write("rootfs.tar", b.into_inner().unwrap());
    let id = env.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/tool\"]",
        "-c",
        "ENV A=b",
        rootfs.to_str().unwrap(),
        "me/imported:v1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "me/imported:v1"])).unwrap();
    assert_eq!(v[0]["Config"]["Cmd"], serde_json::json!(["/bin/tool"]));
    assert_eq!(v[0]["Config"]["Env"], serde_json::json!(["A=b"]));
    assert_eq!(
        image_tree(&env.root(), "me/imported:v1")["bin/tool"].mode,
        0o755
    );
    let err = env.fails(&["import", "-c", "COPY a b", rootfs.to_str().unwrap()], 1);
    assert!(err.contains("not supported as a change"), "{err}");
}

#[test]
fn progress_json_is_one_event_per_line_and_quiet_prints_only_the_id() {
    let env = Env::new();
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY f /f\n");
    env.write("ctx/f", "x");
    let out = env.run(&[
        "build",
        "--progress=json",
        "-t",
        "me/json",
        env.path("ctx").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "progress never goes to stdout");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "step_started",
            "step_done",
            "step_started",
            "step_done",
            "built",
            "tagged"
        ],
        "{events:#?}"
    );
    assert_eq!(events[2]["text"], "COPY f /f");
    assert_eq!(events[5]["name"], "me/json:latest");
}

/// The snapshot folder of an image's layer `index`.
fn snapshot_of(env: &Env, image: &str, index: usize) -> std::path::PathBuf {
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", image])).unwrap();
    let diff = v[0]["RootFS"]["Layers"][index]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    env.root().join("kiln/snapshots").join(diff).join("rootfs")
}

/// The context's files as the image should hold them below `prefix`: kind, mode and content
/// (or link target), from the host's view of the folder.
fn context_tree(
    dir: &std::path::Path,
    prefix: &str,
) -> std::collections::BTreeMap<String, (char, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![(dir.to_path_buf(), prefix.to_owned())];
    while let Some((d, p)) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = format!("{p}/{}", e.file_name().to_string_lossy());
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                out.insert(name.clone(), ('d', mode, Vec::new()));
                todo.push((e.path(), name));
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(e.path()).unwrap();
                out.insert(name, ('l', 0o777, t.to_string_lossy().as_bytes().to_vec()));
            } else {
                out.insert(name, ('f', mode, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

#[test]
fn a_tree_of_many_folders_is_copied_whole_and_rebuilt_exactly() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    // Several levels of several folders: the copy shares folders between two threads.
    for a in 0..5 {
        for b in 0..4 {
            let d = format!("ctx/t/d{a}/e{b}");
            std::fs::create_dir_all(env.path(&d)).unwrap();
            for f in 0..6 {
                env.write(&format!("{d}/f{f}"), format!("{a}-{b}-{f}\n").repeat(f + 1));
            }
            std::os::unix::fs::symlink(format!("f{b}"), env.path(&format!("{d}/link"))).unwrap();
        }
        std::fs::set_permissions(
            env.path(&format!("ctx/t/d{a}/e0/f0")),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
    }
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY t /x/\n");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let build = |tag: &str| {
        env.ok(&["build", "-q", "-t", tag, env.path("ctx").to_str().unwrap()]);
        image_tree(&env.root(), tag)
            .into_iter()
            .filter(|(k, _)| k.starts_with("x/"))
            .map(|(k, v)| {
                (
                    k,
                    (
                        v.kind,
                        if v.kind == 'l' {
                            0o777
                        } else {
                            v.mode & 0o7777
                        },
                        v.content,
                    ),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(build("me/tree:1"), context_tree(&env.path("ctx/t"), "x"));
    // Edit a file deep in one folder and remove another: the rebuild reuses the rest and the
    // image matches the context again.
    env.write("ctx/t/d3/e2/f4", "changed");
    std::fs::remove_file(env.path("ctx/t/d1/e1/f1")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(build("me/tree:2"), context_tree(&env.path("ctx/t"), "x"));
    env.ok(&["fsck"]);
}

#[test]
fn a_rebuild_reuses_unchanged_files_without_touching_the_old_snapshot() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    env.write("ctx/keep", "unchanged");
    env.write("ctx/edit", "before");
    env.write("ctx/mode", "same bytes");
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY keep edit mode /d/\n");
    // Files this fresh are not trusted to their stat yet ("racily clean").
    std::thread::sleep(std::time::Duration::from_millis(100));
    env.ok(&[
        "build",
        "-q",
        "-t",
        "me/reuse:1",
        env.path("ctx").to_str().unwrap(),
    ]);
    let old = snapshot_of(&env, "me/reuse:1", 0);

    env.write("ctx/edit", "after!");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.path("ctx/mode"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    env.ok(&[
        "build",
        "-q",
        "-t",
        "me/reuse:2",
        env.path("ctx").to_str().unwrap(),
    ]);
    let new = snapshot_of(&env, "me/reuse:2", 0);
    assert_ne!(old, new);

    // The unchanged file is shared; the edited and the re-moded ones are not.
    let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&old.join("d/keep")), ino(&new.join("d/keep")));
    assert_ne!(ino(&old.join("d/edit")), ino(&new.join("d/edit")));
    assert_ne!(ino(&old.join("d/mode")), ino(&new.join("d/mode")));
    // Both images and both snapshots say what they said when they were built.
    let one = image_tree(&env.root(), "me/reuse:1");
    let two = image_tree(&env.root(), "me/reuse:2");
    assert_eq!(
        (one["d/edit"].content.as_slice(), one["d/mode"].mode),
        (&b"before"[..], 0o644)
    );
    assert_eq!(
        (two["d/edit"].content.as_slice(), two["d/mode"].mode),
        (&b"after!"[..], 0o600)
    );
    assert_eq!(std::fs::read(old.join("d/edit")).unwrap(), b"before");
    let old_mode = std::fs::metadata(old.join("d/mode"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(old_mode & 0o7777, 0o644);
    // kiln's bookkeeping (files beside the snapshot, xattrs of older versions) never reaches
    // a layer.
    let store = kiln::store::Store::open(&env.root()).unwrap();
    let img = store.resolve("me/reuse:2").unwrap();
    let blob = store.open_blob(&img.manifest.layers[0].digest).unwrap();
    let mut ar = tar::Archive::new(blob);
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let key = ext.unwrap().key().unwrap().to_owned();
                assert!(!key.contains("kiln"), "bookkeeping xattr {key} in a layer");
            }
        }
    }
    env.ok(&["fsck"]);
}

/// kiln run by an unprivileged user (uid and gid 65534, through `setpriv`) with a store of its
/// own: importing the Debian base gives the same image as root's import (its device nodes,
/// which the user cannot create, recorded and written back as the same entries), and a
/// `--isolation=wasi` build on it sees the base's owners, modes and devices, and records the
/// owners and modes its COPY and RUN set; nothing in the user's store is setuid for real.
#[test]
fn an_unprivileged_user_imports_and_builds_the_same_images() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const NOBODY: u32 = 65534;
    let env = Env::new();
    let tarball = crate::harness::debian_tarball();
    let import = |cmd: &mut std::process::Command| {
        let out = cmd
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["import", "-", "debian:bookworm"])
            .stdin(std::fs::File::open(&tarball).expect("open the Debian base"))
            .output()
            .expect("spawn kiln");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "import failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let as_root = import(&mut env.kiln());

    // The user's own folder, reachable through the test's.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let home = env.path("nobody");
    env.write(
        "nobody/ctx/Dockerfile",
        "FROM debian:bookworm\nCOPY tool /opt/\nCOPY d /opt/d/\n\
         RUN echo hi > /hi && chown 100:101 /hi && chmod 6755 /hi \
         && stat -c '%a %u %g %F' /usr/bin/chfn /dev/full > /seen\n",
    );
    env.write("nobody/ctx/tool", "#!/bin/sh\n");
    std::fs::create_dir(home.join("ctx/d")).unwrap();
    std::os::unix::fs::symlink("../tool", home.join("ctx/d/link")).unwrap();
    for entry in [
        "",
        "ctx",
        "ctx/Dockerfile",
        "ctx/tool",
        "ctx/d",
        "ctx/d/link",
    ] {
        std::os::unix::fs::lchown(home.join(entry), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // After the chown, which clears setuid.
    std::fs::set_permissions(
        home.join("ctx/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let nobody = || {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_ROOT", home.join("store"))
            .env("KILN_CACHE_DIR", home.join("cache"))
            .env("HOME", &home)
            .env("NO_COLOR", "1");
        cmd
    };
    assert_eq!(
        import(&mut nobody()),
        as_root,
        "the same tarball, another image"
    );

    let out = nobody()
        .args(["build", "-q", "--isolation=wasi", "-t", "me/rootless"])
        .arg(home.join("ctx"))
        .output()
        .expect("spawn kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build failed: {stderr}");
    let tree = image_tree(&home.join("store"), "me/rootless");
    let hi = &tree["hi"];
    assert_eq!(
        (hi.mode, hi.uid, hi.gid, hi.content.as_slice()),
        (0o6755, 100, 101, &b"hi\n"[..])
    );
    let (tool, link) = (&tree["opt/tool"], &tree["opt/d/link"]);
    assert_eq!((tool.mode, tool.uid, tool.gid), (0o4755, 0, 0));
    assert_eq!(
        (link.kind, link.uid, link.content.as_slice()),
        ('l', 0, &b"../tool"[..])
    );
    assert_eq!(
        String::from_utf8_lossy(&tree["seen"].content),
        "4755 0 0 regular file\n666 0 0 character special file\n"
    );
    // Nothing in the user's store is setuid or setgid for real: it would run as that user.
    let mut setid = Vec::new();
    let mut stack = vec![home.join("store")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.mode() & 0o6000 != 0 {
                setid.push(entry.path());
            }
        }
    }
    assert!(setid.is_empty(), "setuid or setgid on disk: {setid:?}");
}

/// A source that is a symlink is followed, and its copy keeps the name the source was written
/// with, as BuildKit does (`filepath.Base(src)`): `COPY tool link /opt/` gives two files. A
/// symlink inside a copied folder stays a symlink.
#[test]
fn copy_follows_a_symlink_source_and_keeps_its_name() {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(ctx.join("d")).unwrap();
    std::os::unix::fs::symlink("tool", ctx.join("link")).unwrap();
    std::os::unix::fs::symlink("../tool", ctx.join("d/l")).unwrap();
    build(
        &env,
        "FROM scratch\nCOPY tool link /opt/\nCOPY link /single\nCOPY d /d/\n",
        &[("tool", "x\n")],
        &["-t", "me/links"],
    );
    let tree = image_tree(&env.root(), "me/links");
    for path in ["opt/tool", "opt/link", "single"] {
        let f = &tree[path];
        assert_eq!((f.kind, f.content.as_slice()), ('f', &b"x\n"[..]), "{path}");
    }
    let l = &tree["d/l"];
    assert_eq!((l.kind, l.content.as_slice()), ('l', &b"../tool"[..]));
}

#[test]
fn no_cache_filter_reruns_only_the_stages_it_names_and_a_syntax_line_is_noted() {
    let env = Env::new();
    env.write(
        "ctx/Dockerfile",
        "# syntax=docker/dockerfile:1\nFROM scratch AS one\nRUN echo one > /one\nFROM scratch AS two\nCOPY --from=one /one /one\nRUN echo two > /two\n",
    );
    let ctx = env.path("ctx").to_str().unwrap().to_owned();
    let first = build_plain(&env, &[]);
    assert!(
        first.contains("# syntax=docker/dockerfile:1 is not run"),
        "{first}"
    );
    let again = build_plain(&env, &["--no-cache-filter", "two"]);
    assert_eq!(again.matches(" ---> Using cache").count(), 1, "{again}");
    assert_eq!(again.matches(" ---> Running in").count(), 1, "{again}");
    let by_number = build_plain(&env, &["--no-cache-filter", "0"]);
    assert_eq!(
        by_number.matches(" ---> Running in").count(),
        1,
        "{by_number}"
    );
    let err = env.fails(&["build", "--no-cache-filter", "three", &ctx], 1);
    assert!(err.contains("no such stage"), "{err}");
}

#[test]
fn platform_builds_for_this_machine_and_refuses_emulation() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    env.write("ctx/a", "a\n");
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY a /a\n");
    let ctx = env.path("ctx").to_str().unwrap().to_owned();
    // This machine's platform, by any of its names.
    env.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64",
        "-t",
        "here",
        &ctx,
    ]);
    // FROM scratch holds no program: it is built for the platform asked, as BuildKit does.
    env.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/arm64",
        "-t",
        "arm",
        &ctx,
    ]);
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "arm"])).unwrap();
    assert_eq!(v[0]["Architecture"], "arm64", "{}", v[0]);
    // An image of another platform is not emulated.
    env.write("ctx/Dockerfile", "FROM debian:bookworm\nRUN true\n");
    let err = env.fails(&["build", "--platform", "linux/arm64", &ctx], 1);
    assert!(
        err.contains("debian:bookworm is linux/amd64, not linux/arm64")
            && err.contains("does not emulate"),
        "{err}"
    );
    let out = env.run(&["build", "--platform", "linux//x", &ctx]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("invalid platform"),
        "{err}"
    );
}
