//! Renders build progress for a terminal: Docker's legacy plain lines, a live tty view with
//! per-step timers, or one JSON object per line.

use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

use clap::ValueEnum;

use crate::progress::{ProgressEvent, ProgressSink, Transfer};

/// `--progress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, `plain` otherwise.
    Auto,
    /// Docker's classic lines: `Step 2/5 : COPY . /app`, ` ---> Using cache`.
    Plain,
    /// A live view with a timer per step.
    Tty,
    /// One JSON event per line.
    Json,
}

/// A progress sink writing to stderr.
pub struct Renderer {
    mode: ProgressMode,
    quiet: bool,
    state: Mutex<TtyState>,
}

#[derive(Default)]
struct TtyState {
    bars: Vec<(usize, indicatif::ProgressBar)>,
    multi: Option<indicatif::MultiProgress>,
}

impl Renderer {
    /// A renderer for `mode`; `quiet` shows nothing but warnings (`-q`).
    pub fn new(mode: ProgressMode, quiet: bool) -> Self {
        use std::io::IsTerminal;
        let mode = match mode {
            ProgressMode::Auto if io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Self {
            mode,
            quiet,
            state: Mutex::new(TtyState::default()),
        }
    }

    fn plain(&self, ev: &ProgressEvent) -> Option<String> {
        Some(match ev {
            ProgressEvent::StepStarted {
                index, total, text, ..
            } => format!("Step {index}/{total} : {text}"),
            ProgressEvent::StepCached { from: None, .. } => " ---> Using cache".to_owned(),
            ProgressEvent::StepCached { from: Some(f), .. } => {
                format!(" ---> Using cache from {f}")
            }
            ProgressEvent::CacheMiss { reason, .. } => format!(" ---> Cache miss: {reason}"),
            ProgressEvent::Exec { id, executor, .. } => {
                format!(" ---> Running in {id} ({executor})")
            }
            ProgressEvent::StepOutput { text, .. } => {
                return Some(text.trim_end_matches('\n').to_owned())
            }
            ProgressEvent::StepDone { image_id, .. } => match image_id {
                Some(id) => format!(" ---> {}", short(id)),
                None => " ---> ".to_owned(),
            },
            ProgressEvent::Triggers { count, .. } => triggers_line(*count),
            ProgressEvent::Warning { message } => format!("[WARNING]: {message}"),
            ProgressEvent::Built { image_id } => format!("Successfully built {}", short(image_id)),
            ProgressEvent::Tagged { name } => format!("Successfully tagged {name}"),
            ProgressEvent::Transfer(t) => return transfer_line(t),
        })
    }

    fn tty(&self, ev: &ProgressEvent) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let multi = st
            .multi
            .get_or_insert_with(|| {
                indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
            })
            .clone();
        let style = indicatif::ProgressStyle::with_template("{prefix:>9} {msg} {elapsed:>4}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        match ev {
            ProgressEvent::StepStarted {
                index, total, text, ..
            } => {
                let bar = multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(style);
                bar.set_prefix(format!("[{index}/{total}]"));
                bar.set_message(text.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                st.bars.push((*index, bar));
            }
            ProgressEvent::StepCached { index, .. } => {
                if let Some((_, b)) = st.bars.iter().find(|(i, _)| i == index) {
                    b.set_prefix(format!("CACHED {}", b.prefix()));
                }
            }
            ProgressEvent::StepOutput { text, .. } => {
                let _ = multi.println(text.trim_end_matches('\n'));
            }
            ProgressEvent::StepDone {
                index, duration, ..
            } => {
                if let Some((_, b)) = st.bars.iter().find(|(i, _)| i == index) {
                    b.set_style(
                        indicatif::ProgressStyle::with_template("{prefix:>9} {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                    b.finish_with_message(format!(
                        "{} {:.1}s",
                        b.message(),
                        duration.as_secs_f64()
                    ));
                }
            }
            ProgressEvent::Triggers { count, .. } => {
                let _ = multi.println(triggers_line(*count));
            }
            ProgressEvent::Warning { message } => {
                let _ = multi.println(format!("WARNING: {message}"));
            }
            ProgressEvent::Built { image_id } => {
                let _ = multi.println(format!("Successfully built {}", short(image_id)));
            }
            ProgressEvent::Tagged { name } => {
                let _ = multi.println(format!("Successfully tagged {name}"));
            }
            ProgressEvent::Transfer(t) => {
                if let Some(line) = transfer_line(t) {
                    let _ = multi.println(line);
                }
            }
            ProgressEvent::CacheMiss { .. } | ProgressEvent::Exec { .. } => {}
        }
    }
}

/// A pull or push line as docker prints it without a terminal (`abc123: Pull complete`);
/// byte counts are not printed.
pub fn transfer_line(t: &Transfer) -> Option<String> {
    if t.is_progress() {
        return None;
    }
    Some(match &t.id {
        Some(id) => format!("{id}: {}", t.status),
        None => t.status.clone(),
    })
}

/// Prints pull and push lines to stderr (none when `quiet`).
pub fn transfer_printer(quiet: bool) -> impl Fn(Transfer) + Sync {
    move |t: Transfer| {
        if quiet {
            return;
        }
        if let Some(line) = transfer_line(&t) {
            let _ = writeln!(io::stderr().lock(), "{line}");
        }
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

impl ProgressSink for Renderer {
    fn emit(&self, ev: ProgressEvent) {
        if self.quiet && !matches!(ev, ProgressEvent::Warning { .. }) {
            return;
        }
        match self.mode {
            ProgressMode::Json => {
                if let Ok(line) = serde_json::to_string(&ev) {
                    let _ = writeln!(io::stderr().lock(), "{line}");
                }
            }
            ProgressMode::Tty => self.tty(&ev),
            ProgressMode::Plain | ProgressMode::Auto => {
                if let Some(line) = self.plain(&ev) {
                    let _ = writeln!(io::stderr().lock(), "{line}");
                }
            }
        }
    }
}

/// docker's line before a base image's ONBUILD triggers run.
pub(crate) fn triggers_line(count: usize) -> String {
    format!(
        "# Executing {count} build trigger{}",
        if count == 1 { "" } else { "s" }
    )
}
