//! The tables a copy goes through, read from the two schemas rather than
//! listed by hand, so that a migration's new table or column is copied too:
//! the SQLite tables in an order where every table comes after the tables it
//! references, each with its columns and how a value of each crosses over.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::postgres::PgConnection;

use crate::store::Conn;

/// How a column's values cross from SQLite to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Integers and text: as they are.
    Plain,
    /// JSON kept as text in SQLite, JSONB in PostgreSQL.
    Json,
    /// A BLOB, a BYTEA: as hex.
    Bytes,
}

#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) kind: Kind,
}

#[derive(Debug, Clone)]
pub(super) struct Table {
    pub(super) name: String,
    pub(super) columns: Vec<Column>,
    /// Whether PostgreSQL numbers its `id` (an identity), whose sequence must
    /// then start after the copied ids.
    pub(super) identity: bool,
}

/// The SQLite database's tables (sqlx's bookkeeping aside), parents first,
/// each checked against the PostgreSQL schema.
pub(super) async fn tables(sqlite: &mut Conn, pg: &mut PgConnection) -> anyhow::Result<Vec<Table>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table'
           AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut *sqlite)
    .await?;
    let pg_columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_identity::text
           FROM information_schema.columns WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut *pg)
    .await?;
    let mut parents = BTreeMap::new();
    let mut found = BTreeMap::new();
    for name in &names {
        let refs: Vec<String> = sqlx::query_scalar("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?)")
            .bind(name)
            .fetch_all(&mut *sqlite)
            .await?;
        parents.insert(
            name.clone(),
            refs.into_iter().filter(|r| r != name).collect::<BTreeSet<_>>(),
        );
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
            .bind(name)
            .fetch_all(&mut *sqlite)
            .await?;
        found.insert(name.clone(), table(name, &columns, &pg_columns)?);
    }
    Ok(parents_first(parents)
        .into_iter()
        .filter_map(|name| found.remove(&name))
        .collect())
}

/// One SQLite table matched with its PostgreSQL twin, column by column.
fn table(name: &str, columns: &[String], pg_columns: &[(String, String, String, String)]) -> anyhow::Result<Table> {
    let mut identity = false;
    let mut matched = Vec::new();
    for column in columns {
        let Some((_, _, data_type, is_identity)) = pg_columns.iter().find(|(t, c, _, _)| t == name && c == column)
        else {
            anyhow::bail!(
                "the PostgreSQL database has no column {name}.{column}, which the SQLite database has: \
                 the two schemas differ (is the SQLite file from a newer nudge than this one?)"
            );
        };
        identity |= column == "id" && is_identity == "YES";
        let kind = match data_type.as_str() {
            "jsonb" | "json" => Kind::Json,
            "bytea" => Kind::Bytes,
            _ => Kind::Plain,
        };
        matched.push(Column {
            name: column.clone(),
            kind,
        });
    }
    Ok(Table {
        name: name.to_string(),
        columns: matched,
        identity,
    })
}

/// The tables in an order where each comes after those it references (foreign
/// keys are checked row by row as the copy inserts). A cycle, which the schema
/// has none of, would leave its tables in name order at the end.
fn parents_first(mut parents: BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut order = Vec::new();
    while !parents.is_empty() {
        let ready: Vec<String> = parents
            .iter()
            .filter(|(_, refs)| refs.iter().all(|r| !parents.contains_key(r)))
            .map(|(name, _)| name.clone())
            .collect();
        if ready.is_empty() {
            order.extend(std::mem::take(&mut parents).into_keys());
            break;
        }
        for name in ready {
            parents.remove(&name);
            order.push(name);
        }
    }
    order
}

/// A name as an SQL identifier, in either dialect.
pub(super) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_comes_after_the_tables_it_references() {
        let parents = BTreeMap::from([
            ("deliveries".to_string(), BTreeSet::from(["outbox".to_string()])),
            (
                "outbox".to_string(),
                BTreeSet::from(["runs".to_string(), "contacts".to_string()]),
            ),
            ("runs".to_string(), BTreeSet::from(["contacts".to_string()])),
            ("contacts".to_string(), BTreeSet::new()),
        ]);
        assert_eq!(parents_first(parents), ["contacts", "runs", "outbox", "deliveries"]);
    }
}
