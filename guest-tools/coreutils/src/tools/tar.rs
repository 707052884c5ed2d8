//! tar: create, list and extract archives (`-c -t -x -f -z -j -J -C -v --strip-components`);
//! gzip, bzip2 and xz archives are recognised by their first bytes when read.
//!
//! Reading and writing the format is the `tar` crate's job; extraction is ours, so that it
//! never writes outside the target folder: member names with `..` are refused, leading `/` are
//! removed, no existing symlink is ever followed on the way to a member (each parent is checked
//! with lstat), an existing member path is unlinked before it is created, and hard links must
//! point inside the folder too. Modes and owners go through kiln-rt.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{Archive, Builder, EntryType, Header};

use crate::util::args::{Opt, Parser};
use crate::util::mode::render;
use crate::util::time::civil;
use crate::util::{self, strerror, usage_error, users, warn};

const TOOL: &str = "tar";
const USAGE: &str =
    "tar {-c|-x|-t} [-zjJvp] [-f ARCHIVE] [-C DIR] [--strip-components=N] [FILE]...";

const OPTS: &[Opt] = &[
    Opt::flag("create", 'c', "create"),
    Opt::flag("extract", 'x', "extract"),
    Opt::long("extract", "get"),
    Opt::flag("list", 't', "list"),
    Opt::flag("file", 'f', "file").with_value(),
    Opt::flag("gzip", 'z', "gzip"),
    Opt::long("gzip", "gunzip"),
    Opt::long("gzip", "ungzip"),
    Opt::flag("directory", 'C', "directory").with_value(),
    Opt::flag("verbose", 'v', "verbose"),
    Opt::long("strip-components", "strip-components").with_value(),
    Opt::flag("same-permissions", 'p', "same-permissions"),
    Opt::long("same-permissions", "preserve-permissions"),
    Opt::long("no-same-permissions", "no-same-permissions"),
    Opt::long("same-owner", "same-owner"),
    Opt::long("no-same-owner", "no-same-owner"),
    Opt::short("no-same-owner", 'o'),
    Opt::flag("touch", 'm', "touch"),
    Opt::flag("keep-old-files", 'k', "keep-old-files"),
    Opt::long("overwrite", "overwrite"),
    Opt::flag("dereference", 'h', "dereference"),
    Opt::long("exclude", "exclude").with_value(),
    Opt::long("numeric-owner", "numeric-owner"),
    Opt::flag("bzip2", 'j', "bzip2"),
    Opt::flag("xz", 'J', "xz"),
];

/// Old-style `tar xzf file.tgz`: a first argument without `-` is a cluster of letters whose
/// values follow in order.
fn expand_old_style(args: Vec<OsString>) -> Vec<OsString> {
    let mut it = args.into_iter();
    let Some(first) = it.next() else {
        return Vec::new();
    };
    let letters = match first.to_str() {
        Some(s)
            if !s.starts_with('-')
                && !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            s.to_string()
        }
        _ => return std::iter::once(first).chain(it).collect(),
    };
    let mut out = Vec::new();
    for c in letters.chars() {
        out.push(OsString::from(format!("-{c}")));
        if OPTS.iter().any(|o| o.short == Some(c) && o.value) {
            if let Some(v) = it.next() {
                out.push(v);
            }
        }
    }
    out.extend(it);
    out
}

/// A member name as a safe relative path: leading `/` and `.` removed, `..` refused,
/// `strip` leading components dropped. `None`: nothing to extract.
fn member_path(raw: &Path, strip: usize) -> Result<Option<PathBuf>, String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(format!("{}: member name contains '..'", raw.display()));
            }
        }
    }
    if parts.len() <= strip {
        return Ok(None);
    }
    Ok(Some(parts[strip..].iter().collect()))
}

