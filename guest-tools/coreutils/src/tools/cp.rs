//! cp: copy files and directory trees with GNU semantics, keeping modes, owners and times
//! through kiln-rt (uutils cp cannot set modes or owners on WASI).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kiln_rt::Stat;

use crate::util::args::{self, Opt, Parsed, Parser};
use crate::util::{self, quote, strerror, usage_error, warn, Dest};

const TOOL: &str = "cp";
const USAGE: &str = "cp [OPTION]... [-T] SOURCE DEST\n  or:  cp [OPTION]... SOURCE... DIRECTORY\n  or:  cp [OPTION]... -t DIRECTORY SOURCE...";

const OPTS: &[Opt] = &[
    Opt::flag("archive", 'a', "archive"),
    Opt::short("d", 'd'),
    Opt::flag("force", 'f', "force"),
    Opt::flag("interactive", 'i', "interactive"),
    Opt::flag("cmdline-deref", 'H', "dereference-command-line"),
    Opt::flag("dereference", 'L', "dereference"),
    Opt::flag("link", 'l', "link"),
    Opt::flag("no-clobber", 'n', "no-clobber"),
    Opt::flag("no-dereference", 'P', "no-dereference"),
    Opt::short("p", 'p'),
    Opt::long("preserve", "preserve"),
    // `--preserve=LIST` (an optional value, which the parser does not know) is renamed to
    // this before parsing.
    Opt::long("preserve-list", "preserve-list").with_value(),
    Opt::long("no-preserve", "no-preserve").with_value(),
    Opt::long("parents", "parents"),
    Opt::flag("recursive", 'R', "recursive"),
    Opt::short("recursive", 'r'),
    Opt::long("remove-destination", "remove-destination"),
    Opt::flag("symbolic-link", 's', "symbolic-link"),
    Opt::flag("target-directory", 't', "target-directory").with_value(),
    Opt::flag("no-target-directory", 'T', "no-target-directory"),
    Opt::flag("update", 'u', "update"),
    Opt::flag("verbose", 'v', "verbose"),
    Opt::flag("one-file-system", 'x', "one-file-system"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deref {
    Never,
    CommandLine,
    Always,
}

#[derive(Debug, Clone, Copy, Default)]
struct Preserve {
    mode: bool,
    ownership: bool,
    timestamps: bool,
    links: bool,
}

impl Preserve {
    /// Applies a `--preserve`/`--no-preserve` list.
    fn set(&mut self, list: &str, on: bool) -> Result<(), String> {
        for attr in list.split(',') {
            match attr {
                "mode" => self.mode = on,
                "ownership" => self.ownership = on,
                "timestamps" => self.timestamps = on,
                "links" => self.links = on,
                "all" => {
                    *self = Preserve {
                        mode: on,
                        ownership: on,
                        timestamps: on,
                        links: on,
                    }
                }
                // Nothing to keep in a layer for these.
                "context" | "xattr" => {}
                _ => return Err(format!("invalid argument {} for '--preserve'", quote(attr))),
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Overwrite,
    Skip,
    SkipOlder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkMode {
    Copy,
    Hard,
    Symbolic,
}

struct Options {
    recursive: bool,
    deref: Deref,
    preserve: Preserve,
    existing: Existing,
    force: bool,
    remove_first: bool,
    verbose: bool,
    link: LinkMode,
    one_fs: bool,
    umask: u32,
}

/// State of one cp run: hard links already copied (source (dev, ino) -> copy).
struct Copier<'a> {
    o: &'a Options,
    links: HashMap<(u64, u64), PathBuf>,
    errors: bool,
}

/// The last component of `p` as the shell sees it (`a/.` -> `.`, `a/b/` -> `b`).
fn last_component(p: &OsStr) -> &OsStr {
    let b = p.as_encoded_bytes();
    let mut end = b.len();
    while end > 1 && b[end - 1] == b'/' {
        end -= 1;
    }
    let start = b[..end]
        .iter()
        .rposition(|&c| c == b'/')
        .map_or(0, |i| i + 1);
    // SAFETY: slicing at ASCII `/` boundaries keeps the encoding valid.
    unsafe { OsStr::from_encoded_bytes_unchecked(&b[start..end]) }
}

fn lstat(p: &Path) -> io::Result<Stat> {
    kiln_rt::stat(p, false)
}

fn same(a: &Stat, b: &Stat) -> bool {
    (a.dev, a.ino) == (b.dev, b.ino)
}

impl Copier<'_> {
    fn fail(&mut self, msg: impl std::fmt::Display) {
        warn(TOOL, msg);
        self.errors = true;
    }

    /// The stat cp acts on for `src`: following symlinks or not.
    fn source_stat(&self, src: &Path, top: bool) -> io::Result<Stat> {
        let follow = match self.o.deref {
            Deref::Always => true,
            Deref::CommandLine => top,
            Deref::Never => false,
        };
        let st = lstat(src)?;
        if follow && st.is_symlink() {
            kiln_rt::stat(src, true)
        } else {
            Ok(st)
        }
    }

    /// Copies `src` to `dst` (both full paths).
    fn copy(&mut self, src: &Path, dst: &Path, top: bool) {
        let st = match self.source_stat(src, top) {
            Ok(st) => st,
            Err(e) => {
                return self.fail(format!("cannot stat {}: {}", quote(src), strerror(&e)));
            }
        };
        let dst_st = lstat(dst).ok();
        if let Some(d) = &dst_st {
            let d_followed = kiln_rt::stat(dst, true).unwrap_or(*d);
            if same(&st, &d_followed) && self.o.link == LinkMode::Copy {
                return self.fail(format!(
                    "{} and {} are the same file",
                    quote(src),
                    quote(dst)
                ));
            }
        }
        if st.is_dir() {
            if !self.o.recursive {
                return self.fail(format!(
                    "-r not specified; omitting directory {}",
                    quote(src)
                ));
            }
            return self.copy_dir(src, dst, &st, dst_st.as_ref());
        }
        if let Some(d) = &dst_st {
            let d_is_dir = d.is_dir() || kiln_rt::stat(dst, true).is_ok_and(|s| s.is_dir());
            if d_is_dir {
                return self.fail(format!(
                    "cannot overwrite directory {} with non-directory",
                    quote(dst)
                ));
            }
            match self.o.existing {
                Existing::Skip => return,
                Existing::SkipOlder if d.mtime >= st.mtime => return,
                _ => {}
            }
        }
        if let Err(e) = self.copy_leaf(src, dst, &st, dst_st.is_some()) {
            return self.fail(e);
        }
        if self.o.verbose {
            println!("{} -> {}", quote(src), quote(dst));
        }
    }

    /// Copies a non-directory.
    fn copy_leaf(&mut self, src: &Path, dst: &Path, st: &Stat, exists: bool) -> Result<(), String> {
        let remove = |dst: &Path| {
            fs::remove_file(dst)
                .map_err(|e| format!("cannot remove {}: {}", quote(dst), strerror(&e)))
        };
        if self.o.link != LinkMode::Copy {
            if exists && (self.o.force || self.o.remove_first) {
                remove(dst)?;
            }
            return match self.o.link {
                LinkMode::Symbolic => util::sys::symlink(src, dst).map_err(|e| {
                    format!(
                        "cannot create symbolic link {} to {}: {}",
                        quote(dst),
                        quote(src),
                        strerror(&e)
                    )
                }),
                _ => fs::hard_link(src, dst).map_err(|e| {
                    format!(
                        "cannot create hard link {} to {}: {}",
                        quote(dst),
                        quote(src),
                        strerror(&e)
                    )
                }),
            };
        }
        if self.o.preserve.links && st.nlink > 1 {
            if let Some(first) = self.links.get(&(st.dev, st.ino)) {
                if exists {
                    remove(dst)?;
                }
                return fs::hard_link(first, dst).map_err(|e| {
                    format!(
                        "cannot create hard link {} to {}: {}",
                        quote(dst),
                        quote(first),
                        strerror(&e)
                    )
                });
            }
            self.links.insert((st.dev, st.ino), dst.to_path_buf());
        }
        if st.is_symlink() {
            let target = fs::read_link(src).map_err(|e| {
                format!("cannot read symbolic link {}: {}", quote(src), strerror(&e))
            })?;
            if exists {
                remove(dst)?;
            }
            util::sys::symlink(&target, dst).map_err(|e| {
                format!(
                    "cannot create symbolic link {}: {}",
                    quote(dst),
                    strerror(&e)
                )
            })?;
            if self.o.preserve.ownership {
                // Best effort, as GNU cp: only root may give files away.
                let _ = kiln_rt::chown(dst, Some(st.uid), Some(st.gid), false);
            }
            return Ok(());
        }
        if !st.is_file() {
            return Err(format!(
                "cannot copy special file {}: not supported",
                quote(src)
            ));
        }
        if exists && self.o.remove_first {
            remove(dst)?;
        }
        let mut input = fs::File::open(src)
            .map_err(|e| format!("cannot open {} for reading: {}", quote(src), strerror(&e)))?;
        let open = |dst: &Path| {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(dst)
        };
        let created = !exists || self.o.remove_first;
        let (mut output, created) = match open(dst) {
            Ok(f) => (f, created),
            Err(_) if exists && self.o.force => {
                remove(dst)?;
                let f = open(dst).map_err(|e| {
                    format!(
                        "cannot create regular file {}: {}",
                        quote(dst),
                        strerror(&e)
                    )
                })?;
                (f, true)
            }
            Err(e) => {
                let verb = if exists {
                    "cannot open"
                } else {
                    "cannot create regular file"
                };
                let how = if exists { " for writing" } else { "" };
                return Err(format!("{verb} {}{how}: {}", quote(dst), strerror(&e)));
            }
        };
        io::copy(&mut input, &mut output).map_err(|e| {
            format!(
                "error copying {} to {}: {}",
                quote(src),
                quote(dst),
                strerror(&e)
            )
        })?;
        if self.o.preserve.timestamps {
            let times = fs::FileTimes::new()
                .set_accessed(util::sys::system_time(st.atime))
                .set_modified(util::sys::system_time(st.mtime));
            output
                .set_times(times)
                .map_err(|e| format!("preserving times for {}: {}", quote(dst), strerror(&e)))?;
        }
        drop(output);
        self.set_attrs(dst, st, created)
    }

    /// Owner and mode of a copy: the source's with `--preserve`, else a new file gets the
    /// source's permission bits less the umask (an existing one keeps its own).
    fn set_attrs(&self, dst: &Path, st: &Stat, created: bool) -> Result<(), String> {
        let p = self.o.preserve;
        if p.ownership && kiln_rt::chown(dst, Some(st.uid), Some(st.gid), false).is_err() {
            // Not allowed to give it away: keep at least the group, as GNU cp does.
            let _ = kiln_rt::chown(dst, None, Some(st.gid), false);
        }
        let mode = if p.mode {
            Some(st.mode & 0o7777)
        } else if created {
            Some(st.mode & 0o777 & !self.o.umask)
        } else {
            None
        };
        match mode {
            Some(m) => kiln_rt::chmod(dst, m, true)
                .map_err(|e| format!("setting permissions for {}: {}", quote(dst), strerror(&e))),
            None => Ok(()),
        }
    }

    /// Whether directory `dst` lies inside directory `src` (copying it would never end).
    fn inside(src: &Stat, dst: &Path) -> bool {
        let Ok(abs) = kiln_rt::absolute(dst) else {
            return false;
        };
        abs.ancestors()
            .filter_map(|a| kiln_rt::stat(a, true).ok())
            .any(|a| same(&a, src))
    }

    fn copy_dir(&mut self, src: &Path, dst: &Path, st: &Stat, dst_st: Option<&Stat>) {
        let created = match dst_st {
            Some(d) => {
                let is_dir = d.is_dir() || kiln_rt::stat(dst, true).is_ok_and(|s| s.is_dir());
                if !is_dir {
                    return self.fail(format!(
                        "cannot overwrite non-directory {} with directory {}",
                        quote(dst),
                        quote(src)
                    ));
                }
                false
            }
            None => {
                if Self::inside(st, dst.parent().unwrap_or(Path::new("."))) {
                    return self.fail(format!(
                        "cannot copy a directory, {}, into itself, {}",
                        quote(src),
                        quote(dst)
                    ));
                }
                if let Err(e) = fs::create_dir(dst) {
                    return self.fail(format!(
                        "cannot create directory {}: {}",
                        quote(dst),
                        strerror(&e)
                    ));
                }
                // Writable by us while its contents are copied; the final mode comes last.
                let _ = kiln_rt::chmod(dst, (st.mode & 0o777) | 0o700, true);
                if self.o.verbose {
                    println!("{} -> {}", quote(src), quote(dst));
                }
                true
            }
        };
        let dst_dir = kiln_rt::stat(dst, true).ok();
        let entries = match util::read_dir_sorted(src) {
            Ok(e) => e,
            Err(e) => return self.fail(format!("cannot access {}: {}", quote(src), strerror(&e))),
        };
        for entry in entries {
            let Some(name) = entry.file_name() else {
                continue;
            };
            let child_src = src.join(name);
            // `cp -r . sub`: never copy the copy into itself.
            if let (Some(d), Ok(c)) = (&dst_dir, lstat(&child_src)) {
                if same(d, &c) {
                    continue;
                }
                if self.o.one_fs && c.is_dir() && c.dev != st.dev {
                    continue;
                }
            }
            self.copy(&child_src, &dst.join(name), false);
        }
        if let Err(e) = self.set_attrs(dst, st, created) {
            self.fail(e);
        }
        if self.o.preserve.timestamps {
            if let Err(e) = util::sys::set_mtime(dst, util::sys::system_time(st.mtime)) {
                self.fail(format!(
                    "preserving times for {}: {}",
                    quote(dst),
                    strerror(&e)
                ));
            }
        }
    }

    /// `--parents`: copies `src` to `dir/src`, creating the missing folders on the way like
    /// their sources.
    fn copy_parents(&mut self, src: &OsStr, dir: &Path) {
        let rel = Path::new(src);
        let mut made = dir.to_path_buf();
        let mut from = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        let Some((_, parents)) = comps.split_last() else {
            return;
        };
        for c in parents {
            from.push(c);
            if matches!(c, std::path::Component::RootDir) {
                continue;
            }
            made.push(c);
            if made.is_dir() {
                continue;
            }
            if let Err(e) = fs::create_dir(&made) {
                return self.fail(format!(
                    "cannot make directory {}: {}",
                    quote(&made),
                    strerror(&e)
                ));
            }
            if let Ok(st) = kiln_rt::stat(&from, true) {
                if let Err(e) = self.set_attrs(&made, &st, true) {
                    return self.fail(e);
                }
                if self.o.preserve.timestamps {
                    if let Err(e) = util::sys::set_mtime(&made, util::sys::system_time(st.mtime)) {
                        return self.fail(format!(
                            "preserving times for {}: {}",
                            quote(&made),
                            strerror(&e)
                        ));
                    }
                }
            }
            if self.o.verbose {
                println!("{} -> {}", quote(&from), quote(&made));
            }
        }
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.copy(Path::new(src), &dir.join(rel), true);
    }
}

fn options(p: &Parsed) -> Result<Options, String> {
    let mut preserve = Preserve::default();
    let mut deref = None;
    let mut existing = Existing::Overwrite;
    let mut recursive = false;
    let mut link = LinkMode::Copy;
    for (key, value) in &p.opts {
        let text = || value.as_deref().and_then(OsStr::to_str).unwrap_or("");
        match *key {
            "archive" => {
                recursive = true;
                deref = Some(Deref::Never);
                preserve.set("all", true)?;
            }
            "d" => {
                deref = Some(Deref::Never);
                preserve.links = true;
            }
            "p" => preserve.set("mode,ownership,timestamps", true)?,
            "preserve" => preserve.set("mode,ownership,timestamps", true)?,
            "preserve-list" => preserve.set(text(), true)?,
            "no-preserve" => preserve.set(text(), false)?,
            "dereference" => deref = Some(Deref::Always),
            "no-dereference" => deref = Some(Deref::Never),
            "cmdline-deref" => deref = Some(Deref::CommandLine),
            "recursive" => recursive = true,
            // No terminal to ask on: never overwrite.
            "no-clobber" | "interactive" => existing = Existing::Skip,
            "update" if existing != Existing::Skip => existing = Existing::SkipOlder,
            "link" => link = LinkMode::Hard,
            "symbolic-link" => link = LinkMode::Symbolic,
            _ => {}
        }
    }
    let deref = deref.unwrap_or(if recursive && link == LinkMode::Copy {
        Deref::Never
    } else {
        Deref::Always
    });
    Ok(Options {
        recursive,
        deref,
        preserve,
        existing,
        force: p.has("force"),
        remove_first: p.has("remove-destination"),
        verbose: p.has("verbose"),
        link,
        one_fs: p.has("one-file-system"),
        umask: kiln_rt::umask(None).unwrap_or(0o022),
    })
}

fn run(p: &Parsed, o: &Options) -> Result<bool, String> {
    let parents = p.has("parents");
    let (sources, target) = util::sources_and_dest(p, parents)?;
    if sources.is_empty() {
        return Err("missing file operand".into());
    }
    let mut c = Copier {
        o,
        links: HashMap::new(),
        errors: false,
    };
    match target {
        Dest::Into(dir) => {
            match kiln_rt::stat(&dir, true) {
                Ok(st) if st.is_dir() => {}
                Ok(_) => {
                    warn(TOOL, format!("target {} is not a directory", quote(&dir)));
                    return Ok(false);
                }
                Err(e) => {
                    warn(TOOL, format!("target {}: {}", quote(&dir), strerror(&e)));
                    return Ok(false);
                }
            }
            for src in sources {
                if parents {
                    c.copy_parents(src, &dir);
                } else {
                    c.copy(Path::new(src), &dir.join(last_component(src)), true);
                }
            }
        }
        Dest::At(dest) => c.copy(Path::new(&sources[0]), &dest, true),
    }
    Ok(!c.errors)
}

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, USAGE) {
        return 0;
    }
    let args = args::rename_optional_values(util::rest(args), &[("--preserve", "--preserve-list")]);
    let p = match Parser::new(OPTS).parse(args) {
        Ok(p) => p,
        Err(e) => return usage_error(TOOL, e, 1),
    };
    let o = match options(&p) {
        Ok(o) => o,
        Err(e) => return usage_error(TOOL, e, 1),
    };
    match run(&p, &o) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => usage_error(TOOL, e, 1),
    }
}

/// Copies `src` to `dst` as `cp -a --no-target-directory` does (the whole tree, symlinks as
/// they are, modes, owners, times and hard links kept), for `mv` across file systems.
/// Problems are reported under `tool`; `false` when any occurred.
pub fn copy_archive(src: &Path, dst: &Path) -> bool {
    let mut preserve = Preserve::default();
    if preserve.set("all", true).is_err() {
        return false;
    }
    let o = Options {
        recursive: true,
        deref: Deref::Never,
        preserve,
        existing: Existing::Overwrite,
        force: false,
        remove_first: false,
        verbose: false,
        link: LinkMode::Copy,
        one_fs: false,
        umask: kiln_rt::umask(None).unwrap_or(0o022),
    };
    let mut c = Copier {
        o: &o,
        links: HashMap::new(),
        errors: false,
    };
    c.copy(src, dst, true);
    !c.errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_components() {
        for (p, want) in [
            ("a/b", "b"),
            ("a/b/", "b"),
            ("a/.", "."),
            ("b", "b"),
            ("/", ""),
            ("a//", "a"),
        ] {
            assert_eq!(last_component(OsStr::new(p)), OsStr::new(want), "{p}");
        }
    }
}
