//! Untrusted image archives (`kiln load`, `POST /images/load`: docker-archive or OCI layout,
//! possibly compressed) must never panic the loader, and must never bring a file from outside
//! the archive into the store: a canary file beside the store, at a fixed path that the seed
//! corpus names through symlinks, hardlinks, `..` and absolute names (`seed-load-archive`),
//! never shows up in it.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use kiln::store::Store;
use libfuzzer_sys::fuzz_target;

/// Where the canary lives; `seed-load-archive` names the same path.
const CANARY_DIR: &str = "/tmp/kiln-fuzz-load";
const CANARY: &[u8] = b"kiln-fuzz-load canary: never in a store\n";

fn canary() {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        std::fs::create_dir_all(CANARY_DIR).expect("create the canary folder");
        std::fs::write(Path::new(CANARY_DIR).join("secret"), CANARY).expect("write the canary");
    });
}

fn holds_canary(root: &Path) -> Option<std::path::PathBuf> {
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                let data = std::fs::read(e.path()).unwrap_or_default();
                if data.windows(CANARY.len()).any(|w| w == CANARY) {
                    return Some(e.path());
                }
            }
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    canary();
    let Ok(t) = tempfile::tempdir() else {
        return;
    };
    let root = t.path().join("store");
    let Ok(store) = Store::open(&root) else {
        return;
    };
    let _ = kiln::archive::load(&store, data);
    if let Some(p) = holds_canary(&root) {
        panic!("the canary reached the store: {}", p.display());
    }
});
