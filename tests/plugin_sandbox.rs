//! Attacks on the plugin sandbox, one test each, through `nudge plugin test` or
//! the running daemon as a user meets them: a plugin that waits in the host,
//! a slow channel, a broken plugin folder, a channel takeover, requests aimed
//! at the daemon itself, oversized output, and a provider that accepted a
//! message being sent it again.

mod common;

use std::path::PathBuf;

use common::{HttpServer, Nudge, SmtpServer, scratch};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

fn hostile_wasm() -> PathBuf {
    PathBuf::from(env!("NUDGE_HOSTILE_PLUGIN_WASM"))
}

fn hostile_manifest() -> PathBuf {
    common::repo_root().join("tests/hostile-plugin/plugin.toml")
}

/// Runs `nudge plugin test hostile` on `template` (with a recipient, so that
/// `build_request` runs too); fails the test if the command hangs.
fn plugin_test(nudge: &Nudge, name: &str, template: serde_json::Value) -> (bool, String) {
    let fixture = nudge.path(&format!("{name}.json"));
    let body = serde_json::json!({"template": template, "context": {}, "recipient": "ops"});
    std::fs::write(&fixture, body.to_string()).unwrap();
    let (ok, stdout, stderr) = nudge.try_cli_or_hang(
        &["plugin", "test", "hostile", fixture.to_str().unwrap()],
        &format!("`{name}` was not stopped at the plugin's deadline"),
    );
    (ok, format!("{stdout}{stderr}"))
}

#[test]
fn a_plugin_waiting_in_a_wasi_call_is_stopped_at_its_deadline() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.install_plugin("hostile", &hostile_wasm(), &hostile_manifest());

    // std::thread::sleep for an hour in render, and a poll on an hour-long clock pollable.
    for behaviour in ["sleep", "poll"] {
        let (ok, out) = plugin_test(&nudge, behaviour, serde_json::json!({"behaviour": behaviour}));
        assert!(
            !ok && out.contains("exceeded its deadline of 500 ms"),
            "{behaviour}: {out}"
        );
    }
    // The same sleep in build_request.
    let (ok, out) = plugin_test(
        &nudge,
        "build-sleep",
        serde_json::json!({"behaviour": "ok", "deliver": "sleep"}),
    );
    assert!(!ok && out.contains("exceeded its deadline of 500 ms"), "{out}");
    // A wait shorter than the deadline is served as before.
    let (ok, out) = plugin_test(&nudge, "fine", serde_json::json!({"behaviour": "ok"}));
    assert!(ok && out.contains("POST http://127.0.0.1:9/"), "{out}");
}

/// A provider that takes SMS requests and never answers (within a generous
/// HTTP timeout) holds at most half of the delivery slots: email still goes out.
#[test]
fn a_slow_plugin_channel_never_takes_the_delivery_slots_email_needs() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let server = HttpServer::start(tmp.path(), r#"[{"hang": true}]"#);
    let extra = format!(
        "[plugin.sms]\nmode = \"free_text\"\nendpoint = \"http://127.0.0.1:{port}/sms\"\n\
         [http]\ntimeout_secs = 3600\nprivate_hosts = {{ sms = [\"127.0.0.1:{port}\"] }}\n\
         [delivery]\nconcurrency = 2\n",
        port = server.port
    );
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, &extra);
    nudge.write_workflow(
        "templates/sms.toml",
        "[shipped]\nchannel = \"sms\"\ntext = \"{{ contact.name }}, your samples shipped\"\n",
    );
    nudge.write_workflow(
        "sms-on-sample.toml",
        "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"sample\"\n\n[[steps]]\nsend = { channel = \"sms\", template = \"shipped\" }\n",
    );
    nudge.start();
    for n in 1..=3 {
        let phone = format!("+861380000000{n}");
        nudge.cli(&[
            "contact",
            "add",
            "--name",
            &format!("Slow {n}"),
            "--phone",
            &phone,
            "--stage",
            "intent",
        ]);
        nudge.cli(&["stage", "set", &n.to_string(), "sample"]);
    }
    server.wait_for_requests(1);
    // Every SMS is stuck at the provider; the proposal emails must not wait for them.
    for name in ["gao", "hu"] {
        let email = format!("{name}@example.com");
        nudge.cli(&["contact", "add", "--name", name, "--email", &email]);
        nudge.cli(&["stage", "set", &email, "intent"]);
    }
    for name in ["gao", "hu"] {
        smtp.wait_for(&format!("{name}@example.com"), "a proposal");
    }
    assert_eq!(
        server.requests().len(),
        1,
        "with 2 slots, the SMS channel holds one: the other SMS wait their turn"
    );
    // SIGTERM would wait for the hung request (within its hour); this test ends here.
    nudge.kill();
}

