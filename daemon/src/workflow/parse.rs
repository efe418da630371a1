//! TOML -> compiled workflows. serde gives the shape (with spans and unknown-key
//! errors); everything serde cannot know (conditions, durations, references to
//! templates, channels, cadences, stage names) is checked here, and every
//! problem is collected rather than stopping at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::{Diagnostic, did_you_mean};
use super::*;
use crate::model::{Category, INTENT_GRADES, RFM_GRADES, STAGES, TIERS, add_span, parse_duration};

/// The problems found in a set so far.
#[derive(Debug, Default)]
pub(super) struct Problems {
    found: Vec<Diagnostic>,
    /// A set stored for the runs pinned to it, which an earlier nudge accepted.
    stored: bool,
}

impl Problems {
    pub(super) fn push(&mut self, problem: Diagnostic) {
        self.found.push(problem);
    }

    /// A problem that a check added after sets were first stored finds: it
    /// refuses new files, but a stored set still compiles for its runs, which
    /// would otherwise stop halfway after an upgrade.
    pub(super) fn lint(&mut self, problem: Diagnostic) {
        if !self.stored {
            self.found.push(problem);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.found.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub(super) fn into_vec(self) -> Vec<Diagnostic> {
        self.found
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    description: Option<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    trigger: Spanned<RawTrigger>,
    when: Option<Spanned<String>>,
    #[serde(default)]
    vars: BTreeMap<Spanned<String>, toml::Value>,
    category: Option<Spanned<String>>,
    send_window: Option<Spanned<String>>,
    exit_when: Option<Vec<Spanned<String>>>,
    exit_if: Option<Spanned<String>>,
    track: Option<Spanned<bool>>,
    steps: Spanned<Vec<Spanned<RawStep>>>,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    on: Spanned<String>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    sla: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    start: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    send: Option<Spanned<RawSend>>,
    notify_owner: Option<Spanned<RawNotify>>,
    wait: Option<Spanned<String>>,
    schedule_follow_up: Option<Spanned<RawSchedule>>,
    set_stage: Option<Spanned<String>>,
    set_tier: Option<Spanned<String>>,
    set_intent: Option<Spanned<String>>,
    tag: Option<Spanned<String>>,
    untag: Option<Spanned<String>>,
    set_owner: Option<Spanned<String>>,
    /// An A/B test of a `send` step: `[[steps.variants]]` tables.
    variants: Option<Spanned<Vec<Spanned<RawVariant>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: Spanned<String>,
    weight: Option<Spanned<i64>>,
    subject: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSend {
    channel: Spanned<String>,
    template: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    template: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(rename = "in")]
    after: Option<Spanned<String>>,
    cadence: Option<Spanned<String>>,
    goal: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCadence {
    by: Spanned<String>,
    every: BTreeMap<Spanned<String>, Spanned<String>>,
    default: Option<Spanned<String>>,
}

/// A template field: a template string, or a table of them (e.g. `params = { name = "{{ contact.name }}" }`).
#[derive(Deserialize)]
#[serde(untagged)]
enum TemplateValue {
    Text(String),
    Table(BTreeMap<String, String>),
}

/// The keys of a workflow file's top level.
const WORKFLOW_KEYS: &[&str] = &[
    "description",
    "enabled",
    "when",
    "vars",
    "steps",
    "category",
    "send_window",
    "exit_when",
    "exit_if",
    "track",
];

/// Ten years (of 366 days): the longest wait, cadence or delay.
const LONGEST_DURATION_MS: i64 = 10 * 366 * 24 * 3_600_000;

/// The shortest `every` of a segment: each pass reads every contact.
const SEGMENT_EVERY_FLOOR_MS: i64 = 60_000;

const TRIGGERS: &[&str] = &[
    "contact_created",
    "stage_changed",
    "follow_up_logged",
    "follow_up_overdue",
    "inquiry_received",
    "segment",
    "tier_changed",
    "rfm_changed",
    "became_dormant",
    "became_active",
    "first_order",
];

type Compiled = (
    Vec<Workflow>,
    BTreeMap<String, Template>,
    BTreeMap<String, Cadence>,
    SendingPolicy,
    Option<ClassificationRules>,
);

/// Compiles a set of files; `stored`: a set stored for its runs (see `Problems::lint`).
pub(super) fn compile_set(
    files: &[(String, String)],
    channels: &[String],
    stored: bool,
) -> Result<Compiled, Vec<Diagnostic>> {
    let mut problems = Problems {
        found: Vec::new(),
        stored,
    };
    let mut templates = BTreeMap::new();
    let mut cadences = BTreeMap::new();
    let mut sending = SendingPolicy::default();
    let mut classification = None;
    let mut workflow_files = Vec::new();
    for (path, source) in files {
        let in_templates = Path::new(path)
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "templates");
        if in_templates {
            parse_templates(path, source, channels, &mut templates, &mut problems);
        } else if Path::new(path).file_name().is_some_and(|n| n == "cadences.toml") {
            parse_cadences(path, source, &mut cadences, &mut problems);
        } else if Path::new(path).file_name().is_some_and(|n| n == "sending.toml") {
            sending = sending::parse(path, source, channels, &mut problems);
        } else if Path::new(path).file_name().is_some_and(|n| n == CLASSIFICATION_FILE) {
            classification = super::classification::parse_rules(path, source, &mut problems);
        } else {
            workflow_files.push((path, source));
        }
    }
    let mut workflows: Vec<Workflow> = Vec::new();
    for (path, source) in workflow_files {
        if let Some(w) = parse_workflow(path, source, channels, &templates, &cadences, &sending, &mut problems) {
            workflows.push(w);
        }
    }
    if problems.is_empty() {
        Ok((workflows, templates, cadences, sending, classification))
    } else {
        Err(problems.into_vec())
    }
}

pub(super) fn serde_problem(path: &str, error: toml::de::Error) -> Diagnostic {
    let span = error.span().unwrap_or(0..0);
    let message = error.message().trim().to_string();
    let mut d = Diagnostic::new(path, span.clone(), message.clone());
    // serde names the accepted keys in its message ("expected one of `a`, `b`"):
    // turn the closest into a suggestion.
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((written, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let help = if WORKFLOW_KEYS.contains(&written) && candidates.contains(&"on") {
            format!(
                "`{written}` belongs to the workflow, not the trigger: in TOML, keys after a `[trigger]` header \
                 belong to that table; move `{written}` above `[trigger]`"
            )
        } else {
            did_you_mean(written, candidates.iter().copied())
                .unwrap_or_else(|| format!("remove `{written}`; allowed here: {}", candidates.join(", ")))
        };
        d = d.help(help);
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        d = d.help(format!(
            "add `{field} = ...` to this table (see the workflow file reference in README.md)"
        ));
    } else if message.starts_with("invalid type") {
        d = d.help("write the value as the type the message asks for, e.g. a duration as a string: \"3d\"");
    } else if message.starts_with("duplicate key") {
        d = d.help("a key can appear once per table: remove or rename one of them");
    } else {
        d = d.help("fix the TOML syntax at this position (strings need quotes, tables need [brackets])");
    }
    d
}

pub(super) fn at<T>(s: &Spanned<T>) -> Range<usize> {
    s.span()
}

fn parse_templates(
    path: &str,
    source: &str,
    channels: &[String],
    templates: &mut BTreeMap<String, Template>,
    problems: &mut Problems,
) {
    let raw: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<TemplateValue>>> = match toml::from_str(source)
    {
        Ok(raw) => raw,
        Err(e) => return problems.push(serde_problem(path, e)),
    };
    for (name, fields) in raw {
        let channel = fields
            .iter()
            .find(|(k, _)| k.get_ref() == "channel")
            .map(|(_, v)| match v.get_ref() {
                TemplateValue::Text(text) => Spanned::new(v.span(), text.clone()),
                TemplateValue::Table(_) => Spanned::new(v.span(), String::new()),
            });
        let Some(channel) = channel else {
            problems.push(
                Diagnostic::new(path, at(&name), format!("template `{}` has no channel", name.get_ref()))
                    .help("add `channel = \"email\"` (or another installed channel) to the template"),
            );
            continue;
        };
        if !channels.contains(channel.get_ref()) {
            problems.push(unknown_channel(path, &channel, channels));
        }
        if templates.contains_key(name.get_ref()) {
            problems.push(
                Diagnostic::new(
                    path,
                    at(&name),
                    format!("template `{}` is defined twice", name.get_ref()),
                )
                .help("template names are shared by the whole folder; rename one of them"),
            );
            continue;
        }
        // A table of strings (e.g. an SMS template's `params`) becomes `params.<name>` fields.
        let fields: Vec<(String, String, Range<usize>)> = fields
            .into_iter()
            .filter(|(k, _)| k.get_ref() != "channel")
            .flat_map(|(k, v)| {
                let span = v.span();
                match v.into_inner() {
                    TemplateValue::Text(text) => vec![(k.into_inner(), text, span)],
                    TemplateValue::Table(table) => table
                        .into_iter()
                        .map(|(name, text)| (format!("{}.{name}", k.get_ref()), text, span.clone()))
                        .collect(),
                }
            })
            .collect();
        let mut reads_vars = BTreeSet::new();
        for (field, text, span) in &fields {
            let what = format!("template `{}`, `{field}`", name.get_ref());
            if let Some(vars) = template_text(path, source, span.clone(), &what, text, problems) {
                reads_vars.extend(vars);
            }
        }
        templates.insert(
            name.get_ref().clone(),
            Template {
                name: name.into_inner(),
                channel: channel.into_inner(),
                fields: fields.into_iter().map(|(field, text, _)| (field, text)).collect(),
                reads_vars,
            },
        );
    }
}

/// Checks a template text written at `span` of the file (a string, or a table
/// of them); a problem points into the text. Returns the `vars.<name>` it reads.
fn template_text(
    path: &str,
    source: &str,
    span: Range<usize>,
    what: &str,
    text: &str,
    problems: &mut Problems,
) -> Option<super::templates::ReadsVars> {
    match super::templates::check(text) {
        Ok(vars) => Some(vars),
        Err(p) => {
            // Inside a string value the problem's own place is known; in a table, the table's.
            let quoted = source[span.clone()].starts_with(['"', '\'']);
            let at = if quoted {
                offset_in_string(source, span.start, p.at.start)..offset_in_string(source, span.start, p.at.end)
            } else {
                span
            };
            problems.lint(Diagnostic::new(path, at, format!("in {what}: {}", p.message)).help(p.help));
            None
        }
    }
}

fn unknown_channel(path: &str, channel: &Spanned<String>, channels: &[String]) -> Diagnostic {
    let help = did_you_mean(channel.get_ref(), channels.iter().map(String::as_str))
        .unwrap_or_else(|| format!("installed channels: {}", channels.join(", ")));
    Diagnostic::new(path, at(channel), format!("unknown channel `{}`", channel.get_ref())).help(help)
}

pub(super) fn duration(path: &str, text: &Spanned<String>, problems: &mut Problems) -> Option<Span> {
    match parse_duration(text.get_ref()) {
        Ok(span) => {
            // Longer is a typo (`7000000d`), and times it is added to would saturate.
            if add_span(0, span, "UTC") > LONGEST_DURATION_MS {
                problems.lint(
                    Diagnostic::new(path, at(text), format!("`{}` is longer than 10 years", text.get_ref()))
                        .help("write at most 10 years, e.g. \"520w\" (waits, cadences and delays of longer are typos)"),
                );
            }
            Some(span)
        }
        Err(message) => {
            problems.push(
                Diagnostic::new(path, at(text), message)
                    .help("write a duration like \"30s\", \"15m\", \"24h\", \"3d\", \"2w\" or \"1d 12h\""),
            );
            None
        }
    }
}

fn one_of(path: &str, value: &Spanned<String>, allowed: &[&str], what: &str, problems: &mut Problems) -> bool {
    if allowed.contains(&value.get_ref().as_str()) {
        return true;
    }
    let help = did_you_mean(value.get_ref(), allowed.iter().copied())
        .unwrap_or_else(|| format!("{what} is one of: {}", allowed.join(", ")));
    problems.push(Diagnostic::new(path, at(value), format!("unknown {what} `{}`", value.get_ref())).help(help));
    false
}

fn parse_cadences(path: &str, source: &str, cadences: &mut BTreeMap<String, Cadence>, problems: &mut Problems) {
    let raw: BTreeMap<String, RawCadence> = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => return problems.push(serde_problem(path, e)),
    };
    for (name, raw) in raw {
        one_of(path, &raw.by, CADENCE_KEYS, "cadence key", problems);
        // A row for a value the field never has would never be used: the contact falls to the default.
        let values = match raw.by.get_ref().as_str() {
            "intent_grade" => Some((INTENT_GRADES, "intent grade")),
            "value_tier" => Some((TIERS, "value tier")),
            "stage" => Some((STAGES, "stage")),
            _ => None,
        };
        let mut every = BTreeMap::new();
        for (value, interval) in &raw.every {
            if let Some((allowed, what)) = values
                && !allowed.contains(&value.get_ref().as_str())
            {
                let same_but_case = allowed.iter().find(|a| a.eq_ignore_ascii_case(value.get_ref()));
                let help = same_but_case
                    .map(|a| format!("did you mean `{a}`? values are case-sensitive"))
                    .or_else(|| did_you_mean(value.get_ref(), allowed.iter().copied()))
                    .unwrap_or_else(|| format!("{what} is one of: {}", allowed.join(", ")));
                problems.lint(
                    Diagnostic::new(
                        path,
                        at(value),
                        format!(
                            "cadence `{name}` is by {what}, and no contact has {what} `{}`",
                            value.get_ref()
                        ),
                    )
                    .help(help),
                );
            }
            if let Some(span) = duration(path, interval, problems) {
                every.insert(value.get_ref().clone(), span);
            }
        }
        let default = raw.default.as_ref().and_then(|d| duration(path, d, problems));
        cadences.insert(
            name,
            Cadence {
                by: raw.by.into_inner(),
                every,
                default,
            },
        );
    }
}

fn parse_workflow(
    path: &str,
    source: &str,
    channels: &[String],
    templates: &BTreeMap<String, Template>,
    cadences: &BTreeMap<String, Cadence>,
    sending: &SendingPolicy,
    problems: &mut Problems,
) -> Option<Workflow> {
    let raw: RawWorkflow = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(serde_problem(path, e));
            return None;
        }
    };
    let before = problems.len();
    // In TOML every key after `[vars]` is a var: a workflow key written there by
    // mistake (`enabled = false`) would silently do nothing.
    // (`description` is left alone: it makes sense as a variable too.)
    let misplaced =
        |k: &&Spanned<String>| k.get_ref() != "description" && WORKFLOW_KEYS.contains(&k.get_ref().as_str());
    for key in raw.vars.keys().filter(misplaced) {
        problems.lint(
            Diagnostic::new(path, at(key), format!("`{}` is a workflow key, not a variable", key.get_ref()))
                .help(format!(
                    "keys after a `[vars]` header belong to `vars`: move `{}` above `[trigger]`, or give the variable another name",
                    key.get_ref()
                )),
        );
    }
    let trigger = parse_trigger(path, &raw.trigger, problems);
    let condition = |key: &str, w: &Spanned<String>, problems: &mut Problems| {
        let problem = |e: super::condition::ConditionError| {
            let quote = w.span().start;
            let span = offset_in_string(source, quote, e.span.start)..offset_in_string(source, quote, e.span.end);
            let d = Diagnostic::new(path, span, format!("in `{key}`: {}", e.message));
            match e.help {
                Some(help) => d.help(help),
                None => d,
            }
        };
        match Condition::compile(w.get_ref()) {
            Ok(c) => {
                if let Some(e) = c.operand_type_error() {
                    problems.lint(problem(e));
                }
                Some(c)
            }
            Err(e) => {
                problems.push(problem(e));
                None
            }
        }
    };
    let when = raw.when.as_ref().and_then(|w| condition("when", w, problems));
    if matches!(trigger, Some(Trigger::Segment { .. })) && raw.when.is_none() {
        problems.push(
            Diagnostic::new(path, at(&raw.trigger), "a segment workflow needs a `when` condition")
                .help("add `when = '...'` above `[trigger]`: the contacts it matches are the segment, e.g. `when = 'contact.stage == \"lead\"'`"),
        );
    }
    let first_send = raw.steps.get_ref().iter().find(|s| s.get_ref().send.is_some());
    let category = match &raw.category {
        None => {
            if let Some(send) = first_send {
                problems.push(
                    Diagnostic::new(path, at(send), "a workflow that sends to the contact must say what its messages are")
                        .help("add `category = \"marketing\"` (capped, send windows, unsubscribe link), `\"transactional\"` or `\"sla\"` above `[trigger]`"),
                );
            }
            Category::Transactional
        }
        Some(c) => match Category::parse(c.get_ref()) {
            Some(category) => category,
            None => {
                one_of(path, c, Category::ALL, "category", problems);
                Category::Marketing
            }
        },
    };
    if let Some(window) = &raw.send_window
        && !sending.windows.contains_key(window.get_ref())
    {
        let help = did_you_mean(window.get_ref(), sending.windows.keys().map(String::as_str))
            .unwrap_or_else(|| "define it under [windows.<name>] in sending.toml".to_string());
        problems
            .push(Diagnostic::new(path, at(window), format!("unknown send window `{}`", window.get_ref())).help(help));
    }
    let exit_on = match &raw.exit_when {
        None if category == Category::Marketing => ExitOn::MARKETING_DEFAULT.to_vec(),
        None => Vec::new(),
        Some(names) => names
            .iter()
            .filter_map(|n| {
                one_of(path, n, ExitOn::NAMES, "exit condition", problems)
                    .then(|| ExitOn::parse(n.get_ref()))
                    .flatten()
            })
            .collect(),
    };
    let exit_if = raw.exit_if.as_ref().and_then(|w| condition("exit_if", w, problems));
    let track = match (category, &raw.track) {
        (Category::Marketing, None) => true,
        (Category::Marketing, Some(track)) => *track.get_ref(),
        (_, Some(track)) if *track.get_ref() => {
            problems.push(
                Diagnostic::new(
                    path,
                    at(track),
                    format!("opens and clicks are never tracked in {} messages", category.as_str()),
                )
                .help("remove `track = true`: only marketing email is tracked (tracking in a message the recipient must get would make them choose between it and their privacy)"),
            );
            false
        }
        _ => false,
    };
    if raw.steps.get_ref().is_empty() {
        problems.push(
            Diagnostic::new(path, at(&raw.steps), "a workflow needs at least one step")
                .help("add a `[[steps]]` table, e.g. `send = { channel = \"email\", template = \"...\" }`"),
        );
    }
    let mut steps = Vec::new();
    let mut variant_names = std::collections::BTreeSet::new();
    for step in raw.steps.get_ref() {
        if let Some(step) = parse_step(path, step, channels, templates, cadences, problems) {
            steps.push(step);
        }
        if let Some(variants) = &step.get_ref().variants {
            for name in variants.get_ref().iter().map(|v| &v.get_ref().name) {
                // The report groups a workflow's messages by variant name.
                if !variant_names.insert(name.get_ref().trim()) {
                    problems.push(
                        Diagnostic::new(path, at(name), format!("variant `{}` is named twice in this workflow", name.get_ref()))
                            .help("give every variant of the workflow its own name: the report counts each name as one variant"),
                    );
                }
            }
        }
    }
    check_vars_read(path, source, &raw, templates, problems);
    if problems.len() > before {
        return None;
    }
    let name = Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(Workflow {
        name,
        file: path.to_string(),
        description: raw.description.unwrap_or_default(),
        enabled: raw.enabled,
        trigger: trigger?,
        when,
        vars: serde_json::Value::Object(
            raw.vars
                .into_iter()
                .map(|(k, v)| (k.into_inner(), serde_json::to_value(v).unwrap_or_default()))
                .collect(),
        ),
        steps,
        category,
        send_window: raw.send_window.map(Spanned::into_inner),
        track,
        exit: Exit {
            on: exit_on,
            condition: exit_if,
        },
    })
}

/// The vars each template of the workflow reads (and each variant's subject,
/// a template of its own) must be under its `[vars]`: strict rendering would
/// otherwise fail at every send.
fn check_vars_read(
    path: &str,
    source: &str,
    raw: &RawWorkflow,
    templates: &BTreeMap<String, Template>,
    problems: &mut Problems,
) {
    let defined: Vec<&str> = raw.vars.keys().map(|k| k.get_ref().as_str()).collect();
    let missing = |at: Range<usize>, what: &str, vars: &BTreeSet<String>, problems: &mut Problems| {
        for var in vars.iter().filter(|v| !defined.contains(&v.as_str())) {
            let help = match did_you_mean(var, defined.iter().copied()) {
                Some(close) => format!("{close} (this workflow defines it), or add `{var} = \"...\"` under `[vars]`"),
                None => format!("add `{var} = \"...\"` under `[vars]` in this workflow"),
            };
            problems.lint(
                Diagnostic::new(
                    path,
                    at.clone(),
                    format!("{what} reads `vars.{var}`, which this workflow does not define"),
                )
                .help(help),
            );
        }
    };
    for step in raw.steps.get_ref().iter().map(Spanned::get_ref) {
        let template = (step.send.as_ref().map(|s| &s.get_ref().template))
            .or(step.notify_owner.as_ref().map(|n| &n.get_ref().template));
        if let Some(name) = template
            && let Some(t) = templates.get(name.get_ref())
        {
            missing(at(name), &format!("template `{}`", t.name), &t.reads_vars, problems);
        }
        for variant in step.variants.iter().flat_map(|v| v.get_ref()).map(Spanned::get_ref) {
            if let Some(subject) = &variant.subject
                && let Some(vars) = template_text(
                    path,
                    source,
                    subject.span(),
                    "the variant's subject",
                    subject.get_ref(),
                    problems,
                )
            {
                missing(at(subject), "the variant's subject", &vars, problems);
            }
        }
    }
}

/// Byte offset in `source` of byte `at` of a TOML string's value, given the offset
/// of its opening quote. They differ by the quote, by escapes (`\"` is two bytes in
/// the file and one in the value, `\u00e9` six and two) and by line-ending
/// backslashes, so a position inside a `when` expression is mapped through them.
pub(super) fn offset_in_string(source: &str, quote: usize, at: usize) -> usize {
    let rest = source.get(quote..).unwrap_or("");
    let opener = ["\"\"\"", "'''", "\"", "'"]
        .into_iter()
        .find(|q| rest.starts_with(q))
        .unwrap_or("");
    let mut raw = quote + opener.len();
    // A newline right after a multi-line opener is not part of the string.
    if opener.len() == 3 {
        if source[raw..].starts_with("\r\n") {
            raw += 2;
        } else if source[raw..].starts_with('\n') {
            raw += 1;
        }
    }
    if !opener.starts_with('"') {
        // Literal strings have no escapes: the value is the text.
        return (raw + at).min(source.len());
    }
    let mut value = 0;
    let mut chars = source[raw..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\\' && chars.peek().is_some_and(|(_, next)| next.is_whitespace()) {
            // A line-ending backslash: it and the whitespace after it are not in the value.
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            continue;
        }
        if value >= at {
            return raw + i;
        }
        if c != '\\' {
            value += c.len_utf8();
            continue;
        }
        let Some(&(_, escaped)) = chars.peek() else { break };
        let hex_digits = match escaped {
            'u' => 4,
            'U' => 8,
            'x' => 2,
            _ => 0,
        };
        if hex_digits > 0 {
            let digits: String = source[raw + i + 2..].chars().take(hex_digits).collect();
            let decoded = u32::from_str_radix(&digits, 16).ok().and_then(char::from_u32);
            value += decoded.map_or(1, char::len_utf8);
            chars.nth(hex_digits);
        } else {
            value += 1;
            chars.next();
        }
    }
    source.len()
}

