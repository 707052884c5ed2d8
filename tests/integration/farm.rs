//! The farm: three `kiln serve` replicas behind nginx (`deploy/k8s/base/nginx/kiln-proxy.conf`, the
//! router config kiln ships) sharing one `docker-registry`, driven by the real docker CLI. A
//! replica is killed; its tenant's next build lands elsewhere and runs no step, its pushed tag
//! still runs, and the tenants on the other replicas never notice.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{debian_base, require_tool, workspace_root, Env, KillOnDrop};
use crate::registries::{free_port, Registry};
use crate::serve::{docker_bin, Server};

/// Tenants configured; the test picks three on different replicas among them.
const TENANTS: usize = 10;

fn token(i: usize) -> String {
    format!("farm-tenant-{i}-0123456789abcdef")
}

/// `docker ARGS` through `host` (tcp) as the tenant holding `token`.
fn docker(config_root: &Path, host: &str, token: &str, args: &[&str]) -> Command {
    let dir = config_root.join(token);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({"HttpHeaders": {"Authorization": format!("Bearer {token}")}})
            .to_string(),
    )
    .unwrap();
    let mut c = Command::new(docker_bin());
    c.env("DOCKER_HOST", format!("tcp://{host}"))
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", &dir)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .args(args)
        .stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> (bool, String) {
    let out = c.output().expect("spawn docker");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn must(c: Command) -> String {
    let shown = format!("{c:?}");
    let (ok, text) = run(c);
    assert!(ok, "{shown} failed:\n{text}");
    text
}

fn running_steps(out: &str) -> usize {
    out.lines()
        .filter(|l| l.starts_with(" ---> Running in"))
        .count()
}

/// `docker run -d --name NAME ARGS`, `docker wait`, `docker logs`: the container's output.
/// (An attached `docker run` through nginx shows nothing: nginx ends a hijacked connection
/// when the client half-closes it, which the docker CLI does at once without `-i`. README,
/// "A farm of replicas", says so.)
fn run_detached(cli: &Path, router: &str, token: &str, name: &str, args: &[&str]) -> String {
    let mut all = vec!["run", "-d", "--name", name];
    all.extend_from_slice(args);
    must(docker(cli, router, token, &all));
    let code = must(docker(cli, router, token, &["wait", name]));
    assert_eq!(code.trim(), "0", "{name} exited {code}");
    let out = docker(cli, router, token, &["logs", name])
        .output()
        .expect("spawn docker");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// nginx on `port` in front of `replicas`, with kiln's proxy settings.
fn start_nginx(dir: &Path, port: u16, replicas: &[u16]) -> KillOnDrop {
    require_tool("nginx");
    let include = workspace_root().join("deploy/k8s/base/nginx/kiln-proxy.conf");
    assert!(include.is_file(), "{} is missing", include.display());
    let servers: String = replicas
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;\n"))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
             \x20   upstream kiln {{\n        hash $http_authorization consistent;\n{servers}    }}\n\
             \x20   server {{\n        listen 127.0.0.1:{port};\n        location / {{\n            include {inc};\n        }}\n    }}\n}}\n",
            d = dir.display(),
            inc = include.display(),
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn nginx");
    let guard = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    guard
}

/// A six-step Dockerfile: a WASI stage (scratch, kiln's guest shell) and a native one.
fn app_context(dir: &Path, base: &str, marker: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch AS wasi\nRUN echo {marker}-wasi > /w.txt\n\
             FROM {base}\nCOPY app.txt /app.txt\nRUN cp /app.txt /native.txt && echo {marker}-native >> /native.txt\n\
             COPY --from=wasi /w.txt /w.txt\nRUN cat /w.txt /native.txt > /all.txt\nCMD [\"cat\", \"/all.txt\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("app.txt"), format!("{marker}\n")).unwrap();
    dir.to_path_buf()
}

/// A build that takes a few seconds in a native step, for the tenants that must not notice.
fn slow_context(dir: &Path, base: &str, marker: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {base}\nRUN sleep 3 && echo {marker} > /m.txt\n"),
    )
    .unwrap();
    dir.to_path_buf()
}

