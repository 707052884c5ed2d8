//! Dispatching instructions: expand, key, look up, execute on a miss, record.

use std::io::Write;
use std::time::Instant;

use cap_std::fs::Dir;
use time::OffsetDateTime;

use super::mounts::{mount_all, seed_cache_mount, RunMount};
use super::plan::{find_stage, Plan};
use super::remote_cache::{export, export_failed, CacheMode, Imported, Record};
use super::state::{ImageState, Layer};
use super::users::resolve_owner;
use super::{BuildError, BuildOutput, BuildRequest, Cancel, Network};
use crate::cache::{Cache, CacheEntry, CachedLayer, KeyBuilder};
use crate::context::{Source, StatCache};
use crate::copy::{copy_into, Chmod, CopyOptions, CopySource, SourceFs};
use crate::digest::{CacheKey, Digest};
use crate::dockerfile::go_quote;
use crate::dockerfile::instruction::{self as ins, Instruction, Spanned};
use crate::dockerfile::mount::MountError;
use crate::dockerfile::scope::{Platform, Scope, Stage as ScopeStage};
use crate::dockerfile::shell::Lexer;
use crate::ignore::PatternMatcher;
use crate::image::{media_types, Descriptor, EmptyObject, Healthcheck};
use crate::layer;
use crate::progress::{LineSplitter, ProgressEvent, ProgressSink, Stream};
use crate::rootfs::{ContainerPath, Creds, EntryKind, LayerView};
use crate::sandbox::{Isolation, NetworkMode, Rootfs, RunEvent, RunSpec, StdioMode};
use crate::store::Store;

/// The result of a finished stage.
struct StageResult {
    state: ImageState,
    key: CacheKey,
    scope: ScopeStage,
}

/// A stage being built.
struct StageCx {
    index: usize,
    state: ImageState,
    key: CacheKey,
    scope: Scope,
}

/// Work a step does on a cache miss.
enum Work {
    /// Nothing but the config change.
    None,
    /// Copy files into a new layer.
    Copy(Box<CopyWork>),
    /// Create the working directory if it does not exist.
    Workdir {
        path: ContainerPath,
        owner: Option<String>,
    },
    /// Run a process.
    Run(Box<RunWork>),
}

/// What a RUN step runs.
struct RunWork {
    argv: Vec<String>,
    env: Vec<String>,
    cwd: ContainerPath,
    user: String,
    /// The instruction as history shows it, for messages.
    shown: String,
    /// `--mount`s.
    mounts: Vec<RunMount>,
    /// For each bind mount (its index in `mounts`): what to copy for it.
    binds: Vec<(usize, CopyFrom)>,
    /// The step's network: its `--network`, within what the build allows.
    network: Network,
}

enum CopyFrom {
    Context(Vec<Source>),
    Stage {
        index: usize,
        paths: Vec<String>,
    },
    Image {
        layers: Vec<Layer>,
        paths: Vec<String>,
    },
}

struct CopyWork {
    from: CopyFrom,
    /// The layer this step produced in its last build, whose unchanged files can be reused.
    prev: Option<crate::digest::DiffId>,
    heredocs: Vec<(String, String)>,
    /// Files fetched from URLs: the folder holding each, and its name there.
    downloads: Vec<(crate::store::WorkDir, String)>,
    dest: ContainerPath,
    dest_is_dir: bool,
    chown: Option<String>,
    chmod: Option<Chmod>,
    exclude: Option<PatternMatcher>,
    parents: bool,
    add: bool,
}

/// Sends each new layer to the uploading thread, and whether it is one of the result's.
type LayerSender = std::sync::mpsc::Sender<(bool, Layer)>;

/// A prepared step: how to key it, what history says, and what to do on a miss.
struct Prepared {
    parts: Vec<(String, Vec<u8>)>,
    created_by: String,
    work: Work,
    /// Context files whose contents changed since the last build, to explain a miss.
    changed_files: Vec<String>,
}

struct Run<'a> {
    store: &'a Store,
    req: &'a BuildRequest<'a>,
    progress: &'a dyn ProgressSink,
    lexer: Lexer,
    cache: Cache,
    stat_cache: StatCache,
    total: usize,
    step: usize,
    stages: Vec<Option<StageResult>>,
    plan_stages: Vec<super::plan::Stage>,
    /// Build args some ARG consumed, over all stages.
    used_args: std::collections::BTreeSet<String>,
    /// Changed context files seen while preparing the current step.
    changed_files: Vec<String>,
    /// The caches of `--cache-from`.
    imported: Imported,
    /// Every step's key and result, for `--cache-to`.
    records: Vec<Record>,
    /// The ids of the cache mounts RUN steps name, for `--cache-to ...,mounts=true`.
    mount_ids: std::collections::BTreeSet<String>,
    /// How new layers are compressed while they are written, when the build will ship them
    /// (a push, a cache export, `--compression`).
    early_compression: Option<layer::Compression>,
    /// Where the layers of the target stage and the stages it is built FROM go as they are
    /// made (`--push`).
    early_push: Option<(LayerSender, Vec<usize>)>,
}

/// Builds `req` into `store`, reporting progress to `progress`. With
/// [`BuildRequest::push_as_made`] or a registry `--cache-to`, a second thread uploads each
/// layer as the steps make it (the target stage's and the stages it is built FROM for a
/// push or `mode=min`, every stage's for `mode=max`), so that the push and the cache export
/// at the end find them there.
pub fn build(
    store: &Store,
    req: &BuildRequest<'_>,
    progress: &dyn ProgressSink,
) -> Result<BuildOutput, BuildError> {
    use super::remote_cache::CacheLocation;
    // Where layers go: the repository, the compression, whether only the result's layers.
    let mut targets: Vec<(
        &crate::reference::ImageRef,
        Option<layer::Compression>,
        bool,
    )> = req
        .push_as_made
        .iter()
        .map(|t| (t, Some(layer::Compression::Gzip), true))
        .collect();
    for exp in &req.cache_to {
        if let CacheLocation::Registry(r) = &exp.to {
            targets.push((r, exp.compression, exp.mode == CacheMode::Min));
        }
    }
    let Some(client) = req.registry.filter(|_| !targets.is_empty()) else {
        return build_with(store, req, progress, None);
    };
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(bool, Layer)>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = scope.spawn(move || {
            let _done = done_tx;
            for (in_result, layer) in rx {
                for (target, compression, result_only) in &targets {
                    if *result_only && !in_result {
                        continue;
                    }
                    // A failure here is not the build's: the push or export at the end
                    // uploads what is missing and reports what fails.
                    let _ = crate::registry::push::push_layer(
                        client,
                        store,
                        target,
                        &layer,
                        *compression,
                    );
                }
            }
        });
        let out = build_with(store, req, progress, Some((tx, done_rx)));
        let _ = worker.join();
        out
    })
}

fn build_with(
    store: &Store,
    req: &BuildRequest<'_>,
    progress: &dyn ProgressSink,
    early_push: Option<(LayerSender, std::sync::mpsc::Receiver<()>)>,
) -> Result<BuildOutput, BuildError> {
    let (early_push, uploads_done) = match early_push {
        Some((tx, done)) => (Some(tx), Some(done)),
        None => (None, None),
    };
    let _lease = store.lease()?;
    let file = req.dockerfile_name.to_owned();
    let perr = |error| BuildError::Parse {
        file: file.clone(),
        error,
    };
    let df = crate::dockerfile::parse(req.dockerfile).map_err(perr)?;
    if let Some(frontend) = &df.directives.syntax {
        progress.emit(ProgressEvent::Warning {
            message: format!(
                "{file}: # syntax={frontend} is not run: kiln reads the Dockerfile itself (the current syntax) and runs no frontend image"
            ),
        });
    }
    for w in &df.warnings {
        progress.emit(ProgressEvent::Warning {
            message: format!("{file}:{}: {}", w.line, w.message),
        });
    }
    let instructions = ins::instructions(&df).map_err(perr)?;
    let lexer = Lexer::new(df.escape);
    let host = Platform::host();
    let target = req.platform.as_ref().map_or_else(
        || host.clone(),
        |p| Platform {
            os: p.os.clone(),
            arch: p.architecture.clone(),
            variant: p.variant.clone(),
        },
    );
    let mut scope = Scope::new(req.build_args.clone(), &host, &target);
    let plan = Plan::new(instructions, req.target.as_deref(), &lexer, &mut scope).map_err(|e| {
        BuildError::Step {
            file: file.clone(),
            line: e.line(),
            message: e.to_string(),
        }
    })?;
    if let Some(unknown) = req.no_cache_filter.iter().find(|f| {
        !plan.stages.iter().any(|s| {
            f.parse::<usize>().ok() == Some(s.index)
                || s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(f))
        })
    }) {
        return Err(BuildError::Step {
            file: file.clone(),
            line: 0,
            message: format!("--no-cache-filter {unknown:?}: the Dockerfile has no such stage"),
        });
    }
    let stat_cache = match &req.stat_cache {
        Some(p) => load_stat_cache(p),
        None => StatCache::new(),
    };
    let mut run = Run {
        store,
        req,
        progress,
        lexer,
        cache: Cache::new(store.cache_dir()),
        stat_cache,
        total: plan.total_steps(),
        step: 0,
        stages: (0..plan.stages.len()).map(|_| None).collect(),
        plan_stages: plan.stages.clone(),
        used_args: scope.used_build_args().clone(),
        changed_files: Vec::new(),
        imported: Imported::load(store, req.registry, &req.cache_from, progress),
        records: Vec::new(),
        mount_ids: std::collections::BTreeSet::new(),
        early_push: early_push.map(|tx| (tx, stage_chain(&plan.stages, plan.target))),
        early_compression: if !req.push_as_made.is_empty() {
            Some(layer::Compression::Gzip)
        } else if req.compression.is_some() {
            req.compression
        } else {
            req.cache_to
                .first()
                .map(|e| e.compression.unwrap_or(layer::Compression::Zstd))
        },
    };
    for &i in &plan.needed {
        let r = run.stage(i, &scope)?;
        run.stages[i] = Some(r);
    }
    if let Some(p) = &req.stat_cache {
        save_stat_cache(p, &mut run.stat_cache);
    }
    let unused: Vec<String> = req
        .build_args
        .names()
        .filter(|n| !run.used_args.contains(*n) && !crate::dockerfile::scope::is_proxy_arg(n))
        .map(str::to_owned)
        .collect();
    let mut result = run.stages[plan.target]
        .take()
        .ok_or_else(|| BuildError::Step {
            file: file.clone(),
            line: 0,
            message: "target stage was not built".to_owned(),
        })?;
    for (k, v) in &req.labels {
        result
            .state
            .config
            .config
            .labels
            .insert(k.clone(), v.clone());
    }
    if !unused.is_empty() {
        let names: Vec<&str> = unused.iter().map(String::as_str).collect();
        progress.emit(ProgressEvent::Warning {
            message: format!(
                "One or more build-args [{}] were not consumed",
                names.join(" ")
            ),
        });
    }
    let descs: Vec<Descriptor> = result.state.layers.iter().map(|l| l.desc.clone()).collect();
    run.imported
        .fetch(store, req.registry, &descs, req.pull_room, progress)
        .map_err(|message| BuildError::Step {
            file: file.clone(),
            line: 0,
            message,
        })?;
    if let Some(c) = req.compression {
        compress_layers(store, &mut result.state, c)?;
    }
    let out = commit_image(store, &result.state, &req.tags)?;
    progress.emit(ProgressEvent::Built {
        image_id: out.image_id.to_string(),
    });
    for t in &req.tags {
        progress.emit(ProgressEvent::Tagged { name: t.familiar() });
    }
    // The layers sent ahead are uploaded before the export looks for them.
    run.early_push = None;
    if let Some(done) = uploads_done {
        let _ = done.recv();
    }
    for exp in &req.cache_to {
        let chain = stage_chain(&run.plan_stages, plan.target);
        let records: Vec<&Record> = run
            .records
            .iter()
            .filter(|r| exp.mode == CacheMode::Max || chain.contains(&r.stage))
            .collect();
        if let Err(why) = export(
            store,
            req.registry,
            exp,
            &records,
            &run.mount_ids,
            &run.imported,
            progress,
        ) {
            export_failed(exp, why, progress)?;
        }
    }
    Ok(out)
}

