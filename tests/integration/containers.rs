//! Containers: `kiln run`, `ps`, `logs`, `stop`, `kill`, `start`, `rm`, on WASI-only images
//! (kiln's guest `sh`, no native code) and on Debian (the native sandbox).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, KillOnDrop, Pty};

/// Builds `dockerfile` (an empty context) as `tag`.
fn build(env: &Env, tag: &str, dockerfile: &str) {
    let ctx = env.path(&format!("ctx-{}", tag.replace(['/', ':'], "-")));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let out = env
        .kiln()
        .args(["build", "-q", "-t", tag])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `kiln ARGS`; returns (exit code, stdout, stderr).
fn kiln(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kiln ps -a --format json`, one value per container.
fn ps_all(env: &Env) -> Vec<serde_json::Value> {
    env.ok(&["ps", "-a", "--no-trunc", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ps_row<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["Names"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {rows:?}"))
}

/// Waits until `cond` holds, for at most `secs`.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kiln ARGS` on `env`'s store.
fn kiln_cmd(env: &Env, args: &[&str]) -> std::process::Command {
    let mut c = env.kiln();
    c.args(args);
    c
}

/// Processes whose command line is exactly `args`.
fn processes_matching(args: &str) -> Vec<String> {
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.trim() == args)
        .map(str::to_owned)
        .collect()
}

#[test]
fn cmd_entrypoint_env_workdir_and_user_follow_docker() {
    let env = Env::new();
    build(
        &env,
        "me/cmd",
        "FROM scratch\nRUN mkdir -m 1777 /tmp\nENV A=1 B=image\nWORKDIR /app\nCMD [\"sh\", \"-c\", \"echo cmd $A $B $(pwd) $HOME $HOSTNAME\"]\n",
    );
    build(
        &env,
        "me/ep",
        "FROM scratch\nENTRYPOINT [\"echo\", \"ep\"]\nCMD [\"default\"]\n",
    );
    let (code, out, err) = kiln(&env, &["run", "--hostname", "box", "me/cmd"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "cmd 1 image /app / box\n");
    let (_, out, _) = kiln(
        &env,
        &[
            "run",
            "-e",
            "A=2",
            "-w",
            "/tmp",
            "--hostname",
            "h",
            "me/cmd",
        ],
    );
    assert_eq!(out, "cmd 2 image /tmp / h\n");
    env.write("vars.env", "# comment\nB=file\n\n");
    let (_, out, _) = kiln(
        &env,
        &["run", "--env-file", "vars.env", "--hostname", "h", "me/cmd"],
    );
    assert_eq!(out, "cmd 1 file /app / h\n");
    // Arguments replace CMD; ENTRYPOINT stays unless overridden.
    assert_eq!(kiln(&env, &["run", "me/cmd", "echo", "hi"]).1, "hi\n");
    assert_eq!(kiln(&env, &["run", "me/ep"]).1, "ep default\n");
    assert_eq!(kiln(&env, &["run", "me/ep", "x", "y"]).1, "ep x y\n");
    assert_eq!(
        kiln(&env, &["run", "--entrypoint", "echo", "me/ep", "only"]).1,
        "only\n"
    );
    // The user's files belong to the user, who is not root.
    let (code, out, err) = kiln(
        &env,
        &[
            "run",
            "-u",
            "1234:55",
            "me/cmd",
            "sh",
            "-c",
            "id -u; id -g; touch /tmp/f; stat -c %u:%g /tmp/f",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1234\n55\n1234:55\n");
    // stdout and stderr stay apart, and the exit code is kiln's.
    let (code, out, err) = kiln(
        &env,
        &[
            "run",
            "me/cmd",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 42",
        ],
    );
    assert_eq!((code, out.as_str()), (42, "out\n"));
    assert!(err.contains("err"), "{err}");
    // What cannot run at all: docker's 125 and 127.
    let (code, _, err) = kiln(&env, &["run", "me/cmd", "no-such-program"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("no-such-program"), "{err}");
    let (code, _, err) = kiln(&env, &["run", "me/missing"]);
    assert_eq!(code, 125, "{err}");
    // docker's lines: the image is not here, so it is pulled, and the pull fails.
    assert!(
        err.contains("Unable to find image 'me/missing:latest' locally"),
        "{err}"
    );
    assert!(err.contains("latest: Pulling from me/missing"), "{err}");
    let (code, _, err) = kiln(&env, &["run", "-w", "relative", "me/cmd"]);
    assert_eq!(code, 125, "{err}");
    let (code, _, err) = kiln(&env, &["run", "--name", "bad/name", "me/cmd"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("invalid container name"), "{err}");
    // `-i` hands kiln's stdin to the program.
    let mut child = env
        .kiln()
        .args([
            "run",
            "-i",
            "me/cmd",
            "sh",
            "-c",
            "read line; echo got $line",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"typed\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got typed\n");
}

#[test]
fn containers_are_listed_named_kept_and_removed() {
    let env = Env::new();
    build(
        &env,
        "me/box",
        "FROM scratch\nCMD [\"sh\", \"-c\", \"echo run >> /runs; cat /runs\"]\n",
    );
    let (code, out, _) = kiln(&env, &["run", "--name", "keeper", "me/box"]);
    assert_eq!((code, out.as_str()), (0, "run\n"));
    kiln(&env, &["run", "--rm", "--name", "gone", "me/box"]);
    let rows = ps_all(&env);
    assert_eq!(rows.len(), 1, "--rm removed its container: {rows:?}");
    let keeper = ps_row(&rows, "keeper");
    assert_eq!(keeper["State"], "exited");
    assert!(keeper["Status"]
        .as_str()
        .unwrap()
        .starts_with("Exited (0) "));
    assert_eq!(keeper["Image"], "me/box");
    let id = keeper["ID"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);
    // `ps` lists running containers only; `-a -q` short ids.
    assert_eq!(env.ok(&["ps", "-q"]), "");
    assert_eq!(env.ok(&["ps", "-a", "-q"]), format!("{}\n", &id[..12]));
    let table = env.ok(&["ps", "-a"]);
    assert!(table.starts_with("CONTAINER ID   IMAGE"), "{table}");
    assert!(table.contains("\"sh -c echo run >> /…\""), "{table}");
    // A name is taken until the container is removed.
    let (code, _, err) = kiln(&env, &["run", "--name", "keeper", "me/box"]);
    assert_eq!(code, 125);
    assert!(err.contains("is already in use"), "{err}");
    // `start` runs the same command again over the container's own files.
    let (code, out, _) = kiln(&env, &["start", "-a", "keeper"]);
    assert_eq!((code, out.as_str()), (0, "run\nrun\n"));
    assert_eq!(env.ok(&["logs", "keeper"]), "run\nrun\nrun\n");
    assert_eq!(env.ok(&["logs", "--tail", "1", "keeper"]), "run\n");
    // An image in use by a container is not removed without -f; prune keeps it.
    let err = env.fails(&["rmi", "me/box"], 1);
    assert!(err.contains("is using its referenced image"), "{err}");
    env.ok(&["rm", &id[..8]]);
    assert!(ps_all(&env).is_empty());
    let err = env.fails(&["rm", "keeper"], 1);
    assert!(err.contains("No such container: keeper"), "{err}");
    assert_eq!(
        std::fs::read_dir(env.root().join("kiln/containers"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count(),
        0,
        "rm leaves nothing behind"
    );
    env.ok(&["rmi", "me/box"]);
}

#[test]
fn detached_containers_log_stop_and_kill() {
    let env = Env::new();
    build(
        &env,
        "me/loop",
        "FROM scratch\nCMD [\"sh\", \"-c\", \"echo up; while :; do sleep 1; done\"]\n",
    );
    let id = env.ok(&["run", "-d", "--name", "wasi-loop", "me/loop"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    wait_for(20, "the log", || env.ok(&["logs", "wasi-loop"]) == "up\n");
    assert_eq!(env.ok(&["ps", "-q"]).trim(), &id[..12]);
    // A WebAssembly program has no signal handlers: SIGTERM ends it.
    let started = Instant::now();
    assert_eq!(env.ok(&["stop", "wasi-loop"]), "wasi-loop\n");
    assert!(started.elapsed() < Duration::from_secs(8));
    let rows = ps_all(&env);
    assert!(
        ps_row(&rows, "wasi-loop")["Status"]
            .as_str()
            .unwrap()
            .starts_with("Exited (143)"),
        "{rows:?}"
    );
    // `kill` needs a running container; `start` brings it back.
    let err = env.fails(&["kill", "wasi-loop"], 1);
    assert!(err.contains("is not running"), "{err}");
    env.ok(&["start", "wasi-loop"]);
    wait_for(20, "the restart", || {
        env.ok(&["logs", "wasi-loop"]) == "up\nup\n"
    });
    env.ok(&["kill", "wasi-loop"]);
    let rows = ps_all(&env);
    assert!(
        ps_row(&rows, "wasi-loop")["Status"]
            .as_str()
            .unwrap()
            .starts_with("Exited (137)"),
        "{rows:?}"
    );
    // rm -f of a running container.
    env.ok(&["run", "-d", "--name", "forced", "me/loop"]);
    env.fails(&["rm", "forced"], 1);
    env.ok(&["rm", "-f", "forced"]);
    assert_eq!(ps_all(&env).len(), 1);
}

#[test]
fn wasi_programs_that_only_compute_are_stopped_at_once() {
    // No host call ever comes from these loops: only the engine's interruption stops them
    // (a container has no wall-clock limit, so nothing else ticks).
    let env = Env::new();
    build(
        &env,
        "me/spin",
        "FROM scratch\nCMD [\"sh\", \"-c\", \"while :; do :; done\"]\n",
    );
    env.ok(&["run", "-d", "--name", "spin", "me/spin"]);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    env.ok(&["stop", "-t", "5", "spin"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    let rows = ps_all(&env);
    let status = ps_row(&rows, "spin")["Status"].as_str().unwrap().to_owned();
    assert!(status.starts_with("Exited (143)"), "{status}");
    // A guest's kill of its spinning child.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "parent",
        "me/spin",
        "sh",
        "-c",
        "sh -c 'while :; do :; done' & sleep 0.2; kill $!; wait $!; echo child=$?",
    ]);
    wait_for(20, "the child's end", || {
        env.ok(&["logs", "parent"]) == "child=143\n"
    });
    env.ok(&["rm", "-f", "parent"]);
}

#[test]
fn native_containers_get_signals_and_a_killed_kiln_leaves_no_process() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let tag = std::process::id();
    // The program traps SIGTERM: `stop` reaches it through the sandbox's init.
    let script =
        format!("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.{tag}; done");
    env.ok(&[
        "run",
        "-d",
        "--name",
        "trapper",
        "debian:bookworm",
        "bash",
        "-c",
        &script,
    ]);
    wait_for(20, "the log", || env.ok(&["logs", "trapper"]) == "ready\n");
    env.ok(&["stop", "-t", "20", "trapper"]);
    assert_eq!(env.ok(&["logs", "trapper"]), "ready\ngot TERM\n");
    let rows = ps_all(&env);
    assert!(
        ps_row(&rows, "trapper")["Status"]
            .as_str()
            .unwrap()
            .starts_with("Exited (7)"),
        "{rows:?}"
    );
    // A program that ignores SIGTERM is killed after the grace period.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "debian:bookworm",
        "bash",
        "-c",
        &format!("trap '' TERM; echo ready; while :; do sleep 0.{tag}; done"),
    ]);
    wait_for(20, "the log", || env.ok(&["logs", "stubborn"]) == "ready\n");
    let started = Instant::now();
    env.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(ps_row(&ps_all(&env), "stubborn")["Status"]
        .as_str()
        .unwrap()
        .starts_with("Exited (137)"));

    // kill -9 of a foreground `kiln run`: the container is reported as exited, nothing of it
    // keeps running, and rm cleans up.
    let mut child = KillOnDrop(
        env.kiln()
            .args([
                "run",
                "--name",
                "orphan",
                "debian:bookworm",
                "bash",
                "-c",
                &format!("echo ready; sleep 77{tag}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = [0u8; 6];
    let stdout = child.0.stdout.as_mut().unwrap();
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"ready\n");
    wait_for(10, "the container's sleep", || {
        processes_matching(&format!("sleep 77{tag}")).len() == 1
    });
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    wait_for(10, "the sandbox to die with kiln", || {
        processes_matching(&format!("sleep 77{tag}")).is_empty()
    });
    let rows = ps_all(&env);
    let orphan = ps_row(&rows, "orphan");
    assert_eq!(orphan["State"], "exited", "{rows:?}");
    assert!(orphan["Status"]
        .as_str()
        .unwrap()
        .starts_with("Exited (137)"));
    env.ok(&["rm", "orphan", "trapper", "stubborn"]);
    assert!(ps_all(&env).is_empty());
    env.ok(&["fsck"]);
}

#[test]
fn commit_makes_an_image_of_a_containers_changes() {
    let env = Env::new();
    build(&env, "me/base", "FROM scratch\nENV KEEP=1\nCMD [\"sh\"]\n");
    // The manual flow, with kiln's WASI sh only: change files in a container, find it with ps,
    // commit it with a new CMD, run the new image.
    env.ok(&[
        "run",
        "--name",
        "work",
        "-e",
        "ADDED=2",
        "me/base",
        "sh",
        "-c",
        "mkdir /app && echo hello > /app/greeting",
    ]);
    let rows = ps_all(&env);
    let id = ps_row(&rows, "work")["ID"].as_str().unwrap().to_owned();
    let image = env.ok(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/app/greeting\"]",
        "-m",
        "by hand",
        "-a",
        "Me <me@example.com>",
        &id[..12],
        "me/by-hand",
    ]);
    assert!(image.trim().starts_with("sha256:"), "{image}");
    assert_eq!(env.ok(&["run", "--rm", "me/by-hand"]), "hello\n");
    // The container's environment is the image's.
    assert_eq!(
        env.ok(&["run", "--rm", "me/by-hand", "sh", "-c", "echo $KEEP $ADDED"]),
        "1 2\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--type", "image", "me/by-hand"])).unwrap();
    assert_eq!(
        v[0]["Config"]["Cmd"],
        serde_json::json!(["cat", "/app/greeting"])
    );
    assert_eq!(v[0]["Author"], "Me <me@example.com>");
    assert_eq!(v[0]["Comment"], "by hand");
    assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    let tree = crate::harness::image_tree(&env.root(), "me/by-hand");
    assert_eq!(tree["app/greeting"].content, b"hello\n");
    // `inspect` finds containers too.
    let c: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "work"])).unwrap();
    assert_eq!(c[0]["Id"], id.as_str());
    assert_eq!(c[0]["State"]["Status"], "exited");
    assert_eq!(c[0]["Name"], "/work");
    // Only the instructions docker allows.
    let err = env.fails(&["commit", "-c", "RUN echo hi", "work"], 1);
    assert!(err.contains("not supported as a change"), "{err}");
    let err = env.fails(&["commit", "nobody"], 1);
    assert!(err.contains("No such container: nobody"), "{err}");
}

#[test]
fn commit_of_a_native_container_keeps_its_owners() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    env.ok(&[
        "run",
        "--name",
        "deb",
        "debian:bookworm",
        "sh",
        "-c",
        "useradd -m app && echo hi > /home/app/f && chown app:app /home/app/f && rm /etc/motd",
    ]);
    env.ok(&[
        "commit",
        "-c",
        "USER app",
        "-c",
        "CMD [\"sh\", \"-c\", \"id -un; cat ~/f; ls /etc/motd\"]",
        "deb",
        "me/deb-by-hand",
    ]);
    let out = env.run(&["run", "--rm", "me/deb-by-hand"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app\nhi\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/motd"));
    let tree = crate::harness::image_tree(&env.root(), "me/deb-by-hand");
    let f = &tree["home/app/f"];
    assert_eq!(
        (f.uid, f.gid),
        (1000, 1000),
        "the layer records the container's owners"
    );
    assert!(!tree.contains_key("etc/motd"), "the deletion is a whiteout");
}

#[test]
fn run_it_gives_a_real_terminal_and_the_manual_flow_commits() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let mut pty = Pty::new(33, 99);
    let mut child = pty.spawn(kiln_cmd(
        &env,
        &["run", "-it", "--name", "by-hand", "debian:bookworm", "bash"],
    ));
    let mut seen = String::new();
    pty.type_line("echo $((6*7)); stty size; tty");
    pty.expect(&mut seen, "42");
    pty.expect(&mut seen, "33 99");
    // The terminal is the container's own, as docker's is.
    pty.expect(&mut seen, "/dev/pts/0");
    // A resized window reaches the container's terminal.
    pty.resize(40, 120);
    std::thread::sleep(Duration::from_millis(500));
    pty.type_line("stty size");
    pty.expect(&mut seen, "40 120");
    // Ctrl-C reaches the foreground program through the terminal, not kiln.
    pty.type_line("sleep 300");
    std::thread::sleep(Duration::from_millis(500));
    pty.primary.write_all(&[3]).unwrap();
    pty.type_line("echo after-$((1+1)); echo hello > /greeting");
    pty.expect(&mut seen, "after-2");
    // `kiln ps` sees it while it runs.
    let rows = ps_all(&env);
    assert_eq!(ps_row(&rows, "by-hand")["State"], "running");
    pty.type_line("exit 3");
    assert_eq!(child.0.wait().unwrap().code(), Some(3), "{seen}");
    env.ok(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/greeting\"]",
        "by-hand",
        "me/redis-by-hand",
    ]);
    assert_eq!(env.ok(&["run", "--rm", "me/redis-by-hand"]), "hello\n");

    // The same flow on an image with no native code at all: kiln's WASI sh.
    build(&env, "me/wasi", "FROM scratch\nCMD [\"sh\"]\n");
    let mut pty = Pty::new(24, 80);
    let mut child = pty.spawn(kiln_cmd(
        &env,
        &["run", "-it", "--name", "wasi-hand", "me/wasi"],
    ));
    let mut seen = String::new();
    // kiln's sh sees a terminal and prompts.
    pty.expect(&mut seen, "# ");
    pty.type_line("echo made > /made; echo sum-$((2+3))");
    pty.expect(&mut seen, "sum-5");
    pty.type_line("exit 4");
    assert_eq!(child.0.wait().unwrap().code(), Some(4), "{seen}");
    env.ok(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/made\"]",
        "wasi-hand",
        "me/wasi-by-hand",
    ]);
    assert_eq!(env.ok(&["run", "--rm", "me/wasi-by-hand"]), "made\n");
}

#[test]
fn bind_mounts_are_explicit_and_stay_where_they_are_put() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let host = env.path("shared");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in.txt"), "host-data\n").unwrap();
    let rw = format!("{}:/data", host.display());
    let (code, out, err) = kiln(
        &env,
        &[
            "run",
            "--rm",
            "-v",
            &rw,
            "debian:bookworm",
            "sh",
            "-c",
            "cat /data/in.txt; echo from-container > /data/out.txt",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "host-data\n"), "{err}");
    // Container root writes as host root, as with docker.
    let meta = std::fs::metadata(host.join("out.txt")).unwrap();
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "from-container\n"
    );
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    let ro = format!("{}:/ro:ro", host.display());
    let (code, _, err) = kiln(
        &env,
        &[
            "run",
            "--rm",
            "-v",
            &ro,
            "debian:bookworm",
            "sh",
            "-c",
            "echo x > /ro/new",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!host.join("new").exists());
    // The mount point is made inside the rootfs, through the image's own symlinks.
    let (code, out, _) = kiln(
        &env,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{}:/var/run/x", host.display()),
            "debian:bookworm",
            "cat",
            "/run/x/in.txt",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "host-data\n"));
    // What is refused, with a clear line.
    let (code, _, err) = kiln(
        &env,
        &[
            "run",
            "--rm",
            "-v",
            "relative:/x",
            "debian:bookworm",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("not an absolute host path"), "{err}");
    let (code, _, err) = kiln(
        &env,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{}:/x/../../y", host.display()),
            "debian:bookworm",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("without .."), "{err}");
}

#[test]
fn bind_mounts_reach_webassembly_programs_with_the_same_rules() {
    let env = Env::new();
    build(
        &env,
        "me/wasi-only",
        "FROM scratch\nRUN mkdir -p /etc && echo inside > /etc/passwd\n",
    );
    let host = env.path("shared");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    std::fs::write(host.join("in.txt"), "host-data\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", host.join("passwd")).unwrap();
    let other = env.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("o.txt"), "other\n").unwrap();
    let rw = format!("{}:/data", host.display());
    let ro = format!("{}:/data/sub/ro:ro", other.display());
    let script = "cat /data/in.txt /data/passwd /data/sub/ro/o.txt; \
                  echo from-wasi > /data/out.txt; mkdir /data/made; \
                  cd /data/sub/../..; pwd; ls /; \
                  echo x > /data/sub/ro/new || echo refused; \
                  mkdir -p /tree/d && echo t > /tree/d/f && chmod 640 /tree/d/f && \
                  mv /tree /data/tree && mv /data/in.txt /moved && cat /moved && ls /data/tree/d";
    let (code, out, err) = kiln(
        &env,
        &[
            "run",
            "--name",
            "binds",
            "-v",
            &rw,
            "-v",
            &ro,
            "me/wasi-only",
            "sh",
            "-c",
            script,
        ],
    );
    // The host's /etc/passwd is out of reach: the symlink resolves inside the rootfs.
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "host-data\ninside\nother\n/\nbin\ndata\ndev\netc\nusr\nrefused\nhost-data\nf\n"
        ),
        "{err}"
    );
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "from-wasi\n"
    );
    assert!(host.join("made").is_dir() && host.join("sub/ro").is_dir());
    assert!(!other.join("new").exists());
    // mv across the mount's edge copies and removes, keeping modes (rename(2) says EXDEV).
    assert!(!host.join("in.txt").exists());
    let moved = host.join("tree/d/f");
    assert_eq!(std::fs::read_to_string(&moved).unwrap(), "t\n");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&moved.metadata().unwrap().permissions()) & 0o777,
        0o640
    );
    // What was written through the bind is not the container's: its image has only the mount
    // point, as with docker.
    env.ok(&["commit", "binds", "me/binds"]);
    let (code, out, err) = kiln(&env, &["run", "--rm", "me/binds", "ls", "-a", "/data"]);
    assert_eq!((code, out.as_str()), (0, ".\n..\n"), "{err}");
    let (code, out, err) = kiln(
        &env,
        &[
            "run",
            "--rm",
            "me/binds",
            "sh",
            "-c",
            "cat /moved; ls /tree",
        ],
    );
    // The moved file left the container; the moved tree left it too.
    assert_eq!((code, out.as_str()), (2, "host-data\n"), "{err}");
    // A bind that cannot be made is one clear line and docker's 125.
    let (code, _, err) = kiln(
        &env,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{}:/etc/passwd", other.display()),
            "me/wasi-only",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("/etc/passwd: not a directory"), "{err}");
}
