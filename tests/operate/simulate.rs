//! `nudge simulate` (issue 32, item 2): the engine on a copy of the database and a
//! virtual clock it moves itself. What it says will be sent is what a live daemon on
//! the virtual clock sends over the same days, message for message; it changes
//! nothing in the live database and sends nothing.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::common::{Nudge, SmtpServer, python, scratch, wait_until};

/// Monday 09:00 UTC, 17:00 in Shanghai (the shipped classification's zone).
const START: &str = "2026-11-23T09:00:00Z";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Shanghai is UTC+8 all year.
const SHANGHAI_MS: i64 = 8 * 60 * 60 * 1000;
const DAYS: i64 = 7;

/// A message: contact, workflow, step (from 1), day in Shanghai.
type Message = (i64, String, i64, String);

/// Contacts and events for most of the shipped workflows, written while the daemon
/// is stopped: new leads (owner notes, follow-ups falling overdue, outside working
/// hours), a proposal, inquiries (SLA), a first order (after-sale check a week
/// later), an address suppressed by hand, a contact who withdrew consent.
fn seed(nudge: &Nudge) {
    for (i, owner) in [
        "senior.rep1@example.com",
        "senior.rep2@example.com",
        "director@example.com",
    ]
    .iter()
    .enumerate()
    {
        for j in 0..3 {
            let email = format!("lead{i}{j}@example.com");
            let name = format!("Lead {i}{j}");
            nudge.cli(&[
                "contact",
                "add",
                "--name",
                &name,
                "--company",
                "Acme",
                "--email",
                &email,
                "--owner",
                owner,
            ]);
        }
    }
    nudge.cli(&["stage", "set", "lead00@example.com", "intent"]);
    nudge.cli(&["stage", "set", "lead10@example.com", "intent"]);
    nudge.cli(&["inquiry", "add", "lead01@example.com", "--message", "price list?"]);
    nudge.cli(&["inquiry", "add", "lead21@example.com", "--message", "samples?"]);
    nudge.cli(&["suppress", "add", "lead11@example.com", "--detail", "asked by phone"]);
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Quiet",
        "--email",
        "quiet@example.com",
        "--owner",
        "director@example.com",
        "--stage",
        "intent",
        "--consent",
        "withdrawn",
    ]);
    nudge.cli(&["stage", "set", "lead11@example.com", "intent"]);
    nudge.cli(&[
        "order",
        "add",
        "--id",
        "o-1",
        "--contact",
        "lead02@example.com",
        "--amount",
        "1200",
        "--date",
        "2026-11-23",
    ]);
}

/// The whole database as SQL text (Python's `iterdump`): equal dumps, equal databases.
fn dump(nudge: &Nudge) -> String {
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nprint('\\n'.join(c.iterdump()))";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(nudge.path("nudge.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A CSV line's fields (quoted fields may hold commas and quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The messages of `simulate --messages`, by column name, those delivery would send.
fn simulated(csv: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = csv.lines();
    let header = csv_fields(lines.next().unwrap());
    lines
        .map(|l| header.iter().cloned().zip(csv_fields(l)).collect::<BTreeMap<_, _>>())
        .filter(|m| m["suppressed"].is_empty())
        .collect()
}

fn keys(messages: &[BTreeMap<String, String>]) -> Vec<Message> {
    let mut keys: Vec<Message> = messages
        .iter()
        .map(|m| {
            (
                m["contact_id"].parse().unwrap(),
                m["workflow"].clone(),
                m["step"].parse().unwrap(),
                m["day"].clone(),
            )
        })
        .collect();
    keys.sort();
    keys
}

fn now_ms(nudge: &Nudge) -> i64 {
    nudge.query("SELECT now_ms FROM virtual_clock")[0][0].as_i64().unwrap()
}

fn shanghai_day(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms + SHANGHAI_MS)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string()
}

/// Waits until the daemon has done everything due at the clock's reading: its daily
/// classification pass of the day, then the events, timers, runs and deliveries.
fn settle_day(nudge: &Nudge) {
    let today = shanghai_day(now_ms(nudge));
    wait_until(
        || (nudge.query("SELECT day FROM classification_pass")[0][0] == today.as_str()).then_some(()),
        || format!("no classification pass on {today}:\n{}", nudge.log()),
    );
    nudge.settle();
}

