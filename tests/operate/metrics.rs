//! `GET /metrics` after a load: what it shows equals what the database
//! recorded, `promtool check metrics` accepts it, the shipped alert rules pass
//! `promtool check rules` and name only metrics the daemon serves, and the
//! token guards it unless `[metrics] public = true`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::{Nudge, SmtpServer, repo_root, scratch, wait_until};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";
const RULES: &str = "deploy/prometheus/nudge-alerts.yml";

/// Runs promtool (Debian's `prometheus` package) with `args` and `stdin`;
/// (success, stdout and stderr). Fails, never skips, without it.
fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool could not be run ({e}): install Debian's `prometheus` package \
             (`apt-get install --no-install-recommends prometheus`), as .ci/run does"
        ),
    };
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The exposition's samples: `name{labels}` (labels as written) -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include each of `labels` (`k="v"`).
fn total(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(key, _)| key.split('{').next() == Some(name))
        .filter(|(key, _)| labels.iter().all(|l| key.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

fn scrape(nudge: &Nudge) -> String {
    let (status, body) = nudge.http("GET", "/metrics", None);
    assert_eq!(status, 200, "{body}");
    body.as_str().expect("a text body").to_string()
}

/// (first column as text, second as a number) of each row of a query.
fn pairs(nudge: &Nudge, sql: &str) -> Vec<(String, f64)> {
    let rows = nudge.query(sql);
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_f64().unwrap()))
        .collect()
}

fn number(nudge: &Nudge, sql: &str) -> f64 {
    nudge.query(sql)[0][0].as_f64().unwrap_or(0.0)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * b.abs().max(1.0)
}

#[test]
fn metrics_after_a_load_pass_promtool_and_equal_what_the_database_recorded() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    // The first recipient does not exist: a permanent failure.
    smtp.script_faults(json!({ "rcpt": ["550 5.1.1 no such user"] }));
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();

    for who in ["gone", "li", "wang"] {
        let body = format!(r#"{{"email": "{who}@example.com", "name": "{who}", "stage": "intent"}}"#);
        let (status, answer) = nudge.http("POST", "/stage-changes", Some(&body));
        assert_eq!(status, 202, "{answer}");
    }
    smtp.wait_for("li@example.com", "li");
    smtp.wait_for("wang@example.com", "wang");
    nudge.settle();
    // A week later (cadences.toml [intent] default) the follow-ups the proposals
    // scheduled fall due: timers fire late
    // by however far the clock jumped past them, and their reminders go out.
    nudge.advance("8d");
    nudge.settle();
    // A broken edit of the workflows is refused; the running set stays.
    nudge.write_workflow("broken.toml", "description = \"half an edit\"\n[[steps]\nsend = ");
    nudge.wait_for_log("workflow change rejected");
    let (status, _) = nudge.http("GET", "/contacts/999999", None);
    assert_eq!(status, 404);

    let text = scrape(&nudge);
    let (ok, lint) = promtool(&["check", "metrics"], &text);
    assert!(ok && lint.trim().is_empty(), "promtool check metrics:\n{lint}\n{text}");
    let got = samples(&text);

    // Events taken in, by kind, as the database marked them processed.
    let events = pairs(
        &nudge,
        "SELECT kind, COUNT(*) FROM events WHERE processed_at IS NOT NULL GROUP BY kind",
    );
    assert!(
        events.iter().any(|(k, n)| k == "stage_changed" && *n == 3.0),
        "{events:?}"
    );
    assert!(events.iter().any(|(k, _)| k == "follow_up_overdue"), "{events:?}");
    for (kind, n) in &events {
        let label = format!("kind=\"{kind}\"");
        assert_eq!(total(&got, "nudge_events_total", &[&label]), *n, "{kind}\n{text}");
    }
    assert_eq!(
        total(&got, "nudge_events_total", &[]),
        events.iter().map(|(_, n)| n).sum::<f64>()
    );

    // Delivery attempts by outcome, and the failed one left in the outbox.
    let attempts = pairs(&nudge, "SELECT outcome, COUNT(*) FROM deliveries GROUP BY outcome");
    assert!(attempts.contains(&("permanent".into(), 1.0)), "{attempts:?}");
    for (outcome, n) in &attempts {
        let label = format!("outcome=\"{outcome}\"");
        assert_eq!(
            total(&got, "nudge_delivery_attempts_total", &["channel=\"email\"", &label]),
            *n,
            "{outcome}\n{text}"
        );
    }
    assert_eq!(got["nudge_outbox_messages{status=\"failed\"}"], 1.0, "{text}");
    assert_eq!(got["nudge_outbox_messages{status=\"pending\"}"], 0.0, "{text}");
    assert_eq!(got["nudge_outbox_messages{status=\"dead\"}"], 0.0, "{text}");
    assert_eq!(got["nudge_outbox_oldest_queued_seconds"], 0.0, "{text}");
    assert_eq!(got["nudge_relay_circuit_open"], 0.0, "{text}");

    // Latency from queued to accepted, on the daemon's clock, message by message.
    let sent = number(&nudge, "SELECT COUNT(*) FROM deliveries WHERE outcome = 'sent'");
    assert_eq!(sent as usize, smtp.mails().len());
    let latency = number(
        &nudge,
        "SELECT SUM(d.finished_at - o.created_at) / 1000.0 FROM deliveries d
         JOIN outbox o ON o.id = d.outbox_id WHERE d.outcome = 'sent'",
    );
    assert_eq!(got["nudge_message_latency_seconds_count{channel=\"email\"}"], sent);
    assert!(
        close(got["nudge_message_latency_seconds_sum{channel=\"email\"}"], latency),
        "{text}"
    );

    // Every timer fired, each as late as the clock's jump left it.
    let fired = number(&nudge, "SELECT COUNT(*) FROM timers WHERE fired_at IS NOT NULL");
    let late = number(
        &nudge,
        "SELECT SUM(fired_at - due_at) / 1000.0 FROM timers WHERE fired_at IS NOT NULL",
    );
    assert!(fired >= 3.0 && late > 0.0, "{fired} timers, {late} s late");
    assert_eq!(got["nudge_timer_lateness_seconds_count"], fired, "{text}");
    assert!(close(got["nudge_timer_lateness_seconds_sum"], late), "{late}\n{text}");

    // Runs ended by workflow and outcome, and those still going by state.
    let ended = nudge.query(
        "SELECT workflow, status, COUNT(*) FROM runs WHERE status IN ('done', 'cancelled', 'failed')
         GROUP BY workflow, status",
    );
    let ended = ended.as_array().unwrap();
    assert!(!ended.is_empty());
    for row in ended {
        let (workflow, status) = (row[0].as_str().unwrap(), row[1].as_str().unwrap());
        let labels = [format!("workflow=\"{workflow}\""), format!("outcome=\"{status}\"")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(
            total(&got, "nudge_runs_finished_total", &labels),
            row[2].as_f64().unwrap(),
            "{row}\n{text}"
        );
    }
    assert_eq!(
        total(&got, "nudge_runs_finished_total", &["reason=\"completed\""]),
        total(&got, "nudge_runs_finished_total", &["outcome=\"done\""])
    );
    for state in ["ready", "waiting"] {
        let n = number(&nudge, &format!("SELECT COUNT(*) FROM runs WHERE status = '{state}'"));
        assert_eq!(got[&format!("nudge_runs{{state=\"{state}\"}}")], n, "{state}\n{text}");
    }

    // The refused reload, and the API's requests by route template, never by path.
    assert_eq!(got["nudge_workflow_reloads_total{result=\"failed\"}"], 1.0, "{text}");
    assert_eq!(
        got["nudge_api_requests_total{method=\"POST\",route=\"/stage-changes\",status=\"202\"}"],
        3.0
    );
    assert_eq!(
        got["nudge_api_requests_total{method=\"GET\",route=\"/contacts/{contact}\",status=\"404\"}"],
        1.0
    );
    assert_eq!(
        total(
            &got,
            "nudge_api_request_duration_seconds_count",
            &["route=\"/stage-changes\""]
        ),
        3.0
    );
    let labelled = got.keys().filter_map(|k| k.split_once('{')).map(|(_, labels)| labels);
    for labels in labelled {
        assert!(
            !labels.contains('@') && !labels.contains("999999"),
            "no address or raw path in a label: {labels}"
        );
    }

    // Each metric the alert rules use is one the daemon serves.
    let rules = std::fs::read_to_string(repo_root().join(RULES)).unwrap();
    let served: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if let Some(name) = word.strip_prefix("nudge_") {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .filter(|f| served.contains(f))
                .unwrap_or(word);
            assert!(
                served.contains(&family),
                "{RULES} uses nudge_{name}, not served:\n{served:?}"
            );
            named += 1;
        }
    }
    assert!(named >= 6, "the rules name the metrics they watch");

    // The refused edit is flagged until the folder holds a set that runs again.
    assert_eq!(got["nudge_workflow_reload_failing"], 1.0, "{text}");
    std::fs::remove_file(nudge.path("workflows/broken.toml")).unwrap();
    wait_until(
        || Some(()).filter(|()| samples(&scrape(&nudge))["nudge_workflow_reload_failing"] == 0.0),
        || format!("the flag stayed up:\n{}", nudge.log()),
    );
    nudge.stop();
}

