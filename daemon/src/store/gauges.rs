//! What the database holds that `GET /metrics` shows as gauges, counted from
//! partial indexes (each query repeats its index's WHERE, which SQLite needs to
//! use it), on a reader connection, never the writer's turn. None of them is
//! written on the hot path (queue, send, step): see migration 0016.

use super::{Conn, OutboxStatus, RunStatus};

/// Runs not yet ended by state, outbox rows not settled for good by status,
/// and when the oldest pending row was queued.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct QueueCounts {
    pub(crate) runs: Vec<(RunStatus, i64)>,
    pub(crate) outbox: Vec<(OutboxStatus, i64)>,
    pub(crate) oldest_pending_at: Option<i64>,
}

/// The statuses shown, each even at zero.
const UNSETTLED: [OutboxStatus; 4] = [
    OutboxStatus::Pending,
    OutboxStatus::Unknown,
    OutboxStatus::Dead,
    OutboxStatus::Failed,
];
const LIVE: [RunStatus; 2] = [RunStatus::Ready, RunStatus::Waiting];

/// Messages given up or held, from `outbox_unsettled` (0016).
const OUTBOX_BY_STATUS: &str = "SELECT status, COUNT(*) FROM outbox
     WHERE status IN ('unknown', 'dead', 'failed') GROUP BY status";
/// Messages queued, from `outbox_pending`, the index the delivery claim reads.
const OUTBOX_PENDING: &str = "SELECT COUNT(*) FROM outbox WHERE status = 'pending'";
/// Runs by state, from `runs_ready` (the engine's claim) and `runs_waiting` (0016).
const RUNS_BY_STATE: &str = "SELECT 'ready', COUNT(*) FROM runs WHERE status = 'ready'
     UNION ALL SELECT 'waiting', COUNT(*) FROM runs WHERE status = 'waiting'";
/// The oldest queued message: the pending rows are found by `outbox_pending`,
/// their queue time read from the table (as many reads as messages wait). Not
/// by `outbox_created_status`, which SQLite would pick for MIN: it walks every sent
/// message older than the oldest pending one first.
const OLDEST_PENDING: &str = "SELECT MIN(created_at) FROM outbox INDEXED BY outbox_pending WHERE status = 'pending'";

pub(crate) async fn queue_counts(conn: &mut Conn) -> anyhow::Result<QueueCounts> {
    let mut outbox: Vec<(OutboxStatus, i64)> = sqlx::query_as(OUTBOX_BY_STATUS).fetch_all(&mut *conn).await?;
    let pending: i64 = sqlx::query_scalar(OUTBOX_PENDING).fetch_one(&mut *conn).await?;
    outbox.push((OutboxStatus::Pending, pending));
    let runs: Vec<(RunStatus, i64)> = sqlx::query_as(RUNS_BY_STATE).fetch_all(&mut *conn).await?;
    let oldest_pending_at: Option<i64> = sqlx::query_scalar(OLDEST_PENDING).fetch_one(&mut *conn).await?;
    Ok(QueueCounts {
        outbox: UNSETTLED.iter().map(|&s| (s, count_of(&outbox, s))).collect(),
        runs: LIVE.iter().map(|&s| (s, count_of(&runs, s))).collect(),
        oldest_pending_at,
    })
}

/// Every run and every message by state, for `nudge status`; states without
/// any left out.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Totals {
    pub(crate) runs: Vec<(RunStatus, i64)>,
    pub(crate) outbox: Vec<(OutboxStatus, i64)>,
}

/// The table counts: SQLite counts the pages of the smallest index (no row is
/// read), where a GROUP BY status read all of them (seconds at millions).
const RUNS_TOTAL: &str = "SELECT COUNT(*) FROM runs";
const OUTBOX_TOTAL: &str = "SELECT COUNT(*) FROM outbox";
/// Runs ended before their last step, from `runs_ended_early` (0020).
const RUNS_ENDED_EARLY: &str = "SELECT status, COUNT(*) FROM runs
     WHERE status IN ('cancelled', 'failed') GROUP BY status";
/// Messages withheld for good, from `outbox_withheld` (0020).
const OUTBOX_WITHHELD: &str = "SELECT status, COUNT(*) FROM outbox
     WHERE status IN ('suppressed', 'dropped') GROUP BY status";

