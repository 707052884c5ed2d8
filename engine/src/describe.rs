//! What docker shows of images and containers (inspect documents, history steps, status and
//! age texts, reference filters, the in-use refusal of `rmi`): shared by the CLI and the
//! server, so that neither edge reaches into the other.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::container::{Container, Status};
use crate::image::ContainerConfig;
use crate::store::{Image, Store};

/// Go's zero `time.Time`, which docker prints for unknown times.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One element of `docker image inspect`'s array, keys in docker's order. `GraphDriver` is left
/// out: kiln has no graph driver.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect<'a> {
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

pub fn inspect(img: &Image) -> Inspect<'_> {
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
pub fn inspect_container(c: &crate::container::Container) -> serde_json::Value {
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

/// One history entry with what docker shows beside it.
pub struct Step<'a> {
    pub id: String,
    pub created: Option<OffsetDateTime>,
    pub created_by: String,
    pub size: u64,
    pub comment: &'a str,
}

/// The history entries newest first; the newest carries the image ID and the others
/// `<missing>` (kiln keeps no intermediate images). Each entry that made a layer gets the next
/// layer's size.
pub fn steps(img: &Image, no_trunc: bool) -> Vec<Step<'_>> {
    let mut layers = img.manifest.layers.iter();
    let mut out: Vec<Step<'_>> = img
        .config
        .history
        .iter()
        .map(|h| Step {
            id: "<missing>".to_owned(),
            created: h.created,
            created_by: h.created_by.replace('\t', " "),
            size: if h.empty_layer {
                0
            } else {
                layers.next().map_or(0, |l| l.size)
            },
            comment: &h.comment,
        })
        .collect();
    out.reverse();
    if let Some(newest) = out.first_mut() {
        newest.id = if no_trunc {
            img.id().to_string()
        } else {
            img.id().short()
        };
    }
    out
}

/// `Up 3 minutes`, `Exited (0) 2 seconds ago`, `Created`.
pub fn status_text(c: &Container, now: OffsetDateTime) -> String {
    let s = &c.state;
    match s.status {
        Status::Created => "Created".to_owned(),
        Status::Running => format!(
            "Up {}",
            human_duration(now - s.started_at.unwrap_or(c.config.created))
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code,
            human_duration(now - s.finished_at.unwrap_or(c.config.created))
        ),
    }
}

/// `go-units.HumanDuration`.
pub fn human_duration(d: time::Duration) -> String {
    let seconds = d.whole_seconds();
    if seconds < 1 {
        return "Less than a second".to_owned();
    }
    if seconds == 1 {
        return "1 second".to_owned();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = d.whole_minutes();
    if minutes == 1 {
        return "About a minute".to_owned();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // Go rounds to the nearest hour here (half away from zero).
    let hours = (seconds + 1800) / 3600;
    if hours == 1 {
        return "About an hour".to_owned();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", d.whole_hours() / 24 / 365)
}

/// docker's reference filter: the pattern matches the familiar `name:tag` or just the name.
pub fn matches_reference(pattern: &str, repo: &str, tag: &str) -> bool {
    glob(pattern, &format!("{repo}:{tag}")) || glob(pattern, repo)
}

/// Go's `path.Match` for `*` and `?` (neither matches `/`); other characters match themselves.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if (c == '?' && t[ti] != '/') || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // `*` may absorb one more character, unless it is a `/`.
                Some((sp, st)) if t[st] != '/' => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                _ => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// docker's refusal to remove an image a container uses (removing one of several tags is
/// allowed), or `None`.
pub fn in_use(
    store: &Store,
    containers: &[crate::container::Container],
    image: &str,
) -> Option<String> {
    let found = store.resolve(image).ok()?;
    let by_tag = found.tags.len() > 1
        && found
            .tags
            .iter()
            .any(|t| crate::reference::ImageRef::parse(image).is_ok_and(|r| &r == t));
    let c = containers
        .iter()
        .find(|c| c.config.image_id == found.id() && !by_tag)?;
    Some(format!(
        "conflict: unable to remove repository reference \"{image}\" (must force) - container {} is using its referenced image {}",
        c.short_id(),
        &found.id().hex()[..12]
    ))
}
