//! Run history (issue 32 item 4): `nudge runs` lists runs with their steps,
//! waits and outcome, `nudge runs show` one run whole; the retention pass
//! prunes old finished runs and delivered messages and nothing else; every log
//! line of a run names its run, workflow and contact (item 5).

use serde_json::{Value, json};

use crate::common::{Nudge, SmtpServer, scratch, wait_until};

/// Monday 10:00 UTC.
const START: &str = "2026-01-05T10:00:00Z";
const OWNER: &str = "rep@example.com";

/// The shipped workflows that start runs, but for `after-sample` (wait 3 days,
/// mail `sample_check`, schedule a follow-up): the runs of a test are then its own.
const OTHER_WORKFLOWS: &[&str] = &[
    "after-first-order",
    "first-contact",
    "first-order",
    "inquiry-received",
    "inquiry-sla",
    "inquiry-to-stage",
    "intent-cadence",
    "intent-proposal",
    "key-account",
    "loyal-customer",
    "medium-value",
    "nurture-leads",
    "overdue-reminder",
    "owner-low",
    "reactivated",
    "reactivation",
    "repeat-customer",
    "second-follow-up",
];

/// An installation whose only runs are `after-sample`'s, which here also
/// stops when the contact answers (a follow-up logged, a reply).
fn installation(smtp: &SmtpServer, extra: &str) -> Nudge {
    let nudge = Nudge::with_config(smtp, START, extra);
    for name in OTHER_WORKFLOWS {
        std::fs::remove_file(nudge.path(&format!("workflows/{name}.toml"))).unwrap();
    }
    let path = nudge.path("workflows/after-sample.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("[trigger]", "exit_when = [\"replied\"]\n\n[trigger]");
    std::fs::write(&path, text).unwrap();
    nudge
}

fn add(nudge: &Nudge, name: &str, tags: &[&str]) -> String {
    let email = format!("{}@example.com", name.to_lowercase());
    let mut args = vec!["contact", "add", "--name", name, "--email", &email, "--owner", OWNER];
    for tag in tags {
        args.extend(["--tag", tag]);
    }
    nudge.cli(&args);
    email
}

fn json(nudge: &Nudge, args: &[&str]) -> Value {
    let out = nudge.cli(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}"))
}

/// `nudge runs --json` with `args` as filters: the runs of the page.
fn runs(nudge: &Nudge, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["runs", "--json"];
    all.extend(args);
    json(nudge, &all)["runs"].as_array().unwrap().clone()
}

fn field<'a>(runs: &'a [Value], key: &str) -> Vec<&'a Value> {
    runs.iter().map(|r| &r[key]).collect()
}

