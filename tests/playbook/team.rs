//! The team (docs/domain.md §2 "owner" column, §3 escalation): team.toml's managers,
//! working hours and roles, as the shipped workflows use them.

use serde_json::Value;

use crate::common::{Nudge, SmtpServer, scratch};

/// A small team in Shanghai: a rep whose manager is the director, two key-account
/// managers and a senior rep, all working weekdays 09:00-18:00.
const TEAM: &str = r#"
[[working_hours.office]]
days = ["mon-fri"]
hours = ["09:00-18:00"]

[members."rep@corp.test"]
name = "Wang Rep"
manager = "director@corp.test"
time_zone = "Asia/Shanghai"
working_hours = "office"

[members."director@corp.test"]
name = "Zhao Director"
time_zone = "Asia/Shanghai"
working_hours = "office"

[members."ka1@corp.test"]
manager = "director@corp.test"
time_zone = "Asia/Shanghai"
working_hours = "office"

[members."ka2@corp.test"]
manager = "director@corp.test"
time_zone = "Asia/Shanghai"
working_hours = "office"

[members."senior@corp.test"]
manager = "director@corp.test"
time_zone = "Asia/Shanghai"
working_hours = "office"

[members."assistant@corp.test"]
manager = "senior@corp.test"
time_zone = "Asia/Shanghai"
working_hours = "office"

[members."success@corp.test"]
manager = "director@corp.test"

[roles]
key_accounts = ["ka1@corp.test", "ka2@corp.test"]
senior_reps = ["senior@corp.test"]
assistants = ["assistant@corp.test"]
customer_success = ["success@corp.test"]
"#;

/// An installation of the shipped playbook with `TEAM` as its team.
fn with_team(smtp: &SmtpServer, start: &str) -> Nudge {
    let nudge = Nudge::new(smtp, start);
    nudge.write_workflow("team.toml", TEAM);
    nudge
}

fn add_contact(nudge: &Nudge, name: &str, email: &str, extra: &[&str]) {
    let mut args = vec![
        "contact",
        "add",
        "--name",
        name,
        "--email",
        email,
        "--owner",
        "rep@corp.test",
    ];
    args.extend_from_slice(extra);
    nudge.cli(&args);
}

fn subjects_to(smtp: &SmtpServer, address: &str) -> Vec<String> {
    smtp.mails_to(address).into_iter().map(|m| m.subject).collect()
}

