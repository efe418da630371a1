//! Escaping data for WeCom markdown, so that what a contact typed (a name, a
//! note) shows as typed and cannot add bold, headings, quotes, links or
//! `<font>` tags to a message. Only the data is escaped, before rendering; the
//! template's own markdown is the author's and stays as written.

use nudge_plugin_sdk::Value;

/// Characters with a meaning somewhere in markdown. Escaping them everywhere,
/// not only where they would take effect, keeps the rule simple and covers line
/// starts (`>` quote, `#` heading, `-`/`+`/`*` list, `1.` list, `===` heading).
const SPECIAL: &[char] = &[
    '\\', '`', '*', '_', '{', '}', '[', ']', '(', ')', '#', '+', '-', '.', '!', '<', '>', '|', '~', '=',
];

/// `text` with every markdown-special character backslash-escaped and each
/// line's leading indentation removed (four spaces would start a code block).
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + text.len() / 4);
    for (number, line) in text.split('\n').enumerate() {
        if number > 0 {
            escaped.push('\n');
        }
        for c in line.trim_start_matches([' ', '\t']).chars() {
            if SPECIAL.contains(&c) {
                escaped.push('\\');
            }
            escaped.push(c);
        }
    }
    escaped
}

/// The template context with every string in it escaped; keys, numbers and
/// booleans are left as they are.
pub fn escape_strings(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(escape(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(escape_strings).collect()),
        Value::Object(fields) => Value::Object(fields.into_iter().map(|(key, v)| (key, escape_strings(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nudge_plugin_sdk::json;

    #[test]
    fn formatting_and_links_are_escaped() {
        assert_eq!(escape("*Boss* [x](http://evil)"), r"\*Boss\* \[x\]\(http://evil\)");
        assert_eq!(
            escape("<font color=\"warning\">!</font>"),
            r#"\<font color\="warning"\>\!\</font\>"#
        );
        assert_eq!(escape(r"a\*b"), r"a\\\*b");
        assert_eq!(escape("李雷 Li Lei"), "李雷 Li Lei");
    }

    #[test]
    fn line_starts_cannot_make_quotes_headings_lists_or_code() {
        assert_eq!(
            escape("ok\n> quoted\n# title\n- item\n1. item\n    code"),
            "ok\n\\> quoted\n\\# title\n\\- item\n1\\. item\ncode"
        );
        assert_eq!(escape("x\n==="), "x\n\\=\\=\\=");
    }

    #[test]
    fn every_string_in_the_context_is_escaped_and_nothing_else() {
        let context = json!({"contact": {"name": "*A*", "tags": ["_b_"], "score": 3, "vip": true, "note": null}});
        assert_eq!(
            escape_strings(context),
            json!({"contact": {"name": r"\*A\*", "tags": [r"\_b\_"], "score": 3, "vip": true, "note": null}})
        );
    }
}
