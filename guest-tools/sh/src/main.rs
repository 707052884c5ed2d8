//! kiln's guest `sh`: a POSIX shell that behaves like Debian's dash and runs inside kiln's
//! WASI sandbox (processes, pipes and fd plumbing come from `kiln-rt`).

mod arith;
mod ast;
mod builtins;
mod exec;
mod expand;
mod io;
mod parse;
mod pattern;
mod printf;
mod redirect;
mod shell;
mod subshell;
mod test_cmd;

use std::hash::{BuildHasher, Hasher};

use ast::Bytes;
use shell::{Flow, Shell, Var};
use subshell::ChildJob;

/// `$$`: the process id where the system tells it (`/proc/self`), otherwise (WASI has no
/// getpid) a random number in the pid range, fixed for the life of the shell.
fn shell_pid() -> u32 {
    if let Ok(p) = std::fs::read_link("/proc/self") {
        if let Some(pid) = p.to_str().and_then(|s| s.parse::<u32>().ok()) {
            return pid;
        }
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() % 4_000_000) as u32 + 300
}

fn finish(sh: &mut Shell, r: Result<i32, Flow>) -> i32 {
    let status = match r {
        Ok(s) => s,
        Err(Flow::Exit(s)) | Err(Flow::Return(s)) => s,
        Err(Flow::Break(_)) | Err(Flow::Continue(_)) => 0,
    };
    sh.exit_status(status)
}

fn run_child(pid: u32) -> i32 {
    let Some((mut sh, job, tested)) = subshell::receive(pid) else {
        io::write_all(2, b"sh: cannot read the subshell state\n");
        return 2;
    };
    let r = match job {
        ChildJob::List(l) => sh.exec_list(&l, tested),
        ChildJob::Command(c) => sh.exec_command(&c, tested),
        ChildJob::AndOr(a) => sh.exec_and_or(&a, tested),
        ChildJob::Write(data) => {
            let _ = io::write_fd(1, &data);
            Ok(0)
        }
    };
    finish(&mut sh, r)
}

fn init_vars(sh: &mut Shell) {
    for (k, v) in std::env::vars_os() {
        let k = io::into_bytes(k);
        if !parse::is_name(&k) {
            continue;
        }
        sh.vars.insert(
            k,
            Var {
                value: Some(io::into_bytes(v)),
                exported: true,
                readonly: false,
            },
        );
    }
    let root = kiln_rt::identity().is_ok_and(|id| id.euid == 0);
    for (k, v) in [
        (&b"IFS"[..], &b" \t\n"[..]),
        (b"PATH", exec::DEFAULT_PATH),
        (b"PS1", if root { b"# " } else { b"$ " }),
        (b"PS2", b"> "),
        (b"PS4", b"+ "),
        (b"OPTIND", b"1"),
    ] {
        sh.vars.entry(k.to_vec()).or_insert(Var {
            value: Some(v.to_vec()),
            exported: false,
            readonly: false,
        });
    }
    let cwd = std::env::current_dir()
        .ok()
        .map(|p| io::into_bytes(p.into_os_string()));
    let pwd_ok = match (sh.get(b"PWD"), &cwd) {
        (Some(p), Some(c)) => {
            p.starts_with(b"/")
                && kiln_rt::stat(io::path(p), true)
                    .ok()
                    .zip(kiln_rt::stat(io::path(c), true).ok())
                    .is_some_and(|(a, b)| a.dev == b.dev && a.ino == b.ino)
        }
        _ => false,
    };
    if !pwd_ok {
        if let Some(c) = cwd {
            sh.vars.insert(
                b"PWD".to_vec(),
                Var {
                    value: Some(c),
                    exported: true,
                    readonly: false,
                },
            );
        }
    } else if let Some(v) = sh.vars.get_mut(b"PWD".as_slice()) {
        v.exported = true;
    }
    // dash sets PPID whatever the environment says; WASI has no parent pid to tell.
    sh.vars.remove(b"PPID".as_slice());
    if let Some(ppid) = parent_pid() {
        sh.vars.insert(
            b"PPID".to_vec(),
            Var {
                value: Some(ppid.to_string().into_bytes()),
                exported: false,
                readonly: false,
            },
        );
    }
}

/// The parent's pid, where the system tells it (`/proc/self/stat`: `pid (comm) state ppid`).
fn parent_pid() -> Option<u32> {
    let stat = std::fs::read("/proc/self/stat").ok()?;
    let after = stat.iter().rposition(|&c| c == b')')?;
    let fields = std::str::from_utf8(stat.get(after + 1..)?).ok()?;
    fields.split_whitespace().nth(1)?.parse().ok()
}

