//! The `reason` label of `nudge_runs_finished_total`: a short code for why a
//! run ended, from the outcome the engine records. This is the one place that
//! turns an outcome into a label; the stable reason codes of `nudge explain`
//! belong here once they exist, so the logs, `nudge status` and the metrics
//! say the same.

/// The code for a run that ended with `status` (`done`, `cancelled`, `failed`)
/// and the outcome text the engine recorded. Never the text itself: it names
/// conditions and errors, and a label must stay bounded.
pub(crate) fn run_end_reason(status: &str, outcome: &str) -> &'static str {
    match status {
        "done" => "completed",
        "failed" => "step_errors",
        "cancelled" if outcome.starts_with("exit condition met") => "exit_condition",
        "cancelled" if outcome == "a follow-up was logged since it fell due" => "follow_up_logged",
        "cancelled" if outcome == "the inquiry was answered" => "inquiry_answered",
        "cancelled" if outcome == "the customer is no longer dormant" => "no_longer_dormant",
        "cancelled" => "trigger_gone",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::run_end_reason;

    #[test]
    fn each_recorded_outcome_has_a_bounded_code() {
        assert_eq!(run_end_reason("done", "all steps done"), "completed");
        assert_eq!(
            run_end_reason("cancelled", "exit condition met: replied"),
            "exit_condition"
        );
        assert_eq!(
            run_end_reason("cancelled", "the inquiry was answered"),
            "inquiry_answered"
        );
        assert_eq!(run_end_reason("failed", "error 5 of 5 at step 2: boom"), "step_errors");
    }
}
