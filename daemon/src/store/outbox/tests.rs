use super::*;
use crate::store::testing::{TestStore, contact, run};
use crate::store::{ConsentScope, FinishedStep, RunStatus, Suppress, SuppressionReason, load_run, suppress};

fn message(to: &str) -> OutboundMessage {
    OutboundMessage {
        to_name: "Ann".into(),
        to_address: to.into(),
        subject: "Hello".into(),
        text: Some("body".into()),
        html: None,
        extra: vec![("template".into(), "T1".into())],
        unsubscribe: None,
    }
}

fn new_row(key: &str, run_id: Option<i64>, contact_id: Option<i64>, to: &str) -> NewOutboxRow {
    NewOutboxRow {
        idempotency_key: key.into(),
        message_id: format!("<{key}@x.test>"),
        run_id,
        workflow: None,
        contact_id,
        channel: "email".into(),
        category: Category::Marketing,
        message: message(to),
        variant: Some("b".into()),
        tracked: true,
        traceparent: None,
    }
}

fn step(run_id: i64, status: RunStatus) -> FinishedStep {
    FinishedStep {
        run_id,
        step: 0,
        kind: "send",
        detail: format!("queued for run {run_id}"),
        status,
        reason: None,
    }
}

#[tokio::test]
async fn queued_rows_and_finished_steps_land_field_by_field() {
    let db = TestStore::open().await;
    let mut conn = db.conn().await;
    let (a, b) = (
        contact(&mut conn, "a@x.test").await,
        contact(&mut conn, "b@x.test").await,
    );
    let (r1, r2) = (run(&mut conn, "w1", b).await, run(&mut conn, "w2", a).await);
    let what = Suppress {
        address: "A@x.test",
        channel: "*",
        reason: SuppressionReason::Manual,
        scope: ConsentScope::All,
        detail: "",
    };
    suppress(&mut conn, &what, 1).await.unwrap();
    let rows = vec![
        new_row("k1", Some(r1), Some(b), "b@x.test"),
        new_row("k2", None, Some(a), "A@x.test"),
    ];
    let steps = [step(r1, RunStatus::Waiting), step(r2, RunStatus::Done)];
    let queued = queue_and_finish(&mut conn, rows, &steps, 77).await.unwrap();

    let got: Vec<(i64, Option<i64>, String, Option<String>)> = queued
        .iter()
        .map(|r| (r.id, r.run_id, r.idempotency_key.clone(), r.suppressed.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some(r1), "k1".into(), None),
            (2, None, "k2".into(), Some("manual".into()))
        ]
    );
    type Row = (String, String, Option<i64>, Option<i64>, String, String, String);
    let stored: Row = sqlx::query_as(
        "SELECT idempotency_key, message_id, run_id, contact_id, channel, recipient, message FROM outbox WHERE id = 1",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let message_json = serde_json::to_string(&message("b@x.test")).unwrap();
    assert_eq!(
        stored,
        (
            "k1".into(),
            "<k1@x.test>".into(),
            Some(r1),
            Some(b),
            "email".into(),
            "b@x.test".into(),
            message_json
        )
    );
    type Rest = (String, i64, i64, i64, Option<String>, OutboxStatus, bool);
    let rest: Rest = sqlx::query_as(
        "SELECT category, priority, next_attempt_at, created_at, variant, status, tracked FROM outbox WHERE id = 1",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let priority = Category::Marketing.priority();
    assert_eq!(
        rest,
        (
            "marketing".into(),
            priority,
            77,
            77,
            Some("b".into()),
            OutboxStatus::Pending,
            true
        )
    );
    let recorded: Vec<(i64, i64, String, String, i64)> =
        sqlx::query_as("SELECT run_id, step, kind, detail, finished_at FROM run_steps ORDER BY run_id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        vec![
            (r1, 0, "send".into(), format!("queued for run {r1}"), 77),
            (r2, 0, "send".into(), format!("queued for run {r2}"), 77)
        ]
    );
    let (first, second) = (
        load_run(&mut conn, r1).await.unwrap().unwrap(),
        load_run(&mut conn, r2).await.unwrap().unwrap(),
    );
    assert_eq!((first.status, first.next_step), (RunStatus::Waiting, 1));
    assert_eq!((second.status, second.next_step), (RunStatus::Done, 1));
    let outcome: Option<String> = sqlx::query_scalar("SELECT outcome FROM runs WHERE id = ?")
        .bind(r2)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(outcome.as_deref(), Some("all steps done"));
}

