//! sync: flush files to storage. The host owns the storage, so without operands there is
//! nothing to do; named files are synced through their fds.

use std::ffi::OsString;
use std::fs::File;

use crate::util::args::{Opt, Parser};
use crate::util::{self, quote, strerror, usage_error, warn};

const OPTS: &[Opt] = &[
    Opt::flag("data", 'd', "data"),
    Opt::flag("file-system", 'f', "file-system"),
];

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version("sync", &args, "sync [OPTION] [FILE]...") {
        return 0;
    }
    let p = match Parser::new(OPTS).parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error("sync", e, 1),
    };
    let mut failed = false;
    for f in &p.operands {
        let synced = File::open(f).and_then(|file| {
            if p.has("data") {
                file.sync_data()
            } else {
                file.sync_all()
            }
        });
        if let Err(e) = synced {
            warn(
                "sync",
                format!("error syncing {}: {}", quote(f), strerror(&e)),
            );
            failed = true;
        }
    }
    i32::from(failed)
}
