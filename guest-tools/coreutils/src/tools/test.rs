//! test and `[`: POSIX's rules for up to four arguments, a recursive-descent parser beyond.
//! File modes and owners come from `kiln_rt::stat`, so `-x`, `-u`, `-O`... work on WASI.

use std::cmp::Ordering;
use std::ffi::{OsStr, OsString};
use std::path::Path;

use kiln_rt::mode::*;

use crate::util::users;

/// An evaluation error: exit status 2.
type Res = Result<bool, String>;

fn is_unary(op: &OsStr) -> bool {
    matches!(
        op.to_str(),
        Some(
            "-b" | "-c"
                | "-d"
                | "-e"
                | "-f"
                | "-g"
                | "-G"
                | "-h"
                | "-k"
                | "-L"
                | "-n"
                | "-N"
                | "-O"
                | "-p"
                | "-r"
                | "-s"
                | "-S"
                | "-t"
                | "-u"
                | "-w"
                | "-x"
                | "-z"
        )
    )
}

fn is_binary(op: &OsStr) -> bool {
    matches!(
        op.to_str(),
        Some(
            "=" | "=="
                | "!="
                | "<"
                | ">"
                | "-eq"
                | "-ne"
                | "-lt"
                | "-le"
                | "-gt"
                | "-ge"
                | "-nt"
                | "-ot"
                | "-ef"
                | "-a"
                | "-o"
        )
    )
}

fn integer(s: &OsStr) -> Result<i64, String> {
    let t = s.to_string_lossy();
    t.trim()
        .parse()
        .map_err(|_| format!("invalid integer '{t}'"))
}

/// Whether the caller may read (`4`), write (`2`) or execute (`1`) `path`.
fn access(path: &Path, want: u32) -> bool {
    let Ok(st) = kiln_rt::stat(path, true) else {
        return false;
    };
    let Ok(me) = kiln_rt::identity() else {
        return false;
    };
    if me.euid == 0 {
        // Root may read and write anything; it may execute what has an x bit (or search a
        // directory).
        return want != 1 || st.is_dir() || st.mode & 0o111 != 0;
    }
    let bits = if st.uid == me.euid {
        st.mode >> 6
    } else {
        let name = users::user_by_uid(me.euid).map(|u| u.name);
        if users::group_list(name.as_deref(), me.egid).contains(&st.gid) {
            st.mode >> 3
        } else {
            st.mode
        }
    };
    bits & want == want
}

fn unary(op: &str, arg: &OsStr) -> Res {
    let path = Path::new(arg);
    let st = |follow| kiln_rt::stat(path, follow).ok();
    let kind = |t: u32| st(true).is_some_and(|s| s.file_type() == t);
    Ok(match op {
        "-n" => !arg.is_empty(),
        "-z" => arg.is_empty(),
        "-e" => st(true).is_some(),
        "-f" => kind(S_IFREG),
        "-d" => kind(S_IFDIR),
        "-b" => kind(S_IFBLK),
        "-c" => kind(S_IFCHR),
        "-p" => kind(S_IFIFO),
        "-S" => kind(S_IFSOCK),
        "-h" | "-L" => st(false).is_some_and(|s| s.is_symlink()),
        "-s" => st(true).is_some_and(|s| s.size > 0),
        "-u" => st(true).is_some_and(|s| s.mode & 0o4000 != 0),
        "-g" => st(true).is_some_and(|s| s.mode & 0o2000 != 0),
        "-k" => st(true).is_some_and(|s| s.mode & 0o1000 != 0),
        "-N" => st(true).is_some_and(|s| s.mtime > s.atime),
        "-O" => st(true).is_some_and(|s| kiln_rt::identity().is_ok_and(|me| me.euid == s.uid)),
        "-G" => st(true).is_some_and(|s| kiln_rt::identity().is_ok_and(|me| me.egid == s.gid)),
        "-r" => access(path, 4),
        "-w" => access(path, 2),
        "-x" => access(path, 1),
        "-t" => {
            use std::io::IsTerminal;
            match integer(arg)? {
                0 => std::io::stdin().is_terminal(),
                1 => std::io::stdout().is_terminal(),
                2 => std::io::stderr().is_terminal(),
                _ => false,
            }
        }
        _ => return Err(format!("{op}: unary operator expected")),
    })
}

fn binary(a: &OsStr, op: &str, b: &OsStr) -> Res {
    let mtime = |p: &OsStr| kiln_rt::stat(Path::new(p), true).ok().map(|s| s.mtime);
    Ok(match op {
        "=" | "==" => a == b,
        "!=" => a != b,
        "<" => a.cmp(b) == Ordering::Less,
        ">" => a.cmp(b) == Ordering::Greater,
        "-eq" => integer(a)? == integer(b)?,
        "-ne" => integer(a)? != integer(b)?,
        "-lt" => integer(a)? < integer(b)?,
        "-le" => integer(a)? <= integer(b)?,
        "-gt" => integer(a)? > integer(b)?,
        "-ge" => integer(a)? >= integer(b)?,
        "-nt" => match (mtime(a), mtime(b)) {
            (Some(x), Some(y)) => x > y,
            (Some(_), None) => true,
            _ => false,
        },
        "-ot" => match (mtime(a), mtime(b)) {
            (Some(x), Some(y)) => x < y,
            (None, Some(_)) => true,
            _ => false,
        },
        "-ef" => {
            let id = |p: &OsStr| {
                kiln_rt::stat(Path::new(p), true)
                    .ok()
                    .map(|s| (s.dev, s.ino))
            };
            matches!((id(a), id(b)), (Some(x), Some(y)) if x == y)
        }
        "-a" => !a.is_empty() && !b.is_empty(),
        "-o" => !a.is_empty() || !b.is_empty(),
        _ => return Err(format!("{op}: binary operator expected")),
    })
}

