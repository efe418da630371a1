//! Customer insight end to end: orders through the CLI, the API and CSV files,
//! classification by the shipped classification.toml, and the shipped workflows
//! reacting to its events, on the real binary, a real SQLite file and virtual time.

mod common;

use common::{Nudge, SmtpServer, scratch, wait_until};
use serde_json::Value;

/// 17:00 in Asia/Shanghai, the shipped rules' business time zone: still 2026-11-23 there.
const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

fn add_contact(nudge: &Nudge, name: &str, email: &str) {
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        name,
        "--email",
        email,
        "--owner",
        "rep@corp.test",
    ]);
}

fn add_order(nudge: &Nudge, id: &str, contact: &str, amount: &str, date: &str) -> String {
    nudge.cli(&[
        "order",
        "add",
        "--id",
        id,
        "--contact",
        contact,
        "--amount",
        amount,
        "--date",
        date,
    ])
}

/// `nudge contact show --json`.
fn show(nudge: &Nudge, contact: &str) -> Value {
    serde_json::from_str(&nudge.cli(&["contact", "show", contact, "--json"])).unwrap()
}

fn tier(nudge: &Nudge, contact: &str) -> String {
    show(nudge, contact)["contact"]["value_tier"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn value_tier_boundaries_of_amount_and_tenure() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);

    // 499,999.99 in the trailing year, made of two orders, by a customer of two years.
    add_contact(&nudge, "Just Below", "below@example.com");
    add_order(&nudge, "b-0", "below@example.com", "10", "2024-11-01");
    add_order(&nudge, "b-1", "below@example.com", "250000.00", "2026-03-01");
    add_order(&nudge, "b-2", "below@example.com", "249999.99", "2026-11-20");
    assert_eq!(tier(&nudge, "below@example.com"), "medium");
    // Exactly 500,000.
    add_contact(&nudge, "Exactly", "exact@example.com");
    add_order(&nudge, "e-0", "exact@example.com", "10", "2024-11-01");
    add_order(&nudge, "e-1", "exact@example.com", "250000.00", "2026-03-01");
    add_order(&nudge, "e-2", "exact@example.com", "250000", "2026-11-20");
    assert_eq!(tier(&nudge, "exact@example.com"), "high");

    // Enough money, but a customer for 364 days: medium; 365 days: high.
    add_contact(&nudge, "Newer", "newer@example.com");
    add_order(&nudge, "n-1", "newer@example.com", "600000", "2025-11-24");
    assert_eq!(tier(&nudge, "newer@example.com"), "medium");
    add_contact(&nudge, "Year", "year@example.com");
    add_order(&nudge, "y-0", "year@example.com", "1", "2025-11-23");
    add_order(&nudge, "y-1", "year@example.com", "600000", "2026-11-23");
    assert_eq!(tier(&nudge, "year@example.com"), "high");
    let history = &show(&nudge, "year@example.com")["history"];
    assert!(
        history.as_array().unwrap().iter().any(|h| h["field"] == "value_tier"
            && h["from_value"] == "low"
            && h["to_value"] == "high"
            && h["changed_by"] == "classification"),
        "the tier change is in the history: {history:#}"
    );
}

#[test]
fn orders_in_another_currency_are_converted_at_the_configured_rate_or_refused() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Buyer", "buyer@example.com");

    // 14,084.51 USD at 7.10 is 100,000.02 CNY: medium, where the same figure in CNY is low.
    nudge.cli(&[
        "order",
        "add",
        "--id",
        "u-1",
        "--contact",
        "buyer@example.com",
        "--amount",
        "14084.51",
        "--currency",
        "USD",
    ]);
    let shown = show(&nudge, "buyer@example.com");
    assert_eq!(shown["orders"][0]["amount_minor"], 1_408_451);
    assert_eq!(shown["orders"][0]["currency"], "USD");
    assert_eq!(shown["orders"][0]["base_amount_minor"], 10_000_002);
    assert_eq!(shown["contact"]["value_tier"], "medium");

    let (ok, _, stderr) = nudge.try_cli(&[
        "order",
        "add",
        "--id",
        "g-1",
        "--contact",
        "buyer@example.com",
        "--amount",
        "999999",
        "--currency",
        "GBP",
    ]);
    assert!(!ok, "an order in a currency without a rate is refused");
    assert!(stderr.contains("no conversion rate for currency `GBP`"), "{stderr}");
    let shown = show(&nudge, "buyer@example.com");
    assert_eq!(shown["orders"].as_array().unwrap().len(), 1, "nothing was stored");
    assert_eq!(shown["contact"]["value_tier"], "medium", "nothing was mixed in");
}

#[test]
fn dormant_on_the_exact_day_six_months_after_the_last_order() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Quiet", "quiet@example.com");
    add_order(&nudge, "q-1", "quiet@example.com", "100", "2026-05-24");
    let behaviour = |n: &Nudge| show(n, "quiet@example.com")["contact"]["behaviour"].clone();
    assert_eq!(behaviour(&nudge), "active");

    // 2026-11-24 in Shanghai begins at 16:00 UTC on the 23rd.
    nudge.cli(&["clock", "--set", "2026-11-23T15:59:00Z"]);
    nudge.cli(&["classify"]);
    assert_eq!(behaviour(&nudge), "active", "the day before");
    nudge.cli(&["clock", "--set", "2026-11-23T16:00:00Z"]);
    nudge.cli(&["classify"]);
    assert_eq!(behaviour(&nudge), "dormant", "on the day");
}

