//! CSV import of contacts, orders and follow-ups. The file is streamed row by row
//! (memory stays flat in its size) and committed in batches; each bad row is
//! reported with its line and reason while the good ones are kept, or nothing is
//! kept at all with `strict`. Rows already imported are recognised and skipped,
//! so importing the same file twice changes nothing.
//!
//! This module reads the file; `contacts.rs`, `orders.rs` and `follow_ups.rs`
//! say what one row of each kind means.

pub mod contacts;
pub mod follow_ups;
pub mod orders;

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::store::{Invalid, Store, Tx};

/// Rows per transaction: large enough that fsyncs do not dominate, small enough
/// that the daemon is never locked out for long.
const BATCH_ROWS: usize = 1000;
/// Without a terminal, a progress line every this many rows.
const PLAIN_PROGRESS_EVERY: u64 = 10_000;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub added: u64,
    pub already_present: u64,
    pub bad: u64,
}

/// What one good row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOutcome {
    Added,
    AlreadyPresent,
}

/// One row, by column name.
pub struct Row<'a> {
    headers: &'a [String],
    values: Vec<String>,
}

impl Row<'_> {
    /// The trimmed value of a column; `None` when the column is absent or the cell empty.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.headers
            .iter()
            .position(|h| h == column)
            .map(|i| self.values[i].as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn text(&self, column: &str) -> String {
        self.get(column).unwrap_or_default().to_string()
    }

    pub fn owned(&self, column: &str) -> Option<String> {
        self.get(column).map(String::from)
    }
}

/// What a kind of row is made of and how it is stored.
// Implemented and awaited only inside this crate, on the CLI's runtime: the
// futures need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait RowKind {
    /// Every column the file may have.
    const COLUMNS: &'static [&'static str];
    const REQUIRED: &'static [&'static str];
    /// Columns in which a quote can only mean broken quoting (ids, emails,
    /// amounts, dates), where the CSV reader would otherwise keep it as text.
    const NO_QUOTES: &'static [&'static str];

    /// Stores one row in the batch's transaction; `Invalid` makes it a bad row.
    async fn import(&mut self, tx: &mut Tx, row: &Row<'_>) -> anyhow::Result<RowOutcome>;

    /// Runs before each batch commits.
    async fn finish_batch(&mut self, _tx: &mut Tx) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Imports `file` row by row as `kind`. Bad rows go to stderr as `file:line: reason`.
/// With `strict`, one bad row keeps the whole file out (every bad row is still reported).
pub async fn import_csv<K: RowKind>(
    store: &Store,
    file: &Path,
    strict: bool,
    kind: &mut K,
) -> anyhow::Result<ImportSummary> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("open {}", file.display()))?
        .len();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(file)
        .with_context(|| format!("open {}", file.display()))?;
    let headers: Vec<String> = reader
        .byte_headers()
        .with_context(|| format!("{}: read the header row", file.display()))?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    if let Some(unknown) = headers.iter().find(|h| !K::COLUMNS.contains(&h.as_str())) {
        bail!(
            "{}:1: unknown column `{unknown}`; columns are: {}",
            file.display(),
            K::COLUMNS.join(", ")
        );
    }
    if let Some(missing) = K::REQUIRED.iter().find(|r| !headers.iter().any(|h| h == *r)) {
        bail!(
            "{}:1: no `{missing}` column; {} are required",
            file.display(),
            K::REQUIRED.join(", ")
        );
    }

    let progress = Progress::new(size);
    let mut summary = ImportSummary::default();
    let mut tx = store.write().await?;
    let mut in_batch = 0;
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    loop {
        let (line, row) = match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => (
                record.position().map_or(0, |p| p.line()),
                row_of::<K>(&headers, &record),
            ),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                let mut reason = csv_reason(&e);
                // A quote never closed swallows the lines after it into one field.
                let last_line = reader.position().line().saturating_sub(1);
                if last_line > line {
                    reason += &format!("; this row runs over lines {line}-{last_line}: a quote that is never closed?");
                }
                (line, Err(reason))
            }
        };
        rows += 1;
        let outcome = match row {
            Ok(row) => match kind.import(&mut tx, &row).await {
                Ok(outcome) => Ok(outcome),
                Err(e) => match e.downcast::<Invalid>() {
                    Ok(invalid) => Err(invalid.0),
                    Err(e) => return Err(e.context(format!("{}:{line}", file.display()))),
                },
            },
            Err(reason) => Err(reason),
        };
        match outcome {
            Ok(RowOutcome::Added) => summary.added += 1,
            Ok(RowOutcome::AlreadyPresent) => summary.already_present += 1,
            Err(reason) => {
                summary.bad += 1;
                progress.report(&format!("{}:{line}: {reason}", file.display()));
            }
        }
        in_batch += 1;
        if !strict && in_batch >= BATCH_ROWS {
            kind.finish_batch(&mut tx).await?;
            tx.commit().await?;
            tx = store.write().await?;
            in_batch = 0;
        }
        progress.advance(rows, reader.position().byte(), &summary);
    }
    progress.finish();
    if strict && summary.bad > 0 {
        tx.rollback().await?;
        bail!(
            "{}: {} bad row(s); nothing was imported (--strict)",
            file.display(),
            summary.bad
        );
    }
    kind.finish_batch(&mut tx).await?;
    tx.commit().await?;
    Ok(summary)
}

/// The row in one CSV record, or why it cannot be one.
fn row_of<'h, K: RowKind>(headers: &'h [String], record: &csv::ByteRecord) -> Result<Row<'h>, String> {
    let mut values = Vec::with_capacity(headers.len());
    for (header, bytes) in headers.iter().zip(record.iter()) {
        let value = std::str::from_utf8(bytes)
            .map_err(|e| {
                format!(
                    "not UTF-8 (column `{header}`, byte {}); save the file as UTF-8",
                    e.valid_up_to()
                )
            })?
            .trim();
        if value.contains('"') && K::NO_QUOTES.contains(&header.as_str()) {
            return Err(format!(
                "broken quoting in column `{header}`: a quote inside an unquoted field (quote the whole field, and write \"\" for a quote inside it)"
            ));
        }
        values.push(value.to_string());
    }
    Ok(Row { headers, values })
}

fn csv_reason(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => format!(
            "{len} fields where the header has {expected_len} (a comma inside an unquoted field, or broken quoting?)"
        ),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8; save the file as UTF-8".into(),
        _ => format!("unreadable row: {error}"),
    }
}

/// A progress bar on a terminal, plain lines otherwise (logs, CI).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(bytes: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(bytes);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {percent:>3}% {msg} ({elapsed}, {eta} left)")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar }
    }

    fn report(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn advance(&self, rows: u64, byte: u64, summary: &ImportSummary) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(byte);
                if rows.is_multiple_of(256) {
                    bar.set_message(format!("{rows} rows, {} bad", summary.bad));
                }
            }
            None if rows.is_multiple_of(PLAIN_PROGRESS_EVERY) => {
                eprintln!("... {rows} rows read, {} added, {} bad", summary.added, summary.bad)
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
