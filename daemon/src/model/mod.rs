//! The domain's vocabulary: lifecycle stages, value tiers, intent grades, the
//! funnel, RFM grades, message categories, money and spans of time. The bottom
//! layer: it depends on nothing else in the crate, so the clock, the store and
//! the workflow compiler can all speak it without depending on each other.

mod category;
mod funnel;
mod intent;
pub(crate) mod money;
mod reason;
mod rfm;
mod span;
mod stage;
mod tier;

pub use category::Category;
pub(crate) use funnel::{ATTITUDES, UNDERSTANDINGS, funnel_stage};
pub(crate) use intent::INTENT_GRADES;
pub use reason::Reason;
pub(crate) use rfm::RFM_GRADES;
pub(crate) use span::{add_days, add_span, parse_duration, sub_days};
pub(crate) use stage::STAGES;
pub(crate) use tier::TIERS;