/// The stage `target` and the stages it is built FROM, directly or not.
fn stage_chain(stages: &[super::plan::Stage], target: usize) -> Vec<usize> {
    let mut out = vec![target];
    let mut i = target;
    while let Some(dep) = stages
        .get(i)
        .and_then(|st| find_stage(stages.get(..i).unwrap_or_default(), &st.base))
    {
        if out.contains(&dep) {
            break;
        }
        out.push(dep);
        i = dep;
    }
    out
}

/// Replaces the image's uncompressed layer blobs with compressed ones (remembered per diff ID
/// and format in the cache folder, so a rebuild does not compress again).
fn compress_layers(
    store: &Store,
    state: &mut ImageState,
    c: layer::Compression,
) -> Result<(), BuildError> {
    let mt = match c {
        layer::Compression::Gzip => media_types::OCI_LAYER_GZIP,
        layer::Compression::Zstd => media_types::OCI_LAYER_ZSTD,
    };
    for l in &mut state.layers {
        if l.desc.media_type != media_types::OCI_LAYER {
            continue;
        }
        let desc = match store.compressed_form(&l.diff_id, mt) {
            Some(d) => d,
            None => {
                let mut w = store.blob_writer()?;
                layer::compress_parallel(store.open_blob(&l.desc.digest)?, &mut w, c)?;
                let (d, size) = w.commit()?;
                let desc = Descriptor::new(mt, d, size);
                store.remember_compressed(&l.diff_id, &desc)?;
                desc
            }
        };
        l.desc = desc;
    }
    Ok(())
}

/// Writes the image's config and manifest (unless present) and records it in the index.
pub(crate) fn commit_image(
    store: &Store,
    state: &ImageState,
    tags: &[crate::reference::ImageRef],
) -> Result<BuildOutput, BuildError> {
    let (bytes, config_digest) = state.config_bytes().map_err(|e| BuildError::Io {
        op: "encode image config",
        source: e.into(),
    })?;
    if !store.has_blob(&config_digest) {
        store.put_blob(&bytes[..])?;
    }
    let manifest = state.manifest(Descriptor::new(
        media_types::OCI_CONFIG,
        config_digest,
        bytes.len() as u64,
    ));
    let mbytes =
        crate::image::CanonicalJson::to_canonical_json(&manifest).map_err(|e| BuildError::Io {
            op: "encode manifest",
            source: e.into(),
        })?;
    let mdigest = Digest::of(&mbytes);
    if !store.has_blob(&mdigest) {
        store.put_blob(&mbytes[..])?;
    }
    let desc = Descriptor::new(media_types::OCI_MANIFEST, mdigest, mbytes.len() as u64);
    store.add_image(&desc, tags)?;
    Ok(BuildOutput {
        image_id: config_digest,
        manifest: mdigest,
    })
}

fn load_stat_cache(path: &std::path::Path) -> StatCache {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => match Dir::open_ambient_dir(dir, cap_std::ambient_authority()) {
            Ok(d) => StatCache::load(&d, name),
            Err(_) => StatCache::new(),
        },
        _ => StatCache::new(),
    }
}

fn save_stat_cache(path: &std::path::Path, cache: &mut StatCache) {
    // A stat cache is an optimisation: failing to save it only costs a re-read next time.
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        if crate::fsx::private_dir_all(dir).is_ok() {
            if let Ok(d) = Dir::open_ambient_dir(dir, cap_std::ambient_authority()) {
                let _ = cache.save(&d, name);
            }
        }
    }
}

fn now(epoch: Option<i64>) -> OffsetDateTime {
    match epoch.and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok()) {
        Some(t) => t,
        None => OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    }
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Canonical bytes of a list of strings: each length-prefixed.
fn canon(fields: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(&(f.len() as u64).to_le_bytes());
        out.extend_from_slice(f.as_bytes());
    }
    out
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", inner.join(" "))
}

/// Go's `%v` of a string slice: `[a b]`.
fn go_plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

