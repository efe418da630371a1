//! What each CLI command does. The CLI writes straight to the database (the
//! daemon notices within a second); it shares the store functions with the API.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::api::FollowUpInput;
use crate::clock::{display_ms, parse_time};
use crate::config::Config;
use crate::daemon;
use crate::import;
use crate::insight::{self, NewOrder, OrderOutcome, money};
use crate::plugins::PluginHost;
use crate::store::{self, NewContact};
use crate::workflow::WorkflowSet;

/// `nudge check`: validates the workflow folder; Err (exit 1) on any problem.
pub fn check(config: &Config, dir: Option<&Path>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or(&config.workflows);
    if let Some(warning) = config.public_link_warning() {
        eprintln!("warning: {warning}");
    }
    let plugins = PluginHost::load(&config.plugin_settings(), None)?.strict()?;
    match WorkflowSet::load(dir, &plugins.channels()) {
        Ok(set) => {
            println!(
                "ok: {} workflows, {} templates, {} cadences, {} in {} (set {})",
                set.workflows.len(),
                set.templates.len(),
                set.cadences.len(),
                if set.classification.is_some() {
                    "classification rules"
                } else {
                    "no classification rules"
                },
                dir.display(),
                set.hash
            );
            Ok(())
        }
        Err(diagnostics) => {
            eprintln!("{}", diagnostics.render(std::io::stderr().is_terminal()));
            bail!("{} has {} problem(s)", dir.display(), diagnostics.items.len())
        }
    }
}

pub async fn contact_add(config: &Config, new: NewContact) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let id = store::insert_contact(&mut tx, &new, clock.now_ms()).await?;
    tx.commit().await?;
    println!("contact {id} added");
    Ok(())
}

/// `nudge contact import`: a CSV of contacts.
pub async fn contact_import(config: &Config, file: &Path, strict: bool) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut contacts = import::contacts::Contacts { now: clock.now_ms() };
    let summary = import::import_csv(&store, file, strict, &mut contacts).await?;
    println!(
        "imported {} contacts, {} already present, {} bad rows skipped",
        summary.added, summary.already_present, summary.bad
    );
    Ok(())
}

