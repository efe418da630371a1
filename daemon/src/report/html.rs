//! The report as a self-contained HTML page with inline SVG charts.

use super::{Report, TO_NEXT_NOTE, TREND_WEEKS};

/// Text made safe for HTML (shared with `nudge simulate`'s page).
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Horizontal bars, one per (label, value, caption), scaled to the largest value.
pub(crate) fn bar_chart(rows: &[(String, f64, String)]) -> String {
    const ROW: usize = 26;
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let mut svg = format!(
        "<svg width=\"760\" height=\"{}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">",
        rows.len() * ROW + 4
    );
    for (i, (label, value, caption)) in rows.iter().enumerate() {
        let y = i * ROW;
        let width = (value / max * 380.0).round();
        svg += &format!(
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>\
             <rect x=\"130\" y=\"{}\" width=\"{width}\" height=\"18\" fill=\"#3b7dd8\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"13\">{}</text>",
            y + 15,
            escape(label),
            y + 2,
            136.0 + width,
            y + 15,
            escape(caption)
        );
    }
    svg + "</svg>"
}

impl Report {
    /// A self-contained page (inline SVG, no scripts) a manager can open: the funnel,
    /// the measures against their targets, and their trend week by week.
    pub(crate) fn to_html(&self, weeks: &[Report]) -> String {
        let s = &self.scope;
        let any = |v: &Option<String>| escape(v.as_deref().unwrap_or("all"));
        let mut page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>nudge report {} .. {}</title>\
             <style>body{{font-family:sans-serif;max-width:760px;margin:2em auto}}td,th{{padding:2px 10px;text-align:left}}\
             .missed{{color:#b00}}</style></head><body>\n<h1>Report {} .. {}</h1>\n\
             <p>owner {}, tier {}, source {}</p>\n<h2>Funnel: contacts entering each stage</h2>\n",
            s.from,
            s.to,
            s.from,
            s.to,
            any(&s.owner),
            any(&s.tier),
            any(&s.source)
        );
        self.html_funnel(&mut page);
        self.html_measures(&mut page, weeks);
        page += "<h2>Overdue follow-ups by owner</h2>\n<table>\n";
        for (owner, n) in &self.overdue_by_owner {
            page += &format!("<tr><td>{}</td><td>{n}</td></tr>\n", escape(owner));
        }
        self.html_engagement(&mut page);
        page + "</table>\n</body></html>\n"
    }

    /// The funnel's chart (its steps, not the side exits) and its bottleneck.
    fn html_funnel(&self, page: &mut String) {
        let steps: Vec<(String, f64, String)> = self
            .funnel
            .iter()
            .filter(|f| f.stage != "dormant" && f.stage != "churned")
            .map(|f| {
                let next = f
                    .to_next_percent
                    .map(|p| format!(", {p:.1} % to the next"))
                    .unwrap_or_default();
                (f.stage.clone(), f.entered as f64, format!("{}{next}", f.entered))
            })
            .collect();
        *page += &bar_chart(&steps);
        *page += &format!("\n<p>{}</p>", escape(TO_NEXT_NOTE));
        *page += &format!(
            "\n<p>Bottleneck: {}</p>\n",
            escape(self.bottleneck.as_deref().unwrap_or("-"))
        );
    }

    /// The measures against their targets, then each one's chart week by week.
    fn html_measures(&self, page: &mut String, weeks: &[Report]) {
        *page += "<h2>Measures</h2>\n<table><tr><th>measure</th><th>value</th><th>target</th></tr>\n";
        for m in &self.measures {
            let value = m
                .percent
                .map(|p| format!("{p:.1} % ({}/{})", m.numerator, m.denominator))
                .unwrap_or_else(|| "-".into());
            let class = if m.met == Some(false) { " class=\"missed\"" } else { "" };
            *page += &format!(
                "<tr{class}><td>{}</td><td>{value}</td><td>{}</td></tr>\n",
                m.name,
                escape(m.target.as_deref().unwrap_or("-"))
            );
        }
        *page += "</table>\n<h2>Trend by week</h2>\n";
        if weeks.first().is_some_and(|w| w.scope.from > self.scope.from) {
            *page += &format!("<p>The last {TREND_WEEKS} weeks of the period.</p>\n");
        }
        for (i, m) in self.measures.iter().enumerate() {
            let rows: Vec<(String, f64, String)> = weeks
                .iter()
                .map(|w| {
                    let wm = &w.measures[i];
                    let caption = wm
                        .percent
                        .map(|p| format!("{p:.1} % ({}/{})", wm.numerator, wm.denominator))
                        .unwrap_or_else(|| "-".into());
                    (w.scope.from.to_string(), wm.percent.unwrap_or(0.0), caption)
                })
                .collect();
            *page += &format!("<h3>{}</h3>\n{}\n", m.name, bar_chart(&rows));
        }
    }

    /// The table of messages by workflow and A/B variant (left open).
    fn html_engagement(&self, page: &mut String) {
        *page += "</table>\n<h2>Messages by workflow and A/B variant</h2>\n<table><tr><th>workflow / variant</th>\
                  <th>sent</th><th>delivered</th><th>opened</th><th>clicked</th><th>replies</th>\
                  <th>open rate</th><th>click rate</th></tr>\n";
        for w in &self.engagement {
            let groups = std::iter::once((escape(&w.workflow), &w.all)).chain(
                w.variants
                    .iter()
                    .map(|v| (format!("&nbsp;&nbsp;variant {}", escape(&v.variant)), &v.counts)),
            );
            for (label, e) in groups {
                *page += &format!(
                    "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    e.sent,
                    e.delivered,
                    e.opened,
                    e.opens,
                    e.clicked,
                    e.clicks,
                    e.replied,
                    e.shown(e.open_rate_percent),
                    e.shown(e.click_rate_percent)
                );
            }
        }
    }
}
