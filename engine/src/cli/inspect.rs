//! `kiln inspect`: image details as a JSON array, in the shape of `docker image inspect`.

use clap::Args;
use serde::Serialize;

use super::images::finish_many;
use super::Printer;
use crate::describe::{inspect, inspect_container};
use crate::store::Store;

/// Display detailed information on containers or images.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Only this kind of object (`container` or `image`); otherwise a container of that name
    /// or ID comes first, as with docker.
    #[arg(long = "type", value_parser = ["container", "image"])]
    pub kind: Option<String>,
    /// Containers (names or IDs) or images (names, `name@digest`, or image IDs, or unique
    /// prefixes of them).
    #[arg(value_name = "NAME|ID", required = true)]
    pub images: Vec<String>,
}

/// Prints what was found as one JSON array (4-space indent, like docker); fails afterwards if
/// anything was not found.
pub fn run(args: &InspectArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let containers = crate::container::Containers::new(store)?;
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in &args.images {
        if args.kind.as_deref() != Some("image") {
            match containers.get(name) {
                Ok(c) => {
                    docs.push(inspect_container(&c));
                    continue;
                }
                Err(e) if args.kind.as_deref() == Some("container") => {
                    errors.push(e.into());
                    continue;
                }
                Err(_) => {}
            }
        }
        match store.resolve(name) {
            Ok(img) => docs.push(serde_json::to_value(inspect(&img))?),
            Err(e) => errors.push(e.into()),
        }
    }
    let mut bytes = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    docs.serialize(&mut serde_json::Serializer::with_formatter(&mut bytes, fmt))?;
    bytes.push(b'\n');
    out.data_raw(&bytes)?;
    finish_many(
        errors,
        args.images.len(),
        "objects could not be inspected",
        out,
    )
}
