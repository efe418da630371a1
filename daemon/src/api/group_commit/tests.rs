use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_commit_and_a_failing_one_undoes_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let writer: GroupCommit<i64> = GroupCommit::start(store.clone(), Arc::new(Admission::off()));
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            writer
                .write(move |conn| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO secrets (name, value) VALUES (?, x'00')")
                            .bind(format!("k{i}"))
                            .execute(&mut *conn)
                            .await?;
                        anyhow::ensure!(i % 50 != 7, "refused {i}");
                        Ok(i)
                    })
                })
                .await
        }));
    }
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => {}
            Err(e) => {
                assert!(e.to_string().starts_with("refused"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 4);
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(
        stored, 196,
        "the refused writes left nothing behind; the others all committed"
    );
}

/// One group, built by hand: which writes run how often, and what is kept.
async fn one_group(store: &Store, fail: Option<i64>) -> (Vec<anyhow::Result<i64>>, Vec<usize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls: Arc<Vec<AtomicUsize>> = Arc::new((0..5).map(|_| AtomicUsize::new(0)).collect());
    let mut group = Vec::new();
    let mut answers = Vec::new();
    for i in 0..5i64 {
        let (answer, result) = oneshot::channel();
        let calls = calls.clone();
        let write: Write<i64> = Box::new(move |conn| {
            calls[i as usize].fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                sqlx::query("INSERT INTO secrets (name, value) VALUES (?, x'00')")
                    .bind(format!("{fail:?}-{i}"))
                    .execute(&mut *conn)
                    .await?;
                anyhow::ensure!(Some(i) != fail, "refused {i}");
                Ok(i)
            })
        });
        group.push(Job { write, answer });
        answers.push(result);
    }
    commit_group(store, &Admission::off(), store.write().await, group)
        .await
        .unwrap();
    let mut results = Vec::new();
    for answer in answers {
        results.push(answer.await.unwrap());
    }
    let calls = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    (results, calls)
}

#[tokio::test]
async fn a_group_runs_once_without_savepoints_and_again_with_them_when_a_write_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let (results, calls) = one_group(&store, None).await;
    assert_eq!(
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(calls, [1, 1, 1, 1, 1], "no failure: every write ran once");

    let (results, calls) = one_group(&store, Some(2)).await;
    // The first attempt stops at the failing write; the second runs them all.
    assert_eq!(calls, [2, 2, 2, 1, 1]);
    let refused: Vec<bool> = results.iter().map(Result::is_err).collect();
    assert_eq!(refused, [false, false, true, false, false]);
    assert_eq!(results[2].as_ref().unwrap_err().to_string(), "refused 2");
    let kept: Vec<String> = sqlx::query_scalar("SELECT name FROM secrets WHERE name LIKE 'Some(2)-%' ORDER BY name")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert_eq!(
        kept,
        ["Some(2)-0", "Some(2)-1", "Some(2)-3", "Some(2)-4"],
        "the rolled-back attempt left nothing, the committed one everything but the refused write"
    );
}

/// A stand-in for the engine: marks the events it takes processed (and with
/// `failing` then fails, so that the mark must be undone), starting no run.
struct MarkTaken {
    failing: bool,
}

impl TakeEvents for MarkTaken {
    async fn take_events(&self, conn: &mut Conn, ids: RangeInclusive<i64>) -> anyhow::Result<Taken> {
        sqlx::query("UPDATE events SET processed_at = 9 WHERE id BETWEEN ? AND ?")
            .bind(ids.start())
            .bind(ids.end())
            .execute(&mut *conn)
            .await?;
        anyhow::ensure!(!self.failing, "no runs today");
        Ok(Taken::default())
    }

    fn committed(&self, _: Taken) {}
}

/// A take that takes nothing: the events wait for the engine.
struct TakeNothing;

impl TakeEvents for TakeNothing {
    async fn take_events(&self, _: &mut Conn, _: RangeInclusive<i64>) -> anyhow::Result<Taken> {
        Ok(Taken::default())
    }

    fn committed(&self, _: Taken) {}
}

/// Writes `changes` as one group, in one transaction.
async fn write_group(store: &Store, changes: &[StageByEmail], now: i64) -> anyhow::Result<Vec<StageChanged>> {
    use store::Unit as _;
    let unit = Changes {
        now,
        take: &TakeNothing,
        admission: &Admission::off(),
        engine: &Notify::new(),
    };
    let mut tx = store.write().await?;
    let written = unit.write(&mut tx, changes).await?;
    unit.commit(tx, &[&written]).await?;
    Ok(written.committed(&TakeNothing))
}

fn by_email(email: &str, stage: &str) -> StageByEmail {
    StageByEmail {
        email: email.into(),
        name: String::new(),
        company: "Engines".into(),
        stage: stage.into(),
    }
}

