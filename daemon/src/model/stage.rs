//! Lifecycle stages (docs/domain.md §1): where a contact is on the way from a
//! lead to a loyal customer, or away from being one.

/// Lifecycle stages, in order: the report's funnel reads them up to `dormant`.
pub(crate) const STAGES: &[&str] = &[
    "lead",
    "inquiry",
    "intent",
    "sample",
    "first_order",
    "repeat",
    "loyal",
    "dormant",
    "churned",
];
