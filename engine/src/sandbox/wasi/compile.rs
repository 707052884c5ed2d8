//! Compiling an untrusted module in a child process held to the step's limits.
//!
//! Cranelift's time and memory grow with what a module asks of it, and a module of a few
//! megabytes can ask for minutes and gigabytes (a compile bomb). A rootfs module is therefore
//! compiled by `kiln` itself re-executed (`/proc/self/exe __compile-wasm MEMORY`): the
//! module's bytes on its stdin, the compiled artifact on its stdout. Once it has read the
//! module and set up its engine, the child caps its own address space at what it has mapped
//! so far plus the step's memory limit (what the compile may take, not kiln's own text), and
//! the parent kills it at the step's deadline or when the step is stopped. The step then ends
//! with "exceeded its timeout/memory limit", and the server that ran it goes on.
//! kiln's own guest tools are compiled in the process: they are not a tenant's.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::runtime::{engine_config, MAX_MODULE_BYTES};
use crate::sandbox::Limit;

/// The hidden first argument that makes `kiln` the compiler child.
pub const HELPER_ARG: &str = "__compile-wasm";

/// Largest artifact taken from the child.
const MAX_ARTIFACT_BYTES: u64 = 4 * MAX_MODULE_BYTES;

/// Whether this process's executable answers [`HELPER_ARG`] (kiln's `main` says so; a program
/// that embeds the library without it compiles in the process, unbounded).
static HELPER: AtomicBool = AtomicBool::new(false);

/// Declares that this executable runs [`helper_main`] when given [`HELPER_ARG`].
pub fn enable_helper() {
    HELPER.store(true, Ordering::SeqCst);
}

pub(crate) fn helper_enabled() -> bool {
    HELPER.load(Ordering::SeqCst)
}

/// What a compile may use: the step's deadline and memory, and its stop flag.
pub(crate) struct Budget<'a> {
    pub deadline: Instant,
    pub memory: u64,
    pub stop: &'a AtomicBool,
}

/// Why the child produced no artifact.
#[derive(Debug, Clone)]
pub(crate) enum CompileFailure {
    /// The module is not valid, or uses what kiln's engine does not support.
    Invalid(String),
    /// The step's time or memory ran out (or the step was stopped: `Timeout`).
    Limit(Limit),
    /// The child could not be run, or failed otherwise.
    Failed(String),
}

/// The child's side: `kiln __compile-wasm MEMORY` reads a module on stdin and writes its
/// artifact on stdout, compiling with at most MEMORY bytes of address space more than it has
/// once ready. Exit status 0, or 1 with the reason on stderr.
pub fn helper_main() -> i32 {
    let Some(memory) = std::env::args().nth(2).and_then(|m| m.parse::<u64>().ok()) else {
        eprintln!("usage: kiln {HELPER_ARG} MEMORY-BYTES < module > artifact");
        return 2;
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin()
        .lock()
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut bytes)
    {
        eprintln!("read the module: {e}");
        return 1;
    }
    if bytes.len() as u64 > MAX_MODULE_BYTES {
        eprintln!("the module is larger than {} MiB", MAX_MODULE_BYTES >> 20);
        return 1;
    }
    let engine = match Engine::new(&engine_config()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("engine: {e:#}");
            return 1;
        }
    };
    if let Err(e) = cap_address_space(memory) {
        eprintln!("cap the compiler's memory: {e}");
        return 1;
    }
    match engine.precompile_module(&bytes) {
        Ok(artifact) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&artifact).and_then(|()| out.flush()).is_err() {
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    }
}

/// Caps this process's address space at what it has mapped now plus `more` bytes.
fn cap_address_space(more: u64) -> std::io::Result<()> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("unreadable /proc/self/statm"))?;
    let page = rustix::param::page_size() as u64;
    let cap = pages.saturating_mul(page).saturating_add(more);
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(cap),
            maximum: Some(cap),
        },
    )?;
    Ok(())
}

/// Compiles `bytes` in a child held to `budget`; returns the artifact.
pub(crate) fn compile(bytes: &[u8], budget: &Budget<'_>) -> Result<Vec<u8>, CompileFailure> {
    use std::os::unix::process::CommandExt as _;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        CompileFailure::Failed(format!("{what} the compiler process: {e}"))
    };
    if Instant::now() >= budget.deadline {
        return Err(CompileFailure::Limit(Limit::Timeout));
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(HELPER_ARG)
        .arg(budget.memory.to_string())
        .env_clear()
        // glibc reserves 64 MiB of address space per thread arena; the cap is on address
        // space, so the compiler's threads share one.
        .env("MALLOC_ARENA_MAX", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (setrlimit, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            use rustix::process::{setrlimit, Resource, Rlimit};
            setrlimit(
                Resource::Core,
                Rlimit {
                    current: Some(0),
                    maximum: Some(0),
                },
            )?;
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| failed("start", &e))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(CompileFailure::Failed(
            "the compiler process has no pipes".into(),
        ));
    };
    let artifact = std::thread::scope(|s| {
        let feed = s.spawn(move || {
            let _ = stdin.write_all(bytes);
        });
        let out = s.spawn(move || {
            let mut a = Vec::new();
            stdout
                .take(MAX_ARTIFACT_BYTES + 1)
                .read_to_end(&mut a)
                .map(|_| a)
        });
        let err = s.spawn(move || {
            let mut e = Vec::new();
            let _ = stderr.take(64 << 10).read_to_end(&mut e);
            String::from_utf8_lossy(&e).into_owned()
        });
        let mut killed = None;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Ok(st),
                Ok(None) => {}
                Err(e) => break Err(failed("wait for", &e)),
            }
            if killed.is_none()
                && (Instant::now() >= budget.deadline || budget.stop.load(Ordering::SeqCst))
            {
                let _ = child.kill();
                killed = Some(Limit::Timeout);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = feed.join();
        let out = out.join();
        let err = err.join().unwrap_or_default();
        let status = status?;
        if let Some(limit) = killed {
            return Err(CompileFailure::Limit(limit));
        }
        if status.success() {
            return match out {
                Ok(Ok(a)) if a.len() as u64 <= MAX_ARTIFACT_BYTES => Ok(a),
                Ok(Ok(_)) => Err(CompileFailure::Failed(format!(
                    "the compiled module is larger than {} MiB",
                    MAX_ARTIFACT_BYTES >> 20
                ))),
                Ok(Err(e)) => Err(failed("read from", &e)),
                Err(_) => Err(CompileFailure::Failed("the artifact reader failed".into())),
            };
        }
        // Out of address space: Rust's allocator aborts, or cranelift's own mmap fails.
        if err.contains("memory allocation of")
            || err.contains("Cannot allocate memory")
            || err.contains("out of memory")
        {
            return Err(CompileFailure::Limit(Limit::Memory));
        }
        match status.code() {
            Some(_) => {
                let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                Err(CompileFailure::Invalid(line.chars().take(500).collect()))
            }
            None => Err(CompileFailure::Failed(format!(
                "the compiler process ended with {status}"
            ))),
        }
    });
    artifact
}
