//! Segment passes: a segment workflow starts runs not from one event but from a
//! pass over all contacts, when it falls due (`start`, then every `every`).
//! A pass is a row with a cursor, enrolled a batch of contacts per
//! transaction, so it survives a restart and never holds the turn to write for
//! long; a contact is enrolled in a workflow once.

use std::collections::HashSet;

use serde_json::json;
use tracing::{info, warn};

use super::Engine;
use crate::store::{self, ContactRow, EnrolmentStatus};
use crate::workflow::{Trigger, Workflow, next_segment_due};

/// When `workflow`'s next segment pass falls due, as of `now`; `None` if it is
/// not a segment workflow or runs once and has run.
async fn segment_due(conn: &mut store::Conn, workflow: &Workflow, now: i64) -> anyhow::Result<Option<i64>> {
    let Trigger::Segment { start, every } = &workflow.trigger else {
        return Ok(None);
    };
    Ok(match (store::last_enrolment_due(conn, &workflow.name).await?, every) {
        (None, _) => Some(start.unwrap_or(now)),
        (Some(last), Some(every)) => Some(next_segment_due(last, *every, now)),
        (Some(_), None) => None,
    })
}

/// Contacts looked at per transaction in a segment pass.
const SEGMENT_BATCH: i64 = 2000;
/// A segment pass gets longer slices than timers: enrolling the whole segment
/// quickly is what an admin waits for, and each slice still ends within a second.
const SEGMENT_SLICE: std::time::Duration = std::time::Duration::from_millis(900);

impl Engine {
    /// Opens the passes of segment workflows that are due and enrols one batch
    /// of contacts for each pass under way; returns how many contacts it looked at.
    pub(super) async fn enrol_segments(&self) -> anyhow::Result<usize> {
        let set = self.current();
        let now = self.clock.now_ms();
        let mut conn = self.store.pool.acquire().await?;
        for workflow in set.workflows.iter().filter(|w| w.enabled) {
            let Some(due) = segment_due(&mut conn, workflow, now).await? else {
                continue;
            };
            if due <= now && store::open_enrolment(&mut conn, &workflow.name, &set.hash, due, now).await? {
                info!(workflow = %workflow.name, "segment pass started");
            }
        }
        let passes = store::running_enrolments(&mut conn).await?;
        drop(conn);
        let mut scanned = 0;
        for mut pass in passes {
            let slice = std::time::Instant::now();
            while pass.status == EnrolmentStatus::Running && slice.elapsed() < SEGMENT_SLICE {
                scanned += self.enrol_batch(&mut pass).await?;
            }
        }
        Ok(scanned)
    }

    /// `nudge simulate` only: until when no segment pass is under way or due,
    /// the clock's reading if one is; `None`: never.
    pub(crate) async fn segments_quiet_until(&self) -> anyhow::Result<Option<i64>> {
        let set = self.current();
        let now = self.clock.now_ms();
        let mut conn = self.store.pool.acquire().await?;
        if !store::running_enrolments(&mut conn).await?.is_empty() {
            return Ok(Some(now));
        }
        let mut quiet: Option<i64> = None;
        for workflow in set.workflows.iter().filter(|w| w.enabled) {
            if let Some(due) = segment_due(&mut conn, workflow, now).await? {
                quiet = Some(quiet.map_or(due, |q| q.min(due)).max(now));
            }
        }
        Ok(quiet)
    }

    /// Enrols the next batch of a pass in one transaction: every contact that
    /// matches the workflow's `when` and was never enrolled in it gets a run.
    async fn enrol_batch(&self, pass: &mut store::Enrolment) -> anyhow::Result<usize> {
        let set = self.set_for(&pass.set_hash).await?;
        let now = self.clock.now_ms();
        let mut tx = self.store.write().await?;
        let contacts = store::contacts_after(&mut tx, pass.cursor, SEGMENT_BATCH).await?;
        let segment = |w: &&Workflow| w.enabled && matches!(w.trigger, Trigger::Segment { .. });
        let Some(workflow) = set.workflow(&pass.workflow).filter(segment) else {
            warn!(workflow = %pass.workflow, "not an enabled segment workflow: pass closed");
            store::advance_enrolment(&mut tx, pass.id, pass.cursor, 0, 0, true, now).await?;
            tx.commit().await?;
            pass.status = EnrolmentStatus::Done;
            return Ok(0);
        };
        let enrolled_before = match (contacts.first(), contacts.last()) {
            (Some(first), Some(last)) => {
                store::enrolled_between(&mut tx, &workflow.name, first.contact.id, last.contact.id).await?
            }
            _ => Default::default(),
        };
        let joining = segment_members(workflow, &contacts, &enrolled_before);
        // The whole batch's events and runs in two statements: per-row inserts
        // would make the pass cost one round trip to SQLite's thread per contact.
        let context = json!({ "kind": "segment", "enrolment": pass.id });
        let enrolled = store::enrol_contacts(
            &mut tx,
            &workflow.name,
            &set.hash,
            &joining,
            &context,
            workflow.category.priority(),
            now,
        )
        .await? as i64;
        let cursor = contacts.last().map_or(pass.cursor, |r| r.contact.id);
        let done = (contacts.len() as i64) < SEGMENT_BATCH;
        store::advance_enrolment(&mut tx, pass.id, cursor, contacts.len() as i64, enrolled, done, now).await?;
        tx.commit().await?;
        pass.cursor = cursor;
        pass.enrolled += enrolled;
        if done {
            pass.status = EnrolmentStatus::Done;
            info!(workflow = %workflow.name, enrolled = pass.enrolled, "segment pass done");
        }
        Ok(contacts.len())
    }
}

/// The contacts of a batch that join the segment: those never enrolled in it
/// that match its `when`, each with its stage (the run's start stage).
fn segment_members<'a>(
    workflow: &Workflow,
    contacts: &'a [ContactRow],
    enrolled_before: &HashSet<i64>,
) -> Vec<(i64, &'a str)> {
    let event_ctx = json!({ "kind": "segment", "from": "", "to": "", "inquiry_id": 0 });
    let mut joining: Vec<(i64, &str)> = Vec::new();
    for row in contacts {
        let contact = &row.contact;
        if enrolled_before.contains(&contact.id) {
            continue;
        }
        let contact_ctx = contact.context(row.follow_up_count, row.order_count);
        let matched = match &workflow.when {
            Some(condition) => condition.evaluate(&contact_ctx, &event_ctx).unwrap_or_else(|e| {
                warn!(workflow = %workflow.name, contact_id = contact.id, "segment condition failed: {e}");
                false
            }),
            None => true,
        };
        if matched {
            joining.push((contact.id, &contact.stage));
        }
    }
    joining
}
