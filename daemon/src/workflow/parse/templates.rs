//! `templates/*.toml`: named message templates, each for one channel, written
//! once for every contact or once per language (`[name.zh]`, `[name.en]`, see
//! `workflow::language`). Every text is checked by `workflow::templates` as the
//! plugins will render it, and what `vars.<name>` it reads is kept for the
//! workflows that send it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::check::{Problems, offset_in_string, serde_problem, unknown_channel};
use crate::workflow::Languages;
use crate::workflow::Template;
use crate::workflow::diagnostic::Diagnostic;
use crate::workflow::language::{LANGUAGE_FILE, is_tag, normalise};
use crate::workflow::templates::{ReadsVars, check as check_text};

/// A field of a template: its name, its text and where the text is written.
type Field = (String, String, Range<usize>);

pub(super) fn parse_templates(
    path: &str,
    source: &str,
    (channels, languages): (&[String], &Languages),
    templates: &mut BTreeMap<String, Template>,
    problems: &mut Problems,
) {
    let root = match DeTable::parse(source) {
        Ok(root) => root.into_inner(),
        Err(e) => return problems.push(serde_problem(path, e)),
    };
    for (name, value) in root {
        let (name_at, name) = (name.span(), name.into_inner().into_owned());
        let DeValue::Table(table) = value.into_inner() else {
            problems.push(
                Diagnostic::new(path, name_at, format!("`{name}` is not a template")).help(format!(
                    "write a template as a table: `[{name}]` with `channel = \"email\"` and its fields"
                )),
            );
            continue;
        };
        let Some(channel) = channel_of(&table) else {
            problems.push(
                Diagnostic::new(path, name_at, format!("template `{name}` has no channel"))
                    .help("add `channel = \"email\"` (or another installed channel) to the template"),
            );
            continue;
        };
        if !channels.contains(channel.get_ref()) {
            problems.push(unknown_channel(path, &channel, channels));
        }
        if templates.contains_key(&name) {
            problems.push(
                Diagnostic::new(path, name_at, format!("template `{name}` is defined twice"))
                    .help("template names are shared by the whole folder; rename one of them"),
            );
            continue;
        }
        let Some(texts) = texts_of(path, &name, table, problems) else {
            continue;
        };
        if !texts.contains_key("") && !texts.contains_key(&languages.default) {
            let default = &languages.default;
            problems.push(
                Diagnostic::new(path, name_at, format!("template `{name}` has no `{default}`, the default language"))
                    .help(format!(
                        "add `[{name}.{default}]`: a contact whose locale none of its languages matches gets the default (`default` in {LANGUAGE_FILE})"
                    )),
            );
        }
        let mut reads_vars = BTreeSet::new();
        for (language, fields) in &texts {
            for (field, text, span) in fields {
                let what = match language.as_str() {
                    "" => format!("template `{name}`, `{field}`"),
                    language => format!("template `{name}`, `{language}.{field}`"),
                };
                if let Some(vars) = template_text(path, source, span.clone(), &what, text, problems) {
                    reads_vars.extend(vars);
                }
            }
        }
        let texts = texts
            .into_iter()
            .map(|(language, fields)| (language, fields.into_iter().map(|(f, t, _)| (f, t)).collect()))
            .collect();
        templates.insert(
            name.clone(),
            Template {
                name,
                channel: channel.into_inner(),
                texts,
                reads_vars,
            },
        );
    }
}

/// The template's `channel`, where it is written (empty if not a string).
fn channel_of(table: &DeTable<'_>) -> Option<Spanned<String>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == "channel")
        .map(|(_, v)| match v.get_ref() {
            DeValue::String(text) => Spanned::new(v.span(), text.to_string()),
            _ => Spanned::new(v.span(), String::new()),
        })
}

/// The template's fields by language (`""` for a template written once for
/// every contact). A table named by a language tag holds that language's
/// fields; another table of strings (an SMS template's `params`) becomes
/// `params.<name>` fields. A template is written one way or the other: a
/// field beside language tables would be sent to some contacts and not others.
fn texts_of(
    path: &str,
    name: &str,
    table: DeTable<'_>,
    problems: &mut Problems,
) -> Option<BTreeMap<String, Vec<Field>>> {
    let before = problems.len();
    let mut texts: BTreeMap<String, Vec<Field>> = BTreeMap::new();
    let mut shared = Vec::new();
    for (key, value) in table {
        let (key_at, key) = (key.span(), key.into_inner().into_owned());
        if key == "channel" {
            continue;
        }
        if !(is_tag(&key) && matches!(value.get_ref(), DeValue::Table(_))) {
            shared.extend(field_of(path, name, key, key_at, value, problems));
            continue;
        }
        let DeValue::Table(value) = value.into_inner() else {
            continue;
        };
        let language = normalise(&key);
        if texts.contains_key(&language) {
            problems.push(
                Diagnostic::new(path, key_at, format!("template `{name}` has `{language}` twice"))
                    .help("language tags are compared in lower case, with `_` as `-`: keep one of them"),
            );
            continue;
        }
        let mut fields = Vec::new();
        for (field, value) in value {
            let (field_at, field) = (field.span(), field.into_inner().into_owned());
            fields.extend(field_of(path, name, field, field_at, value, problems));
        }
        texts.insert(language, fields);
    }
    if !texts.is_empty() && !shared.is_empty() {
        let (field, _, span) = &shared[0];
        problems.push(
            Diagnostic::new(
                path,
                span.clone(),
                format!("template `{name}` has `{field}` beside its language tables"),
            )
            .help(format!(
                "move `{field}` into each language's table (`[{name}.{}]`)",
                texts.keys().next().map_or("en", String::as_str)
            )),
        );
    }
    if texts.is_empty() {
        texts.insert(String::new(), shared);
    }
    (problems.len() == before).then_some(texts)
}

