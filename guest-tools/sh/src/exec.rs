//! The executor: lists, and-or lists, pipelines, commands; `set -e` exactly like dash's
//! `evaltree` (only simple commands, pipelines and subshells that are not "tested" exit).

use std::ffi::OsString;
use std::rc::Rc;

use crate::ast::*;
use crate::builtins;
use crate::io;
use crate::parse::Parser;
use crate::redirect::{errmsg, Saved};
use crate::shell::{Flow, Job, Res, Shell};
use crate::subshell::ChildJob;

/// A started command: a process to wait for, or a status already known.
enum Started {
    Pid(u32),
    Done(i32),
}

/// Where an external command was found.
enum Found {
    Path(Bytes),
    Missing,
    Denied,
}

pub const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_executable_file(path: &[u8]) -> Option<bool> {
    let st = kiln_rt::stat(io::path(path), true).ok()?;
    Some(st.is_file() && st.mode & 0o111 != 0)
}

/// Whether the file is something the host can start itself (a `#!` script, an ELF or a
/// wasm module); anything else is a script for this shell.
fn has_exec_magic(path: &[u8]) -> bool {
    // Under kiln the host runs a file without magic as a script itself (guest-tools/ABI.md),
    // and rootfs shims are empty files that only the host knows how to run.
    if cfg!(target_os = "wasi") {
        return true;
    }
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(io::path(path)) else {
        return true;
    };
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = &head[..n];
    head.starts_with(b"#!") || head == b"\x7fELF" || head == b"\0asm"
}

fn word_is_pure(w: &Word) -> bool {
    w.parts.iter().all(part_is_pure)
}

/// Whether expanding the part has no side effect on the shell and cannot fail.
fn part_is_pure(p: &WordPart) -> bool {
    match p {
        WordPart::Lit(_) | WordPart::Quoted(_) | WordPart::CmdSub(_) => true,
        WordPart::DQuoted(parts) => parts.iter().all(part_is_pure),
        WordPart::Param(pe) => match &pe.op {
            ParamOp::Plain | ParamOp::Length => true,
            ParamOp::Default(_, w)
            | ParamOp::Alt(_, w)
            | ParamOp::TrimPrefix(_, w)
            | ParamOp::TrimSuffix(_, w) => word_is_pure(w),
            ParamOp::Assign(..) | ParamOp::Error(..) => false,
        },
        WordPart::Arith(_) => false,
    }
}

impl Shell {
    // ---- running source text ----

    /// Parses and runs `src` one complete command at a time (scripts, `eval`, `.`).
    pub fn run_source(&mut self, src: Vec<u8>, first_line: u32, tested: bool) -> Res<i32> {
        self.run_parser(Parser::new(src, first_line), tested)
    }

    /// Runs commands read from stdin, each as soon as it is complete: a terminal works, and a
    /// command that reads stdin gets what follows it (POSIX: the shell reads no further ahead
    /// than the lines of the current command).
    pub fn run_stdin(&mut self) -> Res<i32> {
        self.run_parser(Parser::stdin(), false)
    }

    fn run_parser(&mut self, mut parser: Parser, tested: bool) -> Res<i32> {
        let mut status = 0;
        loop {
            parser.set_verbose(self.opt("verbose"));
            let interactive = self.opt("interactive");
            parser.set_prompts(interactive.then(|| {
                let ps = |name: &[u8]| self.get(name).map(<[u8]>::to_vec).unwrap_or_default();
                (ps(b"PS1"), ps(b"PS2"))
            }));
            match parser.next_command(&self.aliases) {
                Ok(Some(list)) => {
                    if !self.opt("noexec") {
                        status = self.exec_list(&list, tested)?;
                    }
                }
                Ok(None) => return Ok(status),
                Err(e) => {
                    self.line = e.line;
                    self.error(format!("Syntax error: {}", e.msg));
                    self.status = 2;
                    status = 2;
                    if !interactive {
                        return Err(Flow::Exit(2));
                    }
                    parser.recover();
                }
            }
        }
    }

