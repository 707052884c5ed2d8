//! The build plan: which stages a build needs, in which order, and how many steps they take.
//!
//! A Dockerfile is a list of stages, each starting at a `FROM`; ARGs before the first `FROM` are
//! global. The target is `--target` or the last stage; a stage is needed when the target depends
//! on it through `FROM <stage>`, `COPY --from=<stage>` or `RUN --mount=from=<stage>`. Unused
//! stages are skipped, as BuildKit does.

use std::collections::BTreeSet;

use crate::dockerfile::instruction::{Instruction, Spanned};
use crate::dockerfile::scope::Scope;
use crate::dockerfile::shell::Lexer;

/// A stage of the Dockerfile.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Position among the stages (0-based), which `--from=<n>` uses.
    pub index: usize,
    /// `AS name`, lowercased as Docker compares them.
    pub name: Option<String>,
    /// The `FROM` image, expanded with the global ARGs.
    pub base: String,
    /// `--platform` of the `FROM`, expanded.
    pub platform: Option<String>,
    /// 1-based line of the `FROM`.
    pub line: usize,
    /// The instructions after `FROM`.
    pub instructions: Vec<Spanned<Instruction>>,
}

/// Which stages to build.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `ARG`s before the first `FROM`.
    pub global_args: Vec<Spanned<Instruction>>,
    /// Every stage, in file order.
    pub stages: Vec<Stage>,
    /// The stages to build, in file order (dependencies always come earlier).
    pub needed: Vec<usize>,
    /// The stage whose image is the result.
    pub target: usize,
}

/// Errors in the stage structure.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An instruction other than ARG before the first FROM.
    #[error("no build stage in current context")]
    NoStage {
        /// The instruction's line.
        line: usize,
    },
    /// `--target` names no stage.
    #[error("target stage {0:?} could not be found")]
    NoTarget(String),
    /// Two stages with the same name.
    #[error("duplicate stage name {name:?}")]
    DuplicateStage {
        /// The second stage's line.
        line: usize,
        /// The name.
        name: String,
    },
    /// `COPY --from=` naming a later stage or the stage itself.
    #[error("stage {name:?} refers to itself or to a later stage")]
    ForwardReference {
        /// The instruction's line.
        line: usize,
        /// The name.
        name: String,
    },
    /// Expanding a `FROM` line failed.
    #[error("{message}")]
    Expand {
        /// The line.
        line: usize,
        /// The lexer's complaint.
        message: String,
    },
}

impl PlanError {
    /// The Dockerfile line the error is about (0 when it is about no line).
    pub fn line(&self) -> usize {
        match self {
            Self::NoStage { line }
            | Self::DuplicateStage { line, .. }
            | Self::ForwardReference { line, .. }
            | Self::Expand { line, .. } => *line,
            Self::NoTarget(_) => 0,
        }
    }
}

impl Plan {
    /// Splits `instructions` into stages and finds those `target` (or the last stage) needs.
    /// `globals` is the scope after the global ARGs, used to expand `FROM` lines.
    pub fn new(
        instructions: Vec<Spanned<Instruction>>,
        target: Option<&str>,
        lexer: &Lexer,
        globals: &mut Scope,
    ) -> Result<Self, PlanError> {
        let mut global_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for ins in instructions {
            match &ins.value {
                Instruction::From(from) => {
                    let expand = |w: &str| {
                        lexer
                            .process_word(w, globals.globals())
                            .map_err(|e| PlanError::Expand {
                                line: ins.start_line,
                                message: e.to_string(),
                            })
                    };
                    let base = expand(&from.image)?;
                    let platform = from.platform.as_deref().map(expand).transpose()?;
                    let name = from.name.as_ref().map(|n| n.to_ascii_lowercase());
                    if let Some(n) = &name {
                        if stages.iter().any(|s| s.name.as_deref() == Some(n)) {
                            return Err(PlanError::DuplicateStage {
                                line: ins.start_line,
                                name: n.clone(),
                            });
                        }
                    }
                    stages.push(Stage {
                        index: stages.len(),
                        name,
                        base,
                        platform,
                        line: ins.start_line,
                        instructions: Vec::new(),
                    });
                }
                Instruction::Arg(args) if stages.is_empty() => {
                    {
                        for a in args {
                            globals
                                .declare_arg(lexer, &a.name, a.default.as_deref())
                                .map_err(|e| PlanError::Expand {
                                    line: ins.start_line,
                                    message: e.to_string(),
                                })?;
                        }
                    }
                    global_args.push(ins);
                }
                _ => match stages.last_mut() {
                    Some(s) => s.instructions.push(ins),
                    None => {
                        return Err(PlanError::NoStage {
                            line: ins.start_line,
                        })
                    }
                },
            }
        }
        let target = match target {
            Some(t) => {
                let t = t.to_ascii_lowercase();
                stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(t.as_str()))
                    .ok_or(PlanError::NoTarget(t))?
            }
            None => stages.len().saturating_sub(1),
        };
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let stage = &stages[i];
            if let Some(dep) = find_stage(&stages[..i], &stage.base) {
                todo.push(dep);
            }
            for ins in &stage.instructions {
                for r in stage_refs(&ins.value) {
                    match find_stage(&stages[..i], r) {
                        Some(dep) => todo.push(dep),
                        None if find_stage(&stages, r).is_some() => {
                            return Err(PlanError::ForwardReference {
                                line: ins.start_line,
                                name: r.to_owned(),
                            })
                        }
                        // Not a stage: an image name, resolved at build time.
                        None => {}
                    }
                }
            }
        }
        Ok(Self {
            global_args,
            stages,
            needed: needed.into_iter().collect(),
            target,
        })
    }

    /// The number of steps the needed stages take (each `FROM` counts, as in Docker's
    /// `Step N/M`).
    pub fn total_steps(&self) -> usize {
        self.needed
            .iter()
            .map(|&i| 1 + self.stages[i].instructions.len())
            .sum()
    }
}

/// The stage a `FROM`/`--from` value names among `stages`: by name (case-insensitive) or by
/// index.
pub fn find_stage(stages: &[Stage], name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    if let Some(s) = stages
        .iter()
        .find(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Some(s.index);
    }
    match name.parse::<usize>() {
        Ok(i) if i < stages.len() => Some(i),
        _ => None,
    }
}

/// The stages or images an instruction reads from (`COPY --from`, `RUN --mount=from=`), raw.
fn stage_refs(ins: &Instruction) -> Vec<&str> {
    match ins {
        Instruction::Copy(c) => c.from.as_deref().into_iter().collect(),
        Instruction::Run(r) => r
            .mounts
            .iter()
            .flat_map(|m| m.fields.iter())
            .filter_map(|f| f.strip_prefix("from="))
            .collect(),
        _ => Vec::new(),
    }
}
