//! Workflow files: parse (TOML with spans) -> validate the whole set -> a
//! compiled [`WorkflowSet`] that the engine runs. A set is identified by the
//! hash of its files; runs are pinned to the set they started with.
//!
//! The folder holds `*.toml` workflows, `templates/*.toml` message templates,
//! an optional `cadences.toml` of named cadence tables and an optional
//! `classification.toml` of customer classification rules.

mod classification;
mod condition;
mod diagnostic;
pub(crate) mod language;
mod parse;
mod sending;
mod team;
mod templates;
mod timing;

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Span;
use sha2::{Digest, Sha256};

pub(crate) use classification::ClassificationRules;
pub use condition::{Condition, contact_schema, event_schema};
pub(crate) use diagnostic::{Diagnostic, Diagnostics};
pub(crate) use language::Languages;
pub(crate) use sending::{SendingPolicy, Window};
pub(crate) use team::{NotifyTo, OwnerRef, Team};
pub(crate) use timing::{CADENCE_KEYS, Cadence, SendWindow};

use crate::model::{Category, add_span};

/// The file of the folder that holds the classification rules.
pub(crate) const CLASSIFICATION_FILE: &str = "classification.toml";

/// A validated, compiled set of workflow files.
#[derive(Debug)]
pub struct WorkflowSet {
    /// sha256 over every file's path and content.
    pub(crate) hash: String,
    /// (path, source) of every file, as loaded; stored so pinned runs can recompile it.
    pub(crate) files: Vec<(String, String)>,
    pub(crate) workflows: Vec<Workflow>,
    pub(crate) templates: BTreeMap<String, Template>,
    pub(crate) cadences: BTreeMap<String, Cadence>,
    /// `sending.toml`: send windows, quiet hours, frequency caps.
    pub(crate) sending: SendingPolicy,
    /// `language.toml`: the default language and the footers the daemon adds.
    pub(crate) languages: Languages,
    /// Without a `classification.toml`, nothing is computed from orders (and orders are refused).
    pub(crate) classification: Option<std::sync::Arc<ClassificationRules>>,
    /// `team.toml`: managers, working hours, roles; empty without the file.
    pub(crate) team: Team,
}

/// One workflow file.
#[derive(Debug)]
pub(crate) struct Workflow {
    /// The file's stem, e.g. `inquiry-sla` for `inquiry-sla.toml`.
    pub(crate) name: String,
    pub(crate) enabled: bool,
    pub(crate) trigger: Trigger,
    pub(crate) when: Option<Condition>,
    /// Values passed to templates as `vars`.
    pub(crate) vars: serde_json::Value,
    pub(crate) steps: Vec<Step>,
    /// What the workflow's messages to the contact are: priority, caps, unsubscribe.
    pub(crate) category: Category,
    /// The window of `sending.toml` that its messages to the contact wait for.
    pub(crate) send_window: Option<SendWindow>,
    /// Whether its email tracks opens and clicks (`track`): only marketing email ever does.
    pub(crate) track: bool,
    /// What stops a run before its next step.
    pub(crate) exit: Exit,
}

/// Conditions checked before every step; any one met ends the run.
#[derive(Debug, Default)]
pub(crate) struct Exit {
    pub(crate) on: Vec<ExitOn>,
    /// A CEL condition over the contact (`exit_if`).
    pub(crate) condition: Option<Condition>,
}

/// Built-in exit conditions, each measured from the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitOn {
    /// The contact's lifecycle stage changed (other than by this run).
    StageChanged,
    /// A follow-up was logged, an inquiry came in or a reply was recorded (`POST /replies`).
    Replied,
    /// The contact placed an order.
    Ordered,
    /// The contact unsubscribed (or withdrew consent).
    Unsubscribed,
    /// The contact's address bounced or complained and is suppressed.
    Bounced,
}