fn parse_trigger(path: &str, raw: &Spanned<RawTrigger>, problems: &mut Problems) -> Option<Trigger> {
    let t = raw.get_ref();
    if !one_of(path, &t.on, TRIGGERS, "trigger", problems) {
        return None;
    }
    let on = t.on.get_ref().as_str();
    let not_here = |key: &str, span: Range<usize>| {
        Diagnostic::new(path, span, format!("`{key}` does not apply to trigger `{on}`"))
            .help(format!("remove `{key}`, or use a trigger that takes it"))
    };
    let mut ok = true;
    // `from` and `to` narrow the triggers that report a change of one field.
    let changed_values = match on {
        "stage_changed" => Some((STAGES, "stage")),
        "tier_changed" => Some((TIERS, "value tier")),
        "rfm_changed" => Some((RFM_GRADES, "RFM grade")),
        _ => None,
    };
    for (key, value) in [("from", &t.from), ("to", &t.to)] {
        if let Some(v) = value {
            match changed_values {
                None => {
                    problems.push(not_here(key, at(v)));
                    ok = false;
                }
                Some((allowed, what)) => ok &= one_of(path, v, allowed, what, problems),
            }
        }
    }
    let from = t.from.as_ref().map(|s| s.get_ref().clone());
    let to = t.to.as_ref().map(|s| s.get_ref().clone());
    if let Some(g) = &t.grace
        && on != "follow_up_overdue"
    {
        problems.push(not_here("grace", at(g)));
        ok = false;
    }
    if let Some(s) = &t.sla
        && on != "inquiry_received"
    {
        problems.push(not_here("sla", at(s)));
        ok = false;
    }
    for (key, value) in [("start", &t.start), ("every", &t.every)] {
        if let Some(v) = value
            && on != "segment"
        {
            problems.push(not_here(key, at(v)));
            ok = false;
        }
    }
    let trigger = match on {
        "contact_created" => Trigger::ContactCreated,
        "follow_up_logged" => Trigger::FollowUpLogged,
        "stage_changed" => Trigger::StageChanged {
            from: t.from.as_ref().map(|s| s.get_ref().clone()),
            to: t.to.as_ref().map(|s| s.get_ref().clone()),
        },
        "tier_changed" => Trigger::TierChanged { from, to },
        "rfm_changed" => Trigger::RfmChanged { from, to },
        "became_dormant" => Trigger::BecameDormant,
        "became_active" => Trigger::BecameActive,
        "first_order" => Trigger::FirstOrder,
        "follow_up_overdue" => Trigger::FollowUpOverdue {
            grace: match &t.grace {
                Some(g) => duration(path, g, problems)?,
                None => Span::new(),
            },
        },
        "inquiry_received" => Trigger::InquiryReceived {
            sla: match &t.sla {
                None => None,
                Some(sla) => Some(parse_sla(path, sla, problems)?),
            },
        },
        "segment" => Trigger::Segment {
            start: match &t.start {
                None => None,
                Some(start) => match start
                    .get_ref()
                    .parse::<jiff::Timestamp>()
                    .map(|t| t.as_millisecond())
                    .or_else(|_| {
                        start.get_ref().parse::<jiff::civil::DateTime>().map(|d| {
                            d.to_zoned(jiff::tz::TimeZone::UTC)
                                .map_or(0, |z| z.timestamp().as_millisecond())
                        })
                    }) {
                    Ok(ms) => Some(ms),
                    Err(_) => {
                        problems.push(
                            Diagnostic::new(path, at(start), format!("`{}` is not a time", start.get_ref()))
                                .help("write a time such as \"2026-12-01T09:00:00Z\" or \"2026-12-01 09:00\" (UTC)"),
                        );
                        return None;
                    }
                },
            },
            every: match &t.every {
                None => None,
                Some(every) => {
                    let span = duration(path, every, problems)?;
                    if add_span(0, span, "UTC") < SEGMENT_EVERY_FLOOR_MS {
                        problems.lint(
                            Diagnostic::new(path, at(every), format!("`every = \"{}\"` is shorter than a minute", every.get_ref()))
                                .help("each pass of a segment looks at every contact: repeat it every minute at most, e.g. \"1h\" or \"1d\" (leave `every` out for a single pass)"),
                        );
                        // (A stored set keeps its `every`: its passes are computed, not stepped through.)
                    }
                    Some(span)
                }
            },
        },
        _ => unreachable!("checked against TRIGGERS"),
    };
    ok.then_some(trigger)
}