impl Run<'_> {
    fn file(&self) -> String {
        self.req.dockerfile_name.to_owned()
    }

    /// What a RUN step's `--network`, `--security` and `--device` give it. Nothing beyond what
    /// the build was allowed (BuildKit's entitlements): `--network=host` only in a build with the
    /// host network (`kiln build --network=host`; a server tenant with `host_network`), and
    /// never `--security=insecure` or a device. A refusal is the message for the user.
    /// The platform a stage is built for when it is not this machine's: its FROM's
    /// `--platform`, else the build's; `None` for this machine's.
    fn stage_platform(
        &self,
        st: &super::plan::Stage,
    ) -> Result<Option<crate::registry::PlatformSpec>, BuildError> {
        let p = match &st.platform {
            Some(p) => {
                crate::registry::PlatformSpec::parse(p).map_err(|e| self.fail(st.line, e))?
            }
            None => match &self.req.platform {
                Some(p) => p.clone(),
                None => return Ok(None),
            },
        };
        Ok((p != crate::registry::PlatformSpec::host()).then_some(p))
    }

    /// Whether `--no-cache-filter` names stage `index` (by its name or its number).
    fn no_cache_stage(&self, index: usize) -> bool {
        let name = self.plan_stages.get(index).and_then(|s| s.name.as_deref());
        self.req.no_cache_filter.iter().any(|f| {
            f.parse::<usize>().ok() == Some(index)
                || name.is_some_and(|n| n.eq_ignore_ascii_case(f))
        })
    }

    fn step_network(&self, run: &ins::RunArgs) -> Result<Network, String> {
        if run.security == ins::Security::Insecure {
            return Err("RUN --security=insecure is refused: kiln never runs a step with more than Docker's default capabilities".into());
        }
        if !run.devices.is_empty() {
            return Err("RUN --device is refused: a step sees only kiln's own minimal /dev".into());
        }
        match run.network {
            ins::Network::Default => Ok(self.req.network),
            ins::Network::None => Ok(Network::None),
            ins::Network::Host if self.req.network == Network::Host => Ok(Network::Host),
            ins::Network::Host => Err("RUN --network=host is refused: this build may not use the host network (kiln build --network=host allows it; a server tenant needs host_network)".into()),
        }
    }

    fn fail(&self, line: usize, message: impl std::fmt::Display) -> BuildError {
        BuildError::Step {
            file: self.file(),
            line,
            message: message.to_string(),
        }
    }

    fn expand(&self, cx: &StageCx, line: usize, word: &str) -> Result<String, BuildError> {
        self.lexer
            .process_word(word, &cx.scope)
            .map_err(|e| self.fail(line, e))
    }

    fn stage(&mut self, i: usize, globals: &Scope) -> Result<StageResult, BuildError> {
        let st = self.plan_stages[i].clone();
        self.step += 1;
        let started = Instant::now();
        self.progress.emit(ProgressEvent::StepStarted {
            index: self.step,
            total: self.total,
            stage: st.name.clone().unwrap_or_else(|| i.to_string()),
            text: match &st.name {
                Some(n) => format!("FROM {} AS {n}", st.base),
                None => format!("FROM {}", st.base),
            },
        });
        let mut scope = globals.clone();
        let mut kb = KeyBuilder::new(None);
        let state = if st.base.eq_ignore_ascii_case("scratch") {
            scope.begin_stage(&[]);
            kb.part("base", b"scratch");
            let mut s = ImageState::scratch();
            if let Some(p) = self.stage_platform(&st)? {
                s.config.os = p.os;
                s.config.architecture = p.architecture;
                s.config.variant = p.variant;
            }
            s
        } else if let Some(dep) = find_stage(&self.plan_stages[..i], &st.base) {
            let r = self.stages[dep]
                .as_ref()
                .ok_or_else(|| self.fail(st.line, format!("stage {:?} was not built", st.base)))?;
            scope.begin_stage_from(&r.scope);
            kb.part("base", r.key.hex().as_bytes());
            r.state.clone()
        } else {
            let want = self.stage_platform(&st)?;
            let img = self.image(&st.base, want.clone(), st.line)?;
            if let Some(w) = want {
                let c = &img.config;
                let have = crate::registry::PlatformSpec::parse(
                    format!("{}/{}/{}", c.os, c.architecture, c.variant).trim_end_matches('/'),
                )
                .map_err(|e| self.fail(st.line, e))?;
                if have != w {
                    return Err(self.fail(
                        st.line,
                        format!(
                            "{} is {have}, not {w}: kiln builds each stage on its image's platform and does not emulate another",
                            st.base
                        ),
                    ));
                }
            }
            let env: Vec<(String, String)> = img
                .config
                .config
                .env
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (kv.clone(), String::new()),
                })
                .collect();
            scope.begin_stage(&env);
            // The image ID (its config's digest, which names every layer's content): the same
            // image stored with other compression, as after a push, keeps the cache.
            kb.part("base", img.id().to_string().as_bytes());
            ImageState::from_parts(&img.manifest, img.config)
        };
        if let Some(p) = &st.platform {
            kb.part("platform", p.as_bytes());
        }
        let (key, _) = kb.finish();
        let mut cx = StageCx {
            index: i,
            state,
            key,
            scope,
        };
        // docker announces the base image's ONBUILD triggers right under its FROM line.
        let n_triggers = cx.state.config.config.on_build.len();
        if n_triggers > 0 {
            self.progress.emit(ProgressEvent::Triggers {
                index: self.step,
                count: n_triggers,
            });
        }
        let id = if cx.state.layers.is_empty() && cx.state.config.history.is_empty() {
            None
        } else {
            cx.state.config_bytes().ok().map(|(_, d)| d.to_string())
        };
        self.progress.emit(ProgressEvent::StepDone {
            index: self.step,
            image_id: id,
            duration: started.elapsed(),
        });
        // ONBUILD triggers of the base image run now, as part of this stage.
        let triggers = std::mem::take(&mut cx.state.config.config.on_build);
        for (n, t) in triggers.iter().enumerate() {
            let list = fragment(t)
                .map_err(|e| self.fail(st.line, format!("ONBUILD trigger {t:?}: {e}")))?;
            for mut one in list {
                one.start_line = st.line;
                self.instruction(&mut cx, &one, &format!("onbuild{n}"), false)?;
            }
        }
        for (n, one) in st.instructions.iter().enumerate() {
            self.instruction(&mut cx, one, &n.to_string(), true)?;
        }
        self.used_args
            .extend(cx.scope.used_build_args().iter().cloned());
        Ok(StageResult {
            state: cx.state,
            key: cx.key,
            scope: cx
                .scope
                .stage()
                .cloned()
                .ok_or_else(|| self.fail(st.line, "stage has no scope"))?,
        })
    }

    fn instruction(
        &mut self,
        cx: &mut StageCx,
        one: &Spanned<Instruction>,
        slot_idx: &str,
        counted: bool,
    ) -> Result<(), BuildError> {
        if self.req.cancel.is_some_and(Cancel::is_cancelled) {
            return Err(BuildError::Cancelled);
        }
        let started = Instant::now();
        let index = if counted {
            self.step += 1;
            self.step
        } else {
            self.step
        };
        if counted {
            self.progress.emit(ProgressEvent::StepStarted {
                index,
                total: self.total,
                stage: cx.index.to_string(),
                text: one.original.clone(),
            });
        }
        let prepared = self.prepare(cx, one)?;
        let mut kb = KeyBuilder::new(Some(&cx.key));
        for (label, bytes) in &prepared.parts {
            kb.part(label, bytes);
        }
        let (key, parts) = kb.finish();
        let slot = format!("{}\0{}\0{}", self.req.slot_prefix, cx.index, slot_idx);
        if let Work::Run(r) = &prepared.work {
            self.mount_ids.extend(
                r.mounts
                    .iter()
                    .filter_map(|m| m.cache_id())
                    .map(|c| c.0.to_owned()),
            );
        }
        let no_cache = self.req.no_cache || self.no_cache_stage(cx.index);
        let hit = if no_cache {
            None
        } else {
            let local = self.cache.get(&key).filter(|e| {
                e.layer
                    .as_ref()
                    .is_none_or(|l| self.store.has_blob(&l.descriptor().digest))
            });
            match local {
                Some(e) => Some((e, None)),
                None => self.imported.get(&key).map(|(e, from)| (e, Some(from))),
            }
        };
        let entry = match hit {
            Some((e, from)) => {
                if from.is_some() {
                    self.cache.put(&key, &e)?;
                }
                self.progress
                    .emit(ProgressEvent::StepCached { index, from });
                e
            }
            None => {
                if !no_cache {
                    if let Some(mut reason) = self.cache.explain_miss(&slot, &parts) {
                        if reason == "files changed" {
                            if let Some(f) = prepared.changed_files.first() {
                                reason = format!("file {f:?} changed");
                            }
                        }
                        self.progress
                            .emit(ProgressEvent::CacheMiss { index, reason });
                    }
                }
                let mut work = prepared.work;
                if let Work::Copy(w) = &mut work {
                    w.prev = self.cache.last_layer(&slot);
                }
                let layer = self.execute(cx, one, work)?;
                if let Some(l) = &layer {
                    self.cache.remember_layer(&slot, &l.diff_id)?;
                }
                let entry = CacheEntry {
                    created: fmt_time(now(self.req.epoch)),
                    layer,
                };
                self.cache.put(&key, &entry)?;
                self.cache.remember(&slot, &parts)?;
                entry
            }
        };
        let created = parse_time(&entry.created).unwrap_or_else(|| now(self.req.epoch));
        let created = match self.req.epoch {
            Some(_) => now(self.req.epoch),
            None => created,
        };
        let layer = entry.layer.as_ref().map(|l| Layer {
            desc: l.descriptor(),
            diff_id: l.diff_id,
        });
        if let (Some((tx, chain)), Some(l)) = (&self.early_push, &layer) {
            let _ = tx.send((chain.contains(&cx.index), l.clone()));
        }
        self.records.push(Record {
            stage: cx.index,
            key,
            created: entry.created.clone(),
            layer: layer.clone(),
        });
        cx.state.commit(created, prepared.created_by, layer);
        cx.key = key;
        let id = cx.state.config_bytes().ok().map(|(_, d)| d.to_string());
        self.progress.emit(ProgressEvent::StepDone {
            index,
            image_id: id,
            duration: started.elapsed(),
        });
        Ok(())
    }

    /// Expands the instruction, applies its config change, and says how to key and run it.
    fn prepare(
        &mut self,
        cx: &mut StageCx,
        one: &Spanned<Instruction>,
    ) -> Result<Prepared, BuildError> {
        let line = one.start_line;
        let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(created_by) = apply_metadata(
            &self.lexer,
            &mut cx.state,
            &mut cx.scope,
            &one.value,
            &mut parts,
        )
        .map_err(|m| self.fail(line, m))?
        {
            return Ok(Prepared {
                parts,
                created_by,
                work: Work::None,
                changed_files: Vec::new(),
            });
        }
        let (created_by, work) = match &one.value {
            Instruction::From(_) => return Err(self.fail(line, "FROM inside a stage")),
            Instruction::Arg(args) => {
                let mut shown = Vec::new();
                for a in args {
                    cx.scope
                        .declare_arg(&self.lexer, &a.name, a.default.as_deref())
                        .map_err(|e| self.fail(line, e))?;
                    let v = cx.scope.lookup(&a.name).map(str::to_owned);
                    parts.push((
                        format!("arg {}", a.name),
                        canon(&[&a.name, v.as_deref().unwrap_or("\0unset")]),
                    ));
                    shown.push(match (&a.default, v) {
                        (Some(_), Some(v)) => format!("{}={v}", a.name),
                        _ => a.name.clone(),
                    });
                }
                (format!("ARG {}", shown.join(" ")), Work::None)
            }
            Instruction::Workdir(w) => {
                let w = self.expand(cx, line, w)?;
                let base = ContainerPath::parse(&cx.state.config.config.working_dir);
                let path = ContainerPath::resolve(&base, &w);
                cx.state.config.config.working_dir = path.to_string();
                let owner = Some(cx.state.config.config.user.clone()).filter(|u| !u.is_empty());
                parts.push((
                    "instruction".into(),
                    canon(&["WORKDIR", path.as_str(), owner.as_deref().unwrap_or("")]),
                ));
                (format!("WORKDIR {path}"), Work::Workdir { path, owner })
            }
            Instruction::Run(run) => {
                let argv = command(&cx.state, &run.command);
                let args = cx.scope.history_args();
                let mut fields = vec!["RUN".to_owned()];
                fields.extend(argv.iter().cloned());
                for (k, v) in cx.scope.env_for_cache() {
                    fields.push(format!("env {k}={v}"));
                }
                fields.push(format!(
                    "flags {:?} {:?} {:?} {:?}",
                    run.mounts, run.network, run.security, run.devices
                ));
                fields.push(format!(
                    "guest tools {}",
                    crate::sandbox::wasi::GuestTools::embedded().identity()
                ));
                for h in &run.heredocs {
                    fields.push(format!("heredoc {} {}", h.name, h.content));
                }
                let f: Vec<&str> = fields.iter().map(String::as_str).collect();
                parts.push(("instruction".into(), canon(&f)));
                let prefix = if args.is_empty() {
                    String::new()
                } else {
                    let kv: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("|{} {} ", args.len(), kv.join(" "))
                };
                let workdir = ContainerPath::parse(&cx.state.config.config.working_dir);
                let mut mounts = Vec::new();
                for spec in &run.mounts {
                    let mut expanded = None;
                    let m = spec.resolve(|v| match self.expand(cx, line, v) {
                        Ok(v) => Ok(v),
                        Err(e) => {
                            expanded.get_or_insert(e);
                            Ok::<_, MountError>(String::new())
                        }
                    });
                    if let Some(e) = expanded {
                        return Err(e);
                    }
                    let m = m.map_err(|e| self.fail(line, e))?;
                    mounts.push(RunMount::new(&m, &workdir).map_err(|e| self.fail(line, e))?);
                }
                let mut binds = Vec::new();
                for (i, m) in mounts.iter().enumerate() {
                    if let Some((from, source)) = m.bind_source() {
                        let what = self.bind_from(cx, line, from, source, &mut parts)?;
                        binds.push((i, what));
                    }
                }
                let network = self.step_network(run).map_err(|e| self.fail(line, e))?;
                let argv = run_argv(argv, run);
                let mut env: Vec<String> = cx
                    .scope
                    .env_for_run()
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if !env.iter().any(|e| e.starts_with("PATH=")) {
                    env.push(format!("PATH={DEFAULT_PATH}"));
                }
                let config = &cx.state.config.config;
                let cwd = ContainerPath::parse(if config.working_dir.is_empty() {
                    "/"
                } else {
                    &config.working_dir
                });
                let shown = format!(
                    "RUN {}",
                    one.original.trim_start().get(3..).unwrap_or("").trim()
                );
                let work = RunWork {
                    argv,
                    env,
                    cwd,
                    user: config.user.clone(),
                    shown,
                    mounts,
                    binds,
                    network,
                };
                (
                    format!(
                        "RUN {prefix}{} # buildkit",
                        command(&cx.state, &run.command).join(" ")
                    ),
                    Work::Run(Box::new(work)),
                )
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                let add = matches!(one.value, Instruction::Add(_));
                let spec = CopySpec::of(&one.value);
                let work = self.prepare_copy(cx, line, &spec, add, &mut parts)?;
                let name = if add { "ADD" } else { "COPY" };
                let text = one
                    .original
                    .trim_start()
                    .get(name.len()..)
                    .unwrap_or("")
                    .trim();
                (format!("{name} {text} # buildkit"), work)
            }
            other => return Err(self.fail(line, format!("unexpected instruction {other:?}"))),
        };
        let changed_files = std::mem::take(&mut self.changed_files);
        Ok(Prepared {
            parts,
            created_by,
            work,
            changed_files,
        })
    }

    fn prepare_copy(
        &mut self,
        cx: &mut StageCx,
        line: usize,
        c: &CopySpec<'_>,
        add: bool,
        parts: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<Work, BuildError> {
        let mut canonical = vec![if add { "ADD" } else { "COPY" }.to_owned()];
        let mut file_sources = Vec::new();
        let mut inline = Vec::new();
        for src in c.sources {
            match src {
                ins::Source::Path(p) => file_sources.push(self.expand(cx, line, p)?),
                ins::Source::Inline(f) => inline.push(f),
            }
        }
        let dest_raw = self.expand(cx, line, c.dest)?;
        let dest_is_dir = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let wd = ContainerPath::parse(&cx.state.config.config.working_dir);
        let dest = ContainerPath::resolve(&wd, &dest_raw);
        let chown = c.chown.map(|v| self.expand(cx, line, v)).transpose()?;
        let chmod = match c.chmod {
            Some(v) => {
                let v = self.expand(cx, line, v)?;
                Some(Chmod::parse(&v).map_err(|e| self.fail(line, e))?)
            }
            None => None,
        };
        let mut excludes = Vec::new();
        for e in c.excludes {
            excludes.push(self.expand(cx, line, e)?);
        }
        let exclude = if excludes.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(&excludes).map_err(|e| self.fail(line, e))?)
        };
        canonical.push(format!("dest {dest} {dest_is_dir}"));
        canonical.push(format!("chown {chown:?}"));
        canonical.push(format!("chmod {:?}", c.chmod));
        canonical.push(format!("exclude {excludes:?}"));
        canonical.push(format!("parents {} link {}", c.parents, c.link));
        let mut heredocs = Vec::new();
        for h in inline {
            let content = if h.expand {
                self.expand(cx, line, &h.content)?
            } else {
                h.content.clone()
            };
            canonical.push(format!("heredoc {}", h.name));
            parts.push((format!("heredoc {}", h.name), content.as_bytes().to_vec()));
            heredocs.push((h.name.clone(), content));
        }
        let mut downloads = Vec::new();
        let (urls, file_sources): (Vec<String>, Vec<String>) = file_sources
            .into_iter()
            .partition(|s| add && (crate::fetch::is_url(s) || s.starts_with("git@")));
        if c.checksum.is_some() && (urls.is_empty() || !file_sources.is_empty()) {
            return Err(self.fail(line, "--checksum is only supported for HTTP(S) sources"));
        }
        for url in &urls {
            if self.req.network == Network::None {
                return Err(self.fail(
                    line,
                    format!("ADD {url}: fetching URLs needs network access, which this build does not have; pass --network=host to allow it"),
                ));
            }
            if !crate::fetch::is_url(url) {
                return Err(self.fail(line, format!("ADD {url}: git sources are not supported")));
            }
            let dir = self.store.temp_dir()?;
            let got =
                crate::fetch::fetch(url, dir.path(), c.checksum).map_err(|e| self.fail(line, e))?;
            parts.push((
                format!("url {url}"),
                canon(&[&got.name, &got.digest.to_string()]),
            ));
            downloads.push((dir, got.name));
        }
        canonical.push(format!("urls {urls:?} checksum {:?}", c.checksum));
        canonical.push(format!("sources {file_sources:?}"));
        let from = match c.from {
            None => {
                let mut resolved = Vec::new();
                for s in &file_sources {
                    let found = self.req.context.resolve(s).map_err(|e| {
                        if e.is_user_error() {
                            self.fail(
                                line,
                                format!("{} failed: {e}", if add { "ADD" } else { "COPY" }),
                            )
                        } else {
                            BuildError::Context(e)
                        }
                    })?;
                    resolved.extend(found);
                }
                if !resolved.is_empty() {
                    let d = self
                        .req
                        .context
                        .digest(&resolved, &mut self.stat_cache)
                        .map_err(BuildError::Context)?;
                    parts.push(("files".into(), d.hash.to_vec()));
                    self.changed_files = d.changed;
                }
                CopyFrom::Context(resolved)
            }
            Some(f) => {
                let f = self.expand(cx, line, f)?;
                if let Some(i) = find_stage(&self.plan_stages[..cx.index], &f) {
                    let r = self.stages[i]
                        .as_ref()
                        .ok_or_else(|| self.fail(line, format!("stage {f:?} was not built")))?;
                    parts.push(("from".into(), r.key.hex().into_bytes()));
                    CopyFrom::Stage {
                        index: i,
                        paths: file_sources.clone(),
                    }
                } else {
                    let img = self.image(&f, self.req.platform.clone(), line)?;
                    parts.push(("from".into(), img.id().to_string().into_bytes()));
                    let st = ImageState::from_parts(&img.manifest, img.config);
                    CopyFrom::Image {
                        layers: st.layers,
                        paths: file_sources.clone(),
                    }
                }
            }
        };
        let cs: Vec<&str> = canonical.iter().map(String::as_str).collect();
        parts.insert(0, ("instruction".into(), canon(&cs)));
        let multiple = file_sources.len() + heredocs.len() + downloads.len() > 1;
        Ok(Work::Copy(Box::new(CopyWork {
            from,
            prev: None,
            heredocs,
            downloads,
            dest,
            dest_is_dir: dest_is_dir || multiple,
            chown,
            chmod,
            exclude,
            parents: c.parents,
            add,
        })))
    }

    /// An image named in the Dockerfile: from the store, pulled first when the build's pull
    /// policy says so and it has a registry client.
    fn image(
        &self,
        name: &str,
        platform: Option<crate::registry::PlatformSpec>,
        line: usize,
    ) -> Result<crate::store::Image, BuildError> {
        use crate::registry::{pull::ensure, PlatformSpec, PullOptions, PullPolicy};
        let Some(client) = self.req.registry else {
            return self.store.resolve(name).map_err(|e| {
                if e.is_user_error() {
                    self.fail(line, format!("image {name:?} is not in the store: {e}"))
                } else {
                    BuildError::Store(e)
                }
            });
        };
        let platform = platform.unwrap_or_else(PlatformSpec::host);
        let policy = self.req.pull;
        let events = |t: crate::progress::Transfer| self.progress.emit(ProgressEvent::Transfer(t));
        ensure(
            client,
            self.store,
            name,
            policy,
            &PullOptions {
                platform,
                max_bytes: self.req.pull_room,
                cancel: None,
            },
            &events,
        )
        .map_err(|e| match e {
            crate::registry::RegistryError::Store(se) if !se.is_user_error() => {
                BuildError::Store(se)
            }
            e if policy == PullPolicy::Never => self.fail(
                line,
                format!("image {name:?} is not in the store (--pull=never): {e}"),
            ),
            e => self.fail(line, format!("{name}: {e}")),
        })
    }

    /// What a `RUN --mount=type=bind` copies: a folder of the context, a stage or an image
    /// (pulled when missing); its content goes into the step's key.
    fn bind_from(
        &mut self,
        cx: &StageCx,
        line: usize,
        from: Option<&str>,
        source: &str,
        parts: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<CopyFrom, BuildError> {
        let rel = source.trim_start_matches('/');
        let not_dir = |what: &str| {
            format!(
                "RUN --mount=type=bind,source={source}: {what} is not a folder (kiln binds folders only, not single files)"
            )
        };
        let Some(f) = from else {
            let found = self
                .req
                .context
                .resolve(if rel.is_empty() { "." } else { rel })
                .map_err(|e| {
                    if e.is_user_error() {
                        self.fail(line, format!("RUN --mount=type=bind: {e}"))
                    } else {
                        BuildError::Context(e)
                    }
                })?;
            if found.len() != 1
                || found
                    .iter()
                    .any(|s| s.kind != crate::context::SourceKind::Dir)
            {
                return Err(self.fail(line, not_dir("the context's")));
            }
            let d = self
                .req
                .context
                .digest(&found, &mut self.stat_cache)
                .map_err(BuildError::Context)?;
            parts.push((format!("bind {source}"), d.hash.to_vec()));
            return Ok(CopyFrom::Context(found));
        };
        let f = self.expand(cx, line, f)?;
        let (layers, key, stage) = if let Some(i) = find_stage(&self.plan_stages[..cx.index], &f) {
            let r = self.stages[i]
                .as_ref()
                .ok_or_else(|| self.fail(line, format!("stage {f:?} was not built")))?;
            (r.state.layers.clone(), r.key.hex(), Some(i))
        } else {
            let img = self.image(&f, self.req.platform.clone(), line)?;
            let id = img.id().to_string();
            (
                ImageState::from_parts(&img.manifest, img.config).layers,
                id,
                None,
            )
        };
        // The source's symlinks resolve inside that rootfs, never on the host.
        let view = self.view(&layers)?;
        let (real, entry) = view
            .resolve(&ContainerPath::parse(source), true)
            .map_err(BuildError::Rootfs)?;
        if !entry.is_some_and(|e| e.kind == EntryKind::Dir) {
            return Err(self.fail(line, not_dir(&format!("{f}'s"))));
        }
        let paths = vec![real.as_str().trim_start_matches('/').to_owned()];
        parts.push((format!("bind {f} {source}"), key.into_bytes()));
        Ok(match stage {
            Some(index) => CopyFrom::Stage { index, paths },
            None => CopyFrom::Image { layers, paths },
        })
    }

    /// The folder a bind mount shows: a copy of its source in the store's scratch space.
    fn bind_copy(&self, what: &CopyFrom, line: usize) -> Result<crate::store::WorkDir, BuildError> {
        let dir = self.store.temp_dir()?;
        let out = open_dir(dir.path())?;
        let empty = LayerView::new(Vec::new());
        let opts = CopyOptions {
            epoch: self.req.epoch,
            ..CopyOptions::default()
        };
        let root = ContainerPath::parse("/");
        let cerr =
            |e: crate::copy::CopyError| self.fail(line, format!("RUN --mount=type=bind: {e}"));
        match what {
            CopyFrom::Context(sources) => {
                let one: Vec<CopySource> = sources
                    .iter()
                    .map(|s| CopySource {
                        path: s.resolved.clone(),
                        keep: String::new(),
                    })
                    .collect();
                copy_into(
                    &ContextSource(self.req.context),
                    &one,
                    &root,
                    true,
                    &empty,
                    &out,
                    &opts,
                )
                .map_err(cerr)?;
            }
            CopyFrom::Stage { index, paths } => {
                let layers = self.stage_layers(*index);
                self.copy_view_into(&layers, paths, &out, &opts, line)?;
            }
            CopyFrom::Image { layers, paths } => {
                self.copy_view_into(layers, paths, &out, &opts, line)?;
            }
        }
        Ok(dir)
    }

    /// The layers of the built stage `index`.
    fn stage_layers(&self, index: usize) -> Vec<Layer> {
        self.stages
            .get(index)
            .and_then(Option::as_ref)
            .map(|r| r.state.layers.clone())
            .unwrap_or_default()
    }

    /// Copies the folders `paths` of `layers` into the folder `out`.
    fn copy_view_into(
        &self,
        layers: &[Layer],
        paths: &[String],
        out: &Dir,
        opts: &CopyOptions,
        line: usize,
    ) -> Result<(), BuildError> {
        let view = self.view(layers)?;
        let empty = LayerView::new(Vec::new());
        let sources: Vec<CopySource> = paths
            .iter()
            .map(|p| CopySource {
                path: p.clone(),
                keep: String::new(),
            })
            .collect();
        copy_into(
            &view,
            &sources,
            &ContainerPath::parse("/"),
            true,
            &empty,
            out,
            opts,
        )
        .map_err(|e| self.fail(line, format!("RUN --mount=type=bind: {e}")))?;
        Ok(())
    }

    /// The read-only view of `layers`, unpacking snapshots that are missing.
    fn view(&self, layers: &[Layer]) -> Result<LayerView, BuildError> {
        let missing: Vec<Descriptor> = layers
            .iter()
            .filter(|l| !self.store.has_snapshot(&l.diff_id))
            .map(|l| l.desc.clone())
            .collect();
        self.imported
            .fetch(
                self.store,
                self.req.registry,
                &missing,
                self.req.pull_room,
                self.progress,
            )
            .map_err(|message| BuildError::Step {
                file: self.file(),
                line: 0,
                message,
            })?;
        let mut dirs = Vec::new();
        for l in layers {
            self.store.layer_snapshot(&l.diff_id, &l.desc.digest)?;
            dirs.push(self.store.open_snapshot(&l.diff_id)?);
        }
        Ok(LayerView::new(dirs))
    }

    fn execute(
        &mut self,
        cx: &mut StageCx,
        one: &Spanned<Instruction>,
        work: Work,
    ) -> Result<Option<CachedLayer>, BuildError> {
        let line = one.start_line;
        match work {
            Work::None => Ok(None),
            Work::Run(w) => self.execute_run(cx, line, *w).map(Some),
            Work::Workdir { path, owner } => {
                let lower = self.view(&cx.state.layers)?;
                match lower.lookup(&path, true).map_err(BuildError::Rootfs)? {
                    Some(e) if e.kind == EntryKind::Dir => return Ok(None),
                    Some(_) => {
                        return Err(self.fail(line, format!("WORKDIR {path}: not a directory")))
                    }
                    None => {}
                }
                let ids = match owner {
                    Some(u) => Some(resolve_owner(&u, &lower).map_err(|e| self.fail(line, e))?),
                    None => None,
                };
                let upper = self.store.temp_dir()?;
                let udir = open_dir(upper.path())?;
                let opts = CopyOptions {
                    chown: ids,
                    epoch: self.req.epoch,
                    ..CopyOptions::default()
                };
                crate::copy::make_dirs(&path, &lower, &udir, &opts).map_err(BuildError::Copy)?;
                self.commit_upper(upper).map(Some)
            }
            Work::Copy(w) => self.execute_copy(cx, line, *w).map(Some),
        }
    }

    fn execute_run(
        &mut self,
        cx: &mut StageCx,
        line: usize,
        w: RunWork,
    ) -> Result<CachedLayer, BuildError> {
        let lower = self.view(&cx.state.layers)?;
        let creds = if w.user.is_empty() {
            Creds { uid: 0, gid: 0 }
        } else {
            let (uid, gid) = resolve_owner(&w.user, &lower).map_err(|e| self.fail(line, e))?;
            Creds { uid, gid }
        };
        let rootfs_lowers: Vec<std::path::PathBuf> = cx
            .state
            .layers
            .iter()
            .map(|l| self.store.snapshot_dir(&l.diff_id))
            .collect();
        let upper = self.store.temp_dir()?;
        let id = container_id(upper.path());
        let mut mounts = w.mounts;
        // The bind mounts' copies live until the step is over.
        let mut bind_copies = Vec::new();
        for (i, what) in &w.binds {
            let copy = self.bind_copy(what, line)?;
            if let Some(m) = mounts.get_mut(*i) {
                m.set_bind_host(copy.path().to_path_buf());
            }
            bind_copies.push(copy);
        }
        for (id, mode, uid, gid) in mounts.iter().filter_map(RunMount::cache_id) {
            self.seed_mount(id, (mode, uid, gid));
        }
        let mounted = mount_all(self.store, &mounts, &rootfs_lowers, upper.path())?;
        let rootfs = Rootfs {
            lowers: rootfs_lowers,
            upper: upper.path().to_path_buf(),
        };
        let spec = RunSpec {
            argv: w.argv,
            env: w.env,
            cwd: w.cwd,
            creds,
            limits: self.req.limits,
            isolation: self.req.isolation,
            stdio: StdioMode::Capture,
            network: match w.network {
                Network::Host => NetworkMode::Host,
                Network::None => NetworkMode::None,
            },
            hostname: id.clone(),
            extra_hosts: self.req.extra_hosts.clone(),
            control: match self.req.cancel {
                Some(c) => Some(c.step().ok_or(BuildError::Cancelled)?),
                None => None,
            },
            binds: mounted.binds.clone(),
            terminal: None,
            stdin: None,
            orphans: crate::sandbox::Orphans::Killed,
        };
        let index = self.step;
        let progress = self.progress;
        let log_dir = self.store.log_dir();
        crate::fsx::private_dir_all(&log_dir).map_err(|e| BuildError::Io {
            op: "create the log folder",
            source: e,
        })?;
        let log_path = log_dir.join(format!("{id}.log"));
        let mut log = std::io::BufWriter::new(std::fs::File::create(&log_path).map_err(|e| {
            BuildError::Io {
                op: "create the step's log",
                source: e,
            }
        })?);
        let mut log_failed = None;
        let mut out = LineSplitter::default();
        let mut err = LineSplitter::default();
        let mut shown: usize = 0;
        let mut clipped = false;
        let mut offline_hint = false;
        let mut emit = |stream, text: String| {
            if clipped {
                return;
            }
            if shown + text.len() > LIVE_OUTPUT {
                clipped = true;
                progress.emit(ProgressEvent::StepOutput {
                    index,
                    stream: Stream::Stderr,
                    text: format!(
                        "[output clipped, log limit {}MiB reached; the full output is in {}]\n",
                        LIVE_OUTPUT >> 20,
                        log_path.display()
                    ),
                });
                return;
            }
            shown += text.len();
            progress.emit(ProgressEvent::StepOutput {
                index,
                stream,
                text,
            });
        };
        let outcome = self
            .req
            .sandbox
            .run(&rootfs, &spec, &mut |event| match event {
                RunEvent::Started { executor } => progress.emit(ProgressEvent::Exec {
                    index,
                    id: id.clone(),
                    executor: executor.to_owned(),
                }),
                RunEvent::Output(stream, bytes) => {
                    if log_failed.is_none() {
                        log_failed = log.write_all(bytes).err();
                    }
                    if !offline_hint && spec.network == NetworkMode::None {
                        let text = String::from_utf8_lossy(bytes);
                        offline_hint = NO_NETWORK_SIGNS.iter().any(|sign| text.contains(sign));
                    }
                    let lines = match stream {
                        Stream::Stdout => &mut out,
                        Stream::Stderr => &mut err,
                    };
                    if let Some(text) = lines.push(bytes) {
                        emit(stream, text);
                    }
                }
            });
        for (stream, lines) in [(Stream::Stdout, &mut out), (Stream::Stderr, &mut err)] {
            if let Some(text) = lines.finish() {
                emit(stream, text);
            }
        }
        let log_failed = log_failed.or_else(|| log.flush().err());
        drop(log);
        if let Some(e) = log_failed {
            return Err(BuildError::Io {
                op: "write the step's log",
                source: e,
            });
        }
        mounted.finish(upper.path())?;
        let outcome = outcome.map_err(BuildError::Sandbox)?;
        if self.req.cancel.is_some_and(Cancel::is_cancelled) {
            return Err(BuildError::Cancelled);
        }
        for what in &outcome.not_enforced {
            self.progress.emit(ProgressEvent::Warning {
                message: format!(
                    "{}:{line}: RUN limit not enforced on this host: {what}",
                    self.file()
                ),
            });
        }
        // The full log is kept when the live view did not show all of it, or the step failed.
        let keep_log = clipped || outcome.status != 0 || outcome.limit.is_some();
        if !keep_log {
            let _ = std::fs::remove_file(&log_path);
        }
        if let Some(limit) = outcome.limit {
            let (name, value) = spec.limits.describe(limit);
            return Err(self.fail(line, format!("RUN exceeded its {name} limit ({value})")));
        }
        if let Some(bin) = outcome
            .needs_native
            .as_ref()
            .filter(|_| outcome.status != 0)
        {
            let why = match spec.isolation {
                Isolation::Wasi => "native execution is disabled (--isolation=wasi)",
                Isolation::Auto => "this build of kiln has no native sandbox",
            };
            return Err(self.fail(line, format!("RUN needs native binary {bin}; {why}")));
        }
        if outcome.status != 0 {
            return Err(BuildError::Exit {
                file: self.file(),
                line,
                message: format!(
                    "{}: process {:?} did not complete successfully: exit code: {}{}",
                    w.shown,
                    spec.argv.join(" "),
                    outcome.status,
                    if offline_hint {
                        " (the step has no network; pass --network=host to give it the host's)"
                    } else {
                        ""
                    }
                ),
                code: outcome.status,
            });
        }
        self.commit_upper(upper)
    }

    fn execute_copy(
        &mut self,
        cx: &mut StageCx,
        line: usize,
        w: CopyWork,
    ) -> Result<CachedLayer, BuildError> {
        let lower = self.view(&cx.state.layers)?;
        let chown = match &w.chown {
            Some(spec) => Some(resolve_owner(spec, &lower).map_err(|e| self.fail(line, e))?),
            None => None,
        };
        // ADD may extract archives over copied files in place: it neither shares inodes nor
        // records sources.
        let reuse = match w.prev {
            Some(d) if !w.add && self.store.has_snapshot(&d) => {
                self.store.open_snapshot(&d).ok().map(|snapshot| {
                    let notes = self.store.snapshot_sources(&d).unwrap_or_default();
                    std::sync::Arc::new(crate::copy::Reuse {
                        snapshot,
                        sources: crate::copy::Sources::decode(&notes),
                    })
                })
            }
            _ => None,
        };
        let record = (!w.add).then(std::sync::Arc::default);
        let opts = CopyOptions {
            chown,
            chmod: w.chmod.clone(),
            exclude: w.exclude.clone(),
            parents: w.parents,
            epoch: self.req.epoch,
            reuse,
            record: record.clone(),
        };
        let upper = self.store.temp_dir()?;
        let udir = open_dir(upper.path())?;
        let cerr = |e: crate::copy::CopyError| self.fail(line, e);
        match &w.from {
            CopyFrom::Context(sources) => {
                let ctx = self.req.context;
                let mut plain = Vec::new();
                for s in sources {
                    if w.add && s.kind == crate::context::SourceKind::File {
                        if let Some(()) = self.try_extract(
                            ctx.root(),
                            &s.resolved,
                            &w,
                            &lower,
                            &udir,
                            &opts,
                            line,
                        )? {
                            continue;
                        }
                    }
                    plain.push(CopySource {
                        path: s.resolved.clone(),
                        keep: s.path.trim_start_matches('/').to_owned(),
                    });
                }
                if !plain.is_empty() {
                    let src = ContextSource(ctx);
                    copy_into(&src, &plain, &w.dest, w.dest_is_dir, &lower, &udir, &opts)
                        .map_err(cerr)?;
                }
            }
            CopyFrom::Stage { index, paths } => {
                let layers = self.stage_layers(*index);
                self.copy_from_layers(&layers, paths, &w, &lower, &udir, &opts, line)?;
            }
            CopyFrom::Image { layers, paths } => {
                self.copy_from_layers(layers, paths, &w, &lower, &udir, &opts, line)?;
            }
        }
        for (dir, name) in &w.downloads {
            let src = open_dir(dir.path())?;
            let one = [CopySource {
                path: name.clone(),
                keep: name.clone(),
            }];
            copy_into(&src, &one, &w.dest, w.dest_is_dir, &lower, &udir, &opts).map_err(cerr)?;
        }
        for (name, content) in &w.heredocs {
            crate::copy::write_file(
                &w.dest,
                w.dest_is_dir,
                name,
                content.as_bytes(),
                &lower,
                &udir,
                &opts,
            )
            .map_err(cerr)?;
        }
        let sources = record
            .and_then(|r| r.lock().ok().map(|r| r.encode()))
            .filter(|s| !s.is_empty());
        let layer = self.commit_upper(upper)?;
        if let Some(notes) = sources {
            // Bookkeeping only: without it the next build copies every file again.
            let _ = self.store.set_snapshot_sources(&layer.diff_id, &notes);
        }
        Ok(layer)
    }

    /// COPY --from: sources resolved in another rootfs (a stage's or an image's layers).
    #[allow(clippy::too_many_arguments)]
    fn copy_from_layers(
        &self,
        layers: &[Layer],
        paths: &[String],
        w: &CopyWork,
        lower: &LayerView,
        udir: &Dir,
        opts: &CopyOptions,
        line: usize,
    ) -> Result<(), BuildError> {
        let view = self.view(layers)?;
        let sources = glob_view(&view, paths).map_err(|m| self.fail(line, m))?;
        copy_into(&view, &sources, &w.dest, w.dest_is_dir, lower, udir, opts)
            .map_err(|e| self.fail(line, e))?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn try_extract(
        &self,
        root: &Dir,
        path: &str,
        w: &CopyWork,
        lower: &LayerView,
        udir: &Dir,
        opts: &CopyOptions,
        line: usize,
    ) -> Result<Option<()>, BuildError> {
        let Ok(f) = root.open(path) else {
            return Ok(None);
        };
        if !looks_like_tar(f.into_std()) {
            return Ok(None);
        }
        crate::copy::make_dirs(&w.dest, lower, udir, opts).map_err(|e| self.fail(line, e))?;
        let f = root.open(path).map_err(|e| BuildError::Io {
            op: "open archive",
            source: e,
        })?;
        let (real, _) = lower.resolve(&w.dest, true).map_err(BuildError::Rootfs)?;
        let target = if real.is_root() {
            udir.try_clone()
        } else {
            udir.open_dir(real.rel())
        }
        .map_err(|e| BuildError::Io {
            op: "open ADD destination",
            source: e,
        })?;
        layer::unpack_layer(f.into_std(), &target, &layer::UnpackOptions::archive())
            .map_err(|e| self.fail(line, format!("ADD {path}: {e}")))?;
        Ok(Some(()))
    }

    /// Fills the cache mount `id` from a `--cache-from` cache when this store has none yet. A
    /// cache that cannot be read is a warning: the step then starts with an empty folder.
    fn seed_mount(&self, id: &str, owner: (u32, u32, u32)) {
        let Some((blob, from)) = self.imported.mount(id) else {
            return;
        };
        let result = self
            .imported
            .fetch(
                self.store,
                self.req.registry,
                std::slice::from_ref(&blob),
                self.req.pull_room,
                self.progress,
            )
            .and_then(|()| {
                seed_cache_mount(self.store, id, owner, &blob.digest, self.req.pull_room)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            self.progress.emit(ProgressEvent::Warning {
                message: format!("cache mount {id:?} from {from} is not used: {e}"),
            });
        }
    }

    /// Turns an upper folder into a layer blob and a snapshot.
    fn commit_upper(&self, upper: crate::store::WorkDir) -> Result<CachedLayer, BuildError> {
        // The layer writer hashes its tar as it writes it: the store need not hash it again.
        let w = self.store.prehashed_blob_writer()?;
        let udir = open_dir(upper.path())?;
        let Some(c) = self.early_compression else {
            let (tar, w) = layer::write_layer_pipelined(&udir, self.req.epoch, w)?;
            let size = w.commit(&tar.diff_id.as_uncompressed_digest())?;
            self.store.adopt_snapshot(&tar.diff_id, upper)?;
            return Ok(CachedLayer {
                diff_id: tar.diff_id,
                size,
                blob: None,
            });
        };
        // The layer will leave the machine: it is compressed on another thread as it is
        // written, rather than read back and hashed again later.
        let (tar, size) = std::thread::scope(|scope| -> Result<_, BuildError> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
            let store = self.store;
            let compressor = scope.spawn(move || -> Result<Descriptor, BuildError> {
                let mut out = store.blob_writer()?;
                let blob = layer::compress_parallel(layer::ChannelReader::new(rx), &mut out, c)?;
                out.commit_expect(&blob.digest)?;
                let mt = match c {
                    layer::Compression::Gzip => media_types::OCI_LAYER_GZIP,
                    layer::Compression::Zstd => media_types::OCI_LAYER_ZSTD,
                };
                Ok(Descriptor::new(mt, blob.digest, blob.size))
            });
            let (tar, tee) = layer::write_layer_pipelined(
                &udir,
                self.req.epoch,
                layer::Tee { inner: w, copy: tx },
            )?;
            let layer::Tee { inner, copy } = tee;
            drop(copy);
            let size = inner.commit(&tar.diff_id.as_uncompressed_digest())?;
            // Compressing is a head start, not the build's work: a failure leaves the
            // layer to be compressed when it ships.
            if let Ok(Ok(desc)) = compressor.join() {
                self.store.remember_compressed(&tar.diff_id, &desc)?;
            }
            Ok((tar, size))
        })?;
        self.store.adopt_snapshot(&tar.diff_id, upper)?;
        Ok(CachedLayer {
            diff_id: tar.diff_id,
            size,
            blob: None,
        })
    }
}

/// Applies a metadata-only instruction (ENV, LABEL, CMD, ENTRYPOINT, SHELL, EXPOSE, VOLUME, USER,
/// STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER) to an image config: used by the builder and by
/// `import --change`/`commit -c`. Returns the history text, or `None` for other instructions;
/// pushes the step's canonical form onto `parts`.
pub(crate) fn apply_metadata(
    lexer: &Lexer,
    state: &mut ImageState,
    scope: &mut Scope,
    instruction: &Instruction,
    parts: &mut Vec<(String, Vec<u8>)>,
) -> Result<Option<String>, String> {
    let created_by = match instruction {
        Instruction::Env(pairs) => {
            let mut expanded = Vec::new();
            for kv in pairs {
                expanded.push((kv.key.clone(), expand(lexer, scope, &kv.value)?));
            }
            for (k, v) in &expanded {
                scope.set_env(k, v).map_err(|e| e.to_string())?;
                state.set_env(k, v);
            }
            let shown: Vec<String> = expanded.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let fields: Vec<&str> = shown.iter().map(String::as_str).collect();
            parts.push((
                "instruction".into(),
                canon(&[&["ENV"], &fields[..]].concat()),
            ));
            format!("ENV {}", shown.join(" "))
        }
        Instruction::Label(pairs) => {
            let mut shown = Vec::new();
            for kv in pairs {
                let k = expand(lexer, scope, &kv.key)?;
                let v = expand(lexer, scope, &kv.value)?;
                shown.push(format!("{k}={v}"));
                state.config.config.labels.insert(k, v);
            }
            let fields: Vec<&str> = shown.iter().map(String::as_str).collect();
            parts.push((
                "instruction".into(),
                canon(&[&["LABEL"], &fields[..]].concat()),
            ));
            format!("LABEL {}", shown.join(" "))
        }
        Instruction::Maintainer(m) => {
            state.config.author = m.clone();
            parts.push(("instruction".into(), canon(&["MAINTAINER", m])));
            format!("MAINTAINER {m}")
        }
        Instruction::Cmd(cmd) => {
            let argv = command(state, cmd);
            state.config.config.cmd = argv.clone();
            parts.push((
                "instruction".into(),
                canon(&[&["CMD"], &to_strs(&argv)[..]].concat()),
            ));
            format!("CMD {}", go_list(&argv))
        }
        Instruction::Entrypoint(cmd) => {
            let argv = command(state, cmd);
            state.config.config.entrypoint = argv.clone();
            // Docker: ENTRYPOINT resets a CMD inherited from the base image.
            state.config.config.cmd = Vec::new();
            parts.push((
                "instruction".into(),
                canon(&[&["ENTRYPOINT"], &to_strs(&argv)[..]].concat()),
            ));
            format!("ENTRYPOINT {}", go_list(&argv))
        }
        Instruction::Shell(argv) => {
            state.config.config.shell = argv.clone();
            parts.push((
                "instruction".into(),
                canon(&[&["SHELL"], &to_strs(argv)[..]].concat()),
            ));
            format!("SHELL {}", go_plain_list(argv))
        }
        Instruction::Expose(ports) => {
            let mut shown = Vec::new();
            for p in ports {
                for word in lexer.process_words(p, &*scope).map_err(|e| e.to_string())? {
                    let port = if word.contains('/') {
                        word.to_ascii_lowercase()
                    } else {
                        format!("{word}/tcp")
                    };
                    state
                        .config
                        .config
                        .exposed_ports
                        .insert(port.clone(), EmptyObject);
                    shown.push(port);
                }
            }
            shown.sort();
            shown.dedup();
            let fields: Vec<&str> = shown.iter().map(String::as_str).collect();
            parts.push((
                "instruction".into(),
                canon(&[&["EXPOSE"], &fields[..]].concat()),
            ));
            let map: Vec<String> = shown.iter().map(|p| format!("{p}:{{}}")).collect();
            format!("EXPOSE map[{}]", map.join(" "))
        }
        Instruction::Volume(vols) => {
            let mut shown = Vec::new();
            for v in vols {
                let v = expand(lexer, scope, v)?;
                if v.trim().is_empty() {
                    return Err("VOLUME specified can not be an empty string".to_owned());
                }
                state.config.config.volumes.insert(v.clone(), EmptyObject);
                shown.push(v);
            }
            let fields: Vec<&str> = shown.iter().map(String::as_str).collect();
            parts.push((
                "instruction".into(),
                canon(&[&["VOLUME"], &fields[..]].concat()),
            ));
            format!("VOLUME {}", go_plain_list(&shown))
        }
        Instruction::User(u) => {
            let u = expand(lexer, scope, u)?;
            state.config.config.user = u.clone();
            parts.push(("instruction".into(), canon(&["USER", &u])));
            format!("USER {u}")
        }
        Instruction::StopSignal(s) => {
            let s = expand(lexer, scope, s)?;
            if !valid_signal(&s) {
                return Err(format!("invalid signal: {s}"));
            }
            state.config.config.stop_signal = s.clone();
            parts.push(("instruction".into(), canon(&["STOPSIGNAL", &s])));
            format!("STOPSIGNAL {s}")
        }
        Instruction::Healthcheck(hc) => {
            let (config, shown) = healthcheck(hc);
            let canonical = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
            state.config.config.healthcheck = Some(config);
            parts.push((
                "instruction".into(),
                [b"HEALTHCHECK\0".as_slice(), &canonical].concat(),
            ));
            format!("HEALTHCHECK {shown}")
        }
        Instruction::Onbuild(trigger) => {
            state.config.config.on_build.push(trigger.clone());
            parts.push(("instruction".into(), canon(&["ONBUILD", trigger])));
            format!("ONBUILD {trigger}")
        }
        _ => return Ok(None),
    };
    Ok(Some(created_by))
}

fn expand(lexer: &Lexer, scope: &Scope, word: &str) -> Result<String, String> {
    lexer.process_word(word, scope).map_err(|e| e.to_string())
}

/// A CMD/ENTRYPOINT/RUN command as argv: exec form as is, shell form through the SHELL.
fn command(state: &ImageState, cmd: &ins::Command) -> Vec<String> {
    match cmd {
        ins::Command::Exec(argv) => argv.clone(),
        ins::Command::Shell(text) => {
            let mut argv = if state.config.config.shell.is_empty() {
                vec!["/bin/sh".to_owned(), "-c".to_owned()]
            } else {
                state.config.config.shell.clone()
            };
            argv.push(text.clone());
            argv
        }
    }
}

/// What programs print when they find no network (apt, curl, wget, pip, getaddrinfo).
const NO_NETWORK_SIGNS: &[&str] = &[
    "Temporary failure resolving",
    "Temporary failure in name resolution",
    "Could not resolve",
    "Name or service not known",
    "Network is unreachable",
    "unable to resolve host",
];

/// How much of a RUN step's output the live view shows (BuildKit's default, 2 MiB); all of it
/// (up to `--run-log`) is kept in the step's log file.
const LIVE_OUTPUT: usize = 2 << 20;

/// A short id for a RUN's container, as Docker prints ` ---> Running in <12 hex>`.
fn container_id(upper: &std::path::Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update(upper.as_os_str().as_encoded_bytes());
    h.update(&now(None).unix_timestamp_nanos().to_le_bytes());
    h.finalize().to_hex()[..12].to_string()
}

/// Docker's default `PATH` for RUN when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The argv of a RUN, heredocs folded in as BuildKit does: a RUN that is a single heredoc runs
/// its body as the shell command; otherwise the bodies follow the command line and the shell
/// reads them itself.
fn run_argv(mut argv: Vec<String>, run: &ins::RunArgs) -> Vec<String> {
    if run.heredocs.is_empty() {
        return argv;
    }
    let ins::Command::Shell(text) = &run.command else {
        return argv;
    };
    let Some(last) = argv.last_mut() else {
        return argv;
    };
    let first = &run.heredocs[0];
    let only = text.trim().trim_start_matches("<<").trim_start_matches('-');
    let only = only.trim_matches(|c| c == '"' || c == '\'');
    if run.heredocs.len() == 1 && only == first.name {
        *last = if first.chomp {
            crate::dockerfile::heredoc::chomp(&first.content)
        } else {
            first.content.clone()
        };
        return argv;
    }
    let mut full = text.clone();
    full.push('\n');
    for h in &run.heredocs {
        full.push_str(&h.content);
        full.push_str(&h.name);
        full.push('\n');
    }
    *last = full;
    argv
}

/// The image config made by `--change` instructions (`docker import -c`, `docker commit -c`):
/// each is parsed by the Dockerfile front end; only the instructions docker accepts there are
/// allowed (HEALTHCHECK only for commit).
pub fn apply_changes(
    changes: &[String],
    allow_healthcheck: bool,
) -> Result<crate::image::ImageConfig, String> {
    let mut config = ImageState::scratch().config;
    config.config.env.clear();
    config.config.working_dir.clear();
    let mut config = apply_changes_to(config, changes, allow_healthcheck)?;
    config.history.clear();
    Ok(config)
}

/// Applies `--change` instructions on top of `config` (`commit -c` starts from the container's
/// settings); variables in them expand against the config's environment.
pub fn apply_changes_to(
    config: crate::image::ImageConfig,
    changes: &[String],
    allow_healthcheck: bool,
) -> Result<crate::image::ImageConfig, String> {
    let mut state = ImageState {
        config,
        layers: Vec::new(),
    };
    let mut scope = Scope::new(Default::default(), &Platform::host(), &Platform::host());
    scope.begin_stage(&[]);
    for kv in state.config.config.env.clone() {
        let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
        scope.set_env(k, v).map_err(|e| e.to_string())?;
    }
    let lexer = Lexer::new('\\');
    for change in changes {
        let list = fragment(change).map_err(|e| format!("{change:?}: {e}"))?;
        for one in list {
            let allowed = match &one.value {
                Instruction::Cmd(_)
                | Instruction::Entrypoint(_)
                | Instruction::Env(_)
                | Instruction::Expose(_)
                | Instruction::Label(_)
                | Instruction::Onbuild(_)
                | Instruction::StopSignal(_)
                | Instruction::User(_)
                | Instruction::Volume(_)
                | Instruction::Workdir(_) => true,
                Instruction::Healthcheck(_) => allow_healthcheck,
                _ => false,
            };
            if !allowed {
                return Err(format!(
                    "{change:?}: this instruction is not supported as a change"
                ));
            }
            if let Instruction::Workdir(w) = &one.value {
                let w = expand(&lexer, &scope, w)?;
                let base = ContainerPath::parse(&state.config.config.working_dir);
                state.config.config.working_dir = ContainerPath::resolve(&base, &w).to_string();
                continue;
            }
            apply_metadata(&lexer, &mut state, &mut scope, &one.value, &mut Vec::new())
                .map_err(|e| format!("{change:?}: {e}"))?;
        }
    }
    Ok(state.config)
}

/// Parses instructions that stand alone, outside any stage (ONBUILD triggers, `--change`).
fn fragment(text: &str) -> Result<Vec<Spanned<Instruction>>, String> {
    let df = crate::dockerfile::parse(text).map_err(|e| e.kind.to_string())?;
    df.instructions
        .iter()
        .map(|node| {
            Ok(Spanned {
                value: ins::instruction(node).map_err(|e| e.to_string())?,
                start_line: node.start_line,
                end_line: node.end_line,
                original: node.original.trim().to_owned(),
            })
        })
        .collect()
}

/// Whether a file is a tar archive (possibly compressed): ADD extracts those.
fn looks_like_tar(f: std::fs::File) -> bool {
    use std::io::Read;
    let Ok(mut r) = layer::decompress_auto(f) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return false,
        }
    }
    got == block.len() && &block[257..262] == b"ustar"
}

