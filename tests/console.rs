//! The web console (issue 34) in a real browser: Debian's chromium, headless,
//! driven over WebDriver (chromedriver and fantoccini) against the real daemon
//! and a real SMTP server on the virtual clock. `.ci/run` installs the browser;
//! without it these tests fail, they never skip.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use common::{Nudge, SmtpServer, scratch, wait_until};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const MONDAY_9AM: &str = "2026-11-23T09:00:00Z";
const READ_ONLY: &str = "look-but-do-not-touch";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}): the console's tests need Debian's chromium and \
                     chromium-driver (`apt-get install chromium chromium-driver`, as .ci/run does)"
                )
            });
        wait_until(
            || TcpStream::connect(("127.0.0.1", port)).ok(),
            || "chromedriver never listened".into(),
        );
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless chromium on the console of `nudge`, with blocking calls.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Client,
    base: String,
    _driver: Driver,
}

impl Browser {
    fn open(nudge: &Nudge) -> Browser {
        let driver = Driver::start();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000"],
            }),
        );
        let webdriver = format!("http://127.0.0.1:{}", driver.port);
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&webdriver),
            )
            .expect("chromium starts under chromedriver");
        Browser {
            rt,
            client,
            base: format!("http://127.0.0.1:{}", nudge.api_port),
            _driver: driver,
        }
    }

    fn goto(&self, path: &str) {
        self.rt
            .block_on(self.client.goto(&format!("{}{path}", self.base)))
            .unwrap();
    }

    fn path(&self) -> String {
        self.rt.block_on(self.client.current_url()).unwrap().path().to_string()
    }

    /// The page's text; read again when htmx swaps the body while it is read.
    fn text(&self) -> String {
        wait_until(
            || {
                self.rt
                    .block_on(async { self.client.find(Locator::Css("body")).await?.text().await })
                    .ok()
            },
            || "the page's text could never be read".into(),
        )
    }

    /// Waits until the page's text contains `needle`.
    fn wait_for_text(&self, needle: &str) -> String {
        wait_until(
            || Some(self.text()).filter(|t| t.contains(needle)),
            || format!("the page never said {needle:?}; it says:\n{}", self.text()),
        )
    }

    fn fill(&self, css: &str, value: &str) {
        self.rt
            .block_on(async {
                let field = self.client.find(Locator::Css(css)).await?;
                field.clear().await?;
                field.send_keys(value).await
            })
            .unwrap();
    }

    fn click(&self, css: &str) {
        self.rt
            .block_on(async { self.client.find(Locator::Css(css)).await?.click().await })
            .unwrap();
    }

    fn count(&self, css: &str) -> usize {
        self.rt.block_on(self.client.find_all(Locator::Css(css))).unwrap().len()
    }

    /// Runs `script` in the page (a promise it returns is awaited).
    fn run(&self, script: &str) -> Value {
        self.rt.block_on(self.client.execute(script, vec![])).unwrap()
    }

    /// The status of a form POST the page makes with its session cookie.
    fn post_status(&self, path: &str, form: Value) -> Value {
        let script = format!(
            "return fetch({path:?}, {{method: 'POST', body: new URLSearchParams({form}), redirect: 'manual'}})\
             .then(r => r.status);"
        );
        self.run(&script)
    }

    fn log_in(&self, token: &str) {
        self.goto("/console");
        assert_eq!(
            self.path(),
            "/console/login",
            "a visitor without a session is sent to the login form"
        );
        self.fill("input[name=token]", token);
        self.click("button[type=submit]");
        self.wait_for_text("session ");
        assert_eq!(self.path(), "/console");
    }

    fn close(self) {
        let Browser { rt, client, .. } = self;
        rt.block_on(client.close()).unwrap();
    }
}

