//! Container commands besides `run`: `ps`, `logs`, `stop`, `kill`, `start`, `rm`.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::Duration;

use clap::Args;
use time::OffsetDateTime;

use super::images::{finish_many, Table};
use super::run::{proxied_signals, start_detached, supervise_here};
use super::{Printer, UserError};
use crate::container::{parse_signal, wait_stopped, Attach, Container, Containers};
use crate::describe::{human_duration, status_text};
use crate::store::Store;

/// List containers.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: only running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Only print container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// `table` (default) or `json` (one object per line).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// The command as `docker ps` shows it: quoted, and cut to 20 characters unless `full`.
fn command_text(c: &Container, full: bool) -> String {
    let mut cmd = c.config.path.clone();
    for a in &c.config.args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    if !full && cmd.chars().count() > 20 {
        cmd = cmd.chars().take(19).collect::<String>() + "…";
    }
    serde_json::to_string(&cmd).unwrap_or(cmd)
}

pub fn ps(args: &PsArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let containers = Containers::new(store)?;
    let now = OffsetDateTime::now_utc();
    let list: Vec<Container> = containers
        .list()?
        .into_iter()
        .filter(|c| args.all || c.is_running())
        .collect();
    let id = |c: &Container| {
        if args.no_trunc {
            c.config.id.clone()
        } else {
            c.short_id().to_owned()
        }
    };
    if args.quiet {
        for c in &list {
            out.data(&id(c))?;
        }
        return Ok(());
    }
    if args.format == "json" {
        for c in &list {
            let created = c
                .config
                .created
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let labels: Vec<String> = c
                .config
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let row = serde_json::json!({
                "Command": command_text(c, args.no_trunc),
                "CreatedAt": created,
                "ID": id(c),
                "Image": c.config.image,
                "Labels": labels.join(","),
                "LocalVolumes": "0",
                "Mounts": "",
                "Names": c.config.name,
                "Networks": c.config.network,
                "Ports": "",
                "RunningFor": format!("{} ago", human_duration(now - c.config.created)),
                "Size": "0B",
                "State": c.state.status.as_str(),
                "Status": status_text(c, now),
            });
            out.data(&row.to_string())?;
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]);
    for c in &list {
        table.row(vec![
            id(c),
            c.config.image.clone(),
            command_text(c, args.no_trunc),
            format!("{} ago", human_duration(now - c.config.created)),
            status_text(c, now),
            String::new(),
            c.config.name.clone(),
        ]);
    }
    table.print(out)?;
    Ok(())
}

/// Fetch the logs of a container.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output while the container runs.
    #[arg(short, long)]
    pub follow: bool,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only the last N lines (`all` for every one).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// The container.
    pub container: String,
}

/// One record of the log.
#[derive(serde::Deserialize)]
struct LogRecord {
    log: String,
    stream: String,
    time: String,
}