/// Creates the parents of `root/rel` as real directories; any existing parent that is not a
/// directory (a symlink in particular) stops the member.
fn prepare_parents(root: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = root.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for c in &parents[..parents.len().saturating_sub(1)] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{}: cannot extract through {}, which is not a directory",
                    rel.display(),
                    cur.display()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| format!("{}: {}", cur.display(), strerror(&e)))?;
            }
            Err(e) => return Err(format!("{}: {}", cur.display(), strerror(&e))),
        }
    }
    Ok(())
}

/// Removes what stands at `dest` (never following it), unless it is a directory.
fn clear(dest: &Path, keep_old: bool) -> Result<(), String> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) if keep_old => Err(format!("{}: Cannot open: File exists", dest.display())),
        Ok(_) => fs::remove_file(dest).map_err(|e| format!("{}: {}", dest.display(), strerror(&e))),
        Err(_) => Ok(()),
    }
}

struct Extract {
    root: PathBuf,
    strip: usize,
    verbose: bool,
    same_perms: bool,
    same_owner: bool,
    touch: bool,
    keep_old: bool,
    numeric_owner: bool,
    umask: u32,
    /// Directory attributes, applied at the end (so read-only directories can be filled).
    dirs: Vec<(PathBuf, u32, i64)>,
}

impl Extract {
    fn owner(&self, h: &Header) -> (Option<u32>, Option<u32>) {
        let by_name = |name: Option<&[u8]>, f: fn(&str) -> Option<u32>| {
            name.and_then(|n| std::str::from_utf8(n).ok())
                .filter(|n| !n.is_empty() && !self.numeric_owner)
                .and_then(f)
        };
        let uid = by_name(h.username_bytes(), |n| {
            users::user_by_name(n).map(|u| u.uid)
        })
        .or_else(|| h.uid().ok().and_then(|u| u32::try_from(u).ok()));
        let gid = by_name(h.groupname_bytes(), |n| {
            users::group_by_name(n).map(|g| g.gid)
        })
        .or_else(|| h.gid().ok().and_then(|g| u32::try_from(g).ok()));
        (uid, gid)
    }

    fn attributes(&self, dest: &Path, h: &Header, follow: bool) -> Result<(), String> {
        if self.same_owner {
            let (uid, gid) = self.owner(h);
            kiln_rt::chown(dest, uid, gid, follow).map_err(|e| {
                format!(
                    "{}: Cannot change ownership: {}",
                    dest.display(),
                    strerror(&e)
                )
            })?;
        }
        Ok(())
    }