pub async fn contact_show(config: &Config, reference: &str, as_json: bool) -> anyhow::Result<()> {
    let (store, _) = daemon::open(config).await?;
    let mut conn = store.pool.acquire().await?;
    let contact = store::find_contact(&mut conn, reference)
        .await?
        .with_context(|| format!("no contact `{reference}`"))?;
    let follow_ups = store::follow_ups_of(&mut conn, contact.id, 10).await?;
    let orders = store::orders_of(&mut conn, contact.id, 10).await?;
    let history = store::history_of(&mut conn, contact.id, 50).await?;
    if as_json {
        let shown = json!({ "contact": contact, "follow_ups": follow_ups, "orders": orders, "history": history });
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!(
        "#{} {} ({})",
        contact.id,
        contact.name,
        if contact.company.is_empty() {
            "-"
        } else {
            &contact.company
        }
    );
    println!(
        "  email {}  phone {}  owner {}",
        opt(&contact.email),
        opt(&contact.phone),
        contact.owner
    );
    println!(
        "  stage {}  intent {}  tier {}  tags [{}]  source {}",
        contact.stage,
        opt(&contact.intent_grade),
        opt(&contact.value_tier),
        contact.tags.0.join(", "),
        contact.source
    );
    if let Some(funnel) = &contact.funnel_stage {
        println!(
            "  funnel {funnel} ({}, {})",
            opt(&contact.attitude),
            opt(&contact.understanding)
        );
    }
    println!(
        "  time zone {}  locale {}  consent {}",
        contact.time_zone, contact.locale, contact.consent
    );
    if let Some(since) = &contact.customer_since {
        println!(
            "  customer since {since}  rfm {} ({})  behaviour {}",
            opt(&contact.rfm_grade),
            opt(&contact.rfm_scores),
            opt(&contact.behaviour)
        );
    }
    match contact.next_follow_up_at {
        Some(at) => println!("  next follow-up {} ({})", display_ms(at), opt(&contact.next_goal)),
        None => println!("  next follow-up: none"),
    }
    if !orders.is_empty() {
        println!("  latest orders:");
    }
    for o in &orders {
        println!(
            "  - {} {} {} {}{}",
            o.ordered_on,
            o.external_id,
            money::format_minor(o.amount_minor),
            o.currency,
            if o.items.is_empty() {
                String::new()
            } else {
                format!("  {}", o.items)
            }
        );
    }
    if !history.is_empty() {
        println!("  history:");
    }
    for h in &history {
        println!(
            "  - {} {} {} -> {} by {}",
            display_ms(h.at),
            h.field,
            h.from_value.as_deref().unwrap_or("-"),
            h.to_value.as_deref().unwrap_or("-"),
            h.changed_by
        );
    }
    if !follow_ups.is_empty() {
        println!("  latest follow-ups:");
    }
    for f in follow_ups {
        println!(
            "  - {} {} [{}] {}{}",
            display_ms(f.at),
            f.channel,
            f.result,
            f.summary,
            f.status_change.map(|s| format!(" ({s})")).unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn stage_set(config: &Config, reference: &str, stage: &str) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let contact = store::find_contact(&mut tx, reference)
        .await?
        .with_context(|| format!("no contact `{reference}`"))?;
    let event = store::set_stage(&mut tx, contact.id, &contact.stage, stage, "cli", clock.now_ms()).await?;
    tx.commit().await?;
    match event {
        Some(_) => println!("contact {} stage {} -> {stage}", contact.id, contact.stage),
        None => println!("contact {} is already at stage {stage}", contact.id),
    }
    Ok(())
}

pub async fn follow_up_log(config: &Config, reference: &str, input: FollowUpInput) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    let contact = store::find_contact(&mut tx, reference)
        .await?
        .with_context(|| format!("no contact `{reference}`"))?;
    let follow_up = input.resolve(&contact, now)?;
    let id = store::log_follow_up(&mut tx, &contact, &follow_up, now).await?;
    // A follow-up is activity that keeps a customer from churning. Without readable
    // rules the follow-up is still logged; the daemon's daily pass catches up.
    match insight::load_rules(&config.workflows) {
        Ok(rules) => {
            insight::reclassify_by_id(&mut tx, Some(&rules), contact.id, now, insight::Events::Write).await?;
        }
        Err(e) if config.workflows.join(crate::workflow::CLASSIFICATION_FILE).exists() => {
            eprintln!("warning: not re-classified: {e:#}")
        }
        Err(_) => {}
    }
    tx.commit().await?;
    match follow_up.next_follow_up_at {
        Some(at) => println!("follow-up {id} logged; next follow-up {}", display_ms(at)),
        None => println!("follow-up {id} logged; no next follow-up set"),
    }
    Ok(())
}

/// `nudge order add`: records one order and re-classifies its customer.
pub async fn order_add(config: &Config, order: NewOrder) -> anyhow::Result<()> {
    let rules = insight::load_rules(&config.workflows)?;
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let outcome = insight::record_order(&mut tx, &rules, &order, clock.now_ms()).await?;
    tx.commit().await?;
    match outcome {
        OrderOutcome::Added { order_id, contact_id } => {
            let mut conn = store.pool.acquire().await?;
            let contact = store::contact_by_id(&mut conn, contact_id)
                .await?
                .context("contact vanished")?;
            println!(
                "order {} recorded (#{order_id}); contact {contact_id}: tier {}, rfm {}, {}",
                order.id.trim(),
                contact.value_tier.as_deref().unwrap_or("-"),
                contact.rfm_grade.as_deref().unwrap_or("-"),
                contact.behaviour.as_deref().unwrap_or("-"),
            );
        }
        OrderOutcome::AlreadyPresent { order_id } => {
            println!(
                "order {} is recorded already (#{order_id}); nothing changed",
                order.id.trim()
            )
        }
    }
    Ok(())
}

/// `nudge order import`: a CSV of orders; with `history`, past orders that start no workflow.
pub async fn order_import(config: &Config, file: &Path, strict: bool, history: bool) -> anyhow::Result<()> {
    let rules = insight::load_rules(&config.workflows)?;
    let (store, clock) = daemon::open(config).await?;
    let events = if history {
        insight::Events::Skip
    } else {
        insight::Events::Write
    };
    let mut orders = import::orders::Orders::new(rules, clock.now_ms(), events);
    let summary = import::import_csv(&store, file, strict, &mut orders).await?;
    println!(
        "imported {} orders, {} already present, {} bad rows skipped",
        summary.added, summary.already_present, summary.bad
    );
    Ok(())
}

/// `nudge followup import`: a CSV of follow-ups, each logged as `followup log` would.
pub async fn follow_up_import(config: &Config, file: &Path, strict: bool) -> anyhow::Result<()> {
    let rules = classification_rules_if_any(config)?;
    let (store, clock) = daemon::open(config).await?;
    let mut follow_ups = import::follow_ups::FollowUps {
        rules: rules.as_deref(),
        now: clock.now_ms(),
    };
    let summary = import::import_csv(&store, file, strict, &mut follow_ups).await?;
    println!(
        "imported {} follow-ups, {} already present, {} bad rows skipped",
        summary.added, summary.already_present, summary.bad
    );
    Ok(())
}

/// The classification rules for commands that work without them (follow-ups):
/// none without a classification.toml, an error if it is there but broken.
fn classification_rules_if_any(
    config: &Config,
) -> anyhow::Result<Option<std::sync::Arc<crate::workflow::ClassificationRules>>> {
    if config.workflows.join(crate::workflow::CLASSIFICATION_FILE).exists() {
        insight::load_rules(&config.workflows).map(Some)
    } else {
        Ok(None)
    }
}

/// How `nudge report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

/// `nudge report`: the measures of docs/domain.md §6 for a period (default: the 30 days up to today).
pub async fn report(
    config: &Config,
    from: Option<&str>,
    to: Option<&str>,
    filters: [Option<String>; 3],
    format: ReportFormat,
    html: Option<&Path>,
) -> anyhow::Result<()> {
    let plugins = PluginHost::load(&config.plugin_settings(), None)?.strict()?;
    let set = WorkflowSet::load(&config.workflows, &plugins.channels())
        .map_err(|d| anyhow::anyhow!("{}\nfix {} first", d.render(false), config.workflows.display()))?;
    let rules = set.classification.clone().with_context(|| {
        format!(
            "no {} in {}: the report needs its time zone and targets",
            crate::workflow::CLASSIFICATION_FILE,
            config.workflows.display()
        )
    })?;
    let (store, clock) = daemon::open(config).await?;
    let now = clock.now_ms();
    let scope = crate::report::ReportScope::new(&rules, now, from, to, filters)?;
    let mut conn = store.pool.acquire().await?;
    let report = crate::report::build(&mut conn, &rules, &set, scope.clone(), now).await?;
    if let Some(file) = html {
        let weeks = crate::report::weekly_trend(&mut conn, &rules, &set, &scope, now).await?;
        std::fs::write(file, report.to_html(&weeks)).with_context(|| format!("write {}", file.display()))?;
        eprintln!("wrote {}", file.display());
    }
    match format {
        ReportFormat::Table => print!("{}", report.to_table()),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Csv => print!("{}", report.to_csv()?),
    }
    Ok(())
}

/// `nudge classify`: re-classifies every customer now (after changing the rules,
/// or to see today's result without waiting for the daemon's daily pass).
pub async fn classify(config: &Config) -> anyhow::Result<()> {
    let rules = insight::load_rules(&config.workflows)?;
    let (store, clock) = daemon::open(config).await?;
    let summary = insight::classification_pass(&store, &rules, clock.now_ms(), true)
        .await?
        .context("a forced pass always runs")?;
    println!(
        "classified {} customers as of {}: {} changes",
        summary.customers,
        rules.today(clock.now_ms()),
        summary.changes
    );
    Ok(())
}

pub async fn inquiry_add(config: &Config, reference: &str, message: &str, channel: &str) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let contact = store::find_contact(&mut tx, reference)
        .await?
        .with_context(|| format!("no contact `{reference}`"))?;
    let id = store::add_inquiry(&mut tx, contact.id, message, channel, clock.now_ms()).await?;
    tx.commit().await?;
    println!("inquiry {id} recorded for contact {}", contact.id);
    Ok(())
}

/// `nudge status`: overdue follow-ups per owner, runs, timers and the outbox.
pub async fn status(config: &Config, as_json: bool) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let now = clock.now_ms();
    // One read transaction: every count comes from the same snapshot. Read one by one,
    // a run could start after the runs were counted and its event after the events were,
    // and the daemon would look idle in the middle of its work.
    let mut snapshot = store.pool.begin().await?;
    let overdue: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT owner, COUNT(*), MIN(next_follow_up_at) FROM contacts
         WHERE next_follow_up_at IS NOT NULL AND next_follow_up_at <= ? GROUP BY owner ORDER BY COUNT(*) DESC, owner",
    )
    .bind(now)
    .fetch_all(&mut *snapshot)
    .await?;
    let runs: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status")
        .fetch_all(&mut *snapshot)
        .await?;
    let (timers, next_timer): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MIN(due_at) FROM timers WHERE fired_at IS NULL")
            .fetch_one(&mut *snapshot)
            .await?;
    let outbox: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status ORDER BY status")
            .fetch_all(&mut *snapshot)
            .await?;
    let unprocessed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE processed_at IS NULL")
        .fetch_one(&mut *snapshot)
        .await?;
    let timers_due: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM timers WHERE fired_at IS NULL AND due_at <= ?")
        .bind(now)
        .fetch_one(&mut *snapshot)
        .await?;
    let segments_running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM enrolments WHERE status = 'running'")
        .fetch_one(&mut *snapshot)
        .await?;
    let waiting: Vec<(String, i64)> = sqlx::query_as(
        "SELECT waiting_reason, COUNT(*) FROM runs WHERE status = 'waiting' AND waiting_reason IS NOT NULL
         GROUP BY waiting_reason ORDER BY COUNT(*) DESC LIMIT 10",
    )
    .fetch_all(&mut *snapshot)
    .await?;
    let classified_on = store::last_classification_pass(&mut snapshot).await?;
    let outbox_due: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?")
            .bind(now)
            .fetch_one(&mut *snapshot)
            .await?;
    snapshot.commit().await?;
    let writable = match daemon_write_failure(config).await {
        Some(failure) => Err(format!("the running daemon cannot write: {failure}")),
        None => store.prove_writable(now).await.map_err(|e| format!("{e:#}")),
    };
    if as_json {
        let counts = |rows: &[(String, i64)]| {
            rows.iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        };
        let report = json!({
            "now": now,
            "overdue_by_owner": overdue.iter().map(|(o, n, since)| json!({"owner": o, "overdue": n, "oldest_due_at": since})).collect::<Vec<_>>(),
            "runs": counts(&runs),
            "timers": { "pending": timers, "next_due_at": next_timer, "due": timers_due },
            "segments_running": segments_running,
            "waiting_reasons": waiting.iter().map(|(r, n)| json!({"reason": r, "runs": n})).collect::<Vec<_>>(),
            "outbox": counts(&outbox),
            "outbox_due": outbox_due,
            "events_unprocessed": unprocessed,
            "classified_on": classified_on,
            "store": match &writable {
                Ok(()) => json!({ "writable": true }),
                Err(e) => json!({ "writable": false, "error": e }),
            },
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "now: {}{}",
        display_ms(now),
        if clock.is_virtual() { " (virtual clock)" } else { "" }
    );
    match &writable {
        Ok(()) => println!("store: {} (writable)", config.database.display()),
        Err(e) => println!("store: {} CANNOT WRITE: {e}", config.database.display()),
    }
    println!("overdue follow-ups by owner:");
    if overdue.is_empty() {
        println!("  none");
    }
    for (owner, count, oldest) in &overdue {
        let owner = if owner.is_empty() { "(no owner)" } else { owner };
        println!("  {owner:<32} {count:>6}   oldest due {}", display_ms(*oldest));
    }
    let line = |rows: &[(String, i64)]| {
        if rows.is_empty() {
            "none".to_string()
        } else {
            rows.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!("runs: {}", line(&runs));
    println!(
        "timers: {timers} pending{}",
        next_timer
            .map(|t| format!(", next at {}", display_ms(t)))
            .unwrap_or_default()
    );
    for (reason, count) in &waiting {
        println!("  {count:>6} waiting: {reason}");
    }
    if segments_running > 0 {
        println!("segment passes under way: {segments_running} (`nudge segment list`)");
    }
    println!("outbox: {} ({outbox_due} due now)", line(&outbox));
    println!("events waiting for the daemon: {unprocessed}");
    println!(
        "last daily classification pass: {}",
        classified_on.as_deref().unwrap_or("never")
    );
    Ok(())
}

/// The running daemon's own word on its store, from its `/health`: a daemon
/// whose transactions no longer fit on a nearly full disk fails where this
/// command's one-row probe may still fit. None when it can write, or when no
/// daemon answers.
async fn daemon_write_failure(config: &Config) -> Option<String> {
    let mut address = config.api.bind;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .no_proxy()
        .build()
        .ok()?;
    let body = client
        .get(format!("http://{address}/health"))
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let health: serde_json::Value = serde_json::from_slice(&body).ok()?;
    health["store"].as_str().map(str::to_string)
}

/// `nudge clock`: shows or moves the virtual clock.
pub async fn clock(config: &Config, set: Option<&str>, advance: Option<&str>) -> anyhow::Result<()> {
    if config.clock != crate::config::ClockKind::Virtual {
        bail!("this config runs on the system clock; set `clock = \"virtual\"` in nudge.toml to move time by hand");
    }
    let (store, clock) = daemon::open(config).await?;
    let now = clock.now_ms();
    let target = match (set, advance) {
        (Some(t), _) => parse_time(t, now, "UTC").map_err(anyhow::Error::msg)?,
        (None, Some(d)) => {
            let span = crate::workflow::parse_duration(d).map_err(anyhow::Error::msg)?;
            crate::workflow::add_span(now, span, "UTC")
        }
        (None, None) => now,
    };
    if target < now {
        eprintln!(
            "warning: moving the virtual clock back from {}; timers already fired stay fired",
            display_ms(now)
        );
    }
    store.set_virtual_now(target).await?;
    println!("virtual clock: {}", display_ms(target));
    Ok(())
}

/// `nudge plugin list`: every loaded plugin.
pub fn plugin_list(config: &Config) -> anyhow::Result<()> {
    let host = PluginHost::load(&config.plugin_settings(), None)?.strict()?;
    for p in host.plugins() {
        let m = &p.manifest;
        println!(
            "{:<10} {:<8} interface {:<6} channels [{}]  {}",
            m.id,
            m.version,
            m.interface,
            host.served_by(&m.id).join(", "),
            p.origin
        );
    }
    Ok(())
}

/// A `nudge plugin test` fixture (its keys are documented in plugin-sdk/README.md).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginFixture {
    /// Defaults to the plugin's first channel.
    channel: Option<String>,
    /// The template's fields; without them nothing is rendered and only `responses` are read.
    template: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    context: serde_json::Value,
    /// Replaces the plugin's `[plugin.<id>]` table from nudge.toml.
    config: Option<serde_json::Value>,
    /// With a recipient, also shows the HTTP requests the plugin would have sent.
    recipient: Option<String>,
    /// Provider answers, each read by the plugin's `interpret_response`.
    #[serde(default)]
    responses: Vec<FixtureResponse>,
}

/// A provider's answer in a fixture.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureResponse {
    status: u16,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// A string is the body as it is; any other JSON value is sent as JSON text.
    #[serde(default)]
    body: serde_json::Value,
}

impl FixtureResponse {
    fn body(&self) -> Vec<u8> {
        match &self.body {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::String(text) => text.clone().into_bytes(),
            json => json.to_string().into_bytes(),
        }
    }
}

/// `nudge plugin test <id|folder> <fixture.json>`: runs one plugin on a fixture
/// through the real host (render, build_request, interpret_response) and prints
/// the results and what the render cost. Only that plugin is loaded.
pub fn plugin_test(config: &Config, plugin: &str, fixture: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(fixture).with_context(|| format!("read {}", fixture.display()))?;
    let fixture: PluginFixture =
        serde_json::from_str(&text).with_context(|| format!("{} is not a plugin test fixture", fixture.display()))?;
    if fixture.template.is_none() && fixture.recipient.is_some() {
        bail!("the fixture has a `recipient` but no `template`: give the template to render for it");
    }
    if fixture.template.is_none() && fixture.responses.is_empty() {
        bail!("the fixture has nothing to try: give a `template` to render, `responses` to read, or both");
    }
    let mut settings = config.plugin_settings();
    settings.cache = plugin_test_cache(config);
    let host = PluginHost::load_only(&settings, plugin, fixture.config)?;
    let loaded = host.plugins().next().context("no plugin loaded")?;
    let id = loaded.manifest.id.clone();
    let channel = fixture
        .channel
        .or_else(|| loaded.channels.first().cloned())
        .context("the plugin serves no channel")?;
    if let Some(template) = fixture.template {
        let template: Vec<(String, String)> = template.into_iter().collect();
        let (message, stats) = host.render(&channel, &template, &fixture.context)?;
        println!("{}", serde_json::to_string_pretty(&message)?);
        if let Some(recipient) = fixture.recipient {
            for r in host.build_request(&channel, &message, &recipient)? {
                println!("{} {}", r.method, r.url);
                for (k, v) in &r.headers {
                    println!("{k}: {v}");
                }
                println!("\n{}\n", String::from_utf8_lossy(&r.body));
            }
        }
        eprintln!(
            "plugin {id} on channel {channel}: {:.2} ms, {} fuel, peak memory {} KiB",
            stats.elapsed.as_secs_f64() * 1000.0,
            stats.fuel,
            stats.peak_memory / 1024
        );
    }
    for response in &fixture.responses {
        let headers = response.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let verdict = host.interpret_response(&channel, response.status, headers, response.body())?;
        let verdict = match verdict {
            crate::plugins::ProviderVerdict::Sent(note) => format!("sent: {note}"),
            crate::plugins::ProviderVerdict::RetryLater(why) => format!("retry later: {why}"),
            crate::plugins::ProviderVerdict::Failed(why) => format!("failed: {why}"),
        };
        println!(
            "HTTP {} {} -> {verdict}",
            response.status,
            String::from_utf8_lossy(&response.body())
        );
    }
    Ok(())
}

/// Where `nudge plugin test` keeps compiled plugins: the installation's cache
/// when a nudge.toml is in use, else the user's cache folder, never a `data/`
/// folder made wherever an author happens to run it. Compiling takes seconds;
/// the cache makes a second run of an unchanged plugin start at once.
fn plugin_test_cache(config: &Config) -> Option<std::path::PathBuf> {
    let dir = match &config.file {
        Some(_) => config.plugin_cache.clone(),
        None => user_cache_dir()?.join("nudge").join("plugin-cache"),
    };
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            eprintln!(
                "warning: cannot use {} as the plugin cache ({e}); compiling without one",
                dir.display()
            );
            None
        }
    }
}

