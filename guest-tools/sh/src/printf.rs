//! `printf` and `echo` (dash's: `echo` always interprets backslash escapes).

use crate::arith::parse_number;
use crate::ast::Bytes;
use crate::shell::Shell;

/// Reads an octal escape of up to `max` digits.
fn octal(s: &[u8], max: usize) -> (u8, usize) {
    let mut v: u32 = 0;
    let mut n = 0;
    while n < max {
        match s.get(n) {
            Some(&c) if (b'0'..=b'7').contains(&c) => {
                v = v * 8 + u32::from(c - b'0');
                n += 1;
            }
            _ => break,
        }
    }
    ((v & 0xff) as u8, n)
}

/// Backslash escapes of `echo` and `%b` (octal with or without a leading 0). Returns false
/// when `\c` stopped the output.
pub fn escapes(s: &[u8], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = s.get(i) else {
            out.push(b'\\');
            break;
        };
        i += 1;
        match e {
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'c' => return false,
            b'e' => out.push(0x1b),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'\\' => out.push(b'\\'),
            b'0' => {
                let (v, n) = octal(&s[i..], 3);
                out.push(v);
                i += n;
            }
            b'1'..=b'7' => {
                let (v, n) = octal(&s[i - 1..], 3);
                out.push(v);
                i += n - 1;
            }
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    true
}

/// The escapes of a printf format string.
fn format_escape(s: &[u8], i: &mut usize, out: &mut Vec<u8>) {
    let Some(&e) = s.get(*i) else {
        out.push(b'\\');
        return;
    };
    *i += 1;
    match e {
        b'a' => out.push(7),
        b'b' => out.push(8),
        b'e' => out.push(0x1b),
        b'f' => out.push(12),
        b'n' => out.push(b'\n'),
        b'r' => out.push(b'\r'),
        b't' => out.push(b'\t'),
        b'v' => out.push(11),
        b'\\' => out.push(b'\\'),
        b'"' => out.push(b'"'),
        b'\'' => out.push(b'\''),
        b'0'..=b'7' => {
            let (v, n) = octal(&s[*i - 1..], 3);
            out.push(v);
            *i += n - 1;
        }
        _ => {
            out.push(b'\\');
            out.push(e);
        }
    }
}

struct Printf<'a> {
    sh: &'a Shell,
    args: &'a [Bytes],
    next: usize,
    status: i32,
}

