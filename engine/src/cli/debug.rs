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
    }
}
