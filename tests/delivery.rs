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
    refusals_are_retried(true);
}

/// The same exchange, command by command, with a server that does not pipeline.
#[test]
fn a_server_without_pipelining_gets_one_command_at_a_time_and_refusals_count_the_same() {
    refusals_are_retried(false);
}

fn refusals_are_retried(pipelining: bool) {
    let tmp = scratch();
    let smtp = if pipelining {
        SmtpServer::start(tmp.path())
    } else {
        SmtpServer::start_without_pipelining(tmp.path())
    };
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
    assert_eq!(mails[0].pipelined, pipelining, "{mails:#?}");
    assert_eq!(smtp.faults_left(), json!({"mail": [], "rcpt": [], "data": []}));
    nudge.stop();
}

/// Many clients at once: the engine hands most new rows straight to delivery,
/// and with few send slots the rest wait for its claims; either way each
/// message goes once, and a suppressed address is caught on the handed path too.
#[test]
fn a_burst_of_stage_changes_from_many_clients_sends_each_message_exactly_once() {
    const CLIENTS: usize = 8;
    const EACH: usize = 30;
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, "[delivery]\nconcurrency = 3\n");
    let address = |client: usize, i: usize| format!("burst-{client}-{i}@example.com");
    let blocked = address(3, 7);
    nudge.cli(&["suppress", "add", &blocked, "--detail", "asked by phone"]);
    nudge.start();
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (nudge, address) = (&nudge, &address);
            scope.spawn(move || {
                for i in 0..EACH {
                    let body = json!({"name": format!("Lead {client}-{i}"), "company": "Burst Ltd",
                                      "email": address(client, i), "stage": "intent"});
                    let (status, answer) = nudge.http("POST", "/stage-changes", Some(&body.to_string()));
                    assert_eq!(status, 202, "{answer}");
                }
            });
        }
    });
    let expected = CLIENTS * EACH - 1;
    wait_until(
        || (smtp.mails().len() >= expected).then_some(()),
        || format!("{} of {expected} delivered\n{}", smtp.mails().len(), nudge.status()),
    );
    nudge.settle();
    assert_eq!(
        smtp.mails().len(),
        expected,
        "one message for each address but the suppressed one"
    );
    for client in 0..CLIENTS {
        for i in 0..EACH {
            let to = address(client, i);
            let want = usize::from(to != blocked);
            assert_eq!(smtp.mails_to(&to).len(), want, "{to}");
        }
    }
    let rows = outbox(&nudge);
    assert_eq!(rows.len(), CLIENTS * EACH);
    for row in &rows {
        if row["recipient"] == blocked.as_str() {
            assert_eq!(row["status"], "suppressed", "{row}");
        } else {
            assert_eq!((&row["status"], &row["attempts"]), (&json!("sent"), &json!(1)), "{row}");
        }
    }
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
    // The second message opens a session of its own; once sent, that session
    // takes the first message too, which need not wait out the hung one.
    let second = add_contact(&nudge, "Ma", &[]);
    nudge.cli(&["inquiry", "add", &second]);
    for to in [&first, &second] {
        let row = wait_for_row(&nudge, to, |r| r["status"] == "sent");
        assert_eq!(row["attempts"], 1, "{row}");
    }

    // A session that hangs in the middle of a message holds that message alone.
    smtp.script_faults(json!({ "mail": ["hang"] }));
    let third = add_contact(&nudge, "Ning", &[]);
    nudge.cli(&["inquiry", "add", &third]);
    wait_until(
        || (smtp.faults_left()["mail"] == json!([])).then_some(()),
        || "the third message never reached MAIL".into(),
    );
    let fourth = add_contact(&nudge, "Ou", &[]);
    nudge.cli(&["inquiry", "add", &fourth]);
    smtp.wait_for(&fourth, "");
    // The hung session is still within its 10 s deadline.
    assert!(smtp.mails_to(&third).is_empty());
    let row = wait_for_row(&nudge, &third, |r| r["attempts"] == 1);
    assert_eq!(row["status"], "pending", "a hang before the body is retried: {row}");
    assert!(
        row["last_error"].as_str().unwrap().contains("before the message body"),
        "{row}"
    );

    // Now the server is down for a while: that is the relay's fault, not the
    // messages'. Email is held (no attempt charged) while the relay is probed;
    // nothing is lost.
    smtp.stop();
    nudge.advance("1m");
    wait_until(
        || (nudge.status()["relay"]["state"] == "open").then_some(()),
        || format!("the relay's breaker never opened: {:#}", nudge.status()),
    );
    let fifth = add_contact(&nudge, "Pei", &[]);
    nudge.cli(&["inquiry", "add", &fifth]);
    wait_for_row(&nudge, &fifth, |r| r["status"] == "pending");
    nudge.advance("3m");
    let relay = wait_until(
        || {
            Some(nudge.status()["relay"].clone())
                .filter(|r| r["next_probe_at"].as_i64() > r["open_since"].as_i64().map(|t| t + 5_000))
        },
        || format!("the relay was never probed: {:#}", nudge.status()),
    );
    assert!(relay["last_reply"].as_str().unwrap().starts_with("connect:"), "{relay}");
    for (to, attempts) in [(&third, 1), (&fifth, 0)] {
        let row = wait_for_row(&nudge, to, |_| true);
        assert_eq!(
            (&row["status"], &row["attempts"]),
            (&json!("pending"), &json!(attempts)),
            "{row}"
        );
    }
    smtp.restart();
    nudge.advance("10m");
    for to in [&first, &second, &third, &fourth, &fifth] {
        wait_for_row(&nudge, to, |r| r["status"] == "sent");
        assert_eq!(smtp.mails_to(to).len(), 1, "{to} got one message");
    }
    nudge.stop();
}

