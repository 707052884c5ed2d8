//! `RUN --mount=…` and `RUN --device=…` (BuildKit's `commands_runmount.go` and
//! `commands_rundevice.go`).
//!
//! A mount is read in two steps, as BuildKit reads it. At parse time only the CSV syntax and
//! `from` (which may not use variables) are checked: [`MountSpec::parse`]. The values may name
//! build arguments (`uid=$UID`), so the rest waits until the planner knows them:
//! [`MountSpec::resolve`] expands each `key=value` value and then checks every key, type and
//! number, giving a typed [`Mount`]. A mount that is never resolved (a stage that is not built)
//! is never rejected, as with `docker build`.

use std::fmt;

use super::error::did_you_mean;
use super::gocompat::{go_lower, parse_bool, parse_uint, ram_in_bytes, suggest};

/// A CSV syntax error in a `--mount` or `--device` value (Go's `encoding/csv` wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// An empty value.
    #[error("EOF")]
    Empty,
    /// A `"` inside an unquoted field.
    #[error("parse error on line 1, column {0}: bare \" in non-quoted-field")]
    BareQuote(usize),
    /// A quoted field not closed, or followed by something other than `,`.
    #[error("parse error on line 1, column {0}: extraneous or missing \" in quoted-field")]
    Quote(usize),
}

/// Splits one CSV record (tonistiigi/go-csvvalue `Fields`: `,` separated, `"` quoting with
/// `""` for a quote, a trailing newline allowed).
fn csv_fields(line: &str) -> Result<Vec<String>, CsvError> {
    let line = line
        .strip_suffix("\r\n")
        .or_else(|| line.strip_suffix('\n'))
        .unwrap_or(line);
    if line.is_empty() {
        return Err(CsvError::Empty);
    }
    let mut fields = Vec::new();
    let mut rest = line;
    let mut pos = 0;
    loop {
        if !rest.starts_with('"') {
            let field = rest.split(',').next().unwrap_or_default();
            if let Some(j) = field.find('"') {
                return Err(CsvError::BareQuote(pos + j + 1));
            }
            fields.push(field.to_string());
            if field.len() == rest.len() {
                return Ok(fields);
            }
            rest = &rest[field.len() + 1..];
            pos += field.len() + 1;
            continue;
        }
        // Quoted field.
        rest = &rest[1..];
        pos += 1;
        let mut field = String::new();
        loop {
            let Some(i) = rest.find('"') else {
                return Err(CsvError::Quote(pos + 1));
            };
            field.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            pos += i + 1;
            if let Some(r) = rest.strip_prefix('"') {
                field.push('"');
                rest = r;
                pos += 1;
            } else if let Some(r) = rest.strip_prefix(',') {
                fields.push(field);
                rest = r;
                pos += 1;
                break;
            } else if rest.is_empty() {
                fields.push(field);
                return Ok(fields);
            } else {
                return Err(CsvError::Quote(pos));
            }
        }
    }
}

/// The mount types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// A read-only view of a build context or stage (`type=bind`, the default).
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty in-memory filesystem.
    Tmpfs,
    /// A build secret as a file (or env var).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    const ALL: [(&'static str, MountType); 5] = [
        ("bind", MountType::Bind),
        ("cache", MountType::Cache),
        ("tmpfs", MountType::Tmpfs),
        ("secret", MountType::Secret),
        ("ssh", MountType::Ssh),
    ];

    /// The name used in `type=`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

impl fmt::Display for MountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// Everyone at once (the default).
    Shared,
    /// A fresh copy for each concurrent writer.
    Private,
    /// One at a time.
    Locked,
}

impl CacheSharing {
    const ALL: [(&'static str, CacheSharing); 3] = [
        ("shared", CacheSharing::Shared),
        ("private", CacheSharing::Private),
        ("locked", CacheSharing::Locked),
    ];
}

/// A resolved `RUN --mount`. Empty values count as not given, as in BuildKit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `type=`.
    pub kind: MountType,
    /// `from=`: the stage or image to mount from.
    pub from: Option<String>,
    /// `source=`/`src=`.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`.
    pub target: Option<String>,
    /// `readonly`/`ro`/`readwrite`/`rw`; by default bind, secret and ssh mounts are read-only.
    pub read_only: bool,
    /// `size=` for tmpfs, in bytes (`64m` = 64 MiB); 0 means no limit.
    pub size_limit: i64,
    /// `id=`: the cache id (or secret / ssh id).
    pub id: Option<String>,
    /// `sharing=` for cache mounts.
    pub sharing: Option<CacheSharing>,
    /// `required` for secret and ssh mounts.
    pub required: bool,
    /// `env=` for secrets: the variable to expose the secret as (`Some("")` uses the default).
    pub env: Option<String>,
    /// `mode=` (octal).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
}