/// Runs the daemon for `DAYS` days on the virtual clock, moved as the simulation
/// moves its own: to each timer as it falls due and to each day's start in Shanghai.
fn live_run(nudge: &mut Nudge) {
    let end = now_ms(nudge) + DAYS * DAY_MS;
    nudge.start();
    settle_day(nudge);
    loop {
        let now = now_ms(nudge);
        if now >= end {
            break;
        }
        let due = nudge.query("SELECT MIN(due_at) FROM timers WHERE fired_at IS NULL")[0][0]
            .as_i64()
            .unwrap_or(i64::MAX);
        let next_day = ((now + SHANGHAI_MS) / DAY_MS + 1) * DAY_MS - SHANGHAI_MS;
        let next = due.min(next_day).min(end).max(now + 1);
        let at = jiff::Timestamp::from_millisecond(next).unwrap().to_string();
        nudge.cli(&["clock", "--set", &at]);
        settle_day(nudge);
    }
    nudge.stop();
}

/// The messages a live run queued, as the simulation reports them.
fn live_messages(nudge: &Nudge, status: &str) -> Vec<Message> {
    let rows = nudge.query(&format!(
        "SELECT o.contact_id, r.workflow,
                CAST(substr(o.idempotency_key, instr(o.idempotency_key, '-step') + 5) AS INTEGER) + 1,
                date(o.created_at / 1000, 'unixepoch', '+8 hours')
         FROM outbox o JOIN runs r ON r.id = o.run_id WHERE o.status = '{status}'"
    ));
    let mut keys: Vec<Message> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_str().unwrap().to_string(),
                r[2].as_i64().unwrap(),
                r[3].as_str().unwrap().to_string(),
            )
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_simulation_sends_what_a_live_run_of_the_same_days_sends_and_changes_nothing() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, START);
    seed(&nudge);
    let before = dump(&nudge);

    let csv = tmp.path().join("messages.csv");
    let page = tmp.path().join("simulation.html");
    let out = nudge.cli(&[
        "simulate",
        "--days",
        &DAYS.to_string(),
        "--json",
        "--messages",
        csv.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();

    assert_eq!(dump(&nudge), before, "the live database is unchanged");
    assert!(smtp.mails().is_empty(), "nothing reached the SMTP server");
    let simulated = simulated(&std::fs::read_to_string(&csv).unwrap());
    assert!(
        simulated.len() >= 10,
        "the seed makes the playbook send: {simulated:#?}"
    );
    let totals = &report["current"]["totals"];
    assert_eq!(totals["messages"], simulated.len(), "{report:#}");
    assert!(
        totals["suppressed"].as_i64().unwrap() >= 1,
        "the suppressed address: {report:#}"
    );
    assert!(
        totals["held"].as_i64().unwrap() >= 1,
        "working hours hold owner notes: {report:#}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("intent-proposal"), "{html}");
    for external in ["<script", "src=", "<link", "url("] {
        assert!(
            !html.contains(external),
            "the page makes no request ({external}): {html}"
        );
    }

    live_run(&mut nudge);
    assert_eq!(live_messages(&nudge, "sent"), keys(&simulated), "message for message");
    let mut received: Vec<(String, String)> = smtp.mails().into_iter().map(|m| (m.to.join(","), m.subject)).collect();
    let mut expected: Vec<(String, String)> = simulated
        .iter()
        .map(|m| (m["recipient"].clone(), m["subject"].clone()))
        .collect();
    received.sort();
    expected.sort();
    assert_eq!(received, expected, "what the SMTP server received");
    assert_eq!(
        live_messages(&nudge, "suppressed").len() as i64,
        totals["suppressed"].as_i64().unwrap(),
        "suppressed at delivery"
    );
}

#[test]
fn a_candidate_folder_with_an_added_step_gains_its_messages() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, START);
    seed(&nudge);
    let candidate = tmp.path().join("candidate");
    copy_dir(&nudge.path("workflows"), &candidate);
    let first_contact = candidate.join("first-contact.toml");
    let source = std::fs::read_to_string(&first_contact).unwrap();
    let source = source.replacen("[trigger]", "category = \"transactional\"\n\n[trigger]", 1);
    std::fs::write(
        &first_contact,
        format!("{source}\n[[steps]]\nwait = \"2d\"\n\n[[steps]]\nsend = {{ channel = \"email\", template = \"sample_check\" }}\n"),
    )
    .unwrap();
    let before = dump(&nudge);

    let out = nudge.cli(&[
        "simulate",
        "--days",
        "5",
        "--json",
        "--against",
        candidate.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    let differences = report["differences"].as_array().unwrap();
    assert!(!differences.is_empty(), "{report:#}");
    for d in differences {
        assert_eq!(d["gained"], true, "nothing is lost: {d}");
        assert_eq!(d["workflow"], "first-contact", "{d}");
        assert_eq!(d["step"], 4, "the added send step: {d}");
        assert_eq!(d["template"], "sample_check", "{d}");
    }
    // Every lead whose owner heard of them gets it, once, two days on.
    let noted: i64 = report["current"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["workflow"] == "first-contact")
        .map(|m| m["messages"].as_i64().unwrap())
        .sum();
    let mut contacts: Vec<i64> = differences.iter().map(|d| d["contact_id"].as_i64().unwrap()).collect();
    contacts.dedup();
    assert!(noted >= 3, "{report:#}");
    assert_eq!(
        (contacts.len() as i64, differences.len() as i64),
        (noted, noted),
        "{report:#}"
    );
    assert!(
        differences.iter().all(|d| d["day"].as_str().unwrap() >= "2026-11-25"),
        "{differences:#?}"
    );
    let gained = differences.len() as i64;
    assert_eq!(
        report["candidate"]["totals"]["messages"].as_i64().unwrap(),
        report["current"]["totals"]["messages"].as_i64().unwrap() + gained,
        "{report:#}"
    );

    let text = nudge.cli(&["simulate", "--days", "5", "--against", candidate.to_str().unwrap()]);
    assert!(
        text.contains(&format!("{gained} messages gained (+), 0 lost (-)")),
        "{text}"
    );
    assert!(
        text.contains("+ 2026-11-2") && text.contains("first-contact step 4 sample_check"),
        "{text}"
    );
    assert_eq!(dump(&nudge), before, "the live database is unchanged");
    assert!(smtp.mails().is_empty(), "nothing reached the SMTP server");
}

#[test]
fn contacts_limit_the_report_and_a_bad_filter_is_explained() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, START);
    seed(&nudge);

    let out = nudge.cli(&[
        "simulate",
        "--days",
        "3",
        "--json",
        "--contacts",
        r#"contact.stage == "intent""#,
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    let workflows: Vec<&str> = report["current"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["workflow"].as_str().unwrap())
        .collect();
    assert!(workflows.contains(&"intent-proposal"), "{report:#}");
    assert!(
        !workflows.contains(&"inquiry-received"),
        "only contacts at intent: {report:#}"
    );

    let (ok, _, stderr) = nudge.try_cli(&["simulate", "--contacts", "contact.stage =="]);
    assert!(
        !ok && stderr.contains("--contacts") && stderr.contains("column"),
        "{stderr}"
    );
}

#[test]
fn a_simulation_beside_a_running_daemon_copies_its_database_and_sends_nothing() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, START);
    nudge.start();
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
    nudge.settle();
    let outbox = nudge.query("SELECT COUNT(*) FROM outbox");

    // The proposal went out before the copy was taken: the simulation does not send it again.
    let report: Value = serde_json::from_str(&nudge.cli(&["simulate", "--days", "3", "--json"])).unwrap();
    assert_eq!(report["already_queued"], 0, "{report:#}");
    let workflows: Vec<&str> = report["current"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["workflow"].as_str().unwrap())
        .collect();
    assert!(!workflows.contains(&"intent-proposal"), "{report:#}");

    nudge.settle();
    assert_eq!(
        nudge.query("SELECT COUNT(*) FROM outbox"),
        outbox,
        "the daemon's outbox is untouched"
    );
    assert_eq!(smtp.mails().len(), 1, "only the daemon's message reached the server");
    assert!(!nudge.log().contains("ERROR"), "{}", nudge.log());
    nudge.stop();
}