impl ExitOn {
    pub(crate) const NAMES: &[&str] = &["stage_changed", "replied", "ordered", "unsubscribed", "bounced"];
    /// Marketing runs stop on all of them unless the workflow says otherwise;
    /// listed weightiest first, the order in which a stop is explained.
    pub(crate) const MARKETING_DEFAULT: &[ExitOn] = &[
        ExitOn::Unsubscribed,
        ExitOn::Bounced,
        ExitOn::Ordered,
        ExitOn::Replied,
        ExitOn::StageChanged,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ExitOn::StageChanged => "stage_changed",
            ExitOn::Replied => "replied",
            ExitOn::Ordered => "ordered",
            ExitOn::Unsubscribed => "unsubscribed",
            ExitOn::Bounced => "bounced",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<ExitOn> {
        Some(match name {
            "stage_changed" => ExitOn::StageChanged,
            "replied" => ExitOn::Replied,
            "ordered" => ExitOn::Ordered,
            "unsubscribed" => ExitOn::Unsubscribed,
            "bounced" => ExitOn::Bounced,
            _ => return None,
        })
    }
}

/// What starts a run.
#[derive(Debug, Clone)]
pub(crate) enum Trigger {
    ContactCreated,
    StageChanged {
        from: Option<String>,
        to: Option<String>,
    },
    FollowUpLogged,
    /// The contact's next follow-up time passed with no new record; the run
    /// starts `grace` after the due time if still no record has been logged.
    FollowUpOverdue {
        grace: Span,
    },
    /// A new inquiry; with an SLA the run starts when the SLA for the contact's
    /// value tier has passed without a reply.
    InquiryReceived {
        sla: Option<Sla>,
        /// `sla_clock = "business"`: the SLA and waits count the owner's working hours.
        business_clock: bool,
    },
    /// A pass over all contacts that match the workflow's `when` (a segment),
    /// enrolling each at most once: at `start` (or when first loaded), and again
    /// every `every` for contacts that joined the segment since.
    Segment {
        start: Option<i64>,
        every: Option<Span>,
    },
    /// The computed value tier changed (classification.toml).
    TierChanged {
        from: Option<String>,
        to: Option<String>,
    },
    /// The computed RFM grade changed.
    RfmChanged {
        from: Option<String>,
        to: Option<String>,
    },
    /// A customer went without an order for `behaviour.dormant_after`.
    BecameDormant,
    /// A dormant or churned customer ordered again (`event.from` says which it was).
    BecameActive,
    /// A contact's first order was recorded.
    FirstOrder,
    /// Any new order was recorded (`contact.order_count` counts it already).
    OrderPlaced,
}

/// Response time allowed for an inquiry, by value tier.
#[derive(Debug, Clone)]
pub(crate) struct Sla {
    pub(crate) default: Span,
    pub(crate) by_tier: BTreeMap<String, Span>,
}

impl Sla {
    pub(crate) fn for_tier(&self, tier: Option<&str>) -> Span {
        tier.and_then(|t| self.by_tier.get(t)).copied().unwrap_or(self.default)
    }
}

/// One step of a workflow.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Send {
        channel: String,
        template: String,
        /// An A/B test: each contact gets one of these (empty: no test).
        variants: Vec<Variant>,
    },
    /// An internal email about the contact to someone on the team.
    Notify {
        to: NotifyTo,
        template: String,
    },
    Wait(Span),
    ScheduleFollowUp {
        after: FollowUpAfter,
        /// With a fixed span: the window the due time moves into (`window`).
        window: Option<SendWindow>,
        goal: Option<String>,
    },
    SetStage(String),
    SetTier(String),
    SetIntent(String),
    Tag(String),
    Untag(String),
    /// Hands the contact to another owner.
    SetOwner(OwnerRef),
}

impl Step {
    /// Whether the step writes its contact in the step's transaction, and with
    /// it perhaps an event (a stage change) that starts other runs. Tags are
    /// changed in memory and written with the batch.
    pub(crate) fn writes_contact(&self) -> bool {
        !matches!(
            self,
            Step::Send { .. } | Step::Notify { .. } | Step::Wait(_) | Step::Tag(_) | Step::Untag(_)
        )
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Step::Send { .. } => "send",
            Step::Notify { .. } => "notify",
            Step::Wait(_) => "wait",
            Step::ScheduleFollowUp { .. } => "schedule_follow_up",
            Step::SetStage(_) => "set_stage",
            Step::SetTier(_) => "set_tier",
            Step::SetIntent(_) => "set_intent",
            Step::Tag(_) => "tag",
            Step::Untag(_) => "untag",
            Step::SetOwner(_) => "set_owner",
        }
    }
}

