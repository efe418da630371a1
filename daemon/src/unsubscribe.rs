//! Unsubscribe links: an opaque token per contact, signed with HMAC-SHA256 so
//! that nobody can unsubscribe someone else by guessing or editing a link.
//! The token is `base64url(contact id || first 16 bytes of the MAC)`.
//!
//! The same key signs the open and click tracking links (`tracking.rs`), each
//! kind under a purpose of its own so that no token passes for another kind.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Config;
use crate::store::{self, Store};

type HmacSha256 = Hmac<Sha256>;

const MAC_LEN: usize = 16;

/// Makes and checks unsubscribe links.
#[derive(Clone)]
pub struct Unsubscribe {
    key: Vec<u8>,
    base_url: String,
    mailto: String,
}

impl Unsubscribe {
    /// From `[unsubscribe]`: the key from the environment if set, else one the
    /// daemon generated once and keeps in the database.
    pub(crate) async fn from_config(config: &Config, store: &Store) -> anyhow::Result<Unsubscribe> {
        let key = match std::env::var(&config.unsubscribe.secret_env) {
            Ok(secret) if !secret.is_empty() => secret.into_bytes(),
            _ => store.secret("unsubscribe").await?,
        };
        let base_url = config.public_base_url();
        let mailto = config
            .unsubscribe
            .mailto
            .clone()
            .unwrap_or_else(|| format!("unsubscribe@{}", config.message_id_domain()));
        Ok(Unsubscribe::new(key, base_url, mailto))
    }

    pub fn new(key: Vec<u8>, base_url: String, mailto: String) -> Unsubscribe {
        Unsubscribe {
            key,
            base_url: base_url.trim_end_matches('/').to_string(),
            mailto,
        }
    }

    /// The MAC of `payload` for `purpose`; for `unsubscribe` it is the MAC that
    /// tokens in mail already sent carry, so changing this breaks their links.
    fn mac(&self, purpose: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"nudge-");
        mac.update(purpose.as_bytes());
        mac.update(b":");
        mac.update(payload);
        mac
    }

    /// `base64url(payload || truncated MAC)`: a token that carries its payload.
    pub(crate) fn seal(&self, purpose: &str, payload: &[u8]) -> String {
        let tag = self.mac(purpose, payload).finalize().into_bytes();
        let mut bytes = payload.to_vec();
        bytes.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The payload of a token sealed for `purpose`; `None` for anything forged or altered.
    pub(crate) fn open(&self, purpose: &str, token: &str) -> Option<Vec<u8>> {
        let mut bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        let split = bytes.len().checked_sub(MAC_LEN)?;
        // Constant-time comparison of the truncated tag.
        self.mac(purpose, &bytes[..split])
            .verify_truncated_left(&bytes[split..])
            .ok()?;
        bytes.truncate(split);
        Some(bytes)
    }

    /// A token for the contact, naming the message it is in (its run and
    /// step) so that the contact's history can say which mail they answered.
    pub(crate) fn token(&self, contact_id: i64, message: Option<MessageRef>) -> String {
        let mut payload = contact_id.to_be_bytes().to_vec();
        if let Some(m) = message {
            payload.extend_from_slice(&m.run_id.to_be_bytes());
            payload.extend_from_slice(&m.step.to_be_bytes());
        }
        self.seal("unsubscribe", &payload)
    }

    /// The contact a token was made for, and the message it came in if it
    /// names one (tokens of mail sent before did not); `None` for anything
    /// forged or altered.
    pub(crate) fn verify(&self, token: &str) -> Option<(i64, Option<MessageRef>)> {
        let payload = self.open("unsubscribe", token)?;
        let word = |i: usize| Some(i64::from_be_bytes(payload.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        match payload.len() {
            8 => Some((word(0)?, None)),
            24 => Some((
                word(0)?,
                Some(MessageRef {
                    run_id: word(1)?,
                    step: word(2)?,
                }),
            )),
            _ => None,
        }
    }

    /// Where recipients reach this daemon (no trailing slash).
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The links a marketing email to this contact carries.
    pub(crate) fn links(&self, contact_id: i64, message: Option<MessageRef>) -> store::Unsubscribe {
        let token = self.token(contact_id, message);
        store::Unsubscribe {
            https: format!("{}/unsubscribe/{token}", self.base_url),
            mailto: format!("mailto:{}?subject=unsubscribe%20{token}", self.mailto),
        }
    }
}

/// The message an unsubscribe link is in: the run and step that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageRef {
    pub(crate) run_id: i64,
    pub(crate) step: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(key: &str) -> Unsubscribe {
        Unsubscribe::new(key.into(), "https://n.example/".into(), "u@n.example".into())
    }

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let s = signer("key one");
        let token = s.token(42, None);
        assert_eq!(s.verify(&token), Some((42, None)));
        let message = MessageRef { run_id: 7, step: 2 };
        let named = s.token(42, Some(message));
        assert_eq!(s.verify(&named), Some((42, Some(message))));
        assert_eq!(
            s.verify(&s.seal("unsubscribe", &[0; 16])),
            None,
            "a payload of no known length"
        );
        // Another key, another contact id with the same tag, a flipped bit, junk: all refused.
        assert_eq!(signer("key two").verify(&token), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[7] = 43;
        assert_eq!(s.verify(&URL_SAFE_NO_PAD.encode(&bytes)), None);
        bytes[7] = 42;
        bytes[20] ^= 1;
        assert_eq!(s.verify(&URL_SAFE_NO_PAD.encode(&bytes)), None);
        assert_eq!(s.verify("not-a-token"), None);
        assert_eq!(s.verify(""), None);
        assert_eq!(
            s.links(42, None).https,
            format!("https://n.example/unsubscribe/{token}")
        );
        // A token of another purpose over the same bytes does not pass.
        assert_eq!(s.verify(&s.seal("open", &42i64.to_be_bytes())), None);
    }

    #[test]
    fn tokens_of_mail_already_sent_still_verify() {
        // Made by the first release's token(): its MAC was over "nudge-unsubscribe:" || id.
        let mut mac = HmacSha256::new_from_slice(b"key one").unwrap();
        mac.update(b"nudge-unsubscribe:");
        mac.update(&42i64.to_be_bytes());
        let mut bytes = 42i64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        assert_eq!(
            signer("key one").verify(&URL_SAFE_NO_PAD.encode(bytes)),
            Some((42, None))
        );
    }
}
