//! ARG/ENV scoping for one Dockerfile build, with Docker's (BuildKit's) rules.
//!
//! [`Scope`] is a pure data structure the planner drives instruction by instruction: it never
//! reads the process environment or the platform itself (callers pass [`BuildArgs`] and
//! [`Platform`]s in), and it expands only ARG defaults, through the [`Lexer`] it is given.
//!
//! The rules, as BuildKit's `dockerfile2llb` applies them:
//! - ARGs before the first `FROM` are *global*: visible in `FROM` lines ([`Scope::globals`]),
//!   not inside stages until a stage re-declares them with `ARG NAME` (no value).
//! - The automatic platform args (`TARGETPLATFORM`, `BUILDARCH`, ...) are global ARGs defined
//!   from the start; a `--build-arg` of the same name replaces them.
//! - A `--build-arg` replaces an ARG's default from the line that declares it (its default is
//!   then not even expanded); an ARG has no effect on the lines before it.
//! - ENV and ARG values share one environment per stage and the later assignment wins: an ENV
//!   after an ARG overrides it (Docker's "ENV overrides ARG" rule), and an ARG with a value
//!   after an ENV replaces it for the rest of the stage (but not in the image config).
//! - The proxy args (`HTTP_PROXY`, `no_proxy`, ...) reach RUN steps without being declared, but
//!   stay out of cache keys and history unless an `ARG` declares them.
//! - A stage built `FROM` another stage continues that stage's environment and declared ARGs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::shell::{EnvLookup, Lexer, ShellError};

/// Args Docker predefines for proxies: usable without an `ARG`, excluded from image history and
/// cache keys unless declared.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The automatic platform args, defined in the global scope of every build.
pub const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Whether `name` is one of Docker's predefined proxy args.
pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
}

/// Errors from building or driving a [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A `--build-arg` with nothing before its `=`.
    #[error("invalid build argument {spec:?}: empty name")]
    EmptyBuildArgName {
        /// The argument as given.
        spec: String,
    },
    /// An `ENV` before the first `FROM`.
    #[error("ENV {name} outside a build stage: ENV must come after FROM")]
    EnvOutsideStage {
        /// The variable being set.
        name: String,
    },
    /// An ARG default whose expansion failed.
    #[error("expand default of ARG {name}: {source}")]
    ArgDefault {
        /// The ARG.
        name: String,
        /// Why the expansion failed.
        source: ShellError,
    },
}

/// An OCI platform as the platform args spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, ...
    pub os: String,
    /// Go/OCI architecture name: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, ...
    pub arch: String,
    /// `v7` for 32-bit arm, else usually empty.
    pub variant: String,
}

impl Platform {
    /// The platform this binary runs on, named as OCI names it.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            "mips" if cfg!(target_endian = "little") => "mipsle",
            "loongarch64" => "loong64",
            other => other,
        };
        let variant = if arch == "arm" { "v7" } else { "" };
        Self {
            os: std::env::consts::OS.to_owned(),
            arch: arch.to_owned(),
            variant: variant.to_owned(),
        }
    }
}

/// `os/arch` or `os/arch/variant`, the `TARGETPLATFORM` spelling.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// The `--build-arg` values of a build, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildArgs(BTreeMap<String, String>);

impl BuildArgs {
    /// Resolves `--build-arg` specs: `K=V` sets `K`; a bare `K` takes `K` from `host_env` (the
    /// builder's own environment) and is left out when `host_env` lacks it, as the docker CLI
    /// does. A later spec for the same name wins.
    pub fn parse<'a>(
        specs: impl IntoIterator<Item = &'a str>,
        host_env: &(impl EnvLookup + ?Sized),
    ) -> Result<Self, ScopeError> {
        let mut values = BTreeMap::new();
        for spec in specs {
            let (name, value) = match spec.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (spec, host_env.get(spec)),
            };
            if name.is_empty() {
                return Err(ScopeError::EmptyBuildArgName {
                    spec: spec.to_owned(),
                });
            }
            if let Some(value) = value {
                values.insert(name.to_owned(), value.to_owned());
            }
        }
        Ok(Self(values))
    }

    /// The value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every name given, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// An ordered variable list where setting a name again replaces its value in place.