#[tokio::test]
async fn a_key_queued_already_is_left_out_and_a_moved_run_fails_the_batch() {
    let db = TestStore::open().await;
    let mut conn = db.conn().await;
    let c = contact(&mut conn, "a@x.test").await;
    let r = run(&mut conn, "w", c).await;
    let first = queue_and_finish(&mut conn, vec![new_row("k", Some(r), Some(c), "a@x.test")], &[], 1).await;
    assert_eq!(first.unwrap().len(), 1);
    let again = queue_and_finish(&mut conn, vec![new_row("k", Some(r), Some(c), "a@x.test")], &[], 2).await;
    assert!(again.unwrap().is_empty());
    queue_and_finish(&mut conn, Vec::new(), &[step(r, RunStatus::Waiting)], 3)
        .await
        .unwrap();
    // The run waits at step 1 now: a finish of that step is refused.
    let next = FinishedStep {
        step: 1,
        ..step(r, RunStatus::Ready)
    };
    let e = queue_and_finish(&mut conn, Vec::new(), &[next], 4).await.unwrap_err();
    assert!(e.to_string().contains("no longer at the step"), "{e}");
}

#[tokio::test]
async fn a_claim_reads_due_rows_most_urgent_first_leaving_out_what_is_in_flight() {
    let db = TestStore::open().await;
    let mut conn = db.conn().await;
    let c = contact(&mut conn, "a@x.test").await;
    let mut sla = new_row("sla", None, Some(c), "a@x.test");
    sla.category = Category::Sla;
    let mut sms = new_row("sms", None, Some(c), "+100");
    sms.channel = "sms".into();
    let rows = vec![new_row("m", None, Some(c), "a@x.test"), sla, sms];
    queue_and_finish(&mut conn, rows, &[], 10).await.unwrap();
    let keys = |rows: Vec<OutboxRow>| rows.into_iter().map(|r| r.idempotency_key).collect::<Vec<_>>();
    assert!(due_outbox(&mut conn, 9, 10, &[], &[]).await.unwrap().is_empty());
    assert_eq!(
        keys(due_outbox(&mut conn, 10, 10, &[], &[]).await.unwrap()),
        ["sla", "m", "sms"]
    );
    assert_eq!(
        keys(due_outbox(&mut conn, 10, 10, &[2], &["sms".into()]).await.unwrap()),
        ["m"]
    );
    assert_eq!(next_outbox_due(&mut conn).await.unwrap(), Some(10));
}

#[tokio::test]
async fn recorded_attempts_land_field_by_field_and_move_their_rows() {
    let db = TestStore::open().await;
    let mut conn = db.conn().await;
    let c = contact(&mut conn, "a@x.test").await;
    let rows = vec![
        new_row("k1", None, Some(c), "a@x.test"),
        new_row("k2", None, Some(c), "a@x.test"),
        new_row("k3", None, Some(c), "a@x.test"),
    ];
    let mut claimed = queue_and_finish(&mut conn, rows, &[], 10).await.unwrap();
    claimed[0].parts_done = 2;
    let (retry, sent, suppressed) = (
        Outcome::Transient("451 later".into()),
        Outcome::Sent,
        Outcome::Suppressed("recipient suppressed: manual".into()),
    );
    let attempts = [
        AttemptRecord {
            row: &claimed[0],
            started_at: 20,
            outcome: &retry,
            next: Next::RetryAt(5_000),
        },
        AttemptRecord {
            row: &claimed[1],
            started_at: 21,
            outcome: &sent,
            next: Next::Sent,
        },
        AttemptRecord {
            row: &claimed[2],
            started_at: 22,
            outcome: &suppressed,
            next: Next::Suppressed,
        },
    ];
    record_attempts(&mut conn, &attempts, 30).await.unwrap();
    let deliveries: Vec<(i64, i64, i64, i64, AttemptOutcome, String)> = sqlx::query_as(
        "SELECT outbox_id, attempt, started_at, finished_at, outcome, detail FROM deliveries ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        deliveries,
        vec![
            (1, 1, 20, 30, AttemptOutcome::Transient, "451 later".into()),
            (2, 1, 21, 30, AttemptOutcome::Sent, String::new()),
            (
                3,
                0,
                22,
                30,
                AttemptOutcome::Suppressed,
                "recipient suppressed: manual".into()
            ),
        ]
    );
    type Row = (OutboxStatus, i64, i64, Option<String>, i64, Option<i64>);
    let outbox: Vec<Row> = sqlx::query_as(
        "SELECT status, attempts, next_attempt_at, last_error, parts_done, sent_at FROM outbox ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        outbox,
        vec![
            (OutboxStatus::Pending, 1, 5_000, Some("451 later".into()), 2, None),
            (OutboxStatus::Sent, 1, 30, None, 0, Some(30)),
            (
                OutboxStatus::Suppressed,
                0,
                30,
                Some("recipient suppressed: manual".into()),
                0,
                None
            ),
        ]
    );
}

