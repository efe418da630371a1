//! nudge end to end: the real binary, a real SMTP server, a real SQLite file,
//! the real wasm email plugin and the shipped workflows, on virtual time.

mod common;

use common::{Nudge, SmtpServer, scratch};
use serde_json::{Value, json};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

#[test]
fn stage_change_by_cli_and_by_api_sends_the_rendered_email() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();

    // By CLI, while the daemon runs: it notices the change by itself.
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Zhang Wei",
        "--company",
        "Acme",
        "--email",
        "zhang@example.com",
        "--owner",
        "rep@corp.test",
    ]);
    nudge.cli(&["stage", "set", "zhang@example.com", "intent"]);
    let mail = smtp.wait_for("zhang@example.com", "Zhang Wei");
    assert_eq!(mail.subject, "Zhang Wei, a proposal for Acme");
    assert!(
        mail.text.contains("free samples"),
        "workflow vars reach the template: {}",
        mail.text
    );
    assert!(
        mail.message_id.ends_with("@nudge.test>"),
        "Message-ID set from the sender's domain: {}",
        mail.message_id
    );

    // By API.
    let (status, body) = nudge.http(
        "POST",
        "/contacts",
        Some(r#"{"name": "Li Na", "company": "Beta Ltd", "email": "li@example.com"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    let (status, body) = nudge.http("POST", &format!("/contacts/{id}/stage"), Some(r#"{"stage": "intent"}"#));
    assert_eq!(status, 202, "{body}");
    let mail = smtp.wait_for("li@example.com", "Li Na");
    assert_eq!(mail.subject, "Li Na, a proposal for Beta Ltd");

    nudge.settle();
    assert_eq!(smtp.mails_to("zhang@example.com").len(), 1, "one proposal each");
    assert_eq!(smtp.mails_to("li@example.com").len(), 1, "one proposal each");
    nudge.stop();
}

#[test]
fn api_rejects_bad_input_and_missing_tokens_with_4xx() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();

    assert_eq!(
        nudge.http_with_token("GET", "/health", None, None).0,
        200,
        "health needs no token"
    );
    let (status, _) = nudge.http_with_token("POST", "/contacts", Some(r#"{"name": "X"}"#), None);
    assert_eq!(status, 401);
    let (status, _) = nudge.http_with_token("POST", "/contacts", Some(r#"{"name": "X"}"#), Some("wrong"));
    assert_eq!(status, 401);

    let (status, body) = nudge.http("POST", "/contacts", Some(r#"{"name": "X", "#));
    assert_eq!(status, 400, "{body}");
    let (status, body) = nudge.http("POST", "/contacts", Some(r#"{"name": "X", "nmae": "Y"}"#));
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("nmae"), "{body}");
    let (status, body) = nudge.http("POST", "/contacts", Some(r#"{"name": "X", "stage": "bogus"}"#));
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().contains("unknown stage `bogus`"),
        "{body}"
    );
    let (status, body) = nudge.http("POST", "/contacts/999/stage", Some(r#"{"stage": "intent"}"#));
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("999"), "{body}");
    let (status, _) = nudge.http(
        "POST",
        "/contacts/nobody@example.com/follow-ups",
        Some(r#"{"channel": "phone"}"#),
    );
    assert_eq!(status, 404);
    let (status, body) = nudge.http(
        "POST",
        "/contacts",
        Some(r#"{"name": "Dup", "email": "dup@example.com"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = nudge.http(
        "POST",
        "/contacts",
        Some(r#"{"name": "Dup", "email": "dup@example.com"}"#),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = nudge.http(
        "POST",
        "/contacts/dup@example.com/follow-ups",
        Some(r#"{"channel": "phone", "next_follow_up": "someday"}"#),
    );
    assert_eq!(status, 422, "{body}");

    // A source that knows only the email creates the contact on first sight, and an
    // "email" that is really an id is refused rather than taken for contact 1.
    let (status, created) = nudge.http(
        "POST",
        "/stage-changes",
        Some(r#"{"email": "new@example.com", "name": "New", "stage": "intent"}"#),
    );
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["changed"], true, "{created}");
    let (status, body) = nudge.http("POST", "/stage-changes", Some(r#"{"email": "1", "stage": "lost"}"#));
    assert_eq!(status, 422, "{body}");
    // The same change again changes nothing; an unknown stage is refused with the stages.
    let (status, again) = nudge.http(
        "POST",
        "/stage-changes",
        Some(r#"{"email": "new@example.com", "stage": "intent"}"#),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["contact_id"], created["contact_id"], "{again}");
    assert_eq!(again["event_id"], Value::Null, "{again}");
    let (status, body) = nudge.http(
        "POST",
        "/stage-changes",
        Some(r#"{"email": "new@example.com", "stage": "intentional"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unknown stage `intentional`"),
        "{body}"
    );

    // The daemon is still serving after all that.
    assert_eq!(nudge.http("GET", "/health", None).0, 200);
    nudge.stop();
}

#[test]
fn overdue_follow_up_fires_the_workflow_once_on_the_daemon_clock() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();

    // A new lead: first-contact.toml tells the owner and sets the first follow-up 24 h out.
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Wang Fang",
        "--email",
        "wang@example.com",
        "--owner",
        "rep@corp.test",
    ]);
    smtp.wait_for("rep@corp.test", "New lead: Wang Fang");
    // A second lead whose rep logs the follow-up in time gets no reminder.
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Chen Jie",
        "--email",
        "chen@example.com",
        "--owner",
        "rep@corp.test",
    ]);
    smtp.wait_for("rep@corp.test", "New lead: Chen Jie");
    nudge.settle();

    nudge.advance("20h");
    nudge.cli(&[
        "followup",
        "log",
        "chen@example.com",
        "--channel",
        "phone",
        "--summary",
        "intro call",
        "--intent",
        "B",
        "--next",
        "5d",
    ]);
    nudge.settle();
    assert!(
        smtp.mails_to("rep@corp.test")
            .iter()
            .all(|m| !m.subject.contains("Overdue")),
        "nothing is overdue yet"
    );

    // 24 h due + 2 h grace (overdue-reminder.toml) has passed for Wang Fang only.
    nudge.advance("6h 1m");
    let reminder = smtp.wait_for("rep@corp.test", "Overdue follow-up: Wang Fang");
    assert!(reminder.text.contains("nudge followup log"), "{}", reminder.text);
    nudge.settle();
    let overdue: Vec<_> = smtp
        .mails_to("rep@corp.test")
        .into_iter()
        .filter(|m| m.subject.contains("Overdue"))
        .collect();
    assert_eq!(overdue.len(), 1, "one reminder, for Wang Fang only: {overdue:#?}");
    let status = nudge.status();
    assert_eq!(
        status["overdue_by_owner"][0],
        json!({"owner": "rep@corp.test", "overdue": 1, "oldest_due_at": status["overdue_by_owner"][0]["oldest_due_at"]})
    );

    // The rep logs it: the second reminder (a day later) is cancelled.
    nudge.cli(&[
        "followup",
        "log",
        "wang@example.com",
        "--channel",
        "wechat",
        "--summary",
        "sent catalogue",
    ]);
    nudge.advance("2d");
    nudge.settle();
    assert!(
        smtp.mails_to("rep@corp.test")
            .iter()
            .all(|m| !m.subject.contains("Still overdue")),
        "{:#?}",
        smtp.mails()
    );
    nudge.stop();
}

#[test]
fn unanswered_inquiry_escalates_to_the_owner_and_a_reply_in_time_cancels_it() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();

    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Big Buyer",
        "--email",
        "big@example.com",
        "--owner",
        "director@corp.test",
        "--tier",
        "high",
    ]);
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Quick Reply",
        "--email",
        "quick@example.com",
        "--owner",
        "rep@corp.test",
        "--tier",
        "high",
    ]);
    nudge.settle();
    for contact in ["big@example.com", "quick@example.com"] {
        let (status, body) = nudge.http(
            "POST",
            &format!("/contacts/{contact}/inquiries"),
            Some(r#"{"message": "price for 10k units?", "channel": "web"}"#),
        );
        assert_eq!(status, 202, "{body}");
    }
    // The customer is thanked at once (inquiry-received.toml).
    smtp.wait_for("big@example.com", "thank you for your inquiry");
    nudge.settle();

    // The rep answers Quick Reply within 5 minutes (the high-tier SLA).
    nudge.advance("3m");
    nudge.cli(&[
        "followup",
        "log",
        "quick@example.com",
        "--channel",
        "phone",
        "--summary",
        "quoted",
        "--next",
        "2d",
    ]);
    nudge.settle();
    assert!(
        smtp.mails().iter().all(|m| !m.subject.contains("Unanswered")),
        "SLA not yet passed"
    );

    nudge.advance("3m");
    let escalation = smtp.wait_for("director@corp.test", "Unanswered inquiry: Big Buyer");
    assert!(escalation.text.contains("high"), "{}", escalation.text);
    nudge.advance("20m");
    smtp.wait_for("director@corp.test", "Escalation: inquiry from Big Buyer");
    nudge.settle();
    assert!(
        smtp.mails_to("rep@corp.test")
            .iter()
            .all(|m| !m.subject.contains("inquiry")),
        "an answered inquiry does not escalate: {:#?}",
        smtp.mails_to("rep@corp.test")
    );
    let contact = nudge.cli(&["contact", "show", "big@example.com"]);
    assert!(
        contact.contains("stage inquiry"),
        "the lead moved to the inquiry stage: {contact}"
    );
    nudge.stop();
}

#[test]
fn an_invalid_edit_is_reported_with_its_position_and_the_previous_version_keeps_running() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();
    let file = nudge.path("workflows/intent-proposal.toml");
    let original = std::fs::read_to_string(&file).unwrap();

    // Break it: a typo in a step key on line 14 ("[[steps]]" then "sned = ...").
    let broken = original.replacen("send = { channel", "sned = { channel", 1);
    let line = broken.lines().position(|l| l.starts_with("sned")).unwrap() + 1;
    std::fs::write(&file, &broken).unwrap();
    let position = format!("intent-proposal.toml:{line}:1");
    let log = nudge.wait_for_log(&position);
    assert!(
        log.contains("unknown field `sned`") && log.contains("did you mean `send`?"),
        "{log}"
    );
    let (ok, _, stderr) = nudge.try_cli(&["check"]);
    assert!(!ok, "check fails on the broken file");
    assert!(
        stderr.contains(&position) && stderr.contains("help: did you mean `send`?"),
        "{stderr}"
    );

    // The last good version still fires.
    nudge.cli(&["contact", "add", "--name", "Zhou Min", "--email", "zhou@example.com"]);
    nudge.cli(&["stage", "set", "zhou@example.com", "intent"]);
    smtp.wait_for("zhou@example.com", "Zhou Min, a proposal");

    // A valid edit is swapped in: the new vars reach the next message.
    std::fs::write(
        &file,
        original.replace("free samples and a first-order discount", "a 5 % loyalty discount"),
    )
    .unwrap();
    nudge.wait_for_log("workflows reloaded");
    nudge.cli(&["contact", "add", "--name", "Sun Li", "--email", "sun@example.com"]);
    nudge.cli(&["stage", "set", "sun@example.com", "intent"]);
    let mail = smtp.wait_for("sun@example.com", "Sun Li, a proposal");
    assert!(mail.text.contains("a 5 % loyalty discount"), "{}", mail.text);
    nudge.stop();
}

#[test]
fn pending_timers_fire_once_after_a_restart() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();

    // after-sample.toml waits 3 days, then asks how the samples are.
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Liu Yang",
        "--email",
        "liu@example.com",
        "--stage",
        "intent",
        "--locale",
        "zh",
    ]);
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Ma Lin",
        "--email",
        "ma@example.com",
        "--stage",
        "intent",
    ]);
    nudge.cli(&["stage", "set", "liu@example.com", "sample"]);
    nudge.cli(&["stage", "set", "ma@example.com", "sample"]);
    nudge.settle();
    assert_eq!(nudge.status()["runs"]["waiting"], 2, "{}", nudge.status());

    // Stopped cleanly for one, killed for the other restart; time passes meanwhile.
    nudge.stop();
    nudge.advance("3d 1m");
    nudge.start();
    let zh = smtp.wait_for("liu@example.com", "样品收到了吧");
    assert_eq!(zh.subject, "Liu Yang，样品收到了吧？");
    smtp.wait_for("ma@example.com", "did the samples arrive");
    nudge.settle();
    nudge.kill();
    nudge.start();
    nudge.advance("1d");
    nudge.settle();
    nudge.stop();
    for address in ["liu@example.com", "ma@example.com"] {
        let mails = smtp.mails_to(address);
        assert_eq!(mails.len(), 1, "exactly one sample check to {address}: {mails:#?}");
    }
}

#[test]
fn check_accepts_the_shipped_workflows() {
    let out = std::process::Command::new(common::BIN)
        .current_dir(common::repo_root())
        .args(["--config", "/nonexistent-is-refused.toml", "check"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an explicit config path that does not exist is an error"
    );
    let out = std::process::Command::new(common::BIN)
        .current_dir(common::repo_root())
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("ok: 19 workflows"), "{stdout}");
}

#[test]
fn a_step_that_fails_is_retried_alone_while_the_rest_of_its_batch_goes_on() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.write_workflow(
        "welcome-tag.toml",
        "[trigger]\non = \"contact_created\"\n\n[[steps]]\ntag = \"welcomed\"\n",
    );
    // Three new contacts, taken in one batch when the daemon starts; the
    // database refuses to change the second one's tags.
    for name in ["a", "b", "c"] {
        nudge.cli(&[
            "contact",
            "add",
            "--name",
            name,
            "--email",
            &format!("{name}@example.com"),
        ]);
    }
    nudge.sql(
        "CREATE TRIGGER refuse_b BEFORE UPDATE OF tags ON contacts WHEN NEW.email = 'b@example.com'
         BEGIN SELECT RAISE(ABORT, 'the tags of b are locked'); END;",
    );
    nudge.start();
    nudge.settle();
    let tags = |email: &str| -> Value {
        let contact: Value = serde_json::from_str(&nudge.cli(&["contact", "show", email, "--json"])).unwrap();
        contact["contact"]["tags"].clone()
    };
    assert_eq!(tags("a@example.com"), json!(["welcomed"]), "{}", nudge.log());
    assert_eq!(tags("c@example.com"), json!(["welcomed"]));
    assert_eq!(tags("b@example.com"), json!([]));
    let status = nudge.status();
    let reasons = status["waiting_reasons"].to_string();
    assert!(
        reasons.contains("error 1 of 8") && reasons.contains("the tags of b are locked"),
        "the failing step waits for its retry and says why: {status:#}"
    );
    assert!(nudge.log().contains("applying them one by one"), "{}", nudge.log());

    // Once the database lets it, the retry after the backoff tags b too, once.
    nudge.sql("DROP TRIGGER refuse_b;");
    nudge.advance("1m");
    nudge.settle();
    assert_eq!(tags("b@example.com"), json!(["welcomed"]), "{}", nudge.log());
    nudge.stop();
}

/// With `[smtp]` set, mail leaves the machine: links that point at loopback or
/// plain http are flagged by `nudge check` and at start, and a public https
/// address is not.
#[test]
fn links_in_real_mail_to_loopback_or_plain_http_are_warned_about() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let check_warning = |base_url: Option<&str>| {
        let extra = base_url.map_or(String::new(), |b| format!("[unsubscribe]\nbase_url = \"{b}\"\n"));
        let nudge = Nudge::with_config(&smtp, MONDAY_9AM, &extra);
        let (ok, _, stderr) = nudge.try_cli(&["check"]);
        assert!(ok, "{stderr}");
        stderr.lines().find(|l| l.starts_with("warning:")).map(str::to_string)
    };
    let default = check_warning(None).expect("the default loopback base_url is flagged");
    assert!(
        default.contains("http://127.0.0.1:") && default.contains("loopback") && default.contains("base_url"),
        "{default}"
    );
    let plain = check_warning(Some("http://nudge.example.com")).expect("plain http is flagged");
    assert!(plain.contains("plain http"), "{plain}");
    assert_eq!(check_warning(Some("https://nudge.example.com")), None);

    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();
    nudge.wait_for_log("links in email start with http://127.0.0.1:");
    nudge.stop();
}
