//! The `[plugin.sms]` table from nudge.toml, parsed into types once so that
//! render and build_request work from checked values, and an admin's mistake is
//! reported when the daemon loads the plugin, with what to fix.

use std::collections::BTreeMap;

use nudge_plugin_sdk::Value;

pub const PROVIDER_TEMPLATE: &str = "provider_template";
pub const FREE_TEXT: &str = "free_text";

/// What Chinese carriers require at the end of marketing SMS.
pub const DEFAULT_MARKETING_OPT_OUT: &str = "拒收请回复R";
/// Twilio-style providers honour STOP replies; saying so is what carriers expect.
pub const DEFAULT_FREE_TEXT_OPT_OUT: &str = "Reply STOP to opt out";
/// Aliyun's limit for one template variable.
pub const DEFAULT_MAX_PARAM_LEN: usize = 35;
pub const DEFAULT_MAX_SEGMENTS: usize = 3;

const KEYS: &[&str] = &[
    "mode",
    "endpoint",
    "auth_header",
    "opt_out",
    "signature",
    "templates",
    "max_segments",
    "from",
];
const PROVIDER_TEMPLATE_ONLY: &[&str] = &["signature", "templates"];
const FREE_TEXT_ONLY: &[&str] = &["max_segments", "from"];
const TEMPLATE_KEYS: &[&str] = &["text", "kind", "max_param_len"];

/// A configured SMS channel.
#[derive(Debug)]
pub struct Settings {
    pub mode: Mode,
    pub endpoint: String,
    /// Copied verbatim into an Authorization header; the host fills `${secret:NAME}`.
    pub auth_header: Option<String>,
}

#[derive(Debug)]
pub enum Mode {
    ProviderTemplate(ProviderTemplate),
    FreeText(FreeText),
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::ProviderTemplate(_) => PROVIDER_TEMPLATE,
            Mode::FreeText(_) => FREE_TEXT,
        }
    }
}

/// Aliyun / Tencent style: a signature and templates the provider approved.
#[derive(Debug)]
pub struct ProviderTemplate {
    pub signature: String,
    pub templates: BTreeMap<String, ApprovedTemplate>,
    pub opt_out: String,
}

/// Twilio style: any text, within a segment budget.
#[derive(Debug)]
pub struct FreeText {
    pub opt_out: String,
    pub max_segments: usize,
    pub from: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Notification,
    Marketing,
}

/// One approved template: its text with `${name}` placeholders.
#[derive(Debug)]
pub struct ApprovedTemplate {
    pub text: String,
    pub kind: Kind,
    pub max_param_len: usize,
    pieces: Vec<Piece>,
}

#[derive(Debug)]
enum Piece {
    Literal(String),
    Placeholder(String),
}

