//! stat: file status from `kiln_rt::stat` (modes, owners and inode numbers as the host records
//! them), in GNU's default layout or a `-c`/`--printf` format.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;

use kiln_rt::{mode::*, Stat};

use crate::util::args::Opt;
use crate::util::mode::render;
use crate::util::time::stat_time;
use crate::util::{self, quote, strerror, usage_error, users, warn};

const TOOL: &str = "stat";
const USAGE: &str = "stat [OPTION]... FILE...";

const OPTS: &[Opt] = &[
    Opt::flag("dereference", 'L', "dereference"),
    Opt::flag("format", 'c', "format").with_value(),
    Opt::long("printf", "printf").with_value(),
    Opt::flag("terse", 't', "terse"),
];

const DEFAULT: &str = "  File: %N\n  Size: %-10s\tBlocks: %-10b IO Block: %-6o %F\nDevice: %Hd,%Ld\tInode: %-11i Links: %h\nAccess: (%04a/%10.10A)  Uid: (%5u/%8U)   Gid: (%5g/%8G)\nAccess: %x\nModify: %y\nChange: %z\n Birth: %w\n";
const DEFAULT_DEV: &str = "  File: %N\n  Size: %-10s\tBlocks: %-10b IO Block: %-6o %F\nDevice: %Hd,%Ld\tInode: %-11i Links: %-5h Device type: %Hr,%Lr\nAccess: (%04a/%10.10A)  Uid: (%5u/%8U)   Gid: (%5g/%8G)\nAccess: %x\nModify: %y\nChange: %z\n Birth: %w\n";
const TERSE: &str = "%n %s %b %f %u %g %D %i %h %t %T %X %Y %Z %W %o\n";

fn major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

fn file_type(st: &Stat) -> &'static str {
    match st.file_type() {
        S_IFREG if st.size == 0 => "regular empty file",
        S_IFREG => "regular file",
        S_IFDIR => "directory",
        S_IFLNK => "symbolic link",
        S_IFCHR => "character special file",
        S_IFBLK => "block special file",
        S_IFIFO => "fifo",
        S_IFSOCK => "socket",
        _ => "weird file",
    }
}

/// Applies printf-style flags, width and precision to one rendered field.
fn pad(
    out: &mut String,
    text: &str,
    flags: &str,
    width: usize,
    precision: Option<usize>,
    numeric: bool,
) {
    let text = match precision {
        Some(p) if !numeric => text.chars().take(p).collect::<String>(),
        _ => text.to_string(),
    };
    let len = text.chars().count();
    if len >= width {
        out.push_str(&text);
    } else if flags.contains('-') {
        out.push_str(&text);
        out.extend(std::iter::repeat_n(' ', width - len));
    } else if flags.contains('0') && numeric {
        let (sign, digits) = match text.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("", text.as_str()),
        };
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', width - len));
        out.push_str(digits);
    } else {
        out.extend(std::iter::repeat_n(' ', width - len));
        out.push_str(&text);
    }
}

/// Quotes a name only when the shell needs it (the default layout's style).
fn quote_if_needed(p: &Path) -> String {
    let s = p.to_string_lossy();
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./-+,:=@%^".contains(&b));
    if plain {
        s.into_owned()
    } else {
        quote(p)
    }
}

/// The `%N` rendering: the quoted name, and ` -> 'target'` for a symlink.
fn quoted_name(path: &Path, st: &Stat, always: bool) -> String {
    let q = |p: &Path| if always { quote(p) } else { quote_if_needed(p) };
    let mut s = q(path);
    if st.is_symlink() {
        if let Ok(t) = std::fs::read_link(path) {
            let _ = write!(s, " -> {}", q(&t));
        }
    }
    s
}

fn field(
    conv: char,
    sub: Option<char>,
    path: &Path,
    st: &Stat,
    always_quote: bool,
) -> Option<(String, bool)> {
    let secs = |ns: i64| ns.div_euclid(1_000_000_000).to_string();
    let dev_part = |dev: u64| match sub {
        Some('H') => major(dev).to_string(),
        Some('L') => minor(dev).to_string(),
        _ => dev.to_string(),
    };
    Some(match conv {
        'a' => (format!("{:o}", st.mode & 0o7777), true),
        'A' => (render(st.mode), false),
        'b' => (st.blocks.to_string(), true),
        'B' => ("512".to_string(), true),
        'd' => (dev_part(st.dev), true),
        'D' => (format!("{:x}", st.dev), false),
        'f' => (format!("{:x}", st.mode), false),
        'F' => (file_type(st).to_string(), false),
        'g' => (st.gid.to_string(), true),
        'G' => (users::group_name(st.gid), false),
        'h' => (st.nlink.to_string(), true),
        'i' => (st.ino.to_string(), true),
        'm' => ("/".to_string(), false),
        'n' => (path.to_string_lossy().into_owned(), false),
        'N' => (quoted_name(path, st, always_quote), false),
        'o' => ("4096".to_string(), true),
        'r' => (dev_part(st.rdev), true),
        's' => (st.size.to_string(), true),
        't' => (format!("{:x}", major(st.rdev)), false),
        'T' => (format!("{:x}", minor(st.rdev)), false),
        'u' => (st.uid.to_string(), true),
        'U' => (users::user_name(st.uid), false),
        'w' => ("-".to_string(), false),
        'W' => ("0".to_string(), true),
        'x' => (stat_time(st.atime), false),
        'X' => (secs(st.atime), true),
        'y' => (stat_time(st.mtime), false),
        'Y' => (secs(st.mtime), true),
        'z' => (stat_time(st.ctime), false),
        'Z' => (secs(st.ctime), true),
        _ => return None,
    })
}