impl Printf<'_> {
    fn arg(&mut self) -> Option<&[u8]> {
        let a = self.args.get(self.next)?;
        self.next += 1;
        Some(a)
    }

    fn num_err(&mut self, a: &[u8], msg: &str) {
        self.sh
            .error(format!("printf: {}: {msg}", String::from_utf8_lossy(a)));
        self.status = 1;
    }

    /// A numeric argument like `strtoimax`/`strtoumax`: leading blanks, sign, `0`/`0x`
    /// prefixes, `'c` for a character code; out-of-range values are clamped (status 1).
    /// Returns (negative, magnitude).
    fn num_arg(&mut self) -> (bool, u128) {
        let Some(a) = self.arg().map(<[u8]>::to_vec) else {
            return (false, 0);
        };
        if let Some(rest) = a.strip_prefix(b"'").or_else(|| a.strip_prefix(b"\"")) {
            return (false, rest.first().map_or(0, |&c| u128::from(c)));
        }
        let t = a.trim_ascii_start();
        let (neg, body) = match t.first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (radix, digits) =
            if body.len() > 1 && (body.starts_with(b"0x") || body.starts_with(b"0X")) {
                (16, &body[2..])
            } else if body.first() == Some(&b'0') {
                (8, body)
            } else {
                (10, body)
            };
        let n = digits
            .iter()
            .take_while(|c| char::from(**c).is_digit(radix))
            .count();
        let mut v: u128 = 0;
        for &c in &digits[..n] {
            let d = char::from(c).to_digit(radix).map_or(0, u128::from);
            v = v.saturating_mul(u128::from(radix)).saturating_add(d);
        }
        if t.is_empty() {
            return (false, 0);
        }
        if n == 0 {
            self.num_err(&a, "expected numeric value");
        } else if n < digits.len() {
            self.num_err(&a, "not completely converted");
        }
        (neg, v)
    }

    fn range_err(&mut self) {
        self.sh.error("printf: Result too large");
        self.status = 1;
    }

    fn int_arg(&mut self) -> i64 {
        let (neg, v) = self.num_arg();
        let limit = if neg { 1u128 << 63 } else { (1u128 << 63) - 1 };
        if v > limit {
            self.range_err();
            return if neg { i64::MIN } else { i64::MAX };
        }
        let v = v as i64;
        if neg {
            v.wrapping_neg()
        } else {
            v
        }
    }

    fn uint_arg(&mut self) -> u64 {
        let (neg, v) = self.num_arg();
        if v > u128::from(u64::MAX) {
            self.range_err();
            return u64::MAX;
        }
        let v = v as u64;
        if neg {
            v.wrapping_neg()
        } else {
            v
        }
    }

    fn float_arg(&mut self) -> f64 {
        let Some(a) = self.arg().map(<[u8]>::to_vec) else {
            return 0.0;
        };
        if let Some(rest) = a.strip_prefix(b"'").or_else(|| a.strip_prefix(b"\"")) {
            return rest.first().map_or(0.0, |&c| f64::from(c));
        }
        match std::str::from_utf8(&a)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
        {
            Some(v) => v,
            None => {
                if let Some(v) = parse_number(&a) {
                    return v as f64;
                }
                self.num_err(&a, "expected numeric value");
                0.0
            }
        }
    }

    /// One pass over the format; false when `\c` stopped everything.
    fn run(&mut self, fmt: &[u8], out: &mut Vec<u8>) -> bool {
        let mut i = 0;
        while let Some(&c) = fmt.get(i) {
            i += 1;
            if c == b'\\' {
                format_escape(fmt, &mut i, out);
                continue;
            }
            if c != b'%' {
                out.push(c);
                continue;
            }
            if fmt.get(i) == Some(&b'%') {
                out.push(b'%');
                i += 1;
                continue;
            }
            let mut flags = String::new();
            while let Some(&f) = fmt.get(i) {
                if b"-+ #0".contains(&f) {
                    flags.push(char::from(f));
                    i += 1;
                } else {
                    break;
                }
            }
            let mut width: Option<i64> = None;
            if fmt.get(i) == Some(&b'*') {
                i += 1;
                width = Some(self.int_arg());
            } else {
                let start = i;
                while fmt.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if i > start {
                    width = parse_number(&fmt[start..i]).or(Some(0));
                    if fmt[start] == b'0' {
                        width = std::str::from_utf8(&fmt[start..i])
                            .ok()
                            .and_then(|s| s.parse().ok());
                    }
                }
            }
            let mut precision: Option<i64> = None;
            if fmt.get(i) == Some(&b'.') {
                i += 1;
                if fmt.get(i) == Some(&b'*') {
                    i += 1;
                    precision = Some(self.int_arg());
                } else {
                    let start = i;
                    while fmt.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                    precision = std::str::from_utf8(&fmt[start..i])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .or(Some(0));
                }
            }
            while matches!(
                fmt.get(i),
                Some(b'l') | Some(b'h') | Some(b'j') | Some(b'z') | Some(b't') | Some(b'L')
            ) {
                i += 1;
            }
            let Some(&conv) = fmt.get(i) else {
                self.sh.error("printf: %: invalid directive");
                self.status = 2;
                return false;
            };
            i += 1;
            if let Some(w) = width {
                if w < 0 {
                    flags.push('-');
                    width = Some(-w);
                }
            }
            let body: Vec<u8> = match conv {
                b's' => {
                    let mut s = self.arg().map(<[u8]>::to_vec).unwrap_or_default();
                    if let Some(p) = precision {
                        s.truncate(usize::try_from(p).unwrap_or(0));
                    }
                    s
                }
                b'b' => {
                    let a = self.arg().map(<[u8]>::to_vec).unwrap_or_default();
                    let mut s = Vec::new();
                    let go_on = escapes(&a, &mut s);
                    if let Some(p) = precision {
                        s.truncate(usize::try_from(p).unwrap_or(0));
                    }
                    if !go_on {
                        pad(out, &s, width, &flags);
                        return false;
                    }
                    s
                }
                b'c' => self
                    .arg()
                    .and_then(|a| a.first().copied())
                    .map(|c| vec![c])
                    .unwrap_or_default(),
                b'd' | b'i' => {
                    let v = self.int_arg();
                    int_body(v.unsigned_abs().to_string(), v < 0, precision, &flags)
                }
                b'u' | b'o' | b'x' | b'X' => {
                    let v = self.uint_arg();
                    let digits = match conv {
                        b'u' => v.to_string(),
                        b'o' => format!("{v:o}"),
                        b'x' => format!("{v:x}"),
                        _ => format!("{v:X}"),
                    };
                    let mut d = int_body(digits, false, precision, &flags.replace(['+', ' '], ""));
                    if flags.contains('#') && v != 0 {
                        let prefix: &[u8] = match conv {
                            b'o' if !d.starts_with(b"0") => b"0",
                            b'x' => b"0x",
                            b'X' => b"0X",
                            _ => b"",
                        };
                        d.splice(0..0, prefix.iter().copied());
                    }
                    d
                }
                b'e' | b'E' | b'f' | b'F' | b'g' | b'G' => {
                    let v = self.float_arg();
                    float_body(v, conv, precision, &flags)
                }
                _ => {
                    self.sh
                        .error(format!("printf: %{}: invalid directive", char::from(conv)));
                    self.status = 2;
                    return false;
                }
            };
            let zero_ok = flags.contains('0')
                && !flags.contains('-')
                && matches!(
                    conv,
                    b'd' | b'i'
                        | b'u'
                        | b'o'
                        | b'x'
                        | b'X'
                        | b'e'
                        | b'E'
                        | b'f'
                        | b'F'
                        | b'g'
                        | b'G'
                )
                && !(precision.is_some()
                    && matches!(conv, b'd' | b'i' | b'u' | b'o' | b'x' | b'X'));
            if zero_ok {
                let w = usize::try_from(width.unwrap_or(0)).unwrap_or(0);
                let mut b = body;
                let sign = usize::from(matches!(b.first(), Some(b'-') | Some(b'+') | Some(b' ')));
                while b.len() < w {
                    b.insert(sign, b'0');
                }
                out.extend_from_slice(&b);
            } else {
                pad(out, &body, width, &flags);
            }
        }
        true
    }
}