#[test]
fn a_large_order_by_a_low_customer_switches_owner_and_cadence_at_once() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Wang Fang", "wang@example.com");
    add_order(&nudge, "w-1", "wang@example.com", "2000", "2025-10-01");
    assert_eq!(tier(&nudge, "wang@example.com"), "low");
    nudge.start();
    nudge.settle();

    let order = r#"{"id": "w-2", "contact": "wang@example.com", "amount": "600000.00", "items": "50 pumps"}"#;
    let (status, body) = nudge.http("POST", "/orders", Some(order));
    assert_eq!(status, 201, "{body}");
    let mail = smtp.wait_for("key-accounts@example.com", "New key account: Wang Fang");
    assert!(mail.text.contains("low -> high"), "{}", mail.text);
    nudge.settle();

    let (_, shown) = nudge.http("GET", "/contacts/wang@example.com", None);
    let contact = &shown["contact"];
    assert_eq!(contact["value_tier"], "high");
    assert_eq!(contact["owner"], "key-accounts@example.com");
    // cadences.toml [value]: high-value customers every 30 days.
    let thirty_days_later: jiff::Timestamp = "2026-12-23T09:00:00Z".parse().unwrap();
    assert_eq!(
        contact["next_follow_up_at"],
        thirty_days_later.as_millisecond(),
        "{shown:#}"
    );
    let owner_change = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["field"] == "owner")
        .cloned();
    let owner_change = owner_change.unwrap_or_else(|| panic!("no owner change in {shown:#}"));
    assert_eq!(owner_change["from_value"], "rep@corp.test");
    assert_eq!(owner_change["changed_by"], "workflow:key-account");

    // Sending the order again changes nothing; sending another under its id is refused.
    let (status, body) = nudge.http("POST", "/orders", Some(order));
    assert_eq!((status, body["created"].clone()), (200, Value::Bool(false)), "{body}");
    let (status, body) = nudge.http(
        "POST",
        "/orders",
        Some(r#"{"id": "w-2", "contact": "wang@example.com", "amount": "1"}"#),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = nudge.http(
        "POST",
        "/orders",
        Some(r#"{"id": "w-3", "contact": "wang@example.com", "amount": 10.5}"#),
    );
    assert_eq!(status, 422, "a float amount is refused: {body}");
    nudge.settle();
    assert_eq!(smtp.mails_to("key-accounts@example.com").len(), 1, "one hand-over");

    // The API serves the same report as the CLI.
    let (status, from_api) = nudge.http("GET", "/reports?from=2026-11-01&to=2026-11-30&tier=high", None);
    assert_eq!(status, 200, "{from_api}");
    let from_cli: Value = serde_json::from_str(&nudge.cli(&[
        "report",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--tier",
        "high",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(from_api, from_cli);
    assert_eq!(
        from_api["measures"][2]["denominator"], 1,
        "one high-value customer: {from_api:#}"
    );
    let (status, body) = nudge.http("GET", "/reports?from=November", None);
    assert_eq!(status, 422, "{body}");

    // A retry the next day, still without a date, is the same order.
    nudge.advance("1d");
    let (status, body) = nudge.http("POST", "/orders", Some(order));
    assert_eq!((status, body["created"].clone()), (200, Value::Bool(false)), "{body}");
    nudge.stop();
}

#[test]
fn six_months_without_an_order_start_the_reactivation_cadence() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Chen Jie", "chen@example.com");
    add_order(&nudge, "c-1", "chen@example.com", "5000", "2026-11-23");
    nudge.start();
    nudge.settle();

    let classified_on = |day: &str| {
        wait_until(
            || Some(nudge.status()).filter(|s| s["classified_on"] == day),
            || format!("no classification pass on {day}: {:#}\n{}", nudge.status(), nudge.log()),
        );
        nudge.settle();
    };
    // The day before: still active, no reactivation.
    nudge.cli(&["clock", "--set", "2027-05-22T09:00:00Z"]);
    classified_on("2027-05-22");
    assert_eq!(show(&nudge, "chen@example.com")["contact"]["behaviour"], "active");
    assert!(smtp.mails_to("customer-success@example.com").is_empty());

    nudge.cli(&["clock", "--set", "2027-05-23T09:00:00Z"]);
    classified_on("2027-05-23");
    // A Sunday: the note to customer success (team.toml) waits for their working hours,
    // Monday 09:00 in Shanghai, and the run's next steps with it; the mail then keeps to
    // the nurture window, Monday 10:00 in the contact's zone (UTC).
    nudge.cli(&["clock", "--set", "2027-05-24T01:00:00Z"]);
    smtp.wait_for("customer-success@example.com", "Dormant customer: Chen Jie");
    nudge.cli(&["clock", "--set", "2027-05-24T10:00:00Z"]);
    let mail = smtp.wait_for("chen@example.com", "it has been a while");
    assert!(mail.text.contains("5% off"), "{}", mail.text);
    nudge.settle();
    let contact = &show(&nudge, "chen@example.com")["contact"];
    assert_eq!(contact["behaviour"], "dormant");
    assert_eq!(contact["stage"], "dormant");
    assert_eq!(contact["owner"], "customer-success@example.com");

    // An order a month later makes the customer active again and stops the reactivation mails.
    nudge.cli(&["clock", "--advance", "10d"]);
    add_order(&nudge, "c-2", "chen@example.com", "100", "2027-06-02");
    nudge.settle();
    // At once, not at the next daily pass: active, and the order moves the stage on.
    let shown = show(&nudge, "chen@example.com");
    assert_eq!(shown["contact"]["behaviour"], "active");
    assert_eq!(shown["contact"]["stage"], "repeat", "{shown:#}");
    let history = shown["history"].as_array().unwrap();
    let changed = |field: &str, from: &str, to: &str, by: &str| {
        history
            .iter()
            .any(|h| h["field"] == field && h["from_value"] == from && h["to_value"] == to && h["changed_by"] == by)
    };
    assert!(changed("behaviour", "dormant", "active", "classification"), "{shown:#}");
    assert!(
        changed("stage", "dormant", "repeat", "workflow:reactivated"),
        "{shown:#}"
    );
    nudge.cli(&["clock", "--advance", "25d"]);
    nudge.settle();
    assert_eq!(show(&nudge, "chen@example.com")["contact"]["behaviour"], "active");
    assert_eq!(
        smtp.mails_to("chen@example.com")
            .iter()
            .filter(|m| m.subject.contains("it has been a while"))
            .count(),
        1,
        "no second reactivation mail once the customer ordered again"
    );
    nudge.stop();
}

#[test]
fn set_tier_and_set_intent_steps_are_kept_in_the_history_with_the_workflow() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.write_workflow(
        "trade-show.toml",
        "when = 'contact.source == \"trade_show\"'\n[trigger]\non = \"contact_created\"\n\
         [[steps]]\nset_tier = \"high\"\n[[steps]]\nset_intent = \"A\"\n[[steps]]\nset_intent = \"A\"\n",
    );
    nudge.start();
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Fair",
        "--email",
        "fair@example.com",
        "--source",
        "trade_show",
        "--intent",
        "B",
    ]);
    nudge.settle();
    let shown = show(&nudge, "fair@example.com");
    assert_eq!(
        (&shown["contact"]["value_tier"], &shown["contact"]["intent_grade"]),
        (&"high".into(), &"A".into())
    );
    let entries: Vec<(Value, Value, Value, Value)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["changed_by"] == "workflow:trade-show")
        .map(|h| {
            (
                h["field"].clone(),
                h["from_value"].clone(),
                h["to_value"].clone(),
                h["at"].clone(),
            )
        })
        .collect();
    let at: jiff::Timestamp = MONDAY_9AM.parse().unwrap();
    let at = Value::from(at.as_millisecond());
    let mut entries = entries;
    entries.sort_by_key(|e| e.0.to_string());
    // The second set_intent changed nothing, so it wrote nothing.
    assert_eq!(
        entries,
        [
            ("intent_grade".into(), "B".into(), "A".into(), at.clone()),
            ("value_tier".into(), Value::Null, "high".into(), at),
        ],
        "{shown:#}"
    );
    nudge.stop();
}

