//! `kiln serve` driven by the real docker CLI (and by raw HTTP where the CLI cannot say what
//! a test needs): builds, images, containers, tenants and their quotas, hostile clients.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, Pty};

/// The docker CLI: `DOCKER_CLI` or `docker` on PATH (.ci/run installs Debian's when missing).
pub(crate) fn docker_bin() -> String {
    let bin = std::env::var("DOCKER_CLI").unwrap_or_else(|_| "docker".to_owned());
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the docker CLI ({bin}) is missing: install docker.io (.ci/run does) or set DOCKER_CLI"
    );
    bin
}

/// A running `kiln serve`, stopped with SIGTERM on drop.
pub(crate) struct Server {
    child: Option<std::process::Child>,
    socket: PathBuf,
    /// A docker config folder per tenant token.
    configs: tempfile::TempDir,
}

impl Server {
    /// Starts `kiln serve` on `env`'s store with `args`; waits for `socket`.
    pub(crate) fn start(env: &Env, socket: &Path, args: &[&str]) -> Server {
        let child = env
            .kiln()
            .arg("serve")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kiln serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(socket).is_err() {
            assert!(Instant::now() < deadline, "kiln serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child: Some(child),
            socket: socket.to_path_buf(),
            configs: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Starts `kiln serve --config CFG` on the unix socket `socket`, plus `more` arguments.
    pub(crate) fn with_config(env: &Env, cfg: &Path, socket: &Path, more: &[&str]) -> Server {
        let mut args = vec![
            "--config".to_owned(),
            cfg.to_str().expect("UTF-8 path").to_owned(),
            "-H".to_owned(),
            format!("unix://{}", socket.display()),
        ];
        args.extend(more.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start(env, socket, &args)
    }

    /// `docker ARGS` against this server as the tenant holding `token` (none: no header).
    pub(crate) fn docker_as(&self, token: Option<&str>, args: &[&str]) -> Command {
        let dir = self
            .configs
            .path()
            .join(token.map_or("none".to_owned(), |t| t.chars().take(12).collect()));
        std::fs::create_dir_all(&dir).unwrap();
        // Keep what the CLI wrote there (`docker login` credentials); set the tenant header.
        let path = dir.join("config.json");
        let mut cfg: serde_json::Value = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        match token {
            Some(t) => {
                cfg["HttpHeaders"] = serde_json::json!({"Authorization": format!("Bearer {t}")});
            }
            None => {
                if let Some(m) = cfg.as_object_mut() {
                    m.remove("HttpHeaders");
                }
            }
        }
        std::fs::write(&path, cfg.to_string()).unwrap();
        let mut c = Command::new(docker_bin());
        c.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CONFIG", &dir)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// The server's process id.
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    fn docker(&self, args: &[&str]) -> Command {
        self.docker_as(None, args)
    }

    /// Kills the server with SIGKILL (a replica that dies), and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM; returns its exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kiln serve did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate();
        }
    }
}

/// Runs a command; returns (exit code, stdout, stderr).
fn output(mut c: Command) -> (i32, String, String) {
    let out = c.output().expect("spawn");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns its stdout.
fn ok(c: Command) -> String {
    let shown = format!("{c:?}");
    let (code, out, err) = output(c);
    assert_eq!(code, 0, "{shown} failed\nstdout:\n{out}\nstderr:\n{err}");
    out
}

/// Writes a build context folder.
fn context(env: &Env, name: &str, files: &[(&str, &str)]) -> PathBuf {
    for (p, body) in files {
        env.write(&format!("{name}/{p}"), body);
    }
    env.path(name)
}

/// A tar of `files` (ustar, regular files), for raw requests.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(name).unwrap();
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A raw HTTP/1.1 exchange over the unix socket: (status, head, body).
pub(crate) fn http(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            out.push_str(rest.get(..n.min(rest.len())).unwrap_or(""));
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The `stream` texts and the error of an NDJSON build response.
fn build_messages(body: &str) -> (String, Option<serde_json::Value>) {
    let mut text = String::new();
    let mut error = None;
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        if let Some(s) = v.get("stream").and_then(|s| s.as_str()) {
            text.push_str(s);
        }
        if v.get("errorDetail").is_some() {
            error = Some(v);
        }
    }
    (text, error)
}

/// Sends a build whose RUN sleeps for minutes (as `token`'s tenant) and reads its stream
/// until the step runs; returns the open connection.
fn start_slow_build(socket: &Path, token: Option<&str>) -> UnixStream {
    let slow = tar_of(&[("Dockerfile", b"FROM scratch\nRUN echo going && sleep 300\n")]);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "POST /v1.43/build?t=slow HTTP/1.1\r\nHost: kiln\r\n{auth}Content-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        slow.len()
    )
    .unwrap();
    s.write_all(&slow).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("going") {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the slow build ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

/// A TCP port free a moment ago.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

const GREETING_DOCKERFILE: &str = "FROM scratch\nCOPY greeting.txt /greeting.txt\nRUN echo built > /built && cat /greeting.txt\nCMD [\"cat\", \"/greeting.txt\"]\n";

#[test]
fn docker_cli_builds_and_manages_images_and_containers() {
    let env = Env::new();
    let root = env.root();
    let socket = root.join("kiln.sock");
    // Without --host the server listens on $KILN_ROOT/kiln.sock, mode 0660.
    let srv = Server::start(&env, &socket, &[]);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "the socket is created 0660");
    }
    let ctx = context(
        &env,
        "hello",
        &[
            ("Dockerfile", GREETING_DOCKERFILE),
            ("greeting.txt", "hi there\n"),
        ],
    );
    let ctx = ctx.to_str().unwrap();

    // The classic builder's stream, as docker prints it.
    let out = ok(srv.docker(&["build", "-t", "me/hello", ctx]));
    for want in [
        "Step 1/4 : FROM scratch",
        "Step 2/4 : COPY greeting.txt /greeting.txt",
        " ---> Running in ",
        "hi there",
        "Step 4/4 : CMD [\"cat\", \"/greeting.txt\"]",
        "Successfully tagged me/hello:latest",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    let id12 = out
        .lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .expect("Successfully built")
        .to_owned();
    // A rebuild is cached and gives the same image.
    let again = ok(srv.docker(&["build", "-t", "me/hello", ctx]));
    assert_eq!(again.matches(" ---> Using cache").count(), 3, "{again}");
    assert!(
        again.contains(&format!("Successfully built {id12}")),
        "{again}"
    );
    let quiet = ok(srv.docker(&["build", "-q", ctx]));
    assert!(
        quiet.trim().starts_with(&format!("sha256:{id12}")),
        "{quiet}"
    );

    // A Dockerfile from outside the context (the CLI adds it to the context's tar) and one
    // from stdin.
    let outside = env.write(
        "elsewhere/Dockerfile",
        "FROM scratch\nCOPY greeting.txt /g\n",
    );
    let out = ok(srv.docker(&[
        "build",
        "-f",
        outside.to_str().unwrap(),
        "-t",
        "me/outside",
        ctx,
    ]));
    assert!(
        out.contains("Successfully tagged me/outside:latest"),
        "{out}"
    );
    let mut stdin_df = srv.docker(&["build", "-f", "-", "-t", "me/stdin", ctx]);
    stdin_df
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = stdin_df.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch\nCOPY greeting.txt /g\n")
        .unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let tree = crate::harness::image_tree(&root, "me/stdin");
    assert_eq!(crate::harness::paths(&tree), vec!["g"]);

    // The implicit tenant's store is kiln's own: the CLI sees the same image.
    let kiln_doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "me/hello"])).unwrap();
    let kiln_id = kiln_doc[0]["Id"].as_str().unwrap().to_owned();
    let docker_id = ok(srv.docker(&["image", "inspect", "--format", "{{.Id}}", "me/hello"]));
    assert_eq!(docker_id.trim(), kiln_id);
    let tree = crate::harness::image_tree(&root, "me/hello");
    assert!(
        tree.contains_key("built") && tree.contains_key("greeting.txt"),
        "{:?}",
        crate::harness::paths(&tree)
    );

    let images = ok(srv.docker(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]));
    assert!(
        images.contains(&format!("me/hello:latest {id12}")),
        "{images}"
    );
    ok(srv.docker(&["tag", "me/hello", "me/hello:v2"]));
    let images = ok(srv.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(images.contains("me/hello:v2"), "{images}");
    let rmi = ok(srv.docker(&["rmi", "me/hello:v2"]));
    assert!(rmi.contains("Untagged: me/hello:v2"), "{rmi}");
    let history = ok(srv.docker(&["history", "--no-trunc", "me/hello"]));
    assert!(
        history.contains("RUN /bin/sh -c echo built > /built && cat /greeting.txt"),
        "{history}"
    );

    // Containers: output, exit codes, stdin.
    assert_eq!(ok(srv.docker(&["run", "--rm", "me/hello"])), "hi there\n");
    let (code, out, err) = output(srv.docker(&[
        "run",
        "--rm",
        "me/hello",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]));
    assert_eq!((code, out.as_str()), (3, "out\n"), "{err}");
    assert!(err.contains("err"), "{err}");
    let mut c = srv.docker(&["run", "-i", "--rm", "me/hello", "cat"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "through stdin\n");

    // A kept container: ps, logs, commit with a change, rm.
    ok(srv.docker(&[
        "run",
        "--name",
        "keep",
        "me/hello",
        "sh",
        "-c",
        "echo changed > /greeting.txt; echo did it",
    ]));
    let ps = ok(srv.docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]));
    assert!(ps.contains("keep Exited (0)"), "{ps}");
    assert_eq!(ok(srv.docker(&["logs", "keep"])), "did it\n");
    let keep_id = ok(srv.docker(&["ps", "-aq", "--filter", "name=keep"]));
    let committed = ok(srv.docker(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/greeting.txt\"]",
        keep_id.trim(),
        "me/changed",
    ]));
    assert!(committed.trim().starts_with("sha256:"), "{committed}");
    assert_eq!(ok(srv.docker(&["run", "--rm", "me/changed"])), "changed\n");
    ok(srv.docker(&["rm", "keep"]));
    assert!(!ok(srv.docker(&["ps", "-a"])).contains("keep"));

    // Detached: stop sends SIGTERM; the log keeps what it said.
    let id = ok(srv.docker(&[
        "run",
        "-d",
        "--name",
        "bg",
        "me/hello",
        "sh",
        "-c",
        "echo started; sleep 60",
    ]));
    assert_eq!(id.trim().len(), 64, "{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok(srv.docker(&["logs", "bg"])).contains("started") {
        assert!(Instant::now() < deadline, "bg never logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok(srv.docker(&["ps", "--format", "{{.Names}}"])).contains("bg"));
    ok(srv.docker(&["stop", "-t", "5", "bg"]));
    let ps = ok(srv.docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]));
    assert!(ps.contains("bg Exited (143)"), "{ps}");
    ok(srv.docker(&["rm", "bg"]));

    // logs -f follows to the end, wait gives the status, start -a runs it again attached.
    let id = ok(srv.docker(&[
        "run",
        "-d",
        "me/hello",
        "sh",
        "-c",
        "echo one; sleep 1; echo two; exit 4",
    ]));
    let id = id.trim();
    assert_eq!(ok(srv.docker(&["logs", "-f", id])), "one\ntwo\n");
    assert_eq!(ok(srv.docker(&["wait", id])).trim(), "4");
    let (code, out, err) = output(srv.docker(&["start", "-a", id]));
    assert_eq!((code, out.as_str()), (4, "one\ntwo\n"), "{err}");
    ok(srv.docker(&["rm", id]));
    // kill (SIGKILL) answers once the container stopped.
    ok(srv.docker(&["run", "-d", "--name", "k", "me/hello", "sleep", "100"]));
    ok(srv.docker(&["kill", "k"]));
    assert_eq!(
        ok(srv.docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "k"
        ]))
        .trim(),
        "exited 137"
    );
    let (code, _, err) = output(srv.docker(&["kill", "k"]));
    assert_ne!(code, 0);
    assert!(err.contains("is not running"), "{err}");
    ok(srv.docker(&["rm", "k"]));

    // docker save | docker load, after the image is gone.
    let archive = env.path("hello.tar");
    ok(srv.docker(&["save", "-o", archive.to_str().unwrap(), "me/hello"]));
    ok(srv.docker(&["rmi", "me/hello", "me/changed"]));
    assert!(!ok(srv.docker(&["images"])).contains("me/hello"));
    let mut load = srv.docker(&["load"]);
    load.stdin(std::fs::File::open(&archive).unwrap());
    let loaded = ok(load);
    assert!(loaded.contains("Loaded image: me/hello:latest"), "{loaded}");
    assert_eq!(ok(srv.docker(&["run", "--rm", "me/hello"])), "hi there\n");
    // And a real pipe: the archive streams from one docker process into the other.
    let mut save = srv.docker(&["save", "me/hello"]);
    save.stdout(Stdio::piped());
    let mut save = save.spawn().unwrap();
    let mut load = srv.docker(&["load"]);
    load.stdin(save.stdout.take().unwrap())
        .stdout(Stdio::piped());
    let loaded = load.output().unwrap();
    assert!(save.wait().unwrap().success());
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("Loaded image: me/hello:latest"),
        "{loaded:?}"
    );

    // A failing RUN: docker exits with the step's code and says why.
    let bad = context(
        &env,
        "bad",
        &[("Dockerfile", "FROM me/hello\nRUN exit 7\n")],
    );
    let (code, out, err) = output(srv.docker(&["build", "-t", "bad", bad.to_str().unwrap()]));
    assert_eq!(code, 7, "{out}\n{err}");
    assert!(err.contains("exit code: 7"), "{err}");
    let (code, _, err) = output(srv.docker(&["run", "--rm", "no/such-image"]));
    assert_ne!(code, 0);
    assert!(err.contains("no/such-image"), "{err}");
}

