//! The `kiln` command line: plain clap-derive argument structs, one file per subcommand; the work
//! happens in each module's `run`. stdout carries data only; progress, warnings and errors go to
//! stderr through [`Printer`].

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::store::Store;

pub mod build;
pub mod commit;
pub mod containers;
pub mod debug;
pub mod fsck;
pub mod history;
pub mod images;
pub mod import;
pub mod inspect;
pub mod load;
pub mod prune;
pub mod render;
pub mod rmi;
pub mod run;
pub mod save;
pub mod serve;
pub mod tag;

/// Build OCI images from Dockerfiles, with RUN steps sandboxed in WebAssembly.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
pub struct Cli {
    /// The store folder (an OCI image layout plus kiln's state).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Give an image another name.
    Tag(tag::TagArgs),
    /// Remove images.
    Rmi(rmi::RmiArgs),
    /// Show containers' or images' details as JSON.
    Inspect(inspect::InspectArgs),
    /// Show an image's history.
    History(history::HistoryArgs),
    /// Remove unused data: untagged images, unreferenced blobs and snapshots, build cache.
    Prune(prune::PruneArgs),
    /// Verify every blob, reference and snapshot in the store.
    Fsck(fsck::FsckArgs),
    /// Create an image from a root filesystem tarball.
    Import(import::ImportArgs),
    /// Save images to a tar archive.
    Save(save::SaveArgs),
    /// Load images from a tar archive.
    Load(load::LoadArgs),
    /// Run a command in a new container.
    Run(run::RunArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Fetch the logs of a container.
    Logs(containers::LogsArgs),
    /// Stop running containers.
    Stop(containers::StopArgs),
    /// Send a signal to running containers.
    Kill(containers::KillArgs),
    /// Start stopped containers.
    Start(containers::StartArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// Create a new image from a container's changes.
    Commit(commit::CommitArgs),
    /// Serve the Docker Engine API for the docker CLI (several tenants, with quotas).
    Serve(serve::ServeArgs),
    /// Developer tools (`kiln debug parse FILE`).
    Debug(debug::DebugArgs),
    /// Runs a detached container (started by `kiln run -d` and `kiln start`).
    #[command(hide = true)]
    ContainerSupervise(run::SuperviseArgs),
}

fn open_store(root: Option<&std::path::Path>) -> anyhow::Result<Store> {
    let root = match root {
        Some(r) => r.to_path_buf(),
        None => Store::default_root()?,
    };
    Ok(Store::open(&root)?)
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli, printer: &mut Printer) -> anyhow::Result<u8> {
    let root = cli.root.as_deref();
    match &cli.command {
        Command::Build(a) => build::run(a, &open_store(root)?, printer),
        Command::Images(a) => images::run(a, &open_store(root)?, printer).map(|()| 0),
        Command::Tag(a) => tag::run(a, &open_store(root)?, printer).map(|()| 0),
        Command::Rmi(a) => rmi::run(a, &open_store(root)?, printer).map(|()| 0),
        Command::Inspect(a) => inspect::run(a, &open_store(root)?, printer).map(|()| 0),
        Command::History(a) => history::run(a, &open_store(root)?, printer).map(|()| 0),
        Command::Prune(a) => prune::run(a, &open_store(root)?, printer).map(|()| 0),
        Command::Fsck(a) => fsck::run(a, &open_store(root)?, printer).map(|()| 0),
        Command::Import(a) => import::run(a, &open_store(root)?, printer),
        Command::Save(a) => save::run(a, &open_store(root)?, printer),
        Command::Load(a) => load::run(a, &open_store(root)?, printer),
        Command::Run(a) => run::run(a, &open_store(root)?, printer),
        Command::Ps(a) => containers::ps(a, &open_store(root)?, printer).map(|()| 0),
        Command::Logs(a) => containers::logs(a, &open_store(root)?, printer).map(|()| 0),
        Command::Stop(a) => containers::stop(a, &open_store(root)?, printer).map(|()| 0),
        Command::Kill(a) => containers::kill(a, &open_store(root)?, printer).map(|()| 0),
        Command::Start(a) => containers::start(a, &open_store(root)?, printer),
        Command::Rm(a) => containers::rm(a, &open_store(root)?, printer).map(|()| 0),
        Command::Commit(a) => commit::run(a, &open_store(root)?, printer).map(|()| 0),
        Command::Serve(a) => serve::run(a, root),
        Command::Debug(a) => debug::run(a, printer),
        Command::ContainerSupervise(a) => run::supervise(a, &open_store(root)?),
    }
}

/// Exit code for an error: 1 when the user's input caused it, 2 otherwise; 125 when `kiln run`
/// could not run its container (docker's code, as the program's own codes take the others).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| c.is::<run::RunFailed>()) {
        return 125;
    }
    let user = err.chain().any(|c| {
        c.is::<UserError>()
            || c.downcast_ref::<crate::build::BuildError>()
                .is_some_and(|e| e.is_user_error())
            || c.downcast_ref::<crate::store::StoreError>()
                .is_some_and(|e| e.is_user_error())
            || c.downcast_ref::<crate::archive::ArchiveError>()
                .is_some_and(|e| e.is_user_error())
            || c.downcast_ref::<crate::context::ContextError>()
                .is_some_and(|e| e.is_user_error())
            || c.downcast_ref::<crate::container::ContainerError>()
                .is_some_and(|e| e.is_user_error())
            || c.downcast_ref::<crate::container::CommitError>()
                .is_some_and(|e| e.is_user_error())
            || c.is::<crate::reference::ReferenceError>()
            || c.is::<crate::layer::LayerError>()
    });
    if user {
        1
    } else {
        2
    }
}

