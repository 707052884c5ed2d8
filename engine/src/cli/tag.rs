//! `kiln tag`.

use clap::Args;

use super::Printer;
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
    let target = ImageRef::parse(&args.target)?;
    store.tag(&args.source, &target)?;
    Ok(())
}
