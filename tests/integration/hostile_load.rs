//! Image archives that try to read host files through `kiln load` and `POST /images/load`.
//!
//! Each archive names a file outside itself: through a symlink member it carries (`evil -> /`
//! with a layer named `evil/<host path>`, the attack that once loaded the host file as a
//! layer), a symlinked `manifest.json`, `blobs/` or `blobs/sha256`, a hardlink member to a
//! host path, or a chain of symlinks whose last one leads out. The configs name the canary's
//! true diff ID and the index the victim's true digests, so an archive that reached the file
//! would load. Every one must be refused with one line, the error must not carry the canary's
//! digest, and the canary's bytes must appear nowhere in the loading store.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::harness::Env;
use crate::serve::{http, write_config, Server};

/// One member of a hand-made archive.
enum Member<'a> {
    File(&'a str, Vec<u8>),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn archive(members: &[Member<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        match m {
            Member::File(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, &data[..]).unwrap();
            }
            Member::Symlink(name, target) | Member::Hardlink(name, target) => {
                h.set_entry_type(if matches!(m, Member::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_size(0);
                // GNU long-name records carry targets past the header's 100 bytes.
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// A host file whose bytes must never reach a store, and its digest.
struct Canary {
    path: PathBuf,
    bytes: Vec<u8>,
    hex: String,
}

impl Canary {
    fn new(env: &Env, rel: &str) -> Canary {
        let mut bytes = b"kiln-canary ".to_vec();
        bytes.extend(hex(&rand_bytes()).into_bytes());
        bytes.extend_from_slice(b"\n");
        let path = env.write(rel, &bytes);
        Canary::at(path)
    }

    fn at(path: PathBuf) -> Canary {
        let bytes = std::fs::read(&path).unwrap();
        let hex = sha256_hex(&bytes);
        Canary { path, bytes, hex }
    }

    /// The canary's path without its leading `/`, as a name below a symlink to `/`.
    fn rel(&self) -> String {
        self.path
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_owned()
    }

    /// Asserts that no file under `root` holds the canary's bytes.
    fn assert_absent_under(&self, root: &Path, case: &str) {
        assert!(root.is_dir(), "{case}: no store at {}", root.display());
        for f in files_under(root) {
            let Ok(data) = std::fs::read(&f) else {
                continue;
            };
            assert!(
                !contains(&data, &self.bytes),
                "{case}: {} holds the canary's bytes",
                f.display()
            );
        }
    }

    /// Asserts that an error text neither holds the canary nor names its digest.
    fn assert_not_in(&self, text: &str, case: &str) {
        assert!(
            !text.contains(&self.hex),
            "{case}: the error names the canary's digest: {text}"
        );
        assert!(
            !contains(text.as_bytes(), &self.bytes),
            "{case}: the error holds the canary: {text}"
        );
    }
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    let n = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).unwrap();
    assert_eq!(n, b.len());
    b
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// An image config whose one layer has the diff ID `layer_hex`.
fn config(layer_hex: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
    }))
    .unwrap()
}

/// A docker-archive `manifest.json` naming `config` and `layer`.
fn docker_manifest(config: &str, layer: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!([
        {"Config": config, "RepoTags": ["loot:latest"], "Layers": [layer]}
    ]))
    .unwrap()
}

/// An image stored as an OCI layout's blobs: (manifest digest hex, blob members).
fn oci_image(layer: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
    let layer_hex = sha256_hex(layer);
    let config = config(&layer_hex);
    let config_hex = sha256_hex(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_hex}"), "size": layer.len()}],
    }))
    .unwrap();
    let manifest_hex = sha256_hex(&manifest);
    let blobs = vec![
        (layer_hex, layer.to_vec()),
        (config_hex, config),
        (manifest_hex.clone(), manifest),
    ];
    (manifest_hex, blobs)
}

/// An OCI `index.json` naming manifest `hex` as `loot:latest`.
fn oci_index(hex: &str, size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{hex}"), "size": size,
                       "annotations": {"io.containerd.image.name": "docker.io/library/loot:latest"}}],
    }))
    .unwrap()
}

