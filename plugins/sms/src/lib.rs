//! nudge's SMS channel, in one of two modes chosen by `mode` in `[plugin.sms]`:
//!
//! - `provider_template` (Aliyun / Tencent style): carriers in China deliver only
//!   templates the provider approved, so a message is a signature, a template
//!   code and string parameters. The plugin checks the parameters the way the
//!   provider's review does (names, length, no links, no 【】) so that a bad
//!   message fails when it is rendered rather than at the provider, and renders
//!   the text the customer will see as a preview.
//! - `free_text` (Twilio style): a minijinja text plus an opt-out line, refused
//!   beyond `max_segments` concatenated segments counted the way carriers bill.
//!
//! The daemon sends the HTTP request build_request describes. Secrets stay
//! `${secret:NAME}` placeholders that only the host fills in.

mod config;

use std::collections::BTreeMap;

use nudge_plugin_sdk::sms::{self, Encoding, SmsCount};
use nudge_plugin_sdk::template::Fields;
use nudge_plugin_sdk::{
    Channel, DeliveryOutcome, HttpRequest, HttpResponse, PluginInfo, RenderError, RenderRequest, Rendered, Value, json,
};

use config::{ApprovedTemplate, FreeText, Mode, ProviderTemplate, Settings};

const TEMPLATE_CODE: &str = "template_code";
const PARAMS_PREFIX: &str = "params.";
const TEXT: &str = "text";

/// Common top-level domains, for spotting a bare link such as `x.cn/abc` in a
/// parameter; a longer list would mostly add false alarms on abbreviations.
const LINK_TLDS: &[&str] = &[
    "com", "cn", "net", "org", "info", "biz", "io", "co", "me", "cc", "tv", "top", "xyz", "vip", "shop", "club",
    "site", "online", "store", "app", "dev", "ly", "gl", "link", "ink", "wang", "xin", "cloud", "tech", "hk", "tw",
    "uk", "us", "de", "jp", "ru",
];

pub struct Sms;

impl Channel for Sms {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "sms".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            channels: vec!["sms".into()],
        }
    }

    fn validate_config(config: &Value) -> Result<(), String> {
        match Settings::parse(config)? {
            Some(settings) => settings.check_all_templates(),
            // Not configured: the daemon still loads the plugin; render says what to add.
            None => Ok(()),
        }
    }

    fn render(request: &RenderRequest) -> Result<Rendered, RenderError> {
        let settings = configured(&request.config())?;
        match &settings.mode {
            Mode::ProviderTemplate(provider) => render_provider_template(request, provider),
            Mode::FreeText(free_text) => render_free_text(request, free_text),
        }
    }

    fn build_request(message: &Rendered, recipient: &str, config: &Value) -> Result<Vec<HttpRequest>, RenderError> {
        let settings = configured(config)?;
        let phone = normalize_phone(recipient).map_err(RenderError::general)?;
        let rendered_mode = message.extra("mode").unwrap_or("unknown");
        if rendered_mode != settings.mode.name() {
            return Err(RenderError::general(format!(
                "this message was rendered in {rendered_mode} mode but [plugin.sms] mode is now {}; render it again",
                settings.mode.name()
            )));
        }
        let (content_type, body) = match &settings.mode {
            Mode::ProviderTemplate(_) => ("application/json", provider_template_body(message, &phone)?),
            Mode::FreeText(free_text) => (
                "application/x-www-form-urlencoded",
                free_text_body(message, &phone, free_text)?,
            ),
        };
        let mut headers = vec![("Content-Type".to_string(), content_type.to_string())];
        if let Some(auth_header) = &settings.auth_header {
            headers.push(("Authorization".to_string(), auth_header.clone()));
        }
        Ok(vec![HttpRequest {
            method: "POST".into(),
            url: settings.endpoint.clone(),
            headers,
            body: body.into_bytes(),
        }])
    }

    fn interpret_response(response: &HttpResponse) -> DeliveryOutcome {
        let body: Option<Value> = serde_json::from_slice(&response.body).ok();
        // Aliyun-style providers answer with a string `Code`, often under HTTP 200 even
        // for errors; Twilio-style ones use the HTTP status and a lowercase `message`.
        match body.as_ref().and_then(|b| b.get("Code")).and_then(Value::as_str) {
            Some(code) => provider_template_outcome(response.status, code, body.as_ref()),
            None => free_text_outcome(response, body.as_ref()),
        }
    }
}

nudge_plugin_sdk::export_channel!(Sms);

/// The settings, or an error that says how to configure SMS.
fn configured(config: &Value) -> Result<Settings, RenderError> {
    match Settings::parse(config) {
        Ok(Some(settings)) => Ok(settings),
        Ok(None) => Err(RenderError::general(
            "SMS is not configured: add a [plugin.sms] table to nudge.toml with mode = \"provider_template\" or \
             \"free_text\" and the provider's endpoint",
        )),
        Err(e) => Err(RenderError::general(format!("[plugin.sms] in nudge.toml: {e}"))),
    }
}