/// A daemon whose first message dies: one transient refusal and no retries left.
fn daemon_with_a_dead_letter(smtp: &SmtpServer) -> (Nudge, String) {
    smtp.script_faults(json!({ "data": ["451 4.3.0 local error"] }));
    let extra = "read_only_token_env = \"NUDGE_TEST_READ_ONLY\"\n[delivery]\nmax_attempts = 1";
    let mut nudge = Nudge::with_config(smtp, MONDAY_9AM, extra);
    nudge.env.push(("NUDGE_TEST_READ_ONLY".into(), READ_ONLY.into()));
    nudge.start();
    let to = "kong@example.com".to_string();
    nudge.cli(&["contact", "add", "--name", "Kong", "--email", &to]);
    nudge.cli(&["inquiry", "add", &to, "--message", "price list?"]);
    wait_until(
        || {
            let rows = nudge.query("SELECT status FROM outbox");
            (rows == json!([["dead"]])).then_some(())
        },
        || {
            format!(
                "no dead letter: {}",
                nudge.query("SELECT status, last_error FROM outbox")
            )
        },
    );
    (nudge, to)
}

#[test]
fn an_admin_logs_in_retries_a_dead_letter_and_suppresses_an_address() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let (nudge, to) = daemon_with_a_dead_letter(&smtp);
    let browser = Browser::open(&nudge);

    browser.goto("/console/login");
    browser.fill("input[name=token]", "not-the-token");
    browser.click("button[type=submit]");
    browser.wait_for_text("That token opens nothing here.");
    browser.log_in(&nudge.token);
    assert_eq!(
        browser.run("return document.cookie;"),
        json!(""),
        "the session cookie is HttpOnly"
    );
    let overview = browser.wait_for_text("Given up");
    assert!(overview.contains("admin · session"), "{overview}");
    assert!(
        overview.contains("inquiry-sla"),
        "the workflows in force are listed: {overview}"
    );
    assert!(overview.contains("fired since start"), "timer lateness: {overview}");
    let png = browser.rt.block_on(browser.client.screenshot()).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    // README's picture is refreshed on request only, so a test run leaves the tree clean.
    let shot = match std::env::var_os("NUDGE_CONSOLE_SCREENSHOT") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::temp_dir().join(format!("nudge-console-{}.png", std::process::id())),
    };
    std::fs::write(&shot, png).unwrap();

    // The dead letter, grouped by its error, and retried from its group.
    browser.goto("/console/dead");
    browser.wait_for_text("4.3.0 local error");
    browser.click("button.retry");
    browser.wait_for_text("1 message(s) queued again");
    wait_until(
        || (!smtp.mails_to(&to).is_empty()).then_some(()),
        || format!("the retried message never arrived: {}", nudge.log()),
    );
    let log = nudge.wait_for_log("console action");
    assert!(
        log.contains("role=Admin"),
        "actions are logged with who did them: {log}"
    );

    // The message's attempts and the server's replies.
    let id = nudge.query("SELECT id FROM outbox")[0][0].clone();
    browser.goto(&format!("/console/outbox/{id}"));
    let page = browser.text();
    assert!(page.contains("Attempts"), "{page}\n{}", nudge.log());
    assert!(page.contains("4.3.0 local error"), "{page}");

    // The outbox filtered by recipient domain.
    browser.goto("/console/outbox?domain=example.com&status=sent");
    assert!(browser.wait_for_text("kong@example.com").contains("sent"));
    browser.goto("/console/outbox?domain=elsewhere.org");
    browser.wait_for_text("no message matches");
    // ... and by the workflow that queued it, stored on the message's row.
    let queued_by = "SELECT r.workflow FROM outbox o JOIN runs r ON r.id = o.run_id";
    let workflow = nudge.query(queued_by)[0][0].as_str().unwrap_or_default().to_string();
    assert!(!workflow.is_empty(), "{}", nudge.query(queued_by));
    browser.goto(&format!("/console/outbox?workflow={workflow}"));
    browser.wait_for_text("kong@example.com");
    browser.goto("/console/outbox?workflow=no-such-workflow");
    browser.wait_for_text("no message matches");

    // The contact's page, with its timeline as `nudge explain` tells it.
    browser.goto("/console/contacts?q=kong%40example.com");
    let page = browser.wait_for_text("Timeline");
    assert!(page.contains("inquiry-received"), "{page}");

    // The workflows, with their triggers and runs by state.
    browser.goto("/console/workflows");
    let page = browser.wait_for_text("Runs by state");
    assert!(page.contains("inquiry_received"), "{page}");

    // The report, its period as form fields.
    browser.goto("/console/reports?from=2026-11-01&to=2026-11-30");
    browser.wait_for_text("Reports");
    assert_eq!(browser.count("iframe.report"), 1, "{}", browser.text());

    // A suppression added by hand, with its reason.
    browser.goto("/console/suppressions");
    browser.fill("#add-suppression input[name=address]", "gone@example.com");
    browser.fill("#add-suppression input[name=detail]", "asked by phone");
    browser.click("#add-suppression button[type=submit]");
    let page = browser.wait_for_text("gone@example.com");
    assert!(page.contains("asked by phone"), "{page}");
    assert!(nudge.cli(&["suppress", "list"]).contains("gone@example.com"));

    // A refused change to the workflows folder, where it went wrong, beside the set that still runs.
    nudge.write_workflow("broken.toml", "name = \"broken\"\n[trigger\n");
    nudge.wait_for_log("workflow change rejected");
    browser.goto("/console");
    let page = browser.wait_for_text("was refused");
    assert!(page.contains("broken.toml:2:"), "{page}");
    browser.close();
}