/// `$XDG_CACHE_HOME`, else `~/.cache` (the XDG base directory rules).
fn user_cache_dir() -> Option<std::path::PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|home| home.join(".cache")))
}

/// `nudge outbox list`: messages by status, newest first.
pub async fn outbox_list(config: &Config, statuses: &[String], limit: i64, as_json: bool) -> anyhow::Result<()> {
    let (store, _) = daemon::open(config).await?;
    let mut conn = store.pool.acquire().await?;
    let rows = store::list_outbox(&mut conn, statuses, limit).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no messages{}",
            if statuses.is_empty() {
                String::new()
            } else {
                format!(" with status {}", statuses.join(" or "))
            }
        );
    }
    for r in &rows {
        println!(
            "{:>8}  {:<10} {:<6} {:<13} {:<32} attempts {:>2}  {}",
            r.id, r.status, r.channel, r.category, r.recipient, r.attempts, r.message_id
        );
        if let Some(error) = &r.last_error {
            let when = if r.status == store::OutboxStatus::Pending {
                format!(" (next try {})", display_ms(r.next_attempt_at))
            } else {
                String::new()
            };
            println!("          last error: {error}{when}");
        }
    }
    Ok(())
}

/// `nudge outbox retry|drop`: acts on the given rows, or on every row with `all_status`.
pub async fn outbox_act(config: &Config, retry: bool, ids: &[i64], all_status: Option<&str>) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let ids = match all_status {
        Some(status) => store::outbox_ids_with_status(&mut tx, status).await?,
        None => ids.to_vec(),
    };
    if ids.is_empty() {
        bail!("name the messages (ids from `nudge outbox list`) or use --all <status>");
    }
    let now = clock.now_ms();
    let changed = if retry {
        store::retry_outbox(&mut tx, &ids, now).await?
    } else {
        store::drop_outbox(&mut tx, &ids, now).await?
    };
    tx.commit().await?;
    let verb = if retry { "queued again" } else { "dropped" };
    println!("{changed} of {} message(s) {verb}", ids.len());
    if (changed as usize) < ids.len() {
        eprintln!("note: sent messages (and, for retry, pending ones) are left as they are");
    }
    Ok(())
}

