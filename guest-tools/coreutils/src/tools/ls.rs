//! ls: list directory contents as GNU ls does in the C locale, with real modes, owners and
//! link counts from kiln-rt (uutils ls shows none of these on WASI). Times are shown in UTC:
//! the sandbox has no time zone database.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use kiln_rt::{mode::*, Stat};

use crate::util::args::{self, Opt, Parsed, Parser};
use crate::util::{self, mode::render, quote, strerror, time::civil, usage_error, users, warn};

const TOOL: &str = "ls";
const USAGE: &str = "ls [OPTION]... [FILE]...";

const OPTS: &[Opt] = &[
    Opt::flag("all", 'a', "all"),
    Opt::flag("almost-all", 'A', "almost-all"),
    Opt::short("one", '1'),
    Opt::short("columns", 'C'),
    Opt::flag("directory", 'd', "directory"),
    Opt::flag("classify", 'F', "classify"),
    Opt::short("no-owner", 'g'),
    Opt::flag("no-group", 'G', "no-group"),
    Opt::flag("human", 'h', "human-readable"),
    Opt::flag("cmdline-deref", 'H', "dereference-command-line"),
    Opt::flag("inode", 'i', "inode"),
    Opt::short("long", 'l'),
    Opt::flag("dereference", 'L', "dereference"),
    Opt::flag("numeric", 'n', "numeric-uid-gid"),
    Opt::short("no-group-long", 'o'),
    Opt::short("slash", 'p'),
    Opt::flag("reverse", 'r', "reverse"),
    Opt::flag("recursive", 'R', "recursive"),
    Opt::short("size-sort", 'S'),
    Opt::short("time-sort", 't'),
    Opt::short("unsorted", 'U'),
    Opt::long("color", "color"),
    // `--color=WHEN`, renamed before parsing.
    Opt::long("color-when", "color-when").with_value(),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Long,
    OnePerLine,
    Columns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Name,
    Time,
    Size,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hidden {
    Skip,
    AlmostAll,
    All,
}

struct Options {
    format: Format,
    hidden: Hidden,
    directory: bool,
    recursive: bool,
    sort: SortBy,
    reverse: bool,
    inode: bool,
    human: bool,
    numeric: bool,
    owner: bool,
    group: bool,
    classify: bool,
    slash: bool,
    deref_all: bool,
    deref_cmdline: bool,
    width: usize,
    now: i64,
}

/// One listed name.
struct Entry {
    /// The name as shown.
    name: OsString,
    /// Where it is.
    path: PathBuf,
    st: Stat,
    /// Symlink target and its stat, for the long format.
    link: Option<(PathBuf, Option<Stat>)>,
    /// A symlink `-L` could not follow: shown with `?` for everything.
    broken: bool,
}

/// Names of uids and gids, read once.
struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn load() -> Self {
        let mut u = HashMap::new();
        for user in users::users() {
            u.entry(user.uid).or_insert(user.name);
        }
        let mut g = HashMap::new();
        for group in users::groups() {
            g.entry(group.gid).or_insert(group.name);
        }
        Names {
            users: u,
            groups: g,
        }
    }
}

