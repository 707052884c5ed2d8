//! install: copy files (or make directories) and set their mode and owner through kiln-rt.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::util::args::Opt;
use crate::util::mode::Mode;
use crate::util::{self, quote, strerror, usage_error, users, warn};

const TOOL: &str = "install";
const USAGE: &str = "install [OPTION]... [-T] SOURCE DEST\n   or: install [OPTION]... SOURCE... DIRECTORY\n   or: install [OPTION]... -t DIRECTORY SOURCE...\n   or: install [OPTION]... -d DIRECTORY...";

const OPTS: &[Opt] = &[
    Opt::flag("directory", 'd', "directory"),
    Opt::short("leading", 'D'),
    Opt::flag("mode", 'm', "mode").with_value(),
    Opt::flag("owner", 'o', "owner").with_value(),
    Opt::flag("group", 'g', "group").with_value(),
    Opt::flag("target-directory", 't', "target-directory").with_value(),
    Opt::flag("no-target-directory", 'T', "no-target-directory"),
    Opt::flag("verbose", 'v', "verbose"),
    Opt::flag("preserve-timestamps", 'p', "preserve-timestamps"),
    Opt::flag("compare", 'C', "compare"),
    // Accepted for compatibility: copying is what install always does, and nothing is
    // stripped or backed up.
    Opt::short("copy", 'c'),
    Opt::flag("strip", 's', "strip"),
    Opt::flag("backup", 'b', "backup"),
];

struct Settings {
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
    verbose: bool,
    preserve_times: bool,
    compare: bool,
}

impl Settings {
    fn finish(&self, path: &Path) -> io::Result<()> {
        if self.uid.is_some() || self.gid.is_some() {
            kiln_rt::chown(path, self.uid, self.gid, true)?;
        }
        kiln_rt::chmod(path, self.mode, true)
    }
}

