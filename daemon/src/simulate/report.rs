//! What a simulation found, read from its copy: messages per day by workflow,
//! A/B variant and category, the runs held and the messages left out; as text
//! or JSON, and every message as CSV for `--messages`.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::clock::display_ms;
use crate::store::{self, MessageDifference, SimulatedCount, SimulatedReason, Store};

/// Messages read at a time for `--messages`.
const EXPORT_BATCH: i64 = 1000;

/// What one simulation found.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// The workflow folder simulated.
    pub(crate) workflows: String,
    pub(crate) totals: Totals,
    /// Messages per day, workflow, A/B variant ("" without a test) and category.
    pub(crate) messages: Vec<SimulatedCount>,
    /// Runs held by a send window, a frequency cap, working hours or an A/B delay.
    pub(crate) held: Vec<SimulatedReason>,
    /// Messages a step left out: consent withheld, address suppressed, no address.
    pub(crate) left_out: Vec<SimulatedReason>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Totals {
    pub(crate) messages: i64,
    /// Queued but suppressed when delivery would claim them.
    pub(crate) suppressed: i64,
    pub(crate) held: i64,
    pub(crate) left_out: i64,
}

impl Summary {
    pub(crate) async fn read(store: &Store, workflows: &Path) -> anyhow::Result<Summary> {
        let mut conn = store.pool.acquire().await?;
        let messages = store::simulated_counts(&mut conn).await?;
        let held = store::simulated_reasons(&mut conn, true).await?;
        let left_out = store::simulated_reasons(&mut conn, false).await?;
        let totals = Totals {
            messages: messages.iter().map(|m| m.messages).sum(),
            suppressed: messages.iter().map(|m| m.suppressed).sum(),
            held: held.iter().map(|h| h.count).sum(),
            left_out: left_out.iter().map(|l| l.count).sum(),
        };
        Ok(Summary {
            workflows: workflows.display().to_string(),
            totals,
            messages,
            held,
            left_out,
        })
    }

    /// The summary as a table per part.
    pub(crate) fn to_text(&self) -> String {
        let t = &self.totals;
        let mut out = format!(
            "Workflows {}: {} messages, {} suppressed at delivery, {} held, {} left out\n",
            self.workflows, t.messages, t.suppressed, t.held, t.left_out
        );
        out += "\nMessages per day\n";
        out += &format!(
            "  {:<10}  {:<24} {:<10} {:<13} {:>8} {:>10}\n",
            "day", "workflow", "variant", "category", "messages", "suppressed"
        );
        for m in &self.messages {
            let variant = if m.variant.is_empty() { "-" } else { &m.variant };
            out += &format!(
                "  {:<10}  {:<24} {:<10} {:<13} {:>8} {:>10}\n",
                m.day, m.workflow, variant, m.category, m.messages, m.suppressed
            );
        }
        reasons_table(
            &mut out,
            "Held (send window, frequency cap, working hours, A/B delay)",
            &self.held,
        );
        reasons_table(
            &mut out,
            "Left out (consent withheld, suppressed, no address)",
            &self.left_out,
        );
        out
    }
}

fn reasons_table(out: &mut String, title: &str, rows: &[SimulatedReason]) {
    *out += &format!("\n{title}\n");
    if rows.is_empty() {
        *out += "  none\n";
    }
    for r in rows {
        *out += &format!("  {:<10}  {:<24} {:<16} {:>8}\n", r.day, r.workflow, r.kind, r.count);
    }
}

/// The differences of `--against`, contact by contact, as text.
pub(crate) fn differences_text(differences: &[MessageDifference], candidate: &Path) -> String {
    let gained = differences.iter().filter(|d| d.gained).count();
    let mut out = format!(
        "\nWith {}: {gained} messages gained (+), {} lost (-)\n",
        candidate.display(),
        differences.len() - gained
    );
    let mut contact = None;
    for d in differences {
        if contact != Some(d.contact_id) {
            contact = Some(d.contact_id);
            let id = d.contact_id.map_or("-".to_string(), |c| c.to_string());
            out += &format!("  contact {id}\n");
        }
        out += &format!(
            "    {} {}  {} step {} {} to {}: {:?}\n",
            if d.gained { '+' } else { '-' },
            display_ms(d.at),
            d.workflow,
            d.step,
            d.template,
            d.recipient,
            d.subject
        );
    }
    out
}

/// Writes every message of the simulation to `file` as CSV, reading them in batches.
pub(crate) async fn export_messages(store: &Store, file: &Path) -> anyhow::Result<()> {
    let out = std::fs::File::create(file).with_context(|| format!("create {}", file.display()))?;
    let mut out = std::io::BufWriter::new(out);
    writeln!(
        out,
        "day,at,contact_id,workflow,step,template,variant,category,recipient,subject,suppressed"
    )?;
    let mut conn = store.pool.acquire().await?;
    let mut after = 0;
    loop {
        let batch = store::simulated_messages(&mut conn, after, EXPORT_BATCH).await?;
        for m in &batch {
            let fields = [
                m.day.clone(),
                crate::clock::display_ms(m.at),
                m.contact_id.map(|c| c.to_string()).unwrap_or_default(),
                m.workflow.clone(),
                m.step.to_string(),
                m.template.clone(),
                m.variant.clone(),
                m.category.clone(),
                m.recipient.clone(),
                m.subject.clone(),
                m.suppressed.clone().unwrap_or_default(),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            writeln!(out, "{}", line.join(","))?;
        }
        match batch.last() {
            Some(last) if batch.len() as i64 == EXPORT_BATCH => after = last.outbox_id,
            _ => break,
        }
    }
    out.flush().with_context(|| format!("write {}", file.display()))?;
    Ok(())
}

/// A CSV field, quoted when it needs to be.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
