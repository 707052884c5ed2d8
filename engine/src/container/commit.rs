//! `commit`: an image made of a container's image plus one layer holding the container's
//! writes, with the container's settings and the `--change` instructions applied.

use cap_std::fs::Dir;
use time::OffsetDateTime;

use super::Container;
use crate::build::apply_changes_to;
use crate::build::state::{ImageState, Layer};
use crate::digest::Digest;
use crate::image::{media_types, Descriptor, ImageConfig, ImageManifest};
use crate::layer::{self, LayerError};
use crate::store::{Store, StoreError};

/// What `commit` adds besides the layer.
#[derive(Debug, Default)]
pub struct CommitOptions<'a> {
    /// Dockerfile instructions applied to the config (`-c`).
    pub changes: &'a [String],
    /// The history entry's comment (`-m`).
    pub message: Option<&'a str>,
    /// The image's author (`-a`).
    pub author: Option<&'a str>,
    /// `SOURCE_DATE_EPOCH`: the creation time and the layer's clamped mtimes.
    pub epoch: Option<i64>,
}

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A `-c` instruction that is invalid or not allowed.
    #[error("invalid change: {0}")]
    Change(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("write the container's layer: {0}")]
    Layer(#[from] LayerError),
    #[error("open the container's files: {0}")]
    Upper(std::io::Error),
    #[error("encode the image config: {0}")]
    Encode(serde_json::Error),
}

impl CommitError {
    /// Whether the user's input caused it.
    pub fn is_user_error(&self) -> bool {
        matches!(self, Self::Change(_))
    }
}

/// Commits `c`; returns the image ID and the manifest's descriptor (not yet in the index).
/// Hold a [`crate::store::Lease`] until the manifest is added to the index.
pub fn commit(
    store: &Store,
    c: &Container,
    opts: &CommitOptions<'_>,
) -> Result<(Digest, Descriptor), CommitError> {
    let manifest: ImageManifest = store.read_json(&c.config.manifest_digest, "image manifest")?;
    let config: ImageConfig = store.read_json(&manifest.config.digest, "image config")?;
    let mut state = ImageState::from_parts(&manifest, config);
    // The container's own settings, as `run` made them, then the changes.
    let cc = &mut state.config.config;
    cc.cmd = c.config.cmd.clone();
    cc.entrypoint = c.config.entrypoint.clone();
    cc.env = c.config.env.clone();
    cc.working_dir = c.config.working_dir.clone();
    cc.user = c.config.user.clone();
    state.config =
        apply_changes_to(state.config, opts.changes, true).map_err(CommitError::Change)?;

    let upper = Dir::open_ambient_dir(c.upper(), cap_std::ambient_authority())
        .map_err(CommitError::Upper)?;
    // The layer is hashed as it is written (on its own thread), not again by the store.
    let w = store.prehashed_blob_writer()?;
    let (tar, w) = layer::write_layer_pipelined(&upper, opts.epoch, w)?;
    let digest = tar.diff_id.as_uncompressed_digest();
    let size = w.commit(&digest)?;
    let created = match opts.epoch {
        Some(e) => OffsetDateTime::from_unix_timestamp(e).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        None => OffsetDateTime::now_utc(),
    };
    let mut created_by = c.config.path.clone();
    for a in &c.config.args {
        created_by.push(' ');
        created_by.push_str(a);
    }
    state.commit(
        created,
        created_by,
        Some(Layer {
            desc: Descriptor::new(media_types::OCI_LAYER, digest, size),
            diff_id: tar.diff_id,
        }),
    );
    if let Some(h) = state.config.history.last_mut() {
        h.comment = opts.message.unwrap_or_default().to_owned();
        h.author = opts.author.unwrap_or_default().to_owned();
    }
    if let Some(a) = opts.author {
        state.config.author = a.to_owned();
    }
    let (bytes, _) = state.config_bytes().map_err(CommitError::Encode)?;
    let (config_digest, config_size) = store.put_blob(&bytes[..])?;
    let manifest = state.manifest(Descriptor::new(
        media_types::OCI_CONFIG,
        config_digest,
        config_size,
    ));
    let desc = store.put_json(media_types::OCI_MANIFEST, &manifest)?;
    Ok((config_digest, desc))
}
