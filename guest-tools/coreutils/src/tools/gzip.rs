//! gzip, gunzip and zcat (flate2's pure-Rust backend).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::util::args::{Opt, Parser};
use crate::util::{self, strerror, usage_error, warn};

const OPTS: &[Opt] = &[
    Opt::flag("decompress", 'd', "decompress"),
    Opt::long("decompress", "uncompress"),
    Opt::flag("stdout", 'c', "stdout"),
    Opt::long("stdout", "to-stdout"),
    Opt::flag("keep", 'k', "keep"),
    Opt::flag("force", 'f', "force"),
    Opt::flag("test", 't', "test"),
    Opt::flag("quiet", 'q', "quiet"),
    Opt::flag("verbose", 'v', "verbose"),
    Opt::flag("no-name", 'n', "no-name"),
    Opt::flag("name", 'N', "name"),
    Opt::flag("suffix", 'S', "suffix").with_value(),
    Opt::flag("fast", '1', "fast"),
    Opt::short("2", '2'),
    Opt::short("3", '3'),
    Opt::short("4", '4'),
    Opt::short("5", '5'),
    Opt::short("6", '6'),
    Opt::short("7", '7'),
    Opt::short("8", '8'),
    Opt::flag("best", '9', "best"),
];

struct Settings {
    tool: &'static str,
    decompress: bool,
    stdout: bool,
    keep: bool,
    force: bool,
    test: bool,
    level: u32,
    suffix: String,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Decompresses `input` into `output`; with `force`, data that is not gzip passes through.
fn decompress<R: Read, W: Write>(input: R, output: &mut W, force: bool) -> io::Result<()> {
    let mut input = BufReader::new(input);
    let head = input.fill_buf()?;
    if head.len() >= 2 && head[..2] == GZIP_MAGIC {
        io::copy(&mut MultiGzDecoder::new(input), output)?;
    } else if force {
        io::copy(&mut input, output)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not in gzip format",
        ));
    }
    Ok(())
}

fn compress<R: Read, W: Write>(mut input: R, output: W, level: u32) -> io::Result<()> {
    let mut enc = GzEncoder::new(output, Compression::new(level));
    io::copy(&mut input, &mut enc)?;
    enc.finish()?.flush()
}

fn filter<R: Read>(input: R, s: &Settings) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if s.test {
        decompress(input, &mut io::sink(), false)
    } else if s.decompress {
        decompress(input, &mut out, s.force)
    } else {
        compress(input, out, s.level)
    }
}

/// The output name of decompressing `path`.
fn decompressed_name(path: &Path, suffix: &str) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = [suffix, ".gz", "-gz", ".z", "-z", "_z"]
        .iter()
        .filter(|s| !s.is_empty())
        .find_map(|s| {
            name.strip_suffix(s)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        })
        .or_else(|| name.strip_suffix(".tgz").map(|n| format!("{n}.tar")))?;
    Some(path.with_file_name(stem))
}

fn process_file(path: &Path, s: &Settings) -> Result<(), String> {
    let st =
        kiln_rt::stat(path, true).map_err(|e| format!("{}: {}", path.display(), strerror(&e)))?;
    if st.is_dir() {
        return Err(format!("{} is a directory -- ignored", path.display()));
    }
    let open = || File::open(path).map_err(|e| format!("{}: {}", path.display(), strerror(&e)));
    if s.stdout || s.test {
        return filter(open()?, s).map_err(|e| format!("{}: {}", path.display(), strerror(&e)));
    }
    let out_path = if s.decompress {
        decompressed_name(path, &s.suffix)
            .ok_or_else(|| format!("{}: unknown suffix -- ignored", path.display()))?
    } else {
        if path.to_string_lossy().ends_with(&s.suffix) {
            return Err(format!(
                "{} already has {} suffix -- unchanged",
                path.display(),
                s.suffix
            ));
        }
        let mut name = path.as_os_str().to_owned();
        name.push(&s.suffix);
        PathBuf::from(name)
    };
    if util::sys::exists_nofollow(&out_path) {
        if !s.force {
            return Err(format!("{} already exists", out_path.display()));
        }
        fs::remove_file(&out_path)
            .map_err(|e| format!("{}: {}", out_path.display(), strerror(&e)))?;
    }
    let out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&out_path)
        .map_err(|e| format!("{}: {}", out_path.display(), strerror(&e)))?;
    let mut out = io::BufWriter::new(out);
    let done = if s.decompress {
        decompress(open()?, &mut out, false)
    } else {
        compress(open()?, &mut out, s.level)
    }
    .and_then(|()| out.flush());
    if let Err(e) = done {
        drop(out);
        let _ = fs::remove_file(&out_path);
        return Err(format!("{}: {}", path.display(), strerror(&e)));
    }
    drop(out);
    // The output keeps the input's mode and modification time.
    let _ = kiln_rt::chmod(&out_path, st.mode & 0o7777, true);
    if let Ok(f) = fs::OpenOptions::new().write(true).open(&out_path) {
        let _ = f.set_modified(util::sys::system_time(st.mtime));
    }
    if !s.keep {
        fs::remove_file(path).map_err(|e| format!("{}: {}", path.display(), strerror(&e)))?;
    }
    Ok(())
}

