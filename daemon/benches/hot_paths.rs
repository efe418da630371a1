//! criterion benchmarks of the hot paths (results in BENCHMARKS.md):
//! condition evaluation, plugin render in a fresh instance, committing an
//! incoming event, the overdue scan (1M contacts, 10k due), and outbox claim +
//! record. Run: `cargo bench -p nudge --bench hot_paths`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nudge::admission::Admission;
use nudge::clock::Clock;
use nudge::engine::Engine;
use nudge::model::Category;
use nudge::plugins::{PluginHost, PluginSettings, Plugins};
use nudge::store::{self, NewContact, NewOutboxRow, Next, OutboundMessage, Outcome, Store};
use nudge::unsubscribe::Unsubscribe;
use nudge::workflow::{Condition, WorkflowSet, contact_schema, event_schema};
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn plugin_host(cache: &std::path::Path) -> PluginHost {
    let settings = PluginSettings {
        dir: cache.join("none"),
        cache: Some(cache.to_path_buf()),
        config: Default::default(),
        channels: Default::default(),
    };
    PluginHost::load(&settings, None).unwrap()
}

fn condition(c: &mut Criterion) {
    let condition =
        Condition::compile(r#"contact.intent_grade == "A" && "vip" in contact.tags && contact.follow_up_count >= 2"#)
            .unwrap();
    let (contact, event) = (contact_schema(), event_schema());
    c.bench_function("condition/evaluate", |b| {
        b.iter(|| condition.evaluate(&contact, &event).unwrap())
    });
}

fn render(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let host = plugin_host(tmp.path());
    let template = vec![
        (
            "subject".to_string(),
            "Hello {{ contact.name }} from {{ contact.company }}".to_string(),
        ),
        (
            "text".to_string(),
            "Dear {{ contact.name }},\n\nyour account at {{ contact.company }} is ready.".to_string(),
        ),
    ];
    let context = json!({"contact": {"name": "Ada", "company": "Engines Ltd"}, "vars": {}});
    c.bench_function("plugin/render_email_fresh_instance", |b| {
        b.iter(|| host.render("email", &template, &context).unwrap())
    });
}

fn ingest(c: &mut Criterion) {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let store = rt.block_on(Store::open(&tmp.path().join("bench.db"))).unwrap();
    rt.block_on(async {
        let mut tx = store.write().await.unwrap();
        let new = NewContact {
            name: "Ada".into(),
            email: Some("ada@bench.test".into()),
            ..NewContact::default()
        };
        store::insert_contact(&mut tx, &new, 0).await.unwrap();
        tx.commit().await.unwrap();
    });
    let mut stage = ["intent", "sample"].into_iter().cycle();
    // What `POST /stage-changes` does for a group of one: find the contact by email,
    // write the change and its event, commit durably (synchronous = FULL) before answering.
    c.bench_function("event/ingest_commit", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tx = store.write().await.unwrap();
                let change = store::StageByEmail {
                    email: "ada@bench.test".into(),
                    name: String::new(),
                    company: String::new(),
                    stage: stage.next().unwrap().into(),
                };
                store::stage_changes_by_email(&mut tx, &[change], "bench", 1)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            })
        })
    });
}

fn outbox(c: &mut Criterion) {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let store = rt.block_on(Store::open(&tmp.path().join("bench.db"))).unwrap();
    let message = OutboundMessage {
        to_name: "Ada".into(),
        to_address: "ada@bench.test".into(),
        subject: "Hello".into(),
        text: Some("body".into()),
        html: None,
        extra: Vec::new(),
        unsubscribe: None,
    };
    let mut next_key = 0u64;
    // Queue a row, claim it, record it as sent: the outbox's cost per message
    // (the send itself is the SMTP server's, measured end to end).
    c.bench_function("outbox/queue_claim_record", |b| {
        b.iter(|| {
            next_key += 1;
            rt.block_on(async {
                let key = format!("bench-{next_key}");
                let mut tx = store.write().await.unwrap();
                let row = NewOutboxRow {
                    idempotency_key: key.clone(),
                    message_id: key,
                    run_id: None,
                    workflow: None,
                    contact_id: None,
                    channel: "email".into(),
                    category: Category::Transactional,
                    message: message.clone(),
                    variant: None,
                    tracked: false,
                    traceparent: None,
                };
                store::queue_and_finish(&mut tx, vec![row], &[], 0).await.unwrap();
                tx.commit().await.unwrap();
                let mut conn = store.pool.acquire().await.unwrap();
                let claimed = store::due_outbox(&mut conn, 0, 32, &[], &[]).await.unwrap();
                drop(conn);
                let mut tx = store.write().await.unwrap();
                let records: Vec<store::AttemptRecord> = claimed
                    .iter()
                    .map(|row| store::AttemptRecord {
                        row,
                        started_at: 0,
                        outcome: &Outcome::Sent,
                        next: Next::Sent,
                    })
                    .collect();
                store::record_attempts(&mut tx, &records, 0).await.unwrap();
                tx.commit().await.unwrap();
            })
        })
    });
}