    /// Runs the EXIT trap (once) and returns the final status.
    pub fn exit_status(&mut self, status: i32) -> i32 {
        let Some(action) = self.traps.get(&0).cloned() else {
            return status;
        };
        if self.in_exit_trap {
            return status;
        }
        self.in_exit_trap = true;
        self.traps.remove(&0);
        self.status = status;
        match self.run_source(action, self.line, false) {
            Err(Flow::Exit(s)) => s,
            _ => status,
        }
    }

    /// Runs the traps of the signals this shell sent itself.
    pub fn run_pending_traps(&mut self) -> Res<()> {
        while !self.pending_signals.is_empty() {
            let sig = self.pending_signals.remove(0);
            match self.traps.get(&sig).cloned() {
                Some(action) if action.is_empty() => {}
                Some(action) => {
                    let saved = self.status;
                    match self.run_source(action, self.line, false) {
                        Ok(_) => {}
                        Err(Flow::Exit(s)) => return Err(Flow::Exit(s)),
                        Err(_) => {}
                    }
                    self.status = saved;
                }
                None => {
                    // SIGCHLD, SIGURG, SIGWINCH and SIGCONT are ignored by default.
                    if !matches!(sig, 17 | 18 | 23 | 28) {
                        return Err(Flow::Exit(128 + sig));
                    }
                }
            }
        }
        Ok(())
    }

    // ---- lists ----

    pub fn exec_list(&mut self, list: &List, tested: bool) -> Res<i32> {
        let mut status = self.status;
        for item in &list.items {
            status = if item.background {
                self.exec_background(&item.and_or)?
            } else {
                self.exec_and_or(&item.and_or, tested)?
            };
            self.status = status;
            self.reap_orphans();
            self.run_pending_traps()?;
        }
        Ok(status)
    }

    pub fn exec_and_or(&mut self, ao: &AndOr, tested: bool) -> Res<i32> {
        let mut status = self.exec_pipeline(&ao.first, tested || !ao.rest.is_empty())?;
        self.status = status;
        for (i, (op, p)) in ao.rest.iter().enumerate() {
            let run = match op {
                AndOrOp::And => status == 0,
                AndOrOp::Or => status != 0,
            };
            if run {
                let last = i + 1 == ao.rest.len();
                status = self.exec_pipeline(p, tested || !last)?;
                self.status = status;
            }
        }
        Ok(status)
    }

    fn exec_pipeline(&mut self, p: &Pipeline, tested: bool) -> Res<i32> {
        let tested = tested || p.bang;
        let (status, checked) = match p.cmds.as_slice() {
            [cmd] => {
                let s = self.exec_command(cmd, tested)?;
                let checked = match cmd {
                    Command::Simple(_) => true,
                    Command::Compound { body, .. } => matches!(**body, Compound::Subshell(_)),
                    Command::FuncDef { .. } => false,
                };
                (s, checked)
            }
            cmds => (self.exec_multi_pipeline(cmds)?, true),
        };
        let status = if p.bang {
            i32::from(status == 0)
        } else {
            status
        };
        if checked && !tested && status != 0 && self.opt("errexit") {
            return Err(Flow::Exit(status));
        }
        Ok(status)
    }

