//! A rendered message becomes an outbox row: its idempotency key (run + step +
//! contact) and the Message-ID derived from it, the unsubscribe footer of
//! marketing email, open and click tracking. Frequency caps, which hold a
//! message back when the contact had enough of them lately, are checked here
//! too, inside the step's transaction: they count what other workflows
//! queued, in this very batch as well.

use tracing::info;

use super::effects::Effects;
use super::steps::{Applying, PreparedStep};
use super::{Engine, variants};
use crate::model::{Reason, add_span};
use crate::plugins::RenderedMessage;
use crate::store::{self, Contact, NewOutboxRow, OutboundMessage};
use crate::tracking;
use crate::workflow::language::Footer;
use crate::workflow::{Workflow, WorkflowSet};

/// A message a step is about to send.
pub(super) struct Outgoing {
    pub(crate) channel: String,
    pub(crate) template: String,
    pub(crate) name: String,
    pub(crate) address: String,
    /// Tells apart two messages of one step (the contact's and the owner's).
    pub(crate) key_suffix: &'static str,
    /// For the owner's notice of a message withheld by consent: that message's template.
    pub(crate) withheld: Option<String>,
}

impl Engine {
    /// Queues the message of a run's step, `out` as `rendered`, as an outbox
    /// row in `effects`; returns the step's detail.
    pub(super) fn queue(
        &self,
        at: &Applying,
        step: &PreparedStep,
        out: &Outgoing,
        rendered: &RenderedMessage,
        effects: &mut Effects,
    ) -> String {
        let (run, workflow, contact) = (at.run, at.workflow, at.contact);
        let (unsubscribe, category) = (&step.unsubscribe, step.category);
        let key = store::idempotency_key(run.id, run.next_step, contact.id, out.key_suffix);
        let message_id = format!("<{key}@{}>", self.message_id_domain);
        let footer = unsubscribe
            .as_ref()
            .and_then(|links| Some((footer_for(at.set, out, contact)?, &links.https)));
        let (text, html) = match footer {
            Some((footer, url)) => with_unsubscribe_footer(rendered.text.clone(), rendered.html.clone(), footer, url),
            None => (rendered.text.clone(), rendered.html.clone()),
        };
        let tracked = html.is_some() && tracking::tracks(workflow, category, &out.channel);
        let html = html.map(|h| {
            if tracked {
                tracking::track_html(&self.unsubscribe, &key, &h)
            } else {
                h
            }
        });
        let outbound = OutboundMessage {
            to_name: out.name.clone(),
            to_address: out.address.clone(),
            subject: rendered.subject.clone().unwrap_or_default(),
            text,
            html,
            extra: rendered.extra.clone(),
            unsubscribe: unsubscribe.clone(),
        };
        let detail = format!("queued {message_id} to {}", out.address);
        effects.outbox.push(NewOutboxRow {
            idempotency_key: key,
            message_id,
            run_id: Some(run.id),
            workflow: Some(workflow.name.clone()),
            contact_id: Some(contact.id),
            channel: out.channel.clone(),
            category,
            message: outbound,
            variant: variants::of_step(workflow, run).map(|v| v.name.clone()),
            tracked,
            // The step's span, as `traces::step_span` left it on the run.
            traceparent: run.traceparent.clone(),
        });
        detail
    }

    /// If a frequency cap holds this message back: defers the run (in
    /// `effects`) and returns true.
    pub(super) async fn defer_if_capped(
        &self,
        conn: &mut store::Conn,
        at: &Applying<'_>,
        channel: &str,
        effects: &mut Effects,
    ) -> anyhow::Result<bool> {
        let (run, workflow, contact) = (at.run, at.workflow, at.contact);
        let Some((until, reason, counted)) = capped(conn, at.set, workflow, channel, contact, effects, at.now).await?
        else {
            return Ok(false);
        };
        let code = Reason::FrequencyCap;
        info!(reason = %code, "{reason}");
        effects.deferred.push(store::DeferredRun {
            run_id: run.id,
            step: run.next_step,
            until,
            reason,
            code,
            counted,
        });
        Ok(true)
    }
}

