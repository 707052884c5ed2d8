//! find: walk directory trees and evaluate an expression per file. `-exec` runs commands
//! through `kiln_rt::spawn`; types, modes and owners come from `kiln_rt::stat`.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_rt::{mode::*, Stat};

use crate::util::exec::run;
use crate::util::mode::Mode;
use crate::util::{self, quote, strerror, users, warn};

const TOOL: &str = "find";

/// How a numeric test compares: `+N`, `-N` or `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    More(i64),
    Less(i64),
    Exactly(i64),
}

impl Cmp {
    fn parse(s: &str) -> Option<Cmp> {
        if let Some(n) = s.strip_prefix('+') {
            n.parse().ok().map(Cmp::More)
        } else if let Some(n) = s.strip_prefix('-') {
            n.parse().ok().map(Cmp::Less)
        } else {
            s.parse().ok().map(Cmp::Exactly)
        }
    }

    fn test(self, v: i64) -> bool {
        match self {
            Cmp::More(n) => v > n,
            Cmp::Less(n) => v < n,
            Cmp::Exactly(n) => v == n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermKind {
    Exact,
    All,
    Any,
}

#[derive(Debug)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    True,
    False,
    Name(String, bool),
    Path(String, bool),
    Type(Vec<u32>),
    Newer(i64),
    Perm(PermKind, u32),
    Size(Cmp, u64),
    Uid(u32),
    Gid(u32),
    Empty,
    Executable,
    Mtime(Cmp, i64),
    Print(bool),
    Exec {
        argv: Vec<OsString>,
        batch: Option<usize>,
    },
    Delete,
    Prune,
    Quit,
}

/// One `-exec ... {} +` command and the paths waiting for it.
struct Batch {
    argv: Vec<OsString>,
    paths: Vec<OsString>,
}

struct Parser<'a> {
    args: &'a [OsString],
    pos: usize,
    batches: Vec<Batch>,
    has_action: bool,
    maxdepth: Option<usize>,
    mindepth: usize,
    depth_first: bool,
    follow: bool,
}

fn fnmatch(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|i| fnmatch(&pattern[1..], &name[i..])),
        Some('?') => !name.is_empty() && fnmatch(&pattern[1..], &name[1..]),
        Some('[') => {
            let Some(&c) = name.first() else {
                return false;
            };
            let mut i = 1;
            let negate = matches!(pattern.get(1), Some('!' | '^'));
            if negate {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            while i < pattern.len() && (first || pattern[i] != ']') {
                first = false;
                let lo = pattern[i];
                if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|h| *h != ']')
                {
                    let hi = pattern[i + 2];
                    matched |= lo <= c && c <= hi;
                    i += 3;
                } else {
                    matched |= lo == c;
                    i += 1;
                }
            }
            if i >= pattern.len() {
                // No closing bracket: a literal `[`.
                return c == '[' && fnmatch(&pattern[1..], &name[1..]);
            }
            matched != negate && fnmatch(&pattern[i + 1..], &name[1..])
        }
        Some('\\') if pattern.len() > 1 => {
            name.first() == Some(&pattern[1]) && fnmatch(&pattern[2..], &name[1..])
        }
        Some(&p) => name.first() == Some(&p) && fnmatch(&pattern[1..], &name[1..]),
    }
}

