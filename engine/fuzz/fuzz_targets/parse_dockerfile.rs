//! Fuzz target: arbitrary bytes (read as lossy UTF-8) through the whole Dockerfile front end.
//!
//! Asserts that nothing panics or overflows the stack, that every instruction's line span lies
//! inside the input, that errors and warnings name a line of the input, and exercises the dump,
//! the typed layer, mount resolution, ONBUILD triggers and syntax detection on the way.
#![no_main]

use kiln::dockerfile::directives::detect_syntax;
use kiln::dockerfile::instruction::{instructions, Instruction};
use kiln::dockerfile::mount::MountError;
use kiln::dockerfile::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.split_inclusive('\n').count();
    let _ = detect_syntax(&text);
    let df = match parse(&text) {
        Ok(df) => df,
        Err(e) => {
            assert!(
                (1..=lines.max(1)).contains(&e.line),
                "error line {} outside 1..={lines}: {e}",
                e.line
            );
            return;
        }
    };
    assert!(!df.instructions.is_empty());
    let dump = df.dump();
    assert_eq!(dump.lines().count(), df.instructions.len());
    for node in &df.instructions {
        let mut n = Some(node);
        while let Some(cur) = n {
            assert!(
                1 <= cur.start_line && cur.start_line <= cur.end_line && cur.end_line <= lines,
                "span {}..{} outside 1..={lines}",
                cur.start_line,
                cur.end_line
            );
            n = cur.onbuild.as_deref();
        }
    }
    for w in &df.warnings {
        assert!(
            (1..=lines).contains(&w.line),
            "warning line {} outside 1..={lines}",
            w.line
        );
    }
    match instructions(&df) {
        Ok(list) => {
            assert_eq!(list.len(), df.instructions.len());
            for item in &list {
                assert!(1 <= item.start_line && item.end_line <= lines);
                match &item.value {
                    Instruction::Run(run) => {
                        for m in &run.mounts {
                            let _ = m.resolve(|v| Ok::<_, MountError>(v.to_string()));
                        }
                    }
                    Instruction::Onbuild(trigger) => {
                        if let Ok(inner) = parse(trigger) {
                            let _ = inner.dump();
                            let _ = instructions(&inner);
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(e) => assert!(
            (1..=lines).contains(&e.line),
            "typed error line {} outside 1..={lines}: {e}",
            e.line
        ),
    }
});