fn parse_sla(
    path: &str,
    raw: &Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    problems: &mut Problems,
) -> Option<Sla> {
    let mut default = None;
    let mut by_tier = BTreeMap::new();
    let before = problems.len();
    for (key, value) in raw.get_ref() {
        let span = duration(path, value, problems);
        if key.get_ref() == "default" {
            default = span;
        } else if one_of(path, key, TIERS, "value tier", problems)
            && let Some(span) = span
        {
            by_tier.insert(key.get_ref().clone(), span);
        }
    }
    if problems.len() > before {
        return None;
    }
    match default {
        Some(default) => Some(Sla { default, by_tier }),
        None => {
            problems.push(
                Diagnostic::new(path, at(raw), "the SLA has no `default`")
                    .help("add `default = \"15m\"`: it applies to contacts whose tier has no entry"),
            );
            None
        }
    }
}

/// The variants of an A/B test: two or more, each named, with a positive weight
/// (names are checked once per workflow by the caller).
fn parse_variants(
    path: &str,
    raw: &Spanned<Vec<Spanned<RawVariant>>>,
    template: Option<&Template>,
    problems: &mut Problems,
) -> Option<Vec<Variant>> {
    let before = problems.len();
    if raw.get_ref().len() < 2 {
        problems.push(
            Diagnostic::new(path, at(raw), "an A/B test needs at least two variants").help(
                "add another `[[steps.variants]]` table, or remove the variants and let the template speak alone",
            ),
        );
    }
    let mut variants = Vec::new();
    for v in raw.get_ref().iter().map(Spanned::get_ref) {
        let name = v.name.get_ref().trim();
        if name.is_empty() {
            problems.push(
                Diagnostic::new(path, at(&v.name), "a variant needs a name")
                    .help("write e.g. `name = \"a\"`: the report shows each variant's figures under it"),
            );
        }
        let weight = match &v.weight {
            None => 1,
            Some(w) if (1..=1_000_000).contains(w.get_ref()) => *w.get_ref() as u32,
            Some(w) => {
                problems.push(
                    Diagnostic::new(path, at(w), format!("weight {} is not a positive whole number", w.get_ref()))
                        .help("write a weight from 1 to 1000000; each variant gets weight / total of the contacts (e.g. 50 and 50)"),
                );
                1
            }
        };
        if let (Some(subject), Some(t)) = (&v.subject, template)
            && !t.fields.iter().any(|(k, _)| k == "subject")
        {
            problems.push(
                Diagnostic::new(
                    path,
                    at(subject),
                    format!("template `{}` has no subject to vary", t.name),
                )
                .help("vary the subject of a template that has one (an email template), or remove `subject`"),
            );
        }
        let delay = v.delay.as_ref().and_then(|d| duration(path, d, problems));
        variants.push(Variant {
            name: name.to_string(),
            weight,
            subject: v.subject.as_ref().map(|s| s.get_ref().clone()),
            delay,
        });
    }
    (problems.len() == before).then_some(variants)
}

