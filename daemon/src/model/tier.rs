//! Value tiers (docs/domain.md §1): what a customer is worth, set by hand or
//! computed from orders by `classification.toml`; response SLAs and cadences
//! are keyed by it.

/// Value tiers, highest first.
pub(crate) const TIERS: &[&str] = &["high", "medium", "low"];