fn sla_compliance(nudge: &Nudge) -> (i64, i64) {
    let report: Value = serde_json::from_str(&nudge.cli(&[
        "report",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--format",
        "json",
    ]))
    .unwrap();
    let measure = report["measures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "inquiry SLA compliance")
        .cloned()
        .unwrap_or_else(|| panic!("no SLA measure in {report:#}"));
    (
        measure["numerator"].as_i64().unwrap(),
        measure["denominator"].as_i64().unwrap(),
    )
}

/// Friday 17:50 in Shanghai, ten minutes before the rep's day ends: on the business
/// clock the 15-minute SLA runs out at Monday 09:05, the owner hears then and the
/// manager 15 working minutes later, both inside working hours; the report judges
/// the inquiry answered on Monday at 09:03 as in time.
#[test]
fn an_inquiry_on_friday_evening_escalates_to_the_manager_on_monday_morning() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = with_team(&smtp, "2026-11-27T09:50:00Z");
    let sla = std::fs::read_to_string(nudge.path("workflows/inquiry-sla.toml")).unwrap();
    assert!(sla.contains("sla_clock = \"wall\""), "{sla}");
    nudge.write_workflow(
        "inquiry-sla.toml",
        &sla.replace("sla_clock = \"wall\"", "sla_clock = \"business\""),
    );
    nudge.start();
    for (name, email) in [
        ("Big Buyer", "big@example.com"),
        ("Monday Answer", "monday@example.com"),
    ] {
        add_contact(&nudge, name, email, &["--tier", "medium", "--tz", "Asia/Shanghai"]);
        let (status, body) = nudge.http(
            "POST",
            &format!("/contacts/{email}/inquiries"),
            Some(r#"{"message": "price for 10k units?", "channel": "web"}"#),
        );
        assert_eq!(status, 202, "{body}");
    }
    nudge.settle();

    // Monday 2026-11-30 09:03 in Shanghai (01:03Z): nothing yet; one inquiry is answered.
    nudge.advance("2d 15h 13m");
    nudge.settle();
    let escalations = |smtp: &SmtpServer| {
        smtp.mails()
            .into_iter()
            .filter(|m| m.subject.contains("inquiry from") || m.subject.contains("Unanswered"))
            .count()
    };
    assert_eq!(escalations(&smtp), 0, "not over the weekend");
    nudge.cli(&[
        "followup",
        "log",
        "monday@example.com",
        "--channel",
        "phone",
        "--summary",
        "quoted",
    ]);
    nudge.settle();

    // 09:05: the owner, once.
    nudge.advance("2m");
    smtp.wait_for("rep@corp.test", "Unanswered inquiry: Big Buyer");
    nudge.settle();
    assert_eq!(escalations(&smtp), 1, "{:#?}", smtp.mails());

    // 09:20: the manager, not the owner again.
    nudge.advance("14m");
    nudge.settle();
    assert_eq!(escalations(&smtp), 1, "15 working minutes, not 14");
    nudge.advance("1m");
    smtp.wait_for("director@corp.test", "Escalation: inquiry from Big Buyer");
    nudge.settle();
    let to_owner: Vec<String> = subjects_to(&smtp, "rep@corp.test")
        .into_iter()
        .filter(|s| s.contains("nquiry"))
        .collect();
    assert_eq!(to_owner, ["Unanswered inquiry: Big Buyer is waiting"]);

    // Judged by the same clock: the Monday answer was in time, Big Buyer was not.
    assert_eq!(sla_compliance(&nudge), (1, 2));
    nudge.stop();
}

/// docs/domain.md §4 with working hours: a reminder that would go at 03:00 on a
/// Sunday waits, as a waiting run with its reason, for Monday 09:00 in the owner's zone.
#[test]
fn an_overdue_reminder_at_sunday_3am_waits_for_monday_morning() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // Friday 2026-11-27 10:00 in Shanghai.
    let mut nudge = with_team(&smtp, "2026-11-27T02:00:00Z");
    nudge.start();
    add_contact(
        &nudge,
        "Li Wei",
        "li@example.com",
        &["--stage", "intent", "--tz", "Asia/Shanghai"],
    );
    // Due Sunday 01:00 local; with overdue-reminder.toml's 2 h grace, 03:00.
    nudge.cli(&[
        "followup",
        "log",
        "li@example.com",
        "--channel",
        "phone",
        "--summary",
        "sent samples",
        "--next",
        "2026-11-29 01:00",
    ]);
    nudge.settle();

    // Sunday 03:30 in Shanghai (Saturday 19:30Z).
    nudge.advance("1d 17h 30m");
    nudge.settle();
    assert!(subjects_to(&smtp, "rep@corp.test").is_empty(), "held on Sunday night");
    let waiting =
        nudge.query("SELECT waiting_reason FROM runs WHERE workflow = 'overdue-reminder' AND status = 'waiting'");
    let reason = waiting[0][0].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("outside the working hours of rep@corp.test; next opening Mon 2026-11-30 09:00"),
        "{waiting}"
    );

    // Monday 08:59: still held; 09:00: the reminder.
    nudge.advance("1d 5h 29m");
    nudge.settle();
    assert!(subjects_to(&smtp, "rep@corp.test").is_empty(), "not a minute early");
    nudge.advance("1m");
    smtp.wait_for("rep@corp.test", "Overdue follow-up: Li Wei");
    nudge.stop();
}

