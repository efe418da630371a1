//! `nudge explain` and `GET /contacts/{id}/explain` (issue 32 item 1): why a
//! contact is or is not in each workflow, from what the engine recorded when
//! it decided, each "did not happen" with its stable reason code: a message
//! held by the frequency cap (the messages that counted, the next slot), a
//! contact excluded by a `when` condition (the false part and the value), a
//! suppressed address (source and date), a run that exited on a reply.

use serde_json::Value;

use crate::common::{Nudge, SmtpServer, scratch};

/// Monday 10:00 UTC: outside the quiet hours of the shipped sending.toml.
const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";

const TEMPLATES: &str = r#"
[promo_one]
channel = "email"
subject = "One for {{ contact.name }}"
text = "One."

[promo_two]
channel = "email"
subject = "Two for {{ contact.name }}"
text = "Two."

[promo_three]
channel = "email"
subject = "Three for {{ contact.name }}"
text = "Three."

[vip]
channel = "email"
subject = "For our best, {{ contact.name }}"
text = "Hello."

[check_in]
channel = "email"
subject = "How are the samples, {{ contact.name }}?"
text = "Tell us."
"#;

/// Three marketing emails in a row: the shipped cap (2 per 7 days) holds the third.
const PROMO: &str = r#"
category = "marketing"
[trigger]
on = "stage_changed"
to = "inquiry"
[[steps]]
send = { channel = "email", template = "promo_one" }
[[steps]]
send = { channel = "email", template = "promo_two" }
[[steps]]
send = { channel = "email", template = "promo_three" }
"#;

const VIP: &str = r#"
category = "transactional"
when = 'contact.intent_grade == "A" && contact.stage == "inquiry"'
[trigger]
on = "stage_changed"
to = "inquiry"
[[steps]]
send = { channel = "email", template = "vip" }
"#;

/// Takes stage changes, but only those to `sample`.
const SAMPLE: &str = r#"
category = "transactional"
[trigger]
on = "stage_changed"
to = "sample"
[[steps]]
send = { channel = "email", template = "check_in" }
"#;

const CHECK_IN: &str = r#"
category = "transactional"
exit_when = ["replied"]
[trigger]
on = "stage_changed"
to = "intent"
[[steps]]
send = { channel = "email", template = "check_in" }
[[steps]]
wait = "2d"
[[steps]]
send = { channel = "email", template = "check_in" }
"#;

/// An installation with only the workflows above (the shipped ones taken out,
/// their sending policy kept), running.
fn start(smtp: &SmtpServer) -> Nudge {
    let mut nudge = Nudge::new(smtp, MONDAY_10AM);
    for entry in std::fs::read_dir(nudge.path("workflows")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("[trigger]") {
            std::fs::remove_file(path).unwrap();
        }
    }
    nudge.write_workflow("templates/explain.toml", TEMPLATES);
    nudge.write_workflow("promo.toml", PROMO);
    nudge.write_workflow("vip.toml", VIP);
    nudge.write_workflow("sample.toml", SAMPLE);
    nudge.write_workflow("check-in.toml", CHECK_IN);
    nudge.start();
    nudge
}

fn add(nudge: &Nudge, email: &str, intent: &str) {
    nudge.cli(&["contact", "add", "--name", "Li", "--email", email, "--intent", intent]);
}

fn explain(nudge: &Nudge, args: &[&str]) -> Value {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&nudge.cli(&all)).unwrap()
}

