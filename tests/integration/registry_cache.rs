//! `build --cache-to` / `--cache-from`: a store that has never run a step builds the same image
//! from a registry (or OCI layout) cache, running only what changed.

use std::process::Command;

use crate::harness::{debian_base, image_tree, Env};
use crate::registries::{http, Registry};

/// A two-stage Dockerfile: a WASI stage (FROM scratch, kiln's guest shell) and a native one
/// (Debian's dash) with a cache mount.
const DOCKERFILE: &str = "\
FROM scratch AS tools
COPY tool.txt /tool.txt
RUN echo wasi-made > /made.txt
FROM BASE
ARG BUMP=1
RUN --mount=type=cache,target=/cache,id=shared sh -c 'echo run >> /cache/log; cp /cache/log /seen'
COPY --from=tools /made.txt /tool.txt /opt/
COPY app.txt /app.txt
RUN cat /opt/made.txt /app.txt > /both.txt
";

fn running(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with(" ---> Running in"))
        .count()
}

/// An env whose context holds the Dockerfile (FROM `base`) and its files.
fn context(env: &Env, base: &str) -> String {
    env.write("ctx/Dockerfile", DOCKERFILE.replace("BASE", base));
    env.write("ctx/tool.txt", "tool\n");
    env.write("ctx/app.txt", "app v1\n");
    env.path("ctx").to_str().unwrap().to_owned()
}

fn image_id(env: &Env, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
    v[0]["Id"].as_str().unwrap().to_owned()
}

