//! grep: BRE (translated), ERE and fixed-string search with the `regex` crate.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use regex::bytes::{Regex, RegexBuilder};

use crate::tools::find::glob;
use crate::util::args::{Opt, Parser};
use crate::util::{self, strerror, usage_error, warn};

const TOOL: &str = "grep";

const OPTS: &[Opt] = &[
    Opt::flag("extended", 'E', "extended-regexp"),
    Opt::flag("fixed", 'F', "fixed-strings"),
    Opt::flag("basic", 'G', "basic-regexp"),
    Opt::flag("regexp", 'e', "regexp").with_value(),
    Opt::flag("file", 'f', "file").with_value(),
    Opt::flag("ignore-case", 'i', "ignore-case"),
    Opt::short("ignore-case", 'y'),
    Opt::long("no-ignore-case", "no-ignore-case"),
    Opt::flag("invert", 'v', "invert-match"),
    Opt::flag("word", 'w', "word-regexp"),
    Opt::flag("line", 'x', "line-regexp"),
    Opt::flag("count", 'c', "count"),
    Opt::flag("quiet", 'q', "quiet"),
    Opt::long("quiet", "silent"),
    Opt::flag("no-messages", 's', "no-messages"),
    Opt::flag("files-with-matches", 'l', "files-with-matches"),
    Opt::flag("files-without-match", 'L', "files-without-match"),
    Opt::flag("only-matching", 'o', "only-matching"),
    Opt::flag("line-number", 'n', "line-number"),
    Opt::flag("with-filename", 'H', "with-filename"),
    Opt::flag("no-filename", 'h', "no-filename"),
    Opt::flag("recursive", 'r', "recursive"),
    Opt::flag("dereference-recursive", 'R', "dereference-recursive"),
    Opt::flag("max-count", 'm', "max-count").with_value(),
    Opt::flag("text", 'a', "text"),
    Opt::short("binary-skip", 'I'),
    Opt::long("include", "include").with_value(),
    Opt::long("exclude", "exclude").with_value(),
    Opt::long("exclude-dir", "exclude-dir").with_value(),
    Opt::long("color", "color").with_value(),
    Opt::long("color", "colour").with_value(),
    Opt::flag("null", 'Z', "null"),
    Opt::flag("byte-offset", 'b', "byte-offset"),
];

/// Rewrites a bracket expression starting at `chars[i] == '['` for the regex crate; returns
/// the index after it.
fn bracket(chars: &[char], mut i: usize, out: &mut String) -> usize {
    out.push('[');
    i += 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        out.push_str("\\]");
        i += 1;
    }
    while i < chars.len() && chars[i] != ']' {
        let c = chars[i];
        if c == '[' && matches!(chars.get(i + 1), Some(':' | '.' | '=')) {
            // `[:alpha:]` and friends pass through whole.
            let close = chars.get(i + 1).copied().unwrap_or(':');
            let end = (i + 2..chars.len().saturating_sub(1))
                .find(|&j| chars[j] == close && chars[j + 1] == ']');
            if let Some(end) = end {
                out.extend(&chars[i..end + 2]);
                i = end + 2;
                continue;
            }
        }
        match c {
            '\\' | '[' | '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '-' if chars.get(i + 1) == Some(&'-') => out.push_str("\\-"),
            _ => out.push(c),
        }
        i += 1;
    }
    if i < chars.len() {
        out.push(']');
        i + 1
    } else {
        // No closing bracket: GNU reports an error; keep the regex crate's error too.
        i
    }
}

