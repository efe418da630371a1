//! PostgreSQL (issue 33), as far as it goes today: its schema is the SQLite
//! one's twin, `nudge migrate --to` copies a database the real daemon filled
//! (and resumes after a kill), and every other command refuses a PostgreSQL
//! `database` in one sentence. A real server: `eval "$(tests/postgres.sh start)"`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::postgres::{TestPostgres, block_on};
use common::{BIN, Nudge, SmtpServer, repo_root, scratch};
use serde_json::Value;
use sqlx::{Connection as _, SqliteConnection};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

/// Each table's columns, (column, not null), as a schema declares them.
type Columns = BTreeMap<String, BTreeSet<(String, bool)>>;

async fn sqlite(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap()
}

/// The SQLite database's tables and columns, and its own indexes' names.
fn sqlite_schema(path: &Path) -> (Columns, BTreeSet<String>) {
    block_on(async {
        let mut conn = sqlite(path).await;
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT m.name, c.name, c.\"notnull\" OR c.pk > 0 FROM sqlite_master m, pragma_table_info(m.name) c
              WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        (columns(rows), indexes.into_iter().collect())
    })
}

/// The PostgreSQL database's, the same way: indexes that back a primary key or
/// a UNIQUE constraint are the constraint's, which SQLite does not name.
fn postgres_schema(pg: &TestPostgres) -> (Columns, BTreeSet<String>) {
    let rows: Vec<(String, String, bool)> = pg
        .json_rows(
            "SELECT json_build_array(table_name, column_name, is_nullable = 'NO')::text
               FROM information_schema.columns
              WHERE table_schema = current_schema()
                AND table_name NOT IN ('_sqlx_migrations', 'nudge_migrate_progress')",
        )
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let indexes = pg
        .json_rows(
            "SELECT to_json(indexname)::text FROM pg_indexes
              WHERE schemaname = current_schema()
                AND tablename NOT IN ('_sqlx_migrations', 'nudge_migrate_progress')
                AND indexname NOT IN (SELECT conname FROM pg_constraint)",
        )
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (columns(rows), indexes)
}

fn columns(rows: Vec<(String, String, bool)>) -> Columns {
    let mut tables = Columns::new();
    for (table, column, not_null) in rows {
        tables.entry(table).or_default().insert((column, not_null));
    }
    tables
}

/// The highest version among a folder's migrations (`NNNN_name.sql`).
fn latest_migration(dir: &Path) -> u32 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".sql")?.split('_').next()?.parse().ok()
        })
        .max()
        .unwrap()
}

/// A fresh installation (no daemon, nothing sent anywhere) with its database made.
fn installation() -> Nudge {
    Nudge::relaying_to(1, MONDAY_9AM, "")
}

#[test]
fn the_postgres_schema_has_every_table_column_and_index_of_the_sqlite_one() {
    let nudge = installation();
    let pg = TestPostgres::create();
    nudge.cli(&["migrate", "--to", &pg.url]);

    let (sqlite_columns, sqlite_indexes) = sqlite_schema(&nudge.database);
    let (pg_columns, pg_indexes) = postgres_schema(&pg);
    let help = "a SQLite migration (daemon/migrations/) needs its twin in daemon/migrations/postgres/";
    assert_eq!(
        sqlite_columns.keys().collect::<Vec<_>>(),
        pg_columns.keys().collect::<Vec<_>>(),
        "the same tables: {help}"
    );
    for (table, columns) in &sqlite_columns {
        assert_eq!(
            columns, &pg_columns[table],
            "the columns of {table} (name, not null): {help}"
        );
    }
    assert_eq!(sqlite_indexes, pg_indexes, "the same indexes: {help}");
    let migrations = repo_root().join("daemon/migrations");
    assert_eq!(
        latest_migration(&migrations),
        latest_migration(&migrations.join("postgres")),
        "the latest migration of each has the same number: {help}"
    );
}

/// Every row of every table, read from SQLite as PostgreSQL shows it (JSON
/// columns as JSON, BLOBs as bytea's hex), sorted: (table -> rows).
fn sqlite_rows(path: &Path, pg: &TestPostgres) -> BTreeMap<String, Vec<String>> {
    let kinds: Vec<(String, String, String)> = pg
        .json_rows(
            "SELECT json_build_array(table_name, column_name, data_type)::text FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name NOT IN ('_sqlx_migrations', 'nudge_migrate_progress')",
        )
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column, kind) in kinds {
        let value = match kind.as_str() {
            "jsonb" => format!("json(\"{column}\")"),
            "bytea" => format!("'\\x' || lower(hex(\"{column}\"))"),
            _ => format!("\"{column}\""),
        };
        tables.entry(table).or_default().push(format!("'{column}', {value}"));
    }
    block_on(async {
        let mut conn = sqlite(path).await;
        let mut rows = BTreeMap::new();
        for (table, fields) in tables {
            let sql = format!("SELECT json_object({}) FROM \"{table}\"", fields.join(", "));
            let texts: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&mut conn).await.unwrap();
            rows.insert(table, sorted(texts.iter().map(|t| serde_json::from_str(t).unwrap())));
        }
        rows
    })
}