fn set_var(list: &mut Vec<(String, String)>, name: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => value.clone_into(v),
        None => list.push((name.to_owned(), value.to_owned())),
    }
}

/// The variables of one build stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stage {
    env: Vec<(String, String)>,
    image_env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Stage {
    /// What the stage's instructions see: the base image's env, then ENVs and ARG values in
    /// order, a later assignment replacing an earlier one.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The image config's `Env`: the base image's env and the stage's ENVs, without ARGs.
    pub fn image_env(&self) -> &[(String, String)] {
        &self.image_env
    }

    /// The ARG names declared in the stage (and the stages it is built from), first
    /// declaration first.
    pub fn declared_args(&self) -> &[String] {
        &self.args
    }
}

/// ARG/ENV state for a whole build: build args, global ARGs and the current stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    build_args: BuildArgs,
    globals: Vec<(String, String)>,
    stage: Option<Stage>,
    used: BTreeSet<String>,
}

impl Scope {
    /// The scope before the first `FROM`: the platform args for `build` and `target` (each
    /// replaceable by a build arg of the same name) and no other variables.
    pub fn new(build_args: BuildArgs, build: &Platform, target: &Platform) -> Self {
        let mut scope = Self {
            build_args,
            globals: Vec::new(),
            stage: None,
            used: BTreeSet::new(),
        };
        let defaults = [
            ("TARGETPLATFORM", target.to_string()),
            ("TARGETOS", target.os.clone()),
            ("TARGETARCH", target.arch.clone()),
            ("TARGETVARIANT", target.variant.clone()),
            ("BUILDPLATFORM", build.to_string()),
            ("BUILDOS", build.os.clone()),
            ("BUILDARCH", build.arch.clone()),
            ("BUILDVARIANT", build.variant.clone()),
        ];
        for (name, default) in defaults {
            let value = match scope.build_args.get(name) {
                Some(given) => {
                    scope.used.insert(name.to_owned());
                    given.to_owned()
                }
                None => default,
            };
            set_var(&mut scope.globals, name, &value);
        }
        scope
    }

    /// The global scope: platform args and the ARGs before the first `FROM` that have a value.
    /// `FROM` lines expand against this, whichever stage is current.
    pub fn globals(&self) -> &[(String, String)] {
        &self.globals
    }

    /// The current stage, `None` before the first `FROM`.
    pub fn stage(&self) -> Option<&Stage> {
        self.stage.as_ref()
    }

    /// Starts a stage on an image whose config has `base_env` (`K=V` pairs, in order). ARGs of
    /// earlier stages do not carry over.
    pub fn begin_stage(&mut self, base_env: &[(String, String)]) {
        let mut stage = Stage::default();
        for (k, v) in base_env {
            set_var(&mut stage.env, k, v);
            set_var(&mut stage.image_env, k, v);
        }
        self.stage = Some(stage);
    }

    /// Starts a stage `FROM` an earlier stage: it continues that stage's environment, ARG
    /// values included, and its declared ARGs.
    pub fn begin_stage_from(&mut self, parent: &Stage) {
        self.stage = Some(parent.clone());
    }

    /// `ARG name[=default]`. Before the first `FROM` this declares a global ARG; inside a stage,
    /// a stage ARG. The value is the build arg if one was given, else `default` expanded with
    /// `lexer` against what is visible at this line, else (inside a stage, without a default)
    /// the global ARG's value. Without any of these the ARG is declared but unset.
    pub fn declare_arg(
        &mut self,
        lexer: &Lexer,
        name: &str,
        default: Option<&str>,
    ) -> Result<(), ScopeError> {
        let value = if let Some(given) = self.build_args.get(name) {
            self.used.insert(name.to_owned());
            Some(given.to_owned())
        } else if let Some(default) = default {
            let expanded = match &self.stage {
                Some(stage) => lexer.process_word(default, stage.env.as_slice()),
                None => lexer.process_word(default, self.globals.as_slice()),
            };
            Some(expanded.map_err(|source| ScopeError::ArgDefault {
                name: name.to_owned(),
                source,
            })?)
        } else if self.stage.is_some() {
            EnvLookup::get(self.globals.as_slice(), name).map(str::to_owned)
        } else {
            None
        };
        match &mut self.stage {
            None => {
                if let Some(value) = value {
                    set_var(&mut self.globals, name, &value);
                }
            }
            Some(stage) => {
                if let Some(value) = value {
                    set_var(&mut stage.env, name, &value);
                }
                if !stage.args.iter().any(|a| a == name) {
                    stage.args.push(name.to_owned());
                }
            }
        }
        Ok(())
    }

