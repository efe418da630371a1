//! The plugin platform end to end: the real host sandboxing real wasm plugins
//! (hostile ones included), hot-swapping the plugins folder, and delivering
//! over HTTP for plugins that describe requests as data.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{HttpServer, Nudge, SmtpServer, scratch};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";

fn hostile_wasm() -> PathBuf {
    PathBuf::from(env!("NUDGE_HOSTILE_PLUGIN_WASM"))
}

fn wecom_wasm() -> PathBuf {
    PathBuf::from(env!("NUDGE_WECOM_PLUGIN_WASM"))
}

fn manifest(rel: &str) -> PathBuf {
    common::repo_root().join(rel)
}

/// Runs `nudge plugin test hostile` with a template asking for `behaviour`.
fn hostile(nudge: &Nudge, behaviour: &str) -> (bool, String) {
    let fixture = nudge.path(&format!("{behaviour}.json"));
    let body = serde_json::json!({"template": {"behaviour": behaviour, "target": "127.0.0.1:9"}, "context": {}});
    std::fs::write(&fixture, body.to_string()).unwrap();
    let (ok, stdout, stderr) = nudge.try_cli(&["plugin", "test", "hostile", fixture.to_str().unwrap()]);
    (ok, format!("{stdout}{stderr}"))
}

#[test]
fn hostile_plugins_get_a_clear_error_and_nothing_else() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.install_plugin(
        "hostile",
        &hostile_wasm(),
        &manifest("tests/hostile-plugin/plugin.toml"),
    );

    let (ok, out) = hostile(&nudge, "ok");
    assert!(ok && out.contains("\"fine\""), "{out}");

    let started = Instant::now();
    let (ok, out) = hostile(&nudge, "loop");
    assert!(!ok && out.contains("exceeded its deadline of 500 ms"), "{out}");
    // Not a speed check: an endless loop that escaped its deadline would never return.
    assert!(started.elapsed().as_secs() < 60, "the loop was not stopped");

    let (ok, out) = hostile(&nudge, "memory");
    assert!(!ok && out.contains("exceeded its memory limit of 16 MiB"), "{out}");
    let (ok, out) = hostile(&nudge, "huge");
    assert!(!ok && out.contains("over its output limit of 64 KiB"), "{out}");
    let (ok, out) = hostile(&nudge, "trap");
    assert!(
        !ok && out.contains("plugin crashed") && out.contains("unreachable"),
        "{out}"
    );
    assert!(
        out.contains("panicked at") && out.contains("hostile plugin panics on purpose"),
        "the panic's own message is shown: {out}"
    );
    let (ok, out) = hostile(&nudge, "file");
    assert!(!ok && out.contains("cannot open a file"), "no preopened files: {out}");
    let (ok, out) = hostile(&nudge, "socket");
    assert!(!ok && out.contains("cannot open a socket"), "no network: {out}");
}

/// Every call gets memory as fresh as the first: the sandbox resets an
/// instance's memory in place for the next call (`MEMORY_KEPT_RESIDENT`), and
/// nothing one contact's render left in a static, on the heap or on the stack
/// may be there for the next contact's, on one thread or several.
#[test]
fn a_plugin_call_never_sees_what_an_earlier_call_left_in_memory() {
    let tmp = scratch();
    let folder = tmp.path().join("plugins.d").join("hostile");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(hostile_wasm(), folder.join("plugin.wasm")).unwrap();
    std::fs::copy(manifest("tests/hostile-plugin/plugin.toml"), folder.join("plugin.toml")).unwrap();
    let settings = nudge::plugins::PluginSettings {
        dir: tmp.path().join("plugins.d"),
        cache: None,
        config: Default::default(),
        channels: Default::default(),
    };
    let host = nudge::plugins::PluginHost::load(&settings, None).unwrap();
    let remember = |secret: &str, earlier: &str| {
        let template = [("behaviour", "remember"), ("secret", secret), ("earlier", earlier)]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let (message, _) = host.render("hostile", &template, &serde_json::json!({})).unwrap();
        message.text.unwrap()
    };
    std::thread::scope(|threads| {
        for thread in 0..3 {
            threads.spawn(move || {
                let mut earlier = String::new();
                for call in 0..8 {
                    let secret = format!("contact {thread}-{call}: owes 1,000 on order 77");
                    assert_eq!(
                        remember(&secret, &earlier),
                        "earlier:false own:true",
                        "call {call} of thread {thread}"
                    );
                    earlier = secret;
                }
            });
        }
    });
}

