//! Retention: finished runs and delivered messages older than a cutoff are
//! deleted, a small batch per transaction, so the database does not grow
//! without bound and the writer is never held for long.
//!
//! What is never deleted, whatever its age:
//! - a run that is not finished (ready, waiting), nor the messages it queued
//!   (a step retried after a crash relies on their idempotency keys);
//! - a message that was not delivered (pending, failed, dead, unknown,
//!   suppressed, dropped: an operator may still act on it), nor its run;
//! - the runs of segment workflows: they are the record that a contact was
//!   enrolled, and a segment enrols each contact at most once;
//! - events (a run's trigger, and what exit conditions look for), bounces (the
//!   suppression rules count them: a pruned message's bounces are detached
//!   from it) and replies (the report's response rate counts them: detached too).

use serde::Serialize;

use super::{Conn, Store};

/// Runs (or messages) deleted per transaction.
const BATCH: i64 = 500;

/// A message that may go: delivered before the cutoff (?1), queued by no run or
/// by a finished one. `o` is the outbox row.
const MESSAGE_PRUNABLE: &str = "o.status = 'sent' AND o.sent_at < ?1 AND o.created_at < ?1
     AND (o.run_id IS NULL OR EXISTS (SELECT 1 FROM runs r WHERE r.id = o.run_id
                                      AND r.status IN ('done', 'cancelled', 'failed')))";

/// A run that may go: finished before the cutoff (?1), not a segment's
/// enrolment, with no message that must stay. `r` is the run.
const RUN_PRUNABLE: &str = "r.started_at < ?1 AND r.updated_at < ?1 AND r.status IN ('done', 'cancelled', 'failed')
     AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = r.event_id AND e.kind = 'segment_entered')
     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.run_id = r.id
                     AND NOT (o.status = 'sent' AND o.sent_at < ?1 AND o.created_at < ?1))";

/// What a retention pass deleted (or, dry, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Pruned {
    pub(crate) runs: u64,
    pub(crate) run_steps: u64,
    pub(crate) timers: u64,
    pub(crate) messages: u64,
    pub(crate) deliveries: u64,
    /// Opens and clicks of the messages deleted.
    pub(crate) engagement: u64,
}

/// Deletes what `cutoff` (unix ms) leaves behind, a batch per transaction,
/// giving the turn to other writers between batches.
pub(crate) async fn prune(store: &Store, cutoff: i64) -> anyhow::Result<Pruned> {
    let mut pruned = Pruned::default();
    // Messages first: a run goes only once no message of its must stay, and a
    // run's sent messages are among these.
    in_batches(store, cutoff, Prunable::Messages, &mut pruned).await?;
    in_batches(store, cutoff, Prunable::Runs, &mut pruned).await?;
    Ok(pruned)
}

/// The two kinds of rows the pass deletes, each with what depends on it.
#[derive(Clone, Copy)]
enum Prunable {
    Messages,
    Runs,
}

