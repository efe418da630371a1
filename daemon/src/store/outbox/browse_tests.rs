use super::*;
use crate::model::Category;
use crate::store::outbox::{NewOutboxRow, OutboundMessage, queue_and_finish};
use crate::store::testing::{TestStore, contact, query_plan, run};

fn filter(f: impl FnOnce(&mut OutboxFilter)) -> OutboxFilter {
    let mut filter = OutboxFilter::default();
    f(&mut filter);
    filter
}

/// Each filter of the outbox page reads an index in id order: at a million
/// messages a page that walked the table, or sorted what matched, took seconds.
#[tokio::test]
async fn the_outbox_filters_are_read_from_indexes() {
    let store = TestStore::open().await;
    let mut conn = store.conn().await;
    let cases = [
        (filter(|f| f.workflow = Some("w".into())), "USING INDEX outbox_workflow"),
        (
            filter(|f| f.domain = Some("x.test".into())),
            "USING INDEX outbox_domain",
        ),
        (
            filter(|f| f.status = Some(OutboxStatus::Dead)),
            "USING INDEX outbox_unsettled",
        ),
        (
            filter(|f| f.status = Some(OutboxStatus::Dropped)),
            "USING INDEX outbox_withheld",
        ),
        (filter(|_| ()), "o USING INTEGER PRIMARY KEY (rowid<?)"),
    ];
    for (filter, index) in cases {
        let sql = browse_sql(&filter);
        let plan = query_plan(&mut conn, &sql).await;
        assert!(plan.iter().any(|d| d.contains(index)), "{filter:?}: {plan:?}");
        assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{filter:?}: {plan:?}");
    }
    let plan = query_plan(&mut conn, OLDEST_PENDING).await;
    assert!(
        plan.iter().any(|d| d.contains("USING INDEX outbox_pending")),
        "{plan:?}"
    );
    // The statuses are grouped in a small temporary tree; no row of the table is read.
    let plan = query_plan(&mut conn, COUNTS_SINCE).await;
    assert!(
        plan.iter()
            .any(|d| d.contains("COVERING INDEX outbox_created_status (created_at>?)"))
            && !plan.iter().any(|d| d.starts_with("SCAN")),
        "{plan:?}"
    );
}

fn queued(key: &str, run_id: i64, workflow: &str, contact_id: i64, to: &str) -> NewOutboxRow {
    NewOutboxRow {
        idempotency_key: key.into(),
        message_id: format!("<{key}@x.test>"),
        run_id: Some(run_id),
        workflow: Some(workflow.into()),
        contact_id: Some(contact_id),
        channel: "email".into(),
        category: Category::Transactional,
        message: OutboundMessage {
            to_name: "Ann".into(),
            to_address: to.into(),
            subject: "Hello".into(),
            text: Some("body".into()),
            html: None,
            extra: vec![],
            unsubscribe: None,
        },
        variant: None,
        tracked: false,
        traceparent: None,
    }
}

/// The filters find the rows a workflow queued and a domain's rows whatever
/// the case, newest first, and the cursor goes on below the last one shown.
#[tokio::test]
async fn the_outbox_filters_find_their_rows_page_by_page() {
    let store = TestStore::open().await;
    let mut conn = store.conn().await;
    let ann = contact(&mut conn, "ann@x.test").await;
    let (r1, r2) = (
        run(&mut conn, "welcome", ann).await,
        run(&mut conn, "nurture", ann).await,
    );
    let rows = vec![
        queued("k1", r1, "welcome", ann, "ann@Example.COM"),
        queued("k2", r2, "nurture", ann, "bob@example.com"),
        queued("k3", r1, "welcome", ann, "cy@other.test"),
        queued("k4", r1, "welcome", ann, "di@example.com"),
    ];
    queue_and_finish(&mut conn, rows, &[], 5).await.unwrap();
    let ids = |rows: Vec<OutboxLine>| rows.iter().map(|r| r.id).collect::<Vec<_>>();

    let welcome = filter(|f| f.workflow = Some("welcome".into()));
    assert_eq!(
        ids(browse_outbox(&mut conn, &welcome, 10).await.unwrap()),
        vec![4, 3, 1]
    );
    let domain = filter(|f| f.domain = Some("@EXAMPLE.com".into()));
    assert_eq!(ids(browse_outbox(&mut conn, &domain, 2).await.unwrap()), vec![4, 2]);
    let next = filter(|f| {
        f.domain = Some("example.com".into());
        f.before = Some(2);
    });
    assert_eq!(ids(browse_outbox(&mut conn, &next, 2).await.unwrap()), vec![1]);
    let both = filter(|f| {
        f.domain = Some("example.com".into());
        f.workflow = Some("welcome".into());
        f.status = Some(OutboxStatus::Pending);
    });
    let rows = browse_outbox(&mut conn, &both, 10).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.workflow.clone()).collect::<Vec<_>>(),
        vec![Some("welcome".to_string()); 2]
    );
    assert_eq!(ids(rows), vec![4, 1]);
    let sent = filter(|f| f.status = Some(OutboxStatus::Sent));
    assert!(browse_outbox(&mut conn, &sent, 10).await.unwrap().is_empty());
}
