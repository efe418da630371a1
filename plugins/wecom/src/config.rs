//! The `[plugin.wecom]` table from nudge.toml.

use nudge_plugin_sdk::Value;

pub const DEFAULT_WEBHOOK_URL: &str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send";
const KNOWN_KEYS: &[&str] = &["webhook_url", "key", "mentioned_mobile_list"];

/// The plugin's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeComConfig {
    pub webhook_url: String,
    /// Normally `${secret:NAME}`; the host fills it in when it sends.
    pub key: String,
    /// Mobile numbers (or "@all") to mention in text messages.
    pub mentioned_mobiles: Vec<String>,
}

impl WeComConfig {
    /// Reads and checks the config; the error says what to change in nudge.toml.
    pub fn from_value(config: &Value) -> Result<WeComConfig, String> {
        let Some(table) = config.as_object() else {
            return Err("the wecom config must be a table: [plugin.wecom] in nudge.toml".into());
        };
        if let Some(unknown) = table.keys().find(|key| !KNOWN_KEYS.contains(&key.as_str())) {
            return Err(format!(
                "[plugin.wecom] has unknown key `{unknown}`; known keys: {}",
                KNOWN_KEYS.join(", ")
            ));
        }
        Ok(WeComConfig {
            webhook_url: webhook_url(table.get("webhook_url"))?,
            key: key(table.get("key"))?,
            mentioned_mobiles: mentioned_mobiles(table.get("mentioned_mobile_list"))?,
        })
    }

    /// The URL every message is POSTed to. The key is copied as written: a
    /// `${secret:...}` placeholder must reach the host intact for it to fill in.
    pub fn send_url(&self) -> String {
        format!("{}?key={}", self.webhook_url, self.key)
    }
}

fn webhook_url(value: Option<&Value>) -> Result<String, String> {
    let Some(value) = value else {
        return Ok(DEFAULT_WEBHOOK_URL.into());
    };
    let url = value
        .as_str()
        .ok_or_else(|| format!("`webhook_url` must be a string such as \"{DEFAULT_WEBHOOK_URL}\""))?;
    let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    if host.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
        return Err(format!(
            "`webhook_url` must be an http:// or https:// URL such as \"{DEFAULT_WEBHOOK_URL}\", not \"{url}\""
        ));
    }
    if url.contains(['?', '#']) || url.contains(char::is_whitespace) {
        // Most often the robot's full webhook URL pasted in, key and all: the key
        // is a secret and belongs in `key`.
        return Err(format!(
            "`webhook_url` must be the address without a query, fragment or spaces, such as \"{DEFAULT_WEBHOOK_URL}\"; \
             put the robot's key in `key` as \"${{secret:WECOM_KEY}}\""
        ));
    }
    Ok(url.into())
}

fn key(value: Option<&Value>) -> Result<String, String> {
    const HOW: &str = "set it to \"${secret:WECOM_KEY}\" and put the robot's key (the `key=` part of its webhook \
                       address) in the daemon's WECOM_KEY environment variable";
    let Some(value) = value else {
        return Err(format!("[plugin.wecom] needs `key`: {HOW}"));
    };
    let key = value.as_str().ok_or_else(|| format!("`key` must be a string: {HOW}"))?;
    if key.trim().is_empty() {
        return Err(format!("`key` is empty: {HOW}"));
    }
    // The key goes into the URL's query as it is, so these would change the URL's meaning.
    if let Some(bad) = key
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '&' | '#' | '?' | '/'))
    {
        return Err(format!(
            "`key` contains {bad:?}, which does not belong in a webhook key: {HOW}"
        ));
    }
    Ok(key.into())
}