fn render_provider_template(request: &RenderRequest, settings: &ProviderTemplate) -> Result<Rendered, RenderError> {
    let param_names = provider_template_params(request)?;
    let fields = Fields::of(request)?;
    let code = fields.render(TEMPLATE_CODE, false)?.trim().to_string();
    let approved = settings.templates.get(&code).ok_or_else(|| {
        let known: Vec<&str> = settings.templates.keys().map(String::as_str).collect();
        RenderError::in_field(
            TEMPLATE_CODE,
            format!(
                "`{code}` is not an approved template in [plugin.sms] templates (known: {}); add it there once the \
                 provider has approved it",
                known.join(", ")
            ),
        )
    })?;
    approved
        .check_opt_out(&code, &settings.opt_out)
        .map_err(|e| RenderError::in_field(TEMPLATE_CODE, e))?;
    check_param_names(&code, approved, &param_names)?;

    let mut params = BTreeMap::new();
    for name in param_names {
        let field = format!("{PARAMS_PREFIX}{name}");
        // Whitespace around a parameter comes from template layout, never from intent.
        let value = fields.render_optional(&field, false)?.unwrap_or_default();
        let value = value.trim().to_string();
        check_param_value(&value, approved.max_param_len).map_err(|e| RenderError::in_field(&field, e))?;
        params.insert(name.to_string(), value);
    }

    let text = format!("【{}】{}", settings.signature, approved.fill(&params));
    let count = sms::count(&text);
    // A BTreeMap serializes with sorted keys whatever serde_json's features are, so the
    // provider receives the same bytes the tests pin down.
    let params_json = serde_json::to_string(&params).map_err(|e| RenderError::general(e.to_string()))?;
    Ok(Rendered {
        text: Some(text),
        extra: vec![
            ("mode".into(), config::PROVIDER_TEMPLATE.into()),
            ("template_code".into(), code),
            ("params".into(), params_json),
            ("signature".into(), settings.signature.clone()),
            ("segments".into(), count.segments.to_string()),
            ("encoding".into(), encoding_name(count.encoding).into()),
        ],
        ..Rendered::default()
    })
}

/// The parameter names the template gives (`params.<name>` fields), in template order.
fn provider_template_params(request: &RenderRequest) -> Result<Vec<&str>, RenderError> {
    let mut names = Vec::new();
    for (field, _) in &request.template {
        if field == TEMPLATE_CODE {
            continue;
        }
        match field.strip_prefix(PARAMS_PREFIX) {
            Some(name) if !name.is_empty() => names.push(name),
            _ => {
                let hint = if field == TEXT {
                    "; the text is the approved template's own: to send your own text, use mode = \"free_text\""
                } else {
                    ""
                };
                return Err(RenderError::in_field(
                    field,
                    format!(
                        "unknown template field `{field}`; in provider_template mode an SMS template takes \
                         `template_code` and a `params` table of strings{hint}"
                    ),
                ));
            }
        }
    }
    Ok(names)
}

/// The parameters must be exactly the approved text's placeholders: the provider
/// rejects a missing one, and an unexpected one is a typo that would otherwise
/// leave a placeholder empty.
fn check_param_names(code: &str, approved: &ApprovedTemplate, given: &[&str]) -> Result<(), RenderError> {
    let expected = approved.placeholders();
    let missing: Vec<&str> = expected.iter().copied().filter(|name| !given.contains(name)).collect();
    let unexpected: Vec<&str> = given.iter().copied().filter(|name| !expected.contains(name)).collect();
    let Some(first) = unexpected.first().or(missing.first()) else {
        return Ok(());
    };
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing: {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        problems.push(format!("unexpected: {}", unexpected.join(", ")));
    }
    let needs = if expected.is_empty() {
        "no parameters".to_string()
    } else {
        expected.join(", ")
    };
    Err(RenderError::in_field(
        &format!("{PARAMS_PREFIX}{first}"),
        format!(
            "template {code} (\"{}\") takes params {needs}; {}",
            approved.text,
            problems.join("; ")
        ),
    ))
}

/// What a provider's review refuses in a template parameter.
fn check_param_value(value: &str, max_len: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("renders empty; the customer would see a gap in the approved text".into());
    }
    if value.contains(['【', '】']) {
        return Err(format!(
            "\"{value}\" contains 【 or 】, which carriers reserve for the signature; use other brackets"
        ));
    }
    if let Some(link) = find_link(value) {
        return Err(format!(
            "\"{value}\" contains a link (`{link}`); providers refuse links in parameters: put the link in the \
             approved template text instead"
        ));
    }
    // The host fills `${secret:NAME}` anywhere in a JSON request body, so a contact's
    // data must never be able to write one into the provider's request.
    if value.contains("${") {
        return Err(format!(
            "\"{value}\" contains `${{`, which is not allowed in an SMS parameter"
        ));
    }
    let length = value.chars().count();
    if length > max_len {
        return Err(format!(
            "\"{value}\" is {length} characters, over this template's limit of {max_len} (max_param_len); shorten \
             it or the data it comes from"
        ));
    }
    Ok(())
}

