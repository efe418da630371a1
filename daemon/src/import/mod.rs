//! CSV import of contacts, orders and follow-ups. The file is streamed row by row
//! (memory stays flat in its size) and committed in batches; each bad row is
//! reported with its line and reason while the good ones are kept, or nothing is
//! kept at all with `strict`. Rows already imported are recognised and skipped,
//! so importing the same file twice changes nothing.
//!
//! This module reads the file; `contacts.rs`, `orders.rs` and `follow_ups.rs`
//! say what one row of each kind means.

pub(crate) mod contacts;
pub(crate) mod follow_ups;
pub(crate) mod orders;

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};

use sqlx::Connection as _;

use crate::store::{Conn, Store};

/// Rows the reader parses and `RowKind::store` takes at a time.
const BATCH_ROWS: usize = 1000;
/// SQLite's page cache for the import's connection, in KiB: it holds every page a
/// transaction dirties (`RowKind::ROWS_PER_COMMIT` rows' worth) until its commit.
const IMPORT_CACHE_KIB: u32 = 64 * 1024;
/// Without a terminal, a progress line every this many rows (a multiple of `BATCH_ROWS`).
const PLAIN_PROGRESS_EVERY: u64 = 10_000;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ImportSummary {
    pub(crate) added: u64,
    pub(crate) already_present: u64,
    pub(crate) bad: u64,
}

/// What one good row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowOutcome {
    Added,
    AlreadyPresent,
}

/// One row, by column name.
pub(crate) struct Row<'a> {
    headers: &'a [String],
    values: Vec<String>,
}

impl Row<'_> {
    /// The trimmed value of a column; `None` when the column is absent or the cell empty.
    pub(crate) fn get(&self, column: &str) -> Option<&str> {
        self.headers
            .iter()
            .position(|h| h == column)
            .map(|i| self.values[i].as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn text(&self, column: &str) -> String {
        self.get(column).unwrap_or_default().to_string()
    }

    pub(crate) fn owned(&self, column: &str) -> Option<String> {
        self.get(column).map(String::from)
    }
}

/// Reads one row of a kind.
pub(crate) type Parser<T> = Box<dyn Fn(&Row<'_>) -> Result<T, String> + Send>;

/// What a kind of row is made of and how it is stored.
// Implemented and awaited only inside this crate, on the CLI's runtime: the
// futures need no `Send` bound.
#[allow(async_fn_in_trait)]
pub(crate) trait RowKind {
    /// What a row says, checked as far as that needs no database.
    type Item: Send + 'static;
    /// Every column the file may have.
    const COLUMNS: &'static [&'static str];
    const REQUIRED: &'static [&'static str];
    /// Columns in which a quote can only mean broken quoting (ids, emails,
    /// amounts, dates), where the CSV reader would otherwise keep it as text.
    const NO_QUOTES: &'static [&'static str];
    /// Rows per transaction (rounded up to whole batches). A commit writes every page its
    /// transaction dirtied, and most rows dirty some page of an index on a random key
    /// (an email), so few large commits write each such page once where many small ones
    /// wrote it again and again. Small enough that the daemon, waiting for the write
    /// lock meanwhile, is never held up for long (~0.1 s for contacts and orders).
    const ROWS_PER_COMMIT: usize = 10 * BATCH_ROWS;

    /// What reads one row, on the import's reader thread; an error is the reason it is a bad row.
    fn parser(&self) -> Parser<Self::Item>;

    /// Stores a batch of rows in the transaction, in a few statements for the whole
    /// batch: an outcome for each item, in order; `Err` makes it a bad row.
    async fn store(
        &mut self,
        conn: &mut Conn,
        items: Vec<Self::Item>,
    ) -> anyhow::Result<Vec<Result<RowOutcome, String>>>;

    /// Runs before each commit (every `ROWS_PER_COMMIT` rows, or once at the end with `strict`).
    async fn finish(&mut self, _conn: &mut Conn) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Rows read and parsed, by line, and how far into the file they reach.
struct Batch<T> {
    rows: Vec<(u64, Result<T, String>)>,
    rows_read: u64,
    byte: u64,
}