#[test]
fn csv_import_reports_each_bad_row_keeps_the_good_ones_and_is_idempotent() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Importer", "imp@example.com");

    let mut csv = b"id,contact,amount,currency,date,items\n\
        i-1,imp@example.com,100.00,CNY,2026-11-01,pumps\n\
        i-2,imp@example.com,50,,2026-13-01,valves\n\
        i-3,nobody@example.com,10,CNY,2026-11-02,\n\
        i-4,imp@example.com,-5,CNY,2026-11-02,\n\
        i-5,imp@example.com,12\"3,CNY,2026-11-02,\n"
        .to_vec();
    csv.extend_from_slice(b"i-6,imp@example.com,20,CNY,2026-11-03,caf\xe9\n");
    csv.extend_from_slice(b"i-7,imp@example.com,30,USD,2026-11-04,\"valves, \"\"large\"\"\"\n");
    csv.extend_from_slice(b"i-8,imp@example.com,40,CNY\n");
    // A quote never closed swallows the next line: both are reported, as one row.
    csv.extend_from_slice(b"i-9,imp@example.com,\"10,CNY,2026-11-05,\ni-10,imp@example.com,5,CNY,2026-11-05,\n");
    let file = nudge.path("orders.csv");
    std::fs::write(&file, &csv).unwrap();
    let file = file.to_str().unwrap();

    let (ok, stdout, stderr) = nudge.try_cli(&["order", "import", file]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("imported 2 orders, 0 already present, 7 bad rows skipped"),
        "{stdout}{stderr}"
    );
    for (line, reason) in [
        (3, "not a date"),
        (4, "no contact `nobody@example.com`"),
        (5, "negative"),
        (6, "broken quoting"),
        (7, "not UTF-8"),
        (9, "4 fields where the header has 6"),
        (10, "runs over lines 10-11: a quote that is never closed?"),
    ] {
        let expected = format!("{file}:{line}: ");
        let reported = stderr.lines().find(|l| l.starts_with(&expected));
        let reported = reported.unwrap_or_else(|| panic!("line {line} not reported:\n{stderr}"));
        assert!(reported.contains(reason), "line {line}: {reported}");
    }
    let shown = show(&nudge, "imp@example.com");
    let ids: Vec<&str> = shown["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i-7", "i-1"]);
    assert_eq!(shown["orders"][0]["items"], "valves, \"large\"");

    let history_len = shown["history"].as_array().unwrap().len();
    let (ok, stdout, _) = nudge.try_cli(&["order", "import", file]);
    assert!(ok);
    assert!(
        stdout.contains("imported 0 orders, 2 already present, 7 bad rows skipped"),
        "{stdout}"
    );
    let again = show(&nudge, "imp@example.com");
    assert_eq!(again["orders"], shown["orders"]);
    assert_eq!(
        again["history"].as_array().unwrap().len(),
        history_len,
        "nothing changed"
    );
}