/// One arm of a send step's A/B test.
#[derive(Debug, Clone)]
pub(crate) struct Variant {
    /// Unique in its workflow; the report groups by it.
    pub(crate) name: String,
    /// Share of the contacts: weight / the sum of the step's weights.
    pub(crate) weight: u32,
    /// Replaces the template's subject (a template string itself).
    pub(crate) subject: Option<String>,
    /// The message goes this long after the step is reached (then within the send window).
    pub(crate) delay: Option<Span>,
}

impl Variant {
    /// The variant a contact gets at a step, by weight. The choice hashes the workflow,
    /// the step and the contact with SHA-256 (not std's hasher, whose output may change
    /// between Rust releases), so it is the same after a restart, a reload or on
    /// another node, and independent between workflows and steps.
    pub(crate) fn assign<'a>(
        variants: &'a [Variant],
        workflow: &str,
        step: i64,
        contact_id: i64,
    ) -> Option<&'a Variant> {
        let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut hasher = Sha256::new();
        hasher.update(workflow.as_bytes());
        hasher.update([0]);
        hasher.update(step.to_be_bytes());
        hasher.update(contact_id.to_be_bytes());
        let digest = hasher.finalize();
        let mut point = u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes")) % total;
        variants.iter().find(|v| {
            let inside = point < u64::from(v.weight);
            point = point.saturating_sub(u64::from(v.weight));
            inside
        })
    }

    /// The template's fields with this variant's subject in place of the
    /// template's (only a template written once for everyone has a variant subject).
    pub(crate) fn apply(&self, template: &mut Template) {
        if let Some(subject) = &self.subject {
            for fields in template.texts.values_mut() {
                for (_, value) in fields.iter_mut().filter(|(k, _)| k == "subject") {
                    *value = subject.clone();
                }
            }
        }
    }
}

/// When the next follow-up falls.
#[derive(Debug, Clone)]
pub(crate) enum FollowUpAfter {
    Fixed(Span),
    /// Looked up in a named cadence table by a contact field.
    Cadence(String),
}

/// A message template: a channel and the fields its plugin renders.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub(crate) name: String,
    pub(crate) channel: String,
    /// Its fields by language tag (normalised: `zh`, `en-gb`), or under `""`
    /// alone for a template written once for every contact.
    pub(crate) texts: BTreeMap<String, Vec<(String, String)>>,
    /// The `vars.<name>` its fields read: every workflow that sends it defines them.
    pub(crate) reads_vars: std::collections::BTreeSet<String>,
}

