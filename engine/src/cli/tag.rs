//! `kiln tag`.

use clap::Args;

use super::images::user_facing;
use super::{Printer, UserError};
use crate::reference::ImageRef;
use crate::store::Store;

/// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to tag: a name, `name@digest`, or an image ID (or a unique prefix of one).
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    pub source: String,

    /// The new name (`name`, `name:tag`, `registry:5000/name:tag`).
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    pub target: String,
}

/// Tags the image; prints nothing, like docker.
pub fn run(args: &TagArgs, store: &Store, _out: &mut Printer) -> anyhow::Result<()> {
    let target = ImageRef::parse(&args.target).map_err(|e| UserError(e.to_string()))?;
    store.tag(&args.source, &target).map_err(user_facing)
}