fn ms(time: &str) -> i64 {
    time.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

const DAY: i64 = 86_400_000;

#[test]
fn runs_lists_waits_outcomes_and_filters_and_show_has_every_step() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = installation(&smtp, "");
    nudge.start();
    let ann = add(&nudge, "Ann", &[]);
    let bob = add(&nudge, "Bob", &[]);
    nudge.cli(&["stage", "set", &ann, "sample"]);
    nudge.cli(&["stage", "set", &bob, "sample"]);
    nudge.settle();

    // Both wait three days, and say until when.
    let waiting = runs(&nudge, &["--workflow", "after-sample", "--status", "waiting"]);
    assert_eq!(waiting.len(), 2, "{waiting:#?}");
    let until = ms(START) + 3 * DAY;
    assert_eq!(field(&waiting, "waiting_until"), [&json!(until), &json!(until)]);
    assert_eq!(field(&waiting, "steps_taken"), [&json!(1), &json!(1)]);
    // Newest first: Bob's run started after Ann's.
    assert_eq!(field(&waiting, "contact_name"), [&json!("Bob"), &json!("Ann")]);

    // Bob answers: his run stops at its next step, by its exit condition.
    nudge.cli(&["followup", "log", &bob, "--channel", "phone", "--summary", "got them"]);
    nudge.advance("3d");
    nudge.settle();
    smtp.wait_for(&ann, "did the samples arrive?");
    nudge.settle();

    let all = runs(&nudge, &["--workflow", "after-sample"]);
    assert_eq!(all.len(), 2, "{all:#?}");
    let (bob_run, ann_run) = (&all[0], &all[1]);
    assert_eq!(bob_run["status"], "cancelled", "{bob_run}");
    assert_eq!(bob_run["outcome"], "exit condition met: replied", "{bob_run}");
    assert_eq!(ann_run["status"], "done", "{ann_run}");
    assert_eq!(ann_run["outcome"], "all steps done", "{ann_run}");
    assert_eq!(ann_run["steps_taken"], 3, "{ann_run}");
    assert_eq!(ann_run["waiting_until"], Value::Null, "{ann_run}");

    // Filters: by contact (id or email), by status; pages by key.
    let by_email = runs(&nudge, &["--contact", &ann]);
    assert_eq!(field(&by_email, "id"), [&ann_run["id"]]);
    let ann_id = ann_run["contact_id"].to_string();
    assert_eq!(field(&runs(&nudge, &["--contact", &ann_id]), "id"), [&ann_run["id"]]);
    let cancelled = runs(&nudge, &["--status", "cancelled"]);
    assert_eq!(field(&cancelled, "id"), [&bob_run["id"]]);
    assert!(runs(&nudge, &["--status", "failed"]).is_empty());
    assert!(
        runs(&nudge, &["--since", "1h"]).is_empty(),
        "both started three days ago"
    );
    assert_eq!(runs(&nudge, &["--since", "4d"]).len(), 2);
    let first = json(&nudge, &["runs", "--limit", "1", "--json"]);
    assert_eq!(field(first["runs"].as_array().unwrap(), "id"), [&bob_run["id"]]);
    let next = first["next"].to_string();
    let second = json(&nudge, &["runs", "--limit", "1", "--before", &next, "--json"]);
    assert_eq!(field(second["runs"].as_array().unwrap(), "id"), [&ann_run["id"]]);
    assert_eq!(second["next"], Value::Null);
    let (ok, _, err) = nudge.try_cli(&["runs", "--status", "asleep"]);
    assert!(!ok && err.contains("asleep"), "{err}");
    let (ok, _, err) = nudge.try_cli(&["runs", "--contact", "nobody@example.com"]);
    assert!(!ok && err.contains("nobody@example.com"), "{err}");

    // One run whole: every step's effect, its timer, its message and the attempt.
    let id = ann_run["id"].to_string();
    let shown = json(&nudge, &["runs", "show", &id, "--json"]);
    let steps = shown["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["wait", "send", "schedule_follow_up"], "{shown:#}");
    assert!(
        steps.iter().all(|s| !s["detail"].as_str().unwrap().is_empty()),
        "{shown:#}"
    );
    let timers = shown["timers"].as_array().unwrap();
    assert_eq!(timers.len(), 1, "{shown:#}");
    assert_eq!(timers[0]["due_at"], until);
    assert_eq!(timers[0]["fired_at"], until);
    let messages = shown["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{shown:#}");
    assert_eq!(messages[0]["status"], "sent");
    assert_eq!(messages[0]["recipient"], ann.as_str());
    assert_eq!(messages[0]["subject"], "Ann, did the samples arrive?");
    assert_eq!(messages[0]["deliveries"][0]["outcome"], "sent", "{shown:#}");
    assert_eq!(shown["outcome"], "all steps done");
    let text = nudge.cli(&["runs", "show", &id]);
    assert!(
        text.contains("did the samples arrive?") && text.contains("schedule_follow_up"),
        "{text}"
    );
    let listed = nudge.cli(&["runs", "--workflow", "after-sample"]);
    assert!(listed.contains("exit condition met: replied"), "{listed}");
    let (ok, _, err) = nudge.try_cli(&["runs", "show", "999999"]);
    assert!(!ok && err.contains("no run 999999"), "{err}");

    // The API answers the same.
    let (status, page) = nudge.http("GET", "/runs?workflow=after-sample", None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page, json(&nudge, &["runs", "--workflow", "after-sample", "--json"]));
    let (status, one) = nudge.http("GET", &format!("/runs/{id}"), None);
    assert_eq!((status, &one), (200, &shown));
    assert_eq!(nudge.http("GET", "/runs/999999", None).0, 404);
    assert_eq!(nudge.http("GET", "/runs?status=asleep", None).0, 422);
    assert_eq!(nudge.http_with_token("GET", "/runs", None, None).0, 401);

    // Item 5: every log line of a run names its run, workflow and contact.
    nudge.stop();
    let log = nudge.log();
    let of_ann: Vec<&str> = log.lines().filter(|l| l.contains(&format!("run_id={id}"))).collect();
    for needle in ["run started", "wait until", "queued", "sent", "run done"] {
        assert!(
            of_ann.iter().any(|l| l.contains(needle)),
            "no {needle:?} line of run {id}:\n{log}"
        );
    }
    let contact = format!("contact_id={}", ann_run["contact_id"]);
    for line in log.lines().filter(|l| l.contains("run_id=")) {
        assert!(
            line.contains("workflow=") && line.contains("contact_id="),
            "a line of a run without its workflow or contact: {line}"
        );
    }
    assert!(
        of_ann
            .iter()
            .all(|l| l.contains(&contact) && l.contains("workflow=after-sample"))
    );
}

#[test]
fn retention_prunes_old_finished_runs_and_sent_mail_and_keeps_the_rest() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = installation(&smtp, "");
    // A run that waits a year: older than the retention, still needed.
    nudge.write_workflow(
        "keep-waiting.toml",
        "description = \"waits a year\"\nwhen = '\"patient\" in contact.tags'\n\
         [trigger]\non = \"stage_changed\"\nto = \"sample\"\n\
         [[steps]]\nwait = \"365d\"\n[[steps]]\ntag = \"waited\"\n",
    );
    nudge.start();
    let ann = add(&nudge, "Ann", &[]);
    let carol = add(&nudge, "Carol", &["patient"]);
    let dave = add(&nudge, "Dave", &[]);
    nudge.cli(&["stage", "set", &ann, "sample"]);
    nudge.cli(&["stage", "set", &carol, "sample"]);
    nudge.settle();
    nudge.advance("3d");
    smtp.wait_for(&ann, "did the samples arrive?");
    smtp.wait_for(&carol, "did the samples arrive?");
    nudge.settle();

    // Dave's check is refused for good: a failed row, which an operator may still retry.
    smtp.script_faults(json!({ "rcpt": "550 5.1.1 no such user" }));
    nudge.cli(&["stage", "set", &dave, "sample"]);
    nudge.settle();
    nudge.advance("3d");
    let failed = || {
        nudge.query(&format!(
            "SELECT id FROM outbox WHERE recipient = '{dave}' AND status = 'failed'"
        ))
    };
    wait_until(
        || Some(()).filter(|_| failed().as_array().unwrap().len() == 1),
        || format!("no failed row: {}", nudge.cli(&["outbox", "list"])),
    );
    smtp.script_faults(json!({}));
    nudge.settle();

    // Erin's run and mail, 100 days on, are recent when the old ones go.
    nudge.advance("100d");
    let erin = add(&nudge, "Erin", &[]);
    nudge.cli(&["stage", "set", &erin, "sample"]);
    nudge.settle();
    nudge.advance("3d");
    smtp.wait_for(&erin, "did the samples arrive?");
    nudge.settle();

    let count = |sql: &str| nudge.query(sql)[0][0].as_i64().unwrap();
    let contact_runs = |email: &str| {
        count(&format!(
            "SELECT COUNT(*) FROM runs r JOIN contacts c ON c.id = r.contact_id WHERE c.email = '{email}'"
        ))
    };
    let mail_to = |email: &str| count(&format!("SELECT COUNT(*) FROM outbox WHERE recipient = '{email}'"));
    let ann_run = runs(&nudge, &["--contact", &ann])[0]["id"].to_string();
    assert_eq!((contact_runs(&ann), mail_to(&ann)), (1, 1));
    let dry = nudge.cli(&["prune", "--dry-run"]);
    assert!(dry.starts_with("would prune (older than 180 days): 0 runs"), "{dry}");

    // 187 days after the first mails: the daemon's daily pass prunes them.
    nudge.advance("81d");
    wait_until(
        || Some(()).filter(|_| contact_runs(&ann) == 0),
        || format!("Ann's run is still there:\n{}", nudge.log()),
    );
    nudge.settle();
    nudge.wait_for_log("retention pass");
    assert_eq!(mail_to(&ann), 0, "Ann's delivered mail is pruned with her run");
    assert_eq!(
        count("SELECT COUNT(*) FROM deliveries WHERE outbox_id NOT IN (SELECT id FROM outbox)"),
        0
    );
    let (ok, _, err) = nudge.try_cli(&["runs", "show", &ann_run]);
    assert!(!ok && err.contains("pruned"), "{err}");

    // Carol's sample check went, but her year-long wait stays, with its timer.
    assert_eq!(mail_to(&carol), 0);
    let carol_runs = runs(&nudge, &["--contact", &carol]);
    assert_eq!(field(&carol_runs, "status"), [&json!("waiting")], "{carol_runs:#?}");
    assert_eq!(carol_runs[0]["workflow"], "keep-waiting");
    assert!(carol_runs[0]["waiting_until"].is_i64(), "{carol_runs:#?}");
    // Dave's failed row stays, and so does the finished run that queued it.
    assert_eq!(failed().as_array().unwrap().len(), 1);
    assert_eq!(field(&runs(&nudge, &["--contact", &dave]), "status"), [&json!("done")]);
    let retried = nudge.cli(&["outbox", "retry", "--all", "failed"]);
    assert!(retried.starts_with("1 of 1"), "{retried}");
    // Erin's are recent.
    assert_eq!((contact_runs(&erin), mail_to(&erin)), (1, 1));
    // Nothing left behind that points at what went.
    assert_eq!(nudge.query("PRAGMA foreign_key_check"), json!([]));

    let again = nudge.cli(&["prune"]);
    assert!(again.starts_with("pruned (older than 180 days): 0 runs"), "{again}");
    // The report and the caps read what is left.
    let report = json(&nudge, &["report", "--format", "json"]);
    assert!(report.is_object(), "{report}");
    nudge.stop();
    nudge.start();
    nudge.settle();
}

/// A retention shorter than a frequency cap's period would prune the messages
/// the cap counts: refused, at its place in nudge.toml.
#[test]
fn a_retention_within_a_cap_is_refused_where_it_is_written() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = installation(&smtp, "");
    let retention = |nudge: &Nudge, days: &str| {
        let path = nudge.path("nudge.toml");
        let toml = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{toml}[retention]\nkeep_days = {days}\n")).unwrap();
    };
    retention(&nudge, "7");
    let toml = std::fs::read_to_string(nudge.path("nudge.toml")).unwrap();
    let line = toml.lines().position(|l| l.starts_with("keep_days")).unwrap() + 1;
    let (ok, _, err) = nudge.try_cli(&["prune"]);
    assert!(!ok);
    assert!(err.contains(&format!("nudge.toml:{line}:13")), "{err}");
    assert!(
        err.contains("2 marketing email per 7d") && err.contains("keep more than 7 days"),
        "{err}"
    );
    for command in ["run", "check"] {
        let (ok, _, err) = nudge.try_cli(&[command]);
        assert!(!ok && err.contains("2 marketing email per 7d"), "{command}: {err}");
    }

    let zero = installation(&smtp, "");
    retention(&zero, "0");
    let (ok, _, err) = zero.try_cli(&["runs"]);
    assert!(!ok && err.contains("keep_days = 0") && err.contains(":13"), "{err}");
}