#[test]
fn a_hostile_plugin_fails_its_own_run_while_the_daemon_keeps_sending() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.install_plugin(
        "hostile",
        &hostile_wasm(),
        &manifest("tests/hostile-plugin/plugin.toml"),
    );
    nudge.write_workflow(
        "templates/hostile.toml",
        "[spin]\nchannel = \"hostile\"\nbehaviour = \"loop\"\n",
    );
    nudge.write_workflow(
        "hostile-on-intent.toml",
        "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"intent\"\n\n[[steps]]\nsend = { channel = \"hostile\", template = \"spin\" }\n",
    );
    nudge.start();
    for name in ["Gao", "Hu", "Jin"] {
        let email = format!("{}@example.com", name.to_lowercase());
        if name == "Gao" {
            nudge.cli(&["contact", "add", "--name", name, "--email", &email]);
            nudge.cli(&["stage", "set", &email, "intent"]);
            continue;
        }
        // Through the API the group renders its runs' first steps while it holds
        // the turn to write: one past the budget is left to the engine.
        let body = serde_json::json!({"name": name, "company": "Hostile Ltd", "email": email, "stage": "intent"});
        let (status, answer) = nudge.http("POST", "/stage-changes", Some(&body.to_string()));
        assert_eq!(status, 202, "{answer}");
    }
    // The shipped intent-proposal workflow still emails everyone.
    for name in ["gao", "hu", "jin"] {
        smtp.wait_for(&format!("{name}@example.com"), "a proposal");
    }
    nudge.settle();
    // A step that errs is retried with backoff, not failed at once ...
    let status = nudge.status();
    assert_eq!(status["runs"]["waiting"], 3, "{status}");
    assert!(
        nudge.log().contains("exceeded its deadline of 500 ms"),
        "{}",
        nudge.log()
    );
    assert!(
        nudge
            .log()
            .contains("while it held the turn to write; the engine takes them"),
        "{}",
        nudge.log()
    );
    // ... until the limit of errors in a row (8, with backoff from 30 s doubling: about an hour).
    let failed = common::wait_until(
        || {
            nudge.advance("30m");
            nudge.settle();
            let status = nudge.status();
            (status["runs"]["failed"] == 3).then_some(status)
        },
        || format!("runs did not fail after their retries: {}", nudge.status()),
    );
    assert!(failed["runs"].get("waiting").is_none(), "{failed}");
    assert_eq!(
        nudge.log().matches("step failed, retried in").count(),
        3 * 7,
        "seven retries per run"
    );
    nudge.stop();
}

#[test]
fn plugins_built_for_another_interface_are_refused_with_the_supported_range() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    let old = tmp.path().join("old.toml");
    std::fs::write(
        &old,
        std::fs::read_to_string(manifest("tests/hostile-plugin/plugin.toml"))
            .unwrap()
            .replace("interface = \"0.2.0\"", "interface = \"0.1.0\""),
    )
    .unwrap();
    nudge.install_plugin("hostile", &hostile_wasm(), &old);
    let (ok, _, stderr) = nudge.try_cli(&["plugin", "list"]);
    assert!(!ok);
    assert!(
        stderr.contains("targets interface 0.1.0, host supports 0.2.0..0.2.x"),
        "{stderr}"
    );
}

#[test]
fn compiled_plugins_are_cached_and_a_warm_start_does_not_recompile() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    let list = nudge.cli(&["plugin", "list"]);
    assert!(list.contains("email") && list.contains("sms"), "{list}");
    let cached = |dir: &Path| -> Vec<(PathBuf, std::time::SystemTime)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .map(|p| {
                let modified = std::fs::metadata(&p).unwrap().modified().unwrap();
                (p, modified)
            })
            .collect();
        files.sort();
        files
    };
    let first = cached(&nudge.path("data/plugin-cache"));
    assert_eq!(first.len(), 2, "one compiled file per built-in plugin: {first:?}");
    nudge.cli(&["plugin", "list"]);
    assert_eq!(
        cached(&nudge.path("data/plugin-cache")),
        first,
        "the warm start reused the cache"
    );
}

