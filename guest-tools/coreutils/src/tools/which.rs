//! which: the programs that names run, along `$PATH`.

use std::ffi::OsString;

use crate::util::args::{Opt, Parser};
use crate::util::exec::{find_all, is_executable};
use crate::util::{self, usage_error};

const OPTS: &[Opt] = &[Opt::short("all", 'a'), Opt::short("silent", 's')];

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version("which", &args, "which [-as] COMMAND...") {
        return 0;
    }
    let p = match Parser::new(OPTS).parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error("which", e, 2),
    };
    if p.operands.is_empty() {
        return 1;
    }
    let (all, silent) = (p.has("all"), p.has("silent"));
    let mut status = 0;
    for name in &p.operands {
        let found = if name.as_encoded_bytes().contains(&b'/') {
            let path = std::path::PathBuf::from(name);
            if is_executable(&path) {
                vec![path]
            } else {
                Vec::new()
            }
        } else {
            find_all(name)
        };
        if found.is_empty() {
            status = 1;
        }
        if !silent {
            let shown = if all {
                &found[..]
            } else {
                &found[..found.len().min(1)]
            };
            for path in shown {
                println!("{}", path.display());
            }
        }
    }
    status
}