/// The entries of `workflow`'s story of kind `kind`.
fn entries<'a>(explained: &'a Value, workflow: &str, kind: &str) -> Vec<&'a Value> {
    let story = explained["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["workflow"] == workflow)
        .unwrap_or_else(|| panic!("no workflow {workflow}: {explained:#}"));
    story["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[test]
fn a_message_held_by_the_frequency_cap_shows_what_counted_and_the_next_slot() {
    let dir = scratch();
    let smtp = SmtpServer::start(dir.path());
    let nudge = start(&smtp);
    // In Shanghai: 18:00 there, before the quiet hours (21:00-08:00).
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Li",
        "--email",
        "cap@example.com",
        "--tz",
        "Asia/Shanghai",
    ]);
    nudge.cli(&["stage", "set", "cap@example.com", "inquiry"]);
    nudge.settle();
    smtp.wait_for("cap@example.com", "Two for Li");

    let explained = explain(&nudge, &["cap@example.com", "--workflow", "promo"]);
    let holds = entries(&explained, "promo", "hold");
    assert_eq!(holds.len(), 1, "{explained:#}");
    let hold = holds[0];
    assert_eq!(hold["reason"]["code"], "frequency_cap", "{hold:#}");
    assert_eq!(hold["step"], 2);
    let detail = hold["detail"].as_str().unwrap();
    assert!(
        detail.contains("2 already") && detail.contains("next slot Mon 2026-11-30 18:00 CST"),
        "{detail}"
    );
    assert_eq!(hold["until"]["time"], "2026-11-30 10:00:00 UTC");
    assert_eq!(
        hold["until_local"], "Mon 2026-11-30 18:00 CST",
        "the slot in the contact's zone"
    );
    let messages = entries(&explained, "promo", "message");
    let sent: Vec<&Value> = messages.iter().map(|m| &m["message_id"]).collect();
    let counted: Vec<&Value> = hold["counted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["message_id"])
        .collect();
    assert_eq!(counted, sent, "the two messages queued before count against the cap");
    assert_eq!(messages[0]["attempts"][0]["outcome"], "sent", "{:#}", messages[0]);
    let open = entries(&explained, "promo", "open");
    assert_eq!(open[0]["reason"]["code"], "frequency_cap", "{explained:#}");

    let text = nudge.cli(&["explain", "cap@example.com", "--workflow", "promo"]);
    assert!(
        text.contains("held at step 2 [frequency_cap] frequency cap reached") && text.contains("counted: #"),
        "{text}"
    );
    let status = nudge.status();
    let held = &status["waiting_reasons"][0];
    assert_eq!(
        (&held["reason"], &held["runs"]),
        (&Value::from("frequency_cap"), &Value::from(1)),
        "{status:#}"
    );
    assert!(nudge.log().contains("reason=frequency_cap"), "{}", nudge.log());
}

#[test]
fn a_contact_excluded_by_a_condition_shows_the_false_part_and_the_value() {
    let dir = scratch();
    let smtp = SmtpServer::start(dir.path());
    let nudge = start(&smtp);
    add(&nudge, "b@example.com", "B");
    nudge.cli(&["stage", "set", "b@example.com", "inquiry"]);
    nudge.settle();

    let explained = explain(&nudge, &["b@example.com"]);
    let vip = entries(&explained, "vip", "event");
    assert_eq!(vip.len(), 1, "{explained:#}");
    assert_eq!(vip[0]["event"], "stage_changed");
    assert_eq!(vip[0]["reason"]["code"], "condition_false", "{:#}", vip[0]);
    assert_eq!(vip[0]["condition_part"], r#"contact.intent_grade == "A""#);
    assert_eq!(vip[0]["values"], serde_json::json!({ "contact.intent_grade": "B" }));
    assert!(entries(&explained, "vip", "message").is_empty());
    let sample = entries(&explained, "sample", "event");
    assert_eq!(sample[0]["reason"]["code"], "trigger_mismatch", "{explained:#}");
    let promo = entries(&explained, "promo", "event");
    assert!(promo[0]["started_run"].is_i64(), "{explained:#}");
    let names: Vec<&Value> = explained["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["workflow"])
        .collect();
    assert_eq!(
        names,
        ["check-in", "promo", "sample", "vip"],
        "every workflow of the set, met or not"
    );
    assert_eq!(explained["workflows"][3]["trigger"], "stage_changed to inquiry");
    let (ok, _, error) = nudge.try_cli(&["explain", "b@example.com", "--workflow", "vp"]);
    assert!(
        !ok && error.contains("no workflow `vp` in the daemon's workflows (check-in, promo, sample, vip)"),
        "{error}"
    );

    let id = explained["contact"]["id"].as_i64().unwrap();
    let (code, api) = nudge.http("GET", &format!("/contacts/{id}/explain?workflow=vip"), None);
    assert_eq!(code, 200, "{api}");
    assert_eq!(api, explain(&nudge, &["b@example.com", "--workflow", "vip"]));
    let text = nudge.cli(&["explain", "b@example.com", "--workflow", "vip"]);
    assert!(
        text.contains(r#"no run [condition_false]"#)
            && text.contains(r#"false: `contact.intent_grade == "A"` with contact.intent_grade = "B""#),
        "{text}"
    );
}

#[test]
fn a_suppressed_address_shows_its_source_and_date() {
    let dir = scratch();
    let smtp = SmtpServer::start(dir.path());
    let nudge = start(&smtp);
    add(&nudge, "gone@example.com", "A");
    nudge.cli(&["suppress", "add", "gone@example.com", "--detail", "asked by phone"]);
    nudge.cli(&["stage", "set", "gone@example.com", "inquiry"]);
    nudge.settle();

    let explained = explain(&nudge, &["gone@example.com", "--workflow", "vip"]);
    let suppression = &explained["suppressions"][0];
    assert_eq!(suppression["address"], "gone@example.com", "{explained:#}");
    assert_eq!(suppression["source"], "manual");
    assert_eq!(suppression["detail"], "asked by phone");
    assert_eq!(suppression["scope"], "all");
    assert_eq!(suppression["time"], "2026-11-23 10:00:00 UTC");
    let messages = entries(&explained, "vip", "message");
    assert_eq!(messages[0]["status"], "suppressed", "{explained:#}");
    assert_eq!(messages[0]["reason"]["code"], "suppressed");
    assert!(smtp.mails_to("gone@example.com").is_empty());
    let text = nudge.cli(&["explain", "gone@example.com"]);
    assert!(
        text.contains("suppressed gone@example.com (channel *, scope all): manual asked by phone since 2026-11-23"),
        "{text}"
    );
}

#[test]
fn a_run_that_exited_on_a_reply_says_so_and_when() {
    let dir = scratch();
    let smtp = SmtpServer::start(dir.path());
    let nudge = start(&smtp);
    add(&nudge, "talk@example.com", "B");
    nudge.cli(&["stage", "set", "talk@example.com", "intent"]);
    nudge.settle();
    smtp.wait_for("talk@example.com", "How are the samples, Li?");
    nudge.advance("1h");
    // The daemon takes up the moved clock when it notices the write: its answer says when it is.
    crate::common::wait_until(
        || {
            let (_, now) = nudge.http("GET", "/contacts/talk@example.com/explain", None);
            (now["as_of_time"] == "2026-11-23 11:00:00 UTC").then_some(())
        },
        || "the daemon never took up the clock".into(),
    );
    let (code, body) = nudge.http("POST", "/replies", Some(r#"{"email": "talk@example.com"}"#));
    assert!(code < 300, "{code} {body}");
    nudge.advance("2d");
    nudge.settle();

    let explained = explain(&nudge, &["talk@example.com", "--workflow", "check-in"]);
    let ended = entries(&explained, "check-in", "ended");
    assert_eq!(ended.len(), 1, "{explained:#}");
    assert_eq!(ended[0]["status"], "cancelled");
    assert_eq!(ended[0]["reason"]["code"], "exit_replied", "{:#}", ended[0]);
    assert!(
        ended[0]["time"].as_str().unwrap().starts_with("2026-11-25"),
        "when the wait ended: {:#}",
        ended[0]
    );
    assert_eq!(
        explained["replies"][0]["time"], "2026-11-23 11:00:00 UTC",
        "{explained:#}"
    );
    let messages = entries(&explained, "check-in", "message");
    assert_eq!(messages.len(), 1, "the second check-in never went: {explained:#}");
    assert_eq!(messages[0]["engagement"][0]["engagement"], "replied");

    // As of before the reply, the run was waiting at its `wait`.
    let before = explain(
        &nudge,
        &[
            "talk@example.com",
            "--workflow",
            "check-in",
            "--at",
            "2026-11-23T10:30:00Z",
        ],
    );
    assert!(entries(&before, "check-in", "ended").is_empty(), "{before:#}");
    assert!(before["replies"].as_array().unwrap().is_empty());
    let text = nudge.cli(&["explain", "talk@example.com", "--workflow", "check-in"]);
    assert!(
        text.contains("cancelled: [exit_replied] exit condition met: replied"),
        "{text}"
    );
}
