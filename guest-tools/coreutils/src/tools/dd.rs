//! dd: convert and copy a file, single-threaded (uutils dd needs threads, which WASI lacks).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::time::Instant;

use crate::util::{self, quote, strerror, warn};

const TOOL: &str = "dd";
const USAGE: &str = "dd [OPERAND]...\n  or:  dd OPTION";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Default,
    NoXfer,
    None,
}

#[derive(Debug, Default)]
struct Conv {
    notrunc: bool,
    sync: bool,
    noerror: bool,
    fsync: bool,
    excl: bool,
    nocreat: bool,
    lcase: bool,
    ucase: bool,
}

#[derive(Debug, Default)]
struct Flags {
    skip_bytes: bool,
    count_bytes: bool,
    fullblock: bool,
    seek_bytes: bool,
    append: bool,
}

#[derive(Debug)]
struct Settings {
    input: Option<OsString>,
    output: Option<OsString>,
    ibs: usize,
    obs: usize,
    /// `bs=` given: every input block is written as it was read.
    bs: bool,
    count: Option<u64>,
    skip: u64,
    seek: u64,
    conv: Conv,
    flags: Flags,
    status: Status,
}

/// A number with dd's multipliers: `c`, `w`, `b`, `kB`, `K`, `KiB`, `MB`, `M`, ... and
/// `NxM` products.
fn parse_size(s: &str) -> Option<u64> {
    if let Some((a, b)) = s.split_once('x') {
        return parse_size(a)?.checked_mul(parse_size(b)?);
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let suffix = &s[digits..];
    let mult: u64 = match suffix {
        "" | "c" => 1,
        "w" => 2,
        "b" => 512,
        _ => {
            let (letter, rest) = suffix.split_at(1);
            let power = match letter {
                "k" | "K" => 1,
                "M" => 2,
                "G" => 3,
                "T" => 4,
                "P" => 5,
                "E" => 6,
                _ => return None,
            };
            let base: u64 = match rest {
                "" | "iB" if letter != "k" || rest.is_empty() => 1024,
                "B" => 1000,
                _ => return None,
            };
            base.checked_pow(power)?
        }
    };
    n.checked_mul(mult)
}

fn parse(args: impl Iterator<Item = OsString>) -> Result<Settings, String> {
    let mut s = Settings {
        input: None,
        output: None,
        ibs: 512,
        obs: 512,
        bs: false,
        count: None,
        skip: 0,
        seek: 0,
        conv: Conv::default(),
        flags: Flags::default(),
        status: Status::Default,
    };
    for arg in args {
        let text = arg.to_string_lossy();
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!("unrecognized operand {}", quote(&*text)));
        };
        let raw_value = || {
            let b = arg.as_encoded_bytes();
            // SAFETY: split after the ASCII `=`, which keeps the encoding valid.
            unsafe { std::ffi::OsStr::from_encoded_bytes_unchecked(&b[key.len() + 1..]) }
                .to_os_string()
        };
        let size = || parse_size(value).ok_or_else(|| format!("invalid number: {}", quote(value)));
        let block = || -> Result<usize, String> {
            match size()? {
                0 => Err(format!("invalid number: {}", quote(value))),
                n => usize::try_from(n).map_err(|_| format!("invalid number: {}", quote(value))),
            }
        };
        match key {
            "if" => s.input = Some(raw_value()),
            "of" => s.output = Some(raw_value()),
            "bs" => {
                s.ibs = block()?;
                s.obs = s.ibs;
                s.bs = true;
            }
            "ibs" => s.ibs = block()?,
            "obs" => s.obs = block()?,
            "count" => s.count = Some(size()?),
            "skip" | "iseek" => s.skip = size()?,
            "seek" | "oseek" => s.seek = size()?,
            "conv" => {
                for c in value.split(',') {
                    match c {
                        "notrunc" => s.conv.notrunc = true,
                        "sync" => s.conv.sync = true,
                        "noerror" => s.conv.noerror = true,
                        "fsync" | "fdatasync" => s.conv.fsync = true,
                        "excl" => s.conv.excl = true,
                        "nocreat" => s.conv.nocreat = true,
                        "lcase" => s.conv.lcase = true,
                        "ucase" => s.conv.ucase = true,
                        _ => return Err(format!("invalid conversion: {}", quote(c))),
                    }
                }
            }
            "iflag" | "oflag" => {
                for f in value.split(',') {
                    match (key, f) {
                        ("iflag", "skip_bytes") => s.flags.skip_bytes = true,
                        ("iflag", "count_bytes") => s.flags.count_bytes = true,
                        ("iflag", "fullblock") => s.flags.fullblock = true,
                        ("oflag", "seek_bytes") => s.flags.seek_bytes = true,
                        ("oflag", "append") => s.flags.append = true,
                        // Nothing to do for these in a sandbox.
                        (_, "direct" | "dsync" | "sync" | "nonblock" | "noatime" | "nocache") => {}
                        _ => return Err(format!("invalid input flag: {}", quote(f))),
                    }
                }
            }
            "status" => {
                s.status = match value {
                    "none" => Status::None,
                    "noxfer" => Status::NoXfer,
                    "progress" => Status::Default,
                    _ => return Err(format!("invalid status level: {}", quote(value))),
                }
            }
            _ => return Err(format!("unrecognized operand {}", quote(&*text))),
        }
    }
    if s.conv.lcase && s.conv.ucase {
        return Err("cannot combine lcase and ucase".into());
    }
    if s.conv.excl && s.conv.nocreat {
        return Err("cannot combine excl and nocreat".into());
    }
    Ok(s)
}

