//! `kiln pull`, `push`, `login` and FROM pulls against real registries (Debian's
//! `docker-registry`) on loopback, with skopeo as the oracle and a fault proxy in front.

use std::process::Command;
use std::time::Instant;

use crate::harness::{debian_base, image_tree, require_tool, Env};
use crate::registries::{
    count, http, registries_config, sha256, skopeo_raw, Auth, FaultProxy, Registry, TokenServer,
};

/// Builds `name` FROM scratch: a few files, one of `big` random bytes (incompressible).
fn build_image(env: &Env, name: &str, big: usize, marker: &str) {
    use rand_bytes::fill;
    let ctx = format!("ctx-{}", name.replace(['/', ':', '.'], "_"));
    env.write(&format!("{ctx}/marker.txt"), marker);
    env.write(&format!("{ctx}/big.bin"), fill(big, marker));
    env.write(
        &format!("{ctx}/Dockerfile"),
        "FROM scratch\nCOPY marker.txt /etc/marker\nCOPY big.bin /data/big.bin\nENV HELLO=world\nCMD [\"/etc/marker\"]\n",
    );
    env.ok(&["build", "-q", "-t", name, env.path(&ctx).to_str().unwrap()]);
}

mod rand_bytes {
    /// Deterministic incompressible bytes (a xorshift stream seeded by `seed`).
    pub fn fill(n: usize, seed: &str) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15
            ^ seed
                .bytes()
                .fold(0u64, |a, b| a.rotate_left(5) ^ u64::from(b));
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
}

