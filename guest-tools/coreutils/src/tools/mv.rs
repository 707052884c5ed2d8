//! mv: rename files, or copy and remove them when the destination is on another file system
//! (a bind mount). uutils mv cannot do the latter on WASI: it compares the error with Linux's
//! `EXDEV` number, which WASI numbers differently.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::Path;

use crate::util::args::{Opt, Parsed};
use crate::util::{self, quote, strerror, usage_error, warn, Dest};

const TOOL: &str = "mv";
const USAGE: &str = "mv [OPTION]... [-T] SOURCE DEST\n  or:  mv [OPTION]... SOURCE... DIRECTORY\n  or:  mv [OPTION]... -t DIRECTORY SOURCE...";

const OPTS: &[Opt] = &[
    Opt::flag("force", 'f', "force"),
    Opt::flag("interactive", 'i', "interactive"),
    Opt::flag("no-clobber", 'n', "no-clobber"),
    Opt::flag("target-directory", 't', "target-directory").with_value(),
    Opt::flag("no-target-directory", 'T', "no-target-directory"),
    Opt::flag("update", 'u', "update"),
    Opt::flag("verbose", 'v', "verbose"),
];

/// What to do with a destination that exists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Existing {
    Replace,
    /// `-n`, and `-i` (there is no terminal to ask on).
    Keep,
    /// `-u`: replace only an older one.
    KeepNewer,
}

struct Mover {
    existing: Existing,
    verbose: bool,
    errors: bool,
}

fn lstat(p: &Path) -> io::Result<kiln_rt::Stat> {
    kiln_rt::stat(p, false)
}

/// The last component of `p` (`a/b/` -> `b`).
fn base_name(p: &Path) -> Option<&std::ffi::OsStr> {
    p.components().next_back().and_then(|c| match c {
        std::path::Component::Normal(n) => Some(n),
        _ => None,
    })
}

impl Mover {
    fn fail(&mut self, msg: impl std::fmt::Display) {
        warn(TOOL, msg);
        self.errors = true;
    }

    /// Moves `src` to exactly `dst`.
    fn mv(&mut self, src: &Path, dst: &Path) {
        let st = match lstat(src) {
            Ok(st) => st,
            Err(e) => return self.fail(format!("cannot stat {}: {}", quote(src), strerror(&e))),
        };
        if let Ok(d) = lstat(dst) {
            if (d.dev, d.ino) == (st.dev, st.ino) {
                return self.fail(format!(
                    "{} and {} are the same file",
                    quote(src),
                    quote(dst)
                ));
            }
            match self.existing {
                Existing::Keep => return,
                Existing::KeepNewer if d.mtime >= st.mtime => return,
                _ => {}
            }
            if d.is_dir() && !st.is_dir() {
                return self.fail(format!(
                    "cannot overwrite directory {} with non-directory {}",
                    quote(dst),
                    quote(src)
                ));
            }
            if !d.is_dir() && st.is_dir() {
                return self.fail(format!(
                    "cannot overwrite non-directory {} with directory {}",
                    quote(dst),
                    quote(src)
                ));
            }
        }
        match fs::rename(src, dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                if !self.move_across(src, dst, st.is_dir()) {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput && st.is_dir() => {
                return self.fail(format!(
                    "cannot move {} to a subdirectory of itself, {}",
                    quote(src),
                    quote(dst)
                ));
            }
            Err(e) => {
                return self.fail(format!(
                    "cannot move {} to {}: {}",
                    quote(src),
                    quote(dst),
                    strerror(&e)
                ))
            }
        }
        if self.verbose {
            println!("renamed {} -> {}", quote(src), quote(dst));
        }
    }

    /// Copies `src` over to `dst` on another file system, then removes it, as GNU mv does:
    /// a destination directory must be empty and is replaced.
    fn move_across(&mut self, src: &Path, dst: &Path, dir: bool) -> bool {
        if let Ok(d) = lstat(dst) {
            let removed = if d.is_dir() {
                fs::remove_dir(dst)
            } else {
                fs::remove_file(dst)
            };
            if let Err(e) = removed {
                self.fail(format!("cannot remove {}: {}", quote(dst), strerror(&e)));
                return false;
            }
        }
        if !super::cp::copy_archive(src, dst) {
            self.errors = true;
            return false;
        }
        let removed = if dir {
            fs::remove_dir_all(src)
        } else {
            fs::remove_file(src)
        };
        if let Err(e) = removed {
            self.fail(format!("cannot remove {}: {}", quote(src), strerror(&e)));
            return false;
        }
        true
    }
}

fn run(p: &Parsed) -> Result<bool, String> {
    let mut existing = Existing::Replace;
    for (key, _) in &p.opts {
        match *key {
            "force" => existing = Existing::Replace,
            "no-clobber" | "interactive" => existing = Existing::Keep,
            "update" if existing == Existing::Replace => existing = Existing::KeepNewer,
            _ => {}
        }
    }
    let mut m = Mover {
        existing,
        verbose: p.has("verbose"),
        errors: false,
    };
    let (sources, dir) = match util::sources_and_dest(p, false)? {
        (sources, Dest::At(dest)) => {
            m.mv(Path::new(&sources[0]), &dest);
            return Ok(!m.errors);
        }
        (sources, Dest::Into(dir)) => (sources, dir),
    };
    if sources.is_empty() {
        return Err("missing file operand".into());
    }
    if !dir.is_dir() {
        warn(TOOL, format!("target {} is not a directory", quote(&dir)));
        return Ok(false);
    }
    for src in sources {
        let src = Path::new(src);
        match base_name(src) {
            Some(name) => m.mv(src, &dir.join(name)),
            None => m.fail(format!(
                "cannot move {} to {}: Device or resource busy",
                quote(src),
                quote(&dir)
            )),
        }
    }
    Ok(!m.errors)
}

pub fn main(args: Vec<OsString>) -> i32 {
    let p = match util::parse_args(TOOL, args, USAGE, OPTS) {
        Ok(p) => p,
        Err(status) => return status,
    };
    match run(&p) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => usage_error(TOOL, e, 1),
    }
}
