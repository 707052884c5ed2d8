//! xargs: build command lines from standard input and run them through `kiln_rt::spawn`,
//! one at a time.

use std::ffi::OsString;
use std::io::{self, Read};

use crate::util::args::{Opt, Parser};
use crate::util::exec::run;
use crate::util::{self, usage_error, warn};

const TOOL: &str = "xargs";

const OPTS: &[Opt] = &[
    Opt::flag("null", '0', "null"),
    Opt::flag("delimiter", 'd', "delimiter").with_value(),
    Opt::flag("max-args", 'n', "max-args").with_value(),
    Opt::short("replace", 'I').with_value(),
    Opt::flag("no-run-if-empty", 'r', "no-run-if-empty"),
    Opt::flag("verbose", 't', "verbose"),
    Opt::flag("max-procs", 'P', "max-procs").with_value(),
    Opt::flag("max-lines", 'L', "max-lines").with_value(),
    Opt::flag("max-chars", 's', "max-chars").with_value(),
    Opt::flag("exit", 'x', "exit"),
    Opt::flag("arg-file", 'a', "arg-file").with_value(),
];

/// Splits whitespace-separated input with quotes and backslashes, as POSIX xargs does.
fn split_default(input: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\n') | None => {
                            return Err(format!(
                                "unmatched {} quote; by default quotes are special to xargs unless you use the -0 option",
                                if c == '"' { "double" } else { "single" }
                            ))
                        }
                        Some(x) => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Parses `-d`'s delimiter: one character or an escape (`\n`, `\t`, `\0`, `\\`).
fn delimiter(s: &str) -> Result<u8, String> {
    match s {
        "\\n" => Ok(b'\n'),
        "\\t" => Ok(b'\t'),
        "\\0" => Ok(0),
        "\\\\" => Ok(b'\\'),
        _ if s.len() == 1 => Ok(s.as_bytes()[0]),
        _ => Err(format!("invalid input delimiter specification {s}")),
    }
}

fn number(p: &crate::util::args::Parsed, key: &str) -> Result<Option<usize>, String> {
    match p.str_value(key)? {
        None => Ok(None),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("invalid number \"{v}\" for -{} option", &key[..1])),
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, "xargs [OPTION]... COMMAND [INITIAL-ARGS]...") {
        return 0;
    }
    let p = match Parser::new(OPTS).stop_at_operand().parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error(TOOL, e, 1),
    };
    let (max_args, max_lines) = match (number(&p, "max-args"), number(&p, "max-lines")) {
        (Ok(a), Ok(l)) => (a, l),
        (Err(e), _) | (_, Err(e)) => return usage_error(TOOL, e, 1),
    };
    let replace = p.value("replace").map(|r| r.to_string_lossy().into_owned());
    let mut input = Vec::new();
    let read = match p.value("arg-file") {
        Some(f) => std::fs::File::open(f).and_then(|mut f| f.read_to_end(&mut input)),
        None => io::stdin().lock().read_to_end(&mut input),
    };
    if let Err(e) = read {
        warn(TOOL, util::strerror(&e));
        return 1;
    }
    let delim = if p.has("null") {
        Some(0)
    } else {
        match p.str_value("delimiter") {
            Ok(Some(d)) => match delimiter(d) {
                Ok(d) => Some(d),
                Err(e) => return usage_error(TOOL, e, 1),
            },
            Ok(None) => None,
            Err(e) => return usage_error(TOOL, e, 1),
        }
    };
    // Items, and for -L the line each belongs to.
    let items: Vec<OsString> = if let Some(d) = delim {
        let mut parts: Vec<&[u8]> = input.split(|b| *b == d).collect();
        if parts.last().is_some_and(|l| l.is_empty()) {
            parts.pop();
        }
        parts
            .into_iter()
            .map(|b| util::sys::path_from_bytes(b).into_os_string())
            .collect()
    } else if replace.is_some() {
        // -I works line by line (blank lines are skipped, leading blanks trimmed).
        String::from_utf8_lossy(&input)
            .lines()
            .map(str::trim_start)
            .filter(|l| !l.is_empty())
            .map(OsString::from)
            .collect()
    } else if let Some(n) = max_lines {
        // -L N: the words of N non-blank lines make one command line.
        let mut lines = Vec::new();
        for line in String::from_utf8_lossy(&input)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            match split_default(line) {
                Ok(words) => lines.push(words),
                Err(e) => {
                    warn(TOOL, e);
                    return 1;
                }
            }
        }
        let mut status = 0;
        for group in lines.chunks(n) {
            let argv: Vec<OsString> = command_of(&p)
                .into_iter()
                .chain(group.iter().flatten().map(OsString::from))
                .collect();
            match run_one(&argv, p.has("verbose")) {
                Ok(s) => status = status.max(s),
                Err(code) => return code,
            }
        }
        return status;
    } else {
        match split_default(&String::from_utf8_lossy(&input)) {
            Ok(words) => words.into_iter().map(OsString::from).collect(),
            Err(e) => {
                warn(TOOL, e);
                return 1;
            }
        }
    };
    let command = command_of(&p);
    let batches: Vec<Vec<OsString>> = if let Some(r) = &replace {
        items
            .iter()
            .map(|item| {
                let item = item.to_string_lossy();
                command
                    .iter()
                    .map(|a| OsString::from(a.to_string_lossy().replace(r.as_str(), &item)))
                    .collect()
            })
            .collect()
    } else {
        let per = max_args.unwrap_or(usize::MAX);
        let mut out: Vec<Vec<OsString>> = items
            .chunks(per.max(1))
            .map(|chunk| {
                command
                    .iter()
                    .cloned()
                    .chain(chunk.iter().cloned())
                    .collect()
            })
            .collect();
        if out.is_empty() && !p.has("no-run-if-empty") {
            out.push(command.clone());
        }
        out
    };
    let mut status = 0;
    for argv in batches {
        match run_one(&argv, p.has("verbose")) {
            Ok(s) => status = status.max(s),
            Err(code) => return code,
        }
    }
    status
}

/// The command and its initial arguments (`echo` by default).
fn command_of(p: &crate::util::args::Parsed) -> Vec<OsString> {
    if p.operands.is_empty() {
        vec![OsString::from("echo")]
    } else {
        p.operands.clone()
    }
}

/// Runs one command line: `Ok(0)` or `Ok(123)` (it failed) to go on, `Err(status)` to stop.
fn run_one(argv: &[OsString], verbose: bool) -> Result<i32, i32> {
    let name = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    if verbose {
        let line: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        eprintln!("{}", line.join(" "));
    }
    match run(argv) {
        Ok(0) => Ok(0),
        Ok(255) => {
            warn(TOOL, format!("{name}: exited with status 255; aborting"));
            Err(124)
        }
        Ok(s) if s > 128 => {
            warn(TOOL, format!("{name}: terminated by signal {}", s - 128));
            Err(125)
        }
        Ok(_) => Ok(123),
        Err(e) => {
            warn(TOOL, e.message);
            Err(e.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_splitting() {
        assert_eq!(
            split_default("a  b\n'c d' \"e\\f\" g\\ h").expect("splits"),
            vec!["a", "b", "c d", "e\\f", "g h"]
        );
        assert!(split_default("'open").is_err());
    }

    #[test]
    fn delimiters() {
        assert_eq!(delimiter("\\n"), Ok(b'\n'));
        assert_eq!(delimiter(","), Ok(b','));
        assert!(delimiter("ab").is_err());
    }
}
