//! Bad input, as users and attackers give it: broken workflow files, odd API
//! bodies, CLI arguments and CSV files. Each gets a clear error naming where the
//! problem is, nothing is lost, and nothing panics or hangs. The real binary, a
//! real SMTP server and a real SQLite file, on virtual time.

mod common;

use common::{Nudge, SmtpServer, scratch};
use serde_json::{Value, json};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

/// The contact's tags, as `nudge contact show --json` gives them.
fn tags(nudge: &Nudge, email: &str) -> Value {
    let shown: Value = serde_json::from_str(&nudge.cli(&["contact", "show", email, "--json"])).unwrap();
    shown["contact"]["tags"].clone()
}

/// Columns a terminal gives `text`: CJK characters take two.
fn display_width(text: &str) -> usize {
    text.chars()
        .map(|c| if ('\u{2e80}'..='\u{ffdc}').contains(&c) { 2 } else { 1 })
        .sum()
}

#[test]
fn a_cel_error_after_chinese_text_is_shown_at_its_character_and_reload_goes_on() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    let workflow =
        |when: &str| format!("when = '{when}'\n[trigger]\non = \"contact_created\"\n[[steps]]\ntag = \"alibaba\"\n");

    // The issue's case: a dangling `&&` after Chinese text. Exit 1 with a position, not a panic (101).
    nudge.write_workflow(
        "alibaba.toml",
        &workflow(r#"contact.stage == "lead" && contact.company == "阿里巴巴" &&"#),
    );
    let out = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(nudge.path("nudge.toml"))
        .arg("check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("alibaba.toml:1:") && stderr.contains("syntax error"),
        "{stderr}"
    );

    // An unknown field after Chinese text: the position counts characters and the
    // caret sits under `contact.nmae`, however wide the characters before it.
    let when = r#"contact.company == "阿里巴巴" && contact.nmae == "x""#;
    nudge.write_workflow("alibaba.toml", &workflow(when));
    let (ok, _, stderr) = nudge.try_cli(&["check"]);
    assert!(!ok);
    let line = format!("when = '{when}'");
    let column = line[..line.find("contact.nmae").unwrap()].chars().count() + 1;
    assert!(
        stderr.contains(&format!(
            "alibaba.toml:1:{column}: in `when`: `contact` has no field `nmae`"
        )),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.ends_with(&line))
        .expect("the source line is shown");
    let (source_gutter, _) = lines[at].split_once(&line).unwrap();
    let carets = lines[at + 1];
    let caret_column = display_width(&carets[..carets.find('^').expect("a caret")]);
    let expected = display_width(source_gutter) + display_width(&line[..line.find("contact.nmae").unwrap()]);
    assert_eq!(caret_column, expected, "the caret is under `contact.nmae`:\n{stderr}");
    assert_eq!(carets.matches('^').count(), "contact.nmae".len(), "{stderr}");

    // The running daemon reports the broken edit and still picks up the fix.
    nudge.write_workflow("alibaba.toml", &workflow(r#"contact.company == "阿里巴巴""#));
    nudge.start();
    nudge.write_workflow(
        "alibaba.toml",
        &workflow(r#"contact.stage == "lead" && contact.company == "阿里巴巴" &&"#),
    );
    let log = nudge.wait_for_log("workflow change rejected");
    assert!(log.contains("alibaba.toml:1:"), "{log}");
    nudge.write_workflow(
        "alibaba.toml",
        &workflow(r#"contact.company == "阿里巴巴" && contact.stage == "lead""#),
    );
    nudge.wait_for_log("workflows reloaded");
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Ma Yun",
        "--company",
        "阿里巴巴",
        "--email",
        "ma@example.com",
    ]);
    nudge.settle();
    assert_eq!(tags(&nudge, "ma@example.com"), json!(["alibaba"]), "{}", nudge.log());
    nudge.stop();
}

#[test]
fn report_periods_and_order_dates_stay_within_the_calendar_nudge_works_with() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.cli(&["contact", "add", "--name", "Wang Fang", "--email", "wang@example.com"]);
    nudge.start();

    // The last days of the calendar: a clear 422 at once, not a page that never ends.
    for query in [
        "from=9999-12-25&to=9999-12-31&format=html",
        "from=9999-12-25&to=9999-12-31",
        "from=0001-01-01&to=2026-11-23",
        "from=-009999-01-01&to=2026-11-23",
    ] {
        let (status, body) = nudge.http("GET", &format!("/reports?{query}"), None);
        assert_eq!(status, 422, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("1970-01-01 to 2199-12-31"),
            "{query}: {body}"
        );
    }
    let (ok, _, stderr) = nudge.try_cli(&[
        "report",
        "--from",
        "9999-12-25",
        "--to",
        "9999-12-31",
        "--html",
        "r.html",
    ]);
    assert!(
        !ok && stderr.contains("`to`: 9999-12-31 is outside the days nudge works with (1970-01-01 to 2199-12-31)"),
        "{stderr}"
    );

    // The widest period there is answers, with the last two years of weeks in its trend.
    let (status, page) = nudge.http("GET", "/reports?from=1970-01-01&to=2199-12-31&format=html", None);
    assert_eq!(status, 200, "{page}");
    let page = page.as_str().unwrap();
    assert!(page.contains("The last 104 weeks of the period."), "{page}");
    assert!(page.contains("2199-12-25") && !page.contains("2197-12-01"), "{page}");

    // Orders dated year 0 or -9999 are refused, by the API and the CLI, and nothing is stored.
    for date in ["0000-01-01", "-009999-01-01", "1969-12-31"] {
        let order = json!({ "id": format!("o-{date}"), "contact": "wang@example.com", "amount": "10", "date": date });
        let (status, body) = nudge.http("POST", "/orders", Some(&order.to_string()));
        assert_eq!(status, 422, "{date}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("outside the days nudge works with"),
            "{body}"
        );
    }
    let (ok, _, stderr) = nudge.try_cli(&[
        "order",
        "add",
        "--id",
        "o-0",
        "--contact",
        "wang@example.com",
        "--amount",
        "10",
        "--date",
        "0000-01-01",
    ]);
    assert!(!ok && stderr.contains("order date 0000-01-01 is outside"), "{stderr}");
    assert_eq!(nudge.query("SELECT COUNT(*) FROM orders"), json!([[0]]));
    nudge.stop();
}

#[test]
fn a_segment_started_long_ago_catches_up_with_one_pass_and_check_refuses_a_seconds_every() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    let segment = |every: &str| {
        format!(
            "when = 'contact.stage == \"lead\"'\n[trigger]\non = \"segment\"\nstart = \"1970-01-01T00:00:00Z\"\n\
             every = \"{every}\"\n[[steps]]\ntag = \"nurtured\"\n"
        )
    };
    nudge.write_workflow("catch-up.toml", &segment("1s"));
    let (ok, _, stderr) = nudge.try_cli(&["check"]);
    assert!(!ok, "a pass every second is refused");
    assert!(
        stderr.contains("catch-up.toml:5:9: `every = \"1s\"` is shorter than a minute")
            && stderr.contains("help: each pass of a segment looks at every contact"),
        "{stderr}"
    );

    // Every minute since 1970: the daemon catches up at once, still answers, and stops when asked.
    nudge.write_workflow("catch-up.toml", &segment("1m"));
    nudge.cli(&["contact", "add", "--name", "A", "--email", "a@example.com"]);
    nudge.start();
    // A pass is opened on the engine's next turn: wait for its outcome.
    let nurtured = |email: &str| {
        common::wait_until(
            || (tags(&nudge, email) == json!(["nurtured"])).then_some(()),
            || format!("{email} never nurtured:\n{}", nudge.log()),
        )
    };
    nurtured("a@example.com");
    nudge.cli(&["contact", "add", "--name", "B", "--email", "b@example.com"]);
    nudge.advance("1m");
    nurtured("b@example.com");
    nudge.settle();
    // The pass at the start (1970), one for all the minutes missed since, and the next minute's.
    let passes: Value = serde_json::from_str(&nudge.cli(&["segment", "list", "--json"])).unwrap();
    let due: Vec<i64> = passes
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["due_at"].as_i64().unwrap())
        .collect();
    let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    assert_eq!(
        due,
        [at("2026-11-23T09:01:00Z"), at("2026-11-23T09:00:00Z"), 0],
        "{passes:#}"
    );
    nudge.stop();
}

