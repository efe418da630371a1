//! One workflow file: its trigger, its conditions, what its messages are
//! (category, send window, tracking), when its runs stop, and its steps, with
//! the checks that span them (variant names, the `vars` its templates read).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Folder, Problems, WORKFLOW_KEYS, at, offset_in_string, one_of, serde_problem, window};
use super::steps::{RawStep, parse_step};
use super::templates::template_text;
use super::trigger::{RawTrigger, parse_trigger};
use crate::model::Category;
use crate::workflow::condition::ConditionError;
use crate::workflow::diagnostic::{Diagnostic, did_you_mean};
use crate::workflow::{Condition, Exit, ExitOn, Step, Template, Trigger, Workflow};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    /// For the people who read the file; accepted and not used.
    #[serde(rename = "description")]
    _description: Option<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    trigger: Spanned<RawTrigger>,
    when: Option<Spanned<String>>,
    #[serde(default)]
    vars: BTreeMap<Spanned<String>, toml::Value>,
    category: Option<Spanned<String>>,
    /// A window's name, or `{ cadence = "<table>" }`.
    send_window: Option<Spanned<toml::Value>>,
    exit_when: Option<Vec<Spanned<String>>>,
    exit_if: Option<Spanned<String>>,
    track: Option<Spanned<bool>>,
    steps: Spanned<Vec<Spanned<RawStep>>>,
}

fn enabled_by_default() -> bool {
    true
}

pub(super) fn parse_workflow(path: &str, source: &str, folder: &Folder, problems: &mut Problems) -> Option<Workflow> {
    let raw: RawWorkflow = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(serde_problem(path, e));
            return None;
        }
    };
    let before = problems.len();
    check_misplaced_vars(path, &raw, problems);
    let trigger = parse_trigger(path, &raw.trigger, problems);
    let when = raw
        .when
        .as_ref()
        .and_then(|w| condition(path, source, "when", w, problems));
    if matches!(trigger, Some(Trigger::Segment { .. })) && raw.when.is_none() {
        problems.push(
            Diagnostic::new(path, at(&raw.trigger), "a segment workflow needs a `when` condition")
                .help("add `when = '...'` above `[trigger]`: the contacts it matches are the segment, e.g. `when = 'contact.stage == \"lead\"'`"),
        );
    }
    let category = category(path, &raw, problems);
    let send_window = raw
        .send_window
        .as_ref()
        .and_then(|w| window(path, "send_window", w, folder, problems));
    let exit_on = exit_on(path, &raw, category, problems);
    let exit_if = raw
        .exit_if
        .as_ref()
        .and_then(|w| condition(path, source, "exit_if", w, problems));
    let track = track(path, category, raw.track.as_ref(), problems);
    let steps = steps(path, &raw, folder, problems);
    check_vars_read(path, source, &raw, folder.templates, problems);
    if problems.len() > before {
        return None;
    }
    let name = Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(Workflow {
        name,
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
        send_window,
        track,
        exit: Exit {
            on: exit_on,
            condition: exit_if,
        },
    })
}

/// In TOML every key after `[vars]` is a var: a workflow key written there by
/// mistake (`enabled = false`) would silently do nothing.
/// (`description` is left alone: it makes sense as a variable too.)
fn check_misplaced_vars(path: &str, raw: &RawWorkflow, problems: &mut Problems) {
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
}

/// A CEL condition written as the value of `key`; a problem points into the expression.
fn condition(path: &str, source: &str, key: &str, w: &Spanned<String>, problems: &mut Problems) -> Option<Condition> {
    let problem = |e: ConditionError| {
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
}

fn category(path: &str, raw: &RawWorkflow, problems: &mut Problems) -> Category {
    let first_send = raw.steps.get_ref().iter().find(|s| s.get_ref().send.is_some());
    match &raw.category {
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
    }
}

fn exit_on(path: &str, raw: &RawWorkflow, category: Category, problems: &mut Problems) -> Vec<ExitOn> {
    match &raw.exit_when {
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
    }
}

/// Marketing tracks unless told not to; nothing else is ever tracked.
fn track(path: &str, category: Category, track: Option<&Spanned<bool>>, problems: &mut Problems) -> bool {
    match (category, track) {
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
    }
}

fn steps(path: &str, raw: &RawWorkflow, folder: &Folder, problems: &mut Problems) -> Vec<Step> {
    if raw.steps.get_ref().is_empty() {
        problems.push(
            Diagnostic::new(path, at(&raw.steps), "a workflow needs at least one step")
                .help("add a `[[steps]]` table, e.g. `send = { channel = \"email\", template = \"...\" }`"),
        );
    }
    let mut steps = Vec::new();
    let mut variant_names = BTreeSet::new();
    for step in raw.steps.get_ref() {
        if let Some(step) = parse_step(path, folder, step, problems) {
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
    steps
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
            .or(step.notify.as_ref().map(|n| &n.get_ref().template))
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
