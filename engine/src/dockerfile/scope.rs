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
            // The last matching key decides, even when its value is empty (then no proxy).
            let value = self
                .build_args
                .0
                .iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case(upper))
                .map(|(_, v)| v)
                .filter(|v| !v.is_empty());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn amd64() -> Platform {
        Platform {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: String::new(),
        }
    }

    fn scope(build_args: &[&str]) -> Scope {
        let args = BuildArgs::parse(build_args.iter().copied(), &pairs(&[]));
        Scope::new(args.unwrap_or_default(), &amd64(), &amd64())
    }

    fn lexer() -> Lexer {
        Lexer::new('\\')
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        EnvLookup::get(env, name)
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn host_platform_is_linux_amd64_here() {
        assert_eq!(Platform::host(), amd64());
        assert_eq!(Platform::host().to_string(), "linux/amd64");
    }

    #[test]
    fn platform_args_are_global_only() -> Result<(), ScopeError> {
        // Docs ("Automatic platform ARGs in the global scope"): they are defined in the global
        // scope, so not automatically available inside stages; `ARG TARGETARCH` without a value
        // brings one in.
        let target = Platform {
            os: "linux".into(),
            arch: "arm".into(),
            variant: "v7".into(),
        };
        let mut s = Scope::new(BuildArgs::default(), &amd64(), &target);
        assert_eq!(s.lookup("TARGETPLATFORM"), Some("linux/arm/v7"));
        assert_eq!(s.lookup("BUILDPLATFORM"), Some("linux/amd64"));
        // Set but empty, so `${BUILDVARIANT:+...}` and `${BUILDVARIANT+...}` differ.
        assert_eq!(s.lookup("BUILDVARIANT"), Some(""));
        s.begin_stage(&[]);
        assert_eq!(s.lookup("TARGETARCH"), None);
        s.declare_arg(&lexer(), "TARGETARCH", None)?;
        assert_eq!(s.lookup("TARGETARCH"), Some("arm"));
        assert_eq!(get(s.globals(), "TARGETVARIANT"), Some("v7"));
        Ok(())
    }

    #[test]
    fn platform_args_yield_to_build_args() {
        // BuildKit's defaultArgs: a build arg of the same name replaces a platform arg.
        let s = scope(&["TARGETARCH=riscv64"]);
        assert_eq!(get(s.globals(), "TARGETARCH"), Some("riscv64"));
        assert!(s.used_build_args().contains("TARGETARCH"));
    }

    #[test]
    fn global_args_feed_from_and_are_imported_by_bare_arg() -> Result<(), ScopeError> {
        // Docs ("Understand how ARG and FROM interact"): an ARG before FROM is usable in FROM
        // but not after it, unless the stage declares `ARG VERSION` without a value, which
        // brings in the global default.
        let mut s = scope(&[]);
        s.declare_arg(&lexer(), "VERSION", Some("latest"))?;
        let from = lexer().process_word("busybox:$VERSION", s.globals());
        assert_eq!(from.as_deref().ok(), Some("busybox:latest"));
        s.begin_stage(&[]);
        assert_eq!(s.lookup("VERSION"), None);
        s.declare_arg(&lexer(), "VERSION", None)?;
        assert_eq!(s.lookup("VERSION"), Some("latest"));
        // The global scope is still what later FROM lines see.
        assert_eq!(get(s.globals(), "VERSION"), Some("latest"));
        Ok(())
    }

    #[test]
    fn global_defaults_expand_against_earlier_globals() -> Result<(), ScopeError> {
        let mut s = scope(&[]);
        s.declare_arg(&lexer(), "BASE", Some("alpine"))?;
        s.declare_arg(&lexer(), "IMAGE", Some("${BASE}:3-$TARGETARCH"))?;
        assert_eq!(get(s.globals(), "IMAGE"), Some("alpine:3-amd64"));
        Ok(())
    }

    #[test]
    fn a_stage_default_beats_the_global_default() -> Result<(), ScopeError> {
        // BuildKit's dispatchArg consults the global value only for an ARG without a default.
        let mut s = scope(&[]);
        s.declare_arg(&lexer(), "V", Some("global"))?;
        s.begin_stage(&[]);
        s.declare_arg(&lexer(), "V", Some("stage"))?;
        assert_eq!(s.lookup("V"), Some("stage"));
        Ok(())
    }

    #[test]
    fn build_arg_overrides_defaults_global_and_stage() -> Result<(), ScopeError> {
        // Docs ("ARG"): `--build-arg user=what_user` replaces the default of `ARG user=someuser`.
        let mut s = scope(&["user=what_user", "tag=1.0"]);
        s.declare_arg(&lexer(), "tag", Some("latest"))?;
        assert_eq!(get(s.globals(), "tag"), Some("1.0"));
        s.begin_stage(&[]);
        s.declare_arg(&lexer(), "user", Some("someuser"))?;
        assert_eq!(s.lookup("user"), Some("what_user"));
        s.declare_arg(&lexer(), "tag", None)?;
        assert_eq!(s.lookup("tag"), Some("1.0"));
        Ok(())
    }

    #[test]
    fn a_build_arg_skips_default_expansion() -> Result<(), ScopeError> {
        // BuildKit's testArgDefaultExpansion: `ARG BAR=${FOO:?"foo missing"}` fails without
        // FOO, but not when BAR itself is given.
        let mut s = scope(&[]);
        s.begin_stage(&[]);
        s.declare_arg(&lexer(), "FOO", None)?;
        let err = s.declare_arg(&lexer(), "BAR", Some("${FOO:?\"foo missing\"}"));
        assert!(err.is_err_and(|e| e.to_string().contains("FOO: foo missing")));
        let mut s = scope(&["BAR=123"]);
        s.begin_stage(&[]);
        s.declare_arg(&lexer(), "FOO", None)?;
        s.declare_arg(&lexer(), "BAR", Some("${FOO:?\"foo missing\"}"))?;
        assert_eq!(s.lookup("BAR"), Some("123"));
        Ok(())
    }

    #[test]
    fn an_arg_takes_effect_from_its_line() -> Result<(), ScopeError> {
        // Docs ("Default values"/"Scope"): an ARG comes into effect from the line that declares
        // it, not from its use on the command line.
        let mut s = scope(&["user=what_user"]);
        s.begin_stage(&[]);
        let before = lexer().process_word("${user:-some_user}", &s);
        assert_eq!(before.as_deref().ok(), Some("some_user"));
        s.declare_arg(&lexer(), "user", None)?;
        let after = lexer().process_word("${user:-some_user}", &s);
        assert_eq!(after.as_deref().ok(), Some("what_user"));
        Ok(())
    }

    #[test]
    fn an_arg_without_value_is_declared_but_unset() -> Result<(), ScopeError> {
        // BuildKit's testEmptyStringArgInEnv: `ARG FOO` leaves FOO out of the environment,
        // `ARG BAR=` sets it empty; both show in the RUN history as `K=...`.
        let mut s = scope(&[]);
        s.begin_stage(&[]);
        s.declare_arg(&lexer(), "FOO", None)?;
        s.declare_arg(&lexer(), "BAR", Some(""))?;
        let env = s.env_for_run();
        assert_eq!(get(&env, "FOO"), None);
        assert_eq!(get(&env, "BAR"), Some(""));
        assert_eq!(s.history_args(), pairs(&[("FOO", ""), ("BAR", "")]));
        Ok(())
    }

    #[test]
    fn an_empty_build_arg_is_set_but_empty() -> Result<(), ScopeError> {
        // BuildKit's testDefaultEnvWithArgs: `--build-arg my_arg=` makes
        // `${my_arg:-def_val}` take the default.
        let mut s = scope(&["my_arg="]);
        s.begin_stage(&[]);
        s.declare_arg(&lexer(), "my_arg", None)?;
        assert_eq!(s.lookup("my_arg"), Some(""));
        let v = lexer().process_word("${my_arg:-def_val}|${my_arg-def_val}", &s);
        assert_eq!(v.as_deref().ok(), Some("def_val|"));
        Ok(())
    }

    #[test]
    fn env_overrides_an_earlier_arg() -> Result<(), ScopeError> {
        // Docs ("Using ARG variables"): ENV always overrides an ARG of the same name, whatever
        // --build-arg says; the history line shows the value the step really sees.
        let mut s = scope(&["CONT_IMG_VER=v2.0.1"]);
        s.begin_stage(&[]);
        s.declare_arg(&lexer(), "CONT_IMG_VER", None)?;
        s.set_env("CONT_IMG_VER", "v1.0.0")?;
        assert_eq!(s.lookup("CONT_IMG_VER"), Some("v1.0.0"));
        assert_eq!(get(&s.env_for_run(), "CONT_IMG_VER"), Some("v1.0.0"));
        assert_eq!(s.history_args(), pairs(&[("CONT_IMG_VER", "v1.0.0")]));
        Ok(())
    }

    #[test]
    fn a_later_arg_with_a_value_replaces_env_but_not_the_image_config() -> Result<(), ScopeError> {
        // BuildKit applies ARG and ENV to one environment in order, so an ARG declared after an
        // ENV (or after the base image's ENV) wins for the rest of the stage; the image config
        // keeps the ENV value.
        let mut s = scope(&["HELLO=arg"]);
        s.begin_stage(&pairs(&[("HELLO", "World"), ("PATH", "/bin")]));
        s.declare_arg(&lexer(), "HELLO", None)?;
        assert_eq!(s.lookup("HELLO"), Some("arg"));
        let stage = s.stage().cloned().unwrap_or_default();
        assert_eq!(get(stage.image_env(), "HELLO"), Some("World"));
        // Without a value, an ARG leaves the ENV alone.
        let mut s = scope(&[]);
        s.begin_stage(&pairs(&[("HELLO", "World")]));
        s.declare_arg(&lexer(), "HELLO", None)?;
        assert_eq!(s.lookup("HELLO"), Some("World"));
        Ok(())
    }

    #[test]
    fn env_needs_a_stage() {
        assert_eq!(
            scope(&[]).set_env("A", "1"),
            Err(ScopeError::EnvOutsideStage { name: "A".into() })
        );
    }

    #[test]
    fn proxies_reach_run_without_declaration_but_not_cache_or_history() -> Result<(), ScopeError> {
        // Docs ("Predefined ARGs"): usable without an ARG instruction, excluded from
        // `docker history` and exempt from caching unless declared.
        let mut s = scope(&["http_proxy=http://proxy:3128", "NO_PROXY=localhost"]);
        s.begin_stage(&[]);
        let run = s.env_for_run();
        assert_eq!(get(&run, "HTTP_PROXY"), Some("http://proxy:3128"));
        assert_eq!(get(&run, "http_proxy"), Some("http://proxy:3128"));
        assert_eq!(get(&run, "no_proxy"), Some("localhost"));
        assert_eq!(get(&s.env_for_cache(), "http_proxy"), None);
        assert!(s.history_args().is_empty());
        // Not visible to Dockerfile-level expansion either, as in BuildKit.
        assert_eq!(s.lookup("http_proxy"), None);
        assert_eq!(s.unused_build_args(), BTreeSet::new());

        s.declare_arg(&lexer(), "http_proxy", None)?;
        assert_eq!(
            get(&s.env_for_cache(), "http_proxy"),
            Some("http://proxy:3128")
        );
        assert_eq!(
            s.history_args(),
            pairs(&[("http_proxy", "http://proxy:3128")])
        );
        Ok(())
    }

    #[test]
    fn proxy_spellings_resolve_like_buildkit() {
        // BuildKit's proxyEnvFromBuildArgs: keys compared case-insensitively in sorted order,
        // the last one deciding, and an empty value meaning no proxy.
        let mut s = scope(&["Ftp_Proxy=a", "ftp_proxy=b", "ALL_PROXY=x", "all_proxy="]);
        s.begin_stage(&[]);
        let run = s.env_for_run();
        assert_eq!(get(&run, "FTP_PROXY"), Some("b"));
        assert_eq!(get(&run, "ALL_PROXY"), None);
        assert_eq!(get(&run, "all_proxy"), None);
    }

    #[test]
    fn a_stage_env_keeps_its_proxy_value() -> Result<(), ScopeError> {
        let mut s = scope(&["HTTP_PROXY=http://build:1"]);
        s.begin_stage(&[]);
        s.set_env("HTTP_PROXY", "")?;
        let run = s.env_for_run();
        assert_eq!(get(&run, "HTTP_PROXY"), Some(""));
        assert_eq!(get(&run, "http_proxy"), Some("http://build:1"));
        Ok(())
    }

    #[test]
    fn stages_do_not_share_args_unless_built_from_each_other() -> Result<(), ScopeError> {
        // Docs ("Scope"): an ARG goes out of scope at the end of the stage it is defined in.
        // BuildKit continues a stage's environment in a stage built `FROM` it.
        let mut s = scope(&[]);
        s.begin_stage(&[]);
        s.declare_arg(&lexer(), "A", Some("1"))?;
        s.set_env("E", "e")?;
        let first = s.stage().cloned().unwrap_or_default();
        s.begin_stage(&[]);
        assert_eq!(s.lookup("A"), None);
        assert_eq!(s.lookup("E"), None);
        s.begin_stage_from(&first);
        assert_eq!(s.lookup("A"), Some("1"));
        assert_eq!(s.lookup("E"), Some("e"));
        assert_eq!(s.history_args(), pairs(&[("A", "1")]));
        Ok(())
    }

    #[test]
    fn stage_defaults_expand_against_the_stage() -> Result<(), ScopeError> {
        let mut s = scope(&[]);
        s.begin_stage(&pairs(&[("PATH", "/bin")]));
        s.set_env("PREFIX", "/opt")?;
        s.declare_arg(&lexer(), "PATH", Some("$PREFIX/bin:$PATH"))?;
        assert_eq!(s.lookup("PATH"), Some("/opt/bin:/bin"));
        Ok(())
    }

    #[test]
    fn bare_build_args_come_from_the_host_environment() {
        // Docs (`docker build --build-arg`): `--build-arg HTTP_PROXY` without a value takes it
        // from the local environment; the docker CLI drops it when that is unset.
        let host = pairs(&[("HTTP_PROXY", "http://host:8080"), ("EMPTY", "")]);
        let args = BuildArgs::parse(["HTTP_PROXY", "MISSING", "EMPTY", "A=1=2", "A=3"], &host);
        let args = args.unwrap_or_default();
        assert_eq!(args.get("HTTP_PROXY"), Some("http://host:8080"));
        assert_eq!(args.get("MISSING"), None);
        assert_eq!(args.get("EMPTY"), Some(""));
        assert_eq!(args.get("A"), Some("3"));
        assert_eq!(
            BuildArgs::parse(["=x"], &host),
            Err(ScopeError::EmptyBuildArgName { spec: "=x".into() })
        );
    }

    #[test]
    fn used_and_unused_build_args() -> Result<(), ScopeError> {
        let mut s = scope(&["A=1", "B=2", "HTTPS_PROXY=p"]);
        s.declare_arg(&lexer(), "A", None)?;
        s.begin_stage(&[]);
        assert_eq!(s.used_build_args().iter().collect::<Vec<_>>(), vec!["A"]);
        assert_eq!(s.unused_build_args(), BTreeSet::from(["B".to_owned()]));
        s.declare_arg(&lexer(), "B", Some("x"))?;
        assert!(s.unused_build_args().is_empty());
        Ok(())
    }
}