/// A link in a mail whose message the retention pass pruned still leads where
/// it did (its token seals the URL); the open pixel still answers. Nothing is
/// recorded: there is no message left to record it against.
#[test]
fn links_in_pruned_mail_still_lead_where_they_did() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = installation(&smtp, "");
    nudge.write_workflow(
        "templates/offer.toml",
        "[offer]\nchannel = \"email\"\nsubject = \"An offer for {{ contact.name }}\"\ntext = \"See it\"\n\
         html = '<p><a href=\"https://shop.example/offer\">The offer</a> <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>'\n",
    );
    nudge.write_workflow(
        "offer.toml",
        "category = \"marketing\"\n[trigger]\non = \"stage_changed\"\nto = \"loyal\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"offer\" }\n",
    );
    nudge.start();
    let lin = add(&nudge, "Lin", &[]);
    nudge.cli(&["stage", "set", &lin, "loyal"]);
    let mail = smtp.wait_for(&lin, "An offer for Lin");
    let path = |kind: &str| {
        let marker = format!("/t/{kind}/");
        let at = mail
            .html
            .find(&marker)
            .unwrap_or_else(|| panic!("no {marker}: {}", mail.html))
            + marker.len();
        let token: String = mail.html[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        format!("{marker}{token}")
    };
    let (click, open) = (path("c"), path("o"));
    nudge.settle();

    nudge.advance("181d");
    let messages = || nudge.query(&format!("SELECT COUNT(*) FROM outbox WHERE recipient = '{lin}'"))[0][0].clone();
    wait_until(
        || Some(()).filter(|_| messages() == json!(0)),
        || format!("the offer is still kept:\n{}", nudge.log()),
    );
    let (status, head, _) = nudge.get_raw(&click);
    assert_eq!(status, 302, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nlocation: https://shop.example/offer"),
        "{head}"
    );
    let (status, _, body) = nudge.get_raw(&open);
    assert_eq!(status, 200);
    assert!(body.starts_with(b"GIF89a"));
    assert_eq!(nudge.query("SELECT COUNT(*) FROM engagement"), json!([[0]]));
    nudge.stop();
}
