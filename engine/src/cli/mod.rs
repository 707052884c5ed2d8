//! The `kiln` command line: plain clap-derive argument structs, one file per subcommand; the work
//! happens in each module's `run`. stdout carries data only; progress, warnings and errors go to
//! stderr through [`Printer`].

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Parser;

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
pub mod registry;
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

/// Declares the subcommands: the `Command` enum, and clap's `Subcommand` and
/// `FromArgMatches` for it. Each subcommand's arguments are added only when that subcommand is
/// used (`Command::defer`): building every subcommand's arguments, as the derive does, took
/// more of `kiln run`'s start than parsing its line.
macro_rules! subcommands {
    ($($(#[doc = $about:literal])+ $variant:ident($args:ty) = $name:literal $(, $hide:ident)?;)+) => {
        /// The subcommands.
        #[derive(Debug)]
        pub enum Command {
            $($(#[doc = $about])+ $variant($args),)+
        }

        impl clap::Subcommand for Command {
            fn augment_subcommands(cmd: clap::Command) -> clap::Command {
                cmd$(.subcommand(
                    clap::Command::new($name)
                        .about(concat!($($about),+).trim().trim_end_matches('.'))
                        $(.$hide(true))?
                        .defer(|c| <$args as clap::Args>::augment_args(c)),
                ))+
            }

            fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_subcommands(cmd)
            }

            fn has_subcommand(name: &str) -> bool {
                matches!(name, $($name)|+)
            }
        }

        impl clap::FromArgMatches for Command {
            fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
                Self::from_arg_matches_mut(&mut m.clone())
            }

            fn from_arg_matches_mut(m: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
                use clap::error::ErrorKind;
                match m.remove_subcommand() {
                    $(Some((name, mut sub)) if name == $name => Ok(Command::$variant(
                        <$args as clap::FromArgMatches>::from_arg_matches_mut(&mut sub)?,
                    )),)+
                    Some((name, _)) => Err(clap::Error::raw(
                        ErrorKind::InvalidSubcommand,
                        format!("unknown subcommand '{name}'"),
                    )),
                    None => Err(clap::Error::raw(
                        ErrorKind::MissingSubcommand,
                        "a subcommand is required",
                    )),
                }
            }

            fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
                *self = Self::from_arg_matches(m)?;
                Ok(())
            }
        }
    };
}

subcommands! {
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs) = "build";
    /// List images.
    Images(images::ImagesArgs) = "images";
    /// Give an image another name.
    Tag(tag::TagArgs) = "tag";
    /// Remove images.
    Rmi(rmi::RmiArgs) = "rmi";
    /// Show containers' or images' details as JSON.
    Inspect(inspect::InspectArgs) = "inspect";
    /// Show an image's history.
    History(history::HistoryArgs) = "history";
    /// Remove unused data: untagged images, unreferenced blobs and snapshots, build cache.
    Prune(prune::PruneArgs) = "prune";
    /// Verify every blob, reference and snapshot in the store.
    Fsck(fsck::FsckArgs) = "fsck";
    /// Create an image from a root filesystem tarball.
    Import(import::ImportArgs) = "import";
    /// Save images to a tar archive.
    Save(save::SaveArgs) = "save";
    /// Load images from a tar archive.
    Load(load::LoadArgs) = "load";
    /// Run a command in a new container.
    Run(run::RunArgs) = "run";
    /// List containers.
    Ps(containers::PsArgs) = "ps";
    /// Fetch the logs of a container.
    Logs(containers::LogsArgs) = "logs";
    /// Stop running containers.
    Stop(containers::StopArgs) = "stop";
    /// Send a signal to running containers.
    Kill(containers::KillArgs) = "kill";
    /// Start stopped containers.
    Start(containers::StartArgs) = "start";
    /// Remove containers.
    Rm(containers::RmArgs) = "rm";
    /// Create a new image from a container's changes.
    Commit(commit::CommitArgs) = "commit";
    /// Download an image from a registry.
    Pull(registry::PullArgs) = "pull";
    /// Upload an image to a registry.
    Push(registry::PushArgs) = "push";
    /// Log in to a registry.
    Login(registry::LoginArgs) = "login";
    /// Log out from a registry.
    Logout(registry::LogoutArgs) = "logout";
    /// Serve the Docker Engine API for the docker CLI (several tenants, with quotas).
    Serve(serve::ServeArgs) = "serve";
    /// Developer tools (`kiln debug parse FILE`).
    Debug(debug::DebugArgs) = "debug";
    /// Runs a detached container (started by `kiln run -d` and `kiln start`).
    ContainerSupervise(run::SuperviseArgs) = "container-supervise", hide;
}

/// The registry client of the CLI: the user's registry settings and docker credentials.
pub fn registry_client() -> anyhow::Result<crate::registry::Client> {
    use crate::registry::{Client, DockerConfig, Settings};
    let settings = match Settings::default_path() {
        Some(p) => Settings::load(&p)?,
        None => Settings::default(),
    };
    Ok(Client::new(
        std::sync::Arc::new(settings),
        std::sync::Arc::new(DockerConfig::from_env()),
        None,
    ))
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
        Command::Pull(a) => registry::pull_cmd(a, &open_store(root)?, printer),
        Command::Push(a) => registry::push_cmd(a, &open_store(root)?, printer),
        Command::Login(a) => registry::login(a, printer),
        Command::Logout(a) => registry::logout(a, printer),
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
            || c.downcast_ref::<crate::registry::RegistryError>()
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
    if text.contains("--pull=never") {
        out.push(
            "pull it with `kiln pull`, or bring it in with `kiln load` or `kiln import`".to_owned(),
        );
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

    #[test]
    fn each_subcommand_parses_into_its_own_variant() {
        use super::{Cli, Command};
        use clap::Parser;
        let parse = |line: &[&str]| Cli::try_parse_from(line).map(|c| c.command);
        assert!(matches!(parse(&["kiln", "images", "-q"]), Ok(Command::Images(a)) if a.quiet));
        assert!(matches!(parse(&["kiln", "ps", "-a"]), Ok(Command::Ps(a)) if a.all));
        assert!(matches!(
            parse(&["kiln", "--root", "/s", "run", "--rm", "img", "true", "-x"]),
            Ok(Command::Run(a)) if a.rm && a.image == "img" && a.command == ["true", "-x"]
        ));
        assert!(matches!(
            parse(&["kiln", "container-supervise", "abc"]),
            Ok(Command::ContainerSupervise(a)) if a.id == "abc"
        ));
        // `--root` is global: it is taken after the subcommand too.
        let cli = Cli::try_parse_from(["kiln", "images", "--root", "/s"]).unwrap();
        assert_eq!(cli.root.as_deref(), Some(std::path::Path::new("/s")));
        // The subcommand's own arguments are checked, and a missing subcommand is an error.
        assert!(parse(&["kiln", "run"]).is_err());
        assert!(parse(&["kiln", "images", "--no-such-flag"]).is_err());
        assert!(parse(&["kiln"]).is_err());
        assert!(parse(&["kiln", "bogus"]).is_err());
        // The list of subcommands shows each one's summary; the hidden one stays hidden.
        let help = <Cli as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        assert!(
            help.contains("Build an image from a Dockerfile\n"),
            "{help}"
        );
        assert!(!help.contains("container-supervise"), "{help}");
    }
}
