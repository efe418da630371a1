//! `nudge runs` and `nudge runs show`: the history of workflow runs, a page
//! at a time, and one run with every step's effect, its timers and messages.

use crate::app::{self, RunPage, RunQuery};
use crate::clock::display_ms;
use crate::config::Config;
use crate::daemon;
use crate::store::{RunDetail, RunSummary};

/// `nudge runs`: runs newest first, filtered.
pub(crate) async fn list(config: &Config, query: RunQuery, as_json: bool) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut conn = store.pool.acquire().await?;
    let page = app::list_runs(&mut conn, query, clock.now_ms()).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    print_page(&page);
    Ok(())
}

fn print_page(page: &RunPage) {
    if page.runs.is_empty() {
        println!("no runs");
    }
    for run in &page.runs {
        println!("{}", summary_line(run));
        if let Some(wait) = waiting(run) {
            println!("          {wait}");
        }
        if let Some(outcome) = &run.outcome {
            println!("          outcome: {}", with_code(run, outcome));
        }
    }
    if let Some(next) = page.next {
        println!("more: nudge runs --before {next} (with the same filters)");
    }
}

fn summary_line(run: &RunSummary) -> String {
    format!(
        "{:>8}  {:<24} contact {:>6} {:<20} {:<9} steps {:>2}  started {}  last {}",
        run.id,
        run.workflow,
        run.contact_id,
        run.contact_name,
        run.status,
        run.steps_taken,
        display_ms(run.started_at),
        display_ms(run.updated_at)
    )
}

/// A reason or outcome with its stable code first, as `nudge explain` and the logs say it.
fn with_code(run: &RunSummary, text: &str) -> String {
    match &run.reason {
        Some(code) => format!("[{code}] {text}"),
        None => text.to_string(),
    }
}

/// What a waiting run waits for, and until when.
fn waiting(run: &RunSummary) -> Option<String> {
    let until = run.waiting_until.map(display_ms);
    match (&run.waiting_reason, until) {
        (Some(reason), Some(until)) => Some(format!("waits until {until}: {}", with_code(run, reason))),
        (Some(reason), None) => Some(format!("waits: {}", with_code(run, reason))),
        (None, Some(until)) => Some(format!("waits until {until}")),
        (None, None) => None,
    }
}

/// `nudge runs show ID`: one run whole.
pub(crate) async fn show(config: &Config, id: i64, as_json: bool) -> anyhow::Result<()> {
    let (store, _) = daemon::open(config).await?;
    let mut conn = store.pool.acquire().await?;
    let detail = app::run_detail(&mut conn, id).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
        return Ok(());
    }
    print_detail(&detail);
    Ok(())
}

fn print_detail(d: &RunDetail) {
    let run = &d.run;
    println!(
        "run {} of {} for contact {} ({}), triggered by event {}",
        run.id, run.workflow, run.contact_id, run.contact_name, d.event_id
    );
    println!(
        "  {}  steps taken {}  started {}  last {}",
        run.status,
        run.steps_taken,
        display_ms(run.started_at),
        display_ms(run.updated_at)
    );
    if let Some(wait) = waiting(run) {
        println!("  {wait}");
    }
    if let Some(outcome) = &run.outcome {
        println!("  outcome: {}", with_code(run, outcome));
    }
    println!("steps:");
    for s in &d.steps {
        println!(
            "  {:>2} {:<18} {}  {}",
            s.step,
            s.kind,
            display_ms(s.finished_at),
            s.detail
        );
    }
    println!("timers:");
    for t in &d.timers {
        let fired = t
            .fired_at
            .map_or_else(|| "pending".to_string(), |f| format!("fired {}", display_ms(f)));
        println!("  {:>6} {:<12} due {}  {fired}", t.id, t.kind, display_ms(t.due_at));
    }
    println!("messages:");
    for m in &d.messages {
        println!(
            "  {:>6} {:<10} {:<6} {:<13} to {}  {:?}  attempts {}",
            m.id, m.status, m.channel, m.category, m.recipient, m.subject, m.attempts
        );
        for a in &m.deliveries {
            println!(
                "         attempt {} {} {}  {}",
                a.attempt,
                display_ms(a.finished_at),
                a.outcome,
                a.detail
            );
        }
    }
}
