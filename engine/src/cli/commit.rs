//! `kiln commit`.

use clap::Args;

use super::{Printer, UserError};
use crate::container::{self, CommitOptions, Containers};
use crate::reference::ImageRef;
use crate::store::Store;

/// Create a new image from a container's changes.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR, HEALTHCHECK); repeatable.
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author (`Jane Doe <jane@example.com>`).
    #[arg(short, long)]
    pub author: Option<String>,
    /// Accepted for docker compatibility: kiln commits a running container's files as they
    /// are, without pausing it.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pause: bool,
    /// The container.
    pub container: String,
    /// Name for the image.
    #[arg(value_name = "NAME[:TAG]")]
    pub name: Option<String>,
}

pub fn run(args: &CommitArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let tag = match &args.name {
        Some(n) => {
            Some(ImageRef::parse(n).map_err(|e| UserError(format!("invalid name {n:?}: {e}")))?)
        }
        None => None,
    };
    let c = Containers::new(store)?.get(&args.container)?;
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok());
    // Hold off garbage collection until the image is in the index.
    let _lease = store.lease()?;
    let (id, manifest) = container::commit(
        store,
        &c,
        &CommitOptions {
            changes: &args.changes,
            message: args.message.as_deref(),
            author: args.author.as_deref(),
            epoch,
        },
    )?;
    let tags: Vec<ImageRef> = tag.into_iter().collect();
    store.add_image(&manifest, &tags)?;
    out.data(&id.to_string())?;
    Ok(())
}