fn mentioned_mobiles(value: Option<&Value>) -> Result<Vec<String>, String> {
    const EXAMPLE: &str = "[\"13800001111\", \"@all\"]";
    let Some(value) = value else { return Ok(Vec::new()) };
    let entries = value
        .as_array()
        .ok_or_else(|| format!("`mentioned_mobile_list` must be a list such as {EXAMPLE}"))?;
    entries
        .iter()
        .map(|entry| match entry.as_str() {
            Some("@all") => Ok("@all".to_string()),
            Some(text) => mobile_number(text).ok_or_else(|| {
                format!("`mentioned_mobile_list` entry \"{text}\" is not a mobile number or \"@all\" (e.g. {EXAMPLE})")
            }),
            None => Err(format!(
                "`mentioned_mobile_list` entries must be strings such as {EXAMPLE}, not {entry}"
            )),
        })
        .collect()
}

/// `text` as a mobile number (spaces and dashes removed), if it looks like one:
/// an optional `+` and 6 to 15 digits, the most a phone number has.
pub fn mobile_number(text: &str) -> Option<String> {
    let compact: String = text.trim().chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let digits = compact.strip_prefix('+').unwrap_or(&compact);
    let plausible = (6..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit());
    plausible.then_some(compact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nudge_plugin_sdk::json;

    fn error(config: Value) -> String {
        WeComConfig::from_value(&config).unwrap_err()
    }

    #[test]
    fn only_the_key_is_needed() {
        let config = WeComConfig::from_value(&json!({"key": "${secret:WECOM_KEY}"})).unwrap();
        assert_eq!(config.webhook_url, DEFAULT_WEBHOOK_URL);
        assert_eq!(
            config.send_url(),
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=${secret:WECOM_KEY}"
        );
        assert!(config.mentioned_mobiles.is_empty());
    }

    #[test]
    fn a_missing_or_empty_key_says_how_to_set_it() {
        for config in [json!({}), json!({"key": ""}), json!({"key": 42})] {
            let message = error(config);
            assert!(
                message.contains("`key`") && message.contains("${secret:WECOM_KEY}"),
                "{message}"
            );
        }
        assert!(error(json!({"key": "a&b=c"})).contains("'&'"));
    }

    #[test]
    fn the_webhook_url_must_be_http_without_a_query() {
        for url in [
            "ftp://qyapi.weixin.qq.com/send",
            "qyapi.weixin.qq.com",
            "https://",
            "https:///path",
        ] {
            let message = error(json!({"key": "k", "webhook_url": url}));
            assert!(message.contains("http:// or https://"), "{url}: {message}");
        }
        let message =
            error(json!({"key": "${secret:K}", "webhook_url": format!("{DEFAULT_WEBHOOK_URL}?key=693a91f6")}));
        assert!(
            message.contains("without a query") && message.contains("`key`"),
            "{message}"
        );
        let local = WeComConfig::from_value(&json!({"key": "k", "webhook_url": "http://127.0.0.1:8080/send"})).unwrap();
        assert_eq!(local.send_url(), "http://127.0.0.1:8080/send?key=k");
    }

    #[test]
    fn mentions_must_be_mobile_numbers_or_all() {
        let config = json!({"key": "k", "mentioned_mobile_list": ["138-0000-1111", "@all"]});
        assert_eq!(
            WeComConfig::from_value(&config).unwrap().mentioned_mobiles,
            vec!["13800001111", "@all"]
        );
        assert!(error(json!({"key": "k", "mentioned_mobile_list": "13800001111"})).contains("must be a list"));
        assert!(error(json!({"key": "k", "mentioned_mobile_list": [13800001111u64]})).contains("must be strings"));
        assert!(error(json!({"key": "k", "mentioned_mobile_list": ["Li"]})).contains("\"Li\" is not a mobile number"));
    }

    #[test]
    fn unknown_keys_and_non_tables_are_refused() {
        assert!(error(json!({"key": "k", "webhook": "x"})).contains("unknown key `webhook`"));
        assert!(error(json!(["k"])).contains("must be a table"));
    }

    #[test]
    fn mobile_numbers() {
        assert_eq!(mobile_number("+86 138 0000 1111").as_deref(), Some("+8613800001111"));
        assert_eq!(mobile_number("13800001111").as_deref(), Some("13800001111"));
        for not_a_number in ["", "li@example.com", "12345", "1234567890123456", "+", "138x0000"] {
            assert_eq!(mobile_number(not_a_number), None, "{not_a_number}");
        }
    }
}
