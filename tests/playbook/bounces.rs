//! Bounces that come back as mail (issue 35 item 2): the relay, a real Postfix,
//! takes every message; the ones it cannot deliver come back as DSNs to the
//! message's own return path, which Postfix delivers into the maildir nudge
//! reads. Each report is attributed to its outbox row and counted against the
//! same suppression rules as a bounce at send time; a report read twice counts
//! once; a forged one suppresses nothing.

use serde_json::Value;

use crate::common::postfix::Postfix;
use crate::common::{Nudge, scratch, wait_until};

/// Monday 10:00 UTC.
const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";

const NOTICE: &str = r#"
[notice]
channel = "email"
subject = "Your account, {{ contact.name }}"
text = "Hello {{ contact.name }}, your account is ready."
"#;

const CONTACTS: &[(&str, &str)] = &[
    ("Gao", "gao@gone.test"),
    ("Guo", "guo@gone.test"),
    ("Gu", "gu@gone.test"),
    ("Fan", "fan@full.test"),
    ("Fu", "fu@full.test"),
    ("Ou", "ou@ok.test"),
];

fn start(postfix: &Postfix) -> Nudge {
    let mut nudge = Nudge::relaying_to(
        postfix.port,
        MONDAY_10AM,
        &format!(
            "[suppression]\nhard_bounces = 1\nsoft_bounces = 2\ncomplaints = 1\n\
             [bounces]\nreturn_path_domain = \"bounces.test\"\nmaildir = {:?}\n",
            postfix.maildir
        ),
    );
    nudge.write_workflow("templates/notice.toml", NOTICE);
    nudge.write_workflow(
        "notice.toml",
        "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"loyal\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"notice\" }\n",
    );
    for (name, email) in CONTACTS {
        nudge.cli(&[
            "contact",
            "add",
            "--name",
            name,
            "--email",
            email,
            "--owner",
            "rep@ok.test",
        ]);
    }
    nudge.start();
    nudge
}

fn rows(nudge: &Nudge, sql: &str) -> Vec<Value> {
    nudge.query(sql).as_array().cloned().unwrap_or_default()
}

#[test]
fn every_dsn_postfix_returns_is_attributed_to_its_message_and_counted_once() {
    let tmp = scratch();
    let postfix = Postfix::start(tmp.path());
    let nudge = start(&postfix);
    for (_, email) in CONTACTS {
        nudge.cli(&["stage", "set", email, "loyal"]);
    }
    nudge.settle();
    // Every message went out through Postfix with a return path that names it.
    let sent = wait_until(
        || {
            let sent = rows(
                &nudge,
                "SELECT id, recipient FROM outbox WHERE status = 'sent' ORDER BY id",
            );
            (sent.len() >= CONTACTS.len()).then_some(sent)
        },
        || {
            format!(
                "not all sent: {}\n{}",
                nudge.query("SELECT id, recipient, status, last_error FROM outbox"),
                nudge.log()
            )
        },
    );
    let log = postfix.log();
    for row in &sent {
        let from = format!("from=<bounce+{}-", row[0]);
        assert!(log.contains(&from), "{from} not in the relay's log:\n{log}");
    }
    let undeliverable: Vec<&Value> = sent
        .iter()
        .filter(|r| !r[1].as_str().unwrap().ends_with("@ok.test"))
        .collect();

    // Each DSN is recorded against exactly the row it is about, hard or soft by its status.
    let bounces = wait_until(
        || {
            let b = rows(
                &nudge,
                "SELECT outbox_id, address, kind, detail FROM bounces ORDER BY outbox_id",
            );
            (b.len() >= undeliverable.len()).then_some(b)
        },
        || {
            format!(
                "bounces: {}\nnudge:\n{}\npostfix:\n{}",
                nudge.query("SELECT * FROM bounces"),
                nudge.log(),
                postfix.log()
            )
        },
    );
    assert_eq!(bounces.len(), undeliverable.len(), "{bounces:?}");
    for (bounce, row) in bounces.iter().zip(&undeliverable) {
        assert_eq!(bounce[0], row[0], "{bounce} vs {row}");
        assert_eq!(bounce[1], row[1]);
        let (kind, status) = if bounce[1].as_str().unwrap().ends_with("@gone.test") {
            ("hard", "5.1.1")
        } else {
            ("soft", "4.2.2")
        };
        assert_eq!(bounce[2], kind, "{bounce}");
        assert!(bounce[3].as_str().unwrap().starts_with(status), "{bounce}");
    }
    // One hard bounce suppresses; one soft bounce of the two the rule asks for does not.
    let suppressed = rows(&nudge, "SELECT address, reason FROM suppressions ORDER BY address");
    let expected: Vec<Value> = ["gao@gone.test", "gu@gone.test", "guo@gone.test"]
        .iter()
        .map(|a| serde_json::json!([a, "hard_bounce"]))
        .collect();
    assert_eq!(suppressed, expected);
    wait_until(
        || postfix.mails("new").is_empty().then_some(()),
        || format!("unread: {:?}", postfix.mails("new")),
    );
    let filed = postfix.mails("cur");
    assert_eq!(
        filed.len(),
        undeliverable.len(),
        "each report filed away as seen: {filed:?}"
    );
    assert!(filed.iter().all(|f| f.to_string_lossy().ends_with(":2,S")), "{filed:?}");

    // The same report again (a crash before it was filed away): still one bounce.
    let again = postfix.maildir.join("new").join("1700000000.again.relay.test");
    let soft_report = filed
        .iter()
        .find(|f| std::fs::read_to_string(f).unwrap().contains("4.2.2"))
        .expect("a soft bounce report");
    std::fs::copy(soft_report, &again).unwrap();
    wait_until(
        || (!again.exists()).then_some(()),
        || format!("the copy was never read:\n{}", nudge.log()),
    );
    assert_eq!(rows(&nudge, "SELECT id FROM bounces").len(), undeliverable.len());
    assert_eq!(
        rows(
            &nudge,
            "SELECT address FROM suppressions WHERE address LIKE '%@full.test'"
        )
        .len(),
        0,
        "one soft bounce per address, read twice, is still one"
    );
}