impl ApprovedTemplate {
    /// Placeholder names in order of first appearance, each once.
    pub fn placeholders(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for piece in &self.pieces {
            if let Piece::Placeholder(name) = piece
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        names
    }

    /// The approved text with each placeholder replaced by its parameter.
    pub fn fill(&self, params: &BTreeMap<String, String>) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Literal(text) => text.as_str(),
                Piece::Placeholder(name) => params.get(name).map(String::as_str).unwrap_or_default(),
            })
            .collect()
    }

    /// Carriers reject marketing SMS that do not end with the opt-out wording.
    pub fn check_opt_out(&self, code: &str, opt_out: &str) -> Result<(), String> {
        if self.kind == Kind::Marketing && !self.text.trim_end().ends_with(opt_out) {
            return Err(format!(
                "template {code} is a marketing template but its approved text does not end with the opt-out \
                 \"{opt_out}\"; providers reject marketing SMS without it: have a text ending with it approved, or \
                 set `opt_out` in [plugin.sms] to the wording your approved template uses"
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// The settings, or None when no `[plugin.sms]` table is configured: the
    /// plugin is built in, so a daemon without SMS must still load it.
    pub fn parse(config: &Value) -> Result<Option<Settings>, String> {
        let table = config.as_object().ok_or("[plugin.sms] must be a table")?;
        if table.is_empty() {
            return Ok(None);
        }
        if let Some(key) = table.keys().find(|key| !KEYS.contains(&key.as_str())) {
            return Err(format!("unknown key `{key}`; known keys: {}", KEYS.join(", ")));
        }
        let mode = match optional_string(config, "mode")? {
            Some(mode) => mode,
            None => {
                return Err(format!(
                    "`mode` is missing: set mode = \"{PROVIDER_TEMPLATE}\" (signature + approved templates, \
                     Aliyun/Tencent style) or \"{FREE_TEXT}\" (any text, Twilio style)"
                ));
            }
        };
        let (mode, other_mode_keys) = match mode {
            PROVIDER_TEMPLATE => (Mode::ProviderTemplate(parse_provider_template(config)?), FREE_TEXT_ONLY),
            FREE_TEXT => (Mode::FreeText(parse_free_text(config)?), PROVIDER_TEMPLATE_ONLY),
            other => {
                return Err(format!(
                    "mode = \"{other}\" is not a mode; use \"{PROVIDER_TEMPLATE}\" or \"{FREE_TEXT}\""
                ));
            }
        };
        // A key the mode ignores is most likely a misunderstanding worth fixing now.
        if let Some(key) = other_mode_keys.iter().find(|key| table.contains_key(**key)) {
            return Err(format!(
                "`{key}` has no effect with mode = \"{}\"; remove it or change the mode",
                mode.name()
            ));
        }
        let endpoint = optional_string(config, "endpoint")?.ok_or(
            "`endpoint` is missing: set it to the provider's send URL, \
             e.g. endpoint = \"https://sms.example.com/send\"",
        )?;
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(format!("endpoint = \"{endpoint}\" is not an http:// or https:// URL"));
        }
        let auth_header = optional_string(config, "auth_header")?.map(str::to_string);
        Ok(Some(Settings {
            mode,
            endpoint: endpoint.to_string(),
            auth_header,
        }))
    }

    /// Everything `parse` checks plus the opt-out of every marketing template,
    /// which render checks only for the template it is asked for.
    pub fn check_all_templates(&self) -> Result<(), String> {
        if let Mode::ProviderTemplate(provider) = &self.mode {
            for (code, template) in &provider.templates {
                template.check_opt_out(code, &provider.opt_out)?;
            }
        }
        Ok(())
    }
}

fn parse_provider_template(config: &Value) -> Result<ProviderTemplate, String> {
    let signature = optional_string(config, "signature")?
        .ok_or("`signature` is missing: set it to the approved signature text, e.g. signature = \"公司名\"")?;
    if signature.contains(['【', '】']) {
        return Err(format!(
            "signature = \"{signature}\" should be the text only; the plugin adds the 【】 around it"
        ));
    }
    let opt_out = optional_string(config, "opt_out")?
        .unwrap_or(DEFAULT_MARKETING_OPT_OUT)
        .to_string();
    let templates = match config.get("templates") {
        None => {
            return Err("`templates` is missing: list the approved templates by code, e.g. \
                 templates = { SMS_001 = { text = \"您好${name}\", kind = \"notification\" } }"
                .into());
        }
        Some(Value::Object(table)) if table.is_empty() => {
            return Err("`templates` is empty: list at least one approved template by its code".into());
        }
        Some(Value::Object(table)) => table,
        Some(_) => return Err("`templates` must be a table of approved templates by code".into()),
    };
    let mut parsed = BTreeMap::new();
    for (code, entry) in templates {
        let template = parse_template(entry).map_err(|e| format!("templates.{code}: {e}"))?;
        parsed.insert(code.clone(), template);
    }
    Ok(ProviderTemplate {
        signature: signature.to_string(),
        templates: parsed,
        opt_out,
    })
}

fn parse_template(entry: &Value) -> Result<ApprovedTemplate, String> {
    let table = entry
        .as_object()
        .ok_or("must be a table such as { text = \"...\", kind = \"notification\" }")?;
    if let Some(key) = table.keys().find(|key| !TEMPLATE_KEYS.contains(&key.as_str())) {
        return Err(format!(
            "unknown key `{key}`; a template takes: {}",
            TEMPLATE_KEYS.join(", ")
        ));
    }
    let text = optional_string(entry, "text")?.ok_or("`text` is missing: copy the approved template text here")?;
    let pieces = parse_pieces(text)?;
    let kind = match optional_string(entry, "kind")? {
        Some("notification") => Kind::Notification,
        Some("marketing") => Kind::Marketing,
        Some(other) => {
            return Err(format!(
                "kind = \"{other}\" is not a kind; use \"notification\" or \"marketing\""
            ));
        }
        None => return Err("`kind` is missing: set kind = \"notification\" or \"marketing\", as approved".into()),
    };
    let max_param_len = match entry.get("max_param_len") {
        None => DEFAULT_MAX_PARAM_LEN,
        Some(value) => positive_integer(value).ok_or("`max_param_len` must be a positive integer (characters)")?,
    };
    Ok(ApprovedTemplate {
        text: text.to_string(),
        kind,
        max_param_len,
        pieces,
    })
}

/// Splits an approved text into literals and `${name}` placeholders.
fn parse_pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Literal(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("`text` has a `${` without its closing `}`")?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`text` has the placeholder `${{{name}}}`; placeholder names are ASCII letters, digits and _"
            ));
        }
        pieces.push(Piece::Placeholder(name.to_string()));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.to_string()));
    }
    Ok(pieces)
}

fn parse_free_text(config: &Value) -> Result<FreeText, String> {
    let opt_out = optional_string(config, "opt_out")?
        .unwrap_or(DEFAULT_FREE_TEXT_OPT_OUT)
        .to_string();
    let max_segments = match config.get("max_segments") {
        None => DEFAULT_MAX_SEGMENTS,
        Some(value) => positive_integer(value).ok_or("`max_segments` must be a positive integer")?,
    };
    let from = optional_string(config, "from")?.map(str::to_string);
    Ok(FreeText {
        opt_out,
        max_segments,
        from,
    })
}

/// A string value that, when present, is not blank.
fn optional_string<'a>(table: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Err(format!("`{key}` is empty")),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn positive_integer(value: &Value) -> Option<usize> {
    value.as_u64().filter(|n| *n > 0).and_then(|n| usize::try_from(n).ok())
}
