//! The test harness: a real `nudge` binary on a real SQLite file in a temp
//! folder, a real aiosmtpd server, the real wasm email plugin, and the virtual
//! clock so that days pass in milliseconds. Waits poll for an outcome with a
//! generous deadline; no test asserts on elapsed time.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod postfix;
pub mod postgres;

pub const BIN: &str = env!("CARGO_BIN_EXE_nudge");
/// How long to wait for something that should happen within a second or two: a guard
/// against hangs, generous because a loaded 2-core machine runs many daemons at once.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Polls `probe` until it gives a value; panics with `describe()` after PATIENCE.
pub fn wait_until<T>(mut probe: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{}", describe());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A test server child process that prints "PORT <n>" once listening; killed when dropped.
struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    fn spawn(mut command: Command) -> ServerProcess {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok());
        let port = port.unwrap_or_else(|| panic!("test server said {line:?}"));
        ServerProcess { child, port }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python that has aiosmtpd and dkimpy (with pynacl for Ed25519): $NUDGE_TEST_PYTHON, or a venv under
/// target/ created on first use (the machine needs python3 and access to PyPI once).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(p) = std::env::var("NUDGE_TEST_PYTHON") {
            return PathBuf::from(p);
        }
        let venv = repo_root().join("target").join("test-venv");
        let python = venv.join("bin").join("python");
        let has_aiosmtpd = |p: &Path| {
            Command::new(p)
                .args(["-c", "import aiosmtpd, dkim, nacl"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has_aiosmtpd(&python) {
            // Several test binaries may get here at once: build aside, then rename into place.
            let tmp = venv.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&tmp)
                .status()
                .is_ok_and(|s| s.success())
                && Command::new(tmp.join("bin/pip"))
                    .args(["install", "-q", "aiosmtpd", "dkimpy", "pynacl"])
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(
                ok,
                "could not create a Python venv with aiosmtpd, dkimpy and pynacl at {}; run .ci/run or set NUDGE_TEST_PYTHON",
                tmp.display()
            );
            if std::fs::rename(&tmp, &venv).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            assert!(has_aiosmtpd(&python), "no aiosmtpd, dkimpy or pynacl in {}", venv.display());
        }
        python
    })
}

/// A message as the SMTP server recorded it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub message_id: String,
    pub text: String,
    /// The HTML part, if the message has one.
    pub html: String,
    pub list_unsubscribe: String,
    pub list_unsubscribe_post: String,
    /// The client sent the envelope without waiting for each reply.
    pub pipelined: bool,
    /// The message as received, byte for byte.
    pub raw: Vec<u8>,
}

/// A real SMTP server (aiosmtpd), stopped when dropped.
pub struct SmtpServer {
    process: Option<ServerProcess>,
    pub port: u16,
    log: PathBuf,
    faults: PathBuf,
    pipelining: bool,
}

impl SmtpServer {
    /// A server that offers PIPELINING, as real ones do.
    pub fn start(dir: &Path) -> SmtpServer {
        Self::start_with(dir, true)
    }

    /// A server that does not offer PIPELINING: commands must come one at a time.
    pub fn start_without_pipelining(dir: &Path) -> SmtpServer {
        Self::start_with(dir, false)
    }

    fn start_with(dir: &Path, pipelining: bool) -> SmtpServer {
        let log = dir.join("smtp.jsonl");
        let faults = dir.join("smtp-faults.json");
        let process = Self::spawn(&log, &faults, 0, pipelining);
        SmtpServer {
            port: process.port,
            process: Some(process),
            log,
            faults,
            pipelining,
        }
    }

    fn spawn(log: &Path, faults: &Path, port: u16, pipelining: bool) -> ServerProcess {
        let mut command = Command::new(python());
        command
            .arg(repo_root().join("tests/smtp_server.py"))
            .arg("--log")
            .arg(log)
            .arg("--faults")
            .arg(faults)
            .arg("--port")
            .arg(port.to_string());
        if !pipelining {
            command.arg("--no-pipelining");
        }
        ServerProcess::spawn(command)
    }

