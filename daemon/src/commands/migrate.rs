//! `nudge migrate --to postgres://...`: copies the SQLite database into a
//! PostgreSQL one (store/postgres/copy.rs says how), with a progress bar on a
//! terminal, and checks every table's rows at the end.

use std::io::IsTerminal as _;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, PostgresUrl};
use crate::store::Store;
use crate::store::postgres::{self, CopyOptions, CopyReport, Progress};

/// What `nudge migrate` was given.
pub(crate) struct Options<'a> {
    pub(crate) to: &'a str,
    /// The SQLite file (default: the config's `database`).
    pub(crate) from: Option<&'a Path>,
    pub(crate) copy: CopyOptions,
}

pub(crate) async fn run(config: &Config, options: Options<'_>) -> anyhow::Result<()> {
    let target = PostgresUrl::given(options.to, "--to")?;
    let from = options.from.unwrap_or(&config.database);
    if !from.exists() {
        anyhow::bail!(
            "no SQLite database at {}: there is nothing to copy; name the file with --from or `database` in nudge.toml",
            from.display()
        );
    }
    let store = Store::open(from).await?;
    let mut pg = postgres::connect(&target.options()?, &target.shown()).await?;
    let mut bar = Bar::default();
    let report = postgres::copy_to_postgres(&store, &mut pg, &options.copy, &mut |p: Progress<'_>| bar.show(p)).await?;
    bar.finish();
    store.close().await;
    conclude(&report, from, &target.shown())
}

/// Prints each table's rows on both sides and fails on any difference, or
/// when the SQLite file was written while it was copied.
fn conclude(report: &CopyReport, from: &Path, to: &str) -> anyhow::Result<()> {
    println!("{:<24} {:>12} {:>12}", "table", "sqlite", "postgresql");
    for count in &report.counts {
        let mark = if count.sqlite == count.postgres {
            ""
        } else {
            "  MISMATCH"
        };
        println!("{:<24} {:>12} {:>12}{mark}", count.table, count.sqlite, count.postgres);
    }
    let mismatched: Vec<&str> = report.mismatches().map(|c| c.table.as_str()).collect();
    if !mismatched.is_empty() {
        anyhow::bail!(
            "the copy in {to} does not have the rows of {} in {}: drop its tables (or use a new database) \
             and copy again with the daemon stopped",
            from.display(),
            mismatched.join(", ")
        );
    }
    if report.written_meanwhile {
        anyhow::bail!(
            "{} was written while it was copied (is a daemon still running on it?): {to} holds the \
             database as it was when the copy began, not what was written since; stop the daemon, \
             drop the copy's tables (or use a new database) and copy again",
            from.display()
        );
    }
    println!("copied {} into {to}: every table has the same rows", from.display());
    Ok(())
}

/// A progress bar on a terminal, a line a table otherwise (logs, CI).
#[derive(Default)]
struct Bar {
    bar: Option<ProgressBar>,
    table: String,
}

impl Bar {
    fn show(&mut self, progress: Progress<'_>) {
        match progress {
            Progress::Start { rows, resumed } => {
                if resumed > 0 {
                    eprintln!("resuming: {resumed} rows were copied before, {rows} to go");
                }
                self.bar = std::io::stderr().is_terminal().then(|| {
                    let bar = ProgressBar::new(rows);
                    bar.set_style(
                        ProgressStyle::with_template("{bar:40} {pos}/{len} rows {msg} ({elapsed}, {eta} left)")
                            .expect("a valid template"),
                    );
                    bar
                });
            }
            Progress::Copied { table, rows } => {
                if let Some(bar) = &self.bar {
                    bar.inc(rows);
                    bar.set_message(table.to_string());
                } else if self.table != table {
                    eprintln!("copying {table}");
                }
                self.table = table.to_string();
            }
            // For the interruption test: say so, then wait to be killed.
            Progress::Hold => {
                eprintln!("holding (--hold-after-batches): kill me");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
