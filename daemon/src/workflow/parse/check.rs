//! What every parser of the workflow folder shares: the problems found so far,
//! serde's errors turned into diagnostics, positions inside TOML strings, and the
//! checks of single values (a duration, a name from a list, a channel), so that
//! one mistake reads the same in a workflow, a template, `cadences.toml`,
//! `sending.toml` or `classification.toml`.

use std::collections::BTreeMap;
use std::ops::Range;

use jiff::Span;
use toml::Spanned;

use crate::model::{add_span, parse_duration};
use crate::workflow::diagnostic::{Diagnostic, did_you_mean};
use crate::workflow::{Cadence, SendWindow, SendingPolicy, Team, Template};

/// The problems found in a set so far.
#[derive(Debug, Default)]
pub(in crate::workflow) struct Problems {
    found: Vec<Diagnostic>,
    /// A set stored for the runs pinned to it, which an earlier nudge accepted.
    stored: bool,
}

impl Problems {
    pub(in crate::workflow) fn new(stored: bool) -> Problems {
        Problems {
            found: Vec::new(),
            stored,
        }
    }

    pub(in crate::workflow) fn push(&mut self, problem: Diagnostic) {
        self.found.push(problem);
    }

    /// A problem that a check added after sets were first stored finds: it
    /// refuses new files, but a stored set still compiles for its runs, which
    /// would otherwise stop halfway after an upgrade.
    pub(in crate::workflow) fn lint(&mut self, problem: Diagnostic) {
        if !self.stored {
            self.found.push(problem);
        }
    }

    pub(in crate::workflow) fn len(&self) -> usize {
        self.found.len()
    }

    pub(in crate::workflow) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub(in crate::workflow) fn into_vec(self) -> Vec<Diagnostic> {
        self.found
    }
}

/// The keys of a workflow file's top level: serde's message about one of them
/// written under `[trigger]` explains the TOML rule behind it.
pub(super) const WORKFLOW_KEYS: &[&str] = &[
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

/// The rest of the folder, which a workflow file's steps and send window name.
pub(super) struct Folder<'a> {
    pub(super) channels: &'a [String],
    pub(super) templates: &'a BTreeMap<String, Template>,
    pub(super) cadences: &'a BTreeMap<String, Cadence>,
    pub(super) sending: &'a SendingPolicy,
    pub(super) team: &'a Team,
}

/// Ten years (of 366 days): the longest wait, cadence or delay.
const LONGEST_DURATION_MS: i64 = 10 * 366 * 24 * 3_600_000;

pub(in crate::workflow) fn serde_problem(path: &str, error: toml::de::Error) -> Diagnostic {
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

pub(in crate::workflow) fn at<T>(s: &Spanned<T>) -> Range<usize> {
    s.span()
}

pub(in crate::workflow) fn duration(path: &str, text: &Spanned<String>, problems: &mut Problems) -> Option<Span> {
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

pub(super) fn one_of(
    path: &str,
    value: &Spanned<String>,
    allowed: &[&str],
    what: &str,
    problems: &mut Problems,
) -> bool {
    if allowed.contains(&value.get_ref().as_str()) {
        return true;
    }
    let help = did_you_mean(value.get_ref(), allowed.iter().copied())
        .unwrap_or_else(|| format!("{what} is one of: {}", allowed.join(", ")));
    problems.push(Diagnostic::new(path, at(value), format!("unknown {what} `{}`", value.get_ref())).help(help));
    false
}

pub(in crate::workflow) fn unknown_channel(path: &str, channel: &Spanned<String>, channels: &[String]) -> Diagnostic {
    let help = did_you_mean(channel.get_ref(), channels.iter().map(String::as_str))
        .unwrap_or_else(|| format!("installed channels: {}", channels.join(", ")));
    Diagnostic::new(path, at(channel), format!("unknown channel `{}`", channel.get_ref())).help(help)
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

/// A window written as `key = "<window>"` (one of sending.toml's), or
/// `key = { cadence = "<table>" }`: the window that cadence table gives each
/// contact (`at` in cadences.toml), one place for the best time of a grade.
pub(super) fn window(
    path: &str,
    key: &str,
    written: &Spanned<toml::Value>,
    folder: &Folder,
    problems: &mut Problems,
) -> Option<SendWindow> {
    let span = at(written);
    let cadence = written
        .get_ref()
        .as_table()
        .filter(|t| t.len() == 1)
        .and_then(|t| t.get("cadence"))
        .and_then(toml::Value::as_str);
    if let Some(name) = written.get_ref().as_str() {
        if folder.sending.windows.contains_key(name) {
            return Some(SendWindow::Named(name.to_string()));
        }
        let help = did_you_mean(name, folder.sending.windows.keys().map(String::as_str))
            .unwrap_or_else(|| "define it under [windows.<name>] in sending.toml".to_string());
        problems.push(Diagnostic::new(path, span, format!("unknown send window `{name}`")).help(help));
        return None;
    }
    let Some(name) = cadence else {
        problems.push(
            Diagnostic::new(path, span, format!("`{key}` is a window's name or `{{ cadence = \"<table>\" }}`"))
                .help(format!("e.g. `{key} = \"nurture\"`, or `{key} = {{ cadence = \"intent\" }}` for the window cadences.toml gives each intent grade (`at`)")),
        );
        return None;
    };
    match folder.cadences.get(name) {
        Some(c) if !c.at.is_empty() => Some(SendWindow::Cadence(name.to_string())),
        Some(_) => {
            problems.push(
                Diagnostic::new(path, span, format!("cadence `{name}` gives no send windows")).help(format!(
                    "add `at = {{ <value> = \"<window>\", ... }}` to [{name}] in cadences.toml, or name a window here"
                )),
            );
            None
        }
        None => {
            let help = did_you_mean(name, folder.cadences.keys().map(String::as_str))
                .unwrap_or_else(|| "define it in cadences.toml".to_string());
            problems.push(Diagnostic::new(path, span, format!("unknown cadence `{name}`")).help(help));
            None
        }
    }
}
