//! The store: its contract under corruption, concurrency and interruption, and that the layout
//! is one other OCI tools read.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiln::digest::{DiffId, Digest};
use kiln::image::{
    media_types, CanonicalJson, Descriptor, History, ImageConfig, ImageIndex, ImageManifest,
    ANNOTATION_REF_NAME,
};
use kiln::reference::ImageRef;
use kiln::store::{GcOptions, GcRoots, Problem, RemoveEvent, Store, StoreError};

/// A one-file layer tar.
fn layer_tar(name: &str, contents: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(name).expect("path");
    h.set_size(contents.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, contents.as_bytes()).expect("append");
    b.into_inner().expect("tar")
}

/// Stores an image with one uncompressed layer per entry of `files` and returns its manifest
/// descriptor and config.
fn make_image(store: &Store, files: &[(&str, &str)], created: &str) -> (Descriptor, ImageConfig) {
    let mut layers = Vec::new();
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        created: Some(
            time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
                .expect("time"),
        ),
        ..Default::default()
    };
    config.config.cmd = vec!["sh".into()];
    for (name, contents) in files {
        let tar = layer_tar(name, contents);
        let (digest, size) = store.put_blob(&tar[..]).expect("put layer");
        layers.push(Descriptor::new(media_types::OCI_LAYER, digest, size));
        config.rootfs.diff_ids.push(DiffId::of(&tar));
        config.history.push(History {
            created: config.created,
            created_by: format!("COPY {name} /"),
            comment: "buildkit.dockerfile.v0".into(),
            ..Default::default()
        });
    }
    config.history.push(History {
        created: config.created,
        created_by: "CMD [\"sh\"]".into(),
        empty_layer: true,
        ..Default::default()
    });
    let cfg = store
        .put_json(media_types::OCI_CONFIG, &config)
        .expect("put config");
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_types::OCI_MANIFEST.into()),
        artifact_type: None,
        config: cfg,
        layers,
        subject: None,
        annotations: Default::default(),
    };
    let desc = store
        .put_json(media_types::OCI_MANIFEST, &manifest)
        .expect("put manifest");
    (desc, config)
}

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).expect("reference")
}

fn open(env: &crate::harness::Env) -> Store {
    Store::open(&env.root()).expect("open store")
}

fn tags_in_index(root: &Path) -> BTreeSet<String> {
    let idx: ImageIndex =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).expect("read index"))
            .expect("index.json parses");
    idx.manifests
        .iter()
        .filter_map(|d| d.annotations.get(ANNOTATION_REF_NAME).cloned())
        .collect()
}

#[test]
fn references_normalise_like_docker() {
    for (input, full, familiar) in [
        ("redis", "docker.io/library/redis:latest", "redis:latest"),
        ("user/repo:v1", "docker.io/user/repo:v1", "user/repo:v1"),
        (
            "localhost:5000/x:1",
            "localhost:5000/x:1",
            "localhost:5000/x:1",
        ),
        (
            "index.docker.io/library/debian:bookworm",
            "docker.io/library/debian:bookworm",
            "debian:bookworm",
        ),
        (
            "quay.io/a/b/c",
            "quay.io/a/b/c:latest",
            "quay.io/a/b/c:latest",
        ),
    ] {
        let parsed = r(input);
        assert_eq!(parsed.to_string(), full, "{input}");
        assert_eq!(parsed.familiar(), familiar, "{input}");
    }
    let err = ImageRef::parse("Redis").expect_err("uppercase is invalid");
    assert!(err.to_string().contains("must be lowercase"), "{err}");
}

#[test]
fn put_is_idempotent_and_json_is_canonical() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (a, _) = store.put_blob(&b"same bytes"[..]).expect("put");
    let (b, _) = store.put_blob(&b"same bytes"[..]).expect("put again");
    assert_eq!(a, b);
    let blobs = std::fs::read_dir(env.root().join("blobs/sha256"))
        .expect("list")
        .count();
    assert_eq!(blobs, 1);

    let (d1, config) = make_image(&store, &[("a", "1")], "2024-05-06T07:08:09.5Z");
    let (d2, _) = make_image(&store, &[("a", "1")], "2024-05-06T07:08:09.5Z");
    assert_eq!(d1, d2, "equal images give equal manifest digests");
    let first = config.to_canonical_json().expect("encode");
    let again: ImageConfig = serde_json::from_slice(&first).expect("decode");
    assert_eq!(again.to_canonical_json().expect("encode"), first);
    assert_eq!(first, config.clone().to_canonical_json().expect("encode"));
}