    fn mode(&self, h: &Header) -> u32 {
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        if self.same_perms {
            mode
        } else {
            mode & !self.umask
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), String> {
        let raw = util::sys::path_from_bytes(&entry.path_bytes());
        let Some(rel) = member_path(&raw, self.strip)? else {
            return Ok(());
        };
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        if self.verbose {
            println!("{}", raw.display());
        }
        prepare_parents(&self.root, &rel)?;
        let dest = self.root.join(&rel);
        let header = entry.header().clone();
        let mtime = header
            .mtime()
            .ok()
            .and_then(|t| i64::try_from(t).ok())
            .unwrap_or(0);
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        clear(&dest, self.keep_old)?;
                        fs::create_dir(&dest)
                            .map_err(|e| format!("{}: {}", dest.display(), strerror(&e)))?;
                    }
                    Err(_) => {
                        fs::create_dir(&dest)
                            .map_err(|e| format!("{}: {}", dest.display(), strerror(&e)))?;
                    }
                }
                self.attributes(&dest, &header, true)?;
                let mode = self.mode(&header);
                self.dirs.push((dest, mode, mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                clear(&dest, self.keep_old)?;
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(|e| format!("{}: Cannot open: {}", dest.display(), strerror(&e)))?;
                io::copy(entry, &mut out)
                    .map_err(|e| format!("{}: {}", dest.display(), strerror(&e)))?;
                if !self.touch {
                    let _ = out
                        .set_modified(util::sys::system_time(mtime.saturating_mul(1_000_000_000)));
                }
                drop(out);
                self.attributes(&dest, &header, true)?;
                kiln_rt::chmod(&dest, self.mode(&header), true).map_err(|e| {
                    format!("{}: Cannot change mode: {}", dest.display(), strerror(&e))
                })?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| util::sys::path_from_bytes(&t))
                    .ok_or_else(|| format!("{}: symlink without a target", raw.display()))?;
                clear(&dest, self.keep_old)?;
                util::sys::symlink(&target, &dest).map_err(|e| {
                    format!(
                        "{}: Cannot create symlink: {}",
                        dest.display(),
                        strerror(&e)
                    )
                })?;
                self.attributes(&dest, &header, false)?;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .map(|t| util::sys::path_from_bytes(&t))
                    .ok_or_else(|| format!("{}: hard link without a target", raw.display()))?;
                let Some(target_rel) = member_path(&target_raw, self.strip)? else {
                    return Err(format!("{}: hard link target stripped away", raw.display()));
                };
                // The target must be reachable without symlinks too.
                prepare_parents(&self.root, &target_rel)?;
                let target = self.root.join(&target_rel);
                clear(&dest, self.keep_old)?;
                fs::hard_link(&target, &dest).map_err(|e| {
                    format!(
                        "{}: Cannot hard link to {}: {}",
                        dest.display(),
                        target_raw.display(),
                        strerror(&e)
                    )
                })?;
            }
            other => {
                warn(
                    TOOL,
                    format!(
                        "{}: skipping member of unsupported type {:?}",
                        raw.display(),
                        other
                    ),
                );
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        // Deepest first, so a parent's mode never blocks a child's.
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (dir, mode, mtime) in std::mem::take(&mut self.dirs) {
            kiln_rt::chmod(&dir, mode, true)
                .map_err(|e| format!("{}: Cannot change mode: {}", dir.display(), strerror(&e)))?;
            if !self.touch {
                let _ = util::sys::set_mtime(
                    &dir,
                    util::sys::system_time(mtime.saturating_mul(1_000_000_000)),
                );
            }
        }
        Ok(())
    }
}

/// The archive to read, decompressed when it starts with gzip's, bzip2's or xz's magic (with or
/// without `-z`, `-j`, `-J`, as GNU tar does).
fn reader(file: Option<&Path>) -> Result<Box<dyn Read>, String> {
    let raw: Box<dyn Read> = match file {
        None => Box::new(io::stdin().lock()),
        Some(p) => Box::new(
            File::open(p).map_err(|e| format!("{}: Cannot open: {}", p.display(), strerror(&e)))?,
        ),
    };
    let mut buf = BufReader::new(raw);
    let head = buf.fill_buf().map_err(|e| strerror(&e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(buf)))
    } else if head.starts_with(b"BZh") {
        Ok(Box::new(bzip2::read::MultiBzDecoder::new(buf)))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Ok(Box::new(lzma_rust2::XzReader::new(buf, true)))
    } else {
        Ok(Box::new(buf))
    }
}

fn list_line(h: &Header, name: &Path, verbose: bool) -> String {
    if !verbose {
        return name.display().to_string();
    }
    let kind = match h.entry_type() {
        EntryType::Directory => 0o040000,
        EntryType::Symlink => 0o120000,
        EntryType::Char => 0o020000,
        EntryType::Block => 0o060000,
        EntryType::Fifo => 0o010000,
        _ => 0o100000,
    };
    let mode = render(kind | (h.mode().unwrap_or(0) & 0o7777));
    let owner = match (h.username().ok().flatten(), h.groupname().ok().flatten()) {
        (Some(u), Some(g)) if !u.is_empty() && !g.is_empty() => format!("{u}/{g}"),
        _ => format!("{}/{}", h.uid().unwrap_or(0), h.gid().unwrap_or(0)),
    };
    let mtime = h
        .mtime()
        .ok()
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(0);
    let (y, mo, d, hh, mi, _) = civil(mtime);
    let mut line = format!(
        "{mode} {owner} {:>8} {y:04}-{mo:02}-{d:02} {hh:02}:{mi:02} {}",
        h.size().unwrap_or(0),
        name.display()
    );
    if let Ok(Some(target)) = h.link_name() {
        let arrow = if h.entry_type() == EntryType::Link {
            "link to"
        } else {
            "->"
        };
        line.push_str(&format!(" {arrow} {}", target.display()));
    }
    line
}

