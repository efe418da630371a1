//! nudge's WeCom (企业微信) group-robot channel: renders a `text` or `markdown`
//! template and posts it to a WeCom group through the robot's webhook.
//!
//! It is also the example of a third-party plugin: it is built against the
//! public API of `nudge-plugin-sdk` only. Contact data is escaped before it goes
//! into a markdown message, content over WeCom's size limits is split into
//! several messages, and WeCom's answers (HTTP 200 with an `errcode`, also for
//! errors) are read into sent / retry later / failed. The robot's key stays a
//! `${secret:...}` placeholder that the host fills in when it sends.

mod config;
mod markdown;
mod split;

use nudge_plugin_sdk::{
    Channel, DeliveryOutcome, HttpRequest, HttpResponse, PluginInfo, RenderError, RenderRequest, Rendered, Value, json,
    outcome_from_status, template::Renderer,
};

use config::{WeComConfig, mobile_number};

/// Most bytes (UTF-8) WeCom takes in one text message's content.
pub const TEXT_LIMIT: usize = 2048;
/// Most bytes (UTF-8) WeCom takes in one markdown message's content.
pub const MARKDOWN_LIMIT: usize = 4096;
/// A robot may post 20 messages a minute; a message that needs more parts than
/// this is a template mistake, and would flood the group and the rate limit.
pub const MAX_PARTS: usize = 10;

/// WeCom errcodes that mean "not now": API frequency out of limit, system busy.
const RETRYABLE_ERRCODES: &[i64] = &[45009, -1];

pub struct WeCom;

/// The two message types a group robot takes that nudge renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageType {
    Text,
    Markdown,
}

impl MessageType {
    /// The name of both the template field and WeCom's `msgtype`.
    fn name(self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::Markdown => "markdown",
        }
    }

    fn limit(self) -> usize {
        match self {
            MessageType::Text => TEXT_LIMIT,
            MessageType::Markdown => MARKDOWN_LIMIT,
        }
    }

    fn of(message: &Rendered) -> Result<MessageType, RenderError> {
        match message.extra("msgtype") {
            Some("text") => Ok(MessageType::Text),
            Some("markdown") => Ok(MessageType::Markdown),
            other => Err(RenderError::general(format!(
                "the rendered message has msgtype {other:?}; expected \"text\" or \"markdown\" (was it rendered by this plugin?)"
            ))),
        }
    }

    /// The JSON WeCom expects for one part. Mentions only exist for text messages.
    fn body(self, content: &str, mentioned_mobiles: &[String]) -> Value {
        match self {
            MessageType::Text if mentioned_mobiles.is_empty() => {
                json!({"msgtype": "text", "text": {"content": content}})
            }
            MessageType::Text => json!({
                "msgtype": "text",
                "text": {"content": content, "mentioned_mobile_list": mentioned_mobiles},
            }),
            MessageType::Markdown => json!({"msgtype": "markdown", "markdown": {"content": content}}),
        }
    }
}