/// The first thing in `text` that reads as a link: a scheme, `www.`, or a bare
/// domain with a common top-level domain (`t.cn/x`, `shop.example.com`).
fn find_link(text: &str) -> Option<&str> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `text`.
    let lower = text.to_ascii_lowercase();
    for marker in ["http://", "https://", "www."] {
        if let Some(start) = lower.find(marker) {
            let end = text[start..]
                .find(|c: char| c.is_whitespace() || !c.is_ascii())
                .map_or(text.len(), |n| start + n);
            return Some(&text[start..end]);
        }
    }
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .find(|word| looks_like_domain(word))
}

fn looks_like_domain(word: &str) -> bool {
    let labels: Vec<&str> = word.trim_matches(|c| c == '.' || c == '-').split('.').collect();
    let Some(tld) = labels.last() else { return false };
    labels.len() >= 2
        && labels.iter().all(|label| !label.is_empty())
        && LINK_TLDS.iter().any(|known| known.eq_ignore_ascii_case(tld))
}

fn render_free_text(request: &RenderRequest, settings: &FreeText) -> Result<Rendered, RenderError> {
    if let Some((field, _)) = request.template.iter().find(|(field, _)| field != TEXT) {
        return Err(RenderError::in_field(
            field,
            format!(
                "unknown template field `{field}`; in free_text mode an SMS template takes only `text` \
                 (template_code and params are for mode = \"provider_template\")"
            ),
        ));
    }
    let rendered = Fields::of(request)?.render(TEXT, false)?;
    let body = rendered.trim();
    if body.is_empty() {
        return Err(RenderError::in_field(TEXT, "renders empty"));
    }
    let text = with_opt_out(body, &settings.opt_out);
    let count = sms::count(&text);
    if count.segments > settings.max_segments {
        return Err(RenderError::in_field(
            TEXT,
            too_long(&text, count, settings.max_segments),
        ));
    }
    Ok(Rendered {
        text: Some(text),
        extra: vec![
            ("mode".into(), config::FREE_TEXT.into()),
            ("encoding".into(), encoding_name(count.encoding).into()),
            ("units".into(), count.units.to_string()),
            ("segments".into(), count.segments.to_string()),
        ],
        ..Rendered::default()
    })
}

/// The text with the opt-out after it, once: a template may already end with it.
fn with_opt_out(body: &str, opt_out: &str) -> String {
    if body.ends_with(opt_out) {
        body.to_string()
    } else {
        format!("{body} {opt_out}")
    }
}

/// Why a free text is too long, and, when it is UCS-2, which characters made it so:
/// one curly quote more than halves what fits.
fn too_long(text: &str, count: SmsCount, max_segments: usize) -> String {
    let (unit, single, part) = match count.encoding {
        Encoding::Gsm7 => ("GSM-7 septets", 160, 153),
        Encoding::Ucs2 => ("UCS-2 units", 70, 67),
    };
    let capacity = if max_segments == 1 { single } else { part * max_segments };
    let mut message = format!(
        "the SMS is {} segments ({} {unit}, opt-out included), over max_segments = {max_segments}, which hold about \
         {capacity} {unit}; shorten the text",
        count.segments, count.units
    );
    if count.encoding == Encoding::Ucs2 {
        let mut forcing: Vec<char> = Vec::new();
        for c in text.chars().filter(|c| sms::gsm7_cost(*c).is_none()) {
            if !forcing.contains(&c) {
                forcing.push(c);
            }
        }
        let shown: Vec<String> = forcing
            .iter()
            .take(10)
            .map(|c| format!("'{c}' (U+{:04X})", u32::from(*c)))
            .collect();
        let more = if forcing.len() > 10 {
            format!(" and {} more", forcing.len() - 10)
        } else {
            String::new()
        };
        message.push_str(&format!(
            "; it is sent as UCS-2 (70 characters per single SMS, 67 per segment, instead of GSM-7's 160/153) \
             because of: {}{more}",
            shown.join(", ")
        ));
    }
    message
}

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Gsm7 => "gsm7",
        Encoding::Ucs2 => "ucs2",
    }
}

/// The recipient without spaces, dashes and parentheses, if it is an optional `+`
/// and 6 to 15 digits (E.164 allows at most 15).
fn normalize_phone(recipient: &str) -> Result<String, String> {
    let compact: String = recipient
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or(&compact);
    if (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(compact)
    } else {
        Err(format!(
            "`{recipient}` is not a phone number: expected an optional + and 6 to 15 digits (spaces, dashes and \
             parentheses are ignored)"
        ))
    }
}

/// The Aliyun SendSms-style JSON body, from the parts render produced.
fn provider_template_body(message: &Rendered, phone: &str) -> Result<String, RenderError> {
    let part = |name: &str| {
        message.extra(name).ok_or_else(|| {
            RenderError::general(format!(
                "the rendered message has no `{name}`; it was not rendered by this plugin"
            ))
        })
    };
    let (signature, code, params) = (part("signature")?, part("template_code")?, part("params")?);
    if serde_json::from_str::<serde_json::Map<String, Value>>(params).is_err() {
        return Err(RenderError::general(format!(
            "the rendered `params` is not a JSON object: {params}"
        )));
    }
    // Keys in alphabetical order, so the bytes do not depend on serde_json's map features.
    let body = json!({"PhoneNumbers": phone, "SignName": signature, "TemplateCode": code, "TemplateParam": params});
    let body = serde_json::to_string(&body).map_err(|e| RenderError::general(e.to_string()))?;
    // `$` only occurs inside JSON strings, where `\u0024` means the same; written that
    // way no `${secret:...}` can appear for the host to fill into a message.
    Ok(body.replace('$', "\\u0024"))
}

