//! `kiln import`.

use std::path::PathBuf;

use clap::Args;

use super::{Printer, UserError};
use crate::archive::import;
use crate::build::apply_changes;
use crate::reference::ImageRef;
use crate::store::Store;

/// Create an image from a root filesystem tarball (`-` for stdin), like `docker import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable.
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,

    /// Set a commit message.
    #[arg(short, long)]
    pub message: Option<String>,

    /// The tarball (plain, gzip, bzip2, xz or zstd), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,

    /// Name for the image.
    #[arg(value_name = "NAME[:TAG]")]
    pub name: Option<String>,
}

/// Runs `kiln import`.
pub fn run(args: &ImportArgs, store: &Store, printer: &mut Printer) -> anyhow::Result<u8> {
    let tag = match &args.name {
        Some(n) => {
            Some(ImageRef::parse(n).map_err(|e| UserError(format!("invalid name {n:?}: {e}")))?)
        }
        None => None,
    };
    let config = apply_changes(&args.changes, false).map_err(UserError)?;
    // Hold off garbage collection until the image is in the index.
    let _lease = store.lease()?;
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok());
    let source = args.file.display().to_string();
    let (id, manifest) = if source == "-" {
        import(
            store,
            std::io::stdin().lock(),
            "-",
            config,
            epoch,
            args.message.as_deref(),
        )?
    } else {
        let f = std::fs::File::open(&args.file)
            .map_err(|e| UserError(format!("open {source}: {e}")))?;
        import(
            store,
            std::io::BufReader::new(f),
            &source,
            config,
            epoch,
            args.message.as_deref(),
        )?
    };
    let size = store.blob_size(&manifest)?;
    let desc =
        crate::image::Descriptor::new(crate::image::media_types::OCI_MANIFEST, manifest, size);
    let tags: Vec<ImageRef> = tag.into_iter().collect();
    store.add_image(&desc, &tags)?;
    printer.data(&id.to_string())?;
    Ok(0)
}
