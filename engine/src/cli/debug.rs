//! `kiln debug`: tools for looking inside kiln.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Printer, UserError};

/// Developer tools.
#[derive(Debug, Args)]
pub struct DebugArgs {
    #[command(subcommand)]
    pub command: DebugCommand,
}

/// The debug subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Parse a Dockerfile and print BuildKit's AST dump of it.
    Parse {
        /// The Dockerfile (`-` for stdin).
        file: PathBuf,
    },
    /// Run kiln's guest sh in the WASI sandbox, with kiln's stdin, stdout and stderr.
    ///
    /// The rootfs is an overlay whose lower layer is this machine's `/` (without /proc and /sys),
    /// read-only, so the current folder, `$TMP` and everything on `PATH` are where they are on
    /// the host; writes land in a private upper that is discarded at exit. For testing the shell (e.g. as
    /// run_spec.py's `--shell`): it gives guests a read-only view of the whole host.
    Sh {
        /// Arguments for sh (`-c SCRIPT`, a script file, ...); none: the script is read from stdin.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Runs `kiln debug`.
pub fn run(args: &DebugArgs, printer: &mut Printer) -> anyhow::Result<u8> {
    match &args.command {
        DebugCommand::Parse { file } => {
            let (name, bytes) = if file.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf)?;
                ("-".to_owned(), buf)
            } else {
                let bytes = std::fs::read(file)
                    .map_err(|e| UserError(format!("read {}: {e}", file.display())))?;
                (file.display().to_string(), bytes)
            };
            let text = String::from_utf8_lossy(&bytes);
            let df = crate::dockerfile::parse(&text)
                .map_err(|e| UserError(format!("{name}:{}: {}", e.line, e.kind)))?;
            for w in &df.warnings {
                printer.status(&format!("{name}:{}: warning: {}", w.line, w.message))?;
            }
            printer.data(&df.dump())?;
            Ok(0)
        }
        DebugCommand::Sh { args } => debug_sh(args),
    }
}

fn debug_sh(args: &[String]) -> anyhow::Result<u8> {
    use crate::rootfs::{ContainerPath, Creds};
    use crate::sandbox::{
        Isolation, Limits, NetworkMode, Orphans, Rootfs, RunSpec, Sandbox, StdioMode,
    };
    // The upper (and the native sandbox's work folders beside it) must not be inside the host's
    // root filesystem, which is the lower: the kernel's overlayfs refuses that. /dev/shm is a
    // tmpfs of its own.
    let shm = std::path::Path::new("/dev/shm");
    let scratch = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    // A layer above the host's root that hides its /proc and /sys (kernel state of other
    // processes is none of a guest's business, even in a debugging shell).
    let mask = tempfile::Builder::new()
        .prefix("kiln-debug-sh-")
        .tempdir_in(&scratch)?;
    for hidden in ["proc", "sys"] {
        std::fs::write(mask.path().join(format!(".wh.{hidden}")), b"")?;
    }
    let upper = tempfile::Builder::new()
        .prefix("kiln-debug-sh-")
        .tempdir_in(&scratch)?;
    let cwd = std::env::current_dir()?;
    let cwd = cwd
        .to_str()
        .ok_or_else(|| UserError("the current folder's name is not UTF-8".into()))?;
    let mut argv = vec!["kiln:sh".to_owned()];
    argv.extend(args.iter().cloned());
    let spec = RunSpec {
        extra_hosts: Vec::new(),
        argv,
        env: std::env::vars().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: ContainerPath::parse(cwd),
        creds: Creds {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        },
        limits: Limits::default(),
        isolation: Isolation::Auto,
        stdio: StdioMode::Inherit,
        control: None,
        binds: Vec::new(),
        terminal: None,
        stdin: None,
        network: NetworkMode::None,
        hostname: "kiln-debug".to_owned(),
        // A script's background jobs finish and write, as under a shell on the host.
        orphans: Orphans::Awaited,
    };
    let sandbox = Sandbox::new();
    let rootfs = Rootfs {
        lowers: vec!["/".into(), mask.path().to_path_buf()],
        upper: upper.path().to_path_buf(),
    };
    let outcome = sandbox.run(&rootfs, &spec, &mut |_| {})?;
    if let Some(limit) = outcome.limit {
        let (name, value) = spec.limits.describe(limit);
        return Err(UserError(format!("sh exceeded its {name} limit ({value})")).into());
    }
    Ok(u8::try_from(outcome.status).unwrap_or(255))
}
