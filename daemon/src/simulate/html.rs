//! `--html`: the simulation as a self-contained page (inline SVG, no scripts,
//! no external requests), drawn as `nudge report --html` draws its page.

use std::collections::BTreeMap;

use super::Outcome;
use super::report::Summary;
use crate::clock::display_ms;
use crate::report::{bar_chart, escape};

impl Outcome {
    pub(crate) fn to_html(&self) -> String {
        let mut page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>nudge simulate {} .. {}</title>\
             <style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}td,th{{padding:2px 10px;text-align:left}}\
             .gained{{color:#070}}.lost{{color:#b00}}</style></head><body>\n\
             <h1>Simulation {} .. {}</h1>\n<p>{} days, calendar days in {}; contacts: {}; {} messages queued before</p>\n",
            escape(&display_ms(self.from)),
            escape(&display_ms(self.to)),
            escape(&display_ms(self.from)),
            escape(&display_ms(self.to)),
            self.days,
            escape(&self.time_zone),
            escape(self.contacts.as_deref().unwrap_or("all")),
            self.already_queued
        );
        summary_html(&mut page, &self.current);
        if let Some(candidate) = &self.candidate {
            summary_html(&mut page, candidate);
        }
        if let Some(differences) = &self.differences {
            page += "<h2>Difference, contact by contact</h2>\n<table><tr><th>contact</th><th></th><th>when</th>\
                     <th>workflow</th><th>step</th><th>template</th><th>to</th><th>subject</th></tr>\n";
            for d in differences {
                let (class, sign) = if d.gained { ("gained", "+") } else { ("lost", "-") };
                page += &format!(
                    "<tr class=\"{class}\"><td>{}</td><td>{sign}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td></tr>\n",
                    d.contact_id.map_or("-".to_string(), |c| c.to_string()),
                    escape(&display_ms(d.at)),
                    escape(&d.workflow),
                    d.step,
                    escape(&d.template),
                    escape(&d.recipient),
                    escape(&d.subject)
                );
            }
            page += "</table>\n";
        }
        page + "</body></html>\n"
    }
}

/// One simulation's part of the page: messages per day as a chart, then the tables.
fn summary_html(page: &mut String, s: &Summary) {
    let t = &s.totals;
    *page += &format!(
        "<h2>{}</h2>\n<p>{} messages, {} suppressed at delivery, {} held, {} left out</p>\n",
        escape(&s.workflows),
        t.messages,
        t.suppressed,
        t.held,
        t.left_out
    );
    let mut per_day: BTreeMap<&str, i64> = BTreeMap::new();
    for m in &s.messages {
        *per_day.entry(&m.day).or_default() += m.messages;
    }
    let rows: Vec<(String, f64, String)> = per_day
        .iter()
        .map(|(day, n)| (day.to_string(), *n as f64, n.to_string()))
        .collect();
    *page += &format!("<h3>Messages per day</h3>\n{}\n", bar_chart(&rows));
    *page += "<table><tr><th>day</th><th>workflow</th><th>variant</th><th>category</th><th>messages</th>\
              <th>suppressed</th></tr>\n";
    for m in &s.messages {
        *page += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&m.day),
            escape(&m.workflow),
            escape(if m.variant.is_empty() { "-" } else { &m.variant }),
            escape(&m.category),
            m.messages,
            m.suppressed
        );
    }
    *page += "</table>\n";
    for (title, rows) in [("Held", &s.held), ("Left out", &s.left_out)] {
        *page +=
            &format!("<h3>{title}</h3>\n<table><tr><th>day</th><th>workflow</th><th>why</th><th>count</th></tr>\n");
        for r in rows {
            *page += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&r.day),
                escape(&r.workflow),
                escape(&r.kind),
                r.count
            );
        }
        *page += "</table>\n";
    }
}