impl Channel for WeCom {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "wecom".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            channels: vec!["wecom".into()],
        }
    }

    fn validate_config(config: &Value) -> Result<(), String> {
        WeComConfig::from_value(config).map(|_| ())
    }

    fn render(request: &RenderRequest) -> Result<Rendered, RenderError> {
        request.only_fields(&["text", "markdown"])?;
        let (message_type, source) = match (request.field("text"), request.field("markdown")) {
            (Some(source), None) => (MessageType::Text, source),
            (None, Some(source)) => (MessageType::Markdown, source),
            (Some(_), Some(_)) => {
                return Err(RenderError::general(
                    "a wecom template takes one of `text` or `markdown`, not both",
                ));
            }
            (None, None) => {
                return Err(RenderError::general(
                    "a wecom template needs `text` (plain) or `markdown`",
                ));
            }
        };
        let context = match message_type {
            MessageType::Text => request.context()?,
            MessageType::Markdown => markdown::escape_strings(request.context()?),
        };
        let field = message_type.name();
        let content = Renderer::new(&context)
            .render(source, false)
            .map_err(|e| RenderError::in_field(field, e))?;
        if content.trim().is_empty() {
            return Err(RenderError::in_field(
                field,
                "renders to an empty message, which WeCom refuses",
            ));
        }
        let parts = split::split(&content, message_type.limit()).len();
        if parts > MAX_PARTS {
            return Err(RenderError::in_field(
                field,
                format!(
                    "renders to {} bytes, {parts} WeCom messages of at most {} bytes; more than {MAX_PARTS} is refused",
                    content.len(),
                    message_type.limit()
                ),
            ));
        }
        Ok(Rendered {
            text: Some(content),
            extra: vec![("msgtype".into(), field.into()), ("parts".into(), parts.to_string())],
            ..Rendered::default()
        })
    }

    fn build_request(message: &Rendered, recipient: &str, config: &Value) -> Result<Vec<HttpRequest>, RenderError> {
        let config = WeComConfig::from_value(config).map_err(RenderError::general)?;
        let message_type = MessageType::of(message)?;
        let content = message.text.as_deref().filter(|text| !text.trim().is_empty());
        let content = content.ok_or_else(|| RenderError::general("the rendered message has no content"))?;
        // A group robot posts to the one group its key belongs to, so there is no
        // address to send to. A recipient that is a mobile number (a manifest
        // with recipient = "phone") is mentioned instead, so that person is notified.
        let mut mentioned_mobiles = config.mentioned_mobiles.clone();
        if let Some(mobile) = mobile_number(recipient).filter(|m| !mentioned_mobiles.contains(m)) {
            mentioned_mobiles.push(mobile);
        }
        let url = config.send_url();
        let requests = split::split(content, message_type.limit())
            .into_iter()
            .enumerate()
            .map(|(index, part)| {
                // Mentioning in the first part only notifies each person once per message.
                let mentions = if index == 0 { mentioned_mobiles.as_slice() } else { &[] };
                HttpRequest {
                    method: "POST".into(),
                    url: url.clone(),
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body: json_body(&message_type.body(part, mentions)),
                }
            })
            .collect();
        Ok(requests)
    }

    fn interpret_response(response: &HttpResponse) -> DeliveryOutcome {
        if !(200..300).contains(&response.status) {
            return outcome_from_status(response.status);
        }
        // WeCom reports errors inside a 200 answer.
        let Ok(answer) = serde_json::from_slice::<Value>(&response.body) else {
            return DeliveryOutcome::Failed(format!(
                "WeCom answered HTTP {} with a body that is not JSON: {}",
                response.status,
                preview(&response.body)
            ));
        };
        let Some(errcode) = answer.get("errcode").and_then(Value::as_i64) else {
            return DeliveryOutcome::Failed(format!("WeCom's answer has no errcode: {}", preview(&response.body)));
        };
        let errmsg = answer.get("errmsg").and_then(Value::as_str).unwrap_or("");
        match errcode {
            0 => DeliveryOutcome::Sent(if errmsg.is_empty() { "ok".into() } else { errmsg.into() }),
            code if RETRYABLE_ERRCODES.contains(&code) => {
                DeliveryOutcome::RetryLater(format!("errcode {code}: {errmsg}"))
            }
            code => DeliveryOutcome::Failed(format!("errcode {code}: {errmsg}")),
        }
    }
}

nudge_plugin_sdk::export_channel!(WeCom);

/// The request body as JSON text, with every `$` written as `\u0024` (the same
/// string to WeCom). The host fills `${secret:NAME}` wherever it appears in a
/// body, so without this a contact named `${secret:WECOM_KEY}` would have the
/// robot's key posted into the group. `$` only occurs inside JSON strings,
/// where `\u0024` is a valid escape.
fn json_body(body: &Value) -> Vec<u8> {
    body.to_string().replace('$', "\\u0024").into_bytes()
}

