//! Template rendering with minijinja, the way every nudge channel does it:
//! undefined variables are errors (a typo must not send "Dear ,"), HTML output
//! is autoescaped, plain text is not.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

use crate::{RenderError, RenderRequest};

/// The name a template is compiled under when its output is HTML.
const HTML: &str = "html";

/// Renders templates against one context. A message's fields share it: the
/// environment is set up and the context converted once, not once a field.
pub struct Renderer<'source> {
    env: Environment<'source>,
    context: minijinja::Value,
}

impl<'source> Renderer<'source> {
    pub fn new(context: &Value) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name == HTML {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        Renderer {
            env,
            context: minijinja::Value::from_serialize(context),
        }
    }

    /// Renders `source`; `html` turns on HTML autoescaping.
    pub fn render(&self, source: &'source str, html: bool) -> Result<String, String> {
        self.env
            .template_from_named_str(if html { HTML } else { "text" }, source)
            .and_then(|t| t.render(&self.context))
            .map_err(|e| describe(&e))
    }
}

/// A request's template fields, rendered with its context (parsed once).
pub struct Fields<'r> {
    request: &'r RenderRequest,
    renderer: Renderer<'r>,
}

impl<'r> Fields<'r> {
    pub fn of(request: &'r RenderRequest) -> Result<Self, RenderError> {
        Ok(Fields {
            request,
            renderer: Renderer::new(&request.context()?),
        })
    }

    /// Renders a field the template must have.
    pub fn render(&self, field: &str, html: bool) -> Result<String, RenderError> {
        self.render_optional(field, html)?
            .ok_or_else(|| RenderError::in_field(field, format!("the template needs `{field}`")))
    }

    /// Renders a field if the template has it.
    pub fn render_optional(&self, field: &str, html: bool) -> Result<Option<String>, RenderError> {
        match self.request.field(field) {
            Some(source) => self
                .renderer
                .render(source, html)
                .map(Some)
                .map_err(|e| RenderError::in_field(field, e)),
            None => Ok(None),
        }
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
        let renderer = Renderer::new(&ctx);
        assert_eq!(renderer.render("{{ contact.name }}", false).unwrap(), "A & B");
        assert_eq!(renderer.render("{{ contact.name }}", true).unwrap(), "A &amp; B");
        assert_eq!(renderer.render("{{ contact.name }}", false).unwrap(), "A & B");
        let err = renderer.render("{{ contact.nmae }}", false).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        assert!(renderer.render("{% if %}", false).is_err());
    }

    #[test]
    fn fields_share_the_request_context() {
        let request = RenderRequest::new(
            "email",
            &[
                ("subject", "Hi {{ contact.name }}"),
                ("html", "<p>{{ contact.name }}</p>"),
            ],
            r#"{"contact": {"name": "A & B"}}"#,
        );
        let fields = Fields::of(&request).unwrap();
        assert_eq!(fields.render("subject", false).unwrap(), "Hi A & B");
        assert_eq!(fields.render("html", true).unwrap(), "<p>A &amp; B</p>");
        assert_eq!(fields.render_optional("text", false).unwrap(), None);
        let missing = fields.render("text", false).unwrap_err();
        assert_eq!(missing.field.as_deref(), Some("text"));
        let bad = RenderRequest::new("email", &[("subject", "s")], "not json");
        assert!(Fields::of(&bad).is_err());
    }
}
