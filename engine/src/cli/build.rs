//! `kiln build`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::render::{ProgressMode, Renderer};
use super::{Printer, UserError};
use crate::build::{build, BuildRequest, Network};
use crate::context::{Context, TarLimits};
use crate::dockerfile::scope::BuildArgs as ScopeBuildArgs;
use crate::reference::ImageRef;
use crate::registry::PullPolicy;
use crate::store::Store;

/// Network access for build steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// No network: loopback only (the default).
    None,
    /// The host's network (needed by `apt-get update` or `ADD https://...`).
    Host,
}

/// Sandboxes a build may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    /// WASI, and native for Linux binaries.
    Auto,
    /// WASI only.
    Wasi,
}

/// Compression of layers that leave the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// gzip (what docker expects).
    Gzip,
    /// zstd.
    Zstd,
}

/// Build an image from a Dockerfile and a context.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,

    /// The Dockerfile (default `CONTEXT/Dockerfile`); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,

    /// A build argument; without `=VALUE` the value comes from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// Build up to this stage.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Don't use the cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Don't use the cache for the steps of this stage (its name or number); repeatable, or
    /// comma-separated.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Print only the image ID on stdout.
    #[arg(short, long)]
    pub quiet: bool,

    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,

    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Network for RUN steps and ADD of URLs.
    #[arg(long, value_enum, default_value = "none")]
    pub network: NetworkArg,

    /// Store the image with compressed layers, as they would leave the machine (by default
    /// layers stay uncompressed locally and are compressed on export).
    #[arg(long, value_enum)]
    pub compression: Option<CompressionArg>,

    /// Add a line to the `/etc/hosts` of RUN steps (`NAME:IP`, or `NAME=IP`); repeatable.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,

    /// Size of `/dev/shm` for RUN steps (default 64m).
    #[arg(long = "shm-size", value_name = "SIZE", value_parser = crate::sandbox::parse_size)]
    pub shm_size: Option<u64>,

    /// A resource limit for RUN steps, docker's `NAME=SOFT[:HARD]`: `nofile`, `nproc`;
    /// repeatable.
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,

    /// Set metadata labels on the image (`KEY=VALUE`).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Which sandboxes RUN may use: `auto` (WASI for modules and kiln's guest tools, native
    /// for Linux binaries) or `wasi` (no native execution at all).
    #[arg(long, value_enum, default_value = "auto")]
    pub isolation: IsolationArg,

    /// Wall-clock limit per RUN step.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::sandbox::parse_duration)]
    pub run_timeout: std::time::Duration,

    /// Memory limit of a RUN step (each process, and all of them together).
    #[arg(long, value_name = "SIZE", default_value = "4g", value_parser = crate::sandbox::parse_size)]
    pub run_memory: u64,

    /// Processes alive at once per RUN step.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub run_pids: u32,

    /// Open files per RUN process.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub run_files: u32,

    /// Bytes a RUN step may write.
    #[arg(long, value_name = "SIZE", default_value = "10g", value_parser = crate::sandbox::parse_size)]
    pub run_disk: u64,

    /// Output a RUN step may produce.
    #[arg(long, value_name = "SIZE", default_value = "64m", value_parser = crate::sandbox::parse_size)]
    pub run_log: u64,

    /// Push every `-t` tag to its registry once the image is built (`--output
    /// type=registry`).
    #[arg(long)]
    pub push: bool,

    /// Where the result goes besides the store: `type=registry` (push), `type=image[,push=true]`,
    /// `type=oci,dest=FILE` or `type=docker,dest=FILE` (an archive; `-` is stdout).
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Write the result as JSON (`containerimage.digest`, `containerimage.config.digest`,
    /// `image.name`), as buildx does.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// The platform to build for (`os/arch[/variant]`); this machine's by default. kiln does
    /// not emulate: another platform builds only when every stage's image is of it.
    #[arg(long, value_name = "PLATFORM", value_parser = crate::registry::PlatformSpec::parse)]
    pub platform: Option<crate::registry::PlatformSpec>,

    /// Take step results from this cache too: `type=registry,ref=NAME:TAG` (or just
    /// `NAME:TAG`) or `type=local,src=DIR[,tag=TAG]` (an OCI layout); repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,

    /// Write the build's step results to a cache: `type=registry,ref=NAME:TAG` or
    /// `type=local,dest=DIR[,tag=TAG]`, with `mode=max` (every stage, the default) or `min`
    /// (the target's stages), `compression=gzip|zstd`, `mounts=true` (also the `RUN
    /// --mount=type=cache` folders) and `ignore-error=true`; repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,

    /// When to pull FROM images: `missing` (the default), `always` (what `--pull` alone means:
    /// ask the registry what each tag names now) or `never`.
    #[arg(long, value_name = "WHEN", num_args = 0..=1, require_equals = true, default_missing_value = "always", value_parser = parse_pull)]
    pub pull: Option<PullPolicy>,

    /// The context: a folder, or `-` for a tar (or tar.gz) on stdin.
    #[arg(value_name = "CONTEXT")]
    pub context: String,
}