/// The Twilio-style form body; without `from` the provider's default sender is used.
fn free_text_body(message: &Rendered, phone: &str, settings: &FreeText) -> Result<String, RenderError> {
    let text = message
        .text
        .as_deref()
        .ok_or_else(|| RenderError::general("the rendered message has no text"))?;
    let mut fields = vec![("To", phone)];
    if let Some(from) = &settings.from {
        fields.push(("From", from));
    }
    fields.push(("Body", text));
    Ok(fields
        .iter()
        .map(|(name, value)| format!("{}={}", form_urlencode(name), form_urlencode(value)))
        .collect::<Vec<_>>()
        .join("&"))
}

/// application/x-www-form-urlencoded as the WHATWG URL standard writes it: bytes
/// other than ASCII alphanumerics and `*-._` percent-encoded, space as `+`.
fn form_urlencode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0F)]));
            }
        }
    }
    out
}

fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500..=599)
}

fn provider_template_outcome(status: u16, code: &str, body: Option<&Value>) -> DeliveryOutcome {
    let text = |key: &str| {
        body.and_then(|b| b.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut detail = match text("Message") {
        Some(message) => format!("{code}: {message}"),
        None => code.to_string(),
    };
    if !(200..=299).contains(&status) {
        detail = format!("HTTP {status}: {detail}");
    }
    // Rate limits per number or per account lift with time; anything else will not.
    let throttled = code == "isv.BUSINESS_LIMIT_CONTROL" || code == "Throttling" || code.starts_with("Throttling.");
    if throttled || is_retryable_status(status) {
        DeliveryOutcome::RetryLater(detail)
    } else if code == "OK" && (200..=299).contains(&status) {
        DeliveryOutcome::Sent(text("BizId").unwrap_or("OK").to_string())
    } else {
        DeliveryOutcome::Failed(detail)
    }
}

fn free_text_outcome(response: &HttpResponse, body: Option<&Value>) -> DeliveryOutcome {
    let status = response.status;
    if (200..=299).contains(&status) {
        let sid = body
            .and_then(|b| b.get("sid"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        return DeliveryOutcome::Sent(sid.map_or_else(|| format!("HTTP {status}"), str::to_string));
    }
    let message = body.and_then(|b| b.get("message")).and_then(Value::as_str);
    let code = body
        .and_then(|b| b.get("code"))
        .filter(|c| c.is_number() || c.is_string());
    let detail = match (code, message) {
        (Some(code), Some(message)) => format!(
            "HTTP {status}: {}: {message}",
            code.as_str().map_or(code.to_string(), str::to_string)
        ),
        (None, Some(message)) => format!("HTTP {status}: {message}"),
        _ => {
            // Not the JSON we know: a little of the body still helps whoever reads the log.
            let raw = String::from_utf8_lossy(&response.body);
            let snippet: String = raw.trim().chars().take(200).collect();
            if snippet.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {snippet}")
            }
        }
    };
    if is_retryable_status(status) {
        DeliveryOutcome::RetryLater(detail)
    } else {
        DeliveryOutcome::Failed(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: &str = r#"{"contact": {"name": "李雷", "company": "Acme"}, "vars": {"tracking": "SF1234567890"}}"#;

    fn provider_config() -> Value {
        json!({
            "mode": "provider_template",
            "endpoint": "https://dysmsapi.example.com/send",
            "auth_header": "APPCODE ${secret:SMS_TOKEN}",
            "signature": "公司名",
            "templates": {
                "SMS_001": {"text": "您好${name},您的样品已发出${tracking}", "kind": "notification"},
                "SMS_CODE": {"text": "验证码${code}", "kind": "notification", "max_param_len": 6},
                "SMS_PROMO": {"text": "${name}您好,新品上市,欢迎垂询。拒收请回复R", "kind": "marketing"},
            },
        })
    }

    fn free_text_config() -> Value {
        json!({
            "mode": "free_text",
            "endpoint": "https://api.sms.example.com/Messages.json",
            "auth_header": "Basic ${secret:SMS_BASIC}",
            "from": "+15550000000",
        })
    }

    fn request(config: &Value, template: &[(&str, &str)]) -> RenderRequest {
        let mut request = RenderRequest::new("sms", template, CONTEXT);
        request.config_json = config.to_string();
        request
    }

    fn shipped(name: &str, tracking: &str) -> RenderRequest {
        request(
            &provider_config(),
            &[
                ("template_code", "SMS_001"),
                ("params.name", name),
                ("params.tracking", tracking),
            ],
        )
    }

    fn field_error(result: Result<Rendered, RenderError>) -> (String, String) {
        let error = result.expect_err("the message should be refused");
        (error.field.unwrap_or_default(), error.message)
    }

    fn outcome(status: u16, body: &str) -> (&'static str, String) {
        match Sms::interpret_response(&HttpResponse {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }) {
            DeliveryOutcome::Sent(s) => ("sent", s),
            DeliveryOutcome::RetryLater(s) => ("retry", s),
            DeliveryOutcome::Failed(s) => ("failed", s),
        }
    }

    // --- provider_template mode ---

    #[test]
    fn provider_template_renders_the_preview_and_the_parts_the_provider_needs() {
        let out = Sms::render(&shipped("{{ contact.name }}", "{{ vars.tracking }}")).unwrap();
        assert_eq!(
            out.text.as_deref(),
            Some("【公司名】您好李雷,您的样品已发出SF1234567890")
        );
        assert_eq!(out.extra("mode"), Some("provider_template"));
        assert_eq!(out.extra("template_code"), Some("SMS_001"));
        assert_eq!(
            out.extra("params"),
            Some(r#"{"name":"李雷","tracking":"SF1234567890"}"#)
        );
        assert_eq!(out.extra("signature"), Some("公司名"));
        assert_eq!(out.extra("segments"), Some("1"));
        assert_eq!(out.extra("encoding"), Some("ucs2"));
    }

    #[test]
    fn params_must_be_exactly_the_approved_placeholders() {
        let missing = request(
            &provider_config(),
            &[("template_code", "SMS_001"), ("params.name", "x")],
        );
        let (field, message) = field_error(Sms::render(&missing));
        assert_eq!(field, "params.tracking");
        assert!(
            message.contains("takes params name, tracking; missing: tracking"),
            "{message}"
        );

        let mut typo = shipped("x", "y");
        typo.template[2].0 = "params.trackng".into();
        let (field, message) = field_error(Sms::render(&typo));
        assert_eq!(field, "params.trackng");
        assert!(message.contains("missing: tracking; unexpected: trackng"), "{message}");
    }

    #[test]
    fn template_code_must_be_an_approved_template() {
        let unknown = request(
            &provider_config(),
            &[("template_code", "SMS_999"), ("params.name", "x")],
        );
        let (field, message) = field_error(Sms::render(&unknown));
        assert_eq!(field, "template_code");
        assert!(
            message.contains("`SMS_999` is not an approved template") && message.contains("SMS_001"),
            "{message}"
        );
    }

    #[test]
    fn a_param_longer_than_max_param_len_is_refused() {
        assert!(
            Sms::render(&shipped(&"a".repeat(35), "SF1")).is_ok(),
            "35 characters is the default limit"
        );
        let (field, message) = field_error(Sms::render(&shipped(&"王".repeat(36), "SF1")));
        assert_eq!(field, "params.name");
        assert!(
            message.contains("36 characters, over this template's limit of 35"),
            "{message}"
        );

        let code = |value: &str| {
            request(
                &provider_config(),
                &[("template_code", "SMS_CODE"), ("params.code", value)],
            )
        };
        assert!(Sms::render(&code("123456")).is_ok());
        let (_, message) = field_error(Sms::render(&code("1234567")));
        assert!(message.contains("limit of 6"), "{message}");
    }

    #[test]
    fn a_link_in_a_param_is_refused() {
        for link in [
            "https://x.test/a",
            "HTTP://x",
            "www.example.org",
            "详见abc.cn",
            "t.cn/Ab3",
            "shop.example.COM/x",
        ] {
            let (field, message) = field_error(Sms::render(&shipped("李雷", link)));
            assert_eq!(field, "params.tracking");
            assert!(message.contains("contains a link"), "{link}: {message}");
        }
        for not_a_link in ["3.5kg", "v1.2", "Acme Co.,Ltd", "No.12", "SF1234567890"] {
            assert!(Sms::render(&shipped("李雷", not_a_link)).is_ok(), "{not_a_link}");
        }
    }

    #[test]
    fn signature_brackets_in_a_param_are_refused() {
        let (field, message) = field_error(Sms::render(&shipped("【李雷】", "SF1")));
        assert_eq!(field, "params.name");
        assert!(message.contains("【 or 】"), "{message}");
    }

    #[test]
    fn an_empty_param_or_a_secret_placeholder_in_a_param_is_refused() {
        let (field, message) = field_error(Sms::render(&shipped("{{ '' }}", "SF1")));
        assert_eq!(field, "params.name");
        assert!(message.contains("renders empty"), "{message}");
        let (field, _) = field_error(Sms::render(&shipped("${secret:SMS_TOKEN}", "SF1")));
        assert_eq!(field, "params.name");
    }

    #[test]
    fn an_undefined_variable_in_a_param_names_the_param() {
        let (field, message) = field_error(Sms::render(&shipped("{{ contact.nmae }}", "SF1")));
        assert_eq!(field, "params.name");
        assert!(message.contains("undefined"), "{message}");
    }

    #[test]
    fn a_marketing_template_must_end_with_the_opt_out() {
        let promo = |config: &Value| request(config, &[("template_code", "SMS_PROMO"), ("params.name", "李雷")]);
        let out = Sms::render(&promo(&provider_config())).unwrap();
        assert_eq!(
            out.text.as_deref(),
            Some("【公司名】李雷您好,新品上市,欢迎垂询。拒收请回复R")
        );

        let mut without = provider_config();
        without["templates"]["SMS_PROMO"]["text"] = json!("${name}您好,新品上市,欢迎垂询。");
        let (field, message) = field_error(Sms::render(&promo(&without)));
        assert_eq!(field, "template_code");
        assert!(
            message.contains("does not end with the opt-out \"拒收请回复R\""),
            "{message}"
        );
        let error = Sms::validate_config(&without).unwrap_err();
        assert!(error.contains("SMS_PROMO is a marketing template"), "{error}");

        let mut own_wording = without.clone();
        own_wording["templates"]["SMS_PROMO"]["text"] = json!("${name}您好,新品上市。退订回T");
        own_wording["opt_out"] = json!("退订回T");
        assert!(Sms::validate_config(&own_wording).is_ok());
        assert!(Sms::render(&promo(&own_wording)).is_ok());
    }

    #[test]
    fn provider_template_mode_takes_only_template_code_and_params() {
        let with_text = request(&provider_config(), &[("template_code", "SMS_001"), ("text", "hi")]);
        let (field, message) = field_error(Sms::render(&with_text));
        assert_eq!(field, "text");
        assert!(message.contains("mode = \"free_text\""), "{message}");
    }

    // --- free_text mode ---

    fn free_text(text: &str) -> Result<Rendered, RenderError> {
        Sms::render(&request(&free_text_config(), &[("text", text)]))
    }

    #[test]
    fn free_text_gets_the_opt_out_once() {
        let out = free_text("Hi {{ contact.name }}, your samples shipped.\n").unwrap();
        assert_eq!(
            out.text.as_deref(),
            Some("Hi 李雷, your samples shipped. Reply STOP to opt out")
        );
        let out = free_text("Samples shipped. Reply STOP to opt out").unwrap();
        assert_eq!(out.text.as_deref(), Some("Samples shipped. Reply STOP to opt out"));

        let mut config = free_text_config();
        config["opt_out"] = json!("STOP=stop");
        let out = Sms::render(&request(&config, &[("text", "Hello")])).unwrap();
        assert_eq!(out.text.as_deref(), Some("Hello STOP=stop"));
    }

    #[test]
    fn free_text_is_capped_at_max_segments() {
        let opt_out_len = " Reply STOP to opt out".len();
        // Three concatenated GSM-7 segments hold 3 x 153 = 459 septets.
        let out = free_text(&"a".repeat(459 - opt_out_len)).unwrap();
        assert_eq!(
            (out.extra("encoding"), out.extra("units"), out.extra("segments")),
            (Some("gsm7"), Some("459"), Some("3"))
        );
        let (field, message) = field_error(free_text(&"a".repeat(460 - opt_out_len)));
        assert_eq!(field, "text");
        assert!(message.contains("4 segments (460 GSM-7 septets"), "{message}");
        assert!(message.contains("max_segments = 3"), "{message}");
        assert!(!message.contains("UCS-2"), "{message}");

        let mut config = free_text_config();
        config["max_segments"] = json!(4);
        assert!(Sms::render(&request(&config, &[("text", &"a".repeat(460 - opt_out_len))])).is_ok());
    }

    #[test]
    fn chinese_text_is_ucs2_and_a_refusal_names_the_characters_that_forced_it() {
        let out = free_text("您好{{ contact.name }}").unwrap();
        assert_eq!(out.extra("encoding"), Some("ucs2"));
        assert_eq!(out.extra("units"), Some("26"));
        assert_eq!(out.extra("segments"), Some("1"));

        // One curly apostrophe makes the whole text UCS-2: three segments hold 3 x 67 = 201 units...
        let opt_out_len = " Reply STOP to opt out".len();
        assert!(free_text(&format!("It’s {}", "a".repeat(201 - 5 - opt_out_len))).is_ok());
        // ...so 202 units are refused, where GSM-7 would have fitted 459.
        let (field, message) = field_error(free_text(&format!("It’s {}", "a".repeat(202 - 5 - opt_out_len))));
        assert_eq!(field, "text");
        assert!(message.contains("UCS-2 units"), "{message}");
        assert!(message.contains("because of: '’' (U+2019)"), "{message}");
    }

    #[test]
    fn free_text_mode_takes_only_text() {
        let (field, _) = field_error(Sms::render(&request(
            &free_text_config(),
            &[("template_code", "SMS_001")],
        )));
        assert_eq!(field, "template_code");
        let (field, message) = field_error(free_text("  {{ '' }} "));
        assert_eq!((field.as_str(), message.as_str()), ("text", "renders empty"));
    }

    #[test]
    fn rendering_without_a_config_says_what_to_add() {
        let error = Sms::render(&RenderRequest::new("sms", &[("text", "hi")], CONTEXT)).unwrap_err();
        assert_eq!(error.field, None);
        assert!(error.message.contains("add a [plugin.sms] table"), "{}", error.message);
    }

    // --- delivery ---

    #[test]
    fn provider_template_request_is_the_send_sms_json() {
        let message = Sms::render(&shipped("{{ contact.name }}", "{{ vars.tracking }}")).unwrap();
        let requests = Sms::build_request(&message, "+86 138-0013-8000", &provider_config()).unwrap();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(
            (request.method.as_str(), request.url.as_str()),
            ("POST", "https://dysmsapi.example.com/send")
        );
        assert_eq!(
            request.headers,
            vec![
                ("Content-Type".to_string(), "application/json".to_string()),
                ("Authorization".to_string(), "APPCODE ${secret:SMS_TOKEN}".to_string()),
            ]
        );
        assert_eq!(
            String::from_utf8(request.body.clone()).unwrap(),
            r#"{"PhoneNumbers":"+8613800138000","SignName":"公司名","TemplateCode":"SMS_001","TemplateParam":"{\"name\":\"李雷\",\"tracking\":\"SF1234567890\"}"}"#
        );
    }

    #[test]
    fn no_dollar_sign_reaches_a_json_body_unescaped() {
        let message = Sms::render(&shipped("US$5", "SF1")).unwrap();
        let body = Sms::build_request(&message, "13800138000", &provider_config())
            .unwrap()
            .remove(0)
            .body;
        let body = String::from_utf8(body).unwrap();
        assert!(!body.contains('$') && body.contains(r"US\u0024"), "{body}");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["TemplateParam"], json!(r#"{"name":"US$5","tracking":"SF1"}"#));
    }

    #[test]
    fn free_text_request_is_a_percent_encoded_form() {
        let message = free_text("Hi {{ contact.company }}: 50% off & more, café!").unwrap();
        let requests = Sms::build_request(&message, "+1 (555) 123-4567", &free_text_config()).unwrap();
        let request = &requests[0];
        assert_eq!(request.url, "https://api.sms.example.com/Messages.json");
        assert_eq!(
            request.headers,
            vec![
                (
                    "Content-Type".to_string(),
                    "application/x-www-form-urlencoded".to_string()
                ),
                ("Authorization".to_string(), "Basic ${secret:SMS_BASIC}".to_string()),
            ]
        );
        assert_eq!(
            String::from_utf8(request.body.clone()).unwrap(),
            "To=%2B15551234567&From=%2B15550000000&Body=Hi+Acme%3A+50%25+off+%26+more%2C+caf%C3%A9%21+Reply+STOP+to+opt+out"
        );

        let mut no_sender = free_text_config();
        no_sender.as_object_mut().unwrap().remove("from");
        no_sender.as_object_mut().unwrap().remove("auth_header");
        let request = Sms::build_request(&message, "15551234567", &no_sender)
            .unwrap()
            .remove(0);
        assert!(request.body.starts_with(b"To=15551234567&Body=Hi+Acme"));
        assert_eq!(request.headers.len(), 1, "no Authorization header without auth_header");
    }

    #[test]
    fn the_recipient_must_look_like_a_phone_number() {
        let message = free_text("hi").unwrap();
        for bad in [
            "",
            "li@example.com",
            "12345",
            "+1234567890123456",
            "+86 138 0013 800a",
            "++8613800138000",
        ] {
            let error = Sms::build_request(&message, bad, &free_text_config()).unwrap_err();
            assert!(
                error.message.contains("is not a phone number"),
                "{bad}: {}",
                error.message
            );
        }
        for good in ["123456", "+123456789012345", "138-0013-8000"] {
            assert!(
                Sms::build_request(&message, good, &free_text_config()).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn a_message_rendered_in_the_other_mode_is_not_sent() {
        let message = free_text("hi").unwrap();
        let error = Sms::build_request(&message, "13800138000", &provider_config()).unwrap_err();
        assert!(
            error.message.contains("rendered in free_text mode"),
            "{}",
            error.message
        );
    }

    #[test]
    fn provider_answers_are_read_from_the_code_in_the_body() {
        let ok = r#"{"Message":"OK","RequestId":"F655A8D5","Code":"OK","BizId":"900619746936498440^0"}"#;
        assert_eq!(outcome(200, ok), ("sent", "900619746936498440^0".to_string()));
        assert_eq!(outcome(200, r#"{"Code":"OK"}"#), ("sent", "OK".to_string()));
        let limited = r#"{"Message":"触发分钟级流控Permits:1","Code":"isv.BUSINESS_LIMIT_CONTROL"}"#;
        assert_eq!(
            outcome(200, limited),
            (
                "retry",
                "isv.BUSINESS_LIMIT_CONTROL: 触发分钟级流控Permits:1".to_string()
            )
        );
        assert_eq!(
            outcome(400, r#"{"Code":"Throttling.User","Message":"Request was denied"}"#).0,
            "retry"
        );
        assert_eq!(outcome(503, r#"{"Code":"ServiceUnavailable"}"#).0, "retry");
        let illegal = r#"{"Message":"非法手机号","Code":"isv.MOBILE_NUMBER_ILLEGAL"}"#;
        assert_eq!(
            outcome(200, illegal),
            ("failed", "isv.MOBILE_NUMBER_ILLEGAL: 非法手机号".to_string())
        );
        assert_eq!(
            outcome(
                200,
                r#"{"Code":"OK"}"#.replace("OK", "isv.SMS_TEMPLATE_ILLEGAL").as_str()
            )
            .0,
            "failed"
        );
    }

    #[test]
    fn free_text_answers_are_read_from_the_status() {
        assert_eq!(
            outcome(201, r#"{"sid":"SM123","status":"queued"}"#),
            ("sent", "SM123".to_string())
        );
        assert_eq!(outcome(202, ""), ("sent", "HTTP 202".to_string()));
        assert_eq!(
            outcome(429, r#"{"code":20429,"message":"Too Many Requests"}"#).0,
            "retry"
        );
        assert_eq!(outcome(502, "Bad Gateway").0, "retry");
        let invalid = r#"{"code":21211,"message":"The 'To' number is not a valid phone number.","status":400}"#;
        assert_eq!(
            outcome(400, invalid),
            (
                "failed",
                "HTTP 400: 21211: The 'To' number is not a valid phone number.".into()
            )
        );
        assert_eq!(
            outcome(401, "<html>denied</html>"),
            ("failed", "HTTP 401: <html>denied</html>".to_string())
        );
    }

    // --- config ---

    #[test]
    fn a_missing_config_loads_and_a_complete_one_validates() {
        assert!(Sms::validate_config(&json!({})).is_ok());
        assert!(Sms::validate_config(&provider_config()).is_ok());
        assert!(Sms::validate_config(&free_text_config()).is_ok());
    }

    #[test]
    fn config_errors_say_what_to_fix() {
        let error_with = |change: &dyn Fn(&mut Value), base: Value| {
            let mut config = base;
            change(&mut config);
            Sms::validate_config(&config).expect_err("the config should be refused")
        };
        let provider = |change: &dyn Fn(&mut Value)| error_with(change, provider_config());
        let free = |change: &dyn Fn(&mut Value)| error_with(change, free_text_config());
        let remove = |key: &'static str| move |c: &mut Value| _ = c.as_object_mut().map(|t| t.remove(key));

        assert!(provider(&remove("mode")).contains("`mode` is missing: set mode = \"provider_template\""));
        assert!(provider(&|c| c["mode"] = json!("template")).contains("mode = \"template\" is not a mode"));
        assert!(provider(&remove("endpoint")).contains("`endpoint` is missing"));
        assert!(provider(&|c| c["endpoint"] = json!("sms.example.com")).contains("not an http:// or https:// URL"));
        assert!(provider(&remove("signature")).contains("`signature` is missing"));
        assert!(provider(&|c| c["signature"] = json!("【公司名】")).contains("the plugin adds the 【】"));
        assert!(provider(&remove("templates")).contains("`templates` is missing"));
        assert!(provider(&|c| c["templates"] = json!({})).contains("`templates` is empty"));
        assert!(
            provider(&|c| c["templates"]["SMS_001"]["kind"] = json!("promo"))
                .contains("templates.SMS_001: kind = \"promo\"")
        );
        assert!(
            provider(&|c| _ = c["templates"]["SMS_001"].as_object_mut().map(|t| t.remove("kind")))
                .contains("`kind` is missing")
        );
        assert!(provider(&|c| c["templates"]["SMS_001"]["text"] = json!("您好${name")).contains("without its closing"));
        assert!(
            provider(&|c| c["templates"]["SMS_001"]["text"] = json!("您好${姓名}"))
                .contains("placeholder names are ASCII")
        );
        assert!(
            provider(&|c| c["templates"]["SMS_001"]["max_param_len"] = json!("35"))
                .contains("`max_param_len` must be a positive integer")
        );
        assert!(provider(&|c| c["templates"]["SMS_001"]["max_len"] = json!(20)).contains("unknown key `max_len`"));
        assert!(
            provider(&|c| c["max_segments"] = json!(2))
                .contains("`max_segments` has no effect with mode = \"provider_template\"")
        );
        assert!(provider(&|c| c["sender"] = json!("x")).contains("unknown key `sender`"));
        assert!(provider(&|c| c["auth_header"] = json!(42)).contains("`auth_header` must be a string"));

        assert!(free(&|c| c["max_segments"] = json!(0)).contains("`max_segments` must be a positive integer"));
        assert!(
            free(&|c| c["templates"] = json!({"A": {}}))
                .contains("`templates` has no effect with mode = \"free_text\"")
        );
        assert!(free(&|c| c["opt_out"] = json!(" ")).contains("`opt_out` is empty"));
        assert!(
            Sms::validate_config(&json!("sms"))
                .unwrap_err()
                .contains("must be a table")
        );
    }

    #[test]
    fn info_names_the_sms_channel() {
        let info = Sms::info();
        assert_eq!((info.name.as_str(), info.channels), ("sms", vec!["sms".to_string()]));
    }
}
