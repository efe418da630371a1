//! `nudge status`: overdue follow-ups per owner, runs, timers, segment passes,
//! the outbox, whether the store (and the running daemon) can write, and
//! whether the running daemon holds email because its SMTP relay refuses sessions,
//! the recipient domains slowed by throttling and the warm-up plan's day.

use serde_json::json;

use crate::clock::display_ms;
use crate::config::Config;
use crate::daemon;
use crate::model::Reason;
use crate::store::{self, Store};

/// The counts `status` shows, all from one snapshot of the database.
struct Counts {
    /// (owner, overdue contacts, the oldest due time).
    overdue: Vec<(String, i64, i64)>,
    runs: Vec<(String, i64)>,
    timers: i64,
    next_timer: Option<i64>,
    timers_due: i64,
    outbox: Vec<(String, i64)>,
    outbox_due: i64,
    /// Pending email held untried, by reason code (domain_paced, warmup_cap, ...).
    outbox_held: Vec<(String, i64)>,
    unprocessed: i64,
    segments_running: i64,
    /// Waiting runs held at a step, by reason code, commonest first.
    waiting: Vec<Held>,
    classified_on: Option<String>,
}

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
    counts.print();
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

impl Counts {
    /// One read transaction: every count comes from the same snapshot. Read one by one,
    /// a run could start after the runs were counted and its event after the events were,
    /// and the daemon would look idle in the middle of its work.
    async fn read(store: &Store, now: i64) -> anyhow::Result<Counts> {
        let mut snapshot = store.pool.begin().await?;
        let overdue = sqlx::query_as(
            "SELECT owner, COUNT(*), MIN(next_follow_up_at) FROM contacts
         WHERE next_follow_up_at IS NOT NULL AND next_follow_up_at <= ? GROUP BY owner ORDER BY COUNT(*) DESC, owner",
        )
        .bind(now)
        .fetch_all(&mut *snapshot)
        .await?;
        let totals = store::totals(&mut snapshot).await?;
        let runs = totals.runs.iter().map(|(s, n)| (s.as_str().to_string(), *n)).collect();
        let outbox = totals
            .outbox
            .iter()
            .map(|(s, n)| (s.as_str().to_string(), *n))
            .collect();
        let (timers, next_timer) = sqlx::query_as("SELECT COUNT(*), MIN(due_at) FROM timers WHERE fired_at IS NULL")
            .fetch_one(&mut *snapshot)
            .await?;
        let unprocessed = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE processed_at IS NULL")
            .fetch_one(&mut *snapshot)
            .await?;
        let timers_due = sqlx::query_scalar("SELECT COUNT(*) FROM timers WHERE fired_at IS NULL AND due_at <= ?")
            .bind(now)
            .fetch_one(&mut *snapshot)
            .await?;
        let segments_running = sqlx::query_scalar("SELECT COUNT(*) FROM enrolments WHERE status = 'running'")
            .fetch_one(&mut *snapshot)
            .await?;
        let waiting = Held::read(&mut snapshot).await?;
        let classified_on = store::last_classification_pass(&mut snapshot).await?;
        let outbox_due =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?")
                .bind(now)
                .fetch_one(&mut *snapshot)
                .await?;
        let outbox_held = sqlx::query_as(
            "SELECT held_reason, COUNT(*) FROM outbox WHERE status = 'pending' AND held_reason IS NOT NULL
             GROUP BY held_reason ORDER BY held_reason",
        )
        .fetch_all(&mut *snapshot)
        .await?;
        snapshot.commit().await?;
        Ok(Counts {
            overdue,
            runs,
            timers,
            next_timer,
            timers_due,
            outbox,
            outbox_due,
            outbox_held,
            unprocessed,
            segments_running,
            waiting,
            classified_on,
        })
    }

