//! Real consumers of kiln's output: skopeo, umoci, Debian's docker engine, and the OCI schemas.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{conformance_dir, require_tool, workspace_root, Env};

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_hello(env: &Env) {
    let ctx = workspace_root().join("examples/hello");
    env.ok(&["build", "-t", "example/hello", ctx.to_str().unwrap()]);
}

/// `kiln save --format oci` of example/hello, unpacked; returns the layout folder.
fn save_oci(env: &Env) -> PathBuf {
    let archive = env.path("hello.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "example/hello",
    ]);
    let dir = env.path("oci");
    untar(&archive, &dir);
    dir
}

fn untar(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(into),
    );
}

#[test]
fn skopeo_reads_the_store_and_oci_archives() {
    require_tool("skopeo");
    let env = Env::new();
    build_hello(&env);
    let store_ref = format!(
        "oci:{}:docker.io/example/hello:latest",
        env.root().display()
    );
    let out = run_ok(Command::new("skopeo").args(["inspect", &store_ref]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Labels"]["org.opencontainers.image.title"], "hello");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(4));

    let dir = save_oci(&env);
    let out =
        run_ok(Command::new("skopeo").args(["inspect", &format!("oci:{}:latest", dir.display())]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Os"], "linux");
    // skopeo also reads the docker-archive form.
    let docker_archive = env.path("hello-docker.tar");
    env.ok(&[
        "save",
        "-o",
        docker_archive.to_str().unwrap(),
        "example/hello",
    ]);
    let out = run_ok(Command::new("skopeo").args([
        "inspect",
        &format!("docker-archive:{}", docker_archive.display()),
    ]));
    assert!(out.contains("hello from kiln"), "{out}");
}

#[test]
fn umoci_unpacks_an_oci_archive_to_the_same_tree() {
    require_tool("umoci");
    let env = Env::new();
    build_hello(&env);
    let dir = save_oci(&env);
    let bundle = env.path("bundle");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:latest", dir.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read(rootfs.join("srv/greeting.txt")).unwrap(),
        b"hello from kiln\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rootfs.join("srv/README"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["process"]["cwd"], "/srv");
}

fn oci_files(dir: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let mut args = vec![
        format!(
            "application/vnd.oci.layout.header.v1+json={}",
            dir.join("oci-layout").display()
        ),
        format!(
            "application/vnd.oci.image.index.v1+json={}",
            dir.join("index.json").display()
        ),
    ];
    for m in index["manifests"].as_array().unwrap() {
        let digest = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let mpath = dir.join("blobs/sha256").join(digest);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
        args.push(format!(
            "application/vnd.oci.image.manifest.v1+json={}",
            mpath.display()
        ));
        let cdigest = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        args.push(format!(
            "application/vnd.oci.image.config.v1+json={}",
            dir.join("blobs/sha256").join(cdigest).display()
        ));
    }
    args
}

fn validate(files: &[String]) -> std::process::Output {
    let script = workspace_root().join("tests/fixtures/validate_oci.py");
    Command::new("python3")
        .arg(script)
        .arg(conformance_dir().join("oci-image-spec/schema"))
        .args(files)
        .output()
        .expect("run python3 (jsonschema is installed by .ci/run)")
}

#[test]
fn manifests_configs_and_indexes_validate_against_the_oci_schemas() {
    let env = Env::new();
    build_hello(&env);
    let mut files = oci_files(&env.root());
    let dir = save_oci(&env);
    files.extend(oci_files(&dir));
    let out = validate(&files);
    assert!(
        out.status.success(),
        "schema validation failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator can fail: a manifest without its config is rejected.
    let bad = env.write("bad.json", r#"{"schemaVersion": 2, "layers": []}"#);
    let out = validate(&[format!(
        "application/vnd.oci.image.manifest.v1+json={}",
        bad.display()
    )]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A dockerd of our own, on a private socket and data root, stopped when dropped.
pub(crate) struct Dockerd {
    child: Child,
    _dir: tempfile::TempDir,
    sock: PathBuf,
}

impl Dockerd {
    pub(crate) fn start() -> Self {
        require_tool("dockerd");
        let dir = tempfile::Builder::new()
            .prefix("kiln-dockerd-")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Self {
            child,
            _dir: dir,
            sock,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = d
                .docker()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            let log =
                std::fs::read_to_string(d._dir.path().join("dockerd.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "dockerd did not come up:\n{log}");
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    pub(crate) fn docker(&self) -> Command {
        // Debian's client matches Debian's engine; the v28 client also works when it is first.
        let bin = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        let mut c = Command::new(bin);
        c.env("DOCKER_HOST", format!("unix://{}", self.sock.display()));
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn docker_loads_and_runs_a_kiln_image_of_a_static_binary() {
    require_tool("gcc");
    let env = Env::new();
    let src = env.write("ctx/hello.c", "#include <unistd.h>\nint main(void){static const char m[]=\"hello from a kiln image\\n\";return write(1,m,sizeof m-1)<0;}\n");
    run_ok(
        Command::new("gcc")
            .args(["-static", "-Os", "-o"])
            .arg(env.path("ctx/hello"))
            .arg(&src),
    );
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY hello /hello\nCMD [\"/hello\"]\n",
    );
    env.write("ctx/.dockerignore", "*.c\n");
    env.ok(&[
        "build",
        "-t",
        "kiln-test/static:v1",
        env.path("ctx").to_str().unwrap(),
    ]);
    let archive = env.path("static.tar");
    env.ok(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "kiln-test/static:v1",
    ]);

    let d = Dockerd::start();
    let out = run_ok(d.docker().arg("load").arg("-i").arg(&archive));
    assert!(out.contains("kiln-test/static:v1"), "{out}");
    let out = run_ok(
        d.docker()
            .args(["run", "--rm", "--network", "none", "kiln-test/static:v1"]),
    );
    assert_eq!(out, "hello from a kiln image\n");
}