#[test]
fn wecom_plugin_delivers_through_a_local_server_and_retries_on_45009() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let server = HttpServer::start(
        tmp.path(),
        r#"[{"status": 200, "body": "{\"errcode\":45009,\"errmsg\":\"api freq out of limit\"}"}, {"status": 200, "body": "{\"errcode\":0,\"errmsg\":\"ok\"}"}]"#,
    );
    let extra = format!(
        "[plugin.wecom]\nwebhook_url = \"http://127.0.0.1:{port}/cgi-bin/webhook/send\"\nkey = \"${{secret:WECOM_KEY}}\"\n\
         [http]\nprivate_hosts = {{ wecom = [\"127.0.0.1:{port}\"] }}\n",
        port = server.port
    );
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, &extra);
    nudge.env.push(("WECOM_KEY".into(), "k-123".into()));
    nudge.write_workflow(
        "templates/team.toml",
        "[deal_alert]\nchannel = \"wecom\"\nmarkdown = \"**New intent**: {{ contact.name }}\"\n",
    );
    nudge.write_workflow(
        "team-alert.toml",
        "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"intent\"\n\n[[steps]]\nsend = { channel = \"wecom\", template = \"deal_alert\" }\n",
    );
    // Installed while nothing runs yet; `check` sees the new channel.
    nudge.install_plugin("wecom", &wecom_wasm(), &manifest("plugins/wecom/plugin.toml"));
    nudge.cli(&["check"]);
    nudge.start();

    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "*Boss* [x](http://evil)",
        "--email",
        "boss@example.com",
    ]);
    nudge.cli(&["stage", "set", "boss@example.com", "intent"]);
    nudge.settle();
    let first = server.wait_for_requests(1);
    assert_eq!(
        first[0].0, "/cgi-bin/webhook/send?key=k-123",
        "the host filled in the secret"
    );
    let body: serde_json::Value = serde_json::from_str(&first[0].1).unwrap();
    assert_eq!(body["msgtype"], "markdown");
    let content = body["markdown"]["content"].as_str().unwrap();
    assert!(content.starts_with("**New intent**: "), "{content}");
    assert!(
        !content.contains("[x](http://evil)"),
        "contact data is escaped: {content}"
    );

    // 45009 means "retry later": the row waits for its backoff, then goes through.
    nudge.settle();
    assert_eq!(nudge.status()["outbox"]["pending"], 1, "waiting for its retry");
    nudge.advance("2m");
    server.wait_for_requests(2);
    nudge.settle();
    let status = nudge.status();
    assert_eq!(
        status["outbox"]["sent"].as_i64().unwrap(),
        2,
        "the proposal email and the WeCom alert: {status}"
    );
    nudge.stop();
}

#[test]
fn a_plugin_installed_while_running_is_swapped_in_and_a_broken_one_keeps_the_previous() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.start();
    nudge.install_plugin(
        "hostile",
        &hostile_wasm(),
        &manifest("tests/hostile-plugin/plugin.toml"),
    );
    nudge.wait_for_log("plugins reloaded");
    assert!(nudge.log().contains("plugin loaded plugin=hostile"), "{}", nudge.log());

    // A broken build replaces the file: reported, and the loaded version stays.
    std::fs::write(nudge.path("plugins.d/hostile/plugin.wasm"), b"\0asm garbage").unwrap();
    nudge.wait_for_log("rejected, version 0.1.0 keeps serving");
    nudge.stop();
}

