//! Engagement end to end: tracked links and the open pixel of marketing email,
//! replies, A/B variants of a send step, and what the report makes of them, on
//! the real binary, a real SMTP server and virtual time.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Nudge, SmtpServer, scratch, wait_until};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Monday 10:00 UTC: outside the marketing quiet hours of the shipped sending.toml.
const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";
const TODAY: &str = "from=2026-11-23&to=2026-11-23";

const PROMO_TEMPLATES: &str = r#"
[promo]
channel = "email"
subject = "Spring offers for {{ contact.name }}"
text = "Hello {{ contact.name }}, see https://shop.example/spring?utm=mail&id=7"
html = """<html><body><p>Hello {{ contact.name }}</p>
<p><a href="https://shop.example/spring?utm=mail&amp;id=7">Spring offers</a>,
or <a href='mailto:rep@corp.test'>write to us</a>.
<a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>"""

[promo_owner]
channel = "email"
subject = "Promo sent to {{ contact.name }}"
text = "See the offer"
html = """<p><a href="https://shop.example/spring?utm=mail&amp;id=7">The offer</a></p>"""

[promo_again]
channel = "email"
subject = "Still thinking, {{ contact.name }}?"
text = "The offer stands."

[receipt]
channel = "email"
subject = "Your order, {{ contact.name }}"
text = "Thanks"
html = """<p>Track it at <a href="https://shop.example/orders/1">your orders</a></p>"""
"#;

fn install_promo(nudge: &Nudge) {
    nudge.write_workflow("templates/promo.toml", PROMO_TEMPLATES);
    nudge.write_workflow(
        "promo.toml",
        "category = \"marketing\"\n[trigger]\non = \"stage_changed\"\nto = \"loyal\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"promo\" }\n\
         [[steps]]\nnotify = { to = \"owner\", template = \"promo_owner\" }\n\
         [[steps]]\nwait = \"3d\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"promo_again\" }\n",
    );
    // Asked to track, a transactional workflow would be refused: it just never tracks.
    nudge.write_workflow(
        "receipt.toml",
        "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"repeat\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"receipt\" }\n",
    );
}

/// The paths of the daemon's links of `kind` (`c` click, `o` open) in an HTML body.
fn tracked_paths(html: &str, kind: &str) -> Vec<String> {
    let marker = format!("/t/{kind}/");
    html.match_indices(&marker)
        .map(|(at, _)| {
            let token: String = html[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            format!("{marker}{token}")
        })
        .collect()
}

/// A token with one character changed: what a forger or a mangling mail client makes.
fn altered(path: &str) -> String {
    let mut p = path.to_string();
    let last = p.pop().unwrap();
    p.push(if last == 'A' { 'B' } else { 'A' });
    p
}

fn report(nudge: &Nudge, query: &str) -> Value {
    let (status, report) = nudge.http("GET", &format!("/reports?{query}"), None);
    assert_eq!(status, 200, "{report}");
    report
}

fn workflow_figures(report: &Value, workflow: &str) -> Value {
    report["engagement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workflow"] == workflow)
        .cloned()
        .unwrap_or_else(|| panic!("no figures for {workflow}: {report:#}"))
}

/// (sent, delivered, opened, clicked, replied, opens, clicks) of a report row.
fn counts(row: &Value) -> [i64; 7] {
    ["sent", "delivered", "opened", "clicked", "replied", "opens", "clicks"].map(|k| row[k].as_i64().unwrap())
}

