//! `[retention]`: how long finished runs and delivered messages are kept
//! (docs/domain.md §5: a frequency cap counts the messages of its period, so
//! they must outlive it).

use serde::Deserialize;
use toml::Spanned;

use super::Config;
use crate::workflow::WorkflowSet;

/// What the retention pass keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RetentionConfig {
    /// Finished runs and delivered messages older than this many days are
    /// pruned, once a day; what is still needed never is.
    pub(crate) keep_days: Spanned<i64>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_days: Spanned::new(0..0, 180),
        }
    }
}

impl Config {
    /// Days of history the retention pass keeps.
    pub(crate) fn keep_days(&self) -> i64 {
        *self.retention.keep_days.get_ref()
    }

    /// The error for `[retention] keep_days`, at its place in nudge.toml.
    fn retention_error(&self, message: String, help: String) -> anyhow::Error {
        self.setting_error(self.retention.keep_days.span(), message, Some(help))
    }

    /// Refuses a keep_days below one day.
    pub(super) fn check_retention_days(&self) -> anyhow::Result<()> {
        let days = self.keep_days();
        if days < 1 {
            return Err(self.retention_error(
                format!("[retention] keep_days = {days} would prune history the moment it is written"),
                "keep at least as many days as the longest frequency cap of sending.toml counts; the default is 180"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Refuses a keep_days that would prune what the workflow set still reads:
    /// the messages a frequency cap counts (sending.toml `per`).
    pub(crate) fn check_retention(&self, set: &WorkflowSet) -> anyhow::Result<()> {
        let days = self.keep_days();
        match set.sending.longest_cap() {
            Some((cap, reach)) if reach >= days => Err(self.retention_error(
                format!(
                    "[retention] keep_days = {days} is not longer than the frequency cap `{}` of sending.toml, \
                     which counts the messages of the last {reach} days",
                    cap.label
                ),
                format!("keep more than {reach} days, or shorten the cap's `per`"),
            )),
            _ => Ok(()),
        }
    }
}
