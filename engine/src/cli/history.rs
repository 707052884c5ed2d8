//! `kiln history`: an image's build steps, newest first, like `docker history`.

use clap::Args;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::images::{created_since, human_size, Format, Table};
use super::Printer;
use crate::describe::steps;
use crate::store::Store;

/// Show the history of an image.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Don't truncate output (full IDs and commands).
    #[arg(long)]
    pub no_trunc: bool,

    /// Only show image IDs (`<missing>` for steps without a local image).
    #[arg(short, long)]
    pub quiet: bool,

    /// Output format: a table, or one JSON object per line.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,

    /// The image: a name, `name@digest`, or an image ID (or a unique prefix of one).
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

/// How wide `CREATED BY` may be before it is cut, like docker.
const CREATED_BY_WIDTH: usize = 45;

/// One line of `docker history --format json`, keys in docker's order.
#[derive(Serialize)]
struct HistoryRow {
    #[serde(rename = "Comment")]
    comment: String,
    #[serde(rename = "CreatedAt")]
    created_at: String,
    #[serde(rename = "CreatedBy")]
    created_by: String,
    #[serde(rename = "CreatedSince")]
    created_since: String,
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Size")]
    size: String,
}

/// docker's `Ellipsis`: cut to `width` characters, the last one an ellipsis.
fn ellipsis(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Prints the image's history.
pub fn run(args: &HistoryArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let img = store.resolve(&args.image)?;
    let now = OffsetDateTime::now_utc();
    let steps = steps(&img, args.no_trunc);
    if args.quiet {
        for s in &steps {
            out.data(&s.id)?;
        }
        return Ok(());
    }
    match args.format {
        Format::Json => {
            for s in steps {
                let row = HistoryRow {
                    comment: s.comment.to_owned(),
                    created_at: s
                        .created
                        .and_then(|t| t.replace_nanosecond(0).ok())
                        .and_then(|t| t.format(&Rfc3339).ok())
                        .unwrap_or_default(),
                    created_since: created_since(s.created, now),
                    created_by: s.created_by,
                    id: s.id,
                    size: human_size(s.size),
                };
                out.data(&serde_json::to_string(&row)?)?;
            }
        }
        Format::Table => {
            let mut table = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
            for s in steps {
                let created_by = if args.no_trunc {
                    s.created_by
                } else {
                    ellipsis(&s.created_by, CREATED_BY_WIDTH)
                };
                table.row(vec![
                    s.id,
                    created_since(s.created, now),
                    created_by,
                    human_size(s.size),
                    s.comment.to_owned(),
                ]);
            }
            table.print(out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipsis_cuts_like_docker() {
        assert_eq!(ellipsis("short", 45), "short");
        let long = "x".repeat(50);
        let cut = ellipsis(&long, 45);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
    }
}