/// Largest Dockerfile read.
const MAX_DOCKERFILE: u64 = 16 << 20;

/// Runs `kiln build`.
pub fn run(args: &BuildArgs, store: &Store, printer: &mut Printer) -> anyhow::Result<u8> {
    let file_from_stdin = args.file.as_deref() == Some("-");
    let context_from_stdin = args.context == "-";
    if file_from_stdin && context_from_stdin {
        return Err(
            UserError("cannot read both the Dockerfile and the context from stdin".into()).into(),
        );
    }
    let mut tags = Vec::new();
    for t in &args.tags {
        let r = ImageRef::parse(t).map_err(|e| UserError(format!("invalid tag {t:?}: {e}")))?;
        if r.digest().is_some() {
            return Err(
                UserError(format!("invalid tag {t:?}: a tag cannot contain a digest")).into(),
            );
        }
        tags.push(r);
    }
    let host_env: Vec<(String, String)> = std::env::vars().collect();
    let build_args = ScopeBuildArgs::parse(args.build_args.iter().map(String::as_str), &host_env)
        .map_err(|e| UserError(e.to_string()))?;
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .map_err(|_| UserError(format!("invalid SOURCE_DATE_EPOCH {v:?}")))?,
        ),
        _ => None,
    };

    let (mut context, dockerfile_name, slot_prefix) = if context_from_stdin {
        let stdin = std::io::stdin();
        let ctx = Context::from_tar(stdin.lock(), &TarLimits::default(), &[])
            .context("read the build context from stdin")?;
        let name = args.file.clone().unwrap_or_else(|| "Dockerfile".to_owned());
        (ctx, name.clone(), format!("-\0{name}"))
    } else {
        let dir = PathBuf::from(&args.context);
        let ctx = Context::from_dir(&dir, &[])?;
        let canonical = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
        let name = args.file.clone().unwrap_or_else(|| "Dockerfile".to_owned());
        (
            ctx,
            name.clone(),
            format!("{}\0{name}", canonical.display()),
        )
    };
    let dockerfile_text = if file_from_stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_DOCKERFILE + 1)
            .read_to_end(&mut buf)
            .context("read the Dockerfile from stdin")?;
        buf
    } else if context_from_stdin {
        context
            .read_build_file(&dockerfile_name, MAX_DOCKERFILE)
            .map_err(|e| UserError(format!("read {dockerfile_name} from the context: {e}")))?
    } else {
        // `-f` is relative to the current folder, as in docker; the default is CONTEXT/Dockerfile.
        let path = match &args.file {
            Some(f) => PathBuf::from(f),
            None => Path::new(&args.context).join("Dockerfile"),
        };
        read_limited(&path).map_err(|e| UserError(format!("read {}: {e}", path.display())))?
    };
    if dockerfile_text.len() as u64 > MAX_DOCKERFILE {
        return Err(UserError(format!(
            "{dockerfile_name} is larger than {MAX_DOCKERFILE} bytes"
        ))
        .into());
    }
    let dockerfile_text = String::from_utf8_lossy(&dockerfile_text).into_owned();
    let base_name = Path::new(&dockerfile_name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_owned());
    let patterns = context
        .dockerignore_patterns(&base_name)
        .map_err(|e| UserError(format!("read .dockerignore: {e}")))?;
    context
        .set_ignore_patterns(&patterns)
        .map_err(|e| UserError(format!(".dockerignore: {e}")))?;
    let stat_cache = context
        .cache_id()
        .map(|id| store.cache_dir().join("stat").join(id));

    let sandbox = crate::sandbox::Sandbox::new();
    let client = super::registry_client()?;
    let mut req = BuildRequest {
        dockerfile: &dockerfile_text,
        dockerfile_name: &base_name,
        context: &context,
        slot_prefix,
        tags,
        build_args,
        target: args.target.clone(),
        platform: args.platform.clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        extra_hosts: args
            .add_hosts
            .iter()
            .map(|h| crate::build::host_line(h).map_err(UserError))
            .collect::<Result<_, _>>()?,
        network: match args.network {
            NetworkArg::None => Network::None,
            NetworkArg::Host => Network::Host,
        },
        labels,
        epoch,
        stat_cache,
        compression: args.compression.map(|c| match c {
            CompressionArg::Gzip => crate::layer::Compression::Gzip,
            CompressionArg::Zstd => crate::layer::Compression::Zstd,
        }),
        limits: crate::sandbox::Limits {
            timeout: args.run_timeout,
            memory: args.run_memory,
            pids: args.run_pids.max(1),
            files: args.run_files.max(4),
            disk: args.run_disk,
            log: args.run_log,
            shm: args
                .shm_size
                .unwrap_or(crate::sandbox::Limits::default().shm),
        },
        isolation: match args.isolation {
            IsolationArg::Auto => crate::sandbox::Isolation::Auto,
            IsolationArg::Wasi => crate::sandbox::Isolation::Wasi,
        },
        sandbox: &sandbox,
        cancel: None,
        pull: args.pull.unwrap_or_default(),
        registry: Some(&client),
        pull_room: None,
        cache_from: args
            .cache_from
            .iter()
            .map(|c| {
                crate::build::remote_cache::parse_cache_from(c)
                    .map_err(|e| UserError(format!("--cache-from {c:?}: {e}")))
            })
            .collect::<Result<_, _>>()?,
        push_as_made: Vec::new(),
        cache_to: args
            .cache_to
            .iter()
            .map(|c| {
                crate::build::remote_cache::parse_cache_to(c)
                    .map_err(|e| UserError(format!("--cache-to {c:?}: {e}")))
            })
            .collect::<Result<_, _>>()?,
    };
    for u in &args.ulimits {
        crate::build::apply_ulimit(&mut req.limits, u).map_err(UserError)?;
    }
    let outputs = parse_outputs(&args.outputs, args.push)?;
    if outputs.iter().any(|o| matches!(o, Output::Push)) {
        req.push_as_made = req.tags.clone();
    }
    if outputs.iter().any(|o| matches!(o, Output::Push)) && req.tags.is_empty() {
        return Err(
            UserError("tag is needed when pushing to registry: use -t NAME:TAG".into()).into(),
        );
    }
    let renderer = Renderer::new(args.progress, args.quiet);
    let out = build(store, &req, &renderer)?;
    let mut manifest_digest = out.manifest;
    for o in &outputs {
        match o {
            Output::Push => {
                let events = super::render::transfer_printer(args.quiet);
                for t in &req.tags {
                    let pushed = crate::registry::push(
                        &client,
                        store,
                        t,
                        &crate::registry::PushOptions::default(),
                        &events,
                    )?;
                    manifest_digest = pushed.digest;
                }
            }
            Output::Archive { format, dest } => {
                let id = out.image_id.to_string();
                let names: Vec<String> = if req.tags.is_empty() {
                    vec![id]
                } else {
                    req.tags.iter().map(ImageRef::to_string).collect()
                };
                write_archive(store, &names, *format, dest)?;
            }
            Output::Local(dir) => {
                crate::archive::export_rootfs(store, &out.image_id.to_string(), dir)?;
            }
            Output::Tar(dest) => {
                let id = out.image_id.to_string();
                write_atomically(dest, |w| crate::archive::export_rootfs_tar(store, &id, w))?;
            }
        }
    }
    if let Some(p) = &args.metadata_file {
        let names: Vec<String> = req.tags.iter().map(ImageRef::to_string).collect();
        let meta = serde_json::json!({
            "containerimage.config.digest": out.image_id.to_string(),
            "containerimage.digest": manifest_digest.to_string(),
            "image.name": names.join(","),
        });
        std::fs::write(p, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("write {}", p.display()))?;
    }
    if args.quiet {
        printer.data(&out.image_id.to_string())?;
    }
    if let Some(p) = &args.iidfile {
        std::fs::write(p, out.image_id.to_string())
            .with_context(|| format!("write {}", p.display()))?;
    }
    Ok(0)
}