#[test]
fn an_api_write_waits_while_the_message_of_an_earlier_one_is_unsent() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // The first session hangs after the greeting, until the send's 10 s deadline.
    smtp.script_faults(json!({ "ehlo": ["hang"] }));
    // A hold far longer than the test's patience: only the attempt can end it.
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, "max_unsent = 1\nmax_hold_ms = 600000");
    nudge.start();
    let first = add_contact(&nudge, "Ou", &[]);
    let second = add_contact(&nudge, "Pan", &[]);
    let inquiry = |to: &str| nudge.http("POST", &format!("/contacts/{to}/inquiries"), Some("{}")).0;
    assert_eq!(inquiry(&first), 202);
    wait_until(
        || (smtp.faults_left()["ehlo"] == json!([])).then_some(()),
        || "the first message's session never reached EHLO".into(),
    );
    // The second inquiry waits while the first thank-you is unsent (its session
    // hangs until the send's 10 s deadline), and is answered after that.
    std::thread::scope(|scope| {
        let held = scope.spawn(|| inquiry(&second));
        std::thread::sleep(std::time::Duration::from_secs(2));
        let row = outbox(&nudge).into_iter().find(|r| r["recipient"] == first).unwrap();
        assert_eq!(row["attempts"], 0, "the first send is still hung: {row}");
        assert!(!held.is_finished(), "answered while the first message was unsent");
        wait_until(
            || held.is_finished().then_some(()),
            || "the second inquiry was still held after the first message's attempt".into(),
        );
        assert_eq!(held.join().unwrap(), 202);
    });
    // No session opened in time: the relay's fault, not the message's. Email is
    // held, uncharged, until the relay's first probe (5 s on) gets a session.
    assert_eq!(nudge.status()["relay"]["state"], "open");
    nudge.advance("5s");
    wait_for_row(&nudge, &first, |r| r["status"] == "sent" && r["attempts"] == 1);
    smtp.wait_for(&second, "");
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