fn inspect_json(env: &Env, name: &str) -> serde_json::Value {
    let out = env.ok(&["inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    v[0].clone()
}

fn manifest_digest(host: &str, repo: &str, tag: &str) -> String {
    sha256(&skopeo_raw(&format!("{host}/{repo}:{tag}")))
}

#[test]
fn push_then_pull_round_trips_through_a_plain_registry_and_skopeo_agrees() {
    let reg = Registry::plain();
    let proxy = FaultProxy::start(&reg.host);
    let env = Env::new();
    let name = format!("{}/team/app:1", proxy.host);
    build_image(&env, &name, 300_000, "one");
    let out = env.kiln().args(["push", &name]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("The push refers to repository ["),
        "{stderr}"
    );
    assert!(stderr.contains(": Pushed"), "{stderr}");
    let pushed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let digest = manifest_digest(&reg.host, "team/app", "1");
    assert_eq!(pushed, format!("{}/team/app@{digest}", proxy.host));
    assert!(
        stderr.contains(&format!("1: digest: {digest} size: ")),
        "{stderr}"
    );
    // The local image now carries the registry digest.
    let info = inspect_json(&env, &name);
    assert_eq!(
        info["RepoDigests"][0].as_str().unwrap(),
        format!("{}/team/app@{digest}", proxy.host)
    );
    let listed = env.ok(&["images", "--digests"]);
    assert!(listed.contains(&digest), "{listed}");
    // skopeo reads the image back (an OCI layout with the same manifest).
    let oci = env.path("oci");
    let st = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/app:1", reg.host))
        .arg(format!("oci:{}:x", oci.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    // A second push uploads no layer bytes and compresses nothing.
    let before = proxy.with(|f| f.upload_bytes);
    let blobs_before = std::fs::read_dir(env.root().join("blobs/sha256"))
        .unwrap()
        .count();
    let stderr = env.ok_stderr(&["push", &name]);
    assert_eq!(
        stderr.matches("Layer already exists").count(),
        2,
        "{stderr}"
    );
    assert_eq!(
        proxy.with(|f| f.upload_bytes),
        before,
        "re-push uploaded bytes"
    );
    let blobs_after = std::fs::read_dir(env.root().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs_before, blobs_after);

    // A fresh store pulls it back: same manifest digest, same files.
    let env2 = Env::new();
    let out = env2.kiln().args(["pull", &name]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1: Pulling from team/app"), "{stderr}");
    assert!(stderr.contains(": Pull complete"), "{stderr}");
    assert!(stderr.contains(&format!("Digest: {digest}")), "{stderr}");
    assert!(
        stderr.contains(&format!("Status: Downloaded newer image for {name}")),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    assert_eq!(
        image_tree(&env.root(), &name),
        image_tree(&env2.root(), &name)
    );
    assert_eq!(
        inspect_json(&env, &name)["Id"],
        inspect_json(&env2, &name)["Id"]
    );
    // By digest too, and then the second pull of the tag is up to date with no manifest GET.
    env2.ok(&["pull", &format!("{}/team/app@{digest}", proxy.host)]);
    let gets = proxy.with(|f| count(&f.requests, "GET", "/manifests/"));
    let out = env2.kiln().args(["pull", &name]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Status: Image is up to date for"),
        "{stderr}"
    );
    assert!(stderr.contains(": Already exists"), "{stderr}");
    assert_eq!(
        proxy.with(|f| count(&f.requests, "GET", "/manifests/")),
        gets
    );
    // `-q` prints only the name; a missing tag is one clear line.
    assert_eq!(env2.ok(&["pull", "-q", &name]).trim(), name);
    // `--all-tags` pulls every tag of the repository.
    let two = format!("{}/team/app:2", proxy.host);
    env.ok(&["tag", &name, &two]);
    env.ok(&["push", &two]);
    let env3 = Env::new();
    env3.ok(&["pull", "-a", &format!("{}/team/app", proxy.host)]);
    let listed = env3.ok(&["images", "--format", "json"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(env3.fails(&["pull", "-a", &name], 1).contains("--all-tags"));
    let err = env2.fails(&["pull", &format!("{}/team/app:nope", proxy.host)], 1);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn an_image_skopeo_put_in_a_registry_pulls_with_the_same_digest_and_docker_media_types() {
    require_tool("skopeo");
    let reg = Registry::plain();
    let env = Env::new();
    build_image(&env, "local/src:1", 1000, "src");
    let archive = env.path("src.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), "local/src:1"]);
    // docker-archive → registry gives Docker schema 2 media types, gzip layers.
    let st = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("docker://{}/from/skopeo:v1", reg.host))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let raw = skopeo_raw(&format!("{}/from/skopeo:v1", reg.host));
    assert!(String::from_utf8_lossy(&raw)
        .contains("application/vnd.docker.distribution.manifest.v2+json"));
    let env2 = Env::new();
    let name = format!("{}/from/skopeo:v1", reg.host);
    env2.ok(&["pull", &name]);
    let info = inspect_json(&env2, &name);
    assert_eq!(
        info["RepoDigests"][0].as_str().unwrap(),
        format!("{}/from/skopeo@{}", reg.host, sha256(&raw))
    );
    assert_eq!(info["Id"], inspect_json(&env, "local/src:1")["Id"]);
    assert_eq!(
        image_tree(&env.root(), "local/src:1"),
        image_tree(&env2.root(), &name)
    );
}

#[test]
fn a_multi_platform_index_yields_this_platform_and_skips_attestations() {
    let reg = Registry::plain();
    let env = Env::new();
    let name = format!("{}/multi/app:amd", reg.host);
    build_image(&env, &name, 1000, "amd");
    env.ok(&["push", &name]);
    let amd_raw = skopeo_raw(&name);
    let amd: serde_json::Value = serde_json::from_slice(&amd_raw).unwrap();
    // An arm64 variant: the same layers, a config that says arm64.
    let mut cfg = get_blob_json(&reg.host, "multi/app", &amd["config"]["digest"]);
    cfg["architecture"] = "arm64".into();
    cfg["variant"] = "v8".into();
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    put_blob(&reg.host, "multi/app", &cfg_bytes);
    let mut arm = amd.clone();
    arm["config"]["digest"] = sha256(&cfg_bytes).into();
    arm["config"]["size"] = cfg_bytes.len().into();
    let arm_bytes = serde_json::to_vec(&arm).unwrap();
    put_manifest(
        &reg.host,
        "multi/app",
        &sha256(&arm_bytes),
        &arm_bytes,
        "application/vnd.oci.image.manifest.v1+json",
    );
    // An attestation manifest, as BuildKit writes them.
    let att_cfg = b"{}".to_vec();
    put_blob(&reg.host, "multi/app", &att_cfg);
    let att = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.in-toto+json", "digest": sha256(&att_cfg), "size": att_cfg.len()},
        "layers": []
    });
    let att_bytes = serde_json::to_vec(&att).unwrap();
    put_manifest(
        &reg.host,
        "multi/app",
        &sha256(&att_bytes),
        &att_bytes,
        "application/vnd.oci.image.manifest.v1+json",
    );
    let desc = |bytes: &[u8], arch: &str, variant: &str| {
        let mut p = serde_json::json!({"architecture": arch, "os": if arch == "unknown" {"unknown"} else {"linux"}});
        if !variant.is_empty() {
            p["variant"] = variant.into();
        }
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(bytes), "size": bytes.len(), "platform": p
        })
    };
    let mut att_desc = desc(&att_bytes, "unknown", "");
    att_desc["annotations"] = serde_json::json!({
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": sha256(&amd_raw)
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [att_desc, desc(&arm_bytes, "arm64", "v8"), desc(&amd_raw, "amd64", "")]
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    put_manifest(
        &reg.host,
        "multi/app",
        "all",
        &index_bytes,
        "application/vnd.oci.image.index.v1+json",
    );

    let env2 = Env::new();
    let all = format!("{}/multi/app:all", reg.host);
    env2.ok(&["pull", &all]);
    let info = inspect_json(&env2, &all);
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Id"], inspect_json(&env, &name)["Id"]);
    // docker keeps the index digest as the repo digest.
    assert_eq!(
        info["RepoDigests"][0].as_str().unwrap(),
        format!("{}/multi/app@{}", reg.host, sha256(&index_bytes))
    );
    // Pushed elsewhere, it goes as its platform's manifest, and the new tag's repo digest is
    // that manifest's (docker pushes one platform too).
    let copy = format!("{}/multi/copy:1", reg.host);
    env2.ok(&["tag", &all, &copy]);
    env2.ok(&["push", &copy]);
    assert_eq!(sha256(&skopeo_raw(&copy)), sha256(&amd_raw));
    assert_eq!(
        inspect_json(&env2, &copy)["RepoDigests"][0]
            .as_str()
            .unwrap(),
        format!("{}/multi/copy@{}", reg.host, sha256(&amd_raw))
    );
    let env3 = Env::new();
    env3.ok(&["pull", "--platform", "linux/arm64", &all]);
    assert_eq!(inspect_json(&env3, &all)["Architecture"], "arm64");
    let err = env3.fails(&["pull", "--platform", "linux/s390x", &all], 1);
    assert!(
        err.contains("no matching manifest for linux/s390x"),
        "{err}"
    );
}

/// A JSON blob of `repo` in the registry at `host`.
fn get_blob_json(host: &str, repo: &str, digest: &serde_json::Value) -> serde_json::Value {
    let digest = digest.as_str().unwrap();
    let (_, _, bytes) = http("GET", host, &format!("/v2/{repo}/blobs/{digest}"), &[], b"");
    serde_json::from_slice(&bytes).unwrap()
}

fn put_blob(host: &str, repo: &str, bytes: &[u8]) {
    let (st, h, _) = http(
        "POST",
        host,
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(st, 202);
    let loc = h.get("location").unwrap().to_owned();
    let path = loc
        .split_once(host)
        .map_or(loc.clone(), |(_, p)| p.to_owned());
    let sep = if path.contains('?') { '&' } else { '?' };
    let (st, _, body) = http(
        "PUT",
        host,
        &format!("{path}{sep}digest={}", sha256(bytes)),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
}

fn put_manifest(host: &str, repo: &str, reference: &str, bytes: &[u8], mt: &str) {
    let (st, _, body) = http(
        "PUT",
        host,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", mt)],
        bytes,
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn bearer_tokens_carry_the_scopes_the_registry_asks_for() {
    let tokens = TokenServer::start();
    let reg = Registry::start(Auth::Silly(tokens.realm.clone()), None);
    let env = Env::new();
    let a = format!("{}/team/a:1", reg.host);
    build_image(&env, &a, 2000, "bearer");
    env.ok(&["push", &a]);
    let reqs = tokens.requests();
    assert!(!reqs.is_empty());
    assert!(reqs
        .iter()
        .all(|r| r.service.as_deref() == Some("kiln-test-registry")));
    assert!(
        reqs.iter()
            .any(|r| r.scopes == ["repository:team/a:pull,push"]),
        "{reqs:?}"
    );
    // Tokens are reused: one per scope set, not one per request.
    assert!(reqs.len() <= 2, "{reqs:?}");
    // A push to another repository of the same registry mounts the layers, with a token
    // that may also pull from the source.
    let b = format!("{}/team/b:1", reg.host);
    env.ok(&["tag", &a, &b]);
    let stderr = env.ok_stderr(&["push", &b]);
    assert!(stderr.contains("Mounted from team/a"), "{stderr}");
    let reqs = tokens.requests();
    assert!(
        reqs.iter()
            .any(|r| r.scopes == ["repository:team/a:pull", "repository:team/b:pull,push"]),
        "{reqs:?}"
    );
    // An anonymous pull gets a pull-only token, without credentials.
    let env2 = Env::new();
    let n = tokens.requests().len();
    env2.ok(&["pull", &b]);
    let reqs = tokens.requests();
    let new = &reqs[n..];
    assert!(!new.is_empty());
    assert!(
        new.iter()
            .all(|r| r.scopes == ["repository:team/b:pull"] && r.basic_user.is_none()),
        "{new:?}"
    );
    assert_eq!(image_tree(&env.root(), &a), image_tree(&env2.root(), &b));
    // With a login, the token request carries the account and Basic credentials; the
    // registry's refresh token is kept as an identity token and used next time (OAuth2).
    let out = env2
        .kiln()
        .args(["login", "-u", "alice", "--password-stdin", &reg.host])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"pw\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Login Succeeded"
    );
    let cfg = std::fs::read_to_string(env2.path("docker-config/config.json")).unwrap();
    assert!(cfg.contains("identitytoken"), "{cfg}");
    assert!(!cfg.contains("pw"), "{cfg}");
    let last = tokens.requests().last().cloned().unwrap();
    assert_eq!(last.basic_user.as_deref(), Some("alice"));
    assert_eq!(last.account.as_deref(), Some("alice"));
    env2.ok(&["rmi", &b]);
    env2.ok(&["pull", &b]);
    let last = tokens.requests().last().cloned().unwrap();
    assert_eq!(last.method, "POST");
    assert_eq!(last.grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(
        env2.ok(&["logout", &reg.host]).trim(),
        format!("Removing login credentials for {}", reg.host)
    );
    let cfg = std::fs::read_to_string(env2.path("docker-config/config.json")).unwrap();
    assert!(!cfg.contains("identitytoken"), "{cfg}");
}

#[test]
fn tls_with_htpasswd_needs_the_ca_and_the_password() {
    let reg = Registry::start(Auth::Htpasswd("bob", "s3cret"), None);
    // This machine's own address: not loopback, so TLS must verify.
    let host = reg.external_host();
    let with_ca = |env: &Env, ca: &std::path::Path| {
        registries_config(
            env,
            &format!(
                "[[registry]]\nhost = \"{host}\"\nca = \"{}\"\n",
                ca.display()
            ),
        );
    };
    let login = |env: &Env, pass: &str| {
        env.kiln()
            .args(["login", "-u", "bob", "-p", pass, &host])
            .output()
            .unwrap()
    };
    let env = Env::new();
    // Without the CA: refused, and nothing falls back to plain HTTP.
    let out = login(&env, "s3cret");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("https://") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    with_ca(&env, &reg.cert());
    let out = login(&env, "wrong");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");
    let out = login(&env, "s3cret");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = std::fs::read_to_string(env.path("docker-config/config.json")).unwrap();
    assert!(cfg.contains(&host) && cfg.contains("\"auth\""), "{cfg}");
    let name = format!("{host}/bob/app:1");
    build_image(&env, &name, 1000, "tls");
    env.ok(&["push", &name]);
    // Another user: without credentials, refused; with them, the image.
    let env2 = Env::new();
    with_ca(&env2, &reg.cert());
    let err = env2.fails(&["pull", &name], 1);
    assert!(err.contains("unauthorized"), "{err}");
    std::fs::create_dir_all(env2.path("docker-config")).unwrap();
    std::fs::copy(
        env.path("docker-config/config.json"),
        env2.path("docker-config/config.json"),
    )
    .unwrap();
    env2.ok(&["pull", &name]);
    assert_eq!(
        image_tree(&env.root(), &name),
        image_tree(&env2.root(), &name)
    );
    // A CA that is not the registry's: the handshake fails.
    let other = Registry::start(Auth::Htpasswd("x", "y"), None);
    let env3 = Env::new();
    with_ca(&env3, &other.cert());
    std::fs::create_dir_all(env3.path("docker-config")).unwrap();
    std::fs::copy(
        env.path("docker-config/config.json"),
        env3.path("docker-config/config.json"),
    )
    .unwrap();
    let err = env3.fails(&["pull", &name], 1);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn from_debian_pulls_through_a_mirror_and_pull_policies_hold() {
    let upstream = Registry::plain();
    let mirror = Registry::start(Auth::None, Some(&upstream.host));
    let seed = Env::new();
    debian_base(&seed);
    let up_name = format!("{}/library/debian:bookworm", upstream.host);
    seed.ok(&["tag", "debian:bookworm", &up_name]);
    seed.ok(&["push", &up_name]);

    let env = Env::new();
    registries_config(
        &env,
        &format!(
            "[[registry]]\nhost = \"docker.io\"\nmirrors = [\"{}\"]\n",
            mirror.host
        ),
    );
    env.write("ctx/a.txt", "hello\n");
    env.write(
        "ctx/Dockerfile",
        "FROM debian:bookworm\nCOPY a.txt /a.txt\n",
    );
    let ctx = env.path("ctx");
    let stderr = env.ok_stderr(&["build", "-t", "t:1", ctx.to_str().unwrap()]);
    assert!(
        stderr.contains("bookworm: Pulling from library/debian"),
        "{stderr}"
    );
    let tree = image_tree(&env.root(), "t:1");
    assert!(tree.contains_key("etc/debian_version"));
    assert!(tree.contains_key("a.txt"));
    let info = inspect_json(&env, "debian:bookworm");
    let digest = manifest_digest(&upstream.host, "library/debian", "bookworm");
    assert_eq!(
        info["RepoDigests"][0].as_str().unwrap(),
        format!("debian@{digest}")
    );

    // --pull=never with a missing image fails clearly; with the image, it is used.
    let env2 = Env::new();
    env2.write("ctx/Dockerfile", "FROM debian:bookworm\n");
    let err = env2.fails(
        &["build", "--pull=never", env2.path("ctx").to_str().unwrap()],
        1,
    );
    assert!(err.contains("--pull=never"), "{err}");

    // A rebuild hits the cache; after the tag moves upstream, `--pull` re-resolves it and
    // the cache misses from FROM down.
    let out = env
        .kiln()
        .args(["build", "-t", "t:1", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Using cache"), "{stderr}");
    assert!(!stderr.contains("Pulling from"), "{stderr}");
    seed.write("ctx/Dockerfile", "FROM debian:bookworm\nENV MOVED=1\n");
    seed.ok(&["build", "-t", &up_name, seed.path("ctx").to_str().unwrap()]);
    seed.ok(&["push", &up_name]);
    // The mirror caches manifests by tag for a while; ask the upstream through the config.
    registries_config(&env, "");
    let env_up = |args: &[&str]| {
        env.kiln()
            .args(args)
            .env("KILN_REGISTRIES_CONFIG", env.path("up.toml"))
            .output()
            .unwrap()
    };
    env.write(
        "up.toml",
        format!(
            "[[registry]]\nhost = \"docker.io\"\nmirrors = [\"{}\"]\n",
            upstream.host
        ),
    );
    let out = env_up(&["build", "--pull", "-t", "t:2", ctx.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Downloaded newer image for debian:bookworm"),
        "{stderr}"
    );
    assert!(!stderr.contains("Using cache"), "{stderr}");
    let env_t2 = inspect_json(&env, "t:2")["Config"]["Env"].to_string();
    assert!(env_t2.contains("MOVED=1"), "{env_t2}");
}

#[test]
fn run_pulls_a_missing_image_first() {
    let reg = Registry::plain();
    let env = Env::new();
    let name = format!("{}/run/me:1", reg.host);
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY --chmod=0755 <<'EOF' /hello\n#!/nothing\nEOF\n",
    );
    env.ok(&[
        "build",
        "-q",
        "-t",
        &name,
        env.path("ctx").to_str().unwrap(),
    ]);
    env.ok(&["push", &name]);
    let env2 = Env::new();
    let out = env2
        .kiln()
        .args(["run", "--rm", &name, "/hello"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("Unable to find image '{name}' locally\n")),
        "{stderr}"
    );
    assert!(stderr.contains("Pull complete"), "{stderr}");
    assert!(env2.ok(&["images", "-q"]).trim().len() == 12);
    let out = env2
        .kiln()
        .args([
            "run",
            "--rm",
            "--pull=never",
            &format!("{}/run/other:1", reg.host),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    // COPY --from=IMAGE pulls the image it names, too.
    let env3 = Env::new();
    env3.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nCOPY --from={name} /hello /copied\n"),
    );
    let stderr = env3.ok_stderr(&["build", "-t", "c:1", env3.path("ctx").to_str().unwrap()]);
    assert!(stderr.contains("Pulling from run/me"), "{stderr}");
    assert_eq!(
        image_tree(&env3.root(), "c:1")["copied"].content,
        b"#!/nothing\n".to_vec()
    );
    // So does RUN --mount=type=bind,from=IMAGE.
    let env4 = Env::new();
    env4.write(
        "ctx/Dockerfile",
        format!(
            "FROM scratch\nRUN --mount=type=bind,from={name},target=/img cat /img/hello > /got\n"
        ),
    );
    let stderr = env4.ok_stderr(&["build", "-t", "m:1", env4.path("ctx").to_str().unwrap()]);
    assert!(stderr.contains("Pulling from run/me"), "{stderr}");
    assert_eq!(
        image_tree(&env4.root(), "m:1")["got"].content,
        b"#!/nothing\n".to_vec()
    );
}

#[test]
fn zstd_and_gzip_layers_both_pull_and_push_compresses_once() {
    let reg = Registry::plain();
    let env = Env::new();
    let z = format!("{}/comp/z:1", reg.host);
    build_image(&env, &z, 100_000, "zstd");
    let out = env
        .kiln()
        .args(["push", "--compression", "zstd", &z])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = String::from_utf8_lossy(&skopeo_raw(&z)).into_owned();
    assert!(raw.contains("tar+zstd"), "{raw}");
    let g = format!("{}/comp/g:1", reg.host);
    env.ok(&["tag", &z, &g]);
    env.ok(&["push", &g]);
    let raw = String::from_utf8_lossy(&skopeo_raw(&g)).into_owned();
    // The layers kept their zstd compression: pushing again compresses nothing.
    assert!(raw.contains("tar+zstd"), "{raw}");
    let env2 = Env::new();
    env2.ok(&["pull", &z]);
    assert_eq!(image_tree(&env.root(), &z), image_tree(&env2.root(), &z));
    let gz = format!("{}/comp/gz:1", reg.host);
    build_image(&env2, &gz, 100_000, "gzip");
    env2.ok(&["push", &gz]);
    assert!(String::from_utf8_lossy(&skopeo_raw(&gz)).contains("tar+gzip"));
    let env3 = Env::new();
    env3.ok(&["pull", &gz]);
    assert_eq!(image_tree(&env2.root(), &gz), image_tree(&env3.root(), &gz));
}

/// A registry behind the fault proxy, with Bearer auth, and an image of `big` bytes in it.
fn faulty(big: usize) -> (TokenServer, Registry, FaultProxy, String, Env) {
    let tokens = TokenServer::start();
    let reg = Registry::start(Auth::Silly(tokens.realm.clone()), None);
    let proxy = FaultProxy::start(&reg.host);
    let env = Env::new();
    let name = format!("{}/flaky/app:1", proxy.host);
    build_image(&env, &name, big, "faults");
    env.ok(&["push", &name]);
    (tokens, reg, proxy, name, env)
}

#[test]
fn pulls_survive_expired_tokens_rate_limits_and_server_errors() {
    let (tokens, _reg, proxy, name, src) = faulty(50_000);
    let env = Env::new();
    // A challenge that asks for one more scope than kiln did.
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"kiln-test-registry\",scope=\"repository:flaky/app:pull repository:flaky/other:pull\",error=\"insufficient_scope\"",
        tokens.realm
    );
    proxy.with(|f| {
        f.unauthorized_once = Some(challenge);
        f.too_many_once = Some(1);
        f.unavailable = 2;
    });
    let n = tokens.requests().len();
    let t = Instant::now();
    env.ok(&["pull", &name]);
    assert!(
        t.elapsed().as_millis() >= 1000,
        "Retry-After was not honoured"
    );
    // The 401 made kiln fetch a new token, with the scope the challenge added.
    assert!(
        tokens.requests()[n..]
            .iter()
            .any(|r| r.scopes == ["repository:flaky/app:pull", "repository:flaky/other:pull"]),
        "{:?}",
        tokens.requests()
    );
    assert_eq!(
        image_tree(&src.root(), &name),
        image_tree(&env.root(), &name)
    );
}

#[test]
fn a_reset_mid_blob_resumes_and_downloads_almost_nothing_twice() {
    let size = 4 << 20;
    let (_t, _r, proxy, name, src) = faulty(size);
    let env = Env::new();
    proxy.with(|f| {
        f.reset_blob_after = Some((size / 2) as u64);
        f.blob_bytes = 0;
    });
    let out = env.kiln().args(["pull", &name]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest_via(&proxy, "flaky/app", "1")).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let layer_sizes: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    let big = layers
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = proxy.with(|f| f.blob_bytes);
    // Everything once (configs included), plus at most 1% again.
    assert!(
        got <= layer_sizes + 4096 + layer_sizes / 100,
        "downloaded {got} for {layer_sizes}"
    );
    let gets = proxy.with(|f| count(&f.requests, "GET", &big));
    assert_eq!(gets, 2, "one GET and one resume of the big layer");
    assert_eq!(
        image_tree(&src.root(), &name),
        image_tree(&env.root(), &name)
    );

    // A server that ignores Range: the resume starts over, and the pull still succeeds.
    let env2 = Env::new();
    proxy.with(|f| {
        f.reset_blob_after = Some((size / 2) as u64);
        f.ignore_range = true;
    });
    env2.ok(&["pull", &name]);
    assert_eq!(
        image_tree(&src.root(), &name),
        image_tree(&env2.root(), &name)
    );
}

fn manifest_via(proxy: &FaultProxy, repo: &str, tag: &str) -> Vec<u8> {
    let (st, _, body) = http(
        "GET",
        &proxy.host,
        &format!("/v2/{repo}/manifests/{tag}"),
        &[
            ("Accept", "application/vnd.oci.image.manifest.v1+json"),
            // `silly` auth takes any bearer token.
            ("Authorization", "Bearer test"),
        ],
        b"",
    );
    assert_eq!(st, 200);
    body
}

#[test]
fn a_flipped_byte_stores_nothing_and_redirects_carry_no_credentials() {
    let (_t, _r, proxy, name, src) = faulty(200_000);
    let env = Env::new();
    proxy.with(|f| f.flip_byte = true);
    let err = env.fails(&["pull", &name], 1);
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(env.ok(&["images", "-q"]).trim().is_empty());
    // The damaged layer was not kept (the verified manifest and config may be).
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest_via(&proxy, "flaky/app", "1")).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        if l["size"].as_u64().unwrap() > 64 << 10 {
            assert!(!env.root().join("blobs/sha256").join(hex).exists());
        }
    }
    let fsck = env.ok(&["fsck"]);
    assert!(!fsck.contains("corrupt"), "{fsck}");

    // Blobs redirected to another host are fetched there without kiln's credentials.
    proxy.with(|f| {
        f.redirect_blobs = true;
        f.foreign_auth.clear();
    });
    env.ok(&["pull", &name]);
    let seen = proxy.with(|f| f.foreign_auth.clone());
    assert!(!seen.is_empty(), "no request reached the other host");
    assert!(
        seen.iter().all(|a| !a),
        "credentials went to another host: {seen:?}"
    );
    assert_eq!(
        image_tree(&src.root(), &name),
        image_tree(&env.root(), &name)
    );
}

#[test]
fn a_layer_that_is_not_the_diff_id_its_config_names_never_becomes_that_layers_snapshot() {
    let reg = Registry::plain();
    let env = Env::new();
    // The layer everybody trusts, and an image whose config claims its own layer is that one.
    let one_file_image = |dir: &str, name: &str, content: &str| {
        env.write(
            &format!("{dir}/Dockerfile"),
            "FROM scratch\nCOPY ok.txt /ok.txt\n",
        );
        env.write(&format!("{dir}/ok.txt"), content);
        env.ok(&["build", "-q", "-t", name, env.path(dir).to_str().unwrap()]);
        env.ok(&["push", name]);
    };
    let good = format!("{}/trusted/base:1", reg.host);
    one_file_image("good", &good, "trusted\n");
    let evil = format!("{}/evil/base:1", reg.host);
    one_file_image("evil", &evil, "poisoned\n");
    let good_diff = inspect_json(&env, &good)["RootFS"]["Layers"][0].clone();
    let raw = skopeo_raw(&evil);
    let mut m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let mut cfg = get_blob_json(&reg.host, "evil/base", &m["config"]["digest"]);
    cfg["rootfs"]["diff_ids"][0] = good_diff;
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    put_blob(&reg.host, "evil/base", &cfg_bytes);
    m["config"]["digest"] = sha256(&cfg_bytes).into();
    m["config"]["size"] = cfg_bytes.len().into();
    let m_bytes = serde_json::to_vec(&m).unwrap();
    put_manifest(
        &reg.host,
        "evil/base",
        "lying",
        &m_bytes,
        m["mediaType"].as_str().unwrap(),
    );

    let victim = Env::new();
    victim.write(
        "ctx/Dockerfile",
        format!("FROM {}/evil/base:lying\nCOPY x /x\n", reg.host),
    );
    victim.write("ctx/x", "x");
    let err = victim.fails(&["build", victim.path("ctx").to_str().unwrap()], 1);
    assert!(err.contains("does not hold the layer"), "{err}");
    victim.write("ctx2/Dockerfile", format!("FROM {good}\nCOPY x /x\n"));
    victim.write("ctx2/x", "x");
    victim.ok(&[
        "build",
        "-q",
        "-t",
        "after:1",
        victim.path("ctx2").to_str().unwrap(),
    ]);
    let tree = image_tree(&victim.root(), "after:1");
    assert_eq!(tree["ok.txt"].content, b"trusted\n".to_vec());
}

#[test]
fn docker_pulls_and_runs_what_kiln_pushed() {
    require_tool("gcc");
    let reg = Registry::plain();
    let env = Env::new();
    let src = env.write(
        "ctx/hello.c",
        "#include <unistd.h>\nint main(void){static const char m[]=\"pushed by kiln\\n\";return write(1,m,sizeof m-1)<0;}\n",
    );
    let st = Command::new("gcc")
        .args(["-static", "-Os", "-o"])
        .arg(env.path("ctx/hello"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    // More than one 4 MiB piece: the layer is several gzip members, which docker must read
    // as one stream (it checks the diff ID while it unpacks).
    let text: String = (0..400_000).map(|i| format!("line {i}\n")).collect();
    env.write("ctx/big.txt", text);
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY hello /hello\nCOPY big.txt /big.txt\nCMD [\"/hello\"]\n",
    );
    env.write("ctx/.dockerignore", "*.c\n");
    let name = format!("{}/interop/hello:1", reg.host);
    env.ok(&[
        "build",
        "-q",
        "-t",
        &name,
        env.path("ctx").to_str().unwrap(),
    ]);
    env.ok(&["push", &name]);
    let d = crate::consumers::Dockerd::start();
    let out = d.docker().args(["pull", &name]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d
        .docker()
        .args(["run", "--rm", "--network", "none", &name])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pushed by kiln\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d
        .docker()
        .args(["image", "inspect", "-f", "{{json .RootFS.Layers}}", &name])
        .output()
        .unwrap();
    let docker_layers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(docker_layers, inspect_json(&env, &name)["RootFS"]["Layers"]);
}

#[test]
fn a_registry_that_refuses_a_large_patch_gets_the_blob_in_chunks() {
    let reg = Registry::plain();
    let proxy = FaultProxy::start(&reg.host);
    proxy.with(|f| f.patch_limit = Some(4 << 20));
    let env = Env::new();
    let name = format!("{}/chunks/app:1", proxy.host);
    build_image(&env, &name, 9 << 20, "chunks");
    let out = env.kiln().args(["push", &name]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chunks = proxy.with(|f| f.chunks.clone());
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert_eq!(chunks[0], "0-4194303");
    let env2 = Env::new();
    env2.ok(&["pull", &name]);
    assert_eq!(
        image_tree(&env.root(), &name),
        image_tree(&env2.root(), &name)
    );
}

#[test]
fn credential_helpers_mirror_fallback_and_insecure_hosts_work_as_configured() {
    use std::os::unix::fs::PermissionsExt;
    let tokens = TokenServer::start();
    let reg = Registry::start(Auth::Silly(tokens.realm.clone()), None);
    let env = Env::new();
    let name = format!("{}/helped/app:1", reg.host);
    build_image(&env, &name, 1000, "helper");
    env.ok(&["push", &name]);
    // A docker-credential helper, as docker runs them: `get` reads the server on stdin.
    let store_file = env.path("helper-store.json");
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\nget) read url; if [ \"$url\" = \"{host}\" ]; then printf '{{\"ServerURL\":\"%s\",\"Username\":\"helperuser\",\"Secret\":\"helperpass\"}}' \"$url\"; else echo 'credentials not found in native keychain'; exit 1; fi;;\nstore) cat > {store};;\nerase) rm -f {store};;\nesac\n",
        host = reg.host,
        store = store_file.display()
    );
    let helper = env.write("bin/docker-credential-kilntest", script);
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        env.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env2 = Env::new();
    env2.write(
        "docker-config/config.json",
        format!("{{\"credHelpers\":{{\"{}\":\"kilntest\"}}}}", reg.host),
    );
    let n = tokens.requests().len();
    let out = env2
        .kiln()
        .args(["pull", &name])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tokens.requests()[n..]
            .iter()
            .all(|r| r.basic_user.as_deref() == Some("helperuser")),
        "{:?}",
        tokens.requests()
    );
    // `kiln login` stores through `credsStore`, and the config lists the registry.
    env2.write("docker-config/config.json", "{\"credsStore\":\"kilntest\"}");
    let out = env2
        .kiln()
        .args(["login", "-u", "alice", "-p", "pw", &reg.host])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = std::fs::read_to_string(&store_file).unwrap();
    assert!(
        stored.contains("\"Username\":\"<token>\"") || stored.contains("alice"),
        "{stored}"
    );
    let cfg = std::fs::read_to_string(env2.path("docker-config/config.json")).unwrap();
    assert!(cfg.contains(&reg.host) && !cfg.contains("pw"), "{cfg}");

    // A mirror that is down is skipped.
    let plain = Registry::plain_everywhere();
    let pname = format!("{}/mirrored/app:1", plain.host);
    env.ok(&["tag", &name, &pname]);
    env.ok(&["push", &pname]);
    let env3 = Env::new();
    let dead = format!("127.0.0.1:{}", crate::registries::free_port("127.0.0.1"));
    registries_config(
        &env3,
        &format!(
            "[[registry]]\nhost = \"{}\"\nmirrors = [\"{dead}\"]\n",
            plain.host
        ),
    );
    env3.ok(&["pull", &pname]);

    // Plain HTTP on an address that is not loopback needs `insecure = true`.
    let ext = format!("{}/mirrored/app:1", plain.external_host());
    let env4 = Env::new();
    let err = env4.fails(&["pull", &ext], 1);
    assert!(err.contains("https://"), "{err}");
    registries_config(
        &env4,
        &format!(
            "[[registry]]\nhost = \"{}\"\ninsecure = true\n",
            plain.external_host()
        ),
    );
    env4.ok(&["pull", &ext]);
}

#[test]
fn build_pushes_writes_archives_and_metadata_as_buildx_does() {
    let reg = Registry::plain();
    let env = Env::new();
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY a /a\n");
    env.write("ctx/a", "pushed by build\n");
    let name = format!("{}/built/app:1", reg.host);
    let ctx = env.path("ctx");
    let meta = env.path("meta.json");
    let oci = env.path("out.tar");
    let out = env
        .kiln()
        .args(["build", "--push", "-t", &name, "--metadata-file"])
        .arg(&meta)
        .arg("--output")
        .arg(format!("type=oci,dest={}", oci.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1: digest: sha256:"), "{stderr}");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let pushed = sha256(&skopeo_raw(&name));
    assert_eq!(meta["containerimage.digest"], pushed);
    assert_eq!(
        meta["containerimage.config.digest"],
        inspect_json(&env, &name)["Id"]
    );
    assert_eq!(meta["image.name"], format!("{name}"));
    // The archive is an OCI layout skopeo reads, holding the same image.
    let st = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", oci.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(m["config"]["digest"], inspect_json(&env, &name)["Id"]);
    // Pushing needs a tag; outputs kiln does not write are refused, not ignored.
    let err = env.fails(&["build", "--push", ctx.to_str().unwrap()], 1);
    assert!(err.contains("tag is needed"), "{err}");
    // The image's files: into an empty folder (`-o DIR`), or as one tar.
    env.write("ctx/sub/b", "deeper\n");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY a /a\nCOPY sub /sub\nRUN rm /a\n",
    );
    env.ok(&["build", "-q", "-o", "outdir", ctx.to_str().unwrap()]);
    let outdir = env.path("outdir");
    assert_eq!(std::fs::read(outdir.join("sub/b")).unwrap(), b"deeper\n");
    assert!(
        !outdir.join("a").exists(),
        "a file the image deleted was exported"
    );
    let err = env.fails(
        &[
            "build",
            "-o",
            "type=local,dest=outdir",
            ctx.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("not empty"), "{err}");
    env.ok(&[
        "build",
        "-q",
        "-o",
        "type=tar,dest=files.tar",
        ctx.to_str().unwrap(),
    ]);
    let listed = Command::new("tar")
        .arg("-tf")
        .arg(env.path("files.tar"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains("sub/b") && !listed.lines().any(|l| l == "a") && !listed.contains(".wh."),
        "{listed}"
    );
    let err = env.fails(&["build", "-o", "type=nope", ctx.to_str().unwrap()], 1);
    assert!(err.contains("unknown type"), "{err}");
}
