//! Money as exact integers: amounts in minor units (1/100 of the currency unit) and
//! conversion rates in millionths. Floating point is never used, so that a trailing
//! 12-month sum of 499,999.99 stays below a 500,000 threshold however many orders
//! it is made of.

/// Minor units per currency unit: amounts are read and shown with two decimals.
const MINOR_PER_UNIT: i64 = 100;
/// Rates are fixed-point with six decimals (7.123456 CNY per USD).
const RATE_SCALE: i128 = 1_000_000;

/// Reads a non-negative decimal amount such as `499999.99`, `500000` or `0.5`
/// into minor units. Thousands separators (`_`, `,`) are refused rather than
/// guessed at, since `1,5` means 1.5 in much of the world.
pub(crate) fn parse_amount(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let fixed = parse_fixed(text, 2).map_err(|e| format!("amount `{text}` {e}"))?;
    i64::try_from(fixed).map_err(|_| format!("amount `{text}` is too large"))
}

/// Reads a positive conversion rate such as `7.1` into millionths.
pub(crate) fn parse_rate(text: &str) -> Result<i128, String> {
    let text = text.trim();
    let rate = parse_fixed(text, 6).map_err(|e| format!("rate `{text}` {e}"))?;
    if rate == 0 {
        return Err(format!("rate `{text}` must be above zero"));
    }
    Ok(rate)
}

/// An unsigned decimal with at most `decimals` fractional digits, scaled by 10^decimals.
fn parse_fixed(text: &str, decimals: u32) -> Result<i128, String> {
    if text.starts_with('-') {
        return Err("is negative".into());
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(fraction.is_empty() || digits(fraction)) || (text.contains('.') && fraction.is_empty()) {
        return Err("is not a decimal number like 1234.56".into());
    }
    if fraction.len() > decimals as usize {
        return Err(format!("has more than {decimals} decimals"));
    }
    if whole.len() > 15 {
        return Err("is too large".into());
    }
    let scale = 10i128.pow(decimals);
    let whole: i128 = whole.parse().map_err(|_| "is too large".to_string())?;
    let fraction: i128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i128>().unwrap() * 10i128.pow(decimals - fraction.len() as u32)
    };
    Ok(whole * scale + fraction)
}

/// Converts minor units at a rate in millionths, rounding half up to the minor unit.
pub(crate) fn convert(amount_minor: i64, rate: i128) -> i64 {
    let converted = (i128::from(amount_minor) * rate + RATE_SCALE / 2) / RATE_SCALE;
    i64::try_from(converted).unwrap_or(i64::MAX)
}

/// The rate that leaves an amount as it is (the base currency's own).
pub(crate) const UNIT_RATE: i128 = RATE_SCALE;

/// Shows minor units as a decimal with two places and thousands separators: `499,999.99`.
pub(crate) fn format_minor(amount_minor: i64) -> String {
    let whole = (amount_minor / MINOR_PER_UNIT).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{grouped}.{:02}", amount_minor % MINOR_PER_UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_minor_units() {
        assert_eq!(parse_amount("499999.99"), Ok(49_999_999));
        assert_eq!(parse_amount("500000"), Ok(50_000_000));
        assert_eq!(parse_amount("0.5"), Ok(50));
        assert_eq!(parse_amount(" 12.30 "), Ok(1230));
    }

    #[test]
    fn bad_amounts_say_why() {
        for (text, why) in [
            ("-5", "negative"),
            ("1,000", "decimal number"),
            ("1.", "decimal number"),
            ("abc", "decimal number"),
            ("", "decimal number"),
            ("1.234", "more than 2 decimals"),
            ("1e5", "decimal number"),
            ("9999999999999999", "too large"),
        ] {
            let error = parse_amount(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn conversion_rounds_half_up_to_the_minor_unit() {
        let rate = parse_rate("7.1").unwrap();
        assert_eq!(convert(100, rate), 710);
        assert_eq!(convert(1, parse_rate("0.005").unwrap()), 0);
        assert_eq!(convert(1, parse_rate("0.5").unwrap()), 1);
        assert_eq!(convert(12_345, UNIT_RATE), 12_345);
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn formatting_groups_thousands() {
        assert_eq!(format_minor(49_999_999), "499,999.99");
        assert_eq!(format_minor(5), "0.05");
        assert_eq!(format_minor(100_000_000), "1,000,000.00");
    }
}