    /// Scripts the next replies per stage (see smtp_server.py), e.g.
    /// `{"rcpt": ["450 4.2.1 busy"], "data": ["hang-after-accept"]}`.
    pub fn script_faults(&self, faults: Value) {
        let tmp = self.faults.with_extension("tmp");
        std::fs::write(&tmp, faults.to_string()).unwrap();
        std::fs::rename(&tmp, &self.faults).unwrap();
    }

    /// Faults not yet consumed, per stage.
    pub fn faults_left(&self) -> Value {
        std::fs::read_to_string(&self.faults)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// The server goes away (connections are refused) until `restart`.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Back on the same port, with the same log.
    pub fn restart(&mut self) {
        self.process = Some(Self::spawn(&self.log, &self.faults, self.port, self.pipelining));
    }

    /// Every message received so far.
    pub fn mails(&self) -> Vec<Mail> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Mail {
                to: v["rcpt_tos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
                subject: v["subject"].as_str().unwrap_or("").to_string(),
                pipelined: v["pipelined"].as_bool().unwrap(),
                message_id: v["message_id"].as_str().unwrap_or("").to_string(),
                text: v["text"].as_str().unwrap_or("").to_string(),
                html: v["html"].as_str().unwrap_or("").to_string(),
                list_unsubscribe: v["list_unsubscribe"].as_str().unwrap_or("").to_string(),
                list_unsubscribe_post: v["list_unsubscribe_post"].as_str().unwrap_or("").to_string(),
                raw: base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    v["raw"].as_str().unwrap_or(""),
                )
                .unwrap(),
            })
            .collect()
    }

    /// Messages to `address`.
    pub fn mails_to(&self, address: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == address))
            .collect()
    }

    /// Waits until a message to `address` whose subject contains `subject` arrives.
    pub fn wait_for(&self, address: &str, subject: &str) -> Mail {
        wait_until(
            || self.mails_to(address).into_iter().find(|m| m.subject.contains(subject)),
            || format!("no mail to {address} with subject {subject:?}; got {:#?}", self.mails()),
        )
    }
}