/// Imports store a batch of rows in a few statements; a contact or an order that
/// comes twice, in one batch or in two, is still recognised, whatever identifies it.
#[test]
fn csv_import_recognises_repeats_within_a_batch_and_across_batches() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    // 2,501 rows: three batches of 1,000. c0 comes again in its batch and in the third; a
    // contact known by phone only, and one by name and company only, come again in the second.
    let mut rows: Vec<String> = (0..2_495)
        .map(|i| format!("Contact {i},Acme,c{i}@example.com,"))
        .collect();
    rows.insert(2, "Phone Only,,,+861000".into());
    rows.insert(3, "No Details,Acme,,".into());
    rows.insert(4, "Again,Acme,c0@example.com,".into());
    rows.insert(1_700, "Phone Again,Other,,+861000".into());
    rows.insert(1_800, "No Details,Acme,,".into());
    rows.insert(2_400, "Again,Acme,c0@example.com,".into());
    let contacts = format!("name,company,email,phone\n{}\n", rows.join("\n"));
    let file = nudge.path("contacts.csv");
    std::fs::write(&file, &contacts).unwrap();
    let (ok, stdout, stderr) = nudge.try_cli(&["contact", "import", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 2497 contacts, 4 already present, 0 bad rows skipped"),
        "{stdout}{stderr}"
    );
    assert_eq!(show(&nudge, "c0@example.com")["contact"]["name"], "Contact 0");
    // Every contact added has its one `contact_created` event, none more.
    let counts = nudge.query(
        "SELECT (SELECT COUNT(*) FROM contacts), (SELECT COUNT(*) FROM events WHERE kind = 'contact_created'),
                (SELECT COUNT(*) FROM contacts c WHERE NOT EXISTS
                   (SELECT 1 FROM events e WHERE e.contact_id = c.id AND e.kind = 'contact_created'))",
    );
    assert_eq!(counts, serde_json::json!([[2497, 2497, 0]]));

    // Orders: o-1 repeats unchanged in its batch and in the next, o-2 repeats with another
    // amount (a conflict, reported), o-3 repeats without its date (the same order).
    let mut orders = String::from("id,contact,amount,date\n");
    for i in 0..1_200 {
        match i + 2 {
            10 | 1_100 => orders.push_str("o-1,c1@example.com,100.00,2026-11-01\n"),
            11 => orders.push_str("o-2,c2@example.com,100.00,2026-11-01\n"),
            12 => orders.push_str("o-2,c2@example.com,999.00,2026-11-01\n"),
            13 => orders.push_str("o-3,c3@example.com,5.00,2026-11-20\n"),
            14 => orders.push_str("o-3,c3@example.com,5.00,\n"),
            _ => orders.push_str(&format!("n-{i},c{}@example.com,10.00,2026-11-02\n", i + 10)),
        }
    }
    let file = nudge.path("orders.csv");
    std::fs::write(&file, &orders).unwrap();
    let file = file.to_str().unwrap();
    let (ok, stdout, stderr) = nudge.try_cli(&["order", "import", file]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 1197 orders, 2 already present, 1 bad rows skipped"),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:12: order `o-2` exists already with other content (100.00 CNY"
        )),
        "{stderr}"
    );
    let shown = show(&nudge, "c1@example.com");
    assert_eq!(shown["orders"].as_array().unwrap().len(), 1);
    assert_eq!(shown["contact"]["customer_since"], "2026-11-01");
    assert_eq!(show(&nudge, "c2@example.com")["orders"][0]["amount_minor"], 10000);
    // One order_placed event per order added, pointing at it.
    let placed = nudge.query(
        "SELECT COUNT(*), COUNT(DISTINCT payload ->> 'order_id'),
                SUM(EXISTS (SELECT 1 FROM orders o WHERE o.id = e.payload ->> 'order_id' AND o.contact_id = e.contact_id))
         FROM events e WHERE kind = 'order_placed'",
    );
    assert_eq!(placed, serde_json::json!([[1197, 1197, 1197]]));
    let (_, stdout, _) = nudge.try_cli(&["order", "import", file]);
    assert!(
        stdout.contains("imported 0 orders, 1199 already present, 1 bad rows skipped"),
        "{stdout}"
    );
}