/// A `RUN --mount` or `RUN --device` value that BuildKit rejects (the two share their wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// Not valid CSV.
    #[error("failed to parse csv mounts: {0}")]
    Csv(CsvError),
    /// `from=$STAGE`.
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromVariable,
    /// A field without `=` that is not a flag word.
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    /// A key that this mount type does not take.
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyNotForType {
        /// The key.
        key: String,
        /// The mount type at that point.
        kind: MountType,
    },
    /// `type=volume`.
    #[error("unsupported mount type {}{}", super::go_quote(.value), did_you_mean(.suggestion))]
    UnsupportedType {
        /// The value as written.
        value: String,
        /// A known type within two edits.
        suggestion: Option<String>,
    },
    /// `sharing=exclusive`.
    #[error("unsupported sharing value {}{}", super::go_quote(.value), did_you_mean(.suggestion))]
    UnsupportedSharing {
        /// The value as written.
        value: String,
        /// A known mode within two edits.
        suggestion: Option<String>,
    },
    /// A boolean or size that does not parse.
    #[error("invalid value for {key}: {value}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `mode=`, `uid=`, `gid=` that do not parse.
    #[error("invalid value {value} for {key}")]
    InvalidNumber {
        /// `mode`, `uid` or `gid`.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A key no mount takes.
    #[error("unexpected key '{key}' in '{field}'{}", did_you_mean(.suggestion))]
    UnknownKey {
        /// The key, lowercased.
        key: String,
        /// The whole field.
        field: String,
        /// A known key within two edits.
        suggestion: Option<String>,
    },
    /// `mode`/`uid`/`gid` on a bind or tmpfs mount.
    #[error("{what} not allowed for {} type mounts", super::go_quote(.kind.as_str()))]
    FileInfoNotAllowed {
        /// `mode`, `uid` or `gid`.
        what: &'static str,
        /// The mount type.
        kind: MountType,
    },
    /// A secret mount with `from=`.
    #[error("secret mount should not have a from")]
    SecretFrom,
    /// A secret mount with `sharing=`.
    #[error("secret mount should not define sharing")]
    SecretSharing,
    /// A secret mount with neither source, target nor id.
    #[error("invalid secret mount. one of source, target required")]
    SecretWithoutTarget,
    /// A secret mount with both `source=` and `id=`.
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    /// `sharing=` on a mount that is not a cache.
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotCache(MountType),
    /// `--device=…` not valid CSV.
    #[error("failed to parse csv devices: {0}")]
    DeviceCsv(CsvError),
    /// `--device=a,name=b`.
    #[error("device name already set to {0}")]
    DeviceNameTwice(String),
}

/// A `RUN --mount` as written: its CSV fields, values not yet expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The CSV fields (`type=cache`, `target=/root/.cache`, `ro`).
    pub fields: Vec<String>,
}

impl MountSpec {
    /// The parse-time checks BuildKit makes: valid CSV, and no variable in `from`.
    pub fn parse(value: &str) -> Result<Self, MountError> {
        let fields = csv_fields(value).map_err(MountError::Csv)?;
        for field in &fields {
            if let Some((key, value)) = field.split_once('=') {
                if go_lower(key) == "from" {
                    if let Some(idx) = value.find('$') {
                        if idx != value.len() - 1 {
                            return Err(MountError::FromVariable);
                        }
                    }
                }
            }
        }
        Ok(Self { fields })
    }