fn to_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn open_dir(p: &std::path::Path) -> Result<Dir, BuildError> {
    Dir::open_ambient_dir(p, cap_std::ambient_authority()).map_err(|e| BuildError::Io {
        op: "open upper folder",
        source: e,
    })
}

/// The build context as a COPY source: its folder, minus what `.dockerignore` excludes.
struct ContextSource<'a>(&'a crate::context::Context);

impl SourceFs for ContextSource<'_> {
    fn symlink_metadata(&self, path: &str) -> std::io::Result<cap_std::fs::Metadata> {
        SourceFs::symlink_metadata(self.0.root(), path)
    }

    fn open_file(&self, path: &str) -> std::io::Result<cap_std::fs::File> {
        self.0.root().open_file(path)
    }

    fn link_target(&self, path: &str) -> std::io::Result<String> {
        self.0.root().link_target(path)
    }

    fn tree(&self) -> crate::copy::Tree<'_> {
        crate::copy::Tree::Dir(self.0.root())
    }

    fn hidden(&self, path: &str) -> bool {
        self.0.is_ignored(path)
    }
}

/// Resolves COPY --from source patterns (with wildcards per component) in another rootfs.
fn glob_view(view: &LayerView, patterns: &[String]) -> Result<Vec<CopySource>, String> {
    let mut out = Vec::new();
    for p in patterns {
        let path = ContainerPath::parse(p);
        let mut matches = vec![ContainerPath::root()];
        for comp in path.components() {
            let mut next = Vec::new();
            let wild = comp.contains(['*', '?', '[']);
            for m in &matches {
                if wild {
                    for e in view.read_dir(m).map_err(|e| e.to_string())? {
                        let name = e.path.file_name().unwrap_or_default().to_owned();
                        if crate::ignore::glob_match(comp, &name).map_err(|e| e.to_string())? {
                            next.push(m.join(&name));
                        }
                    }
                } else {
                    next.push(m.join(comp));
                }
            }
            matches = next;
        }
        let mut found = false;
        for m in matches {
            // The source path itself is followed when it is a symlink.
            if let Some(e) = view.lookup(&m, true).map_err(|e| e.to_string())? {
                found = true;
                out.push(CopySource {
                    path: e.path.rel().to_owned(),
                    keep: m.rel().to_owned(),
                });
            }
        }
        if !found {
            return Err(format!("{p:?}: not found"));
        }
    }
    Ok(out)
}

