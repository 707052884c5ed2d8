//! The `kiln` binary: parse the command line, run it, map errors to exit codes.
//!
//! Exit codes: 0 success; 1 the user's input failed (bad Dockerfile, RUN exited non-zero, missing
//! image or file, a limit hit); 2 an internal error. A closed stdout (`kiln images | head`) is not
//! an error.

// Nothing from outside may panic kiln: no `unwrap()`/`expect()` outside tests (CI's clippy).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

use clap::Parser;
use kiln::cli::{self, Cli, Printer};

/// Raises the soft limit on open files to the hard one (at most 65,536), as Go programs do:
/// the layer writer holds one descriptor per level of the tree it archives (up to the 2,048
/// levels a 4,096-byte name allows), past the common soft limit of 1,024. A sandboxed program
/// gets its own limit (`--run-files`) whatever kiln's is.
fn raise_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    let want = l.maximum.map_or(65_536, |m| m.min(65_536));
    if l.current.is_some_and(|c| c < want) {
        l.current = Some(want);
        // Best effort: without it, a deep tree fails with "too many open files".
        let _ = setrlimit(Resource::Nofile, l);
    }
}

fn main() -> ExitCode {
    // The compiler child of a WebAssembly step (kiln::sandbox::wasi's compile.rs): nothing
    // else of kiln runs in it.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == kiln::sandbox::wasi::COMPILE_HELPER_ARG)
    {
        return ExitCode::from(
            u8::try_from(kiln::sandbox::wasi::compile_helper_main()).unwrap_or(1),
        );
    }
    kiln::sandbox::wasi::enable_compile_helper();
    // First, while this is the only thread: a user without root runs kiln in a user namespace
    // of its own.
    match kiln::rootless::enter() {
        kiln::rootless::Entered::Here => {}
        kiln::rootless::Entered::Ran(code) => return ExitCode::from(code),
        kiln::rootless::Entered::Failed(e) => {
            eprintln!("kiln: warning: no user namespace of its own ({e}): ownership is recorded, not set, and Linux programs cannot run");
        }
    }
    raise_open_files();
    let args = Cli::parse();
    let mut printer = Printer::new();
    match cli::run(args, &mut printer) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("kiln: {}", cli::error_text(&err));
            for hint in cli::hints(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
