//! When follow-ups fall due and messages go (docs/domain.md §2 best time by intent grade,
//! §5 nurture times), and how a customer moves through the lifecycle on orders
//! (§1: first_order -> repeat -> loyal, the way back from dormant or churned, §2 the
//! medium-value cadence). Contacts live in Asia/Shanghai; events happen at hours that
//! are awkward there, so a copied time of day would show.

use serde_json::Value;

use crate::common::{Nudge, SmtpServer, scratch, wait_until};

/// Friday 2026-11-27 19:30 UTC: Saturday 03:30 in Shanghai.
const FRIDAY_NIGHT: &str = "2026-11-27T19:30:00Z";
const SHANGHAI: &str = "Asia/Shanghai";

fn add_contact(nudge: &Nudge, name: &str, email: &str, intent: Option<&str>) {
    let mut args = vec!["contact", "add", "--name", name, "--email", email];
    args.extend(["--owner", "rep@corp.test", "--tz", SHANGHAI]);
    if let Some(grade) = intent {
        args.extend(["--intent", grade]);
    }
    nudge.cli(&args);
}

fn add_order(nudge: &Nudge, id: &str, contact: &str, amount: &str) {
    nudge.cli(&["order", "add", "--id", id, "--contact", contact, "--amount", amount]);
}

fn contact(nudge: &Nudge, email: &str) -> Value {
    let shown: Value = serde_json::from_str(&nudge.cli(&["contact", "show", email, "--json"])).unwrap();
    shown["contact"].clone()
}

fn ms(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// The contact's next follow-up time, as an RFC 3339 UTC time.
fn next_follow_up(nudge: &Nudge, email: &str) -> String {
    let at = contact(nudge, email)["next_follow_up_at"]
        .as_i64()
        .expect("a next follow-up");
    jiff::Timestamp::from_millisecond(at).unwrap().to_string()
}

fn set_clock(nudge: &Nudge, to: &str) {
    nudge.cli(&["clock", "--set", to]);
    nudge.settle();
}

fn subjects_to(smtp: &SmtpServer, address: &str, containing: &str) -> usize {
    smtp.mails_to(address)
        .iter()
        .filter(|m| m.subject.contains(containing))
        .count()
}

#[test]
fn each_grades_next_follow_up_falls_in_its_window_in_the_contacts_zone() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, FRIDAY_NIGHT);
    nudge.start();
    let grades = [("a@example.com", "A"), ("b@example.com", "B"), ("c@example.com", "C")];
    let log = |email: &str| {
        nudge.cli(&["followup", "log", email, "--channel", "phone"]);
        nudge.settle();
    };
    for (email, grade) in grades {
        add_contact(&nudge, grade, email, Some(grade));
        nudge.settle();
        log(email);
    }
    // The first follow-up logged at Saturday 03:30 in Shanghai: second-follow-up puts the
    // next 2 days on (Monday 03:30), then at the grade's best time.
    assert_eq!(next_follow_up(&nudge, "a@example.com"), "2026-11-30T01:00:00Z"); // Monday 09:00
    assert_eq!(next_follow_up(&nudge, "b@example.com"), "2026-11-30T06:00:00Z"); // Monday 14:00
    assert_eq!(next_follow_up(&nudge, "c@example.com"), "2026-11-30T11:00:00Z"); // Monday 19:00

    // The second follow-up logged without a next date hands over to intent-cadence.
    for (email, _) in grades {
        log(email);
    }
    // A: 3 days on is Tuesday 03:30 -> weekday mornings, Tuesday 09:00 local.
    assert_eq!(next_follow_up(&nudge, "a@example.com"), "2026-12-01T01:00:00Z");
    // B: 7 days on is Saturday -> weekday afternoons, Monday 14:00 local.
    assert_eq!(next_follow_up(&nudge, "b@example.com"), "2026-12-07T06:00:00Z");
    // C: 15 days on is Sunday 03:30 -> weekends or evenings, Sunday 10:00 local.
    assert_eq!(next_follow_up(&nudge, "c@example.com"), "2026-12-13T02:00:00Z");
    nudge.stop();
}

#[test]
fn the_intent_proposal_goes_at_the_grades_best_time_in_the_contacts_zone() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, FRIDAY_NIGHT);
    nudge.start();
    let contacts = [
        ("a@example.com", Some("A")),
        ("b@example.com", Some("B")),
        ("c@example.com", Some("C")),
        ("none@example.com", None),
    ];
    for (email, grade) in contacts {
        add_contact(&nudge, grade.unwrap_or("Ungraded"), email, grade);
        nudge.cli(&["stage", "set", email, "intent"]);
    }
    nudge.settle();
    let proposals = |email: &str| subjects_to(&smtp, email, "a proposal");
    // Without a grade there is no best time: at once.
    smtp.wait_for("none@example.com", "a proposal");
    assert_eq!(
        proposals("a@example.com") + proposals("b@example.com") + proposals("c@example.com"),
        0
    );

    // C: weekends or evenings, Saturday 10:00 in Shanghai (02:00Z), not before.
    set_clock(&nudge, "2026-11-28T01:59:00Z");
    assert_eq!(proposals("c@example.com"), 0);
    set_clock(&nudge, "2026-11-28T02:00:00Z");
    smtp.wait_for("c@example.com", "a proposal");
    // A: weekday mornings, Monday 09:00 in Shanghai (01:00Z).
    set_clock(&nudge, "2026-11-30T00:59:00Z");
    assert_eq!(proposals("a@example.com"), 0);
    set_clock(&nudge, "2026-11-30T01:00:00Z");
    smtp.wait_for("a@example.com", "a proposal");
    // B: weekday afternoons, Monday 14:00 in Shanghai (06:00Z).
    set_clock(&nudge, "2026-11-30T05:59:00Z");
    assert_eq!(proposals("b@example.com"), 0);
    set_clock(&nudge, "2026-11-30T06:00:00Z");
    smtp.wait_for("b@example.com", "a proposal");

    // The follow-up after each proposal is the grade's interval on, in the same window.
    assert_eq!(next_follow_up(&nudge, "a@example.com"), "2026-12-03T01:00:00Z");
    assert_eq!(next_follow_up(&nudge, "b@example.com"), "2026-12-07T06:00:00Z");
    assert_eq!(next_follow_up(&nudge, "c@example.com"), "2026-12-13T02:00:00Z");
    nudge.stop();
}

