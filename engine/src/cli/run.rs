//! `kiln run`: create a container from an image and run it, in the foreground or detached
//! (`-d`); and the hidden `kiln container-supervise ID` that a detached container runs under.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::{Printer, UserError};
use crate::container::{self, Attach, Config, Container, Containers, CreateOptions, Privileges};
use crate::sandbox::{parse_size, RunControl, Sandbox};
use crate::store::Store;

/// Run a command in a new container.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open: the program reads kiln's stdin.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the program a terminal (a pty; with -i, kiln's terminal is relayed to it).
    #[arg(short, long)]
    pub tty: bool,
    /// Bind-mount a host folder: `HOST:TARGET[:ro]` (Linux programs only for now).
    #[arg(short, long = "volume", value_name = "HOST:TARGET[:ro]")]
    pub volume: Vec<String>,
    /// Name the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (`K=V`, or `K` to pass kiln's own value).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read environment variables from a file (`K=V` lines; `#` comments).
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: `name|uid[:group|gid]`.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Network: `none` (loopback only, the default) or `host`.
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    pub network: String,
    /// Override the image's ENTRYPOINT (an empty string clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name (default: the short container ID).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory limit (`512m`, `2g`).
    #[arg(short, long, default_value = "4g", value_parser = parse_size)]
    pub memory: u64,
    /// Most processes alive at once.
    #[arg(long, default_value_t = 4096)]
    pub pids_limit: u32,
    /// When to pull the image: `missing` (the default), `always` or `never`.
    #[arg(long, value_name = "WHEN", default_value = "missing", value_parser = super::build::parse_pull)]
    pub pull: crate::registry::PullPolicy,
    /// The platform to pull, if the image is pulled (`os/arch[/variant]`).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// What docker's run takes beyond kiln's defaults: each is refused with a message saying
    /// why, never accepted and ignored (hidden from the help).
    #[command(flatten)]
    pub refused: Box<RefusedArgs>,
    /// The image.
    pub image: String,
    /// The command and its arguments (default: the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// docker's run flags that ask for more than kiln gives a container ([`Privileges`]).
#[derive(Debug, Args)]
pub struct RefusedArgs {
    #[arg(long, hide = true)]
    privileged: bool,
    #[arg(long, hide = true)]
    cap_add: Vec<String>,
    #[arg(long, hide = true)]
    cap_drop: Vec<String>,
    #[arg(long, hide = true)]
    device: Vec<String>,
    #[arg(long, hide = true)]
    security_opt: Vec<String>,
    #[arg(long, hide = true)]
    pid: Option<String>,
    #[arg(long, hide = true)]
    ipc: Option<String>,
    #[arg(long, hide = true)]
    userns: Option<String>,
    #[arg(long, hide = true)]
    uts: Option<String>,
    #[arg(short = 'p', long, hide = true)]
    publish: Vec<String>,
    #[arg(short = 'P', long, hide = true)]
    publish_all: bool,
    #[arg(long, hide = true)]
    mount: Vec<String>,
}

impl RefusedArgs {
    fn privileges(&self) -> Privileges {
        let ns = [
            ("pid", &self.pid),
            ("ipc", &self.ipc),
            ("userns", &self.userns),
            ("uts", &self.uts),
        ];
        Privileges {
            privileged: self.privileged,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            devices: self.device.clone(),
            security_opt: self.security_opt.clone(),
            namespaces: ns
                .into_iter()
                .filter_map(|(f, m)| m.clone().map(|m| (f, m)))
                .collect(),
            publish: self.publish.clone(),
            publish_all: self.publish_all,
            mounts: self.mount.clone(),
        }
    }
}

