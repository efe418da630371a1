//! Email delivery through lettre: builds the MIME message from an outbox row
//! and sends it by SMTP, or writes it as an `.eml` file when no SMTP server is
//! configured (the out-of-the-box default).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, SmtpTls};
use crate::store::{OutboxRow, Outcome};

/// SMTP connections kept open. Each exchange is several round trips (and lettre
/// does not turn off Nagle's algorithm), so throughput comes from parallel sessions.
pub const POOL_SIZE: u32 = 32;

enum Route {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        deadline: Duration,
    },
    EmlDir(PathBuf),
}

/// Sends email the way the config says.
pub struct Mailer {
    from: Mailbox,
    route: Route,
}

impl Mailer {
    pub fn new(config: &Config) -> anyhow::Result<Mailer> {
        let from: Mailbox = config
            .email
            .from
            .parse()
            .with_context(|| format!("email.from `{}` is not a mailbox", config.email.from))?;
        let route = match &config.smtp {
            None => Route::EmlDir(config.outbox_dir.clone()),
            Some(smtp) => {
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host).port(smtp.port);
                builder = match smtp.tls {
                    SmtpTls::None => builder.tls(Tls::None),
                    SmtpTls::Starttls => builder.tls(Tls::Required(TlsParameters::new(smtp.host.clone())?)),
                    SmtpTls::Tls => builder.tls(Tls::Wrapper(TlsParameters::new(smtp.host.clone())?)),
                };
                if let Some(user) = &smtp.username {
                    let password = config.smtp_password().with_context(|| {
                        format!("smtp.username is set but ${} holds no password", smtp.password_env)
                    })?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                let deadline = Duration::from_secs(smtp.timeout_secs.max(1));
                // lettre's own timeout covers each command; the outer deadline covers the whole send.
                let transport = builder
                    .timeout(Some(deadline))
                    .pool_config(PoolConfig::new().max_size(POOL_SIZE))
                    .build();
                Route::Smtp { transport, deadline }
            }
        };
        Ok(Mailer { from, route })
    }

    /// Builds and sends one message; never panics on bad data, which becomes a permanent failure.
    pub async fn send(&self, row: &OutboxRow, now_ms: i64) -> Outcome {
        let message = match build(&self.from, row, now_ms) {
            Ok(m) => m,
            Err(e) => return Outcome::Permanent(format!("cannot build message: {e:#}")),
        };
        match &self.route {
            Route::EmlDir(dir) => match write_eml(dir, row, &message.formatted()).await {
                Ok(()) => Outcome::Sent,
                Err(e) => Outcome::Transient(format!("write .eml: {e:#}")),
            },
            Route::Smtp { transport, deadline } => match tokio::time::timeout(*deadline, transport.send(message)).await
            {
                Ok(Ok(_)) => Outcome::Sent,
                Ok(Err(e)) if e.is_permanent() => Outcome::Permanent(e.to_string()),
                Ok(Err(e)) => Outcome::Transient(e.to_string()),
                Err(_) => Outcome::Transient(format!("no answer within {deadline:?} (outcome unknown)")),
            },
        }
    }
}

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

fn build(from: &Mailbox, row: &OutboxRow, now_ms: i64) -> anyhow::Result<Message> {
    let m = &row.message.0;
    check_header("subject", &m.subject)?;
    check_header("recipient name", &m.to_name)?;
    let to = Mailbox::new(
        Some(m.to_name.clone()).filter(|n| !n.is_empty() && n != &m.to_address),
        m.to_address.parse()?,
    );
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&m.subject)
        .message_id(Some(row.message_id.clone()))
        .date(SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64));
    let message = match (&m.text, &m.html) {
        (Some(text), Some(html)) => {
            builder.multipart(MultiPart::alternative_plain_html(normalise(text), normalise(html)))?
        }
        (None, Some(html)) => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(normalise(html)),
        )?,
        (Some(text), None) => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(normalise(text)),
        )?,
        (None, None) => anyhow::bail!("the message has no body"),
    };
    Ok(message)
}

/// Writes atomically (temp file + rename), so a reader never sees half a message.
async fn write_eml(dir: &std::path::Path, row: &OutboxRow, bytes: &[u8]) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("create {}", dir.display()))?;
    let name = format!("{:08}-{}.eml", row.id, row.idempotency_key);
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, dir.join(&name)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OutboundMessage;

    fn row(subject: &str, to_name: &str, text: &str) -> OutboxRow {
        OutboxRow {
            id: 1,
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
            }),
            attempts: 0,
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
    }
}
