//! Builtin commands.

use crate::ast::Bytes;
use crate::io;
use crate::parse::is_name;
use crate::printf;
use crate::shell::{Flow, Res, Shell, Var, OPTIONS};
use crate::test_cmd;

type Func = fn(&mut Shell, &[Bytes]) -> Res<i32>;

#[derive(Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    /// POSIX special builtins: assignments before them stay, their errors end the shell.
    pub special: bool,
    func: Func,
}

const BUILTINS: &[Builtin] = &[
    b(":", true, bi_true),
    b(".", true, bi_dot),
    b("break", true, bi_break),
    b("continue", true, bi_continue),
    b("eval", true, bi_eval),
    b("exec", true, bi_true),
    b("exit", true, bi_exit),
    b("export", true, bi_export),
    // dash: a special builtin (its prefix assignments stay).
    b("local", true, bi_local),
    b("readonly", true, bi_readonly),
    b("return", true, bi_return),
    b("set", true, bi_set),
    b("shift", true, bi_shift),
    b("times", true, bi_times),
    b("trap", true, bi_trap),
    b("unset", true, bi_unset),
    b("[", false, bi_test),
    b("alias", false, bi_alias),
    b("bg", false, bi_fg),
    b("cd", false, bi_cd),
    b("chdir", false, bi_cd),
    b("command", false, bi_command),
    b("echo", false, bi_echo),
    b("false", false, bi_false),
    b("fg", false, bi_fg),
    b("getopts", false, bi_getopts),
    b("hash", false, bi_hash),
    b("jobs", false, bi_jobs),
    b("kill", false, bi_kill),
    b("printf", false, bi_printf),
    b("pwd", false, bi_pwd),
    b("read", false, bi_read),
    b("source", false, bi_source),
    b("test", false, bi_test),
    b("true", false, bi_true),
    b("type", false, bi_type),
    b("ulimit", false, bi_ulimit),
    b("umask", false, bi_umask),
    b("unalias", false, bi_unalias),
    b("wait", false, bi_wait),
];

const fn b(name: &'static str, special: bool, func: Func) -> Builtin {
    Builtin {
        name,
        special,
        func,
    }
}

const KEYWORDS: &[&str] = &[
    "!", "case", "do", "done", "elif", "else", "esac", "fi", "for", "if", "then", "until", "while",
    "{", "}",
];

pub fn lookup(name: &[u8]) -> Option<Builtin> {
    BUILTINS.iter().copied().find(|b| b.name.as_bytes() == name)
}

pub fn run(sh: &mut Shell, b: Builtin, argv: &[Bytes], tested: bool) -> Res<i32> {
    let saved = std::mem::replace(&mut sh.cur_tested, tested);
    let r = (b.func)(sh, argv);
    sh.cur_tested = saved;
    r
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes builtin output to fd 1; a closed pipe ends the shell like SIGPIPE would.
fn out(sh: &Shell, data: &[u8]) -> Res<i32> {
    match io::write_fd(1, data) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Flow::Exit(141)),
        Err(_) => {
            sh.error("write error");
            Ok(1)
        }
    }
}

/// Single-quotes a value for re-input (`set`, `export -p`, `alias`, `trap`).
pub fn quote(v: &[u8]) -> Bytes {
    let mut o = vec![b'\''];
    for &c in v {
        if c == b'\'' {
            o.extend_from_slice(b"'\\''");
        } else {
            o.push(c);
        }
    }
    o.push(b'\'');
    o
}

/// A number argument (`exit`, `shift`, `break`...): decimal digits only, up to `INT_MAX`.
fn number(sh: &Shell, cmd: &str, a: &[u8]) -> Result<i64, Flow> {
    let ok = !a.is_empty() && a.iter().all(u8::is_ascii_digit);
    match std::str::from_utf8(a)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|&v| v <= i64::from(i32::MAX))
    {
        Some(v) if ok => Ok(v),
        _ => {
            sh.error(format!("{cmd}: Illegal number: {}", lossy(a)));
            Err(Flow::Exit(2))
        }
    }
}

fn bi_true(_: &mut Shell, _: &[Bytes]) -> Res<i32> {
    Ok(0)
}

fn bi_false(_: &mut Shell, _: &[Bytes]) -> Res<i32> {
    Ok(1)
}

fn bi_echo(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    out(sh, &printf::echo(argv))
}

fn bi_printf(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let (text, status) = printf::printf(sh, argv);
    let w = out(sh, &text)?;
    Ok(if status != 0 { status } else { w })
}

fn bi_test(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    Ok(test_cmd::test(sh, argv))
}

fn bi_exit(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let status = match argv.get(1) {
        Some(a) => (number(sh, "exit", a)? & 0xff) as i32,
        None => sh.status,
    };
    Err(Flow::Exit(status))
}

fn bi_return(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let status = match argv.get(1) {
        Some(a) => number(sh, "return", a)? as i32,
        None => sh.status,
    };
    Err(Flow::Return(status))
}

fn loop_count(sh: &Shell, cmd: &str, argv: &[Bytes]) -> Result<u32, Flow> {
    let n = match argv.get(1) {
        Some(a) => number(sh, cmd, a)?,
        None => 1,
    };
    if n < 1 {
        sh.error(format!("{cmd}: Illegal number: {n}"));
        return Err(Flow::Exit(2));
    }
    Ok(u32::try_from(n).unwrap_or(u32::MAX).min(sh.loop_depth))
}

fn bi_break(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let n = loop_count(sh, "break", argv)?;
    if n == 0 {
        return Ok(0);
    }
    Err(Flow::Break(n))
}

fn bi_continue(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let n = loop_count(sh, "continue", argv)?;
    if n == 0 {
        return Ok(0);
    }
    Err(Flow::Continue(n))
}

fn bi_shift(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let n = match argv.get(1) {
        Some(a) => number(sh, "shift", a)?,
        None => 1,
    };
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n > sh.params.len() {
        sh.error("shift: can't shift that many");
        return Err(Flow::Exit(2));
    }
    sh.params.drain(..n);
    Ok(0)
}

fn bi_times(sh: &mut Shell, _: &[Bytes]) -> Res<i32> {
    out(sh, b"0m0.000000s 0m0.000000s\n0m0.000000s 0m0.000000s\n")
}

