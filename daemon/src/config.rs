//! Daemon settings from one `nudge.toml`. Every field has a default so that the
//! daemon runs out of the box; secrets come from the environment, never the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::workflow::Diagnostic;

mod bounces;
mod database;
mod dkim;
mod pacing;
mod retention;
mod trace_export;
pub(crate) use bounces::BouncesConfig;
pub(crate) use database::PostgresUrl;
pub(crate) use dkim::DkimDomain;
pub(crate) use pacing::{DomainPace, PacingConfig, WarmupConfig};
pub(crate) use retention::RetentionConfig;
pub(crate) use trace_export::TracingConfig;

/// The whole of `nudge.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// `database` as written: a SQLite file or a PostgreSQL URL (config/database.rs).
    #[serde(rename = "database")]
    database_setting: Option<toml::Spanned<String>>,
    /// SQLite database file.
    #[serde(skip)]
    pub(crate) database: PathBuf,
    /// The PostgreSQL database `database` or `$NUDGE_DATABASE_URL` names, if it does.
    #[serde(skip)]
    pub(crate) postgres: Option<PostgresUrl>,
    /// Folder of workflow files (`*.toml`, `templates/*.toml`, `cadences.toml`).
    pub(crate) workflows: PathBuf,
    /// Folder of installed channel plugins (`<id>/plugin.toml` + `<id>/plugin.wasm`),
    /// beside the built-in email and SMS plugins. Watched: changes apply without a restart.
    pub(crate) plugins: PathBuf,
    /// Where compiled plugins are cached, so a restart does not recompile them.
    pub(crate) plugin_cache: PathBuf,
    /// Each plugin's settings: `[plugin.<id>]` tables, checked against its manifest.
    #[serde(rename = "plugin")]
    pub(crate) plugin_config: BTreeMap<String, toml::Table>,
    /// Which plugin serves a channel that two plugins claim, e.g. `email = "ses"`
    /// to replace the built-in email plugin: without it, that is a load error.
    pub(crate) channels: BTreeMap<String, String>,
    /// Outbound HTTP for plugins that deliver over HTTP (SMS providers, WeCom).
    pub(crate) http: HttpConfig,
    /// Where messages go as `.eml` files when no SMTP server is configured.
    pub(crate) outbox_dir: PathBuf,
    /// `system` (wall time) or `virtual` (time only moves by `nudge clock`).
    pub(crate) clock: ClockKind,
    pub(crate) email: EmailConfig,
    pub(crate) smtp: Option<SmtpConfig>,
    pub(crate) api: ApiConfig,
    pub(crate) delivery: DeliveryConfig,
    pub(crate) suppression: SuppressionConfig,
    pub(crate) unsubscribe: UnsubscribeConfig,
    /// Bounces that come back as mail; without it, only bounces at send time and `POST /bounces` count.
    pub(crate) bounces: Option<BouncesConfig>,
    pub(crate) retention: RetentionConfig,
    pub(crate) metrics: MetricsConfig,
    /// OpenTelemetry export of traces (a build with the `otel` feature).
    pub(crate) tracing: TracingConfig,
    /// The file these settings came from; None when no nudge.toml was found (all defaults).
    #[serde(skip)]
    pub(crate) file: Option<PathBuf>,
    /// The file's text, for errors that point into it.
    #[serde(skip)]
    pub(crate) source: String,
}

/// Retries and what to do when the outcome of a send is unknown.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DeliveryConfig {
    /// Attempts before a message that keeps failing transiently goes to the dead letters.
    pub(crate) max_attempts: i64,
    /// First retry after this many seconds, doubling each time (with jitter) ...
    pub(crate) backoff_base_secs: i64,
    /// ... up to this many.
    pub(crate) backoff_cap_secs: i64,
    /// Sends in flight at once (SMTP sessions kept open).
    pub(crate) concurrency: usize,
    /// A send whose outcome is unknown (no reply after the body): `hold` it for an
    /// operator (`nudge outbox retry|drop`), or `resend` it once after the backoff
    /// with the same Message-ID, which lets most receivers drop a duplicate.
    pub(crate) on_unknown: OnUnknown,
    /// How fast email goes to each recipient domain, and what slows one down.
    pub(crate) pacing: PacingConfig,
    /// Recipient domains with a limit of their own (`[delivery.domains."gmail.com"]`).
    pub(crate) domains: BTreeMap<String, DomainPace>,
    /// A new From domain's daily volume of marketing email; None: no plan.
    pub(crate) warmup: Option<WarmupConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnUnknown {
    #[default]
    Hold,
    Resend,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: 8,
            backoff_base_secs: 30,
            backoff_cap_secs: 3600,
            concurrency: 32,
            on_unknown: OnUnknown::Hold,
            pacing: PacingConfig::default(),
            domains: BTreeMap::new(),
            warmup: None,
        }
    }
}