/// Standard input or output as an unbuffered file (closed by nobody: it is not ours).
fn std_file(fd: i32) -> ManuallyDrop<fs::File> {
    // SAFETY: fds 0 and 1 stay open for the life of the process, and `ManuallyDrop` keeps
    // this handle from closing them.
    ManuallyDrop::new(unsafe { fs::File::from_raw_fd(fd) })
}

/// Records and bytes moved so far.
#[derive(Debug, Default)]
struct Counts {
    /// Files are open and in place: worth a summary even after an error.
    started: bool,
    full_in: u64,
    partial_in: u64,
    full_out: u64,
    partial_out: u64,
    bytes: u64,
}

/// `1.0 kB` / `1.0 KiB` as GNU dd shows byte counts (one decimal below 10) and rates (`rate`:
/// one decimal below 100), rounded to nearest.
fn human(n: f64, base: f64, iec: bool, rate: bool) -> String {
    let prefixes = ["k", "M", "G", "T", "P", "E", "Z", "Y"];
    if n < base {
        return format!("{n} B");
    }
    let mut v = n;
    let mut i = 0;
    while v >= base && i < prefixes.len() {
        v /= base;
        i += 1;
    }
    let mut prefix = prefixes[i - 1].to_string();
    if iec {
        prefix = prefix.to_uppercase() + "i";
    }
    let one_decimal = format!("{v:.1}");
    let limit = if rate { 4 } else { 3 };
    if one_decimal.len() <= limit {
        format!("{one_decimal} {prefix}B")
    } else {
        format!("{v:.0} {prefix}B")
    }
}

/// A number as C's `%g` prints it: six significant digits, no trailing zeros, exponent form
/// for very small or large values.
fn format_g(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exp = v.abs().log10().floor() as i32;
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-4..6).contains(&exp) {
        let mantissa = v / 10f64.powi(exp);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(format!("{mantissa:.5}")), exp.abs())
    } else {
        let decimals = usize::try_from(5 - exp).unwrap_or(0);
        trim(format!("{v:.decimals$}"))
    }
}

fn summary(c: &Counts, status: Status, elapsed: f64) {
    if status == Status::None {
        return;
    }
    let mut text = format!(
        "{}+{} records in\n{}+{} records out\n",
        c.full_in, c.partial_in, c.full_out, c.partial_out
    );
    if status == Status::Default {
        let bytes = c.bytes as f64;
        let rate = if elapsed > 0.0 {
            let r = human((bytes / elapsed).floor(), 1000.0, false, true);
            format!("{r}/s")
        } else {
            "Infinity B/s".to_string()
        };
        let what = if c.bytes == 1 { "byte" } else { "bytes" };
        let amount = if c.bytes < 1000 {
            format!("{} {what}", c.bytes)
        } else if c.bytes < 1024 {
            format!(
                "{} {what} ({})",
                c.bytes,
                human(bytes, 1000.0, false, false)
            )
        } else {
            format!(
                "{} {what} ({}, {})",
                c.bytes,
                human(bytes, 1000.0, false, false),
                human(bytes, 1024.0, true, false)
            )
        };
        text.push_str(&format!(
            "{amount} copied, {} s, {rate}\n",
            format_g(elapsed)
        ));
    }
    let _ = io::stderr().write_all(text.as_bytes());
}