#[tokio::test]
async fn an_operator_retries_and_drops_only_rows_that_were_not_sent() {
    let db = TestStore::open().await;
    let mut conn = db.conn().await;
    let c = contact(&mut conn, "a@x.test").await;
    let rows = vec![
        new_row("k1", None, Some(c), "a@x.test"),
        new_row("k2", None, Some(c), "a@x.test"),
    ];
    let claimed = queue_and_finish(&mut conn, rows, &[], 10).await.unwrap();
    let (dead, sent) = (Outcome::Permanent("550".into()), Outcome::Sent);
    let attempts = [
        AttemptRecord {
            row: &claimed[0],
            started_at: 20,
            outcome: &dead,
            next: Next::Dead,
        },
        AttemptRecord {
            row: &claimed[1],
            started_at: 20,
            outcome: &sent,
            next: Next::Sent,
        },
    ];
    record_attempts(&mut conn, &attempts, 30).await.unwrap();
    assert_eq!(
        outbox_ids_with_status(&mut conn, OutboxStatus::Dead).await.unwrap(),
        [1]
    );
    assert_eq!(retry_outbox(&mut conn, &[1, 2], 40).await.unwrap(), 1);
    let listed = list_outbox(&mut conn, &[OutboxStatus::Pending], 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| (r.id, r.status, r.attempts)).collect::<Vec<_>>(),
        [(1, OutboxStatus::Pending, 0)]
    );
    assert_eq!(drop_outbox(&mut conn, &[1, 2], 50).await.unwrap(), 1);
    let all = list_outbox(&mut conn, &[], 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.status).collect::<Vec<_>>(),
        [OutboxStatus::Sent, OutboxStatus::Dropped]
    );
}

