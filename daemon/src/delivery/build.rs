//! The email message built from an outbox row: its headers (Message-ID,
//! List-Unsubscribe, ...) and its text and HTML parts, checked so that no value
//! smuggles in a header.

use std::time::{Duration, SystemTime};

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};

use crate::store::OutboxRow;

/// Header values must not smuggle in new headers.
fn check_header(name: &str, value: &str) -> anyhow::Result<()> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        anyhow::bail!("{name} contains a control character");
    }
    Ok(())
}

/// CRLF and bare CR become LF; lettre writes CRLF on the wire.
fn normalise(body: &str) -> String {
    body.replace("\r\n", "\n").replace('\r', "\n")
}

pub(super) fn build(from: &Mailbox, row: &OutboxRow, now_ms: i64) -> anyhow::Result<Message> {
    let m = &row.message.0;
    check_header("subject", &m.subject)?;
    check_header("recipient name", &m.to_name)?;
    let to = Mailbox::new(
        Some(m.to_name.clone()).filter(|n| !n.is_empty() && n != &m.to_address),
        m.to_address.parse()?,
    );
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&m.subject)
        .message_id(Some(row.message_id.clone()))
        .date(SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64));
    if let Some(unsubscribe) = &m.unsubscribe {
        // RFC 2369 + RFC 8058: mail clients show an unsubscribe button that POSTs to the https URL.
        let value = format!("<{}>, <{}>", unsubscribe.https, unsubscribe.mailto);
        check_header("List-Unsubscribe", &value)?;
        anyhow::ensure!(value.is_ascii(), "List-Unsubscribe must be ASCII");
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                value,
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
    }
    let part = match (&m.text, &m.html) {
        (Some(text), Some(html)) => MultiPart::alternative_plain_html(normalise(text), normalise(html)).formatted(),
        (None, Some(html)) => SinglePart::builder()
            .header(ContentType::TEXT_HTML)
            .body(normalise(html))
            .formatted(),
        (Some(text), None) => SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(normalise(text))
            .formatted(),
        (None, None) => anyhow::bail!("the message has no body"),
    };
    super::mime::with_body(builder, &part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OutboundMessage, Unsubscribe};

    fn row(subject: &str, to_name: &str, text: &str) -> OutboxRow {
        OutboxRow {
            id: 1,
            run_id: Some(1),
            workflow: Some("w".into()),
            contact_id: Some(1),
            idempotency_key: "run1-step0-contact1".into(),
            message_id: "<run1-step0-contact1@nudge.test>".into(),
            channel: "email".into(),
            recipient: "li@example.com".into(),
            message: sqlx::types::Json(OutboundMessage {
                to_name: to_name.into(),
                to_address: "li@example.com".into(),
                subject: subject.into(),
                text: Some(text.into()),
                html: None,
                extra: Vec::new(),
                unsubscribe: None,
            }),
            attempts: 0,
            suppressed: None,
            had_unknown: false,
            parts_done: 0,
            created_at: 0,
            category: "marketing".into(),
            throttled: 0,
            traceparent: None,
        }
    }

    fn from() -> Mailbox {
        "Sales <sales@nudge.test>".parse().unwrap()
    }

    #[test]
    fn header_injection_is_refused_before_lettre_sees_it() {
        for (subject, name) in [
            ("Hi\r\nBcc: victim@example.com", "Li"),
            ("Hi\nBcc: victim@example.com", "Li"),
            ("Hi\0", "Li"),
            ("Hi", "Li\r\nBcc: victim@example.com"),
            ("Hi", "Li\u{7f}"),
        ] {
            let err = build(&from(), &row(subject, name, "body"), 0).unwrap_err().to_string();
            assert!(err.contains("control character"), "{subject:?} / {name:?}: {err}");
        }
    }

    #[test]
    fn message_id_is_set_and_bare_carriage_returns_are_normalised() {
        let message = build(&from(), &row("Hello", "Li Na", "one\rtwo\r\nthree"), 0).unwrap();
        let wire = String::from_utf8(message.formatted()).unwrap();
        assert!(wire.contains("Message-ID: <run1-step0-contact1@nudge.test>"), "{wire}");
        assert!(wire.contains("To: \"Li Na\" <li@example.com>"), "{wire}");
        assert!(wire.contains("one\r\ntwo\r\nthree"), "{wire}");
        assert!(!wire.replace("\r\n", "").contains('\r'), "no bare CR on the wire");
        assert!(
            !wire.contains("List-Unsubscribe"),
            "only marketing carries unsubscribe headers"
        );
    }

    #[test]
    fn marketing_mail_carries_one_click_unsubscribe_headers() {
        let mut row = row("News", "Li", "body");
        row.message.0.unsubscribe = Some(Unsubscribe {
            https: "https://nudge.example.com/unsubscribe/abc".into(),
            mailto: "mailto:unsubscribe@nudge.example.com?subject=unsubscribe%20abc".into(),
        });
        let wire = String::from_utf8(build(&from(), &row, 0).unwrap().formatted()).unwrap();
        // Long headers are folded onto continuation lines; unfold before comparing.
        let wire = wire.replace("\r\n ", " ");
        assert!(
            wire.contains("List-Unsubscribe: <https://nudge.example.com/unsubscribe/abc>, <mailto:unsubscribe@nudge.example.com?subject=unsubscribe%20abc>"),
            "{wire}"
        );
        assert!(
            wire.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{wire}"
        );
    }
}