fn run(tool: &'static str, args: Vec<OsString>, decompress: bool, stdout: bool) -> i32 {
    if util::help_or_version(tool, &args, &format!("{tool} [OPTION]... [FILE]...")) {
        return 0;
    }
    let p = match Parser::new(OPTS).parse(util::rest(args)) {
        Ok(p) => p,
        Err(e) => return usage_error(tool, e, 1),
    };
    let level = p
        .opts
        .iter()
        .rev()
        .find_map(|(k, _)| match *k {
            "fast" => Some(1),
            "best" => Some(9),
            k => k.parse().ok(),
        })
        .unwrap_or(6);
    let suffix = match p.str_value("suffix") {
        Ok(v) => v.unwrap_or(".gz").to_string(),
        Err(e) => return usage_error(tool, e, 1),
    };
    let s = Settings {
        tool,
        decompress: decompress || p.has("decompress") || p.has("test"),
        stdout: stdout || p.has("stdout"),
        keep: p.has("keep"),
        force: p.has("force"),
        test: p.has("test"),
        level,
        suffix,
    };
    let files: Vec<OsString> = if p.operands.is_empty() {
        vec![OsString::from("-")]
    } else {
        p.operands.clone()
    };
    let mut failed = false;
    for f in &files {
        let result = if f == "-" {
            if !s.decompress && !s.force && io::stdout().is_terminal() {
                Err(
                    "compressed data not written to a terminal. Use -f to force compression."
                        .to_string(),
                )
            } else {
                filter(io::stdin().lock(), &s).map_err(|e| format!("stdin: {}", strerror(&e)))
            }
        } else {
            process_file(Path::new(f), &s)
        };
        if let Err(e) = result {
            warn(s.tool, e);
            failed = true;
        }
    }
    i32::from(failed)
}

pub fn gzip(args: Vec<OsString>) -> i32 {
    run("gzip", args, false, false)
}

pub fn gunzip(args: Vec<OsString>) -> i32 {
    run("gunzip", args, true, false)
}

pub fn zcat(args: Vec<OsString>) -> i32 {
    run("zcat", args, true, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_passthrough() {
        let data = b"hello hello hello hello".repeat(100);
        let mut gz = Vec::new();
        compress(&data[..], &mut gz, 9).expect("compresses");
        assert_eq!(gz[..2], GZIP_MAGIC);
        let mut back = Vec::new();
        decompress(&gz[..], &mut back, false).expect("decompresses");
        assert_eq!(back, data);
        let mut raw = Vec::new();
        assert!(decompress(&b"plain"[..], &mut raw, false).is_err());
        decompress(&b"plain"[..], &mut raw, true).expect("passes through");
        assert_eq!(raw, b"plain");
    }

    #[test]
    fn names() {
        let n = |p: &str| decompressed_name(Path::new(p), ".gz").map(|p| p.display().to_string());
        assert_eq!(n("a/b.txt.gz").as_deref(), Some("a/b.txt"));
        assert_eq!(n("x.tgz").as_deref(), Some("x.tar"));
        assert_eq!(n("plain"), None);
        assert_eq!(n(".gz"), None);
    }
}