fn extract_or_list(
    p: &crate::util::args::Parsed,
    file: Option<&Path>,
    listing: bool,
) -> Result<bool, String> {
    let strip = match p.str_value("strip-components")? {
        Some(n) => n
            .parse()
            .map_err(|_| format!("invalid number of components: {n}"))?,
        None => 0,
    };
    let root = PathBuf::from(p.value("directory").unwrap_or(".".as_ref()));
    if !listing && !root.is_dir() {
        return Err(format!(
            "{}: Cannot open: No such file or directory",
            root.display()
        ));
    }
    let me = kiln_rt::identity().map_err(|e| strerror(&e))?;
    let root_user = me.euid == 0;
    let mut ex = Extract {
        root,
        strip,
        verbose: p.has("verbose"),
        same_perms: (root_user || p.has("same-permissions")) && !p.has("no-same-permissions"),
        same_owner: (root_user || p.has("same-owner")) && !p.has("no-same-owner"),
        touch: p.has("touch"),
        keep_old: p.has("keep-old-files"),
        numeric_owner: p.has("numeric-owner"),
        umask: kiln_rt::umask(None).unwrap_or(0o022),
        dirs: Vec::new(),
    };
    let mut archive = Archive::new(reader(file)?);
    let mut failed = false;
    let entries = archive.entries().map_err(|e| strerror(&e))?;
    let stdout = io::stdout();
    for entry in entries {
        let mut entry = entry.map_err(|e| strerror(&e))?;
        if listing {
            let name = util::sys::path_from_bytes(&entry.path_bytes());
            let mut out = stdout.lock();
            writeln!(out, "{}", list_line(entry.header(), &name, ex.verbose))
                .map_err(|e| strerror(&e))?;
            continue;
        }
        if let Err(e) = ex.entry(&mut entry) {
            warn(TOOL, e);
            failed = true;
        }
    }
    if !listing {
        ex.finish()?;
    }
    Ok(!failed)
}

struct Create<W: Write> {
    builder: Builder<W>,
    follow: bool,
    verbose_to_stderr: bool,
    verbose: bool,
    excludes: Vec<String>,
    /// Hard links already archived: (dev, ino) -> member name.
    links: HashMap<(u64, u64), PathBuf>,
    failed: bool,
}

fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

impl<W: Write> Create<W> {
    fn excluded(&self, member: &Path) -> bool {
        let full = member.to_string_lossy();
        let base = member
            .file_name()
            .map(|b| b.to_string_lossy())
            .unwrap_or_default();
        self.excludes.iter().any(|p| {
            glob_match(p.as_bytes(), full.as_bytes()) || glob_match(p.as_bytes(), base.as_bytes())
        })
    }

