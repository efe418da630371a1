//! docs/domain.md §5, "every mail has a clear opt-out that is honoured at once",
//! as issue 31 item 2 asks it: the one-click unsubscribe of a marketing mail
//! stops marketing only (the answer to an inquiry and the sample check still go
//! out); the unsubscribe page's second button stops all email, and the owner
//! hears of each answer or check withheld; the contact's history shows both.

use serde_json::Value;

use crate::common::{Nudge, SmtpServer, scratch};

/// Monday 10:00 UTC: inside the shipped `nurture` send window.
const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";
const OWNER: &str = "rep@example.com";

/// A lead owned by `OWNER`; its email address.
fn add_lead(nudge: &Nudge, name: &str, locale: &str) -> String {
    let email = format!("{}@example.com", name.to_lowercase());
    nudge.cli(&[
        "contact", "add", "--name", name, "--email", &email, "--owner", OWNER, "--locale", locale,
    ]);
    email
}

fn enable_nurture(nudge: &Nudge) {
    let path = nudge.path("workflows/nurture-leads.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("enabled = false", "enabled = true")).unwrap();
}

/// The path of the unsubscribe link in the first nurture mail to `to`.
fn unsubscribe_path(smtp: &SmtpServer, to: &str) -> String {
    // The first nurture mail, in whichever language the contact reads.
    let mail = crate::common::wait_until(
        || smtp.mails_to(to).into_iter().find(|m| !m.list_unsubscribe.is_empty()),
        || format!("no marketing mail to {to}: {:?}", smtp.mails_to(to)),
    );
    let url = mail
        .list_unsubscribe
        .split(['<', '>'])
        .find(|part| part.starts_with("http"))
        .unwrap_or_else(|| panic!("no https unsubscribe in {:?}", mail.list_unsubscribe))
        .to_string();
    url[url.find("/unsubscribe/").unwrap()..].to_string()
}

/// POSTs as a mail client's one-click button (RFC 8058) or a page's form does.
fn post(nudge: &Nudge, path: &str) -> String {
    let (status, page) = nudge.http_with_token("POST", path, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(status, 200, "{page}");
    page.as_str().unwrap_or_default().to_string()
}

fn page(nudge: &Nudge, path: &str) -> String {
    let (status, _, body) = nudge.get_raw(path);
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

/// The workflows whose messages went to `to`, in the order they were queued.
fn sent_by(nudge: &Nudge, to: &str) -> Vec<String> {
    let rows = nudge.query(&format!(
        "SELECT r.workflow FROM outbox o JOIN runs r ON r.id = o.run_id
         WHERE o.recipient = '{to}' AND o.status = 'sent' ORDER BY o.id"
    ));
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

/// The owner's notices of messages withheld from `name`.
fn notices_about(smtp: &SmtpServer, name: &str) -> Vec<String> {
    smtp.mails_to(OWNER)
        .into_iter()
        .map(|m| m.subject)
        .filter(|s| s.starts_with("Not sent:") && s.contains(name))
        .collect()
}

/// The run steps of `workflow` for `to`, as the run records them.
fn step_details(nudge: &Nudge, workflow: &str, to: &str) -> Vec<String> {
    let rows = nudge.query(&format!(
        "SELECT s.detail FROM run_steps s JOIN runs r ON r.id = s.run_id JOIN contacts c ON c.id = r.contact_id
         WHERE r.workflow = '{workflow}' AND c.email = '{to}' ORDER BY s.run_id, s.step"
    ));
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

/// The withdrawals in a contact's history (`contact show --json` or the API): (scope, by).
fn withdrawals(card: &Value) -> Vec<(String, String)> {
    card["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["field"] == "unsubscribed")
        .map(|h| {
            (
                h["to_value"].as_str().unwrap().to_string(),
                h["changed_by"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_one_click_unsubscribe_stops_the_drip_but_not_the_answer_or_the_sample_check() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    let to = add_lead(&nudge, "Zhao", "en");
    enable_nurture(&nudge);
    nudge.start();
    let path = unsubscribe_path(&smtp, &to);
    post(&nudge, &path);
    // A mail client may POST twice; the second changes nothing.
    post(&nudge, &path);
    let suppressions = nudge.cli(&["suppress", "list"]);
    assert!(
        suppressions.contains(&to) && suppressions.contains("marketing"),
        "{suppressions}"
    );
    // Day 3 of the drip passes: no more nurture mail.
    nudge.advance("3d");
    nudge.settle();
    assert_eq!(sent_by(&nudge, &to), ["nurture-leads"]);
    // Later they ask something: the answer goes out, and so does the sample check.
    nudge.cli(&["inquiry", "add", &to]);
    nudge.settle();
    smtp.wait_for(&to, "thank you for your inquiry");
    nudge.cli(&["stage", "set", &to, "sample"]);
    nudge.settle();
    nudge.advance("3d");
    nudge.settle();
    smtp.wait_for(&to, "did the samples arrive");
    nudge.advance("14d");
    nudge.settle();
    assert_eq!(
        sent_by(&nudge, &to),
        ["nurture-leads", "inquiry-received", "after-sample"]
    );
    // The drip's end is on its run; nobody is told of an unsubscribe the contact chose.
    let outcome = nudge.query(&format!(
        "SELECT r.outcome FROM runs r JOIN contacts c ON c.id = r.contact_id
         WHERE r.workflow = 'nurture-leads' AND c.email = '{to}'"
    ));
    assert_eq!(outcome[0][0], "exit condition met: unsubscribed");
    assert_eq!(notices_about(&smtp, "Zhao"), Vec::<String>::new());
    // The history says what, when and from which message.
    let card: Value = serde_json::from_str(&nudge.cli(&["contact", "show", &to, "--json"])).unwrap();
    let found = withdrawals(&card);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "marketing");
    assert!(
        found[0].1.starts_with("one-click unsubscribe in <run") && found[0].1.ends_with("(workflow nurture-leads)"),
        "{found:?}"
    );
    nudge.stop();
}

#[test]
fn stop_all_email_withholds_the_answer_and_the_sample_check_and_tells_the_owner() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    let to = add_lead(&nudge, "Qian", "en");
    enable_nurture(&nudge);
    nudge.start();
    let path = unsubscribe_path(&smtp, &to);
    // First the one-click button; then, on the page, the explicit second choice.
    post(&nudge, &path);
    let landing = page(&nudge, &path);
    let stop_all = format!("action=\"{path}/all\"");
    assert!(landing.contains(&stop_all), "{landing}");
    assert!(landing.contains("Stop all email from us"), "{landing}");
    let done = post(&nudge, &format!("{path}/all"));
    assert!(done.contains("You will receive no more email from us"), "{done}");
    post(&nudge, &format!("{path}/all"));
    assert!(
        nudge.cli(&["contact", "show", &to]).contains("consent withdrawn"),
        "{}",
        nudge.cli(&["contact", "show", &to])
    );
    // Their inquiry gets no answer by mail, and the samples no check: the owner hears of each.
    nudge.cli(&["inquiry", "add", &to]);
    nudge.settle();
    nudge.cli(&["stage", "set", &to, "sample"]);
    nudge.settle();
    nudge.advance("3d");
    nudge.settle();
    assert_eq!(sent_by(&nudge, &to), ["nurture-leads"]);
    let notices = notices_about(&smtp, "Qian");
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices.iter().any(|s| s.contains("inquiry-received")), "{notices:?}");
    assert!(notices.iter().any(|s| s.contains("after-sample")), "{notices:?}");
    let notice = smtp
        .mails_to(OWNER)
        .into_iter()
        .find(|m| m.subject.contains("after-sample"))
        .unwrap();
    assert!(notice.text.contains("\"sample_check\""), "{}", notice.text);
    let answer = step_details(&nudge, "inquiry-received", &to);
    assert!(
        answer[0].starts_with("skipped: consent withdrawn for all email; the owner is told: queued <"),
        "{answer:?}"
    );
    // Both withdrawals are in the history, newest first, in the CLI and the API alike.
    let card: Value = serde_json::from_str(&nudge.cli(&["contact", "show", &to, "--json"])).unwrap();
    let found = withdrawals(&card);
    let scopes: Vec<&str> = found.iter().map(|(scope, _)| scope.as_str()).collect();
    assert_eq!(scopes, ["all", "marketing"], "{found:?}");
    assert!(
        found[0].1.starts_with("unsubscribe page: stop all email in <run"),
        "{found:?}"
    );
    let id = card["contact"]["id"].as_i64().unwrap();
    let (status, api_card) = nudge.http("GET", &format!("/contacts/{id}"), None);
    assert_eq!(status, 200);
    assert_eq!(withdrawals(&api_card), found);
    let text = nudge.cli(&["contact", "show", &to]);
    assert!(
        text.contains("unsubscribed - -> all by unsubscribe page: stop all email")
            && text.contains("unsubscribed - -> marketing by one-click unsubscribe"),
        "{text}"
    );
    nudge.stop();
}

#[test]
fn the_unsubscribe_page_speaks_chinese_to_a_zh_cn_contact_and_loads_nothing_else() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    let zh = add_lead(&nudge, "Sun", "zh-CN");
    let en = add_lead(&nudge, "Lee", "en-GB");
    enable_nurture(&nudge);
    nudge.start();
    let zh_path = unsubscribe_path(&smtp, &zh);
    let en_path = unsubscribe_path(&smtp, &en);
    let zh_page = page(&nudge, &zh_path);
    assert!(zh_page.contains("<html lang=zh-CN>"), "{zh_page}");
    assert!(
        zh_page.contains("退订营销邮件") && zh_page.contains("停止接收所有邮件"),
        "{zh_page}"
    );
    assert!(
        !zh_page.contains("marketing emails") && !zh_page.contains("Stop all"),
        "{zh_page}"
    );
    let en_page = page(&nudge, &en_path);
    assert!(
        en_page.contains("Unsubscribe from marketing emails") && en_page.contains("Stop all email from us"),
        "{en_page}"
    );
    for body in [&zh_page, &en_page] {
        for outside in ["<script", "src=", "http://", "https://", "<link"] {
            assert!(!body.contains(outside), "{outside} in {body}");
        }
        assert_eq!(body.matches("<form method=post").count(), 2, "{body}");
    }
    // Opening the page changed nothing; the answer to a POST is in Chinese too.
    assert!(!nudge.cli(&["suppress", "list"]).contains(&zh));
    let done = post(&nudge, &zh_path);
    assert!(done.contains("您已退订我们的营销邮件"), "{done}");
    let done = post(&nudge, &format!("{zh_path}/all"));
    assert!(done.contains("您将不再收到我们的任何邮件"), "{done}");
    nudge.stop();
}

#[test]
fn a_suppression_by_hand_takes_a_scope_and_shows_who_made_it() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    // A promotion for contacts who reach the intent stage.
    nudge.write_workflow(
        "promo.toml",
        "category = \"marketing\"\n[vars]\ncatalogue_url = \"https://example.com/p\"\n[trigger]\non = \"stage_changed\"\nto = \"intent\"\n\n\
         [[steps]]\nsend = { channel = \"email\", template = \"nurture_offer\" }\n",
    );
    let by_phone = add_lead(&nudge, "Zhou", "en");
    let by_api = add_lead(&nudge, "Wu", "en");
    let out = nudge.cli(&[
        "suppress",
        "add",
        &by_phone,
        "--scope",
        "marketing",
        "--detail",
        "asked on the phone",
    ]);
    assert!(out.contains("suppressed"), "{out}");
    let (ok, _, err) = nudge.try_cli(&["suppress", "add", &by_phone, "--scope", "some"]);
    assert!(
        !ok && err.contains("unknown scope `some`; expected one of: marketing, all"),
        "{err}"
    );
    nudge.start();
    let body = format!("{{\"address\": \"{by_api}\", \"scope\": \"marketing\"}}");
    let (status, added) = nudge.http("POST", "/suppressions", Some(&body));
    assert_eq!((status, &added["added"]), (201, &Value::Bool(true)), "{added}");
    let (status, refused) = nudge.http(
        "POST",
        "/suppressions",
        Some(r#"{"address": "x@y.z", "scope": "none"}"#),
    );
    assert_eq!(status, 422, "{refused}");
    let why = refused.to_string();
    assert!(why.contains("`marketing`") && why.contains("`all`"), "{why}");
    // Neither gets the promotion; both get the answer to their inquiry and the
    // proposal that reaching the intent stage sends (transactional).
    for to in [&by_phone, &by_api] {
        nudge.cli(&["inquiry", "add", to]);
    }
    // The inquiry moves them to the inquiry stage first; then they show intent.
    nudge.settle();
    for to in [&by_phone, &by_api] {
        nudge.cli(&["stage", "set", to, "intent"]);
    }
    nudge.settle();
    for to in [&by_phone, &by_api] {
        let mut sent = sent_by(&nudge, to);
        sent.sort();
        assert_eq!(sent, ["inquiry-received", "intent-proposal"]);
        assert_eq!(
            step_details(&nudge, "promo", to),
            ["skipped: the contact's address is suppressed for marketing (manual)"]
        );
    }
    let list = nudge.cli(&["suppress", "list"]);
    assert_eq!(list.matches("marketing").count(), 2, "{list}");
    let card: Value = serde_json::from_str(&nudge.cli(&["contact", "show", &by_phone, "--json"])).unwrap();
    assert_eq!(
        withdrawals(&card),
        [(
            "marketing".to_string(),
            "cli: suppressed by hand (asked on the phone)".to_string()
        )]
    );
    let card: Value = serde_json::from_str(&nudge.cli(&["contact", "show", &by_api, "--json"])).unwrap();
    assert_eq!(
        withdrawals(&card),
        [("marketing".to_string(), "api: suppressed by hand".to_string())]
    );
    nudge.stop();
}