    /// Expands each `key=value` value with `expand` (the planner's variable expansion) and
    /// checks the result as BuildKit does when it builds the step.
    pub fn resolve<E: From<MountError>>(
        &self,
        mut expand: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<Mount, E> {
        let mut m = Mount {
            kind: MountType::Bind,
            from: None,
            source: None,
            target: None,
            read_only: false,
            size_limit: 0,
            id: None,
            sharing: None,
            required: false,
            env: None,
            mode: None,
            uid: None,
            gid: None,
        };
        let mut ro_auto = true;
        for field in &self.fields {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (go_lower(k), Some(v)),
                None => (go_lower(field), None),
            };
            let Some(value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => {
                        m.read_only = true;
                        ro_auto = false;
                    }
                    "readwrite" | "rw" => {
                        m.read_only = false;
                        ro_auto = false;
                    }
                    "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                        m.required = true;
                    }
                    "required" => {
                        return Err(MountError::KeyNotForType { key, kind: m.kind }.into())
                    }
                    _ => return Err(MountError::NotKeyValue(field.clone()).into()),
                }
                continue;
            };
            let value = expand(value)?;
            let invalid = |key: &str, value: &str| MountError::InvalidValue {
                key: key.to_string(),
                value: value.to_string(),
            };
            let non_empty = |v: String| (!v.is_empty()).then_some(v);
            match key.as_str() {
                "type" => {
                    let lower = go_lower(&value);
                    m.kind = MountType::ALL
                        .iter()
                        .find(|(name, _)| *name == lower)
                        .map(|&(_, t)| t)
                        .ok_or_else(|| MountError::UnsupportedType {
                            suggestion: suggest(&value, &MountType::ALL.map(|(n, _)| n), true),
                            value: value.clone(),
                        })?;
                }
                "from" => m.from = non_empty(value),
                "source" | "src" => m.source = non_empty(value),
                "target" | "dst" | "destination" => m.target = non_empty(value),
                "readonly" | "ro" => {
                    m.read_only = parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = !parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                    ro_auto = false;
                }
                "required" => {
                    if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        return Err(MountError::KeyNotForType { key, kind: m.kind }.into());
                    }
                    m.required = parse_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                }
                "size" => {
                    if m.kind != MountType::Tmpfs {
                        return Err(MountError::KeyNotForType { key, kind: m.kind }.into());
                    }
                    m.size_limit = ram_in_bytes(&value).ok_or_else(|| invalid(&key, &value))?;
                }
                "id" => m.id = non_empty(value),
                "sharing" => {
                    let lower = go_lower(&value);
                    m.sharing = Some(
                        CacheSharing::ALL
                            .iter()
                            .find(|(name, _)| *name == lower)
                            .map(|&(_, s)| s)
                            .ok_or_else(|| MountError::UnsupportedSharing {
                                suggestion: suggest(
                                    &value,
                                    &CacheSharing::ALL.map(|(n, _)| n),
                                    true,
                                ),
                                value: value.clone(),
                            })?,
                    );
                }
                "mode" => m.mode = Some(number("mode", &value, 8)?),
                "uid" => m.uid = Some(number("uid", &value, 10)?),
                "gid" => m.gid = Some(number("gid", &value, 10)?),
                "env" => m.env = Some(value),
                _ => {
                    const KEYS: [&str; 19] = [
                        "type",
                        "from",
                        "source",
                        "target",
                        "readonly",
                        "id",
                        "sharing",
                        "required",
                        "size",
                        "mode",
                        "uid",
                        "gid",
                        "src",
                        "dst",
                        "destination",
                        "ro",
                        "rw",
                        "readwrite",
                        "env",
                    ];
                    return Err(MountError::UnknownKey {
                        suggestion: suggest(&key, &KEYS, true),
                        key,
                        field: field.clone(),
                    }
                    .into());
                }
            }
        }
        finish_mount(m, ro_auto).map_err(E::from)
    }
}

/// `strconv.ParseUint(value, base, 32)` with BuildKit's error.
fn number(key: &'static str, value: &str, base: u32) -> Result<u32, MountError> {
    parse_uint(value, base, 32)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| MountError::InvalidNumber {
            key,
            value: value.to_string(),
        })
}

/// The checks across keys, after every field was read.
fn finish_mount(mut m: Mount, ro_auto: bool) -> Result<Mount, MountError> {
    if !matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    ) {
        for (what, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(MountError::FileInfoNotAllowed { what, kind: m.kind });
            }
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err(MountError::SecretFrom);
        }
        if m.sharing.is_some() {
            return Err(MountError::SecretSharing);
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err(MountError::SecretWithoutTarget);
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(MountError::SecretSourceAndId);
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(MountError::SharingNotCache(m.kind));
    }
    Ok(m)
}

/// A `RUN --device` (CDI device name, optionally `required`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device name (`vendor.com/class=name`).
    pub name: String,
    /// Fail the build when the device is missing.
    pub required: bool,
}