#[test]
fn an_arf_complaint_suppresses_and_a_forged_report_does_not() {
    let tmp = scratch();
    let postfix = Postfix::start(tmp.path());
    let nudge = start(&postfix);
    nudge.cli(&["stage", "set", "ou@ok.test", "loyal"]);
    nudge.settle();
    let row = wait_until(
        || {
            rows(
                &nudge,
                "SELECT id, message_id FROM outbox WHERE status = 'sent' AND recipient = 'ou@ok.test'",
            )
            .into_iter()
            .next()
        },
        || nudge.log(),
    );
    let message_id = row[1].as_str().unwrap();

    // A return path with a forged tag and no quoted message: attributed to nothing.
    let forged = DSN_TEMPLATE
        .replace(
            "{RETURN_PATH}",
            &format!("bounce+{}-0000000000000000@bounces.test", row[0]),
        )
        .replace("{RECIPIENT}", "ou@ok.test");
    std::fs::write(postfix.maildir.join("tmp/forged"), forged).unwrap();
    std::fs::rename(
        postfix.maildir.join("tmp/forged"),
        postfix.maildir.join("new/1700000001.forged.relay.test"),
    )
    .unwrap();
    nudge.wait_for_log("names no message of ours");
    assert_eq!(rows(&nudge, "SELECT id FROM bounces").len(), 0);

    // A feedback loop's ARF report quoting our message (its Message-ID, its recipient).
    let arf = ARF_TEMPLATE.replace("{MESSAGE_ID}", message_id);
    std::fs::write(postfix.maildir.join("tmp/arf"), arf).unwrap();
    std::fs::rename(
        postfix.maildir.join("tmp/arf"),
        postfix.maildir.join("new/1700000002.arf.relay.test"),
    )
    .unwrap();
    let bounce = wait_until(
        || {
            rows(&nudge, "SELECT outbox_id, address, kind FROM bounces")
                .into_iter()
                .next()
        },
        || nudge.log(),
    );
    assert_eq!(bounce, serde_json::json!([row[0], "ou@ok.test", "complaint"]));
    assert_eq!(
        rows(&nudge, "SELECT reason FROM suppressions WHERE address = 'ou@ok.test'"),
        vec![serde_json::json!(["complaint"])]
    );
}

const DSN_TEMPLATE: &str = "From: MAILER-DAEMON@mx.ok.test\r
To: {RETURN_PATH}\r
Subject: Undelivered Mail Returned to Sender\r
Message-ID: <forged-1@mx.ok.test>\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status; boundary=b1\r
\r
--b1\r
Content-Type: text/plain\r
\r
Your message could not be delivered.\r
--b1\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.ok.test\r
\r
Final-Recipient: rfc822; {RECIPIENT}\r
Action: failed\r
Status: 5.1.1\r
--b1--\r
";

const ARF_TEMPLATE: &str = "From: <fbl@isp.test>\r
To: <fbl@bounces.test>\r
Subject: complaint about message from 192.0.2.1\r
Message-ID: <arf-1@isp.test>\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=feedback-report; boundary=arf\r
\r
--arf\r
Content-Type: text/plain\r
\r
This is an email abuse report.\r
--arf\r
Content-Type: message/feedback-report\r
\r
Feedback-Type: abuse\r
User-Agent: isp-fbl/1.0\r
Version: 1\r
Original-Rcpt-To: <ou@ok.test>\r
--arf\r
Content-Type: text/rfc822-headers\r
\r
From: Sales <sales@nudge.test>\r
To: ou@ok.test\r
Subject: Your account\r
Message-ID: {MESSAGE_ID}\r
--arf--\r
";
