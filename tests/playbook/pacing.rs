//! Per-domain pacing and the warm-up plan (issue 35 item 3; README "Pacing and
//! warm-up"), on the virtual clock against a real SMTP server: a provider that
//! throttles slows its own domain only, a configured per-minute limit holds on
//! the recorded times, and a 30-day warm-up plan is never exceeded while every
//! message is delivered in the end, once.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use crate::common::{Nudge, SmtpServer, scratch, wait_until};

/// Monday 10:00 UTC (18:00 in Shanghai).
const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";
const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

const NOTICE: &str = r#"
[notice]
channel = "email"
subject = "Your account, {{ contact.name }}"
text = "Hello {{ contact.name }}, your account is ready."

[offer]
channel = "email"
subject = "An offer for {{ contact.name }}"
text = "Hello {{ contact.name }}, our spring offer."
"#;

fn ms(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// A daemon whose contacts moved to `loyal` get the notice (transactional)
/// and, if `offer`, the offer (marketing) at once.
fn start(smtp: &SmtpServer, extra: &str) -> Nudge {
    let mut nudge = Nudge::with_config(smtp, MONDAY_10AM, &format!("max_unsent = 0\n{extra}"));
    nudge.write_workflow("templates/notice.toml", NOTICE);
    nudge.write_workflow(
        "notice.toml",
        "category = \"transactional\"\nwhen = 'contact.company != \"Offer\"'\n\
         [trigger]\non = \"stage_changed\"\nto = \"loyal\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"notice\" }\n",
    );
    nudge.write_workflow(
        "offer.toml",
        "category = \"marketing\"\nwhen = 'contact.company == \"Offer\"'\n\
         [trigger]\non = \"stage_changed\"\nto = \"loyal\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"offer\" }\n",
    );
    nudge.start();
    nudge
}

/// Contacts at these addresses move to `loyal`: each is owed one message.
fn queue(nudge: &Nudge, addresses: &[String], company: &str) {
    for (i, email) in addresses.iter().enumerate() {
        let body = json!({"email": email, "stage": "loyal", "name": format!("C{i}"), "company": company});
        let (status, reply) = nudge.http("POST", "/stage-changes", Some(&body.to_string()));
        assert!(status == 202 || status == 200, "{status} {reply}");
    }
}

fn addresses(prefix: &str, domain: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@{domain}")).collect()
}

fn rows(nudge: &Nudge, sql: &str) -> Vec<Value> {
    nudge.query(sql).as_array().cloned().unwrap_or_default()
}

/// The clock moves on by `step` until `done` (at most `steps` times).
fn step_until(nudge: &Nudge, step: &str, steps: usize, done: impl Fn() -> bool) {
    for _ in 0..steps {
        if done() {
            return;
        }
        nudge.advance(step);
        nudge.settle();
    }
    assert!(
        done(),
        "not done after {steps} steps of {step}: {:#}\n{}",
        nudge.status(),
        nudge.log()
    );
}

/// Every address got exactly one message, every row is sent, none twice.
fn assert_each_delivered_once(nudge: &Nudge, smtp: &SmtpServer, all: &[String]) {
    let mails = smtp.mails();
    assert_eq!(mails.len(), all.len(), "one message each");
    let ids: HashSet<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "no Message-ID twice");
    for to in all {
        assert_eq!(smtp.mails_to(to).len(), 1, "{to}");
    }
    let unsent = rows(nudge, "SELECT id, status, recipient FROM outbox WHERE status <> 'sent'");
    assert!(unsent.is_empty(), "{unsent:?}");
}

/// When each attempt at the messages to `domain` started (virtual clock), in order.
fn attempt_times(nudge: &Nudge, domain: &str, outcome: &str) -> Vec<i64> {
    rows(
        nudge,
        &format!(
            "SELECT d.started_at FROM deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE o.recipient LIKE '%@{domain}' AND d.outcome = '{outcome}' ORDER BY d.started_at"
        ),
    )
    .iter()
    .map(|r| r[0].as_i64().unwrap())
    .collect()
}

