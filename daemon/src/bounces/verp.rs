//! The return path that names its message (VERP): each email's envelope sender
//! is `<local_part>+<outbox id>-<tag>@<domain>`, so a bounce that arrives days
//! later is addressed to exactly the message that caused it, whatever the
//! remote server wrote (or failed to write) in its report. The tag is a MAC:
//! a forged bounce cannot suppress an address it did not receive mail for.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::BouncesConfig;

/// Hex digits of the MAC kept in the address: 64 bits, short enough for the
/// 64-character limit of a local part.
const TAG_HEX: usize = 16;

#[derive(Clone)]
pub(crate) struct ReturnPath {
    key: Vec<u8>,
    local_part: String,
    domain: String,
}

impl ReturnPath {
    pub(crate) fn new(config: &BouncesConfig, key: Vec<u8>) -> ReturnPath {
        ReturnPath {
            key,
            local_part: config.local_part.get_ref().to_ascii_lowercase(),
            domain: config.return_path_domain.get_ref().trim().to_ascii_lowercase(),
        }
    }

    /// The envelope sender of outbox row `outbox_id`.
    pub(crate) fn address(&self, outbox_id: i64) -> String {
        format!(
            "{}+{outbox_id}-{}@{}",
            self.local_part,
            self.tag(outbox_id),
            self.domain
        )
    }

    /// The outbox row an address returned to names; None for any other address,
    /// a forged or altered one included. Case is ignored: some servers fold it.
    pub(crate) fn outbox_id(&self, address: &str) -> Option<i64> {
        let address = address
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_ascii_lowercase();
        let (local, domain) = address.rsplit_once('@')?;
        if domain != self.domain {
            return None;
        }
        let token = local.strip_prefix(&self.local_part)?.strip_prefix('+')?;
        let (id, tag) = token.split_once('-')?;
        let id: i64 = id.parse().ok()?;
        let expected = self.tag(id);
        // Constant time, so the tag cannot be found byte by byte.
        let same = tag.len() == expected.len()
            && tag.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        same.then_some(id)
    }

    fn tag(&self, outbox_id: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"nudge-bounce:");
        mac.update(outbox_id.to_string().as_bytes());
        let bytes = mac.finalize().into_bytes();
        bytes.iter().take(TAG_HEX / 2).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn return_path(key: &str) -> ReturnPath {
        let config = BouncesConfig {
            return_path_domain: toml::Spanned::new(0..0, "Bounces.Example.com".into()),
            local_part: toml::Spanned::new(0..0, "bounce".into()),
            maildir: "unused".into(),
        };
        ReturnPath::new(&config, key.as_bytes().to_vec())
    }

    #[test]
    fn an_address_names_its_outbox_row_and_nothing_else() {
        let rp = return_path("key one");
        let address = rp.address(4711);
        assert!(address.starts_with("bounce+4711-"), "{address}");
        assert!(address.ends_with("@bounces.example.com"), "{address}");
        assert!(address.split('@').next().is_some_and(|local| local.len() <= 64));
        assert_eq!(rp.outbox_id(&address), Some(4711));
        assert_eq!(rp.outbox_id(&format!("<{}>", address.to_uppercase())), Some(4711));
        // Another row's number with this tag, another key, another domain, junk: refused.
        assert_eq!(rp.outbox_id(&address.replace("4711-", "4712-")), None);
        assert_eq!(return_path("key two").outbox_id(&address), None);
        assert_eq!(rp.outbox_id(&address.replace("example.com", "example.org")), None);
        let at = address.find('@').unwrap();
        let other = if &address[at - 1..at] == "0" { "1" } else { "0" };
        let tag_flipped = format!("{}{other}{}", &address[..at - 1], &address[at..]);
        assert_eq!(rp.outbox_id(&tag_flipped), None);
        for junk in [
            "",
            "bounce@bounces.example.com",
            "bounce+x-y@bounces.example.com",
            "sales@example.com",
        ] {
            assert_eq!(rp.outbox_id(junk), None, "{junk}");
        }
    }
}
