//! OCI image JSON: the image config (with Docker's extra fields), manifests, indexes and
//! descriptors, and the media types kiln reads and writes.
//!
//! The types serialise canonically: every map is a `BTreeMap` and every struct has a fixed field
//! order, so the same value always gives the same bytes and equal builds give equal digests
//! ([`CanonicalJson`]). The shapes follow what BuildKit's exporter writes (see
//! `shared/conformance/buildkit-export-goldens`):
//! - the config's top-level keys are sorted (`architecture`, `author`, `config`, `created`,
//!   `history`, `os`, ..., `rootfs`, `variant`), because BuildKit re-marshals the config through
//!   a map; the keys inside `config` follow Docker's struct order (`User`, `ExposedPorts`, `Env`,
//!   `Entrypoint`, `Cmd`, `Volumes`, `WorkingDir`, `Labels`, `StopSignal`, `ArgsEscaped`,
//!   `Healthcheck`, `OnBuild`, `Shell`); empty optional fields are omitted like Go's `omitempty`;
//!   `rootfs.diff_ids` is always present (the schema requires it), `[]` when there are no layers;
//! - manifests and indexes are indented with two spaces (BuildKit's `MarshalIndent`), configs are
//!   compact.
//!
//! Reading is lenient where Docker is: `null` for an absent list or map is accepted (Docker's own
//! configs write `"Volumes":null`), and unknown fields (`container_config`, `docker_version`,
//! `Hostname`, ...) are ignored. One difference from Go: Go escapes `<`, `>` and `&` in strings
//! as `\u003c`...; kiln writes them as they are (the documents are equally valid, only the bytes
//! differ, and no builder reproduces another's digests anyway).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::digest::{DiffId, Digest};

/// Media types of OCI and Docker (schema 2) documents and layers.
pub mod media_types {
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed OCI layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A gzip-compressed OCI layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// A zstd-compressed OCI layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// The OCI `oci-layout` file.
    pub const OCI_LAYOUT_HEADER: &str = "application/vnd.oci.layout.header.v1+json";
    /// A Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// A Docker manifest list (the Docker form of an index).
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// A Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// A gzip-compressed Docker layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// An uncompressed Docker layer (written by BuildKit for `compression=uncompressed`).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// A gzip-compressed Docker layer that must be fetched from its `urls`.
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// Whether `mt` is an image manifest (OCI or Docker).
    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }

    /// Whether `mt` is an image index (OCI index or Docker manifest list).
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }
}

/// The annotation that names an image in an OCI layout's `index.json`; kiln stores the full
/// normalised reference (`docker.io/library/redis:latest`) in it.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Encodes a document in its one canonical byte form.
pub trait CanonicalJson: Serialize {
    /// The canonical bytes: compact JSON unless the type says otherwise.
    fn to_canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

fn to_indented_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"  ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// A reference to a blob: its media type, digest and size (`application/vnd.oci.descriptor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// What the blob is.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Where else the blob can be fetched from.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    /// Free-form annotations.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// The blob's content embedded as base64, carried through as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The platform an image manifest is for (in indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The type of an artifact, when the descriptor points at one.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor with just the three required fields.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            data: None,
            platform: None,
            artifact_type: None,
        }
    }
}

/// The platform an image runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in Go's naming (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system in Go's naming (`linux`).
    pub os: String,
    /// Operating system version (Windows images).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// Required operating system features.
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
    /// CPU variant (`v8` for arm64).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

/// An image manifest (OCI, or Docker schema 2, which has the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`media_types::OCI_MANIFEST`] or [`media_types::DOCKER_MANIFEST`].
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The type of an artifact manifest.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layer blobs, base first.
    #[serde(default, deserialize_with = "nullable")]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (referrers API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form annotations.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl CanonicalJson for ImageManifest {
    fn to_canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        to_indented_json(self)
    }
}