/// With `--strict` the whole file is one transaction, and a customer is classified
/// once, at its end, not once per batch of rows; a row for a known contact is left
/// alone even when it is not valid, as without batches.
#[test]
fn strict_csv_import_classifies_once_and_leaves_known_contacts_alone() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Big Buyer", "big@example.com");
    // 2,500 orders of 40.00 over three batches: 100,000.00 in all, medium only with the last.
    let mut orders = String::from("id,contact,amount,date\n");
    for i in 0..2_500 {
        orders.push_str(&format!("s-{i},big@example.com,40.00,2026-11-{:02}\n", 1 + i % 20));
    }
    let file = nudge.path("orders.csv");
    std::fs::write(&file, &orders).unwrap();
    let (ok, stdout, stderr) = nudge.try_cli(&["order", "import", "--strict", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("imported 2500 orders"), "{stdout}");
    let shown = show(&nudge, "big@example.com");
    assert_eq!(shown["contact"]["value_tier"], "medium");
    let counts = nudge.query(
        "SELECT (SELECT COUNT(*) FROM events WHERE kind IN ('first_order', 'tier_changed', 'rfm_changed')),
                (SELECT COUNT(*) FROM contact_history WHERE field = 'value_tier')",
    );
    assert_eq!(
        counts,
        serde_json::json!([[3, 1]]),
        "one first_order, tier_changed, rfm_changed"
    );

    let file = nudge.path("contacts.csv");
    std::fs::write(&file, "name,email,stage\nAnyone,big@example.com,prospect\n").unwrap();
    let (ok, stdout, stderr) = nudge.try_cli(&["contact", "import", "--strict", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 0 contacts, 1 already present, 0 bad rows skipped"),
        "{stdout}{stderr}"
    );
}

/// 11,000 contacts: two commits, eleven batches, each stored in power-of-two chunks of
/// multi-row inserts. Contacts stored before are skipped wherever they fall (the middle
/// of a chunk, the last row of one, the last row of a batch), and each contact added
/// gets its one `contact_created` event.
#[test]
fn a_large_contact_import_skips_stored_contacts_at_chunk_ends_and_across_commits() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    let stored = [100, 511, 999, 10_500, 10_999];
    let file = nudge.path("stored.csv");
    let rows: Vec<String> = stored.iter().map(|i| format!("Stored {i},c{i}@example.com")).collect();
    std::fs::write(&file, format!("name,email\n{}\n", rows.join("\n"))).unwrap();
    let (ok, _, stderr) = nudge.try_cli(&["contact", "import", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");

    let file = nudge.path("contacts.csv");
    let rows: Vec<String> = (0..11_000).map(|i| format!("Contact {i},c{i}@example.com")).collect();
    std::fs::write(&file, format!("name,email\n{}\n", rows.join("\n"))).unwrap();
    let (ok, stdout, stderr) = nudge.try_cli(&["contact", "import", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 10995 contacts, 5 already present, 0 bad rows skipped"),
        "{stdout}{stderr}"
    );
    let counts = nudge.query(
        "SELECT (SELECT COUNT(*) FROM contacts), (SELECT COUNT(*) FROM events WHERE kind = 'contact_created'),
                (SELECT COUNT(*) FROM contacts c WHERE (SELECT COUNT(*) FROM events e
                   WHERE e.contact_id = c.id AND e.kind = 'contact_created') != 1),
                (SELECT COUNT(*) FROM contacts WHERE name LIKE 'Stored %')",
    );
    assert_eq!(counts, serde_json::json!([[11_000, 11_000, 0, 5]]));
    // A second import changes nothing.
    let (ok, stdout, stderr) = nudge.try_cli(&["contact", "import", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 0 contacts, 11000 already present, 0 bad rows skipped"),
        "{stdout}{stderr}"
    );
}

/// A stored contact's row is left alone, phone and all, so a later row with only that
/// phone is a contact of its own; a phone that a row of the same file added is not.
#[test]
fn a_known_contacts_phone_in_the_file_does_not_make_a_phone_only_row_known() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Stored", "stored@example.com");
    let file = nudge.path("contacts.csv");
    std::fs::write(
        &file,
        "name,email,phone\n\
         Stored Again,stored@example.com,+861111\n\
         New With Phone,new@example.com,+862222\n\
         Only Phone One,,+861111\n\
         Only Phone Two,,+862222\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = nudge.try_cli(&["contact", "import", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 2 contacts, 2 already present, 0 bad rows skipped"),
        "{stdout}{stderr}"
    );
    let rows = nudge.query("SELECT name, email, phone FROM contacts ORDER BY id");
    assert_eq!(
        rows,
        serde_json::json!([
            ["Stored", "stored@example.com", null],
            ["New With Phone", "new@example.com", "+862222"],
            ["Only Phone One", null, "+861111"]
        ])
    );
}

#[test]
fn strict_csv_import_keeps_nothing_when_a_row_is_bad() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Strict", "strict@example.com");
    let file = nudge.path("orders.csv");
    std::fs::write(
        &file,
        "id,contact,amount\ns-1,strict@example.com,100\ns-2,strict@example.com,abc\ns-3,strict@example.com,5\n",
    )
    .unwrap();
    let (ok, _, stderr) = nudge.try_cli(&["order", "import", "--strict", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains(":3: amount `abc` is not a decimal number"), "{stderr}");
    assert!(stderr.contains("nothing was imported (--strict)"), "{stderr}");
    assert_eq!(show(&nudge, "strict@example.com")["orders"], Value::Array(vec![]));
}

#[test]
fn a_history_import_classifies_but_starts_no_workflow() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Old Customer", "old@example.com");
    add_contact(&nudge, "Live Customer", "live@example.com");
    let waiting = || nudge.status()["events_unprocessed"].as_i64().unwrap();
    let before = waiting();

    let file = nudge.path("past.csv");
    std::fs::write(
        &file,
        "id,contact,amount,date\nh-1,old@example.com,200000,2019-03-01\nh-2,old@example.com,400000,2026-01-10\n",
    )
    .unwrap();
    nudge.cli(&["order", "import", "--history", file.to_str().unwrap()]);
    let shown = show(&nudge, "old@example.com");
    assert_eq!(shown["contact"]["value_tier"], "medium");
    assert_eq!(shown["contact"]["customer_since"], "2019-03-01");
    assert_eq!(
        shown["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["field"] == "value_tier")
            .count(),
        1,
        "one change for the whole file, not one per order: {shown:#}"
    );
    assert_eq!(waiting(), before, "no event for workflows");

    std::fs::write(&file, "id,contact,amount\nl-1,live@example.com,100\n").unwrap();
    nudge.cli(&["order", "import", file.to_str().unwrap()]);
    // order_placed, first_order, tier_changed and rfm_changed.
    assert_eq!(waiting(), before + 4);
}

#[test]
fn follow_ups_set_intent_funnel_and_stage_and_the_history_keeps_who_when_from_and_to() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Liu Yang", "liu@example.com");
    let log = |args: &[&str]| {
        let mut all = vec!["followup", "log", "liu@example.com", "--channel", "phone"];
        all.extend_from_slice(args);
        nudge.cli(&all)
    };
    log(&["--intent", "B", "--attitude", "doubting", "--understanding", "vague"]);
    nudge.advance("2d");
    log(&[
        "--intent",
        "A",
        "--attitude",
        "accepting",
        "--understanding",
        "specific",
        "--stage",
        "sample",
        "--owner",
        "senior@corp.test",
    ]);
    nudge.cli(&["stage", "set", "liu@example.com", "first_order"]);

    let shown = show(&nudge, "liu@example.com");
    assert_eq!(shown["contact"]["funnel_stage"], "opportunity");
    assert_eq!(shown["contact"]["intent_grade"], "A");
    assert_eq!(
        shown["follow_ups"][0]["status_change"],
        "intent B -> A; funnel potential -> opportunity; stage lead -> sample"
    );
    let history: Vec<(String, String, String, String, i64)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let text = |k: &str| h[k].as_str().unwrap_or("-").to_string();
            (
                text("field"),
                text("from_value"),
                text("to_value"),
                text("changed_by"),
                h["at"].as_i64().unwrap(),
            )
        })
        .collect();
    let monday: jiff::Timestamp = MONDAY_9AM.parse().unwrap();
    let (monday, wednesday) = (monday.as_millisecond(), monday.as_millisecond() + 2 * 86_400_000);
    let rep = "rep@corp.test".to_string();
    let senior = "senior@corp.test".to_string();
    let entry = |f: &str, from: &str, to: &str, by: &String, at: i64| {
        (f.to_string(), from.to_string(), to.to_string(), by.clone(), at)
    };
    assert_eq!(
        history,
        [
            entry("stage", "sample", "first_order", &"cli".to_string(), wednesday),
            entry("stage", "lead", "sample", &senior, wednesday),
            entry("funnel_stage", "potential", "opportunity", &senior, wednesday),
            entry("intent_grade", "B", "A", &senior, wednesday),
            entry("funnel_stage", "-", "potential", &rep, monday),
            entry("intent_grade", "-", "B", &rep, monday),
        ]
    );
    let text = nudge.cli(&["contact", "show", "liu@example.com"]);
    assert!(text.contains("intent_grade B -> A by senior@corp.test"), "{text}");
    assert!(text.contains("funnel opportunity (accepting, specific)"), "{text}");

    let (ok, _, stderr) = nudge.try_cli(&[
        "followup",
        "log",
        "liu@example.com",
        "--channel",
        "phone",
        "--attitude",
        "maybe",
    ]);
    assert!(!ok);
    assert!(stderr.contains("unknown attitude `maybe`"), "{stderr}");
}

