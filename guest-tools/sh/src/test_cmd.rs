//! `test` and `[`.

use crate::arith::parse_number;
use crate::ast::Bytes;
use crate::io;
use crate::shell::Shell;

fn file_test(op: &[u8], path: &[u8]) -> bool {
    let p = io::path(path);
    if op == b"-h" || op == b"-L" {
        return kiln_rt::stat(p, false).is_ok_and(|s| s.is_symlink());
    }
    let Ok(st) = kiln_rt::stat(p, true) else {
        return false;
    };
    let ft = st.file_type();
    use kiln_rt::mode::*;
    let id = kiln_rt::identity().unwrap_or_default();
    let perm = |bit: u32| -> bool {
        if id.euid == 0 {
            return bit != 0o1 || st.mode & 0o111 != 0 || ft == S_IFDIR;
        }
        let shift = if st.uid == id.euid {
            6
        } else if st.gid == id.egid {
            3
        } else {
            0
        };
        st.mode & (bit << shift) != 0
    };
    match op {
        b"-e" => true,
        b"-f" => ft == S_IFREG,
        b"-d" => ft == S_IFDIR,
        b"-b" => ft == S_IFBLK,
        b"-c" => ft == S_IFCHR,
        b"-p" => ft == S_IFIFO,
        b"-S" => ft == S_IFSOCK,
        b"-s" => st.size > 0,
        b"-r" => perm(0o4),
        b"-w" => perm(0o2),
        b"-x" => perm(0o1),
        b"-u" => st.mode & 0o4000 != 0,
        b"-g" => st.mode & 0o2000 != 0,
        b"-k" => st.mode & 0o1000 != 0,
        b"-O" => st.uid == id.euid,
        b"-G" => st.gid == id.egid,
        _ => false,
    }
}

const UNARY: &[&[u8]] = &[
    b"-e", b"-f", b"-d", b"-b", b"-c", b"-p", b"-S", b"-s", b"-r", b"-w", b"-x", b"-u", b"-g",
    b"-k", b"-O", b"-G", b"-h", b"-L", b"-n", b"-z", b"-t",
];

const BINARY: &[&[u8]] = &[
    b"=", b"!=", b"<", b">", b"-eq", b"-ne", b"-lt", b"-le", b"-gt", b"-ge", b"-nt", b"-ot", b"-ef",
];

struct Test<'a> {
    args: &'a [Bytes],
    pos: usize,
    sh: &'a Shell,
}

