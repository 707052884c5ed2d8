//! sort: uutils sort, except `-c`/`-C` (checking whether input is sorted), which uutils runs
//! on a reader thread that WASI cannot start. The check is our own: GNU's key comparison
//! (`-k`, `-t`, `-b -d -f -g -h -i -M -n -r -V`, `-s`, `-u`, `-z`) over the whole input.

use std::cmp::Ordering;
use std::ffi::{OsStr, OsString};
use std::io::Read;

use crate::util::args::{self, Opt, Parsed, Parser};
use crate::util::{quote, strerror, usage_error, warn};

const TOOL: &str = "sort";

const OPTS: &[Opt] = &[
    Opt::flag("ignore-leading-blanks", 'b', "ignore-leading-blanks"),
    Opt::flag("dictionary-order", 'd', "dictionary-order"),
    Opt::flag("ignore-case", 'f', "ignore-case"),
    Opt::flag("general-numeric-sort", 'g', "general-numeric-sort"),
    Opt::flag("ignore-nonprinting", 'i', "ignore-nonprinting"),
    Opt::flag("month-sort", 'M', "month-sort"),
    Opt::flag("human-numeric-sort", 'h', "human-numeric-sort"),
    Opt::flag("numeric-sort", 'n', "numeric-sort"),
    Opt::flag("random-sort", 'R', "random-sort"),
    Opt::long("random-source", "random-source").with_value(),
    Opt::flag("reverse", 'r', "reverse"),
    Opt::long("sort", "sort").with_value(),
    Opt::flag("version-sort", 'V', "version-sort"),
    Opt::long("batch-size", "batch-size").with_value(),
    Opt::short("check", 'c'),
    Opt::long("check", "check"),
    Opt::long("check-when", "check-when").with_value(),
    Opt::short("check-quiet", 'C'),
    Opt::long("compress-program", "compress-program").with_value(),
    Opt::long("debug", "debug"),
    Opt::long("files0-from", "files0-from").with_value(),
    Opt::flag("key", 'k', "key").with_value(),
    Opt::flag("merge", 'm', "merge"),
    Opt::flag("output", 'o', "output").with_value(),
    Opt::flag("stable", 's', "stable"),
    Opt::flag("buffer-size", 'S', "buffer-size").with_value(),
    Opt::flag("field-separator", 't', "field-separator").with_value(),
    Opt::flag("temporary-directory", 'T', "temporary-directory").with_value(),
    Opt::long("parallel", "parallel").with_value(),
    Opt::flag("unique", 'u', "unique"),
    Opt::flag("zero-terminated", 'z', "zero-terminated"),
];

/// How a key (or the whole line) compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Order {
    blank_start: bool,
    blank_end: bool,
    dictionary: bool,
    fold: bool,
    general: bool,
    nonprinting: bool,
    month: bool,
    human: bool,
    numeric: bool,
    reverse: bool,
    version: bool,
}

