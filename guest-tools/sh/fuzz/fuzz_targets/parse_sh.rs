//! The guest shell's parser on arbitrary bytes: no panic, no hang, every command either parsed
//! into the executor's tree or refused with an error.
#![no_main]
#![allow(dead_code)]

#[path = "../../src/ast.rs"]
mod ast;
#[path = "../../src/io.rs"]
mod io;
#[path = "../../src/parse.rs"]
mod parse;

use std::collections::HashMap;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Aliases that end in a blank, expand to keywords and to each other.
    let aliases = HashMap::from([
        (b"a".to_vec(), b"echo ".to_vec()),
        (b"b".to_vec(), b"if ".to_vec()),
        (b"c".to_vec(), b"a b".to_vec()),
    ]);
    let mut parser = parse::Parser::new(data.to_vec(), 1);
    // Each command consumes input, so this ends; the bound only caps the work per input.
    for _ in 0..data.len() + 1 {
        match parser.next_command(&aliases) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
