//! A small GNU `getopt_long`-style parser: clustered short options (`-Rv`), option values
//! attached or separate (`-m755`, `-m 755`, `--mode=755`, `--mode 755`), unambiguous long
//! prefixes, `--` ending the options, and operands mixed with options (unless
//! [`Parser::stop_at_operand`] is set, as `env` and `xargs` need).

use std::ffi::{OsStr, OsString};

/// One option a tool accepts.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// The name the tool matches on.
    pub key: &'static str,
    pub short: Option<char>,
    pub long: Option<&'static str>,
    /// Whether the option takes a value.
    pub value: bool,
}

impl Opt {
    /// A flag with a short and a long name.
    pub const fn flag(key: &'static str, short: char, long: &'static str) -> Self {
        Opt {
            key,
            short: Some(short),
            long: Some(long),
            value: false,
        }
    }

    /// A flag with only a short name.
    pub const fn short(key: &'static str, short: char) -> Self {
        Opt {
            key,
            short: Some(short),
            long: None,
            value: false,
        }
    }

    /// A flag with only a long name.
    pub const fn long(key: &'static str, long: &'static str) -> Self {
        Opt {
            key,
            short: None,
            long: Some(long),
            value: false,
        }
    }

    /// The same option, taking a value.
    pub const fn with_value(self) -> Self {
        Opt {
            value: true,
            ..self
        }
    }
}

/// What the parser found.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Options in command-line order, with their values.
    pub opts: Vec<(&'static str, Option<OsString>)>,
    pub operands: Vec<OsString>,
}

impl Parsed {
    /// Whether option `key` was given.
    pub fn has(&self, key: &str) -> bool {
        self.opts.iter().any(|(k, _)| *k == key)
    }

    /// The last value of option `key`.
    pub fn value(&self, key: &str) -> Option<&OsStr> {
        self.opts
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of option `key`, in order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a OsStr> + 'a {
        self.opts
            .iter()
            .filter(move |(k, _)| *k == key)
            .filter_map(|(_, v)| v.as_deref())
    }

    /// The last value of `key` as UTF-8 text.
    pub fn str_value(&self, key: &str) -> Result<Option<&str>, String> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .ok_or_else(|| format!("invalid argument {}", v.to_string_lossy())),
        }
    }
}

/// The option table of one tool.
#[derive(Debug, Clone, Copy)]
pub struct Parser {
    pub opts: &'static [Opt],
    /// Options end at the first operand (`env`, `xargs`, ...).
    pub stop_at_operand: bool,
}

impl Parser {
    pub const fn new(opts: &'static [Opt]) -> Self {
        Parser {
            opts,
            stop_at_operand: false,
        }
    }

    pub const fn stop_at_operand(self) -> Self {
        Parser {
            stop_at_operand: true,
            ..self
        }
    }

    fn find_long(&self, name: &str) -> Result<&Opt, String> {
        if let Some(o) = self.opts.iter().find(|o| o.long == Some(name)) {
            return Ok(o);
        }
        let mut matches = self
            .opts
            .iter()
            .filter(|o| o.long.is_some_and(|l| l.starts_with(name)));
        match (matches.next(), matches.next()) {
            (Some(o), None) => Ok(o),
            (Some(_), Some(_)) => Err(format!("option '--{name}' is ambiguous")),
            _ => Err(format!("unrecognized option '--{name}'")),
        }
    }

    /// Parses `args` (without `argv[0]`).
    pub fn parse<I: IntoIterator<Item = OsString>>(&self, args: I) -> Result<Parsed, String> {
        let mut out = Parsed::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let bytes = arg.as_encoded_bytes();
            if bytes == b"--" {
                out.operands.extend(it.by_ref());
                break;
            }
            if bytes.len() < 2 || bytes[0] != b'-' {
                out.operands.push(arg);
                if self.stop_at_operand {
                    out.operands.extend(it.by_ref());
                    break;
                }
                continue;
            }
            let text = arg
                .to_str()
                .ok_or_else(|| format!("invalid option '{}'", arg.to_string_lossy()))?;
            if let Some(long) = text.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(OsString::from(v))),
                    None => (long, None),
                };
                let opt = self.find_long(name)?;
                let long_name = opt.long.unwrap_or(name);
                let value =
                    match (opt.value, inline) {
                        (true, Some(v)) => Some(v),
                        (true, None) => Some(it.next().ok_or_else(|| {
                            format!("option '--{long_name}' requires an argument")
                        })?),
                        (false, Some(_)) => {
                            return Err(format!("option '--{long_name}' doesn't allow an argument"))
                        }
                        (false, None) => None,
                    };
                out.opts.push((opt.key, value));
                continue;
            }
            let cluster = &text[1..];
            for (i, c) in cluster.char_indices() {
                let opt = self
                    .opts
                    .iter()
                    .find(|o| o.short == Some(c))
                    .ok_or_else(|| format!("invalid option -- '{c}'"))?;
                if opt.value {
                    let rest = &cluster[i + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        it.next()
                            .ok_or_else(|| format!("option requires an argument -- '{c}'"))?
                    } else {
                        OsString::from(rest)
                    };
                    out.opts.push((opt.key, Some(value)));
                    break;
                }
                out.opts.push((opt.key, None));
            }
        }
        Ok(out)
    }
}

/// Renames `--NAME=VALUE` arguments of options whose value is optional (`--color[=WHEN]`) to
/// `--KEY=VALUE` for a separate option taking a value, up to `--`.
pub fn rename_optional_values<I: IntoIterator<Item = OsString>>(
    args: I,
    renames: &'static [(&'static str, &'static str)],
) -> impl Iterator<Item = OsString> {
    let mut options_end = false;
    args.into_iter().map(move |a| {
        options_end |= a == "--";
        if options_end {
            return a;
        }
        let Some(text) = a.to_str() else {
            return a;
        };
        for (name, key) in renames {
            if let Some(value) = text.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return OsString::from(format!("{key}={value}"));
            }
        }
        a
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: &[Opt] = &[
        Opt::flag("recursive", 'R', "recursive"),
        Opt::short("v", 'v'),
        Opt::flag("mode", 'm', "mode").with_value(),
        Opt::long("reference", "reference").with_value(),
    ];

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn clusters_values_and_operands() {
        let p = Parser::new(OPTS)
            .parse(os(&["-Rvm755", "a", "--mode", "644", "b", "--", "-v"]))
            .expect("parses");
        assert!(p.has("recursive") && p.has("v"));
        assert_eq!(p.value("mode"), Some(OsStr::new("644")));
        assert_eq!(p.operands, os(&["a", "b", "-v"]));
    }

    #[test]
    fn long_prefixes_and_errors() {
        let p = Parser::new(OPTS)
            .parse(os(&["--rec", "--ref=x"]))
            .expect("parses");
        assert!(p.has("recursive"));
        assert_eq!(p.value("reference"), Some(OsStr::new("x")));
        assert!(Parser::new(OPTS).parse(os(&["--re"])).is_err());
        assert!(Parser::new(OPTS).parse(os(&["-q"])).is_err());
        assert!(Parser::new(OPTS).parse(os(&["-m"])).is_err());
    }

    #[test]
    fn stops_at_first_operand() {
        let p = Parser::new(OPTS)
            .stop_at_operand()
            .parse(os(&["-v", "cmd", "-R"]))
            .expect("parses");
        assert_eq!(p.operands, os(&["cmd", "-R"]));
        assert!(!p.has("recursive"));
    }
}