struct Lister {
    o: Options,
    names: Option<Names>,
    out: io::BufWriter<io::Stdout>,
    status: i32,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mar  5 14:07` for times of the last six months, else `Mar  5  2019`, as GNU ls in the C
/// locale.
fn format_time(ns: i64, now_ns: i64) -> String {
    const HALF_YEAR_NS: i64 = 31_556_952 / 2 * 1_000_000_000;
    let (y, mo, d, h, mi, _) = civil(ns.div_euclid(1_000_000_000));
    let month = MONTHS[(mo as usize).saturating_sub(1).min(11)];
    if now_ns - HALF_YEAR_NS < ns && ns < now_ns {
        format!("{month} {d:>2} {h:02}:{mi:02}")
    } else {
        format!("{month} {d:>2}  {y}")
    }
}

/// A size as `ls -h` shows it: `512`, `1.5K`, `12K`, `1.1M` (rounded up, powers of 1024).
fn human(size: u64) -> String {
    if size < 1024 {
        return size.to_string();
    }
    let size = u128::from(size);
    let mut unit: u128 = 1;
    for suffix in ["K", "M", "G", "T", "P", "E", "Z", "Y"] {
        unit *= 1024;
        let tenths = (size * 10).div_ceil(unit);
        if tenths < 100 {
            return format!("{}.{}{suffix}", tenths / 10, tenths % 10);
        }
        let whole = size.div_ceil(unit);
        if whole < 1024 {
            return format!("{whole}{suffix}");
        }
    }
    size.to_string()
}

fn major(rdev: u64) -> u64 {
    ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)
}

fn minor(rdev: u64) -> u64 {
    (rdev & 0xff) | ((rdev >> 12) & !0xff)
}

fn is_device(st: &Stat) -> bool {
    matches!(st.file_type(), S_IFCHR | S_IFBLK)
}

/// Pads from column `from` to `to` as GNU ls does: tabs (8 wide) where they fit, then spaces.
fn indent(line: &mut Vec<u8>, mut from: usize, to: usize) {
    const TAB: usize = 8;
    while from < to {
        if to / TAB > (from + 1) / TAB {
            line.push(b'\t');
            from += TAB - from % TAB;
        } else {
            line.push(b' ');
            from += 1;
        }
    }
}

/// `dir` and `name` joined as GNU ls shows subfolder names (`./a`, `dir/a`).
fn join(dir: &Path, name: &OsStr) -> PathBuf {
    let mut s = dir.as_os_str().to_os_string();
    if !s.as_encoded_bytes().ends_with(b"/") {
        s.push("/");
    }
    s.push(name);
    PathBuf::from(s)
}

impl Lister {
    fn write(&mut self, s: &[u8]) {
        if self.out.write_all(s).is_err() {
            self.status = 2;
        }
    }

    fn user(&mut self, uid: u32) -> Option<String> {
        if self.o.numeric {
            return None;
        }
        self.names
            .get_or_insert_with(Names::load)
            .users
            .get(&uid)
            .cloned()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        if self.o.numeric {
            return None;
        }
        self.names
            .get_or_insert_with(Names::load)
            .groups
            .get(&gid)
            .cloned()
    }

    /// Builds the entry for `path`, shown as `name`.
    fn entry(&mut self, name: OsString, path: PathBuf, follow: bool) -> io::Result<Entry> {
        let lst = kiln_rt::stat(&path, false)?;
        let mut st = lst;
        let mut broken = false;
        if lst.is_symlink() && follow {
            match kiln_rt::stat(&path, true) {
                Ok(target) => st = target,
                // Asked to follow: a dangling link is an error, shown with `?`s.
                Err(e) if self.o.deref_all || self.o.deref_cmdline => {
                    let _ = self.out.flush();
                    warn(
                        TOOL,
                        format!("cannot access {}: {}", quote(&path), strerror(&e)),
                    );
                    self.status = self.status.max(1);
                    broken = true;
                }
                // Otherwise it is listed as the link itself.
                Err(_) => {}
            }
        }
        let link = if st.is_symlink() && !broken && self.o.format == Format::Long {
            std::fs::read_link(&path)
                .ok()
                .map(|t| (t, kiln_rt::stat(&path, true).ok()))
        } else {
            None
        };
        Ok(Entry {
            name,
            path,
            st,
            link,
            broken,
        })
    }

    fn sort(&self, entries: &mut [Entry]) {
        let by_name =
            |a: &Entry, b: &Entry| a.name.as_encoded_bytes().cmp(b.name.as_encoded_bytes());
        let cmp = |a: &Entry, b: &Entry| -> Ordering {
            match self.o.sort {
                SortBy::Time => b.st.mtime.cmp(&a.st.mtime).then_with(|| by_name(a, b)),
                SortBy::Size => b.st.size.cmp(&a.st.size).then_with(|| by_name(a, b)),
                SortBy::Name | SortBy::None => by_name(a, b),
            }
        };
        if self.o.sort == SortBy::None {
            return;
        }
        if self.o.reverse {
            entries.sort_by(|a, b| cmp(b, a));
        } else {
            entries.sort_by(cmp);
        }
    }

    /// The indicator `-F`/`-p` adds after a name of this mode.
    fn indicator(&self, mode: u32, long_link_target: bool) -> &'static str {
        if !self.o.classify && !self.o.slash {
            return "";
        }
        match mode & S_IFMT {
            S_IFDIR => "/",
            _ if !self.o.classify => "",
            S_IFREG if mode & 0o111 != 0 => "*",
            S_IFLNK if !long_link_target => "@",
            S_IFIFO => "|",
            S_IFSOCK => "=",
            _ => "",
        }
    }

    /// The name with its inode and indicator, as the short formats show it.
    fn short_name(&self, e: &Entry, inode_width: usize) -> Vec<u8> {
        let mut s = Vec::new();
        if self.o.inode {
            s.extend_from_slice(format!("{:>inode_width$} ", e.st.ino).as_bytes());
        }
        s.extend_from_slice(e.name.as_encoded_bytes());
        s.extend_from_slice(self.indicator(e.st.mode, false).as_bytes());
        s
    }

    /// Prints `entries`, with column widths fitted to `basis`, which starts with them (GNU
    /// sizes the command-line files' columns over every operand, folders included).
    fn print_entries(&mut self, entries: &[Entry], basis: &[&Entry]) {
        let inode_width = basis
            .iter()
            .map(|e| e.st.ino.to_string().len())
            .max()
            .unwrap_or(0);
        match self.o.format {
            Format::Long => self.print_long(entries, basis, inode_width),
            Format::OnePerLine => {
                for e in entries {
                    let mut line = self.short_name(e, inode_width);
                    line.push(b'\n');
                    self.write(&line);
                }
            }
            Format::Columns => {
                let names: Vec<Vec<u8>> = entries
                    .iter()
                    .map(|e| self.short_name(e, inode_width))
                    .collect();
                self.print_columns(&names);
            }
        }
    }

    /// GNU's vertical multi-column layout: the most columns whose lines stay shorter than
    /// the width, names running down each column, two spaces apart.
    fn print_columns(&mut self, names: &[Vec<u8>]) {
        let n = names.len();
        if n == 0 {
            return;
        }
        let lens: Vec<usize> = names
            .iter()
            .map(|s| String::from_utf8_lossy(s).chars().count())
            .collect();
        let max_cols = (self.o.width / 3).clamp(1, n);
        let mut best = (1, vec![lens.iter().copied().max().unwrap_or(0)]);
        for cols in (2..=max_cols).rev() {
            let rows = n.div_ceil(cols);
            let mut widths = vec![0usize; cols];
            for (i, len) in lens.iter().enumerate() {
                let col = i / rows;
                let w = len + if col == cols - 1 { 0 } else { 2 };
                widths[col] = widths[col].max(w);
            }
            if widths.iter().sum::<usize>() < self.o.width {
                best = (cols, widths);
                break;
            }
        }
        let (cols, widths) = best;
        let rows = n.div_ceil(cols);
        for row in 0..rows {
            let mut line = Vec::new();
            let mut col = 0;
            let mut pos = 0;
            let mut i = row;
            while i < n {
                line.extend_from_slice(&names[i]);
                i += rows;
                if i < n {
                    indent(&mut line, pos + lens[i - rows], pos + widths[col]);
                    pos += widths[col];
                }
                col += 1;
            }
            line.push(b'\n');
            self.write(&line);
        }
    }

    fn print_long(&mut self, entries: &[Entry], basis: &[&Entry], inode_width: usize) {
        struct Row {
            owner: Result<String, u32>,
            group: Result<String, u32>,
            size: String,
            device: Option<(String, String)>,
        }
        let mut rows = Vec::with_capacity(basis.len());
        for e in basis {
            let owner = self.user(e.st.uid).ok_or(e.st.uid);
            let group = self.group(e.st.gid).ok_or(e.st.gid);
            let device = is_device(&e.st)
                .then(|| (major(e.st.rdev).to_string(), minor(e.st.rdev).to_string()));
            let size = if self.o.human {
                human(e.st.size)
            } else {
                e.st.size.to_string()
            };
            rows.push(Row {
                owner,
                group,
                size,
                device,
            });
        }
        let id_width = |v: &Result<String, u32>| match v {
            Ok(s) => s.chars().count(),
            Err(n) => n.to_string().len(),
        };
        let max = |f: &dyn Fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
        let nlink_w = basis
            .iter()
            .map(|e| e.st.nlink.to_string().len())
            .max()
            .unwrap_or(0);
        let owner_w = max(&|r| id_width(&r.owner));
        let group_w = max(&|r| id_width(&r.group));
        let major_w = max(&|r| r.device.as_ref().map_or(0, |d| d.0.len()));
        let minor_w = max(&|r| r.device.as_ref().map_or(0, |d| d.1.len()));
        let mut size_w = max(&|r| if r.device.is_some() { 0 } else { r.size.len() });
        if rows.iter().any(|r| r.device.is_some()) {
            size_w = size_w.max(major_w + 2 + minor_w);
        }
        // `entries` are the first entries of `basis`.
        for (e, r) in entries.iter().zip(&rows) {
            if e.broken {
                let mut line = format!(
                    "{}l????????? {:>nlink_w$} {:<owner_w$} ",
                    if self.o.inode {
                        format!("{:>inode_width$} ", "?")
                    } else {
                        String::new()
                    },
                    "?",
                    "?"
                );
                if self.o.group {
                    line.push_str(&format!("{:<group_w$} ", "?"));
                }
                line.push_str(&format!("{:>size_w$} {:>12} ", "?", "?"));
                let mut bytes = line.into_bytes();
                bytes.extend_from_slice(e.name.as_encoded_bytes());
                bytes.push(b'\n');
                self.write(&bytes);
                continue;
            }
            let mut line = String::new();
            if self.o.inode {
                line.push_str(&format!("{:>inode_width$} ", e.st.ino));
            }
            line.push_str(&render(e.st.mode));
            line.push_str(&format!(" {:>nlink_w$} ", e.st.nlink));
            let id = |v: &Result<String, u32>, w: usize| match v {
                Ok(name) => format!("{name:<w$} "),
                Err(n) => format!("{n:>w$} "),
            };
            if self.o.owner {
                line.push_str(&id(&r.owner, owner_w));
            }
            if self.o.group {
                line.push_str(&id(&r.group, group_w));
            }
            match &r.device {
                Some((ma, mi)) => {
                    let ma_w = size_w - 2 - minor_w;
                    line.push_str(&format!("{ma:>ma_w$}, {mi:>minor_w$} "));
                }
                None => line.push_str(&format!("{:>size_w$} ", r.size)),
            }
            line.push_str(&format_time(e.st.mtime, self.o.now));
            line.push(' ');
            let mut bytes = line.into_bytes();
            bytes.extend_from_slice(e.name.as_encoded_bytes());
            match &e.link {
                Some((target, target_st)) => {
                    bytes.extend_from_slice(b" -> ");
                    bytes.extend_from_slice(target.as_os_str().as_encoded_bytes());
                    if let Some(t) = target_st {
                        bytes.extend_from_slice(self.indicator(t.mode, true).as_bytes());
                    }
                }
                None => bytes.extend_from_slice(self.indicator(e.st.mode, true).as_bytes()),
            }
            bytes.push(b'\n');
            self.write(&bytes);
        }
    }

    /// The `total` line of a folder in the long format: its entries' 1K blocks.
    fn print_total(&mut self, entries: &[Entry]) {
        let blocks: u64 = entries.iter().map(|e| e.st.blocks).sum();
        let bytes = blocks.saturating_mul(512);
        let total = if self.o.human {
            human(bytes)
        } else {
            bytes.div_ceil(1024).to_string()
        };
        self.write(format!("total {total}\n").as_bytes());
    }

    /// Lists folder `dir` (shown as `dir`), then its subfolders with `-R`.
    fn list_dir(&mut self, dir: &Path, header: bool, first: &mut bool, cmdline: bool) {
        let read = match std::fs::read_dir(dir) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.out.flush();
                warn(
                    TOOL,
                    format!("cannot open directory {}: {}", quote(dir), strerror(&e)),
                );
                self.status = if cmdline { 2 } else { self.status.max(1) };
                return;
            }
        };
        if header {
            if !*first {
                self.write(b"\n");
            }
            let mut h = dir.as_os_str().as_encoded_bytes().to_vec();
            h.extend_from_slice(b":\n");
            self.write(&h);
        }
        *first = false;
        let mut names: Vec<OsString> = Vec::new();
        if self.o.hidden == Hidden::All {
            names.push(".".into());
            names.push("..".into());
        }
        for ent in read {
            match ent {
                Ok(ent) => {
                    let name = ent.file_name();
                    if name.as_encoded_bytes().starts_with(b".") && self.o.hidden == Hidden::Skip {
                        continue;
                    }
                    names.push(name);
                }
                Err(e) => {
                    warn(
                        TOOL,
                        format!("reading directory {}: {}", quote(dir), strerror(&e)),
                    );
                    self.status = self.status.max(1);
                }
            }
        }
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            // GNU names entries of `.` without the `./` in messages.
            let path = if dir == Path::new(".") {
                PathBuf::from(&name)
            } else {
                join(dir, &name)
            };
            match self.entry(name, path.clone(), self.o.deref_all) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    let _ = self.out.flush();
                    warn(
                        TOOL,
                        format!("cannot access {}: {}", quote(&path), strerror(&e)),
                    );
                    self.status = self.status.max(1);
                }
            }
        }
        self.sort(&mut entries);
        if self.o.format == Format::Long {
            self.print_total(&entries);
        }
        let basis: Vec<&Entry> = entries.iter().collect();
        self.print_entries(&entries, &basis);
        if self.o.recursive {
            for e in &entries {
                let name = e.name.as_encoded_bytes();
                if e.st.is_dir() && name != b"." && name != b".." {
                    self.list_dir(&join(dir, &e.name), true, first, false);
                }
            }
        }
    }

    fn run(&mut self, operands: Vec<OsString>) {
        let operands = if operands.is_empty() {
            vec![OsString::from(".")]
        } else {
            operands
        };
        let count = operands.len();
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        // Command-line symlinks are followed unless they are to be shown as links.
        let follow = self.o.deref_all
            || self.o.deref_cmdline
            || !(self.o.format == Format::Long || self.o.directory || self.o.classify);
        for op in operands {
            let path = PathBuf::from(&op);
            match self.entry(op, path.clone(), follow) {
                Ok(e) if e.st.is_dir() && !self.o.directory => dirs.push(e),
                Ok(e) => files.push(e),
                Err(e) => {
                    warn(
                        TOOL,
                        format!("cannot access {}: {}", quote(&path), strerror(&e)),
                    );
                    self.status = 2;
                }
            }
        }
        self.sort(&mut files);
        self.sort(&mut dirs);
        let basis: Vec<&Entry> = files.iter().chain(&dirs).collect();
        self.print_entries(&files, &basis);
        // The blank line after the files stands for the first header's separator.
        let mut first = true;
        if !files.is_empty() && !dirs.is_empty() {
            self.write(b"\n");
        }
        let header = self.o.recursive || count > 1 || !files.is_empty();
        for d in dirs {
            self.list_dir(&d.path, header, &mut first, true);
        }
        if self.out.flush().is_err() {
            self.status = 2;
        }
    }
}

fn options(p: &Parsed) -> Result<Options, String> {
    let mut format = if io::stdout().is_terminal() {
        Format::Columns
    } else {
        Format::OnePerLine
    };
    let mut sort = SortBy::Name;
    let mut hidden = Hidden::Skip;
    let (mut owner, mut group) = (true, true);
    for (key, value) in &p.opts {
        match *key {
            "long" | "numeric" => format = Format::Long,
            "no-owner" => {
                format = Format::Long;
                owner = false;
            }
            "no-group-long" => {
                format = Format::Long;
                group = false;
            }
            "no-group" => group = false,
            "one" => format = Format::OnePerLine,
            "columns" => format = Format::Columns,
            "all" => hidden = Hidden::All,
            "almost-all" if hidden != Hidden::All => hidden = Hidden::AlmostAll,
            "time-sort" => sort = SortBy::Time,
            "size-sort" => sort = SortBy::Size,
            "unsorted" => sort = SortBy::None,
            "color-when" => match value.as_deref().and_then(OsStr::to_str) {
                // Never colored: RUN output is never a terminal worth coloring.
                Some(
                    "never" | "no" | "none" | "auto" | "tty" | "if-tty" | "always" | "yes"
                    | "force",
                ) => {}
                Some(other) => {
                    return Err(format!("invalid argument {} for '--color'", quote(other)))
                }
                None => return Err("invalid argument for '--color'".into()),
            },
            _ => {}
        }
    }
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|&w| w > 0)
        .unwrap_or(80);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Ok(Options {
        format,
        hidden,
        directory: p.has("directory"),
        recursive: p.has("recursive"),
        sort,
        reverse: p.has("reverse"),
        inode: p.has("inode"),
        human: p.has("human"),
        numeric: p.has("numeric"),
        owner,
        group,
        classify: p.has("classify"),
        slash: p.has("slash"),
        deref_all: p.has("dereference"),
        deref_cmdline: p.has("cmdline-deref"),
        width,
        now,
    })
}

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, USAGE) {
        return 0;
    }
    let args = args::rename_optional_values(util::rest(args), &[("--color", "--color-when")]);
    let p = match Parser::new(OPTS).parse(args) {
        Ok(p) => p,
        Err(e) => return usage_error(TOOL, e, 2),
    };
    let o = match options(&p) {
        Ok(o) => o,
        Err(e) => return usage_error(TOOL, e, 2),
    };
    let mut lister = Lister {
        o,
        names: None,
        out: io::BufWriter::new(io::stdout()),
        status: 0,
    };
    lister.run(p.operands);
    lister.status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        for (n, want) in [
            (0, "0"),
            (1023, "1023"),
            (1024, "1.0K"),
            (1025, "1.1K"),
            (1536, "1.5K"),
            (10 * 1024, "10K"),
            (10 * 1024 + 1, "11K"),
            (1_048_575, "1.0M"),
            (5 * 1024 * 1024 * 1024, "5.0G"),
        ] {
            assert_eq!(human(n), want, "{n}");
        }
    }

    #[test]
    fn times() {
        let now = 1_700_000_000 * 1_000_000_000;
        assert_eq!(format_time(now - 3600 * 1_000_000_000, now), "Nov 14 21:13");
        assert_eq!(format_time(0, now), "Jan  1  1970");
        assert_eq!(format_time(now + 1_000_000_000, now), "Nov 14  2023");
    }

    #[test]
    fn devices() {
        let rdev = (8u64 << 8) | 1;
        assert_eq!((major(rdev), minor(rdev)), (8, 1));
    }
}
