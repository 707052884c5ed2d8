//! `kiln images`, plus the docker-style formatting the store commands share (tables, sizes,
//! "2 minutes ago").

use clap::{Args, ValueEnum};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Printer, UserError};
use crate::describe::{human_duration, matches_reference};
use crate::store::{Image, Store};

/// List images.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show all images. kiln keeps no intermediate images, so this lists the same as the default;
    /// accepted for docker compatibility.
    #[arg(short, long)]
    pub all: bool,

    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,

    /// Output format: a table, or one JSON object per line.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,

    /// Show the digests (the manifest or index digest, a registry's for a pulled or pushed
    /// image).
    #[arg(long)]
    pub digests: bool,

    /// Don't truncate output (full image IDs).
    #[arg(long)]
    pub no_trunc: bool,

    /// Only images whose name matches (`redis`, `redis:7`, `me/*`).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

/// How list commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header, like docker.
    Table,
    /// One JSON object per line, with docker's keys.
    Json,
}

/// One line of `docker images --format json`, keys in docker's order.
#[derive(Serialize)]
struct ImageRow {
    #[serde(rename = "Containers")]
    containers: &'static str,
    #[serde(rename = "CreatedAt")]
    created_at: String,
    #[serde(rename = "CreatedSince")]
    created_since: String,
    #[serde(rename = "Digest")]
    digest: String,
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Repository")]
    repository: String,
    #[serde(rename = "SharedSize")]
    shared_size: &'static str,
    #[serde(rename = "Size")]
    size: String,
    #[serde(rename = "Tag")]
    tag: String,
    #[serde(rename = "UniqueSize")]
    unique_size: &'static str,
    #[serde(rename = "VirtualSize")]
    virtual_size: String,
}

/// Lists the store's images, newest first, one row per tag.
pub fn run(args: &ImagesArgs, store: &Store, out: &mut Printer) -> anyhow::Result<()> {
    let list = store.list_images()?;
    for b in &list.broken {
        let name = b
            .tags
            .first()
            .map_or_else(|| b.descriptor.digest.to_string(), |t| t.familiar());
        out.status(&format!(
            "warning: skipping damaged image {name}: {}; run `kiln fsck`",
            b.error
        ))?;
    }
    let now = OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    for img in &list.images {
        let names: Vec<(String, String)> = if img.tags.is_empty() {
            vec![("<none>".to_owned(), "<none>".to_owned())]
        } else {
            img.tags
                .iter()
                .map(|t| (t.familiar_name(), t.tag().unwrap_or("<none>").to_owned()))
                .collect()
        };
        for (repo, tag) in names {
            if let Some(pattern) = &args.reference {
                if img.tags.is_empty() || !matches_reference(pattern, &repo, &tag) {
                    continue;
                }
            }
            rows.push((img, repo, tag));
        }
    }
    let id_of = |img: &Image| {
        if args.no_trunc {
            img.id().to_string()
        } else {
            img.id().short()
        }
    };
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for (img, _, _) in &rows {
            if seen.insert(img.id()) {
                out.data(&id_of(img))?;
            }
        }
        return Ok(());
    }
    match args.format {
        Format::Json => {
            for (img, repo, tag) in rows {
                let size = human_size(img.size());
                let row = ImageRow {
                    containers: "N/A",
                    created_at: img.created().map_or_else(String::new, go_time_string),
                    created_since: created_since(img.created(), now),
                    digest: img.descriptor.digest.to_string(),
                    id: id_of(img),
                    repository: repo,
                    shared_size: "N/A",
                    size: size.clone(),
                    tag,
                    unique_size: "N/A",
                    virtual_size: size,
                };
                out.data(&serde_json::to_string(&row)?)?;
            }
        }
        Format::Table => {
            let mut table = if args.digests {
                Table::new(&["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"])
            } else {
                Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"])
            };
            for (img, repo, tag) in rows {
                let mut row = vec![repo, tag];
                if args.digests {
                    row.push(img.descriptor.digest.to_string());
                }
                row.extend([
                    id_of(img),
                    created_since(img.created(), now),
                    human_size(img.size()),
                ]);
                table.row(row);
            }
            table.print(out)?;
        }
    }
    Ok(())
}