/// One nudge installation in a temp folder: config, database, workflows copy.
pub struct Nudge {
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    daemon: Option<Child>,
    pub token: String,
    /// Extra environment for every nudge process (e.g. plugin secrets).
    pub env: Vec<(String, String)>,
    /// The SQLite file.
    pub database: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Nudge {
    /// A fresh installation with the shipped workflows, virtual time at `start`,
    /// sending to `smtp`.
    pub fn new(smtp: &SmtpServer, start: &str) -> Nudge {
        Nudge::with_config(smtp, start, "")
    }

    /// As `new`, with more settings appended to nudge.toml.
    pub fn with_config(smtp: &SmtpServer, start: &str, extra: &str) -> Nudge {
        Nudge::with_database(smtp, start, None, extra)
    }

    /// As `with_config`, with the database at `database` (by default `nudge.db`
    /// in the installation's folder).
    pub fn with_database(smtp: &SmtpServer, start: &str, database: Option<&Path>, extra: &str) -> Nudge {
        Nudge::install(smtp.port, start, database, extra)
    }

    /// As `with_config`, relaying through the SMTP server on `port` (a Postfix).
    pub fn relaying_to(port: u16, start: &str, extra: &str) -> Nudge {
        Nudge::install(port, start, None, extra)
    }

    fn install(smtp_port: u16, start: &str, database: Option<&Path>, extra: &str) -> Nudge {
        let dir = tempfile::tempdir().unwrap();
        let database = database.map_or_else(|| dir.path().join("nudge.db"), Path::to_path_buf);
        copy_dir(&repo_root().join("workflows"), &dir.path().join("workflows"));
        let api_port = free_port();
        std::fs::write(
            dir.path().join("nudge.toml"),
            format!(
                "database = {database:?}\nworkflows = \"workflows\"\nclock = \"virtual\"\n\
                 [email]\nfrom = \"Sales <sales@nudge.test>\"\n\
                 [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 10\n\
                 [api]\nbind = \"127.0.0.1:{api_port}\"\ntoken_env = \"NUDGE_TEST_TOKEN\"\n{extra}\n",
                smtp_port
            ),
        )
        .unwrap();
        let nudge = Nudge {
            dir,
            api_port,
            daemon: None,
            token: "test-token".into(),
            env: Vec::new(),
            database,
        };
        nudge.cli(&["clock", "--set", start]);
        nudge
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(self.path("nudge.toml"))
            .env("NUDGE_TEST_TOKEN", &self.token)
            .env("NUDGE_LOG", "info,sqlx=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "nudge {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a CLI command; returns (success, stdout, stderr).
    pub fn try_cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// As `try_cli`, for a command that might hang: killed after PATIENCE, with a panic saying `what`.
    pub fn try_cli_or_hang(&self, args: &[&str], what: &str) -> (bool, String, String) {
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nudge {args:?} hung: {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// As `try_cli`, also giving the command's peak resident memory in KiB
    /// (measured by Python's `getrusage` on the child it waited for).
    pub fn try_cli_peak_memory(&self, args: &[&str]) -> (bool, String, u64) {
        let script = "import resource, subprocess, sys\n\
                      p = subprocess.run(sys.argv[1:], capture_output=True)\n\
                      sys.stdout.buffer.write(p.stdout + p.stderr)\n\
                      print('\\nPEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
                      sys.exit(p.returncode)";
        let out = Command::new(python())
            .args(["-c", script, BIN, "--config"])
            .arg(self.path("nudge.toml"))
            .args(args)
            .env("NUDGE_TEST_TOKEN", &self.token)
            .env("NUDGE_LOG", "info,sqlx=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (output, peak) = text.rsplit_once("PEAK_RSS_KIB ").expect("the wrapper reports the peak");
        (out.status.success(), output.to_string(), peak.trim().parse().unwrap())
    }

    /// Starts the daemon and waits until its API answers.
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        let child = self
            .command()
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while self.http("GET", "/health", None).0 != 200 {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "daemon did not come up:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the daemon with SIGTERM and waits for it to exit cleanly.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "daemon exited with {status}:\n{}", self.log());
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// Waits until the daemon's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_until(
            || Some(self.log()).filter(|l| l.contains(needle)),
            || format!("log never said {needle:?}:\n{}", self.log()),
        )
    }

    /// `nudge status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.cli(&["status", "--json"])).unwrap()
    }

    /// Waits until the daemon has nothing left to do now: every event taken,
    /// no run ready, nothing in the outbox due.
    pub fn settle(&self) {
        let idle = |s: &Value| {
            s["events_unprocessed"] == 0
                && s["runs"].get("ready").is_none()
                && s["outbox_due"] == 0
                && s["timers"]["due"] == 0
                && s["segments_running"] == 0
        };
        wait_until(
            || Some(self.status()).filter(idle).map(|_| ()),
            || format!("daemon never settled: {:#}\n{}", self.status(), self.log()),
        )
    }

    /// Runs SQL on the daemon's database from outside (Python's sqlite3): what a
    /// test needs to make the database itself misbehave.
    pub fn sql(&self, statements: &str) {
        self.sqlite("c.executescript(sys.argv[2])\nc.close()", statements);
    }

    /// The rows of a query on the daemon's database (Python's sqlite3), as JSON arrays.
    pub fn query(&self, sql: &str) -> Value {
        let out = self.sqlite("print(json.dumps(c.execute(sys.argv[2]).fetchall()))", sql);
        serde_json::from_slice(&out).unwrap()
    }

    /// Runs a Python script with `c`, a connection to the daemon's database, and `sql`
    /// as `sys.argv[2]`; returns what it printed.
    fn sqlite(&self, script: &str, sql: &str) -> Vec<u8> {
        let script = format!("import json, sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=30)\n{script}");
        let out = Command::new(python())
            .args(["-c", &script])
            .arg(&self.database)
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Moves the virtual clock forward.
    pub fn advance(&self, by: &str) {
        self.cli(&["clock", "--advance", by]);
    }

    /// A raw HTTP/1.1 request to the API; returns (status, JSON body).
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.http_with_token(method, path, body, Some(&self.token.clone()))
    }

    /// A GET without a token, as a mail client makes it: (status, head, body bytes).
    pub fn get_raw(&self, path: &str) -> (u16, String, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.api_port)).expect("the API answers");
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, head, response[split + 4..].to_vec())
    }

    pub fn http_with_token(&self, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> (u16, Value) {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        self.http_with_headers(method, path, body, &auth)
    }

    /// A body-less request with `header` (one line, e.g. `Authorization: bearer x`) as its only extra header.
    pub fn http_with_header(&self, method: &str, path: &str, header: &str) -> (u16, Value) {
        self.http_with_headers(method, path, None, &format!("{header}\r\n"))
    }

    fn http_with_headers(&self, method: &str, path: &str, body: Option<&str>, auth: &str) -> (u16, Value) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.api_port)) else {
            return (0, Value::Null);
        };
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, Value::Null);
        }
        let mut response = String::new();
        if stream.read_to_string(&mut response).is_err() {
            return (0, Value::Null);
        }
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        )
    }
}

