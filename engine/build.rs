//! Builds the guest tools (`guest-tools/`, a workspace of its own) for wasm32-wasip1 and embeds
//! them, with the rootfs shim table, into the engine.
//!
//! `KILN_GUEST_TOOLS_DIR` may name a folder that already holds `sh.wasm` and `coreutils.wasm`
//! (for packagers); otherwise the build runs cargo on `guest-tools/` with its own target folder.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const TOOLS: [&str; 2] = ["sh", "coreutils"];
const TARGET: &str = "wasm32-wasip1";

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let root = manifest.parent().unwrap_or(Path::new("..")).to_path_buf();
    let guest = root.join("guest-tools");
    let shims = root.join("rootfs-shims/shims.txt");
    println!("cargo:rerun-if-env-changed=KILN_GUEST_TOOLS_DIR");
    println!("cargo:rerun-if-changed={}", shims.display());
    watch(&guest);

    let mut code = String::new();
    // Fuzz builds never run a RUN step: they embed no guest tools.
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        for t in TOOLS {
            let _ = writeln!(
                code,
                "pub(crate) static {}: Option<ToolModule> = None;",
                t.to_uppercase()
            );
        }
    } else {
        let dir = match env::var_os("KILN_GUEST_TOOLS_DIR") {
            Some(d) => PathBuf::from(d),
            None => build_guest(&guest, &out),
        };
        for t in TOOLS {
            let src = dir.join(format!("{t}.wasm"));
            println!("cargo:rerun-if-changed={}", src.display());
            let bytes = std::fs::read(&src)
                .unwrap_or_else(|e| panic!("kiln: guest tool {} is missing ({e})", src.display()));
            let dst = out.join(format!("{t}.wasm"));
            std::fs::write(&dst, &bytes).expect("write guest tool into OUT_DIR");
            let sum: [u8; 32] = Sha256::digest(&bytes).into();
            let _ = writeln!(
                code,
                "pub(crate) static {}: Option<ToolModule> = Some(ToolModule {{ bytes: include_bytes!({:?}), sha256: {:?} }});",
                t.to_uppercase(),
                dst.display().to_string(),
                sum
            );
        }
    }
    let names = std::fs::read_to_string(guest.join("coreutils/tools.txt")).unwrap_or_default();
    let names: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let _ = writeln!(
        code,
        "pub(crate) static COREUTILS_NAMES: &[&str] = &{names:?};"
    );
    let _ = writeln!(
        code,
        "pub(crate) static SHIMS: &str = include_str!({:?});",
        shims.display().to_string()
    );
    std::fs::write(out.join("guest_tools.rs"), code).expect("write guest_tools.rs");
}

/// Asks cargo to rerun this script when a guest-tool source changes (not on their build output).
fn watch(guest: &Path) {
    for f in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", guest.join(f).display());
    }
    if let Ok(entries) = std::fs::read_dir(guest) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "target") {
                for sub in ["src", "Cargo.toml", "tools.txt"] {
                    let s = p.join(sub);
                    if s.exists() {
                        println!("cargo:rerun-if-changed={}", s.display());
                    }
                }
            }
        }
    }
}

/// Installs the wasm32-wasip1 standard library when the toolchain lacks it, as
/// `rust-toolchain.toml` asks: rustup adds a toolchain file's targets only when it installs the
/// toolchain itself, so a machine that already had the toolchain would otherwise fail here with
/// "can't find crate for `core`" (README's first command, on a fresh machine).
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.is_some_and(|d| has_core(&d)) {
        return;
    }
    println!("cargo:warning=kiln: adding the {TARGET} target (rustup target add {TARGET})");
    // rustup's proxy set RUSTUP_TOOLCHAIN for this build, so the target goes to its toolchain.
    match Command::new("rustup").args(["target", "add", TARGET]).status() {
        Ok(s) if s.success() => {}
        Ok(_) | Err(_) => panic!(
            "kiln: the {TARGET} target is missing and `rustup target add {TARGET}` failed; install it and build again"
        ),
    }
}

/// Whether `dir` holds a `libcore-*.rlib` (the standard library's files carry a hash).
fn has_core(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("libcore-") && n.ends_with(".rlib")
        })
    })
}

/// Runs cargo on the guest workspace; returns the folder with the `.wasm` files.
fn build_guest(guest: &Path, out: &Path) -> PathBuf {
    ensure_target();
    // OUT_DIR is <target>/<profile>/build/<pkg>/out: the guest build lives beside the profiles.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("guest-tools"))
        .unwrap_or_else(|| guest.join("target"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(guest)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for t in TOOLS {
        cmd.args(["-p", t]);
    }
    // Nothing of the outer build's configuration applies to the guest build.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_MAKEFLAGS"
            || k.starts_with("RUSTC_")
            || k.starts_with("DEP_")
            || [
                "RUSTFLAGS",
                "RUSTDOCFLAGS",
                "TARGET",
                "HOST",
                "OUT_DIR",
                "OPT_LEVEL",
                "PROFILE",
                "DEBUG",
                "NUM_JOBS",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("kiln: cannot run cargo for the guest tools: {e}"));
    if !status.success() {
        panic!(
            "kiln: building the guest tools for {TARGET} failed (is the target installed? `rustup target add {TARGET}`)"
        );
    }
    target_dir.join(TARGET).join("release")
}