fn same_contents(a: &Path, b: &Path) -> bool {
    match (fs::read(a), fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn install_file(src: &Path, dest: &Path, s: &Settings) -> Result<(), String> {
    let src_st = kiln_rt::stat(src, true)
        .map_err(|e| format!("cannot stat {}: {}", quote(src), strerror(&e)))?;
    if src_st.is_dir() {
        return Err(format!("omitting directory {}", quote(src)));
    }
    if let Ok(dst_st) = kiln_rt::stat(dest, true) {
        if (dst_st.dev, dst_st.ino) == (src_st.dev, src_st.ino) {
            return Err(format!(
                "{} and {} are the same file",
                quote(src),
                quote(dest)
            ));
        }
    }
    let unchanged = s.compare
        && same_contents(src, dest)
        && kiln_rt::stat(dest, true).is_ok_and(|d| {
            d.mode & 0o7777 == s.mode
                && s.uid.is_none_or(|u| u == d.uid)
                && s.gid.is_none_or(|g| g == d.gid)
        });
    if unchanged {
        return Ok(());
    }
    // Replace, never write through: an existing destination (or a symlink) is removed first.
    if fs::symlink_metadata(dest).is_ok_and(|m| !m.is_dir()) {
        fs::remove_file(dest)
            .map_err(|e| format!("cannot remove {}: {}", quote(dest), strerror(&e)))?;
    }
    let mut input =
        fs::File::open(src).map_err(|e| format!("cannot open {}: {}", quote(src), strerror(&e)))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| {
            format!(
                "cannot create regular file {}: {}",
                quote(dest),
                strerror(&e)
            )
        })?;
    io::copy(&mut input, &mut output).map_err(|e| {
        format!(
            "error copying {} to {}: {}",
            quote(src),
            quote(dest),
            strerror(&e)
        )
    })?;
    if s.preserve_times {
        output
            .set_modified(util::sys::system_time(src_st.mtime))
            .map_err(|e| {
                format!(
                    "cannot set time stamps for {}: {}",
                    quote(dest),
                    strerror(&e)
                )
            })?;
    }
    drop(output);
    s.finish(dest)
        .map_err(|e| format!("cannot set attributes of {}: {}", quote(dest), strerror(&e)))?;
    if s.verbose {
        println!("{} -> {}", quote(src), quote(dest));
    }
    Ok(())
}

fn make_parents(dir: &Path, verbose: bool) -> Result<(), String> {
    util::make_dirs(dir, &mut |d| {
        if verbose {
            println!("install: creating directory {}", quote(d));
        }
    })
    .map_err(|e| format!("cannot create directory {}: {}", quote(dir), strerror(&e)))
}

fn run(p: &crate::util::args::Parsed, s: &Settings) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if p.has("directory") {
        for d in &p.operands {
            let dir = Path::new(d);
            let made = make_parents(dir, s.verbose).and_then(|()| {
                s.finish(dir).map_err(|e| {
                    format!("cannot set attributes of {}: {}", quote(dir), strerror(&e))
                })
            });
            if let Err(e) = made {
                errors.push(e);
            }
        }
        return if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        };
    }
    let leading = p.has("leading");
    let (sources, target_dir, dest): (&[OsString], Option<PathBuf>, Option<PathBuf>) =
        if let Some(t) = p.value("target-directory") {
            (&p.operands, Some(PathBuf::from(t)), None)
        } else {
            let Some((last, sources)) = p.operands.split_last() else {
                return Err(vec!["missing file operand".to_string()]);
            };
            if sources.is_empty() {
                return Err(vec![format!(
                    "missing destination file operand after {}",
                    quote(last)
                )]);
            }
            let last = PathBuf::from(last);
            if !p.has("no-target-directory") && (sources.len() > 1 || last.is_dir()) {
                (sources, Some(last), None)
            } else {
                (sources, None, Some(last))
            }
        };
    if sources.is_empty() {
        return Err(vec!["missing file operand".to_string()]);
    }
    if let Some(dir) = &target_dir {
        if leading {
            make_parents(dir, s.verbose).map_err(|e| vec![e])?;
        }
        if !dir.is_dir() {
            return Err(vec![format!("target {} is not a directory", quote(dir))]);
        }
        for src in sources {
            let src = Path::new(src);
            let Some(name) = src.file_name() else {
                errors.push(format!("invalid source {}", quote(src)));
                continue;
            };
            if let Err(e) = install_file(src, &dir.join(name), s) {
                errors.push(e);
            }
        }
    } else if let Some(dest) = dest {
        if leading {
            if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                make_parents(parent, s.verbose).map_err(|e| vec![e])?;
            }
        }
        if let Err(e) = install_file(Path::new(&sources[0]), &dest, s) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    let p = match util::parse_args(TOOL, args, USAGE, OPTS) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let mode = match p.str_value("mode") {
        Err(e) => return usage_error(TOOL, e, 1),
        Ok(None) => 0o755,
        Ok(Some(m)) => match Mode::parse(m) {
            // Relative to 0, as GNU install does.
            Ok(m) => m.apply(0, p.has("directory"), 0),
            Err(e) => return usage_error(TOOL, e, 1),
        },
    };
    let uid = match p.str_value("owner") {
        Err(e) => return usage_error(TOOL, e, 1),
        Ok(None) => None,
        Ok(Some(o)) => match users::resolve_uid(o) {
            Some(u) => Some(u),
            None => {
                warn(TOOL, format!("invalid user {}", quote(o)));
                return 1;
            }
        },
    };
    let gid = match p.str_value("group") {
        Err(e) => return usage_error(TOOL, e, 1),
        Ok(None) => None,
        Ok(Some(g)) => match users::resolve_gid(g) {
            Some(g) => Some(g),
            None => {
                warn(TOOL, format!("invalid group {}", quote(g)));
                return 1;
            }
        },
    };
    let settings = Settings {
        mode,
        uid,
        gid,
        verbose: p.has("verbose"),
        preserve_times: p.has("preserve-timestamps"),
        compare: p.has("compare"),
    };
    if p.operands.is_empty() {
        return usage_error(TOOL, "missing file operand", 1);
    }
    match run(&p, &settings) {
        Ok(()) => 0,
        Err(errors) => {
            for e in errors {
                warn(TOOL, e);
            }
            1
        }
    }
}