/// A POSIX basic or extended regular expression in the regex crate's syntax.
fn translate(pattern: &str, extended: bool) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut at_start = true;
    while i < chars.len() {
        let c = chars[i];
        let start = at_start;
        at_start = false;
        match c {
            '[' => {
                i = bracket(&chars, i, &mut out);
                continue;
            }
            '\\' if i + 1 < chars.len() => {
                let n = chars[i + 1];
                i += 2;
                match n {
                    '(' | ')' | '{' | '}' | '|' | '+' | '?' if !extended => {
                        out.push(n);
                        at_start = n == '(' || n == '|';
                    }
                    '<' | '>' => out.push_str("\\b"),
                    'w' | 'W' | 's' | 'S' | 'b' | 'B' => {
                        out.push('\\');
                        out.push(n);
                    }
                    d if d.is_ascii_digit() => {
                        // Back-references are not supported by the regex crate: keep the
                        // escape so the error shows.
                        out.push('\\');
                        out.push(d);
                    }
                    other => out.push_str(&regex::escape(&other.to_string())),
                }
                continue;
            }
            '(' | ')' | '{' | '}' | '|' | '+' | '?' if !extended => {
                out.push('\\');
                out.push(c);
            }
            '*' if start => out.push_str("\\*"),
            '^' => {
                out.push('^');
                at_start = true;
            }
            '(' | '|' if extended => {
                out.push(c);
                at_start = true;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

struct Search {
    re: Regex,
    invert: bool,
    count: bool,
    quiet: bool,
    list: bool,
    list_missing: bool,
    only: bool,
    numbers: bool,
    names: bool,
    max: Option<usize>,
    text: bool,
    skip_binary: bool,
    null: bool,
    offsets: bool,
}

impl Search {
    /// Searches one input; returns whether a line was selected.
    fn run(&self, data: &[u8], label: &str, out: &mut impl Write) -> io::Result<bool> {
        let binary = !self.text && data.contains(&0);
        if binary && self.skip_binary {
            return Ok(false);
        }
        let sep = if self.null { "\0" } else { ":" };
        let mut selected = 0usize;
        let mut offset = 0usize;
        let lines = data.split_inclusive(|b| *b == b'\n');
        for (n, raw) in lines.enumerate() {
            if self.max.is_some_and(|m| selected >= m) {
                break;
            }
            let line = raw.strip_suffix(b"\n").unwrap_or(raw);
            let line_offset = offset;
            offset += raw.len();
            if self.re.is_match(line) == self.invert {
                continue;
            }
            selected += 1;
            if self.quiet {
                return Ok(true);
            }
            if self.list || self.list_missing || self.count {
                continue;
            }
            if binary {
                writeln!(out, "Binary file {label} matches")?;
                return Ok(true);
            }
            let mut prefix = String::new();
            if self.names {
                prefix.push_str(label);
                prefix.push_str(sep);
            }
            if self.numbers {
                prefix.push_str(&format!("{}:", n + 1));
            }
            if self.only && !self.invert {
                for m in self.re.find_iter(line).filter(|m| !m.is_empty()) {
                    out.write_all(prefix.as_bytes())?;
                    if self.offsets {
                        write!(out, "{}:", line_offset + m.start())?;
                    }
                    out.write_all(m.as_bytes())?;
                    out.write_all(b"\n")?;
                }
            } else if !self.only {
                out.write_all(prefix.as_bytes())?;
                if self.offsets {
                    write!(out, "{line_offset}:")?;
                }
                out.write_all(line)?;
                out.write_all(b"\n")?;
            }
        }
        if self.count {
            if self.names {
                write!(out, "{label}{sep}")?;
            }
            writeln!(out, "{selected}")?;
        }
        if self.list && selected > 0 {
            write!(out, "{label}{}", if self.null { "\0" } else { "\n" })?;
        }
        if self.list_missing && selected == 0 {
            write!(out, "{label}{}", if self.null { "\0" } else { "\n" })?;
        }
        Ok(selected > 0)
    }
}

struct Files {
    recursive: bool,
    follow: bool,
    include: Vec<String>,
    exclude: Vec<String>,
    exclude_dir: Vec<String>,
}

impl Files {
    fn wanted(&self, path: &Path) -> bool {
        let base = path
            .file_name()
            .map(|b| b.to_string_lossy())
            .unwrap_or_default();
        (self.include.is_empty() || self.include.iter().any(|g| glob(g, &base, false)))
            && !self.exclude.iter().any(|g| glob(g, &base, false))
    }

    /// Expands operands into files to search; errors are reported as they come.
    fn collect(&self, path: &Path, top: bool, out: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
        let follow = self.follow || top;
        let st = match kiln_rt::stat(path, follow) {
            Ok(st) => st,
            Err(e) => {
                errors.push(format!("{}: {}", path.display(), strerror(&e)));
                return;
            }
        };
        if st.is_dir() {
            if !self.recursive {
                errors.push(format!("{}: Is a directory", path.display()));
                return;
            }
            let base = path
                .file_name()
                .map(|b| b.to_string_lossy())
                .unwrap_or_default();
            if !top && self.exclude_dir.iter().any(|g| glob(g, &base, false)) {
                return;
            }
            match util::read_dir_sorted(path) {
                Ok(children) => {
                    for child in children {
                        self.collect(&child, false, out, errors);
                    }
                }
                Err(e) => errors.push(format!("{}: {}", path.display(), strerror(&e))),
            }
        } else if st.is_symlink() {
            // Symlinks found while recursing with -r are skipped, as GNU grep does.
        } else if top || self.wanted(path) {
            out.push(path.to_path_buf());
        }
    }
}

fn patterns(p: &crate::util::args::Parsed) -> Result<(Vec<String>, Vec<OsString>), String> {
    let mut pats: Vec<String> = p
        .values("regexp")
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    for f in p.values("file") {
        let data = if f == "-" {
            let mut b = Vec::new();
            io::stdin().read_to_end(&mut b).map(|_| b)
        } else {
            std::fs::read(f)
        }
        .map_err(|e| format!("{}: {}", f.to_string_lossy(), strerror(&e)))?;
        pats.extend(String::from_utf8_lossy(&data).lines().map(str::to_string));
    }
    let mut operands = p.operands.clone();
    if !p.has("regexp") && !p.has("file") {
        if operands.is_empty() {
            return Err("no pattern given".to_string());
        }
        pats.push(operands.remove(0).to_string_lossy().into_owned());
    }
    // A pattern with newlines is several patterns.
    let pats = pats
        .iter()
        .flat_map(|p| p.split('\n').map(str::to_string).collect::<Vec<_>>())
        .collect();
    Ok((pats, operands))
}

/// `egrep`: `grep -E`.
pub fn egrep(mut args: Vec<OsString>) -> i32 {
    args.insert(1.min(args.len()), OsString::from("-E"));
    main(args)
}

/// `fgrep`: `grep -F`.
pub fn fgrep(mut args: Vec<OsString>) -> i32 {
    args.insert(1.min(args.len()), OsString::from("-F"));
    main(args)
}

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, "grep [OPTION]... PATTERNS [FILE]...") {
        return 0;
    }
    let p = match Parser::new(OPTS).parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error(TOOL, e, 2),
    };
    let (pats, operands) = match patterns(&p) {
        Ok(x) => x,
        Err(e) => return usage_error(TOOL, e, 2),
    };
    let mode = p
        .opts
        .iter()
        .rev()
        .find(|(k, _)| matches!(*k, "extended" | "fixed" | "basic"))
        .map_or("basic", |(k, _)| *k);
    let alternatives: Vec<String> = pats
        .iter()
        .map(|pat| match mode {
            "fixed" => regex::escape(pat),
            m => translate(pat, m == "extended"),
        })
        .map(|r| {
            if p.has("line") {
                format!("^(?:{r})$")
            } else if p.has("word") {
                format!("\\b(?:{r})\\b")
            } else {
                format!("(?:{r})")
            }
        })
        .collect();
    // No pattern at all (an empty -f file) matches nothing.
    let source = if alternatives.is_empty() {
        "[^\\s\\S]".to_string()
    } else {
        alternatives.join("|")
    };
    let ignore_case = p
        .opts
        .iter()
        .rev()
        .find(|(k, _)| matches!(*k, "ignore-case" | "no-ignore-case"))
        .is_some_and(|(k, _)| *k == "ignore-case");
    let re = match RegexBuilder::new(&source)
        .case_insensitive(ignore_case)
        .size_limit(64 << 20)
        .build()
    {
        Ok(re) => re,
        Err(e) => {
            warn(TOOL, format!("invalid regular expression: {e}"));
            return 2;
        }
    };
    let max = match p.str_value("max-count") {
        Ok(None) => None,
        Ok(Some(m)) => match m.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(_) => return usage_error(TOOL, format!("invalid max count '{m}'"), 2),
        },
        Err(e) => return usage_error(TOOL, e, 2),
    };
    let recursive = p.has("recursive") || p.has("dereference-recursive");
    let files = Files {
        recursive,
        follow: p.has("dereference-recursive"),
        include: p
            .values("include")
            .map(|v| v.to_string_lossy().into_owned())
            .collect(),
        exclude: p
            .values("exclude")
            .map(|v| v.to_string_lossy().into_owned())
            .collect(),
        exclude_dir: p
            .values("exclude-dir")
            .map(|v| v.to_string_lossy().into_owned())
            .collect(),
    };
    let silent = p.has("no-messages");
    let mut errors = Vec::new();
    let mut inputs: Vec<Option<PathBuf>> = Vec::new();
    let implicit_dot = operands.is_empty() && recursive;
    if operands.is_empty() && !recursive {
        inputs.push(None);
    }
    let operands = if implicit_dot {
        vec![OsString::from(".")]
    } else {
        operands
    };
    for op in &operands {
        if op == "-" {
            inputs.push(None);
            continue;
        }
        let mut found = Vec::new();
        files.collect(Path::new(op), true, &mut found, &mut errors);
        inputs.extend(found.into_iter().map(|f| {
            // `grep -r x` with no operand names files without the `./`.
            if implicit_dot {
                Some(f.strip_prefix(".").map(Path::to_path_buf).unwrap_or(f))
            } else {
                Some(f)
            }
        }));
    }
    let names = if p.has("no-filename") {
        false
    } else {
        p.has("with-filename") || recursive || inputs.len() > 1
    };
    let search = Search {
        re,
        invert: p.has("invert"),
        count: p.has("count"),
        quiet: p.has("quiet"),
        list: p.has("files-with-matches"),
        list_missing: p.has("files-without-match"),
        only: p.has("only-matching"),
        numbers: p.has("line-number"),
        names,
        max,
        text: p.has("text"),
        skip_binary: p.has("binary-skip"),
        null: p.has("null"),
        offsets: p.has("byte-offset"),
    };
    let mut failed = !errors.is_empty();
    if !silent {
        for e in &errors {
            warn(TOOL, e);
        }
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut matched = false;
    for input in &inputs {
        let (data, label) = match input {
            None => {
                let mut b = Vec::new();
                let r = io::stdin().lock().read_to_end(&mut b);
                (r.map(|_| b), "(standard input)".to_string())
            }
            Some(path) => (std::fs::read(path), path.display().to_string()),
        };
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                if !silent {
                    warn(TOOL, format!("{label}: {}", strerror(&e)));
                }
                failed = true;
                continue;
            }
        };
        match search.run(&data, &label, &mut out) {
            Ok(true) => {
                matched = true;
                if search.quiet {
                    return 0;
                }
            }
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return i32::from(!matched),
            Err(e) => {
                warn(TOOL, strerror(&e));
                return 2;
            }
        }
    }
    if out.flush().is_err() {
        return 2;
    }
    match (matched, failed) {
        (_, true) if !(matched && search.quiet) => 2,
        (true, _) => 0,
        (false, _) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_to_regex() {
        assert_eq!(translate("a\\(b\\)*c", false), "a(b)*c");
        assert_eq!(translate("a+b?", false), "a\\+b\\?");
        assert_eq!(translate("x\\{2,3\\}", false), "x{2,3}");
        assert_eq!(translate("*a", false), "\\*a");
        assert_eq!(translate("^*a", false), "^\\*a");
        assert_eq!(translate("a\\.b", false), "a\\.b");
        assert_eq!(translate("(a|b)+", true), "(a|b)+");
        assert_eq!(translate("[[:digit:]]+", true), "[[:digit:]]+");
        assert_eq!(translate("[]a\\]", true), "[\\]a\\\\]");
        assert_eq!(translate("\\<word\\>", false), "\\bword\\b");
    }

    fn grep(re: &str, invert: bool, data: &str) -> String {
        let s = Search {
            re: Regex::new(re).expect("regex"),
            invert,
            count: false,
            quiet: false,
            list: false,
            list_missing: false,
            only: false,
            numbers: true,
            names: false,
            max: None,
            text: false,
            skip_binary: false,
            null: false,
            offsets: false,
        };
        let mut out = Vec::new();
        s.run(data.as_bytes(), "-", &mut out).expect("runs");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn searches() {
        assert_eq!(grep("b", false, "a\nb\nab\n"), "2:b\n3:ab\n");
        assert_eq!(grep("b", true, "a\nb\nab"), "1:a\n");
    }
}