fn bi_eval(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let args = argv.get(1..).unwrap_or(&[]);
    if args.is_empty() {
        return Ok(0);
    }
    let src = args.join(&b' ');
    let tested = sh.cur_tested;
    let line = sh.line;
    sh.status = 0;
    let r = sh.run_source(src, line, tested);
    sh.line = line;
    r
}

fn bi_dot(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    dot(sh, argv, true)
}

/// `source`: bash's name for `.`, as a regular builtin: its errors return a status (1, or 2
/// for a missing operand) instead of ending the shell.
fn bi_source(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    dot(sh, argv, false)
}

/// `.` (`special`) and `source`: runs a file in the current shell.
fn dot(sh: &mut Shell, argv: &[Bytes], special: bool) -> Res<i32> {
    let cmd = if special { "." } else { "source" };
    let argv = match argv.get(1) {
        Some(a) if a == b"--" => argv.get(1..).unwrap_or(&[]),
        _ => argv,
    };
    let fail = |status: i32| {
        if special {
            Err(Flow::Exit(2))
        } else {
            Ok(status)
        }
    };
    let Some(name) = argv.get(1) else {
        if special {
            return Ok(0);
        }
        sh.error(format!("{cmd}: filename argument required"));
        return Ok(2);
    };
    let path = if name.contains(&b'/') {
        Some(name.clone())
    } else {
        let p = sh.get(b"PATH").unwrap_or(b"").to_vec();
        p.split(|&c| c == b':').find_map(|d| {
            let mut c = if d.is_empty() {
                b".".to_vec()
            } else {
                d.to_vec()
            };
            c.push(b'/');
            c.extend_from_slice(name);
            std::fs::metadata(io::path(&c))
                .is_ok_and(|m| m.is_file())
                .then_some(c)
        })
    };
    let text = match path.as_ref().map(|p| std::fs::read(io::path(p))) {
        Some(Ok(t)) => t,
        // dash reads a directory as an empty file.
        Some(Err(e)) if special && e.kind() == std::io::ErrorKind::IsADirectory => Vec::new(),
        Some(Err(e)) => {
            sh.error(format!(
                "{cmd}: cannot open {}: {}",
                lossy(name),
                crate::redirect::errmsg(&e, false)
            ));
            return fail(1);
        }
        None => {
            sh.error(format!("{cmd}: {}: not found", lossy(name)));
            return fail(1);
        }
    };
    let new_params = argv
        .get(2..)
        .filter(|a| !a.is_empty())
        .map(<[Bytes]>::to_vec);
    let old_params = new_params.map(|p| std::mem::replace(&mut sh.params, p));
    sh.dot_depth += 1;
    let line = sh.line;
    let r = sh.run_source(text, 1, sh.cur_tested);
    sh.line = line;
    sh.dot_depth -= 1;
    if let Some(p) = old_params {
        sh.params = p;
    }
    match r {
        Err(Flow::Return(s)) => Ok(s),
        other => other,
    }
}

fn print_vars(sh: &Shell, prefix: &str, filter: impl Fn(&Var) -> bool) -> Res<i32> {
    let mut names: Vec<(&Bytes, &Var)> = sh.vars.iter().filter(|(_, v)| filter(v)).collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = Vec::new();
    for (k, v) in names {
        text.extend_from_slice(prefix.as_bytes());
        text.extend_from_slice(k);
        if let Some(val) = &v.value {
            text.push(b'=');
            text.extend(quote(val));
        }
        text.push(b'\n');
    }
    out(sh, &text)
}

fn declare(sh: &mut Shell, argv: &[Bytes], export: bool) -> Res<i32> {
    let cmd = if export { "export" } else { "readonly" };
    let mut args = argv.get(1..).unwrap_or(&[]);
    let mut print = false;
    while let Some(a) = args.first() {
        if a == b"-p" {
            print = true;
            args = &args[1..];
        } else if a == b"--" {
            args = &args[1..];
            break;
        } else {
            break;
        }
    }
    if args.is_empty() || (print && args.is_empty()) {
        let prefix = format!("{cmd} ");
        return print_vars(
            sh,
            &prefix,
            |v| if export { v.exported } else { v.readonly },
        );
    }
    for a in args {
        let (name, value) = match a.iter().position(|&c| c == b'=') {
            Some(i) => (&a[..i], Some(a[i + 1..].to_vec())),
            None => (a.as_slice(), None),
        };
        if !is_name(name) {
            sh.error(format!("{cmd}: {}: bad variable name", lossy(name)));
            return Err(Flow::Exit(2));
        }
        if let Some(v) = value {
            sh.set_or_exit(name, v)?;
        }
        let var = sh.vars.entry(name.to_vec()).or_default();
        if export {
            var.exported = true;
        } else {
            var.readonly = true;
        }
    }
    Ok(0)
}

fn bi_export(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    declare(sh, argv, true)
}

fn bi_readonly(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    declare(sh, argv, false)
}

fn bi_unset(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let mut args = argv.get(1..).unwrap_or(&[]);
    let mut funcs = false;
    while let Some(a) = args.first() {
        match a.as_slice() {
            b"-f" => funcs = true,
            b"-v" => funcs = false,
            b"--" => {
                args = &args[1..];
                break;
            }
            _ => break,
        }
        args = &args[1..];
    }
    for a in args {
        if funcs {
            sh.funcs.remove(a);
        } else if sh.unset(a).is_err() {
            return Err(Flow::Exit(2));
        }
    }
    Ok(0)
}