/// One field written `key = value`: a text, or a table of texts (`params`).
fn field_of(
    path: &str,
    name: &str,
    key: String,
    key_at: Range<usize>,
    value: Spanned<DeValue<'_>>,
    problems: &mut Problems,
) -> Vec<Field> {
    let span = value.span();
    match value.into_inner() {
        DeValue::String(text) => vec![(key, text.into_owned(), span)],
        DeValue::Table(table) => {
            let mut fields = Vec::new();
            for (inner, value) in table {
                let inner_key = format!("{key}.{}", inner.get_ref());
                match value.get_ref() {
                    DeValue::String(text) => fields.push((inner_key, text.to_string(), value.span())),
                    _ => problems.push(not_text(path, name, &inner_key, value.span())),
                }
            }
            fields
        }
        _ => {
            problems.push(not_text(path, name, &key, key_at));
            Vec::new()
        }
    }
}

fn not_text(path: &str, name: &str, key: &str, at: Range<usize>) -> Diagnostic {
    Diagnostic::new(path, at, format!("`{key}` of template `{name}` is not a text"))
        .help("write a template text in quotes, or in triple quotes (\"\"\"...\"\"\") over several lines")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str) -> (BTreeMap<String, Template>, Vec<String>) {
        let mut templates = BTreeMap::new();
        let mut problems = Problems::new(false);
        let channels = ["email".to_string()];
        let languages = Languages::default();
        parse_templates("t.toml", source, (&channels, &languages), &mut templates, &mut problems);
        let problems = problems.into_vec().iter().map(|d| d.message.clone()).collect();
        (templates, problems)
    }

    #[test]
    fn language_tables_hold_each_languages_fields_and_other_tables_are_params() {
        let (templates, problems) = parse(
            "[hi]\nchannel = \"email\"\n[hi.zh]\nsubject = \"您好\"\ntext = \"{{ vars.offer.zh }}\"\n\
             [hi.en-GB]\nsubject = \"Hi\"\ntext = \"t\"\n[hi.en]\nsubject = \"Hi\"\ntext = \"t\"\n\
             [sms]\nchannel = \"email\"\ntext = \"t\"\nparams = { name = \"{{ contact.name }}\" }\n",
        );
        assert_eq!(problems, Vec::<String>::new());
        let hi = &templates["hi"];
        assert_eq!(hi.languages().collect::<Vec<_>>(), ["en", "en-gb", "zh"]);
        assert_eq!(hi.texts["zh"][0], ("subject".to_string(), "您好".to_string()));
        assert_eq!(hi.reads_vars.iter().collect::<Vec<_>>(), ["offer"]);
        assert_eq!(hi.for_locale("zh_Hans_CN", "en").0, "zh");
        assert_eq!(hi.for_locale("en-GB", "en").0, "en-gb");
        assert_eq!(hi.for_locale("fr", "en").0, "en");
        let sms = &templates["sms"];
        assert_eq!(sms.languages().count(), 0);
        assert_eq!(sms.for_locale("zh", "en").1[0].0, "params.name");
    }

    #[test]
    fn a_template_written_both_ways_or_without_the_default_language_is_refused() {
        let (_, problems) = parse("[a]\nchannel = \"email\"\nsubject = \"s\"\n[a.en]\nsubject = \"s\"\ntext = \"t\"\n");
        assert_eq!(problems, ["template `a` has `subject` beside its language tables"]);
        let (_, problems) = parse("[b]\nchannel = \"email\"\n[b.zh]\nsubject = \"s\"\ntext = \"t\"\n");
        assert_eq!(problems, ["template `b` has no `en`, the default language"]);
        let (_, problems) = parse("[c]\nchannel = \"email\"\n[c.en]\ntext = \"t\"\n[c.EN]\ntext = \"t\"\n");
        assert_eq!(problems, ["template `c` has `en` twice"]);
    }
}