#[test]
fn sms_goes_out_over_http_only_to_allowed_public_hosts_and_never_follows_redirects() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let server = HttpServer::start(
        tmp.path(),
        r#"[{"status": 302, "body": ""}, {"status": 201, "body": "{\"sid\": \"SM1\"}"}]"#,
    );
    let settings = format!(
        "[plugin.sms]\nmode = \"free_text\"\nendpoint = \"http://127.0.0.1:{port}/sms\"\nauth_header = \"Bearer ${{secret:SMS_TOKEN}}\"\n\
         [http]\nprivate_hosts = {{ sms = [\"127.0.0.1:{port}\"] }}\n",
        port = server.port
    );
    let mut nudge = Nudge::with_config(&smtp, MONDAY_9AM, &settings);
    nudge.env.push(("SMS_TOKEN".into(), "tok-9".into()));
    nudge.write_workflow(
        "templates/sms.toml",
        "[shipped]\nchannel = \"sms\"\ntext = \"{{ contact.name }}, your samples shipped\"\n",
    );
    nudge.write_workflow(
        "sms-on-sample.toml",
        "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"sample\"\n\n[[steps]]\nsend = { channel = \"sms\", template = \"shipped\" }\n",
    );
    nudge.start();
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Redirected",
        "--phone",
        "+86 138 0000 0001",
        "--stage",
        "intent",
    ]);
    nudge.cli(&["stage", "set", "1", "sample"]);
    server.wait_for_requests(1);
    nudge.settle();
    // Delivery logs an attempt after its record commits, which `settle` may see first.
    nudge.wait_for_log("redirects are not followed");
    assert_eq!(nudge.status()["outbox"]["failed"], 1);

    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Li Lei",
        "--phone",
        "+8613800000002",
        "--stage",
        "intent",
    ]);
    nudge.cli(&["stage", "set", "2", "sample"]);
    let requests = server.wait_for_requests(2);
    nudge.settle();
    let sent = &server.request_log()[1];
    assert_eq!(sent["path"], "/sms");
    assert_eq!(
        sent["headers"]["authorization"], "Bearer tok-9",
        "the host filled in the secret"
    );
    assert_eq!(
        requests[1].1, "To=%2B8613800000002&Body=Li+Lei%2C+your+samples+shipped+Reply+STOP+to+opt+out",
        "free text with the opt-out appended, form-encoded"
    );
    assert_eq!(nudge.status()["outbox"]["sent"], 1);
    nudge.stop();

    // The same provider on a loopback address, allowed but not granted as a private host: refused.
    let config = std::fs::read_to_string(nudge.path("nudge.toml")).unwrap();
    std::fs::write(
        nudge.path("nudge.toml"),
        config.replace("private_hosts = {", "allow_hosts = {"),
    )
    .unwrap();
    nudge.start();
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Wu",
        "--phone",
        "+8613800000003",
        "--stage",
        "intent",
    ]);
    nudge.cli(&["stage", "set", "3", "sample"]);
    nudge.settle();
    nudge.wait_for_log("a private address; refused");
    assert_eq!(server.requests().len(), 2, "nothing reached the private address");
    nudge.stop();
}

