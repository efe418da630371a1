//! `nudge report`: the measures of docs/domain.md §6 over a period, for all contacts
//! or those of one owner, value tier or source. Every measure is a count over
//! stored rows (history, follow-ups, inquiries, orders), so a figure can always
//! be traced back to the rows behind it; README.md defines each one.

use std::collections::HashMap;

use jiff::civil::Date;
use serde::Serialize;

use crate::model::{STAGES, add_days, add_span, sub_days};
use crate::store::{Conn, Invalid};
use crate::workflow::{ClassificationRules, Sla, Trigger, WorkflowSet};

/// Which contacts and which days a report covers. Dates are inclusive, in the
/// classification rules' time zone.
#[derive(Debug, Clone, Serialize)]
pub struct ReportScope {
    pub from: Date,
    pub to: Date,
    pub owner: Option<String>,
    pub tier: Option<String>,
    pub source: Option<String>,
}

impl ReportScope {
    /// The scope of a report asked for with dates as text (`YYYY-MM-DD`); the period
    /// defaults to the 30 days up to today.
    pub fn new(
        rules: &ClassificationRules,
        now: i64,
        from: Option<&str>,
        to: Option<&str>,
        [owner, tier, source]: [Option<String>; 3],
    ) -> Result<ReportScope, Invalid> {
        let date = |name: &str, text: Option<&str>, default: Date| match text.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(default),
            Some(t) => t
                .parse::<Date>()
                .map_err(|_| format!("`{t}` is not a date; write YYYY-MM-DD"))
                .and_then(crate::clock::check_day)
                .map_err(|e| Invalid(format!("`{name}`: {e}"))),
        };
        let to = date("to", to, rules.today(now))?;
        let from = date(
            "from",
            from,
            sub_days(to, jiff::Span::new().days(29)).max(crate::clock::FIRST_DAY),
        )?;
        if from > to {
            return Err(Invalid(format!("the period starts ({from}) after it ends ({to})")));
        }
        Ok(ReportScope {
            from,
            to,
            owner,
            tier,
            source,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scope: ReportScope,
    pub funnel: Vec<FunnelStage>,
    /// The step of the funnel with the lowest conversion, e.g. `intent -> sample`.
    pub bottleneck: Option<String>,
    pub measures: Vec<Measure>,
    pub overdue_by_owner: Vec<(String, i64)>,
    /// Messages to contacts per workflow, then per A/B variant of each.
    pub engagement: Vec<WorkflowEngagement>,
}

/// What became of one workflow's messages queued in the period, and of each A/B variant's.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowEngagement {
    pub workflow: String,
    #[serde(flatten)]
    pub all: Engagement,
    pub variants: Vec<VariantEngagement>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantEngagement {
    pub variant: String,
    #[serde(flatten)]
    pub counts: Engagement,
}

/// Counts of messages: queued, delivered, and the delivered ones opened,
/// clicked, replied to (each message once however often), plus the raw counts.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct Engagement {
    pub sent: i64,
    pub delivered: i64,
    pub opened: i64,
    pub clicked: i64,
    pub replied: i64,
    /// Every pixel fetch and every click, repeats included.
    pub opens: i64,
    pub clicks: i64,
    /// opened / delivered, clicked / delivered.
    #[sqlx(skip)]
    pub open_rate_percent: Option<f64>,
    #[sqlx(skip)]
    pub click_rate_percent: Option<f64>,
}

impl Engagement {
    fn add(&mut self, other: &Engagement) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.opened += other.opened;
        self.clicked += other.clicked;
        self.replied += other.replied;
        self.opens += other.opens;
        self.clicks += other.clicks;
    }

    fn with_rates(mut self) -> Engagement {
        self.open_rate_percent = percent(self.opened, self.delivered);
        self.click_rate_percent = percent(self.clicked, self.delivered);
        self
    }
}

