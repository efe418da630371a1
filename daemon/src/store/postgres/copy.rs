//! `nudge migrate --to`: copies a SQLite database into a PostgreSQL one.
//!
//! - One consistent snapshot: every table is read inside one SQLite read
//!   transaction, so the copy is the database as it was when the copy began,
//!   whatever writes meanwhile. A write meanwhile (a daemon still running) is
//!   noticed at the end (`PRAGMA data_version`) and fails the copy: what was
//!   written after the snapshot is not in it.
//! - Each table in key order (rowid: the `id` where there is one), in batches;
//!   a batch is one JSON text from SQLite and one statement in PostgreSQL
//!   (`json_populate_recordset`), committed together with the copy's progress
//!   row (`nudge_migrate_progress`), so a copy killed at any point resumes after
//!   the last batch that committed: no row twice, none left out.
//! - A PostgreSQL database holding rows that this copy did not put there (or a
//!   copy of another SQLite database) is refused before anything is written.
//! - At the end, each identity's sequence is set past the copied ids and every
//!   table's rows are counted on both sides.

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::tables::{Kind, Table, quoted, tables};
use crate::store::{Conn, Store};

/// What a copy is told from outside.
pub(crate) struct CopyOptions {
    /// Rows a batch holds at most.
    pub(crate) batch_rows: i64,
    /// For the interruption test: after this many batches, `hold` is called
    /// (it waits to be killed).
    pub(crate) hold_after_batches: Option<u64>,
}

/// What the copy tells the command as it goes.
pub(crate) enum Progress<'a> {
    /// Rows to copy in all, after what earlier runs copied.
    Start { rows: u64, resumed: u64 },
    /// A batch of a table committed.
    Copied { table: &'a str, rows: u64 },
    /// The hook of `hold_after_batches` was reached.
    Hold,
}

/// One table's rows on both sides after the copy.
#[derive(Debug)]
pub(crate) struct TableCount {
    pub(crate) table: String,
    pub(crate) sqlite: i64,
    pub(crate) postgres: i64,
}

/// How the copy went.
#[derive(Debug)]
pub(crate) struct CopyReport {
    pub(crate) counts: Vec<TableCount>,
    /// Whether the SQLite database was written while it was copied.
    pub(crate) written_meanwhile: bool,
}

impl CopyReport {
    pub(crate) fn mismatches(&self) -> impl Iterator<Item = &TableCount> {
        self.counts.iter().filter(|c| c.sqlite != c.postgres)
    }
}

/// The table that records how far the copy got, in the PostgreSQL database.
const PROGRESS_TABLE: &str = "CREATE TABLE IF NOT EXISTS nudge_migrate_progress (
    table_name TEXT PRIMARY KEY,
    source     TEXT NOT NULL,   -- the SQLite database's id (its `database-id` secret)
    last_key   BIGINT NOT NULL, -- the SQLite rowid of the last row copied
    rows       BIGINT NOT NULL  -- rows copied so far
)";

/// How far an earlier run got with one table.
struct Done {
    last_key: i64,
    rows: i64,
}

/// Copies `store`'s SQLite database into `pg` (connected and migrated).
pub(crate) async fn copy_to_postgres(
    store: &Store,
    pg: &mut PgConnection,
    options: &CopyOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> anyhow::Result<CopyReport> {
    let source = source_id(store).await?;
    sqlx::query(PROGRESS_TABLE).execute(&mut *pg).await?;
    let mut watch = store.pool.acquire().await?;
    let version_before = data_version(&mut watch).await?;
    // The snapshot: a read transaction, begun by its first read.
    let mut snapshot = store.pool.begin().await?;
    let tables = tables(&mut snapshot, pg).await?;
    let mut plan = Vec::new();
    let (mut rows, mut resumed) = (0u64, 0u64);
    for table in &tables {
        let done = check_target(pg, table, &source).await?;
        let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", quoted(&table.name)))
            .fetch_one(&mut *snapshot)
            .await?;
        let after: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {} WHERE rowid > ?", quoted(&table.name)))
            .bind(done.last_key)
            .fetch_one(&mut *snapshot)
            .await?;
        rows += u64::try_from(after)?;
        resumed += u64::try_from(total - after)?;
        plan.push((table, done, total));
    }
    progress(Progress::Start { rows, resumed });
    let mut batches = 0u64;
    for (table, done, _) in &plan {
        let mut at = Done {
            last_key: done.last_key,
            rows: done.rows,
        };
        loop {
            if options.hold_after_batches == Some(batches) {
                progress(Progress::Hold);
            }
            let copied = copy_batch(&mut snapshot, pg, table, &source, &mut at, options.batch_rows).await?;
            if copied == 0 {
                break;
            }
            batches += 1;
            progress(Progress::Copied {
                table: &table.name,
                rows: copied,
            });
        }
    }
    for table in tables.iter().filter(|t| t.identity) {
        restart_identity(pg, &table.name).await?;
    }
    let mut counts = Vec::new();
    for (table, _, sqlite) in plan {
        let postgres: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", quoted(&table.name)))
            .fetch_one(&mut *pg)
            .await?;
        counts.push(TableCount {
            table: table.name.clone(),
            sqlite,
            postgres,
        });
    }
    snapshot.rollback().await?;
    let written_meanwhile = data_version(&mut watch).await? != version_before;
    Ok(CopyReport {
        counts,
        written_meanwhile,
    })
}

/// The SQLite database's id: a random value it keeps among its secrets, made
/// on first use, so that a copy can tell its own rows from another database's.
async fn source_id(store: &Store) -> anyhow::Result<String> {
    let id = store.secret("database-id").await?;
    Ok(id.iter().take(16).map(|b| format!("{b:02x}")).collect())
}

/// Counts the commits other connections made to the database file.
async fn data_version(conn: &mut Conn) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("PRAGMA data_version").fetch_one(conn).await?)
}

