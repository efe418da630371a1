//! Message categories: what a message is for. A workflow declares it, sending
//! policy (windows, caps) is keyed by it, and the outbox orders delivery by it.

use serde::{Deserialize, Serialize};

/// What a message is for; decides its priority, whether caps and unsubscribe apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// An answer owed under a response SLA.
    Sla,
    /// Expected by the recipient (a confirmation, a reply).
    Transactional,
    /// Nurture and promotion: capped, windowed, with an unsubscribe link.
    Marketing,
    /// To staff (the owner), not to the contact.
    Internal,
}

impl Category {
    pub(crate) const ALL: &[&str] = &["sla", "transactional", "marketing", "internal"];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Category::Sla => "sla",
            Category::Transactional => "transactional",
            Category::Marketing => "marketing",
            Category::Internal => "internal",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Category> {
        Some(match text {
            "sla" => Category::Sla,
            "transactional" => Category::Transactional,
            "marketing" => Category::Marketing,
            "internal" => Category::Internal,
            _ => return None,
        })
    }

    /// Delivery order when more is due than can go at once: lower first.
    pub(crate) fn priority(self) -> i64 {
        match self {
            Category::Sla => 0,
            Category::Transactional | Category::Internal => 1,
            Category::Marketing => 2,
        }
    }
}
