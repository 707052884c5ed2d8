//! `kiln serve`: the Docker Engine API server.

use std::path::PathBuf;

use clap::Args;

use super::UserError;
use crate::server::{Listen, ServeError, ServerConfig};

/// Serve the Docker Engine API (the part the docker CLI uses).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen: `unix:///PATH` or `tcp://HOST:PORT`; repeatable. Default:
    /// `unix://$KILN_ROOT/kiln.sock`. TCP needs a config file with tenants.
    #[arg(short = 'H', long = "host", value_name = "ADDRESS")]
    pub hosts: Vec<String>,
    /// The tenants, their tokens and quotas (see the server documentation).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `wasi`: builds and containers never use the native sandbox (overrides the config's
    /// `isolation`); `auto`: Linux binaries run natively.
    #[arg(long, value_enum, value_name = "MODE")]
    pub isolation: Option<super::build::IsolationArg>,
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(args: &ServeArgs, root: Option<&std::path::Path>) -> anyhow::Result<u8> {
    let root = match root {
        Some(r) => r.to_path_buf(),
        None => crate::store::Store::default_root()?,
    };
    let listen = args
        .hosts
        .iter()
        .map(|h| Listen::parse(h).map_err(UserError))
        .collect::<Result<Vec<_>, _>>()?;
    let config = match &args.config {
        Some(p) => Some(ServerConfig::load(p).map_err(|e| UserError(e.to_string()))?),
        None => None,
    };
    let wasi_only = args
        .isolation
        .map(|i| i == super::build::IsolationArg::Wasi);
    crate::server::serve(&root, &listen, config, wasi_only).map_err(|e| match e {
        ServeError::Usage(m) => anyhow::Error::new(UserError(m)),
        e => e.into(),
    })?;
    Ok(0)
}
