//! Set-based writes: many rows in one statement, bound as multi-row VALUES.

use std::ops::RangeInclusive;

use sqlx::query_builder::Separated;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::{QueryBuilder, Sqlite};

/// The most parameters one SQLite statement may bind (SQLITE_MAX_VARIABLE_NUMBER).
const MAX_BOUND: usize = 32_766;

/// Splits the rows of a multi-row INSERT into chunks whose lengths are powers of two,
/// each within SQLite's limit on parameters: every length is a statement sqlx prepares
/// once and keeps, so batches of any size reuse at most a dozen statements instead of
/// preparing (and caching) one of thousands of parameters per size.
fn value_chunks<T>(mut rows: &[T], columns: usize) -> impl Iterator<Item = &[T]> {
    let largest = 1 << (MAX_BOUND / columns).ilog2();
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let n = largest.min(1 << rows.len().ilog2());
        let (chunk, rest) = rows.split_at(n);
        rows = rest;
        Some(chunk)
    })
}

/// Appends a multi-row INSERT to `query`: `head` (`INSERT INTO t (columns) `), then
/// each chunk of `rows` (`value_chunks`) as a statement of its own, `tail` after
/// each. Many statements go to SQLite's thread as one query, in one round trip; the
/// result sums their changes and has the last row's id.
pub(super) fn push_multi_row_insert<'a, T>(
    query: &mut QueryBuilder<'a, Sqlite>,
    head: &str,
    rows: &'a [T],
    columns: usize,
    tail: &str,
    mut push_row: impl FnMut(Separated<'_, 'a, Sqlite, &'static str>, &'a T),
) {
    for chunk in value_chunks(rows, columns) {
        query.push(head);
        query.push_values(chunk, &mut push_row);
        query.push(tail);
        query.push(";\n");
    }
}

/// Ids of the rows that the INSERTs of a query added, if any: without
/// AUTOINCREMENT each new row takes the largest id plus one, so they are
/// consecutive up to the last. (RETURNING would hand each id over on its own.)
pub(super) fn inserted_ids(done: &SqliteQueryResult, inserted: u64) -> Option<RangeInclusive<i64>> {
    let last = done.last_insert_rowid();
    (inserted > 0).then(|| last - inserted as i64 + 1..=last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_chunks_are_powers_of_two_within_the_parameter_limit() {
        let rows: Vec<u32> = (0..5_000).collect();
        let lengths: Vec<usize> = value_chunks(&rows, 15).map(<[u32]>::len).collect();
        // 15 columns: at most 2,048 rows (30,720 parameters) a statement.
        assert_eq!(lengths, [2048, 2048, 512, 256, 128, 8]);
        let again: Vec<u32> = value_chunks(&rows, 15).flatten().copied().collect();
        assert_eq!(again, rows);
        assert_eq!(value_chunks(&rows[..1], 6).count(), 1);
        assert_eq!(value_chunks(&rows[..0], 6).count(), 0);
    }
}
