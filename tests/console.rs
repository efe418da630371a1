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
    assert!(
        overview.contains("Counted as of 09:00:00 UTC"),
        "status's counts, read in the background, say when on the daemon's (virtual) clock: {overview}"
    );
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

/// Monday 10:00 UTC: outside the marketing quiet hours of the shipped sending.toml.
const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";

/// An A/B test of 20 contacts whose mail names an image on `image_host`.
fn daemon_with_an_ab_test(smtp: &SmtpServer, image_host: u16) -> Nudge {
    let mut nudge = Nudge::new(smtp, MONDAY_10AM);
    nudge.write_workflow(
        "templates/ab.toml",
        &format!(
            "[ab_offer]\nchannel = \"email\"\nsubject = \"template subject\"\n\
             text = \"Plain words for {{{{ contact.name }}}}\"\n\
             html = '<p>Rendered words for {{{{ contact.name }}}}</p><img src=\"http://127.0.0.1:{image_host}/logo.png\" alt=\"logo\">\
             <p><a href=\"https://shop.example/ab\">the offer</a></p>'\n"
        ),
    );
    nudge.write_workflow(
        "ab-test.toml",
        "category = \"marketing\"\nwhen = 'contact.source == \"ab\"'\n[trigger]\non = \"segment\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"ab_offer\" }\n\
         [[steps.variants]]\nname = \"short\"\nweight = 50\nsubject = \"A: {{ contact.name }}\"\n\
         [[steps.variants]]\nname = \"late\"\nweight = 50\nsubject = \"B: {{ contact.name }}\"\n",
    );
    let csv: String = std::iter::once("name,email,source\n".to_string())
        .chain((1..=20).map(|i| format!("AB {i},ab{i}@example.com,ab\n")))
        .collect();
    std::fs::write(nudge.path("ab.csv"), csv).unwrap();
    nudge.cli(&["contact", "import", nudge.path("ab.csv").to_str().unwrap()]);
    nudge.start();
    wait_until(
        || Some(()).filter(|_| smtp.mails().len() >= 20),
        || format!("{} of 20 mails: {}", smtp.mails().len(), nudge.log()),
    );
    nudge.settle();
    nudge
}

/// The daemon's tracking links of `kind` (`c` click, `o` open) in a mail's HTML.
fn tracked(html: &str, kind: &str) -> String {
    let marker = format!("/t/{kind}/");
    let at = html.find(&marker).unwrap_or_else(|| panic!("no {marker} in {html}"));
    let token: String = html[at + marker.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("{marker}{token}")
}

/// A web server that answers every request with an empty 200 and counts the
/// connections made to it: a remote image's host.
fn image_host() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.read(&mut [0; 4096]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, asked)
}

/// The head of a GET of `path` with the console session's cookie.
fn head_with_cookie(nudge: &Nudge, path: &str, cookie: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", nudge.api_port)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    text.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase()
}

#[test]
fn the_workflows_page_counts_each_variant_and_a_message_renders_without_fetching_anything() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let (image_port, image_requests) = image_host();
    let nudge = daemon_with_an_ab_test(&smtp, image_port);
    let mails = smtp.mails();
    let (a, b): (Vec<_>, Vec<_>) = mails.iter().partition(|m| m.subject.starts_with("A: "));
    assert!(a.len() >= 2 && b.len() >= 4, "{} A, {} B", a.len(), b.len());
    // Two A mails clicked (the first twice), three B mails opened, a fourth replied to.
    for (i, mail) in a.iter().take(2).enumerate() {
        for _ in 0..=usize::from(i == 0) {
            assert_eq!(nudge.get_raw(&tracked(&mail.html, "c")).0, 302);
        }
    }
    for mail in b.iter().take(3) {
        assert_eq!(nudge.get_raw(&tracked(&mail.html, "o")).0, 200);
    }
    let (status, body) = nudge.http(
        "POST",
        "/replies",
        Some(&json!({ "message_id": b[3].message_id }).to_string()),
    );
    assert_eq!(status, 201, "{body}");
    nudge.settle();

    let browser = Browser::open(&nudge);
    browser.log_in(&nudge.token);
    browser.goto("/console/workflows");
    browser.wait_for_text("Messages by workflow and A/B variant");
    let rows = browser.run(
        "return [...document.querySelectorAll('#engagement tr[data-workflow=\"ab-test\"]')]\
         .map(r => [r.dataset.variant, ...[...r.cells].slice(1, 6).map(c => Number(c.textContent))]);",
    );
    let (na, nb) = (a.len(), b.len());
    assert_eq!(
        rows,
        json!([
            ["", 20, 20, 5, 2, 1],
            ["late", nb, nb, 3, 0, 1],
            ["short", na, na, 2, 2, 0]
        ]),
        "sent, delivered, opened, clicked, replied: the whole workflow, then each variant\n{}",
        browser.text()
    );

    // A message as its recipient sees it: the HTML rendered in a sandbox that
    // fetches nothing (the remote image, the open pixel), and the plain text.
    let opens = "SELECT COUNT(*) FROM engagement";
    let recorded = nudge.query(opens);
    let shown = b.last().unwrap();
    let id = nudge.query(&format!(
        "SELECT id FROM outbox WHERE message_id = '{}'",
        shown.message_id
    ))[0][0]
        .clone();
    browser.goto(&format!("/console/outbox/{id}"));
    let page = browser.wait_for_text("Plain-text part");
    assert!(page.contains("Plain words for AB "), "{page}");
    assert_eq!(
        browser.run("return document.querySelector('iframe.mail-html').getAttribute('sandbox');"),
        json!(""),
        "the frame is sandboxed with no exception"
    );
    let framed = browser
        .rt
        .block_on(async {
            browser.client.enter_frame(0).await?;
            let text = browser.client.find(Locator::Css("body")).await?.text().await;
            browser.client.enter_parent_frame().await?;
            text
        })
        .unwrap();
    assert!(framed.contains("Rendered words for AB "), "{framed}");
    assert_eq!(
        image_requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the remote image was fetched"
    );
    assert_eq!(nudge.query(opens), recorded, "viewing the message counted as an open");
    let cookie = browser
        .rt
        .block_on(browser.client.get_named_cookie("nudge_console"))
        .unwrap();
    let head = head_with_cookie(
        &nudge,
        &format!("/console/outbox/{id}/html"),
        &format!("nudge_console={}", cookie.value()),
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'") && head.contains("; sandbox"),
        "{head}"
    );
    browser.close();
}