    fn exec_multi_pipeline(&mut self, cmds: &[Command]) -> Res<i32> {
        let mut started = Vec::with_capacity(cmds.len());
        let mut prev_read: Option<u32> = None;
        for (i, cmd) in cmds.iter().enumerate() {
            let last = i + 1 == cmds.len();
            let next = if last {
                None
            } else {
                match self.pipe() {
                    Ok(p) => Some(p),
                    Err(e) => {
                        self.error(format!("Pipe call failed: {}", errmsg(&e, false)));
                        break;
                    }
                }
            };
            let mut saved = Saved::default();
            if let Some(r) = prev_read.take() {
                let _ = self.install_fd(r, 0, &mut saved);
            }
            if let Some((_, w)) = next {
                let _ = self.install_fd(w, 1, &mut saved);
            }
            let s = self.start_stage(cmd);
            self.restore(saved);
            started.push(s);
            prev_read = next.map(|(r, _)| r);
        }
        if let Some(r) = prev_read {
            let _ = kiln_rt::close(r);
        }
        let pipefail = self.opt("pipefail");
        let mut status = 0;
        for s in started {
            let st = match s {
                Started::Pid(pid) => self.wait_pid(pid),
                Started::Done(st) => st,
            };
            if !pipefail || st != 0 {
                status = st;
            }
        }
        Ok(status)
    }

    pub fn wait_pid(&mut self, pid: u32) -> i32 {
        match kiln_rt::wait(pid, false) {
            Ok(Some(s)) => s,
            Ok(None) => 0,
            Err(_) => 127,
        }
    }

    fn reap_orphans(&mut self) {
        self.orphans
            .retain(|&pid| matches!(kiln_rt::wait(pid, true), Ok(None)));
    }

    /// Starts one stage of a pipeline with fds 0 and 1 already in place.
    fn start_stage(&mut self, cmd: &Command) -> Started {
        if let Command::Simple(sc) = cmd {
            if self.external_fast_path(sc) {
                return self.start_simple_external(sc);
            }
        }
        match self.spawn_child(ChildJob::Command(cmd.clone())) {
            Ok(pid) => Started::Pid(pid),
            Err(e) => {
                self.error(format!("can't start subshell: {}", errmsg(&e, false)));
                Started::Done(2)
            }
        }
    }

    /// A simple command that runs an external program and whose expansion cannot change the
    /// shell: the parent starts it directly (no child shell in between).
    fn external_fast_path(&self, sc: &SimpleCmd) -> bool {
        let Some(name) = sc.words.first().and_then(Word::as_literal) else {
            return false;
        };
        if builtins::lookup(name).is_some() || self.funcs.contains_key(name) {
            return false;
        }
        sc.words.iter().all(word_is_pure)
            && sc.assigns.iter().all(|a| word_is_pure(&a.value))
            && sc.redirs.iter().all(|r| match &r.target {
                RedirTarget::Word(w) => word_is_pure(w),
                RedirTarget::HereDoc(_) => true,
            })
    }

    fn start_simple_external(&mut self, sc: &SimpleCmd) -> Started {
        let r = (|| -> Res<Started> {
            self.line = sc.line;
            let argv = self.expand_words(&sc.words)?;
            let env = self.expand_prefix_assigns(&sc.assigns)?;
            self.xtrace(&env, &argv);
            let saved = match self.redirect(&sc.redirs)? {
                Ok(s) => s,
                Err(s) => {
                    self.restore(s);
                    return Ok(Started::Done(2));
                }
            };
            let started = self.spawn_external(&argv, &env);
            self.restore(saved);
            Ok(started)
        })();
        r.unwrap_or_else(|flow| match flow {
            Flow::Exit(s) | Flow::Return(s) => Started::Done(s),
            Flow::Break(_) | Flow::Continue(_) => Started::Done(0),
        })
    }

    fn exec_background(&mut self, ao: &AndOr) -> Res<i32> {
        let mut saved = Saved::default();
        if let Ok(f) = std::fs::File::open("/dev/null") {
            use std::os::fd::IntoRawFd;
            if let Some(fd) = u32::try_from(f.into_raw_fd())
                .ok()
                .and_then(|fd| crate::redirect::high(fd).ok())
            {
                let _ = self.install_fd(fd, 0, &mut saved);
            }
        }
        let single = match (ao.rest.is_empty(), ao.first.cmds.as_slice()) {
            (true, [Command::Simple(sc)]) if !ao.first.bang && self.external_fast_path(sc) => {
                Some(sc)
            }
            _ => None,
        };
        let started = match single {
            Some(sc) => self.start_simple_external(sc),
            None => match self.spawn_child(ChildJob::AndOr(ao.clone())) {
                Ok(pid) => Started::Pid(pid),
                Err(e) => {
                    self.error(format!("can't start job: {}", errmsg(&e, false)));
                    Started::Done(2)
                }
            },
        };
        self.restore(saved);
        if let Started::Pid(pid) = started {
            self.last_bg = Some(pid);
            self.jobs.push(Job {
                pids: vec![pid],
                done: vec![None],
            });
        }
        Ok(0)
    }