/// Imports `file` as `kind`. Bad rows go to stderr as `file:line: reason`.
/// With `strict`, one bad row keeps the whole file out (every bad row is still reported).
///
/// A thread reads and parses the file a batch ahead while this task stores the
/// batch before: the CSV work and SQLite's run on both cores, and at most three
/// batches are in memory.
pub(crate) async fn import_csv<K: RowKind>(
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
    let (batches_out, batches) = tokio::sync::mpsc::channel(1);
    let (parse, no_quotes) = (kind.parser(), K::NO_QUOTES);
    // The file once more, for the raw text of each batch: the CSV reader drops the quotes.
    let raw = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let reading =
        tokio::task::spawn_blocking(move || read_batches(reader, raw, &headers, no_quotes, &parse, &batches_out));
    // A connection of its own, closed afterwards: its cache is sized for the import,
    // and its statement journals (a multi-row INSERT's undo) stay in memory.
    let mut conn = store.pool.acquire().await?;
    // Taking the batches, this drops them when it fails, which stops the reader.
    let summary = async {
        sqlx::query(&format!("PRAGMA cache_size = -{IMPORT_CACHE_KIB}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query("PRAGMA temp_store = MEMORY").execute(&mut *conn).await?;
        store_batches(&mut conn, batches, strict, kind, file, &progress).await
    }
    .await;
    let closed = conn.close().await;
    let read = reading.await;
    progress.finish();
    let summary = summary?;
    read.context("the CSV reader")?;
    closed?;
    Ok(summary)
}

/// Stores the batches as they come, committing every `ROWS_PER_COMMIT` rows (once
/// at the end with `strict`, and nothing if there is a bad row then).
async fn store_batches<K: RowKind>(
    conn: &mut Conn,
    mut batches: tokio::sync::mpsc::Receiver<Batch<K::Item>>,
    strict: bool,
    kind: &mut K,
    file: &Path,
    progress: &Progress,
) -> anyhow::Result<ImportSummary> {
    let mut summary = ImportSummary::default();
    // The write lock is taken once a batch is parsed, not while the reader parses
    // it; within a transaction the reader is a batch ahead.
    let mut next = batches.recv().await;
    while let Some(first) = next {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let (mut batch, mut rows) = (Some(first), 0);
        while let Some(stored) = batch {
            rows += stored.rows.len();
            store_batch(&mut tx, kind, stored.rows, file, progress, &mut summary).await?;
            progress.advance(stored.rows_read, stored.byte, &summary);
            batch = if strict || rows < K::ROWS_PER_COMMIT {
                batches.recv().await
            } else {
                None
            };
        }
        if strict && summary.bad > 0 {
            tx.rollback().await?;
            bail!(
                "{}: {} bad row(s); nothing was imported (--strict)",
                file.display(),
                summary.bad
            );
        }
        kind.finish(&mut tx).await?;
        tx.commit().await?;
        next = batches.recv().await;
    }
    Ok(summary)
}

/// Reads the file in batches of `BATCH_ROWS` rows, each row parsed or why it is bad;
/// stops early when the batches are no longer taken (the import failed).
fn read_batches<T>(
    mut reader: csv::Reader<std::fs::File>,
    mut raw: std::fs::File,
    headers: &[String],
    no_quotes: &[&str],
    parse: &Parser<T>,
    out: &tokio::sync::mpsc::Sender<Batch<T>>,
) {
    let unquoted: Vec<bool> = headers.iter().map(|h| no_quotes.contains(&h.as_str())).collect();
    let mut record = csv::ByteRecord::new();
    let mut rows_read = 0u64;
    let mut rows = Vec::with_capacity(BATCH_ROWS);
    // Where each row of the batch is in the file, to check its raw text.
    let mut spans = Vec::with_capacity(BATCH_ROWS);
    loop {
        let more = match reader.read_byte_record(&mut record) {
            Ok(false) => false,
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                let start = record.position().map_or(0, |p| p.byte());
                spans.push((rows.len(), start..reader.position().byte()));
                rows.push((line, row_of(headers, no_quotes, &record).and_then(|row| parse(&row))));
                true
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                let mut reason = csv_reason(&e);
                // A quote never closed swallows the lines after it into one field.
                let last_line = reader.position().line().saturating_sub(1);
                if last_line > line {
                    reason += &format!("; this row runs over lines {line}-{last_line}: a quote that is never closed?");
                }
                rows.push((line, Err(reason)));
                true
            }
        };
        rows_read += u64::from(more);
        if rows.len() >= BATCH_ROWS || (!more && !rows.is_empty()) {
            for (row, reason) in broken_quotes(&mut raw, &std::mem::take(&mut spans), headers, &unquoted) {
                rows[row].1 = Err(reason);
            }
            let batch = Batch {
                rows: std::mem::replace(&mut rows, Vec::with_capacity(BATCH_ROWS)),
                rows_read,
                byte: reader.position().byte(),
            };
            if out.blocking_send(batch).is_err() {
                return;
            }
        }
        if !more {
            return;
        }
    }
}

/// Stores the good rows of a batch and reports the bad ones, in line order.
async fn store_batch<K: RowKind>(
    conn: &mut Conn,
    kind: &mut K,
    batch: Vec<(u64, Result<K::Item, String>)>,
    file: &Path,
    progress: &Progress,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let (first, last) = (batch[0].0, batch[batch.len() - 1].0);
    let mut lines = Vec::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    for (line, parsed) in batch {
        match parsed {
            Ok(item) => {
                lines.push((line, None));
                items.push(item);
            }
            Err(reason) => lines.push((line, Some(reason))),
        }
    }
    let mut stored = kind
        .store(conn, items)
        .await
        .with_context(|| format!("{}:{first}-{last}", file.display()))?
        .into_iter();
    for (line, bad) in lines {
        let outcome = match bad {
            Some(reason) => Err(reason),
            None => stored.next().context("an outcome for every stored row")?,
        };
        match outcome {
            Ok(RowOutcome::Added) => summary.added += 1,
            Ok(RowOutcome::AlreadyPresent) => summary.already_present += 1,
            Err(reason) => {
                summary.bad += 1;
                progress.report(&format!("{}:{line}: {reason}", file.display()));
            }
        }
    }
    Ok(())
}

/// The rows (by index in the batch) whose raw text has a quoted field with more
/// after its closing quote in a column that takes no quotes: `"1"2` in an amount,
/// which the CSV reader would read as `12`. `spans` are the rows' byte ranges.
fn broken_quotes(
    raw: &mut std::fs::File,
    spans: &[(usize, std::ops::Range<u64>)],
    headers: &[String],
    unquoted: &[bool],
) -> Vec<(usize, String)> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let (Some((_, first)), Some((_, last))) = (spans.first(), spans.last()) else {
        return Vec::new();
    };
    let mut text = vec![0; usize::try_from(last.end - first.start).unwrap_or(0)];
    // The reader has read these bytes already: failing to read them again leaves the rows as read.
    if raw.seek(SeekFrom::Start(first.start)).is_err() || raw.read_exact(&mut text).is_err() {
        return Vec::new();
    }
    let mut broken = Vec::new();
    for (row, span) in spans {
        let bytes = &text[(span.start - first.start) as usize..(span.end - first.start) as usize];
        if let Some(column) = quoted_then_more(bytes).filter(|&c| unquoted.get(c).copied().unwrap_or(false)) {
            broken.push((
                *row,
                format!(
                    "broken quoting in column `{}`: text after the closing quote (quote the whole field, and write \"\" for a quote inside it)",
                    headers[column]
                ),
            ));
        }
    }
    broken
}