#[test]
fn tags_resolve_by_name_id_and_digest() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (desc, _) = make_image(&store, &[("a", "1")], "2024-01-01T00:00:00Z");
    store.add_image(&desc, &[r("app:1")]).expect("add");
    let img = store.resolve("app:1").expect("by name");
    assert_eq!(img.tags, vec![r("app:1")]);
    let id = img.id();
    assert_eq!(store.resolve(&id.to_string()).expect("full id").id(), id);
    assert_eq!(store.resolve(&id.hex()[..5]).expect("prefix").id(), id);
    assert_eq!(
        store
            .resolve(&format!("app@{}", desc.digest))
            .expect("by digest")
            .id(),
        id
    );
    assert!(matches!(
        store.resolve("app:2"),
        Err(StoreError::ImageNotFound(_))
    ));
    assert!(tags_in_index(&env.root()).contains("docker.io/library/app:1"));
}

#[test]
fn moving_a_tag_leaves_the_old_image_untagged() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (old, _) = make_image(&store, &[("a", "old")], "2024-01-01T00:00:00Z");
    let (new, _) = make_image(&store, &[("a", "new")], "2024-01-02T00:00:00Z");
    store.add_image(&old, &[r("app")]).expect("add old");
    store.add_image(&new, &[r("app")]).expect("add new");
    let list = store.list_images().expect("list");
    assert_eq!(list.images.len(), 2);
    assert_eq!(list.images[0].descriptor.digest, new.digest, "newest first");
    assert_eq!(list.images[0].tags, vec![r("app")]);
    assert!(list.images[1].tags.is_empty(), "old image is <none>");
    let report = store
        .gc(GcRoots::default, &GcOptions::default())
        .expect("gc");
    assert_eq!(report.images, vec![list.images[1].id()]);
    assert_eq!(store.list_images().expect("list").images.len(), 1);
    assert!(store.fsck().expect("fsck").is_clean());
}

#[test]
fn rmi_follows_docker() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (desc, _) = make_image(&store, &[("a", "1")], "2024-01-01T00:00:00Z");
    store
        .add_image(&desc, &[r("app:1"), r("other/app:2")])
        .expect("add");
    let id = store.resolve("app:1").expect("resolve").id();
    match store.remove(&id.short(), false) {
        Err(e @ StoreError::Conflict { .. }) => assert!(
            e.to_string()
                .contains("image is referenced in multiple repositories"),
            "{e}"
        ),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.remove("app:1", false).expect("untag"),
        vec![RemoveEvent::Untagged(r("app:1"))]
    );
    assert_eq!(
        store.remove("other/app:2", false).expect("last tag"),
        vec![
            RemoveEvent::Untagged(r("other/app:2")),
            RemoveEvent::Deleted(id)
        ]
    );
    assert!(store.list_images().expect("list").images.is_empty());
    store.add_image(&desc, &[r("a"), r("b")]).expect("re-add");
    assert_eq!(
        store.remove(&id.hex(), true).expect("forced"),
        vec![
            RemoveEvent::Untagged(r("a")),
            RemoveEvent::Untagged(r("b")),
            RemoveEvent::Deleted(id)
        ]
    );
}

#[test]
fn incomplete_images_are_refused() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (desc, config) = make_image(&store, &[("a", "1")], "2024-01-01T00:00:00Z");
    let layer = config.rootfs.diff_ids[0].as_uncompressed_digest();
    std::fs::remove_file(store.blob_path(&layer)).expect("remove layer");
    match store.add_image(&desc, &[r("x")]) {
        Err(StoreError::IncompleteImage { missing, .. }) => assert_eq!(missing, layer),
        other => panic!("expected IncompleteImage, got {other:?}"),
    }
    assert!(tags_in_index(&env.root()).is_empty());
}