/// A marketing workflow on a stage change, with a template of its own.
fn marketing_on_stage(nudge: &Nudge, name: &str, to_stage: &str, window: Option<&str>) {
    let window = window.map(|w| format!("send_window = \"{w}\"\n")).unwrap_or_default();
    nudge.write_workflow(
        &format!("templates/{name}.toml"),
        &format!("[{name}]\nchannel = \"email\"\nsubject = \"{name} for {{{{ contact.name }}}}\"\ntext = \"Hello {{{{ contact.name }}}}\"\n"),
    );
    nudge.write_workflow(
        &format!("{name}.toml"),
        &format!(
            "category = \"marketing\"\n{window}[trigger]\non = \"stage_changed\"\nto = \"{to_stage}\"\n\n[[steps]]\nsend = {{ channel = \"email\", template = \"{name}\" }}\n"
        ),
    );
}

fn set_clock(nudge: &Nudge, at: &str) {
    nudge.cli(&["clock", "--set", at]);
}

#[test]
fn send_windows_follow_each_contacts_own_time_zone_across_a_dst_change() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // Saturday noon UTC, the day before New York moves its clocks forward (2026-03-08).
    let mut nudge = Nudge::new(&smtp, "2026-03-07T12:00:00Z");
    marketing_on_stage(&nudge, "window_test", "repeat", Some("weekday_mornings"));
    nudge.start();
    let ny = add_contact(&nudge, "Ren", &["--tz", "America/New_York"]);
    let sh = add_contact(&nudge, "Shi", &["--tz", "Asia/Shanghai"]);
    for to in [&ny, &sh] {
        nudge.cli(&["stage", "set", to, "repeat"]);
    }
    nudge.settle();
    let status = nudge.status();
    assert_eq!(status["runs"]["waiting"], 2, "both wait for Monday morning: {status}");
    assert!(nudge.log().contains("outside the send window `weekday_mornings`"));
    // Monday 09:00 in Shanghai (UTC+8, no DST) is 01:00Z.
    set_clock(&nudge, "2026-03-09T00:59:00Z");
    nudge.settle();
    assert!(smtp.mails().is_empty(), "{:#?}", smtp.mails());
    set_clock(&nudge, "2026-03-09T01:00:00Z");
    smtp.wait_for(&sh, "window_test");
    // Monday 09:00 in New York is now EDT (UTC-4): 13:00Z, not the 14:00Z of winter time.
    set_clock(&nudge, "2026-03-09T12:59:00Z");
    nudge.settle();
    assert!(smtp.mails_to(&ny).is_empty());
    set_clock(&nudge, "2026-03-09T13:00:00Z");
    smtp.wait_for(&ny, "window_test");
    nudge.settle();
    assert_eq!(smtp.mails().len(), 2, "one message each: {:#?}", smtp.mails());
    nudge.stop();
}

#[test]
fn a_frequency_cap_across_workflows_defers_the_third_message_to_the_next_free_slot() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, "2026-11-23T10:00:00Z");
    // Three workflows, one marketing email each; sending.toml allows 2 a week.
    marketing_on_stage(&nudge, "cap_one", "repeat", None);
    marketing_on_stage(&nudge, "cap_two", "loyal", None);
    marketing_on_stage(&nudge, "cap_three", "dormant", None);
    nudge.start();
    let to = add_contact(&nudge, "Tang", &[]);
    for (stage, hour) in [("repeat", "10"), ("loyal", "11"), ("dormant", "12")] {
        set_clock(&nudge, &format!("2026-11-23T{hour}:00:00Z"));
        nudge.cli(&["stage", "set", &to, stage]);
        nudge.settle();
    }
    assert_eq!(smtp.mails_to(&to).len(), 2, "{:#?}", smtp.mails());
    assert!(
        nudge
            .log()
            .contains("frequency cap reached (2 marketing email per 7d: 2 already)"),
        "{}",
        nudge.log()
    );
    let status = nudge.status();
    assert_eq!(status["runs"]["waiting"], 1, "{status}");
    // The first of the two leaves the 7-day period at 10:00 next Monday.
    set_clock(&nudge, "2026-11-30T09:59:00Z");
    nudge.settle();
    assert_eq!(smtp.mails_to(&to).len(), 2);
    set_clock(&nudge, "2026-11-30T10:00:01Z");
    smtp.wait_for(&to, "cap_three");
    // A transactional message is never held back by the marketing cap.
    nudge.cli(&["inquiry", "add", &to]);
    nudge.settle();
    assert_eq!(smtp.mails_to(&to).len(), 4, "{:#?}", smtp.mails());
    nudge.stop();
}

