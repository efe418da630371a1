//! The classification itself, as a pure function of a customer's order facts, the
//! rules and today's date, so every boundary can be tested without a database.
//! All comparisons are by date in the rules' time zone: "six months without an
//! order" is reached on a calendar day, whatever the hour of the daily pass.

use jiff::civil::Date;

use crate::model::{add_days, sub_days};
use crate::workflow::ClassificationRules;

/// What classification needs to know about a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CustomerFacts {
    pub(crate) first_order: Date,
    pub(crate) last_order: Date,
    /// Base-currency minor units ordered in the value tier's window.
    pub(crate) value_window_amount: i64,
    /// Orders and their base amount in the RFM window.
    pub(crate) rfm_window_count: i64,
    pub(crate) rfm_window_amount: i64,
    /// The day of the latest logged follow-up, if any.
    pub(crate) last_follow_up: Option<Date>,
}

/// The computed classification of one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classified {
    pub(crate) value_tier: &'static str,
    pub(crate) recency: u32,
    pub(crate) frequency: u32,
    pub(crate) monetary: u32,
    pub(crate) rfm_grade: &'static str,
    pub(crate) behaviour: &'static str,
}

impl Classified {
    /// The scores behind the grade, as shown to people: `R3 F2 M3`.
    pub(crate) fn rfm_scores(&self) -> String {
        format!("R{} F{} M{}", self.recency, self.frequency, self.monetary)
    }
}

/// The first days excluded from the value and the RFM windows: a window of one
/// year on 2026-11-23 holds the orders dated after 2025-11-23.
pub(crate) fn window_starts(rules: &ClassificationRules, today: Date) -> (Date, Date) {
    (
        sub_days(today, rules.value_tier.window),
        sub_days(today, rules.rfm.window),
    )
}

