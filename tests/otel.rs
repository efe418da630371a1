//! Traces exported over OTLP (a build with `--features otel`): the real
//! binary, a real SMTP server and a real OTLP/HTTP receiver that decodes what
//! the exporter posts. A stage change's way through the daemon is one trace:
//! event -> run -> step -> delivery, each span the child of the one before,
//! with ids and outcomes and never an address or a message's words.

mod common;

use common::{HttpServer, Nudge, OtlpReceiver, SmtpServer, scratch, wait_until};
use serde_json::Value;

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

/// The one span named `name` whose attribute `key` is `value`.
fn span<'a>(spans: &'a [Value], name: &str, key: &str, value: &Value) -> &'a Value {
    let found: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == name && &s["attributes"][key] == value)
        .collect();
    assert_eq!(found.len(), 1, "one {name} span with {key} = {value}: {spans:#?}");
    found[0]
}

/// Asserts that `child` is a span of `parent`'s trace with `parent` as its parent.
fn assert_child(child: &Value, parent: &Value) {
    assert_eq!(
        child["trace_id"], parent["trace_id"],
        "one trace: {child:#} under {parent:#}"
    );
    assert_eq!(
        child["parent_span_id"], parent["span_id"],
        "{} is a child of {}: {child:#} under {parent:#}",
        child["name"], parent["name"]
    );
}

/// Follows a contact's stage change from its event to the delivery of its
/// email, and returns the delivery span.
fn assert_chain(spans: &[Value], contact_id: i64) {
    let contact = Value::from(contact_id);
    let event = spans
        .iter()
        .find(|s| {
            s["name"] == "event"
                && s["attributes"]["contact_id"] == contact
                && s["attributes"]["event_kind"] == "stage_changed"
        })
        .unwrap_or_else(|| panic!("the stage change's event span: {spans:#?}"));
    assert_eq!(event["parent_span_id"], "", "an event starts its trace");
    let run = spans
        .iter()
        .find(|s| s["name"] == "run" && s["parent_span_id"] == event["span_id"])
        .unwrap_or_else(|| panic!("a run span under the event: {spans:#?}"));
    assert_child(run, event);
    assert_eq!(run["attributes"]["workflow"], "intent-proposal");
    assert_eq!(run["attributes"]["contact_id"], contact);
    let run_id = run["attributes"]["run_id"].clone();
    assert!(run_id.is_i64(), "the run's id: {run:#}");
    // Its first step sends the proposal (the next schedules a follow-up).
    let steps: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "step" && s["attributes"]["run_id"] == run_id)
        .collect();
    assert!(steps.len() >= 2, "a span per step: {steps:#?}");
    for step in &steps {
        assert_child(step, run);
    }
    let step = *steps
        .iter()
        .find(|s| s["attributes"]["step"] == 0)
        .unwrap_or_else(|| panic!("the first step's span: {steps:#?}"));
    assert_eq!(step["attributes"]["workflow"], "intent-proposal");
    assert_eq!(step["attributes"]["contact_id"], contact);
    assert_eq!(step["attributes"]["step"], 0);
    assert_eq!(step["attributes"]["step_kind"], "send");
    assert_eq!(step["attributes"]["outcome"], "done");
    let delivery = span(spans, "delivery", "run_id", &run_id);
    assert_child(delivery, step);
    assert_eq!(delivery["attributes"]["channel"], "email");
    assert_eq!(delivery["attributes"]["attempt"], 1);
    assert_eq!(delivery["attributes"]["outcome"], "sent");
    assert_eq!(delivery["attributes"]["workflow"], "intent-proposal");
    assert_eq!(delivery["attributes"]["contact_id"], contact);
}

#[test]
fn a_stage_change_is_one_trace_from_its_event_to_the_delivery_of_its_email() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let receiver = OtlpReceiver::start(tmp.path());
    let extra = format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\nservice_name = \"nudge-test\"\n",
        receiver.port
    );
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, &extra);
    nudge.start();

    // By the API, whose stage changes take their first steps in their own
    // transaction, and by the CLI, whose event the engine takes.
    let (status, body) = nudge.http(
        "POST",
        "/contacts",
        Some(r#"{"name": "Li Na", "company": "Beta Ltd", "email": "li@example.com"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let li = body["id"].as_i64().unwrap();
    let (status, body) = nudge.http("POST", &format!("/contacts/{li}/stage"), Some(r#"{"stage": "intent"}"#));
    assert_eq!(status, 202, "{body}");
    smtp.wait_for("li@example.com", "Li Na");
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Zhang Wei",
        "--company",
        "Acme",
        "--email",
        "zhang@example.com",
    ]);
    nudge.cli(&["stage", "set", "zhang@example.com", "intent"]);
    smtp.wait_for("zhang@example.com", "Zhang Wei");
    let zhang = nudge.query("SELECT id FROM contacts WHERE email = 'zhang@example.com'")[0][0]
        .as_i64()
        .unwrap();
    nudge.settle();
    // Stopping flushes the spans still queued.
    nudge.stop();

    let spans = wait_until(
        || {
            let spans = receiver.spans();
            let deliveries = spans.iter().filter(|s| s["name"] == "delivery").count();
            (deliveries >= 2).then_some(spans)
        },
        || format!("the spans of two deliveries: {:#?}", receiver.spans()),
    );
    assert_chain(&spans, li);
    assert_chain(&spans, zhang);
    for span in &spans {
        assert_eq!(span["resource"]["service.name"], "nudge-test", "{span:#}");
        let attributes = span["attributes"].to_string();
        for secret in [
            "@example.com",
            "Li Na",
            "Zhang Wei",
            "Beta Ltd",
            "Acme",
            "a proposal for",
        ] {
            assert!(
                !attributes.contains(secret),
                "no address or content in a span: {span:#}"
            );
        }
    }
}

#[test]
fn a_collector_that_never_answers_holds_up_neither_mail_nor_shutdown() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let collector = HttpServer::start(tmp.path(), r#"[{"hang": true}]"#);
    let extra = format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\nqueue_size = 1\ntimeout_secs = 1\n",
        collector.port
    );
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, &extra);
    nudge.start();
    for (name, email) in [
        ("Li Na", "li@example.com"),
        ("Zhang Wei", "zhang@example.com"),
        ("Wang Fang", "wang@example.com"),
    ] {
        nudge.cli(&["contact", "add", "--name", name, "--company", "Acme", "--email", email]);
        nudge.cli(&["stage", "set", email, "intent"]);
        smtp.wait_for(email, name);
    }
    nudge.settle();
    // SIGTERM: the daemon exits cleanly though the last spans cannot be sent.
    nudge.stop();
    assert!(
        nudge.log().contains("dropped"),
        "spans beyond the queue are dropped and counted:\n{}",
        nudge.log()
    );
}

#[test]
fn a_tracing_endpoint_that_is_no_address_is_refused_with_its_place() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    let mut toml = std::fs::read_to_string(nudge.path("nudge.toml")).unwrap();
    toml.push_str("[tracing]\notlp_endpoint = \"localhost:4318\"\n");
    std::fs::write(nudge.path("nudge.toml"), toml).unwrap();
    let (ok, _, stderr) = nudge.try_cli(&["run"]);
    assert!(!ok, "refused: {stderr}");
    assert!(stderr.contains("nudge.toml:"), "file:line:col: {stderr}");
    assert!(stderr.contains("is not an http(s) address"), "{stderr}");
    assert!(stderr.contains("http://localhost:4318"), "what to write: {stderr}");
}