impl Device {
    /// BuildKit's `ParseDevice`: `name`, `name=…`, `required[=bool]`.
    pub fn parse(value: &str) -> Result<Self, MountError> {
        let fields = csv_fields(value).map_err(MountError::DeviceCsv)?;
        let mut d = Device {
            name: String::new(),
            required: false,
        };
        for field in fields {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (go_lower(k), Some(v)),
                None => (go_lower(&field), None),
            };
            match (key.as_str(), value) {
                ("required", None) => d.required = true,
                (_, None) if d.name.is_empty() => d.name = field.clone(),
                (_, None) => return Err(MountError::NotKeyValue(field.clone())),
                ("name", Some(v)) => {
                    if !d.name.is_empty() {
                        return Err(MountError::DeviceNameTwice(d.name));
                    }
                    d.name = v.to_string();
                }
                ("required", Some(v)) => {
                    d.required = parse_bool(v).ok_or_else(|| MountError::InvalidValue {
                        key: key.clone(),
                        value: v.to_string(),
                    })?;
                }
                (_, Some(_)) if d.name.is_empty() => d.name = field.clone(),
                (_, Some(_)) => {
                    return Err(MountError::UnknownKey {
                        suggestion: suggest(&key, &["name", "required"], true),
                        key,
                        field: field.clone(),
                    })
                }
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(value: &str) -> Result<Mount, MountError> {
        MountSpec::parse(value)?.resolve(|v| Ok::<_, MountError>(v.to_string()))
    }

    #[test]
    fn csv_matches_go() {
        assert_eq!(csv_fields("a,b").unwrap(), ["a", "b"]);
        assert_eq!(csv_fields("a,").unwrap(), ["a", ""]);
        assert_eq!(csv_fields(r#""a,b""c",d"#).unwrap(), [r#"a,b"c"#, "d"]);
        assert_eq!(csv_fields(""), Err(CsvError::Empty));
        assert_eq!(csv_fields(r#"a"b"#), Err(CsvError::BareQuote(2)));
        assert_eq!(csv_fields(r#""ab"c"#), Err(CsvError::Quote(4)));
        assert_eq!(csv_fields(r#""ab"#), Err(CsvError::Quote(2)));
    }

    #[test]
    fn cache_mount() {
        let m = resolve("type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0755,uid=1000")
            .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.id.as_deref(), Some("pip"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!((m.mode, m.uid, m.gid), (Some(0o755), Some(1000), None));
        assert!(!m.read_only);
    }

    #[test]
    fn defaults_and_flag_words() {
        let m = resolve("target=/src").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.read_only);
        assert!(!resolve("target=/src,rw").unwrap().read_only);
        assert!(resolve("type=tmpfs,target=/t,ro").unwrap().read_only);
        let s = resolve("type=secret,id=tok,required,env=TOKEN").unwrap();
        assert!(s.required && s.read_only);
        assert_eq!(s.env.as_deref(), Some("TOKEN"));
        assert_eq!(
            resolve("type=tmpfs,target=/t,size=64m").unwrap().size_limit,
            64 << 20
        );
    }

    #[test]
    fn errors_match_buildkit() {
        let msg = |v: &str| resolve(v).unwrap_err().to_string();
        assert_eq!(
            msg("type=bnd"),
            "unsupported mount type \"bnd\" (did you mean bind?)"
        );
        assert_eq!(
            msg("type=cache,sharing=x"),
            "unsupported sharing value \"x\""
        );
        assert_eq!(
            msg("target=/a,required"),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(msg("foo"), "invalid field 'foo' must be a key=value pair");
        assert_eq!(
            msg("targt=/x"),
            "unexpected key 'targt' in 'targt=/x' (did you mean target?)"
        );
        assert_eq!(
            msg("type=bind,uid=1"),
            "uid not allowed for \"bind\" type mounts"
        );
        assert_eq!(msg("type=cache,mode=9"), "invalid value 9 for mode");
        assert_eq!(
            msg("type=secret"),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            msg("type=secret,id=a,source=b"),
            "both source and id can't be set"
        );
        assert_eq!(
            msg("type=bind,sharing=shared"),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(msg("type=tmpfs,size=lots"), "invalid value for size: lots");
        assert_eq!(msg("ro=maybe"), "invalid value for ro: maybe");
        assert_eq!(
            MountSpec::parse("from=$STAGE,target=/x").unwrap_err(),
            MountError::FromVariable
        );
        assert!(MountSpec::parse("from=stage$,target=/x").is_ok());
        assert_eq!(
            MountSpec::parse("target=\"x").unwrap_err().to_string(),
            "failed to parse csv mounts: parse error on line 1, column 8: bare \" in non-quoted-field"
        );
    }

    #[test]
    fn resolve_expands_values_only() {
        let spec = MountSpec::parse("type=cache,target=$HOME/.cache,uid=$UID").unwrap();
        let m = spec
            .resolve(|v| Ok::<_, MountError>(v.replace("$HOME", "/root").replace("$UID", "42")))
            .unwrap();
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.uid, Some(42));
    }

    #[test]
    fn devices() {
        assert_eq!(
            Device::parse("vendor.com/gpu=all,required").unwrap(),
            Device {
                name: "vendor.com/gpu=all".into(),
                required: true
            }
        );
        assert_eq!(
            Device::parse("name=a,required=false").unwrap(),
            Device {
                name: "a".into(),
                required: false
            }
        );
        assert_eq!(
            Device::parse("a,name=b").unwrap_err().to_string(),
            "device name already set to a"
        );
    }
}