/// The live states as `queue_counts` reads them, the early ends from their
/// indexes, and the common end (done, sent) as what the table holds besides.
pub(crate) async fn totals(conn: &mut Conn) -> anyhow::Result<Totals> {
    let live = queue_counts(&mut *conn).await?;
    let runs_total: i64 = sqlx::query_scalar(RUNS_TOTAL).fetch_one(&mut *conn).await?;
    let outbox_total: i64 = sqlx::query_scalar(OUTBOX_TOTAL).fetch_one(&mut *conn).await?;
    let mut runs = live.runs;
    runs.extend(
        sqlx::query_as::<_, (RunStatus, i64)>(RUNS_ENDED_EARLY)
            .fetch_all(&mut *conn)
            .await?,
    );
    let mut outbox = live.outbox;
    outbox.extend(
        sqlx::query_as::<_, (OutboxStatus, i64)>(OUTBOX_WITHHELD)
            .fetch_all(&mut *conn)
            .await?,
    );
    runs.push((RunStatus::Done, runs_total - sum(&runs)));
    outbox.push((OutboxStatus::Sent, outbox_total - sum(&outbox)));
    runs.retain(|(_, n)| *n > 0);
    outbox.retain(|(_, n)| *n > 0);
    runs.sort_by_key(|(s, _)| s.as_str());
    outbox.sort_by_key(|(s, _)| s.as_str());
    Ok(Totals { runs, outbox })
}

fn sum<S>(rows: &[(S, i64)]) -> i64 {
    rows.iter().map(|(_, n)| n).sum()
}

/// The count of `status` in `found`, 0 when the query found no row of it.
fn count_of<S: PartialEq>(found: &[(S, i64)], status: S) -> i64 {
    found.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scrape's queries read the partial indexes, not the tables: at a
    /// million rows a table scan would take the scrape from microseconds to a second.
    #[tokio::test]
    async fn the_gauges_are_read_from_indexes() {
        let store = crate::store::testing::TestStore::open().await;
        let mut conn = store.conn().await;
        for sql in [OUTBOX_BY_STATUS, OUTBOX_PENDING, RUNS_BY_STATE] {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            assert!(
                plan.iter().any(|(.., detail)| detail.contains("COVERING INDEX")),
                "{sql}: {plan:?}"
            );
        }
        // The oldest queued message reads the table, but only the pending rows.
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {OLDEST_PENDING}"))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert!(
            plan.iter()
                .any(|(.., detail)| detail.contains("USING INDEX outbox_pending")),
            "{plan:?}"
        );
        let counts = queue_counts(&mut conn).await.unwrap();
        assert_eq!(counts.outbox.len(), 4);
        assert_eq!(counts.runs, vec![(RunStatus::Ready, 0), (RunStatus::Waiting, 0)]);
        assert_eq!(counts.oldest_pending_at, None);
    }

    /// `nudge status` counts every state without reading the tables' rows:
    /// the rare states from their partial indexes, the totals from an index's
    /// page counts. A GROUP BY status over five million messages took seconds.
    #[tokio::test]
    async fn the_totals_are_read_from_indexes() {
        let store = crate::store::testing::TestStore::open().await;
        let mut conn = store.conn().await;
        for sql in [RUNS_TOTAL, OUTBOX_TOTAL, RUNS_ENDED_EARLY, OUTBOX_WITHHELD] {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            assert!(
                plan.iter()
                    .all(|(.., detail)| !detail.starts_with("SCAN") || detail.contains("COVERING INDEX"))
                    && plan.iter().any(|(.., detail)| detail.contains("COVERING INDEX")),
                "{sql}: {plan:?}"
            );
        }
    }

    /// The common end states are what the table holds besides the others.
    #[tokio::test]
    async fn the_totals_count_every_state() {
        let store = crate::store::testing::TestStore::open().await;
        let mut conn = store.conn().await;
        let contact = crate::store::testing::contact(&mut conn, "a@x.test").await;
        for (i, status) in ["done", "done", "failed", "waiting", "done"].iter().enumerate() {
            let run = crate::store::testing::run(&mut conn, &format!("w{i}"), contact).await;
            sqlx::query("UPDATE runs SET status = ? WHERE id = ?")
                .bind(status)
                .bind(run)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        for (i, status) in ["sent", "sent", "pending", "suppressed", "dead", "sent"]
            .iter()
            .enumerate()
        {
            sqlx::query(
                "INSERT INTO outbox (idempotency_key, message_id, contact_id, channel, recipient, message,
                                     status, next_attempt_at, created_at)
                 VALUES (?, ?, ?, 'email', 'a@x.test', '{}', ?, 1, 1)",
            )
            .bind(format!("k{i}"))
            .bind(format!("<k{i}@x>"))
            .bind(contact)
            .bind(status)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        let totals = totals(&mut conn).await.unwrap();
        assert_eq!(
            totals.runs,
            vec![(RunStatus::Done, 3), (RunStatus::Failed, 1), (RunStatus::Waiting, 1)]
        );
        assert_eq!(
            totals.outbox,
            vec![
                (OutboxStatus::Dead, 1),
                (OutboxStatus::Pending, 1),
                (OutboxStatus::Sent, 3),
                (OutboxStatus::Suppressed, 1)
            ]
        );
    }
}
