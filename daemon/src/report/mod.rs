//! `nudge report`: the measures of docs/domain.md §6 over a period, for all contacts
//! or those of one owner, value tier or source. Every measure is a count over
//! stored rows (history, follow-ups, inquiries, orders), so a figure can always
//! be traced back to the rows behind it; README.md defines each one.

mod html;
mod query;
mod text;

use jiff::civil::Date;
use serde::Serialize;

pub use query::build;

use crate::model::{add_days, sub_days};
use crate::store::{Conn, Invalid};
use crate::workflow::{ClassificationRules, WorkflowSet};

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