#[test]
fn contacts_and_follow_ups_import_report_bad_rows_and_a_second_import_changes_nothing() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);

    let mut contacts = b"name,email,phone,stage,tags\n\
        Zhao Lei,zhao@example.com,,intent,vip;price_sensitive\n\
        Bad Mail,not-an-email,,,\n\
        Qian Li,,+8613800000000,lead,\n\
        Bad Stage,sun@example.com,,prospect,\n\
        No Contact Details,,,,\n"
        .to_vec();
    contacts.extend_from_slice(b"Zh\xe0o,zhao2@example.com,,,\n");
    let file = nudge.path("contacts.csv");
    std::fs::write(&file, &contacts).unwrap();
    let file = file.to_str().unwrap();
    let (ok, stdout, stderr) = nudge.try_cli(&["contact", "import", file]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 3 contacts, 0 already present, 3 bad rows skipped"),
        "{stdout}{stderr}"
    );
    for (line, reason) in [
        (3, "not an email address"),
        (5, "unknown stage `prospect`"),
        (7, "not UTF-8"),
    ] {
        let reported = stderr.lines().find(|l| l.starts_with(&format!("{file}:{line}: ")));
        let reported = reported.unwrap_or_else(|| panic!("line {line} not reported:\n{stderr}"));
        assert!(reported.contains(reason), "{reported}");
    }
    let (_, stdout, _) = nudge.try_cli(&["contact", "import", file]);
    assert!(
        stdout.contains("imported 0 contacts, 3 already present, 3 bad rows skipped"),
        "{stdout}"
    );
    assert_eq!(
        show(&nudge, "zhao@example.com")["contact"]["tags"],
        serde_json::json!(["vip", "price_sensitive"])
    );

    let follow_ups = "contact,at,channel,summary,intent_grade,next_follow_up\n\
        zhao@example.com,2026-11-20 10:00,phone,Talked prices,A,3d\n\
        nobody@example.com,2026-11-20 11:00,phone,,,\n\
        zhao@example.com,yesterday,visit,,,\n\
        zhao@example.com,2026-11-21T02:00:00Z,wechat,\"Sent the catalogue, \"\"new\"\" range\",,\n";
    let file = nudge.path("follow-ups.csv");
    std::fs::write(&file, follow_ups).unwrap();
    let file = file.to_str().unwrap();
    let (ok, stdout, stderr) = nudge.try_cli(&["followup", "import", file]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 2 follow-ups, 0 already present, 2 bad rows skipped"),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:3: no contact `nobody@example.com`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:4: `yesterday` is neither a duration")),
        "{stderr}"
    );
    let (_, stdout, _) = nudge.try_cli(&["followup", "import", file]);
    assert!(
        stdout.contains("imported 0 follow-ups, 2 already present, 2 bad rows skipped"),
        "{stdout}"
    );
    let shown = show(&nudge, "zhao@example.com");
    assert_eq!(shown["follow_ups"].as_array().unwrap().len(), 2);
    assert_eq!(shown["follow_ups"][0]["summary"], "Sent the catalogue, \"new\" range");
    assert_eq!(shown["contact"]["intent_grade"], "A");
}

