//! What a returned mail says: an RFC 3464 delivery status notification (a
//! verdict per recipient), an RFC 5965 (ARF) complaint, or neither (an
//! out-of-office reply, a person writing back, a delay warning), which is no
//! bounce and suppresses nothing.

use mail_parser::{Message, MessageParser, MimeHeaders as _, PartType};

use crate::store::BounceKind;

/// A bounce or complaint report, with what it says and where to attribute it.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Report {
    /// What happened, per recipient the report names (at least one).
    pub(crate) findings: Vec<Finding>,
    /// Addresses that may carry the return path the message went out with: the
    /// report's envelope recipient (Delivered-To, X-Original-To, To), the
    /// original sender it names, the quoted message's Return-Path.
    pub(crate) return_paths: Vec<String>,
    /// The quoted original message's Message-ID, if the report quotes it.
    pub(crate) original_message_id: Option<String>,
    /// The report's own Message-ID: the same report read twice counts once.
    pub(crate) report_id: Option<String>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct Finding {
    pub(crate) kind: BounceKind,
    /// The recipient the report is about, as it names it.
    pub(crate) recipient: Option<String>,
    /// The enhanced status code (`5.1.1`), or the ARF feedback type (`abuse`).
    pub(crate) status: String,
    /// The remote server's words, for the person reading the bounce later.
    pub(crate) diagnostic: String,
}

/// The report in a returned mail; None when it is no bounce or complaint.
pub(crate) fn parse(raw: &[u8]) -> Option<Report> {
    let message = MessageParser::default().parse(raw)?;
    let root = message.content_type()?;
    if !root.ctype().eq_ignore_ascii_case("multipart") || !root.subtype()?.eq_ignore_ascii_case("report") {
        return None;
    }
    let report_type = root.attribute("report-type")?.to_ascii_lowercase();
    let mut report = Report {
        report_id: message.message_id().map(str::to_string),
        ..Report::default()
    };
    for name in ["Delivered-To", "X-Original-To", "To"] {
        report.return_paths.extend(header_addresses(&message, name));
    }
    for part in &message.parts {
        let Some(ct) = part.content_type() else { continue };
        let kind = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase();
        match (&part.body, kind.as_str()) {
            (PartType::Message(original), _) => quoted(&mut report, original),
            (_, "text/rfc822-headers") => {
                // The part ends where its boundary starts, so its last header may lack
                // its line end; the blank line ends the headers for the parser.
                let headers = [part.contents(), b"\r\n\r\n"].concat();
                if let Some(headers) = MessageParser::default().parse(&headers) {
                    quoted(&mut report, &headers);
                }
            }
            (_, "message/delivery-status" | "message/global-delivery-status")
                if report_type.ends_with("delivery-status") =>
            {
                delivery_status(&mut report, part.contents())
            }
            (_, "message/feedback-report") if report_type == "feedback-report" => {
                complaint(&mut report, part.contents())
            }
            _ => {}
        }
    }
    (!report.findings.is_empty()).then_some(report)
}

/// The per-recipient blocks of a DSN: only `Action: failed` is a bounce (a
/// `delayed` one is a warning, the server still tries). 5.x.x is hard, 4.x.x
/// soft: the server gave up on a temporary condition (a full mailbox).
fn delivery_status(report: &mut Report, contents: &[u8]) {
    let blocks = field_blocks(contents);
    let Some((per_message, per_recipient)) = blocks.split_first() else {
        return;
    };
    // Postfix names the envelope sender of the bounced message.
    report
        .return_paths
        .extend(field(per_message, "x-postfix-sender").map(address_of));
    for block in per_recipient {
        if !field(block, "action").is_some_and(|a| a.eq_ignore_ascii_case("failed")) {
            continue;
        }
        let status = field(block, "status").unwrap_or_default().trim().to_string();
        let kind = match status.as_bytes().first() {
            Some(b'4') => BounceKind::Soft,
            _ => BounceKind::Hard,
        };
        report.findings.push(Finding {
            kind,
            recipient: field(block, "final-recipient")
                .or_else(|| field(block, "original-recipient"))
                .map(address_of),
            status,
            diagnostic: field(block, "diagnostic-code").map(without_type).unwrap_or_default(),
        });
    }
}

/// An ARF report: a person pressed "this is spam". `not-spam` takes nothing back
/// here (a suppression is lifted by hand), and is not a complaint.
fn complaint(report: &mut Report, contents: &[u8]) {
    let fields: Vec<(String, String)> = field_blocks(contents).into_iter().flatten().collect();
    let feedback = field(&fields, "feedback-type")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if feedback == "not-spam" {
        return;
    }
    report
        .return_paths
        .extend(field(&fields, "original-mail-from").map(address_of));
    report.findings.push(Finding {
        kind: BounceKind::Complaint,
        recipient: field(&fields, "original-rcpt-to").map(address_of),
        status: feedback,
        diagnostic: field(&fields, "user-agent").unwrap_or_default(),
    });
}

/// What the quoted original message tells: its Message-ID and return path.
fn quoted(report: &mut Report, original: &Message) {
    if report.original_message_id.is_none() {
        report.original_message_id = original.message_id().map(str::to_string);
    }
    report.return_paths.extend(header_addresses(original, "Return-Path"));
}

fn header_addresses(message: &Message, name: &str) -> Vec<String> {
    message
        .headers_raw()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, value)| value.split(','))
        .map(|v| address_of(v.to_string()))
        .filter(|a| a.contains('@'))
        .collect()
}

/// `smtp; 550 ...` -> `550 ...`: a DSN field's value without its type.
fn without_type(value: String) -> String {
    value
        .split_once(';')
        .map_or(value.as_str(), |(_, v)| v)
        .trim()
        .to_string()
}

/// `rfc822; a@b` -> `a@b`; `Name <a@b>` -> `a@b`.
fn address_of(value: String) -> String {
    let value = without_type(value);
    let value = value.as_str();
    match (value.rfind('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => value[start + 1..end].trim().to_string(),
        _ => value.to_string(),
    }
}

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

/// RFC 3464 §2.1 / RFC 5965 §3.1: blocks of header-style fields, separated by
/// blank lines, with folded continuation lines. Names are lower-cased.
fn field_blocks(contents: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(contents);
    let mut blocks = vec![];
    let mut block: Vec<(String, String)> = vec![];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

#[cfg(test)]
mod tests;