/// Where a build's result goes besides the store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    /// Push the tags.
    Push,
    /// An archive of the image, to a file or (`-`) stdout.
    Archive {
        format: crate::archive::SaveFormat,
        dest: String,
    },
    /// The image's files, into an empty folder.
    Local(PathBuf),
    /// The image's files as one tar, to a file or (`-`) stdout.
    Tar(String),
}

/// `--output` values (buildx's CSV form) and `--push`.
fn parse_outputs(specs: &[String], push: bool) -> Result<Vec<Output>, UserError> {
    let mut out = Vec::new();
    if push {
        out.push(Output::Push);
    }
    for spec in specs {
        let bad = |why: &str| UserError(format!("--output {spec:?}: {why}"));
        if !spec.contains('=') {
            // buildx's shorthand: `-o DIR` is type=local, `-o -` a tar on stdout.
            out.push(if spec == "-" {
                Output::Tar("-".into())
            } else {
                Output::Local(PathBuf::from(spec))
            });
            continue;
        }
        let mut kind = None;
        let mut dest = None;
        let mut push_flag = false;
        for field in spec.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad(&format!("{field:?} is not key=value")))?;
            match k {
                "type" => kind = Some(v.to_owned()),
                "dest" => dest = Some(v.to_owned()),
                "push" => push_flag = matches!(v, "true" | "1"),
                "name" => return Err(bad("name= is not supported: name the image with -t")),
                other => return Err(bad(&format!("unknown key {other:?}"))),
            }
        }
        let kind = kind.ok_or_else(|| bad("type= is required"))?;
        match kind.as_str() {
            "registry" => out.push(Output::Push),
            "image" => {
                if push_flag {
                    out.push(Output::Push);
                }
            }
            "oci" | "docker" => {
                let dest =
                    dest.ok_or_else(|| bad("dest= is required (a file, or - for stdout)"))?;
                let format = if kind == "oci" {
                    crate::archive::SaveFormat::Oci
                } else {
                    crate::archive::SaveFormat::Docker
                };
                out.push(Output::Archive { format, dest });
            }
            "local" => {
                let dest = dest.ok_or_else(|| bad("dest= is required (a folder)"))?;
                out.push(Output::Local(PathBuf::from(dest)));
            }
            "tar" => {
                let dest =
                    dest.ok_or_else(|| bad("dest= is required (a file, or - for stdout)"))?;
                out.push(Output::Tar(dest));
            }
            other => return Err(bad(&format!("unknown type {other:?}"))),
        }
    }
    out.dedup();
    Ok(out)
}

/// Writes an archive of `names` to `dest` (a file, written whole or not at all, or `-`).
fn write_archive(
    store: &Store,
    names: &[String],
    format: crate::archive::SaveFormat,
    dest: &str,
) -> anyhow::Result<()> {
    let gz = crate::layer::Compression::Gzip;
    write_atomically(dest, |w| crate::archive::save(store, names, format, gz, w))
}

/// Runs `write` on the file `dest` (made whole or not at all) or, for `-`, on stdout (never a
/// terminal).
fn write_atomically(
    dest: &str,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<(), crate::archive::ArchiveError>,
) -> anyhow::Result<()> {
    use std::io::Write;
    if dest == "-" {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            return Err(UserError(
                "refusing to write an archive to a terminal: redirect stdout".into(),
            )
            .into());
        }
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        write(&mut out)?;
        out.flush()?;
        return Ok(());
    }
    let path = Path::new(dest);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)?;
    Ok(())
}

/// `--pull` values.
pub fn parse_pull(s: &str) -> Result<PullPolicy, String> {
    PullPolicy::parse(s)
}

fn read_limited(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(p)?
        .take(MAX_DOCKERFILE + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}