/// The start of an answer, for error messages.
fn preview(body: &[u8]) -> String {
    const MAX_CHARS: usize = 200;
    let text = String::from_utf8_lossy(body);
    let mut preview: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().count() > MAX_CHARS {
        preview.push('…');
    }
    preview
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_PLACEHOLDER: &str = "${secret:WECOM_KEY}";

    fn render(template: &[(&str, &str)], context: Value) -> Result<Rendered, RenderError> {
        WeCom::render(&RenderRequest::new("wecom", template, &context.to_string()))
    }

    fn config() -> Value {
        json!({"key": KEY_PLACEHOLDER})
    }

    fn rendered(message_type: &str, content: &str) -> Rendered {
        let parts = split::split(
            content,
            if message_type == "text" {
                TEXT_LIMIT
            } else {
                MARKDOWN_LIMIT
            },
        )
        .len();
        Rendered {
            text: Some(content.into()),
            extra: vec![
                ("msgtype".into(), message_type.into()),
                ("parts".into(), parts.to_string()),
            ],
            ..Rendered::default()
        }
    }

    fn body(request: &HttpRequest) -> Value {
        serde_json::from_slice(&request.body).expect("the body is JSON")
    }

    /// The outcome of an answer as (kind, reason); the WIT type has no `PartialEq`.
    fn answer(status: u16, body: &str) -> (&'static str, String) {
        match WeCom::interpret_response(&HttpResponse {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }) {
            DeliveryOutcome::Sent(why) => ("sent", why),
            DeliveryOutcome::RetryLater(why) => ("retry later", why),
            DeliveryOutcome::Failed(why) => ("failed", why),
        }
    }

    fn outcome(kind: &'static str, why: &str) -> (&'static str, String) {
        (kind, why.to_string())
    }

    // render

    #[test]
    fn text_renders_without_escaping() {
        let out = render(
            &[("text", "New lead: {{ contact.name }} <{{ contact.email }}>")],
            json!({"contact": {"name": "*Li* & Co", "email": "li@example.com"}}),
        )
        .unwrap();
        assert_eq!(out.text.as_deref(), Some("New lead: *Li* & Co <li@example.com>"));
        assert_eq!(out.extra("msgtype"), Some("text"));
        assert_eq!(out.extra("parts"), Some("1"));
    }

    #[test]
    fn markdown_renders_with_the_templates_own_markdown() {
        let out = render(
            &[(
                "markdown",
                "**New intent**: {{ contact.name }}\n> stage: <font color=\"info\">{{ vars.stage }}</font>",
            )],
            json!({"contact": {"name": "李雷"}, "vars": {"stage": "intent"}}),
        )
        .unwrap();
        assert_eq!(
            out.text.as_deref(),
            Some("**New intent**: 李雷\n> stage: <font color=\"info\">intent</font>")
        );
        assert_eq!(out.extra("msgtype"), Some("markdown"));
    }

    #[test]
    fn a_hostile_contact_name_cannot_add_markdown_but_the_template_keeps_its_own() {
        let out = render(
            &[(
                "markdown",
                "**New intent**: {{ contact.name }} ([CRM](https://crm.example.com/c/{{ contact.id }}))",
            )],
            json!({"contact": {"name": "*Boss* [x](http://evil)\n> # urgent", "id": 7}}),
        )
        .unwrap();
        let content = out.text.unwrap();
        assert_eq!(
            content,
            "**New intent**: \\*Boss\\* \\[x\\]\\(http://evil\\)\n\\> \\# urgent ([CRM](https://crm.example.com/c/7))"
        );
        assert!(!content.contains("[x](http://evil)"));
    }

    #[test]
    fn exactly_one_of_text_or_markdown() {
        let both = render(&[("text", "a"), ("markdown", "b")], json!({})).unwrap_err();
        assert!(both.message.contains("not both"), "{}", both.message);
        let neither = render(&[], json!({})).unwrap_err();
        assert!(
            neither.message.contains("needs `text` (plain) or `markdown`"),
            "{}",
            neither.message
        );
        let unknown = render(&[("text", "a"), ("subject", "s")], json!({})).unwrap_err();
        assert_eq!(unknown.field.as_deref(), Some("subject"));
    }

    #[test]
    fn undefined_variables_and_empty_messages_are_errors_naming_the_field() {
        let undefined = render(
            &[("markdown", "{{ contact.nmae }}")],
            json!({"contact": {"name": "Li"}}),
        )
        .unwrap_err();
        assert_eq!(undefined.field.as_deref(), Some("markdown"));
        assert!(undefined.message.contains("undefined"), "{}", undefined.message);
        let empty = render(&[("text", "{{ vars.note }} ")], json!({"vars": {"note": ""}})).unwrap_err();
        assert_eq!(empty.field.as_deref(), Some("text"));
    }

    #[test]
    fn long_content_counts_its_parts_and_too_many_are_refused() {
        let context = json!({"vars": {"word": "中"}});
        let two_parts = render(&[("text", "{{ vars.word * 683 }}")], context.clone()).unwrap();
        assert_eq!(two_parts.text.as_deref().map(str::len), Some(2049));
        assert_eq!(two_parts.extra("parts"), Some("2"));
        let one_part = render(&[("markdown", "{{ vars.word * 683 }}")], context.clone()).unwrap();
        assert_eq!(one_part.extra("parts"), Some("1"));
        let flood = render(&[("text", "{{ vars.word * 7000 }}")], context).unwrap_err();
        assert!(flood.message.contains("more than 10 is refused"), "{}", flood.message);
    }

    // build_request

    #[test]
    fn a_text_message_is_one_post_with_the_key_placeholder_intact() {
        let requests = WeCom::build_request(&rendered("text", "Call Li today"), "", &config()).unwrap();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.url,
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=${secret:WECOM_KEY}"
        );
        assert_eq!(
            request.headers,
            vec![("Content-Type".to_string(), "application/json".to_string())]
        );
        assert_eq!(
            body(request),
            json!({"msgtype": "text", "text": {"content": "Call Li today"}})
        );
    }

    #[test]
    fn a_markdown_message_has_a_markdown_body() {
        let config = json!({"key": KEY_PLACEHOLDER, "webhook_url": "http://127.0.0.1:9000/send", "mentioned_mobile_list": ["@all"]});
        let requests = WeCom::build_request(&rendered("markdown", "**hi**"), "13800001111", &config).unwrap();
        assert_eq!(requests[0].url, "http://127.0.0.1:9000/send?key=${secret:WECOM_KEY}");
        // Mentions are a text-message feature; markdown has none.
        assert_eq!(
            body(&requests[0]),
            json!({"msgtype": "markdown", "markdown": {"content": "**hi**"}})
        );
    }

    #[test]
    fn configured_mentions_and_a_mobile_recipient_are_mentioned_once() {
        let config = json!({"key": KEY_PLACEHOLDER, "mentioned_mobile_list": ["13800001111", "@all"]});
        let content = format!("{}\n{}", "a".repeat(2000), "b".repeat(100));
        let requests = WeCom::build_request(&rendered("text", &content), "+86 139-0000-2222", &config).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            body(&requests[0]),
            json!({"msgtype": "text", "text": {"content": "a".repeat(2000), "mentioned_mobile_list": ["13800001111", "@all", "+8613900002222"]}})
        );
        assert_eq!(
            body(&requests[1]),
            json!({"msgtype": "text", "text": {"content": "b".repeat(100)}})
        );
        // An email address or a name is not a group member's mobile: ignored.
        let plain = WeCom::build_request(&rendered("text", "x"), "li@example.com", &json!({"key": "k"})).unwrap();
        assert_eq!(body(&plain[0]), json!({"msgtype": "text", "text": {"content": "x"}}));
    }

    #[test]
    fn long_markdown_is_posted_in_order_in_parts_within_the_limit() {
        let content = format!("{}\n{}", "中".repeat(1000), "文".repeat(1000));
        let requests = WeCom::build_request(&rendered("markdown", &content), "", &config()).unwrap();
        let parts: Vec<String> = requests
            .iter()
            .map(|r| body(r)["markdown"]["content"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(parts, vec!["中".repeat(1000), "文".repeat(1000)]);
        assert!(parts.iter().all(|p| p.len() <= MARKDOWN_LIMIT));
    }

    #[test]
    fn a_secret_placeholder_in_the_content_is_not_filled_in_by_the_host() {
        let requests = WeCom::build_request(&rendered("text", "I am ${secret:WECOM_KEY}"), "", &config()).unwrap();
        let raw = String::from_utf8(requests[0].body.clone()).unwrap();
        assert!(!raw.contains("${secret:"), "{raw}");
        assert_eq!(body(&requests[0])["text"]["content"], "I am ${secret:WECOM_KEY}");
    }

    #[test]
    fn build_request_refuses_bad_config_and_foreign_messages() {
        let missing_key = WeCom::build_request(&rendered("text", "x"), "", &json!({})).unwrap_err();
        assert!(missing_key.message.contains("needs `key`"), "{}", missing_key.message);
        let foreign = Rendered {
            text: Some("x".into()),
            ..Rendered::default()
        };
        assert!(WeCom::build_request(&foreign, "", &config()).is_err());
        assert!(WeCom::build_request(&rendered("text", ""), "", &config()).is_err());
    }

    // interpret_response

    #[test]
    fn errcode_0_is_sent() {
        assert_eq!(answer(200, r#"{"errcode":0,"errmsg":"ok"}"#), outcome("sent", "ok"));
    }

    #[test]
    fn rate_limit_and_busy_are_retried_later() {
        assert_eq!(
            answer(200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
            outcome("retry later", "errcode 45009: api freq out of limit")
        );
        assert_eq!(
            answer(200, r#"{"errcode":-1,"errmsg":"system busy"}"#),
            outcome("retry later", "errcode -1: system busy")
        );
    }

    #[test]
    fn other_errcodes_fail() {
        assert_eq!(
            answer(200, r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#),
            outcome("failed", "errcode 93000: invalid webhook url")
        );
    }

    #[test]
    fn a_2xx_answer_that_is_not_wecom_json_fails() {
        let (kind, why) = answer(200, "<html>gateway</html>");
        assert_eq!(kind, "failed");
        assert!(
            why.contains("not JSON") && why.contains("<html>gateway</html>"),
            "{why}"
        );
        let (kind, why) = answer(200, r#"{"ok":true}"#);
        assert_eq!(kind, "failed");
        assert!(why.contains("no errcode"), "{why}");
    }

    #[test]
    fn http_errors_follow_the_status() {
        assert_eq!(answer(502, "bad gateway"), outcome("retry later", "HTTP 502"));
        assert_eq!(answer(429, ""), outcome("retry later", "HTTP 429"));
        assert_eq!(answer(404, ""), outcome("failed", "HTTP 404"));
    }

    // validate_config

    #[test]
    fn validate_config_says_what_to_fix() {
        assert!(WeCom::validate_config(&config()).is_ok());
        assert!(WeCom::validate_config(&json!({})).unwrap_err().contains("needs `key`"));
        let ftp = WeCom::validate_config(&json!({"key": "k", "webhook_url": "ftp://x"})).unwrap_err();
        assert!(ftp.contains("http:// or https://"), "{ftp}");
    }

    #[test]
    fn info_names_the_channel() {
        let info = WeCom::info();
        assert_eq!(
            (info.name.as_str(), info.channels),
            ("wecom", vec!["wecom".to_string()])
        );
    }
}