#[test]
fn one_rejected_plugin_folder_does_not_stop_the_daemon_from_starting() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.install_plugin("hostile", &hostile_wasm(), &hostile_manifest());
    let greedy = tmp.path().join("greedy.toml");
    std::fs::write(
        &greedy,
        std::fs::read_to_string(hostile_manifest())
            .unwrap()
            .replace("id = \"hostile\"", "id = \"greedy\"")
            .replace("memory_mb = 16", "memory_mb = 4096"),
    )
    .unwrap();
    nudge.install_plugin("greedy", &hostile_wasm(), &greedy);

    nudge.start();
    let log = nudge.log();
    assert!(
        log.contains("plugins.d/greedy rejected, starting without it") && log.contains("limits.memory_mb = 4096"),
        "{log}"
    );
    assert!(
        log.contains("plugin loaded plugin=hostile"),
        "the good plugin serves: {log}"
    );
    nudge.stop();

    let (ok, _, stderr) = nudge.try_cli_or_hang(&["run", "--strict"], "--strict started with a bad plugin");
    assert!(!ok, "--strict refuses to start: {stderr}");
    assert!(
        stderr.contains("limits.memory_mb = 4096") && stderr.contains("without --strict"),
        "{stderr}"
    );
}

#[test]
fn a_plugin_claiming_a_served_channel_is_refused_unless_the_config_picks_it() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.install_plugin(
        "takeover",
        &PathBuf::from(env!("NUDGE_TAKEOVER_PLUGIN_WASM")),
        &common::repo_root().join("tests/takeover-plugin/plugin.toml"),
    );
    let (ok, _, stderr) = nudge.try_cli(&["plugin", "list"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("plugin `takeover`")
            && stderr.contains("claims channel `email`, which plugin `email` (built-in) already serves")
            && stderr.contains("[channels] email = \"email\" (or \"takeover\")"),
        "{stderr}"
    );

    // The daemon starts without it, and email stays with the built-in plugin.
    nudge.start();
    nudge.cli(&["contact", "add", "--name", "Gao", "--email", "gao@example.com"]);
    nudge.cli(&["stage", "set", "gao@example.com", "intent"]);
    let mail = smtp.wait_for("gao@example.com", "a proposal");
    assert!(!mail.text.contains("takeover"), "{}", mail.text);
    assert!(nudge.log().contains("claims channel `email`"), "{}", nudge.log());
    nudge.stop();

    // Picked in the config, it serves email and the built-in plugin serves nothing.
    append_config(&nudge, "[channels]\nemail = \"takeover\"\n");
    let list = nudge.cli(&["plugin", "list"]);
    let line = |id: &str| list.lines().find(|l| l.starts_with(id)).unwrap_or_default().to_string();
    assert!(line("takeover").contains("channels [email]"), "{list}");
    assert!(line("email ").contains("channels []"), "{list}");
}

#[test]
fn build_request_output_is_capped_in_count_and_bytes() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.install_plugin("hostile", &hostile_wasm(), &hostile_manifest());
    let (ok, out) = plugin_test(&nudge, "many", serde_json::json!({"deliver": "many"}));
    assert!(
        !ok && out.contains("built 100 requests for one message, over the limit of 16"),
        "{out}"
    );
    let (ok, out) = plugin_test(&nudge, "big", serde_json::json!({"deliver": "big"}));
    // Refused as it is read out of the plugin, before the 3 MiB body is copied.
    assert!(
        !ok && out.contains("returned more than it may, over its output limit of 64 KiB"),
        "{out}"
    );
}