#[test]
fn corrupted_blob_is_found_by_fsck() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (desc, config) = make_image(&store, &[("a", "1")], "2024-01-01T00:00:00Z");
    store.add_image(&desc, &[r("app")]).expect("add");
    assert!(store.fsck().expect("fsck").is_clean());
    let layer = config.rootfs.diff_ids[0].as_uncompressed_digest();
    let path = store.blob_path(&layer);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[600] ^= 1;
    std::fs::write(&path, &bytes).expect("corrupt");
    let report = store.fsck().expect("fsck");
    assert_eq!(
        report.problems,
        vec![Problem::BlobCorrupt {
            digest: layer,
            found: Digest::of(&bytes)
        }]
    );
    match store.read_blob(&layer, 1 << 20) {
        Err(StoreError::DigestMismatch { expected, found }) => {
            assert_eq!((expected, found), (layer, Digest::of(&bytes)));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
}

#[test]
fn concurrent_tagging_keeps_every_tag() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (desc, _) = make_image(&store, &[("a", "1")], "2024-01-01T00:00:00Z");
    store.add_image(&desc, &[]).expect("add untagged");
    let id = store.resolve(&desc.digest.hex()).err();
    assert!(id.is_some(), "a manifest digest is not an image ID");
    let image_id = store.list_images().expect("list").images[0]
        .id()
        .to_string();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (store, image_id) = (&store, &image_id);
            s.spawn(move || {
                for i in 0..10 {
                    store
                        .tag(image_id, &r(&format!("t{t}/app:{i}")))
                        .expect("tag");
                }
            });
        }
    });
    let tags = tags_in_index(&env.root());
    assert_eq!(tags.len(), 80, "{tags:?}");
    for t in 0..8 {
        for i in 0..10 {
            assert!(tags.contains(&format!("docker.io/t{t}/app:{i}")));
        }
    }
    let list = store.list_images().expect("list");
    assert_eq!(list.images.len(), 1, "the untagged entry went away");
    assert!(store.fsck().expect("fsck").is_clean());
    let tmp = std::fs::read_dir(env.root().join("kiln/tmp"))
        .expect("list tmp")
        .count();
    assert_eq!(tmp, 0, "no temporary files left behind");
}

