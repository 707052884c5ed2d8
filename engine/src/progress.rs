//! Progress events: the engine never prints, it emits these; the CLI renders them as Docker's
//! legacy plain lines, a live tty view or JSON lines, and the server streams them to clients.

use std::time::Duration;

use serde::Serialize;

/// Which output stream of a RUN step a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The step's standard output.
    Stdout,
    /// The step's standard error.
    Stderr,
}

/// One thing that happened during a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A step begins. `index` counts from 1 over the steps that will run, `total` is their number.
    StepStarted {
        /// 1-based step number.
        index: usize,
        /// Number of steps in the build.
        total: usize,
        /// The stage the step belongs to (its name, or its index as text).
        stage: String,
        /// The instruction as Docker shows it: `COPY . /app`.
        text: String,
    },
    /// The step's result came from the cache.
    StepCached {
        /// 1-based step number.
        index: usize,
    },
    /// The step was not in the cache; `reason` names the first input that changed.
    CacheMiss {
        /// 1-based step number.
        index: usize,
        /// Why the cache missed, e.g. `file "app.py" changed`.
        reason: String,
    },
    /// A step runs a process (RUN): the executor chosen and why.
    Exec {
        /// 1-based step number.
        index: usize,
        /// A short container-like id, as Docker prints ` ---> Running in <id>`.
        id: String,
        /// Which executor runs it (`wasi`, `native`) and why.
        executor: String,
    },
    /// Output written by a running step.
    StepOutput {
        /// 1-based step number.
        index: usize,
        /// stdout or stderr.
        stream: Stream,
        /// The bytes, as text (lossy).
        text: String,
    },
    /// A step finished; `image_id` is the image ID after it (Docker prints its first 12 digits).
    StepDone {
        /// 1-based step number.
        index: usize,
        /// The image ID after the step (`sha256:...`), absent after `FROM scratch`.
        image_id: Option<String>,
        /// Wall time the step took.
        #[serde(serialize_with = "ser_millis")]
        duration: Duration,
    },
    /// A non-fatal finding worth showing.
    Warning {
        /// The message.
        message: String,
    },
    /// The build finished and produced this image.
    Built {
        /// The image ID (`sha256:...`).
        image_id: String,
    },
    /// A tag now points at the built image.
    Tagged {
        /// The familiar name, e.g. `me/app:latest`.
        name: String,
    },
}

fn ser_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Where the engine sends its events.
pub trait ProgressSink: Send + Sync {
    /// Delivers one event.
    fn emit(&self, event: ProgressEvent);
}

/// A sink that drops everything (for callers that don't show progress).
pub struct Discard;

impl ProgressSink for Discard {
    fn emit(&self, _event: ProgressEvent) {}
}