impl Nudge {
    /// Installs a plugin into the plugins folder (`plugins.d/<id>/`).
    pub fn install_plugin(&self, id: &str, wasm: &Path, manifest: &Path) {
        let dir = self.path("plugins.d").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(manifest, dir.join("plugin.toml")).unwrap();
        // Written aside and renamed, as an installer should, so the watcher never sees half a file.
        std::fs::copy(wasm, dir.join(".plugin.wasm.tmp")).unwrap();
        std::fs::rename(dir.join(".plugin.wasm.tmp"), dir.join("plugin.wasm")).unwrap();
    }

    /// Writes (or replaces) a file in the workflows folder.
    pub fn write_workflow(&self, rel: &str, content: &str) {
        std::fs::write(self.path("workflows").join(rel), content).unwrap();
    }
}

/// A scripted HTTP server (Python's stdlib) standing in for an SMS provider or WeCom.
pub struct HttpServer {
    process: ServerProcess,
    pub port: u16,
    log: PathBuf,
}

impl HttpServer {
    /// `answers`: JSON list of {"status", "body"}; the last repeats.
    pub fn start(dir: &Path, answers: &str) -> HttpServer {
        let log = dir.join("http.jsonl");
        let mut command = Command::new("python3");
        command
            .arg(repo_root().join("tests/http_server.py"))
            .arg("--log")
            .arg(&log)
            .arg("--answers")
            .arg(answers);
        let process = ServerProcess::spawn(command);
        HttpServer {
            port: process.port,
            process,
            log,
        }
    }

    /// Every request so far: (path, body).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.request_log()
            .iter()
            .map(|v| {
                (
                    v["path"].as_str().unwrap_or("").to_string(),
                    v["body"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Every request so far as recorded: method, path, headers, body.
    pub fn request_log(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// Waits until at least `n` requests arrived.
    pub fn wait_for_requests(&self, n: usize) -> Vec<(String, String)> {
        wait_until(
            || Some(self.requests()).filter(|r| r.len() >= n),
            || format!("only some of {n} requests arrived: {:#?}", self.requests()),
        )
    }
}

/// A real OTLP/HTTP trace receiver (tests/otlp_receiver.py, Python's stdlib):
/// decodes the protobuf the exporter posts and keeps every span.
pub struct OtlpReceiver {
    process: ServerProcess,
    pub port: u16,
    log: PathBuf,
}

impl OtlpReceiver {
    pub fn start(dir: &Path) -> OtlpReceiver {
        let log = dir.join("spans.jsonl");
        let mut command = Command::new("python3");
        command
            .arg(repo_root().join("tests/otlp_receiver.py"))
            .arg("--log")
            .arg(&log);
        let process = ServerProcess::spawn(command);
        OtlpReceiver {
            port: process.port,
            process,
            log,
        }
    }

    /// Every span received so far: name, trace_id, span_id, parent_span_id, attributes, resource.
    pub fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }
}

impl Drop for Nudge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test folder for the SMTP server's log.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
