//! `nudge report`: the measures of docs/domain.md §6 over a period, for all contacts
//! or those of one owner, value tier or source. Every measure is a count over
//! stored rows (history, follow-ups, inquiries, orders), so a figure can always
//! be traced back to the rows behind it; README.md defines each one.

mod html;
mod query;
mod text;

use jiff::civil::Date;
use serde::Serialize;

pub(crate) use html::{bar_chart, escape};
pub(crate) use query::{build, engagement_in};

use crate::model::{add_days, sub_days};
use crate::store::{Conn, Invalid};
use crate::workflow::{ClassificationRules, WorkflowSet};

/// Which contacts and which days a report covers. Dates are inclusive, in the
/// classification rules' time zone.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReportScope {
    pub(crate) from: Date,
    pub(crate) to: Date,
    pub(crate) owner: Option<String>,
    pub(crate) tier: Option<String>,
    pub(crate) source: Option<String>,
}

impl ReportScope {
    /// The scope of a report asked for with dates as text (`YYYY-MM-DD`); the period
    /// defaults to the 30 days up to today.
    pub(crate) fn new(
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
pub(crate) struct Report {
    pub(crate) scope: ReportScope,
    pub(crate) funnel: Vec<FunnelStage>,
    /// The step of the funnel with the lowest conversion, e.g. `intent -> sample`.
    pub(crate) bottleneck: Option<String>,
    pub(crate) measures: Vec<Measure>,
    pub(crate) overdue_by_owner: Vec<(String, i64)>,
    /// Messages to contacts per workflow, then per A/B variant of each.
    pub(crate) engagement: Vec<WorkflowEngagement>,
}

/// What became of one workflow's messages queued in the period, and of each A/B variant's.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkflowEngagement {
    pub(crate) workflow: String,
    #[serde(flatten)]
    pub(crate) all: Engagement,
    pub(crate) variants: Vec<VariantEngagement>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct VariantEngagement {
    pub(crate) variant: String,
    #[serde(flatten)]
    pub(crate) counts: Engagement,
}

/// Counts of messages: queued, delivered, and the delivered ones opened,
/// clicked, replied to (each message once however often), plus the raw counts.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub(crate) struct Engagement {
    pub(crate) sent: i64,
    pub(crate) delivered: i64,
    pub(crate) opened: i64,
    pub(crate) clicked: i64,
    pub(crate) replied: i64,
    /// Every pixel fetch and every click, repeats included.
    pub(crate) opens: i64,
    pub(crate) clicks: i64,
    /// The messages queued with tracking: an HTML part with the pixel and redirected links.
    pub(crate) tracked_messages: i64,
    /// Whether any could be tracked. When none could (text only, or `track =
    /// false`), the rates are null and the report says "not tracked": 0 % would
    /// claim that nobody opened them.
    #[sqlx(skip)]
    pub(crate) tracked: bool,
    /// opened / delivered, clicked / delivered.
    #[sqlx(skip)]
    pub(crate) open_rate_percent: Option<f64>,
    #[sqlx(skip)]
    pub(crate) click_rate_percent: Option<f64>,
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
        self.tracked_messages += other.tracked_messages;
    }

    fn with_rates(mut self) -> Engagement {
        self.tracked = self.tracked_messages > 0;
        let delivered = if self.tracked { self.delivered } else { 0 };
        self.open_rate_percent = percent(self.opened, delivered);
        self.click_rate_percent = percent(self.clicked, delivered);
        self
    }

    /// A rate as the report shows it: "not tracked" when no message could be.
    pub(crate) fn shown(&self, rate: Option<f64>) -> String {
        match rate {
            Some(p) => format!("{p:.1} %"),
            None if !self.tracked && self.sent > 0 => NOT_TRACKED.into(),
            None => "-".into(),
        }
    }
}

/// What the report shows for open and click rates when none of the messages could be tracked.
pub(crate) const NOT_TRACKED: &str = "not tracked";

/// How the funnel's "to next" counts, for the table and the page.
pub(crate) const TO_NEXT_NOTE: &str = "-> next: of the contacts that entered a stage in the period, those that \
     reached any later stage since; a contact that skips a stage is not counted in it";

/// One lifecycle stage: how many contacts are at it now, how many entered it in the period,
/// and the share of those that reached any later stage after entering it (never above 100 %).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FunnelStage {
    pub(crate) stage: String,
    pub(crate) now: i64,
    pub(crate) entered: i64,
    pub(crate) to_next_percent: Option<f64>,
}

/// A rate: numerator / denominator, against its target when one is set.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measure {
    pub(crate) name: &'static str,
    pub(crate) numerator: i64,
    pub(crate) denominator: i64,
    pub(crate) percent: Option<f64>,
    /// e.g. ">= 30 %".
    pub(crate) target: Option<String>,
    pub(crate) met: Option<bool>,
    /// Inquiries still within their SLA, left out of the SLA measure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pending: Option<i64>,
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
pub(crate) const TREND_WEEKS: i64 = 104;

/// The same measures week by week over a report's period (its last
/// `TREND_WEEKS`), for the trend chart.
pub(crate) async fn weekly_trend(
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