/// An image index (OCI), or a Docker manifest list; also the shape of an OCI layout's
/// `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`media_types::OCI_INDEX`] or [`media_types::DOCKER_MANIFEST_LIST`].
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The type of an artifact index.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// The manifests (or nested indexes) listed.
    #[serde(default, deserialize_with = "nullable")]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (referrers API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form annotations.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// An empty OCI index.
    pub fn empty() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.to_owned()),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
        }
    }
}

impl CanonicalJson for ImageIndex {
    fn to_canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        to_indented_json(self)
    }
}

/// The OCI `oci-layout` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciLayout {
    /// `1.0.0`.
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

impl CanonicalJson for OciLayout {}

/// An image config (`application/vnd.oci.image.config.v1+json`, or Docker's
/// `application/vnd.docker.container.image.v1+json`, which has the same shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture (`amd64`).
    #[serde(default)]
    pub architecture: String,
    /// Who made the image (`MAINTAINER`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// How to run a container from the image.
    #[serde(default, deserialize_with = "nullable")]
    pub config: ContainerConfig,
    /// When the image was made.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub created: Option<OffsetDateTime>,
    /// One entry per build step, oldest first; entries with `empty_layer` have no layer.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// Required operating system features.
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
    /// Operating system version.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// The layers' diff IDs.
    pub rootfs: RootFs,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl CanonicalJson for ImageConfig {}

/// The execution parameters inside an image config (`config`), with Docker's extra fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    /// `EXPOSE`: `80/tcp` -> `{}`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    /// `ENV`, as `KEY=value`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub entrypoint: Vec<String>,
    /// `CMD`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cmd: Vec<String>,
    /// `VOLUME`: `/data` -> `{}`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    /// `WORKDIR`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    /// Windows only: the command line is already escaped.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub args_escaped: bool,
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// `ONBUILD` triggers, as written.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
    /// `SHELL`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shell: Vec<String>,
}

/// `HEALTHCHECK` settings; durations are written as integer nanoseconds like Docker's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `[]` inherit, `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    /// Time between checks; zero inherits.
    #[serde(default, with = "nanos", skip_serializing_if = "Duration::is_zero")]
    pub interval: Duration,
    /// Time before a check counts as hung; zero inherits.
    #[serde(default, with = "nanos", skip_serializing_if = "Duration::is_zero")]
    pub timeout: Duration,
    /// Start-up time during which failures do not count; zero inherits.
    #[serde(default, with = "nanos", skip_serializing_if = "Duration::is_zero")]
    pub start_period: Duration,
    /// Time between checks during the start period; zero inherits.
    #[serde(default, with = "nanos", skip_serializing_if = "Duration::is_zero")]
    pub start_interval: Duration,
    /// Consecutive failures before unhealthy; zero inherits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

/// One build step in an image's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub created: Option<OffsetDateTime>,
    /// The step, as docker shows it (`RUN /bin/sh -c make # buildkit`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub created_by: String,
    /// Who made the step.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub author: String,
    /// A free-form comment (`buildkit.dockerfile.v0`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub comment: String,
    /// The step made no layer (`ENV`, `CMD`, ...).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub empty_layer: bool,
}

/// The layers of an image, by diff ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The uncompressed layers' digests, base first.
    #[serde(default, deserialize_with = "nullable")]
    pub diff_ids: Vec<DiffId>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".to_owned(),
            diff_ids: Vec::new(),
        }
    }
}

/// The `{}` values of Docker's string sets (`ExposedPorts`, `Volumes`); any value is accepted
/// when reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for EmptyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| EmptyObject)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Reads `null` as the type's default, like Go does for slices, maps and strings.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Durations as integer nanoseconds (Go's `time.Duration`).
mod nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let n = u64::try_from(d.as_nanos())
            .map_err(|_| serde::ser::Error::custom("duration too long for nanoseconds"))?;
        s.serialize_u64(n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_nanos(
            Option::<u64>::deserialize(d)?.unwrap_or(0),
        ))
    }
}