impl WorkflowSet {
    /// Reads every workflow, template and cadence file under `dir`. A `*.toml`
    /// that cannot be read (a link to nothing, a loop of links, a file that is
    /// not UTF-8) is a problem of its own: skipping it would drop a workflow unseen.
    pub(crate) fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, Diagnostics> {
        let mut files = Vec::new();
        let mut problems = Diagnostics {
            items: Vec::new(),
            sources: Vec::new(),
        };
        for sub in [dir.to_path_buf(), dir.join("templates")] {
            let entries = match std::fs::read_dir(&sub) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && sub != dir => continue,
                Err(e) => {
                    let shown = sub.display().to_string();
                    return Err(Diagnostics {
                        items: vec![Diagnostic::new(&shown, 0..0, format!("cannot read workflows: {e}"))],
                        sources: vec![],
                    });
                }
            };
            for entry in entries {
                let path = match entry {
                    Ok(entry) => entry.path(),
                    Err(e) => {
                        let shown = sub.display().to_string();
                        problems
                            .items
                            .push(Diagnostic::new(&shown, 0..0, format!("cannot list the folder: {e}")));
                        continue;
                    }
                };
                if path.extension().is_none_or(|e| e != "toml") {
                    continue;
                }
                let shown = path.display().to_string();
                // Follows links, so a dangling or looping one is an error here.
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => continue,
                    Ok(_) => {}
                    Err(e) => {
                        problems.items.push(
                            Diagnostic::new(&shown, 0..0, format!("cannot read {shown}: {e}")).help(
                                "a link to a file that does not exist, or a loop of links? point it at a workflow file, or remove it",
                            ),
                        );
                        continue;
                    }
                }
                match std::fs::read(&path).map(String::from_utf8) {
                    Ok(Ok(source)) => files.push((shown, source)),
                    Ok(Err(e)) => {
                        let at = e.utf8_error().valid_up_to();
                        let byte = e.as_bytes()[at];
                        let source = String::from_utf8_lossy(e.as_bytes()).into_owned();
                        problems.items.push(
                            Diagnostic::new(
                                &shown,
                                at..at,
                                format!("not UTF-8: byte 0x{byte:02X} here starts no character"),
                            )
                            .help("save the file as UTF-8 (most editors offer it under \"Save with encoding\")"),
                        );
                        problems.sources.push((shown, source));
                    }
                    Err(e) => problems
                        .items
                        .push(Diagnostic::new(&shown, 0..0, format!("cannot read {shown}: {e}"))),
                }
            }
        }
        if !problems.items.is_empty() {
            return Err(problems);
        }
        files.sort();
        Ok(files)
    }

    /// Loads and validates the folder as one set.
    pub(crate) fn load(dir: &Path, channels: &[String]) -> Result<WorkflowSet, Diagnostics> {
        Self::compile(Self::read_dir(dir)?, channels)
    }

    /// Validates a set of (path, source) files; every problem in every file is reported at once.
    pub fn compile(files: Vec<(String, String)>, channels: &[String]) -> Result<WorkflowSet, Diagnostics> {
        Self::compile_checked(files, channels, false)
    }

    /// Compiles a set stored for the runs pinned to it. An earlier nudge accepted
    /// it; checks added since (`Problems::lint`) must not strand its runs.
    pub(crate) fn compile_stored(
        files: Vec<(String, String)>,
        channels: &[String],
    ) -> Result<WorkflowSet, Diagnostics> {
        Self::compile_checked(files, channels, true)
    }

    fn compile_checked(
        files: Vec<(String, String)>,
        channels: &[String],
        stored: bool,
    ) -> Result<WorkflowSet, Diagnostics> {
        let mut hasher = Sha256::new();
        for (path, source) in &files {
            hasher.update(path.as_bytes());
            hasher.update([0]);
            hasher.update(source.as_bytes());
            hasher.update([0]);
        }
        let hash = format!("{:x}", hasher.finalize())[..16].to_string();
        match parse::compile_set(&files, channels, stored) {
            Ok(c) => Ok(WorkflowSet {
                hash,
                files,
                workflows: c.workflows,
                templates: c.templates,
                cadences: c.cadences,
                sending: c.sending,
                classification: c.classification.map(std::sync::Arc::new),
                team: c.team,
                languages: c.languages,
            }),
            Err(items) => Err(Diagnostics { items, sources: files }),
        }
    }

    pub(crate) fn workflow(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name == name)
    }
}