fn int_body(digits: String, neg: bool, precision: Option<i64>, flags: &str) -> Vec<u8> {
    let mut d = digits;
    if let Some(p) = precision {
        let p = usize::try_from(p).unwrap_or(0);
        if p == 0 && d == "0" {
            d.clear();
        }
        while d.len() < p {
            d.insert(0, '0');
        }
    }
    let sign = if neg {
        "-"
    } else if flags.contains('+') {
        "+"
    } else if flags.contains(' ') {
        " "
    } else {
        ""
    };
    format!("{sign}{d}").into_bytes()
}

fn float_body(v: f64, conv: u8, precision: Option<i64>, flags: &str) -> Vec<u8> {
    let p = usize::try_from(precision.unwrap_or(6)).unwrap_or(6);
    let mut s = match conv {
        b'f' | b'F' => format!("{:.*}", p, v.abs()),
        b'e' | b'E' => exp_format(v.abs(), p),
        _ => {
            let p = p.max(1);
            let exp = if v == 0.0 {
                0
            } else {
                v.abs().log10().floor() as i32
            };
            let mut s = if exp < -4 || exp >= p as i32 {
                exp_format(v.abs(), p - 1)
            } else {
                format!(
                    "{:.*}",
                    usize::try_from(p as i32 - 1 - exp).unwrap_or(0),
                    v.abs()
                )
            };
            if !flags.contains('#') {
                if let Some(epos) = s.find('e') {
                    let (m, e) = s.split_at(epos);
                    let m = if m.contains('.') {
                        m.trim_end_matches('0').trim_end_matches('.')
                    } else {
                        m
                    };
                    s = format!("{m}{e}");
                } else if s.contains('.') {
                    s = s.trim_end_matches('0').trim_end_matches('.').to_string();
                }
            }
            s
        }
    };
    if conv.is_ascii_uppercase() {
        s = s.to_uppercase();
    }
    let sign = if v.is_sign_negative() && v != 0.0 {
        "-"
    } else if flags.contains('+') {
        "+"
    } else if flags.contains(' ') {
        " "
    } else {
        ""
    };
    format!("{sign}{s}").into_bytes()
}

