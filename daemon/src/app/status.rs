//! What `nudge status` and the console's overview show: runs, timers, the
//! outbox and the holds of waiting runs, all from one snapshot of the database.

use serde::Serialize;
use serde_json::json;

use crate::model::Reason;
use crate::store::{self, Store};

/// The counts `status` shows, all from one snapshot of the database.
#[derive(Serialize)]
pub(crate) struct Counts {
    /// (owner, overdue contacts, the oldest due time).
    pub(crate) overdue: Vec<(String, i64, i64)>,
    pub(crate) runs: Vec<(String, i64)>,
    pub(crate) timers: i64,
    pub(crate) next_timer: Option<i64>,
    pub(crate) timers_due: i64,
    pub(crate) outbox: Vec<(String, i64)>,
    pub(crate) outbox_due: i64,
    /// Pending email held untried, by reason code (domain_paced, warmup_cap, ...).
    pub(crate) outbox_held: Vec<(String, i64)>,
    pub(crate) unprocessed: i64,
    pub(crate) segments_running: i64,
    /// Waiting runs held at a step, by reason code, commonest first.
    pub(crate) waiting: Vec<Held>,
    pub(crate) classified_on: Option<String>,
}

impl Counts {
    /// One read transaction: every count comes from the same snapshot. Read one by one,
    /// a run could start after the runs were counted and its event after the events were,
    /// and the daemon would look idle in the middle of its work.
    pub(crate) async fn read(store: &Store, now: i64) -> anyhow::Result<Counts> {
        let mut snapshot = store.pool.begin().await?;
        let overdue = sqlx::query_as(
            "SELECT owner, COUNT(*), MIN(next_follow_up_at) FROM contacts
         WHERE next_follow_up_at IS NOT NULL AND next_follow_up_at <= ? GROUP BY owner ORDER BY COUNT(*) DESC, owner",
        )
        .bind(now)
        .fetch_all(&mut *snapshot)
        .await?;
        let totals = store::totals(&mut snapshot).await?;
        let runs = totals.runs.iter().map(|(s, n)| (s.as_str().to_string(), *n)).collect();
        let outbox = totals
            .outbox
            .iter()
            .map(|(s, n)| (s.as_str().to_string(), *n))
            .collect();
        let (timers, next_timer) = sqlx::query_as("SELECT COUNT(*), MIN(due_at) FROM timers WHERE fired_at IS NULL")
            .fetch_one(&mut *snapshot)
            .await?;
        let unprocessed = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE processed_at IS NULL")
            .fetch_one(&mut *snapshot)
            .await?;
        let timers_due = sqlx::query_scalar("SELECT COUNT(*) FROM timers WHERE fired_at IS NULL AND due_at <= ?")
            .bind(now)
            .fetch_one(&mut *snapshot)
            .await?;
        let segments_running = sqlx::query_scalar("SELECT COUNT(*) FROM enrolments WHERE status = 'running'")
            .fetch_one(&mut *snapshot)
            .await?;
        let waiting = Held::read(&mut snapshot).await?;
        let classified_on = store::last_classification_pass(&mut snapshot).await?;
        let outbox_due =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?")
                .bind(now)
                .fetch_one(&mut *snapshot)
                .await?;
        let outbox_held = sqlx::query_as(
            "SELECT held_reason, COUNT(*) FROM outbox WHERE status = 'pending' AND held_reason IS NOT NULL
             GROUP BY held_reason ORDER BY held_reason",
        )
        .fetch_all(&mut *snapshot)
        .await?;
        snapshot.commit().await?;
        Ok(Counts {
            overdue,
            runs,
            timers,
            next_timer,
            timers_due,
            outbox,
            outbox_due,
            outbox_held,
            unprocessed,
            segments_running,
            waiting,
            classified_on,
        })
    }

    pub(crate) fn to_json(&self, now: i64, writable: &Result<(), String>) -> serde_json::Value {
        let counts = |rows: &[(String, i64)]| {
            rows.iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "now": now,
            "overdue_by_owner": self.overdue.iter().map(|(o, n, since)| json!({"owner": o, "overdue": n, "oldest_due_at": since})).collect::<Vec<_>>(),
            "runs": counts(&self.runs),
            "timers": { "pending": self.timers, "next_due_at": self.next_timer, "due": self.timers_due },
            "segments_running": self.segments_running,
            "waiting_reasons": self.waiting.iter().map(Held::to_json).collect::<Vec<_>>(),
            "outbox": counts(&self.outbox),
            "outbox_due": self.outbox_due,
            "outbox_held": counts(&self.outbox_held),
            "events_unprocessed": self.unprocessed,
            "classified_on": self.classified_on,
            "store": match writable {
                Ok(()) => json!({ "writable": true }),
                Err(e) => json!({ "writable": false, "error": e }),
            },
        })
    }
}

/// Runs held at a step for one reason code (None: held before codes were recorded).
#[derive(Serialize)]
pub(crate) struct Held {
    pub(crate) code: Option<String>,
    pub(crate) runs: i64,
    /// The commonest wordings of it (a wording names a time, a window, an error), with their counts.
    pub(crate) details: Vec<(String, i64)>,
}

/// Wordings shown per reason code.
const DETAILS_SHOWN: i64 = 3;

impl Held {
    pub(crate) async fn read(snapshot: &mut store::Conn) -> anyhow::Result<Vec<Held>> {
        let counts: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT reason, COUNT(*) FROM runs WHERE status = 'waiting' AND waiting_reason IS NOT NULL
             GROUP BY reason ORDER BY COUNT(*) DESC, reason",
        )
        .fetch_all(&mut *snapshot)
        .await?;
        let details: Vec<(Option<String>, String, i64)> = sqlx::query_as(
            "SELECT reason, waiting_reason, n FROM (
                 SELECT reason, waiting_reason, COUNT(*) AS n,
                        ROW_NUMBER() OVER (PARTITION BY reason ORDER BY COUNT(*) DESC, waiting_reason) AS k
                 FROM runs WHERE status = 'waiting' AND waiting_reason IS NOT NULL GROUP BY reason, waiting_reason)
             WHERE k <= ? ORDER BY n DESC",
        )
        .bind(DETAILS_SHOWN)
        .fetch_all(&mut *snapshot)
        .await?;
        Ok(counts
            .into_iter()
            .map(|(code, runs)| Held {
                details: (details.iter())
                    .filter(|(c, ..)| *c == code)
                    .map(|(_, detail, n)| (detail.clone(), *n))
                    .collect(),
                code,
                runs,
            })
            .collect())
    }

    pub(crate) fn meaning(&self) -> &'static str {
        self.code.as_deref().and_then(Reason::parse).map_or("", Reason::meaning)
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "reason": self.code,
            "meaning": self.meaning(),
            "runs": self.runs,
            "details": self.details.iter().map(|(d, n)| json!({"detail": d, "runs": n})).collect::<Vec<_>>(),
        })
    }
}