/// Waits for the daily classification pass of `day` (in classification.toml's zone).
fn classified_on(nudge: &Nudge, day: &str) {
    wait_until(
        || Some(nudge.status()).filter(|s| s["classified_on"] == day),
        || format!("no classification pass on {day}: {:#}\n{}", nudge.status(), nudge.log()),
    );
    nudge.settle();
}

#[test]
fn reactivation_mail_goes_in_the_nurture_window_and_an_order_brings_the_customer_back() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, "2026-11-23T09:00:00Z");
    add_contact(&nudge, "Chen Jie", "chen@example.com", None);
    add_order(&nudge, "c-1", "chen@example.com", "5000");
    nudge.start();
    nudge.settle();
    assert_eq!(contact(&nudge, "chen@example.com")["stage"], "first_order");

    // Six months on, the pass just after midnight in Shanghai (Sunday 2027-05-23 00:05)
    // finds the customer dormant; quiet hours alone would send at 08:00 sharp.
    set_clock(&nudge, "2027-05-22T16:05:00Z");
    classified_on(&nudge, "2027-05-23");
    assert_eq!(contact(&nudge, "chen@example.com")["stage"], "dormant");
    set_clock(&nudge, "2027-05-23T00:00:00Z");
    assert_eq!(subjects_to(&smtp, "chen@example.com", "it has been a while"), 0);
    set_clock(&nudge, "2027-05-24T01:59:00Z");
    assert_eq!(subjects_to(&smtp, "chen@example.com", "it has been a while"), 0);
    // The nurture window opens on Monday at 10:00 in Shanghai (02:00Z).
    set_clock(&nudge, "2027-05-24T02:00:00Z");
    smtp.wait_for("chen@example.com", "it has been a while");

    // The way back: an order makes the dormant customer a repeat customer again.
    add_order(&nudge, "c-2", "chen@example.com", "800");
    nudge.settle();
    let shown = contact(&nudge, "chen@example.com");
    assert_eq!(
        (&shown["stage"], &shown["behaviour"]),
        (&"repeat".into(), &"active".into()),
        "{shown:#}"
    );
    nudge.stop();
}

#[test]
fn orders_move_a_customer_through_first_order_repeat_and_loyal() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, FRIDAY_NIGHT);
    nudge.start();
    add_contact(&nudge, "Wu Fang", "wu@example.com", None);
    let stages: Vec<String> = (1..=6)
        .map(|n| {
            add_order(&nudge, &format!("w-{n}"), "wu@example.com", "1000");
            nudge.settle();
            contact(&nudge, "wu@example.com")["stage"].as_str().unwrap().to_string()
        })
        .collect();
    // workflows/repeat-customer.toml: the second order; loyal-customer.toml: the fifth.
    assert_eq!(stages, ["first_order", "repeat", "repeat", "repeat", "loyal", "loyal"]);
    nudge.stop();
}

#[test]
fn a_churned_contact_who_orders_comes_back_to_first_order_or_repeat() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, FRIDAY_NIGHT);
    nudge.start();
    // A lead given up on, whose first order is their first.
    add_contact(&nudge, "Lead", "lead@example.com", None);
    // A customer given up on after one order.
    add_contact(&nudge, "Customer", "customer@example.com", None);
    add_order(&nudge, "k-1", "customer@example.com", "1000");
    nudge.settle();
    for email in ["lead@example.com", "customer@example.com"] {
        nudge.cli(&["stage", "set", email, "churned"]);
    }
    nudge.settle();
    add_order(&nudge, "l-1", "lead@example.com", "1000");
    add_order(&nudge, "k-2", "customer@example.com", "1000");
    nudge.settle();
    assert_eq!(contact(&nudge, "lead@example.com")["stage"], "first_order");
    assert_eq!(contact(&nudge, "customer@example.com")["stage"], "repeat");
    nudge.stop();
}

#[test]
fn a_customer_who_becomes_medium_value_gets_a_follow_up_every_45_days() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, FRIDAY_NIGHT);
    nudge.start();
    add_contact(&nudge, "Zhou Min", "zhou@example.com", None);
    add_order(&nudge, "z-1", "zhou@example.com", "50000");
    nudge.settle();
    assert_eq!(contact(&nudge, "zhou@example.com")["value_tier"], "low");

    // A month later a large order makes 110,000 CNY in twelve months: medium value.
    set_clock(&nudge, "2026-12-27T19:30:00Z");
    add_order(&nudge, "z-2", "zhou@example.com", "60000");
    nudge.settle();
    let shown = contact(&nudge, "zhou@example.com");
    assert_eq!(shown["value_tier"], "medium", "{shown:#}");
    // cadences.toml [value] medium: 45 days on, in the contact's zone.
    assert_eq!(shown["next_follow_up_at"].as_i64(), Some(ms("2027-02-10T19:30:00Z")));
    let goal = shown["next_goal"].as_str().unwrap_or("");
    assert!(goal.starts_with("Medium-value customer"), "{shown:#}");
    nudge.stop();
}