    fn add(&mut self, disk: &Path, member: &Path) {
        if self.excluded(member) {
            return;
        }
        let st = match kiln_rt::stat(disk, self.follow) {
            Ok(st) => st,
            Err(e) => {
                warn(
                    TOOL,
                    format!("{}: Cannot stat: {}", disk.display(), strerror(&e)),
                );
                self.failed = true;
                return;
            }
        };
        if self.verbose {
            if self.verbose_to_stderr {
                eprintln!("{}", member.display());
            } else {
                println!("{}", member.display());
            }
        }
        let mut h = Header::new_gnu();
        h.set_mode(st.mode & 0o7777);
        h.set_uid(u64::from(st.uid));
        h.set_gid(u64::from(st.gid));
        h.set_mtime(u64::try_from(st.mtime.div_euclid(1_000_000_000)).unwrap_or(0));
        if let Some(u) = users::user_by_uid(st.uid) {
            let _ = h.set_username(&u.name);
        }
        if let Some(g) = users::group_by_gid(st.gid) {
            let _ = h.set_groupname(&g.name);
        }
        let result = if st.is_dir() {
            h.set_entry_type(EntryType::Directory);
            h.set_size(0);
            let r = self.builder.append_data(&mut h, member, io::empty());
            if r.is_ok() {
                match util::read_dir_sorted(disk) {
                    Ok(children) => {
                        for child in children {
                            if let Some(name) = child.file_name() {
                                let m = member.join(name);
                                self.add(&child, &m);
                            }
                        }
                    }
                    Err(e) => {
                        warn(
                            TOOL,
                            format!("{}: Cannot open: {}", disk.display(), strerror(&e)),
                        );
                        self.failed = true;
                    }
                }
            }
            r
        } else if st.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            h.set_size(0);
            match fs::read_link(disk) {
                Ok(target) => self.builder.append_link(&mut h, member, target),
                Err(e) => Err(e),
            }
        } else if st.is_file() {
            let key = (st.dev, st.ino);
            if let Some(first) = self.links.get(&key).filter(|_| st.nlink > 1).cloned() {
                h.set_entry_type(EntryType::Link);
                h.set_size(0);
                self.builder.append_link(&mut h, member, first)
            } else {
                if st.nlink > 1 {
                    self.links.insert(key, member.to_path_buf());
                }
                h.set_entry_type(EntryType::Regular);
                h.set_size(st.size);
                match File::open(disk) {
                    Ok(f) => self.builder.append_data(&mut h, member, f.take(st.size)),
                    Err(e) => Err(e),
                }
            }
        } else {
            warn(
                TOOL,
                format!("{}: socket, device or fifo ignored", disk.display()),
            );
            return;
        };
        if let Err(e) = result {
            warn(TOOL, format!("{}: {}", disk.display(), strerror(&e)));
            self.failed = true;
        }
    }
}

/// The member name of an operand: relative, without `..` games at the front.
fn member_name(operand: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    let mut stripped_root = false;
    for c in operand.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => stripped_root = true,
            Component::CurDir if out.as_os_str().is_empty() => {}
            other => out.push(other),
        }
    }
    if stripped_root {
        warn(TOOL, "Removing leading '/' from member names");
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

fn create(p: &crate::util::args::Parsed, file: Option<&Path>) -> Result<bool, String> {
    if p.operands.is_empty() {
        return Err("Cowardly refusing to create an empty archive".to_string());
    }
    let out: Box<dyn Write> = match file {
        None => Box::new(io::stdout().lock()),
        Some(f) => {
            Box::new(io::BufWriter::new(File::create(f).map_err(|e| {
                format!("{}: Cannot open: {}", f.display(), strerror(&e))
            })?))
        }
    };
    let out = if p.has("gzip") {
        Compressed::Gzip(GzEncoder::new(out, Compression::default()))
    } else if p.has("bzip2") {
        Compressed::Bzip2(bzip2::write::BzEncoder::new(
            out,
            bzip2::Compression::default(),
        ))
    } else if p.has("xz") {
        Compressed::Xz(
            lzma_rust2::XzWriter::new(out, lzma_rust2::XzOptions::default())
                .map_err(|e| strerror(&e))?,
        )
    } else {
        Compressed::Plain(out)
    };
    let base = PathBuf::from(p.value("directory").unwrap_or(".".as_ref()));
    let mut c = Create {
        builder: Builder::new(out),
        follow: p.has("dereference"),
        verbose_to_stderr: file.is_none(),
        verbose: p.has("verbose"),
        excludes: p
            .values("exclude")
            .map(|e| e.to_string_lossy().into_owned())
            .collect(),
        links: HashMap::new(),
        failed: false,
    };
    for op in &p.operands {
        let op = Path::new(op);
        let disk = if op.is_absolute() {
            op.to_path_buf()
        } else {
            base.join(op)
        };
        c.add(&disk, &member_name(op));
    }
    let inner = c.builder.into_inner().map_err(|e| strerror(&e))?;
    finish_writer(inner)?;
    Ok(!c.failed)
}

/// The archive being written, compressed as `-z`, `-j` or `-J` ask.
enum Compressed {
    Plain(Box<dyn Write>),
    Gzip(GzEncoder<Box<dyn Write>>),
    Bzip2(bzip2::write::BzEncoder<Box<dyn Write>>),
    Xz(lzma_rust2::XzWriter<Box<dyn Write>>),
}

impl Write for Compressed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gzip(w) => w.write(buf),
            Self::Bzip2(w) => w.write(buf),
            Self::Xz(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gzip(w) => w.flush(),
            Self::Bzip2(w) => w.flush(),
            Self::Xz(w) => w.flush(),
        }
    }
}

