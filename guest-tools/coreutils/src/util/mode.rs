//! chmod(1) mode strings: octal (`755`, `2775`), symbolic (`u+x,go-w`, `a=rX`, `g=u`), and an
//! operator followed by octal bits (`=2775`, `+755`, `-022`), as GNU chmod takes them.

/// A parsed mode operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// An octal mode and how many digits it had (fewer than 5 keep a directory's set-id bits).
    Octal {
        mode: u32,
        digits: usize,
    },
    Symbolic(Vec<Clause>),
}

/// `[ugoa]*` followed by actions, e.g. `go-w+x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The bits the clause may touch; `None` for an empty `who` (all, less the umask).
    who: Option<u32>,
    actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Action {
    op: u8,
    perm: Perm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perm {
    /// `rwxst` bits, and whether `X` was given.
    Bits { bits: u32, cond_x: bool },
    /// Copy another class's bits: `u`, `g` or `o`.
    Copy(u8),
    /// Octal bits after an operator (`=2775`): all of them, the umask not applied, and `=`
    /// clears a directory's set-id bits unless they are given.
    Octal(u32),
}

const WHO_U: u32 = 0o4700;
const WHO_G: u32 = 0o2070;
const WHO_O: u32 = 0o1007;
const ALL: u32 = 0o7777;

impl Mode {
    /// Parses a mode operand.
    pub fn parse(s: &str) -> Result<Mode, String> {
        let invalid = || format!("invalid mode: '{s}'");
        if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let mode = u32::from_str_radix(s, 8).map_err(|_| invalid())?;
            if mode > ALL {
                return Err(invalid());
            }
            return Ok(Mode::Octal {
                mode,
                digits: s.len(),
            });
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let b = part.as_bytes();
            let mut i = 0;
            let mut who = 0;
            let mut any_who = false;
            while i < b.len() && matches!(b[i], b'u' | b'g' | b'o' | b'a') {
                who |= match b[i] {
                    b'u' => WHO_U,
                    b'g' => WHO_G,
                    b'o' => WHO_O,
                    _ => ALL,
                };
                any_who = true;
                i += 1;
            }
            let mut actions = Vec::new();
            while i < b.len() {
                let op = b[i];
                if !matches!(op, b'+' | b'-' | b'=') {
                    return Err(invalid());
                }
                i += 1;
                if !any_who && i < b.len() && b[i].is_ascii_digit() {
                    // `[-+=][0-7]+`: the whole clause.
                    let digits = &part[i..];
                    if !digits.bytes().all(|d| (b'0'..=b'7').contains(&d)) {
                        return Err(invalid());
                    }
                    let bits = u32::from_str_radix(digits, 8).map_err(|_| invalid())?;
                    if bits > ALL {
                        return Err(invalid());
                    }
                    actions.push(Action {
                        op,
                        perm: Perm::Octal(bits),
                    });
                    i = b.len();
                    continue;
                }
                let perm = if i < b.len() && matches!(b[i], b'u' | b'g' | b'o') {
                    i += 1;
                    Perm::Copy(b[i - 1])
                } else {
                    let mut bits = 0;
                    let mut cond_x = false;
                    while i < b.len() && matches!(b[i], b'r' | b'w' | b'x' | b'X' | b's' | b't') {
                        match b[i] {
                            b'r' => bits |= 0o444,
                            b'w' => bits |= 0o222,
                            b'x' => bits |= 0o111,
                            b'X' => cond_x = true,
                            b's' => bits |= 0o6000,
                            _ => bits |= 0o1000,
                        }
                        i += 1;
                    }
                    Perm::Bits { bits, cond_x }
                };
                actions.push(Action { op, perm });
            }
            if actions.is_empty() {
                return Err(invalid());
            }
            clauses.push(Clause {
                who: any_who.then_some(who),
                actions,
            });
        }
        Ok(Mode::Symbolic(clauses))
    }

    /// The new permission bits for a file whose current mode is `old`.
    pub fn apply(&self, old: u32, is_dir: bool, umask: u32) -> u32 {
        let old = old & ALL;
        match self {
            Mode::Octal { mode, digits } => {
                if is_dir && *digits < 5 {
                    mode | (old & 0o6000)
                } else {
                    *mode
                }
            }
            Mode::Symbolic(clauses) => {
                let mut cur = old;
                for c in clauses {
                    for a in &c.actions {
                        if let Perm::Octal(bits) = a.perm {
                            cur = match a.op {
                                b'+' => cur | bits,
                                b'-' => cur & !bits,
                                _ => bits,
                            };
                            continue;
                        }
                        let value = match a.perm {
                            Perm::Octal(_) => 0,
                            Perm::Bits { bits, cond_x } => {
                                let x = cond_x && (is_dir || cur & 0o111 != 0);
                                bits | if x { 0o111 } else { 0 }
                            }
                            Perm::Copy(from) => {
                                let v = match from {
                                    b'u' => (cur >> 6) & 7,
                                    b'g' => (cur >> 3) & 7,
                                    _ => cur & 7,
                                };
                                v * 0o111
                            }
                        };
                        let (mask, value) = match c.who {
                            Some(w) => (w, value & w),
                            // No `who`: like `a`, but the umask's bits stay as they are; the
                            // sticky and set-id bits are not masked.
                            None => (ALL, value & !(umask & 0o777)),
                        };
                        cur = match a.op {
                            b'+' => cur | value,
                            b'-' => cur & !value,
                            _ => {
                                let keep = if c.who.is_none() { umask & 0o777 } else { 0 };
                                let mut clear = mask & !keep;
                                // `=` leaves a directory's set-id bits unless they are named.
                                if is_dir {
                                    clear &= !0o6000;
                                }
                                (cur & !clear) | value
                            }
                        };
                    }
                }
                cur
            }
        }
    }
}

