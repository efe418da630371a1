//! nudge's email channel: renders subject, text and HTML bodies from a template
//! with minijinja. Undefined variables are errors (a typo must not send "Dear ,"),
//! HTML bodies are autoescaped, subject and text are not.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use nudge_plugin_sdk::{Guest, PluginInfo, RenderError, RenderRequest, Rendered};

pub struct Email;

const FIELDS: [&str; 3] = ["subject", "text", "html"];

impl Guest for Email {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "email".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            channels: vec!["email".into()],
        }
    }

    fn render(request: RenderRequest) -> Result<Rendered, RenderError> {
        if let Some((unknown, _)) = request.template.iter().find(|(key, _)| !FIELDS.contains(&key.as_str())) {
            return Err(RenderError::in_field(
                unknown,
                format!("unknown email template field `{unknown}`; expected subject, text or html"),
            ));
        }
        let context: serde_json::Value = serde_json::from_str(&request.context_json).map_err(|e| RenderError {
            field: None,
            message: format!("context is not JSON: {e}"),
        })?;

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Only the html field is HTML: escaping the subject would show "&amp;" in inboxes.
        env.set_auto_escape_callback(|name| {
            if name == "html" {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        for field in FIELDS {
            if let Some(source) = request.field(field) {
                env.add_template(field, source)
                    .map_err(|e| RenderError::in_field(field, describe(&e)))?;
            }
        }
        let render = |field: &str| -> Result<Option<String>, RenderError> {
            match env.get_template(field) {
                Ok(template) => template
                    .render(&context)
                    .map(Some)
                    .map_err(|e| RenderError::in_field(field, describe(&e))),
                Err(_) => Ok(None),
            }
        };
        let rendered = Rendered {
            subject: render("subject")?.map(|s| s.trim().to_string()),
            text: render("text")?,
            html: render("html")?,
        };
        if rendered.subject.as_deref().unwrap_or("").is_empty() {
            return Err(RenderError::in_field("subject", "an email needs a non-empty subject"));
        }
        if rendered.text.is_none() && rendered.html.is_none() {
            return Err(RenderError::in_field("text", "an email needs a text or an html body"));
        }
        Ok(rendered)
    }
}

/// minijinja's message plus where in the template it happened.
fn describe(error: &minijinja::Error) -> String {
    match error.line() {
        Some(line) => format!(
            "{} (template line {line})",
            error.detail().unwrap_or(&error.to_string())
        ),
        None => error.to_string(),
    }
}

nudge_plugin_sdk::export!(Email);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(template: &[(&str, &str)], context: &str) -> RenderRequest {
        RenderRequest {
            channel: "email".into(),
            template: template.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            context_json: context.into(),
        }
    }

    #[test]
    fn renders_subject_text_and_escaped_html() {
        let out = Email::render(request(
            &[
                ("subject", "Hi {{ contact.name }}"),
                ("text", "T {{ contact.name }}"),
                ("html", "<p>{{ contact.name }}</p>"),
            ],
            r#"{"contact": {"name": "Tom & Jerry"}}"#,
        ))
        .unwrap();
        assert_eq!(out.subject.as_deref(), Some("Hi Tom & Jerry"));
        assert_eq!(out.text.as_deref(), Some("T Tom & Jerry"));
        assert_eq!(out.html.as_deref(), Some("<p>Tom &amp; Jerry</p>"));
    }

    #[test]
    fn undefined_variable_is_an_error_naming_the_field() {
        let err = Email::render(request(
            &[("subject", "Hi {{ contact.nmae }}"), ("text", "x")],
            r#"{"contact": {"name": "A"}}"#,
        ))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("subject"));
        assert!(err.message.contains("undefined"), "{}", err.message);
    }

    #[test]
    fn missing_body_and_unknown_field_are_refused() {
        assert!(Email::render(request(&[("subject", "s")], "{}")).is_err());
        let err = Email::render(request(&[("subject", "s"), ("txt", "x")], "{}")).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("txt"));
    }
}
