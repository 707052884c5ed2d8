//! Helpers shared by our own tools.

pub mod args;
pub mod exec;
pub mod mode;
pub mod sys;
pub mod time;
pub mod users;

use std::ffi::OsString;
use std::fmt::Display;
use std::io;

/// Prints `tool: msg` on stderr.
pub fn warn(tool: &str, msg: impl Display) {
    eprintln!("{tool}: {msg}");
}

/// An I/O error as coreutils print it: the text without Rust's ` (os error N)` suffix.
pub fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Reports a usage error (`tool: msg` and the `--help` hint) and returns the exit status.
pub fn usage_error(tool: &str, msg: impl Display, status: i32) -> i32 {
    warn(tool, msg);
    eprintln!("Try '{tool} --help' for more information.");
    status
}

/// `argv[1..]`.
pub fn rest(args: Vec<OsString>) -> impl Iterator<Item = OsString> {
    args.into_iter().skip(1)
}

/// Whether `--help` or `--version` was asked for; prints the answer.
pub fn help_or_version(tool: &str, args: &[OsString], usage: &str) -> bool {
    match args.get(1).and_then(|a| a.to_str()) {
        Some("--help") if args.len() == 2 => {
            println!("Usage: {usage}");
            true
        }
        Some("--version") if args.len() == 2 => {
            println!("{tool} (kiln coreutils) {}", env!("CARGO_PKG_VERSION"));
            true
        }
        _ => false,
    }
}

/// The start of a tool with GNU options: answers `--help` and `--version`, parses the rest
/// with `opts`; `Err` holds the exit status when the tool has nothing more to do.
pub fn parse_args(
    tool: &str,
    args: Vec<OsString>,
    usage: &str,
    opts: &'static [args::Opt],
) -> Result<args::Parsed, i32> {
    if help_or_version(tool, &args, usage) {
        return Err(0);
    }
    args::Parser::new(opts)
        .parse(rest(args))
        .map_err(|e| usage_error(tool, e, 1))
}

/// Where cp, mv and install put their sources.
pub enum Dest {
    /// Into this folder, each under its own name.
    Into(std::path::PathBuf),
    /// At exactly this path (one source).
    At(std::path::PathBuf),
}

/// The sources and destination of a GNU cp/mv-style command line: `-t DIR`, `-T`, several
/// sources, or a last operand that is a folder (or `into` set: cp's `--parents`) put the
/// sources into a folder; otherwise the one source goes to the last operand.
pub fn sources_and_dest(p: &args::Parsed, into: bool) -> Result<(&[OsString], Dest), String> {
    if let Some(t) = p.value("target-directory") {
        if p.has("no-target-directory") {
            return Err(
                "cannot combine --target-directory (-t) and --no-target-directory (-T)".into(),
            );
        }
        return Ok((&p.operands, Dest::Into(t.into())));
    }
    let Some((last, sources)) = p.operands.split_last() else {
        return Err("missing file operand".into());
    };
    if sources.is_empty() {
        return Err(format!(
            "missing destination file operand after {}",
            quote(last)
        ));
    }
    let last = std::path::PathBuf::from(last);
    if p.has("no-target-directory") {
        if sources.len() > 1 {
            return Err(format!("extra operand {}", quote(&sources[1])));
        }
        return Ok((sources, Dest::At(last)));
    }
    if sources.len() > 1 || into || last.is_dir() {
        Ok((sources, Dest::Into(last)))
    } else {
        Ok((sources, Dest::At(last)))
    }
}

/// A name quoted as GNU tools show it in messages: `'a b'`.
pub fn quote(p: impl AsRef<std::path::Path>) -> String {
    let s = p.as_ref().to_string_lossy();
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The entries of directory `dir`, as paths, sorted by name.
pub fn read_dir_sorted(dir: &std::path::Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut out = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

/// Creates `path` and its missing parents, calling `created` for each directory it made,
/// outermost first. An existing directory (or a symlink to one) is fine.
pub fn make_dirs(
    path: &std::path::Path,
    created: &mut dyn FnMut(&std::path::Path),
) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        make_dirs(parent, created)?;
    }
    match std::fs::create_dir(path) {
        Ok(()) => {
            created(path);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}