/// `nudge suppress add|remove|list`.
pub async fn suppress(config: &Config, action: SuppressAction<'_>) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    match action {
        SuppressAction::Add {
            address,
            channel,
            detail,
        } => {
            let added = store::suppress(
                &mut tx,
                address,
                channel,
                store::SuppressionReason::Manual,
                detail,
                clock.now_ms(),
            )
            .await?;
            tx.commit().await?;
            println!(
                "{address} {}",
                if added { "suppressed" } else { "was suppressed already" }
            );
        }
        SuppressAction::Remove { address, channel } => {
            let removed = store::unsuppress(&mut tx, address, channel).await?;
            tx.commit().await?;
            println!(
                "{address} {}",
                if removed {
                    "no longer suppressed"
                } else {
                    "was not suppressed"
                }
            );
        }
        SuppressAction::List { as_json } => {
            let rows = store::list_suppressions(&mut tx).await?;
            tx.commit().await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no suppressed addresses");
            }
            for r in rows.iter().filter(|_| !as_json) {
                println!(
                    "{:<40} {:<6} {:<13} {}  {}",
                    r.address,
                    r.channel,
                    r.reason,
                    display_ms(r.created_at),
                    r.detail
                );
            }
        }
    }
    Ok(())
}

pub enum SuppressAction<'a> {
    Add {
        address: &'a str,
        channel: &'a str,
        detail: &'a str,
    },
    Remove {
        address: &'a str,
        channel: &'a str,
    },
    List {
        as_json: bool,
    },
}