/// The error and its causes on one line. Library errors often already print their source
/// (`open x: permission denied`); a cause whose text is already there is not repeated.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let c = cause.to_string();
        if text.is_empty() {
            text = c;
        } else if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// `hint:` lines worth printing after an error.
pub fn hints(err: &anyhow::Error) -> Vec<String> {
    let mut out = Vec::new();
    let text = error_text(err);
    if text.contains("--network=host") {
        return out;
    }
    if text.contains("is not in the store") {
        out.push("kiln has no registry client yet: bring base images in with `kiln load` or `kiln import`".to_owned());
    }
    out
}

/// A failure caused by the user's input (a bad Dockerfile, a missing image, a failing RUN):
/// exit code 1. Every other error is internal: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// The one place that writes to the terminal: data to stdout, everything else to stderr.
pub struct Printer {
    stdout: io::Stdout,
    stderr: io::Stderr,
    /// Whether colour and live redraws are allowed (a terminal, and `NO_COLOR` unset).
    pub color: bool,
}

impl Printer {
    /// A printer over the process's stdout and stderr.
    pub fn new() -> Self {
        use std::io::IsTerminal;
        let stderr = io::stderr();
        let color = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self {
            stdout: io::stdout(),
            stderr,
            color,
        }
    }

    /// Writes one line of data to stdout.
    pub fn data(&mut self, line: &str) -> io::Result<()> {
        let mut out = self.stdout.lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    }

    /// Writes raw bytes of data to stdout (no newline added).
    pub fn data_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stdout.lock().write_all(bytes)
    }

    /// Writes one line of human-facing text to stderr.
    pub fn status(&mut self, line: &str) -> io::Result<()> {
        let mut err = self.stderr.lock();
        err.write_all(line.as_bytes())?;
        err.write_all(b"\n")
    }

    /// Writes raw bytes of human-facing text (a container's stderr) to stderr.
    pub fn status_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stderr.lock().write_all(bytes)
    }

    /// Flushes stdout.
    pub fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()
    }
}

impl Default for Printer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