#[test]
fn classification_rules_are_checked_with_their_position_and_hot_reloaded() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    add_contact(&nudge, "Rate Watcher", "rates@example.com");
    nudge.start();
    let shipped = std::fs::read_to_string(nudge.path("workflows/classification.toml")).unwrap();

    nudge.write_workflow(
        "classification.toml",
        &shipped.replace("dormant_after = \"6mo\"", "dormant_after = \"6 parsecs\""),
    );
    let (ok, _, stderr) = nudge.try_cli(&["check"]);
    assert!(!ok);
    let line = shipped.lines().position(|l| l.contains("dormant_after")).unwrap() + 1;
    assert!(
        stderr.contains(&format!("classification.toml:{line}:17: `6 parsecs` is not a duration")),
        "{stderr}"
    );
    nudge.wait_for_log("workflow change rejected");
    // The last good rules still take orders in EUR.
    let eur = r#"{"id": "r-1", "contact": "rates@example.com", "amount": "10", "currency": "EUR"}"#;
    assert_eq!(nudge.http("POST", "/orders", Some(eur)).0, 201);

    assert_eq!(tier(&nudge, "rates@example.com"), "low", "77 CNY");
    // Without EUR, and medium from 50 CNY: the daemon re-classifies at once, not the next day.
    nudge.write_workflow(
        "classification.toml",
        &shipped
            .replace(
                "rates = { USD = \"7.10\", EUR = \"7.70\" }",
                "rates = { USD = \"7.10\" }",
            )
            .replace(
                "medium = { min_amount = \"100000\" }",
                "medium = { min_amount = \"50\" }",
            ),
    );
    nudge.wait_for_log("workflows reloaded");
    wait_until(
        || Some(()).filter(|_| tier(&nudge, "rates@example.com") == "medium"),
        || format!("not re-classified with the edited rules:\n{}", nudge.log()),
    );
    let eur = r#"{"id": "r-2", "contact": "rates@example.com", "amount": "10", "currency": "EUR"}"#;
    let (status, body) = nudge.http("POST", "/orders", Some(eur));
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`EUR`"), "{body}");
    nudge.stop();
}