/// If a frequency cap holds this message back: until when, why, and the
/// outbox ids of the messages that counted against it.
async fn capped(
    conn: &mut store::Conn,
    set: &WorkflowSet,
    workflow: &Workflow,
    channel: &str,
    contact: &Contact,
    effects: &mut Effects,
    now: i64,
) -> anyhow::Result<Option<(i64, String, Vec<i64>)>> {
    let mut caps = set.sending.caps_for(channel, workflow.category).peekable();
    if caps.peek().is_some() {
        // What the batch queued so far must be in the outbox to be counted.
        effects.flush(conn, now).await?;
    }
    let tz = jiff::tz::TimeZone::get(&contact.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    for cap in caps {
        let since = jiff::Timestamp::from_millisecond(now)?
            .to_zoned(tz.clone())
            .checked_sub(cap.per)?
            .timestamp()
            .as_millisecond();
        let categories: Vec<String> = cap.categories.iter().map(|c| c.as_str().to_string()).collect();
        let (counted, oldest) = store::recent_sends(conn, contact.id, channel, &categories, since).await?;
        let count = counted.len() as i64;
        if count < cap.max {
            continue;
        }
        // A slot frees up when the oldest counted message leaves the period.
        let free = add_span(oldest.unwrap_or(now), cap.per, &contact.time_zone) + 1;
        let slot = set.sending.next_slot(
            set.window_name(workflow.send_window.as_ref(), |field| contact.cadence_key(field)),
            workflow.category,
            jiff::Timestamp::from_millisecond(free)?,
            &tz,
        );
        let reason = format!(
            "frequency cap reached ({}: {count} already); next slot {}",
            cap.label,
            slot.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M %Z")
        );
        return Ok(Some((slot.as_millisecond(), reason, counted)));
    }
    Ok(None)
}

/// The footer in the language of the message: its template's, or for a
/// template written once for everyone, the contact's.
fn footer_for<'a>(set: &'a WorkflowSet, out: &Outgoing, contact: &Contact) -> Option<&'a Footer> {
    let language = match set.templates.get(&out.template) {
        Some(t) => t.for_locale(&contact.locale, &set.languages.default).0,
        None => "",
    };
    set.languages
        .footer(if language.is_empty() { &contact.locale } else { language })
}

/// Makes sure a marketing email shows its unsubscribe link, whatever the template wrote.
fn with_unsubscribe_footer(
    text: Option<String>,
    html: Option<String>,
    footer: &Footer,
    url: &str,
) -> (Option<String>, Option<String>) {
    let text = text.map(|t| {
        if t.contains(url) {
            t
        } else {
            format!("{}\n\n--\n{}\n", t.trim_end(), footer.text.replace("{url}", url))
        }
    });
    // HTML templates escape the link they print (minijinja writes `/` as `&#x2f;`), so
    // the template's own link is recognised by its token, the last part of the path.
    let token = url.rsplit('/').next().unwrap_or(url);
    let html = html.map(|h| {
        if h.contains(token) {
            return h;
        }
        let footer = format!(
            "<p style=\"font-size:12px;color:#777\">{}</p>",
            footer.html.replace("{url}", &escape_attribute(url))
        );
        match h.rfind("</body>") {
            Some(i) => format!("{}{footer}{}", &h[..i], &h[i..]),
            None => format!("{h}{footer}"),
        }
    });
    (text, html)
}

/// The link as it may stand inside `href="..."`.
fn escape_attribute(url: &str) -> String {
    url.replace('&', "&amp;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::with_unsubscribe_footer;
    use crate::workflow::Languages;

    const URL: &str = "https://test.example/unsubscribe/AAAB3xYz_token";

    #[test]
    fn the_footer_goes_before_the_end_of_the_body_unless_the_link_is_there() {
        let languages = Languages::default();
        let footer = languages.footer("en").unwrap();
        let (text, html) = with_unsubscribe_footer(
            Some("Hi.\n".into()),
            Some("<html><body><p>Hi.</p></body></html>".into()),
            footer,
            URL,
        );
        assert_eq!(text.unwrap(), format!("Hi.\n\n--\nUnsubscribe: {URL}\n"));
        let html = html.unwrap();
        assert!(
            html.ends_with(&format!("<a href=\"{URL}\">Unsubscribe</a>.</p></body></html>")),
            "{html}"
        );
        let own = format!("Hi. Leave: {URL}");
        let (text, html) = with_unsubscribe_footer(Some(own.clone()), None, footer, URL);
        assert_eq!(
            (text.unwrap(), html),
            (own, None),
            "a template that shows the link keeps its own"
        );
        let escaped =
            "<p><a href=\"https:&#x2f;&#x2f;test.example&#x2f;unsubscribe&#x2f;AAAB3xYz_token\">Leave</a></p>"
                .to_string();
        let (_, html) = with_unsubscribe_footer(None, Some(escaped.clone()), footer, URL);
        assert_eq!(html.unwrap(), escaped, "a link the template escaped is its own too");
    }
}
