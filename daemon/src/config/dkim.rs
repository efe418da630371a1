//! DKIM keys, one per From domain (`[email.dkim."example.com"]`): read and
//! checked once at start, so that a domain the admin set up to sign is never
//! sent unsigned because its key went missing or was wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm, DkimSigningKey,
};
use lettre::message::header::HeaderName;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;

/// The smallest RSA key receivers still trust (RFC 8301 §3.2 asks for at least 1024
/// bits and recommends 2048; the large mailbox providers treat less as unsigned).
const MIN_RSA_BITS: usize = 2048;

/// What a signature covers when `headers` is not set: the headers a reader sees
/// and the ones a forged copy would change, List-Unsubscribe-Post included,
/// which RFC 8058 §4 requires to be signed for one-click unsubscribe.
const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// One From domain's signing settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DkimDomain {
    /// The DNS name of the public key: `<selector>._domainkey.<domain>`.
    pub(crate) selector: String,
    /// PEM file with the private key (relative: to the folder of nudge.toml).
    pub(crate) key_file: Option<PathBuf>,
    /// Or the name of an environment variable holding the PEM.
    pub(crate) key_env: Option<String>,
    /// Inferred from the key when not given.
    pub(crate) algorithm: Option<DkimAlgorithm>,
    /// The headers to sign, instead of DEFAULT_HEADERS.
    pub(crate) headers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum DkimAlgorithm {
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

/// The signers of every configured domain, by lower-case domain; the first
/// problem found is an error that names the setting and what to do.
pub(crate) fn signers(
    file: Option<&Path>,
    domains: &BTreeMap<String, DkimDomain>,
) -> anyhow::Result<BTreeMap<String, DkimConfig>> {
    let file = file.map_or_else(|| "nudge.toml".to_string(), |f| f.display().to_string());
    let mut signers = BTreeMap::new();
    for (domain, settings) in domains {
        let setting = format!("{file}: [email.dkim.\"{domain}\"]");
        let signer = settings.signer(domain).map_err(|e| anyhow::anyhow!("{setting} {e}"))?;
        signers.insert(domain.to_ascii_lowercase(), signer);
    }
    Ok(signers)
}

impl DkimDomain {
    fn signer(&self, domain: &str) -> Result<DkimConfig, String> {
        if self.selector.is_empty()
            || !self
                .selector
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "selector = {:?}: give the DNS label the public key is published under, e.g. \"nudge\" for nudge._domainkey.{domain}",
                self.selector
            ));
        }
        let pem = self.pem()?;
        let (algorithm, key) = read_key(&pem, self.algorithm).map_err(|e| format!("{}: {e}", self.key_setting()))?;
        let key = DkimSigningKey::new(&key, algorithm).map_err(|e| format!("{}: {e}", self.key_setting()))?;
        let names = match &self.headers {
            Some(names) => names.iter().map(String::as_str).collect(),
            None => DEFAULT_HEADERS.to_vec(),
        };
        let mut headers = Vec::new();
        for name in names {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(format!("headers: {name:?} is not a header name"));
            }
            headers.push(HeaderName::new_from_ascii(name.to_string()).map_err(|e| format!("headers: {name:?}: {e}"))?);
        }
        if !headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
            return Err("headers: list \"From\": RFC 6376 §5.4 requires every signature to cover it".into());
        }
        let relaxed = DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        };
        Ok(DkimConfig::new(
            self.selector.clone(),
            domain.to_string(),
            key,
            headers,
            relaxed,
        ))
    }

    fn key_setting(&self) -> String {
        match (&self.key_file, &self.key_env) {
            (Some(file), _) => format!("key_file = {:?}", file.display().to_string()),
            (None, Some(var)) => format!("key_env = {var:?}"),
            (None, None) => "key".into(),
        }
    }

    /// The PEM text, from the file or the environment.
    fn pem(&self) -> Result<String, String> {
        const MAKE: &str = "make one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dkim.pem` \
                            (or `-algorithm ed25519`)";
        match (&self.key_file, &self.key_env) {
            (Some(_), Some(_)) => Err("sets both key_file and key_env: keep the one that holds the key".into()),
            (None, None) => Err(format!(
                "has no key: set key_file to a PEM file or key_env to a variable holding the PEM; {MAKE}"
            )),
            (Some(file), None) => std::fs::read_to_string(file).map_err(|e| {
                format!(
                    "{}: cannot read {} ({e}): fix the path or {MAKE}",
                    self.key_setting(),
                    file.display()
                )
            }),
            (None, Some(var)) => match std::env::var(var) {
                Ok(pem) if !pem.trim().is_empty() => Ok(pem),
                _ => Err(format!(
                    "{}: ${var} holds no key: export the PEM text in it",
                    self.key_setting()
                )),
            },
        }
    }
}

