//! What kiln never gives, refused with a clear message rather than accepted and ignored:
//! privileges beyond Docker's defaults, host namespaces, devices and ports for containers
//! (`kiln run` and the server), host bind mounts for a shared server's tenants
//! (`HostConfig.Binds` and `HostConfig.Mounts`), and `RUN --network=host`,
//! `--security=insecure` and `--device` in a build that was not given them. Each container
//! attempt would write into a host canary folder; the canary must stay as it was and no
//! container may be left behind.

use std::path::Path;

use crate::harness::Env;
use crate::serve::{write_config, Server};

/// docker's run flags that kiln refuses, and a word of each refusal's message.
const REFUSED: &[(&[&str], &str)] = &[
    (&["--privileged"], "--privileged is refused"),
    (&["--cap-add", "SYS_ADMIN"], "SYS_ADMIN is refused"),
    (&["--cap-add", "ALL"], "--cap-add ALL is refused"),
    (
        &["--device", "/dev/null:/dev/sda"],
        "is refused: a container sees only kiln's own minimal /dev",
    ),
    (
        &["--security-opt", "seccomp=unconfined"],
        "--security-opt seccomp=unconfined is refused",
    ),
    (
        &["--security-opt", "apparmor=unconfined"],
        "--security-opt apparmor=unconfined is refused",
    ),
    (&["--pid", "host"], "--pid=host is refused"),
    (&["--ipc", "host"], "--ipc=host is refused"),
    (&["--userns", "host"], "--userns=host is refused"),
    (&["--uts", "host"], "--uts=host is refused"),
    (&["-p", "8080:80"], "published ports"),
];

/// A host folder with one file in it; the containers try to write there.
fn canary(env: &Env) -> std::path::PathBuf {
    env.write("canary/file", "untouched\n");
    env.path("canary")
}

fn assert_canary_untouched(dir: &Path, case: &str) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("file")], "{case}");
    assert_eq!(
        std::fs::read_to_string(dir.join("file")).unwrap(),
        "untouched\n",
        "{case}"
    );
}

/// The command each container would run: write into the canary, through a bind mount at
/// /host or through the host's root.
const ATTACK: &[&str] = &[
    "sh",
    "-c",
    "echo pwned > /host/file; echo pwned > /host/new",
];

#[test]
fn kiln_run_refuses_what_it_never_gives() {
    let env = Env::new();
    let canary = canary(&env);
    env.write("ctx/Dockerfile", "FROM scratch\nRUN echo hi > /hi\n");
    env.ok(&["build", "-t", "me/app", env.path("ctx").to_str().unwrap()]);
    let bind = format!("{}:/host", canary.display());
    let mount = format!("type=bind,source={},target=/host", canary.display());
    let mut cases: Vec<(Vec<&str>, &str)> = REFUSED
        .iter()
        .map(|(flags, msg)| (flags.to_vec(), *msg))
        .collect();
    cases.push((vec!["-P"], "published ports"));
    cases.push((vec!["--cap-drop", "NET_RAW"], "--cap-drop is not supported"));
    cases.push((vec!["--mount", &mount], "--mount is not supported"));
    for (flags, msg) in cases {
        let mut args = vec!["run", "--rm", "-v", &bind];
        args.extend(&flags);
        args.push("me/app");
        args.extend(ATTACK);
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{flags:?}: {err}");
        assert!(lines[0].contains(msg), "{flags:?}: {err}");
        assert_canary_untouched(&canary, &format!("{flags:?}"));
        assert_eq!(
            env.ok(&["ps", "-a", "-q"]),
            "",
            "{flags:?} left a container"
        );
    }
    // What kiln always does, asked for, is no refusal.
    let out = env.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "no-new-privileges",
        "--ipc",
        "private",
        "me/app",
        "cat",
        "/hi",
    ]);
    assert_eq!(out, "hi\n");
}

const ALICE: &str = "alice-token-refusals-0123456789";