impl Order {
    /// Applies ordering letters (`bdfgiMhnrV`); `end` tells a `b` after the end position.
    fn set(&mut self, letters: &str, end: bool) -> Result<(), String> {
        for c in letters.chars() {
            match c {
                'b' if end => self.blank_end = true,
                'b' => self.blank_start = true,
                'd' => self.dictionary = true,
                'f' => self.fold = true,
                'g' => self.general = true,
                'i' => self.nonprinting = true,
                'M' => self.month = true,
                'h' => self.human = true,
                'n' => self.numeric = true,
                'r' => self.reverse = true,
                'V' => self.version = true,
                _ => return Err(format!("invalid key option '{c}'")),
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    start_field: usize,
    start_char: usize,
    /// Field and char (0 = the field's end); `None` = end of line.
    end: Option<(usize, usize)>,
    order: Order,
}

struct Check {
    keys: Vec<Key>,
    global: Order,
    separator: Option<u8>,
    stable: bool,
    unique: bool,
    quiet: bool,
    eol: u8,
}

fn parse_key(spec: &str, global: Order) -> Result<Key, String> {
    let bad = || format!("invalid key specification {}", quote(spec));
    let (start, end) = match spec.split_once(',') {
        Some((s, e)) => (s, Some(e)),
        None => (spec, None),
    };
    let split_pos = |s: &str| {
        let digits = s
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        (s[..digits].to_string(), s[digits..].to_string())
    };
    let mut order = Order::default();
    let (pos, letters) = split_pos(start);
    order.set(&letters, false).map_err(|_| bad())?;
    let (f, c) = pos.split_once('.').unwrap_or((pos.as_str(), "1"));
    let start_field: usize = f.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
    let start_char: usize = c.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
    let end = match end {
        None => None,
        Some(e) => {
            let (pos, letters) = split_pos(e);
            order.set(&letters, true).map_err(|_| bad())?;
            let (f, c) = pos.split_once('.').unwrap_or((pos.as_str(), "0"));
            let field: usize = f.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
            let ch: usize = c.parse().map_err(|_| bad())?;
            Some((field, ch))
        }
    };
    // A key without ordering letters of its own takes the global ones.
    if order == Order::default() {
        order = global;
    }
    Ok(Key {
        start_field,
        start_char,
        end,
        order,
    })
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Byte offsets where each field starts (and where the line ends).
fn field_starts(line: &[u8], sep: Option<u8>) -> Vec<usize> {
    let mut starts = vec![0];
    match sep {
        Some(s) => {
            for (i, &b) in line.iter().enumerate() {
                if b == s {
                    starts.push(i + 1);
                }
            }
        }
        None => {
            // A field is its leading blanks and the non-blanks after them.
            let mut i = 0;
            while i < line.len() {
                while i < line.len() && is_blank(line[i]) {
                    i += 1;
                }
                while i < line.len() && !is_blank(line[i]) {
                    i += 1;
                }
                if i < line.len() {
                    starts.push(i);
                }
            }
        }
    }
    starts
}

/// The part of `line` that key `k` selects.
fn key_slice<'a>(line: &'a [u8], k: &Key, sep: Option<u8>) -> &'a [u8] {
    let starts = field_starts(line, sep);
    let field_end = |f: usize| -> usize {
        match starts.get(f + 1) {
            Some(&next) if sep.is_some() => next - 1,
            Some(&next) => next,
            None => line.len(),
        }
    };
    let Some(&fstart) = starts.get(k.start_field - 1) else {
        return &[];
    };
    let mut begin = fstart;
    if k.order.blank_start {
        while begin < line.len() && is_blank(line[begin]) {
            begin += 1;
        }
    }
    begin = (begin + k.start_char - 1).min(field_end(k.start_field - 1));
    let end = match k.end {
        None => line.len(),
        Some((f, c)) => match starts.get(f - 1) {
            None => line.len(),
            Some(&fs) => {
                if c == 0 {
                    field_end(f - 1)
                } else {
                    let mut e = fs;
                    if k.order.blank_end {
                        while e < line.len() && is_blank(line[e]) {
                            e += 1;
                        }
                    }
                    (e + c).min(field_end(f - 1))
                }
            }
        },
    };
    if end <= begin {
        &[]
    } else {
        &line[begin..end]
    }
}

fn trim_blanks(s: &[u8]) -> &[u8] {
    let i = s.iter().position(|&b| !is_blank(b)).unwrap_or(s.len());
    &s[i..]
}

/// The number at the start of `s`, as `-n` reads it (anything else is 0).
fn numeric_value(s: &[u8]) -> f64 {
    let s = trim_blanks(s);
    let mut end = usize::from(s.first() == Some(&b'-'));
    let mut dot = false;
    while end < s.len() && (s[end].is_ascii_digit() || (s[end] == b'.' && !dot)) {
        dot |= s[end] == b'.';
        end += 1;
    }
    std::str::from_utf8(&s[..end])
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.0)
}

fn general_value(s: &[u8]) -> Option<f64> {
    let t = String::from_utf8_lossy(trim_blanks(s));
    // The longest prefix that parses, as strtod takes it.
    (1..=t.len())
        .rev()
        .filter(|&i| t.is_char_boundary(i))
        .find_map(|i| t[..i].parse::<f64>().ok())
}

fn human_value(s: &[u8]) -> (f64, usize) {
    let t = trim_blanks(s);
    let n = numeric_value(t);
    let len = t
        .iter()
        .position(|&b| !(b.is_ascii_digit() || b == b'.' || b == b'-'))
        .unwrap_or(t.len());
    let unit = t
        .get(len)
        .and_then(|u| {
            b"KMGTPEZYRQ"
                .iter()
                .position(|x| x == u || (*u == b'k' && *x == b'K'))
        })
        .map_or(0, |p| p + 1);
    (n, unit)
}

fn month(s: &[u8]) -> usize {
    const NAMES: [&[u8]; 12] = [
        b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV",
        b"DEC",
    ];
    let t = trim_blanks(s);
    let head: Vec<u8> = t.iter().take(3).map(u8::to_ascii_uppercase).collect();
    NAMES
        .iter()
        .position(|m| *m == head.as_slice())
        .map_or(0, |p| p + 1)
}

/// Natural order: runs of digits compare as numbers.
fn version_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            let sj = j;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let x = trim_zeros(&a[si..i]);
            let y = trim_zeros(&b[sj..j]);
            let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let i = s.iter().position(|&b| b != b'0').unwrap_or(s.len());
    &s[i..]
}