/// Per workflow (and variant) over the messages to contacts queued in the period:
/// what happened to them since, up to now. A click counts as an open too: the
/// pixel of a mail read with images blocked never loads, but its link was followed.
async fn engagement(
    conn: &mut Conn,
    scope: &ReportScope,
    (from_ms, to_ms): (i64, i64),
) -> anyhow::Result<Vec<WorkflowEngagement>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        workflow: String,
        variant: Option<String>,
        #[sqlx(flatten)]
        counts: Engagement,
    }
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT r.workflow, o.variant, COUNT(*) AS sent, SUM(o.status = 'sent') AS delivered,
                SUM(o.status = 'sent' AND EXISTS (SELECT 1 FROM engagement e WHERE e.outbox_id = o.id
                                                   AND e.kind IN ('opened', 'clicked'))) AS opened,
                SUM(o.status = 'sent' AND EXISTS (SELECT 1 FROM engagement e WHERE e.outbox_id = o.id
                                                   AND e.kind = 'clicked')) AS clicked,
                SUM(o.status = 'sent' AND EXISTS (SELECT 1 FROM engagement e WHERE e.outbox_id = o.id
                                                   AND e.kind = 'replied')) AS replied,
                SUM((SELECT COUNT(*) FROM engagement e WHERE e.outbox_id = o.id AND e.kind = 'opened')) AS opens,
                SUM((SELECT COUNT(*) FROM engagement e WHERE e.outbox_id = o.id AND e.kind = 'clicked')) AS clicks
         FROM outbox o JOIN runs r ON r.id = o.run_id JOIN contacts c ON c.id = o.contact_id
         WHERE o.created_at >= ?4 AND o.created_at < ?5 AND o.category != 'internal' AND {FILTER}
         GROUP BY r.workflow, o.variant ORDER BY r.workflow, o.variant IS NOT NULL, o.variant"
    ))
    .bind(&scope.owner)
    .bind(&scope.tier)
    .bind(&scope.source)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(&mut *conn)
    .await?;
    let mut workflows: Vec<WorkflowEngagement> = Vec::new();
    for row in rows {
        if workflows.last().is_none_or(|w| w.workflow != row.workflow) {
            workflows.push(WorkflowEngagement {
                workflow: row.workflow.clone(),
                all: Engagement::default(),
                variants: Vec::new(),
            });
        }
        let w = workflows.last_mut().expect("pushed above");
        w.all.add(&row.counts);
        if let Some(variant) = row.variant {
            w.variants.push(VariantEngagement {
                variant,
                counts: row.counts.with_rates(),
            });
        }
    }
    for w in &mut workflows {
        w.all = std::mem::take(&mut w.all).with_rates();
    }
    Ok(workflows)
}

/// One lifecycle stage: how many contacts are at it now, how many entered it in the period,
/// and the share of those that entered the next stage in the period.
#[derive(Debug, Clone, Serialize)]
pub struct FunnelStage {
    pub stage: String,
    pub now: i64,
    pub entered: i64,
    pub to_next_percent: Option<f64>,
}

/// A rate: numerator / denominator, against its target when one is set.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    pub name: &'static str,
    pub numerator: i64,
    pub denominator: i64,
    pub percent: Option<f64>,
    /// e.g. ">= 30 %".
    pub target: Option<String>,
    pub met: Option<bool>,
    /// Inquiries still within their SLA, left out of the SLA measure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
}

fn percent(numerator: i64, denominator: i64) -> Option<f64> {
    (denominator > 0).then(|| (numerator as f64 * 1000.0 / denominator as f64).round() / 10.0)
}

impl Measure {
    fn new(name: &'static str, numerator: i64, denominator: i64) -> Measure {
        Measure {
            name,
            numerator,
            denominator,
            percent: percent(numerator, denominator),
            target: None,
            met: None,
            pending: None,
        }
    }

    /// Sets a target: at least (`at_least`) or at most `target_percent`.
    fn target(mut self, target_percent: u32, at_least: bool) -> Measure {
        self.target = Some(format!("{} {target_percent} %", if at_least { ">=" } else { "<=" }));
        // Compared exactly: numerator / denominator against target / 100.
        self.met = (self.denominator > 0).then(|| {
            let (lhs, rhs) = (self.numerator * 100, i64::from(target_percent) * self.denominator);
            if at_least { lhs >= rhs } else { lhs <= rhs }
        });
        self
    }
}

/// The contact filter every query shares: ?1 owner, ?2 value tier, ?3 source (NULL: any);
/// ?4 and ?5 are the period's bounds in unix ms, [from, to).
const FILTER: &str =
    "(?1 IS NULL OR c.owner = ?1) AND (?2 IS NULL OR c.value_tier = ?2) AND (?3 IS NULL OR c.source = ?3)";

/// The stage a contact was created at: the one its first stage change left, else the one it is at.
const FIRST_STAGE: &str =
    "COALESCE((SELECT f.from_value FROM contact_history f WHERE f.contact_id = c.id AND f.field = 'stage'
                                     ORDER BY f.at, f.id LIMIT 1), c.stage)";

