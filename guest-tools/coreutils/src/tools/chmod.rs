//! chmod: change permission bits, through `kiln_rt::chmod` so that the host records them.

use std::ffi::OsString;
use std::path::Path;

use crate::util::args::{Opt, Parser};
use crate::util::mode::{render, Mode};
use crate::util::{self, quote, strerror, usage_error, warn};

const TOOL: &str = "chmod";
const USAGE: &str =
    "chmod [OPTION]... MODE[,MODE]... FILE...\n   or: chmod [OPTION]... --reference=RFILE FILE...";

const OPTS: &[Opt] = &[
    Opt::flag("recursive", 'R', "recursive"),
    Opt::flag("verbose", 'v', "verbose"),
    Opt::flag("changes", 'c', "changes"),
    Opt::flag("silent", 'f', "silent"),
    Opt::long("silent", "quiet"),
    Opt::long("reference", "reference").with_value(),
    Opt::long("preserve-root", "preserve-root"),
    Opt::long("no-preserve-root", "no-preserve-root"),
];

struct Run {
    mode: Option<Mode>,
    reference: Option<u32>,
    recursive: bool,
    verbose: bool,
    changes: bool,
    silent: bool,
    umask: u32,
    failed: bool,
}

impl Run {
    fn fail(&mut self, msg: String) {
        if !self.silent {
            warn(TOOL, msg);
        }
        self.failed = true;
    }

    fn apply(&mut self, path: &Path, follow: bool) {
        let st = match kiln_rt::stat(path, follow) {
            Ok(st) => st,
            Err(e) => {
                return self.fail(format!("cannot access {}: {}", quote(path), strerror(&e)));
            }
        };
        // Symlinks met while recursing are not followed and have no mode of their own.
        if st.is_symlink() {
            return;
        }
        let old = st.mode & 0o7777;
        let new = match (&self.mode, self.reference) {
            (_, Some(r)) => r,
            (Some(m), None) => m.apply(old, st.is_dir(), self.umask),
            (None, None) => old,
        };
        if new != old {
            if let Err(e) = kiln_rt::chmod(path, new, true) {
                self.fail(format!(
                    "changing permissions of {}: {}",
                    quote(path),
                    strerror(&e)
                ));
            } else if self.verbose || self.changes {
                println!(
                    "mode of {} changed from {:04o} ({}) to {:04o} ({})",
                    quote(path),
                    old,
                    &render(old)[1..],
                    new,
                    &render(new)[1..]
                );
            }
        } else if self.verbose {
            println!(
                "mode of {} retained as {:04o} ({})",
                quote(path),
                old,
                &render(old)[1..]
            );
        }
        if self.recursive && st.is_dir() {
            match util::read_dir_sorted(path) {
                Ok(children) => {
                    for child in children {
                        self.apply(&child, false);
                    }
                }
                Err(e) => self.fail(format!(
                    "cannot read directory {}: {}",
                    quote(path),
                    strerror(&e)
                )),
            }
        }
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, USAGE) {
        return 0;
    }
    // `chmod -w file`: a mode that looks like an option is the mode operand.
    let mut rest: Vec<OsString> = util::rest(args).collect();
    let mut mode_arg = None;
    if let Some(i) = rest
        .iter()
        .position(|a| a.to_str().is_some_and(crate::util::mode::is_negative_mode))
    {
        mode_arg = Some(rest.remove(i));
    }
    let p = match Parser::new(OPTS).parse(rest) {
        Ok(p) => p,
        Err(e) => return usage_error(TOOL, e, 1),
    };
    let mut operands = p.operands.clone().into_iter();
    let reference = match p.value("reference") {
        Some(r) => match kiln_rt::stat(Path::new(r), true) {
            Ok(st) => Some(st.mode & 0o7777),
            Err(e) => {
                warn(
                    TOOL,
                    format!("failed to get attributes of {}: {}", quote(r), strerror(&e)),
                );
                return 1;
            }
        },
        None => None,
    };
    let mode = if reference.is_some() {
        None
    } else {
        let Some(m) = mode_arg.or_else(|| operands.next()) else {
            return usage_error(TOOL, "missing operand", 1);
        };
        let text = m.to_string_lossy();
        match Mode::parse(&text) {
            Ok(m) => Some(m),
            Err(e) => return usage_error(TOOL, e, 1),
        }
    };
    let files: Vec<OsString> = operands.collect();
    if files.is_empty() {
        return usage_error(TOOL, "missing operand", 1);
    }
    let mut run = Run {
        mode,
        reference,
        recursive: p.has("recursive"),
        verbose: p.has("verbose"),
        changes: p.has("changes"),
        silent: p.has("silent"),
        umask: kiln_rt::umask(None).unwrap_or(0o022),
        failed: false,
    };
    let preserve_root = p
        .opts
        .iter()
        .rev()
        .find(|(k, _)| *k == "preserve-root" || *k == "no-preserve-root")
        .is_some_and(|(k, _)| *k == "preserve-root");
    for f in &files {
        let path = Path::new(f);
        if run.recursive && preserve_root && path == Path::new("/") {
            warn(TOOL, "it is dangerous to operate recursively on '/'");
            warn(TOOL, "use --no-preserve-root to override this failsafe");
            run.failed = true;
            continue;
        }
        run.apply(path, true);
    }
    i32::from(run.failed)
}