/// `nudge segment list`: passes of segment workflows and their progress.
pub async fn segment_list(config: &Config, as_json: bool) -> anyhow::Result<()> {
    let (store, _) = daemon::open(config).await?;
    let mut conn = store.pool.acquire().await?;
    let passes = store::list_enrolments(&mut conn, 50).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&passes)?);
        return Ok(());
    }
    if passes.is_empty() {
        println!("no segment passes yet");
    }
    for p in &passes {
        println!("{}", progress_line(p));
    }
    Ok(())
}

fn progress_line(p: &store::Enrolment) -> String {
    let percent = if p.total > 0 {
        (p.scanned * 100 / p.total).min(100)
    } else {
        100
    };
    format!(
        "pass {:>4}  {:<28} {:<7} {:>3}%  scanned {:>9} of {:<9} enrolled {:>9}  since {}",
        p.id,
        p.workflow,
        p.status,
        percent,
        p.scanned,
        p.total,
        p.enrolled,
        display_ms(p.started_at)
    )
}

/// `nudge segment run`: starts a pass of a segment workflow now (the daemon does
/// the work); with `follow`, shows its progress until it is done.
pub async fn segment_run(config: &Config, workflow: &str, follow: bool) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let Some(hash) = store.latest_workflow_set().await? else {
        bail!("the daemon has not loaded any workflows yet: start it with `nudge run` first");
    };
    let files = store.workflow_set_files(&hash).await?.unwrap_or_default();
    let is_segment = files.iter().any(|(path, source)| {
        Path::new(path).file_stem().is_some_and(|s| s == workflow)
            && toml::from_str::<toml::Table>(source)
                .ok()
                .and_then(|t| t.get("trigger")?.get("on")?.as_str().map(|on| on == "segment"))
                .unwrap_or(false)
    });
    if !is_segment {
        bail!("`{workflow}` is not a segment workflow (`[trigger] on = \"segment\"`) in the daemon's workflows");
    }
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    store::open_enrolment(&mut tx, workflow, &hash, now, now).await?;
    tx.commit().await?;
    println!("pass of {workflow} started; the daemon enrols the segment in batches");
    if !follow {
        return Ok(());
    }
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let pass = {
            let mut conn = store.pool.acquire().await?;
            store::list_enrolments(&mut conn, 50)
                .await?
                .into_iter()
                .find(|p| p.workflow == workflow && p.due_at == now)
        };
        let Some(pass) = pass else {
            bail!("the pass disappeared")
        };
        let line = progress_line(&pass);
        if line != last {
            if terminal {
                print!("\r{line}");
                std::io::Write::flush(&mut std::io::stdout())?;
            } else {
                println!("{line}");
            }
            last = line;
        }
        if pass.status == store::EnrolmentStatus::Done {
            if terminal {
                println!();
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
