//! When a contact's follow-ups fall due and a workflow's messages may go: the
//! cadence tables of `cadences.toml`, each value with its interval and perhaps
//! its best time (a window of `sending.toml`), and the send window a workflow names.

use std::collections::BTreeMap;

use jiff::Span;

use super::WorkflowSet;

/// Which window of `sending.toml` a workflow's messages wait for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SendWindow {
    /// `send_window = "nurture"`: the same window for every contact.
    Named(String),
    /// `send_window = { cadence = "intent" }`: the window the cadence table gives the
    /// contact (its `at`), so a message goes at the best time of the contact's grade.
    Cadence(String),
}

/// A named cadence table, e.g. intent grade A -> 3d, B -> 7d, C -> 15d.
#[derive(Debug, Clone)]
pub(crate) struct Cadence {
    /// The contact field that picks the row: `intent_grade`, `value_tier` or `stage`.
    pub(crate) by: String,
    pub(crate) every: BTreeMap<String, Span>,
    pub(crate) default: Option<Span>,
    /// The window of `sending.toml` each value's follow-ups and messages fall in
    /// (`at`); a value without one falls due exactly after its interval.
    pub(crate) at: BTreeMap<String, String>,
}

impl Cadence {
    pub(crate) fn interval_for(&self, value: Option<&str>) -> Option<Span> {
        value.and_then(|v| self.every.get(v)).copied().or(self.default)
    }

    pub(crate) fn window_for(&self, value: Option<&str>) -> Option<&str> {
        value.and_then(|v| self.at.get(v)).map(String::as_str)
    }
}

/// Contact fields that a cadence table may be keyed by.
pub(crate) const CADENCE_KEYS: &[&str] = &["intent_grade", "value_tier", "stage", "source"];

impl WorkflowSet {
    /// The name of the window `window` gives a contact; `field` reads the
    /// contact field a cadence table is keyed by (`intent_grade`, ...).
    pub(crate) fn window_name<'a>(
        &'a self,
        window: Option<&'a SendWindow>,
        field: impl Fn(&str) -> Option<String>,
    ) -> Option<&'a str> {
        match window? {
            SendWindow::Named(name) => Some(name),
            SendWindow::Cadence(name) => {
                let cadence = self.cadences.get(name)?;
                cadence.window_for(field(&cadence.by).as_deref())
            }
        }
    }
}
