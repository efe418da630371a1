//! CSV import of orders: streamed row by row (memory stays flat in the file's
//! size), committed in batches, bad rows reported with their line and reason
//! while the good ones are kept, or nothing kept at all with `strict`. An order
//! already stored is skipped, so importing the same file twice changes nothing.
//! Each customer is re-classified once per batch, after its rows: a file of a
//! customer's past orders moves their tier once, not once per order.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::{Events, NewOrder, OrderOutcome, reclassify_by_id, store_order};
use crate::store::{Invalid, Store, Tx};
use crate::workflow::ClassificationRules;

/// Rows per transaction: large enough that fsyncs do not dominate, small enough
/// that the daemon is never locked out for long.
const BATCH_ROWS: usize = 1000;
/// Without a terminal, a progress line every this many rows.
const PLAIN_PROGRESS_EVERY: u64 = 10_000;

const COLUMNS: &[&str] = &["id", "contact", "amount", "currency", "date", "items"];
const REQUIRED: &[&str] = &["id", "contact", "amount"];

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub added: u64,
    pub already_present: u64,
    pub bad: u64,
}

/// Imports `file`. Bad rows go to stderr as `file:line: reason`. With `strict`,
/// one bad row keeps the whole file out (every bad row is still reported).
/// `events` says whether the customers' classification changes start workflows.
pub async fn import_orders(
    store: &Store,
    rules: &ClassificationRules,
    now: i64,
    file: &Path,
    strict: bool,
    events: Events,
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
    if let Some(unknown) = headers.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
        bail!(
            "{}:1: unknown column `{unknown}`; columns are: {}",
            file.display(),
            COLUMNS.join(", ")
        );
    }
    if let Some(missing) = REQUIRED.iter().find(|r| !headers.iter().any(|h| h == *r)) {
        bail!(
            "{}:1: no `{missing}` column; {} are required",
            file.display(),
            REQUIRED.join(", ")
        );
    }
    let column = |name: &str| headers.iter().position(|h| h == name);
    let [id, contact, amount, currency, date, items] = [
        column("id"),
        column("contact"),
        column("amount"),
        column("currency"),
        column("date"),
        column("items"),
    ];

    let progress = Progress::new(size);
    let mut summary = ImportSummary::default();
    let mut tx = store.write().await?;
    let mut in_batch = 0;
    let mut customers = BTreeSet::new();
    let classify = async |tx: &mut Tx, customers: &mut BTreeSet<i64>| -> anyhow::Result<()> {
        for id in std::mem::take(customers) {
            reclassify_by_id(tx, Some(rules), id, now, events).await?;
        }
        Ok(())
    };
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    loop {
        let (line, row) = match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => (
                record.position().map_or(0, |p| p.line()),
                row_of(&record, [id, contact, amount, currency, date, items]),
            ),
            Err(e) => (e.position().map_or(0, |p| p.line()), Err(csv_reason(&e))),
        };
        rows += 1;
        let outcome = match row {
            Ok(order) => match store_order(&mut tx, rules, &order, now).await {
                Ok(outcome) => Ok(outcome),
                Err(e) => match e.downcast::<Invalid>() {
                    Ok(invalid) => Err(invalid.0),
                    Err(e) => return Err(e.context(format!("{}:{line}", file.display()))),
                },
            },
            Err(reason) => Err(reason),
        };
        match outcome {
            Ok(OrderOutcome::Added { contact_id, .. }) => {
                summary.added += 1;
                customers.insert(contact_id);
            }
            Ok(OrderOutcome::AlreadyPresent { .. }) => summary.already_present += 1,
            Err(reason) => {
                summary.bad += 1;
                progress.report(&format!("{}:{line}: {reason}", file.display()));
            }
        }
        in_batch += 1;
        if !strict && in_batch >= BATCH_ROWS {
            classify(&mut tx, &mut customers).await?;
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
    classify(&mut tx, &mut customers).await?;
    tx.commit().await?;
    Ok(summary)
}

/// The order in one CSV record, or why it cannot be one.
fn row_of(record: &csv::ByteRecord, columns: [Option<usize>; 6]) -> Result<NewOrder, String> {
    let mut fields = [const { String::new() }; 6];
    for (slot, column) in fields.iter_mut().zip(columns) {
        let Some(bytes) = column.and_then(|c| record.get(c)) else {
            continue;
        };
        *slot = std::str::from_utf8(bytes)
            .map_err(|e| {
                format!(
                    "not UTF-8 (byte {} of a field); save the file as UTF-8",
                    e.valid_up_to()
                )
            })?
            .trim()
            .to_string();
    }
    let [id, contact, amount, currency, date, items] = fields;
    if amount.contains('"') || id.contains('"') || contact.contains('"') {
        return Err("broken quoting: a quote inside an unquoted field (write \"\" inside quotes)".into());
    }
    let present = |s: String| (!s.is_empty()).then_some(s);
    Ok(NewOrder {
        id,
        contact,
        amount: super::Amount::Text(amount),
        currency: present(currency),
        date: present(date),
        items,
    })
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
