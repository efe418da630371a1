//! `explain` for people: one line per thing that happened, each "did not
//! happen" with its code in brackets, e.g. `[frequency_cap]`.

use std::fmt::Write as _;

use super::events::EventEntry;
use super::messages::MessageEntry;
use super::runs::{EndedEntry, HoldEntry, OpenEntry, StepEntry};
use super::{Explanation, What, Why};

/// The explanation as text for an ops admin.
pub(crate) fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let c = &e.contact;
    let _ = writeln!(
        out,
        "contact {} {} <{}> stage {}, consent {}, zone {} (as of {})",
        c.id,
        c.name,
        c.email.as_deref().or(c.phone.as_deref()).unwrap_or("no address"),
        c.stage,
        c.consent,
        c.time_zone,
        e.as_of_time
    );
    for change in &e.consent {
        let _ = writeln!(
            out,
            "  consent {} -> {} by {} at {}",
            change.from.as_deref().unwrap_or("-"),
            change.to.as_deref().unwrap_or("-"),
            change.by,
            change.when.time
        );
    }
    for s in &e.suppressions {
        let _ = writeln!(
            out,
            "  suppressed {} (channel {}, scope {}): {} {} since {}",
            s.address, s.channel, s.scope, s.source, s.detail, s.when.time
        );
    }
    for reply in &e.replies {
        let _ = writeln!(out, "  replied at {}", reply.time);
    }
    if e.workflows.is_empty() {
        let _ = writeln!(out, "\nno workflow took an event of this contact");
    }
    for story in &e.workflows {
        let _ = writeln!(out, "\nworkflow {}", story.workflow);
        if story.entries.is_empty() {
            let _ = writeln!(
                out,
                "  nothing recorded: no event of its trigger's kind for this contact"
            );
        }
        for entry in &story.entries {
            let _ = writeln!(out, "  {}  {}", entry.when.time, line(&entry.what));
        }
    }
    out
}

fn line(what: &What) -> String {
    match what {
        What::Event(e) => event(e),
        What::Step(s) => step(s),
        What::Hold(h) => hold(h),
        What::Open(o) => open(o),
        What::Ended(e) => ended(e),
        What::Message(m) => message(m),
    }
}

fn code(why: &Option<Why>) -> String {
    why.as_ref().map(|w| format!("[{}] ", w.code)).unwrap_or_default()
}

fn event(e: &EventEntry) -> String {
    let change = match (
        e.payload.get("from").and_then(|v| v.as_str()),
        e.payload.get("to").and_then(|v| v.as_str()),
    ) {
        (Some(from), Some(to)) => format!(" {from} -> {to}"),
        _ => String::new(),
    };
    let head = format!("event #{} {}{change}", e.event_id, e.event);
    if let Some(run) = e.started_run {
        return format!("{head}: started run #{run}");
    }
    let mut text = format!("{head}: no run {}", code(&e.reason));
    match &e.reason {
        Some(why) => text.push_str(why.meaning),
        None => text.push_str("(no reason recorded)"),
    }
    if let Some(part) = &e.condition_part {
        let _ = write!(text, "; false: `{part}`");
    }
    if let Some(values) = e.values.as_ref().and_then(|v| v.as_object()) {
        let shown: Vec<String> = values.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let _ = write!(text, " with {}", shown.join(", "));
    }
    text
}

fn step(s: &StepEntry) -> String {
    format!(
        "run #{} step {} {}: {}{}",
        s.run_id,
        s.step,
        s.step_kind,
        code(&s.reason),
        s.detail
    )
}

fn hold(h: &HoldEntry) -> String {
    let mut text = format!(
        "run #{} held at step {} {}{} (until {}, {} for the contact)",
        h.run_id,
        h.step,
        code(&h.reason),
        h.detail,
        h.until.time,
        h.until_local
    );
    if !h.counted.is_empty() {
        let counted: Vec<String> = h
            .counted
            .iter()
            .map(|c| {
                format!(
                    "#{} {} ({}, {})",
                    c.outbox_id,
                    c.message_id,
                    c.workflow.as_deref().unwrap_or("-"),
                    crate::clock::display_ms(c.queued_at)
                )
            })
            .collect();
        let _ = write!(text, "; counted: {}", counted.join(", "));
    }
    text
}

fn open(o: &OpenEntry) -> String {
    let mut text = format!("run #{} is {} at step {}", o.run_id, o.status, o.next_step);
    if let Some(detail) = &o.detail {
        let _ = write!(text, ": {}{detail}", code(&o.reason));
    }
    text
}

fn ended(e: &EndedEntry) -> String {
    format!("run #{} {}: {}{}", e.run_id, e.status, code(&e.reason), e.outcome)
}

fn message(m: &MessageEntry) -> String {
    let mut text = format!(
        "message #{} {} \"{}\" to {} ({}, {}{}): {}",
        m.outbox_id,
        m.message_id,
        m.subject,
        m.recipient,
        m.channel,
        m.category,
        m.variant
            .as_deref()
            .map(|v| format!(", variant {v}"))
            .unwrap_or_default(),
        m.status
    );
    if let Some(why) = &m.reason {
        let _ = write!(text, " [{}] {}", why.code, why.meaning);
    }
    for a in &m.attempts {
        let _ = write!(text, "\n      attempt {} at {}: {}", a.attempt, a.when.time, a.outcome);
        if !a.reply.is_empty() {
            let _ = write!(text, ": {}", a.reply);
        }
    }
    for e in &m.engagement {
        let url = e.url.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
        let _ = write!(text, "\n      {} at {}{url}", e.engagement, e.when.time);
    }
    text
}