fn bi_set(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let args = argv.get(1..).unwrap_or(&[]);
    if args.is_empty() {
        return print_vars(sh, "", |v| v.value.is_some());
    }
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let (on, rest) = match a.first() {
            Some(b'-') => (true, &a[1..]),
            Some(b'+') => (false, &a[1..]),
            _ => break,
        };
        i += 1;
        if a == b"--" {
            sh.params = args[i..].to_vec();
            return Ok(0);
        }
        if rest.is_empty() {
            if on {
                sh.opts.set("xtrace", false);
                sh.opts.set("verbose", false);
                // Unlike `--`, a lone `-` with nothing after it keeps the parameters.
                if i < args.len() {
                    sh.params = args[i..].to_vec();
                }
                return Ok(0);
            }
            continue;
        }
        for &c in rest {
            if c == b'o' {
                match args.get(i) {
                    Some(name) => {
                        i += 1;
                        let name = lossy(name);
                        if !sh.opts.set(&name, on) {
                            sh.error(format!("set: Illegal option -o {name}"));
                            return Err(Flow::Exit(2));
                        }
                    }
                    None => {
                        let mut text = Vec::new();
                        if on {
                            text.extend_from_slice(b"Current option settings\n");
                            for (name, _) in OPTIONS {
                                let state = if sh.opts.get(name) { "on" } else { "off" };
                                text.extend_from_slice(format!("{name:<16}{state}\n").as_bytes());
                            }
                        } else {
                            for (name, _) in OPTIONS {
                                let sign = if sh.opts.get(name) { '-' } else { '+' };
                                text.extend_from_slice(format!("set {sign}o {name}\n").as_bytes());
                            }
                        }
                        out(sh, &text)?;
                    }
                }
            } else if !sh.opts.set_letter(c, on) {
                sh.error(format!(
                    "set: Illegal option {}{}",
                    if on { '-' } else { '+' },
                    char::from(c)
                ));
                return Err(Flow::Exit(2));
            }
        }
    }
    if i < args.len() {
        sh.params = args[i..].to_vec();
    }
    Ok(0)
}