/// The hostile archives against `canary` (a host file) and `victim` (a host folder laid out
/// as an OCI store holding `victim_manifest`, whose one layer is the canary): (name, archive).
fn hostile_archives(
    canary: &Canary,
    victim: &Path,
    victim_manifest: (&str, usize),
) -> Vec<(&'static str, Vec<u8>)> {
    let cfg = config(&canary.hex);
    let cfg_name = format!("{}.json", sha256_hex(&cfg));
    let up = "../".repeat(32);
    let victim_blobs = victim.join("blobs");
    let victim_sha = victim_blobs.join("sha256");
    let index = oci_index(victim_manifest.0, victim_manifest.1);
    let canary_dir = canary.path.parent().unwrap().to_str().unwrap().to_owned();
    let canary_file = canary
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    vec![
        (
            "docker-archive: evil -> / and a layer named evil/<host path>",
            archive(&[
                Member::Symlink("evil", "/"),
                Member::File(
                    "manifest.json",
                    docker_manifest(&cfg_name, &format!("evil/{}", canary.rel())),
                ),
                Member::File(&cfg_name, cfg.clone()),
            ]),
        ),
        (
            "docker-archive: evil -> / and a config named evil/<host path>",
            archive(&[
                Member::Symlink("evil", "/"),
                Member::File(
                    "manifest.json",
                    docker_manifest(&format!("evil/{}", canary.rel()), "layer.tar"),
                ),
            ]),
        ),
        (
            "docker-archive: a layer named by its absolute host path",
            archive(&[
                Member::File(
                    "manifest.json",
                    docker_manifest(&cfg_name, canary.path.to_str().unwrap()),
                ),
                Member::File(&cfg_name, cfg.clone()),
            ]),
        ),
        (
            "docker-archive: a layer named ../../<host path>",
            archive(&[
                Member::File(
                    "manifest.json",
                    docker_manifest(&cfg_name, &format!("{up}{}", canary.rel())),
                ),
                Member::File(&cfg_name, cfg.clone()),
            ]),
        ),
        (
            "docker-archive: manifest.json is a symlink to a host file",
            archive(&[Member::Symlink(
                "manifest.json",
                canary.path.to_str().unwrap(),
            )]),
        ),
        (
            "docker-archive: layer.tar is a hardlink to a host file",
            archive(&[
                Member::Hardlink("layer.tar", canary.path.to_str().unwrap()),
                Member::File("manifest.json", docker_manifest(&cfg_name, "layer.tar")),
                Member::File(&cfg_name, cfg.clone()),
            ]),
        ),
        (
            "docker-archive: layer.tar is a hardlink through evil -> /",
            archive(&[
                Member::Symlink("evil", "/"),
                Member::Hardlink("layer.tar", &format!("evil/{}", canary.rel())),
                Member::File("manifest.json", docker_manifest(&cfg_name, "layer.tar")),
                Member::File(&cfg_name, cfg.clone()),
            ]),
        ),
        (
            "docker-archive: a chain of symlinks whose last one leads out",
            archive(&[
                Member::Symlink("a", "b"),
                Member::Symlink("b", "c/d"),
                Member::File("c/keep", Vec::new()),
                Member::Symlink("c/d", &format!("../{up}{}", &canary_dir[1..])),
                Member::File(
                    "manifest.json",
                    docker_manifest(&cfg_name, &format!("a/{canary_file}")),
                ),
                Member::File(&cfg_name, cfg.clone()),
            ]),
        ),
        (
            "OCI layout: blobs -> the victim's blobs",
            archive(&[
                Member::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
                Member::File("index.json", index.clone()),
                Member::Symlink("blobs", victim_blobs.to_str().unwrap()),
            ]),
        ),
        (
            "OCI layout: blobs/sha256 -> the victim's blobs/sha256",
            archive(&[
                Member::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
                Member::File("index.json", index.clone()),
                Member::Symlink("blobs/sha256", victim_sha.to_str().unwrap()),
            ]),
        ),
        ("OCI layout: each blob a symlink to the victim's", {
            let mut m = vec![
                Member::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
                Member::File("index.json", index.clone()),
            ];
            let links: Vec<(String, String)> = std::fs::read_dir(&victim_sha)
                .unwrap()
                .flatten()
                .map(|e| {
                    let n = e.file_name().to_str().unwrap().to_owned();
                    (
                        format!("blobs/sha256/{n}"),
                        e.path().to_str().unwrap().to_owned(),
                    )
                })
                .collect();
            for (name, target) in &links {
                m.push(Member::Symlink(name, target));
            }
            archive(&m)
        }),
        (
            "OCI layout: index.json is a symlink to the victim's",
            archive(&[
                Member::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
                Member::Symlink("index.json", victim.join("index.json").to_str().unwrap()),
                Member::Symlink("blobs", victim_blobs.to_str().unwrap()),
            ]),
        ),
    ]
}