#[test]
fn a_tracked_link_redirects_to_its_url_and_counts_one_clicked_message_however_often_followed() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    install_promo(&nudge);
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Lin",
        "--email",
        "lin@example.com",
        "--owner",
        "rep@corp.test",
    ]);
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Mo",
        "--email",
        "mo@example.com",
        "--owner",
        "rep@corp.test",
    ]);
    nudge.start();
    nudge.cli(&["stage", "set", "lin@example.com", "loyal"]);
    let mail = smtp.wait_for("lin@example.com", "Spring offers");

    // One link is tracked; the mailto and unsubscribe links, and the text part, are not.
    let clicks = tracked_paths(&mail.html, "c");
    assert_eq!(clicks.len(), 1, "{}", mail.html);
    assert!(!mail.html.contains("shop.example"), "{}", mail.html);
    assert!(mail.html.contains("href='mailto:rep@corp.test'"), "{}", mail.html);
    // The template's own unsubscribe link (minijinja escapes its slashes), once: the
    // daemon's footer does not add a second.
    let unescaped = mail.html.replace("&#x2f;", "/");
    assert_eq!(unescaped.matches("/unsubscribe/").count(), 1, "{}", mail.html);
    assert!(
        mail.text.contains("https://shop.example/spring?utm=mail&id=7"),
        "{}",
        mail.text
    );
    let opens = tracked_paths(&mail.html, "o");
    assert_eq!(opens.len(), 1, "one pixel: {}", mail.html);
    // The owner's note about it is internal: never tracked.
    let note = smtp.wait_for("rep@corp.test", "Promo sent to Lin");
    assert!(
        note.html.contains("https://shop.example/spring") && !note.html.contains("/t/"),
        "{}",
        note.html
    );

    // Followed twice: both times to the URL the message had, with its query string.
    for _ in 0..2 {
        let (status, head, _) = nudge.get_raw(&clicks[0]);
        assert_eq!(status, 302, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nlocation: https://shop.example/spring?utm=mail&id=7"),
            "{head}"
        );
    }
    let (status, head, body) = nudge.get_raw(&opens[0]);
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: image/gif"), "{head}");
    assert!(body.starts_with(b"GIF89a"));

    // Forged or altered tokens: 404, no redirect, nothing recorded.
    let token = clicks[0].trim_start_matches("/t/c/");
    let mut bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"shop")
        .expect("the URL is in the token");
    bytes[at..at + 4].copy_from_slice(b"evil");
    let other_url = format!("/t/c/{}", URL_SAFE_NO_PAD.encode(&bytes));
    for forged in [
        altered(&clicks[0]),
        other_url,
        "/t/c/AAAA".into(),
        altered(&opens[0]),
        "/t/o/x".into(),
    ] {
        let (status, head, _) = nudge.get_raw(&forged);
        assert_eq!(status, 404, "{forged}: {head}");
        assert!(!head.to_ascii_lowercase().contains("location:"), "{head}");
    }
    // An open token is no click token, and the other way round.
    let swapped = clicks[0].replace("/t/c/", "/t/o/");
    assert_eq!(nudge.get_raw(&swapped).0, 404);

    nudge.settle();
    let report_now = report(&nudge, TODAY);
    let promo = workflow_figures(&report_now, "promo");
    // One message: opened (the pixel, once), clicked (twice: one clicked message).
    assert_eq!(counts(&promo), [1, 1, 1, 1, 0, 1, 2], "{promo:#}");
    assert_eq!(promo["open_rate_percent"], 100.0);
    assert_eq!(promo["click_rate_percent"], 100.0);
    assert_eq!(promo["variants"], Value::Array(vec![]));

    // A reply, e.g. from the mail provider's inbound hook, counts and stops the run.
    let (status, body) = nudge.http("POST", "/replies", Some(r#"{"email": "lin@example.com"}"#));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message_id"], mail.message_id.as_str());
    assert_eq!(nudge.http("POST", "/replies", Some("{}")).0, 422);
    let (status, _) = nudge.http("POST", "/replies", Some(r#"{"message_id": "<run9-step9@nudge.test>"}"#));
    assert_eq!(status, 404);
    nudge.advance("3d");
    nudge.settle();
    assert!(
        smtp.mails_to("lin@example.com")
            .iter()
            .all(|m| !m.subject.contains("Still thinking"))
    );
    assert!(nudge.log().contains("exit condition met: replied"), "{}", nudge.log());
    let promo = workflow_figures(&report(&nudge, TODAY), "promo");
    assert_eq!(counts(&promo), [1, 1, 1, 1, 1, 1, 2], "{promo:#}");

    // Transactional mail keeps its links as written and has no pixel.
    nudge.cli(&["stage", "set", "mo@example.com", "repeat"]);
    let receipt = smtp.wait_for("mo@example.com", "Your order");
    assert!(
        receipt.html.contains("href=\"https://shop.example/orders/1\""),
        "{}",
        receipt.html
    );
    assert!(!receipt.html.contains("/t/"), "{}", receipt.html);
    nudge.stop();
}

/// The variant the documented rule gives: SHA-256 of workflow, 0, step, contact id.
fn expected_variant(workflow: &str, step: i64, contact_id: i64) -> &'static str {
    let mut hasher = Sha256::new();
    hasher.update(workflow.as_bytes());
    hasher.update([0]);
    hasher.update(step.to_be_bytes());
    hasher.update(contact_id.to_be_bytes());
    let point = u64::from_be_bytes(hasher.finalize()[..8].try_into().unwrap()) % 100;
    if point < 70 { "short" } else { "late" }
}

/// The contact id in a Message-ID `<run1-step0-contact42@domain>`.
fn contact_of(message_id: &str) -> i64 {
    let rest = &message_id[message_id.find("-contact").unwrap() + 8..];
    rest[..rest.find('@').unwrap()].parse().unwrap()
}

#[test]
fn ab_variants_split_by_weight_stay_with_each_contact_across_a_restart_and_are_reported_apart() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    nudge.write_workflow(
        "templates/ab.toml",
        "[ab_offer]\nchannel = \"email\"\nsubject = \"template subject\"\ntext = \"Hello\"\n\
         html = '<p>Hello, <a href=\"https://shop.example/ab\">the offer</a></p>'\n",
    );
    nudge.write_workflow(
        "ab-test.toml",
        "category = \"marketing\"\nwhen = 'contact.source == \"ab\"'\n[trigger]\non = \"segment\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"ab_offer\" }\n\
         [[steps.variants]]\nname = \"short\"\nweight = 70\nsubject = \"A: {{ contact.name }}, 5 % off\"\n\
         [[steps.variants]]\nname = \"late\"\nweight = 30\nsubject = \"B: {{ contact.name }}, an offer\"\ndelay = \"2h\"\n",
    );
    let mut csv = String::from("name,email,source\n");
    for i in 1..=200 {
        csv += &format!("AB {i},ab{i}@example.com,ab\n");
    }
    std::fs::write(nudge.path("ab.csv"), csv).unwrap();
    nudge.cli(&["contact", "import", nudge.path("ab.csv").to_str().unwrap()]);
    let id = |n: i64| {
        let shown: Value =
            serde_json::from_str(&nudge.cli(&["contact", "show", &format!("ab{n}@example.com"), "--json"])).unwrap();
        shown["contact"]["id"].as_i64().unwrap()
    };
    assert_eq!((id(1), id(200)), (1, 200), "ids follow the file");
    let expected: Vec<&str> = (1..=200).map(|c| expected_variant("ab-test", 0, c)).collect();
    let short = expected.iter().filter(|v| **v == "short").count();
    // 70 % of 200 is 140; a hash is no exact split, so the bounds are wide.
    assert!((110..=170).contains(&short), "{short} of 200 got the 70 % variant");

    // The short variant goes at once; the late one waits its 2 hours, across a restart.
    nudge.start();
    wait_until(
        || Some(()).filter(|_| smtp.mails().len() >= short),
        || format!("{} of {short} mails: {}", smtp.mails().len(), nudge.log()),
    );
    nudge.settle();
    assert_eq!(smtp.mails().len(), short);
    assert!(
        nudge.log().contains("A/B variant `late` sends 2h after the step"),
        "{}",
        nudge.log()
    );
    nudge.stop();
    nudge.start();
    nudge.advance("2h");
    wait_until(
        || Some(()).filter(|_| smtp.mails().len() >= 200),
        || format!("{} of 200 mails: {}", smtp.mails().len(), nudge.log()),
    );
    nudge.settle();
    let mails = smtp.mails();
    assert_eq!(mails.len(), 200);
    let mut by_variant: std::collections::BTreeMap<&str, Vec<&common::Mail>> = Default::default();
    for mail in &mails {
        let contact = contact_of(&mail.message_id);
        let variant = if mail.subject.starts_with("A: ") {
            "short"
        } else {
            "late"
        };
        assert_eq!(
            variant,
            expected[contact as usize - 1],
            "contact {contact}: {}",
            mail.subject
        );
        assert!(mail.subject.contains(&format!("AB {contact},")), "{}", mail.subject);
        by_variant.entry(variant).or_default().push(mail);
    }

    // Three short-variant messages clicked (the first twice), five late ones opened.
    let short_mails = &by_variant["short"];
    for (i, mail) in short_mails.iter().take(3).enumerate() {
        let link = &tracked_paths(&mail.html, "c")[0];
        for _ in 0..if i == 0 { 2 } else { 1 } {
            assert_eq!(nudge.get_raw(link).0, 302);
        }
    }
    for mail in by_variant["late"].iter().take(5) {
        assert_eq!(nudge.get_raw(&tracked_paths(&mail.html, "o")[0]).0, 200);
    }
    nudge.settle();
    let report_now = report(&nudge, TODAY);
    let ab = workflow_figures(&report_now, "ab-test");
    let (n_short, n_late) = (short as i64, 200 - short as i64);
    assert_eq!(counts(&ab), [200, 200, 8, 3, 0, 5, 4], "{ab:#}");
    let variants = ab["variants"].as_array().unwrap();
    let row = |name: &str| variants.iter().find(|v| v["variant"] == name).cloned().unwrap();
    // A click counts as an open: the pixel of a mail read without images never loads.
    assert_eq!(counts(&row("short")), [n_short, n_short, 3, 3, 0, 0, 4]);
    assert_eq!(counts(&row("late")), [n_late, n_late, 5, 0, 0, 5, 0]);
    let rate = |n: i64, of: i64| (n as f64 * 1000.0 / of as f64).round() / 10.0;
    assert_eq!(row("short")["open_rate_percent"], rate(3, n_short));
    assert_eq!(row("short")["click_rate_percent"], rate(3, n_short));
    assert_eq!(row("late")["open_rate_percent"], rate(5, n_late));

    // The same figures in every format.
    let cli: Value = serde_json::from_str(&nudge.cli(&[
        "report",
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-23",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(cli, report_now);
    let (_, csv) = nudge.http("GET", &format!("/reports?{TODAY}&format=csv"), None);
    let csv = csv.as_str().unwrap();
    assert!(csv.contains("messages clicked,ab-test/short,3,"), "{csv}");
    assert!(
        csv.contains(&format!("open rate %,ab-test/late,{:.1},5,{n_late},", rate(5, n_late))),
        "{csv}"
    );
    let (_, table) = nudge.http("GET", &format!("/reports?{TODAY}&format=table"), None);
    assert!(table.as_str().unwrap().contains("  variant short"), "{table}");
    let (_, html) = nudge.http("GET", &format!("/reports?{TODAY}&format=html"), None);
    assert!(html.as_str().unwrap().contains("variant late</td><td>"), "{html}");
    assert_eq!(nudge.http("GET", &format!("/reports?{TODAY}&format=pdf"), None).0, 422);
    nudge.stop();
}