/// When the next pass of a segment that repeats `every` is due, its last pass
/// having been due at `last`: `last + every`, or after a long stop the latest
/// `last + k * every` not after `now`, so the missed periods are caught up with
/// one pass. Computed, not stepped through: a segment that started years ago
/// with a short `every` must not hold the engine for billions of steps.
pub(crate) fn next_segment_due(last: i64, every: Span, now: i64) -> i64 {
    let after = |k: i64| {
        every
            .checked_mul(k)
            .ok()
            .map_or(i64::MAX / 2, |span| add_span(last, span, "UTC"))
    };
    let first = after(1);
    let period = first - last;
    if first > now || period <= 0 {
        return first;
    }
    // Exact for fixed lengths; months and years vary, so the guess is then corrected.
    let mut k = ((now - last) / period).max(1);
    while k > 1 && after(k) > now {
        k -= 1;
    }
    while after(k + 1) <= now {
        k += 1;
    }
    after(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_duration;

    #[test]
    fn a_segment_long_stopped_is_due_once_at_its_latest_missed_time() {
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let last = at("2000-01-01T00:00:00Z");
        let now = at("2026-11-23T09:00:30.500Z");
        assert_eq!(
            next_segment_due(last, parse_duration("1m").unwrap(), now),
            at("2026-11-23T09:00:00Z")
        );
        assert_eq!(
            next_segment_due(last, parse_duration("1s").unwrap(), now),
            at("2026-11-23T09:00:30Z")
        );
        assert_eq!(
            next_segment_due(last, "1 month".parse().unwrap(), now),
            at("2026-11-01T00:00:00Z")
        );
        assert_eq!(
            next_segment_due(last, parse_duration("1w").unwrap(), now),
            at("2026-11-21T00:00:00Z")
        );
        // Not yet due: the next time, in the future.
        let recent = at("2026-11-23T08:00:00Z");
        assert_eq!(
            next_segment_due(recent, parse_duration("1d").unwrap(), now),
            at("2026-11-24T08:00:00Z")
        );
    }

    fn variants(weights: &[u32]) -> Vec<Variant> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Variant {
                name: format!("v{i}"),
                weight,
                subject: None,
                delay: None,
            })
            .collect()
    }

    #[test]
    fn variants_are_assigned_by_weight_and_always_alike() {
        let vs = variants(&[70, 20, 10]);
        let mut counts = [0i32; 3];
        for contact in 0..10_000 {
            let v = Variant::assign(&vs, "promo", 2, contact).unwrap();
            assert_eq!(Variant::assign(&vs, "promo", 2, contact).unwrap().name, v.name);
            counts[v.name[1..].parse::<usize>().unwrap()] += 1;
        }
        // 10,000 draws: each share within two points of its weight.
        for (count, weight) in counts.iter().zip([70, 20, 10]) {
            assert!((count / 100 - weight).abs() <= 2, "{counts:?}");
        }
        // Pinned: the hash is part of the format (a change would reshuffle running tests).
        let names: Vec<&str> = (0..8)
            .map(|c| Variant::assign(&vs, "promo", 2, c).unwrap().name.as_str())
            .collect();
        insta::assert_snapshot!(names.join(" "));
        // Another step or workflow draws independently.
        let other: Vec<&str> = (0..8)
            .map(|c| Variant::assign(&vs, "promo", 3, c).unwrap().name.as_str())
            .collect();
        assert_ne!(names, other);
    }

    #[test]
    fn a_stored_set_compiles_under_the_checks_it_was_accepted_with() {
        let template = "[t]\nchannel = \"email\"\nsubject = \"Hi {{ contact.nmae }}\"\n";
        let workflow = "when = 'contact.stage == \"x\" && contact.name > 3'\n[trigger]\non = \"segment\"\n\
                        every = \"1s\"\n[[steps]]\nwait = \"7000000d\"\n[[steps]]\nnotify = { to = \"owner\", template = \"t\" }\n\
                        [vars]\nenabled = false\n";
        let files: Vec<(String, String)> = vec![
            ("wf/templates/t.toml".into(), template.into()),
            ("wf/seg.toml".into(), workflow.into()),
        ];
        let channels = ["email".to_string()];
        let refused = WorkflowSet::compile(files.clone(), &channels).unwrap_err();
        let messages: Vec<&str> = refused.items.iter().map(|d| d.message.as_str()).collect();
        for expected in [
            "contact.nmae",
            "type error",
            "shorter than a minute",
            "longer than 10 years",
            "workflow key",
        ] {
            assert!(
                messages.iter().any(|m| m.contains(expected)),
                "{expected}: {messages:?}"
            );
        }
        // The runs pinned to such a set, stored by an earlier nudge, can still finish.
        let stored = WorkflowSet::compile_stored(files, &channels).unwrap();
        assert_eq!(stored.workflows[0].steps.len(), 2);
        // What an earlier nudge refused still refuses a stored set.
        let broken = vec![("wf/a.toml".to_string(), "[trigger]\non = \"nope\"\n".to_string())];
        assert!(WorkflowSet::compile_stored(broken, &channels).is_err());
    }
}