/// One set-based group does what the changes one after another would have:
/// new contacts created, known ones moved, one at its stage left alone, and
/// two changes of one email applied in order.
#[tokio::test]
async fn stage_changes_by_email_in_one_group_apply_as_if_one_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
    for (email, stage) in [("known@x.test", "lead"), ("there@x.test", "intent")] {
        let new = store::NewContact {
            name: email.into(),
            email: Some(email.into()),
            stage: Some(stage.into()),
            ..Default::default()
        };
        store::insert_contact(&mut conn, &new, 1).await.unwrap();
    }
    drop(conn);
    let changes = [
        by_email("new@x.test", "intent"),
        by_email("known@x.test", "inquiry"),
        by_email("there@x.test", "intent"),
        by_email("new@x.test", "sample"),
    ];
    let done = write_group(&store, &changes, 5).await.unwrap();
    let ids: Vec<i64> = done.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [3, 1, 2, 3]);
    let mut conn = store.pool.acquire().await.unwrap();
    let events: Vec<(i64, String, i64, String)> =
        sqlx::query_as("SELECT id, kind, contact_id, payload FROM events WHERE occurred_at = 5 ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let seen: Vec<(&str, i64, serde_json::Value)> = events
        .iter()
        .map(|(_, kind, contact, payload)| (kind.as_str(), *contact, serde_json::from_str(payload).unwrap()))
        .collect();
    let moved = |from: &str, to: &str| serde_json::json!({"from": from, "to": to, "by": "api"});
    assert_eq!(
        seen,
        [
            ("contact_created", 3, serde_json::json!({})),
            ("stage_changed", 3, moved("lead", "intent")),
            ("stage_changed", 1, moved("lead", "inquiry")),
            ("stage_changed", 3, moved("intent", "sample")),
        ]
    );
    // Each answer names its own event; the unchanged contact has none.
    let event_of = |i: usize| events[i].0;
    assert_eq!(
        done.iter().map(|(_, e)| *e).collect::<Vec<_>>(),
        [Some(event_of(1)), Some(event_of(2)), None, Some(event_of(3))]
    );
    let stages: Vec<(String, String, String)> = sqlx::query_as("SELECT email, stage, name FROM contacts ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        stages,
        [
            ("known@x.test".into(), "inquiry".into(), "known@x.test".into()),
            ("there@x.test".into(), "intent".into(), "there@x.test".into()),
            ("new@x.test".into(), "sample".into(), "new@x.test".into()),
        ]
    );
    let history = store::history_of(&mut conn, 3, 10).await.unwrap();
    let steps: Vec<(Option<String>, Option<String>, &str)> = history
        .iter()
        .rev()
        .map(|h| (h.from_value.clone(), h.to_value.clone(), h.changed_by.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            (Some("lead".into()), Some("intent".into()), "api"),
            (Some("intent".into()), Some("sample".into()), "api"),
        ]
    );
}

#[tokio::test]
async fn an_unknown_stage_fails_the_group_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let changes = [by_email("a@x.test", "intent"), by_email("b@x.test", "won-ish")];
    let e = write_group(&store, &changes, 5).await.unwrap_err();
    assert!(e.downcast_ref::<store::Invalid>().is_some(), "{e:#}");
    let contacts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contacts")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(contacts, 0);
}

/// A group takes its own events in its transaction and wakes the engine
/// once it commits; if taking them fails, every change still commits, in
/// the group's transaction, and its events wait for the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_takes_its_events_and_a_failure_to_leaves_them_to_the_engine() {
    for failing in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let engine = Arc::new(Notify::new());
        let intake = StageIntake::start(
            store.clone(),
            Arc::new(Admission::off()),
            Clock::virtual_at(jiff::Timestamp::from_millisecond(5).unwrap()),
            MarkTaken { failing },
            engine.clone(),
        );
        let submits: Vec<_> = (0..8)
            .map(|i| {
                let intake = intake.clone();
                tokio::spawn(async move { intake.submit(by_email(&format!("c{i}@x.test"), "intent")).await })
            })
            .collect();
        for submit in submits {
            let (_, event) = submit.await.unwrap().unwrap();
            assert!(event.is_some());
        }
        let (events, taken): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COUNT(processed_at) FROM events WHERE kind = 'stage_changed'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(events, 8);
        assert_eq!(taken, if failing { 0 } else { 8 }, "failing: {failing}");
        let woken = futures::FutureExt::now_or_never(engine.notified()).is_some();
        assert_eq!(woken, !failing, "failing: {failing}");
    }
}

/// A change the database refuses fails alone: the group goes again, a
/// transaction a change, and the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_fails_alone_and_the_others_of_its_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let intake = StageIntake::start(
        store.clone(),
        Arc::new(Admission::off()),
        Clock::virtual_at(jiff::Timestamp::from_millisecond(5).unwrap()),
        TakeNothing,
        Arc::new(Notify::new()),
    );
    let submits: Vec<_> = (0..16)
        .map(|i| {
            let intake = intake.clone();
            let stage = if i == 5 { "won-ish" } else { "intent" };
            tokio::spawn(async move { intake.submit(by_email(&format!("c{i}@x.test"), stage)).await })
        })
        .collect();
    let mut refused = Vec::new();
    for (i, submit) in submits.into_iter().enumerate() {
        if let Err(e) = submit.await.unwrap() {
            assert!(e.downcast_ref::<store::Invalid>().is_some(), "{e:#}");
            refused.push(i);
        }
    }
    assert_eq!(refused, [5]);
    let contacts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contacts")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(contacts, 15);
}
