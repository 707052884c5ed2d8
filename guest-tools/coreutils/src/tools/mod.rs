//! Our own tools: the ones uutils cannot provide on WASI, or that need kiln's runtime.

pub mod chmod;
pub mod chown;
pub mod env;
pub mod find;
pub mod grep;
pub mod gzip;
pub mod id;
pub mod install;
pub mod mkdir;
pub mod stat;
pub mod sync;
pub mod tar;
pub mod test;
pub mod which;
pub mod xargs;
