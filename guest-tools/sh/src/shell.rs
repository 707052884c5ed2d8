//! The shell's state: variables, functions, options, positional parameters, traps, jobs.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::ast::{Bytes, Command};
use crate::io;

/// How control leaves the normal sequence of commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Break(u32),
    Continue(u32),
    Return(i32),
    /// Leave the shell (or the subshell) with this status.
    Exit(i32),
}

pub type Res<T> = Result<T, Flow>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Var {
    /// `None`: declared (exported or readonly) but unset.
    pub value: Option<Bytes>,
    pub exported: bool,
    pub readonly: bool,
}

/// The options of `set`, in dash's order (the order of `$-` and `set -o`).
pub const OPTIONS: &[(&str, Option<u8>)] = &[
    ("errexit", Some(b'e')),
    ("noglob", Some(b'f')),
    ("ignoreeof", Some(b'I')),
    ("interactive", Some(b'i')),
    ("monitor", Some(b'm')),
    ("noexec", Some(b'n')),
    ("stdin", Some(b's')),
    ("xtrace", Some(b'x')),
    ("verbose", Some(b'v')),
    ("vi", Some(b'V')),
    ("emacs", Some(b'E')),
    ("noclobber", Some(b'C')),
    ("allexport", Some(b'a')),
    ("notify", Some(b'b')),
    ("nounset", Some(b'u')),
    ("privileged", Some(b'p')),
    ("nolog", None),
    ("debug", None),
    // POSIX.1-2024: a pipeline's status is that of its last stage that failed.
    ("pipefail", None),
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opts {
    /// Indexed like [`OPTIONS`].
    pub on: Vec<bool>,
}

impl Opts {
    pub fn new() -> Opts {
        Opts {
            on: vec![false; OPTIONS.len()],
        }
    }

    fn index(name: &str) -> Option<usize> {
        OPTIONS.iter().position(|(n, _)| *n == name)
    }

    pub fn get(&self, name: &str) -> bool {
        Self::index(name)
            .and_then(|i| self.on.get(i).copied())
            .unwrap_or(false)
    }

    pub fn set(&mut self, name: &str, value: bool) -> bool {
        match Self::index(name) {
            Some(i) => {
                if let Some(slot) = self.on.get_mut(i) {
                    *slot = value;
                }
                true
            }
            None => false,
        }
    }

    pub fn set_letter(&mut self, letter: u8, value: bool) -> bool {
        match OPTIONS.iter().position(|(_, l)| *l == Some(letter)) {
            Some(i) => {
                if let Some(slot) = self.on.get_mut(i) {
                    *slot = value;
                }
                true
            }
            None => false,
        }
    }

    /// The value of `$-`: dash lists the letters from the end of its option table. Unlike
    /// dash it leaves out `s` (reading commands from stdin, which the shell sets itself), as
    /// the POSIX.1-2024 expectation of the conformance suite does (`sh-options` "$- with
    /// pipefail"); RUN lines are `sh -c`, where dash has no `s` either.
    pub fn letters(&self) -> Bytes {
        OPTIONS
            .iter()
            .zip(&self.on)
            .rev()
            .filter(|((name, _), _)| *name != "stdin")
            .filter_map(|((_, l), on)| if *on { *l } else { None })
            .collect()
    }
}

/// A background job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub pids: Vec<u32>,
    /// Statuses of the pids already reaped.
    pub done: Vec<Option<i32>>,
}

pub struct Shell {
    pub vars: HashMap<Bytes, Var>,
    /// One frame per function call with `local`s: the variables to restore.
    pub locals: Vec<Vec<(Bytes, Option<Var>)>>,
    pub funcs: HashMap<Bytes, Rc<Command>>,
    pub aliases: HashMap<Bytes, Bytes>,
    pub params: Vec<Bytes>,
    pub arg0: Bytes,
    pub opts: Opts,
    pub status: i32,
    pub last_bg: Option<u32>,
    pub pid: u32,
    /// Signal number (0 = EXIT) -> action (empty = ignore).
    pub traps: BTreeMap<i32, Bytes>,
    pub jobs: Vec<Job>,
    /// Line of the command being run, for messages.
    pub line: u32,
    pub loop_depth: u32,
    pub func_depth: u32,
    /// The fds 0..=9 the script can see (passed on to children).
    pub user_fds: [bool; 10],
    /// Signals sent to this shell itself (by `kill`), run at the next command boundary.
    pub pending_signals: Vec<i32>,
    /// Running the EXIT trap (an `exit` inside it must not run it again).
    pub in_exit_trap: bool,
    /// A child shell (subshell, pipeline stage, command substitution, background job).
    pub subshell: bool,
    /// Status of the last command substitution of the current command.
    pub cmdsub_status: Option<i32>,
    /// `getopts`' state: the argument after the one being scanned (1-based, like `OPTIND`)
    /// and the position inside the scanned one.
    pub optind: usize,
    pub optoff: Option<usize>,
    /// Nesting of `.` (for `return` outside functions).
    pub dot_depth: u32,
    /// The builtin being run is "tested" (`if eval false; then`): `set -e` does not apply.
    pub cur_tested: bool,
    /// `ulimit` values set by the script (not enforced: WASI has no resource limits).
    pub ulimits: std::collections::HashMap<u8, Bytes>,
    /// Children nobody waits for (here-document writers), reaped when they end.
    pub orphans: Vec<u32>,
}