const SIGNALS: &[&str] = &[
    "EXIT", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV",
    "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
    "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

pub fn signal_number(s: &[u8]) -> Option<i32> {
    if !s.is_empty() && s.iter().all(u8::is_ascii_digit) {
        let n: i32 = std::str::from_utf8(s).ok()?.parse().ok()?;
        return (0..SIGNALS.len() as i32).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix(b"SIG").unwrap_or(&up);
    SIGNALS
        .iter()
        .position(|n| n.as_bytes() == name)
        .and_then(|i| i32::try_from(i).ok())
}

fn signal_name(n: i32) -> &'static str {
    usize::try_from(n)
        .ok()
        .and_then(|i| SIGNALS.get(i))
        .copied()
        .unwrap_or("?")
}

fn bi_trap(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let mut args = argv.get(1..).unwrap_or(&[]);
    match args.first().map(Vec::as_slice) {
        Some(b"--") => args = &args[1..],
        // dash takes no options: `trap -1 EXIT` is an error (special builtin: the shell ends).
        Some([b'-', c, ..]) => {
            sh.error(format!("trap: Illegal option -{}", char::from(*c)));
            return Err(Flow::Exit(2));
        }
        _ => {}
    }
    if args.is_empty() {
        let mut text = Vec::new();
        for (sig, action) in &sh.traps {
            text.extend_from_slice(b"trap -- ");
            text.extend(quote(action));
            text.push(b' ');
            text.extend_from_slice(signal_name(*sig).as_bytes());
            text.push(b'\n');
        }
        return out(sh, &text);
    }
    let (action, sigs) = if args.len() == 1
        || signal_number(&args[0]).is_some_and(|_| args[0].iter().all(u8::is_ascii_digit))
    {
        (None, args)
    } else {
        let a = &args[0];
        (if a == b"-" { None } else { Some(a.clone()) }, &args[1..])
    };
    let mut status = 0;
    for s in sigs {
        match signal_number(s) {
            Some(n) => match &action {
                Some(a) => {
                    sh.traps.insert(n, a.clone());
                }
                None => {
                    sh.traps.remove(&n);
                }
            },
            None => {
                sh.error(format!("trap: {}: bad trap", lossy(s)));
                status = 1;
            }
        }
    }
    Ok(status)
}

fn bi_alias(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let args = argv.get(1..).unwrap_or(&[]);
    let fmt = |k: &[u8], v: &[u8]| {
        let mut t = k.to_vec();
        t.push(b'=');
        t.extend(quote(v));
        t.push(b'\n');
        t
    };
    if args.is_empty() {
        let mut all: Vec<(&Bytes, &Bytes)> = sh.aliases.iter().collect();
        all.sort();
        let text: Vec<u8> = all.into_iter().flat_map(|(k, v)| fmt(k, v)).collect();
        return out(sh, &text);
    }
    let mut status = 0;
    for a in args {
        match a.iter().position(|&c| c == b'=') {
            Some(i) if i > 0 => {
                sh.aliases.insert(a[..i].to_vec(), a[i + 1..].to_vec());
            }
            _ => match sh.aliases.get(a) {
                Some(v) => {
                    let t = fmt(a, v);
                    out(sh, &t)?;
                }
                None => {
                    sh.error(format!("alias: {} not found", lossy(a)));
                    status = 1;
                }
            },
        }
    }
    Ok(status)
}

fn bi_unalias(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let args = argv.get(1..).unwrap_or(&[]);
    if args.first().is_some_and(|a| a == b"-a") {
        sh.aliases.clear();
        return Ok(0);
    }
    let mut status = 0;
    for a in args {
        if sh.aliases.remove(a).is_none() {
            sh.error(format!("unalias: {} not found", lossy(a)));
            status = 1;
        }
    }
    Ok(status)
}

/// Normalizes `.` and `..` of an absolute path, lexically.
fn normalize(p: &[u8]) -> Bytes {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in p.split(|&c| c == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut o = Vec::new();
    for c in parts {
        o.push(b'/');
        o.extend_from_slice(c);
    }
    if o.is_empty() {
        o.push(b'/');
    }
    o
}

/// The working directory with every symlink resolved. The kernel's getcwd already is that;
/// wasi-libc's is the path `chdir` was given, so it is resolved here.
fn physical_cwd() -> Option<Bytes> {
    let cwd = std::env::current_dir().ok()?;
    resolve_symlinks(&io::into_bytes(cwd.into_os_string()))
}

/// `path` (absolute) with its symlinks, `.` and `..` resolved, like realpath(3).
fn resolve_symlinks(path: &[u8]) -> Option<Bytes> {
    // Linux's limit on the symlinks one lookup follows.
    const MAX_LINKS: u32 = 40;
    let mut done: Vec<Bytes> = Vec::new();
    let mut todo: std::collections::VecDeque<Bytes> =
        path.split(|&c| c == b'/').map(<[u8]>::to_vec).collect();
    let mut links = 0;
    let join = |parts: &[Bytes]| {
        let mut o = Vec::new();
        for c in parts {
            o.push(b'/');
            o.extend_from_slice(c);
        }
        if o.is_empty() {
            o.push(b'/');
        }
        o
    };
    while let Some(c) = todo.pop_front() {
        match c.as_slice() {
            b"" | b"." => {}
            b".." => {
                done.pop();
            }
            _ => {
                done.push(c);
                let cur = join(&done);
                if !kiln_rt::stat(io::path(&cur), false).ok()?.is_symlink() {
                    continue;
                }
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                let target = io::into_bytes(std::fs::read_link(io::path(&cur)).ok()?.into());
                done.pop();
                if target.starts_with(b"/") {
                    done.clear();
                }
                for part in target.split(|&c| c == b'/').rev() {
                    todo.push_front(part.to_vec());
                }
            }
        }
    }
    Some(join(&done))
}

fn bi_cd(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let mut args = argv.get(1..).unwrap_or(&[]);
    let mut physical = false;
    while let Some(a) = args.first() {
        match a.as_slice() {
            b"-P" => physical = true,
            b"-L" => physical = false,
            b"--" => {
                args = &args[1..];
                break;
            }
            _ => break,
        }
        args = &args[1..];
    }
    let mut print = false;
    let target = match args.first() {
        None => match sh.get(b"HOME") {
            Some(h) if !h.is_empty() => h.to_vec(),
            _ => return Ok(0),
        },
        Some(a) if a == b"-" => {
            print = true;
            sh.get_str(b"OLDPWD")
        }
        Some(a) => a.clone(),
    };
    let cur = sh
        .get(b"PWD")
        .filter(|p| p.starts_with(b"/"))
        .map(<[u8]>::to_vec)
        .or_else(physical_cwd)
        .unwrap_or_else(|| b"/".to_vec());
    let mut candidates = Vec::new();
    let relative = !target.starts_with(b"/")
        && !target.starts_with(b"./")
        && !target.starts_with(b"../")
        && target != b"."
        && target != b"..";
    if relative {
        if let Some(cdpath) = sh.get(b"CDPATH").map(<[u8]>::to_vec) {
            for d in cdpath.split(|&c| c == b':') {
                if d.is_empty() {
                    continue;
                }
                let mut c = d.to_vec();
                c.push(b'/');
                c.extend_from_slice(&target);
                candidates.push((c, true));
            }
        }
    }
    candidates.push((target.clone(), false));
    for (cand, from_cdpath) in candidates {
        let abs = if cand.starts_with(b"/") {
            cand.clone()
        } else {
            let mut a = cur.clone();
            a.push(b'/');
            a.extend_from_slice(&cand);
            a
        };
        let logical = normalize(&abs);
        let dest = if physical {
            abs.clone()
        } else {
            logical.clone()
        };
        if std::env::set_current_dir(io::path(&dest)).is_ok() {
            let newpwd = match physical_cwd() {
                Some(real) if physical => {
                    // wasi-libc keeps the path it was given: make it the physical one, so
                    // that `..` and children start from there.
                    let _ = std::env::set_current_dir(io::path(&real));
                    real
                }
                _ => logical,
            };
            let _ = sh.set(b"OLDPWD", cur);
            let _ = sh.set(b"PWD", newpwd.clone());
            if print || from_cdpath {
                let mut t = newpwd;
                t.push(b'\n');
                out(sh, &t)?;
            }
            return Ok(0);
        }
    }
    sh.error(format!("cd: can't cd to {}", lossy(&target)));
    Ok(2)
}

fn bi_pwd(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let physical = argv.get(1).is_some_and(|a| a == b"-P");
    let p = if physical {
        physical_cwd()
    } else {
        sh.get(b"PWD")
            .filter(|p| p.starts_with(b"/"))
            .map(<[u8]>::to_vec)
            .or_else(physical_cwd)
    };
    let mut t = p.unwrap_or_else(|| b"/".to_vec());
    t.push(b'\n');
    out(sh, &t)
}

fn bi_umask(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let mut args = argv.get(1..).unwrap_or(&[]);
    let symbolic = args.first().is_some_and(|a| a == b"-S");
    if symbolic {
        args = &args[1..];
    }
    let cur = kiln_rt::umask(None).unwrap_or(0o022);
    let Some(a) = args.first() else {
        let text = if symbolic {
            let p = |shift: u32| {
                let bits = !cur >> shift & 7;
                let mut s = String::new();
                if bits & 4 != 0 {
                    s.push('r');
                }
                if bits & 2 != 0 {
                    s.push('w');
                }
                if bits & 1 != 0 {
                    s.push('x');
                }
                s
            };
            format!("u={},g={},o={}\n", p(6), p(3), p(0))
        } else {
            format!("{cur:04o}\n")
        };
        return out(sh, text.as_bytes());
    };
    if a.is_empty() {
        return Ok(0);
    }
    if a.len() > 1 && a[0] == b'-' {
        sh.error(format!("umask: Illegal option {}", lossy(&a[..2])));
        return Ok(2);
    }
    let new = if a.first().is_some_and(u8::is_ascii_digit) {
        let mut v: u32 = 0;
        for &c in a {
            if !(b'0'..=b'7').contains(&c) {
                sh.error(format!("umask: Illegal number: {}", lossy(a)));
                return Ok(2);
            }
            v = v.wrapping_shl(3) | u32::from(c - b'0');
        }
        v & 0o777
    } else {
        match symbolic_umask(cur, a) {
            Some(v) => v,
            None => {
                sh.error(format!("umask: Illegal mode: {}", lossy(a)));
                return Ok(2);
            }
        }
    };
    let _ = kiln_rt::umask(Some(new));
    Ok(0)
}

/// One step of a compiled symbolic mode (BSD `setmode`, which dash's `umask` uses).
enum ModeCmd {
    Add(u32),
    Clear(u32),
    /// `X`: add the bits when the mode already has an execute bit.
    AddX(u32),
    /// Copy the `u`/`g`/`o` bits (the shift of the source) to the classes in `targets`,
    /// limited to `bits`; `set`/`clear` as for `+`, `-`, `=`.
    Copy {
        shift: u32,
        targets: [bool; 3],
        bits: u32,
        set: bool,
        clear: bool,
    },
}

const S_IRWXU: u32 = 0o700;
const S_IRWXG: u32 = 0o070;
const S_IRWXO: u32 = 0o007;
const SETID: u32 = 0o6000;

fn add_cmd(cmds: &mut Vec<ModeCmd>, op: u8, who: u32, arg: u32, mask: u32) {
    let bits = |w: u32| if w != 0 { w & arg } else { mask & arg };
    match op {
        b'=' => {
            cmds.push(ModeCmd::Clear(if who != 0 { who } else { 0o7777 }));
            cmds.push(ModeCmd::Add(bits(who)));
        }
        b'+' => cmds.push(ModeCmd::Add(bits(who))),
        b'-' => cmds.push(ModeCmd::Clear(bits(who))),
        _ => cmds.push(ModeCmd::AddX(bits(who))),
    }
}

fn add_copy(cmds: &mut Vec<ModeCmd>, from: u8, who: u32, op: u8, mask: u32) {
    let shift = match from {
        b'u' => 6,
        b'g' => 3,
        _ => 0,
    };
    let (targets, bits) = if who != 0 {
        (
            [who & 0o400 != 0, who & 0o040 != 0, who & 0o004 != 0],
            u32::MAX,
        )
    } else {
        ([true; 3], mask)
    };
    cmds.push(ModeCmd::Copy {
        shift,
        targets,
        bits,
        set: op != b'-',
        clear: op != b'+',
    });
}

/// Compiles a symbolic mode; `mask` is the complement of the current umask.
fn compile_mode(s: &[u8], mask: u32) -> Option<Vec<ModeCmd>> {
    let mut cmds = Vec::new();
    let mut p = 0;
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    'clauses: loop {
        let mut who = 0u32;
        loop {
            match at(p) {
                b'a' => who |= SETID | 0o777,
                b'u' => who |= 0o4000 | S_IRWXU,
                b'g' => who |= 0o2000 | S_IRWXG,
                b'o' => who |= S_IRWXO,
                _ => break,
            }
            p += 1;
        }
        loop {
            let op = at(p);
            if !matches!(op, b'+' | b'-' | b'=') {
                return None;
            }
            p += 1;
            let mut equal_done = op != b'=';
            let mut perm = 0u32;
            let mut perm_x = 0u32;
            loop {
                match at(p) {
                    b'r' => perm |= 0o444,
                    b'w' => perm |= 0o222,
                    b'x' => perm |= 0o111,
                    b'X' => perm_x = 0o111,
                    b's' => {
                        if who == 0 || who & !S_IRWXO != 0 {
                            perm |= SETID;
                        }
                    }
                    c @ (b'u' | b'g' | b'o') => {
                        if perm != 0 {
                            add_cmd(&mut cmds, op, who, perm, mask);
                            perm = 0;
                        }
                        if op == b'=' {
                            equal_done = true;
                        }
                        if op == b'+' && perm_x != 0 {
                            add_cmd(&mut cmds, b'X', who, perm_x, mask);
                            perm_x = 0;
                        }
                        add_copy(&mut cmds, c, who, op, mask);
                    }
                    _ => {
                        if perm != 0 || !equal_done {
                            add_cmd(&mut cmds, op, who, perm, mask);
                        }
                        if perm_x != 0 {
                            add_cmd(&mut cmds, b'X', who, perm_x, mask);
                        }
                        break;
                    }
                }
                p += 1;
            }
            match at(p) {
                0 => break 'clauses,
                b',' => {
                    p += 1;
                    if at(p) == 0 {
                        break 'clauses;
                    }
                    continue 'clauses;
                }
                _ => {}
            }
        }
    }
    Some(cmds)
}

fn apply_mode(cmds: &[ModeCmd], omode: u32) -> u32 {
    let mut m = omode;
    for c in cmds {
        match *c {
            ModeCmd::Add(b) => m |= b,
            ModeCmd::Clear(b) => m &= !b,
            ModeCmd::AddX(b) => {
                if omode & 0o111 != 0 {
                    m |= b;
                }
            }
            ModeCmd::Copy {
                shift,
                targets,
                bits,
                set,
                clear,
            } => {
                let value = (m >> shift) & 7;
                let shifts = [6u32, 3, 0];
                if clear {
                    let clr = if set { 7 } else { value };
                    for (t, s) in targets.iter().zip(shifts) {
                        if *t {
                            m &= !((clr << s) & bits);
                        }
                    }
                }
                if set {
                    for (t, s) in targets.iter().zip(shifts) {
                        if *t {
                            m |= (value << s) & bits;
                        }
                    }
                }
            }
        }
    }
    m
}

/// Applies a symbolic mode (`u=rwx,g+w,o-r`) to the permissions a umask allows.
fn symbolic_umask(cur: u32, s: &[u8]) -> Option<u32> {
    let cmds = compile_mode(s, !cur & 0o7777)?;
    Some(!apply_mode(&cmds, !cur & 0o777) & 0o777)
}

fn job_pids(sh: &Shell, spec: &[u8]) -> Option<Vec<u32>> {
    if let Some(n) = spec.strip_prefix(b"%") {
        let idx = match n {
            b"" | b"%" | b"+" => sh.jobs.len().checked_sub(1)?,
            b"-" => sh.jobs.len().checked_sub(2)?,
            _ => std::str::from_utf8(n)
                .ok()?
                .parse::<usize>()
                .ok()?
                .checked_sub(1)?,
        };
        return sh.jobs.get(idx).map(|j| j.pids.clone());
    }
    std::str::from_utf8(spec)
        .ok()?
        .parse::<u32>()
        .ok()
        .map(|p| vec![p])
}

fn bi_wait(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let args = argv.get(1..).unwrap_or(&[]);
    if args.is_empty() {
        let jobs = std::mem::take(&mut sh.jobs);
        for j in jobs {
            for p in j.pids {
                let _ = kiln_rt::wait(p, false);
            }
        }
        return Ok(0);
    }
    let mut status = 0;
    for a in args {
        let Some(pids) = job_pids(sh, a) else {
            sh.error(format!("wait: Illegal number: {}", lossy(a)));
            return Ok(2);
        };
        for pid in pids {
            let known = sh.jobs.iter().position(|j| j.pids.contains(&pid));
            status = match known {
                Some(ji) => {
                    let pi = sh.jobs[ji].pids.iter().position(|&p| p == pid).unwrap_or(0);
                    let st = match sh.jobs[ji].done.get(pi).copied().flatten() {
                        Some(s) => s,
                        None => match kiln_rt::wait(pid, false) {
                            Ok(Some(s)) => s,
                            _ => 127,
                        },
                    };
                    if let Some(slot) = sh.jobs[ji].done.get_mut(pi) {
                        *slot = Some(st);
                    }
                    st
                }
                None => 127,
            };
        }
    }
    sh.jobs.retain(|j| j.done.iter().any(Option::is_none));
    Ok(status)
}

fn bi_kill(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let mut args = argv.get(1..).unwrap_or(&[]);
    let mut sig = 15;
    match args.first().map(Vec::as_slice) {
        Some(b"-l") | Some(b"-L") => {
            if let Some(a) = args.get(1) {
                let n: i32 = std::str::from_utf8(a)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1);
                let n = if n > 128 { n - 128 } else { n };
                if n > 0 && (n as usize) < SIGNALS.len() {
                    return out(sh, format!("{}\n", signal_name(n)).as_bytes());
                }
                let numeric = a.iter().all(u8::is_ascii_digit);
                if let Some(n) = signal_number(a).filter(|_| !numeric) {
                    return out(sh, format!("{n}\n").as_bytes());
                }
                sh.error(format!(
                    "kill: invalid signal number or exit status: {}",
                    lossy(a)
                ));
                return Ok(2);
            }
            let text: String = SIGNALS[1..].iter().map(|s| format!("{s}\n")).collect();
            return out(sh, text.as_bytes());
        }
        Some(b"-s") | Some(b"-n") => {
            let Some(n) = args.get(1).and_then(|a| signal_number(a)) else {
                sh.error("kill: invalid signal");
                return Ok(2);
            };
            sig = n;
            args = &args[2..];
        }
        Some(a) if a.len() > 1 && a[0] == b'-' && a != b"--" => {
            let Some(n) = signal_number(&a[1..]) else {
                sh.error(format!(
                    "kill: invalid signal number or name: {}",
                    lossy(&a[1..])
                ));
                return Ok(2);
            };
            sig = n;
            args = &args[1..];
        }
        _ => {}
    }
    if args.first().is_some_and(|a| a == b"--") {
        args = &args[1..];
    }
    if args.is_empty() {
        sh.error("kill: usage: kill [-s sigspec | -signum | -sigspec] [pid | job]... or\nkill -l [exitstatus]");
        return Ok(2);
    }
    let mut status = 0;
    for a in args {
        let Some(pids) = job_pids(sh, a) else {
            sh.error(format!("kill: Illegal number: {}", lossy(a)));
            return Ok(2);
        };
        for pid in pids {
            if pid == sh.pid {
                if sig != 0 {
                    sh.pending_signals.push(sig);
                }
            } else if let Err(e) = kiln_rt::kill(pid, sig) {
                sh.error(format!("kill: {}", crate::redirect::errmsg(&e, false)));
                status = 1;
            }
        }
    }
    Ok(status)
}

