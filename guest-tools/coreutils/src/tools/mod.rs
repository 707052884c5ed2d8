//! Our own tools: the ones uutils cannot provide on WASI, or that need kiln's runtime.

pub mod chmod;
pub mod chown;
pub mod cp;
pub mod dd;
pub mod env;
pub mod find;
pub mod grep;
pub mod gzip;
pub mod id;
pub mod install;
pub mod ls;
pub mod mkdir;
pub mod mv;
pub mod sort;
pub mod stat;
pub mod sync;
pub mod tac;
pub mod tar;
pub mod test;
pub mod truth;
pub mod uname;
pub mod which;
pub mod xargs;