/// Optional RFC 3339 timestamps, written like Go's `RFC3339Nano` (trailing zeros of the
/// fraction dropped, `Z` for UTC).
mod rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => {
                let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
                s.serialize_str(&text)
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("timestamp {text:?}: {e}"))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of BuildKit's export goldens, found like the integration harness finds
    /// `shared/conformance` (`KILN_CONFORMANCE`, else walking up from the crate, else the
    /// machines' `/work/shared`).
    fn golden(rel: &str) -> String {
        let base = std::env::var_os("KILN_CONFORMANCE")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .ancestors()
                    .map(|d| d.join("shared/conformance"))
                    .find(|d| d.is_dir())
            })
            .or_else(|| {
                // The build machines keep the suites beside the checkouts.
                let p = std::path::PathBuf::from("/work/shared/conformance");
                p.is_dir().then_some(p)
            })
            .expect("shared/conformance not found: set KILN_CONFORMANCE");
        let path = base.join("buildkit-export-goldens").join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn config_field_order_and_omission() {
        let mut cfg = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: Some(time::macros::datetime!(2015-10-21 07:28:00.5 UTC)),
            ..Default::default()
        };
        cfg.config.env.push("PATH=/bin".into());
        cfg.config.cmd = vec!["sh".into()];
        cfg.config
            .exposed_ports
            .insert("80/tcp".into(), EmptyObject);
        cfg.config.healthcheck = Some(Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: Duration::from_secs(30),
            retries: 3,
            ..Default::default()
        });
        cfg.history.push(History {
            created_by: "CMD [\"sh\"]".into(),
            empty_layer: true,
            ..Default::default()
        });
        let json = String::from_utf8(cfg.to_canonical_json().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"architecture":"amd64","config":{"ExposedPorts":{"80/tcp":{}},"Env":["PATH=/bin"],"Cmd":["sh"],"Healthcheck":{"Test":["CMD","true"],"Interval":30000000000,"Retries":3}},"created":"2015-10-21T07:28:00.5Z","history":[{"created_by":"CMD [\"sh\"]","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
        );
        let back: ImageConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.to_canonical_json().unwrap(), json.as_bytes());
    }

    #[test]
    fn buildkit_golden_config_round_trips_to_sorted_keys() {
        let text = golden("common/default-gzip/v30/config.json");
        let cfg: ImageConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(cfg.rootfs.diff_ids.len(), 4);
        assert_eq!(cfg.history.len(), 5);
        assert!(cfg.history[1].empty_layer);
        assert_eq!(cfg.config.cmd, ["sh"]);
        let ours: serde_json::Value =
            serde_json::from_slice(&cfg.to_canonical_json().unwrap()).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
        // Every key kiln writes appears in BuildKit's document, in the same order, with the
        // same value (BuildKit also writes Docker's legacy keys, which kiln drops).
        let ours = ours.as_object().unwrap();
        let theirs = theirs.as_object().unwrap();
        let their_keys: Vec<&String> = theirs.keys().filter(|k| ours.contains_key(*k)).collect();
        assert_eq!(ours.keys().collect::<Vec<_>>(), their_keys);
        for key in ["architecture", "created", "history", "os", "rootfs"] {
            assert_eq!(ours[key], theirs[key], "{key}");
        }
    }

    #[test]
    fn manifest_is_indented_like_buildkit() {
        let text = golden("oci/manifest-annotation/v20/manifest.json");
        let m: ImageManifest = serde_json::from_str(&text).unwrap();
        assert_eq!(m.layers.len(), 4);
        let ours = String::from_utf8(m.to_canonical_json().unwrap()).unwrap();
        assert_eq!(ours.trim_end(), text.trim_end());
    }

    #[test]
    fn docker_nulls_are_accepted() {
        let text = r#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":null,"Volumes":null,"Labels":null,"OnBuild":null,"Entrypoint":null,"Hostname":"x"},"rootfs":{"type":"layers","diff_ids":null}}"#;
        let cfg: ImageConfig = serde_json::from_str(text).unwrap();
        assert!(cfg.config.env.is_empty() && cfg.rootfs.diff_ids.is_empty());
        assert_eq!(
            cfg.to_canonical_json().unwrap(),
            br#"{"architecture":"amd64","config":{},"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
        );
    }
}
