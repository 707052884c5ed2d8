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
        /// The `--cache-from` cache it came from (absent: the store's own cache).
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
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
    /// The base image's ONBUILD triggers run now, as part of the FROM step.
    Triggers {
        /// 1-based step number (the FROM's).
        index: usize,
        /// How many.
        count: usize,
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
    /// A base image is being pulled: one line of docker's pull progress.
    Transfer(Transfer),
}

/// One line of docker's pull or push progress (its JSON message: `id`, `status`,
/// `progressDetail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// What the line is about: a layer's short digest, a tag, or nothing.
    pub id: Option<String>,
    /// Docker's status text (`Pulling fs layer`, `Download complete`, `Pushed`).
    pub status: String,
    /// Bytes done so far, for `Downloading` and `Pushing`.
    pub current: Option<u64>,
    /// Bytes in all, for `Downloading` and `Pushing`.
    pub total: Option<u64>,
}

impl Transfer {
    /// A line with an id.
    pub fn about(id: impl Into<String>, status: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
            status: status.into(),
            current: None,
            total: None,
        }
    }

    /// A line without an id.
    pub fn status(status: impl Into<String>) -> Self {
        Self {
            id: None,
            status: status.into(),
            current: None,
            total: None,
        }
    }

    /// Whether the line only reports bytes moving (a terminal redraws it, a log skips it).
    pub fn is_progress(&self) -> bool {
        self.current.is_some()
    }

    /// docker's JSON message for the line (`status`, `id`, `progressDetail`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("status".into(), self.status.clone().into());
        if let Some(id) = &self.id {
            m.insert("id".into(), id.clone().into());
        }
        if let (Some(c), Some(t)) = (self.current, self.total) {
            m.insert(
                "progressDetail".into(),
                serde_json::json!({ "current": c, "total": t }),
            );
        } else if self.id.is_some() {
            m.insert("progressDetail".into(), serde_json::json!({}));
        }
        serde_json::Value::Object(m)
    }
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

/// Cuts a process's output into whole lines for [`ProgressEvent::StepOutput`], so a line
/// written in pieces is shown as one. A line longer than `MAX_LINE` is passed on in parts.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Longest line held back waiting for its end.
    const MAX_LINE: usize = 64 * 1024;

    /// Adds `bytes`; returns the text of every line they complete (with its newline).
    pub fn push(&mut self, bytes: &[u8]) -> Option<String> {
        self.partial.extend_from_slice(bytes);
        let cut = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if self.partial.len() >= Self::MAX_LINE => self.partial.len(),
            None => return None,
        };
        let rest = self.partial.split_off(cut);
        let done = std::mem::replace(&mut self.partial, rest);
        Some(String::from_utf8_lossy(&done).into_owned())
    }

    /// What is left without a final newline.
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let done = std::mem::take(&mut self.partial);
        Some(String::from_utf8_lossy(&done).into_owned())
    }
}

#[cfg(test)]
mod line_tests {
    use super::LineSplitter;

    #[test]
    fn lines_are_joined_and_cut() {
        let mut l = LineSplitter::default();
        assert_eq!(l.push(b"ls: "), None);
        assert_eq!(
            l.push(b"cannot access\nnext"),
            Some("ls: cannot access\n".into())
        );
        assert_eq!(l.push(b" part\nlast"), Some("next part\n".into()));
        assert_eq!(l.finish(), Some("last".into()));
        assert_eq!(l.finish(), None);
        let long = vec![b'x'; 70 * 1024];
        assert_eq!(l.push(&long).map(|s| s.len()), Some(70 * 1024));
    }
}
