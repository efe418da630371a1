//! Template rendering with minijinja, the way every nudge channel does it:
//! undefined variables are errors (a typo must not send "Dear ,"), HTML output
//! is autoescaped, plain text is not.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

use crate::{RenderError, RenderRequest};

/// Renders `source` with `context`; `html` turns on HTML autoescaping.
pub fn render(source: &str, context: &Value, html: bool) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(move |_| if html { AutoEscape::Html } else { AutoEscape::None });
    env.add_template("t", source).map_err(|e| describe(&e))?;
    env.get_template("t")
        .and_then(|t| t.render(context))
        .map_err(|e| describe(&e))
}

/// Renders one field of the request's template with the request's context.
pub fn render_field(request: &RenderRequest, field: &str, html: bool) -> Result<String, RenderError> {
    let source = request
        .field(field)
        .ok_or_else(|| RenderError::in_field(field, format!("the template needs `{field}`")))?;
    render(source, &request.context()?, html).map_err(|e| RenderError::in_field(field, e))
}

/// Renders a field if the template has it.
pub fn render_optional(request: &RenderRequest, field: &str, html: bool) -> Result<Option<String>, RenderError> {
    match request.field(field) {
        Some(_) => render_field(request, field, html).map(Some),
        None => Ok(None),
    }
}

/// minijinja's message plus where in the template it happened.
fn describe(error: &minijinja::Error) -> String {
    let detail = error
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| error.kind().to_string());
    match error.line() {
        Some(line) => format!("{detail} (template line {line})"),
        None => detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_and_escaped_only_for_html() {
        let ctx = json!({"contact": {"name": "A & B"}});
        assert_eq!(render("{{ contact.name }}", &ctx, false).unwrap(), "A & B");
        assert_eq!(render("{{ contact.name }}", &ctx, true).unwrap(), "A &amp; B");
        let err = render("{{ contact.nmae }}", &ctx, false).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        assert!(render("{% if %}", &ctx, false).is_err());
    }
}
