//! The values a contact's consent and a follow-up's result take (docs/domain.md
//! §4 and §5), and the statuses an operator picks messages by, are checked where
//! they come in: the CLI, the API and CSV imports each refuse a misspelt one,
//! naming the values allowed, and keep what they were given spelt as people type it.

use serde_json::{Value, json};

use crate::common::{Nudge, SmtpServer, scratch};

const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";
const CONSENTS: &str = "granted, unknown, withdrawn";
const RESULTS: &str = "in_progress, won, needs_follow_up, lost";

fn error_of(answer: &Value) -> String {
    answer["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_misspelt_consent_or_result_is_refused_with_the_values_allowed() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    nudge.start();

    let add = ["contact", "add", "--name", "Li", "--email", "li@example.com"];
    let (ok, _, stderr) = nudge.try_cli(&[&add[..], &["--consent", "yes"]].concat());
    assert!(!ok);
    assert!(
        stderr.contains(&format!("unknown consent `yes`; expected one of: {CONSENTS}")),
        "{stderr}"
    );
    nudge.cli(&[&add[..], &["--consent", "granted"]].concat());

    let contact = json!({ "name": "Wu", "email": "wu@example.com", "consent": "Withdrawn" });
    let (status, answer) = nudge.http("POST", "/contacts", Some(&contact.to_string()));
    assert_eq!(status, 422, "{answer}");
    assert!(
        error_of(&answer).contains("`granted`, `unknown`, `withdrawn`"),
        "{answer}"
    );
    let contact = json!({ "name": "Wu", "email": "wu@example.com", "consent": "withdrawn" });
    let (status, answer) = nudge.http("POST", "/contacts", Some(&contact.to_string()));
    assert_eq!(status, 201, "{answer}");
    let (_, shown) = nudge.http("GET", "/contacts/wu@example.com", None);
    assert_eq!(shown["contact"]["consent"], "withdrawn", "{shown}");

    let log = ["followup", "log", "li@example.com", "--channel", "phone"];
    let (ok, _, stderr) = nudge.try_cli(&[&log[..], &["--result", "done"]].concat());
    assert!(!ok);
    assert!(
        stderr.contains(&format!("unknown result `done`; expected one of: {RESULTS}")),
        "{stderr}"
    );
    nudge.cli(&[&log[..], &["--result", "needs_follow_up"]].concat());
    let follow_up = json!({ "channel": "visit", "result": "WON" });
    let path = "/contacts/li@example.com/follow-ups";
    let (status, answer) = nudge.http("POST", path, Some(&follow_up.to_string()));
    assert_eq!(status, 422, "{answer}");
    assert!(
        error_of(&answer).contains("`in_progress`, `won`, `needs_follow_up`, `lost`"),
        "{answer}"
    );
    let bounce = json!({ "address": "li@example.com", "kind": "hrad" });
    let (status, answer) = nudge.http("POST", "/bounces", Some(&bounce.to_string()));
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        error_of(&answer),
        "unknown kind `hrad`; expected one of: hard, soft, complaint"
    );
    let shown = nudge.cli(&["contact", "show", "li@example.com"]);
    assert!(shown.contains("consent granted"), "{shown}");
    assert!(shown.contains("phone [needs_follow_up]"), "{shown}");

    let contacts = nudge.path("contacts.csv");
    std::fs::write(
        &contacts,
        "name,email,consent\nZhao,zhao@example.com,ok\nQian,qian@example.com,unknown\n",
    )
    .unwrap();
    let (_, stdout, stderr) = nudge.try_cli(&["contact", "import", contacts.to_str().unwrap()]);
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains(&format!("unknown consent `ok`; expected one of: {CONSENTS}")),
        "{said}"
    );
    let follow_ups = nudge.path("follow_ups.csv");
    std::fs::write(
        &follow_ups,
        "contact,at,channel,result\nqian@example.com,2026-11-20T10:00:00Z,phone,maybe\n",
    )
    .unwrap();
    let (_, stdout, stderr) = nudge.try_cli(&["followup", "import", follow_ups.to_str().unwrap()]);
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains(&format!("unknown result `maybe`; expected one of: {RESULTS}")),
        "{said}"
    );

    for args in [
        &["list", "--status", "sentt"][..],
        &["retry", "--all", "Dead"],
        &["drop", "--all", "x"],
    ] {
        let (ok, _, stderr) = nudge.try_cli(&[&["outbox"][..], args].concat());
        assert!(!ok, "{args:?}");
        assert!(
            stderr.contains("expected one of: pending, sent, failed, dead, unknown, suppressed, dropped"),
            "{stderr}"
        );
    }
}
