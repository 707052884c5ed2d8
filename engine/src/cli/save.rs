//! `kiln save`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::build::CompressionArg;
use super::{Printer, UserError};
use crate::archive::{save, SaveFormat};
use crate::layer::Compression;
use crate::store::Store;

/// Archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// `docker save`'s format (also an OCI layout).
    Docker,
    /// An OCI image layout in a tar.
    Oci,
}

/// Save images to a tar archive (stdout by default).
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Archive format.
    #[arg(long, value_enum, default_value = "docker")]
    pub format: FormatArg,

    /// Layer compression in OCI archives (docker archives hold plain tars, as docker's do).
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: CompressionArg,

    /// Images to save (names or IDs).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// Runs `kiln save`.
pub fn run(args: &SaveArgs, store: &Store, printer: &mut Printer) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    let format = match args.format {
        FormatArg::Docker => SaveFormat::Docker,
        FormatArg::Oci => SaveFormat::Oci,
    };
    let compression = match args.compression {
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Zstd => Compression::Zstd,
    };
    match &args.output {
        Some(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let mut tmp =
                tempfile::NamedTempFile::new_in(dir.unwrap_or(std::path::Path::new(".")))?;
            save(
                store,
                &args.images,
                format,
                compression,
                std::io::BufWriter::new(tmp.as_file_mut()),
            )?;
            tmp.as_file().sync_all()?;
            tmp.persist(path)?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(UserError(
                    "refusing to write an archive to a terminal: use -o FILE or redirect stdout"
                        .into(),
                )
                .into());
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            save(store, &args.images, format, compression, &mut out)?;
            out.flush()?;
        }
    }
    printer.flush()?;
    Ok(0)
}
