//! Typed instructions: each [`Node`] checked and turned into an [`Instruction`], with the rules
//! and error messages of BuildKit's `frontend/dockerfile/instructions/parse.go`.
//!
//! Values that the builder expands (`$VAR`) stay exactly as written: FROM's image and
//! platform, COPY/ADD paths and flags, ENV/LABEL keys and values, WORKDIR, USER, EXPOSE,
//! VOLUME, STOPSIGNAL, ARG defaults and mount values. The planner expands them with the shell
//! lexer, in the scope it tracks. What BuildKit checks before expansion is checked here, and
//! only that, so kiln accepts and rejects the same Dockerfiles as `docker build`: flags
//! (unknown, duplicated, missing values), argument counts, stage names, HEALTHCHECK durations,
//! `--network`/`--security` modes, the CSV of `--mount` and `--device`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::ast::{Dockerfile, Heredoc, Node};
use super::error::{FlagError, ParseError, ParseErrorKind};
use super::gocompat::{go_lower, go_upper, parse_duration, parse_int32, suggest, NumError};
use super::heredoc::{chomp, parse_heredoc};
use super::mount::{Device, MountSpec};

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The instruction.
    pub value: T,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (last continuation line or heredoc terminator).
    pub end_line: usize,
    /// The instruction's text as written, continuations joined (image history `created_by`).
    pub original: String,
}

/// One Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM [--platform=…] image [AS name]`.
    From(FromArgs),
    /// `ARG name[=default] …`.
    Arg(Vec<ArgDef>),
    /// `ENV key=value …` or `ENV key value`.
    Env(Vec<KeyValue>),
    /// `LABEL key=value …`.
    Label(Vec<KeyValue>),
    /// `RUN`.
    Run(RunArgs),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `SHELL ["executable", "parameters"]`.
    Shell(Vec<String>),
    /// `COPY`.
    Copy(CopyArgs),
    /// `ADD`.
    Add(AddArgs),
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `EXPOSE port[/proto] …`, as written (ranges and variables are the planner's).
    Expose(Vec<String>),
    /// `VOLUME path …` (each trimmed).
    Volume(Vec<String>),
    /// `STOPSIGNAL signal`.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD instruction`: the trigger text stored in the image config, run (and only then
    /// parsed and checked) by builds that use this image as a base, as `docker build` does.
    Onbuild(String),
    /// `MAINTAINER name` (deprecated: a label in all but name).
    Maintainer(String),
}

/// A command line in exec form (JSON array) or shell form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `["executable", "arg"]`: run as is.
    Exec(Vec<String>),
    /// Anything else: run with the stage's shell (`/bin/sh -c`), empty when nothing was given.
    Shell(String),
}

/// `FROM`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromArgs {
    /// The base image or stage, as written.
    pub image: String,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// `--platform=…`, as written.
    pub platform: Option<String>,
}

/// One `ARG` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    /// The name (quotes and escapes still in it).
    pub name: String,
    /// The default after `=`, as written.
    pub default: Option<String>,
}

/// One `ENV` or `LABEL` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, as written.
    pub key: String,
    /// The value, as written (quotes and escapes still in it).
    pub value: String,
    /// Written in the legacy `KEY value` form (no `=`).
    pub legacy: bool,
}

/// `RUN`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// The command.
    pub command: Command,
    /// Heredoc bodies (un-chomped; [`super::heredoc::chomp`] them when `chomp` is set).
    pub heredocs: Vec<Heredoc>,
    /// `--mount=…` flags, checked as far as possible before expansion.
    pub mounts: Vec<MountSpec>,
    /// `--network=…`.
    pub network: Network,
    /// `--security=…`.
    pub security: Security,
    /// `--device=…` flags.
    pub devices: Vec<Device>,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The builder's default.
    Default,
    /// No network at all.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// The normal sandbox.
    Sandbox,
    /// Fewer restrictions (needs the builder's permission).
    Insecure,
}

/// A COPY or ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path (or URL, for ADD), as written.
    Path(String),
    /// A heredoc used as a file: `COPY <<EOF /dest`.
    Inline(InlineFile),
}

/// A file whose content is a heredoc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc name, used as the file name.
    pub name: String,
    /// The content, leading tabs already removed for `<<-`.
    pub content: String,
    /// Whether the builder expands variables in the content (the delimiter was not quoted).
    pub expand: bool,
}