/// What a name is, for `type` and `command -v/-V`.
enum Kind {
    Keyword,
    Alias(Bytes),
    Function,
    Special,
    Builtin,
    Path(Bytes),
    NotFound,
}

fn classify(sh: &Shell, name: &[u8], aliases: bool) -> Kind {
    if KEYWORDS.iter().any(|k| k.as_bytes() == name) {
        return Kind::Keyword;
    }
    if aliases {
        if let Some(v) = sh.aliases.get(name) {
            return Kind::Alias(v.clone());
        }
    }
    if sh.funcs.contains_key(name) {
        return Kind::Function;
    }
    if name.contains(&b'/') {
        return if std::fs::symlink_metadata(io::path(name)).is_ok() {
            Kind::Path(name.to_vec())
        } else {
            Kind::NotFound
        };
    }
    if let Some(b) = lookup(name) {
        return if b.special {
            Kind::Special
        } else {
            Kind::Builtin
        };
    }
    match sh.which(name) {
        Some(p) => Kind::Path(p),
        None => Kind::NotFound,
    }
}

fn describe(sh: &Shell, name: &[u8]) -> (Bytes, bool) {
    let n = lossy(name);
    let s = match classify(sh, name, true) {
        Kind::Keyword => format!("{n} is a shell keyword"),
        Kind::Alias(v) => format!("{n} is an alias for {}", lossy(&v)),
        Kind::Function => format!("{n} is a shell function"),
        Kind::Special => format!("{n} is a special shell builtin"),
        Kind::Builtin => format!("{n} is a shell builtin"),
        Kind::Path(p) => format!("{n} is {}", lossy(&p)),
        Kind::NotFound => return (format!("{n}: not found\n").into_bytes(), false),
    };
    (format!("{s}\n").into_bytes(), true)
}