#[tokio::test]
async fn every_status_and_outcome_is_one_the_database_accepts() {
    let db = TestStore::open().await;
    let mut conn = db.conn().await;
    let c = contact(&mut conn, "a@x.test").await;
    let claimed = queue_and_finish(&mut conn, vec![new_row("k", None, Some(c), "a@x.test")], &[], 1)
        .await
        .unwrap();
    for &status in OutboxStatus::ALL {
        sqlx::query("UPDATE outbox SET status = ?")
            .bind(status)
            .execute(&mut *conn)
            .await
            .unwrap();
        assert_eq!(list_outbox(&mut conn, &[status], 1).await.unwrap()[0].status, status);
    }
    for &outcome in AttemptOutcome::ALL {
        sqlx::query(
            "INSERT INTO deliveries (outbox_id, attempt, started_at, finished_at, outcome) VALUES (?, 1, 1, 1, ?)",
        )
        .bind(claimed[0].id)
        .bind(outcome)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let stored: Vec<AttemptOutcome> = sqlx::query_scalar("SELECT outcome FROM deliveries ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(stored, AttemptOutcome::ALL);
}

/// A marketing-only withdrawal withholds marketing and nothing else; one of
/// all mail withholds every customer-facing category, but not the owner's
/// internal mail; a bounce withholds everything.
#[tokio::test]
async fn a_suppression_withholds_the_categories_its_scope_covers() {
    let db = TestStore::open().await;
    let mut conn = db.conn().await;
    let suppressed = [
        ("m@x.test", SuppressionReason::Unsubscribed, ConsentScope::Marketing),
        ("a@x.test", SuppressionReason::Unsubscribed, ConsentScope::All),
        ("b@x.test", SuppressionReason::HardBounce, ConsentScope::All),
    ];
    for (address, reason, scope) in suppressed {
        let what = Suppress {
            address,
            channel: "*",
            reason,
            scope,
            detail: "",
        };
        suppress(&mut conn, &what, 1).await.unwrap();
    }
    let mut rows = Vec::new();
    for (address, ..) in suppressed {
        for category in [
            Category::Marketing,
            Category::Transactional,
            Category::Sla,
            Category::Internal,
        ] {
            let mut row = new_row(&format!("{address}-{}", category.as_str()), None, None, address);
            row.category = category;
            rows.push(row);
        }
    }
    let queued = queue_and_finish(&mut conn, rows, &[], 5).await.unwrap();
    let at_queue: Vec<(String, Option<String>)> = queued
        .iter()
        .map(|r| (r.idempotency_key.clone(), r.suppressed.clone()))
        .collect();
    let claimed: Vec<(String, Option<String>)> = due_outbox(&mut conn, 5, 100, &[], &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.idempotency_key.clone(), r.suppressed.clone()))
        .collect();
    let mut claimed_sorted = claimed.clone();
    claimed_sorted.sort();
    let mut expected: Vec<(String, Option<String>)> = [
        ("m@x.test-marketing", Some("unsubscribed")),
        ("m@x.test-transactional", None),
        ("m@x.test-sla", None),
        ("m@x.test-internal", None),
        ("a@x.test-marketing", Some("unsubscribed")),
        ("a@x.test-transactional", Some("unsubscribed")),
        ("a@x.test-sla", Some("unsubscribed")),
        ("a@x.test-internal", None),
        ("b@x.test-marketing", Some("hard_bounce")),
        ("b@x.test-transactional", Some("hard_bounce")),
        ("b@x.test-sla", Some("hard_bounce")),
        ("b@x.test-internal", Some("hard_bounce")),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_string(), s.map(String::from)))
    .collect();
    expected.sort();
    assert_eq!(claimed_sorted, expected, "as claimed");
    let mut at_queue = at_queue;
    at_queue.sort();
    assert_eq!(at_queue, expected, "as queued");
}

#[tokio::test]
async fn a_held_row_is_moved_without_an_attempt_and_a_throttled_one_is_counted_apart() {
    let db = TestStore::open().await;
    let mut conn = db.conn().await;
    let c = contact(&mut conn, "a@x.test").await;
    let rows = vec![
        new_row("k1", None, Some(c), "a@x.test"),
        new_row("k2", None, Some(c), "a@x.test"),
    ];
    let claimed = queue_and_finish(&mut conn, rows, &[], 10).await.unwrap();
    assert_eq!((claimed[0].category.as_str(), claimed[0].throttled), ("marketing", 0));
    let held = Outcome::Held {
        reason: Reason::WarmupCap,
        until: 9_000,
    };
    let throttled = Outcome::Throttled {
        reply: "transient error (421): 4.7.28 slow down".into(),
        retry_at: 7_000,
    };
    let attempts = [
        AttemptRecord {
            row: &claimed[0],
            started_at: 20,
            outcome: &held,
            next: Next::Held(9_000, Reason::WarmupCap),
        },
        AttemptRecord {
            row: &claimed[1],
            started_at: 21,
            outcome: &throttled,
            next: Next::RetryAt(7_000),
        },
    ];
    record_attempts(&mut conn, &attempts, 30).await.unwrap();
    let deliveries: Vec<(i64, i64, AttemptOutcome)> =
        sqlx::query_as("SELECT outbox_id, attempt, outcome FROM deliveries ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        deliveries,
        vec![(2, 1, AttemptOutcome::Transient)],
        "no attempt for the held row"
    );
    type Row = (OutboxStatus, i64, i64, i64, Option<String>);
    let outbox: Vec<Row> =
        sqlx::query_as("SELECT status, attempts, throttled, next_attempt_at, held_reason FROM outbox ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        outbox,
        vec![
            (OutboxStatus::Pending, 0, 0, 9_000, Some("warmup_cap".into())),
            (OutboxStatus::Pending, 1, 1, 7_000, None),
        ]
    );
    // Claimed again, the row carries what was counted.
    let due = due_outbox(&mut conn, 10_000, 10, &[], &[]).await.unwrap();
    assert_eq!(
        due.iter().map(|r| (r.id, r.throttled)).collect::<Vec<_>>(),
        vec![(2, 1), (1, 0)]
    );
    assert_eq!(marketing_email_sent_since(&mut conn, 0).await.unwrap(), 0);
}
