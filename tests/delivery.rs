//! Durable delivery and nurture, end to end: the real binary, a real aiosmtpd
//! server scripted to misbehave, a real SQLite file, the virtual clock.

mod common;

use serde_json::{Value, json};

use common::{Nudge, SmtpServer, scratch, wait_until};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

/// `nudge outbox list --json`, oldest first.
fn outbox(nudge: &Nudge) -> Vec<Value> {
    let rows: Vec<Value> =
        serde_json::from_str(&nudge.cli(&["outbox", "list", "--json", "--limit", "100000"])).unwrap();
    rows.into_iter().rev().collect()
}

/// Waits until the outbox row to `to` satisfies `done`; returns it.
fn wait_for_row(nudge: &Nudge, to: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_until(
        || {
            outbox(nudge)
                .into_iter()
                .find(|r| r["recipient"] == to)
                .filter(|r| done(r))
        },
        || {
            format!(
                "outbox row to {to} never got there: {:#?}\n{}",
                outbox(nudge),
                nudge.log()
            )
        },
    )
}

fn add_contact(nudge: &Nudge, name: &str, extra: &[&str]) -> String {
    let email = format!("{}@example.com", name.to_lowercase());
    let mut args = vec!["contact", "add", "--name", name, "--email", &email];
    args.extend_from_slice(extra);
    nudge.cli(&args);
    email
}

#[test]
fn smtp_refusals_are_retried_with_backoff_until_the_message_is_delivered_once() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // One refusal at each stage of the exchange, in turn, then acceptance.
    // A stage's list is consumed only by attempts that get that far.
    smtp.script_faults(json!({
        "mail": ["421 4.3.2 service shutting down"],
        "rcpt": ["450 4.2.1 mailbox busy"],
        "data": ["451 4.3.0 local error"],
    }));
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();
    let to = add_contact(&nudge, "Kong", &[]);
    nudge.cli(&["inquiry", "add", &to, "--message", "price list?"]);

    let attempts = |n: i64| move |r: &Value| r["attempts"] == n;
    let row = wait_for_row(&nudge, &to, attempts(1));
    assert_eq!(row["status"], "pending", "{row}");
    assert!(row["last_error"].as_str().unwrap().contains("421"), "{row}");
    // The first retry comes 30 s (+ up to 20 % jitter) later, not before.
    nudge.advance("25s");
    nudge.settle();
    assert_eq!(wait_for_row(&nudge, &to, |_| true)["attempts"], 1);
    nudge.advance("12s");
    let row = wait_for_row(&nudge, &to, attempts(2));
    assert!(row["last_error"].as_str().unwrap().contains("450"), "{row}");
    // Then 60 s (+20 %).
    nudge.advance("55s");
    nudge.settle();
    assert_eq!(wait_for_row(&nudge, &to, |_| true)["attempts"], 2);
    nudge.advance("20s");
    let row = wait_for_row(&nudge, &to, attempts(3));
    assert!(row["last_error"].as_str().unwrap().contains("451"), "{row}");
    nudge.advance("150s");
    let row = wait_for_row(&nudge, &to, |r| r["status"] == "sent");
    assert_eq!(row["attempts"], 4, "{row}");
    nudge.settle();
    let mails = smtp.mails_to(&to);
    assert_eq!(mails.len(), 1, "delivered exactly once: {mails:#?}");
    assert_eq!(mails[0].message_id, row["message_id"].as_str().unwrap());
    assert_eq!(smtp.faults_left(), json!({"mail": [], "rcpt": [], "data": []}));
    nudge.stop();
}