/// The Docker HEALTHCHECK config and BuildKit's history text for it.
fn healthcheck(hc: &ins::Healthcheck) -> (Healthcheck, String) {
    match hc {
        ins::Healthcheck::Disable => {
            let c = Healthcheck {
                test: vec!["NONE".to_owned()],
                ..Healthcheck::default()
            };
            (
                c,
                "&{[\"NONE\"] \"0s\" \"0s\" \"0s\" \"0s\" '\\x00'}".to_owned(),
            )
        }
        ins::Healthcheck::Check(h) => {
            let mut test = Vec::new();
            match &h.test {
                ins::Command::Exec(argv) => {
                    test.push("CMD".to_owned());
                    test.extend(argv.iter().cloned());
                }
                ins::Command::Shell(s) => {
                    test.push("CMD-SHELL".to_owned());
                    test.push(s.clone());
                }
            }
            let c = Healthcheck {
                test: test.clone(),
                interval: h.interval,
                timeout: h.timeout,
                start_period: h.start_period,
                start_interval: h.start_interval,
                retries: h.retries,
            };
            let d = |v: std::time::Duration| go_quote(&go_duration(v));
            let shown = format!(
                "&{{{} {} {} {} {} {}}}",
                go_list(&test),
                d(c.interval),
                d(c.timeout),
                d(c.start_period),
                d(c.start_interval),
                go_rune(c.retries),
            );
            (c, shown)
        }
    }
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `1m30s`, `2h0m0s`, `500ms`.
fn go_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < 1_000_000_000 {
        let (unit, div) = if ns < 1_000 {
            ("ns", 1u128)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_frac(ns, div));
    }
    let total_s = ns / 1_000_000_000;
    let h = total_s / 3600;
    let m = (total_s % 3600) / 60;
    let secs = trim_frac(ns % 60_000_000_000, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `v / div` with the fraction's trailing zeros trimmed, as Go prints durations.
fn trim_frac(v: u128, div: u128) -> String {
    let whole = v / div;
    let frac = v % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Go's `%q` of an integer: a quoted character literal (`'\x03'`).
fn go_rune(v: u32) -> String {
    match char::from_u32(v) {
        Some(c) if (' '..='~').contains(&c) && c != '\'' && c != '\\' => format!("'{c}'"),
        Some('\'') => "'\\''".to_owned(),
        Some('\\') => "'\\\\'".to_owned(),
        _ if v < 0x80 => format!("'\\x{v:02x}'"),
        _ if v < 0x10000 => format!("'\\u{v:04x}'"),
        _ => format!("'\\U{v:08x}'"),
    }
}

/// Whether `s` is a signal Docker accepts in STOPSIGNAL: a number, or a name with or without
/// `SIG`, or a real-time signal `SIGRTMIN+n`.
fn valid_signal(s: &str) -> bool {
    if s.parse::<u32>().is_ok_and(|n| n > 0 && n < 65) {
        return true;
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ", "RTMIN", "RTMAX",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    for base in ["RTMIN+", "RTMAX-"] {
        if let Some(n) = name.strip_prefix(base) {
            return n.parse::<u32>().is_ok_and(|n| n <= 30);
        }
    }
    false
}

/// COPY and ADD seen through one shape.
struct CopySpec<'a> {
    sources: &'a [ins::Source],
    dest: &'a str,
    from: Option<&'a str>,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    link: bool,
    excludes: &'a [String],
    parents: bool,
    checksum: Option<&'a str>,
}

impl<'a> CopySpec<'a> {
    fn of(i: &'a Instruction) -> Self {
        match i {
            Instruction::Add(a) => Self {
                sources: &a.sources,
                dest: &a.dest,
                from: None,
                chown: a.chown.as_deref(),
                chmod: a.chmod.as_deref(),
                link: a.link,
                excludes: &a.excludes,
                parents: false,
                checksum: a.checksum.as_deref(),
            },
            Instruction::Copy(c) => Self {
                sources: &c.sources,
                dest: &c.dest,
                from: c.from.as_deref(),
                chown: c.chown.as_deref(),
                chmod: c.chmod.as_deref(),
                link: c.link,
                excludes: &c.excludes,
                parents: c.parents,
                checksum: None,
            },
            _ => Self {
                sources: &[],
                dest: "",
                from: None,
                chown: None,
                chmod: None,
                link: false,
                excludes: &[],
                parents: false,
                checksum: None,
            },
        }
    }
}