/// `GET /metrics`, the Prometheus exposition.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MetricsConfig {
    /// Serve `/metrics` without the API token, for a scraper that cannot send
    /// one. It shows counts only (no contact, address or path), but says how
    /// busy the daemon is: leave it false unless the API's port is private.
    pub(crate) public: bool,
}

/// How many bounces or complaints suppress an address (0: never).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SuppressionConfig {
    pub(crate) hard_bounces: i64,
    pub(crate) soft_bounces: i64,
    pub(crate) complaints: i64,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        SuppressionConfig {
            hard_bounces: 1,
            soft_bounces: 3,
            complaints: 1,
        }
    }
}

impl SuppressionConfig {
    pub(crate) fn rules(&self) -> crate::store::SuppressionRules {
        crate::store::SuppressionRules {
            hard_bounces: self.hard_bounces,
            soft_bounces: self.soft_bounces,
            complaints: self.complaints,
        }
    }
}

/// Unsubscribe links in marketing email.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct UnsubscribeConfig {
    /// The public address of this daemon's HTTP server, as recipients reach it
    /// (e.g. `https://nudge.example.com`); defaults to `http://<api.bind>`.
    pub(crate) base_url: Option<String>,
    /// Address for `mailto:` unsubscribes; defaults to `unsubscribe@<message-ID domain>`.
    pub(crate) mailto: Option<String>,
    /// Environment variable with the key that signs unsubscribe tokens; without
    /// it the daemon generates a key and keeps it in the database.
    pub(crate) secret_env: String,
}