const CONTACTS: i64 = 1_000_000;
const DUE: i64 = 10_000;

fn overdue_scan(c: &mut Criterion) {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let store = rt.block_on(Store::open(&tmp.path().join("bench.db"))).unwrap();
    let now: i64 = 1_000_000_000;
    rt.block_on(async {
        // 1M contacts whose next follow-up is in the future, but for the first 10k.
        sqlx::query(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?)
             INSERT INTO contacts (id, name, email, created_at, updated_at, next_follow_up_at)
             SELECT x, 'c' || x, 'c' || x || '@bench.test', 0, 0, CASE WHEN x <= ? THEN ? ELSE ? END FROM n",
        )
        .bind(CONTACTS)
        .bind(DUE)
        .bind(now - 1)
        .bind(now + 86_400_000)
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO timers (due_at, kind, contact_id) SELECT next_follow_up_at, 'follow_up_due', id FROM contacts",
        )
        .execute(&store.pool)
        .await
        .unwrap();
    });
    let files = vec![(
        "bench/overdue.toml".to_string(),
        "[trigger]\non = \"follow_up_overdue\"\n\n[[steps]]\ntag = \"overdue\"\n".to_string(),
    )];
    let host = plugin_host(tmp.path());
    let set = WorkflowSet::compile(files, &host.channels()).unwrap();
    let clock = Clock::virtual_at(jiff::Timestamp::from_millisecond(now).unwrap());
    let engine = rt
        .block_on(Engine::new(
            store.clone(),
            clock,
            Plugins::new(host),
            set,
            "bench.test".into(),
            Unsubscribe::new(b"bench".to_vec(), "http://bench.test".into(), "u@bench.test".into()),
            Arc::new(Admission::off()),
        ))
        .unwrap();
    let engine = Arc::new(engine);
    let mut group = c.benchmark_group("overdue");
    // Each iteration starts 10k runs (see BENCHMARKS.md).
    group
        .sample_size(10)
        .sampling_mode(criterion::SamplingMode::Flat)
        .measurement_time(Duration::from_secs(20));
    // Fire the 10k due timers, turn them into events, start and finish a run each.
    let mut ran = false;
    group.bench_function("scan_1m_contacts_10k_due_runs_started", |b| {
        ran = true;
        b.iter_batched(
            || {
                rt.block_on(async {
                    // Without the foreign key checks: deleting a run would scan the
                    // 1M timers (no index on run_id) for rows that point at it.
                    let mut conn = store.pool.acquire().await.unwrap();
                    for sql in [
                        "PRAGMA foreign_keys = OFF",
                        "DELETE FROM run_steps",
                        "DELETE FROM runs",
                        "DELETE FROM events",
                        "UPDATE timers SET fired_at = NULL WHERE fired_at IS NOT NULL",
                        "PRAGMA foreign_keys = ON",
                    ] {
                        sqlx::query(sql).execute(&mut *conn).await.unwrap();
                    }
                })
            },
            |()| rt.block_on(async { while engine.tick().await.unwrap() || engine.settle().await.unwrap() {} }),
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
    // Not if a filter on the command line left the benchmark out.
    if ran {
        let runs: i64 = rt
            .block_on(sqlx::query_scalar("SELECT COUNT(*) FROM runs").fetch_one(&store.pool))
            .unwrap();
        assert_eq!(runs, DUE, "every due follow-up started its run");
    }
}

criterion_group!(benches, condition, render, ingest, outbox, overdue_scan);
criterion_main!(benches);
