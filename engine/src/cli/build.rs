//! `kiln build`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::render::ProgressMode;

/// Network access for build steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// No network: loopback only (the default).
    None,
    /// The host's network (needed by `apt-get update` or `ADD https://...`).
    Host,
}

/// Compression of layers that leave the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// gzip (what docker expects).
    Gzip,
    /// zstd.
    Zstd,
}

/// Build an image from a Dockerfile and a context.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,

    /// The Dockerfile (default `CONTEXT/Dockerfile`); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,

    /// A build argument; without `=VALUE` the value comes from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// Build up to this stage.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Don't use the cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Print only the image ID on stdout.
    #[arg(short, long)]
    pub quiet: bool,

    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,

    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Network for RUN steps and ADD of URLs.
    #[arg(long, value_enum, default_value = "none")]
    pub network: NetworkArg,

    /// Compression for exported layers.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: CompressionArg,

    /// Set metadata labels on the image (`KEY=VALUE`).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// The context: a folder, or `-` for a tar (or tar.gz) on stdin.
    #[arg(value_name = "CONTEXT")]
    pub context: String,
}