/// The general grammar, for more than four arguments (and what POSIX leaves open).
struct Parser<'a> {
    args: &'a [OsString],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a OsStr> {
        self.args.get(self.pos).map(OsString::as_os_str)
    }

    fn next(&mut self) -> Result<&'a OsStr, String> {
        let a = self
            .args
            .get(self.pos)
            .ok_or_else(|| "argument expected".to_string())?;
        self.pos += 1;
        Ok(a)
    }

    fn or(&mut self) -> Res {
        let mut v = self.and()?;
        while self.peek() == Some(OsStr::new("-o")) {
            self.pos += 1;
            let r = self.and()?;
            v = v || r;
        }
        Ok(v)
    }

    fn and(&mut self) -> Res {
        let mut v = self.not()?;
        while self.peek() == Some(OsStr::new("-a")) {
            self.pos += 1;
            let r = self.not()?;
            v = v && r;
        }
        Ok(v)
    }

    fn not(&mut self) -> Res {
        if self.peek() == Some(OsStr::new("!")) {
            self.pos += 1;
            return Ok(!self.not()?);
        }
        self.primary()
    }

    fn primary(&mut self) -> Res {
        let a = self.next()?;
        // `a OP b` takes precedence, so that `( = (` and `-f = x` compare strings.
        if let Some(op) = self
            .args
            .get(self.pos)
            .filter(|o| is_binary(o) && *o != "-a" && *o != "-o")
        {
            if self.pos + 1 < self.args.len() {
                let op = op.to_string_lossy().into_owned();
                let b = self.args[self.pos + 1].as_os_str();
                self.pos += 2;
                return binary(a, &op, b);
            }
        }
        if a == "(" {
            let v = self.or()?;
            if self.next()? != ")" {
                return Err("')' expected".to_string());
            }
            return Ok(v);
        }
        if is_unary(a) {
            if let Some(arg) = self.args.get(self.pos) {
                self.pos += 1;
                let op = a.to_string_lossy().into_owned();
                return unary(&op, arg);
            }
        }
        Ok(!a.is_empty())
    }
}

fn eval(args: &[OsString]) -> Res {
    let s = |i: usize| args[i].as_os_str();
    match args.len() {
        0 => Ok(false),
        1 => Ok(!s(0).is_empty()),
        2 if s(0) == "!" => Ok(s(1).is_empty()),
        2 if is_unary(s(0)) => unary(&s(0).to_string_lossy(), s(1)),
        2 => Err(format!(
            "{}: unary operator expected",
            s(0).to_string_lossy()
        )),
        3 if is_binary(s(1)) => binary(s(0), &s(1).to_string_lossy(), s(2)),
        3 if s(0) == "!" => eval(&args[1..]).map(|v| !v),
        3 if s(0) == "(" && s(2) == ")" => Ok(!s(1).is_empty()),
        4 if s(0) == "!" => eval(&args[1..]).map(|v| !v),
        4 if s(0) == "(" && s(3) == ")" => eval(&args[1..3]),
        _ => {
            let mut p = Parser { args, pos: 0 };
            let v = p.or()?;
            match p.peek() {
                None => Ok(v),
                Some(extra) => Err(format!("extra argument '{}'", extra.to_string_lossy())),
            }
        }
    }
}

fn run(tool: &str, args: &[OsString]) -> i32 {
    match eval(args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            crate::util::warn(tool, e);
            2
        }
    }
}

pub fn test(args: Vec<OsString>) -> i32 {
    run("test", &args[1.min(args.len())..])
}

pub fn bracket(args: Vec<OsString>) -> i32 {
    let rest = &args[1.min(args.len())..];
    match rest.split_last() {
        Some((last, inner)) if last == "]" => run("[", inner),
        _ if rest.len() == 1 && (rest[0] == "--help" || rest[0] == "--version") => {
            println!("Usage: [ EXPRESSION ]");
            0
        }
        _ => {
            crate::util::warn("[", "missing ']'");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> Res {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        eval(&v)
    }

    #[test]
    fn posix_cases() {
        assert_eq!(t(&[]), Ok(false));
        assert_eq!(t(&["x"]), Ok(true));
        assert_eq!(t(&[""]), Ok(false));
        assert_eq!(t(&["-n"]), Ok(true));
        assert_eq!(t(&["!", ""]), Ok(true));
        assert_eq!(t(&["-z", ""]), Ok(true));
        assert_eq!(t(&["a", "=", "a"]), Ok(true));
        assert_eq!(t(&["a", "!=", "a"]), Ok(false));
        assert_eq!(t(&["!", "a", "=", "b"]), Ok(true));
        assert_eq!(t(&["(", "x", ")"]), Ok(true));
        assert_eq!(t(&["3", "-lt", "10"]), Ok(true));
        assert_eq!(t(&["=", "=", "="]), Ok(true));
        assert!(t(&["x", "-lt", "1"]).is_err());
        assert!(t(&["-q", "x"]).is_err());
    }

    #[test]
    fn general_grammar() {
        assert_eq!(t(&["a", "=", "a", "-a", "b", "=", "c"]), Ok(false));
        assert_eq!(t(&["a", "=", "a", "-o", "b", "=", "c"]), Ok(true));
        assert_eq!(
            t(&["!", "(", "1", "-eq", "2", ")", "-a", "-n", "x"]),
            Ok(true)
        );
        assert_eq!(t(&["-d", "/", "-a", "-e", "/no/such/file"]), Ok(false));
        assert!(t(&["(", "a", "=", "a"]).is_err());
        assert!(t(&["a", "b", "c", "d", "e"]).is_err());
    }
}
