//! DKIM signing (issue 35 item 1): every mail from a From domain with an
//! `[email.dkim]` key is signed over its final bytes, tracking and one-click
//! unsubscribe included (RFC 8058 §4 wants List-Unsubscribe-Post signed), and
//! checked here by dkimpy, an implementation independent of the daemon's, with
//! the public key given directly instead of looked up in DNS.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{Nudge, SmtpServer, python, repo_root, scratch};

/// Monday 10:00 UTC: outside the marketing quiet hours of the shipped sending.toml.
const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";

const PROMO: &str = r#"
[promo]
channel = "email"
subject = "Spring offers for {{ contact.name }}"
text = "Hello {{ contact.name }}, see https://shop.example/spring"
html = """<html><body><p>Hello {{ contact.name }}</p>
<p><a href="https://shop.example/spring">Spring offers</a>
<a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>"""
"#;

fn key(name: &str) -> PathBuf {
    repo_root().join("tests/keys").join(name)
}

/// A marketing workflow (tracked, with one-click unsubscribe) for contacts turning loyal.
fn install_promo(nudge: &Nudge) {
    nudge.write_workflow("templates/promo.toml", PROMO);
    nudge.write_workflow(
        "promo.toml",
        "category = \"marketing\"\n[trigger]\non = \"stage_changed\"\nto = \"loyal\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"promo\" }\n",
    );
}

/// dkimpy's verdict on `message` with `public_key`, and the signature's tags.
fn verify(dir: &Path, message: &[u8], public_key: &Path) -> Value {
    let file = dir.join("message.eml");
    std::fs::write(&file, message).unwrap();
    let out = Command::new(python())
        .arg(repo_root().join("tests/dkim_verify.py"))
        .arg(&file)
        .arg(public_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn signed_headers(verdict: &Value) -> Vec<String> {
    verdict["h"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_tracked_marketing_mail_is_signed_over_its_one_click_unsubscribe_and_tampering_breaks_it() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::with_config(
        &smtp,
        MONDAY_10AM,
        &format!(
            "[email.dkim.\"nudge.test\"]\nselector = \"s2026\"\nkey_file = {:?}\n",
            key("rsa2048.pem")
        ),
    );
    install_promo(&nudge);
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Lin",
        "--email",
        "lin@example.com",
        "--owner",
        "rep@corp.test",
    ]);
    nudge.start();
    assert!(
        nudge.log().contains("DKIM: mail from nudge.test is signed"),
        "{}",
        nudge.log()
    );
    nudge.cli(&["stage", "set", "lin@example.com", "loyal"]);
    let mail = smtp.wait_for("lin@example.com", "Spring offers");
    // What the signature must survive: the tracked link and pixel, the unsubscribe headers.
    assert!(
        !mail.html.contains("shop.example"),
        "the link is tracked: {}",
        mail.html
    );
    assert!(!mail.list_unsubscribe.is_empty() && !mail.list_unsubscribe_post.is_empty());

    let verdict = verify(tmp.path(), &mail.raw, &key("rsa2048.pub.pem"));
    assert_eq!(verdict["ok"], true, "{verdict}\n{}", String::from_utf8_lossy(&mail.raw));
    assert_eq!(verdict["a"], "rsa-sha256");
    assert_eq!(verdict["c"], "relaxed/relaxed");
    assert_eq!(
        (verdict["d"].as_str(), verdict["s"].as_str()),
        (Some("nudge.test"), Some("s2026"))
    );
    let signed = signed_headers(&verdict);
    for header in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(signed.iter().any(|h| h == header), "{header} not in h={signed:?}");
    }

    // One byte of the body changed (the recipient's name in the text): no longer valid.
    let at = mail.raw.windows(9).rposition(|w| w == b"Hello Lin").unwrap();
    let mut tampered = mail.raw.clone();
    tampered[at + 6] = b'K';
    assert_eq!(verify(tmp.path(), &tampered, &key("rsa2048.pub.pem"))["ok"], false);
    // Nor with another RSA key published than the one that signed.
    assert_eq!(verify(tmp.path(), &mail.raw, &key("rsa1024.pub.pem"))["ok"], false);
}

/// Lin turns loyal and gets the promo; the raw message as received.
fn promo_to_lin(nudge: &mut Nudge, smtp: &SmtpServer) -> Vec<u8> {
    install_promo(nudge);
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "Lin",
        "--email",
        "lin@example.com",
        "--owner",
        "rep@corp.test",
    ]);
    nudge.start();
    nudge.cli(&["stage", "set", "lin@example.com", "loyal"]);
    smtp.wait_for("lin@example.com", "Spring offers").raw
}

#[test]
fn an_ed25519_key_from_the_environment_signs() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::with_config(
        &smtp,
        MONDAY_10AM,
        "[email.dkim.\"nudge.test\"]\nselector = \"ed\"\nkey_env = \"NUDGE_TEST_DKIM_KEY\"\n",
    );
    nudge.env.push((
        "NUDGE_TEST_DKIM_KEY".into(),
        std::fs::read_to_string(key("ed25519.pem")).unwrap(),
    ));
    let raw = promo_to_lin(&mut nudge, &smtp);
    let verdict = verify(tmp.path(), &raw, &key("ed25519.pub.pem"));
    assert_eq!(verdict["ok"], true, "{verdict}\n{}", String::from_utf8_lossy(&raw));
    assert_eq!(verdict["a"], "ed25519-sha256");
    assert!(signed_headers(&verdict).contains(&"list-unsubscribe-post".to_string()));
}

#[test]
fn mail_from_a_domain_without_a_key_goes_unsigned_and_the_log_says_so() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::with_config(
        &smtp,
        MONDAY_10AM,
        &format!(
            "[email.dkim.\"other.test\"]\nselector = \"s\"\nkey_file = {:?}\n",
            key("rsa2048.pem")
        ),
    );
    let raw = promo_to_lin(&mut nudge, &smtp);
    assert!(
        nudge.log().contains("DKIM: mail from nudge.test goes unsigned"),
        "{}",
        nudge.log()
    );
    assert!(!String::from_utf8_lossy(&raw).contains("DKIM-Signature"));
}

#[test]
fn a_key_that_cannot_sign_stops_check_and_the_daemon_with_what_to_do() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::with_config(
        &smtp,
        MONDAY_10AM,
        &format!(
            "[email.dkim.\"nudge.test\"]\nselector = \"old\"\nkey_file = {:?}\n",
            key("rsa1024.pem")
        ),
    );
    let (ok, _, err) = nudge.try_cli(&["check"]);
    assert!(!ok);
    assert!(err.contains("[email.dkim.\"nudge.test\"] key_file"), "{err}");
    assert!(err.contains("1024 bits is too short"), "{err}");
    let (ok, _, err) = nudge.try_cli_or_hang(&["run"], "a daemon with an unusable DKIM key must not start");
    assert!(!ok);
    assert!(err.contains("1024 bits is too short"), "{err}");
    assert!(smtp.mails().is_empty());
}
