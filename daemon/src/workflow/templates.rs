//! Template texts checked at load. Channel plugins render templates with
//! minijinja the way `plugin-sdk/src/template.rs` sets it up (undefined values
//! are errors, the builtin filters, `tojson` and `urlencode`), and a template
//! that can never render would hold every run that reaches it. So each text is
//! compiled here by the same engine: its syntax, the filters and tests it
//! applies in any branch, and the variables it reads against the context a
//! run gives it (`engine::Engine` builds it: contact, vars, event, owner,
//! workflow, unsubscribe_url, withheld).

use std::collections::BTreeSet;
use std::ops::Range;

use minijinja::machinery::{Instruction, Instructions, get_compiled_template};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};

use super::condition::contact_schema;
use super::diagnostic::did_you_mean;

/// The names a template reads at its top level.
const ROOTS: &[&str] = &[
    "contact",
    "vars",
    "event",
    "owner",
    "workflow",
    "unsubscribe_url",
    "withheld",
];
/// Names minijinja itself gives a template (in loops, macros and blocks).
const IMPLICIT: &[&str] = &["loop", "self", "super", "caller", "varargs", "kwargs"];

/// A problem at a byte range of a template's text.
#[derive(Debug)]
pub(crate) struct TemplateProblem {
    pub(crate) at: Range<usize>,
    pub(crate) message: String,
    pub(crate) help: String,
}

/// The `vars.<name>` a template reads: each workflow that uses it must define them.
pub(crate) type ReadsVars = BTreeSet<String>;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Checks one template text; on success, the vars it reads.
pub(crate) fn check(text: &str) -> Result<ReadsVars, TemplateProblem> {
    let env = environment();
    let template = env.template_from_str(text).map_err(|e| TemplateProblem {
        at: e.range().unwrap_or(0..0),
        message: format!("template syntax: {}", e.detail().unwrap_or(&e.kind().to_string())),
        help: "every `{{` needs its `}}`, every `{%` its `%}`, and every `{% if %}` / `{% for %}` its `{% endif %}` / `{% endfor %}`".into(),
    })?;
    let compiled = get_compiled_template(&template);
    for instructions in std::iter::once(&compiled.instructions).chain(compiled.blocks.values()) {
        check_filters_and_tests(&env, text, instructions)?;
    }
    let globals: Vec<String> = env.globals().map(|(name, _)| name.to_string()).collect();
    let contact_fields: Vec<String> = contact_schema()
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut vars = ReadsVars::new();
    let mut names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    names.sort();
    for name in names {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        let field = parts.next();
        if globals.iter().any(|g| g == root) || IMPLICIT.contains(&root) {
            continue;
        }
        let unknown = |message: String, help: String| TemplateProblem {
            at: position_of(text, &name),
            message,
            help,
        };
        match (root, field) {
            ("contact", Some(field)) if !contact_fields.iter().any(|f| f == field) => {
                return Err(unknown(
                    format!("the template reads `contact.{field}`, and a contact has no field `{field}`"),
                    did_you_mean(field, contact_fields.iter().map(String::as_str))
                        .unwrap_or_else(|| format!("contact fields: {}", contact_fields.join(", "))),
                ));
            }
            ("owner", Some(field)) if field != "email" => {
                return Err(unknown(
                    format!("the template reads `owner.{field}`; the owner has only `email`"),
                    "write `owner.email`".into(),
                ));
            }
            ("vars", Some(field)) if !guarded(text, &format!("vars.{field}")) => {
                vars.insert(field.to_string());
            }
            _ if ROOTS.contains(&root) => {}
            _ => {
                return Err(unknown(
                    format!("the template reads `{root}`, which no message has"),
                    did_you_mean(root, ROOTS.iter().copied())
                        .unwrap_or_else(|| format!("a template reads {}", ROOTS.join(", "))),
                ));
            }
        }
    }
    Ok(vars)
}

/// Every filter and test the template applies, in any branch, must exist:
/// minijinja would otherwise fail only when that branch is rendered.
fn check_filters_and_tests(
    env: &Environment<'_>,
    text: &str,
    instructions: &Instructions<'_>,
) -> Result<(), TemplateProblem> {
    for i in 0..instructions.len() {
        let (name, probe, kind, what) = match instructions.get(i as u32) {
            Some(Instruction::ApplyFilter(name, ..)) => (
                *name,
                format!("{{{{ none|{name} }}}}"),
                ErrorKind::UnknownFilter,
                "filter",
            ),
            Some(Instruction::PerformTest(name, ..)) => (
                *name,
                format!("{{{{ none is {name} }}}}"),
                ErrorKind::UnknownTest,
                "test",
            ),
            _ => continue,
        };
        // Asking the engine itself keeps this in step with what it offers.
        if env.render_str(&probe, ()).is_err_and(|e| e.kind() == kind) {
            return Err(TemplateProblem {
                at: position_of(text, name),
                message: format!("unknown {what} `{name}`"),
                help: format!(
                    "see minijinja's builtin {what}s (e.g. upper, lower, title, default, join, round, tojson, urlencode for filters)"
                ),
            });
        }
    }
    Ok(())
}

/// Whether the template allows `name` to be missing: it tests it (`is defined`)
/// or gives a default (`|default(...)`, `|d(...)`) where it reads it.
fn guarded(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let after = text[at + name.len()..].trim_start();
        let filter = after.strip_prefix('|').map(str::trim_start);
        after.starts_with("is ")
            || filter.is_some_and(|f| f.starts_with("default") || f.starts_with("d(") || f.starts_with("d "))
    })
}

/// Where `name` is first written in the text (the start, when it is not found as written).
fn position_of(text: &str, name: &str) -> Range<usize> {
    text.find(name).map_or(0..0, |at| at..at + name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_that_can_never_render_are_found() {
        let problem = |text: &str| check(text).unwrap_err();
        assert!(problem("Hello {{ contact.name").message.starts_with("template syntax"));
        assert!(
            problem("{% if contact.name %}Hi")
                .message
                .starts_with("template syntax")
        );
        let p = problem("Hi {{ contact.nmae }}");
        assert_eq!((p.at.clone(), p.help.as_str()), (6..18, "did you mean `name`?"));
        let p = problem("{% if contact.locale == 'zh' %}{{ contact.name|shout }}{% endif %}");
        assert_eq!(p.message, "unknown filter `shout`");
        assert!(
            problem("{% if contact.tags is vip %}x{% endif %}")
                .message
                .contains("unknown test `vip`")
        );
        assert!(problem("{{ contct.name }}").help.contains("did you mean `contact`?"));
        assert_eq!(
            problem("{{ owner.name }}").message,
            "the template reads `owner.name`; the owner has only `email`"
        );
    }

    #[test]
    fn what_renders_passes_and_names_the_vars_it_reads() {
        let vars = check(
            "{% for t in contact.tags %}{{ loop.index }} {{ t|upper }}{% endfor %}{{ vars.optional|default('') }} {{ vars.offer }} \
             {{ event.to }} {{ owner.email }} {{ range(3)|join(',') }} {{ unsubscribe_url|urlencode }} {{ vars.x|tojson }}",
        )
        .unwrap();
        assert_eq!(vars.into_iter().collect::<Vec<_>>(), ["offer", "x"]);
    }
}