#[test]
fn the_shipped_alert_rules_pass_promtool() {
    let (ok, out) = promtool(&["check", "rules", RULES], "");
    assert!(ok, "promtool check rules {RULES}:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // Their unit tests: each alert fires on the series it watches, and only then.
    let (ok, out) = promtool(&["test", "rules", "deploy/prometheus/nudge-alerts.test.yml"], "");
    assert!(ok, "promtool test rules:\n{out}");
}

#[test]
fn the_token_guards_metrics_unless_they_are_public() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut guarded = Nudge::new(&smtp, MONDAY_9AM);
    guarded.start();
    assert_eq!(guarded.http_with_token("GET", "/metrics", None, None).0, 401);
    assert_eq!(guarded.http_with_token("GET", "/metrics", None, Some("wrong")).0, 401);
    let text = scrape(&guarded);
    // The refusals are counted too, by the route they asked for.
    let refused = samples(&text)
        .get("nudge_api_requests_total{method=\"GET\",route=\"/metrics\",status=\"401\"}")
        .copied();
    assert_eq!(refused, Some(2.0), "{text}");
    guarded.stop();

    let mut public = Nudge::with_config(&smtp, MONDAY_9AM, "[metrics]\npublic = true\n");
    public.start();
    let (status, body) = public.http_with_token("GET", "/metrics", None, None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.as_str()
            .is_some_and(|t| t.contains("# TYPE nudge_outbox_messages gauge")),
        "{body}"
    );
    // Only the metrics: the rest of the API still wants the token.
    assert_eq!(public.http_with_token("GET", "/reports", None, None).0, 401);
    assert_eq!(
        public
            .http_with_token("POST", "/contacts", Some(r#"{"name": "X"}"#), None)
            .0,
        401
    );
    public.stop();
}
