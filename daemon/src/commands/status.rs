//! `nudge status`: overdue follow-ups per owner, runs, timers, segment passes,
//! the outbox, whether the store (and the running daemon) can write, and
//! whether the running daemon holds email because its SMTP relay refuses sessions,
//! the recipient domains slowed by throttling and the warm-up plan's day.

use crate::app::status::{Counts, Held};
use crate::clock::display_ms;
use crate::config::Config;
use crate::daemon;
use crate::model::Reason;

/// `nudge status`, as text or as JSON.
pub(crate) async fn run(config: &Config, as_json: bool) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let now = clock.now_ms();
    let counts = Counts::read(&store, now).await?;
    let health = daemon_health(config).await;
    let writable = match health.as_ref().and_then(|h| h["store"].as_str()) {
        Some(failure) => Err(format!("the running daemon cannot write: {failure}")),
        None => store.prove_writable(now).await.map_err(|e| format!("{e:#}")),
    };
    let (relay, pacing) = match health {
        Some(mut h) => (Some(h["relay"].take()).filter(|r| !r.is_null()), h["pacing"].take()),
        None => (None, serde_json::Value::Null),
    };
    if as_json {
        let mut shown = counts.to_json(now, &writable);
        shown["relay"] = relay.unwrap_or_default();
        shown["pacing"] = pacing;
        println!("{}", serde_json::to_string_pretty(&shown)?);
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
    if let Some(relay) = &relay {
        print_relay(relay);
    }
    print_pacing(&pacing);
    print_counts(&counts);
    Ok(())
}

/// The domains slowed by throttling and the warm-up plan's day, as `/health` shows them.
fn print_pacing(pacing: &serde_json::Value) {
    for d in pacing["throttled"].as_array().into_iter().flatten() {
        let at = |key: &str| d[key].as_i64().map(display_ms).unwrap_or_default();
        println!(
            "recipient domain {} THROTTLES since {}: {} a minute (back to {} as it accepts mail), paused until {}",
            d["domain"].as_str().unwrap_or("?"),
            at("since"),
            d["per_minute"],
            d["recovers_to"],
            at("paused_until")
        );
        println!(
            "  last throttling reply: {} (its words are in the daemon's log)",
            d["reply_code"].as_str().unwrap_or("")
        );
    }
    let warmup = &pacing["warmup"];
    if warmup.is_object() {
        let cap = warmup["cap"]
            .as_i64()
            .map_or("no cap (the plan is over)".to_string(), |c| format!("cap {c}"));
        println!(
            "warm-up plan: {} {cap}, {} marketing email sent, {} held to a later day",
            warmup["day"].as_str().unwrap_or("?"),
            warmup["sent"],
            warmup["held"]
        );
    }
}

/// The relay's breaker as the running daemon's `/health` shows it.
fn print_relay(relay: &serde_json::Value) {
    let name = relay["relay"].as_str().unwrap_or("?");
    if relay["state"] != "open" {
        return println!("smtp relay: {name} (accepting)");
    }
    let at = |key: &str| relay[key].as_i64().map(display_ms).unwrap_or_default();
    println!(
        "smtp relay: {name} REFUSING since {}, email held (messages stay due); next probe at {}",
        at("open_since"),
        at("next_probe_at")
    );
    println!("  last reply: {}", relay["last_reply"].as_str().unwrap_or(""));
}

fn print_counts(counts: &Counts) {
    println!("overdue follow-ups by owner:");
    if counts.overdue.is_empty() {
        println!("  none");
    }
    for (owner, count, oldest) in &counts.overdue {
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
    println!("runs: {}", line(&counts.runs));
    println!(
        "timers: {} pending{}",
        counts.timers,
        counts
            .next_timer
            .map(|t| format!(", next at {}", display_ms(t)))
            .unwrap_or_default()
    );
    for held in &counts.waiting {
        print_held(held);
    }
    if counts.segments_running > 0 {
        println!(
            "segment passes under way: {} (`nudge segment list`)",
            counts.segments_running
        );
    }
    println!("outbox: {} ({} due now)", line(&counts.outbox), counts.outbox_due);
    for (code, n) in &counts.outbox_held {
        let meaning = Reason::parse(code).map_or("", Reason::meaning);
        println!("  {n:>6} pending held untried: {code}: {meaning}");
    }
    println!("events waiting for the daemon: {}", counts.unprocessed);
    println!(
        "last daily classification pass: {}",
        counts.classified_on.as_deref().unwrap_or("never")
    );
}

fn print_held(held: &Held) {
    let code = held.code.as_deref().unwrap_or("(no code)");
    println!("  {:>6} waiting: {code}: {}", held.runs, held.meaning());
    for (detail, n) in &held.details {
        println!("  {n:>10} {detail}");
    }
}

/// The running daemon's `/health`: its own word on its store (a daemon whose
/// transactions no longer fit on a nearly full disk fails where this command's
/// one-row probe may still fit) and on its SMTP relay, which only it knows.
/// None when no daemon answers.
async fn daemon_health(config: &Config) -> Option<serde_json::Value> {
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
    serde_json::from_slice(&body).ok()
}