/// Contacts created at a later stage or skipping one leave "to next" a share of
/// each stage's cohort, never above 100 %; a reply recorded by `POST /replies`
/// after a follow-up counts as a response.
#[test]
fn the_report_counts_skipped_stages_and_recorded_replies() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, "2026-11-02T02:00:00Z");
    for (name, stage) in [("l", "lead"), ("p", "inquiry"), ("q", "inquiry"), ("r", "inquiry")] {
        let email = format!("{name}@example.com");
        nudge.cli(&["contact", "add", "--name", name, "--email", &email, "--stage", stage]);
    }
    // L skips inquiry and intent.
    nudge.cli(&["stage", "set", "l@example.com", "sample"]);
    nudge.cli(&["followup", "log", "l@example.com", "--channel", "email"]);
    nudge.cli(&["clock", "--set", "2026-11-03T02:00:00Z"]);
    nudge.start();
    let (status, body) = nudge.http("POST", "/replies", Some(r#"{"email": "l@example.com"}"#));
    assert_eq!(status, 201, "{body}");
    nudge.stop();

    let args = ["report", "--from", "2026-11-01", "--to", "2026-11-30"];
    let report: Value = serde_json::from_str(&nudge.cli(&[&args[..], &["--format", "json"]].concat())).unwrap();
    let funnel: Vec<(String, i64, Option<f64>)> = report["funnel"].as_array().unwrap()[..5]
        .iter()
        .map(|f| {
            (
                f["stage"].as_str().unwrap().to_string(),
                f["entered"].as_i64().unwrap(),
                f["to_next_percent"].as_f64(),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        funnel,
        [
            (s("lead"), 1, Some(100.0)),
            (s("inquiry"), 3, Some(0.0)),
            (s("intent"), 0, None),
            (s("sample"), 1, Some(0.0)),
            (s("first_order"), 0, None),
        ]
    );
    let response = &report["measures"][0];
    assert_eq!(response["name"], "response rate");
    assert_eq!(
        (response["numerator"].as_i64(), response["denominator"].as_i64()),
        (Some(1), Some(1))
    );
    let table = nudge.cli(&args);
    assert!(
        table.contains("a contact that skips a stage is not counted in it"),
        "{table}"
    );
    let page = nudge.path("report.html");
    nudge.cli(&[&args[..], &["--html", page.to_str().unwrap()]].concat());
    let page = std::fs::read_to_string(page).unwrap();
    assert!(
        page.contains("a contact that skips a stage is not counted in it"),
        "{page}"
    );
}

/// A small team's month, step by step on the virtual clock; every expected figure
/// below is counted by hand from these steps (see README.md for the definitions).
#[test]
fn the_report_counts_the_funnel_rates_and_sla_of_a_fixture_month() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, "2026-10-15T02:00:00Z");
    let at = |time: &str| {
        nudge.cli(&["clock", "--set", time]);
    };
    let contact = |name: &str, email: &str, owner: &str, stage: &str| {
        nudge.cli(&[
            "contact", "add", "--name", name, "--email", email, "--owner", owner, "--stage", stage,
        ]);
    };
    let follow_up = |email: &str, extra: &[&str]| {
        let mut args = vec!["followup", "log", email, "--channel", "phone"];
        args.extend_from_slice(extra);
        nudge.cli(&args);
    };
    // E: before the period; enters lead and inquiry in October.
    contact("E", "e@example.com", "rep1@corp.test", "lead");
    at("2026-10-20T02:00:00Z");
    nudge.cli(&["stage", "set", "e@example.com", "inquiry"]);

    at("2026-11-02T02:00:00Z");
    contact("A", "a@example.com", "rep1@corp.test", "lead");
    contact("B", "b@example.com", "rep1@corp.test", "lead");
    contact("C", "c@example.com", "rep2@corp.test", "lead");
    contact("D", "d@example.com", "rep2@corp.test", "intent");
    // D last ordered almost two years ago: a churned customer.
    add_order(&nudge, "d-1", "d@example.com", "5000", "2025-01-01");
    nudge.cli(&["stage", "set", "a@example.com", "inquiry"]);
    nudge.cli(&["stage", "set", "b@example.com", "inquiry"]);
    follow_up("a@example.com", &["--feedback", "interested"]);

    at("2026-11-03T02:00:00Z");
    nudge.cli(&["stage", "set", "a@example.com", "intent"]);
    follow_up("b@example.com", &[]);

    at("2026-11-04T02:00:00Z");
    nudge.cli(&["inquiry", "add", "b@example.com"]);
    nudge.cli(&["inquiry", "add", "c@example.com"]);
    at("2026-11-04T02:10:00Z");
    follow_up("b@example.com", &[]); // answers B's inquiry in 10 minutes (SLA 15m)

    at("2026-11-05T02:00:00Z");
    follow_up("c@example.com", &[]); // answers C's inquiry a day late
    at("2026-11-06T02:00:00Z");
    follow_up("c@example.com", &["--next", "2d"]);

    at("2026-11-10T02:00:00Z");
    add_order(&nudge, "a-1", "a@example.com", "20000", "2026-11-10");
    at("2026-11-20T02:00:00Z");

    let report = |extra: &[&str]| -> Value {
        let mut args = vec![
            "report",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&nudge.cli(&args)).unwrap()
    };
    let funnel = |r: &Value| -> Vec<(String, i64, i64, Option<f64>)> {
        r["funnel"].as_array().unwrap()[..4]
            .iter()
            .map(|f| {
                (
                    f["stage"].as_str().unwrap().to_string(),
                    f["now"].as_i64().unwrap(),
                    f["entered"].as_i64().unwrap(),
                    f["to_next_percent"].as_f64(),
                )
            })
            .collect()
    };
    let measures = |r: &Value| -> Vec<(String, i64, i64, Option<bool>)> {
        r["measures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["numerator"].as_i64().unwrap(),
                    m["denominator"].as_i64().unwrap(),
                    m["met"].as_bool(),
                )
            })
            .collect()
    };
    let s = |x: &str| x.to_string();

    let all = report(&[]);
    // Entered in November: lead A B C (created), inquiry A B, intent A (changed) + D (created).
    // Moved on: from lead A B, from inquiry A (D, created at intent, is in no earlier cohort).
    assert_eq!(
        funnel(&all),
        [
            (s("lead"), 1, 3, Some(66.7)),
            (s("inquiry"), 2, 2, Some(50.0)),
            (s("intent"), 2, 2, Some(0.0)),
            (s("sample"), 0, 0, None),
        ]
    );
    assert_eq!(all["bottleneck"], "intent -> sample (0.0 %)");
    assert_eq!(
        measures(&all),
        [
            // Followed up A B C; A gave feedback, B sent an inquiry after its follow-up.
            (s("response rate"), 2, 3, Some(true)),
            // Five follow-ups; only A's was followed by an order within 30 days.
            (s("conversion rate"), 1, 5, Some(true)),
            // Customers A (active) and D (churned): 50 % > 40 %.
            (s("churn rate"), 1, 2, Some(false)),
            // B's inquiry answered in 10 minutes, C's a day later.
            (s("inquiry SLA compliance"), 1, 2, None),
        ]
    );
    assert_eq!(all["overdue_by_owner"], serde_json::json!([["rep2@corp.test", 1]]));

    let rep1 = report(&["--owner", "rep1@corp.test"]);
    assert_eq!(rep1["funnel"][0]["entered"], 2);
    assert_eq!(
        measures(&rep1),
        [
            (s("response rate"), 2, 2, Some(true)),
            (s("conversion rate"), 1, 3, Some(true)),
            (s("churn rate"), 0, 1, Some(true)),
            (s("inquiry SLA compliance"), 1, 1, None),
        ]
    );
    let table = nudge.cli(&["report", "--from", "2026-11-01", "--to", "2026-11-30"]);
    assert!(
        table.contains("churn rate              50.0 % (1/2)           <= 40 %  MISSED"),
        "{table}"
    );
    let csv = nudge.cli(&[
        "report",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--format",
        "csv",
    ]);
    assert!(csv.contains("measure %,conversion rate,20.0,1,5,>= 10 %,true"), "{csv}");

    let page = nudge.path("report.html");
    nudge.cli(&[
        "report",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--html",
        page.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(page).unwrap();
    assert!(
        page.contains("<svg") && page.contains("Bottleneck: intent -&gt; sample (0.0 %)"),
        "{page}"
    );
    // Five weeks; every follow-up fell in the first, which holds the whole month's conversion.
    for week in ["2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22", "2026-11-29"] {
        assert!(
            page.contains(&format!(">{week}</text>")),
            "week {week} in the trend:\n{page}"
        );
    }
    assert_eq!(
        page.matches("20.0 % (1/5)").count(),
        2,
        "the measure and its first week:\n{page}"
    );
}