/// Reads one input block: a single read, or until full with `iflag=fullblock`.
fn read_block(input: &mut dyn Read, buf: &mut [u8], full: bool) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if !full {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn copy(s: &Settings, counts: &mut Counts) -> Result<(), String> {
    let in_name = s.input.clone().unwrap_or_else(|| "standard input".into());
    let out_name = s.output.clone().unwrap_or_else(|| "standard output".into());
    let input = match &s.input {
        Some(p) => Handle::Named(
            fs::File::open(p)
                .map_err(|e| format!("failed to open {}: {}", quote(p), strerror(&e)))?,
        ),
        None => Handle::Std(std_file(0)),
    };
    let mut input = input.file();
    let output = match &s.output {
        Some(p) => {
            let mut o = fs::OpenOptions::new();
            o.write(true);
            if s.flags.append {
                o.append(true);
            }
            if s.conv.excl {
                o.create_new(true);
            } else if !s.conv.nocreat {
                o.create(true);
            }
            Handle::Named(
                o.open(p)
                    .map_err(|e| format!("failed to open {}: {}", quote(p), strerror(&e)))?,
            )
        }
        None => Handle::Std(std_file(1)),
    };
    let skip = if s.flags.skip_bytes {
        s.skip
    } else {
        s.skip.saturating_mul(s.ibs as u64)
    };
    if skip > 0 && input.stream_position().is_ok() {
        input
            .seek(SeekFrom::Current(i64::try_from(skip).unwrap_or(i64::MAX)))
            .map_err(|e| format!("{}: cannot skip: {}", quote(&in_name), strerror(&e)))?;
    } else if skip > 0 {
        let skipped = io::copy(&mut input.take(skip), &mut io::sink())
            .map_err(|e| format!("{}: cannot skip: {}", quote(&in_name), strerror(&e)))?;
        if skipped < skip {
            warn(
                TOOL,
                format!("{}: cannot skip to specified offset", quote(&in_name)),
            );
        }
    }
    let seek = if s.flags.seek_bytes {
        s.seek
    } else {
        s.seek.saturating_mul(s.obs as u64)
    };
    if s.output.is_some() && !s.conv.notrunc && !s.flags.append {
        if let Some(f) = output
            .named()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
        {
            f.set_len(seek).map_err(|e| {
                format!(
                    "failed to truncate to {seek} bytes in output file {}: {}",
                    quote(&out_name),
                    strerror(&e)
                )
            })?;
        }
    }
    let mut out = output.file();
    if seek > 0 {
        out.seek(SeekFrom::Start(seek))
            .map_err(|e| format!("{}: cannot seek: {}", quote(&out_name), strerror(&e)))?;
    }
    counts.started = true;
    let mut buf = vec![0u8; s.ibs];
    let mut pending: Vec<u8> = Vec::new();
    let mut left = s.count;
    let write_out = |mut out: &fs::File, data: &[u8], counts: &mut Counts| {
        out.write_all(data)
            .map_err(|e| format!("error writing {}: {}", quote(&out_name), strerror(&e)))?;
        if data.len() == s.obs {
            counts.full_out += 1;
        } else {
            counts.partial_out += 1;
        }
        counts.bytes += data.len() as u64;
        Ok::<(), String>(())
    };
    loop {
        let want = match left {
            Some(0) => break,
            Some(n) if s.flags.count_bytes => {
                buf.len().min(usize::try_from(n).unwrap_or(usize::MAX))
            }
            _ => buf.len(),
        };
        let mut n = match read_block(&mut input, &mut buf[..want], s.flags.fullblock) {
            Ok(n) => n,
            Err(e) if s.conv.noerror => {
                warn(
                    TOOL,
                    format!("error reading {}: {}", quote(&in_name), strerror(&e)),
                );
                counts.partial_in += 1;
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "error reading {}: {}",
                    quote(&in_name),
                    strerror(&e)
                ))
            }
        };
        if n == 0 {
            break;
        }
        if n == s.ibs {
            counts.full_in += 1;
        } else {
            counts.partial_in += 1;
        }
        left = left.map(|l| {
            if s.flags.count_bytes {
                l.saturating_sub(n as u64)
            } else {
                l - 1
            }
        });
        if s.conv.sync && n < s.ibs {
            buf[n..].fill(0);
            n = s.ibs;
        }
        let block = &mut buf[..n];
        if s.conv.lcase {
            block.make_ascii_lowercase();
        } else if s.conv.ucase {
            block.make_ascii_uppercase();
        }
        if s.bs {
            write_out(out, block, counts)?;
            continue;
        }
        pending.extend_from_slice(block);
        while pending.len() >= s.obs {
            let rest = pending.split_off(s.obs);
            write_out(out, &pending, counts)?;
            pending = rest;
        }
    }
    if !pending.is_empty() {
        write_out(out, &pending, counts)?;
    }
    out.flush()
        .map_err(|e| format!("error writing {}: {}", quote(&out_name), strerror(&e)))?;
    if s.conv.fsync {
        if let Some(f) = output.named() {
            f.sync_all()
                .map_err(|e| format!("fsync failed for {}: {}", quote(&out_name), strerror(&e)))?;
        }
    }
    Ok(())
}

