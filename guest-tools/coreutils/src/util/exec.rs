//! Running programs: `PATH` lookup and `kiln_rt::spawn`/`wait` (WASI has no `std::process`).

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

/// Whether `path` is a regular file with an execute bit (following symlinks).
pub fn is_executable(path: &Path) -> bool {
    kiln_rt::stat(path, true).is_ok_and(|st| st.is_file() && st.mode & 0o111 != 0)
}

/// The directories of `$PATH` (or the default one).
pub fn path_dirs() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| {
        OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    });
    // By hand: `std::env::split_paths` panics ("unsupported") on wasm32-wasip1.
    path.as_encoded_bytes()
        .split(|&b| b == b':')
        .map(|d| {
            if d.is_empty() {
                PathBuf::from(".")
            } else {
                // SAFETY: split at ASCII `:`, which keeps the encoding valid.
                PathBuf::from(unsafe { OsStr::from_encoded_bytes_unchecked(d) })
            }
        })
        .collect()
}

/// Every executable named `name` along `$PATH`, in order.
pub fn find_all(name: &OsStr) -> Vec<PathBuf> {
    path_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .filter(|p| is_executable(p))
        .collect()
}

/// The program `name` runs: itself when it holds a `/`, else the first match along `$PATH`.
pub fn resolve(name: &OsStr) -> Option<PathBuf> {
    if name.as_encoded_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    find_all(name).into_iter().next()
}

/// The current environment as `K=V` entries.
pub fn environment() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(k, v)| {
            let mut e = k;
            e.push("=");
            e.push(v);
            e
        })
        .collect()
}

/// Why a program could not run, and the status a shell would give it (127 or 126).
#[derive(Debug)]
pub struct SpawnError {
    pub status: i32,
    pub message: String,
}

/// Runs `argv` (looked up along `$PATH`) with `env` and the given stdio fds, in `cwd`, and
/// waits for it.
pub fn run_with(
    argv: &[OsString],
    env: &[OsString],
    cwd: &Path,
    stdio: [kiln_rt::Fd; 3],
) -> Result<kiln_rt::Status, SpawnError> {
    let name = argv.first().ok_or_else(|| SpawnError {
        status: 127,
        message: "missing command".to_string(),
    })?;
    let shown = name.to_string_lossy().into_owned();
    // What this process printed so far comes before the child's output.
    let _ = io::Write::flush(&mut io::stdout());
    let path = resolve(name).ok_or_else(|| SpawnError {
        status: 127,
        message: format!("{shown}: No such file or directory"),
    })?;
    let pid = kiln_rt::spawn(&kiln_rt::Spawn {
        path: &path,
        argv,
        env,
        cwd,
        fds: &stdio,
    })
    .map_err(|e| SpawnError {
        status: if e.kind() == io::ErrorKind::NotFound {
            127
        } else {
            126
        },
        message: format!("{shown}: {}", super::strerror(&e)),
    })?;
    loop {
        match kiln_rt::wait(pid, false) {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(SpawnError {
                    status: 126,
                    message: format!("{shown}: {}", super::strerror(&e)),
                })
            }
        }
    }
}

/// Runs `argv` in the current directory with this process's environment and stdio.
pub fn run(argv: &[OsString]) -> Result<kiln_rt::Status, SpawnError> {
    let cwd = std::env::current_dir().map_err(|e| SpawnError {
        status: 126,
        message: super::strerror(&e),
    })?;
    run_with(argv, &environment(), &cwd, [0, 1, 2])
}