#[test]
fn owners_must_be_addresses_and_names_are_one_line_without_control_characters() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();

    // An owner that is not an address is refused at every door, naming the field.
    let (status, body) = nudge.http(
        "POST",
        "/contacts",
        Some(r#"{"name": "Li Wei", "email": "li@example.com", "owner": "not an email"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("`owner`: `not an email` is not an email address"),
        "{body}"
    );
    let (ok, _, stderr) = nudge.try_cli(&["contact", "add", "--name", "Li Wei", "--owner", "nobody"]);
    assert!(
        !ok && stderr.contains("`owner`: `nobody` is not an email address"),
        "{stderr}"
    );
    let csv = nudge.path("contacts.csv");
    std::fs::write(
        &csv,
        "name,email,owner,company\nGood,good@example.com,rep@example.com,\"Acme\r\nTrading\"\nBad,bad@example.com,nobody,\n",
    )
    .unwrap();
    let (ok, out, stderr) = nudge.try_cli(&["contact", "import", csv.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        out.contains("imported 1 contacts") && out.contains("1 bad rows"),
        "{out}"
    );
    assert!(
        stderr.contains("contacts.csv:4: `owner`: `nobody` is not an email address"),
        "{stderr}"
    );
    let (status, body) = nudge.http(
        "POST",
        "/contacts/good@example.com/follow-ups",
        Some(r#"{"channel": "phone", "owner": "the boss"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`owner`: `the boss`"),
        "{body}"
    );

    // Excel's multi-line cell became one line.
    let shown: Value = serde_json::from_str(&nudge.cli(&["contact", "show", "good@example.com", "--json"])).unwrap();
    assert_eq!(shown["contact"]["company"], "Acme Trading");

    // Line breaks, tabs and U+0085 / U+2028 fold to one space; the new-lead note goes out.
    let contact = json!({
        "name": " Zhang\r\nWei ", "company": "Acme\u{85}Ltd\tCo\u{2028}", "email": "zhang@example.com",
        "owner": "rep@example.com",
    });
    let (status, body) = nudge.http("POST", "/contacts", Some(&contact.to_string()));
    assert_eq!(status, 201, "{body}");
    let mail = smtp.wait_for("rep@example.com", "New lead: Zhang Wei");
    assert_eq!(mail.subject, "New lead: Zhang Wei (Acme Ltd Co)");
    let change = json!({ "email": "chen@example.com", "name": "Chen\nJie", "company": "X\r\nY", "stage": "lead" });
    let (status, body) = nudge.http("POST", "/stage-changes", Some(&change.to_string()));
    assert!(status == 200 || status == 202, "{body}");
    let (_, shown) = nudge.http("GET", "/contacts/chen@example.com", None);
    assert_eq!(
        (shown["contact"]["name"].as_str(), shown["contact"]["company"].as_str()),
        (Some("Chen Jie"), Some("X Y"))
    );

    // NUL and other control characters are refused, with where they are.
    for (field, value) in [("name", "Li\u{0}Na"), ("company", "Acme\u{1b}[31m")] {
        let mut contact = json!({ "name": "Li Na", "email": "na@example.com" });
        contact[field] = json!(value);
        let (status, body) = nudge.http("POST", "/contacts", Some(&contact.to_string()));
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("`{field}` has a control character")),
            "{body}"
        );
    }
    let (status, body) = nudge.http(
        "POST",
        "/stage-changes",
        Some(r#"{"email": "nul@example.com", "name": "A\u0000B", "stage": "lead"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        nudge.query("SELECT COUNT(*) FROM contacts WHERE email IN ('na@example.com', 'nul@example.com')"),
        json!([[0]])
    );
    nudge.stop();
}

#[test]
fn odd_bodies_and_headers_get_clear_answers() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.cli(&["contact", "add", "--name", "Wang Fang", "--email", "wang@example.com"]);
    nudge.start();

    // Empty addresses suppress nothing: refused.
    for (path, body) in [
        ("/bounces", r#"{"address": "", "kind": "hard"}"#),
        ("/bounces", r#"{"address": "   ", "kind": "complaint"}"#),
        ("/suppressions", r#"{"address": ""}"#),
    ] {
        let (status, answer) = nudge.http("POST", path, Some(body));
        assert_eq!(status, 422, "{path} {body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("`address` is empty"),
            "{answer}"
        );
    }
    let (ok, _, stderr) = nudge.try_cli(&["suppress", "add", ""]);
    assert!(!ok && stderr.contains("`address` is empty"), "{stderr}");
    assert_eq!(nudge.query("SELECT COUNT(*) FROM suppressions"), json!([[0]]));
    assert_eq!(nudge.query("SELECT COUNT(*) FROM bounces"), json!([[0]]));

    // A JSON array is not an inquiry (serde would take `[]` as one with every field left out).
    for body in ["[]", "[\"hello\", \"email\"]", "42", "\"text\""] {
        let (status, answer) = nudge.http("POST", "/contacts/wang@example.com/inquiries", Some(body));
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("must be a JSON object"),
            "{answer}"
        );
    }
    assert_eq!(nudge.query("SELECT COUNT(*) FROM inquiries"), json!([[0]]));
    let (status, answer) = nudge.http(
        "POST",
        "/contacts/wang@example.com/inquiries",
        Some(r#"{"message": "hi"}"#),
    );
    assert_eq!(status, 202, "{answer}");

    // The scheme of the Authorization header is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let (status, answer) = nudge.http_with_header(
            "GET",
            "/contacts/wang@example.com",
            &format!("Authorization: {scheme} {}", nudge.token),
        );
        assert_eq!(status, 200, "{scheme}: {answer}");
    }
    let (status, _) = nudge.http_with_header(
        "GET",
        "/contacts/wang@example.com",
        "Authorization: Basic dGVzdC10b2tlbg==",
    );
    assert_eq!(status, 401);

    // Orders that add up past 64 bits (14 x 7.1e17 minor units) are all kept and classified
    // (medium: high needs a year as a customer).
    for (i, amount) in ["999999999999999.99"; 14].iter().enumerate() {
        let order =
            json!({ "id": format!("big-{i}"), "contact": "wang@example.com", "amount": amount, "currency": "USD" });
        let (status, answer) = nudge.http("POST", "/orders", Some(&order.to_string()));
        assert_eq!(status, 201, "order {i}: {answer}");
    }
    let (_, shown) = nudge.http("GET", "/contacts/wang@example.com", None);
    assert_eq!(shown["contact"]["value_tier"], "medium", "{shown:#}");
    assert_eq!(shown["orders"].as_array().map(Vec::len), Some(14));
    nudge.stop();

    // A broken quote in an amount is a bad row with its line, not 12.00.
    let csv = nudge.path("orders.csv");
    std::fs::write(
        &csv,
        "id,contact,amount,date\nq-1,wang@example.com,\"1\"2,2026-11-20\nq-2,wang@example.com,\"3.50\",2026-11-20\n",
    )
    .unwrap();
    let (ok, out, stderr) = nudge.try_cli(&["order", "import", csv.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(out.contains("1 bad rows") || out.contains("1 bad row"), "{out}");
    assert!(
        stderr.contains("orders.csv:2: broken quoting in column `amount`"),
        "{stderr}"
    );
    assert_eq!(
        nudge.query("SELECT external_id, amount_minor FROM orders WHERE external_id LIKE 'q-%'"),
        json!([["q-2", 350]])
    );
}

#[test]
fn check_finds_what_would_silently_do_nothing() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    let workflows = nudge.path("workflows");
    let edit = |file: &str, from: &str, to: &str| {
        let path = workflows.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has {from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    edit("sending.toml", "hours = \"21:00-08:00\"", "hours = \"00:00-24:00\"");
    edit(
        "cadences.toml",
        "A = \"3d\", B = \"7d\", C = \"15d\"",
        "a = \"3d\", B = \"7d\", Z = \"15d\"",
    );
    std::fs::write(
        workflows.join("cadences.toml"),
        std::fs::read_to_string(workflows.join("cadences.toml")).unwrap()
            + "\n[by_stage]\nby = \"stage\"\nevery = { prospect = \"2d\" }\n",
    )
    .unwrap();
    let rule = "[trigger]\non = \"contact_created\"\n[[steps]]\n";
    nudge.write_workflow(
        "typed.toml",
        &format!("when = 'contact.stage == \"x\" && contact.name > 3'\n{rule}tag = \"t\"\n"),
    );
    nudge.write_workflow("off.toml", &format!("{rule}tag = \"t\"\n[vars]\nenabled = false\n"));
    nudge.write_workflow("forever.toml", &format!("{rule}wait = \"7000000d\"\n"));
    let deep = format!("{}contact.stage == \"lead\"{}", "(".repeat(120), ")".repeat(120));
    nudge.write_workflow("deep.toml", &format!("when = '{deep}'\n{rule}tag = \"t\"\n"));

    let (ok, _, stderr) = nudge.try_cli(&["check"]);
    assert!(!ok, "{stderr}");
    for expected in [
        "sending.toml:32:9: quiet hours `00:00-24:00` cover the whole day",
        "help: their messages could never go",
        "cadences.toml:8:11: cadence `intent` is by intent grade, and no contact has intent grade `a`",
        "help: did you mean `A`? values are case-sensitive",
        "no contact has intent grade `Z`",
        "help: intent grade is one of: A, B, C",
        "no contact has stage `prospect`",
        "typed.toml:1:33: in `when`: type error",
        "off.toml:6:1: `enabled` is a workflow key, not a variable",
        "help: keys after a `[vars]` header belong to `vars`: move `enabled` above `[trigger]`",
        "forever.toml:4:8: `7000000d` is longer than 10 years",
        "deep.toml:1:",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    let deep_line = stderr.lines().find(|l| l.contains("deep.toml:1:")).unwrap();
    assert!(
        deep_line.contains("nested too deeply"),
        "a readable message, not a debug dump: {deep_line}"
    );
    assert!(
        !stderr.contains("ParseError {") && !stderr.contains("source: Some"),
        "{stderr}"
    );

    // Files that cannot be read are named, with the position of the bad byte.
    std::os::unix::fs::symlink(workflows.join("gone.toml"), workflows.join("dangling.toml")).unwrap();
    std::os::unix::fs::symlink(workflows.join("loop-b.toml"), workflows.join("loop-a.toml")).unwrap();
    std::os::unix::fs::symlink(workflows.join("loop-a.toml"), workflows.join("loop-b.toml")).unwrap();
    std::fs::write(workflows.join("latin1.toml"), b"description = \"caf\xe9\"\n").unwrap();
    let (ok, _, stderr) = nudge.try_cli(&["check"]);
    assert!(!ok, "{stderr}");
    for expected in [
        "dangling.toml:1:1: cannot read",
        "loop-a.toml:1:1: cannot read",
        "loop-b.toml:1:1: cannot read",
        "help: a link to a file that does not exist, or a loop of links?",
        "latin1.toml:1:19: not UTF-8: byte 0xE9 here starts no character",
        "help: save the file as UTF-8",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}

#[test]
fn templates_that_can_never_render_are_refused_and_a_held_run_takes_the_fixed_one() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    let template = |subject: &str| format!("[quote]\nchannel = \"email\"\nsubject = \"{subject}\"\ntext = \"Hello\"\n");
    let workflow = "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"sample\"\n\
                    [vars]\noffer = \"10 %\"\n[[steps]]\nsend = { channel = \"email\", template = \"quote\" }\n";
    nudge.write_workflow("quote.toml", workflow);

    // Each of these could never render: `nudge check` says where and what to do.
    for (subject, expected, help) in [
        ("Hi {{ contact.name", "quote.toml:3:", "every `{{` needs its `}}`"),
        (
            "{% if contact.company %}Hi",
            "in template `quote`, `subject`: template syntax",
            "`{% endif %}`",
        ),
        (
            "Hi {{ contact.nmae }}",
            "quote.toml:3:18: in template `quote`, `subject`: the template reads `contact.nmae`",
            "did you mean `name`?",
        ),
        (
            "{% if contact.locale == 'zh' %}{{ contact.name|shout }}{% endif %}",
            "quote.toml:3:59: in template `quote`, `subject`: unknown filter `shout`",
            "builtin filters",
        ),
        (
            "Hi {{ vars.ofer }}",
            "quote.toml:8:40: template `quote` reads `vars.ofer`, which this workflow does not define",
            "did you mean `offer`?",
        ),
    ] {
        nudge.write_workflow("templates/quote.toml", &template(subject));
        let (ok, _, stderr) = nudge.try_cli(&["check"]);
        assert!(!ok, "{subject}: {stderr}");
        assert!(
            stderr.contains(expected) && stderr.contains(help),
            "{subject}: expected {expected:?} and {help:?} in:\n{stderr}"
        );
    }

    // Hot reload refuses them too, and the last good set keeps sending.
    nudge.write_workflow("templates/quote.toml", &template("Your quote, {{ contact.name }}"));
    nudge.start();
    nudge.write_workflow("templates/quote.toml", &template("Your quote, {{ contact.nmae }}"));
    let log = nudge.wait_for_log("workflow change rejected");
    assert!(log.contains("the template reads `contact.nmae`"), "{log}");
    nudge.cli(&["contact", "add", "--name", "Li Na", "--email", "li@example.com"]);
    nudge.cli(&["stage", "set", "li@example.com", "sample"]);
    smtp.wait_for("li@example.com", "Your quote, Li Na");

    // A field its trigger's event does not have passes the check but cannot render:
    // the run is held with the reason, then sends with the fixed template.
    nudge.write_workflow("templates/quote.toml", &template("Your quote for {{ event.order_id }}"));
    nudge.wait_for_log("workflows reloaded");
    nudge.cli(&["contact", "add", "--name", "Ma Lin", "--email", "ma@example.com"]);
    nudge.cli(&["stage", "set", "ma@example.com", "sample"]);
    let held = common::wait_until(
        || {
            let status = nudge.status();
            status["waiting_reasons"]
                .to_string()
                .contains("held at step 0")
                .then_some(status)
        },
        || format!("the run is never held: {:#}\n{}", nudge.status(), nudge.log()),
    );
    let reasons = held["waiting_reasons"].to_string();
    assert!(
        reasons.contains("template field `subject`: undefined value") && reasons.contains("fix the template"),
        "{held:#}"
    );
    let render_failed = held["waiting_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "render_failed");
    assert!(
        render_failed.is_some_and(|r| r["details"].to_string().contains("held at step 0")),
        "held under its reason code: {held:#}"
    );
    // Ten tries: past the eight after which any other step error fails its run.
    for _ in 0..10 {
        nudge.advance("1h");
        nudge.settle();
    }
    let reasons = nudge.status()["waiting_reasons"].to_string();
    assert!(
        reasons.contains("held at step 0"),
        "still held: {reasons}\n{}",
        nudge.log()
    );
    nudge.write_workflow(
        "templates/quote.toml",
        &template("Your quote, {{ contact.name }} (fixed)"),
    );
    let before = nudge.log().matches("workflows reloaded").count();
    common::wait_until(
        || (nudge.log().matches("workflows reloaded").count() > before).then_some(()),
        || format!("the fix is never loaded:\n{}", nudge.log()),
    );
    nudge.advance("1h");
    let mail = smtp.wait_for("ma@example.com", "Your quote, Ma Lin (fixed)");
    assert_eq!(smtp.mails_to("ma@example.com").len(), 1, "{mail:?}");
    nudge.stop();
}

/// `[tracing]` asks for OpenTelemetry export, which a default build leaves out:
/// the daemon refuses to start and says how to build one that has it.
#[cfg(not(feature = "otel"))]
#[test]
fn a_tracing_endpoint_in_a_build_without_otel_says_how_to_build_one() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    let mut toml = std::fs::read_to_string(nudge.path("nudge.toml")).unwrap();
    toml.push_str("[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n");
    std::fs::write(nudge.path("nudge.toml"), toml).unwrap();
    let (ok, _, stderr) = nudge.try_cli(&["run"]);
    assert!(!ok, "refused: {stderr}");
    assert!(stderr.contains("nudge.toml:"), "file:line:col: {stderr}");
    assert!(stderr.contains("[tracing] otlp_endpoint is set"), "{stderr}");
    assert!(stderr.contains("--features otel"), "{stderr}");
}
