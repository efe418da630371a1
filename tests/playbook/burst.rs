//! SLA first during a marketing burst (issue 36): when a whole segment's
//! marketing mail falls due at one instant and an inquiry's SLA escalation is
//! due with it, the escalation is stepped and handed to delivery before the
//! burst, not after the hundreds of runs that became ready first; and the
//! burst still drains (marketing is not starved). Not timed: the order of the
//! mails at the SMTP server says it.

use crate::common::{Nudge, SmtpServer, scratch};

/// Monday 10:00 UTC: inside the marketing window of the shipped sending.toml.
const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";
/// More than the engine's batch of ready runs (512): without priorities the
/// escalation would wait for a whole batch of marketing runs.
const BURST: usize = 600;

const OFFER: &str = r#"
[offer]
channel = "email"
subject = "An offer for {{ contact.name }}"
text = "Hello {{ contact.name }}, our spring offer."
"#;

#[test]
fn an_sla_escalation_due_during_a_marketing_burst_goes_before_it() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // Two sends at a time, so that the order of arrival is the order of claiming.
    let mut nudge = Nudge::with_config(&smtp, MONDAY_10AM, "[delivery]\nconcurrency = 2\n");
    nudge.write_workflow("templates/offer.toml", OFFER);
    nudge.write_workflow(
        "offer.toml",
        "category = \"marketing\"\n[trigger]\non = \"stage_changed\"\nto = \"loyal\"\n\
         [[steps]]\nwait = \"1h\"\n[[steps]]\nsend = { channel = \"email\", template = \"offer\" }\n",
    );
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Big Buyer",
        "--email",
        "big@example.com",
        "--owner",
        "rep@corp.test",
    ]);
    nudge.start();
    // 10:00: the burst is enrolled; its mail falls due at 11:00.
    for i in 0..BURST {
        let body = format!(r#"{{"email": "c{i}@example.com", "stage": "loyal", "name": "C{i}"}}"#);
        let (status, reply) = nudge.http("POST", "/stage-changes", Some(&body));
        assert!(status == 202 || status == 200, "{status} {reply}");
    }
    nudge.settle();
    // 10:44: an inquiry; its SLA (15 minutes without a value tier) passes at 10:59.
    nudge.advance("44m");
    // By the CLI, which reads the clock it just moved (the daemon picks it up a moment later).
    nudge.cli(&["inquiry", "add", "big@example.com", "--message", "price for 10k units?"]);
    nudge.settle();
    // What went before (the owner's notices of a new contact and inquiry) is not part of it.
    let before = smtp.mails().len();
    assert!(
        smtp.mails()
            .iter()
            .all(|m| !m.subject.starts_with("An offer") && !m.subject.starts_with("Unanswered")),
        "nothing of the burst or the escalation before 10:59: {:?}",
        smtp.mails().iter().map(|m| (&m.to, &m.subject)).collect::<Vec<_>>()
    );

    // 11:01: both are due at once.
    nudge.advance("17m");
    smtp.wait_for("rep@corp.test", "Unanswered inquiry: Big Buyer");
    let offers = |smtp: &SmtpServer| {
        smtp.mails()
            .iter()
            .filter(|m| m.subject.starts_with("An offer"))
            .count()
    };
    crate::common::wait_until(
        || (offers(&smtp) == BURST).then_some(()),
        || format!("{} of {BURST} offers delivered", offers(&smtp)),
    );
    let order: Vec<String> = smtp.mails().into_iter().skip(before).map(|m| m.subject).collect();
    let escalation = order
        .iter()
        .position(|s| s.starts_with("Unanswered inquiry"))
        .expect("the escalation");
    assert!(
        escalation < 2,
        "the escalation is among the first sends, not behind the burst: it was #{escalation} of {}",
        order.len()
    );
}