/// Walks the rows of `what` before `cutoff` by their key (time, id), a batch
/// per transaction, and deletes each batch.
async fn in_batches(store: &Store, cutoff: i64, what: Prunable, pruned: &mut Pruned) -> anyhow::Result<()> {
    let select = match what {
        Prunable::Messages => format!(
            "SELECT o.created_at, o.id FROM outbox o
             WHERE o.created_at < ?1 AND (o.created_at, o.id) > (?2, ?3) AND {MESSAGE_PRUNABLE}
             ORDER BY o.created_at, o.id LIMIT ?4"
        ),
        Prunable::Runs => format!(
            "SELECT r.started_at, r.id FROM runs r
             WHERE r.started_at < ?1 AND (r.started_at, r.id) > (?2, ?3) AND {RUN_PRUNABLE}
             ORDER BY r.started_at, r.id LIMIT ?4"
        ),
    };
    let mut after = (i64::MIN, 0);
    loop {
        let mut tx = store.write_after_others().await?;
        let rows: Vec<(i64, i64)> = sqlx::query_as(&select)
            .bind(cutoff)
            .bind(after.0)
            .bind(after.1)
            .bind(BATCH)
            .fetch_all(&mut **tx)
            .await?;
        let Some(&last) = rows.last() else { break };
        after = last;
        let ids: Vec<i64> = rows.into_iter().map(|(_, id)| id).collect();
        match what {
            Prunable::Messages => delete_messages(&mut tx, &ids, pruned).await?,
            Prunable::Runs => delete_runs(&mut tx, &ids, pruned).await?,
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Deletes messages with their attempts and opens and clicks; their bounces
/// and replies stay, detached.
async fn delete_messages(conn: &mut Conn, ids: &[i64], pruned: &mut Pruned) -> anyhow::Result<()> {
    let ids = serde_json::to_string(ids)?;
    let exec = async |conn: &mut Conn, sql: &str| -> anyhow::Result<u64> {
        Ok(sqlx::query(sql).bind(&ids).execute(&mut *conn).await?.rows_affected())
    };
    pruned.deliveries += exec(
        conn,
        "DELETE FROM deliveries WHERE outbox_id IN (SELECT value FROM json_each(?))",
    )
    .await?;
    pruned.engagement += exec(
        conn,
        "DELETE FROM engagement WHERE outbox_id IN (SELECT value FROM json_each(?)) AND kind IN ('opened', 'clicked')",
    )
    .await?;
    exec(
        conn,
        "UPDATE engagement SET outbox_id = NULL WHERE outbox_id IN (SELECT value FROM json_each(?))",
    )
    .await?;
    exec(
        conn,
        "UPDATE bounces SET outbox_id = NULL WHERE outbox_id IN (SELECT value FROM json_each(?))",
    )
    .await?;
    pruned.messages += exec(conn, "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))").await?;
    Ok(())
}

/// Deletes runs with their steps, timers and (sent, old: `RUN_PRUNABLE`) messages.
async fn delete_runs(conn: &mut Conn, ids: &[i64], pruned: &mut Pruned) -> anyhow::Result<()> {
    let json = serde_json::to_string(ids)?;
    let messages: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM outbox WHERE run_id IN (SELECT value FROM json_each(?))")
            .bind(&json)
            .fetch_all(&mut *conn)
            .await?;
    if !messages.is_empty() {
        delete_messages(conn, &messages, pruned).await?;
    }
    let exec = async |conn: &mut Conn, sql: &str| -> anyhow::Result<u64> {
        Ok(sqlx::query(sql).bind(&json).execute(&mut *conn).await?.rows_affected())
    };
    pruned.run_steps += exec(
        conn,
        "DELETE FROM run_steps WHERE run_id IN (SELECT value FROM json_each(?))",
    )
    .await?;
    pruned.timers += exec(
        conn,
        "DELETE FROM timers WHERE run_id IN (SELECT value FROM json_each(?))",
    )
    .await?;
    // A run's holds are its history for `nudge explain`: they go with it.
    exec(
        conn,
        "DELETE FROM run_holds WHERE run_id IN (SELECT value FROM json_each(?))",
    )
    .await?;
    pruned.runs += exec(conn, "DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))").await?;
    Ok(())
}

/// What `prune` would delete, counted in one read, deleting nothing.
pub(crate) async fn prune_dry(conn: &mut Conn, cutoff: i64) -> anyhow::Result<Pruned> {
    let (runs, run_steps, timers): (i64, i64, i64) = sqlx::query_as(&format!(
        "WITH gone AS (SELECT r.id FROM runs r WHERE {RUN_PRUNABLE})
         SELECT (SELECT COUNT(*) FROM gone),
                (SELECT COUNT(*) FROM run_steps WHERE run_id IN gone),
                (SELECT COUNT(*) FROM timers WHERE run_id IN gone)"
    ))
    .bind(cutoff)
    .fetch_one(&mut *conn)
    .await?;
    // Every message of a run that goes is one of these (RUN_PRUNABLE): counted once.
    let (messages, deliveries, engagement): (i64, i64, i64) = sqlx::query_as(&format!(
        "WITH gone AS (SELECT o.id FROM outbox o WHERE {MESSAGE_PRUNABLE})
         SELECT (SELECT COUNT(*) FROM gone),
                (SELECT COUNT(*) FROM deliveries WHERE outbox_id IN gone),
                (SELECT COUNT(*) FROM engagement WHERE outbox_id IN gone AND kind IN ('opened', 'clicked'))"
    ))
    .bind(cutoff)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Pruned {
        runs: runs as u64,
        run_steps: run_steps as u64,
        timers: timers as u64,
        messages: messages as u64,
        deliveries: deliveries as u64,
        engagement: engagement as u64,
    })
}

/// When the retention pass last ran, if ever.
pub(crate) async fn last_retention_pass(conn: &mut Conn) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT ran_at FROM retention_pass WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?)
}