type TResult = Result<bool, String>;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Test<'_> {
    fn peek(&self) -> Option<&[u8]> {
        self.args.get(self.pos).map(Vec::as_slice)
    }

    fn or(&mut self) -> TResult {
        let mut v = self.and()?;
        while self.peek() == Some(b"-o") {
            self.pos += 1;
            let r = self.and()?;
            v = v || r;
        }
        Ok(v)
    }

    fn and(&mut self) -> TResult {
        let mut v = self.not()?;
        while self.peek() == Some(b"-a") {
            self.pos += 1;
            // Like dash, a dangling `-a` after a false operand is not an error.
            if self.peek().is_none() && !v {
                return Ok(v);
            }
            let r = self.not()?;
            v = v && r;
        }
        Ok(v)
    }

    fn not(&mut self) -> TResult {
        if self.peek() == Some(b"!") {
            self.pos += 1;
            return Ok(!self.not()?);
        }
        self.primary()
    }

    fn int(&self, s: &[u8]) -> Result<i64, String> {
        let t = s.trim_ascii();
        let ok = !t.is_empty()
            && t.iter()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || (i == 0 && (*c == b'-' || *c == b'+')));
        match (ok, t.iter().filter(|c| c.is_ascii_digit()).count() > 0) {
            (true, true) => {
                let neg = t.first() == Some(&b'-');
                let digits = t
                    .strip_prefix(b"-")
                    .or_else(|| t.strip_prefix(b"+"))
                    .unwrap_or(t);
                let trimmed: Vec<u8> = {
                    let z = digits.iter().take_while(|&&c| c == b'0').count();
                    let d = &digits[z.min(digits.len().saturating_sub(1))..];
                    d.to_vec()
                };
                let v = parse_number(&trimmed)
                    .ok_or_else(|| format!("Illegal number: {}", lossy(s)))?;
                Ok(if neg { -v } else { v })
            }
            _ => Err(format!("Illegal number: {}", lossy(s))),
        }
    }

    fn binary(&self, a: &[u8], op: &[u8], b: &[u8]) -> TResult {
        Ok(match op {
            b"=" => a == b,
            b"!=" => a != b,
            b"<" => a < b,
            b">" => a > b,
            b"-nt" | b"-ot" => {
                let m = |p: &[u8]| kiln_rt::stat(io::path(p), true).ok().map(|s| s.mtime);
                match (m(a), m(b)) {
                    (Some(x), Some(y)) => {
                        if op == b"-nt" {
                            x > y
                        } else {
                            x < y
                        }
                    }
                    (Some(_), None) => op == b"-nt",
                    (None, Some(_)) => op == b"-ot",
                    (None, None) => false,
                }
            }
            b"-ef" => {
                let s = |p: &[u8]| kiln_rt::stat(io::path(p), true).ok();
                match (s(a), s(b)) {
                    (Some(x), Some(y)) => x.dev == y.dev && x.ino == y.ino,
                    _ => false,
                }
            }
            _ => {
                let (x, y) = (self.int(a)?, self.int(b)?);
                match op {
                    b"-eq" => x == y,
                    b"-ne" => x != y,
                    b"-lt" => x < y,
                    b"-le" => x <= y,
                    b"-gt" => x > y,
                    _ => x >= y,
                }
            }
        })
    }

    fn unary(&self, op: &[u8], arg: &[u8]) -> TResult {
        Ok(match op {
            b"-n" => !arg.is_empty(),
            b"-z" => arg.is_empty(),
            b"-t" => {
                let fd = self.int(arg)?;
                u32::try_from(fd).is_ok_and(|fd| {
                    fd < crate::redirect::SCRIPT_FDS
                        && self.sh.user_fd(fd)
                        && is_tty(crate::redirect::real_fd(fd))
                })
            }
            _ => file_test(op, arg),
        })
    }

    fn primary(&mut self) -> TResult {
        let Some(a) = self.peek().map(<[u8]>::to_vec) else {
            return Err("argument expected".into());
        };
        let rest = self.args.len() - self.pos;
        if rest >= 3 {
            let op = self.args[self.pos + 1].as_slice();
            if BINARY.contains(&op) {
                let b = self.args[self.pos + 2].clone();
                self.pos += 3;
                return self.binary(&a, op, &b);
            }
        }
        if a == b"(" {
            self.pos += 1;
            let v = self.or()?;
            if self.peek() != Some(b")") {
                return Err("closing paren expected".into());
            }
            self.pos += 1;
            return Ok(v);
        }
        if UNARY.contains(&a.as_slice()) && rest >= 2 {
            let arg = self.args[self.pos + 1].clone();
            self.pos += 2;
            return self.unary(&a, &arg);
        }
        self.pos += 1;
        Ok(!a.is_empty())
    }

    /// POSIX's rules by argument count, then the general grammar.
    fn eval(&mut self) -> TResult {
        let n = self.args.len();
        // The fixed-count forms consume everything; the general grammar starts over.
        self.pos = n;
        let a = |i: usize| self.args[i].as_slice();
        let v = match n {
            0 => return Ok(false),
            1 => return Ok(!a(0).is_empty()),
            2 if a(0) == b"!" => return Ok(a(1).is_empty()),
            2 if UNARY.contains(&a(0)) => return self.unary(a(0), a(1)),
            2 => return Err(format!("{}: unexpected operator", lossy(a(0)))),
            3 if BINARY.contains(&a(1)) => return self.binary(a(0), a(1), a(2)),
            3 if a(0) == b"!" => {
                self.pos = 1;
                let v = self.primary_two()?;
                self.pos = n;
                return Ok(!v);
            }
            3 if a(0) == b"(" && a(2) == b")" => return Ok(!a(1).is_empty()),
            4 if a(0) == b"!" => {
                self.pos = 1;
                !self.or()?
            }
            _ => {
                self.pos = 0;
                self.or()?
            }
        };
        Ok(v)
    }

    fn primary_two(&mut self) -> TResult {
        let a = self.args[1].as_slice();
        let b = self.args[2].as_slice();
        if UNARY.contains(&a) {
            return self.unary(a, b);
        }
        if a == b"(" || b == b")" {
            return self.or();
        }
        Err(format!("{}: unexpected operator", lossy(a)))
    }
}

fn is_tty(fd: u32) -> bool {
    // A character device other than the null-like ones; there is no isatty in WASI.
    kiln_rt::fstat(fd).is_ok_and(|s| {
        let major = (s.rdev >> 8) & 0xfff;
        s.file_type() == kiln_rt::mode::S_IFCHR && major != 1
    })
}

/// `test ARGS` / `[ ARGS ]`: 0 true, 1 false, 2 error.
pub fn test(sh: &Shell, argv: &[Bytes]) -> i32 {
    let name = argv.first().cloned().unwrap_or_default();
    let mut args = argv.get(1..).unwrap_or(&[]);
    if name == b"[" {
        match args.last() {
            Some(l) if l == b"]" => args = &args[..args.len() - 1],
            _ => {
                sh.error("[: missing ]");
                return 2;
            }
        }
    }
    let mut t = Test { args, pos: 0, sh };
    let r = t.eval().and_then(|v| {
        if t.pos < args.len() {
            Err(format!("{}: unexpected operator", lossy(&args[t.pos])))
        } else {
            Ok(v)
        }
    });
    match r {
        Ok(v) => i32::from(!v),
        Err(msg) => {
            sh.error(format!("{}: {msg}", lossy(&name)));
            2
        }
    }
}