/// A plugin author's loop: `nudge plugin test` on the folder being worked on
/// tries that plugin alone (a broken folder beside it is not its business),
/// shows the requests it would send, and what its `interpret_response` makes of
/// each provider answer the fixture lists.
#[test]
fn plugin_test_tries_only_the_plugin_asked_for_and_reads_provider_answers() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_9AM);
    nudge.install_plugin("wecom", &wecom_wasm(), &manifest("plugins/wecom/plugin.toml"));
    let broken = nudge.path("plugins.d/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("plugin.toml"),
        "id = \"broken\"\nversion = \"0.1.0\"\ninterface = \"0.2.0\"\n[limits]\nmemory_mb = 4096\n",
    )
    .unwrap();
    std::fs::write(broken.join("plugin.wasm"), b"not wasm").unwrap();
    let fixture = nudge.path("wecom.json");
    std::fs::write(
        &fixture,
        serde_json::json!({
            "template": {"text": "Call {{ contact.name }}"},
            "context": {"contact": {"name": "Li"}},
            "config": {"key": "${secret:TEAM_ROBOT}"},
            "recipient": "",
            "responses": [
                {"status": 200, "headers": {"content-type": "application/json"}, "body": {"errcode": 0, "errmsg": "ok"}},
                {"status": 200, "body": "{\"errcode\":45009,\"errmsg\":\"api freq out of limit\"}"},
                {"status": 200, "body": {"errcode": 93000, "errmsg": "invalid webhook url"}},
                {"status": 503, "body": "busy"}
            ]
        })
        .to_string(),
    )
    .unwrap();

    for plugin in [nudge.path("plugins.d/wecom").to_str().unwrap(), "wecom"] {
        let (ok, stdout, stderr) = nudge.try_cli(&["plugin", "test", plugin, fixture.to_str().unwrap()]);
        assert!(ok, "plugin test {plugin} failed:\n{stdout}{stderr}");
        assert!(
            stdout.contains("\"text\": \"Call Li\""),
            "the rendered message: {stdout}"
        );
        assert!(
            stdout.contains("POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=${secret:TEAM_ROBOT}"),
            "the request, with the secret left for the host to fill: {stdout}"
        );
        assert!(
            stdout.contains("HTTP 200 {\"errcode\":0,\"errmsg\":\"ok\"} -> sent: ok"),
            "{stdout}"
        );
        assert!(
            stdout.contains("-> retry later: errcode 45009: api freq out of limit"),
            "{stdout}"
        );
        assert!(
            stdout.contains("-> failed: errcode 93000: invalid webhook url"),
            "{stdout}"
        );
        assert!(stdout.contains("HTTP 503 busy -> retry later: HTTP 503"), "{stdout}");
        assert!(
            !stderr.contains("broken"),
            "the broken folder was not even read: {stderr}"
        );
    }

    // The broken folder itself is still reported when it is the one asked for.
    let (ok, _, stderr) = nudge.try_cli(&["plugin", "test", "broken", fixture.to_str().unwrap()]);
    assert!(!ok && stderr.contains("limits.memory_mb = 4096"), "{stderr}");
    // A fixture with a typo says where.
    std::fs::write(&fixture, "{\"template\": {\"text\": \"hi\"},\n \"respnses\": []}").unwrap();
    let (ok, _, stderr) = nudge.try_cli(&["plugin", "test", "wecom", fixture.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("unknown field `respnses`") && stderr.contains("line 2 column"),
        "{stderr}"
    );
}

/// An author runs `nudge plugin test` in their plugin's crate, with no nudge.toml:
/// nothing is written into that folder, the one plugin is compiled once into the
/// user's cache (no built-in plugin is compiled for it), and the next run reuses it.
#[test]
fn plugin_test_outside_an_installation_writes_only_to_the_user_cache() {
    let tmp = scratch();
    let work = tmp.path().join("my-channel");
    let folder = work.join("plugins.d").join("wecom");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(wecom_wasm(), folder.join("plugin.wasm")).unwrap();
    std::fs::copy(manifest("plugins/wecom/plugin.toml"), folder.join("plugin.toml")).unwrap();
    std::fs::write(
        work.join("fixture.json"),
        r#"{"template": {"text": "hi"}, "config": {"key": "${secret:K}"}}"#,
    )
    .unwrap();
    let cache_home = tmp.path().join("cache");
    let run = || {
        let out = std::process::Command::new(common::BIN)
            .current_dir(&work)
            .env("XDG_CACHE_HOME", &cache_home)
            .env("NUDGE_LOG", "warn")
            .args(["plugin", "test", "plugins.d/wecom", "fixture.json"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && text.contains("\"text\": \"hi\""), "{text}");
    };
    let compiled = || -> Vec<(PathBuf, std::time::SystemTime)> {
        let dir = cache_home.join("nudge").join("plugin-cache");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .map(|p| {
                let modified = std::fs::metadata(&p).unwrap().modified().unwrap();
                (p, modified)
            })
            .collect();
        files.sort();
        files
    };

    run();
    let mut left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["fixture.json", "plugins.d"],
        "nothing new in the author's folder"
    );
    let first = compiled();
    assert_eq!(first.len(), 1, "only the plugin under test was compiled: {first:?}");
    assert!(first[0].0.extension().is_some_and(|e| e == "cwasm"), "{first:?}");
    run();
    assert_eq!(compiled(), first, "the second run reused the compiled plugin");
}