pub(crate) async fn record_retention_pass(conn: &mut Conn, now: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO retention_pass (id, ran_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET ran_at = excluded.ran_at",
    )
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{TestStore, contact, run};
    use crate::store::{EndedRun, RunStatus, end_runs};

    async fn exec(conn: &mut Conn, sql: &str) {
        sqlx::query(sql).execute(&mut *conn).await.unwrap();
    }

    async fn count(conn: &mut Conn, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&mut *conn).await.unwrap()
    }

    /// A message of `run` (NULL: none) with `status`, queued and settled at 10.
    async fn message(conn: &mut Conn, id: i64, run: &str, status: &str) {
        exec(
            conn,
            &format!(
                "INSERT INTO outbox (id, idempotency_key, message_id, run_id, contact_id, channel, recipient, message,
                                     status, next_attempt_at, created_at, sent_at)
                 VALUES ({id}, 'k{id}', '<k{id}@x>', {run}, 1, 'email', 'a@x.test', '{{}}', '{status}', 10, 10, 10)"
            ),
        )
        .await;
    }

    /// Only the finished run with nothing left that must stay goes; old sent
    /// messages go unless their run still runs; bounces and replies stay, detached.
    #[tokio::test]
    async fn prunes_only_what_nothing_still_needs() {
        let db = TestStore::open().await;
        let mut conn = db.conn().await;
        let c = contact(&mut conn, "a@x.test").await;
        assert_eq!(c, 1);
        let done = run(&mut conn, "done", c).await;
        let failed_mail = run(&mut conn, "failed-mail", c).await;
        let waiting = run(&mut conn, "waiting", c).await;
        let segment = run(&mut conn, "segment", c).await;
        let recent = run(&mut conn, "recent", c).await;
        let ended = |id| EndedRun {
            id,
            status: RunStatus::Done,
            reason: crate::model::Reason::Completed,
            outcome: "all steps done".to_string(),
        };
        end_runs(&mut conn, &[ended(done), ended(failed_mail), ended(segment)], 10)
            .await
            .unwrap();
        end_runs(&mut conn, &[ended(recent)], 200).await.unwrap();
        exec(
            &mut conn,
            &format!("UPDATE runs SET status = 'waiting' WHERE id = {waiting}"),
        )
        .await;
        exec(
            &mut conn,
            &format!(
                "UPDATE events SET kind = 'segment_entered' WHERE id = (SELECT event_id FROM runs WHERE id = {segment})"
            ),
        )
        .await;
        // The pruned run was held once on its way (a journal row of `nudge explain`).
        exec(
            &mut conn,
            &format!("INSERT INTO run_holds (run_id, step, at, until, reason) VALUES ({done}, 0, 5, 6, 'send_window')"),
        )
        .await;
        message(&mut conn, 1, &done.to_string(), "sent").await;
        message(&mut conn, 2, &failed_mail.to_string(), "failed").await;
        message(&mut conn, 3, &waiting.to_string(), "sent").await;
        message(&mut conn, 4, &segment.to_string(), "sent").await;
        message(&mut conn, 5, "NULL", "sent").await;
        message(&mut conn, 6, "NULL", "unknown").await;
        exec(
            &mut conn,
            &format!(
                "INSERT INTO deliveries (outbox_id, attempt, started_at, finished_at, outcome) VALUES (1, 1, 10, 10, 'sent');
                 INSERT INTO engagement (outbox_id, contact_id, kind, at) VALUES (1, 1, 'opened', 11), (1, 1, 'replied', 12);
                 INSERT INTO bounces (address, channel, kind, outbox_id, at) VALUES ('a@x.test', 'email', 'soft', 1, 11);
                 INSERT INTO run_steps (run_id, step, kind, detail, finished_at) VALUES ({done}, 0, 'send', 'queued', 10);
                 INSERT INTO timers (due_at, kind, run_id, fired_at) VALUES (5, 'resume_run', {done}, 5),
                                                                            (500, 'resume_run', {waiting}, NULL);"
            ),
        )
        .await;

        let dry = prune_dry(&mut conn, 100).await.unwrap();
        let expected = Pruned {
            runs: 1,
            run_steps: 1,
            timers: 1,
            messages: 3,
            deliveries: 1,
            engagement: 1,
        };
        assert_eq!(dry, expected);
        assert_eq!(
            count(&mut conn, "SELECT COUNT(*) FROM runs").await,
            5,
            "a dry run deletes nothing"
        );
        drop(conn);
        assert_eq!(prune(&db.store, 100).await.unwrap(), expected);

        let mut conn = db.conn().await;
        let runs: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(runs, [failed_mail, waiting, segment, recent]);
        let messages: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(messages, [2, 3, 6]);
        let kept: Vec<(String, Option<i64>)> = sqlx::query_as("SELECT kind, outbox_id FROM engagement")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(kept, [("replied".to_string(), None)]);
        assert_eq!(
            count(&mut conn, "SELECT COUNT(*) FROM bounces WHERE outbox_id IS NULL").await,
            1
        );
        assert_eq!(count(&mut conn, "SELECT COUNT(*) FROM timers").await, 1);
        let dangling: Vec<(String, i64)> = sqlx::query_as("SELECT \"table\", rowid FROM pragma_foreign_key_check")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert!(dangling.is_empty(), "{dangling:?}");
        drop(conn);
        assert_eq!(prune(&db.store, 100).await.unwrap(), Pruned::default());
    }
}