/// Renders permission bits and a file type as `ls -l` and `stat %A` do (`-rwxr-xr-x`).
pub fn render(mode: u32) -> String {
    use kiln_rt::mode::*;
    let t = match mode & S_IFMT {
        S_IFDIR => 'd',
        S_IFLNK => 'l',
        S_IFCHR => 'c',
        S_IFBLK => 'b',
        S_IFIFO => 'p',
        S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let triple = |r: u32, w: u32, x: u32, special: u32, on: char, off: char| -> [char; 3] {
        let exec = match (mode & x != 0, mode & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => 'x',
            (false, false) => '-',
        };
        [
            if mode & r != 0 { 'r' } else { '-' },
            if mode & w != 0 { 'w' } else { '-' },
            exec,
        ]
    };
    s.extend(triple(0o400, 0o200, 0o100, 0o4000, 's', 'S'));
    s.extend(triple(0o040, 0o020, 0o010, 0o2000, 's', 'S'));
    s.extend(triple(0o004, 0o002, 0o001, 0o1000, 't', 'T'));
    s
}

/// Whether `arg` is a mode that looks like an option (`-w`, `-rwx`, `-022`), as `chmod -w f`
/// allows.
pub fn is_negative_mode(arg: &str) -> bool {
    let rest = arg.strip_prefix('-').unwrap_or_default();
    !rest.is_empty()
        && (rest
            .bytes()
            .all(|b| matches!(b, b'r' | b'w' | b'x' | b'X' | b's' | b't'))
            || rest.bytes().all(|b| (b'0'..=b'7').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, old: u32, dir: bool) -> u32 {
        Mode::parse(s).expect("valid").apply(old, dir, 0o022)
    }

    #[test]
    fn an_operator_with_octal_bits() {
        assert_eq!(sym("=2775", 0o755, true), 0o2775);
        assert_eq!(sym("=755", 0o2775, true), 0o755);
        assert_eq!(sym("+755", 0o600, false), 0o755);
        assert_eq!(sym("-022", 0o777, false), 0o755);
        assert_eq!(sym("-6000", 0o6755, true), 0o755);
        assert_eq!(sym("u+x,=640", 0o600, false), 0o640);
        for bad in ["=8", "=7a", "u=755", "=17777"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn octal() {
        assert_eq!(sym("755", 0o644, false), 0o755);
        assert_eq!(sym("0755", 0o2775, true), 0o2755);
        assert_eq!(sym("00755", 0o2775, true), 0o755);
        assert!(Mode::parse("77777").is_err());
    }

    #[test]
    fn symbolic() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("a=rX", 0o754, false), 0o555);
        assert_eq!(sym("a=rX", 0o644, false), 0o444);
        assert_eq!(sym("a=rX", 0o600, true), 0o555);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("=r", 0o644, false), 0o444);
        assert_eq!(sym("=r", 0o777, false), 0o466);
        assert_eq!(sym("g=u", 0o740, false), 0o770);
        assert_eq!(sym("u+s,o+t", 0o755, false), 0o5755);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o644, false), 0o750);
        assert_eq!(sym("g+s", 0o755, true), 0o2755);
        for bad in ["", "u", "z+x", "u+x,", "+q", "8"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders() {
        assert_eq!(render(0o100755), "-rwxr-xr-x");
        assert_eq!(render(0o41777), "drwxrwxrwt");
        assert_eq!(render(0o104644), "-rwSr--r--");
        assert_eq!(render(0o120777), "lrwxrwxrwx");
    }

    #[test]
    fn negative_modes() {
        assert!(is_negative_mode("-w"));
        assert!(is_negative_mode("-rwx"));
        assert!(!is_negative_mode("-R"));
        assert!(!is_negative_mode("-"));
    }
}