/// The shipped nurture drip, switched on.
fn enable_nurture(nudge: &Nudge) {
    let path = nudge.path("workflows/nurture-leads.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("enabled = false"));
    std::fs::write(&path, text.replace("enabled = false", "enabled = true")).unwrap();
}

#[test]
fn a_reply_or_an_order_during_a_wait_stops_the_nurture_sequence() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // Monday 10:00 UTC: inside the shipped `nurture` window (weekdays 10-11, 15-16).
    let mut nudge = Nudge::new(&smtp, "2026-11-23T10:00:00Z");
    let quiet = add_contact(&nudge, "Wu", &[]);
    let talker = add_contact(&nudge, "Xu", &[]);
    let buyer = add_contact(&nudge, "Bai", &[]);
    let customer = add_contact(&nudge, "Yan", &["--stage", "first_order"]);
    enable_nurture(&nudge);
    nudge.start();
    // The segment (leads with an email) is enrolled when the daemon loads the workflow.
    smtp.wait_for(&quiet, "a few things we can do");
    smtp.wait_for(&talker, "a few things we can do");
    smtp.wait_for(&buyer, "a few things we can do");
    nudge.settle();
    assert!(smtp.mails_to(&customer).is_empty(), "not in the segment");
    let passes = nudge.cli(&["segment", "list"]);
    assert!(passes.contains("nurture-leads") && passes.contains("done"), "{passes}");
    // Xu answers the phone during the 3-day wait.
    nudge.cli(&[
        "followup",
        "log",
        &talker,
        "--channel",
        "phone",
        "--summary",
        "wants a quote",
    ]);
    // Bai orders without a word.
    nudge.cli(&["order", "add", "--id", "SO-1", "--contact", &buyer, "--amount", "1200"]);
    nudge.settle();
    set_clock(&nudge, "2026-11-26T10:00:00Z");
    smtp.wait_for(&quiet, "this season's new products");
    nudge.settle();
    assert_eq!(smtp.mails_to(&talker).len(), 1, "{:#?}", smtp.mails_to(&talker));
    assert!(nudge.log().contains("exit condition met: replied"), "{}", nudge.log());
    assert!(
        smtp.mails_to(&buyer)
            .iter()
            .all(|m| !m.subject.contains("new products")),
        "{:#?}",
        smtp.mails_to(&buyer)
    );
    assert!(nudge.log().contains("exit condition met: ordered"), "{}", nudge.log());
    // The next daily pass does not enrol anyone twice.
    set_clock(&nudge, "2026-11-27T10:00:00Z");
    nudge.settle();
    assert_eq!(smtp.mails_to(&quiet).len(), 2);
    nudge.stop();
}