    fn to_json(&self, now: i64, writable: &Result<(), String>) -> serde_json::Value {
        let counts = |rows: &[(String, i64)]| {
            rows.iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "now": now,
            "overdue_by_owner": self.overdue.iter().map(|(o, n, since)| json!({"owner": o, "overdue": n, "oldest_due_at": since})).collect::<Vec<_>>(),
            "runs": counts(&self.runs),
            "timers": { "pending": self.timers, "next_due_at": self.next_timer, "due": self.timers_due },
            "segments_running": self.segments_running,
            "waiting_reasons": self.waiting.iter().map(Held::to_json).collect::<Vec<_>>(),
            "outbox": counts(&self.outbox),
            "outbox_due": self.outbox_due,
            "outbox_held": counts(&self.outbox_held),
            "events_unprocessed": self.unprocessed,
            "classified_on": self.classified_on,
            "store": match writable {
                Ok(()) => json!({ "writable": true }),
                Err(e) => json!({ "writable": false, "error": e }),
            },
        })
    }

    fn print(&self) {
        println!("overdue follow-ups by owner:");
        if self.overdue.is_empty() {
            println!("  none");
        }
        for (owner, count, oldest) in &self.overdue {
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
        println!("runs: {}", line(&self.runs));
        println!(
            "timers: {} pending{}",
            self.timers,
            self.next_timer
                .map(|t| format!(", next at {}", display_ms(t)))
                .unwrap_or_default()
        );
        for held in &self.waiting {
            held.print();
        }
        if self.segments_running > 0 {
            println!(
                "segment passes under way: {} (`nudge segment list`)",
                self.segments_running
            );
        }
        println!("outbox: {} ({} due now)", line(&self.outbox), self.outbox_due);
        for (code, n) in &self.outbox_held {
            let meaning = Reason::parse(code).map_or("", Reason::meaning);
            println!("  {n:>6} pending held untried: {code}: {meaning}");
        }
        println!("events waiting for the daemon: {}", self.unprocessed);
        println!(
            "last daily classification pass: {}",
            self.classified_on.as_deref().unwrap_or("never")
        );
    }
}

/// Runs held at a step for one reason code (None: held before codes were recorded).
struct Held {
    code: Option<String>,
    runs: i64,
    /// The commonest wordings of it (a wording names a time, a window, an error), with their counts.
    details: Vec<(String, i64)>,
}

/// Wordings shown per reason code.
const DETAILS_SHOWN: i64 = 3;

impl Held {
    async fn read(snapshot: &mut store::Conn) -> anyhow::Result<Vec<Held>> {
        let counts: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT reason, COUNT(*) FROM runs WHERE status = 'waiting' AND waiting_reason IS NOT NULL
             GROUP BY reason ORDER BY COUNT(*) DESC, reason",
        )
        .fetch_all(&mut *snapshot)
        .await?;
        let details: Vec<(Option<String>, String, i64)> = sqlx::query_as(
            "SELECT reason, waiting_reason, n FROM (
                 SELECT reason, waiting_reason, COUNT(*) AS n,
                        ROW_NUMBER() OVER (PARTITION BY reason ORDER BY COUNT(*) DESC, waiting_reason) AS k
                 FROM runs WHERE status = 'waiting' AND waiting_reason IS NOT NULL GROUP BY reason, waiting_reason)
             WHERE k <= ? ORDER BY n DESC",
        )
        .bind(DETAILS_SHOWN)
        .fetch_all(&mut *snapshot)
        .await?;
        Ok(counts
            .into_iter()
            .map(|(code, runs)| Held {
                details: (details.iter())
                    .filter(|(c, ..)| *c == code)
                    .map(|(_, detail, n)| (detail.clone(), *n))
                    .collect(),
                code,
                runs,
            })
            .collect())
    }

    fn meaning(&self) -> &'static str {
        self.code.as_deref().and_then(Reason::parse).map_or("", Reason::meaning)
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "reason": self.code,
            "meaning": self.meaning(),
            "runs": self.runs,
            "details": self.details.iter().map(|(d, n)| json!({"detail": d, "runs": n})).collect::<Vec<_>>(),
        })
    }

    fn print(&self) {
        let code = self.code.as_deref().unwrap_or("(no code)");
        println!("  {:>6} waiting: {code}: {}", self.runs, self.meaning());
        for (detail, n) in &self.details {
            println!("  {n:>10} {detail}");
        }
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
