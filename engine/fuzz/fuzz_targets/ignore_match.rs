//! `.dockerignore` patterns and COPY globs come from untrusted contexts and Dockerfiles: no
//! pattern or path may panic the matcher.
#![no_main]

use kiln::ignore::{glob_match, read_ignore_file, PatternMatcher};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (patterns, path) = text.split_once('\0').unwrap_or((&text, "a/b/c"));
    let list = read_ignore_file(patterns);
    if let Ok(m) = PatternMatcher::new(&list) {
        let _ = m.matches_or_parent_matches(path);
    }
    for p in &list {
        let _ = glob_match(p, path);
    }
});