/// The registry's cache index for `repo:tag`.
fn cache_index(host: &str, repo: &str, tag: &str) -> serde_json::Value {
    let (status, _, body) = http(
        "GET",
        host,
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.kiln.cache.v1+json"
    );
    let (status, _, body) = http(
        "GET",
        host,
        &format!(
            "/v2/{repo}/blobs/{}",
            m["config"]["digest"].as_str().unwrap()
        ),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn a_fresh_store_builds_from_the_registry_cache_running_no_step_then_only_what_changed() {
    let reg = Registry::plain();
    let host = reg.host.clone();
    let base = format!("{host}/base/debian:bookworm");
    let cache = format!("{host}/cache/app:main");

    // The first machine: the base goes to the registry, the build to the cache.
    let a = Env::new();
    debian_base(&a);
    a.ok(&["tag", "debian:bookworm", &base]);
    a.ok(&["push", "-q", &base]);
    let ctx = context(&a, &base);
    let out = a.ok_stderr(&[
        "build",
        "-t",
        "app",
        "--cache-to",
        &format!("type=registry,ref={cache},mounts=true"),
        &ctx,
    ]);
    assert_eq!(running(&out), 3, "{out}");
    assert!(
        out.contains(&format!("exporting cache to {cache}")),
        "{out}"
    );
    let index = cache_index(&host, "cache/app", "main");
    // mode=max: every step of both stages (7), one cache mount.
    assert_eq!(index["steps"].as_array().unwrap().len(), 7, "{index}");
    assert_eq!(index["mounts"][0]["id"], "shared", "{index}");

    // A second machine that never built anything: every step comes from the cache, the image
    // is the same image, byte for byte.
    let b = Env::new();
    let ctx_b = context(&b, &base);
    let out = b.ok_stderr(&["build", "-t", "app", "--cache-from", &cache, &ctx_b]);
    assert_eq!(running(&out), 0, "{out}");
    assert_eq!(
        out.matches(&format!("Using cache from {cache}")).count(),
        7,
        "{out}"
    );
    assert_eq!(image_id(&b, "app"), image_id(&a, "app"));
    assert_eq!(
        image_tree(&b.root(), "app"),
        image_tree(&a.root(), "app"),
        "the trees differ"
    );
    assert_eq!(
        b.ok(&["run", "--rm", "app", "cat", "/both.txt"]),
        "wasi-made\napp v1\n"
    );
    b.ok(&["fsck"]);

    // A change at the last COPY runs only the steps below it.
    b.write("ctx/app.txt", "app v2\n");
    let out = b.ok_stderr(&["build", "-t", "app", "--cache-from", &cache, &ctx_b]);
    assert_eq!(running(&out), 1, "{out}");
    assert_eq!(
        b.ok(&["run", "--rm", "app", "cat", "/both.txt"]),
        "wasi-made\napp v2\n"
    );

    // A step under the cache mount that runs again finds what the first machine left in it.
    let out = b.ok_stderr(&[
        "build",
        "-t",
        "bumped",
        "--build-arg",
        "BUMP=2",
        "--cache-from",
        &cache,
        &ctx_b,
    ]);
    assert_eq!(running(&out), 2, "{out}");
    assert_eq!(
        b.ok(&["run", "--rm", "bumped", "cat", "/seen"]),
        "run\nrun\n"
    );
}

#[test]
fn mode_min_keeps_the_target_stages_and_a_local_layout_cache_works_offline() {
    let reg = Registry::plain();
    let base = format!("{}/base/debian:bookworm", reg.host);
    let a = Env::new();
    debian_base(&a);
    a.ok(&["tag", "debian:bookworm", &base]);
    let ctx = context(&a, &base);
    let min = format!("{}/cache/app:min", reg.host);
    let layout = a.path("layout");
    a.ok_stderr(&[
        "build",
        "-t",
        "app",
        "--cache-to",
        &format!("type=registry,ref={min},mode=min"),
        "--cache-to",
        &format!("type=local,dest={}", layout.display()),
        &ctx,
    ]);
    // min: the target stage's five steps, not the tools stage's two.
    let index = cache_index(&reg.host, "cache/app", "min");
    assert_eq!(index["steps"].as_array().unwrap().len(), 5, "{index}");

    // The layout is an OCI layout skopeo reads.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", layout.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.kiln.cache.v1+json"
    );

    // Another store with the same base and the layout: nothing runs, same image.
    let b = Env::new();
    debian_base(&b);
    a.ok(&["save", "-o", b.path("base.tar").to_str().unwrap(), &base]);
    b.ok(&["load", "-i", b.path("base.tar").to_str().unwrap()]);
    let ctx_b = context(&b, &base);
    let out = b.ok_stderr(&[
        "build",
        "-t",
        "app",
        "--pull=never",
        "--cache-from",
        &format!("type=local,src={}", layout.display()),
        &ctx_b,
    ]);
    assert_eq!(running(&out), 0, "{out}");
    assert_eq!(image_id(&b, "app"), image_id(&a, "app"));

    // With only the min cache, the tools stage runs again (its WASI step), the rest hits.
    let c = Env::new();
    c.ok(&["load", "-i", b.path("base.tar").to_str().unwrap()]);
    let ctx_c = context(&c, &base);
    let out = c.ok_stderr(&["build", "-t", "app", "--cache-from", &min, &ctx_c]);
    assert_eq!(running(&out), 1, "{out}");
    assert!(out.contains("wasi"), "{out}");
}

#[test]
fn a_missing_or_foreign_cache_is_a_warning_and_unsupported_specs_are_refused() {
    let reg = Registry::plain();
    let env = Env::new();
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY a /a\n");
    env.write("ctx/a", "a\n");
    let ctx = env.path("ctx").to_str().unwrap().to_owned();
    // An image is not a cache; a tag that does not exist is none either: both are warnings.
    let img = format!("{}/plain/image:1", reg.host);
    env.ok(&["build", "-q", "-t", &img, &ctx]);
    env.ok(&["push", "-q", &img]);
    let out = env.ok_stderr(&[
        "build",
        "--cache-from",
        &img,
        "--cache-from",
        &format!("{}/cache/none:x", reg.host),
        &ctx,
    ]);
    assert!(
        out.contains(&format!("cache from {img} is not used"))
            && out.contains("not \"application/vnd.kiln.cache.v1+json\""),
        "{out}"
    );
    assert!(out.contains("cache/none:x is not used"), "{out}");
    for (spec, why) in [
        ("type=gha", "type=gha is not supported"),
        ("type=inline", "type=inline is not supported"),
        (
            "type=registry,ref=x,oci-mediatypes=true",
            "does not support oci-mediatypes=",
        ),
        ("type=registry,ref=x,mode=all", "expected min or max"),
    ] {
        let err = env.fails(&["build", "--cache-to", spec, &ctx], 1);
        assert!(err.contains(why), "{spec}: {err}");
    }
    // An export that fails fails the build, unless ignore-error=true.
    let dead = "127.0.0.1:9/cache/x:y";
    let err = env.fails(&["build", "--cache-to", dead, &ctx], 1);
    assert!(err.contains("export the build cache to"), "{err}");
    let out = env.ok_stderr(&[
        "build",
        "--cache-to",
        &format!("type=registry,ref={dead},ignore-error=true"),
        &ctx,
    ]);
    assert!(out.contains("failed (ignored)"), "{out}");
}

#[test]
fn build_push_uploads_each_layer_while_the_build_goes_on() {
    let reg = Registry::plain();
    let env = Env::new();
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY big.bin /big.bin\nRUN echo made > /made.txt\nCOPY small.txt /small.txt\n",
    );
    env.write("ctx/big.bin", vec![7u8; 3 << 20]);
    env.write("ctx/small.txt", "small\n");
    let name = format!("{}/early/app:1", reg.host);
    let out = env.ok_stderr(&[
        "build",
        "--push",
        "-t",
        &name,
        env.path("ctx").to_str().unwrap(),
    ]);
    // By the time the image is built, its three layers are in the registry: the push at the
    // end finds each there.
    assert_eq!(out.matches("Layer already exists").count(), 3, "{out}");
    assert_eq!(out.matches(": Pushed").count(), 0, "{out}");
    assert!(out.contains("1: digest: sha256:"), "{out}");
}