/// Lays out `dir` as an OCI store holding one image whose layer is `canary`'s bytes; returns
/// its manifest's digest hex and size.
fn victim_store(dir: &Path, canary: &Canary) -> (String, usize) {
    let (manifest_hex, blobs) = oci_image(&canary.bytes);
    let sha = dir.join("blobs/sha256");
    std::fs::create_dir_all(&sha).unwrap();
    let mut size = 0;
    for (hex, data) in &blobs {
        if *hex == manifest_hex {
            size = data.len();
        }
        std::fs::write(sha.join(hex), data).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(dir.join("index.json"), oci_index(&manifest_hex, size)).unwrap();
    (manifest_hex, size)
}

/// An archive of the OCI layout in `dir` (regular files only).
fn layout_archive(dir: &Path) -> Vec<u8> {
    let mut files = Vec::new();
    for f in files_under(dir) {
        let name = f.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
        files.push((name, std::fs::read(&f).unwrap()));
    }
    files.sort();
    let members: Vec<Member<'_>> = files
        .iter()
        .map(|(n, d)| Member::File(n, d.clone()))
        .collect();
    archive(&members)
}

#[test]
fn kiln_load_never_reads_a_host_file_through_an_archive() {
    let env = Env::new();
    let canary = Canary::new(&env, "host/secret");
    let victim = env.path("victim");
    let vm = victim_store(&victim, &canary);
    // The store exists before the first attack, so that every case is checked against it.
    env.ok(&["images"]);
    // Sanity: the victim layout is a loadable image, so the attacks below fail for the right
    // reason (their names lead out), not because what they point at is malformed.
    let sane = env.write("sane.tar", layout_archive(&victim));
    let other = Env::new();
    let out = other.ok(&["load", "-i", sane.to_str().unwrap()]);
    assert!(out.contains("Loaded image: loot:latest"), "{out}");
    // A symlink that stays inside is followed, as docker does: docker-archives before Docker
    // 25 link a repeated layer's layer.tar to its first copy.
    let layer = archive(&[Member::File("hello", b"hello\n".to_vec())]);
    let cfg = config(&sha256_hex(&layer));
    let cfg_name = format!("{}.json", sha256_hex(&cfg));
    let legacy = env.write(
        "legacy.tar",
        archive(&[
            Member::File("a/layer.tar", layer),
            Member::Symlink("b/layer.tar", "../a/layer.tar"),
            Member::File(&cfg_name, cfg),
            Member::File("manifest.json", docker_manifest(&cfg_name, "b/layer.tar")),
        ]),
    );
    let out = other.ok(&["load", "-i", legacy.to_str().unwrap()]);
    assert!(out.contains("Loaded image: loot:latest"), "{out}");

    for (case, bytes) in hostile_archives(&canary, &victim, (&vm.0, vm.1)) {
        let path = env.write("attack.tar", &bytes);
        let err = env.fails(&["load", "-i", path.to_str().unwrap()], 1);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{case}: expected one line:\n{err}");
        assert!(lines[0].starts_with("kiln: "), "{case}: {err}");
        eprintln!("{case}: {}", lines[0]);
        canary.assert_not_in(&err, case);
        canary.assert_absent_under(&env.root(), case);
        let images = env.ok(&["images", "-q"]);
        assert_eq!(images, "", "{case}: an image was loaded");
    }
    env.ok(&["fsck"]);
}

const ALICE: &str = "alice-token-load-0123456789";
const BOB: &str = "bob-token-load-0123456789";

#[test]
fn serve_load_never_reads_host_files_or_another_tenants_store() {
    let env = Env::new();
    let tenants = env.path("tenants");
    let cfg = write_config(
        &env,
        &format!(
            "root = \"{}\"\n\n[[tenants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n\n\
             [[tenants]]\nname = \"bob\"\ntoken = \"{BOB}\"\n",
            tenants.display()
        ),
    );
    let socket = env.path("s.sock");
    let _srv = Server::with_config(&env, &cfg, &socket, &[]);
    let get = |token: &str, path: &str| {
        http(
            &socket,
            "GET",
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        )
    };
    let load = |token: &str, body: &[u8]| {
        http(
            &socket,
            "POST",
            "/v1.43/images/load?quiet=1",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/x-tar"),
            ],
            body,
        )
    };
    // bob loads an image whose layer is his secret.
    let secret = Canary::new(&env, "bob-secret");
    let bob_src = env.path("bob-src");
    victim_store(&bob_src, &secret);
    let (status, _, body) = load(BOB, &layout_archive(&bob_src));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Loaded image: loot:latest"), "{body}");
    let bob_store = tenants.join("bob");
    let bob_index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bob_store.join("index.json")).unwrap()).unwrap();
    let m = &bob_index["manifests"][0];
    let bob_manifest = (
        m["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_owned(),
        m["size"].as_u64().unwrap() as usize,
    );
    // alice goes after bob's store and after the server's config, which holds every token.
    let config_canary = Canary::at(cfg.clone());
    let alice_store = tenants.join("alice");
    let (status, _, _) = get(ALICE, "/v1.43/images/json");
    assert_eq!(status, 200);
    let mut cases = hostile_archives(&secret, &bob_store, (&bob_manifest.0, bob_manifest.1));
    cases.extend(
        hostile_archives(
            &config_canary,
            &bob_store,
            (&bob_manifest.0, bob_manifest.1),
        )
        .into_iter()
        .filter(|(c, _)| c.starts_with("docker-archive")),
    );
    for (case, bytes) in cases {
        let (status, _, body) = load(ALICE, &bytes);
        assert_eq!(status, 400, "{case}: {body}");
        assert_eq!(body.lines().count(), 1, "{case}: {body}");
        eprintln!("{case}: {body}");
        secret.assert_not_in(&body, case);
        config_canary.assert_not_in(&body, case);
        assert!(
            !body.contains(ALICE) && !body.contains(BOB),
            "{case}: {body}"
        );
        for c in [&secret, &config_canary] {
            c.assert_absent_under(&alice_store, case);
        }
        let (status, _, _) = get(ALICE, "/v1.43/images/loot:latest/get");
        assert_eq!(status, 404, "{case}: alice can save an image named loot");
    }
    // The server still serves both of them.
    let (status, _, body) = get(BOB, "/v1.43/images/json");
    assert_eq!(status, 200);
    assert!(body.contains("loot:latest"), "{body}");
}