fn compare_with(a: &[u8], b: &[u8], o: &Order) -> Ordering {
    let ord = if o.numeric {
        numeric_value(a).total_cmp(&numeric_value(b))
    } else if o.general {
        match (general_value(a), general_value(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (x, y) => x.is_some().cmp(&y.is_some()),
        }
    } else if o.human {
        let (x, ux) = human_value(a);
        let (y, uy) = human_value(b);
        let sx = x.partial_cmp(&0.0).unwrap_or(Ordering::Equal);
        let sy = y.partial_cmp(&0.0).unwrap_or(Ordering::Equal);
        sx.cmp(&sy)
            .then_with(|| {
                let u = ux.cmp(&uy);
                if sx == Ordering::Less {
                    u.reverse()
                } else {
                    u
                }
            })
            .then_with(|| x.total_cmp(&y))
    } else if o.month {
        month(a).cmp(&month(b))
    } else if o.version {
        version_cmp(a, b)
    } else {
        let keep = |c: &u8| {
            (!o.dictionary || c.is_ascii_alphanumeric() || is_blank(*c))
                && (!o.nonprinting || (0x20..0x7f).contains(c))
        };
        let map = |c: &u8| if o.fold { c.to_ascii_uppercase() } else { *c };
        a.iter()
            .filter(|c| keep(c))
            .map(map)
            .cmp(b.iter().filter(|c| keep(c)).map(map))
    };
    if o.reverse {
        ord.reverse()
    } else {
        ord
    }
}

impl Check {
    fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        let whole;
        let keys: &[Key] = if self.keys.is_empty() {
            whole = [Key {
                start_field: 1,
                start_char: 1,
                end: None,
                order: self.global,
            }];
            &whole
        } else {
            &self.keys
        };
        for k in keys {
            let (x, y) = if self.keys.is_empty() {
                let trim = |s| {
                    if k.order.blank_start {
                        trim_blanks(s)
                    } else {
                        s
                    }
                };
                (trim(a), trim(b))
            } else {
                (
                    key_slice(a, k, self.separator),
                    key_slice(b, k, self.separator),
                )
            };
            let o = compare_with(x, y, &k.order);
            if o != Ordering::Equal {
                return o;
            }
        }
        if self.stable || self.unique {
            return Ordering::Equal;
        }
        let last = a.cmp(b);
        if self.global.reverse {
            last.reverse()
        } else {
            last
        }
    }

    /// Checks `data` (named `name`); the exit status.
    fn run(&self, name: &str, data: &[u8]) -> i32 {
        let mut lines: Vec<&[u8]> = data.split(|&b| b == self.eol).collect();
        if data.last() == Some(&self.eol) || data.is_empty() {
            lines.pop();
        }
        let max = if self.unique {
            Ordering::Less
        } else {
            Ordering::Equal
        };
        for (i, w) in lines.windows(2).enumerate() {
            if self.compare(w[0], w[1]) > max {
                if !self.quiet {
                    eprintln!(
                        "{TOOL}: {name}:{}: disorder: {}",
                        i + 2,
                        String::from_utf8_lossy(w[1])
                    );
                }
                return 1;
            }
        }
        0
    }
}

