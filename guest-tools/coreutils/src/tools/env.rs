//! env: run a program in a modified environment, through `kiln_rt::spawn` (WASI has no exec).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use crate::util::args::{Opt, Parser};
use crate::util::exec::run_with;
use crate::util::{self, quote, usage_error, warn};

const TOOL: &str = "env";

const OPTS: &[Opt] = &[
    Opt::flag("ignore-environment", 'i', "ignore-environment"),
    Opt::flag("unset", 'u', "unset").with_value(),
    Opt::flag("chdir", 'C', "chdir").with_value(),
    Opt::flag("null", '0', "null"),
    Opt::flag("split-string", 'S', "split-string").with_value(),
];

/// `-S`'s splitting: whitespace separates, quotes and backslashes group.
fn split_string(s: &str) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    out.push(OsString::from(std::mem::take(&mut cur)));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("no terminating quote in -S string".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => cur.push(c),
                            None => {
                                return Err("invalid backslash at end of string in -S".to_string())
                            }
                        },
                        Some(c) => cur.push(c),
                        None => return Err("no terminating quote in -S string".to_string()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('n') => cur.push('\n'),
                    Some('t') => cur.push('\t'),
                    Some(c) => cur.push(c),
                    None => return Err("invalid backslash at end of string in -S".to_string()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(OsString::from(cur));
    }
    Ok(out)
}

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(
        TOOL,
        &args,
        "env [OPTION]... [-] [NAME=VALUE]... [COMMAND [ARG]...]",
    ) {
        return 0;
    }
    let mut rest: Vec<OsString> = util::rest(args).collect();
    // A lone `-` is `-i`.
    let mut ignore = false;
    if let Some(i) = rest.iter().position(|a| a == "-") {
        if rest[..i]
            .iter()
            .all(|a| a.as_encoded_bytes().first() == Some(&b'-'))
        {
            rest.remove(i);
            ignore = true;
        }
    }
    let p = match Parser::new(OPTS).stop_at_operand().parse(rest) {
        Ok(p) => p,
        Err(e) => return usage_error(TOOL, e, 125),
    };
    ignore |= p.has("ignore-environment");
    let mut vars: Vec<(OsString, OsString)> = if ignore {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    for name in p.values("unset") {
        vars.retain(|(k, _)| k != name);
    }
    let mut operands = p.operands.clone();
    if let Some(s) = p.str_value("split-string").ok().flatten() {
        match split_string(s) {
            Ok(mut words) => {
                words.append(&mut operands);
                operands = words;
            }
            Err(e) => return usage_error(TOOL, e, 125),
        }
    }
    let mut i = 0;
    while let Some(op) = operands.get(i) {
        let bytes = op.as_encoded_bytes();
        let Some(eq) = bytes.iter().position(|&b| b == b'=').filter(|&e| e > 0) else {
            break;
        };
        let text = op.to_string_lossy();
        let (k, v) = (OsString::from(&text[..eq]), OsString::from(&text[eq + 1..]));
        vars.retain(|(name, _)| *name != k);
        vars.push((k, v));
        i += 1;
    }
    let command = &operands[i..];
    if command.is_empty() {
        if p.has("chdir") {
            return usage_error(TOOL, "must specify command with --chdir (-C)", 125);
        }
        let end = if p.has("null") { '\0' } else { '\n' };
        let mut out = std::io::stdout().lock();
        for (k, v) in &vars {
            let line = format!("{}={}{end}", k.to_string_lossy(), v.to_string_lossy());
            if out.write_all(line.as_bytes()).is_err() {
                return 1;
            }
        }
        return 0;
    }
    let cwd = match p.value("chdir") {
        Some(d) => PathBuf::from(d),
        None => match std::env::current_dir() {
            Ok(d) => d,
            Err(e) => {
                warn(TOOL, util::strerror(&e));
                return 125;
            }
        },
    };
    if p.value("chdir").is_some() && !cwd.is_dir() {
        warn(
            TOOL,
            format!(
                "cannot change directory to {}: No such file or directory",
                quote(&cwd)
            ),
        );
        return 125;
    }
    // Like GNU env (which sets its own environment, then execvp), the new PATH finds the
    // command.
    if let Some((_, path)) = vars.iter().find(|(k, _)| k == "PATH") {
        std::env::set_var("PATH", path);
    }
    let env: Vec<OsString> = vars
        .into_iter()
        .map(|(mut k, v)| {
            k.push("=");
            k.push(v);
            k
        })
        .collect();
    match run_with(command, &env, &cwd, [0, 1, 2]) {
        Ok(status) => status,
        Err(e) => {
            warn(TOOL, quote_message(&e.message));
            e.status
        }
    }
}

fn quote_message(m: &str) -> String {
    match m.split_once(": ") {
        Some((name, why)) => format!("{}: {why}", quote(name)),
        None => m.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        let w = split_string(r#"perl -w  "a b" 'c d'\ e"#).expect("splits");
        assert_eq!(w, vec!["perl", "-w", "a b", "c d e"]);
        assert!(split_string("'open").is_err());
    }
}
