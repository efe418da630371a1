//! nudge's email channel: renders subject, text and HTML bodies from a template.
//! Undefined variables are errors, the HTML body is autoescaped, subject and
//! text are not, and a template with only HTML gets a text part derived from it.
//! The host delivers the result by SMTP (it sets Message-ID and checks headers).

use nudge_plugin_sdk::template::Fields;
use nudge_plugin_sdk::{Channel, PluginInfo, RenderError, RenderRequest, Rendered, html};

pub struct Email;

impl Channel for Email {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "email".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            channels: vec!["email".into()],
        }
    }

    fn render(request: &RenderRequest) -> Result<Rendered, RenderError> {
        request.only_fields(&["subject", "text", "html"])?;
        let fields = Fields::of(request)?;
        let subject = fields
            .render_optional("subject", false)?
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if subject.is_empty() {
            return Err(RenderError::in_field("subject", "an email needs a non-empty subject"));
        }
        let html = fields.render_optional("html", true)?;
        let text = match fields.render_optional("text", false)? {
            Some(text) => Some(text),
            None => html.as_deref().map(html::html_to_text),
        };
        if text.is_none() {
            return Err(RenderError::in_field("text", "an email needs a text or an html body"));
        }
        Ok(Rendered {
            subject: Some(subject),
            text,
            html,
            extra: Vec::new(),
        })
    }
}

nudge_plugin_sdk::export_channel!(Email);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_subject_text_and_escaped_html() {
        let out = Email::render(&RenderRequest::new(
            "email",
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
    fn text_part_is_derived_from_html_when_missing() {
        let out = Email::render(&RenderRequest::new(
            "email",
            &[
                ("subject", "s"),
                (
                    "html",
                    "<p>Hello {{ contact.name }}</p><p><a href=\"https://x.test\">Offer</a></p>",
                ),
            ],
            r#"{"contact": {"name": "Li"}}"#,
        ))
        .unwrap();
        assert_eq!(out.text.as_deref(), Some("Hello Li\n\nOffer (https://x.test)"));
    }

    #[test]
    fn undefined_variable_is_an_error_naming_the_field() {
        let err = Email::render(&RenderRequest::new(
            "email",
            &[("subject", "Hi {{ contact.nmae }}"), ("text", "x")],
            r#"{"contact": {"name": "A"}}"#,
        ))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("subject"));
        assert!(err.message.contains("undefined"), "{}", err.message);
    }

    #[test]
    fn missing_body_and_unknown_field_are_refused() {
        assert!(Email::render(&RenderRequest::new("email", &[("subject", "s")], "{}")).is_err());
        let err = Email::render(&RenderRequest::new("email", &[("subject", "s"), ("txt", "x")], "{}")).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("txt"));
    }
}