/// A file dd reads or writes: one it opened, or standard input/output.
enum Handle {
    Named(fs::File),
    Std(ManuallyDrop<fs::File>),
}

impl Handle {
    fn file(&self) -> &fs::File {
        match self {
            Handle::Named(f) => f,
            Handle::Std(f) => f,
        }
    }

    /// The file when it was named by `if=`/`of=` (standard output is never truncated).
    fn named(&self) -> Option<&fs::File> {
        match self {
            Handle::Named(f) => Some(f),
            Handle::Std(_) => None,
        }
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    if util::help_or_version(TOOL, &args, USAGE) {
        return 0;
    }
    let mut rest = util::rest(args).peekable();
    if rest.peek().is_some_and(|a| a == "--") {
        rest.next();
    }
    let settings = match parse(rest) {
        Ok(s) => s,
        Err(e) => {
            warn(TOOL, e);
            return 1;
        }
    };
    let start = Instant::now();
    let mut counts = Counts::default();
    let result = copy(&settings, &mut counts);
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            warn(TOOL, e);
            1
        }
    };
    if counts.started {
        summary(&counts, settings.status, start.elapsed().as_secs_f64());
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, want) in [
            ("12", Some(12)),
            ("1k", Some(1024)),
            ("1K", Some(1024)),
            ("1kB", Some(1000)),
            ("2M", Some(2 << 20)),
            ("1MiB", Some(1 << 20)),
            ("1MB", Some(1_000_000)),
            ("2b", Some(1024)),
            ("2w", Some(4)),
            ("2x512", Some(1024)),
            ("", None),
            ("x", None),
            ("1Q", None),
        ] {
            assert_eq!(parse_size(s), want, "{s}");
        }
    }

    #[test]
    fn human_counts() {
        assert_eq!(human(1024.0, 1000.0, false, false), "1.0 kB");
        assert_eq!(human(1024.0, 1024.0, true, false), "1.0 KiB");
        assert_eq!(human(1_048_576.0, 1000.0, false, false), "1.0 MB");
        assert_eq!(human(20_000.0, 1000.0, false, false), "20 kB");
        assert_eq!(human(26_200_000.0, 1000.0, false, true), "26.2 MB");
        assert_eq!(human(389_000.0, 1000.0, false, true), "389 kB");
        assert_eq!(format_g(0.000123456), "0.000123456");
        assert_eq!(format_g(1.5e-5), "1.5e-05");
        assert_eq!(format_g(2.0), "2");
    }
}
