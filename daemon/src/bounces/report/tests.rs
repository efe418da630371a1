//! Reports as servers write them: two DSNs a real Postfix produced (hard and
//! soft), an Exim-style DSN with a delayed and a failed recipient, an ARF
//! complaint (RFC 5965 §B), and an auto-reply that is no report at all.

use super::*;

fn report(file: &str) -> Option<Report> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bounces/report");
    parse(&std::fs::read(dir.join(file)).expect("fixture"))
}

#[test]
fn a_postfix_hard_bounce_names_the_recipient_status_and_return_path() {
    let r = report("postfix-hard.eml").expect("a DSN");
    assert_eq!(
        r.findings,
        vec![Finding {
            kind: BounceKind::Hard,
            recipient: Some("a@gone.test".into()),
            status: "5.1.1".into(),
            diagnostic: "mailbox does not exist".into(),
        }]
    );
    assert!(
        r.return_paths.iter().any(|a| a == "bounce+tok1@bounces.test"),
        "{:?}",
        r.return_paths
    );
    assert_eq!(r.original_message_id.as_deref(), Some("m1@shop.test"));
    assert_eq!(r.report_id.as_deref(), Some("20261207165008.B821098E064@relay.test"));
}

#[test]
fn a_mailbox_full_that_the_server_gave_up_on_is_soft() {
    let r = report("postfix-soft.eml").expect("a DSN");
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].kind, BounceKind::Soft);
    assert_eq!(r.findings[0].status, "4.2.2");
    assert_eq!(r.findings[0].recipient.as_deref(), Some("b@full.test"));
}

#[test]
fn only_failed_recipients_count_and_folded_diagnostics_are_joined() {
    let r = report("exim-delayed-and-failed.eml").expect("a DSN");
    assert_eq!(
        r.findings.len(),
        1,
        "the delayed recipient is a warning: {:?}",
        r.findings
    );
    let f = &r.findings[0];
    assert_eq!(
        (f.kind, f.recipient.as_deref()),
        (BounceKind::Hard, Some("gone@example.org"))
    );
    assert_eq!(
        f.diagnostic,
        "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown in virtual mailbox table"
    );
    // The quoted headers carry the original's Message-ID and return path.
    assert_eq!(r.original_message_id.as_deref(), Some("run9-step1-contact4@shop.test"));
    assert!(
        r.return_paths
            .iter()
            .any(|a| a == "bounce+9-8899aabbccddeeff@bounces.test")
    );
}

#[test]
fn an_arf_abuse_report_is_a_complaint_about_the_original_recipient() {
    let r = report("arf-abuse.eml").expect("an ARF report");
    assert_eq!(r.findings.len(), 1);
    let f = &r.findings[0];
    assert_eq!(f.kind, BounceKind::Complaint);
    assert_eq!(f.recipient.as_deref(), Some("Someone@Example.net"));
    assert_eq!(f.status, "abuse");
    assert_eq!(r.original_message_id.as_deref(), Some("run7-step0-contact3@shop.test"));
    assert!(
        r.return_paths
            .iter()
            .any(|a| a == "bounce+7-0011223344556677@bounces.test")
    );
}

#[test]
fn an_auto_reply_or_a_delay_warning_is_no_bounce() {
    assert_eq!(report("auto-reply.eml"), None);
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bounces/report/exim-delayed-and-failed.eml");
    let delayed_only = std::fs::read_to_string(fixture)
        .expect("fixture")
        .replace("Action: failed", "Action: delayed");
    assert_eq!(parse(delayed_only.as_bytes()), None);
    assert_eq!(parse(b"not a mail at all"), None);
    assert_eq!(parse(b""), None);
}
