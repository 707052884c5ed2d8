//! `kiln load`.

use std::path::PathBuf;

use clap::Args;

use super::Printer;
use crate::archive::load;
use crate::store::Store;

/// Load images from a docker-archive or OCI archive (stdin by default).
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Print only the loaded images' names.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `kiln load`.
pub fn run(args: &LoadArgs, store: &Store, printer: &mut Printer) -> anyhow::Result<u8> {
    let report = match &args.input {
        Some(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| super::UserError(format!("open {}: {e}", p.display())))?;
            load(store, std::io::BufReader::new(f))?
        }
        None => load(store, std::io::BufReader::new(std::io::stdin().lock()))?,
    };
    for line in report.loaded {
        printer.data(&line)?;
    }
    Ok(0)
}