/// Renders `format` for one file.
fn render_format(format: &str, path: &Path, st: &Stat, always_quote: bool) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::from("%");
        let mut flags = String::new();
        while let Some(&f) = chars.peek() {
            if !"-0#+ '".contains(f) {
                break;
            }
            flags.push(f);
            spec.push(f);
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            spec.push(d);
            chars.next();
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.push('.');
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                spec.push(d);
                chars.next();
            }
            precision = Some(p.parse().unwrap_or(0));
        }
        let mut sub = None;
        if let Some(&h) = chars.peek().filter(|h| **h == 'H' || **h == 'L') {
            chars.next();
            spec.push(h);
            sub = Some(h);
        }
        let Some(conv) = chars.next() else {
            out.push_str(&spec);
            break;
        };
        if conv == '%' && spec == "%" {
            out.push('%');
            continue;
        }
        let conv_ok = sub.is_none() || matches!(conv, 'd' | 'r');
        match field(conv, sub, path, st, always_quote).filter(|_| conv_ok) {
            Some((text, numeric)) => {
                let text = if conv == 'a' && flags.contains('#') && !text.starts_with('0') {
                    format!("0{text}")
                } else {
                    text
                };
                pad(
                    &mut out,
                    &text,
                    &flags,
                    width.parse().unwrap_or(0),
                    precision,
                    numeric,
                );
            }
            None => {
                spec.push(conv);
                out.push_str(&spec);
            }
        }
    }
    out
}

/// Interprets `--printf`'s backslash escapes.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('a') => out.push('\x07'),
            Some('b') => out.push('\x08'),
            Some('f') => out.push('\x0c'),
            Some('v') => out.push('\x0b'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(d @ '0'..='7') => {
                let mut v = d.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(n) => {
                            v = v * 8 + n;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v).unwrap_or('?'));
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

pub fn main(args: Vec<OsString>) -> i32 {
    let p = match util::parse_args(TOOL, args, USAGE, OPTS) {
        Ok(p) => p,
        Err(status) => return status,
    };
    if p.operands.is_empty() {
        return usage_error(TOOL, "missing operand", 1);
    }
    let format = match (p.str_value("format"), p.str_value("printf")) {
        (Err(e), _) | (_, Err(e)) => return usage_error(TOOL, e, 1),
        (Ok(Some(f)), _) if p.value("printf").is_none() => Some(format!("{f}\n")),
        (_, Ok(Some(f))) => Some(unescape(f)),
        _ => None,
    };
    let follow = p.has("dereference");
    let mut failed = false;
    let mut out = String::new();
    for f in &p.operands {
        let path = Path::new(f);
        let st = match kiln_rt::stat(path, follow) {
            Ok(st) => st,
            Err(e) => {
                warn(
                    TOOL,
                    format!("cannot stat {}: {}", quote(path), strerror(&e)),
                );
                failed = true;
                continue;
            }
        };
        let fmt = match &format {
            Some(f) => f.as_str(),
            None if p.has("terse") => TERSE,
            None if matches!(st.file_type(), S_IFCHR | S_IFBLK) => DEFAULT_DEV,
            None => DEFAULT,
        };
        out.push_str(&render_format(fmt, path, &st, format.is_some()));
    }
    print!("{out}");
    i32::from(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let st = Stat {
            mode: S_IFREG | 0o755,
            uid: 123_456,
            gid: 654_321,
            size: 42,
            nlink: 1,
            mtime: 1_700_000_000_000_000_000,
            ..Stat::default()
        };
        let p = Path::new("f");
        assert_eq!(
            render_format("%n %s %a %A %F", p, &st, true),
            "f 42 755 -rwxr-xr-x regular file"
        );
        assert_eq!(
            render_format("%u:%g %U", p, &st, true),
            "123456:654321 123456"
        );
        assert_eq!(
            render_format("%Y|%y", p, &st, true),
            "1700000000|2023-11-14 22:13:20.000000000 +0000"
        );
        assert_eq!(
            render_format("[%04a|%-4s|%5h|%%|%q]", p, &st, true),
            "[0755|42  |    1|%|%q]"
        );
        assert_eq!(render_format("%#a", p, &st, true), "0755");
        assert_eq!(unescape("a\\tb\\n\\101"), "a\tb\nA");
    }
}