/// Pulls the image as `--pull` says: when it is missing, docker's "Unable to find image"
/// line first.
fn pull_if_needed(args: &RunArgs, store: &Store) -> anyhow::Result<()> {
    use crate::registry::{PlatformSpec, PullOptions, PullPolicy};
    let missing = store.resolve(&args.image).is_err();
    let go = match args.pull {
        PullPolicy::Never => false,
        PullPolicy::Missing => missing,
        PullPolicy::Always => true,
    };
    let Some(r) = crate::reference::ImageRef::parse(&args.image)
        .ok()
        .filter(|_| go)
    else {
        return Ok(());
    };
    let platform = match &args.platform {
        Some(p) => PlatformSpec::parse(p).map_err(super::UserError)?,
        None => PlatformSpec::host(),
    };
    if missing {
        eprintln!("Unable to find image '{}' locally", r.familiar());
    }
    let client = super::registry_client()?;
    let events = super::render::transfer_printer(false);
    crate::registry::pull(
        &client,
        store,
        &r,
        &PullOptions {
            platform,
            ..PullOptions::default()
        },
        &events,
    )?;
    Ok(())
}

/// A failure of `kiln run` itself, not of the program: exit code 125, as docker.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunFailed(pub String);

fn failed(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(RunFailed(e.to_string()))
}

/// Runs `kiln run`; returns the program's exit status (or 0 with `-d`).
pub fn run(args: &RunArgs, store: &Store, out: &mut Printer) -> anyhow::Result<u8> {
    let containers = Containers::new(store).map_err(failed)?;
    pull_if_needed(args, store).map_err(|e| failed(super::error_text(&e)))?;
    if args.detach {
        let config = make_config(args, store).map_err(|e| failed(format!("{e:#}")))?;
        let c = containers.create(config).map_err(failed)?;
        start_detached(store, &c).map_err(failed)?;
        out.data(&c.config.id)?;
        return Ok(0);
    }
    // Signals are blocked before any thread starts (the engine's too), so that they reach
    // the one thread that forwards them.
    let control = proxied_signals();
    let sandbox = Sandbox::new();
    let config = make_config(args, store).map_err(|e| failed(format!("{e:#}")))?;
    let (mut c, held) = containers.create_running(config).map_err(failed)?;
    let status = supervise_here(
        store,
        &containers,
        &sandbox,
        &control,
        &mut c,
        Attach::Foreground,
        Some(held),
    );
    // This process ends with the container: the OS takes the compiled code back faster than
    // unmapping it piece by piece does.
    std::mem::forget(sandbox);
    status.map_err(failed)
}

/// Runs `c` to its end in this process, with kiln's signals proxied to it and, for an attached
/// `-it` container, kiln's terminal in raw mode; returns the program's status.
pub(super) fn supervise_here(
    store: &Store,
    containers: &Containers,
    sandbox: &Sandbox,
    control: &RunControl,
    c: &mut Container,
    attach: Attach,
    held: Option<container::RunLock>,
) -> Result<u8, container::SuperviseError> {
    let _raw = (matches!(attach, Attach::Foreground) && c.config.tty && c.config.open_stdin)
        .then(RawTerminal::enter)
        .flatten();
    let status = container::supervise(store, containers, sandbox, c, &attach, control, held)?;
    Ok(u8::try_from(status.clamp(0, 255)).unwrap_or(255))
}

/// kiln's own terminal in raw mode while a `-it` container has it; restored on drop.
pub(super) struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    /// Raw mode on kiln's stdin, when it is a terminal.
    pub(super) fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// The config of a new container from the image's and the command line's settings.