impl Shell {
    pub fn new(pid: u32) -> Shell {
        Shell {
            vars: HashMap::new(),
            locals: Vec::new(),
            funcs: HashMap::new(),
            aliases: HashMap::new(),
            params: Vec::new(),
            arg0: b"sh".to_vec(),
            opts: Opts::new(),
            status: 0,
            last_bg: None,
            pid,
            traps: BTreeMap::new(),
            jobs: Vec::new(),
            line: 1,
            loop_depth: 0,
            func_depth: 0,
            user_fds: [
                true, true, true, false, false, false, false, false, false, false,
            ],
            pending_signals: Vec::new(),
            in_exit_trap: false,
            subshell: false,
            cmdsub_status: None,
            optind: 1,
            optoff: None,
            dot_depth: 0,
            cur_tested: false,
            orphans: Vec::new(),
            ulimits: HashMap::new(),
        }
    }

    pub fn opt(&self, name: &str) -> bool {
        self.opts.get(name)
    }

    /// Prints `sh: LINE: msg` to stderr, like dash.
    pub fn error(&self, msg: impl AsRef<[u8]>) {
        let mut out = self.arg0.clone();
        out.extend_from_slice(format!(": {}: ", self.line).as_bytes());
        out.extend_from_slice(msg.as_ref());
        out.push(b'\n');
        io::write_all(2, &out);
    }

    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.vars.get(name).and_then(|v| v.value.as_deref())
    }

    pub fn get_str(&self, name: &[u8]) -> Bytes {
        self.get(name).map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// Sets a variable; `Err` holds dash's message when it is readonly.
    pub fn try_set(&mut self, name: &[u8], value: Bytes) -> Result<(), String> {
        let allexport = self.opt("allexport");
        if name == b"OPTIND" {
            let n = std::str::from_utf8(&value)
                .ok()
                .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok());
            match n {
                Some(n) => {
                    self.optind = n;
                    self.optoff = None;
                }
                None if value.is_empty() => {
                    self.optind = 0;
                    self.optoff = None;
                }
                None => {
                    return Err(format!(
                        "Illegal number: {}",
                        String::from_utf8_lossy(&value)
                    ));
                }
            }
        }
        let v = self.vars.entry(name.to_vec()).or_default();
        if v.readonly {
            return Err(format!("{}: is read only", String::from_utf8_lossy(name)));
        }
        v.value = Some(value);
        if allexport {
            v.exported = true;
        }
        Ok(())
    }

    /// Sets a variable; fails (after printing dash's message) when it is readonly.
    pub fn set(&mut self, name: &[u8], value: Bytes) -> Result<(), ()> {
        self.try_set(name, value).map_err(|msg| self.error(msg))
    }

    /// `set`, exiting (status 2) on a readonly variable as dash does for assignments.
    pub fn set_or_exit(&mut self, name: &[u8], value: Bytes) -> Res<()> {
        self.set(name, value).map_err(|()| Flow::Exit(2))
    }

    pub fn unset(&mut self, name: &[u8]) -> Result<(), ()> {
        if let Some(v) = self.vars.get(name) {
            if v.readonly {
                self.error(format!("{}: is read only", String::from_utf8_lossy(name)));
                return Err(());
            }
        }
        self.vars.remove(name);
        Ok(())
    }

    /// `K=V` entries of the exported variables.
    pub fn environ(&self) -> Vec<Bytes> {
        let mut env: Vec<Bytes> = self
            .vars
            .iter()
            .filter(|(_, v)| v.exported)
            .filter_map(|(k, v)| {
                v.value.as_ref().map(|val| {
                    let mut e = k.clone();
                    e.push(b'=');
                    e.extend_from_slice(val);
                    e
                })
            })
            .collect();
        env.sort();
        env
    }

    /// IFS, defaulting to space, tab, newline when unset.
    pub fn ifs(&self) -> Bytes {
        match self
            .vars
            .get(b"IFS".as_slice())
            .and_then(|v| v.value.clone())
        {
            Some(v) => v,
            None => b" \t\n".to_vec(),
        }
    }
}