/// The first column of a raw CSV record whose quoted value is followed by more
/// text before the next comma or the end of the record.
fn quoted_then_more(record: &[u8]) -> Option<usize> {
    let (mut column, mut i) = (0, 0);
    while i < record.len() {
        if record[i] == b'"' {
            i += 1;
            // To the closing quote; `""` is a quote inside the value.
            while i < record.len() {
                if record[i] == b'"' {
                    if record.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            if !matches!(record.get(i), None | Some(b',' | b'\r' | b'\n')) {
                return Some(column);
            }
        }
        while i < record.len() && record[i] != b',' {
            i += 1;
        }
        i += 1;
        column += 1;
    }
    None
}

/// The row in one CSV record, or why it cannot be one.
fn row_of<'h>(headers: &'h [String], no_quotes: &[&str], record: &csv::ByteRecord) -> Result<Row<'h>, String> {
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
        if value.contains('"') && no_quotes.contains(&header.as_str()) {
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
                bar.set_message(format!("{rows} rows, {} bad", summary.bad));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_after_a_closing_quote_is_found_in_its_column() {
        assert_eq!(quoted_then_more(b"o-1,a@example.com,\"1\"2,CNY\n"), Some(2));
        assert_eq!(quoted_then_more(b"\"o\"-1,a\n"), Some(0));
        assert_eq!(quoted_then_more(b"o-1,\"a,b\",\"1\"\r\n"), None);
        assert_eq!(quoted_then_more(b"o-1,\"say \"\"hi\"\"\",12\n"), None);
        assert_eq!(quoted_then_more(b"o-1,,\"\"\n"), None);
    }
}