#[test]
fn a_shared_servers_tenants_get_no_host_mounts_privileges_or_host_network_steps() {
    let env = Env::new();
    let canary = canary(&env);
    let cfg = write_config(
        &env,
        &format!("[[tenants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\nstep_pids = 7\n"),
    );
    let socket = env.path("s.sock");
    let srv = Server::with_config(&env, &cfg, &socket, &[]);
    let docker = |args: &[&str]| {
        let out = srv.docker_as(Some(ALICE), args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A module of the tenant's own runs in a step.
    let module = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start") i32.const 0 call $exit))"#,
    )
    .unwrap();
    env.write("ctx/m.wasm", module);
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY --chmod=755 m.wasm /m.wasm\nRUN [\"/m.wasm\"]\nRUN echo hi > /hi\n",
    );
    let (code, _, err) = docker(&["build", "-t", "me/app", env.path("ctx").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // The tenant's compiled modules are its own, in its store, with their keyed hashes.
    let cache = env.root().join("tenants/alice/kiln/wasm");
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".cwasm")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".cwasm.mac")), "{names:?}");

    // Host bind mounts, both ways docker sends them.
    let bind = format!("{}:/host", canary.display());
    let mount = format!("type=bind,source={},target=/host", canary.display());
    for flags in [["-v", bind.as_str()], ["--mount", mount.as_str()]] {
        let mut args = vec!["run", "--rm"];
        args.extend(flags);
        args.push("me/app");
        args.extend(ATTACK);
        let (code, _, err) = docker(&args);
        assert_ne!(code, 0, "{flags:?}");
        assert!(
            err.contains("bind mounts of host folders are not allowed"),
            "{flags:?}: {err}"
        );
        assert_canary_untouched(&canary, &format!("{flags:?}"));
    }
    // Privileges, namespaces, devices, ports: refused, not ignored.
    for (flags, msg) in REFUSED {
        let mut args = vec!["run", "--rm"];
        args.extend(*flags);
        args.push("me/app");
        args.extend(["sh", "-c", "echo ran"]);
        let (code, out, err) = docker(&args);
        assert_ne!(code, 0, "{flags:?}: {out}");
        assert!(err.contains(msg), "{flags:?}: {err}");
        assert!(!out.contains("ran"), "{flags:?} ran: {out}");
    }
    let (_, ps, _) = docker(&["ps", "-a", "-q"]);
    assert_eq!(ps, "", "a refused container was left behind");

    // A container's processes are bounded as a step's are (step_pids), whatever it asks.
    let (code, id, err) = docker(&[
        "run",
        "-d",
        "--pids-limit",
        "100000",
        "me/app",
        "sleep",
        "60",
    ]);
    assert_eq!(code, 0, "{err}");
    let id = id.trim();
    let (_, pids, _) = docker(&["inspect", "-f", "{{.HostConfig.PidsLimit}}", id]);
    assert_eq!(pids.trim(), "7");
    // A stop may not hold a server thread for days, nor wait a negative time.
    for t in ["9223372036854775807", "-5", "3601"] {
        let (status, _, body) = crate::serve::http(
            &socket,
            "POST",
            &format!("/v1.43/containers/{id}/stop?t={t}"),
            &[("Authorization", &format!("Bearer {ALICE}"))],
            b"",
        );
        assert_eq!(status, 400, "stop?t={t}: {body}");
        assert!(body.contains("out of range"), "{body}");
    }
    let (code, _, err) = docker(&["stop", "-t", "0", id]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = docker(&["rm", id]);
    assert_eq!(code, 0, "{err}");

    // Build steps get nothing the build was not given.
    for (step, msg) in [
        (
            "RUN --network=host echo reached > /net",
            "RUN --network=host is refused",
        ),
        (
            "RUN --security=insecure echo reached > /net",
            "RUN --security=insecure is refused",
        ),
        (
            "RUN --device=/dev/sda echo reached > /net",
            "RUN --device is refused",
        ),
    ] {
        env.write("step/Dockerfile", format!("FROM scratch\n{step}\n"));
        let (code, out, err) =
            docker(&["build", "-t", "me/step", env.path("step").to_str().unwrap()]);
        assert_ne!(code, 0, "{step}: {out}");
        assert!(err.contains(msg), "{step}: {err}");
        assert!(err.contains("Dockerfile:2"), "{step}: {err}");
    }
    let (_, images, _) = docker(&["images", "-q", "me/step"]);
    assert_eq!(images, "", "a refused step built an image");
}
