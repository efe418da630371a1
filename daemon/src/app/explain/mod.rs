//! `nudge explain` and `GET /contacts/{id}/explain`: why a contact is or is
//! not in each workflow, in the order things happened, read from what the
//! engine recorded when it decided (nothing is worked out after the fact):
//! the events that could start each workflow and the decision on each
//! (`events.rs`), runs with their steps, holds and end (`runs.rs`), the
//! messages with their delivery attempts and engagement (`messages.rs`),
//! consent and suppressions (`consent.rs`); `text.rs` writes it for people.
//! Every "did not happen" carries its stable code (`model::Reason`).

mod consent;
mod events;
mod messages;
mod runs;
mod text;
mod workflows;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::display_ms;
use crate::model::Reason;
use crate::store::Conn;

pub(crate) use text::render as render_text;
pub(crate) use workflows::known as known_workflows;

/// Everything `explain` shows about one contact.
#[derive(Debug, Serialize)]
pub(crate) struct Explanation {
    pub(crate) contact: ContactFacts,
    /// The moment the answer is as of (unix ms, and for people).
    pub(crate) as_of: i64,
    pub(crate) as_of_time: String,
    /// Changes of the contact's consent: who made them and when.
    pub(crate) consent: Vec<consent::ConsentChange>,
    /// Suppressions of the contact's addresses: the source (reason, detail) and date.
    pub(crate) suppressions: Vec<consent::Suppression>,
    /// Replies from the contact (they end runs with the `replied` exit condition).
    pub(crate) replies: Vec<Moment>,
    pub(crate) workflows: Vec<WorkflowStory>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ContactFacts {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) stage: String,
    pub(crate) consent: String,
    pub(crate) time_zone: String,
}

/// A time, as stored and for people.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Moment {
    pub(crate) at: i64,
    pub(crate) time: String,
}

impl Moment {
    pub(crate) fn of(at: i64) -> Moment {
        Moment {
            at,
            time: display_ms(at),
        }
    }
}

/// One workflow's part in the contact's story.
#[derive(Debug, Serialize)]
pub(crate) struct WorkflowStory {
    pub(crate) workflow: String,
    /// Its trigger in the set the daemon loaded last (None: no longer in it).
    pub(crate) trigger: Option<String>,
    /// In time order (ties in the order they were recorded).
    pub(crate) entries: Vec<Entry>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Entry {
    #[serde(flatten)]
    pub(crate) when: Moment,
    #[serde(flatten)]
    pub(crate) what: What,
}

/// What happened, or did not and why.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum What {
    /// An event of the workflow's trigger kind: the run it started, or why none.
    Event(events::EventEntry),
    /// A step taken (perhaps without its message: `reason` says why).
    Step(runs::StepEntry),
    /// A run held at a step.
    Hold(runs::HoldEntry),
    /// Where a run is at the moment the answer is as of, if it has not ended.
    Open(runs::OpenEntry),
    /// A run that ended.
    Ended(runs::EndedEntry),
    /// A message queued, with its attempts and engagement.
    Message(Box<messages::MessageEntry>),
}

impl What {
    fn rank(&self) -> u8 {
        match self {
            What::Event(_) => 0,
            What::Step(_) => 1,
            What::Message(_) => 2,
            What::Hold(_) => 3,
            What::Open(_) | What::Ended(_) => 4,
        }
    }
}

/// A reason code with its meaning, as every "did not happen" shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Why {
    pub(crate) code: Reason,
    pub(crate) meaning: &'static str,
}

impl Why {
    pub(crate) fn of(code: Reason) -> Why {
        Why {
            code,
            meaning: code.meaning(),
        }
    }

    /// A stored code; an unknown one (written by a later version) is left out.
    pub(crate) fn stored(code: Option<&str>) -> Option<Why> {
        code.and_then(Reason::parse).map(Why::of)
    }
}

/// What to explain.
pub(crate) struct Question<'a> {
    /// An id or an email.
    pub(crate) contact: &'a str,
    pub(crate) workflow: Option<&'a str>,
    /// As of this time (unix ms); now if not given.
    pub(crate) at: i64,
}

/// Reads what was recorded about the contact up to `question.at`, workflow by workflow.
pub(crate) async fn explain(conn: &mut Conn, question: &Question<'_>) -> anyhow::Result<Explanation> {
    let contact = super::find_contact(conn, question.contact).await?;
    let at = question.at;
    let mut stories: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    let mut add = |workflow: &str, entry: Entry| stories.entry(workflow.to_string()).or_default().push(entry);
    let runs = runs::read(conn, contact.id, at).await?;
    for (workflow, entry) in events::read(conn, contact.id, &runs, at).await? {
        add(&workflow, entry);
    }
    for (workflow, entry) in runs::entries(conn, &runs, &contact.time_zone, at).await? {
        add(&workflow, entry);
    }
    for (workflow, entry) in messages::read(conn, contact.id, &runs, at).await? {
        add(&workflow, entry);
    }
    let known = workflows::known(conn).await?;
    for workflow in &known {
        stories.entry(workflow.name.clone()).or_default();
    }
    if let Some(only) = question.workflow {
        if !stories.contains_key(only) {
            let names: Vec<&str> = known.iter().map(|w| w.name.as_str()).collect();
            let message = format!("no workflow `{only}` in the daemon's workflows ({})", names.join(", "));
            return Err(super::NotFound(message).into());
        }
        stories.retain(|name, _| name == only);
    }
    let workflows = stories
        .into_iter()
        .map(|(workflow, mut entries)| {
            // Within a moment: the event, the steps, their messages, then the hold and the
            // state the run was left in; the sort is stable, so each keeps its recorded order.
            entries.sort_by_key(|e| (e.when.at, e.what.rank()));
            let trigger = known.iter().find(|w| w.name == workflow).map(|w| w.trigger.clone());
            WorkflowStory {
                workflow,
                trigger,
                entries,
            }
        })
        .collect();
    Ok(Explanation {
        consent: consent::changes(conn, contact.id, at).await?,
        suppressions: consent::suppressions(conn, &contact, at).await?,
        replies: messages::replies(conn, contact.id, at).await?,
        contact: ContactFacts {
            id: contact.id,
            name: contact.name,
            email: contact.email,
            phone: contact.phone,
            stage: contact.stage,
            consent: contact.consent.as_str().to_string(),
            time_zone: contact.time_zone,
        },
        as_of: at,
        as_of_time: display_ms(at),
        workflows,
    })
}