pub(crate) fn classify(rules: &ClassificationRules, facts: &CustomerFacts, today: Date) -> Classified {
    let v = &rules.value_tier;
    let tenured = today >= add_days(facts.first_order, v.high_min_tenure);
    let value_tier = if facts.value_window_amount >= v.high_min && tenured {
        "high"
    } else if facts.value_window_amount >= v.medium_min {
        "medium"
    } else {
        "low"
    };

    let r = &rules.rfm;
    let recency = match r
        .recency
        .iter()
        .position(|&within| today < add_days(facts.last_order, within))
    {
        Some(bucket) => 3 - bucket as u32,
        None => 0,
    };
    let level = |value: i64, high: i64, medium: i64| match value {
        v if v >= high => 3,
        v if v >= medium => 2,
        v if v > 0 => 1,
        _ => 0,
    };
    let frequency = level(
        facts.rfm_window_count,
        i64::from(r.frequency_high),
        i64::from(r.frequency_medium),
    );
    let monetary = level(facts.rfm_window_amount, r.monetary_high, r.monetary_medium);
    let total = recency + frequency + monetary;
    let rfm_grade = if total >= r.grade_a {
        "A"
    } else if total >= r.grade_b {
        "B"
    } else {
        "C"
    };

    let b = &rules.behaviour;
    let last_activity = facts
        .last_follow_up
        .map_or(facts.last_order, |f| f.max(facts.last_order));
    let behaviour = if today < add_days(facts.last_order, b.dormant_after) {
        "active"
    } else if today >= add_days(last_activity, b.churned_after) {
        "churned"
    } else {
        "dormant"
    };
    Classified {
        value_tier,
        recency,
        frequency,
        monetary,
        rfm_grade,
        behaviour,
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;

    use super::*;
    use crate::workflow::WorkflowSet;

    fn rules() -> ClassificationRules {
        let source = include_str!("../../../workflows/classification.toml");
        let set = WorkflowSet::compile(vec![("wf/classification.toml".into(), source.into())], &[]).unwrap();
        (*set.classification.unwrap()).clone()
    }

    const TODAY: Date = date(2026, 11, 23);

    /// One order today worth `amount` (minor units), a customer since `first_order`.
    fn facts(first_order: Date, amount: i64) -> CustomerFacts {
        CustomerFacts {
            first_order,
            last_order: TODAY,
            value_window_amount: amount,
            rfm_window_count: 1,
            rfm_window_amount: amount,
            last_follow_up: None,
        }
    }

    #[test]
    fn high_needs_500_000_in_the_window() {
        let rules = rules();
        let long_ago = date(2020, 1, 1);
        assert_eq!(
            classify(&rules, &facts(long_ago, 49_999_999), TODAY).value_tier,
            "medium"
        );
        assert_eq!(classify(&rules, &facts(long_ago, 50_000_000), TODAY).value_tier, "high");
    }

    #[test]
    fn high_needs_a_full_year_as_a_customer() {
        let rules = rules();
        // 2025-11-24 to 2026-11-23 is 364 days; 2025-11-23 is 365.
        assert_eq!(
            classify(&rules, &facts(date(2025, 11, 24), 60_000_000), TODAY).value_tier,
            "medium"
        );
        assert_eq!(
            classify(&rules, &facts(date(2025, 11, 23), 60_000_000), TODAY).value_tier,
            "high"
        );
    }

    #[test]
    fn medium_starts_at_100_000() {
        let rules = rules();
        assert_eq!(classify(&rules, &facts(TODAY, 9_999_999), TODAY).value_tier, "low");
        assert_eq!(classify(&rules, &facts(TODAY, 10_000_000), TODAY).value_tier, "medium");
    }

    #[test]
    fn dormant_on_the_day_six_months_after_the_last_order() {
        let rules = rules();
        let mut f = facts(date(2026, 5, 23), 100);
        f.last_order = date(2026, 5, 23);
        assert_eq!(classify(&rules, &f, date(2026, 11, 22)).behaviour, "active");
        assert_eq!(classify(&rules, &f, date(2026, 11, 23)).behaviour, "dormant");
        // A year with neither an order nor a follow-up: churned; a follow-up keeps it dormant.
        assert_eq!(classify(&rules, &f, date(2027, 5, 23)).behaviour, "churned");
        f.last_follow_up = Some(date(2027, 1, 10));
        assert_eq!(classify(&rules, &f, date(2027, 5, 23)).behaviour, "dormant");
    }

    #[test]
    fn recency_buckets_of_one_three_and_six_months() {
        let rules = rules();
        let mut f = facts(date(2026, 1, 1), 100);
        for (last_order, expected) in [
            (date(2026, 10, 24), 3),
            (date(2026, 10, 23), 2),
            (date(2026, 8, 24), 2),
            (date(2026, 8, 23), 1),
            (date(2026, 5, 24), 1),
            (date(2026, 5, 23), 0),
        ] {
            f.last_order = last_order;
            assert_eq!(classify(&rules, &f, TODAY).recency, expected, "last order {last_order}");
        }
    }

    #[test]
    fn rfm_scores_add_up_to_a_grade() {
        let rules = rules();
        let mut f = facts(date(2025, 1, 1), 30_000_000);
        f.rfm_window_count = 6;
        let top = classify(&rules, &f, TODAY);
        assert_eq!(
            (top.recency, top.frequency, top.monetary, top.rfm_grade),
            (3, 3, 3, "A")
        );
        assert_eq!(top.rfm_scores(), "R3 F3 M3");
        f.rfm_window_count = 3;
        f.rfm_window_amount = 10_000_000;
        let middle = classify(&rules, &f, TODAY);
        assert_eq!((middle.frequency, middle.monetary, middle.rfm_grade), (2, 2, "B"));
        f.rfm_window_count = 1;
        f.rfm_window_amount = 100;
        f.last_order = date(2026, 2, 1);
        let low = classify(&rules, &f, TODAY);
        assert_eq!(
            (low.recency, low.frequency, low.monetary, low.rfm_grade),
            (0, 1, 1, "C")
        );
    }

    #[test]
    fn windows_hold_the_orders_after_their_start() {
        let (value_since, rfm_since) = window_starts(&rules(), TODAY);
        assert_eq!(value_since, date(2025, 11, 23));
        assert_eq!(rfm_since, date(2025, 11, 23));
    }
}