#[test]
fn a_providers_verdict_text_is_stored_cut_to_a_bound() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let server = HttpServer::start(tmp.path(), r#"[{"status": 200, "body": "long-reason"}]"#);
    let mut nudge = hostile_with_provider(&smtp, &server, "one", "");
    nudge.start();
    reach_intent(&nudge, "gao");
    server.wait_for_requests(1);
    nudge.settle();
    let stored = nudge.query(
        "SELECT length(d.detail), length(o.last_error), d.detail FROM deliveries d JOIN outbox o ON o.id = d.outbox_id \
         WHERE o.channel = 'hostile'",
    );
    let row = &stored[0];
    assert!(
        row[0].as_i64().unwrap() < 2048 && row[1].as_i64().unwrap() < 2048,
        "{row:?}"
    );
    assert!(
        row[2]
            .as_str()
            .unwrap()
            .ends_with("(4194304 bytes from the plugin, cut to 1024)"),
        "{row:?}"
    );
    nudge.stop();
}

/// A render output far over the output cap is refused as it is read in the
/// plugin's memory, never copied whole into the daemon first.
#[test]
fn a_huge_render_output_is_refused_without_being_copied() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    let roomy = nudge.path("roomy.toml");
    std::fs::write(
        &roomy,
        std::fs::read_to_string(hostile_manifest())
            .unwrap()
            .replace("memory_mb = 16", "memory_mb = 256")
            .replace("deadline_ms = 500 ", "deadline_ms = 5000"),
    )
    .unwrap();
    nudge.install_plugin("hostile", &hostile_wasm(), &roomy);
    let run = |name: &str, template: serde_json::Value| {
        let fixture = nudge.path(&format!("{name}.json"));
        std::fs::write(&fixture, serde_json::json!({"template": template}).to_string()).unwrap();
        nudge.try_cli_peak_memory(&["plugin", "test", "hostile", fixture.to_str().unwrap()])
    };
    // The first run compiles the plugin into the cache; the second is the baseline.
    run("warm", serde_json::json!({"behaviour": "ok"}));
    let (ok, out, baseline) = run("small", serde_json::json!({"behaviour": "ok"}));
    assert!(ok, "{out}");
    const FLOOD_MIB: u64 = 96;
    let (ok, out, peak) = run(
        "flood",
        serde_json::json!({"behaviour": "flood", "mib": FLOOD_MIB.to_string()}),
    );
    assert!(!ok && out.contains("over its output limit of 64 KiB"), "{out}");
    // The plugin's own memory holds the output once; a copy into the daemon
    // would hold it twice. Half a copy's worth of room either way.
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    assert!(
        grown_mib < FLOOD_MIB * 3 / 2,
        "peak memory grew by {grown_mib} MiB for a {FLOOD_MIB} MiB output (baseline {} MiB)",
        baseline / 1024
    );
}

/// Installs the hostile plugin with `hosts` in its manifest's http_hosts, and a
/// workflow that sends it one message per contact reaching `intent`, with a
/// template asking `build_request` for `deliver` to `target`.
fn hostile_sender(nudge: &Nudge, hosts: &[&str], deliver: &str, target: &str) {
    let manifest = nudge.path("hostile.toml");
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    std::fs::write(
        &manifest,
        std::fs::read_to_string(hostile_manifest()).unwrap().replace(
            "recipient = \"none\"",
            &format!("recipient = \"none\"\nhttp_hosts = [{}]", hosts.join(", ")),
        ),
    )
    .unwrap();
    nudge.install_plugin("hostile", &hostile_wasm(), &manifest);
    nudge.write_workflow(
        "templates/hostile.toml",
        &format!("[call]\nchannel = \"hostile\"\nbehaviour = \"ok\"\ndeliver = \"{deliver}\"\ntarget = \"{target}\"\n"),
    );
    nudge.write_workflow(
        "hostile-on-intent.toml",
        "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"intent\"\n\n[[steps]]\nsend = { channel = \"hostile\", template = \"call\" }\n",
    );
}

fn append_config(nudge: &Nudge, text: &str) {
    let config = std::fs::read_to_string(nudge.path("nudge.toml")).unwrap();
    std::fs::write(nudge.path("nudge.toml"), format!("{config}{text}")).unwrap();
}

