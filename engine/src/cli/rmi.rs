//! `kiln rmi`.

use clap::Args;

use super::images::finish_many;
use super::Printer;
use crate::describe::in_use;
use crate::store::{RemoveEvent, Store};

/// Remove one or more images.
///
/// A name removes that tag, and the image with it when it was the last one. An image ID removes
/// the image with all its tags; an image with several tags needs `--force`. The blobs of removed
/// images are freed by `kiln prune`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove an image by ID even when it has several tags.
    #[arg(short, long)]
    pub force: bool,

    /// Images to remove: names, `name@digest`, or image IDs (or unique prefixes of them).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

/// Removes each image, printing docker's `Untagged:` / `Deleted:` lines; keeps going after a
/// failure and fails at the end if any image could not be removed.
pub fn run(args: &RmiArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    let containers = crate::container::Containers::new(store)?.list()?;
    for image in &args.images {
        if !args.force {
            if let Some(conflict) = in_use(store, &containers, image) {
                errors.push(anyhow::Error::new(super::UserError(conflict)));
                continue;
            }
        }
        match store.remove(image, args.force) {
            Ok(events) => {
                for e in events {
                    out.data(&match e {
                        RemoveEvent::Untagged(r) => format!("Untagged: {}", r.familiar()),
                        RemoveEvent::Deleted(id) => format!("Deleted: {id}"),
                    })?;
                }
            }
            Err(e) => errors.push(e.into()),
        }
    }
    finish_many(
        errors,
        args.images.len(),
        "images could not be removed",
        out,
    )
}
