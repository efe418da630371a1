//! Intent grades (docs/domain.md §1): the rep's judgement of how likely a
//! contact is to buy; follow-up cadences are keyed by it.

/// Intent grades, strongest first.
pub(crate) const INTENT_GRADES: &[&str] = &["A", "B", "C"];
