//! The `kiln` binary: parse the command line, run it, map errors to exit codes.
//!
//! Exit codes: 0 success; 1 the user's input failed (bad Dockerfile, RUN exited non-zero, missing
//! image or file, a limit hit); 2 an internal error. A closed stdout (`kiln images | head`) is not
//! an error.

use std::process::ExitCode;

use clap::Parser;
use kiln::cli::{self, Cli, Printer};

fn main() -> ExitCode {
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