fn bi_type(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let mut status = 0;
    for a in argv.get(1..).unwrap_or(&[]) {
        let (text, found) = describe(sh, a);
        out(sh, &text)?;
        if !found {
            status = 127;
        }
    }
    Ok(status)
}

fn bi_command(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let mut args = argv.get(1..).unwrap_or(&[]);
    let mut verbose = None;
    let mut default_path = false;
    while let Some(a) = args.first() {
        match a.as_slice() {
            b"-v" => verbose = Some(false),
            b"-V" => verbose = Some(true),
            b"-p" => default_path = true,
            b"--" => {
                args = &args[1..];
                break;
            }
            _ => break,
        }
        args = &args[1..];
    }
    let Some(name) = args.first().cloned() else {
        return Ok(0);
    };
    match verbose {
        Some(true) => {
            let (text, found) = describe(sh, &name);
            if found {
                out(sh, &text)?;
                return Ok(0);
            }
            out(sh, &text)?;
            Ok(127)
        }
        Some(false) => {
            let text = match classify(sh, &name, true) {
                Kind::Alias(v) => {
                    let mut t = b"alias ".to_vec();
                    t.extend_from_slice(&name);
                    t.push(b'=');
                    t.extend(quote(&v));
                    t
                }
                Kind::Path(p) => p,
                Kind::NotFound => return Ok(127),
                _ => name.clone(),
            };
            let mut t = text;
            t.push(b'\n');
            out(sh, &t)
        }
        None => {
            let saved_path = if default_path {
                let old = sh.vars.get(b"PATH".as_slice()).cloned();
                sh.vars.insert(
                    b"PATH".to_vec(),
                    Var {
                        value: Some(b"/usr/sbin:/usr/bin:/sbin:/bin".to_vec()),
                        exported: true,
                        readonly: false,
                    },
                );
                Some(old)
            } else {
                None
            };
            let tested = sh.cur_tested;
            let r = sh.run_command(&name, args, &[], &[], tested, true);
            if let Some(old) = saved_path {
                match old {
                    Some(v) => {
                        sh.vars.insert(b"PATH".to_vec(), v);
                    }
                    None => {
                        sh.vars.remove(b"PATH".as_slice());
                    }
                }
            }
            r
        }
    }
}