fn parse_step(
    path: &str,
    raw: &Spanned<RawStep>,
    channels: &[String],
    templates: &BTreeMap<String, Template>,
    cadences: &BTreeMap<String, Cadence>,
    problems: &mut Problems,
) -> Option<Step> {
    let s = raw.get_ref();
    let set = [
        s.send.is_some(),
        s.notify_owner.is_some(),
        s.wait.is_some(),
        s.schedule_follow_up.is_some(),
        s.set_stage.is_some(),
        s.set_tier.is_some(),
        s.set_intent.is_some(),
        s.tag.is_some(),
        s.untag.is_some(),
        s.set_owner.is_some(),
    ]
    .into_iter()
    .filter(|x| *x)
    .count();
    if set != 1 {
        problems.push(
            Diagnostic::new(path, at(raw), format!("a step does exactly one thing; this one has {set} actions"))
                .help("give each `[[steps]]` table one of: send, notify_owner, wait, schedule_follow_up, set_stage, set_tier, set_intent, tag, untag, set_owner"),
        );
        return None;
    }
    let template_ref =
        |name: &Spanned<String>, channel: Option<&Spanned<String>>, problems: &mut Problems| match templates
            .get(name.get_ref())
        {
            None => {
                let help = did_you_mean(name.get_ref(), templates.keys().map(String::as_str))
                    .unwrap_or_else(|| "define it in a file under templates/".to_string());
                problems
                    .push(Diagnostic::new(path, at(name), format!("unknown template `{}`", name.get_ref())).help(help));
                false
            }
            Some(t) => match channel {
                Some(c) if *c.get_ref() != t.channel => {
                    problems.push(
                        Diagnostic::new(
                            path,
                            at(name),
                            format!(
                                "template `{}` is for channel `{}`, not `{}`",
                                t.name,
                                t.channel,
                                c.get_ref()
                            ),
                        )
                        .help("use a template written for this channel"),
                    );
                    false
                }
                None if t.channel != "email" => {
                    problems.push(
                        Diagnostic::new(
                            path,
                            at(name),
                            format!(
                                "`notify_owner` sends email; template `{}` is for `{}`",
                                t.name, t.channel
                            ),
                        )
                        .help("use an email template"),
                    );
                    false
                }
                _ => true,
            },
        };
    if let Some(send) = &s.send {
        let send = send.get_ref();
        let channel_ok = channels.contains(send.channel.get_ref());
        if !channel_ok {
            problems.push(unknown_channel(path, &send.channel, channels));
        }
        let template_ok = template_ref(&send.template, Some(&send.channel), problems);
        let variants = match &s.variants {
            Some(raw) => parse_variants(path, raw, templates.get(send.template.get_ref()), problems)?,
            None => Vec::new(),
        };
        return (channel_ok && template_ok).then(|| Step::Send {
            channel: send.channel.get_ref().clone(),
            template: send.template.get_ref().clone(),
            variants,
        });
    }
    if let Some(variants) = &s.variants {
        problems.push(
            Diagnostic::new(path, at(variants), "only a `send` step has variants")
                .help("move the `[[steps.variants]]` tables under the `[[steps]]` table that has `send = ...`"),
        );
        return None;
    }
    if let Some(notify) = &s.notify_owner {
        let template = &notify.get_ref().template;
        return template_ref(template, None, problems).then(|| Step::NotifyOwner {
            template: template.get_ref().clone(),
        });
    }
    if let Some(wait) = &s.wait {
        return duration(path, wait, problems).map(Step::Wait);
    }
    if let Some(schedule) = &s.schedule_follow_up {
        let r = schedule.get_ref();
        let after = match (&r.after, &r.cadence) {
            (Some(after), None) => FollowUpAfter::Fixed(duration(path, after, problems)?),
            (None, Some(cadence)) => {
                if !cadences.contains_key(cadence.get_ref()) {
                    let help = did_you_mean(cadence.get_ref(), cadences.keys().map(String::as_str))
                        .unwrap_or_else(|| "define it in cadences.toml".to_string());
                    problems.push(
                        Diagnostic::new(path, at(cadence), format!("unknown cadence `{}`", cadence.get_ref()))
                            .help(help),
                    );
                    return None;
                }
                FollowUpAfter::Cadence(cadence.get_ref().clone())
            }
            _ => {
                problems.push(
                    Diagnostic::new(
                        path,
                        at(schedule),
                        "`schedule_follow_up` needs exactly one of `in` and `cadence`",
                    )
                    .help("write `{ in = \"3d\" }` or `{ cadence = \"intent\" }`"),
                );
                return None;
            }
        };
        return Some(Step::ScheduleFollowUp {
            after,
            goal: r.goal.clone(),
        });
    }
    let checked = |value: &Spanned<String>, allowed: &[&str], what: &str, problems: &mut Problems| {
        one_of(path, value, allowed, what, problems).then(|| value.get_ref().clone())
    };
    if let Some(stage) = &s.set_stage {
        return checked(stage, STAGES, "stage", problems).map(Step::SetStage);
    }
    if let Some(tier) = &s.set_tier {
        return checked(tier, TIERS, "value tier", problems).map(Step::SetTier);
    }
    if let Some(grade) = &s.set_intent {
        return checked(grade, INTENT_GRADES, "intent grade", problems).map(Step::SetIntent);
    }
    let tag = |value: &Spanned<String>, problems: &mut Problems| {
        let t = value.get_ref().trim();
        if t.is_empty() {
            problems.push(Diagnostic::new(path, at(value), "a tag cannot be empty").help("write the tag's name"));
            return None;
        }
        Some(t.to_string())
    };
    if let Some(t) = &s.tag {
        return tag(t, problems).map(Step::Tag);
    }
    if let Some(t) = &s.untag {
        return tag(t, problems).map(Step::Untag);
    }
    if let Some(owner) = &s.set_owner {
        if owner.get_ref().parse::<lettre::Address>().is_err() {
            problems.push(
                Diagnostic::new(path, at(owner), format!("`{}` is not an email address", owner.get_ref()))
                    .help("an owner is the email address that gets `notify_owner` messages, e.g. \"key-accounts@example.com\""),
            );
            return None;
        }
        return Some(Step::SetOwner(owner.get_ref().trim().to_string()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATES: (&str, &str) = (
        "wf/templates/email.toml",
        "[hello]\nchannel = \"email\"\nsubject = \"Hi {{ contact.name }}\"\ntext = \"t\"\n",
    );

    fn compile(workflow: &str) -> Result<Compiled, Vec<Diagnostic>> {
        let files = vec![TEMPLATES, ("wf/a.toml", workflow)];
        let files: Vec<(String, String)> = files.into_iter().map(|(a, b)| (a.into(), b.into())).collect();
        compile_set(&files, &["email".to_string()], false)
    }

    #[test]
    fn every_shape_error_says_what_to_do() {
        for src in [
            "[trigger]\non = \"stage_changed\"\n[[steps]]\nwait = 3\n",
            "[trigger]\n[[steps]]\nwait = \"1d\"\n",
            "[trigger\non = 1\n",
            "[trigger]\non = \"stage_changed\"\non = \"x\"\n[[steps]]\nwait = \"1d\"\n",
        ] {
            let problems = compile(src).expect_err("should fail");
            assert!(problems.iter().all(|d| d.help.is_some()), "{src}: {problems:?}");
        }
    }

    #[test]
    fn rendered_diagnostics_show_file_line_column_source_and_help() {
        let src = "[trigger]\non = \"stage_changed\"\nto = \"inquriy\"\n[[steps]]\nwait = \"1d\"\n";
        let problems = compile(src).expect_err("should fail");
        insta::assert_snapshot!(problems[0].render(src, false));
    }

    fn first_problem(workflow: &str) -> (String, (usize, usize), Option<String>) {
        let problems = compile(workflow).expect_err("should fail");
        let d = &problems[0];
        (d.message.clone(), d.line_col(workflow), d.help.clone())
    }

    #[test]
    fn a_valid_workflow_compiles() {
        let (w, _, _, _, _) = compile(
            "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"inquiry\"\n[[steps]]\nsend = { channel = \"email\", template = \"hello\" }\n[[steps]]\nwait = \"3d\"\n",
        )
        .unwrap();
        assert_eq!(w[0].steps.len(), 2);
        assert!(matches!(&w[0].trigger, Trigger::StageChanged { from: None, to: Some(to) } if to == "inquiry"));
    }

    #[test]
    fn unknown_key_points_at_it_with_a_suggestion() {
        let (msg, pos, help) =
            first_problem("[trigger]\non = \"stage_changed\"\ntoo = \"x\"\n[[steps]]\nwait = \"1d\"\n");
        assert!(msg.contains("unknown field `too`"), "{msg}");
        assert_eq!(pos, (3, 1));
        assert_eq!(help.as_deref(), Some("did you mean `to`?"));
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let src = "[trigger]\non = \"stage_changed\"\nto = \"inquriy\"\n[[steps]]\nwait = \"3 parsecs\"\n[[steps]]\nsend = { channel = \"fax\", template = \"helo\" }\n";
        let problems = compile(src).err().unwrap();
        let mut got: Vec<_> = problems.iter().map(|d| (d.line_col(src), d.message.clone())).collect();
        got.sort();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0].0, (3, 6));
        assert_eq!(got[1].0, (5, 8));
        // A workflow that sends must say what its messages are.
        assert_eq!(got[2].0, (6, 1));
        assert!(got[2].1.contains("must say what its messages are"), "{got:?}");
        assert_eq!(got[3].0, (7, 20));
        assert_eq!(got[4].0, (7, 38));
    }

    #[test]
    fn classification_triggers_take_the_values_of_their_field() {
        let (w, _, _, _, _) = compile(
            "[trigger]\non = \"tier_changed\"\nfrom = \"low\"\nto = \"high\"\n[[steps]]\nset_owner = \"boss@example.com\"\n",
        )
        .unwrap();
        assert!(
            matches!(&w[0].trigger, Trigger::TierChanged { from: Some(f), to: Some(t) } if f == "low" && t == "high")
        );
        assert!(matches!(&w[0].steps[0], Step::SetOwner(o) if o == "boss@example.com"));

        let (msg, pos, help) =
            first_problem("[trigger]\non = \"tier_changed\"\nto = \"hgih\"\n[[steps]]\nwait = \"1d\"\n");
        assert_eq!((msg.as_str(), pos), ("unknown value tier `hgih`", (3, 6)));
        assert_eq!(help.as_deref(), Some("did you mean `high`?"));
        let (msg, _, _) =
            first_problem("[trigger]\non = \"became_dormant\"\nto = \"dormant\"\n[[steps]]\nwait = \"1d\"\n");
        assert_eq!(msg, "`to` does not apply to trigger `became_dormant`");
        let (msg, pos, _) = first_problem("[trigger]\non = \"first_order\"\n[[steps]]\nset_owner = \"the boss\"\n");
        assert_eq!((msg.as_str(), pos), ("`the boss` is not an email address", (4, 13)));
    }

    const AB: &str = "category = \"marketing\"\n[trigger]\non = \"contact_created\"\n[[steps]]\nsend = { channel = \"email\", template = \"hello\" }\n";

    #[test]
    fn a_send_step_takes_variants_of_subject_and_delay() {
        let src = format!(
            "{AB}[[steps.variants]]\nname = \"a\"\nweight = 70\nsubject = \"Hi {{{{ contact.name }}}}\"\n\
             [[steps.variants]]\nname = \"b\"\nweight = 30\ndelay = \"2h\"\n"
        );
        let (w, _, _, _, _) = compile(&src).unwrap();
        let Step::Send { variants, .. } = &w[0].steps[0] else {
            panic!("a send step")
        };
        assert_eq!(variants.len(), 2);
        assert_eq!((variants[0].name.as_str(), variants[0].weight), ("a", 70));
        assert_eq!(variants[0].subject.as_deref(), Some("Hi {{ contact.name }}"));
        assert_eq!(variants[1].delay.unwrap().get_hours(), 2);
        assert!(w[0].track, "marketing tracks by default");
    }

    #[test]
    fn bad_variants_are_reported_where_they_are() {
        let v = |body: &str| format!("{AB}[[steps.variants]]\nname = \"a\"\n[[steps.variants]]\n{body}\n");
        let (msg, pos, help) = first_problem(&v("name = \"a\""));
        assert_eq!(
            (msg.as_str(), pos),
            ("variant `a` is named twice in this workflow", (9, 8))
        );
        assert!(help.unwrap().contains("its own name"));
        let (msg, pos, _) = first_problem(&v("name = \"b\"\nweight = 0"));
        assert_eq!(
            (msg.as_str(), pos),
            ("weight 0 is not a positive whole number", (10, 10))
        );
        let (msg, pos, help) = first_problem(&v("name = \"b\"\nsubjet = \"x\""));
        assert!(msg.contains("unknown field `subjet`"), "{msg}");
        assert_eq!((pos, help.as_deref()), ((10, 1), Some("did you mean `subject`?")));
        let (msg, pos, _) = first_problem(&v("name = \"b\"\ndelay = \"soon\""));
        assert_eq!((msg.as_str(), pos), ("`soon` is not a duration", (10, 9)));
        let (msg, _, _) = first_problem(&format!("{AB}[[steps.variants]]\nname = \"a\"\n"));
        assert_eq!(msg, "an A/B test needs at least two variants");
        let (msg, _, help) = first_problem(
            "[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n[[steps.variants]]\nname = \"a\"\n",
        );
        assert_eq!(msg, "only a `send` step has variants");
        assert!(help.unwrap().contains("send = ..."));
    }

    #[test]
    fn tracking_is_never_on_for_transactional_messages() {
        let src = "category = \"transactional\"\ntrack = true\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n";
        let (msg, pos, help) = first_problem(src);
        assert_eq!(
            (msg.as_str(), pos),
            ("opens and clicks are never tracked in transactional messages", (2, 9))
        );
        assert!(help.unwrap().starts_with("remove `track = true`"));
        let off = |src: &str| !compile(src).unwrap().0[0].track;
        assert!(off(
            "category = \"sla\"\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n"
        ));
        assert!(off(&AB.replace("[trigger]", "track = false\n[trigger]")));
        assert!(off(
            "category = \"sla\"\ntrack = false\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n"
        ));
        // A key put under [trigger] by mistake is explained.
        let (_, _, help) = first_problem(&AB.replace("on = ", "track = true\non = "));
        assert!(help.unwrap().contains("belongs to the workflow"));
    }

    #[test]
    fn condition_errors_point_into_the_expression() {
        let src =
            "when = \"contact.stagee == 'lead'\"\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n";
        let (msg, pos, help) = first_problem(src);
        assert!(msg.contains("no field `stagee`"), "{msg}");
        assert_eq!(pos, (1, 9));
        assert_eq!(help.as_deref(), Some("did you mean `stage`?"));
    }

    const AFTER_WHEN: &str = "\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n";

    #[test]
    fn condition_errors_after_non_ascii_text_and_escapes_point_at_the_right_character() {
        for when in [
            r#"when = "contact.company == \"阿里巴巴\" && contact.nmae == 'x'""#,
            r#"when = "contact.company == \"\u00e9\\\\\" &&\tcontact.nmae == 'x'""#,
            r#"when = 'contact.company == "阿里巴巴" && contact.nmae == "x"'"#,
            "when = \"\"\"\ncontact.company == \\\"阿里\\\" && \\\n   contact.nmae == 'x'\"\"\"",
        ] {
            let src = format!("{when}{AFTER_WHEN}");
            let problems = compile(&src).expect_err("should fail");
            assert_eq!(&src[problems[0].span.clone()], "contact.nmae", "{when}");
        }
        // The issue's case: a dangling `&&` after Chinese text, rendered without a panic.
        let src = format!("when = 'contact.stage == \"lead\" && contact.company == \"阿里巴巴\" &&'{AFTER_WHEN}");
        let problems = compile(&src).expect_err("should fail");
        let rendered = problems[0].render(&src, false);
        assert!(rendered.contains("wf/a.toml:1:"), "{rendered}");
        assert!(problems[0].message.contains("syntax"), "{rendered}");
    }

    #[test]
    fn a_span_inside_a_character_is_rendered_around_it() {
        let src = "name = \"阿里巴巴\"\n";
        for span in [9..9, 9..10, 8..11] {
            let rendered = Diagnostic::new("f.toml", span, "here").render(src, false);
            assert!(rendered.contains("f.toml:1:"), "{rendered}");
        }
    }
}