#[test]
fn a_throttling_provider_slows_its_own_domain_only_and_every_message_goes_once() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // slow.test throttles every recipient until told otherwise.
    smtp.script_faults(json!({ "rcpt:slow.test": "421 4.7.28 rate limited, try again later" }));
    // Two attempts at most: without the pacing, a message throttled twice would be dead.
    let nudge = start(
        &smtp,
        "[delivery]\nmax_attempts = 2\n\
         [delivery.pacing]\nbackoff_first_secs = 60\nbackoff_max_secs = 120\nrecover_after = 2\n",
    );
    let slow = addresses("s", "slow.test", 10);
    let fast = addresses("f", "fast.test", 10);
    let all: Vec<String> = slow
        .iter()
        .zip(&fast)
        .flat_map(|(s, f)| [s.clone(), f.clone()])
        .collect();
    queue(&nudge, &all, "Notice");
    nudge.settle();
    let t0 = ms(MONDAY_10AM);

    // fast.test is not delayed: all of it at once, while slow.test is throttled.
    wait_until(
        || (fast.iter().all(|to| smtp.mails_to(to).len() == 1)).then_some(()),
        || format!("fast.test not delivered at once: {:#}", nudge.status()),
    );
    assert_eq!(attempt_times(&nudge, "fast.test", "sent"), vec![t0; 10]);
    let (_, health) = nudge.http("GET", "/health", None);
    assert_eq!(health["status"], "ok", "throttling is not a fault: {health}");
    let throttled = &health["pacing"]["throttled"];
    assert_eq!(throttled.as_array().unwrap().len(), 1, "{health}");
    assert_eq!(throttled[0]["domain"], "slow.test");
    assert_eq!(throttled[0]["paused_until"], t0 + MINUTE, "the first pause: {health}");
    assert_eq!(throttled[0]["reply_code"], "421 4.7.28", "{health}");
    let status = nudge.status();
    assert_eq!(status["pacing"]["throttled"][0]["domain"], "slow.test", "{status}");
    assert_eq!(status["outbox"]["pending"], 10, "{status}");
    nudge.wait_for_log("recipient domain throttles");
    let burst = attempt_times(&nudge, "slow.test", "transient");
    assert!(!burst.is_empty() && burst.iter().all(|&t| t == t0), "{burst:?}");

    // Two more throttling replies, then it accepts.
    smtp.script_faults(json!({ "rcpt:slow.test": vec!["421 4.7.28 rate limited"; 2] }));
    step_until(&nudge, "10s", 300, || {
        slow.iter().all(|to| smtp.mails_to(to).len() == 1)
    });
    assert_each_delivered_once(&nudge, &smtp, &all);
    assert_eq!(
        smtp.faults_left()["rcpt:slow.test"],
        json!([]),
        "both throttling replies given"
    );

    // Paused after the burst: no attempt at slow.test in the minute after it.
    let tries = attempt_times(&nudge, "slow.test", "transient");
    assert_eq!(tries.len(), burst.len() + 2, "{tries:?}");
    let later: Vec<i64> = attempt_times(&nudge, "slow.test", "sent")
        .into_iter()
        .chain(tries[burst.len()..].iter().copied())
        .collect();
    assert!(later.iter().all(|&t| t >= t0 + MINUTE), "{later:?}");
    // Throttled attempts are recorded but not charged: none died at max_attempts = 2.
    let charged = rows(
        &nudge,
        "SELECT SUM(throttled), MAX(attempts - throttled), MAX(attempts) FROM outbox",
    );
    assert_eq!(charged[0][0], json!(tries.len()), "{charged:?}");
    assert_eq!(charged[0][1], 1, "{charged:?}");
    assert!(
        charged[0][2].as_i64().unwrap() >= 3,
        "one message was throttled twice at least: {charged:?}"
    );
    // Recovered: accepted mail doubled the rate back to where it throttled.
    let (_, health) = nudge.http("GET", "/health", None);
    assert_eq!(health["pacing"]["throttled"], json!([]), "{health}");
    nudge.wait_for_log("recipient domain recovered from throttling");
}

#[test]
fn a_configured_per_minute_limit_spreads_its_domain_and_never_delays_another() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = start(
        &smtp,
        "[delivery.domains.\"paced.test\"]\nper_minute = 6\n[metrics]\npublic = true\n",
    );
    let paced = addresses("p", "paced.test", 12);
    let free = addresses("q", "free.test", 5);
    let all: Vec<String> = paced.iter().chain(&free).cloned().collect();
    queue(&nudge, &all, "Notice");
    nudge.settle();
    let t0 = ms(MONDAY_10AM);
    wait_until(
        || (free.iter().all(|to| smtp.mails_to(to).len() == 1)).then_some(()),
        || format!("free.test not delivered at once: {:#}", nudge.status()),
    );
    assert_eq!(attempt_times(&nudge, "free.test", "sent"), vec![t0; 5]);
    // The rest of paced.test waits untried, each at its own slot, 10 s apart.
    let held = rows(
        &nudge,
        "SELECT next_attempt_at, held_reason, attempts FROM outbox
         WHERE status = 'pending' ORDER BY next_attempt_at",
    );
    assert_eq!(held.len(), 11, "{held:?}");
    for (i, row) in held.iter().enumerate() {
        assert_eq!(row[0], t0 + 10_000 * (i as i64 + 1), "{held:?}");
        assert_eq!((&row[1], &row[2]), (&json!("domain_paced"), &json!(0)), "{row}");
    }
    let status = nudge.status();
    assert_eq!(status["outbox_held"], json!({ "domain_paced": 11 }), "{status}");
    assert!(nudge.cli(&["status"]).contains("11 pending held untried: domain_paced"));
    let explain = nudge.cli(&["explain", "p11@paced.test"]);
    assert!(explain.contains(": pending [domain_paced]"), "{explain}");
    let (_, _, metrics) = nudge.get_raw("/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("nudge_delivery_held_total{reason=\"domain_paced\"} 11"),
        "{metrics}"
    );
    assert!(metrics.contains("nudge_throttled_domains 0"), "{metrics}");

    step_until(&nudge, "5s", 100, || {
        paced.iter().all(|to| smtp.mails_to(to).len() == 1)
    });
    assert_each_delivered_once(&nudge, &smtp, &all);
    // On the recorded (virtual) times: one every 10 s, so never more than 6 in a minute.
    let sent = attempt_times(&nudge, "paced.test", "sent");
    assert_eq!(sent.len(), 12);
    assert!(sent.windows(2).all(|w| w[1] - w[0] >= 10_000), "{sent:?}");
    for (i, &from) in sent.iter().enumerate() {
        let in_minute = sent[i..].iter().take_while(|&&t| t < from + MINUTE).count();
        assert!(in_minute <= 6, "{in_minute} within a minute of {from}: {sent:?}");
    }
    let attempts = rows(&nudge, "SELECT COUNT(*) FROM deliveries");
    assert_eq!(attempts[0][0], 17, "a held message is never an attempt");
}

