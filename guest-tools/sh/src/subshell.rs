//! Child shells. WASI has no fork: whatever POSIX runs in a subshell (`( )`, command
//! substitutions, pipeline stages that are not a plain external command, background jobs)
//! runs in a new instance of this shell, started as `kiln:sh --kiln-subshell`. The parent's
//! whole state and the tree to run travel over a pipe that the child sees as fd
//! [`SHELL_FD_MIN`] (10 natively, 11 on WASI: see there for the fds below it).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::ast::{AndOr, Bytes, Command, List};
use crate::io;
use crate::redirect::{high, SHELL_FD_MIN};
use crate::shell::{Opts, Shell, Var};

/// The argument that makes a shell a child shell.
pub const SUBSHELL_ARG: &str = "--kiln-subshell";

/// What a child shell runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChildJob {
    List(List),
    Command(Command),
    AndOr(AndOr),
    /// Writes the bytes to fd 1 (a large here-document).
    Write(Bytes),
}

/// The parent's state, as the child starts with it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildState {
    vars: Vec<(Bytes, Var)>,
    funcs: Vec<(Bytes, Rc<Command>)>,
    aliases: Vec<(Bytes, Bytes)>,
    params: Vec<Bytes>,
    arg0: Bytes,
    opts: Opts,
    status: i32,
    last_bg: Option<u32>,
    pid: u32,
    traps: BTreeMap<i32, Bytes>,
    line: u32,
    user_fds: [bool; 10],
    /// Run as a tested command (`if (false; echo x); then`): `set -e` does not apply.
    tested: bool,
    /// Enclosing loops: `break`/`continue` in a subshell end it.
    loop_depth: u32,
    pub job: ChildJob,
}

impl Shell {
    fn child_state(&self, job: ChildJob, tested: bool) -> ChildState {
        ChildState {
            vars: self
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            funcs: self
                .funcs
                .iter()
                .map(|(k, v)| (k.clone(), Rc::clone(v)))
                .collect(),
            aliases: self
                .aliases
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            params: self.params.clone(),
            arg0: self.arg0.clone(),
            opts: self.opts.clone(),
            status: self.status,
            last_bg: self.last_bg,
            pid: self.pid,
            traps: self.traps.clone(),
            line: self.line,
            user_fds: self.user_fds,
            tested,
            loop_depth: self.loop_depth,
            job,
        }
    }

    /// Starts a child shell running `job` with the script's fds as they are now.
    pub fn spawn_child(&mut self, job: ChildJob) -> std::io::Result<u32> {
        self.spawn_child_tested(job, false)
    }

    pub fn spawn_child_tested(&mut self, job: ChildJob, tested: bool) -> std::io::Result<u32> {
        let state = self.child_state(job, tested);
        let data = postcard::to_stdvec(&state).map_err(std::io::Error::other)?;
        let (r, w) = kiln_rt::pipe()?;
        let r = high(r)?;
        let w = high(w)?;
        let mut fds = self.fd_table();
        fds.push(r);
        let argv = [
            io::os_string(self.arg0.clone()),
            OsString::from(SUBSHELL_ARG),
        ];
        let env: Vec<OsString> = self.environ().into_iter().map(io::os_string).collect();
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let spawned = kiln_rt::spawn(&kiln_rt::Spawn {
            path: std::path::Path::new("kiln:sh"),
            argv: &argv,
            env: &env,
            cwd: &cwd,
            fds: &fds,
        });
        let _ = kiln_rt::close(r);
        let result = match spawned {
            Ok(pid) => {
                let _ = io::write_fd(w, &data);
                Ok(pid)
            }
            Err(e) => Err(e),
        };
        let _ = kiln_rt::close(w);
        result
    }
}

/// In a child shell: reads the state from fd 10 and builds the shell.
pub fn receive(pid_fallback: u32) -> Option<(Shell, ChildJob, bool)> {
    let data = io::read_to_end(SHELL_FD_MIN).ok()?;
    let _ = kiln_rt::close(SHELL_FD_MIN);
    let st: ChildState = postcard::from_bytes(&data).ok()?;
    let mut sh = Shell::new(pid_fallback);
    sh.vars = st.vars.into_iter().collect();
    sh.funcs = st.funcs.into_iter().collect();
    sh.aliases = st.aliases.into_iter().collect();
    sh.params = st.params;
    sh.arg0 = st.arg0;
    sh.opts = st.opts;
    sh.status = st.status;
    sh.last_bg = st.last_bg;
    sh.pid = st.pid;
    // A subshell keeps ignored signals ignored; other traps are reset.
    sh.traps = st.traps.into_iter().filter(|(_, a)| a.is_empty()).collect();
    sh.line = st.line;
    sh.user_fds = st.user_fds;
    sh.subshell = true;
    sh.loop_depth = st.loop_depth;
    Some((sh, st.job, st.tested))
}
