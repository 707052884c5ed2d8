//! The WASI sandbox: wasmtime 48 with kiln's own preview1 implementation ([`preview1`]) and the
//! `kiln` import module ([`kiln`]) over the capability-scoped overlay rootfs. Only this module
//! names wasmtime types.

/// Registers host function `$f` as `$module.$name` in `$linker`: it gets the guest's memory and
/// the process state through [`preview1::call`] and returns a WASI errno.
macro_rules! host_fn {
    ($linker:expr, $module:expr, $name:literal, $f:ident, ($($arg:ident : $ty:ty),*)) => {
        $linker.func_wrap(
            $module,
            $name,
            |mut caller: wasmtime::Caller<'_, Proc>, $($arg: $ty),*| -> wasmtime::Result<i32> {
                call(&mut caller, |m, p| $f(m, p, $($arg),*))
            },
        )?;
    };
}

mod abi;
mod compile;
mod fdtable;
mod kiln;
mod mem;
mod native_child;
mod preview1;
mod process;
mod runtime;
mod tools;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Arc;

use cap_std::fs::Dir;

pub use compile::{
    enable_helper as enable_compile_helper, helper_main as compile_helper_main,
    HELPER_ARG as COMPILE_HELPER_ARG,
};
pub(crate) use process::NativeDenied;
pub use runtime::{default_cache_dir, WasiRuntime};
pub use tools::GuestTools;

use self::abi::Errno;
use self::fdtable::{Object, Open};
use self::process::{resolve_program, run_main, stdio_table, Launch, Step};
use super::{Limit, Rootfs, RunEvent, RunOutcome, RunSpec, SandboxError, StdioMode};
use crate::progress::Stream;
use crate::rootfs::{ContainerPath, NodeKind, Overlay};

/// Chunk size for reading a step's output.
const OUTPUT_CHUNK: usize = 64 * 1024;

/// Docker's default `PATH`, used when the environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Binds each host folder at its target in the overlay, outer targets first (so that a
/// target inside another bind lands in that bind's folder, as with `mount --bind`).
fn bind(overlay: &mut Overlay, binds: &[super::Bind]) -> Result<(), String> {
    let mut binds: Vec<&super::Bind> = binds.iter().collect();
    binds.sort_by_key(|b| ContainerPath::parse(&b.target).components().count());
    for b in binds {
        let spec = format!("{}:{}", b.host.display(), b.target);
        let dir = Dir::open_ambient_dir(&b.host, cap_std::ambient_authority())
            .map_err(|e| format!("bind mount {spec}: {}: {e}", b.host.display()))?;
        overlay
            .mount(&ContainerPath::parse(&b.target), dir, b.readonly)
            .map_err(|e| format!("bind mount {spec}: {e}"))?;
    }
    Ok(())
}