/// A 30-day plan in Shanghai's days: 1, 1, 2, 2, 3, 3, ... a day.
fn plan() -> Vec<i64> {
    (0..30).map(|d| d / 2 + 1).collect()
}

#[test]
fn a_warm_up_plan_holds_every_day_for_thirty_days_and_drops_nothing() {
    const OFFERS: usize = 100;
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let daily: Vec<String> = plan().iter().map(i64::to_string).collect();
    let mut nudge = start(
        &smtp,
        &format!(
            "[delivery.warmup]\nstart = \"2026-11-23\"\ndaily = [{}]\nzone = \"Asia/Shanghai\"\n",
            daily.join(", ")
        ),
    );
    let offers = addresses("o", "warm.test", OFFERS);
    let notices = addresses("n", "warm.test", 5);
    queue(&nudge, &offers, "Offer");
    queue(&nudge, &notices, "Notice");
    nudge.settle();
    let t0 = ms(MONDAY_10AM);
    // Transactional email is neither counted nor held.
    wait_until(
        || (notices.iter().all(|to| smtp.mails_to(to).len() == 1)).then_some(()),
        || format!("notices held: {:#}", nudge.status()),
    );
    let status = nudge.status();
    assert_eq!(status["pacing"]["warmup"]["cap"], 1, "{status}");
    assert_eq!(status["outbox_held"]["warmup_cap"], OFFERS - 1, "{status}");
    let explain = nudge.cli(&["explain", "o99@warm.test"]);
    assert!(explain.contains("[warmup_cap]"), "{explain}");

    // 30 days in steps of 6 hours; a restart on day 4 reads back what the day had sent.
    let all: Vec<String> = offers.iter().chain(&notices).cloned().collect();
    for step in 0..(30 * 4) {
        if step == 17 {
            nudge.stop();
            nudge.start();
        }
        nudge.advance("6h");
        nudge.settle();
    }
    assert_each_delivered_once(&nudge, &smtp, &all);
    let sent = rows(
        &nudge,
        "SELECT sent_at FROM outbox WHERE category = 'marketing' AND status = 'sent' ORDER BY sent_at",
    );
    // Days start at midnight in Shanghai (UTC+8).
    let day_zero = ms("2026-11-22T16:00:00Z");
    let mut per_day: BTreeMap<i64, i64> = BTreeMap::new();
    for row in &sent {
        *per_day.entry((row[0].as_i64().unwrap() - day_zero) / DAY).or_default() += 1;
    }
    let plan = plan();
    let (mut total, mut allowed) = (0, 0);
    for (day, &cap) in plan.iter().enumerate() {
        let n = per_day.get(&(day as i64)).copied().unwrap_or(0);
        assert!(n <= cap, "day {day}: {n} sent, the plan allows {cap}: {per_day:?}");
        total += n;
        // The backlog keeps the plan's pace: by each day's end, at least what the
        // days before allowed (a held message's slot late in a day may fall to
        // the clock's next step, the next day).
        assert!(
            total >= allowed.min(OFFERS as i64),
            "day {day}: {total} of {allowed}: {per_day:?}"
        );
        allowed += cap;
    }
    assert_eq!(total, OFFERS as i64, "{per_day:?}");
    assert!(sent[0][0].as_i64().unwrap() >= t0);
    nudge.stop();
}

#[test]
fn a_bad_pacing_setting_stops_check_with_its_line_and_column() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_10AM);
    let config = nudge.path("nudge.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[delivery.warmup]\nstart = \"2026-12-01\"\ndaily = [50, 100]\nzone = \"Asia/Shangai\"\n");
    let line = text.lines().position(|l| l.starts_with("zone")).unwrap() + 1;
    std::fs::write(&config, text).unwrap();
    let (ok, _, err) = nudge.try_cli(&["check"]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "nudge.toml:{line}:8: [delivery.warmup] zone = \"Asia/Shangai\" is not a time zone"
        )),
        "{err}"
    );
    assert!(err.contains("e.g. \"Asia/Shanghai\""), "{err}");
}