/// Moves a new contact to `intent`: one proposal email and one hostile message.
fn reach_intent(nudge: &Nudge, name: &str) {
    let email = format!("{name}@example.com");
    nudge.cli(&["contact", "add", "--name", name, "--email", &email]);
    nudge.cli(&["stage", "set", &email, "intent"]);
}

#[test]
fn the_daemons_own_api_is_never_a_plugin_destination() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    let api = format!("127.0.0.1:{}", nudge.api_port);
    // Even an admin who grants the address does not open the API to a plugin.
    append_config(
        &nudge,
        &format!("[http]\nprivate_hosts = {{ hostile = [\"{api}\"] }}\n"),
    );
    hostile_sender(&nudge, &[api.as_str()], "one", &format!("http://{api}/suppressions"));
    nudge.start();
    reach_intent(&nudge, "gao");
    smtp.wait_for("gao@example.com", "a proposal");
    nudge.settle();
    let log = nudge.log();
    assert!(log.contains("is this daemon's own API"), "{log}");
    assert_eq!(nudge.status()["outbox"]["failed"], 1, "{log}");
    nudge.stop();
}

#[test]
fn private_hosts_are_granted_by_the_admin_per_plugin_and_host_never_by_a_manifest() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let server = HttpServer::start(tmp.path(), r#"[{"status": 200, "body": "ok"}]"#);
    let gateway = format!("127.0.0.1:{}", server.port);
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    // The one-for-all switch is refused with what to write instead.
    append_config(&nudge, "[http]\nallow_private_hosts = true\n");
    let (ok, _, stderr) = nudge.try_cli(&["check"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("allow_private_hosts") && stderr.contains("private_hosts = { sms = [\"gateway.lan:8080\"] }"),
        "{stderr}"
    );
    let config = std::fs::read_to_string(nudge.path("nudge.toml")).unwrap();
    // Another plugin is granted the gateway; the hostile plugin only lists it in its manifest.
    let granted = config.replace(
        "allow_private_hosts = true",
        &format!("private_hosts = {{ sms = [\"{gateway}\"] }}"),
    );
    std::fs::write(nudge.path("nudge.toml"), granted).unwrap();
    hostile_sender(&nudge, &[gateway.as_str()], "one", &format!("http://{gateway}/hook"));
    nudge.start();
    reach_intent(&nudge, "gao");
    smtp.wait_for("gao@example.com", "a proposal");
    nudge.settle();
    // Delivery logs an attempt after its record commits, which `settle` may see first.
    nudge.wait_for_log("a private address; refused");
    assert!(
        nudge
            .log()
            .contains(&format!("private_hosts = {{ hostile = [\"{gateway}\"] }}")),
        "the error says how to grant it: {}",
        nudge.log()
    );
    assert!(server.requests().is_empty(), "nothing reached the private address");
    nudge.stop();

    // Granted to the hostile plugin for that host, it goes through.
    let config = std::fs::read_to_string(nudge.path("nudge.toml")).unwrap();
    std::fs::write(nudge.path("nudge.toml"), config.replace("{ sms = [", "{ hostile = [")).unwrap();
    nudge.start();
    reach_intent(&nudge, "hu");
    server.wait_for_requests(1);
    nudge.settle();
    assert_eq!(
        nudge.status()["outbox"]["sent"].as_i64(),
        Some(3),
        "two emails and the hostile message"
    );
    nudge.stop();
}

/// A hostile plugin delivering to a scripted provider on loopback (granted).
fn hostile_with_provider(smtp: &SmtpServer, server: &HttpServer, deliver: &str, extra: &str) -> Nudge {
    let provider = format!("127.0.0.1:{}", server.port);
    let nudge = Nudge::with_config(
        smtp,
        MONDAY_9AM,
        &format!("[http]\nprivate_hosts = {{ hostile = [\"{provider}\"] }}\n{extra}"),
    );
    hostile_sender(&nudge, &[], deliver, &format!("http://{provider}/send"));
    nudge
}

#[test]
fn a_message_the_provider_accepted_is_never_sent_again_when_its_answer_cannot_be_read() {
    for answer in ["trap", "sleep"] {
        let tmp = scratch();
        let smtp = SmtpServer::start(tmp.path());
        let server = HttpServer::start(tmp.path(), &format!(r#"[{{"status": 200, "body": "{answer}"}}]"#));
        let mut nudge = hostile_with_provider(
            &smtp,
            &server,
            "one",
            "[delivery]\nmax_attempts = 3\non_unknown = \"resend\"\n",
        );
        nudge.start();
        reach_intent(&nudge, "gao");
        server.wait_for_requests(1);
        nudge.settle();
        // Past every backoff: a retry would have gone out by now.
        nudge.advance("1d");
        nudge.settle();
        nudge.advance("1d");
        nudge.settle();
        assert_eq!(
            server.requests().len(),
            1,
            "{answer}: the provider got the message once"
        );
        // The resend `on_unknown = "resend"` allows skips the accepted part.
        let outbox = nudge.status()["outbox"].clone();
        assert_eq!(
            outbox["sent"], 2,
            "{answer}: the email and the accepted message: {outbox}"
        );
        assert!(
            nudge
                .log()
                .contains("the provider answered 200 to part 1 of 1, but the plugin could not read the answer"),
            "{}",
            nudge.log()
        );
        nudge.stop();
    }
}

#[test]
fn a_message_sent_in_parts_resends_only_the_parts_not_yet_accepted() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let server = HttpServer::start(
        tmp.path(),
        r#"[{"status": 200, "body": "ok"}, {"status": 200, "body": "ok"}, {"status": 503, "body": "busy"}, {"status": 200, "body": "ok"}]"#,
    );
    let mut nudge = hostile_with_provider(&smtp, &server, "parts", "");
    nudge.start();
    reach_intent(&nudge, "gao");
    server.wait_for_requests(3);
    nudge.settle();
    nudge.advance("1h");
    server.wait_for_requests(4);
    nudge.settle();
    let bodies: Vec<String> = server.requests().into_iter().map(|(_, body)| body).collect();
    assert_eq!(
        bodies,
        ["part 1", "part 2", "part 3", "part 3"],
        "parts 1 and 2 were accepted the first time"
    );
    assert_eq!(
        nudge.status()["outbox"]["sent"],
        2,
        "the proposal email and the three parts"
    );
    nudge.stop();
}

#[test]
fn malformed_requests_from_a_plugin_fail_for_good_with_the_reason() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let server = HttpServer::start(tmp.path(), r#"[{"status": 200, "body": "ok"}]"#);
    let provider = format!("127.0.0.1:{}", server.port);
    let mut nudge = Nudge::with_config(
        &smtp,
        MONDAY_9AM,
        &format!("[http]\nprivate_hosts = {{ hostile = [\"{provider}\"] }}\n"),
    );
    hostile_sender(&nudge, &["[::1]:9"], "one", "http://[::1]:9/send");
    for deliver in ["crlf", "host"] {
        nudge.write_workflow(
            &format!("templates/{deliver}.toml"),
            &format!(
                "[{deliver}]\nchannel = \"hostile\"\ndeliver = \"{deliver}\"\ntarget = \"http://{provider}/send\"\n"
            ),
        );
        nudge.write_workflow(
            &format!("{deliver}-on-intent.toml"),
            &format!("category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"intent\"\n\n[[steps]]\nsend = {{ channel = \"hostile\", template = \"{deliver}\" }}\n"),
        );
    }
    nudge.start();
    reach_intent(&nudge, "gao");
    smtp.wait_for("gao@example.com", "a proposal");
    nudge.settle();
    let rows = nudge.query("SELECT status, attempts, last_error FROM outbox WHERE channel = 'hostile' ORDER BY id");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in rows {
        assert_eq!(
            (row[0].as_str(), row[1].as_i64()),
            (Some("failed"), Some(1)),
            "final at once: {row:?}"
        );
    }
    let errors: Vec<&str> = rows.iter().map(|r| r[2].as_str().unwrap()).collect();
    // An IPv6 literal is an address, judged as one (here: loopback, not granted), never a DNS name.
    assert!(
        errors
            .iter()
            .any(|e| e.contains("[::1] resolves to ::1, a private address")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("header `x-note`") && e.contains("CR or LF")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("may not set the `Host` header")),
        "{errors:?}"
    );
    assert!(server.requests().is_empty(), "none of them was sent");
    nudge.stop();
}