fn exp_format(v: f64, p: usize) -> String {
    let s = format!("{:.*e}", p, v);
    match s.split_once('e') {
        Some((m, e)) => {
            let n: i32 = e.parse().unwrap_or(0);
            let sign = if n < 0 { '-' } else { '+' };
            format!("{m}e{sign}{:02}", n.abs())
        }
        None => s,
    }
}

fn pad(out: &mut Vec<u8>, body: &[u8], width: Option<i64>, flags: &str) {
    let w = usize::try_from(width.unwrap_or(0)).unwrap_or(0);
    let fill = w.saturating_sub(body.len());
    if flags.contains('-') {
        out.extend_from_slice(body);
        out.extend(std::iter::repeat_n(b' ', fill));
    } else {
        out.extend(std::iter::repeat_n(b' ', fill));
        out.extend_from_slice(body);
    }
}

/// `printf FORMAT [ARGS]`: the output and the status.
pub fn printf(sh: &Shell, argv: &[Bytes]) -> (Vec<u8>, i32) {
    let mut args = argv.get(1..).unwrap_or(&[]);
    match args.first() {
        Some(a) if a == b"--" => args = &args[1..],
        Some(a) if a.len() > 1 && a[0] == b'-' => {
            sh.error(format!(
                "printf: Illegal option {}",
                String::from_utf8_lossy(&a[..2])
            ));
            return (Vec::new(), 2);
        }
        _ => {}
    }
    let Some(fmt) = args.first() else {
        sh.error("printf: usage: printf format [arg ...]");
        return (Vec::new(), 2);
    };
    let mut p = Printf {
        sh,
        args: &args[1..],
        next: 0,
        status: 0,
    };
    let mut out = Vec::new();
    loop {
        let before = p.next;
        if !p.run(fmt, &mut out) {
            break;
        }
        if p.next >= p.args.len() || p.next == before {
            break;
        }
    }
    (out, p.status)
}

/// dash's `echo`: `-n` only, escapes always.
pub fn echo(argv: &[Bytes]) -> Vec<u8> {
    let mut args = argv.get(1..).unwrap_or(&[]);
    let mut newline = true;
    if args.first().is_some_and(|a| a == b"-n") {
        newline = false;
        args = &args[1..];
    }
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        if !escapes(a, &mut out) {
            return out;
        }
    }
    if newline {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf(args: &[&str]) -> String {
        let sh = Shell::new(1);
        let mut argv: Vec<Bytes> = vec![b"printf".to_vec()];
        argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        String::from_utf8_lossy(&printf(&sh, &argv).0).into_owned()
    }

    #[test]
    fn formats() {
        assert_eq!(pf(&["%s-%s\\n", "a", "b", "c"]), "a-b\nc-\n");
        assert_eq!(pf(&["%5d|%-3s|%03d", "42", "x", "7"]), "   42|x  |007");
        assert_eq!(pf(&["%x %o %X", "255", "8", "255"]), "ff 10 FF");
        assert_eq!(pf(&["%.2f", "3.14159"]), "3.14");
        assert_eq!(pf(&["%b", "a\\tb"]), "a\tb");
        assert_eq!(pf(&["%c", "xyz"]), "x");
        assert_eq!(pf(&["%d", "'A"]), "65");
    }

    #[test]
    fn echo_escapes() {
        let argv: Vec<Bytes> = vec![
            b"echo".to_vec(),
            b"a\\nb".to_vec(),
            b"c\\c".to_vec(),
            b"d".to_vec(),
        ];
        assert_eq!(echo(&argv), b"a\nb c");
    }
}
