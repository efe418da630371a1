//! A relay that refuses everything (docs/delivery.md, "A relay that refuses
//! sessions"): a 554 greeting or a refused login is the relay's fault, not each
//! message's. Email is held, due and uncharged, while the daemon probes the
//! relay; once it accepts a session again every message goes, once.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::common::{Nudge, SmtpServer, scratch, wait_until};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

fn ms(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// `nudge outbox list --json`.
fn outbox(nudge: &Nudge) -> Vec<Value> {
    serde_json::from_str(&nudge.cli(&["outbox", "list", "--json", "--limit", "100000"])).unwrap()
}

/// Waits until the daemon has taken every event and run and its relay's
/// breaker satisfies `state`; returns `nudge status --json` then.
fn wait_for_relay(nudge: &Nudge, state: impl Fn(&Value) -> bool) -> Value {
    wait_until(
        || {
            let status = nudge.status();
            let quiet = status["events_unprocessed"] == 0 && status["runs"].get("ready").is_none();
            (quiet && state(&status["relay"])).then_some(status)
        },
        || format!("relay never got there: {:#}\n{}", nudge.status(), nudge.log()),
    )
}

/// Adds `n` leads by the API, each owed one message at once.
fn queue(nudge: &Nudge, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let email = format!("held-{i}@example.com");
            let body = json!({"name": format!("Lead {i}"), "company": "Held Ltd", "email": email, "stage": "intent"});
            let (status, answer) = nudge.http("POST", "/stage-changes", Some(&body.to_string()));
            assert_eq!(status, 202, "{answer}");
            email
        })
        .collect()
}

/// Every row pending and never attempted: the refusals were not charged to them.
fn assert_held(nudge: &Nudge, smtp: &SmtpServer, n: usize) {
    let rows = outbox(nudge);
    assert_eq!(rows.len(), n);
    for row in &rows {
        assert_eq!(
            (&row["status"], &row["attempts"]),
            (&json!("pending"), &json!(0)),
            "{row}"
        );
    }
    assert!(smtp.mails().is_empty());
}

/// Once the relay accepts sessions: each message delivered once, with its own Message-ID.
fn assert_delivered_once(nudge: &Nudge, smtp: &SmtpServer, addresses: &[String]) {
    wait_until(
        || (smtp.mails().len() >= addresses.len()).then_some(()),
        || {
            format!(
                "{} of {} delivered\n{:#}",
                smtp.mails().len(),
                addresses.len(),
                nudge.status()
            )
        },
    );
    nudge.settle();
    let mails = smtp.mails();
    assert_eq!(mails.len(), addresses.len());
    let ids: HashSet<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), addresses.len(), "no Message-ID twice");
    for to in addresses {
        assert_eq!(smtp.mails_to(to).len(), 1, "{to}");
    }
    for row in outbox(nudge) {
        assert_eq!((&row["status"], &row["attempts"]), (&json!("sent"), &json!(1)), "{row}");
        assert!(ids.contains(row["message_id"].as_str().unwrap()), "{row}");
    }
}

#[test]
fn a_relay_refusing_at_the_greeting_holds_the_queue_until_a_probe_passes() {
    const MESSAGES: usize = 200;
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    smtp.script_faults(json!({ "greeting": "554 5.7.1 no service for you" }));
    // The API's pace is not what this test is about: no write waits for the held email.
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, "max_unsent = 0\n");
    nudge.start();
    let addresses = queue(&nudge, MESSAGES);

    let status = wait_for_relay(&nudge, |r| r["state"] == "open");
    assert_eq!(status["outbox"], json!({ "pending": MESSAGES }), "none failed");
    let relay = &status["relay"];
    assert!(relay["last_reply"].as_str().unwrap().contains("554"), "{relay}");
    assert_eq!(relay["open_since"], ms(MONDAY_9AM));
    assert_eq!(
        relay["next_probe_at"],
        ms(MONDAY_9AM) + 5_000,
        "the first probe after 5 s"
    );
    assert_held(&nudge, &smtp, MESSAGES);
    let text = nudge.cli(&["status"]);
    assert!(text.contains("REFUSING since 2026-11-23 09:00:00 UTC"), "{text}");
    assert!(
        text.contains("last reply: permanent error (554): 5.7.1 no service for you"),
        "{text}"
    );
    let (code, health) = nudge.http("GET", "/health", None);
    assert_eq!((code, &health["status"]), (200, &json!("degraded")), "{health}");
    assert!(
        health["relay"]["last_reply"].as_str().unwrap().contains("554"),
        "{health}"
    );
    nudge.wait_for_log("SMTP relay refuses sessions");

    // The probe 5 s on is refused too: the next comes 10 s after it; still nothing charged.
    nudge.advance("5s");
    wait_for_relay(&nudge, |r| r["next_probe_at"] == ms(MONDAY_9AM) + 15_000);
    assert_held(&nudge, &smtp, MESSAGES);
    nudge.wait_for_log("SMTP relay still refuses sessions");

    smtp.script_faults(json!({}));
    nudge.advance("10s");
    assert_delivered_once(&nudge, &smtp, &addresses);
    let status = wait_for_relay(&nudge, |r| r["state"] == "closed");
    assert_eq!(status["relay"]["relay"], format!("127.0.0.1:{}", smtp.port));
    assert_eq!(nudge.http("GET", "/health", None).1["status"], "ok");
    nudge.wait_for_log("SMTP relay accepts sessions again");
    nudge.stop();
}

#[test]
fn a_refused_login_holds_the_queue_and_probes_on_the_configured_backoff() {
    const MESSAGES: usize = 20;
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    smtp.script_faults(json!({ "auth": "535 5.7.8 authentication credentials invalid" }));
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, "max_unsent = 0\n");
    let config = nudge.path("nudge.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[smtp]\n",
        "[smtp]\nusername = \"nudge\"\nprobe_first_secs = 60\nprobe_max_secs = 90\n",
    );
    std::fs::write(&config, text).unwrap();
    nudge.env.push(("NUDGE_SMTP_PASSWORD".into(), "secret".into()));
    nudge.start();
    let addresses = queue(&nudge, MESSAGES);

    let status = wait_for_relay(&nudge, |r| r["state"] == "open");
    assert_eq!(status["outbox"], json!({ "pending": MESSAGES }), "none failed");
    assert!(
        status["relay"]["last_reply"].as_str().unwrap().contains("535"),
        "{status}"
    );
    assert_eq!(status["relay"]["next_probe_at"], ms(MONDAY_9AM) + 60_000);
    assert_held(&nudge, &smtp, MESSAGES);
    // Refused probes back off by doubling, up to probe_max_secs.
    nudge.advance("1m");
    wait_for_relay(&nudge, |r| r["next_probe_at"] == ms(MONDAY_9AM) + 150_000);
    nudge.advance("90s");
    wait_for_relay(&nudge, |r| r["next_probe_at"] == ms(MONDAY_9AM) + 240_000);
    assert_held(&nudge, &smtp, MESSAGES);

    smtp.script_faults(json!({}));
    nudge.advance("90s");
    assert_delivered_once(&nudge, &smtp, &addresses);
    wait_for_relay(&nudge, |r| r["state"] == "closed");
    nudge.stop();
}