/// Runs `spec` as the first process of a step over `lowers` + `upper`.
pub(crate) fn run(
    rt: &Arc<WasiRuntime>,
    lowers: Vec<Dir>,
    upper: Dir,
    rootfs: &Rootfs,
    native: fn() -> Result<(), NativeDenied>,
    spec: &RunSpec,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunOutcome, SandboxError> {
    let tools = GuestTools::embedded();
    if !tools.available() {
        return Err(SandboxError::NoTools);
    }
    let failed = |status: i32, msg: String, on_event: &mut dyn FnMut(RunEvent<'_>)| {
        on_event(RunEvent::Output(
            Stream::Stderr,
            format!("{msg}\n").as_bytes(),
        ));
        RunOutcome {
            status,
            limit: None,
            needs_native: None,
            executor: String::new(),
            not_enforced: Vec::new(),
        }
    };
    let mut overlay = Overlay::new(lowers, upper, tools.shims(), spec.creds);
    if let Err(msg) = bind(&mut overlay, &spec.binds) {
        return Ok(failed(125, msg, on_event));
    }
    let step = Step::new(overlay, rt.clone(), tools, spec, native, rootfs.clone());
    // A missing working directory is created, root-owned, as Docker does for `run -w`.
    let mut dir = ContainerPath::root();
    for name in spec.cwd.components() {
        dir = dir.join(name);
        if step.overlay.stat(&dir, true).is_err() {
            let made = step
                .overlay
                .mkdir(&dir, 0o755, 0)
                .and_then(|()| step.overlay.chown(&dir, Some(0), Some(0), true));
            if let Err(e) = made {
                return Ok(failed(
                    126,
                    format!("working directory {}: {e}", spec.cwd.as_str()),
                    on_event,
                ));
            }
        }
    }
    let Some(name) = spec.argv.first() else {
        return Ok(failed(127, "no command given".into(), on_event));
    };
    let path = match find_program(&step, &spec.cwd, name, &spec.env) {
        Some(p) => p,
        None => {
            return Ok(failed(
                127,
                format!("exec: {name:?}: executable file not found in $PATH"),
                on_event,
            ))
        }
    };
    let argv: Vec<Vec<u8>> = spec.argv.iter().map(|a| a.as_bytes().to_vec()).collect();
    let program = match resolve_program(&step, &spec.cwd, &path, argv) {
        Ok(p) => p,
        Err(e) => {
            let needs = step.needs_native.lock().ok().and_then(|n| n.clone());
            if needs.is_some() {
                return Ok(RunOutcome {
                    status: 126,
                    limit: None,
                    needs_native: needs,
                    executor: String::new(),
                    not_enforced: Vec::new(),
                });
            }
            let module_error = step.module_error.lock().ok().and_then(|m| m.clone());
            let (status, why) = match (e, module_error) {
                (Errno::NOENT | Errno::NOTDIR, _) => (127, "no such file or directory".to_owned()),
                (Errno::ACCES, _) => (126, "permission denied".to_owned()),
                (_, Some(m)) => (126, m),
                _ => (126, "exec format error".to_owned()),
            };
            let mut outcome = failed(status, format!("exec: {path}: {why}"), on_event);
            // Compiling the program ran out of the step's time or memory.
            outcome.limit = step.limit_hit();
            return Ok(outcome);
        }
    };
    let executor = program.reason.clone();
    on_event(RunEvent::Started {
        executor: &executor,
    });
    let env = spec.env.iter().map(|e| e.as_bytes().to_vec()).collect();
    let mut readers = Vec::new();
    let dup = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| io_err("duplicate stdio", e.into()))
    };
    let (stdin, stdout, stderr) = match (&spec.terminal, spec.stdio) {
        (Some(tty), _) => (
            Open::new(Object::PipeRead(dup(tty.as_fd())?)),
            Open::new(Object::PipeWrite(dup(tty.as_fd())?)),
            Open::new(Object::PipeWrite(dup(tty.as_fd())?)),
        ),
        (None, StdioMode::Capture | StdioMode::CaptureWithStdin) => {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            readers.push((Stream::Stdout, out_r));
            readers.push((Stream::Stderr, err_r));
            let stdin = if spec.stdio == StdioMode::Capture {
                process::null()
            } else if let Some(fd) = &spec.stdin {
                Open::new(Object::PipeRead(dup(fd.as_fd())?))
            } else {
                Open::new(Object::PipeRead(dup(std::io::stdin().as_fd())?))
            };
            (
                stdin,
                Open::new(Object::PipeWrite(out_w)),
                Open::new(Object::PipeWrite(err_w)),
            )
        }
        (None, StdioMode::Inherit) => (
            Open::new(Object::PipeRead(dup(std::io::stdin().as_fd())?)),
            Open::new(Object::PipeWrite(dup(std::io::stdout().as_fd())?)),
            Open::new(Object::PipeWrite(dup(std::io::stderr().as_fd())?)),
        ),
    };
    let fds = stdio_table(spec.limits.files as usize, stdin, stdout, stderr).map_err(|_| {
        io_err(
            "set up descriptors",
            std::io::Error::other("too many files"),
        )
    })?;
    let launch = Launch {
        program,
        env,
        cwd: spec.cwd.clone(),
        umask: 0o022,
        fds,
        fd3: None,
    };
    let (tx, rx) = mpsc::sync_channel::<(Stream, Vec<u8>)>(64);
    let reader = if readers.is_empty() {
        drop(tx);
        None
    } else {
        Some(
            std::thread::Builder::new()
                .name("kiln-output".into())
                .spawn(move || forward(readers, tx))
                .map_err(|e| io_err("start the output reader", e))?,
        )
    };
    let main_step = step.clone();
    let orphans = spec.orphans;
    let main = std::thread::Builder::new()
        .name("kiln-step".into())
        .stack_size(process::THREAD_STACK)
        .spawn(move || {
            let status = run_main(&main_step, launch);
            main_step.finish(orphans);
            status
        })
        .map_err(|e| io_err("start the step", e))?;
    let mut logged: u64 = 0;
    for (stream, chunk) in rx {
        if logged >= spec.limits.log {
            continue;
        }
        let room = (spec.limits.log - logged) as usize;
        let part = &chunk[..chunk.len().min(room)];
        logged += part.len() as u64;
        on_event(RunEvent::Output(stream, part));
        if logged >= spec.limits.log {
            step.exceeded(Limit::Log);
        }
    }
    let status = main.join().unwrap_or(process::STATUS_KILLED);
    if let Some(r) = reader {
        let _ = r.join();
    }
    let needs_native = step.needs_native.lock().ok().and_then(|n| n.clone());
    Ok(RunOutcome {
        status,
        limit: step.limit_hit(),
        needs_native,
        executor,
        not_enforced: step.not_enforced(),
    })
}

fn io_err(op: &'static str, source: std::io::Error) -> SandboxError {
    SandboxError::Io { op, source }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io_err("create a pipe", e.into()))
}

/// Reads a step's output pipes until every writer of each is gone.
fn forward(mut pipes: Vec<(Stream, OwnedFd)>, tx: mpsc::SyncSender<(Stream, Vec<u8>)>) {
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    while !pipes.is_empty() {
        let mut fds: Vec<_> = pipes
            .iter()
            .map(|(_, fd)| rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN))
            .collect();
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut closed = Vec::new();
        for (i, (stream, fd)) in pipes.iter().enumerate() {
            if !ready[i] {
                continue;
            }
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => closed.push(i),
                Ok(n) => {
                    if tx.send((*stream, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            pipes.remove(i);
        }
    }
}

/// Finds `name` like execvp: a name with a `/` is a path; otherwise each `PATH` entry is tried.
fn find_program(step: &Step, cwd: &ContainerPath, name: &str, env: &[String]) -> Option<String> {
    if name.contains('/') || name.starts_with("kiln:") {
        return Some(name.to_owned());
    }
    if name.is_empty() {
        return None;
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{dir}/{name}");
        let Ok(real) = step.overlay.resolve(cwd, &candidate, true) else {
            continue;
        };
        if let Ok(st) = step.overlay.stat(&real, true) {
            if st.kind == NodeKind::File {
                return Some(candidate);
            }
        }
    }
    None
}