/// `COPY`'s arguments. Empty flag values count as not given, as in BuildKit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    /// The sources.
    pub sources: Vec<Source>,
    /// The destination, as written.
    pub dest: String,
    /// `--from=stage|image`.
    pub from: Option<String>,
    /// `--chown=user:group`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--exclude=pattern`, repeatable.
    pub excludes: Vec<String>,
    /// `--parents`.
    pub parents: bool,
}

/// `ADD`'s arguments. Empty flag values count as not given, as in BuildKit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddArgs {
    /// The sources (paths, URLs, git repositories, heredocs).
    pub sources: Vec<Source>,
    /// The destination, as written.
    pub dest: String,
    /// `--chown=user:group`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--exclude=pattern`, repeatable.
    pub excludes: Vec<String>,
    /// `--keep-git-dir[=bool]`, when given.
    pub keep_git_dir: Option<bool>,
    /// `--checksum=digest`.
    pub checksum: Option<String>,
    /// `--unpack[=bool]`, when given.
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    Disable,
    /// `HEALTHCHECK [flags] CMD …`.
    Check(HealthcheckConfig),
}

/// A health check. Zero durations and retries mean "not set" (the runtime default), as in the
/// image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckConfig {
    /// The test (`CMD` for exec form, `CMD-SHELL` for shell form in the image config).
    pub test: Command,
    /// `--interval`.
    pub interval: Duration,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--start-period`.
    pub start_period: Duration,
    /// `--start-interval`.
    pub start_interval: Duration,
    /// `--retries`.
    pub retries: u32,
}

/// Checks every instruction of `df` and types it, in order. Also rejects an instruction other
/// than `ARG` before the first `FROM`, as BuildKit does.
pub fn instructions(df: &Dockerfile) -> Result<Vec<Spanned<Instruction>>, ParseError> {
    let mut out = Vec::with_capacity(df.instructions.len());
    let mut in_stage = false;
    for node in &df.instructions {
        let at = |kind| ParseError {
            line: node.start_line,
            kind,
        };
        let value = instruction(node).map_err(at)?;
        match value {
            Instruction::From(_) => in_stage = true,
            Instruction::Arg(_) => {}
            _ if !in_stage => return Err(at(ParseErrorKind::NoStage)),
            _ => {}
        }
        out.push(Spanned {
            value,
            start_line: node.start_line,
            end_line: node.end_line,
            original: node.original.trim().to_string(),
        });
    }
    Ok(out)
}

/// Every instruction name, for "did you mean" suggestions.
const INSTRUCTION_NAMES: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Checks and types one instruction (BuildKit's `ParseInstruction`).
pub fn instruction(node: &Node) -> Result<Instruction, ParseErrorKind> {
    let args = &node.args;
    let no_flags = || parse_flags(&node.flags, &[]).map(drop);
    Ok(match node.keyword.as_str() {
        "env" => {
            no_flags()?;
            Instruction::Env(key_values(args, "ENV")?)
        }
        "maintainer" => {
            let one = exactly_one(args, "MAINTAINER")?;
            no_flags()?;
            Instruction::Maintainer(one)
        }
        "label" => {
            no_flags()?;
            Instruction::Label(key_values(args, "LABEL")?)
        }
        "add" => Instruction::Add(add(node)?),
        "copy" => Instruction::Copy(copy(node)?),
        "from" => Instruction::From(from(node)?),
        "onbuild" => Instruction::Onbuild(onbuild(node)?),
        "workdir" => {
            let one = exactly_one(args, "WORKDIR")?;
            no_flags()?;
            Instruction::Workdir(one)
        }
        "run" => Instruction::Run(run(node)?),
        "cmd" => {
            no_flags()?;
            Instruction::Cmd(command(args, node.json))
        }
        "entrypoint" => {
            no_flags()?;
            Instruction::Entrypoint(command(args, node.json))
        }
        "healthcheck" => Instruction::Healthcheck(healthcheck(node)?),
        "expose" => {
            at_least_one(args, "EXPOSE")?;
            no_flags()?;
            Instruction::Expose(args.clone())
        }
        "user" => {
            let one = exactly_one(args, "USER")?;
            no_flags()?;
            Instruction::User(one)
        }
        "volume" => {
            at_least_one(args, "VOLUME")?;
            no_flags()?;
            let volumes = args
                .iter()
                .map(|v| match v.trim() {
                    "" => Err(ParseErrorKind::EmptyVolume),
                    v => Ok(v.to_string()),
                })
                .collect::<Result<_, _>>()?;
            Instruction::Volume(volumes)
        }
        // BuildKit checks no flags for STOPSIGNAL and ARG.
        "stopsignal" => Instruction::StopSignal(exactly_one(args, "STOPSIGNAL")?),
        "arg" => Instruction::Arg(arg(args)?),
        "shell" => {
            no_flags()?;
            if args.is_empty() {
                return Err(ParseErrorKind::AtLeastOneArgument("SHELL"));
            }
            if !node.json {
                return Err(ParseErrorKind::NotJson("SHELL"));
            }
            Instruction::Shell(args.clone())
        }
        _ => {
            return Err(ParseErrorKind::UnknownInstruction {
                instruction: node.raw_keyword.clone(),
                suggestion: suggest(&node.raw_keyword, &INSTRUCTION_NAMES, false),
            })
        }
    })
}

/// BuildKit's `handleJSONArgs`.
fn command(args: &[String], json: bool) -> Command {
    if json {
        Command::Exec(args.to_vec())
    } else {
        Command::Shell(args.join(" "))
    }
}

fn at_least_one(args: &[String], instruction: &'static str) -> Result<(), ParseErrorKind> {
    if args.is_empty() {
        return Err(ParseErrorKind::AtLeastOneArgument(instruction));
    }
    Ok(())
}

fn exactly_one(args: &[String], instruction: &'static str) -> Result<String, ParseErrorKind> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(ParseErrorKind::ExactlyOneArgument(instruction)),
    }
}

/// BuildKit's `parseKvps`: the parser's (key, value, separator) triples.
fn key_values(args: &[String], instruction: &'static str) -> Result<Vec<KeyValue>, ParseErrorKind> {
    at_least_one(args, instruction)?;
    if args.len() % 3 != 0 {
        return Err(ParseErrorKind::TooManyArguments(instruction));
    }
    args.chunks_exact(3)
        .map(|kv| {
            if kv[0].is_empty() {
                return Err(ParseErrorKind::BlankName(instruction));
            }
            Ok(KeyValue {
                key: kv[0].clone(),
                value: kv[1].clone(),
                legacy: kv[2].is_empty(),
            })
        })
        .collect()
}

fn arg(args: &[String]) -> Result<Vec<ArgDef>, ParseErrorKind> {
    at_least_one(args, "ARG")?;
    args.iter()
        .map(|a| match a.split_once('=') {
            Some(("", _)) => Err(ParseErrorKind::BlankName("ARG")),
            Some((name, default)) => Ok(ArgDef {
                name: name.to_string(),
                default: Some(default.to_string()),
            }),
            None => Ok(ArgDef {
                name: a.clone(),
                default: None,
            }),
        })
        .collect()
}

fn from(node: &Node) -> Result<FromArgs, ParseErrorKind> {
    let args = &node.args;
    let name = match args.as_slice() {
        [_, as_kw, name] if is_as(as_kw) => {
            let lower = go_lower(name);
            if !valid_stage_name(&lower) {
                return Err(ParseErrorKind::InvalidStageName(name.clone()));
            }
            Some(lower)
        }
        [_] => None,
        _ => return Err(ParseErrorKind::FromArguments),
    };
    let flags = parse_flags(&node.flags, &[("platform", FlagKind::String)])?;
    Ok(FromArgs {
        image: args[0].clone(),
        name,
        platform: flags.non_empty("platform"),
    })
}

/// Go's `strings.EqualFold(s, "as")` (where `ſ` folds to `s`).
fn is_as(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(
        (chars.next(), chars.next(), chars.next()),
        (Some('a' | 'A'), Some('s' | 'S' | 'ſ'), None)
    )
}

/// `^[a-z][a-z0-9-_.]*$`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn onbuild(node: &Node) -> Result<String, ParseErrorKind> {
    let Some(inner) = &node.onbuild else {
        return Err(ParseErrorKind::AtLeastOneArgument("ONBUILD"));
    };
    parse_flags(&node.flags, &[])?;
    let trigger = go_upper(inner.raw_keyword.trim());
    match trigger.as_str() {
        "ONBUILD" => return Err(ParseErrorKind::OnbuildChain),
        "MAINTAINER" | "FROM" => return Err(ParseErrorKind::OnbuildTrigger(trigger)),
        _ => {}
    }
    // BuildKit: regexp `(?i)^\s*ONBUILD\s*` removed from the original text.
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
    let text = node.original.trim_start_matches(is_space);
    let mut expression = match text.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => text[7..].trim_start_matches(is_space),
        _ => node.original.as_str(),
    }
    .to_string();
    for doc in &node.heredocs {
        expression.push('\n');
        expression.push_str(&doc.content);
        expression.push_str(&doc.name);
    }
    Ok(expression)
}

fn run(node: &Node) -> Result<RunArgs, ParseErrorKind> {
    let flags = parse_flags(
        &node.flags,
        &[
            ("device", FlagKind::Strings),
            ("mount", FlagKind::Strings),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
        ],
    )?;
    let devices = flags
        .list("device")
        .iter()
        .map(|d| Device::parse(d))
        .collect::<Result<_, _>>()?;
    let mounts = flags
        .list("mount")
        .iter()
        .map(|m| MountSpec::parse(m))
        .collect::<Result<_, _>>()?;
    let network = match flags.string("network").unwrap_or("default") {
        "default" => Network::Default,
        "none" => Network::None,
        "host" => Network::Host,
        other => return Err(ParseErrorKind::InvalidNetwork(other.to_string())),
    };
    let security = match flags.string("security").unwrap_or("sandbox") {
        "sandbox" => Security::Sandbox,
        "insecure" => Security::Insecure,
        other => return Err(ParseErrorKind::InvalidSecurity(other.to_string())),
    };
    Ok(RunArgs {
        command: command(&node.args, node.json),
        heredocs: node.heredocs.clone(),
        mounts,
        network,
        security,
        devices,
    })
}

fn copy(node: &Node) -> Result<CopyArgs, ParseErrorKind> {
    if node.args.len() < 2 {
        return Err(ParseErrorKind::NoDestination("COPY"));
    }
    let flags = parse_flags(
        &node.flags,
        &[
            ("chown", FlagKind::String),
            ("from", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
            ("parents", FlagKind::Bool),
        ],
    )?;
    let (sources, dest) = sources_and_dest(node, "COPY")?;
    Ok(CopyArgs {
        sources,
        dest,
        from: flags.non_empty("from"),
        chown: flags.non_empty("chown"),
        chmod: flags.non_empty("chmod"),
        link: flags.bool("link") == Some(true),
        excludes: flags.list("exclude").to_vec(),
        parents: flags.bool("parents") == Some(true),
    })
}

fn add(node: &Node) -> Result<AddArgs, ParseErrorKind> {
    if node.args.len() < 2 {
        return Err(ParseErrorKind::NoDestination("ADD"));
    }
    let flags = parse_flags(
        &node.flags,
        &[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::String),
            ("unpack", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ],
    )?;
    let (sources, dest) = sources_and_dest(node, "ADD")?;
    Ok(AddArgs {
        sources,
        dest,
        chown: flags.non_empty("chown"),
        chmod: flags.non_empty("chmod"),
        link: flags.bool("link") == Some(true),
        excludes: flags.list("exclude").to_vec(),
        keep_git_dir: flags.bool("keep-git-dir"),
        checksum: flags.non_empty("checksum"),
        unpack: flags.bool("unpack"),
    })
}

/// BuildKit's `parseSourcesAndDest`: sources that read as heredocs take the body of the
/// heredoc of that name.
fn sources_and_dest(
    node: &Node,
    instruction: &'static str,
) -> Result<(Vec<Source>, String), ParseErrorKind> {
    let Some((dest, srcs)) = node.args.split_last() else {
        return Err(ParseErrorKind::NoDestination(instruction));
    };
    if matches!(parse_heredoc(dest), Ok(Some(_))) {
        return Err(ParseErrorKind::HeredocDestination(instruction));
    }
    let bodies: HashMap<&str, &str> = node
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.content.as_str()))
        .collect();
    let sources = srcs
        .iter()
        .map(|src| match parse_heredoc(src) {
            Ok(Some(h)) => {
                let body = bodies.get(h.name.as_str()).copied().unwrap_or_default();
                Source::Inline(InlineFile {
                    content: if h.chomp {
                        chomp(body)
                    } else {
                        body.to_string()
                    },
                    expand: h.expand,
                    name: h.name,
                })
            }
            _ => Source::Path(src.clone()),
        })
        .collect();
    Ok((sources, dest.clone()))
}

fn healthcheck(node: &Node) -> Result<Healthcheck, ParseErrorKind> {
    let Some((typ, rest)) = node.args.split_first() else {
        return Err(ParseErrorKind::AtLeastOneArgument("HEALTHCHECK"));
    };
    let typ = go_upper(typ);
    if typ == "NONE" {
        // BuildKit checks no flags here.
        if !rest.is_empty() {
            return Err(ParseErrorKind::HealthcheckNoneArguments);
        }
        return Ok(Healthcheck::Disable);
    }
    let flags = parse_flags(
        &node.flags,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    if typ != "CMD" {
        return Err(ParseErrorKind::HealthcheckType(typ));
    }
    if rest.is_empty() {
        return Err(ParseErrorKind::HealthcheckMissingCommand);
    }
    let interval = |name| optional_interval(&flags, name);
    let retries = match flags.string("retries").unwrap_or_default() {
        "" => 0,
        v => match parse_int32(v) {
            Ok(n) if n < 0 => return Err(ParseErrorKind::NegativeRetries(n)),
            Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
            Err(e) => {
                return Err(ParseErrorKind::Retries {
                    value: v.to_string(),
                    out_of_range: e == NumError::Range,
                })
            }
        },
    };
    Ok(Healthcheck::Check(HealthcheckConfig {
        test: command(rest, node.json),
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}

/// BuildKit's `parseOptInterval`: empty or zero is "not set"; otherwise at least 1ms.
fn optional_interval(flags: &Flags, name: &'static str) -> Result<Duration, ParseErrorKind> {
    let value = flags.string(name).unwrap_or_default();
    if value.is_empty() {
        return Ok(Duration::ZERO);
    }
    let nanos =
        parse_duration(value).map_err(|source| ParseErrorKind::Duration { flag: name, source })?;
    match u64::try_from(nanos) {
        Ok(0) => Ok(Duration::ZERO),
        Ok(n) if n >= 1_000_000 => Ok(Duration::from_nanos(n)),
        _ => Err(ParseErrorKind::IntervalTooShort(name)),
    }
}

/// The kinds of instruction flags (BuildKit's `BFlags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--link`, `--link=true|false`.
    Bool,
    /// `--from=x`, once.
    String,
    /// `--exclude=x`, repeatable.
    Strings,
}

/// Flags read against an instruction's flag set.
#[derive(Default)]
struct Flags {
    used: HashSet<&'static str>,
    bools: HashMap<&'static str, bool>,
    strings: HashMap<&'static str, String>,
    lists: HashMap<&'static str, Vec<String>>,
}

impl Flags {
    /// A bool flag's value, when given.
    fn bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }

    /// A string flag's value, when given.
    fn string(&self, name: &str) -> Option<&str> {
        self.strings.get(name).map(String::as_str)
    }

    /// A string flag's value, when given and not empty.
    fn non_empty(&self, name: &str) -> Option<String> {
        self.string(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// A repeatable flag's values.
    fn list(&self, name: &str) -> &[String] {
        self.lists.get(name).map_or(&[], Vec::as_slice)
    }
}

/// BuildKit's `BFlags.Parse`.
fn parse_flags(words: &[String], specs: &[(&'static str, FlagKind)]) -> Result<Flags, FlagError> {
    let mut flags = Flags::default();
    for word in words {
        if word == "--" {
            break;
        }
        let Some(body) = word.strip_prefix("--") else {
            return Err(FlagError::NotAFlag(word.clone()));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let flag = format!("--{name}");
        let Some(&(name, kind)) = specs.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = specs.iter().map(|(n, _)| *n).collect();
            return Err(FlagError::Unknown {
                suggestion: suggest(name, &names, true),
                flag,
            });
        };
        if !flags.used.insert(name) && kind != FlagKind::Strings {
            return Err(FlagError::Duplicate(flag));
        }
        match (kind, value) {
            (FlagKind::Bool, Some("")) | (FlagKind::String | FlagKind::Strings, None) => {
                return Err(FlagError::MissingValue(flag))
            }
            (FlagKind::Bool, None) => {
                flags.bools.insert(name, true);
            }
            (FlagKind::Bool, Some(v)) => {
                let b = match go_lower(v).as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(FlagError::NotBool {
                            flag,
                            value: v.to_string(),
                        })
                    }
                };
                flags.bools.insert(name, b);
            }
            (FlagKind::String, Some(v)) => {
                flags.strings.insert(name, v.to_string());
            }
            (FlagKind::Strings, Some(v)) => {
                flags.lists.entry(name).or_default().push(v.to_string());
            }
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::mount::{MountError, MountType};
    use crate::dockerfile::parse;

    fn one(text: &str) -> Result<Instruction, ParseError> {
        let df = parse(&format!("FROM scratch\n{text}\n"))?;
        instructions(&df).map(|mut v| v.remove(1).value)
    }

    fn err(text: &str) -> String {
        match one(text) {
            Ok(i) => panic!("{text:?} was accepted as {i:?}"),
            Err(e) => {
                assert_eq!(e.line, 2, "{text:?}");
                e.kind.to_string()
            }
        }
    }

    #[test]
    fn from_forms() {
        let df = parse("FROM --platform=$BUILDPLATFORM golang:1.22 AS Build\n").unwrap();
        let got = instructions(&df).unwrap();
        assert_eq!(
            got[0].value,
            Instruction::From(FromArgs {
                image: "golang:1.22".into(),
                name: Some("build".into()),
                platform: Some("$BUILDPLATFORM".into()),
            })
        );
        assert_eq!(
            got[0].original,
            "FROM --platform=$BUILDPLATFORM golang:1.22 AS Build"
        );
        let e = |t: &str| {
            instructions(&parse(t).unwrap())
                .unwrap_err()
                .kind
                .to_string()
        };
        assert_eq!(e("FROM a b"), "FROM requires either one or three arguments");
        assert_eq!(
            e("FROM a AS b c"),
            "FROM requires either one or three arguments"
        );
        assert_eq!(
            e("FROM a AS 1x"),
            "invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
        );
        assert_eq!(
            e("FROM --platfrom=x a"),
            "unknown flag: --platfrom (did you mean platform?)"
        );
        assert_eq!(e("FROM --plat=x a"), "unknown flag: --plat");
        assert!(instructions(&parse("FROM a aſ b").unwrap()).is_ok());
    }

    #[test]
    fn stage_is_required_except_for_args() {
        let df = parse("ARG V=1\nFROM a:$V\nARG V\n").unwrap();
        assert_eq!(instructions(&df).unwrap().len(), 3);
        let err = instructions(&parse("ARG V\nENV A=b\nFROM a\n").unwrap()).unwrap_err();
        assert_eq!((err.line, err.kind), (2, ParseErrorKind::NoStage));
    }

    #[test]
    fn unknown_instruction_names_the_word_and_a_suggestion() {
        let e = instructions(&parse("FROM a\n\nRUNN x\n").unwrap()).unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(
            e.to_string(),
            "line 3: unknown instruction: RUNN (did you mean RUN?)"
        );
        assert_eq!(
            err("frob x"),
            "unknown instruction: frob (did you mean from?)"
        );
        assert_eq!(err("xyzzy x"), "unknown instruction: xyzzy");
    }

    #[test]
    fn run_flags() {
        let Instruction::Run(r) = one(
            "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok \
             --network=none --security=insecure pip install x",
        )
        .unwrap() else {
            panic!("not a RUN")
        };
        assert_eq!(r.command, Command::Shell("pip install x".into()));
        assert_eq!(r.network, Network::None);
        assert_eq!(r.security, Security::Insecure);
        assert_eq!(r.mounts.len(), 2);
        let m = r.mounts[0]
            .resolve(|v| Ok::<_, MountError>(v.to_string()))
            .unwrap();
        assert_eq!(
            (m.kind, m.target.as_deref()),
            (MountType::Cache, Some("/root/.cache"))
        );
        assert_eq!(
            err("RUN --network=bridge x"),
            "invalid network mode \"bridge\""
        );
        assert_eq!(
            err("RUN --security=privileged x"),
            "security \"privileged\" is not valid"
        );
        assert_eq!(
            err("RUN --network=none --network=host x"),
            "duplicate flag specified: --network"
        );
        assert_eq!(
            err("RUN --mont=type=cache x"),
            "unknown flag: --mont (did you mean mount?)"
        );
        assert_eq!(err("RUN --network x"), "missing a value on flag: --network");
        assert_eq!(
            err("RUN --mount=from=$X,target=/x x"),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        let Instruction::Run(r) = one(r#"RUN ["echo", "hi"]"#).unwrap() else {
            panic!("not a RUN")
        };
        assert_eq!(r.command, Command::Exec(vec!["echo".into(), "hi".into()]));
    }

    #[test]
    fn copy_and_add_flags() {
        let Instruction::Copy(c) = one(
            "COPY --from=build --chown=1:2 --chmod=755 --link --exclude=*.md --exclude=.git \
             --parents a b /dst/",
        )
        .unwrap() else {
            panic!("not a COPY")
        };
        assert_eq!(
            c.sources,
            [Source::Path("a".into()), Source::Path("b".into())]
        );
        assert_eq!(c.dest, "/dst/");
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(c.chown.as_deref(), Some("1:2"));
        assert_eq!(c.chmod.as_deref(), Some("755"));
        assert!(c.link && c.parents);
        assert_eq!(c.excludes, ["*.md", ".git"]);
        let Instruction::Add(a) = one(
            "ADD --checksum=sha256:abc --keep-git-dir=false --unpack=TRUE --link=false \
             https://x/y.tar /",
        )
        .unwrap() else {
            panic!("not an ADD")
        };
        assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
        assert_eq!(
            (a.keep_git_dir, a.unpack, a.link),
            (Some(false), Some(true), false)
        );
        assert_eq!(err("COPY --from=x a"), "COPY requires at least two arguments, but only one was provided. Destination could not be determined");
        assert_eq!(err("COPY --checksum=x a b"), "unknown flag: --checksum");
        assert_eq!(
            err("ADD --link=yes a b"),
            "expecting boolean value for flag --link, not: yes"
        );
        assert_eq!(err("ADD --link= a b"), "missing a value on flag: --link");
        assert_eq!(
            err("COPY a <<EOF\nx\nEOF"),
            "COPY cannot accept a heredoc as a destination"
        );
    }

    #[test]
    fn heredoc_sources() {
        let Instruction::Copy(c) = one("COPY <<-A <<'B' /dst/\n\tone\nA\n$two\nB").unwrap() else {
            panic!("not a COPY")
        };
        assert_eq!(
            c.sources,
            [
                Source::Inline(InlineFile {
                    name: "A".into(),
                    content: "one\n".into(),
                    expand: true
                }),
                Source::Inline(InlineFile {
                    name: "B".into(),
                    content: "$two\n".into(),
                    expand: false
                }),
            ]
        );
        let Instruction::Run(r) = one("RUN <<EOF\necho hi\nEOF").unwrap() else {
            panic!("not a RUN")
        };
        assert_eq!(r.heredocs.len(), 1);
        assert_eq!(r.heredocs[0].content, "echo hi\n");
    }

    #[test]
    fn healthcheck() {
        let Instruction::Healthcheck(Healthcheck::Check(h)) = one(
            "HEALTHCHECK --interval=1m30s --timeout=3s --start-period=0s --retries=3 \
             CMD curl -f http://localhost/",
        )
        .unwrap() else {
            panic!("not a check")
        };
        assert_eq!(h.test, Command::Shell("curl -f http://localhost/".into()));
        assert_eq!(h.interval, Duration::from_secs(90));
        assert_eq!(h.timeout, Duration::from_secs(3));
        assert_eq!(h.start_period, Duration::ZERO);
        assert_eq!(h.retries, 3);
        assert_eq!(
            one("HEALTHCHECK NONE").unwrap(),
            Instruction::Healthcheck(Healthcheck::Disable)
        );
        assert_eq!(
            err("HEALTHCHECK NONE x"),
            "HEALTHCHECK NONE takes no arguments"
        );
        assert_eq!(
            err("HEALTHCHECK CMD"),
            "missing command after HEALTHCHECK CMD"
        );
        assert_eq!(
            err("HEALTHCHECK CONNECT x"),
            "unknown type \"CONNECT\" in HEALTHCHECK (try CMD)"
        );
        assert_eq!(
            err("HEALTHCHECK --interval=10us CMD x"),
            "interval \"interval\" cannot be less than 1ms"
        );
        assert_eq!(
            err("HEALTHCHECK --timeout=5 CMD x"),
            "--timeout: time: missing unit in duration \"5\""
        );
        assert_eq!(
            err("HEALTHCHECK --retries=-1 CMD x"),
            "--retries cannot be negative (-1)"
        );
        assert_eq!(
            err("HEALTHCHECK --retries=x CMD x"),
            "strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        assert_eq!(err("HEALTHCHECK --foo=1 CMD x"), "unknown flag: --foo");
    }

    #[test]
    fn env_label_arg() {
        assert_eq!(
            one("ENV a=1 b=\"x y\"").unwrap(),
            Instruction::Env(vec![
                KeyValue {
                    key: "a".into(),
                    value: "1".into(),
                    legacy: false
                },
                KeyValue {
                    key: "b".into(),
                    value: "\"x y\"".into(),
                    legacy: false
                },
            ])
        );
        assert_eq!(
            one("LABEL maintainer Jo Doe").unwrap(),
            Instruction::Label(vec![KeyValue {
                key: "maintainer".into(),
                value: "Jo Doe".into(),
                legacy: true
            }])
        );
        assert_eq!(
            one("ARG a b=$c").unwrap(),
            Instruction::Arg(vec![
                ArgDef {
                    name: "a".into(),
                    default: None
                },
                ArgDef {
                    name: "b".into(),
                    default: Some("$c".into())
                },
            ])
        );
        assert_eq!(err("ENV"), "ENV requires at least one argument");
        assert_eq!(err("ENV =x"), "ENV names can not be blank");
        assert_eq!(err("ARG =x"), "ARG names can not be blank");
        assert_eq!(err("ENV --x=1 a=b"), "unknown flag: --x");
        assert!(one("ARG --ignored a").is_ok());
    }

    #[test]
    fn single_argument_instructions() {
        assert_eq!(
            one("WORKDIR /app").unwrap(),
            Instruction::Workdir("/app".into())
        );
        assert_eq!(
            one("USER 1000:1000").unwrap(),
            Instruction::User("1000:1000".into())
        );
        assert_eq!(
            one("STOPSIGNAL SIGTERM").unwrap(),
            Instruction::StopSignal("SIGTERM".into())
        );
        assert_eq!(err("WORKDIR"), "WORKDIR requires exactly one argument");
        assert_eq!(err("USER"), "USER requires exactly one argument");
        assert_eq!(err("EXPOSE"), "EXPOSE requires at least one argument");
        assert_eq!(
            one("VOLUME [\" /data \", \"/b\"]").unwrap(),
            Instruction::Volume(vec!["/data".into(), "/b".into()])
        );
        assert_eq!(
            err("VOLUME [\" \"]"),
            "VOLUME specified can not be an empty string"
        );
        assert_eq!(
            one("SHELL [\"/bin/bash\", \"-c\"]").unwrap(),
            Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
        );
        assert_eq!(
            err("SHELL /bin/bash -c"),
            "SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(err("SHELL []"), "SHELL requires at least one argument");
        assert_eq!(
            one("CMD").unwrap(),
            Instruction::Cmd(Command::Shell(String::new()))
        );
    }

    #[test]
    fn onbuild() {
        assert_eq!(
            one("onbuild  RUN echo hi").unwrap(),
            Instruction::Onbuild("RUN echo hi".into())
        );
        assert_eq!(
            one("ONBUILD RUN <<EOF\necho hi\nEOF").unwrap(),
            Instruction::Onbuild("RUN <<EOF\necho hi\nEOF".into())
        );
        assert_eq!(
            one("ONBUILD RUNN x").unwrap(),
            Instruction::Onbuild("RUNN x".into())
        );
        assert_eq!(
            err("ONBUILD ONBUILD RUN x"),
            "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            err("ONBUILD from x"),
            "FROM isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            err("ONBUILD MAINTAINER x"),
            "MAINTAINER isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(err("ONBUILD"), "ONBUILD requires at least one argument");
    }
}