fn usage_error(sh: &Shell, msg: &str) -> i32 {
    sh.error(msg);
    2
}

fn run_main(args: Vec<Bytes>, pid: u32) -> i32 {
    let mut sh = Shell::new(pid);
    sh.arg0 = args.first().cloned().unwrap_or_else(|| b"sh".to_vec());
    sh.detect_user_fds();
    init_vars(&mut sh);
    let mut i = 1;
    let mut cflag = false;
    let mut sflag = false;
    let mut login = false;
    while let Some(a) = args.get(i) {
        let (on, rest) = match a.first() {
            Some(b'-') => (true, &a[1..]),
            Some(b'+') => (false, &a[1..]),
            _ => break,
        };
        i += 1;
        if a == b"--" || a == b"-" {
            break;
        }
        let mut j = 0;
        while let Some(&c) = rest.get(j) {
            j += 1;
            match c {
                // dash takes `+c` like `-c`.
                b'c' => cflag = true,
                b'l' => login = on,
                b's' => sflag = on,
                b'o' => {
                    let Some(name) = args.get(i) else {
                        return usage_error(&sh, "-o: option requires an argument");
                    };
                    i += 1;
                    let name = String::from_utf8_lossy(name).into_owned();
                    if !sh.opts.set(&name, on) {
                        return usage_error(&sh, &format!("Illegal option -o {name}"));
                    }
                }
                _ => {
                    if !sh.opts.set_letter(c, on) {
                        return usage_error(&sh, &format!("Illegal option -{}", char::from(c)));
                    }
                }
            }
        }
    }
    let rest: Vec<Bytes> = args.get(i..).unwrap_or(&[]).to_vec();
    let source = if cflag {
        let Some((cmd, more)) = rest.split_first() else {
            return usage_error(&sh, "-c requires an argument");
        };
        if let Some((a0, params)) = more.split_first() {
            sh.arg0 = a0.clone();
            sh.params = params.to_vec();
        }
        cmd.clone()
    } else if !sflag && !rest.is_empty() {
        let script = rest[0].clone();
        sh.params = rest[1..].to_vec();
        match std::fs::read(io::path(&script)) {
            Ok(t) => {
                sh.arg0 = script;
                t
            }
            Err(e) => {
                sh.line = 0;
                sh.error(format!(
                    "cannot open {}: {}",
                    String::from_utf8_lossy(&script),
                    redirect::errmsg(&e, false)
                ));
                return 2;
            }
        }
    } else {
        sh.opts.set("stdin", true);
        sh.params = rest;
        // POSIX: commands from a terminal on stdin, with stderr a terminal too.
        {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
                sh.opts.set("interactive", true);
            }
        }
        if login {
            if let Err(flow) = run_profiles(&mut sh) {
                return finish(&mut sh, Err(flow));
            }
        }
        let r = sh.run_stdin();
        return finish(&mut sh, r);
    };
    if login {
        if let Err(flow) = run_profiles(&mut sh) {
            return finish(&mut sh, Err(flow));
        }
    }
    let r = sh.run_source(source, 1, false);
    finish(&mut sh, r)
}

/// A login shell (`-l`) first runs `/etc/profile` and `$HOME/.profile`, like dash.
fn run_profiles(sh: &mut Shell) -> Result<(), Flow> {
    let mut files = vec![b"/etc/profile".to_vec()];
    if let Some(home) = sh.get(b"HOME") {
        let mut p = home.to_vec();
        p.extend_from_slice(b"/.profile");
        files.push(p);
    }
    for f in files {
        if let Ok(text) = std::fs::read(io::path(&f)) {
            match sh.run_source(text, 1, false) {
                Ok(_) | Err(Flow::Break(_) | Flow::Continue(_) | Flow::Return(_)) => {}
                Err(exit) => return Err(exit),
            }
        }
    }
    Ok(())
}

fn main() {
    kiln_rt::init();
    let args: Vec<Bytes> = std::env::args_os().map(io::into_bytes).collect();
    let pid = shell_pid();
    let status = if args
        .get(1)
        .is_some_and(|a| a == subshell::SUBSHELL_ARG.as_bytes())
    {
        run_child(pid)
    } else {
        run_main(args, pid)
    };
    std::process::exit(status & 0xff);
}