    /// `ENV name=value` with `value` already expanded (expand every pair of one ENV instruction
    /// against the scope before setting any of them, as Docker does).
    pub fn set_env(&mut self, name: &str, value: &str) -> Result<(), ScopeError> {
        let stage = self
            .stage
            .as_mut()
            .ok_or_else(|| ScopeError::EnvOutsideStage {
                name: name.to_owned(),
            })?;
        set_var(&mut stage.env, name, value);
        set_var(&mut stage.image_env, name, value);
        Ok(())
    }

    /// The value `$name` has at this point of the Dockerfile: the stage's environment inside a
    /// stage, the global scope before the first `FROM`. Undeclared proxy args are not visible
    /// here (BuildKit passes them only to the RUN process).
    pub fn lookup(&self, name: &str) -> Option<&str> {
        match &self.stage {
            Some(stage) => EnvLookup::get(stage.env.as_slice(), name),
            None => EnvLookup::get(self.globals.as_slice(), name),
        }
    }

    /// The variables a step's cache key must cover: the stage's environment (ENVs and declared
    /// ARGs). Undeclared proxy args are deliberately absent.
    pub fn env_for_cache(&self) -> Vec<(String, String)> {
        self.stage
            .as_ref()
            .map(|stage| stage.env.clone())
            .unwrap_or_default()
    }

    /// What a RUN process sees: [`Scope::env_for_cache`] plus the proxy build args in both
    /// spellings (`HTTP_PROXY` and `http_proxy`), for names the stage has not set itself. Any
    /// capitalisation of a proxy build arg counts; among several, the last in byte order wins.
    pub fn env_for_run(&self) -> Vec<(String, String)> {
        let mut env = self.env_for_cache();
        for pair in PROXY_ARGS.chunks(2) {
            let [upper, lower] = pair else { continue };
            let value = self
                .build_args
                .0
                .iter()
                .filter(|(k, v)| k.eq_ignore_ascii_case(upper) && !v.is_empty())
                .map(|(_, v)| v)
                .last();
            if let Some(value) = value {
                for name in [upper, lower] {
                    if !env.iter().any(|(k, _)| k == name) {
                        env.push(((*name).to_owned(), value.clone()));
                    }
                }
            }
        }
        env
    }

    /// The `K=V` pairs Docker writes before a RUN command in the image history
    /// (`RUN |2 A=1 B= /bin/sh -c ...`): every declared ARG of the stage with its current
    /// value, empty when it has none.
    pub fn history_args(&self) -> Vec<(String, String)> {
        let Some(stage) = &self.stage else {
            return Vec::new();
        };
        stage
            .args
            .iter()
            .map(|name| {
                let value = EnvLookup::get(stage.env.as_slice(), name).unwrap_or_default();
                (name.clone(), value.to_owned())
            })
            .collect()
    }

    /// The build args an ARG declaration (or a platform arg) has consumed so far.
    pub fn used_build_args(&self) -> &BTreeSet<String> {
        &self.used
    }

    /// The build args nothing consumed, proxy args aside: what Docker warns about as
    /// "build-args ... were not consumed".
    pub fn unused_build_args(&self) -> BTreeSet<String> {
        self.build_args
            .names()
            .filter(|n| !self.used.contains(*n) && !is_proxy_arg(n))
            .map(str::to_owned)
            .collect()
    }
}

/// Looks names up as [`Scope::lookup`] does, so a [`Lexer`] can expand words against a scope.
impl EnvLookup for Scope {
    fn get(&self, name: &str) -> Option<&str> {
        self.lookup(name)
    }
}