#[test]
fn concurrent_blob_writers_and_gc() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (keep, _) = make_image(&store, &[("keep", "me")], "2024-01-01T00:00:00Z");
    store.add_image(&keep, &[r("keep")]).expect("add");
    std::thread::scope(|s| {
        for t in 0..6 {
            let store = &store;
            s.spawn(move || {
                for i in 0..5 {
                    // A writer holds a lease from its first blob until the image is indexed.
                    let _lease = store.lease().expect("lease");
                    let (d, _) =
                        make_image(store, &[("f", &format!("{t}-{i}"))], "2024-01-01T00:00:00Z");
                    store
                        .add_image(&d, &[r(&format!("w{t}:{i}"))])
                        .expect("add");
                }
            });
        }
        s.spawn(|| {
            for _ in 0..5 {
                store
                    .gc(GcRoots::default, &GcOptions::default())
                    .expect("gc");
            }
        });
    });
    assert_eq!(store.list_images().expect("list").images.len(), 31);
    let report = store.fsck().expect("fsck");
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn interrupted_writes_are_invisible_and_collected() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (desc, config) = make_image(&store, &[("a", "1")], "2024-01-01T00:00:00Z");
    store.add_image(&desc, &[r("app")]).expect("add");
    let id = store.resolve("app").expect("resolve").id();

    // What a writer killed mid-way leaves: a half-written temporary blob, a half-unpacked
    // snapshot folder, and a complete blob that never got referenced.
    let tmp = env.root().join("kiln/tmp");
    std::fs::File::create(tmp.join("blob-99999-0-000000001"))
        .and_then(|mut f| f.write_all(b"half a la"))
        .expect("temp blob");
    std::fs::create_dir_all(tmp.join("snapshot-99999-1-000000002/rootfs/usr")).expect("temp dir");
    let (orphan, _) = store.put_blob(&b"never referenced"[..]).expect("orphan");
    // A snapshot that an image uses, and one nothing uses.
    let used = config.rootfs.diff_ids[0];
    store
        .create_snapshot(&used, |d: &cap_std::fs::Dir| d.write("a", "1"))
        .expect("snapshot");
    let unused = DiffId::of(b"unused layer");
    store
        .create_snapshot(&unused, |d: &cap_std::fs::Dir| d.write("x", "y"))
        .expect("snapshot");

    let report = store.fsck().expect("fsck");
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.temp_entries, 2);

    // Within the grace period, temporary entries are kept: a live writer may own them.
    let report = store
        .gc(GcRoots::default, &GcOptions::default())
        .expect("gc");
    assert_eq!(report.temp_entries, 0);
    assert_eq!(report.blobs, vec![orphan]);
    assert_eq!(report.snapshots, vec![unused]);

    let opts = GcOptions {
        tmp_grace: Duration::ZERO,
        ..GcOptions::default()
    };
    let report = store.gc(GcRoots::default, &opts).expect("gc");
    assert_eq!(report.temp_entries, 2);
    assert!(report.blobs.is_empty() && report.snapshots.is_empty());
    assert_eq!(std::fs::read_dir(&tmp).expect("list").count(), 0);
    assert!(!store.has_blob(&orphan));
    assert!(store.has_snapshot(&used));
    assert_eq!(store.resolve("app").expect("image intact").id(), id);
    assert!(store.fsck().expect("fsck").is_clean());
}

#[test]
fn gc_keeps_the_callers_roots() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let tar = layer_tar("cached", "layer");
    let (digest, _) = store.put_blob(&tar[..]).expect("put");
    let diff = DiffId::of(&tar);
    store
        .create_snapshot(&diff, |d: &cap_std::fs::Dir| d.write("cached", "layer"))
        .expect("snapshot");
    let roots = || {
        let mut roots = GcRoots::default();
        roots.add_layer(&diff);
        roots
    };
    let report = store.gc(roots, &GcOptions::default()).expect("gc");
    assert!(report.blobs.is_empty() && report.snapshots.is_empty());
    assert!(store.has_blob(&digest) && store.has_snapshot(&diff));
    let report = store
        .gc(GcRoots::default, &GcOptions::default())
        .expect("gc");
    assert_eq!(report.blobs, vec![digest]);
    assert_eq!(report.snapshots, vec![diff]);
}

