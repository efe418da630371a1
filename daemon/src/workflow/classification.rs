//! `classification.toml`: the rules that turn a customer's orders into a value
//! tier, an RFM grade and a behaviour (docs/domain.md §1). Every threshold is a value in
//! the file; this module reads it with spans and checks what serde cannot (money,
//! durations, time zones, thresholds in the right order), reporting every problem
//! at its file:line:col like the other workflow files.

use std::collections::BTreeMap;
use std::ops::{Range, RangeInclusive};

use jiff::Span;
use jiff::civil::Date;
use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::Diagnostic;
use super::parse::check::{Problems, at, duration, serde_problem};
use crate::model::{add_days, money};

/// The compiled rules. Amounts are minor units of the base currency.
#[derive(Debug, Clone)]
pub(crate) struct ClassificationRules {
    /// Where business days begin and end: order dates, windows and the daily pass.
    pub(crate) time_zone: jiff::tz::TimeZone,
    pub(crate) base_currency: String,
    /// Fixed rates into the base currency, in millionths (see `model::money`).
    pub(crate) rates: BTreeMap<String, i128>,
    pub(crate) value_tier: ValueTierRules,
    pub(crate) rfm: RfmRules,
    pub(crate) behaviour: BehaviourRules,
    /// Targets of the measures of `nudge report` (docs/domain.md §6), when the file sets them.
    pub(crate) report: Option<ReportRules>,
}

/// `[report]`: rates in percent, and how long after a follow-up an order counts as its conversion.
#[derive(Debug, Clone)]
pub(crate) struct ReportRules {
    pub(crate) response_rate_min: u32,
    pub(crate) conversion_rate_min: u32,
    pub(crate) churn_rate_max: u32,
    pub(crate) conversion_window: Span,
}

/// high: >= `high_min` in the window and a customer for >= `high_min_tenure`;
/// medium: >= `medium_min`; low: below.
#[derive(Debug, Clone)]
pub(crate) struct ValueTierRules {
    pub(crate) window: Span,
    pub(crate) high_min: i64,
    pub(crate) high_min_tenure: Span,
    pub(crate) medium_min: i64,
}

/// Recency, frequency and monetary scores (3 high, 2 medium, 1 low, 0 none),
/// summed into a grade: A from `grade_a`, B from `grade_b`, else C.
#[derive(Debug, Clone)]
pub(crate) struct RfmRules {
    /// Frequency and monetary count the orders of this trailing window.
    pub(crate) window: Span,
    /// The last order is at most this old for a high / medium / low recency score.
    pub(crate) recency: [Span; 3],
    pub(crate) frequency_high: u32,
    pub(crate) frequency_medium: u32,
    pub(crate) monetary_high: i64,
    pub(crate) monetary_medium: i64,
    pub(crate) grade_a: u32,
    pub(crate) grade_b: u32,
}

/// active: bought within `dormant_after`; dormant: not; churned: no order and no
/// logged follow-up within `churned_after`.
#[derive(Debug, Clone)]
pub(crate) struct BehaviourRules {
    pub(crate) dormant_after: Span,
    pub(crate) churned_after: Span,
}

impl ClassificationRules {
    /// The rate of `currency` into the base currency, or why an order in it is refused.
    pub(crate) fn rate(&self, currency: &str) -> Result<i128, String> {
        if currency == self.base_currency {
            return Ok(money::UNIT_RATE);
        }
        self.rates.get(currency).copied().ok_or_else(|| {
            let known: Vec<&str> = std::iter::once(self.base_currency.as_str())
                .chain(self.rates.keys().map(String::as_str))
                .collect();
            format!(
                "no conversion rate for currency `{currency}`; classification.toml accepts {} \
                 (add a rate under [currency] to take orders in {currency})",
                known.join(", ")
            )
        })
    }

    /// Today's date in the rules' time zone.
    pub(crate) fn today(&self, now_ms: i64) -> Date {
        self.date_of(now_ms)
    }