fn postgres_rows(pg: &TestPostgres, tables: impl Iterator<Item = String>) -> BTreeMap<String, Vec<String>> {
    tables
        .map(|table| {
            let rows = pg.json_rows(&format!("SELECT row_to_json(t)::text FROM \"{table}\" t"));
            (table, sorted(rows.into_iter()))
        })
        .collect()
}

/// Rows as canonical JSON text (object keys sorted at every level), in order.
fn sorted(rows: impl Iterator<Item = Value>) -> Vec<String> {
    let mut rows: Vec<String> = rows.map(|r| canonical(&r)).collect();
    rows.sort();
    rows
}

fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: BTreeMap<&String, String> = map.iter().map(|(k, v)| (k, canonical(v))).collect();
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// Both databases hold the same rows, table by table.
fn assert_same_rows(path: &Path, pg: &TestPostgres) {
    let sqlite = sqlite_rows(path, pg);
    let postgres = postgres_rows(pg, sqlite.keys().cloned());
    for (table, rows) in &sqlite {
        assert_eq!(rows.len(), postgres[table].len(), "rows of {table}");
        assert_eq!(rows, &postgres[table], "the rows of {table}");
    }
}

fn count(nudge: &Nudge, sql: &str) -> i64 {
    nudge.query(sql)[0][0].as_i64().unwrap()
}

#[test]
fn migrate_copies_every_row_of_a_database_the_daemon_filled() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();
    for (name, email, tier) in [
        ("Big Buyer", "big@example.com", "high"),
        ("Wang Fang", "wang@example.com", "low"),
    ] {
        nudge.cli(&[
            "contact",
            "add",
            "--name",
            name,
            "--email",
            email,
            "--owner",
            "rep@corp.test",
            "--tier",
            tier,
        ]);
    }
    nudge.cli(&["stage", "set", "wang@example.com", "intent"]);
    nudge.cli(&["inquiry", "add", "big@example.com", "--message", "price for 10k units?"]);
    nudge.cli(&[
        "followup",
        "log",
        "wang@example.com",
        "--channel",
        "phone",
        "--summary",
        "intro call",
        "--next",
        "5d",
    ]);
    nudge.cli(&["suppress", "add", "nobody@example.com"]);
    smtp.wait_for("wang@example.com", "Wang Fang");
    nudge.settle();
    nudge.stop();
    for (what, sql) in [
        ("waiting runs", "SELECT count(*) FROM runs WHERE status = 'waiting'"),
        ("pending timers", "SELECT count(*) FROM timers WHERE fired_at IS NULL"),
        ("messages", "SELECT count(*) FROM outbox"),
        ("deliveries", "SELECT count(*) FROM deliveries"),
        ("follow-ups", "SELECT count(*) FROM follow_ups"),
        ("inquiries", "SELECT count(*) FROM inquiries"),
        ("suppressions", "SELECT count(*) FROM suppressions"),
        ("secrets", "SELECT count(*) FROM secrets"),
    ] {
        assert!(count(&nudge, sql) > 0, "the daemon left {what} to copy");
    }

    let pg = TestPostgres::create();
    let out = nudge.cli(&["migrate", "--to", &pg.url, "--batch-rows", "3"]);
    assert!(out.contains("every table has the same rows"), "{out}");
    assert!(out.contains("outbox"), "a count a table: {out}");
    assert_same_rows(&nudge.database, &pg);
    // The identities go on after the copied ids.
    let next = pg.scalar("INSERT INTO contacts (name, created_at, updated_at) VALUES ('New', 1, 1) RETURNING id");
    assert_eq!(next, count(&nudge, "SELECT max(id) FROM contacts") + 1);
}

