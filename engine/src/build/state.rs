//! The image a stage is building, step by step: config, history and layers.

use time::OffsetDateTime;

use crate::digest::{DiffId, Digest};
use crate::image::{
    media_types, CanonicalJson, Descriptor, History, ImageConfig, ImageManifest, RootFs,
};

/// The default `PATH` of Linux images, as BuildKit sets it for `FROM scratch`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `comment` of the history entries kiln writes, as BuildKit's Dockerfile frontend does.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// One layer of an image: the blob as stored and the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob (media type, digest, size).
    pub desc: Descriptor,
    /// The uncompressed tar's digest.
    pub diff_id: DiffId,
}

/// An image under construction.
#[derive(Debug, Clone)]
pub struct ImageState {
    /// Its config (architecture, os, container config, history, rootfs).
    pub config: ImageConfig,
    /// Its layers, bottom first; `config.rootfs.diff_ids` lists the same layers.
    pub layers: Vec<Layer>,
}

impl ImageState {
    /// An empty image, as BuildKit starts `FROM scratch`: linux on this machine's
    /// architecture, the default `PATH`, working directory `/`.
    pub fn scratch() -> Self {
        let mut config = ImageConfig {
            architecture: host_arch().to_owned(),
            os: "linux".to_owned(),
            rootfs: RootFs::default(),
            ..ImageConfig::default()
        };
        config.config.env = vec![format!("PATH={DEFAULT_PATH}")];
        config.config.working_dir = "/".to_owned();
        Self {
            config,
            layers: Vec::new(),
        }
    }

    /// An image from its stored manifest and config.
    pub fn from_parts(manifest: &ImageManifest, config: ImageConfig) -> Self {
        let layers = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(desc, diff_id)| Layer {
                desc: desc.clone(),
                diff_id: *diff_id,
            })
            .collect();
        Self { config, layers }
    }

    /// Adds a history entry (and the layer, if the step made one).
    pub fn commit(&mut self, created: OffsetDateTime, created_by: String, layer: Option<Layer>) {
        self.config.history.push(History {
            created: Some(created),
            created_by,
            author: String::new(),
            comment: HISTORY_COMMENT.to_owned(),
            empty_layer: layer.is_none(),
        });
        self.config.created = Some(created);
        if let Some(l) = layer {
            self.config.rootfs.diff_ids.push(l.diff_id);
            self.layers.push(l);
        }
    }

    /// The config's canonical bytes and digest (the image ID).
    pub fn config_bytes(&self) -> Result<(Vec<u8>, Digest), serde_json::Error> {
        let bytes = self.config.to_canonical_json()?;
        let d = Digest::of(&bytes);
        Ok((bytes, d))
    }

    /// The OCI manifest for this image, given its config descriptor.
    pub fn manifest(&self, config: Descriptor) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media_types::OCI_MANIFEST.to_owned()),
            artifact_type: None,
            config,
            layers: self.layers.iter().map(|l| l.desc.clone()).collect(),
            subject: None,
            annotations: Default::default(),
        }
    }

    /// The value of an environment variable in the config.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.config.config.env.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }

    /// Sets an environment variable, replacing an earlier value in place as Docker does.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let entry = format!("{name}={value}");
        let env = &mut self.config.config.env;
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == name)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
}

/// The OCI architecture name of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}
