//! The funnel (docs/domain.md §1): a follow-up records the rep's judgement of a
//! contact's attitude and of how specific their need is; the funnel stage is
//! derived from the two, never stored apart from them by hand.

/// The contact's attitude: doubting or accepting.
pub(crate) const ATTITUDES: &[&str] = &["doubting", "accepting"];
/// How specific the contact's need is.
pub(crate) const UNDERSTANDINGS: &[&str] = &["vague", "specific"];

/// The funnel stage of an attitude and an understanding (values checked before).
pub(crate) fn funnel_stage(attitude: &str, understanding: &str) -> &'static str {
    match (attitude, understanding) {
        ("accepting", "specific") => "opportunity",
        ("doubting", "specific") => "intent",
        ("accepting", _) => "watching",
        _ => "potential",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_funnel_stage_is_attitude_times_understanding() {
        assert_eq!(funnel_stage("doubting", "vague"), "potential");
        assert_eq!(funnel_stage("accepting", "vague"), "watching");
        assert_eq!(funnel_stage("doubting", "specific"), "intent");
        assert_eq!(funnel_stage("accepting", "specific"), "opportunity");
    }
}