#[test]
fn docker_run_it_gives_the_program_a_terminal() {
    let env = Env::new();
    let socket = env.path("s.sock");
    let srv = Server::start(
        &env,
        &socket,
        &["-H", &format!("unix://{}", socket.display())],
    );
    let ctx = context(
        &env,
        "ctx",
        &[("Dockerfile", "FROM scratch\nRUN echo ready > /ready\n")],
    );
    ok(srv.docker(&["build", "-t", "me/shell", ctx.to_str().unwrap()]));
    let mut pty = Pty::new(33, 99);
    let mut child = pty.spawn(srv.docker(&["run", "-it", "--rm", "me/shell", "sh"]));
    let mut seen = String::new();
    pty.type_line("echo $((6*7)); tty; cat /ready");
    pty.expect(&mut seen, "42");
    pty.expect(&mut seen, "/dev/tty");
    pty.expect(&mut seen, "ready");
    pty.type_line("exit 5");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "docker run -it did not end; screen:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(5), "{seen}");
}

#[test]
fn seed_redis_builds_and_runs_through_the_docker_cli() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let socket = env.path("s.sock");
    let srv = Server::start(
        &env,
        &socket,
        &["-H", &format!("unix://{}", socket.display())],
    );
    let seed = crate::harness::workspace_root().join("examples/redis");
    let (code, out, err) = output(srv.docker(&[
        "build",
        "--network",
        "host",
        "-t",
        "me/redis",
        seed.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{}\n{err}", &out[out.len().saturating_sub(3000)..]);
    assert!(out.contains("Successfully tagged me/redis:latest"), "{out}");
    let port = free_port();
    let port_arg = port.to_string();
    ok(srv.docker(&[
        "run",
        "-d",
        "--network",
        "host",
        "--name",
        "seed",
        "me/redis",
        "redis-server",
        "--port",
        &port_arg,
        "--save",
        "",
    ]));
    let pong = crate::run::ping_redis(port);
    let logs = ok(srv.docker(&["logs", "seed"]));
    ok(srv.docker(&["rm", "-f", "seed"]));
    assert_eq!(pong, "+PONG\r\n", "redis log:\n{logs}");
}

#[test]
fn docker_build_flags_for_steps_reach_them_through_the_server() {
    let env = Env::new();
    crate::harness::debian_base(&env);
    let socket = env.path("s.sock");
    let srv = Server::start(
        &env,
        &socket,
        &["-H", &format!("unix://{}", socket.display())],
    );
    let ctx = context(
        &env,
        "flags",
        &[(
            "Dockerfile",
            "FROM debian:bookworm\nRUN grep -w db /etc/hosts && df -k /dev/shm | tail -1 && ulimit -n\n",
        )],
    );
    let out = ok(srv.docker(&[
        "build",
        "--no-cache",
        "--add-host",
        "db:10.1.2.3",
        "--shm-size",
        "32m",
        "--ulimit",
        "nofile=512:2048",
        ctx.to_str().unwrap(),
    ]));
    assert!(out.contains("10.1.2.3\tdb"), "{out}");
    assert!(out.contains(" 32768 "), "{out}");
    assert!(out.lines().any(|l| l == "2048"), "{out}");
    // What kiln does not set is refused, not ignored.
    let (code, out, err) =
        output(srv.docker(&["build", "--ulimit", "stack=1024", ctx.to_str().unwrap()]));
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("does not set stack"), "{err}");
}

/// A config with tenants; returns its path.
pub(crate) fn write_config(env: &Env, text: &str) -> PathBuf {
    env.write("kiln-server.toml", text)
}

const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef";
const CAROL: &str = "carol-token-0123456789abcdef";
const DAVE: &str = "dave-token-0123456789abcdef";

#[test]
fn tenants_need_tokens_see_only_their_own_and_hit_their_quotas() {
    let env = Env::new();
    let cfg = write_config(
        &env,
        &format!(
            "[[tenants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\nconcurrent_builds = 1\ncontext = \"64k\"\nhost_network = true\n\n\
             [[tenants]]\nname = \"bob\"\ntoken = \"{BOB}\"\nstep_timeout = \"2s\"\n\n\
             [[tenants]]\nname = \"carol\"\ntoken = \"{CAROL}\"\nstore = \"1k\"\n\n\
             [[tenants]]\nname = \"dave\"\ntoken = \"{DAVE}\"\nstore = \"16m\"\ncontainer_log = \"2k\"\n\
             containers = 4\nrunning_containers = 1\n"
        ),
    );
    let socket = env.path("s.sock");
    let port = free_port();
    let srv = Server::with_config(
        &env,
        &cfg,
        &socket,
        &["-H", &format!("tcp://127.0.0.1:{port}")],
    );
    // No token, a wrong token: 401 with a message.
    let (code, _, err) = output(srv.docker(&["images"]));
    assert_ne!(code, 0);
    assert!(err.contains("Bearer"), "{err}");
    let (code, _, err) = output(srv.docker_as(Some("wrong-token-0123456789"), &["images"]));
    assert_ne!(code, 0);
    assert!(err.contains("not valid"), "{err}");
    let (status, _, _) = http(&socket, "GET", "/_ping", &[], b"");
    assert_eq!(status, 401);

    // alice builds and runs; bob sees none of it (over TCP too).
    let ctx = context(
        &env,
        "a",
        &[
            ("Dockerfile", GREETING_DOCKERFILE),
            ("greeting.txt", "alice's\n"),
        ],
    );
    ok(srv.docker_as(Some(ALICE), &["build", "-t", "me/a", ctx.to_str().unwrap()]));
    ok(srv.docker_as(Some(ALICE), &["run", "--name", "secret", "me/a"]));
    let mut tcp = srv.docker_as(Some(BOB), &["images", "--format", "{{.Repository}}"]);
    tcp.env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"));
    assert_eq!(ok(tcp), "", "bob sees no images");
    assert_eq!(ok(srv.docker_as(Some(BOB), &["ps", "-a", "-q"])), "");
    for args in [
        &["image", "inspect", "me/a"][..],
        &["logs", "secret"][..],
        &["rm", "secret"][..],
        &["history", "me/a"][..],
    ] {
        let (code, _, err) = output(srv.docker_as(Some(BOB), args));
        assert_ne!(code, 0, "bob {args:?}");
        assert!(
            err.to_lowercase().contains("no such"),
            "bob {args:?}: {err}"
        );
    }
    // bob's build of the same Dockerfile shares no cache with alice's.
    let b = ok(srv.docker_as(Some(BOB), &["build", "-t", "me/b", ctx.to_str().unwrap()]));
    assert!(!b.contains("Using cache"), "{b}");
    assert_eq!(
        ok(srv.docker_as(Some(ALICE), &["logs", "secret"])),
        "alice's\n"
    );

    // Network policy: host only for tenants allowed it.
    let (code, _, err) = output(srv.docker_as(
        Some(BOB),
        &["build", "--network", "host", ctx.to_str().unwrap()],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("may not use the host network"), "{err}");
    let (code, _, err) = output(srv.docker_as(Some(BOB), &["run", "--network", "host", "me/b"]));
    assert_ne!(code, 0);
    assert!(err.contains("may not use the host network"), "{err}");

    // Per-step limits: bob's RUN steps get 2 s.
    let sleepy = context(
        &env,
        "sleepy",
        &[("Dockerfile", "FROM scratch\nRUN sleep 30\n")],
    );
    let t0 = Instant::now();
    let (code, _, err) = output(srv.docker_as(Some(BOB), &["build", sleepy.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("limit"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());

    // Context size: alice's limit is 64 KiB.
    let big = context(
        &env,
        "big",
        &[("Dockerfile", "FROM scratch\nCOPY big /big\n")],
    );
    std::fs::write(big.join("big"), vec![b'x'; 200 * 1024]).unwrap();
    let (code, _, err) = output(srv.docker_as(Some(ALICE), &["build", big.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("larger than this tenant's limit"), "{err}");

    // Store quota: carol's store is full before she starts.
    let (code, _, err) = output(srv.docker_as(Some(CAROL), &["build", ctx.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("quota"), "{err}");

    // dave's containers may write what his store has room for, and keep 2 KiB of log; what
    // they print still reaches an attached client whole.
    ok(srv.docker_as(Some(DAVE), &["build", "-t", "me/d", ctx.to_str().unwrap()]));
    let (code, _, _) = output(srv.docker_as(
        Some(DAVE),
        &["run", "--name", "filler", "me/d", "sh", "-c", "yes > /big"],
    ));
    assert_ne!(code, 0);
    let why = ok(srv.docker_as(Some(DAVE), &["inspect", "-f", "{{.State.Error}}", "filler"]));
    assert!(why.contains("exceeded its disk limit"), "{why}");
    let printed = ok(srv.docker_as(
        Some(DAVE),
        &["run", "--name", "chatty", "me/d", "sh", "-c", "seq 10000"],
    ));
    assert_eq!(printed.lines().count(), 10000);
    let (_, kept, kept_err) = output(srv.docker_as(Some(DAVE), &["logs", "chatty"]));
    assert!(kept.len() < 2048, "{} bytes of log kept", kept.len());
    assert!(kept_err.contains("log reached its limit"), "{kept_err}");

    // dave may keep 4 containers and run 1 at a time.
    ok(srv.docker_as(
        Some(DAVE),
        &["run", "-d", "--name", "long", "me/d", "sleep", "600"],
    ));
    ok(srv.docker_as(
        Some(DAVE),
        &["create", "--name", "second", "me/d", "sleep", "1"],
    ));
    let (code, _, err) = output(srv.docker_as(Some(DAVE), &["start", "second"]));
    assert_ne!(code, 0);
    assert!(err.contains("runs 1 containers, its limit is 1"), "{err}");
    let (code, _, err) = output(srv.docker_as(Some(DAVE), &["create", "me/d"]));
    assert_ne!(code, 0);
    assert!(err.contains("has 4 containers, its limit is 4"), "{err}");
    ok(srv.docker_as(Some(DAVE), &["rm", "-f", "long"]));
    ok(srv.docker_as(Some(DAVE), &["start", "second"]));

    // Concurrent builds: alice may run one. A client that goes away cancels its build and
    // frees the slot.
    let s = start_slow_build(&socket, Some(ALICE));
    let (code, _, err) = output(srv.docker_as(Some(ALICE), &["build", ctx.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains("already runs 1 builds"), "{err}");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _, err) =
            output(srv.docker_as(Some(ALICE), &["build", "-q", ctx.to_str().unwrap()]));
        if code == 0 {
            break;
        }
        assert!(err.contains("already runs"), "{err}");
        assert!(
            Instant::now() < deadline,
            "the dropped build still holds alice's slot"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!ok(srv.docker_as(Some(ALICE), &["images"])).contains("slow"));
}

#[test]
fn five_tenants_build_ten_images_each_at_once_and_stay_isolated() {
    let env = Env::new();
    let tenants: Vec<(String, String)> = (0..5)
        .map(|i| (format!("t{i}"), format!("token-of-tenant-{i}-0123456789")))
        .collect();
    let mut cfg = format!("root = \"{}\"\n", env.path("tenants").display());
    for (name, token) in &tenants {
        cfg.push_str(&format!(
            "[[tenants]]\nname = \"{name}\"\ntoken = \"{token}\"\nconcurrent_builds = 10\n"
        ));
        // Each tenant's store starts with the Debian base (an operator's provisioning).
        crate::harness::debian_base_in(&env.path("tenants").join(name));
    }
    let cfg = write_config(&env, &cfg);
    let socket = env.path("s.sock");
    let mut srv = Server::with_config(&env, &cfg, &socket, &[]);
    let mut handles = Vec::new();
    for (t, (name, token)) in tenants.iter().enumerate() {
        for b in 0..10 {
            let socket = socket.clone();
            let auth = format!("Bearer {token}");
            let name = name.clone();
            handles.push(std::thread::spawn(move || {
                // Even builds run kiln's guest sh (WASI), odd ones Debian's dash (native).
                let dockerfile = if b % 2 == 0 {
                    format!("FROM scratch\nCOPY mark /mark\nRUN echo wasi {name} {b} > /made\n")
                } else {
                    format!("FROM debian:bookworm\nCOPY mark /mark\nRUN echo native {name} {b} > /made\n")
                };
                let mark = format!("{t}-{b}");
                let body = tar_of(&[("Dockerfile", dockerfile.as_bytes()), ("mark", mark.as_bytes())]);
                let (status, _, resp) = http(
                    &socket,
                    "POST",
                    &format!("/v1.43/build?t=img:{b}"),
                    &[("Authorization", &auth), ("Content-Type", "application/x-tar")],
                    &body,
                );
                (name, b, status, resp)
            }));
        }
    }
    for h in handles {
        let (name, b, status, resp) = h.join().unwrap();
        assert_eq!(status, 200, "{name} build {b}: {resp}");
        let (text, error) = build_messages(&resp);
        assert!(error.is_none(), "{name} build {b}: {error:?}\n{text}");
        assert!(
            text.contains(&format!("Successfully tagged img:{b}")),
            "{name} build {b}:\n{text}"
        );
    }
    srv.terminate();
    for (t, (name, _)) in tenants.iter().enumerate() {
        let root = env.path("tenants").join(name);
        let listed = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&root)
            .args(["images", "--format", "json"])
            .output()
            .unwrap();
        let mut names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{}:{}",
                    v["Repository"].as_str().unwrap(),
                    v["Tag"].as_str().unwrap()
                )
            })
            .collect();
        names.sort();
        let mut want: Vec<String> = (0..10).map(|b| format!("img:{b}")).collect();
        want.push("debian:bookworm".into());
        want.sort();
        assert_eq!(names, want, "tenant {name} holds exactly its own images");
        for b in [0, 1] {
            let tree = crate::harness::image_tree(&root, &format!("img:{b}"));
            let made = String::from_utf8(tree["made"].content.clone()).unwrap();
            let kind = if b % 2 == 0 { "wasi" } else { "native" };
            assert_eq!(made, format!("{kind} {name} {b}\n"));
            let mark = String::from_utf8(tree["mark"].content.clone()).unwrap();
            assert_eq!(mark, format!("{t}-{b}"));
        }
        let fsck = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&root)
            .arg("fsck")
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "fsck of {name}: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
}

#[test]
fn hostile_requests_get_a_4xx_and_the_server_keeps_serving() {
    let env = Env::new();
    let socket = env.path("s.sock");
    let mut srv = Server::start(
        &env,
        &socket,
        &["-H", &format!("unix://{}", socket.display())],
    );

    // A slow-loris client holds a connection with half a request head.
    let mut loris = UnixStream::connect(&socket).unwrap();
    loris
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: kiln\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();

    let (status, _, body) = http(
        &socket,
        "POST",
        "/containers/create",
        &[("Content-Type", "application/json")],
        b"{not json",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid JSON"), "{body}");
    let huge = "x".repeat(100 * 1024);
    let (status, _, _) = http(&socket, "GET", "/_ping", &[("X-Huge", &huge)], b"");
    assert_eq!(status, 431, "an oversized head is refused");
    let escape = {
        let mut b = tar::Builder::new(Vec::new());
        let data = b"FROM scratch\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_old_mut().name[..13].copy_from_slice(b"../escape.txt");
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
        b.into_inner().unwrap()
    };
    for (what, body) in [
        ("a ../ entry", escape),
        ("an absolute entry", {
            let mut v = tar_of(&[("Dockerfile", b"FROM scratch\n")]);
            v[..11].copy_from_slice(b"/etc/passwd");
            v[11..100].fill(0);
            let mut h = tar::Header::from_byte_slice(&v[..512]).clone();
            h.set_cksum();
            v[..512].copy_from_slice(h.as_bytes());
            v
        }),
        ("binary garbage", vec![0x00, 0x01, 0xfe, 0xff, 0x10, 0x00]),
    ] {
        let (status, _, resp) = http(
            &socket,
            "POST",
            "/v1.43/build",
            &[("Content-Type", "application/x-tar")],
            &body,
        );
        assert_eq!(status, 400, "{what}: {resp}");
        assert!(resp.contains("message"), "{what}: {resp}");
    }
    assert!(
        !env.path("escape.txt").exists()
            && !env.dir.path().parent().unwrap().join("escape.txt").exists()
    );
    let (status, _, _) = http(&socket, "GET", "/v1.43/no/such/endpoint", &[], b"");
    assert_eq!(status, 404);
    let (status, _, _) = http(&socket, "GET", "/v1.99/_ping", &[], b"");
    assert_eq!(status, 400, "a too-new API version is refused");

    // All the while the server answered others; the stalled head is cut off.
    let (status, _, body) = http(&socket, "GET", "/_ping", &[], b"");
    assert_eq!((status, body.as_str()), (200, "OK"));
    loris
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = loris.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(25),
        "the stalled client was held {waited:?}"
    );

    // SIGTERM during a build: the build is cancelled, the server exits cleanly, the store
    // stays consistent and the socket is gone.
    let mut s = start_slow_build(&socket, None);
    let t0 = Instant::now();
    let status = srv.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert!(!socket.exists(), "the socket is removed");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        String::from_utf8_lossy(&rest).contains("cancelled"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    env.ok(&["fsck"]);
    let images = env.ok(&["images"]);
    assert!(!images.contains("slow"), "{images}");
}

#[test]
fn serve_refuses_tcp_without_tenants() {
    let env = Env::new();
    let out = env.run(&["serve", "-H", "tcp://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TCP listeners need a config file"), "{err}");
    let cfg = write_config(&env, "[[tenants]]\nname = \"a\"\ntoken = \"short\"\n");
    let out = env.run(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shorter than"), "{err}");
}

/// A step that makes a tree 100,000 levels deep: every walk over it (the disk watcher, the
/// layer writer, the clean-up) is iterative, so the build commits it or fails with one clear
/// line, and the server, which would abort on a stack overflow, serves another tenant
/// throughout.
#[test]
fn a_tree_100000_levels_deep_neither_stops_the_server_nor_its_other_tenants() {
    let env = Env::new();
    crate::harness::debian_base_in(&env.root().join("tenants/alice"));
    let cfg = write_config(
        &env,
        &format!(
            "[[tenants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n\n\
             [[tenants]]\nname = \"bob\"\ntoken = \"{BOB}\"\n"
        ),
    );
    let socket = env.path("s.sock");
    let srv = Server::with_config(&env, &cfg, &socket, &[]);
    let deep = context(
        &env,
        "deep",
        &[(
            "Dockerfile",
            "FROM debian:bookworm\n\
             RUN perl -e 'for (1..100000) { mkdir \"d\" or die \"mkdir: $!\"; chdir \"d\" or die \"chdir: $!\" } print \"made\\n\"'\n",
        )],
    );
    let small = context(
        &env,
        "small",
        &[("Dockerfile", "FROM scratch\nARG N\nRUN echo $N > /n\n")],
    );
    let mut alice = srv.docker_as(
        Some(ALICE),
        &["build", "-t", "me/deep", deep.to_str().unwrap()],
    );
    let alice = std::thread::spawn(move || {
        let out = alice.output().expect("spawn docker");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    // bob builds and is answered all along.
    let mut bob_builds = 0;
    while !alice.is_finished() {
        let n = format!("N={bob_builds}");
        let t0 = Instant::now();
        ok(srv.docker_as(
            Some(BOB),
            &["build", "-q", "--build-arg", &n, small.to_str().unwrap()],
        ));
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "bob's build took {:?}",
            t0.elapsed()
        );
        bob_builds += 1;
    }
    let (code, out, err) = alice.join().expect("alice's build");
    assert!(
        out.contains("made"),
        "the step did not make the tree:\n{out}\n{err}"
    );
    if code != 0 {
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("DEPRECATED") && !l.starts_with("  "))
            .collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains("longer than 4096 bytes"), "{err}");
    }
    eprintln!("alice's build ended {code}; bob built {bob_builds} images meanwhile");
    assert!(bob_builds > 0);
    // The server is alive and bob's images are there.
    let images = ok(srv.docker_as(Some(BOB), &["images", "-q"]));
    assert!(!images.trim().is_empty());
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The median of `n` runs of alice's build, in seconds.
fn median_build(srv: &Server, ctx: &Path, n: usize) -> f64 {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            ok(srv.docker_as(
                Some(ALICE),
                &["build", "-q", "--no-cache", ctx.to_str().unwrap()],
            ));
            t0.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

/// Reads what `s` has, for at most `wait`: (bytes read, whether the server closed it).
fn read_for(mut s: &UnixStream, wait: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => {}
        }
    }
}

#[test]
fn a_tenant_holding_2000_connections_and_stalled_attaches_does_not_starve_another() {
    // The test holds some 2,100 sockets.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    assert!(
        lim.rlim_cur >= 4096,
        "need 4096 open files, have {}",
        lim.rlim_cur
    );
    const MALLORY: &str = "mallory-token-0123456789abcdef";
    let env = Env::new();
    let cfg = write_config(
        &env,
        &format!(
            "client_stall = \"3s\"\n\
             [[tenants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n\n\
             [[tenants]]\nname = \"mallory\"\ntoken = \"{MALLORY}\"\nconnections = 256\n"
        ),
    );
    let socket = env.path("s.sock");
    let srv = Server::with_config(&env, &cfg, &socket, &[]);
    let small = context(
        &env,
        "small",
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY a.txt /a.txt\n\
             RUN i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; cat /a.txt > /b.txt\n",
            ),
            ("a.txt", "alice\n"),
        ],
    );
    // mallory's container writes 20 MiB at once, then waits.
    let spew_dir = context(
        &env,
        "spew",
        &[(
            "Dockerfile",
            "FROM scratch\nCOPY big /big\nCMD [\"sh\", \"-c\", \"cat /big; sleep 600\"]\n",
        )],
    );
    std::fs::write(spew_dir.join("big"), vec![b'x'; 20 << 20]).unwrap();
    ok(srv.docker_as(
        Some(MALLORY),
        &["build", "-q", "-t", "m/spew", spew_dir.to_str().unwrap()],
    ));
    ok(srv.docker_as(Some(MALLORY), &["create", "--name", "spew", "m/spew"]));

    median_build(&srv, &small, 1);
    let before = median_build(&srv, &small, 7);
    let hwm_before = status_kib(srv.pid(), "VmHWM");

    // 50 attaches that never read, then the container starts writing.
    let request = |s: &mut UnixStream, method: &str, path: &str, extra: &str| {
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {MALLORY}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .unwrap();
    };
    let attaches: Vec<UnixStream> = (0..50)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).unwrap();
            request(
                &mut s,
                "POST",
                "/v1.43/containers/spew/attach?stream=1&stdout=1&stderr=1",
                "Connection: Upgrade\r\nUpgrade: tcp\r\n",
            );
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    ok(srv.docker_as(Some(MALLORY), &["start", "spew"]));
    // 1,000 connections that wait on the container (each holds its connection while the
    // container runs): mallory gets its 256 connections, the rest are told why and closed.
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..1000 {
        let mut s = UnixStream::connect(&socket).unwrap();
        request(&mut s, "POST", "/v1.43/containers/spew/wait", "");
        let mut head = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if head.starts_with("HTTP/1.1 200") {
            held.push(s);
        } else {
            assert!(head.starts_with("HTTP/1.1 429"), "{head}");
            let (body, closed) = read_for(&s, Duration::from_secs(5));
            assert!(
                String::from_utf8_lossy(&body).contains("connections open"),
                "{}",
                String::from_utf8_lossy(&body)
            );
            assert!(closed, "a refused connection stays open");
            refused += 1;
        }
    }
    eprintln!("mallory's waits: {} held, {refused} refused", held.len());
    assert_eq!(held.len() + attaches.len(), 256);
    // And 1,000 that say nothing at all.
    let silent: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    // The silent ones (well within the 10 s a request head may take): once the server has
    // accepted them, all but the newest pending few were closed to make room.
    std::thread::sleep(Duration::from_secs(1));
    let closed = silent
        .iter()
        .filter(|s| read_for(s, Duration::from_millis(5)).1)
        .count();
    eprintln!("mallory's silent connections: {closed} of 1000 closed at once");
    assert!(
        closed >= 1000 - 128,
        "only {closed} silent connections closed"
    );

    let during = median_build(&srv, &small, 7);

    // The waits mallory holds are still open.
    assert!(held
        .iter()
        .all(|s| !read_for(s, Duration::from_millis(1)).1));
    // The attaches read nothing: each was dropped, not buffered for.
    for s in &attaches {
        let (got, closed) = read_for(s, Duration::from_secs(20));
        assert!(closed, "a stalled attach is still open");
        assert!(
            got.len() < 8 << 20,
            "{} bytes were buffered for a stalled attach",
            got.len()
        );
    }
    let peak = status_kib(srv.pid(), "VmHWM");
    eprintln!("server memory: peak {hwm_before} KiB before, {peak} KiB after");
    assert!(
        peak < hwm_before + (256 << 10),
        "the server's peak grew from {hwm_before} KiB to {peak} KiB"
    );
    // The container's output went on to its log once the attaches were dropped.
    let logs = srv
        .docker_as(Some(MALLORY), &["logs", "spew"])
        .output()
        .expect("docker logs");
    assert_eq!(logs.stdout.len(), 20 << 20);
    ok(srv.docker_as(Some(MALLORY), &["rm", "-f", "spew"]));

    // alice's builds beside mallory against alice's builds alone, before mallory came and
    // after mallory left (other work on this machine may slow either).
    drop((held, silent, attaches));
    let after = median_build(&srv, &small, 7);
    eprintln!(
        "alice's build: {before:.3} s before, {during:.3} s beside mallory's 2,050 connections, {after:.3} s after"
    );
    assert!(
        during <= 2.0 * before.max(after),
        "alice's build took {during:.3} s beside mallory, {before:.3} s and {after:.3} s alone"
    );
}