    pub(crate) fn date_of(&self, at_ms: i64) -> Date {
        jiff::Timestamp::from_millisecond(at_ms)
            .expect("stored times are in range")
            .to_zoned(self.time_zone.clone())
            .date()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    time_zone: Spanned<String>,
    currency: RawCurrency,
    value_tier: RawValueTier,
    rfm: RawRfm,
    behaviour: RawBehaviour,
    report: Option<RawReport>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    response_rate: Spanned<i64>,
    conversion_rate: Spanned<i64>,
    churn_rate: Spanned<i64>,
    conversion_window: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCurrency {
    base: Spanned<String>,
    #[serde(default)]
    rates: BTreeMap<Spanned<String>, Spanned<RawMoney>>,
}

/// Money as written in the file: a string or an integer. A float is read only to
/// refuse it with a message, since 0.1 + 0.2 is not 0.3 in floating point.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawMoney {
    Integer(i64),
    Text(String),
    Float(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValueTier {
    window: Spanned<String>,
    high: RawHigh,
    medium: RawMedium,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHigh {
    min_amount: Spanned<RawMoney>,
    min_tenure: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedium {
    min_amount: Spanned<RawMoney>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRfm {
    window: Spanned<String>,
    recency: RawLevels<Spanned<String>>,
    frequency: RawTwoLevels<Spanned<i64>>,
    monetary: RawTwoLevels<Spanned<RawMoney>>,
    grade: RawGrades,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevels<T> {
    high: T,
    medium: T,
    low: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTwoLevels<T> {
    high: T,
    medium: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrades {
    #[serde(rename = "A")]
    a: Spanned<i64>,
    #[serde(rename = "B")]
    b: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBehaviour {
    dormant_after: Spanned<String>,
    churned_after: Spanned<String>,
}

/// Reads `classification.toml`; every problem goes to `problems`.
pub(super) fn parse_rules(path: &str, source: &str, problems: &mut Problems) -> Option<ClassificationRules> {
    let raw: RawRules = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(serde_problem(path, e));
            return None;
        }
    };
    let before = problems.len();
    let mut checker = Checker { path, problems };
    let time_zone = checker.time_zone(&raw.time_zone);
    let (base_currency, rates) = checker.currency(&raw.currency);
    let value_tier = checker.value_tier(&raw.value_tier);
    let rfm = checker.rfm(&raw.rfm);
    let behaviour = checker.behaviour(&raw.behaviour);
    let report = raw.report.as_ref().map(|r| checker.report(r));
    // A threshold out of order is a problem with every value readable.
    if problems.len() > before {
        return None;
    }
    Some(ClassificationRules {
        report: report.flatten(),
        time_zone: time_zone?,
        base_currency: base_currency?,
        rates,
        value_tier: value_tier?,
        rfm: rfm?,
        behaviour: behaviour?,
    })
}

/// Days a span covers from a fixed date, to compare spans that mix months and days.
fn span_days(span: Span) -> i64 {
    let start = jiff::civil::date(2001, 1, 1);
    i64::from(
        add_days(start, span)
            .since(start)
            .map(|s| s.get_days())
            .unwrap_or(i32::MAX),
    )
}

/// Checks the file section by section, each whole (every problem reported)
/// before it is built, and each value with a message at its place.
struct Checker<'a> {
    path: &'a str,
    problems: &'a mut Problems,
}

impl Checker<'_> {
    fn time_zone(&mut self, name: &Spanned<String>) -> Option<jiff::tz::TimeZone> {
        let zone = jiff::tz::TimeZone::get(name.get_ref()).ok();
        if zone.is_none() {
            self.problem(
                at(name),
                format!("unknown time zone `{}`", name.get_ref()),
                "use an IANA name such as \"Asia/Shanghai\" or \"UTC\"",
            );
        }
        zone
    }

    /// The base currency and the rates of the others into it.
    fn currency(&mut self, raw: &RawCurrency) -> (Option<String>, BTreeMap<String, i128>) {
        let base_currency = self.currency_code(&raw.base);
        let mut rates = BTreeMap::new();
        for (code, rate) in &raw.rates {
            let code_ok = self.currency_code(code).is_some();
            if Some(code.get_ref()) == base_currency.as_ref() {
                self.problem(
                    at(code),
                    format!("`{}` is the base currency", code.get_ref()),
                    "remove it: the base currency needs no rate",
                );
            }
            let value = self.rate(rate);
            if let (true, Some(value)) = (code_ok, value) {
                rates.insert(code.get_ref().clone(), value);
            }
        }
        (base_currency, rates)
    }

    fn value_tier(&mut self, v: &RawValueTier) -> Option<ValueTierRules> {
        let window = self.days(&v.window);
        let high_min = self.amount(&v.high.min_amount);
        let high_min_tenure = self.days(&v.high.min_tenure);
        let medium_min = self.amount(&v.medium.min_amount);
        self.at_least(
            high_min.zip(medium_min),
            &v.high.min_amount,
            "the high tier's minimum is below the medium tier's",
            "high.min_amount must be at least medium.min_amount",
        );
        Some(ValueTierRules {
            window: window?,
            high_min: high_min?,
            high_min_tenure: high_min_tenure?,
            medium_min: medium_min?,
        })
    }

    fn rfm(&mut self, r: &RawRfm) -> Option<RfmRules> {
        let window = self.days(&r.window);
        let recency = [
            self.days(&r.recency.high),
            self.days(&r.recency.medium),
            self.days(&r.recency.low),
        ];
        if let [Some(high), Some(medium), Some(low)] = recency
            && !(span_days(high) < span_days(medium) && span_days(medium) < span_days(low))
        {
            self.problem(
                at(&r.recency.high),
                "recency buckets must grow: high < medium < low",
                "e.g. recency = { high = \"1mo\", medium = \"3mo\", low = \"6mo\" }",
            );
        }
        let frequency_high = self.count(&r.frequency.high);
        let frequency_medium = self.count(&r.frequency.medium);
        self.at_least(
            frequency_high.zip(frequency_medium),
            &r.frequency.high,
            "the high frequency is below the medium one",
            "frequency.high must be at least frequency.medium",
        );
        let monetary_high = self.amount(&r.monetary.high);
        let monetary_medium = self.amount(&r.monetary.medium);
        self.at_least(
            monetary_high.zip(monetary_medium),
            &r.monetary.high,
            "the high monetary threshold is below the medium one",
            "monetary.high must be at least monetary.medium",
        );
        let grade_a = self.score(&r.grade.a);
        let grade_b = self.score(&r.grade.b);
        if let (Some(a), Some(b)) = (grade_a, grade_b)
            && a <= b
        {
            self.problem(
                at(&r.grade.a),
                "grade A must need a higher score than grade B",
                "scores are summed from R, F and M (3 high, 2 medium, 1 low), 0 to 9: e.g. grade = { A = 8, B = 5 }",
            );
        }
        Some(RfmRules {
            window: window?,
            recency: [recency[0]?, recency[1]?, recency[2]?],
            frequency_high: frequency_high?,
            frequency_medium: frequency_medium?,
            monetary_high: monetary_high?,
            monetary_medium: monetary_medium?,
            grade_a: grade_a?,
            grade_b: grade_b?,
        })
    }

    /// A problem at `high` when the high threshold of a pair is below the medium one.
    fn at_least<N: PartialOrd, T>(&mut self, pair: Option<(N, N)>, high: &Spanned<T>, message: &str, help: &str) {
        if let Some((high_value, medium_value)) = pair
            && high_value < medium_value
        {
            self.problem(at(high), message, help);
        }
    }

    fn behaviour(&mut self, b: &RawBehaviour) -> Option<BehaviourRules> {
        let dormant_after = self.days(&b.dormant_after);
        let churned_after = self.days(&b.churned_after);
        if let (Some(dormant), Some(churned)) = (dormant_after, churned_after)
            && span_days(churned) < span_days(dormant)
        {
            self.problem(
                at(&b.churned_after),
                "a customer would churn before becoming dormant",
                "churned_after must be at least dormant_after",
            );
        }
        Some(BehaviourRules {
            dormant_after: dormant_after?,
            churned_after: churned_after?,
        })
    }

    fn report(&mut self, r: &RawReport) -> Option<ReportRules> {
        let response = self.percent(&r.response_rate);
        let conversion = self.percent(&r.conversion_rate);
        let churn = self.percent(&r.churn_rate);
        let window = self.days(&r.conversion_window);
        Some(ReportRules {
            response_rate_min: response?,
            conversion_rate_min: conversion?,
            churn_rate_max: churn?,
            conversion_window: window?,
        })
    }

    fn problem(&mut self, span: Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        self.problems.push(Diagnostic::new(self.path, span, message).help(help));
    }

    /// A duration in whole days, weeks, months or years: classification works on dates.
    fn days(&mut self, text: &Spanned<String>) -> Option<Span> {
        let span = duration(self.path, text, self.problems)?;
        let has_time = span.get_hours() != 0
            || span.get_minutes() != 0
            || span.get_seconds() != 0
            || span.get_milliseconds() != 0
            || span.get_microseconds() != 0
            || span.get_nanoseconds() != 0;
        if has_time || span.is_zero() {
            self.problem(
                at(text),
                format!("`{}` is not a whole number of days", text.get_ref()),
                "classification works on dates: write days, weeks, months or years, e.g. \"30d\", \"6mo\", \"1y\"",
            );
            return None;
        }
        Some(span)
    }

    fn money(&mut self, value: &Spanned<RawMoney>) -> Option<String> {
        match value.get_ref() {
            RawMoney::Integer(n) => Some(n.to_string()),
            RawMoney::Text(text) => Some(text.clone()),
            RawMoney::Float(f) => {
                self.problem(
                    at(value),
                    "money is written as a string or an integer, not a floating-point number",
                    format!("quote it, \"{f:?}\", so no precision is lost"),
                );
                None
            }
        }
    }

    fn amount(&mut self, value: &Spanned<RawMoney>) -> Option<i64> {
        let text = self.money(value)?;
        let help = "write an amount in the base currency, e.g. \"500000\" or \"99.50\"";
        money::parse_amount(&text)
            .map_err(|e| self.problem(at(value), e, help))
            .ok()
    }

    fn rate(&mut self, value: &Spanned<RawMoney>) -> Option<i128> {
        let text = self.money(value)?;
        let help = "write how much of the base currency one unit buys, e.g. USD = \"7.10\"";
        money::parse_rate(&text)
            .map_err(|e| self.problem(at(value), e, help))
            .ok()
    }

    fn currency_code(&mut self, code: &Spanned<String>) -> Option<String> {
        let c = code.get_ref();
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Some(c.clone());
        }
        self.problem(
            at(code),
            format!("`{c}` is not a currency code"),
            "use an ISO 4217 code in capitals, e.g. \"CNY\", \"USD\"",
        );
        None
    }

    fn count(&mut self, value: &Spanned<i64>) -> Option<u32> {
        self.whole(
            value,
            1..=u32::MAX,
            "a number of orders",
            "write a whole number of orders, 1 or more",
        )
    }

    fn percent(&mut self, value: &Spanned<i64>) -> Option<u32> {
        self.whole(
            value,
            0..=100,
            "a percentage",
            "write a whole number from 0 to 100, e.g. 30 for 30 %",
        )
    }

    fn score(&mut self, value: &Spanned<i64>) -> Option<u32> {
        self.whole(
            value,
            1..=9,
            "a reachable RFM score",
            "R, F and M score 0 to 3 each: a grade needs a total from 1 to 9",
        )
    }

    /// A whole number within `range`, or a problem saying it is not `what`.
    fn whole(&mut self, value: &Spanned<i64>, range: RangeInclusive<u32>, what: &str, help: &str) -> Option<u32> {
        match u32::try_from(*value.get_ref()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.problem(at(value), format!("`{}` is not {what}", value.get_ref()), help);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SHIPPED: &str = include_str!("../../../workflows/classification.toml");

    fn parse(source: &str) -> Result<ClassificationRules, Vec<Diagnostic>> {
        let mut problems = Problems::default();
        parse_rules("wf/classification.toml", source, &mut problems).ok_or_else(|| problems.into_vec())
    }

    #[test]
    fn the_shipped_rules_hold_the_defaults_of_the_domain() {
        let rules = parse(SHIPPED).unwrap();
        assert_eq!(rules.base_currency, "CNY");
        assert_eq!(rules.value_tier.high_min, 50_000_000);
        assert_eq!(rules.value_tier.medium_min, 10_000_000);
        assert_eq!(span_days(rules.value_tier.high_min_tenure), 365);
        assert_eq!(rules.rate("CNY"), Ok(money::UNIT_RATE));
        let refused = rules.rate("GBP").unwrap_err();
        assert!(refused.contains("`GBP`") && refused.contains("CNY"), "{refused}");
    }

    #[test]
    fn problems_point_at_the_value_and_say_what_to_do() {
        let source = SHIPPED
            .replace("min_amount = \"500000\"", "min_amount = 500000.5")
            .replace("dormant_after = \"6mo\"", "dormant_after = \"6h\"")
            .replace("time_zone = \"Asia/Shanghai\"", "time_zone = \"Asia/Shanghia\"");
        let problems = parse(&source).unwrap_err();
        let messages: Vec<(String, (usize, usize))> = problems
            .iter()
            .map(|d| (d.message.clone(), d.line_col(&source)))
            .collect();
        assert_eq!(problems.len(), 3, "{messages:?}");
        assert!(problems.iter().all(|d| d.help.is_some()));
        let line_of = |needle: &str| source.lines().position(|l| l.contains(needle)).unwrap() + 1;
        assert!(messages[0].0.contains("unknown time zone"));
        assert_eq!(messages[0].1.0, line_of("Asia/Shanghia"));
        assert!(messages[1].0.contains("floating-point"));
        assert_eq!(messages[1].1.0, line_of("500000.5"));
        assert!(messages[2].0.contains("whole number of days"));
        assert_eq!(messages[2].1.0, line_of("\"6h\""));
    }

    #[test]
    fn a_float_amount_renders_with_its_position_and_what_to_write() {
        let source = SHIPPED.replace(
            "medium = { min_amount = \"100000\" }",
            "medium = { min_amount = 100000.0 }",
        );
        let problems = parse(&source).unwrap_err();
        insta::assert_snapshot!(problems[0].render(&source, false));
    }

    #[test]
    fn thresholds_out_of_order_are_refused() {
        let source = SHIPPED.replace("high = \"1mo\"", "high = \"4mo\"");
        let problems = parse(&source).unwrap_err();
        assert!(
            problems[0].message.contains("recency buckets must grow"),
            "{problems:?}"
        );
    }
}
