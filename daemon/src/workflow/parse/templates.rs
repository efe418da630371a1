//! `templates/*.toml`: named message templates, each for one channel. Every text
//! is checked by `workflow::templates` as the plugins will render it, and what
//! `vars.<name>` it reads is kept for the workflows that send it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::check::{Problems, at, offset_in_string, serde_problem, unknown_channel};
use crate::workflow::Template;
use crate::workflow::diagnostic::Diagnostic;
use crate::workflow::templates::{ReadsVars, check as check_text};

/// A template field: a template string, or a table of them (e.g. `params = { name = "{{ contact.name }}" }`).
#[derive(Deserialize)]
#[serde(untagged)]
enum TemplateValue {
    Text(String),
    Table(BTreeMap<String, String>),
}

type RawFields = BTreeMap<Spanned<String>, Spanned<TemplateValue>>;

pub(super) fn parse_templates(
    path: &str,
    source: &str,
    channels: &[String],
    templates: &mut BTreeMap<String, Template>,
    problems: &mut Problems,
) {
    let raw: BTreeMap<Spanned<String>, RawFields> = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => return problems.push(serde_problem(path, e)),
    };
    for (name, fields) in raw {
        let Some(channel) = channel_of(&fields) else {
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
        let fields = flat_fields(fields);
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

/// The template's `channel`, where it is written (empty if written as a table).
fn channel_of(fields: &RawFields) -> Option<Spanned<String>> {
    fields
        .iter()
        .find(|(k, _)| k.get_ref() == "channel")
        .map(|(_, v)| match v.get_ref() {
            TemplateValue::Text(text) => Spanned::new(v.span(), text.clone()),
            TemplateValue::Table(_) => Spanned::new(v.span(), String::new()),
        })
}

/// The fields other than `channel`; a table of strings (e.g. an SMS template's
/// `params`) becomes `params.<name>` fields.
fn flat_fields(fields: RawFields) -> Vec<(String, String, Range<usize>)> {
    fields
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
        .collect()
}

/// Checks a template text written at `span` of the file (a string, or a table
/// of them); a problem points into the text. Returns the `vars.<name>` it reads.
pub(super) fn template_text(
    path: &str,
    source: &str,
    span: Range<usize>,
    what: &str,
    text: &str,
    problems: &mut Problems,
) -> Option<ReadsVars> {
    match check_text(text) {
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