/// A customer who becomes high value goes to a key-account manager picked from the
/// role (round-robin by contact id), who is told; one who becomes medium goes to a
/// senior rep (docs/domain.md §2, the "owner" column).
#[test]
fn customers_go_to_the_role_for_their_value_tier() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // Monday 2026-11-23 10:00 in Shanghai.
    let mut nudge = with_team(&smtp, "2026-11-23T02:00:00Z");
    for (name, email) in [("Wang Fang", "wang@example.com"), ("Chen Jie", "chen@example.com")] {
        add_contact(&nudge, name, email, &[]);
        nudge.cli(&[
            "order",
            "add",
            "--id",
            &format!("{email}-1"),
            "--contact",
            email,
            "--amount",
            "2000",
            "--date",
            "2025-10-01",
        ]);
    }
    add_contact(&nudge, "Sun Li", "sun@example.com", &[]);
    nudge.start();
    nudge.settle();
    for (id, email, amount) in [
        ("w-2", "wang@example.com", "600000.00"),
        ("c-2", "chen@example.com", "600000.00"),
        ("s-1", "sun@example.com", "200000.00"),
    ] {
        let order = format!(r#"{{"id": "{id}", "contact": "{email}", "amount": "{amount}"}}"#);
        let (status, body) = nudge.http("POST", "/orders", Some(&order));
        assert_eq!(status, 201, "{body}");
    }
    smtp.wait_for("ka1@corp.test", "New key account");
    smtp.wait_for("ka2@corp.test", "New key account");
    smtp.wait_for("senior@corp.test", "Customer handed to you: Sun Li");
    nudge.settle();
    let owner = |email: &str| {
        let shown: Value = serde_json::from_str(&nudge.cli(&["contact", "show", email, "--json"])).unwrap();
        shown["contact"]["owner"].as_str().unwrap().to_string()
    };
    let mut key_accounts = [owner("wang@example.com"), owner("chen@example.com")];
    key_accounts.sort();
    assert_eq!(key_accounts, ["ka1@corp.test", "ka2@corp.test"], "one each");
    assert_eq!(owner("sun@example.com"), "senior@corp.test");
    nudge.stop();
}

/// A broken team.toml is reported with file:line:col on reload and by `nudge check`;
/// the last good team keeps working, and the fix is taken.
#[test]
fn a_broken_team_file_is_reported_and_the_last_good_team_kept() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = with_team(&smtp, "2026-11-23T02:00:00Z");
    nudge.start();
    let broken = TEAM.replace("manager = \"senior@corp.test\"", "manager = \"senoir@corp.test\"");
    let line = broken.lines().position(|l| l.contains("senoir")).unwrap() + 1;
    nudge.write_workflow("team.toml", &broken);
    let position = format!("team.toml:{line}:11");
    let log = nudge.wait_for_log(&position);
    assert!(
        log.contains("manager `senoir@corp.test` is not a member of the team"),
        "{log}"
    );
    assert!(log.contains("did you mean `senior@corp.test`?"), "{log}");
    let (ok, _, stderr) = nudge.try_cli(&["check"]);
    assert!(!ok && stderr.contains(&position), "{stderr}");

    // The last good team still hands a new medium-value customer to its senior rep.
    add_contact(&nudge, "Sun Li", "sun@example.com", &[]);
    let (status, body) = nudge.http(
        "POST",
        "/orders",
        Some(r#"{"id": "s-1", "contact": "sun@example.com", "amount": "200000.00"}"#),
    );
    assert_eq!(status, 201, "{body}");
    smtp.wait_for("senior@corp.test", "Customer handed to you: Sun Li");

    nudge.write_workflow(
        "team.toml",
        &TEAM.replace(
            "senior_reps = [\"senior@corp.test\"]",
            "senior_reps = [\"assistant@corp.test\"]",
        ),
    );
    nudge.wait_for_log("workflows reloaded");
    add_contact(&nudge, "Ma Lin", "ma@example.com", &[]);
    let (status, body) = nudge.http(
        "POST",
        "/orders",
        Some(r#"{"id": "m-1", "contact": "ma@example.com", "amount": "200000.00"}"#),
    );
    assert_eq!(status, 201, "{body}");
    smtp.wait_for("assistant@corp.test", "Customer handed to you: Ma Lin");
    nudge.stop();
}
