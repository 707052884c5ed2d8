//! mkdir: `-m` goes through `kiln_rt::chmod`, which WASI's `mkdir` has no way to pass.

use std::ffi::OsString;
use std::path::Path;

use crate::util::args::{Opt, Parser};
use crate::util::mode::Mode;
use crate::util::{self, quote, strerror, usage_error, warn};

const TOOL: &str = "mkdir";

const OPTS: &[Opt] = &[
    Opt::flag("parents", 'p', "parents"),
    Opt::flag("mode", 'm', "mode").with_value(),
    Opt::flag("verbose", 'v', "verbose"),
];

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, "mkdir [OPTION]... DIRECTORY...") {
        return 0;
    }
    let p = match Parser::new(OPTS).parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error(TOOL, e, 1),
    };
    if p.operands.is_empty() {
        return usage_error(TOOL, "missing operand", 1);
    }
    let umask = kiln_rt::umask(None).unwrap_or(0o022);
    let mode = match p.str_value("mode") {
        Err(e) => return usage_error(TOOL, e, 1),
        Ok(None) => None,
        Ok(Some(m)) => match Mode::parse(m) {
            // Relative to a=rwx, as GNU mkdir does.
            Ok(m) => Some(m.apply(0o777, true, umask)),
            Err(e) => return usage_error(TOOL, e, 1),
        },
    };
    let verbose = p.has("verbose");
    let report = |d: &Path| {
        if verbose {
            println!("mkdir: created directory {}", quote(d));
        }
    };
    let mut failed = false;
    for d in &p.operands {
        let path = Path::new(d);
        let made = if p.has("parents") {
            util::make_dirs(path, &mut |d| report(d))
        } else {
            std::fs::create_dir(path).map(|()| report(path))
        };
        if let Err(e) = made {
            warn(
                TOOL,
                format!("cannot create directory {}: {}", quote(path), strerror(&e)),
            );
            failed = true;
            continue;
        }
        if let Some(m) = mode {
            if let Err(e) = kiln_rt::chmod(path, m, true) {
                warn(
                    TOOL,
                    format!(
                        "cannot set permissions of {}: {}",
                        quote(path),
                        strerror(&e)
                    ),
                );
                failed = true;
            }
        }
    }
    i32::from(failed)
}