/// The algorithm of a PEM private key and the key as lettre takes it: PKCS#1 PEM
/// for RSA, the base64 of the 32-byte seed for Ed25519.
fn read_key(pem: &str, wanted: Option<DkimAlgorithm>) -> Result<(DkimSigningAlgorithm, String), String> {
    let rsa = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
        .ok()
        .or_else(|| rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(pem).ok());
    let ed25519 = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).ok();
    match (rsa, ed25519, wanted) {
        (Some(key), _, None | Some(DkimAlgorithm::RsaSha256)) => {
            let bits = key.size() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "an RSA key of {bits} bits is too short: receivers want {MIN_RSA_BITS} bits or more; make a new key \
                     with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` and publish its public key"
                ));
            }
            key.validate().map_err(|e| format!("the RSA key is not valid: {e}"))?;
            let pem = key
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| format!("the RSA key cannot be used: {e}"))?;
            Ok((DkimSigningAlgorithm::Rsa, pem.to_string()))
        }
        (_, Some(key), None | Some(DkimAlgorithm::Ed25519Sha256)) => {
            use base64::Engine as _;
            Ok((
                DkimSigningAlgorithm::Ed25519,
                base64::engine::general_purpose::STANDARD.encode(key.to_bytes()),
            ))
        }
        (Some(_), _, Some(DkimAlgorithm::Ed25519Sha256)) => Err(
            "is an RSA key but algorithm = \"ed25519-sha256\": give an Ed25519 key or set algorithm = \"rsa-sha256\""
                .into(),
        ),
        (_, Some(_), Some(DkimAlgorithm::RsaSha256)) => Err(
            "is an Ed25519 key but algorithm = \"rsa-sha256\": give an RSA key or set algorithm = \"ed25519-sha256\""
                .into(),
        ),
        (None, None, _) => Err(
            "is not an RSA or Ed25519 private key in PEM (\"BEGIN PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\"): \
             give the private key, not the public one"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/keys")
    }

    fn domain(key: &str, algorithm: Option<DkimAlgorithm>) -> DkimDomain {
        DkimDomain {
            selector: "nudge".into(),
            key_file: Some(keys().join(key)),
            key_env: None,
            algorithm,
            headers: None,
        }
    }

    fn error(settings: DkimDomain) -> String {
        let domains = BTreeMap::from([("nudge.test".to_string(), settings)]);
        signers(Some(Path::new("nudge.toml")), &domains)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn rsa_and_ed25519_keys_load_with_their_algorithm_inferred() {
        for key in ["rsa2048.pem", "rsa2048-pkcs1.pem", "ed25519.pem"] {
            let domains = BTreeMap::from([("Nudge.Test".to_string(), domain(key, None))]);
            let signers = signers(None, &domains).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(signers.contains_key("nudge.test"), "{key}");
        }
    }

    #[test]
    fn a_short_rsa_key_is_refused_with_what_to_do() {
        let err = error(domain("rsa1024.pem", None));
        assert!(err.contains("[email.dkim.\"nudge.test\"] key_file"), "{err}");
        assert!(
            err.contains("1024 bits is too short") && err.contains("openssl genpkey"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_a_public_key_and_a_wrong_algorithm_are_refused() {
        let err = error(domain("missing.pem", None));
        assert!(err.contains("cannot read") && err.contains("missing.pem"), "{err}");
        let err = error(domain("rsa2048.pub.pem", None));
        assert!(err.contains("not the public one"), "{err}");
        let err = error(domain("ed25519.pem", Some(DkimAlgorithm::RsaSha256)));
        assert!(
            err.contains("is an Ed25519 key but algorithm = \"rsa-sha256\""),
            "{err}"
        );
    }

    #[test]
    fn a_key_from_an_unset_variable_and_a_signature_without_from_are_refused() {
        let mut settings = domain("rsa2048.pem", None);
        settings.key_file = None;
        settings.key_env = Some("NUDGE_TEST_DKIM_KEY_THAT_IS_NOT_SET".into());
        let err = error(settings);
        assert!(
            err.contains("key_env = \"NUDGE_TEST_DKIM_KEY_THAT_IS_NOT_SET\"") && err.contains("holds no key"),
            "{err}"
        );
        let mut settings = domain("rsa2048.pem", None);
        settings.headers = Some(vec!["Subject".into()]);
        assert!(error(settings).contains("list \"From\""));
    }

    #[test]
    fn both_algorithms_sign_relaxed_over_the_one_click_unsubscribe_headers() {
        use lettre::message::header::HeaderValue;
        for (key, algorithm) in [("rsa2048.pem", "rsa-sha256"), ("ed25519.pem", "ed25519-sha256")] {
            let domains = BTreeMap::from([("nudge.test".to_string(), domain(key, None))]);
            let signer = &signers(None, &domains).unwrap()["nudge.test"];
            let mut message = lettre::Message::builder()
                .from("sales@nudge.test".parse().unwrap())
                .to("li@example.com".parse().unwrap())
                .subject("News")
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ))
                .body("Hello".to_string())
                .unwrap();
            message.sign(signer);
            let wire = String::from_utf8(message.formatted()).unwrap().replace("\r\n ", " ");
            let signature = wire.lines().find(|l| l.starts_with("DKIM-Signature:")).expect(key);
            assert!(
                signature.contains(&format!("a={algorithm}; d=nudge.test; s=nudge; c=relaxed/relaxed;")),
                "{signature}"
            );
            assert!(
                signature.contains(":list-unsubscribe:list-unsubscribe-post;"),
                "{signature}"
            );
        }
    }
}