pub fn logs(args: &LogsArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let containers = Containers::new(store)?;
    let c = containers.get(&args.container)?;
    let tail: Option<usize> = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse()
                .map_err(|_| UserError(format!("invalid --tail value {n:?}")))?,
        ),
    };
    let path = c.log_path();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let print = |rec: LogRecord, out: &mut Printer| -> std::io::Result<()> {
        let text = if args.timestamps {
            format!("{} {}", rec.time, rec.log)
        } else {
            rec.log
        };
        if rec.stream == "stderr" {
            out.status_raw(text.as_bytes())
        } else {
            out.data_raw(text.as_bytes())?;
            out.flush()
        }
    };
    let mut records: Vec<LogRecord> = Vec::new();
    let mut reader = BufReader::new(&mut file);
    let mut line = String::new();
    let mut pos = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        pos += n as u64;
        if let Ok(rec) = serde_json::from_str::<LogRecord>(&line) {
            records.push(rec);
        }
    }
    let skip = tail.map_or(0, |t| records.len().saturating_sub(t));
    for rec in records.into_iter().skip(skip) {
        print(rec, out)?;
    }
    if !args.follow {
        return Ok(());
    }
    drop(reader);
    loop {
        file.seek(SeekFrom::Start(pos))?;
        let mut reader = BufReader::new(&mut file);
        let mut progressed = false;
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            pos += n as u64;
            progressed = true;
            if let Ok(rec) = serde_json::from_str::<LogRecord>(&line) {
                print(rec, out)?;
            }
        }
        if !progressed {
            match containers.get(&c.config.id) {
                Ok(now) if now.is_running() => {}
                _ => return Ok(()),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs `one` for each named container, printing each name it succeeds for (as docker does);
/// fails at the end when any failed.
fn each(
    keys: &[String],
    what: &str,
    out: &mut Printer,
    mut one: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    for key in keys {
        match one(key) {
            Ok(()) => out.data(key)?,
            Err(e) => errors.push(e),
        }
    }
    finish_many(errors, keys.len(), what, out)
}

/// Stop running containers: the stop signal, then SIGKILL after a grace period.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
    /// Signal to send first (default: the image's STOPSIGNAL, else SIGTERM).
    #[arg(short, long)]
    pub signal: Option<String>,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

pub fn stop(args: &StopArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let containers = Containers::new(store)?;
    each(
        &args.containers,
        "containers could not be stopped",
        out,
        |key| {
            let c = containers.get(key)?;
            if c.is_running() {
                let first = match (&args.signal, c.config.stop_signal.as_str()) {
                    (Some(s), _) => parse_signal(s).map_err(|e| UserError(e.to_string()))?,
                    (None, "") => libc::SIGTERM,
                    (None, s) => parse_signal(s).map_err(|e| UserError(e.to_string()))?,
                };
                let _ = c.signal(first);
                if !wait_stopped(&containers, &c.config.id, Duration::from_secs(args.time)) {
                    let _ = c.signal(libc::SIGKILL);
                    wait_stopped(&containers, &c.config.id, Duration::from_secs(30));
                }
            }
            Ok(())
        },
    )
}

/// Send a signal to running containers.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

pub fn kill(args: &KillArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let containers = Containers::new(store)?;
    let sig = parse_signal(&args.signal).map_err(|e| UserError(e.to_string()))?;
    each(
        &args.containers,
        "containers could not be killed",
        out,
        |key| {
            let c = containers.get(key)?;
            if !c.is_running() {
                return Err(UserError(format!(
                    "cannot kill container: {key}: container {} is not running",
                    c.config.id
                ))
                .into());
            }
            c.signal(sig)?;
            if sig == libc::SIGKILL {
                wait_stopped(&containers, &c.config.id, Duration::from_secs(30));
            }
            Ok(())
        },
    )
}

/// Start stopped containers.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the output and wait; kiln exits with the container's status.
    #[arg(short, long)]
    pub attach: bool,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

pub fn start(args: &StartArgs, store: &Store, out: &mut Printer) -> anyhow::Result<u8> {
    let containers = Containers::new(store)?;
    if args.attach {
        let [key] = args.containers.as_slice() else {
            return Err(UserError(
                "you cannot start and attach multiple containers at once".into(),
            )
            .into());
        };
        let mut c = containers.get(key)?;
        return Ok(supervise_here(
            store,
            &containers,
            &crate::sandbox::Sandbox::new(),
            &proxied_signals(),
            &mut c,
            Attach::Foreground,
            None,
        )?);
    }
    each(
        &args.containers,
        "containers could not be started",
        out,
        |key| {
            let c = containers.get(key)?;
            if !c.is_running() {
                start_detached(store, &c)?;
            }
            Ok(())
        },
    )?;
    Ok(0)
}

/// Remove containers.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(short, long)]
    pub force: bool,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

pub fn rm(args: &RmArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let containers = Containers::new(store)?;
    each(
        &args.containers,
        "containers could not be removed",
        out,
        |key| {
            let c = containers.get(key)?;
            if c.is_supervised() {
                if !args.force {
                    return Err(UserError(format!(
                    "cannot remove container {key}: container is running: stop the container before removing or force remove"
                ))
                .into());
                }
                let _ = c.signal(libc::SIGKILL);
                wait_stopped(&containers, &c.config.id, Duration::from_secs(30));
            }
            containers.remove(&c)?;
            Ok(())
        },
    )
}