#[test]
fn one_click_unsubscribe_suppresses_at_once_and_a_forged_token_is_refused() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, "2026-11-23T10:00:00Z");
    let to = add_contact(&nudge, "Zhao", &[]);
    enable_nurture(&nudge);
    nudge.start();
    let mail = smtp.wait_for(&to, "a few things we can do");
    assert_eq!(mail.list_unsubscribe_post, "List-Unsubscribe=One-Click");
    let url = mail
        .list_unsubscribe
        .split(['<', '>'])
        .find(|part| part.starts_with("http"))
        .unwrap_or_else(|| panic!("no https unsubscribe in {:?}", mail.list_unsubscribe))
        .to_string();
    assert!(
        mail.list_unsubscribe
            .contains("<mailto:unsubscribe@nudge.test?subject="),
        "{}",
        mail.list_unsubscribe
    );
    assert!(
        mail.text.contains(&url),
        "the link is visible in the body too: {}",
        mail.text
    );
    let path = &url[url.find("/unsubscribe/").unwrap()..];
    // A forged or altered token changes nothing.
    let mut forged = path.to_string();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _) = nudge.http_with_token("POST", &forged, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(status, 404);
    let (status, _) = nudge.http_with_token("POST", "/unsubscribe/AAAA", Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(status, 404);
    assert!(!nudge.cli(&["suppress", "list"]).contains(&to));
    // Opening the link shows a button and changes nothing (mail scanners open links).
    let (status, page) = nudge.http_with_token("GET", path, None, None);
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("<form method=post"), "{page}");
    assert!(!nudge.cli(&["suppress", "list"]).contains(&to));
    // The one-click POST, as a mail client sends it: no token, no redirect.
    let (status, page) = nudge.http_with_token("POST", path, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(status, 200, "{page}");
    let list = nudge.cli(&["suppress", "list"]);
    assert!(
        list.contains(&to) && list.contains("unsubscribed") && list.contains("marketing"),
        "{list}"
    );
    // The drip stops at once; the answer to an inquiry, which the one-click
    // unsubscribe does not withdraw (tests/playbook/consent.rs), still goes out.
    nudge.cli(&["inquiry", "add", &to]);
    nudge.settle();
    set_clock(&nudge, "2026-11-26T10:00:00Z");
    nudge.settle();
    let subjects: Vec<String> = smtp.mails_to(&to).into_iter().map(|m| m.subject).collect();
    assert_eq!(subjects.len(), 2, "{subjects:#?}");
    assert!(subjects[1].contains("thank you for your inquiry"), "{subjects:#?}");
    assert!(
        nudge.log().contains("exit condition met: unsubscribed"),
        "{}",
        nudge.log()
    );
    nudge.stop();
}

#[test]
fn kill_9_during_a_nurture_run_loses_no_message_and_repeats_only_those_in_flight() {
    const CONTACTS: usize = 2000;
    const KILLS: usize = 4;
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, "2026-11-23T10:00:00Z");
    let csv: String = std::iter::once("name,email,stage\n".to_string())
        .chain((0..CONTACTS).map(|i| format!("Lead {i},lead{i}@example.com,lead\n")))
        .collect();
    std::fs::write(nudge.path("leads.csv"), csv).unwrap();
    nudge.cli(&["contact", "import", nudge.path("leads.csv").to_str().unwrap()]);
    enable_nurture(&nudge);
    // Kill at pseudo-random points (seeded from the clock, printed for a re-run).
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill points seeded with {seed}");
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % 1200 + 200
    };
    for round in 0..KILLS {
        nudge.start();
        let pause = next();
        std::thread::sleep(std::time::Duration::from_millis(pause));
        println!(
            "round {round}: kill -9 after {pause} ms with {} messages at the server",
            smtp.mails().len()
        );
        nudge.kill();
    }
    nudge.start();
    let mails = wait_until(
        || {
            let mails = smtp.mails();
            let unique: std::collections::HashSet<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
            (unique.len() >= CONTACTS).then_some(mails.clone())
        },
        || format!("{} of {CONTACTS} delivered\n{}", smtp.mails().len(), nudge.status()),
    );
    nudge.settle();
    let mut per_id = std::collections::HashMap::<&str, Vec<&str>>::new();
    for m in &mails {
        per_id.entry(&m.message_id).or_default().push(&m.to[0]);
    }
    // Every lead got its first drip message, each under its own stable Message-ID.
    assert_eq!(per_id.len(), CONTACTS);
    for (id, recipients) in &per_id {
        assert!(
            recipients.iter().all(|r| *r == recipients[0]),
            "{id} went to {recipients:?}"
        );
    }
    // A copy can only come from a send in flight at a kill: the sends under way plus the
    // finished ones waiting for their record, at most twice `concurrency` (32) per kill.
    let duplicates = mails.len() - per_id.len();
    println!("{duplicates} duplicates after {KILLS} kills");
    assert!(duplicates <= KILLS * 2 * 32, "{duplicates} duplicates");
    let rows = outbox(&nudge);
    assert_eq!(rows.len(), CONTACTS);
    assert!(rows.iter().all(|r| r["status"] == "sent"), "every row recorded as sent");
    nudge.stop();
}
