//! kiln's guest coreutils: one multicall program. It runs as the tool its `argv[0]` names
//! (`/bin/ls` -> `ls`), or as `coreutils NAME ARGS...`; `coreutils --list` prints the tools.

mod registry;
mod tools;
mod util;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

fn basename(arg0: &OsString) -> String {
    Path::new(arg0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn multicall(mut args: Vec<OsString>) -> i32 {
    let Some(name) = args.get(1).map(|a| a.to_string_lossy().into_owned()) else {
        eprintln!("coreutils: missing argument (try 'coreutils --list')");
        return 1;
    };
    match name.as_str() {
        "--list" => {
            let mut out = std::io::stdout().lock();
            for tool in registry::TOOLS {
                if writeln!(out, "{}", tool.name).is_err() {
                    return 1;
                }
            }
            0
        }
        "--help" | "-h" => {
            println!("Usage: coreutils NAME [ARGUMENT]...\n       coreutils --list");
            0
        }
        _ => match registry::find(&name) {
            Some(tool) => {
                args.remove(0);
                registry::run(tool, args, true)
            }
            None => {
                eprintln!("coreutils: unknown program '{name}'");
                1
            }
        },
    }
}

fn main() {
    kiln_rt::init();
    let args: Vec<OsString> = std::env::args_os().collect();
    let name = args.first().map(basename).unwrap_or_default();
    let code = match registry::find(&name) {
        Some(tool) => registry::run(tool, args, false),
        None => multicall(args),
    };
    // `exit` flushes stdout.
    std::process::exit(code);
}
