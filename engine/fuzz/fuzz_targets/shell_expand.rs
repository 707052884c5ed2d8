//! Variable expansion runs on every word of an untrusted Dockerfile: no word may panic it or
//! blow up its output.
#![no_main]

use kiln::dockerfile::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let word = String::from_utf8_lossy(data);
    let env = vec![
        ("A".to_owned(), "value with spaces".to_owned()),
        ("EMPTY".to_owned(), String::new()),
        ("PATHS".to_owned(), "/usr/local/bin:/usr/bin".to_owned()),
    ];
    for escape in ['\\', '`'] {
        let lexer = Lexer::new(escape);
        if let Ok(out) = lexer.process_word(&word, &env) {
            assert!(out.len() <= word.len().max(1 << 20) + (1 << 20));
        }
        let _ = lexer.process_words(&word, &env);
    }
});