#[test]
fn a_killed_replicas_tenant_lands_elsewhere_and_runs_no_step_while_other_tenants_go_on() {
    require_tool("nginx");
    let reg = Registry::plain();
    let base = format!("{}/base/debian:bookworm", reg.host);
    let seed = Env::new();
    debian_base(&seed);
    seed.ok(&["tag", "debian:bookworm", &base]);
    seed.ok(&["push", "-q", &base]);

    let work = tempfile::tempdir().unwrap();
    let tenants: String = (0..TENANTS)
        .map(|i| {
            format!(
                "[[tenants]]\nname = \"t{i}\"\ntoken = \"{}\"\ncache = \"{h}/t{i}/cache\"\npush = \"{h}/t{i}\"\n\n",
                token(i),
                h = reg.host
            )
        })
        .collect();
    let cfg = work.path().join("kiln-serve.toml");
    std::fs::write(&cfg, tenants).unwrap();
    let envs: Vec<Env> = (0..3).map(|_| Env::new()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port("127.0.0.1")).collect();
    let mut replicas: Vec<Server> = envs
        .iter()
        .zip(&ports)
        .map(|(env, port)| {
            Server::with_config(
                env,
                &cfg,
                &env.path("kiln.sock"),
                &["-H", &format!("tcp://127.0.0.1:{port}")],
            )
        })
        .collect();
    let router_port = free_port("127.0.0.1");
    let _nginx = start_nginx(&work.path().join("nginx"), router_port, &ports);
    let router = format!("127.0.0.1:{router_port}");
    let cli = work.path().join("docker");

    // Where the router keeps each tenant: the replica whose store answers `docker info`.
    let roots: Vec<PathBuf> = envs.iter().map(Env::root).collect();
    let replica_of = |t: usize| -> usize {
        let out = must(docker(
            &cli,
            &router,
            &token(t),
            &["info", "--format", "{{.DockerRootDir}}"],
        ));
        let dir = PathBuf::from(out.trim());
        roots
            .iter()
            .position(|r| dir.starts_with(r))
            .unwrap_or_else(|| panic!("{dir:?} is no replica's store"))
    };
    let placement: Vec<usize> = (0..TENANTS).map(replica_of).collect();
    // A stays put across requests: the ring is consistent.
    assert_eq!(replica_of(0), placement[0]);
    let a = 0;
    let victim = placement[a];
    let others: Vec<usize> = (1..TENANTS).filter(|&t| placement[t] != victim).collect();
    assert!(
        others.len() >= 2,
        "the ring put nine of ten tenants on one replica: {placement:?}"
    );
    let (b, c) = (others[0], others[1]);

    // A tenant names only caches under its own repository.
    let ctx0 = app_context(&work.path().join("probe"), &base, "probe");
    let (ok, text) = run(docker(
        &cli,
        &router,
        &token(a),
        &[
            "build",
            "--cache-from",
            &format!("{}/t{}/cache:x", reg.host, others[0]),
            ctx0.to_str().unwrap(),
        ],
    ));
    assert!(
        !ok && text.contains("may use only build caches under"),
        "{text}"
    );

    // A builds through the router; every step runs once, the tag is pushed as it is made.
    let ctx = app_context(&work.path().join("app"), &base, "farm");
    let ctx_s = ctx.to_str().unwrap().to_owned();
    let out = must(docker(
        &cli,
        &router,
        &token(a),
        &["build", "-t", "app", &ctx_s],
    ));
    assert_eq!(running_steps(&out), 3, "{out}");
    assert!(
        out.contains(&format!(
            "pushed app:latest as {}/t{a}/app:latest",
            reg.host
        )),
        "{out}"
    );
    must(docker(
        &cli,
        &router,
        &token(a),
        &["tag", "app", "app:kept"],
    ));

    // B and C build while A's replica dies.
    let slow = |t: usize| {
        let dir = slow_context(
            &work.path().join(format!("slow{t}")),
            &base,
            &format!("tenant{t}"),
        );
        let cmd = docker(
            &cli,
            &router,
            &token(t),
            &["build", "-t", "slow", dir.to_str().unwrap()],
        );
        std::thread::spawn(move || run(cmd))
    };
    let (tb, tc) = (slow(b), slow(c));
    std::thread::sleep(Duration::from_millis(500));
    replicas[victim].kill();

    // The same build lands on another replica and executes no RUN step.
    let out = must(docker(
        &cli,
        &router,
        &token(a),
        &["build", "-t", "app", &ctx_s],
    ));
    assert_eq!(running_steps(&out), 0, "{out}");
    assert!(out.contains("Using cache from"), "{out}");
    let now = replica_of(a);
    assert_ne!(now, victim);
    let shown = run_detached(&cli, &router, &token(a), "shown", &["app"]);
    assert_eq!(shown, "farm-wasi\nfarm\nfarm-native\n");
    // A tag made only on the dead replica comes back from the tenant's registry.
    let shown = run_detached(
        &cli,
        &router,
        &token(a),
        "kept",
        &["app:kept", "cat", "/app.txt"],
    );
    assert_eq!(shown, "farm\n");

    for (t, handle) in [(b, tb), (c, tc)] {
        let (ok, text) = handle.join().unwrap();
        assert!(ok, "tenant {t} was disturbed:\n{text}");
        let shown = run_detached(&cli, &router, &token(t), "slow", &["slow", "cat", "/m.txt"]);
        assert_eq!(shown, format!("tenant{t}\n"));
        assert_eq!(replica_of(t), placement[t], "tenant {t} moved");
    }

    drop(replicas);
    for env in &envs {
        for t in 0..TENANTS {
            let root = env.root().join(format!("tenants/t{t}"));
            if root.is_dir() {
                let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
                    .arg("--root")
                    .arg(&root)
                    .arg("fsck")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "fsck of {} failed: {}{}",
                    root.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
