//! tac: concatenate and print files in reverse. uutils' tac spools a pipe into a temporary
//! file, which WASI programs cannot create without knowing a folder: this one keeps the input
//! in memory (RUN steps feed it text, not disks).

use std::ffi::OsString;
use std::io::{self, Read, Write};

use crate::util::args::{Opt, Parser};
use crate::util::{self, quote, strerror, usage_error, warn};

const OPTS: &[Opt] = &[
    Opt::flag("before", 'b', "before"),
    Opt::flag("separator", 's', "separator").with_value(),
    Opt::flag("regex", 'r', "regex"),
];

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version("tac", &args, "tac [OPTION]... [FILE]...") {
        return 0;
    }
    let p = match Parser::new(OPTS).parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error("tac", e, 1),
    };
    if p.has("regex") {
        return usage_error("tac", "--regex is not supported", 1);
    }
    let sep: Vec<u8> = match p.value("separator") {
        Some(s) if s.is_empty() => return usage_error("tac", "separator cannot be empty", 1),
        Some(s) => s.as_encoded_bytes().to_vec(),
        None => b"\n".to_vec(),
    };
    let before = p.has("before");
    let files: Vec<OsString> = if p.operands.is_empty() {
        vec![OsString::from("-")]
    } else {
        p.operands.clone()
    };
    let mut failed = false;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for f in &files {
        let mut data = Vec::new();
        let read = if f == "-" {
            io::stdin().lock().read_to_end(&mut data)
        } else {
            std::fs::File::open(f).and_then(|mut file| file.read_to_end(&mut data))
        };
        if let Err(e) = read {
            warn(
                "tac",
                format!("failed to open {} for reading: {}", quote(f), strerror(&e)),
            );
            failed = true;
            continue;
        }
        if let Err(e) = out.write_all(&reverse(&data, &sep, before)) {
            warn("tac", format!("write error: {}", strerror(&e)));
            return 1;
        }
    }
    if out.flush().is_err() {
        return 1;
    }
    i32::from(failed)
}

/// The records of `data` in reverse order. A record ends with `sep` (or, with `before`,
/// starts with it), as GNU tac cuts them.
fn reverse(data: &[u8], sep: &[u8], before: bool) -> Vec<u8> {
    let mut cuts = vec![0];
    let mut i = 0;
    while i + sep.len() <= data.len() {
        if &data[i..i + sep.len()] == sep {
            let cut = if before { i } else { i + sep.len() };
            if cut != 0 && cut != *cuts.last().unwrap_or(&0) {
                cuts.push(cut);
            }
            i += sep.len();
        } else {
            i += 1;
        }
    }
    if *cuts.last().unwrap_or(&0) != data.len() {
        cuts.push(data.len());
    }
    let mut out = Vec::with_capacity(data.len());
    for w in cuts.windows(2).rev() {
        out.extend_from_slice(&data[w[0]..w[1]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::reverse;

    #[test]
    fn records_come_out_reversed() {
        assert_eq!(reverse(b"a\nb\nc\n", b"\n", false), b"c\nb\na\n");
        assert_eq!(reverse(b"a\nb\nc", b"\n", false), b"cb\na\n");
        assert_eq!(reverse(b"", b"\n", false), b"");
        assert_eq!(reverse(b"1,2,3,", b",", false), b"3,2,1,");
        assert_eq!(reverse(b"\na\nb", b"\n", true), b"\nb\na");
    }
}