/// Shell-style matching as `-name` and `-path` do it (`*` also matches `/` for `-path`).
pub fn glob(pattern: &str, name: &str, fold: bool) -> bool {
    let prep = |s: &str| -> Vec<char> {
        if fold {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    fnmatch(&prep(pattern), &prep(name))
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.args.get(self.pos).and_then(|a| a.to_str())
    }

    fn value(&mut self, opt: &str) -> Result<&'a OsStr, String> {
        let v = self
            .args
            .get(self.pos)
            .ok_or_else(|| format!("missing argument to '{opt}'"))?;
        self.pos += 1;
        Ok(v)
    }

    fn text(&mut self, opt: &str) -> Result<String, String> {
        Ok(self.value(opt)?.to_string_lossy().into_owned())
    }

    fn or(&mut self) -> Result<Node, String> {
        let mut left = self.and()?;
        while matches!(self.peek(), Some("-o" | "-or")) {
            self.pos += 1;
            let right = self.and()?;
            left = Node::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, String> {
        let mut left = self.not()?;
        loop {
            match self.peek() {
                Some("-a" | "-and") => self.pos += 1,
                None | Some("-o" | "-or" | ")") => return Ok(left),
                Some(_) => {}
            }
            let right = self.not()?;
            left = Node::And(Box::new(left), Box::new(right));
        }
    }

    fn not(&mut self) -> Result<Node, String> {
        if matches!(self.peek(), Some("!" | "-not")) {
            self.pos += 1;
            return Ok(Node::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn number<T: std::str::FromStr>(&mut self, opt: &str) -> Result<T, String> {
        let t = self.text(opt)?;
        t.parse()
            .map_err(|_| format!("invalid argument '{t}' to '{opt}'"))
    }

    fn primary(&mut self) -> Result<Node, String> {
        let Some(tok) = self.args.get(self.pos) else {
            return Err("expected an expression".to_string());
        };
        self.pos += 1;
        let tok = tok.to_string_lossy().into_owned();
        let t = tok.as_str();
        Ok(match t {
            "(" => {
                let inner = self.or()?;
                if self.peek() != Some(")") {
                    return Err("invalid expression; expected ')'".to_string());
                }
                self.pos += 1;
                inner
            }
            "-true" => Node::True,
            "-false" => Node::False,
            "-name" | "-iname" => Node::Name(self.text(t)?, t == "-iname"),
            "-path" | "-wholename" | "-ipath" | "-iwholename" => {
                Node::Path(self.text(t)?, t.starts_with("-i"))
            }
            "-type" | "-xtype" => {
                let spec = self.text(t)?;
                let mut kinds = Vec::new();
                for k in spec.split(',') {
                    kinds.push(match k {
                        "f" => S_IFREG,
                        "d" => S_IFDIR,
                        "l" => S_IFLNK,
                        "b" => S_IFBLK,
                        "c" => S_IFCHR,
                        "p" => S_IFIFO,
                        "s" => S_IFSOCK,
                        _ => return Err(format!("Unknown argument to -type: {k}")),
                    });
                }
                Node::Type(kinds)
            }
            "-maxdepth" => {
                self.maxdepth = Some(self.number(t)?);
                Node::True
            }
            "-mindepth" => {
                self.mindepth = self.number(t)?;
                Node::True
            }
            "-depth" | "-d" => {
                self.depth_first = true;
                Node::True
            }
            "-follow" => {
                self.follow = true;
                Node::True
            }
            "-xdev" | "-mount" | "-noleaf" | "-ignore_readdir_race" => Node::True,
            "-newer" => {
                let f = self.value(t)?;
                let st = kiln_rt::stat(Path::new(f), true)
                    .map_err(|e| format!("{}: {}", quote(f), strerror(&e)))?;
                Node::Newer(st.mtime)
            }
            "-perm" => {
                let spec = self.text(t)?;
                let (kind, m) = if let Some(m) = spec.strip_prefix('-') {
                    (PermKind::All, m)
                } else if let Some(m) = spec.strip_prefix('/') {
                    (PermKind::Any, m)
                } else {
                    (PermKind::Exact, spec.as_str())
                };
                let mode = Mode::parse(m).map_err(|_| format!("invalid mode '{spec}'"))?;
                Node::Perm(kind, mode.apply(0, false, 0))
            }
            "-size" => {
                let spec = self.text(t)?;
                let (num, unit) = match spec.char_indices().last() {
                    Some((i, c)) if c.is_ascii_alphabetic() => (&spec[..i], c),
                    _ => (spec.as_str(), 'b'),
                };
                let unit = match unit {
                    'b' => 512,
                    'c' => 1,
                    'w' => 2,
                    'k' => 1024,
                    'M' => 1 << 20,
                    'G' => 1 << 30,
                    _ => return Err(format!("invalid -size type '{unit}'")),
                };
                let cmp =
                    Cmp::parse(num).ok_or_else(|| format!("invalid argument '{spec}' to -size"))?;
                Node::Size(cmp, unit)
            }
            "-user" | "-uid" => {
                let u = self.text(t)?;
                let uid = if t == "-user" {
                    users::resolve_uid(&u)
                } else {
                    u.parse().ok()
                };
                Node::Uid(uid.ok_or_else(|| format!("'{u}' is not the name of a known user"))?)
            }
            "-group" | "-gid" => {
                let g = self.text(t)?;
                let gid = if t == "-group" {
                    users::resolve_gid(&g)
                } else {
                    g.parse().ok()
                };
                Node::Gid(gid.ok_or_else(|| format!("'{g}' is not the name of an existing group"))?)
            }
            "-nouser" | "-nogroup" => Node::False,
            "-empty" => Node::Empty,
            "-executable" => Node::Executable,
            "-mtime" | "-mmin" => {
                let spec = self.text(t)?;
                let cmp = Cmp::parse(&spec)
                    .ok_or_else(|| format!("invalid argument '{spec}' to '{t}'"))?;
                Node::Mtime(cmp, if t == "-mtime" { 86_400 } else { 60 })
            }
            "-print" | "-print0" => {
                self.has_action = true;
                Node::Print(t == "-print0")
            }
            "-delete" => {
                self.has_action = true;
                self.depth_first = true;
                Node::Delete
            }
            "-prune" => Node::Prune,
            "-quit" => Node::Quit,
            "-exec" | "-ok" => {
                self.has_action = true;
                let mut argv = Vec::new();
                loop {
                    let Some(a) = self.args.get(self.pos) else {
                        return Err(format!("missing argument to '{t}'"));
                    };
                    self.pos += 1;
                    if a == ";" {
                        break Node::Exec { argv, batch: None };
                    }
                    if a == "+" && argv.last().is_some_and(|l: &OsString| l == "{}") {
                        argv.pop();
                        self.batches.push(Batch {
                            argv,
                            paths: Vec::new(),
                        });
                        break Node::Exec {
                            argv: Vec::new(),
                            batch: Some(self.batches.len() - 1),
                        };
                    }
                    argv.push(a.clone());
                }
            }
            other => return Err(format!("unknown predicate '{other}'")),
        })
    }
}

/// What walking the trees needs while evaluating.
struct Walk {
    batches: Vec<Batch>,
    now: i64,
    prune: bool,
    quit: bool,
    failed: bool,
    out: io::BufWriter<io::Stdout>,
}

impl Walk {
    fn flush_batch(&mut self, i: usize) {
        let batch = &mut self.batches[i];
        if batch.paths.is_empty() {
            return;
        }
        let mut argv = batch.argv.clone();
        argv.append(&mut batch.paths);
        let _ = self.out.flush();
        match run(&argv) {
            Ok(0) => {}
            Ok(_) => self.failed = true,
            Err(e) => {
                warn(TOOL, e.message);
                self.failed = true;
            }
        }
    }

    fn eval(&mut self, node: &Node, path: &Path, st: &Stat) -> bool {
        let name = || {
            path.file_name()
                .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy())
                .into_owned()
        };
        match node {
            Node::And(a, b) => self.eval(a, path, st) && self.eval(b, path, st),
            Node::Or(a, b) => self.eval(a, path, st) || self.eval(b, path, st),
            Node::Not(a) => !self.eval(a, path, st),
            Node::True => true,
            Node::False => false,
            Node::Name(p, fold) => glob(p, &name(), *fold),
            Node::Path(p, fold) => glob(p, &path.to_string_lossy(), *fold),
            Node::Type(kinds) => kinds.contains(&st.file_type()),
            Node::Newer(t) => st.mtime > *t,
            Node::Perm(kind, m) => {
                let mode = st.mode & 0o7777;
                match kind {
                    PermKind::Exact => mode == *m,
                    PermKind::All => mode & m == *m,
                    PermKind::Any => *m == 0 || mode & m != 0,
                }
            }
            Node::Size(cmp, unit) => {
                let units = st.size.div_ceil(*unit);
                cmp.test(i64::try_from(units).unwrap_or(i64::MAX))
            }
            Node::Uid(u) => st.uid == *u,
            Node::Gid(g) => st.gid == *g,
            Node::Empty => {
                if st.is_dir() {
                    std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
                } else {
                    st.is_file() && st.size == 0
                }
            }
            Node::Executable => {
                util::exec::is_executable(path) || (st.is_dir() && st.mode & 0o111 != 0)
            }
            Node::Mtime(cmp, unit) => {
                let age = (self.now - st.mtime.div_euclid(1_000_000_000)).div_euclid(*unit);
                cmp.test(age)
            }
            Node::Print(zero) => {
                let end: &[u8] = if *zero { b"\0" } else { b"\n" };
                let ok = self
                    .out
                    .write_all(path.as_os_str().as_encoded_bytes())
                    .and_then(|()| self.out.write_all(end));
                if ok.is_err() {
                    self.failed = true;
                }
                true
            }
            Node::Exec { argv, batch: None } => {
                let shown = path.as_os_str().to_string_lossy();
                let argv: Vec<OsString> = argv
                    .iter()
                    .map(|a| match a.to_str() {
                        Some(s) if s.contains("{}") => OsString::from(s.replace("{}", &shown)),
                        _ => a.clone(),
                    })
                    .collect();
                let _ = self.out.flush();
                match run(&argv) {
                    Ok(status) => status == 0,
                    Err(e) => {
                        warn(TOOL, e.message);
                        self.failed = true;
                        false
                    }
                }
            }
            Node::Exec { batch: Some(i), .. } => {
                self.batches[*i].paths.push(path.as_os_str().to_owned());
                if self.batches[*i].paths.len() >= 4096 {
                    self.flush_batch(*i);
                }
                true
            }
            Node::Delete => {
                let removed = if st.is_dir() {
                    std::fs::remove_dir(path)
                } else {
                    std::fs::remove_file(path)
                };
                match removed {
                    Ok(()) => true,
                    Err(e) => {
                        warn(
                            TOOL,
                            format!("cannot delete {}: {}", quote(path), strerror(&e)),
                        );
                        self.failed = true;
                        false
                    }
                }
            }
            Node::Prune => {
                self.prune = true;
                true
            }
            Node::Quit => {
                self.quit = true;
                true
            }
        }
    }
}

struct Config<'a> {
    expr: &'a Node,
    maxdepth: Option<usize>,
    mindepth: usize,
    depth_first: bool,
    follow_all: bool,
    follow_top: bool,
}

fn visit(w: &mut Walk, c: &Config<'_>, path: &Path, depth: usize) {
    if w.quit {
        return;
    }
    let follow = c.follow_all || (depth == 0 && c.follow_top);
    let st = match kiln_rt::stat(path, follow).or_else(|e| {
        // A dangling symlink under -L is reported as the link itself.
        if follow {
            kiln_rt::stat(path, false)
        } else {
            Err(e)
        }
    }) {
        Ok(st) => st,
        Err(e) => {
            warn(TOOL, format!("{}: {}", quote(path), strerror(&e)));
            w.failed = true;
            return;
        }
    };
    let in_range = depth >= c.mindepth;
    w.prune = false;
    if in_range && !c.depth_first {
        w.eval(c.expr, path, &st);
    }
    let pruned = std::mem::take(&mut w.prune) && !c.depth_first;
    if st.is_dir() && !pruned && c.maxdepth.is_none_or(|m| depth < m) && !w.quit {
        match util::read_dir_sorted(path) {
            Ok(children) => {
                for child in children {
                    visit(w, c, &child, depth + 1);
                    if w.quit {
                        break;
                    }
                }
            }
            Err(e) => {
                warn(TOOL, format!("{}: {}", quote(path), strerror(&e)));
                w.failed = true;
            }
        }
    }
    if in_range && c.depth_first && !w.quit {
        w.eval(c.expr, path, &st);
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, "find [-H] [-L] [-P] [PATH...] [EXPRESSION]") {
        return 0;
    }
    let args: Vec<OsString> = util::rest(args).collect();
    let mut i = 0;
    let (mut follow_all, mut follow_top) = (false, false);
    while let Some(a) = args.get(i).and_then(|a| a.to_str()) {
        match a {
            "-H" => follow_top = true,
            "-L" => follow_all = true,
            "-P" => {
                follow_all = false;
                follow_top = false;
            }
            _ => break,
        }
        i += 1;
    }
    let start = i;
    while let Some(a) = args.get(i) {
        let b = a.as_encoded_bytes();
        if (b.first() == Some(&b'-') && b.len() > 1) || a == "(" || a == "!" || a == ")" {
            break;
        }
        i += 1;
    }
    let mut paths: Vec<PathBuf> = args[start..i].iter().map(PathBuf::from).collect();
    if paths.is_empty() {
        paths.push(PathBuf::from("."));
    }
    let mut p = Parser {
        args: &args[i..],
        pos: 0,
        batches: Vec::new(),
        has_action: false,
        maxdepth: None,
        mindepth: 0,
        depth_first: false,
        follow: false,
    };
    let parsed = if p.args.is_empty() {
        Ok(Node::True)
    } else {
        p.or().and_then(|n| match p.peek() {
            None => Ok(n),
            Some(extra) => Err(format!("unexpected '{extra}'")),
        })
    };
    let expr = match parsed {
        Ok(n) => n,
        Err(e) => {
            warn(TOOL, e);
            return 1;
        }
    };
    let expr = if p.has_action {
        expr
    } else {
        Node::And(Box::new(expr), Box::new(Node::Print(false)))
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut w = Walk {
        batches: std::mem::take(&mut p.batches),
        now,
        prune: false,
        quit: false,
        failed: false,
        out: io::BufWriter::new(io::stdout()),
    };
    let config = Config {
        expr: &expr,
        maxdepth: p.maxdepth,
        mindepth: p.mindepth,
        depth_first: p.depth_first,
        follow_all: follow_all || p.follow,
        follow_top,
    };
    for path in &paths {
        visit(&mut w, &config, path, 0);
        if w.quit {
            break;
        }
    }
    for b in 0..w.batches.len() {
        w.flush_batch(b);
    }
    if w.out.flush().is_err() {
        w.failed = true;
    }
    i32::from(w.failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*.txt", "a.txt", false));
        assert!(!glob("*.txt", "a.TXT", false));
        assert!(glob("*.txt", "a.TXT", true));
        assert!(glob("file?[0-9]", "fileA7", false));
        assert!(!glob("[!a]*", "abc", false));
        assert!(glob("[]x]", "]", false));
        assert!(glob("./src/*", "./src/a/b.rs", false));
        assert!(glob("\\*", "*", false));
        assert!(glob("a[", "a[", false));
    }

    #[test]
    fn comparisons() {
        assert_eq!(Cmp::parse("+3"), Some(Cmp::More(3)));
        assert!(Cmp::parse("-2").is_some_and(|c| c.test(1) && !c.test(2)));
        assert!(Cmp::parse("x").is_none());
    }
}