    // ---- commands ----

    pub fn exec_command(&mut self, cmd: &Command, tested: bool) -> Res<i32> {
        match cmd {
            Command::Simple(sc) => self.exec_simple(sc, tested),
            Command::Compound { body, redirs, line } => {
                self.line = *line;
                let saved = if redirs.is_empty() {
                    None
                } else {
                    match self.redirect(redirs)? {
                        Ok(s) => Some(s),
                        Err(s) => {
                            self.restore(s);
                            return Ok(2);
                        }
                    }
                };
                let r = self.exec_compound(body, tested);
                if let Some(s) = saved {
                    self.restore(s);
                }
                r
            }
            Command::FuncDef { name, body, .. } => {
                self.funcs.insert(name.clone(), Rc::clone(body));
                Ok(0)
            }
        }
    }

    fn exec_compound(&mut self, c: &Compound, tested: bool) -> Res<i32> {
        match c {
            Compound::Brace(list) => self.exec_list(list, tested),
            Compound::Subshell(list) => {
                match self.spawn_child_tested(ChildJob::List(list.clone()), tested) {
                    Ok(pid) => Ok(self.wait_pid(pid)),
                    Err(e) => {
                        self.error(format!("can't start subshell: {}", errmsg(&e, false)));
                        Ok(2)
                    }
                }
            }
            Compound::If {
                branches,
                otherwise,
            } => {
                for (cond, body) in branches {
                    if self.exec_list(cond, true)? == 0 {
                        return self.exec_list(body, tested);
                    }
                }
                match otherwise {
                    Some(body) => self.exec_list(body, tested),
                    None => Ok(0),
                }
            }
            Compound::While { until, cond, body } => {
                self.loop_depth += 1;
                let r = self.exec_while(*until, cond, body, tested);
                self.loop_depth -= 1;
                r
            }
            Compound::For { var, words, body } => {
                let items = match words {
                    Some(w) => self.expand_words(w)?,
                    None => self.params.clone(),
                };
                self.loop_depth += 1;
                let r = self.exec_for(var, items, body, tested);
                self.loop_depth -= 1;
                r
            }
            Compound::Case { word, arms } => {
                let subject = self.expand_string(word)?;
                for arm in arms {
                    for pat in &arm.patterns {
                        let p = self.expand_pattern(pat)?;
                        if crate::pattern::matches(&p, &subject) {
                            if arm.body.items.is_empty() {
                                return Ok(0);
                            }
                            return self.exec_list(&arm.body, tested);
                        }
                    }
                }
                Ok(0)
            }
        }
    }