/// Writes the compressor's trailer and flushes the file, so that errors are seen.
fn finish_writer(w: Compressed) -> Result<(), String> {
    let mut out = match w {
        Compressed::Plain(w) => w,
        Compressed::Gzip(w) => w.finish().map_err(|e| strerror(&e))?,
        Compressed::Bzip2(w) => w.finish().map_err(|e| strerror(&e))?,
        Compressed::Xz(w) => w.finish().map_err(|e| strerror(&e))?,
    };
    out.flush().map_err(|e| strerror(&e))
}

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, USAGE) {
        return 0;
    }
    let args = expand_old_style(util::rest(args).collect());
    let p = match Parser::new(OPTS).parse(args) {
        Ok(p) => p,
        Err(e) => return usage_error(TOOL, e, 2),
    };
    if [p.has("gzip"), p.has("bzip2"), p.has("xz")]
        .iter()
        .filter(|&&c| c)
        .count()
        > 1
    {
        return usage_error(TOOL, "Conflicting compression options", 2);
    }
    let modes = ["create", "extract", "list"]
        .iter()
        .filter(|m| p.has(m))
        .count();
    if modes != 1 {
        return usage_error(TOOL, "You must specify one of the '-ctx' options", 2);
    }
    let file = p.value("file").filter(|f| *f != "-").map(Path::new);
    let result = if p.has("create") {
        create(&p, file)
    } else {
        extract_or_list(&p, file, p.has("list"))
    };
    match result {
        Ok(true) => 0,
        Ok(false) => {
            warn(TOOL, "Exiting with failure status due to previous errors");
            2
        }
        Err(e) => {
            warn(TOOL, e);
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_stay_inside() {
        let m = |s: &str, n| member_path(Path::new(s), n);
        assert_eq!(m("/etc/passwd", 0), Ok(Some(PathBuf::from("etc/passwd"))));
        assert_eq!(m("./a/./b", 0), Ok(Some(PathBuf::from("a/b"))));
        assert_eq!(m("pkg-1.0/bin/x", 1), Ok(Some(PathBuf::from("bin/x"))));
        assert_eq!(m("pkg-1.0/", 1), Ok(None));
        assert!(m("../evil", 0).is_err());
        assert!(m("a/../../evil", 0).is_err());
    }

    #[test]
    fn old_style_arguments() {
        let v = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            expand_old_style(v(&["xzf", "a.tgz", "-C", "d"])),
            v(&["-x", "-z", "-f", "a.tgz", "-C", "d"])
        );
        assert_eq!(expand_old_style(v(&["-cf", "a"])), v(&["-cf", "a"]));
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*.o", b"main.o"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"*.o", b"main.c"));
    }
}