fn check(p: &Parsed) -> i32 {
    for incompatible in ["output", "merge", "random-sort", "files0-from"] {
        if p.has(incompatible) {
            return usage_error(
                TOOL,
                format!("option --{incompatible} is incompatible with --check"),
                2,
            );
        }
    }
    let mut global = Order::default();
    let mut keys = Vec::new();
    let mut separator = None;
    let mut quiet = false;
    for (k, v) in &p.opts {
        let text = v.as_deref().and_then(OsStr::to_str).unwrap_or("");
        let letters = match *k {
            "ignore-leading-blanks" => "b",
            "dictionary-order" => "d",
            "ignore-case" => "f",
            "general-numeric-sort" => "g",
            "ignore-nonprinting" => "i",
            "month-sort" => "M",
            "human-numeric-sort" => "h",
            "numeric-sort" => "n",
            "reverse" => "r",
            "version-sort" => "V",
            "sort" => match text {
                "general-numeric" => "g",
                "human-numeric" => "h",
                "month" => "M",
                "numeric" => "n",
                "version" => "V",
                _ => {
                    return usage_error(
                        TOOL,
                        format!("invalid argument {} for '--sort'", quote(text)),
                        2,
                    )
                }
            },
            "check-quiet" => {
                quiet = true;
                ""
            }
            "check-when" => match text {
                "quiet" | "silent" => {
                    quiet = true;
                    ""
                }
                "diagnose-first" => "",
                _ => {
                    return usage_error(
                        TOOL,
                        format!("invalid argument {} for '--check'", quote(text)),
                        2,
                    )
                }
            },
            "field-separator" => {
                let b = v
                    .as_deref()
                    .map(OsStr::as_encoded_bytes)
                    .unwrap_or_default();
                match b {
                    [c] => separator = Some(*c),
                    b"\\0" => separator = Some(0),
                    _ => {
                        return usage_error(TOOL, format!("multi-character tab {}", quote(text)), 2)
                    }
                }
                ""
            }
            _ => "",
        };
        if let Err(e) = global.set(letters, false) {
            return usage_error(TOOL, e, 2);
        }
    }
    for spec in p.values("key") {
        match spec.to_str().map(|s| parse_key(s, global)) {
            Some(Ok(k)) => keys.push(k),
            Some(Err(e)) => return usage_error(TOOL, e, 2),
            None => return usage_error(TOOL, "invalid key specification", 2),
        }
    }
    let file = match p.operands.as_slice() {
        [] => OsString::from("-"),
        [one] => one.clone(),
        [_, extra, ..] => {
            return usage_error(
                TOOL,
                format!("extra operand {} not allowed with -c", quote(extra)),
                2,
            )
        }
    };
    let mut data = Vec::new();
    let read = if file == "-" {
        std::io::stdin().lock().read_to_end(&mut data)
    } else {
        std::fs::File::open(&file).and_then(|mut f| f.read_to_end(&mut data))
    };
    if let Err(e) = read {
        warn(
            TOOL,
            format!("cannot read: {}: {}", file.to_string_lossy(), strerror(&e)),
        );
        return 2;
    }
    let c = Check {
        keys,
        global,
        separator,
        stable: p.has("stable"),
        unique: p.has("unique"),
        quiet,
        eol: if p.has("zero-terminated") { 0 } else { b'\n' },
    };
    c.run(&file.to_string_lossy(), &data)
}

pub fn main(args: Vec<OsString>) -> i32 {
    let parsed = Parser::new(OPTS).parse(args::rename_optional_values(
        args.iter().skip(1).cloned(),
        &[("--check", "--check-when")],
    ));
    match parsed {
        Ok(p) if p.has("check") || p.has("check-quiet") || p.has("check-when") => check(&p),
        // Everything else (and the usage errors) is uutils sort.
        _ => uu_sort::uumain(args.into_iter()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(keys: &[&str], global: &str, sep: Option<u8>) -> Check {
        let mut g = Order::default();
        g.set(global, false).expect("letters");
        Check {
            keys: keys.iter().map(|k| parse_key(k, g).expect("key")).collect(),
            global: g,
            separator: sep,
            stable: false,
            unique: false,
            quiet: true,
            eol: b'\n',
        }
    }

    #[test]
    fn checks_orders() {
        let plain = checker(&[], "", None);
        assert_eq!(plain.run("-", b"a\nb\nb\nc\n"), 0);
        assert_eq!(plain.run("-", b"b\na\n"), 1);
        let numeric = checker(&[], "n", None);
        assert_eq!(numeric.run("-", b"2\n10\n100\n"), 0);
        assert_eq!(plain.run("-", b"2\n10\n"), 1);
        let reverse = checker(&[], "nr", None);
        assert_eq!(reverse.run("-", b"10\n2\n"), 0);
        let key = checker(&["2,2n"], "", Some(b':'));
        assert_eq!(key.run("-", b"x:1\na:2\nb:10\n"), 0);
        assert_eq!(key.run("-", b"x:10\na:2\n"), 1);
        let human = checker(&[], "h", None);
        assert_eq!(human.run("-", b"512\n1K\n2M\n1G\n"), 0);
        let version = checker(&[], "V", None);
        assert_eq!(version.run("-", b"v1.2\nv1.10\n"), 0);
        let month = checker(&[], "M", None);
        assert_eq!(month.run("-", b"jan\nFeb\nDEC\n"), 0);
    }

    #[test]
    fn blank_separated_fields() {
        let k = parse_key("2", Order::default()).expect("key");
        assert_eq!(key_slice(b"a  b c", &k, None), b"  b c");
        let k = parse_key("2,2", Order::default()).expect("key");
        assert_eq!(key_slice(b"a  b c", &k, None), b"  b");
        let k = parse_key("2b,2", Order::default()).expect("key");
        assert_eq!(key_slice(b"a  b c", &k, None), b"b");
    }
}