#[test]
fn other_oci_tools_read_the_layout() {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (desc, config) = make_image(&store, &[("a", "1"), ("b", "2")], "2024-01-01T00:00:00Z");
    store.add_image(&desc, &[r("app:1")]).expect("add");
    let root = env.root();
    let reference = format!("oci:{}:docker.io/library/app:1", root.display());
    let out = Command::new("skopeo")
        .args(["inspect", &reference])
        .output()
        .expect("skopeo is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "skopeo inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
    assert_eq!(info["Digest"], desc.digest.to_string(), "{info}");
    assert_eq!(info["Architecture"], "amd64", "{info}");
    assert_eq!(info["Os"], "linux", "{info}");
    assert_eq!(info["Created"], "2024-01-01T00:00:00Z", "{info}");
    // Layers are stored uncompressed, so their blob digests are the diff IDs.
    let layers: Vec<String> = config
        .rootfs
        .diff_ids
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(info["Layers"], serde_json::json!(layers), "{info}");

    let out = Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(&root)
        .output()
        .expect("umoci is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "umoci ls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "docker.io/library/app:1"
    );
    let out = Command::new("umoci")
        .args(["stat", "--json", "--image"])
        .arg(format!("{}:docker.io/library/app:1", root.display()))
        .output()
        .expect("umoci stat");
    assert!(
        out.status.success(),
        "umoci stat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store with `app:1` (two layers) and an untagged image, for the command-line tests.
fn cli_env() -> (crate::harness::Env, Digest, Digest) {
    let env = crate::harness::Env::new();
    let store = open(&env);
    let (desc, _) = make_image(&store, &[("a", "1"), ("b", "22")], "2024-01-01T00:00:00Z");
    store.add_image(&desc, &[r("app:1")]).expect("add");
    let (loose, _) = make_image(&store, &[("c", "3")], "2023-01-01T00:00:00Z");
    store.add_image(&loose, &[]).expect("add untagged");
    let id = store.resolve("app:1").expect("resolve").id();
    let loose_id = store.resolve(&loose.digest.to_string()).map(|i| i.id());
    assert!(loose_id.is_err(), "a manifest digest is not an image ID");
    let loose_id = store
        .list_images()
        .expect("list")
        .images
        .iter()
        .find(|i| i.tags.is_empty())
        .expect("untagged image")
        .id();
    (env, id, loose_id)
}

#[test]
fn cli_images_lists_like_docker() {
    let (env, id, loose) = cli_env();
    let out = env.ok(&["images"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    // Docker's tabwriter: columns padded to the widest cell + 3, at least 10 wide.
    assert!(
        lines[0].starts_with("REPOSITORY   TAG       IMAGE ID       CREATED   "),
        "{out}"
    );
    assert!(lines[0].ends_with("   SIZE"), "{out}");
    let size_at = lines[0].find("SIZE").expect("SIZE column");
    assert_eq!(lines[1].find("kB"), Some(lines[1].len() - 2), "{out}");
    assert!(
        lines[1].get(size_at..).is_some_and(|s| s.ends_with("kB")),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("app          1         {}   ", id.short())),
        "{out}"
    );
    assert!(lines[1].contains(" ago "), "{out}");
    assert!(lines[1].ends_with("kB"), "{out}");
    assert!(lines[2].starts_with("<none>       <none>    "), "{out}");
    assert_eq!(
        env.ok(&["images", "-q"]),
        format!("{}\n{}\n", id.short(), loose.short())
    );
    assert_eq!(
        env.ok(&["images", "-q", "--no-trunc", "app"]),
        format!("{id}\n")
    );
    assert_eq!(env.ok(&["images", "-q", "app:2"]), "");
    let json = env.ok(&["images", "--format", "json", "app:1"]);
    let row: serde_json::Value = serde_json::from_str(json.trim()).expect("one json line");
    assert_eq!(row["Repository"], "app");
    assert_eq!(row["Tag"], "1");
    assert_eq!(row["ID"], id.short());
    assert_eq!(row["CreatedAt"], "2024-01-01 00:00:00 +0000 UTC");
}

#[test]
fn cli_tag_rmi_inspect_history() {
    let (env, id, _) = cli_env();
    env.ok(&["tag", "app:1", "me/other:2"]);
    let err = env.fails(&["tag", "app:1", "Bad"], 1);
    assert!(err.contains("must be lowercase"), "{err}");
    let err = env.fails(&["tag", "nope", "x"], 1);
    assert!(err.contains("no such image: nope"), "{err}");

    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "me/other:2"])).expect("inspect json");
    let doc = &inspect[0];
    assert_eq!(doc["Id"], id.to_string());
    assert_eq!(doc["RepoTags"], serde_json::json!(["app:1", "me/other:2"]));
    assert_eq!(doc["Os"], "linux");
    assert_eq!(doc["Created"], "2024-01-01T00:00:00Z");
    assert_eq!(doc["RootFS"]["Type"], "layers");
    assert_eq!(doc["RootFS"]["Layers"].as_array().map(Vec::len), Some(2));
    assert_eq!(doc["Config"]["Cmd"], serde_json::json!(["sh"]));
    env.fails(&["inspect", "app:1", "missing"], 1);

    let history = env.ok(&["history", "app:1"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 4, "{history}");
    assert!(lines[0].starts_with("IMAGE          CREATED"), "{history}");
    assert!(lines[1].starts_with(&id.short()), "{history}");
    assert!(
        lines[1].contains("CMD [\"sh\"]") && lines[1].contains("0B"),
        "{history}"
    );
    assert!(
        lines[2].starts_with("<missing>") && lines[2].contains("COPY b /"),
        "{history}"
    );
    assert!(lines[3].ends_with("buildkit.dockerfile.v0"), "{history}");
    assert_eq!(
        env.ok(&["history", "-q", "app:1"]),
        format!("{}\n<missing>\n<missing>\n", id.short())
    );

    let err = env.fails(&["rmi", &id.short()], 1);
    assert!(err.contains("must be forced"), "{err}");
    assert_eq!(env.ok(&["rmi", "app:1"]), "Untagged: app:1\n");
    assert_eq!(
        env.ok(&["rmi", "me/other:2"]),
        format!("Untagged: me/other:2\nDeleted: {id}\n")
    );
    env.fails(&["rmi", "app:1"], 1);
}

#[test]
fn cli_fsck_and_prune() {
    let (env, id, loose) = cli_env();
    env.ok(&["fsck"]);
    let store = open(&env);
    let img = store.resolve("app:1").expect("resolve");
    let layer = img.manifest.layers[1].digest;
    std::fs::write(store.blob_path(&layer), "rot").expect("corrupt");
    let out = env.run(&["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("blob {layer}: content hashes to {}\n", Digest::of(b"rot"))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("store damaged: 1 problem found"));
    let tar = layer_tar("b", "22");
    store.put_blob_expect(&tar[..], &layer).expect("repair");
    env.ok(&["fsck"]);

    // Without --force, prune asks; with no answer it does nothing.
    env.ok(&["prune"]);
    assert_eq!(store.list_images().expect("list").images.len(), 2);
    let out = env.ok(&["prune", "-f"]);
    assert!(
        out.starts_with(&format!("Deleted Images:\ndeleted: {loose}\n")),
        "{out}"
    );
    assert!(out.contains("Total reclaimed space: "), "{out}");
    let list = store.list_images().expect("list");
    assert_eq!(list.images.len(), 1);
    assert_eq!(list.images[0].id(), id);
    env.ok(&["fsck"]);
}

#[test]
fn cli_concurrent_processes_keep_every_tag() {
    let (env, id, _) = cli_env();
    let children: Vec<_> = (0..8)
        .map(|p| {
            env.kiln()
                .arg("tag")
                .arg(id.short())
                .arg(format!("p{p}/app:1"))
                .spawn()
                .expect("spawn kiln tag")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let tags = tags_in_index(&env.root());
    for p in 0..8 {
        assert!(tags.contains(&format!("docker.io/p{p}/app:1")), "{tags:?}");
    }
    assert_eq!(tags.len(), 9);
    env.ok(&["fsck"]);
}

#[test]
fn cli_kill_9_mid_write_leaves_a_clean_store() {
    use std::io::Write as _;
    let (env, _, _) = cli_env();
    let tmp = env.root().join("kiln/tmp");
    // `kiln load` streams its input into the store; feed it half a tar and kill it.
    let mut child = env
        .kiln()
        .arg("load")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn kiln load");
    let mut h = tar::Header::new_ustar();
    h.set_path("blobs/sha256/big").expect("path");
    h.set_size(1 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(h.as_bytes()).expect("write header");
    stdin.write_all(&vec![7u8; 300_000]).expect("write part");
    stdin.flush().expect("flush");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tmp).expect("list tmp").count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "kiln load never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    drop(stdin);

    let out = env.ok(&["fsck"]);
    assert_eq!(out, "", "a killed writer is not damage");
    // Temporary entries survive prune while young (their writer may be alive)...
    env.ok(&["prune", "-f"]);
    assert!(std::fs::read_dir(&tmp).expect("list tmp").count() > 0);
    // ...and are collected once older than the grace period.
    let old = rustix::fs::Timespec {
        tv_sec: 1_000_000_000,
        tv_nsec: 0,
    };
    for entry in std::fs::read_dir(&tmp).expect("list tmp") {
        let path = entry.expect("entry").path();
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &path,
            &rustix::fs::Timestamps {
                last_access: old,
                last_modification: old,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .expect("backdate");
    }
    env.ok(&["prune", "-f"]);
    assert_eq!(std::fs::read_dir(&tmp).expect("list tmp").count(), 0);
    env.ok(&["fsck"]);
    assert_eq!(open(&env).list_images().expect("list").images.len(), 1);
}

/// Docker's CVE-2021-41091: a store holds tenants' setuid-root files and device nodes (real
/// ones when kiln runs as root), so a local user who could reach them would become root. The
/// store's folders are made private (0700) when kiln makes them, so user nobody reaches
/// nothing below the store root, though every folder above it lets others through; `kiln fsck`
/// reports a folder that is wider, and `kiln fsck --repair` narrows it.
#[test]
fn no_other_user_reaches_anything_in_the_store() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let env = crate::harness::Env::new();
    assert!(
        Path::new("/usr/bin/setpriv").is_file(),
        "setpriv is missing: install Debian's util-linux (.ci/run does)"
    );
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A base with a setuid-root program and a world-writable disk, and a build on it, which
    // unpacks the base into a snapshot.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o4755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(7);
    b.append_data(&mut h, "su", &b"#!/bin/"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Block);
    h.set_mode(0o666);
    h.set_device_major(8).unwrap();
    h.set_device_minor(0).unwrap();
    h.set_size(0);
    b.append_data(&mut h, "dev/sda", std::io::empty()).unwrap();
    let base = env.write("base.tar", b.into_inner().unwrap());
    env.ok(&["import", base.to_str().unwrap(), "evil/base"]);
    env.write("ctx/Dockerfile", "FROM evil/base\nRUN echo hi > /hi\n");
    env.ok(&["build", "-t", "evil/app", env.path("ctx").to_str().unwrap()]);

    // What an attacker would go for: the setuid file and the device node in the snapshot,
    // and the store's index and blobs.
    let root = env.root();
    let mut targets = vec![root.join("index.json"), root.join("blobs/sha256")];
    let mut todo = vec![root.clone()];
    let (mut setuid, mut devices) = (0, 0);
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else if m.file_type().is_block_device() {
                devices += 1;
                targets.push(e.path());
            } else if m.is_file() && m.mode() & 0o4000 != 0 && m.uid() == 0 {
                setuid += 1;
                targets.push(e.path());
            }
        }
    }
    assert!(
        setuid > 0 && devices > 0,
        "the store holds no setuid-root file ({setuid}) or no device node ({devices}): nothing to test"
    );
    let nobody_stat = |p: &Path| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["stat", "-c", "%n"])
            .arg(p)
            .output()
            .unwrap()
    };
    // A server's tenants: each has a store of its own below the tenants' root.
    let tenants = env.path("tenants");
    let cfg = crate::serve::write_config(
        &env,
        &format!(
            "root = \"{}\"\n\n[[tenants]]\nname = \"bob\"\ntoken = \"bob-token-0123456789abcdef\"\n",
            tenants.display()
        ),
    );
    let socket = env.path("s.sock");
    let srv = crate::serve::Server::with_config(&env, &cfg, &socket, &[]);
    drop(srv);
    targets.push(tenants.join("bob/index.json"));
    targets.push(tenants.join("bob/blobs"));
    // The test's own folders let nobody through, so only kiln's stand in the way.
    let out = nobody_stat(env.dir.path());
    assert!(out.status.success(), "nobody cannot reach the test folder");
    for t in &targets {
        let out = nobody_stat(t);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Permission denied"),
            "nobody reaches {}: {}{err}",
            t.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(root.metadata().unwrap().mode() & 0o777, 0o700);
    env.ok(&["fsck"]);

    // A store made before: fsck names each wide folder, --repair narrows them.
    for rel in ["", "blobs", "kiln/snapshots"] {
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = env.run(&["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        report.matches("mode 0755 lets other users in").count(),
        3,
        "{report}"
    );
    env.ok(&["fsck", "--repair"]);
    for rel in ["", "blobs", "kiln/snapshots"] {
        let mode = root.join(rel).metadata().unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "{rel} after fsck --repair");
    }
}
