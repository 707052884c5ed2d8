//! `kiln inspect`: image details as a JSON array, in the shape of `docker image inspect`.

use clap::Args;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use super::images::finish_many;
use super::Printer;
use crate::image::ContainerConfig;
use crate::store::{Image, Store};

/// Display detailed information on one or more images.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images: names, `name@digest`, or image IDs (or unique prefixes of them).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

/// Go's zero `time.Time`, which docker prints for unknown times.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One element of `docker image inspect`'s array, keys in docker's order. `GraphDriver` is left
/// out: kiln has no graph driver.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect<'a> {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: &'static str,
    comment: &'a str,
    created: String,
    docker_version: &'static str,
    author: &'a str,
    config: &'a ContainerConfig,
    architecture: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    variant: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    os_version: &'a str,
    size: u64,
    #[serde(rename = "RootFS")]
    root_fs: RootFs,
    metadata: Metadata,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFs {
    #[serde(rename = "Type")]
    kind: &'static str,
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    last_tag_time: &'static str,
}

fn inspect(img: &Image) -> Inspect<'_> {
    let c = &img.config;
    Inspect {
        id: img.id().to_string(),
        repo_tags: img.tags.iter().map(|t| t.familiar()).collect(),
        repo_digests: img.repo_digests(),
        parent: "",
        // docker (containerd store) shows the last history entry's comment.
        comment: c.history.last().map_or("", |h| h.comment.as_str()),
        created: c
            .created
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| GO_ZERO_TIME.to_owned()),
        docker_version: "",
        author: &c.author,
        config: &c.config,
        architecture: &c.architecture,
        variant: &c.variant,
        os: &c.os,
        os_version: &c.os_version,
        size: img.size(),
        root_fs: RootFs {
            kind: "layers",
            layers: c.rootfs.diff_ids.iter().map(ToString::to_string).collect(),
        },
        metadata: Metadata {
            last_tag_time: GO_ZERO_TIME,
        },
    }
}

/// Prints the images found as one JSON array (4-space indent, like docker); fails afterwards if
/// any was not found.
pub fn run(args: &InspectArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &args.images {
        match store.resolve(name) {
            Ok(img) => found.push(img),
            Err(e) => errors.push(e.into()),
        }
    }
    let docs: Vec<Inspect<'_>> = found.iter().map(inspect).collect();
    let mut bytes = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    docs.serialize(&mut serde_json::Serializer::with_formatter(&mut bytes, fmt))?;
    bytes.push(b'\n');
    out.data_raw(&bytes)?;
    finish_many(
        errors,
        args.images.len(),
        "images could not be inspected",
        out,
    )
}
