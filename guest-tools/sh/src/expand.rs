//! Word expansion: tilde, parameters, command substitution, arithmetic, field splitting,
//! pathname expansion and quote removal.

use crate::arith::{self, ArithError, ArithVars};
use crate::ast::{Bytes, Param, ParamExp, ParamOp, Word, WordPart};
use crate::pattern::{self, PChar};
use crate::shell::{Flow, Res, Shell};

const QUOTED: u8 = 1;
/// Produced by an unquoted expansion: subject to field splitting.
const SPLIT: u8 = 2;
/// Zero-width: an empty quoted string, which still makes a field.
const MARK: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ch {
    c: u8,
    f: u8,
}

/// Expanded text, in segments separated by the hard field breaks of `"$@"`.
#[derive(Default)]
struct Out {
    segs: Vec<Vec<Ch>>,
}

impl Out {
    fn new() -> Out {
        Out {
            segs: vec![Vec::new()],
        }
    }

    fn cur(&mut self) -> &mut Vec<Ch> {
        if self.segs.is_empty() {
            self.segs.push(Vec::new());
        }
        let last = self.segs.len() - 1;
        &mut self.segs[last]
    }

    fn push(&mut self, s: &[u8], f: u8) {
        let cur = self.cur();
        cur.extend(s.iter().map(|&c| Ch { c, f }));
    }

    fn mark(&mut self) {
        self.cur().push(Ch { c: 0, f: MARK });
    }

    fn brk(&mut self) {
        self.segs.push(Vec::new());
    }
}

/// What a parameter holds.
enum Value {
    Unset,
    Str(Bytes),
    /// `$@` / `$*`.
    List(Vec<Bytes>, u8),
}

/// How a word is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Command arguments: field splitting and pathname expansion.
    Fields,
    /// One string, no splitting (redirection targets, `case` words, here-documents).
    Single,
    /// An assignment value: also tilde expansion after `:`.
    Assign,
}

fn strip(chars: &[Ch]) -> Bytes {
    chars
        .iter()
        .filter(|ch| ch.f & MARK == 0)
        .map(|ch| ch.c)
        .collect()
}

/// The pattern of expanded text: quoted characters are literal, and so is a character after
/// an unquoted backslash (which an expansion produced).
fn to_pattern(chars: &[Ch]) -> Vec<PChar> {
    let mut p = Vec::with_capacity(chars.len());
    let mut it = chars.iter().filter(|ch| ch.f & MARK == 0);
    while let Some(ch) = it.next() {
        let quoted = ch.f & QUOTED != 0;
        if !quoted && ch.c == b'\\' {
            if let Some(n) = it.next() {
                p.push(PChar {
                    c: n.c,
                    quoted: true,
                });
                continue;
            }
        }
        p.push(PChar { c: ch.c, quoted });
    }
    p
}

