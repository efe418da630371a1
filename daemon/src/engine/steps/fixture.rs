//! The step tests' fixture: the real `Store` on a SQLite file in a temporary
//! folder, the built-in plugins, and an engine on a virtual clock running a
//! small workflow set parsed from TOML text. A test starts runs with an
//! event, lets the engine work until nothing is due, and reads back what the
//! steps wrote.

use std::sync::{Arc, OnceLock};

use serde_json::json;

use crate::admission::Admission;
use crate::clock::Clock;
use crate::engine::Engine;
use crate::plugins::{PluginHost, PluginSettings, Plugins};
use crate::store::{self, Store};
use crate::unsubscribe::Unsubscribe;
use crate::workflow::WorkflowSet;

/// When the fixture's clock starts: a Friday, 08:00 UTC.
pub(crate) const START: i64 = 1_800_000_000_000;
pub(crate) const DAY: i64 = 86_400_000;

/// The templates every fixture has: `hello` by email.
const TEMPLATES: (&str, &str) = (
    "workflows/templates/t.toml",
    "[hello]\nchannel = \"email\"\nsubject = \"Hi {{ contact.name }}\"\ntext = \"Hello {{ contact.name }}.\"\n",
);

pub(crate) struct Fixture {
    pub(crate) engine: Arc<Engine>,
    pub(crate) store: Store,
    _dir: tempfile::TempDir,
}

/// The built-in plugins, compiled once for all the tests of the process.
fn plugins() -> Plugins {
    static PLUGINS: OnceLock<Plugins> = OnceLock::new();
    PLUGINS
        .get_or_init(|| {
            let settings = PluginSettings {
                dir: std::path::PathBuf::from("/nonexistent/nudge-plugins"),
                cache: None,
                config: Default::default(),
                channels: Default::default(),
            };
            Plugins::new(PluginHost::load(&settings, None).unwrap())
        })
        .clone()
}

impl Fixture {
    /// An engine running `files` (path, TOML text: workflows, and perhaps
    /// `sending.toml` or `cadences.toml`) and the fixture's templates.
    pub(crate) async fn new(mut files: Vec<(String, String)>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let plugins = plugins();
        files.push((TEMPLATES.0.into(), TEMPLATES.1.into()));
        let set = WorkflowSet::compile(files, &plugins.get().channels()).unwrap_or_else(|d| panic!("{d}"));
        let clock = Clock::virtual_at(jiff::Timestamp::from_millisecond(START).unwrap());
        let engine = Engine::new(
            store.clone(),
            clock,
            plugins,
            set,
            "test.example".into(),
            Unsubscribe::new(b"key".to_vec(), "https://test.example".into(), "u@test.example".into()),
            Arc::new(Admission::off()),
        )
        .await
        .unwrap();
        Fixture {
            engine: Arc::new(engine),
            store,
            _dir: dir,
        }
    }

    /// Adds a contact named Li with these fields (as `nudge contact add` takes them).
    pub(crate) async fn contact(&self, fields: serde_json::Value) -> i64 {
        let mut new = json!({ "name": "Li" });
        new.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let new: store::NewContact = serde_json::from_value(new).unwrap();
        let mut conn = self.store.pool.acquire().await.unwrap();
        store::insert_contact(&mut conn, &new, self.engine.clock.now_ms())
            .await
            .unwrap()
    }

    /// Writes an event of `kind` for `contact`, as a source would.
    pub(crate) async fn event(&self, kind: store::EventKind, contact: i64) {
        let mut conn = self.store.pool.acquire().await.unwrap();
        store::insert_event(&mut conn, kind, contact, &json!({}), self.engine.clock.now_ms())
            .await
            .unwrap();
    }

    /// Lets the engine work until nothing more is due.
    pub(crate) async fn settle(&self) {
        let mut ticks = 0;
        while self.engine.tick().await.unwrap() || self.engine.settle().await.unwrap() {
            ticks += 1;
            assert!(ticks < 20, "the engine keeps finding work");
        }
    }

    /// Starts the runs of the events written so far, prepares their steps, runs
    /// `meanwhile` on the database, then applies the steps: a change that lands
    /// between the two halves of a step.
    pub(crate) async fn prepare_then_apply(&self, meanwhile: &str) {
        let engine = &self.engine;
        engine.ingest_events().await.unwrap();
        let mut conn = self.store.pool.acquire().await.unwrap();
        let runs = store::ready_runs(&mut conn, 100, &[]).await.unwrap();
        let ids: Vec<i64> = runs.iter().map(|r| r.contact_id).collect();
        let contacts = store::contacts_with_context(&mut conn, &ids).await.unwrap();
        drop(conn);
        let batch = engine.prepare_all(runs, &contacts, None).await.unwrap();
        sqlx::query(meanwhile).execute(&self.store.pool).await.unwrap();
        let mut tx = self.store.write().await.unwrap();
        let mut current = store::contacts_with_context(&mut tx, &ids).await.unwrap();
        engine
            .apply_in(&mut tx, &batch.runs, &mut current, engine.span())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// Moves the clock on by `ms` and lets the engine do what fell due.
    pub(crate) async fn later(&self, ms: i64) {
        self.engine.clock.set_virtual_ms(self.engine.clock.now_ms() + ms);
        self.settle().await;
    }

    /// The one row `sql` selects, with `id` bound to its one parameter.
    pub(crate) async fn row<T>(&self, sql: &str, id: i64) -> T
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        sqlx::query_as(sql).bind(id).fetch_one(&self.store.pool).await.unwrap()
    }

    /// The run's status and what its steps did (`run_steps.detail`, in order).
    pub(crate) async fn run_of(&self, contact: i64) -> (String, Vec<String>) {
        let (id, status): (i64, String) = self
            .row("SELECT id, status FROM runs WHERE contact_id = ?", contact)
            .await;
        let details = sqlx::query_scalar("SELECT detail FROM run_steps WHERE run_id = ? ORDER BY step")
            .bind(id)
            .fetch_all(&self.store.pool)
            .await
            .unwrap();
        (status, details)
    }

    /// How many outbox rows there are for `contact`.
    pub(crate) async fn outbox_count(&self, contact: i64) -> i64 {
        let (count,): (i64,) = self
            .row("SELECT COUNT(*) FROM outbox WHERE contact_id = ?", contact)
            .await;
        count
    }
}

/// A workflow file started by `inquiry_received`, with `head` above the trigger
/// (`category`, `send_window`, ...) and `steps` as `[[steps]]` tables.
pub(crate) fn workflow(name: &str, head: &str, steps: &[&str]) -> (String, String) {
    let steps: String = steps.iter().map(|s| format!("\n[[steps]]\n{s}\n")).collect();
    (
        format!("workflows/{name}.toml"),
        format!("{head}\n[trigger]\non = \"inquiry_received\"\n{steps}"),
    )
}