/// Computes the report as of `now`. `rules` give the time zone and targets; `set`
/// gives the inquiry SLA (of the first enabled `inquiry_received` workflow that has one).
pub async fn build(
    conn: &mut Conn,
    rules: &ClassificationRules,
    set: &WorkflowSet,
    scope: ReportScope,
    now: i64,
) -> anyhow::Result<Report> {
    let start_ms = |d: Date| {
        d.to_zoned(rules.time_zone.clone())
            .map(|z| z.timestamp().as_millisecond())
    };
    let (from_ms, to_ms) = (
        start_ms(scope.from)?,
        start_ms(add_days(scope.to, jiff::Span::new().days(1)))?,
    );
    macro_rules! bound {
        ($query:expr) => {
            $query
                .bind(&scope.owner)
                .bind(&scope.tier)
                .bind(&scope.source)
                .bind(from_ms)
                .bind(to_ms)
        };
    }

    // What one pass over the contacts tells, per stage now: how many, how many were
    // created in the period, are customers, have churned.
    let by_stage: Vec<(String, i64, i64, i64, i64)> = bound!(sqlx::query_as(&format!(
        "SELECT c.stage, COUNT(*), SUM(c.created_at >= ?4 AND c.created_at < ?5), SUM(c.customer_since IS NOT NULL),
                COUNT(CASE WHEN c.behaviour = 'churned' THEN 1 END)
         FROM contacts c WHERE {FILTER} GROUP BY c.stage"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let now_by_stage: HashMap<String, i64> = by_stage.iter().map(|r| (r.0.clone(), r.1)).collect();
    let (customers, churned) = by_stage.iter().fold((0, 0), |(c, n), r| (c + r.3, n + r.4));

    // Funnel: entries into each stage in the period: a contact created in the period
    // enters its first stage (the one its first stage change left, else the one it is
    // at), and every stage change enters a stage; a contact counts once per stage.
    let mut entered_by_stage: HashMap<String, i64> = by_stage.iter().map(|r| (r.0.clone(), r.2)).collect();
    // Contacts created in the period that changed stage since: their first stage is not
    // the one they are at. Found from the stage changes, which are few beside the contacts.
    let moved: Vec<(String, String)> = bound!(sqlx::query_as(&format!(
        "SELECT c.stage, {FIRST_STAGE} FROM contacts c
         WHERE c.id IN (SELECT h.contact_id FROM contact_history h WHERE h.field = 'stage')
           AND c.created_at >= ?4 AND c.created_at < ?5 AND {FILTER}"
    )))
    .fetch_all(&mut *conn)
    .await?;
    for (now_at, first) in moved {
        *entered_by_stage.entry(first).or_default() += 1;
        *entered_by_stage.entry(now_at).or_default() -= 1;
    }
    // Stage changes in the period, but not back into the stage a contact created in the
    // period entered first (counted already).
    let changes: Vec<(String, i64)> = bound!(sqlx::query_as(&format!(
        "SELECT h.to_value, COUNT(DISTINCT h.contact_id) FROM contact_history h JOIN contacts c ON c.id = h.contact_id
         WHERE h.field = 'stage' AND h.at >= ?4 AND h.at < ?5 AND {FILTER}
           AND NOT (c.created_at >= ?4 AND c.created_at < ?5 AND h.to_value IS {FIRST_STAGE})
         GROUP BY h.to_value"
    )))
    .fetch_all(&mut *conn)
    .await?;
    for (stage, n) in changes {
        *entered_by_stage.entry(stage).or_default() += n;
    }
    let count = |by_stage: &HashMap<String, i64>, stage: &str| by_stage.get(stage).copied().unwrap_or(0);
    // The side exits (dormant, churned) are not steps of the funnel.
    let steps = &STAGES[..STAGES.iter().position(|s| *s == "dormant").unwrap_or(STAGES.len())];
    let mut funnel = Vec::new();
    let mut bottleneck: Option<(f64, String)> = None;
    for (i, stage) in STAGES.iter().enumerate() {
        let entered = count(&entered_by_stage, stage);
        let next = steps.get(i + 1);
        let to_next_percent = next.and_then(|n| percent(count(&entered_by_stage, n), entered));
        if let (Some(p), Some(n)) = (to_next_percent, next)
            && bottleneck.as_ref().is_none_or(|(worst, _)| p < *worst)
        {
            bottleneck = Some((p, format!("{stage} -> {n}")));
        }
        funnel.push(FunnelStage {
            stage: stage.to_string(),
            now: count(&now_by_stage, stage),
            entered,
            to_next_percent,
        });
    }

    // Response rate: of the contacts followed up in the period, those who answered:
    // a follow-up in the period records their feedback, or they sent an inquiry after it.
    let (followed_up, responded): (i64, Option<i64>) = bound!(sqlx::query_as(&format!(
        "SELECT COUNT(*), SUM(feedback OR EXISTS (SELECT 1 FROM inquiries i WHERE i.contact_id = f.contact_id
                                                  AND i.received_at > f.first_at AND i.received_at < ?5))
         FROM (SELECT f.contact_id, MIN(f.at) AS first_at, MAX(f.feedback != '') AS feedback
               FROM follow_ups f JOIN contacts c ON c.id = f.contact_id
               WHERE f.at >= ?4 AND f.at < ?5 AND {FILTER} GROUP BY f.contact_id) f"
    )))
    .fetch_one(&mut *conn)
    .await?;

    // Conversion rate: follow-ups in the period after which the contact ordered (on the
    // follow-up's day or within the conversion window after it).
    let follow_ups: Option<String> = bound!(sqlx::query_scalar(&format!(
        "SELECT json_group_array(json_array(f.contact_id, f.at)) FROM follow_ups f JOIN contacts c ON c.id = f.contact_id
         WHERE f.at >= ?4 AND f.at < ?5 AND {FILTER}"
    )))
    .fetch_one(&mut *conn)
    .await?;
    let follow_ups: Vec<(i64, i64)> = serde_json::from_str(follow_ups.as_deref().unwrap_or("[]"))?;
    let window = rules.report.as_ref().map(|r| r.conversion_window);
    // Each follow-up with the days (in the rules' zone) an order would count on.
    let spans: Vec<(i64, String, String)> = follow_ups
        .iter()
        .map(|&(contact_id, at)| {
            let day = rules.date_of(at);
            let last_day = window.map_or(day, |w| add_days(day, w));
            (contact_id, day.to_string(), last_day.to_string())
        })
        .collect();
    let converted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM json_each(?) AS j WHERE EXISTS (
             SELECT 1 FROM orders o WHERE o.contact_id = j.value ->> 0
                                      AND o.ordered_on >= j.value ->> 1 AND o.ordered_on <= j.value ->> 2)",
    )
    .bind(serde_json::to_string(&spans)?)
    .fetch_one(&mut *conn)
    .await?;

    // Inquiry SLA: inquiries received in the period that were answered within the SLA of
    // the contact's value tier; those still within it are pending and left out.
    let sla = set.workflows.iter().find_map(|w| match &w.trigger {
        Trigger::InquiryReceived { sla: Some(sla) } if w.enabled => Some(sla.clone()),
        _ => None,
    });
    let inquiries: Vec<(i64, Option<i64>, Option<String>)> = bound!(sqlx::query_as(&format!(
        "SELECT i.received_at, i.answered_at, c.value_tier FROM inquiries i JOIN contacts c ON c.id = i.contact_id
         WHERE i.received_at >= ?4 AND i.received_at < ?5 AND {FILTER}"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let sla_measure = sla.map(|sla: Sla| {
        let (mut in_time, mut missed, mut pending) = (0, 0, 0);
        for (received, answered, tier) in &inquiries {
            let deadline = add_span(*received, sla.for_tier(tier.as_deref()), "UTC");
            match answered {
                Some(a) if *a <= deadline => in_time += 1,
                None if now <= deadline => pending += 1,
                _ => missed += 1,
            }
        }
        let mut m = Measure::new("inquiry SLA compliance", in_time, in_time + missed);
        m.pending = Some(pending);
        m
    });

    let overdue_by_owner: Vec<(String, i64)> = bound!(sqlx::query_as(&format!(
        "SELECT c.owner, COUNT(*) FROM contacts c
         WHERE c.next_follow_up_at IS NOT NULL AND c.next_follow_up_at <= ?6 AND {FILTER} AND ?4 = ?4 AND ?5 = ?5
         GROUP BY c.owner ORDER BY COUNT(*) DESC, c.owner"
    )))
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;

    let mut response = Measure::new("response rate", responded.unwrap_or(0), followed_up);
    let mut conversion = Measure::new("conversion rate", converted, follow_ups.len() as i64);
    // Churn rate: of the customers (contacts with orders), those churned now.
    let mut churn = Measure::new("churn rate", churned, customers);
    if let Some(t) = &rules.report {
        response = response.target(t.response_rate_min, true);
        conversion = conversion.target(t.conversion_rate_min, true);
        churn = churn.target(t.churn_rate_max, false);
    }
    let mut measures = vec![response, conversion, churn];
    measures.extend(sla_measure);
    let engagement = engagement(conn, &scope, (from_ms, to_ms)).await?;
    Ok(Report {
        scope,
        funnel,
        bottleneck: bottleneck.map(|(p, step)| format!("{step} ({p:.1} %)")),
        measures,
        overdue_by_owner,
        engagement,
    })
}

impl Report {
    /// The report as a terminal table.
    pub fn to_table(&self) -> String {
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
        let rate = |p: Option<f64>| p.map(|p| format!("{p:.1} %")).unwrap_or_else(|| "-".into());
        let line = |label: &str, e: &Engagement| {
            format!(
                "  {label:<28}{:>6}{:>10}{:>14}{:>14}{:>8}{:>11}{:>11}\n",
                e.sent,
                e.delivered,
                format!("{} ({})", e.opened, e.opens),
                format!("{} ({})", e.clicked, e.clicks),
                e.replied,
                rate(e.open_rate_percent),
                rate(e.click_rate_percent)
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
    pub fn to_csv(&self) -> anyhow::Result<String> {
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
                    w.write_record([figure, &name, &pct(p), &n.to_string(), &e.delivered.to_string(), "", ""])?;
                }
            }
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    }
}

/// The weeks the trend chart shows at most: those at the end of the period.
pub const TREND_WEEKS: i64 = 104;

/// The same measures week by week over a report's period (its last
/// `TREND_WEEKS`), for the trend chart.
pub async fn weekly_trend(
    conn: &mut Conn,
    rules: &ClassificationRules,
    set: &WorkflowSet,
    scope: &ReportScope,
    now: i64,
) -> anyhow::Result<Vec<Report>> {
    let mut weeks = Vec::new();
    // A chart of more weeks than this is unreadable (and costs a report each).
    let first = sub_days(scope.to, jiff::Span::new().days(7 * TREND_WEEKS - 1));
    let mut from = scope.from.max(first);
    while from <= scope.to {
        let to = add_days(from, jiff::Span::new().days(6)).min(scope.to);
        let week = ReportScope {
            from,
            to,
            ..scope.clone()
        };
        weeks.push(build(conn, rules, set, week, now).await?);
        from = add_days(to, jiff::Span::new().days(1));
    }
    Ok(weeks)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Horizontal bars, one per (label, value, caption), scaled to the largest value.
fn bar_chart(rows: &[(String, f64, String)]) -> String {
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
    pub fn to_html(&self, weeks: &[Report]) -> String {
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
        page += &bar_chart(&steps);
        page += &format!(
            "\n<p>Bottleneck: {}</p>\n<h2>Measures</h2>\n<table><tr><th>measure</th><th>value</th><th>target</th></tr>\n",
            escape(self.bottleneck.as_deref().unwrap_or("-"))
        );
        for m in &self.measures {
            let value = m
                .percent
                .map(|p| format!("{p:.1} % ({}/{})", m.numerator, m.denominator))
                .unwrap_or_else(|| "-".into());
            let class = if m.met == Some(false) { " class=\"missed\"" } else { "" };
            page += &format!(
                "<tr{class}><td>{}</td><td>{value}</td><td>{}</td></tr>\n",
                m.name,
                escape(m.target.as_deref().unwrap_or("-"))
            );
        }
        page += "</table>\n<h2>Trend by week</h2>\n";
        if weeks.first().is_some_and(|w| w.scope.from > s.from) {
            page += &format!("<p>The last {TREND_WEEKS} weeks of the period.</p>\n");
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
            page += &format!("<h3>{}</h3>\n{}\n", m.name, bar_chart(&rows));
        }
        page += "<h2>Overdue follow-ups by owner</h2>\n<table>\n";
        for (owner, n) in &self.overdue_by_owner {
            page += &format!("<tr><td>{}</td><td>{n}</td></tr>\n", escape(owner));
        }
        page += "</table>\n<h2>Messages by workflow and A/B variant</h2>\n<table><tr><th>workflow / variant</th>\
                 <th>sent</th><th>delivered</th><th>opened</th><th>clicked</th><th>replies</th>\
                 <th>open rate</th><th>click rate</th></tr>\n";
        let rate = |p: Option<f64>| p.map(|p| format!("{p:.1} %")).unwrap_or_else(|| "-".into());
        for w in &self.engagement {
            let groups = std::iter::once((escape(&w.workflow), &w.all)).chain(
                w.variants
                    .iter()
                    .map(|v| (format!("&nbsp;&nbsp;variant {}", escape(&v.variant)), &v.counts)),
            );
            for (label, e) in groups {
                page += &format!(
                    "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    e.sent,
                    e.delivered,
                    e.opened,
                    e.opens,
                    e.clicked,
                    e.clicks,
                    e.replied,
                    rate(e.open_rate_percent),
                    rate(e.click_rate_percent)
                );
            }
        }
        page + "</table>\n</body></html>\n"
    }
}