fn bi_local(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    if sh.locals.is_empty() {
        sh.error("local: not in a function");
        return Ok(2);
    }
    for a in argv.get(1..).unwrap_or(&[]) {
        let (name, value) = match a.iter().position(|&c| c == b'=') {
            Some(i) => (a[..i].to_vec(), Some(a[i + 1..].to_vec())),
            None => (a.clone(), None),
        };
        if name == b"-" {
            continue;
        }
        if !is_name(&name) {
            sh.error(format!("local: {}: bad variable name", lossy(&name)));
            return Err(Flow::Exit(2));
        }
        let old = sh.vars.get(&name).cloned();
        if let Some(frame) = sh.locals.last_mut() {
            if !frame.iter().any(|(n, _)| *n == name) {
                frame.push((name.clone(), old));
            }
        }
        if let Some(v) = value {
            sh.set_or_exit(&name, v)?;
        }
    }
    Ok(0)
}

/// `getopts`, as dash's: `OPTIND` names the argument after the one being scanned, and the
/// position inside it is kept by the shell.
fn bi_getopts(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let (Some(optstr), Some(var)) = (argv.get(1), argv.get(2)) else {
        sh.error("Usage: getopts optstring var [arg]");
        return Ok(2);
    };
    let args: Vec<Bytes> = if argv.len() > 3 {
        argv[3..].to_vec()
    } else {
        sh.params.clone()
    };
    if sh.optind > args.len() + 1 {
        sh.optind = 1;
        sh.optoff = None;
    }
    if sh.optind < 1 {
        return Ok(1);
    }
    let mut next = sh.optind - 1;
    // (index of the argument being scanned, offset in it)
    let mut p: Option<(usize, usize)> = match sh.optoff {
        Some(off) if sh.optind > 1 && args.get(next - 1).is_some_and(|a| a.len() >= off) => {
            Some((next - 1, off))
        }
        _ => None,
    };
    let mut done = false;
    let mut optarg: Option<Option<Bytes>> = None;
    let c: u8 = 'out: {
        if p.is_none_or(|(ai, off)| off >= args[ai].len()) {
            match args.get(next) {
                Some(a) if a.len() >= 2 && a[0] == b'-' => {
                    next += 1;
                    if a == b"--" {
                        p = None;
                        done = true;
                        break 'out b'?';
                    }
                    p = Some((next - 1, 1));
                }
                _ => {
                    p = None;
                    done = true;
                    break 'out b'?';
                }
            }
        }
        let Some((ai, off)) = p else {
            break 'out b'?';
        };
        let c = args[ai][off];
        p = Some((ai, off + 1));
        let mut q = 0;
        loop {
            match optstr.get(q) {
                None => {
                    if optstr.first() == Some(&b':') {
                        optarg = Some(Some(vec![c]));
                    } else {
                        io::write_all(2, format!("Illegal option -{}\n", char::from(c)).as_bytes());
                        optarg = Some(None);
                    }
                    break 'out b'?';
                }
                Some(&o) if o == c => break,
                Some(_) => {
                    q += 1;
                    if optstr.get(q) == Some(&b':') {
                        q += 1;
                    }
                }
            }
        }
        if optstr.get(q + 1) == Some(&b':') {
            let rest_empty = p.is_none_or(|(ai, off)| off >= args[ai].len());
            if rest_empty {
                match args.get(next) {
                    None => {
                        if optstr.first() == Some(&b':') {
                            optarg = Some(Some(vec![c]));
                            p = None;
                            break 'out b':';
                        }
                        io::write_all(
                            2,
                            format!("No arg for -{} option\n", char::from(c)).as_bytes(),
                        );
                        optarg = Some(None);
                        p = None;
                        break 'out b'?';
                    }
                    Some(a) => {
                        optarg = Some(Some(a.clone()));
                        next += 1;
                    }
                }
            } else if let Some((ai, off)) = p {
                optarg = Some(Some(args[ai][off..].to_vec()));
            }
            p = None;
        } else {
            optarg = Some(Some(Vec::new()));
        }
        c
    };
    match optarg {
        Some(Some(v)) => sh.set_or_exit(b"OPTARG", v)?,
        Some(None) => {
            let _ = sh.unset(b"OPTARG");
        }
        None => {}
    }
    sh.optoff = p.map(|(_, off)| off);
    sh.optind = next + 1;
    let optind = sh.optind;
    sh.set_or_exit(b"OPTIND", optind.to_string().into_bytes())?;
    sh.optind = optind;
    sh.optoff = p.map(|(_, off)| off);
    if !is_name(var) {
        sh.error(format!("getopts: {}: bad variable name", lossy(var)));
        return Ok(2);
    }
    sh.set_or_exit(var, vec![c])?;
    Ok(i32::from(done))
}

