//! RFM grades (docs/domain.md §1): recency, frequency and money of a customer's
//! orders, computed by `classification.toml`, never set by hand.

/// RFM grades, best first.
pub(crate) const RFM_GRADES: &[&str] = &["A", "B", "C"];
