//! The real docker CLI pulling, pushing, logging in and building with `--pull` through
//! `kiln serve`, against a Bearer-auth registry on loopback; tenants' egress policies; the
//! server never uses its own user's credentials.

use crate::harness::{image_tree, Env};
use crate::registries::{sha256, skopeo_raw, Auth, Registry, TokenServer};
use crate::serve::Server;

const ALICE: &str = "alice-token-0123456789";
const MALLORY: &str = "mallory-token-0123456789";

fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn docker_pull_push_login_and_build_pull_go_through_kiln_serve_within_each_tenants_policy() {
    use base64::Engine as _;
    let tokens = TokenServer::start();
    let reg = Registry::start(Auth::Silly(tokens.realm.clone()), None);
    // An image to pull, pushed with the CLI.
    let seed = Env::new();
    seed.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY a.txt /a.txt\nENV SEEDED=1\n",
    );
    seed.write("ctx/a.txt", "from the registry\n");
    let seed_name = format!("{}/seed/app:1", reg.host);
    seed.ok(&[
        "build",
        "-q",
        "-t",
        &seed_name,
        seed.path("ctx").to_str().unwrap(),
    ]);
    seed.ok(&["push", &seed_name]);

    let env = Env::new();
    // The server's own user has credentials for the registry: the server must not use them.
    let host_auth = base64::engine::general_purpose::STANDARD.encode("hostuser:hostpass");
    env.write(
        "docker-config/config.json",
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{host_auth}\"}}}}}}",
            reg.host
        ),
    );
    // alice may reach the registry and its token server (a realm passes the same policy).
    let realm_host = tokens
        .realm
        .trim_start_matches("http://")
        .trim_end_matches("/token");
    let cfg = env.write(
        "server.toml",
        format!(
            "[[tenants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\nregistries = [\"*\", \"{}\", \"{realm_host}\"]\n\n[[tenants]]\nname = \"mallory\"\ntoken = \"{MALLORY}\"\n",
            reg.host
        ),
    );
    let sock = env.path("kiln.sock");
    let server = Server::with_config(&env, &cfg, &sock, &[]);

    // docker pull.
    let out = server
        .docker_as(Some(ALICE), &["pull", &seed_name])
        .output()
        .unwrap();
    let text = out_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Pull complete"), "{text}");
    assert!(
        text.contains(&format!("Status: Downloaded newer image for {seed_name}")),
        "{text}"
    );
    let digest = sha256(&skopeo_raw(&seed_name));
    assert!(text.contains(&format!("Digest: {digest}")), "{text}");
    let out = server
        .docker_as(
            Some(ALICE),
            &[
                "image",
                "inspect",
                "-f",
                "{{json .RepoDigests}}",
                &seed_name,
            ],
        )
        .output()
        .unwrap();
    assert!(out_text(&out).contains(&digest), "{}", out_text(&out));
    let alice_root = env.root().join("tenants/alice");
    assert_eq!(
        image_tree(&seed.root(), &seed_name),
        image_tree(&alice_root, &seed_name)
    );
    assert!(
        tokens.requests().iter().all(|r| r.basic_user.is_none()),
        "an anonymous pull sent credentials: {:?}",
        tokens.requests()
    );

    // docker login, then docker push with the credentials the CLI keeps and sends.
    let before_login = tokens.requests().len();
    let out = server
        .docker_as(
            Some(ALICE),
            &["login", "-u", "alice", "-p", "pw", &reg.host],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("Login Succeeded"),
        "{}",
        out_text(&out)
    );
    // The login proved the password to the token server, which answered with a refresh
    // token: docker keeps that as an identity token and sends it from then on.
    assert!(
        tokens.requests()[before_login..]
            .iter()
            .any(|r| r.basic_user.as_deref() == Some("alice")),
        "{:?}",
        tokens.requests()
    );
    let mine = format!("{}/alice/app:1", reg.host);
    let out = server
        .docker_as(Some(ALICE), &["tag", &seed_name, &mine])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    let n = tokens.requests().len();
    let out = server
        .docker_as(Some(ALICE), &["push", &mine])
        .output()
        .unwrap();
    let text = out_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1: digest: sha256:"), "{text}");
    let pushed = tokens.requests()[n..].to_vec();
    assert!(
        pushed
            .iter()
            .any(|r| r.grant_type.as_deref() == Some("refresh_token")
                && r.scopes
                    .contains(&"repository:alice/app:pull,push".to_owned())),
        "{pushed:?}"
    );
    assert_eq!(
        sha256(&skopeo_raw(&mine)),
        digest,
        "the same manifest, mounted or pushed"
    );

    // docker build --pull: FROM re-resolves its tag through the registry.
    seed.write(
        "ctx2/Dockerfile",
        "FROM scratch\nCOPY a.txt /a.txt\nENV MOVED=1\n",
    );
    seed.write("ctx2/a.txt", "moved\n");
    seed.ok(&[
        "build",
        "-q",
        "-t",
        &seed_name,
        seed.path("ctx2").to_str().unwrap(),
    ]);
    seed.ok(&["push", &seed_name]);
    let ctx = env.write(
        "bctx/Dockerfile",
        format!("FROM {seed_name}\nENV BUILT=1\n"),
    );
    let bctx = ctx.parent().unwrap().to_str().unwrap().to_owned();
    let out = server
        .docker_as(Some(ALICE), &["build", "-q", "-t", "built:1", &bctx])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    let env_of = |name: &str| {
        let out = server
            .docker_as(
                Some(ALICE),
                &["image", "inspect", "-f", "{{json .Config.Env}}", name],
            )
            .output()
            .unwrap();
        out_text(&out)
    };
    assert!(
        !env_of("built:1").contains("MOVED"),
        "without --pull the local image serves"
    );
    let out = server
        .docker_as(Some(ALICE), &["build", "--pull", "-t", "built:2", &bctx])
        .output()
        .unwrap();
    let text = out_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Downloaded newer image"), "{text}");
    assert!(
        env_of("built:2").contains("MOVED=1"),
        "{}",
        env_of("built:2")
    );

    // mallory's policy allows public registries only: loopback is refused, for pulls and
    // for FROM lines alike.
    let out = server
        .docker_as(Some(MALLORY), &["pull", &seed_name])
        .output()
        .unwrap();
    let text = out_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("egress policy"), "{text}");
    let out = server
        .docker_as(Some(MALLORY), &["build", "-t", "m:1", &bctx])
        .output()
        .unwrap();
    let text = out_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("egress policy"), "{text}");
    assert!(
        !env.root().join("tenants/mallory/blobs/sha256").exists()
            || std::fs::read_dir(env.root().join("tenants/mallory/blobs/sha256"))
                .unwrap()
                .count()
                == 0
    );

    // Never the server's own credentials.
    assert!(
        tokens
            .requests()
            .iter()
            .all(|r| r.basic_user.as_deref() != Some("hostuser")),
        "{:?}",
        tokens.requests()
    );
}