#[test]
fn forms_without_the_sessions_csrf_token_and_read_only_sessions_are_refused() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let (nudge, _) = daemon_with_a_dead_letter(&smtp);
    let browser = Browser::open(&nudge);
    browser.log_in(&nudge.token);
    let suppress = |csrf: Option<&str>| {
        let mut form = json!({ "address": "forged@example.com" });
        if let Some(csrf) = csrf {
            form["csrf"] = json!(csrf);
        }
        browser.post_status("/console/suppressions", form)
    };
    assert_eq!(suppress(None), json!(403), "no CSRF token");
    assert_eq!(suppress(Some("forged")), json!(403), "a wrong CSRF token");
    // The refusal as a person sees it: a page saying why.
    browser.goto("/console/suppressions");
    browser.run("document.querySelector('#add-suppression input[name=csrf]').value = 'forged';");
    browser.fill("#add-suppression input[name=address]", "forged@example.com");
    browser.run("document.querySelector('#add-suppression').submit();");
    browser.wait_for_text("CSRF token does not match");
    assert!(!nudge.cli(&["suppress", "list"]).contains("forged@example.com"));

    // The read-only token sees the pages, without their actions, and cannot act.
    browser.goto("/console");
    browser.click("header form button");
    browser.wait_for_text("Token");
    browser.log_in(READ_ONLY);
    browser.goto("/console/dead");
    let page = browser.wait_for_text("4.3.0 local error");
    assert!(page.contains("Read-only session"), "{page}");
    assert_eq!(
        browser.count("button.retry"),
        0,
        "no retry button for a read-only session"
    );
    let csrf = browser.run("return document.querySelector('meta[name=csrf]').content;");
    let status = browser.post_status(
        "/console/dead/retry",
        json!({ "csrf": csrf, "status": "dead", "error": "transient error (451): 4.3.0 local error" }),
    );
    assert_eq!(
        status,
        json!(403),
        "a read-only session with its own CSRF token still cannot act"
    );
    assert_eq!(nudge.query("SELECT status FROM outbox"), json!([["dead"]]));
    browser.run(&format!(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/console/suppressions';\
         for (const [k, v] of Object.entries({{csrf: {csrf}, address: 'ro@example.com'}})) {{\
           const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }}\
         document.body.appendChild(f); f.submit();"
    ));
    browser.wait_for_text("logged in with the read-only token");
    nudge.wait_for_log("console: refused, read-only");
    browser.close();
}
