//! Why something did not happen (yet): the stable reason codes that the
//! engine stores where it decides (a run held or stopped, a step skipped, an
//! event that started no run), and that `nudge explain`, `nudge status`, the
//! logs (`reason = code`) and the metrics all show. A code is spelled one way,
//! for ever: scripts and dashboards key on it; the human detail stored beside
//! it may change wording.

use serde::{Deserialize, Serialize};

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $meaning:literal;)+) => {
        /// A stable reason code (see the module doc).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Reason {
            $($(#[$doc])* #[serde(rename = $code)] $variant,)+
        }

        impl Reason {
            /// Every code, in the order the README's table lists them.
            #[cfg(test)]
            pub(crate) const ALL: &[Reason] = &[$(Reason::$variant),+];

            /// The code as stored, logged and shown.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)+
                }
            }

            /// What the code means, in a line, for people (README, `nudge explain`).
            pub(crate) fn meaning(self) -> &'static str {
                match self {
                    $(Reason::$variant => $meaning,)+
                }
            }

            /// The code spelled `text`, if it is one.
            pub(crate) fn parse(text: &str) -> Option<Reason> {
                match text {
                    $($code => Some(Reason::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    // An event that started no run of a workflow whose trigger takes its kind.
    WorkflowDisabled = "workflow_disabled", "the workflow is switched off (`enabled = false`)";
    TriggerMismatch = "trigger_mismatch", "the event is of the trigger's kind, but not the change it names (`from` / `to`)";
    ConditionFalse = "condition_false", "the workflow's `when` condition was false for the contact at that moment";
    ConditionError = "condition_error", "the `when` condition could not be evaluated for the contact (taken as false)";
    // A run held at a step (it waits, then tries again).
    SendWindow = "send_window", "outside the message's send window (in the contact's zone)";
    QuietHours = "quiet_hours", "in the quiet hours of sending.toml (in the contact's zone)";
    VariantDelay = "variant_delay", "the run's A/B variant sends later than the step is reached";
    WorkingHours = "working_hours", "outside the working hours of the team member a note goes to";
    FrequencyCap = "frequency_cap", "the contact had as many messages as a frequency cap allows; held until a slot frees up";
    ConsentChanged = "consent_changed", "the contact's consent changed while the message was prepared; prepared again";
    RenderFailed = "render_failed", "the message's template cannot render; held until the template is fixed";
    PluginFailed = "plugin_failed", "the channel's plugin failed while rendering; tried again with backoff";
    StepError = "step_error", "the step failed with an error; tried again with backoff";
    // A queued message held in the outbox (pending, not tried, no attempt counted).
    DomainPaced = "domain_paced", "the recipient's domain is paced (its messages a minute): sent at its next slot";
    DomainThrottled = "domain_throttled", "the recipient's provider throttles our mail: its domain is slowed and paused, sent at its next slot";
    WarmupCap = "warmup_cap", "the warm-up plan's marketing email for today is used up: held to a later day";
    // A step that happened without its message.
    ConsentWithdrawn = "consent_withdrawn", "the contact stopped all email: the message is withheld";
    MarketingUnsubscribed = "marketing_unsubscribed", "the contact unsubscribed from marketing: marketing is withheld";
    Suppressed = "suppressed", "the contact's address is suppressed (bounce, complaint, by hand)";
    NoAddress = "no_address", "the contact has no address for the step's channel";
    NoRecipient = "no_recipient", "nobody to notify (the contact has no owner email)";
    // A run that ended before its last step.
    TriggerGone = "trigger_gone", "what started the run no longer holds (follow-up logged, inquiry answered, no longer dormant)";
    ExitStageChanged = "exit_stage_changed", "exit condition `stage_changed`: the contact's stage changed since the run began";
    ExitReplied = "exit_replied", "exit condition `replied`: the contact replied (or a follow-up / inquiry was logged)";
    ExitOrdered = "exit_ordered", "exit condition `ordered`: the contact placed an order";
    ExitUnsubscribed = "exit_unsubscribed", "exit condition `unsubscribed`: the contact's consent withholds this workflow's messages";
    ExitBounced = "exit_bounced", "exit condition `bounced`: the address bounced or complained";
    ExitCondition = "exit_condition", "the workflow's `exit_if` condition became true";
    StepFailed = "step_failed", "the run failed after too many errors in a row at one step";
    // A run that ended after its last step.
    Completed = "completed", "all steps done";
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    /// The codes are an interface: a rename breaks scripts, dashboards and stored rows.
    #[test]
    fn codes_are_spelled_once_in_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &reason in Reason::ALL {
            let code = reason.as_str();
            assert!(seen.insert(code), "{code} twice");
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !code.starts_with('_'),
                "{code}"
            );
            assert_eq!(Reason::parse(code), Some(reason));
            assert_eq!(serde_json::to_value(reason).unwrap(), code);
            assert!(!reason.meaning().is_empty());
        }
        let spelled: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            spelled,
            [
                "workflow_disabled",
                "trigger_mismatch",
                "condition_false",
                "condition_error",
                "send_window",
                "quiet_hours",
                "variant_delay",
                "working_hours",
                "frequency_cap",
                "consent_changed",
                "render_failed",
                "plugin_failed",
                "step_error",
                "domain_paced",
                "domain_throttled",
                "warmup_cap",
                "consent_withdrawn",
                "marketing_unsubscribed",
                "suppressed",
                "no_address",
                "no_recipient",
                "trigger_gone",
                "exit_stage_changed",
                "exit_replied",
                "exit_ordered",
                "exit_unsubscribed",
                "exit_bounced",
                "exit_condition",
                "step_failed",
                "completed",
            ]
        );
        assert_eq!(Reason::parse("frequency-cap"), None);
    }

    #[test]
    fn the_readme_lists_every_code_with_its_meaning() {
        let readme = include_str!("../../../README.md");
        for &reason in Reason::ALL {
            let row = format!("| `{}` | {} |", reason.as_str(), reason.meaning().replace('|', "\\|"));
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }
}