#[test]
fn a_migration_killed_midway_goes_on_where_it_stopped_when_run_again() {
    let nudge = installation();
    let csv: String = std::iter::once("name,email,owner\n".to_string())
        .chain((0..300).map(|i| format!("Lead {i},lead{i}@example.com,rep@corp.test\n")))
        .collect();
    std::fs::write(nudge.path("leads.csv"), csv).unwrap();
    nudge.cli(&["contact", "import", nudge.path("leads.csv").to_str().unwrap()]);
    let pg = TestPostgres::create();

    // 7 batches of 10 rows committed, then killed like a crash.
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(nudge.path("nudge.toml"))
        .args([
            "migrate",
            "--to",
            &pg.url,
            "--batch-rows",
            "10",
            "--hold-after-batches",
            "7",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("holding") {
            break;
        }
    }
    assert!(said.contains("holding"), "the copy never got to its 7th batch:\n{said}");
    child.kill().unwrap();
    child.wait().unwrap();
    let copied = pg.scalar("SELECT count(*) FROM contacts");
    assert!(
        copied > 0 && copied < 300,
        "killed midway through the contacts: {copied} copied"
    );
    let recorded = pg.scalar("SELECT sum(rows)::bigint FROM nudge_migrate_progress");
    assert!(recorded >= copied, "the progress counts what was committed");

    let (ok, out, err) = nudge.try_cli(&["migrate", "--to", &pg.url, "--batch-rows", "10"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains(&format!("resuming: {recorded} rows were copied before")),
        "{err}"
    );
    assert_same_rows(&nudge.database, &pg);
    assert_eq!(pg.scalar("SELECT count(*) FROM contacts"), 300);

    // Once more: nothing to do, nothing doubled.
    let out = nudge.cli(&["migrate", "--to", &pg.url]);
    assert!(out.contains("every table has the same rows"), "{out}");
    assert_same_rows(&nudge.database, &pg);
}

#[test]
fn migrate_refuses_a_postgres_database_that_holds_other_data() {
    let first = installation();
    first.cli(&["contact", "add", "--name", "Ann", "--email", "ann@example.com"]);
    let second = installation();
    second.cli(&["contact", "add", "--name", "Bo", "--email", "bo@example.com"]);
    let pg = TestPostgres::create();
    first.cli(&["migrate", "--to", &pg.url]);

    let (ok, _, err) = second.try_cli(&["migrate", "--to", &pg.url]);
    assert!(!ok);
    assert!(err.contains("copied from another SQLite database"), "{err}");
    assert!(err.contains("copy into an empty database"), "{err}");
    assert_same_rows(&first.database, &pg);

    // Rows nobody copied: refused before anything is written.
    let other = TestPostgres::create();
    installation().cli(&["migrate", "--to", &other.url]);
    other.execute("INSERT INTO contacts (name, created_at, updated_at) VALUES ('Someone', 1, 1)");
    let (ok, _, err) = first.try_cli(&["migrate", "--to", &other.url]);
    assert!(!ok);
    assert!(
        err.contains("already holds data that is not this SQLite database's copy"),
        "{err}"
    );
    assert_eq!(other.scalar("SELECT count(*) FROM contacts"), 1);
}

/// Writes `database = value` in the installation's nudge.toml (its first line);
/// returns the file as it was.
fn set_database(nudge: &Nudge, value: &str) -> String {
    let toml = std::fs::read_to_string(nudge.path("nudge.toml")).unwrap();
    let database_line = toml.lines().next().unwrap().to_string();
    std::fs::write(
        nudge.path("nudge.toml"),
        toml.replace(&database_line, &format!("database = {value:?}")),
    )
    .unwrap();
    toml
}

#[test]
fn every_command_but_migrate_refuses_a_postgres_database_in_one_sentence() {
    let nudge = installation();
    let toml = set_database(&nudge, "postgres://nudge@db.example/nudge");
    for args in [&["run"][..], &["status"], &["contact", "add", "--name", "X"]] {
        let (ok, out, err) = nudge.try_cli(args);
        assert!(!ok, "nudge {args:?} ran on PostgreSQL: {out}");
        assert!(
            err.contains("nudge runs on SQLite only for now")
                && err.contains("nudge migrate --to postgres://nudge@db.example/nudge"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    }

    // The same from the environment, which wins over the file.
    std::fs::write(nudge.path("nudge.toml"), &toml).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(nudge.path("nudge.toml"))
        .arg("status")
        .env("NUDGE_DATABASE_URL", "postgres://nudge@db.example/nudge")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("$NUDGE_DATABASE_URL names the PostgreSQL database"),
        "{err}"
    );
}

#[test]
fn a_password_in_nudge_toml_is_refused_at_its_place() {
    let nudge = installation();
    set_database(&nudge, "postgres://nudge:hunter2@db.example/nudge");
    let (ok, _, err) = nudge.try_cli(&["migrate", "--to", "postgres://nudge@db.example/nudge"]);
    assert!(!ok);
    assert!(err.contains("nudge.toml:1:12"), "file:line:col: {err}");
    assert!(err.contains("holds a password"), "{err}");
    assert!(err.contains("$NUDGE_DATABASE_PASSWORD"), "what to do: {err}");
    assert!(!err.contains("hunter2"), "the password is not repeated: {err}");
}