impl Default for UnsubscribeConfig {
    fn default() -> Self {
        UnsubscribeConfig {
            base_url: None,
            mailto: None,
            secret_env: "NUDGE_UNSUBSCRIBE_SECRET".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct HttpConfig {
    /// Hosts each plugin may reach besides those in its manifest, e.g. `sms = ["sms.example.com"]`.
    pub(crate) allow_hosts: BTreeMap<String, Vec<String>>,
    /// Hosts (`name` or `name:port`) each plugin may reach on a loopback, private
    /// or link-local address, e.g. `sms = ["gateway.lan:8080"]` for an on-premise
    /// gateway. Only the admin grants this, per plugin and per host; a plugin's
    /// manifest cannot. The daemon's own API is never a destination.
    pub(crate) private_hosts: BTreeMap<String, Vec<String>>,
    /// Replaced by `private_hosts`: true is refused at start with what to write instead.
    pub(crate) allow_private_hosts: bool,
    /// Seconds one request may take, connect to last byte.
    pub(crate) timeout_secs: u64,
    /// Largest response body read.
    pub(crate) max_response_kb: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow_hosts: BTreeMap::new(),
            private_hosts: BTreeMap::new(),
            allow_private_hosts: false,
            timeout_secs: 10,
            max_response_kb: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClockKind {
    #[default]
    System,
    Virtual,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct EmailConfig {
    /// The From header of every message, e.g. `Sales Team <sales@example.com>`.
    pub(crate) from: String,
    /// Domain of generated Message-IDs; defaults to the From address's domain.
    pub(crate) message_id_domain: Option<String>,
    /// DKIM signing keys by From domain (`[email.dkim."example.com"]`); mail
    /// from a domain without one goes unsigned.
    pub(crate) dkim: BTreeMap<String, DkimDomain>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            from: "nudge <nudge@localhost>".into(),
            message_id_domain: None,
            dkim: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SmtpTls {
    /// Plain SMTP: only for a relay on the same host or a test server.
    None,
    #[default]
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmtpConfig {
    pub(crate) host: String,
    #[serde(default = "default_smtp_port")]
    pub(crate) port: u16,
    #[serde(default)]
    pub(crate) tls: SmtpTls,
    pub(crate) username: Option<String>,
    /// Name of the environment variable holding the password.
    #[serde(default = "default_password_env")]
    pub(crate) password_env: String,
    /// Seconds one send may take from connect to the server's answer after DATA.
    #[serde(default = "default_send_timeout")]
    pub(crate) timeout_secs: u64,
    /// A relay that refuses the session itself (greeting, TLS, login, connect)
    /// holds the queue and is probed after this many seconds ...
    #[serde(default = "default_probe_first")]
    pub(crate) probe_first_secs: u64,
    /// ... doubling after each refused probe up to this many.
    #[serde(default = "default_probe_max")]
    pub(crate) probe_max_secs: u64,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_password_env() -> String {
    "NUDGE_SMTP_PASSWORD".into()
}
fn default_send_timeout() -> u64 {
    30
}
fn default_probe_first() -> u64 {
    5
}
fn default_probe_max() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ApiConfig {
    pub(crate) bind: SocketAddr,
    /// Name of the environment variable holding the bearer token.
    pub(crate) token_env: String,
    /// Name of the environment variable holding the console's read-only token:
    /// who logs in with it sees every page and may do nothing.
    pub(crate) read_only_token_env: String,
    /// A write waits while this many messages (or the work before them) of
    /// earlier API writes are unsent: the API keeps the daemon's pace instead of
    /// queueing behind its answers. 0: never wait.
    pub(crate) max_unsent: usize,
    /// The longest a write waits for that, in milliseconds.
    pub(crate) max_hold_ms: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: "127.0.0.1:8425".parse().expect("valid address"),
            token_env: "NUDGE_API_TOKEN".into(),
            read_only_token_env: "NUDGE_READ_ONLY_TOKEN".into(),
            max_unsent: 32,
            max_hold_ms: 500,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_setting: None,
            database: "data/nudge.db".into(),
            postgres: None,
            workflows: "workflows".into(),
            plugins: "plugins.d".into(),
            plugin_cache: "data/plugin-cache".into(),
            plugin_config: BTreeMap::new(),
            channels: BTreeMap::new(),
            http: HttpConfig::default(),
            outbox_dir: "data/outbox".into(),
            clock: ClockKind::System,
            email: EmailConfig::default(),
            smtp: None,
            api: ApiConfig::default(),
            delivery: DeliveryConfig::default(),
            suppression: SuppressionConfig::default(),
            unsubscribe: UnsubscribeConfig::default(),
            bounces: None,
            retention: RetentionConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
            file: None,
            source: String::new(),
        }
    }
}

impl Config {
    /// The error for a setting at `span` of nudge.toml, rendered as a workflow
    /// file's is (`file:line:col: message`, the line, what to do).
    fn setting_error(&self, span: Range<usize>, message: String, help: Option<String>) -> anyhow::Error {
        self.setting_error_in(&self.source, span, message, help)
    }

    /// As `setting_error`, showing `source` for the file's text (with a secret blanked out).
    fn setting_error_in(
        &self,
        source: &str,
        span: Range<usize>,
        message: String,
        help: Option<String>,
    ) -> anyhow::Error {
        let file = self
            .file
            .as_ref()
            .map_or_else(|| "nudge.toml".to_string(), |f| f.display().to_string());
        let mut diagnostic = Diagnostic::new(&file, span, message);
        if let Some(help) = help {
            diagnostic = diagnostic.help(help);
        }
        let rendered = diagnostic.render(source, false);
        // The CLI says `error:` before every error already.
        let rendered = rendered.strip_prefix("error: ").unwrap_or(&rendered);
        anyhow::anyhow!("{}", rendered.trim_end())
    }

    /// The address recipients follow unsubscribe and tracking links to.
    pub(crate) fn public_base_url(&self) -> String {
        self.unsubscribe
            .base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.api.bind))
    }

    /// Why the links in real mail would not work or not be safe: with `[smtp]`
    /// set, mail leaves the machine, and a loopback address sends recipients to
    /// their own computer, plain http exposes their unsubscribe tokens.
    pub(crate) fn public_link_warning(&self) -> Option<String> {
        self.smtp.as_ref()?;
        let base = self.public_base_url();
        let url = reqwest::Url::parse(&base).ok();
        let loopback = url.as_ref().and_then(|u| u.host_str()).is_none_or(|host| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
                Err(_) => host.eq_ignore_ascii_case("localhost"),
            }
        });
        let problem = if loopback {
            "a loopback address that recipients cannot reach"
        } else if url.as_ref().is_some_and(|u| u.scheme() == "http") {
            "plain http, which shows recipients' unsubscribe tokens on the way"
        } else {
            return None;
        };
        Some(format!(
            "unsubscribe and tracking links in email start with {base}, {problem}: set \
             [unsubscribe] base_url = \"https://...\" in nudge.toml to this daemon's public address"
        ))
    }

    /// Reads `path`; relative paths inside it are taken from the file's folder.
    /// Without an explicit path a missing `nudge.toml` means "all defaults".
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("nudge.toml"), false),
        };
        if !required && !path.exists() {
            let mut config = Config::default();
            config.resolve_database()?;
            return Ok(config);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("read config {}", path.display()))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))?;
        if config.http.allow_private_hosts {
            anyhow::bail!(
                "{}: [http] allow_private_hosts = true let every plugin reach every private address; \
                 it is replaced by per-plugin, per-host grants: remove it and list each on-premise \
                 gateway under its plugin, e.g. [http] private_hosts = {{ sms = [\"gateway.lan:8080\"] }}",
                path.display()
            );
        }
        config.file = Some(path.clone());
        config.source = text;
        if let Some((span, problem)) = config.bounces.as_ref().and_then(BouncesConfig::problem) {
            return Err(config.setting_error(span, problem, None));
        }
        config.check_retention_days()?;
        config.check_pacing()?;
        config.resolve_database()?;
        config.check_tracing()?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [
            &mut config.database,
            &mut config.workflows,
            &mut config.plugins,
            &mut config.plugin_cache,
            &mut config.outbox_dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(bounces) = config.bounces.as_mut()
            && bounces.maildir.is_relative()
        {
            bounces.maildir = base.join(&bounces.maildir);
        }
        for key in config.email.dkim.values_mut().filter_map(|d| d.key_file.as_mut()) {
            if key.is_relative() {
                *key = base.join(&*key);
            }
        }
        Ok(config)
    }

    /// Where plugins come from and their settings.
    pub(crate) fn plugin_settings(&self) -> crate::plugins::PluginSettings {
        crate::plugins::PluginSettings {
            dir: self.plugins.clone(),
            cache: Some(self.plugin_cache.clone()),
            config: self
                .plugin_config
                .iter()
                .map(|(id, table)| (id.clone(), serde_json::to_value(table).unwrap_or_default()))
                .collect(),
            channels: self.channels.clone(),
        }
    }

    /// The API bearer token, if the environment sets one.
    pub(crate) fn api_token(&self) -> Option<String> {
        std::env::var(&self.api.token_env).ok().filter(|t| !t.is_empty())
    }

    /// The console's read-only token, if the environment sets one.
    pub(crate) fn read_only_token(&self) -> Option<String> {
        std::env::var(&self.api.read_only_token_env)
            .ok()
            .filter(|t| !t.is_empty())
    }

    /// The SMTP password, if the environment sets one.
    pub(crate) fn smtp_password(&self) -> Option<String> {
        let smtp = self.smtp.as_ref()?;
        std::env::var(&smtp.password_env).ok()
    }

    /// The DKIM signers by lower-case From domain, their keys read and checked.
    pub(crate) fn dkim_signers(&self) -> anyhow::Result<BTreeMap<String, lettre::message::dkim::DkimConfig>> {
        dkim::signers(self.file.as_deref(), &self.email.dkim)
    }

    /// Domain used in Message-IDs.
    pub(crate) fn message_id_domain(&self) -> String {
        if let Some(d) = &self.email.message_id_domain {
            return d.clone();
        }
        self.email
            .from
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('>').trim().to_string())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }
}

/// Loads `toml` as the text of a nudge.toml, for the tests of each section's checks.
#[cfg(test)]
pub(crate) fn load_text(toml: &str) -> anyhow::Result<Config> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nudge.toml");
    std::fs::write(&file, toml).unwrap();
    Config::load(Some(&file))
}