    fn exec_while(&mut self, until: bool, cond: &List, body: &List, tested: bool) -> Res<i32> {
        let mut status = 0;
        loop {
            let c = match self.exec_list(cond, true) {
                Ok(s) => s,
                Err(Flow::Break(n)) => {
                    if n > 1 {
                        return Err(Flow::Break(n - 1));
                    }
                    break;
                }
                Err(Flow::Continue(n)) => {
                    if n > 1 {
                        return Err(Flow::Continue(n - 1));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if (c == 0) == until {
                break;
            }
            match self.exec_list(body, tested) {
                Ok(s) => status = s,
                Err(Flow::Break(n)) => {
                    if n > 1 {
                        return Err(Flow::Break(n - 1));
                    }
                    status = 0;
                    break;
                }
                Err(Flow::Continue(n)) => {
                    if n > 1 {
                        return Err(Flow::Continue(n - 1));
                    }
                    status = 0;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(status)
    }

    fn exec_for(&mut self, var: &[u8], items: Vec<Bytes>, body: &List, tested: bool) -> Res<i32> {
        let mut status = 0;
        for it in items {
            self.set_or_exit(var, it)?;
            match self.exec_list(body, tested) {
                Ok(s) => status = s,
                Err(Flow::Break(n)) => {
                    if n > 1 {
                        return Err(Flow::Break(n - 1));
                    }
                    status = 0;
                    break;
                }
                Err(Flow::Continue(n)) => {
                    if n > 1 {
                        return Err(Flow::Continue(n - 1));
                    }
                    status = 0;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(status)
    }

    /// `set -x` output: PS4, then the assignments and words.
    pub fn xtrace(&mut self, assigns: &[(Bytes, Bytes)], argv: &[Bytes]) {
        if !self.opt("xtrace") {
            return;
        }
        let mut line = self.ps4();
        let mut first = true;
        for (k, v) in assigns {
            if !first {
                line.push(b' ');
            }
            first = false;
            line.extend_from_slice(k);
            line.push(b'=');
            line.extend_from_slice(v);
        }
        for a in argv {
            if !first {
                line.push(b' ');
            }
            first = false;
            line.extend_from_slice(a);
        }
        line.push(b'\n');
        io::write_all(2, &line);
    }

    fn ps4(&mut self) -> Bytes {
        let Some(ps4) = self.get(b"PS4").map(<[u8]>::to_vec) else {
            return Vec::new();
        };
        let mut text = b"\"".to_vec();
        for &c in &ps4 {
            if c == b'"' || c == b'`' {
                text.push(b'\\');
            }
            text.push(c);
        }
        text.push(b'"');
        let mut p = Parser::new(text, self.line);
        let status = self.status;
        let line = self.line;
        let xtrace = self.opt("xtrace");
        self.opts.set("xtrace", false);
        let word = match p.next_command(&std::collections::HashMap::new()) {
            Ok(Some(list)) => list
                .items
                .first()
                .and_then(|i| i.and_or.first.cmds.first().cloned()),
            _ => None,
        };
        let out = match word {
            Some(Command::Simple(sc)) => sc
                .words
                .first()
                .and_then(|w| self.expand_string(w).ok())
                .unwrap_or_else(|| ps4.clone()),
            _ => ps4.clone(),
        };
        self.opts.set("xtrace", xtrace);
        self.status = status;
        self.line = line;
        out
    }

    fn exec_simple(&mut self, sc: &SimpleCmd, tested: bool) -> Res<i32> {
        self.line = sc.line;
        self.cmdsub_status = None;
        let decl = matches!(
            sc.words.first().and_then(Word::as_literal),
            Some(b"export" | b"readonly" | b"local")
        );
        let argv = if decl {
            self.expand_declaration(&sc.words)?
        } else {
            self.expand_words(&sc.words)?
        };
        let Some(name) = argv.first().cloned() else {
            return self.exec_assignments_only(sc);
        };
        let assigns = self.expand_prefix_assigns(&sc.assigns)?;
        self.xtrace(&assigns, &argv);
        self.run_command(&name, &argv, &assigns, &sc.redirs, tested, false)
    }

    /// Expands the assignments before a command name, each one seeing those before it
    /// (`A=1 B=$A cmd`), as in dash.
    fn expand_prefix_assigns(&mut self, list: &[Assign]) -> Res<Vec<(Bytes, Bytes)>> {
        let mut assigns = Vec::with_capacity(list.len());
        let mut shadowed = Vec::new();
        let mut result = Ok(());
        for (i, a) in list.iter().enumerate() {
            match self.expand_assign(&a.value) {
                Ok(v) => {
                    if i + 1 < list.len() {
                        shadowed.push((a.name.clone(), self.vars.get(&a.name).cloned()));
                        self.vars.entry(a.name.clone()).or_default().value = Some(v.clone());
                    }
                    assigns.push((a.name.clone(), v));
                }
                Err(flow) => {
                    result = Err(flow);
                    break;
                }
            }
        }
        for (name, old) in shadowed.into_iter().rev() {
            match old {
                Some(v) => {
                    self.vars.insert(name, v);
                }
                None => {
                    self.vars.remove(&name);
                }
            }
        }
        result.map(|()| assigns)
    }

    /// `export`/`readonly`/`local` arguments: `name=value` words expand like assignments (no
    /// splitting, no globbing), as in dash 0.5.11 and later.
    fn expand_declaration(&mut self, words: &[Word]) -> Res<Vec<Bytes>> {
        let mut argv = Vec::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            match crate::parse::as_assignment(w).filter(|_| i > 0) {
                Some(a) => {
                    let mut arg = a.name;
                    arg.push(b'=');
                    arg.extend(self.expand_assign(&a.value)?);
                    argv.push(arg);
                }
                None => argv.extend(self.expand_words(std::slice::from_ref(w))?),
            }
        }
        Ok(argv)
    }

    fn exec_assignments_only(&mut self, sc: &SimpleCmd) -> Res<i32> {
        let mut assigns = Vec::with_capacity(sc.assigns.len());
        let saved = match self.redirect(&sc.redirs)? {
            Ok(s) => s,
            Err(s) => {
                self.restore(s);
                return Ok(2);
            }
        };
        let r = (|| -> Res<()> {
            for a in &sc.assigns {
                let v = self.expand_assign(&a.value)?;
                assigns.push((a.name.clone(), v));
            }
            Ok(())
        })();
        self.restore(saved);
        r?;
        for (k, v) in &assigns {
            self.set_or_exit(k, v.clone())?;
        }
        self.xtrace(&assigns, &[]);
        Ok(self.cmdsub_status.unwrap_or(0))
    }

    /// Runs a command by name: special builtin, function, builtin or external program.
    pub fn run_command(
        &mut self,
        name: &[u8],
        argv: &[Bytes],
        assigns: &[(Bytes, Bytes)],
        redirs: &[Redir],
        tested: bool,
        no_functions: bool,
    ) -> Res<i32> {
        let builtin = if name.contains(&b'/') {
            None
        } else {
            builtins::lookup(name)
        };
        if let Some(b) = builtin.filter(|b| b.special) {
            if name == b"exec" {
                return self.exec_exec(argv, assigns, redirs);
            }
            for (k, v) in assigns {
                self.set_or_exit(k, v.clone())?;
            }
            let saved = match self.redirect(redirs)? {
                Ok(s) => s,
                Err(s) => {
                    self.restore(s);
                    return Err(Flow::Exit(2));
                }
            };
            let r = builtins::run(self, b, argv, tested);
            self.restore(saved);
            return r;
        }
        if !no_functions && !name.contains(&b'/') {
            if let Some(body) = self.funcs.get(name).cloned() {
                return self.with_temp_vars(assigns, |sh| {
                    let saved = match sh.redirect(redirs)? {
                        Ok(s) => s,
                        Err(s) => {
                            sh.restore(s);
                            return Ok(2);
                        }
                    };
                    let r = sh.call_function(&body, argv, tested);
                    sh.restore(saved);
                    r
                });
            }
        }
        if let Some(b) = builtin {
            return self.with_temp_vars(assigns, |sh| {
                let saved = match sh.redirect(redirs)? {
                    Ok(s) => s,
                    Err(s) => {
                        sh.restore(s);
                        return Ok(2);
                    }
                };
                let r = builtins::run(sh, b, argv, tested);
                sh.restore(saved);
                r
            });
        }
        let saved = match self.redirect(redirs)? {
            Ok(s) => s,
            Err(s) => {
                self.restore(s);
                return Ok(2);
            }
        };
        let started = self.spawn_external(argv, assigns);
        self.restore(saved);
        Ok(match started {
            Started::Pid(pid) => self.wait_pid(pid),
            Started::Done(s) => s,
        })
    }

    /// `exec`: redirections stay; with a command, run it and exit with its status.
    fn exec_exec(
        &mut self,
        argv: &[Bytes],
        assigns: &[(Bytes, Bytes)],
        redirs: &[Redir],
    ) -> Res<i32> {
        match self.redirect(redirs)? {
            Ok(s) => self.keep(s),
            Err(s) => {
                self.keep(s);
                return Err(Flow::Exit(2));
            }
        }
        let args = argv.get(1..).unwrap_or(&[]);
        if args.is_empty() {
            for (k, v) in assigns {
                self.set_or_exit(k, v.clone())?;
            }
            return Ok(0);
        }
        let status = match self.spawn_external(args, assigns) {
            Started::Pid(pid) => self.wait_pid(pid),
            Started::Done(s) => s,
        };
        Err(Flow::Exit(status))
    }

    fn with_temp_vars(
        &mut self,
        assigns: &[(Bytes, Bytes)],
        f: impl FnOnce(&mut Shell) -> Res<i32>,
    ) -> Res<i32> {
        let mut saved = Vec::with_capacity(assigns.len());
        for (k, v) in assigns {
            saved.push((k.clone(), self.vars.get(k).cloned()));
            self.set_or_exit(k, v.clone())?;
            if let Some(var) = self.vars.get_mut(k) {
                var.exported = true;
            }
        }
        let r = f(self);
        for (k, old) in saved.into_iter().rev() {
            match old {
                Some(v) => {
                    self.vars.insert(k, v);
                }
                None => {
                    self.vars.remove(&k);
                }
            }
        }
        r
    }

    pub fn call_function(&mut self, body: &Command, argv: &[Bytes], tested: bool) -> Res<i32> {
        let params = std::mem::replace(&mut self.params, argv.get(1..).unwrap_or(&[]).to_vec());
        let loop_depth = std::mem::replace(&mut self.loop_depth, 0);
        let getopts = (std::mem::replace(&mut self.optind, 1), self.optoff.take());
        self.func_depth += 1;
        self.locals.push(Vec::new());
        let r = self.exec_command(body, tested);
        if let Some(frame) = self.locals.pop() {
            for (name, old) in frame.into_iter().rev() {
                match old {
                    Some(v) => {
                        self.vars.insert(name, v);
                    }
                    None => {
                        self.vars.remove(&name);
                    }
                }
            }
        }
        self.func_depth -= 1;
        self.loop_depth = loop_depth;
        (self.optind, self.optoff) = getopts;
        self.params = params;
        match r {
            Err(Flow::Return(s)) => Ok(s),
            other => other,
        }
    }

    // ---- external programs ----

    /// Searches `path` (default: `$PATH`) for `name`.
    fn find_command(&self, name: &[u8], path: Option<&[u8]>) -> Found {
        if name.contains(&b'/') {
            return match is_executable_file(name) {
                Some(true) => Found::Path(name.to_vec()),
                Some(false) => Found::Denied,
                None => Found::Missing,
            };
        }
        let path = path
            .or_else(|| self.get(b"PATH"))
            .unwrap_or(DEFAULT_PATH)
            .to_vec();
        let mut denied = false;
        for dir in path.split(|&c| c == b':') {
            let mut cand = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            cand.push(b'/');
            cand.extend_from_slice(name);
            match is_executable_file(&cand) {
                Some(true) => return Found::Path(cand),
                Some(false) => {
                    denied |= kiln_rt::stat(io::path(&cand), true).is_ok_and(|s| s.is_file());
                }
                _ => {}
            }
        }
        if denied {
            Found::Denied
        } else {
            Found::Missing
        }
    }

    /// The full path `command -v` and `type` report, for external commands.
    pub fn which(&self, name: &[u8]) -> Option<Bytes> {
        match self.find_command(name, None) {
            Found::Path(p) => Some(p),
            _ => None,
        }
    }

    fn spawn_external(&mut self, argv: &[Bytes], assigns: &[(Bytes, Bytes)]) -> Started {
        let Some(name) = argv.first() else {
            return Started::Done(0);
        };
        let path_var = assigns
            .iter()
            .rev()
            .find(|(k, _)| k == b"PATH")
            .map(|(_, v)| v.as_slice());
        let path = match self.find_command(name, path_var) {
            Found::Path(p) => p,
            Found::Missing => {
                let mut m = name.clone();
                m.extend_from_slice(b": not found");
                self.error(m);
                return Started::Done(127);
            }
            Found::Denied => {
                let mut m = name.clone();
                m.extend_from_slice(b": Permission denied");
                self.error(m);
                return Started::Done(126);
            }
        };
        let mut env_vars = self.vars.clone();
        for (k, v) in assigns {
            let var = env_vars.entry(k.clone()).or_default();
            var.value = Some(v.clone());
            var.exported = true;
        }
        let mut env: Vec<OsString> = env_vars
            .iter()
            .filter(|(_, v)| v.exported)
            .filter_map(|(k, v)| {
                v.value.as_ref().map(|val| {
                    let mut e = k.clone();
                    e.push(b'=');
                    e.extend_from_slice(val);
                    io::os_string(e)
                })
            })
            .collect();
        env.sort();
        let (prog, args): (Bytes, Vec<OsString>) = if has_exec_magic(&path) {
            (path, argv.iter().cloned().map(io::os_string).collect())
        } else {
            let mut a = vec![io::os_string(name.clone()), io::os_string(path)];
            a.extend(argv.iter().skip(1).cloned().map(io::os_string));
            (b"kiln:sh".to_vec(), a)
        };
        let fds: Vec<u32> = self.child_fds();
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        match kiln_rt::spawn(&kiln_rt::Spawn {
            path: io::path(&prog),
            argv: &args,
            env: &env,
            cwd: &cwd,
            fds: &fds,
        }) {
            Ok(pid) => Started::Pid(pid),
            Err(e) => {
                let (msg, status) = match e.kind() {
                    std::io::ErrorKind::NotFound => ("not found".to_string(), 127),
                    _ => (errmsg(&e, false), 126),
                };
                let mut m = name.clone();
                m.extend_from_slice(b": ");
                m.extend_from_slice(msg.as_bytes());
                self.error(m);
                Started::Done(status)
            }
        }
    }

    /// The fd table of a child: the script's fds, nothing of the shell's own.
    pub fn child_fds(&self) -> Vec<u32> {
        let mut fds = self.fd_table();
        while fds.last() == Some(&kiln_rt::CLOSED) {
            fds.pop();
        }
        fds
    }

    // ---- command substitution ----

    pub fn command_substitution(&mut self, list: &Rc<List>) -> Res<Bytes> {
        let (r, w) = match self.pipe() {
            Ok(p) => p,
            Err(e) => {
                self.error(format!("Pipe call failed: {}", errmsg(&e, false)));
                return Err(Flow::Exit(2));
            }
        };
        let mut saved = Saved::default();
        let _ = self.install_fd(w, 1, &mut saved);
        let spawned = self.spawn_child(ChildJob::List((**list).clone()));
        self.restore(saved);
        let out = io::read_to_end(r).unwrap_or_default();
        let _ = kiln_rt::close(r);
        let status = match spawned {
            Ok(pid) => self.wait_pid(pid),
            Err(e) => {
                self.error(format!("can't start subshell: {}", errmsg(&e, false)));
                2
            }
        };
        self.cmdsub_status = Some(status);
        let mut out = out;
        // Shell strings cannot hold NUL: dash drops it.
        out.retain(|&c| c != 0);
        while out.last() == Some(&b'\n') {
            out.pop();
        }
        Ok(out)
    }
}