fn make_config(args: &RunArgs, store: &Store) -> anyhow::Result<Config> {
    let mut env = Vec::new();
    for file in &args.env_file {
        env.extend(read_env_file(file)?);
    }
    for e in &args.env {
        if e.contains('=') {
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.push(format!("{e}={v}"));
        }
    }
    let opts = CreateOptions {
        image: args.image.clone(),
        name: args.name.clone(),
        entrypoint: args.entrypoint.clone().map(|e| vec![e]),
        command: args.command.clone(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        network: args.network.clone(),
        tty: args.tty,
        open_stdin: args.interactive,
        auto_remove: args.rm,
        memory: args.memory,
        pids: args.pids_limit,
        binds: args.volume.clone(),
        disk: None,
        wasi_only: false,
        log_limit: None,
        privileges: args.refused.privileges(),
    };
    container::make_config(store, &opts).map_err(|e| {
        if e.is_user_error() {
            anyhow::Error::new(UserError(e.to_string()))
        } else {
            e.into()
        }
    })
}

/// `--env-file`: `K=V` lines, `K` alone takes kiln's own value, `#` comments and blank lines
/// skipped.
fn read_env_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let f = std::fs::File::open(path)
        .map_err(|e| UserError(format!("open env file {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.with_context(|| format!("read {}", path.display()))?;
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.contains('=') {
            out.push(t.to_owned());
        } else if let Ok(v) = std::env::var(t.trim_end()) {
            out.push(format!("{}={v}", t.trim_end()));
        }
    }
    Ok(out)
}

/// Starts a detached supervisor for `c` and waits until the container runs (or failed to).
pub(super) fn start_detached(store: &Store, c: &Container) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("find the kiln executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(store.root())
        .args(["container-supervise", &c.config.id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; the supervisor leaves kiln's session so that a
    // terminal hang-up or Ctrl-C does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start the container's supervisor")?;
    let containers = Containers::new(store)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // This start shows as a new start time (a restarted container has an old one).
    let before = c.state.started_at;
    loop {
        let now = containers.get(&c.config.id);
        match now {
            Ok(now) if now.state.started_at != before => {
                if now.state.status == container::Status::Exited && !now.state.error.is_empty() {
                    anyhow::bail!("{}", now.state.error);
                }
                break;
            }
            // Removed by --rm after it already ended.
            Err(container::ContainerError::NotFound(_)) => break,
            _ => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            // It ended without starting the program: say why.
            if let Ok(now) = containers.get(&c.config.id) {
                if now.state.started_at == before && !now.state.error.is_empty() {
                    anyhow::bail!("{}", now.state.error);
                }
            }
            if !status.success() {
                anyhow::bail!("the container's supervisor failed ({status})");
            }
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the container did not start within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The supervisor is reaped by init once this process exits.
    std::mem::forget(child);
    Ok(())
}

/// Forwards the signals kiln receives to the container's main program (docker's
/// `--sig-proxy`), and window-size changes of kiln's terminal to the container's: they are
/// blocked in every thread and taken by one that waits for them.
/// A control for a run in this process, with kiln's signals forwarded to it ([`proxy_signals`]).
pub(super) fn proxied_signals() -> RunControl {
    let control = RunControl::new();
    proxy_signals(control.clone());
    control
}

fn proxy_signals(control: RunControl) {
    let mut sigs = crate::sandbox::FORWARDED_SIGNALS.to_vec();
    sigs.push(libc::SIGWINCH);
    // SAFETY: plain sigset manipulation and pthread_sigmask on the calling thread, before the
    // threads that inherit the mask are started.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in sigs {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let _ = std::thread::Builder::new()
        .name("kiln-signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: sigwait on a valid set.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if sig == libc::SIGWINCH {
                if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdout()) {
                    control.resize(ws.ws_row, ws.ws_col);
                }
            } else {
                control.signal(sig);
            }
        });
}

/// Runs a detached container to its end (`kiln container-supervise ID`).
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The container's full ID.
    pub id: String,
}

/// The hidden subcommand behind `run -d` and `start`.
pub fn supervise(args: &SuperviseArgs, store: &Store) -> anyhow::Result<u8> {
    let containers = Containers::new(store)?;
    let mut c = containers.get(&args.id)?;
    Ok(supervise_here(
        store,
        &containers,
        &Sandbox::new(),
        &proxied_signals(),
        &mut c,
        Attach::Detached,
        None,
    )?)
}