/// Field splitting of one segment, like dash's `ifsbreakup`.
fn split_fields(seg: &[Ch], ifs: &[u8], out: &mut Vec<Vec<Ch>>) {
    let is_ifs = |ch: &Ch| ch.f & SPLIT != 0 && ifs.contains(&ch.c);
    let is_ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n');
    let mut cur: Vec<Ch> = Vec::new();
    let mut i = 0;
    while let Some(&ch) = seg.get(i) {
        if !is_ifs(&ch) {
            cur.push(ch);
            i += 1;
            continue;
        }
        let mut ws = is_ws(ch.c);
        i += 1;
        if cur.is_empty() && ws {
            continue;
        }
        out.push(std::mem::take(&mut cur));
        while let Some(n) = seg.get(i) {
            if !is_ifs(n) {
                break;
            }
            if is_ws(n.c) {
                i += 1;
            } else if ws {
                ws = false;
                i += 1;
            } else {
                break;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
}

struct ShellVars<'a>(&'a mut Shell);

impl ArithVars for ShellVars<'_> {
    fn get(&self, name: &[u8]) -> Option<Vec<u8>> {
        self.0.get(name).map(<[u8]>::to_vec)
    }

    fn set(&mut self, name: &[u8], value: i64) -> Result<(), String> {
        self.0.try_set(name, value.to_string().into_bytes())
    }
}

/// The home directory of `user` from `/etc/passwd`.
fn home_of(user: &[u8]) -> Option<Bytes> {
    let passwd = std::fs::read("/etc/passwd").ok()?;
    passwd.split(|&c| c == b'\n').find_map(|line| {
        let fields: Vec<&[u8]> = line.split(|&c| c == b':').collect();
        (fields.first() == Some(&user) && fields.len() > 5).then(|| fields[5].to_vec())
    })
}

impl Shell {
    /// Expands command words into fields (splitting and globbing).
    pub fn expand_words(&mut self, words: &[Word]) -> Res<Vec<Bytes>> {
        let mut result = Vec::new();
        for w in words {
            self.expand_fields(w, &mut result)?;
        }
        Ok(result)
    }

    fn expand_fields(&mut self, w: &Word, result: &mut Vec<Bytes>) -> Res<()> {
        let mut out = Out::new();
        self.expand_top(w, Mode::Fields, &mut out)?;
        let ifs = self.ifs();
        let noglob = self.opt("noglob");
        for seg in &out.segs {
            let mut fields = Vec::new();
            split_fields(seg, &ifs, &mut fields);
            for f in fields {
                let pat = to_pattern(&f);
                if !noglob && pattern::has_meta(&pat) {
                    let matches = pattern::glob(&pat);
                    if !matches.is_empty() {
                        result.extend(matches);
                        continue;
                    }
                }
                result.push(strip(&f));
            }
        }
        Ok(())
    }

    /// Expands a word to one string, without splitting or globbing.
    pub fn expand_string(&mut self, w: &Word) -> Res<Bytes> {
        let mut out = Out::new();
        self.expand_top(w, Mode::Single, &mut out)?;
        Ok(self.join_segments(&out))
    }

    /// Expands an assignment value.
    pub fn expand_assign(&mut self, w: &Word) -> Res<Bytes> {
        let mut out = Out::new();
        self.expand_top(w, Mode::Assign, &mut out)?;
        Ok(self.join_segments(&out))
    }

    /// Joins the fields of `"$@"` where no splitting happens, with the first IFS character.
    fn join_segments(&self, out: &Out) -> Bytes {
        let sep = self.ifs().first().copied();
        let mut s = Vec::new();
        for (i, seg) in out.segs.iter().enumerate() {
            if i > 0 {
                s.extend(sep);
            }
            s.extend(strip(seg));
        }
        s
    }

    /// Expands a pattern (`case`, `${x#pat}`): quoted characters match literally.
    pub fn expand_pattern(&mut self, w: &Word) -> Res<Vec<PChar>> {
        let mut out = Out::new();
        self.expand_top(w, Mode::Single, &mut out)?;
        let mut p = Vec::new();
        for (i, seg) in out.segs.iter().enumerate() {
            if i > 0 {
                p.push(PChar {
                    c: b' ',
                    quoted: true,
                });
            }
            p.extend(to_pattern(seg));
        }
        Ok(p)
    }

    fn expand_top(&mut self, w: &Word, mode: Mode, out: &mut Out) -> Res<()> {
        self.expand_unquoted(w, mode, 0, out)
    }

    /// An unquoted word: the whole word, or the word of an unquoted `${x-word}`, whose
    /// literal text is split like the expansion (`lit_flag` SPLIT). Both get tilde expansion.
    fn expand_unquoted(&mut self, w: &Word, mode: Mode, lit_flag: u8, out: &mut Out) -> Res<()> {
        for (i, part) in w.parts.iter().enumerate() {
            match part {
                WordPart::Lit(s) => {
                    let last = i + 1 == w.parts.len();
                    self.expand_lit(s, (i == 0, last), mode, lit_flag, out);
                }
                other => self.expand_part(other, false, mode, out)?,
            }
        }
        Ok(())
    }

    /// An unquoted literal, with tilde expansion where it applies; `(first, last)`: where it
    /// sits in its word.
    fn expand_lit(
        &mut self,
        s: &[u8],
        (first, last): (bool, bool),
        mode: Mode,
        flag: u8,
        out: &mut Out,
    ) {
        let mut i = 0;
        while i < s.len() {
            let at_start = (i == 0 && first) || (mode == Mode::Assign && i > 0 && s[i - 1] == b':');
            if at_start && s[i] == b'~' {
                let stop = |c: &u8| *c == b'/' || (mode == Mode::Assign && *c == b':');
                let rest = &s[i + 1..];
                let end = rest.iter().position(stop);
                if end.is_some() || last {
                    let name = &rest[..end.unwrap_or(rest.len())];
                    let home = if name.is_empty() {
                        self.get(b"HOME").map(<[u8]>::to_vec)
                    } else {
                        home_of(name)
                    };
                    if let Some(h) = home {
                        out.push(&h, QUOTED);
                        i += 1 + name.len();
                        continue;
                    }
                }
            }
            out.push(&s[i..i + 1], flag);
            i += 1;
        }
    }

    fn expand_part(&mut self, part: &WordPart, quoted: bool, mode: Mode, out: &mut Out) -> Res<()> {
        match part {
            // Literal text of a `${x-word}` word: unquoted, it is split like the expansion.
            WordPart::Lit(s) => out.push(s, if quoted { QUOTED } else { SPLIT }),
            WordPart::Quoted(s) => {
                if s.is_empty() {
                    out.mark();
                }
                out.push(s, QUOTED);
            }
            WordPart::DQuoted(parts) => {
                let only_at = parts.iter().all(|p| {
                    matches!(p, WordPart::Param(pe) if pe.param == Param::Special(b'@') && pe.op == ParamOp::Plain)
                });
                if !(only_at && !parts.is_empty() && self.params.is_empty()) {
                    out.mark();
                }
                for p in parts {
                    self.expand_part(p, true, mode, out)?;
                }
            }
            WordPart::Param(pe) => self.expand_param(pe, quoted, mode, out)?,
            WordPart::CmdSub(list) => {
                let text = self.command_substitution(list)?;
                out.push(&text, if quoted { QUOTED } else { SPLIT });
            }
            WordPart::Arith(parts) => {
                let mut inner = Out::new();
                for p in parts {
                    self.expand_part(p, true, mode, &mut inner)?;
                }
                let expr = self.join_segments(&inner);
                let v = self.arith(&expr)?;
                out.push(
                    v.to_string().as_bytes(),
                    if quoted { QUOTED } else { SPLIT },
                );
            }
        }
        Ok(())
    }

    /// Evaluates an arithmetic expression, reporting errors like dash (status 2).
    pub fn arith(&mut self, expr: &[u8]) -> Res<i64> {
        match arith::eval(expr, &mut ShellVars(self)) {
            Ok(v) => Ok(v),
            Err(ArithError::Syntax(msg)) => {
                self.error(format!(
                    "arithmetic expression: {msg}: \"{}\"",
                    String::from_utf8_lossy(expr)
                ));
                Err(Flow::Exit(2))
            }
            Err(ArithError::IllegalNumber(v)) => {
                let mut m = b"Illegal number: ".to_vec();
                m.extend_from_slice(&v);
                self.error(m);
                Err(Flow::Exit(2))
            }
            Err(ArithError::Other(msg)) => {
                self.error(msg);
                Err(Flow::Exit(2))
            }
        }
    }

    fn value(&self, p: &Param) -> Value {
        match p {
            Param::Var(name) => match self.get(name) {
                Some(v) => Value::Str(v.to_vec()),
                None => Value::Unset,
            },
            Param::Positional(0) => Value::Str(self.arg0.clone()),
            Param::Positional(n) => match self.params.get(n - 1) {
                Some(v) => Value::Str(v.clone()),
                None => Value::Unset,
            },
            Param::Special(c) => match c {
                b'@' | b'*' => Value::List(self.params.clone(), *c),
                b'#' => Value::Str(self.params.len().to_string().into_bytes()),
                b'?' => Value::Str(self.status.to_string().into_bytes()),
                b'-' => Value::Str(self.opts.letters()),
                b'$' => Value::Str(self.pid.to_string().into_bytes()),
                b'!' => match self.last_bg {
                    Some(p) => Value::Str(p.to_string().into_bytes()),
                    None => Value::Unset,
                },
                _ => Value::Unset,
            },
        }
    }

    fn param_name(p: &Param) -> String {
        match p {
            Param::Var(n) => String::from_utf8_lossy(n).into_owned(),
            Param::Positional(n) => n.to_string(),
            Param::Special(c) => char::from(*c).to_string(),
        }
    }

    fn unset_error(&self, p: &Param) -> Flow {
        self.error(format!("{}: parameter not set", Self::param_name(p)));
        Flow::Exit(2)
    }

    /// Emits a value: a string, or the positional parameters.
    fn emit(&self, v: Value, quoted: bool, out: &mut Out) {
        let f = if quoted { QUOTED } else { SPLIT };
        match v {
            Value::Unset => {}
            Value::Str(s) => out.push(&s, f),
            Value::List(items, c) => {
                if quoted && c == b'*' {
                    let ifs = self.ifs();
                    for (i, it) in items.iter().enumerate() {
                        if i > 0 {
                            if let Some(&sep) = ifs.first() {
                                out.push(&[sep], f);
                            }
                        }
                        out.push(it, f);
                    }
                } else {
                    for (i, it) in items.iter().enumerate() {
                        if i > 0 {
                            out.brk();
                        }
                        if quoted {
                            out.mark();
                        }
                        out.push(it, f);
                    }
                }
            }
        }
    }

    fn expand_param(&mut self, pe: &ParamExp, quoted: bool, mode: Mode, out: &mut Out) -> Res<()> {
        let v = self.value(&pe.param);
        let (is_set, is_null) = match &v {
            Value::Unset => (false, true),
            Value::Str(s) => (true, s.is_empty()),
            Value::List(items, b'*') if quoted => {
                let sep = self.ifs().first().copied();
                (
                    true,
                    items.iter().all(|s| s.is_empty()) && (items.len() <= 1 || sep.is_none()),
                )
            }
            Value::List(items, _) => (true, items.len() <= 1 && items.iter().all(|s| s.is_empty())),
        };
        let nounset_err = |sh: &Shell| -> Res<()> {
            let special_list = matches!(pe.param, Param::Special(b'@' | b'*'));
            if !is_set && sh.opt("nounset") && !special_list {
                return Err(sh.unset_error(&pe.param));
            }
            Ok(())
        };
        match &pe.op {
            ParamOp::Plain => {
                nounset_err(self)?;
                self.emit(v, quoted, out);
            }
            ParamOp::Length => {
                nounset_err(self)?;
                let n = match v {
                    Value::Unset => 0,
                    Value::Str(s) => s.len(),
                    Value::List(items, _) => items.len(),
                };
                out.push(
                    n.to_string().as_bytes(),
                    if quoted { QUOTED } else { SPLIT },
                );
            }
            ParamOp::Default(colon, w) | ParamOp::Alt(colon, w) => {
                let present = is_set && !(*colon && is_null);
                let use_word = matches!(pe.op, ParamOp::Default(..)) != present;
                if use_word && quoted {
                    for p in &w.parts {
                        self.expand_part(p, true, mode, out)?;
                    }
                } else if use_word {
                    self.expand_unquoted(w, mode, SPLIT, out)?;
                } else if matches!(pe.op, ParamOp::Default(..)) {
                    self.emit(v, quoted, out);
                }
            }
            ParamOp::Assign(colon, w) => {
                let present = is_set && !(*colon && is_null);
                if present {
                    self.emit(v, quoted, out);
                } else {
                    let Param::Var(name) = &pe.param else {
                        self.error(format!(
                            "{}: bad variable name",
                            Self::param_name(&pe.param)
                        ));
                        return Err(Flow::Exit(2));
                    };
                    let value = self.expand_string(w)?;
                    self.set_or_exit(name, value.clone())?;
                    out.push(&value, if quoted { QUOTED } else { SPLIT });
                }
            }
            ParamOp::Error(colon, w) => {
                let present = is_set && !(*colon && is_null);
                if present {
                    self.emit(v, quoted, out);
                } else {
                    let msg = if w.parts.is_empty() {
                        if *colon {
                            b"parameter null or not set".to_vec()
                        } else {
                            b"parameter not set".to_vec()
                        }
                    } else {
                        self.expand_string(w)?
                    };
                    let mut m = Self::param_name(&pe.param).into_bytes();
                    m.extend_from_slice(b": ");
                    m.extend_from_slice(&msg);
                    self.error(m);
                    return Err(Flow::Exit(2));
                }
            }
            ParamOp::TrimPrefix(longest, w) | ParamOp::TrimSuffix(longest, w) => {
                nounset_err(self)?;
                let pat = self.expand_pattern(w)?;
                let prefix = matches!(pe.op, ParamOp::TrimPrefix(..));
                let trim = |s: &[u8]| trim(s, &pat, prefix, *longest);
                let v = match v {
                    Value::Unset => Value::Unset,
                    Value::Str(s) => Value::Str(trim(&s)),
                    Value::List(items, _) => Value::Str(trim(&items.join(&b' '))),
                };
                self.emit(v, quoted, out);
            }
        }
        Ok(())
    }
}

/// Removes the shortest or longest prefix or suffix of `s` matching `pat`.
fn trim(s: &[u8], pat: &[PChar], prefix: bool, longest: bool) -> Bytes {
    let n = s.len();
    let lens: Box<dyn Iterator<Item = usize>> = if longest {
        Box::new((0..=n).rev())
    } else {
        Box::new(0..=n)
    };
    for len in lens {
        if prefix {
            if pattern::matches(pat, &s[..len]) {
                return s[len..].to_vec();
            }
        } else if pattern::matches(pat, &s[n - len..]) {
            return s[..n - len].to_vec();
        }
    }
    s.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str, f: u8) -> Vec<Ch> {
        s.bytes().map(|c| Ch { c, f }).collect()
    }

    fn split(s: &str, ifs: &str) -> Vec<String> {
        let mut out = Vec::new();
        split_fields(&chars(s, SPLIT), ifs.as_bytes(), &mut out);
        out.iter()
            .map(|f| String::from_utf8_lossy(&strip(f)).into_owned())
            .collect()
    }

    #[test]
    fn field_splitting() {
        assert_eq!(split("  a  b ", " \t\n"), ["a", "b"]);
        assert_eq!(split("a::b:", ":"), ["a", "", "b"]);
        assert_eq!(split(" a : b ", " :"), ["a", "b"]);
        assert_eq!(split(":a", ":"), ["", "a"]);
        assert!(split("", " ").is_empty());
    }

    #[test]
    fn trimming() {
        let pat =
            |s: &str| -> Vec<PChar> { s.bytes().map(|c| PChar { c, quoted: false }).collect() };
        assert_eq!(trim(b"a/b/c", &pat("*/"), true, false), b"b/c");
        assert_eq!(trim(b"a/b/c", &pat("*/"), true, true), b"c");
        assert_eq!(trim(b"a.tar.gz", &pat(".*"), false, false), b"a.tar");
        assert_eq!(trim(b"a.tar.gz", &pat(".*"), false, true), b"a");
    }
}
