//! The report as a terminal table and as CSV.

use super::{Engagement, NOT_TRACKED, Report, TO_NEXT_NOTE};

impl Report {
    /// The report as a terminal table.
    pub(crate) fn to_table(&self) -> String {
        let s = &self.scope;
        let any = |v: &Option<String>| v.clone().unwrap_or_else(|| "all".into());
        let mut out = format!(
            "report {} .. {} (owner {}, tier {}, source {})\n\nfunnel            now  entered  -> next\n",
            s.from,
            s.to,
            any(&s.owner),
            any(&s.tier),
            any(&s.source)
        );
        for f in &self.funnel {
            let next = f.to_next_percent.map(|p| format!("{p:.1} %")).unwrap_or_default();
            out += &format!("  {:<14}{:>5}{:>9}  {next:>7}\n", f.stage, f.now, f.entered);
        }
        out += &format!("  ({TO_NEXT_NOTE})\n");
        out += &format!(
            "bottleneck: {}\n\nmeasure                   value                  target\n",
            self.bottleneck.as_deref().unwrap_or("-")
        );
        for m in &self.measures {
            let value = match m.percent {
                Some(p) => format!("{p:.1} % ({}/{})", m.numerator, m.denominator),
                None => "- (0/0)".to_string(),
            };
            let verdict = match m.met {
                Some(true) => "  met",
                Some(false) => "  MISSED",
                None => "",
            };
            let pending = m
                .pending
                .filter(|p| *p > 0)
                .map(|p| format!("  ({p} pending)"))
                .unwrap_or_default();
            out += &format!(
                "  {:<24}{value:<23}{}{verdict}{pending}\n",
                m.name,
                m.target.as_deref().unwrap_or("-")
            );
        }
        out += "\noverdue follow-ups by owner\n";
        if self.overdue_by_owner.is_empty() {
            out += "  none\n";
        }
        for (owner, n) in &self.overdue_by_owner {
            out += &format!("  {:<32}{n:>6}\n", if owner.is_empty() { "(no owner)" } else { owner });
        }
        out += "\nmessages by workflow and A/B variant (opened, clicked: unique messages; all opens, clicks)\n";
        if self.engagement.is_empty() {
            out += "  none\n";
        } else {
            out += &format!(
                "  {:<28}{:>6}{:>10}{:>14}{:>14}{:>8}{:>11}{:>11}\n",
                "workflow / variant", "sent", "delivered", "opened", "clicked", "replies", "open rate", "click rate"
            );
        }
        let line = |label: &str, e: &Engagement| {
            format!(
                "  {label:<28}{:>6}{:>10}{:>14}{:>14}{:>8}{:>11}{:>11}\n",
                e.sent,
                e.delivered,
                format!("{} ({})", e.opened, e.opens),
                format!("{} ({})", e.clicked, e.clicks),
                e.replied,
                e.shown(e.open_rate_percent),
                e.shown(e.click_rate_percent)
            )
        };
        for w in &self.engagement {
            out += &line(&w.workflow, &w.all);
            for v in &w.variants {
                out += &line(&format!("  variant {}", v.variant), &v.counts);
            }
        }
        out
    }

    /// The report as CSV: one row per figure.
    pub(crate) fn to_csv(&self) -> anyhow::Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["section", "name", "value", "numerator", "denominator", "target", "met"])?;
        let pct = |p: Option<f64>| p.map(|p| format!("{p:.1}")).unwrap_or_default();
        for f in &self.funnel {
            let stage = f.stage.as_str();
            w.write_record(["funnel now", stage, &f.now.to_string(), "", "", "", ""])?;
            w.write_record(["funnel entered", stage, &f.entered.to_string(), "", "", "", ""])?;
            w.write_record(["funnel to next %", stage, &pct(f.to_next_percent), "", "", "", ""])?;
        }
        for m in &self.measures {
            w.write_record([
                "measure %",
                m.name,
                &pct(m.percent),
                &m.numerator.to_string(),
                &m.denominator.to_string(),
                m.target.as_deref().unwrap_or(""),
                &m.met.map(|b| b.to_string()).unwrap_or_default(),
            ])?;
        }
        for (owner, n) in &self.overdue_by_owner {
            w.write_record(["overdue follow-ups", owner, &n.to_string(), "", "", "", ""])?;
        }
        // One row per figure of each workflow (`name`) and variant (`name/variant`).
        for wf in &self.engagement {
            let groups = std::iter::once((wf.workflow.clone(), &wf.all)).chain(
                wf.variants
                    .iter()
                    .map(|v| (format!("{}/{}", wf.workflow, v.variant), &v.counts)),
            );
            for (name, e) in groups {
                for (figure, n) in [
                    ("messages sent", e.sent),
                    ("messages delivered", e.delivered),
                    ("messages opened", e.opened),
                    ("messages clicked", e.clicked),
                    ("messages replied", e.replied),
                    ("opens", e.opens),
                    ("clicks", e.clicks),
                ] {
                    w.write_record([figure, &name, &n.to_string(), "", "", "", ""])?;
                }
                for (figure, p, n) in [
                    ("open rate %", e.open_rate_percent, e.opened),
                    ("click rate %", e.click_rate_percent, e.clicked),
                ] {
                    let shown = if e.tracked { pct(p) } else { NOT_TRACKED.to_string() };
                    w.write_record([figure, &name, &shown, &n.to_string(), &e.delivered.to_string(), "", ""])?;
                }
            }
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    }
}
