//! Untrusted tars (layers, contexts, `import`, `load`) must never panic the extractor, and
//! whatever it accepts must stay inside the destination.
#![no_main]

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use kiln::layer::{unpack_layer, UnpackOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parent) = tempfile::tempdir() else {
        return;
    };
    let dest_path = parent.path().join("dest");
    if std::fs::create_dir(&dest_path).is_err() {
        return;
    }
    let Ok(dest) = Dir::open_ambient_dir(&dest_path, ambient_authority()) else {
        return;
    };
    let mut opts = UnpackOptions::archive();
    // Keep each run small and fast: the limits themselves are tested elsewhere.
    opts.limits.max_entries = 256;
    opts.limits.max_total_bytes = 1 << 20;
    let _ = unpack_layer(data, &dest, &opts);
    // Nothing may appear beside the destination.
    let siblings: Vec<_> = std::fs::read_dir(parent.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(siblings, vec![std::ffi::OsString::from("dest")], "wrote outside the destination");
});