/// Where an earlier copy of this database left `table`; refuses a table with
/// rows the copy did not write (another database's, or written since).
async fn check_target(pg: &mut PgConnection, table: &Table, source: &str) -> anyhow::Result<Done> {
    let recorded: Option<(String, i64, i64)> =
        sqlx::query_as("SELECT source, last_key, rows FROM nudge_migrate_progress WHERE table_name = $1")
            .bind(&table.name)
            .fetch_optional(&mut *pg)
            .await?;
    let present: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", quoted(&table.name)))
        .fetch_one(&mut *pg)
        .await?;
    let refuse = |why: String| {
        anyhow::anyhow!(
            "the PostgreSQL database already holds data that is not this SQLite database's copy ({why}): \
             nothing was written; copy into an empty database (createdb a new one), or drop its tables first"
        )
    };
    match recorded {
        Some((other, ..)) if other != source => Err(refuse(format!(
            "{} was copied from another SQLite database",
            table.name
        ))),
        Some((_, last_key, rows)) if rows == present => Ok(Done { last_key, rows }),
        Some((_, _, rows)) => Err(refuse(format!(
            "{} has {present} rows where the copy wrote {rows}",
            table.name
        ))),
        None if present > 0 => Err(refuse(format!("{} has {present} rows", table.name))),
        None => Ok(Done { last_key: 0, rows: 0 }),
    }
}

/// Copies the next batch of `table` after `at`, and records it, in one
/// PostgreSQL transaction. Returns the rows copied (0: the table is done).
async fn copy_batch(
    snapshot: &mut Conn,
    pg: &mut PgConnection,
    table: &Table,
    source: &str,
    at: &mut Done,
    batch_rows: i64,
) -> anyhow::Result<u64> {
    let (last_key, count, rows): (Option<i64>, i64, String) = sqlx::query_as(&batch_query(table))
        .bind(at.last_key)
        .bind(batch_rows)
        .fetch_one(&mut *snapshot)
        .await
        .map_err(|e| anyhow::anyhow!("read {} from SQLite after rowid {}: {e}", table.name, at.last_key))?;
    let Some(last_key) = last_key else {
        return Ok(0);
    };
    let columns: Vec<String> = table.columns.iter().map(|c| quoted(&c.name)).collect();
    let columns = columns.join(", ");
    let name = quoted(&table.name);
    let mut tx = pg.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO {name} ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::{name}, $1::json)"
    ))
    .bind(&rows)
    .execute(&mut *tx)
    .await
    .map_err(|e| anyhow::anyhow!("copy {} into PostgreSQL after rowid {}: {e}", table.name, at.last_key))?;
    sqlx::query(
        "INSERT INTO nudge_migrate_progress (table_name, source, last_key, rows) VALUES ($1, $2, $3, $4)
         ON CONFLICT (table_name) DO UPDATE SET last_key = excluded.last_key, rows = excluded.rows",
    )
    .bind(&table.name)
    .bind(source)
    .bind(last_key)
    .bind(at.rows + count)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    at.last_key = last_key;
    at.rows += count;
    Ok(u64::try_from(count)?)
}

/// The SQLite query for a batch: the last rowid, the rows, and the rows as one
/// JSON array of objects by column name (JSON columns as JSON, BLOBs as
/// PostgreSQL's hex text for bytea).
fn batch_query(table: &Table) -> String {
    let fields: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let column = quoted(&c.name);
            let value = match c.kind {
                Kind::Plain => column,
                Kind::Json => format!("json({column})"),
                Kind::Bytes => format!("CASE WHEN {column} IS NULL THEN NULL ELSE '\\x' || hex({column}) END"),
            };
            format!("'{}', {value}", c.name.replace('\'', "''"))
        })
        .collect();
    format!(
        "SELECT max(nudge_key), count(*), json_group_array(json_object({})) FROM
           (SELECT rowid AS nudge_key, * FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)",
        fields.join(", "),
        quoted(&table.name)
    )
}

/// Sets the identity of `table`'s `id` to go on after the largest copied id.
async fn restart_identity(pg: &mut PgConnection, table: &str) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "SELECT setval(pg_get_serial_sequence($1, 'id'), COALESCE((SELECT max(id) FROM {}), 0) + 1, false)",
        quoted(table)
    ))
    .bind(quoted(table))
    .execute(&mut *pg)
    .await?;
    Ok(())
}
