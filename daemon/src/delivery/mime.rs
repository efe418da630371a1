//! The MIME body of an email as part of the message itself, so that a DKIM
//! signature covers its Content-Type.
//!
//! lettre keeps a MIME body's Content-Type and Content-Transfer-Encoding with
//! the body, not with the message's headers, and its DKIM signer signs only the
//! latter while still listing the former in `h=`: every receiver would then
//! find the signature broken. Here the body part's headers become message
//! headers and the rest the message's raw body: the same bytes on the wire.

use std::str::FromStr as _;

use lettre::Message;
use lettre::message::header::{ContentTransferEncoding, HeaderName, HeaderValue, MIME_VERSION_1_0};
use lettre::message::{Body, MessageBuilder};

/// The message of `builder` with `part` (a formatted MIME part: its headers,
/// a blank line, its body) as its body.
pub(super) fn with_body(builder: MessageBuilder, part: &[u8]) -> anyhow::Result<Message> {
    let split = part
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("a MIME part without a blank line after its headers"))?;
    let head = std::str::from_utf8(&part[..split])?;
    let body = part[split + 4..].to_vec();
    let mut builder = builder.header(MIME_VERSION_1_0);
    // 7bit: what lettre's own encodings of text (7bit, quoted-printable, base64) all are.
    let mut encoding = ContentTransferEncoding::SevenBit;
    for field in unfold(head) {
        let (name, value) = field
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("a MIME header without a colon: {field:?}"))?;
        if name.eq_ignore_ascii_case("Content-Transfer-Encoding") {
            encoding = ContentTransferEncoding::from_str(value.trim()).map_err(|e| anyhow::anyhow!("{e}"))?;
        } else {
            let encoded = value.strip_prefix(' ').unwrap_or(value).to_string();
            let raw = encoded.replace("\r\n", "");
            builder = builder.raw_header(HeaderValue::dangerous_new_pre_encoded(
                HeaderName::new_from_ascii(name.to_string())?,
                raw,
                encoded,
            ));
        }
    }
    Ok(builder.body(Body::dangerous_pre_encoded(body, encoding))?)
}

/// The header fields of `head`, each with its continuation lines (CRLF kept).
fn unfold(head: &str) -> Vec<&str> {
    let mut fields = Vec::new();
    let mut start = 0;
    for (at, _) in head.match_indices("\r\n") {
        if !head[at + 2..].starts_with([' ', '\t']) {
            fields.push(&head[start..at]);
            start = at + 2;
        }
    }
    fields.push(&head[start..]);
    fields
}

#[cfg(test)]
mod tests {
    use lettre::message::header::ContentType;
    use lettre::message::{MultiPart, SinglePart};

    use super::*;

    fn builder() -> MessageBuilder {
        Message::builder()
            .from("sales@nudge.test".parse().unwrap())
            .to("li@example.com".parse().unwrap())
            .subject("Hi")
    }

    /// The headers and body of a formatted message.
    fn split(wire: &[u8]) -> (String, Vec<u8>) {
        let at = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (String::from_utf8(wire[..at].to_vec()).unwrap(), wire[at + 4..].to_vec())
    }

    #[test]
    fn the_part_headers_become_message_headers_and_the_body_stays_byte_for_byte() {
        let multi = MultiPart::alternative_plain_html("Hello Lin".to_string(), "<p>Hello Lin</p>".to_string());
        let single = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body("Grüße, ".repeat(30));
        for (part, lettre) in [
            (multi.formatted(), builder().multipart(multi).unwrap()),
            (single.formatted(), builder().singlepart(single).unwrap()),
        ] {
            let (head, body) = split(&with_body(builder(), &part).unwrap().formatted());
            // lettre writes the part's headers straight after the message's: one block.
            let (lettre_head, lettre_body) = split(&lettre.formatted());
            assert_eq!(body, lettre_body, "{head}");
            // Date is the time of building: the two may be a second apart.
            let fields = |head: &str| -> Vec<String> {
                let unfolded = head.replace("\r\n ", " ");
                unfolded
                    .lines()
                    .filter(|l| !l.starts_with("Date:"))
                    .map(str::to_string)
                    .collect()
            };
            let (ours, theirs) = (fields(&head), fields(&lettre_head));
            for field in &theirs {
                assert_eq!(ours.iter().filter(|f| *f == field).count(), 1, "{field} in {head}");
            }
            // A multipart body gets its (only possible) encoding said at the top.
            let extra: Vec<_> = ours.iter().filter(|f| !theirs.contains(f)).collect();
            assert!(
                extra.iter().all(|f| *f == "Content-Transfer-Encoding: 7bit"),
                "{extra:?}"
            );
        }
    }
}