/// Ends a command that handled several arguments and collected their errors: one error is
/// returned as is; several are each printed, then summarised as `{n} of {total} {what}`.
pub(super) fn finish_many(
    mut errors: Vec<anyhow::Error>,
    total: usize,
    what: &str,
    out: &mut Printer,
) -> anyhow::Result<()> {
    if errors.len() > 1 {
        for e in &errors {
            out.status(&format!("kiln: {e:#}"))?;
        }
        let summary = format!("{} of {total} {what}", errors.len());
        return Err(if errors.iter().all(|e| super::exit_code(e) == 1) {
            anyhow::Error::new(UserError(summary))
        } else {
            anyhow::anyhow!(summary)
        });
    }
    errors.pop().map_or(Ok(()), Err)
}

/// docker's `CreatedSince`: `2 minutes ago`, or `N/A` without a date.
pub(super) fn created_since(created: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    match created {
        Some(t) => format!("{} ago", human_duration(now - t)),
        None => "N/A".to_owned(),
    }
}

/// `go-units.HumanSizeWithPrecision(size, 3)`: decimal units, three significant digits, the
/// way `docker images` shows sizes (`7.5MB`, `512kB`, `0B`).
pub(super) fn human_size(size: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", go_g3(value), UNITS.get(unit).unwrap_or(&"B"))
}

/// Go's `%.3g` for a non-negative value.
fn go_g3(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    // Round to three significant digits first; the exponent decides the notation.
    let sci = format!("{v:.2e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..3).contains(&exp) {
        let m = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", exp.abs());
    }
    let decimals = usize::try_from(2 - exp).unwrap_or(0);
    trim_fraction(&format!("{v:.decimals$}")).to_owned()
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Go's `time.Time.String()` for a UTC time at whole seconds: `2024-01-02 03:04:05 +0000 UTC`.
pub(super) fn go_time_string(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Columns aligned like docker's `tabwriter` (minimum width 10, padding 3); the last column is
/// not padded.
pub(super) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn print(&self, out: &mut Printer) -> std::io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let longest = self
                    .rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0);
                (longest + 3).max(10)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let width = widths.get(i).copied().unwrap_or(0);
                    let pad = width.saturating_sub(cell.chars().count());
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.data(line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        for (n, want) in [
            (0, "0B"),
            (999, "999B"),
            (1000, "1kB"),
            (7_500_000, "7.5MB"),
            (7_456_123, "7.46MB"),
            (123_456_789, "123MB"),
            (999_900, "1e+03kB"),
            (1_234_567_890, "1.23GB"),
        ] {
            assert_eq!(human_size(n), want, "{n}");
        }
    }

    #[test]
    fn durations_like_docker() {
        let s = time::Duration::seconds;
        for (d, want) in [
            (s(0), "Less than a second"),
            (s(1), "1 second"),
            (s(59), "59 seconds"),
            (s(60), "About a minute"),
            (s(150), "2 minutes"),
            (s(3599), "59 minutes"),
            (s(3600), "About an hour"),
            (s(5399), "About an hour"),
            (s(5400), "2 hours"),
            (s(47 * 3600), "47 hours"),
            (s(3 * 86400), "3 days"),
            (s(20 * 86400), "2 weeks"),
            (s(90 * 86400), "3 months"),
            (s(800 * 86400), "2 years"),
        ] {
            assert_eq!(human_duration(d), want, "{d}");
        }
    }

    #[test]
    fn reference_filter() {
        assert!(matches_reference("redis", "redis", "7"));
        assert!(matches_reference("redis:7", "redis", "7"));
        assert!(!matches_reference("redis:8", "redis", "7"));
        assert!(matches_reference("me/*", "me/app", "1"));
        assert!(!matches_reference("me/*", "me/a/b", "1"));
        assert!(matches_reference("*:1?", "x", "1a"));
        assert!(!matches_reference("red", "redis", "7"));
    }

    #[test]
    fn go_time_format() {
        let t = time::macros::datetime!(2024-01-02 03:04:05 +01:00);
        assert_eq!(go_time_string(t), "2024-01-02 02:04:05 +0000 UTC");
    }
}