fn bi_read(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let mut args = argv.get(1..).unwrap_or(&[]);
    let mut raw = false;
    while let Some(a) = args.first() {
        match a.as_slice() {
            b"-r" => raw = true,
            b"-p" => {
                if let Some(p) = args.get(1) {
                    io::write_all(2, p);
                    args = &args[1..];
                }
            }
            b"--" => {
                args = &args[1..];
                break;
            }
            o if o.len() > 1 && o[0] == b'-' => {
                sh.error(format!("read: Illegal option {}", lossy(o)));
                return Ok(2);
            }
            _ => break,
        }
        args = &args[1..];
    }
    if args.is_empty() {
        sh.error("read: arg count");
        return Ok(2);
    }
    // The line, with a flag per byte: escaped bytes are never field separators.
    let mut line: Vec<(u8, bool)> = Vec::new();
    let mut eof = false;
    let mut escaped = false;
    loop {
        let mut b = [0u8; 1];
        match io::read_fd(0, &mut b) {
            Ok(1) => {}
            _ => {
                eof = true;
                break;
            }
        }
        let c = b[0];
        // Shell strings cannot hold NUL: dash drops it.
        if c == 0 {
            continue;
        }
        if escaped {
            escaped = false;
            if c != b'\n' {
                line.push((c, true));
            }
            continue;
        }
        if c == b'\\' && !raw {
            escaped = true;
            continue;
        }
        if c == b'\n' {
            break;
        }
        line.push((c, false));
    }
    let ifs = sh.ifs();
    let is_ifs = |ch: &(u8, bool)| !ch.1 && ifs.contains(&ch.0);
    let is_ws = |ch: &(u8, bool)| is_ifs(ch) && matches!(ch.0, b' ' | b'\t' | b'\n');
    let mut i = 0;
    while i < line.len() && is_ws(&line[i]) {
        i += 1;
    }
    for (n, var) in args.iter().enumerate() {
        let last = n + 1 == args.len();
        let value: Vec<u8> = if last {
            let mut end = line.len();
            while end > i && is_ws(&line[end - 1]) {
                end -= 1;
            }
            // A single trailing non-whitespace separator is dropped as well.
            let rest = &line[i..end];
            let mut v: Vec<(u8, bool)> = rest.to_vec();
            let seps = v.iter().filter(|c| is_ifs(c) && !is_ws(c)).count();
            if seps == 1 && v.last().is_some_and(|c| is_ifs(c) && !is_ws(c)) {
                v.pop();
                while v.last().is_some_and(&is_ws) {
                    v.pop();
                }
            }
            i = line.len();
            v.into_iter().map(|(c, _)| c).collect()
        } else {
            let start = i;
            while i < line.len() && !is_ifs(&line[i]) {
                i += 1;
            }
            let v: Vec<u8> = line[start..i].iter().map(|&(c, _)| c).collect();
            // Skip one separator: whitespace around, at most one non-whitespace.
            while i < line.len() && is_ws(&line[i]) {
                i += 1;
            }
            if i < line.len() && is_ifs(&line[i]) && !is_ws(&line[i]) {
                i += 1;
                while i < line.len() && is_ws(&line[i]) {
                    i += 1;
                }
            }
            v
        };
        if !is_name(var) {
            sh.error(format!("read: {}: bad variable name", lossy(var)));
            return Ok(2);
        }
        if sh.set(var, value).is_err() {
            return Ok(2);
        }
    }
    Ok(i32::from(eof))
}

fn bi_hash(_: &mut Shell, _: &[Bytes]) -> Res<i32> {
    Ok(0)
}

fn bi_jobs(sh: &mut Shell, _: &[Bytes]) -> Res<i32> {
    let mut text = Vec::new();
    for (i, j) in sh.jobs.iter().enumerate() {
        text.extend_from_slice(format!("[{}] Running\n", i + 1).as_bytes());
        let _ = j;
    }
    out(sh, &text)
}

fn bi_fg(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let name = argv.first().map(|a| lossy(a)).unwrap_or_default();
    sh.error(format!("{name}: No job control"));
    Ok(2)
}

/// `ulimit`: WASI has no resource limits, so the values are checked and remembered (what
/// `ulimit` later prints) but not enforced.
fn bi_ulimit(sh: &mut Shell, argv: &[Bytes]) -> Res<i32> {
    let mut args = argv.get(1..).unwrap_or(&[]);
    let mut resource = b'f';
    let mut all = false;
    while let Some(a) = args.first() {
        if a == b"--" {
            args = &args[1..];
            break;
        }
        if a.len() < 2 || a[0] != b'-' {
            break;
        }
        for &c in &a[1..] {
            match c {
                b'H' | b'S' => {}
                b'a' => all = true,
                b't' | b'f' | b'd' | b's' | b'c' | b'm' | b'l' | b'p' | b'n' | b'v' | b'w'
                | b'r' => resource = c,
                _ => {
                    sh.error(format!("ulimit: Illegal option -{}", char::from(c)));
                    return Ok(2);
                }
            }
        }
        args = &args[1..];
    }
    if all {
        if !args.is_empty() {
            sh.error("ulimit: too many arguments");
            return Ok(2);
        }
        let mut text = Vec::new();
        for r in b"tfdscmlpnvwr" {
            let v = sh
                .ulimits
                .get(r)
                .cloned()
                .unwrap_or_else(|| b"unlimited".to_vec());
            text.extend_from_slice(format!("-{}: ", char::from(*r)).as_bytes());
            text.extend_from_slice(&v);
            text.push(b'\n');
        }
        return out(sh, &text);
    }
    match args {
        [] => {
            let mut v = sh
                .ulimits
                .get(&resource)
                .cloned()
                .unwrap_or_else(|| b"unlimited".to_vec());
            v.push(b'\n');
            out(sh, &v)
        }
        [value] => {
            let ok = value == b"unlimited"
                || (!value.is_empty()
                    && value.iter().all(u8::is_ascii_digit)
                    && std::str::from_utf8(value).is_ok_and(|s| s.parse::<u64>().is_ok()));
            if !ok {
                sh.error(format!("ulimit: Illegal number: {}", lossy(value)));
                return Ok(2);
            }
            let v = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map_or_else(|| value.clone(), |n| n.to_string().into_bytes());
            sh.ulimits.insert(resource, v);
            Ok(0)
        }
        _ => {
            sh.error("ulimit: too many arguments");
            Ok(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(b"a b"), b"'a b'");
        assert_eq!(quote(b"it's"), b"'it'\\''s'");
    }

    #[test]
    fn umask_symbols() {
        assert_eq!(symbolic_umask(0o022, b"u=rwx,g=rx,o="), Some(0o027));
        assert_eq!(symbolic_umask(0o022, b"g+w"), Some(0o002));
        assert_eq!(symbolic_umask(0o022, b"q"), None);
    }

    #[test]
    fn signals() {
        assert_eq!(signal_number(b"INT"), Some(2));
        assert_eq!(signal_number(b"SIGTERM"), Some(15));
        assert_eq!(signal_number(b"0"), Some(0));
        assert_eq!(signal_number(b"nope"), None);
    }
}
