//! Fixtures for the store's unit tests: a real database file in a temporary
//! folder, opened and migrated by `Store::open`, and the rows most tests
//! stand on (a contact, a run).

use sqlx::Sqlite;
use sqlx::pool::PoolConnection;

use super::{EventKind, NewContact, NewRun, RunStatus, Store, insert_contact, insert_event, start_runs};

/// A store in a folder of its own, removed when this is dropped.
pub(crate) struct TestStore {
    pub(crate) store: Store,
    _dir: tempfile::TempDir,
}

impl TestStore {
    pub(crate) async fn open() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nudge.db")).await.unwrap();
        TestStore { store, _dir: dir }
    }

    pub(crate) async fn conn(&self) -> PoolConnection<Sqlite> {
        self.store.pool.acquire().await.unwrap()
    }
}

/// A contact with a name and an email (at stage `lead`); its id.
pub(crate) async fn contact(conn: &mut super::Conn, email: &str) -> i64 {
    let new = NewContact {
        name: email.split('@').next().unwrap().to_string(),
        email: Some(email.to_string()),
        ..NewContact::default()
    };
    insert_contact(conn, &new, 1).await.unwrap()
}

/// The workflow set the test runs are pinned to.
pub(crate) const SET: &str = "set-hash";

/// A ready run of `workflow` for a contact, started by an event of its own; its id.
pub(crate) async fn run(conn: &mut super::Conn, workflow: &str, contact_id: i64) -> i64 {
    sqlx::query("INSERT OR IGNORE INTO workflow_sets (hash, files, loaded_at) VALUES (?, '[]', 1)")
        .bind(SET)
        .execute(&mut *conn)
        .await
        .unwrap();
    let event = insert_event(conn, EventKind::ContactCreated, contact_id, &serde_json::json!({}), 2)
        .await
        .unwrap();
    let context = serde_json::json!({});
    let new = NewRun {
        workflow,
        set_hash: SET,
        contact_id,
        event_id: event,
        status: RunStatus::Ready,
        context: &context,
        start_stage: "lead",
        priority: 1,
        traceparent: None,
    };
    let started = start_runs(conn, &[new], &[super::TakenEvent::plain(event)], 3)
        .await
        .unwrap();
    started[0].0
}

/// What SQLite's plan for `sql` says it does, one detail a step.
pub(crate) async fn query_plan(conn: &mut super::Conn, sql: &str) -> Vec<String> {
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    plan.into_iter().map(|(.., detail)| detail).collect()
}
