//! `kiln inspect`: image details as a JSON array, in the shape of `docker image inspect`.

use clap::Args;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use super::images::finish_many;
use super::Printer;
use crate::image::ContainerConfig;
use crate::store::{Image, Store};

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

/// Go's zero `time.Time`, which docker prints for unknown times.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One element of `docker image inspect`'s array, keys in docker's order. `GraphDriver` is left
/// out: kiln has no graph driver.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Inspect<'a> {
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

pub(crate) fn inspect(img: &Image) -> Inspect<'_> {
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

/// `docker container inspect`'s document for a container (the fields kiln has).
pub(crate) fn inspect_container(c: &crate::container::Container) -> serde_json::Value {
    let cfg = &c.config;
    let st = &c.state;
    let time = |t: Option<time::OffsetDateTime>| {
        t.and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| GO_ZERO_TIME.to_owned())
    };
    serde_json::json!({
        "Id": cfg.id,
        "Created": time(Some(cfg.created)),
        "Path": cfg.path,
        "Args": cfg.args,
        "State": {
            "Status": st.status.as_str(),
            "Running": c.is_running(),
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": st.pid,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": time(st.started_at),
            "FinishedAt": time(st.finished_at),
        },
        "Image": cfg.image_id.to_string(),
        "LogPath": c.log_path(),
        "Name": format!("/{}", cfg.name),
        "HostConfig": {
            "NetworkMode": cfg.network,
            "AutoRemove": cfg.auto_remove,
            "Memory": cfg.memory,
            "PidsLimit": cfg.pids,
        },
        "Config": {
            "Hostname": cfg.hostname,
            "User": cfg.user,
            "Tty": cfg.tty,
            "OpenStdin": cfg.open_stdin,
            "Env": cfg.env,
            "Cmd": cfg.cmd,
            "Image": cfg.image,
            "WorkingDir": cfg.working_dir,
            "Entrypoint": cfg.entrypoint,
            "Labels": cfg.labels,
            "StopSignal": cfg.stop_signal,
        },
    })
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
