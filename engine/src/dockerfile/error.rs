//! Dockerfile errors: what went wrong ([`ParseErrorKind`], worded as BuildKit words it) and on
//! which line ([`ParseError`]). The caller adds the file name: `Dockerfile:7: unknown
//! instruction: RUNN`.

use super::gocompat::{go_quote, DurationError};
use super::heredoc::HeredocError;
use super::mount::MountError;
use super::parser::{MAX_LINE_BYTES, MAX_ONBUILD_NESTING};

/// A Dockerfile that kiln (like `docker build`) rejects, with the 1-based line it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line: where the offending instruction starts, or the offending physical line.
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Only comments, directives and blank lines.
    #[error("file with no instructions")]
    NoInstructions,
    /// A physical line of 64 KiB or more.
    #[error("dockerfile line greater than max allowed size of {}", MAX_LINE_BYTES - 1)]
    LineTooLong,
    /// `# escape=` (or `syntax`, `check`) given twice.
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    /// `# escape=` with something other than `\` or `` ` ``.
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscapeToken(String),
    /// A heredoc whose terminator line never comes.
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    /// A heredoc delimiter that cannot be read.
    #[error(transparent)]
    Heredoc(#[from] HeredocError),
    /// `CMD ["a", 1]`.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStrings,
    /// `ENV name` (or `LABEL name`) without a value.
    #[error("{0} must have two arguments")]
    MissingValue(&'static str),
    /// `ENV a=1 b`: a word without `=` in the `key=value` form.
    #[error(
        "syntax error - can't find = in {}. Must be of the form: name=value",
        go_quote(.0)
    )]
    MissingEquals(String),
    /// `ONBUILD ONBUILD …` nested deeper than kiln reads (BuildKit rejects any nesting later).
    #[error("ONBUILD nested more than {MAX_ONBUILD_NESTING} levels deep")]
    OnbuildTooDeep,
    /// An instruction BuildKit does not know.
    #[error("unknown instruction: {instruction}{}", did_you_mean(.suggestion))]
    UnknownInstruction {
        /// The instruction word as written.
        instruction: String,
        /// A known instruction within two edits, in the same case.
        suggestion: Option<String>,
    },
    /// A bad `--flag`.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// `EXPOSE` with nothing to expose, and the like.
    #[error("{0} requires at least one argument")]
    AtLeastOneArgument(&'static str),
    /// `WORKDIR`, `USER`, `MAINTAINER`, `STOPSIGNAL` take exactly one argument.
    #[error("{0} requires exactly one argument")]
    ExactlyOneArgument(&'static str),
    /// `COPY src` without a destination.
    #[error(
        "{0} requires at least two arguments, but only one was provided. Destination could not be determined"
    )]
    NoDestination(&'static str),
    /// `COPY a <<EOF`.
    #[error("{0} cannot accept a heredoc as a destination")]
    HeredocDestination(&'static str),
    /// `ENV =x`, `ARG =x`.
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
    /// Key/value arguments that do not come in threes (only a hand-built node can do this).
    #[error("bad input to {0}, too many arguments")]
    TooManyArguments(&'static str),
    /// `FROM a b`.
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    /// `FROM a AS 1x`.
    #[error(
        "invalid name for build stage: {}, name can't start with a number or contain symbols",
        go_quote(.0)
    )]
    InvalidStageName(String),
    /// `ONBUILD ONBUILD …`.
    #[error("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    /// `ONBUILD FROM …`, `ONBUILD MAINTAINER …`.
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    /// `HEALTHCHECK NONE x`.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    /// `HEALTHCHECK CMD` alone.
    #[error("missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    /// `HEALTHCHECK CONNECT …`.
    #[error("unknown type {} in HEALTHCHECK (try CMD)", go_quote(.0))]
    HealthcheckType(String),
    /// `--interval=abc`.
    #[error("--{flag}: {source}")]
    Duration {
        /// The flag name without dashes.
        flag: &'static str,
        /// Go's `time.ParseDuration` complaint.
        source: DurationError,
    },
    /// `--interval=10us`: below one millisecond (zero is fine: it means the default).
    #[error("interval {} cannot be less than 1ms", go_quote(.0))]
    IntervalTooShort(&'static str),
    /// `--retries=x`.
    #[error(
        "strconv.ParseInt: parsing {}: {}",
        go_quote(.value),
        if *.out_of_range { "value out of range" } else { "invalid syntax" }
    )]
    Retries {
        /// The value as written.
        value: String,
        /// A number, but not a 32-bit one.
        out_of_range: bool,
    },
    /// `--retries=-1`.
    #[error("--retries cannot be negative ({0})")]
    NegativeRetries(i64),
    /// `VOLUME [""]`.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// `SHELL /bin/sh -c`.
    #[error("{0} requires the arguments to be in JSON form")]
    NotJson(&'static str),
    /// `RUN --network=bridge`.
    #[error("invalid network mode {}", go_quote(.0))]
    InvalidNetwork(String),
    /// `RUN --security=privileged`.
    #[error("security {} is not valid", go_quote(.0))]
    InvalidSecurity(String),
    /// A bad `RUN --mount` or `RUN --device`.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// An instruction other than `ARG` before the first `FROM`.
    #[error("no build stage in current context")]
    NoStage,
}

/// A bad `--flag` on an instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// A flag word that does not start with `--` (only a hand-built node can do this).
    #[error("arg should start with -- : {0}")]
    NotAFlag(String),
    /// A flag the instruction does not take.
    #[error("unknown flag: {flag}{}", did_you_mean(.suggestion))]
    Unknown {
        /// The flag as written, with its dashes, without its value.
        flag: String,
        /// A flag name within two edits.
        suggestion: Option<String>,
    },
    /// A single-valued flag given twice.
    #[error("duplicate flag specified: {0}")]
    Duplicate(String),
    /// `--from` without `=value`, or `--link=`.
    #[error("missing a value on flag: {0}")]
    MissingValue(String),
    /// `--link=maybe`.
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    NotBool {
        /// The flag as written.
        flag: String,
        /// The value as written.
        value: String,
    },
}

/// BuildKit's `(did you mean X?)` suffix.
pub(crate) fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}