#[test]
fn a_hung_server_blocks_only_its_own_send_and_an_outage_loses_nothing() {
    let tmp = scratch();
    let mut smtp = SmtpServer::start(tmp.path());
    // The first session hangs after the greeting; the others are served.
    smtp.script_faults(json!({ "ehlo": ["hang"] }));
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();
    let first = add_contact(&nudge, "Lu", &[]);
    nudge.cli(&["inquiry", "add", &first]);
    wait_until(
        || (smtp.faults_left()["ehlo"] == json!([])).then_some(()),
        || "the first session never reached EHLO".into(),
    );
    let second = add_contact(&nudge, "Ma", &[]);
    nudge.cli(&["inquiry", "add", &second]);
    smtp.wait_for(&second, "");
    // The hung session is still within its 10 s deadline.
    assert!(smtp.mails_to(&first).is_empty());
    let row = wait_for_row(&nudge, &first, |r| r["attempts"] == 1);
    assert_eq!(row["status"], "pending", "a hang before the body is retried: {row}");
    assert!(
        row["last_error"].as_str().unwrap().contains("before the message body"),
        "{row}"
    );

    // Now the server is down for a while: attempts fail and back off; nothing is lost.
    smtp.stop();
    nudge.advance("1m");
    wait_for_row(&nudge, &first, |r| r["attempts"] == 2);
    let third = add_contact(&nudge, "Ning", &[]);
    nudge.cli(&["inquiry", "add", &third]);
    wait_for_row(&nudge, &third, |r| r["attempts"] == 1 && r["status"] == "pending");
    nudge.advance("3m");
    wait_for_row(&nudge, &first, |r| r["attempts"] == 3);
    smtp.restart();
    nudge.advance("10m");
    for to in [&first, &second, &third] {
        wait_for_row(&nudge, to, |r| r["status"] == "sent");
        assert_eq!(smtp.mails_to(to).len(), 1, "{to} got one message");
    }
    nudge.stop();
}

#[test]
fn an_unknown_outcome_is_held_for_an_operator_and_resent_with_the_same_message_id() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // The server takes the message and then never answers: did it get it? Yes, here.
    smtp.script_faults(json!({ "data": ["hang-after-accept"] }));
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();
    let to = add_contact(&nudge, "Ou", &[]);
    nudge.cli(&["inquiry", "add", &to]);
    let row = wait_for_row(&nudge, &to, |r| r["status"] == "unknown");
    assert!(
        row["last_error"].as_str().unwrap().contains("after the message body"),
        "{row}"
    );
    // Held: time passing does not resend it.
    nudge.advance("2h");
    nudge.settle();
    assert_eq!(smtp.mails_to(&to).len(), 1);
    let listed = nudge.cli(&["outbox", "list", "--status", "unknown"]);
    assert!(listed.contains(&to), "{listed}");
    // The operator decides to resend: the copy carries the same Message-ID.
    let said = nudge.cli(&["outbox", "retry", "--all", "unknown"]);
    assert!(said.starts_with("1 of 1"), "{said}");
    wait_for_row(&nudge, &to, |r| r["status"] == "sent");
    let mails = wait_until(
        || Some(smtp.mails_to(&to)).filter(|m| m.len() == 2),
        || format!("{:#?}", smtp.mails()),
    );
    assert_eq!(mails[0].message_id, mails[1].message_id);
    nudge.stop();
}

#[test]
fn bounces_suppress_the_address_and_dead_letters_wait_for_an_operator() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    smtp.script_faults(json!({
        "rcpt": ["550 5.1.1 no such user"],
        "mail": ["ok", "451 4.3.0 try later", "451 4.3.0 try later"],
    }));
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, "[delivery]\nmax_attempts = 2\n");
    nudge.start();
    let gone = add_contact(&nudge, "Pan", &[]);
    nudge.cli(&["inquiry", "add", &gone]);
    let row = wait_for_row(&nudge, &gone, |r| r["status"] == "failed");
    assert!(row["last_error"].as_str().unwrap().contains("550"), "{row}");
    let suppressed = nudge.cli(&["suppress", "list"]);
    assert!(
        suppressed.contains(&gone) && suppressed.contains("hard_bounce"),
        "{suppressed}"
    );
    // Whatever workflow sends to it next, the address gets nothing.
    nudge.cli(&["stage", "set", &gone, "sample"]);
    nudge.settle();
    nudge.advance("3d");
    wait_until(
        || {
            outbox(&nudge)
                .into_iter()
                .find(|r| r["recipient"] == gone.as_str() && r["status"] == "suppressed")
        },
        || format!("{:#?}\n{}", outbox(&nudge), nudge.log()),
    );
    assert!(smtp.mails_to(&gone).is_empty());

    // Two transient refusals with max_attempts = 2: a dead letter, kept until retried by hand.
    let busy = add_contact(&nudge, "Qi", &[]);
    nudge.cli(&["inquiry", "add", &busy]);
    wait_for_row(&nudge, &busy, |r| r["attempts"] == 1);
    nudge.advance("1m");
    let row = wait_for_row(&nudge, &busy, |r| r["status"] == "dead");
    nudge.advance("1d");
    nudge.settle();
    assert!(smtp.mails_to(&busy).is_empty());
    let id = row["id"].as_i64().unwrap().to_string();
    nudge.cli(&["outbox", "retry", &id]);
    smtp.wait_for(&busy, "");
    nudge.stop();
}
