//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`.

use std::io::{BufRead, IsTerminal, Read};

use clap::{Args, ValueEnum};

use super::render::transfer_printer;
use super::{Printer, UserError};
use crate::reference::ImageRef;
use crate::registry::creds::{hostname, login_key};
use crate::registry::pull::list_tags;
use crate::registry::{
    pull, push, Credential, DockerConfig, PlatformSpec, PullOptions, PushOptions,
};
use crate::store::Store;

/// Download an image from a registry.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Pull every tagged image of the repository.
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,

    /// The platform to pull from a multi-platform image (`os/arch[/variant]`).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// Print only the image's name.
    #[arg(short, long)]
    pub quiet: bool,

    /// The image: `NAME[:TAG|@DIGEST]`.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `--compression` of push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PushCompression {
    /// gzip, which every client reads.
    Gzip,
    /// zstd: smaller and much faster to unpack; docker 23+, podman, containerd 1.5+.
    Zstd,
}

/// Upload an image to a registry.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Print only the pushed digest's line.
    #[arg(short, long)]
    pub quiet: bool,

    /// How layers kept uncompressed in the store are compressed for the registry.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: PushCompression,

    /// The image: `NAME[:TAG]`.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Log in to a registry.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The user name.
    #[arg(short, long)]
    pub username: Option<String>,

    /// The password (visible to other users of this machine: prefer `--password-stdin`).
    #[arg(short, long)]
    pub password: Option<String>,

    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,

    /// The registry (Docker Hub when absent).
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

/// Log out from a registry.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (Docker Hub when absent).
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

/// Whether a name as typed has a tag or digest of its own (else docker says it uses
/// `latest`).
fn names_tag_or_digest(name: &str) -> bool {
    name.contains('@')
        || name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

fn parse_name(name: &str) -> Result<ImageRef, UserError> {
    ImageRef::parse(name).map_err(|e| UserError(e.to_string()))
}

/// Runs `kiln pull`.
pub fn pull_cmd(args: &PullArgs, store: &Store, printer: &mut Printer) -> anyhow::Result<u8> {
    let r = parse_name(&args.name)?;
    let platform = match &args.platform {
        Some(p) => PlatformSpec::parse(p).map_err(UserError)?,
        None => PlatformSpec::host(),
    };
    if args.all_tags && names_tag_or_digest(&args.name) {
        return Err(UserError("tag can't be used with --all-tags/-a".into()).into());
    }
    let client = super::registry_client()?;
    let quiet = args.quiet;
    let events = transfer_printer(quiet);
    let opts = PullOptions {
        platform,
        ..PullOptions::default()
    };
    let refs = if args.all_tags {
        let tags = list_tags(&client, &r)?;
        let mut refs = Vec::new();
        for t in tags {
            refs.push(r.with_tag(&t)?);
        }
        refs
    } else {
        if !quiet && !names_tag_or_digest(&args.name) {
            eprintln!("Using default tag: latest");
        }
        vec![r.clone()]
    };
    for one in &refs {
        pull(&client, store, one, &opts, &events)?;
    }
    printer.data(&if args.all_tags {
        r.name()
    } else {
        r.to_string()
    })?;
    Ok(0)
}

/// Runs `kiln push`.
pub fn push_cmd(args: &PushArgs, store: &Store, printer: &mut Printer) -> anyhow::Result<u8> {
    let r = parse_name(&args.name)?;
    let client = super::registry_client()?;
    let quiet = args.quiet;
    let events = transfer_printer(quiet);
    let opts = PushOptions {
        compression: match args.compression {
            PushCompression::Gzip => crate::layer::Compression::Gzip,
            PushCompression::Zstd => crate::layer::Compression::Zstd,
        },
        cancel: None,
    };
    let pushed = push(&client, store, &r, &opts, &events)?;
    if quiet {
        printer.data(&r.to_string())?;
    } else {
        printer.data(&format!("{}@{}", r.name(), pushed.digest))?;
    }
    Ok(0)
}

/// Runs `kiln login`.
pub fn login(args: &LoginArgs, printer: &mut Printer) -> anyhow::Result<u8> {
    if args.password.is_some() && args.password_stdin {
        return Err(
            UserError("--password and --password-stdin are mutually exclusive".into()).into(),
        );
    }
    let username = match &args.username {
        Some(u) => u.clone(),
        None if std::io::stdin().is_terminal() && !args.password_stdin => {
            eprint!("Username: ");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
        None => {
            return Err(UserError(
                "Must provide --username with --password-stdin (no terminal to ask on)".into(),
            )
            .into())
        }
    };
    let password = if let Some(p) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .lock()
            .take(64 << 10)
            .read_to_string(&mut s)?;
        s.trim_end_matches(['\n', '\r']).to_owned()
    } else if std::io::stdin().is_terminal() {
        read_hidden("Password: ")?
    } else {
        return Err(
            UserError("Cannot perform an interactive login from a non TTY device".into()).into(),
        );
    };
    if username.is_empty() || password.is_empty() {
        return Err(UserError("username and password must not be empty".into()).into());
    }
    let key = login_key(args.server.as_deref());
    let domain = match args.server.as_deref() {
        None => crate::reference::DEFAULT_DOMAIN.to_owned(),
        Some(s) => hostname(s),
    };
    let domain = if domain == "index.docker.io" {
        crate::reference::DEFAULT_DOMAIN.to_owned()
    } else {
        domain
    };
    let client = super::registry_client()?;
    let cred = Credential::Basic {
        username: username.clone(),
        password,
    };
    let stored = match client.login(&domain, &cred)? {
        Some(token) => Credential::IdentityToken { username, token },
        None => cred,
    };
    DockerConfig::from_env().store(&key, &stored)?;
    printer.data("Login Succeeded")?;
    Ok(0)
}

/// Runs `kiln logout`.
pub fn logout(args: &LogoutArgs, printer: &mut Printer) -> anyhow::Result<u8> {
    let key = login_key(args.server.as_deref());
    let shown = hostname(&key);
    if DockerConfig::from_env().erase(&key)? {
        printer.data(&format!("Removing login credentials for {shown}"))?;
    } else {
        printer.data(&format!("Not logged in to {shown}"))?;
    }
    Ok(0)
}

/// Asks for a line on the terminal without echoing it.
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    tcsetattr(&stdin, OptionalActions::Now, &saved)?;
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
