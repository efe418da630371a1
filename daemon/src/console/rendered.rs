//! A message's HTML part as the recipient's mail client shows it, for the
//! message page's `<iframe sandbox>`: served on its own route with a policy
//! that lets the mail's own markup and inline styles render and nothing else
//! happen. Viewing a message must never count as its recipient opening it
//! (the tracking pixel is a remote image), fetch what a sender's HTML names,
//! or run a script in the console's origin, where the session's actions are.
//!
//! Two locks, each enough alone against scripts: the iframe's empty `sandbox`
//! (no scripts, an opaque origin without the console's cookie or pages, no
//! forms, popups or top navigation), and the response's CSP, which holds
//! when the route is opened by itself, outside the frame (`sandbox` again,
//! `default-src 'none'`: no script, image, font, stylesheet, frame or
//! connection from anywhere but `data:` images and inline styles).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;

use super::auth::Viewer;
use super::{ConsoleState, Page};
use crate::app::NotFound;
use crate::store;

/// What the stored HTML may do: render its markup with inline styles and
/// `data:` images; load, run, submit or frame nothing.
pub(crate) const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; \
     form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox";

/// Links open as new windows, which the sandbox refuses: following a link in
/// the preview would count a click (the links go through the tracking
/// redirect) and take the frame to the sender's site. Put first in the head
/// (after a doctype, so the mail keeps its rendering mode).
fn links_stay(html: &str) -> String {
    const BASE: &str = "<base target=\"_blank\">";
    let trimmed = html.trim_start();
    let doctype = trimmed.get(..9).is_some_and(|s| s.eq_ignore_ascii_case("<!doctype"));
    match trimmed.find('>').filter(|_| doctype) {
        Some(end) => format!("{}{BASE}{}", &trimmed[..=end], &trimmed[end + 1..]),
        None => format!("{BASE}{html}"),
    }
}

/// `GET /console/outbox/{id}/html`: the HTML part of message `id`.
pub(super) async fn message_html(State(s): State<ConsoleState>, _viewer: Viewer, Path(id): Path<i64>) -> Page {
    let mut conn = s.store.pool.acquire().await?;
    let message = store::outbox_message(&mut conn, id).await?;
    drop(conn);
    let html = (message.and_then(|m| m.message.0.html))
        .ok_or_else(|| anyhow::Error::from(NotFound(format!("message {id} has no HTML part"))))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        links_stay(&html),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_open_as_new_windows_and_the_doctype_stays_first() {
        assert_eq!(links_stay("<p>hi</p>"), "<base target=\"_blank\"><p>hi</p>");
        assert_eq!(
            links_stay("\n<!DOCTYPE html><html><body>x</body></html>"),
            "<!DOCTYPE html><base target=\"_blank\"><html><body>x</body></html>"
        );
    }

    /// Every kind of request a mail's HTML can make is closed: the policy names
    /// no source but inline styles and `data:` images (and the console as the
    /// only page that may frame it), and sandboxes the page by itself.
    #[test]
    fn the_policy_allows_no_request_and_no_script() {
        let directives: Vec<Vec<&str>> = POLICY.split(';').map(|d| d.split_whitespace().collect()).collect();
        assert!(directives.contains(&vec!["default-src", "'none'"]), "{POLICY}");
        assert!(directives.contains(&vec!["sandbox"]), "{POLICY}");
        for d in &directives {
            let allowed: &[&str] = match d[0] {
                "style-src" => &["'unsafe-inline'"],
                "img-src" | "font-src" => &["data:"],
                "frame-ancestors" => &["'self'"],
                _ => &["'none'"],
            };
            assert!(d[1..].iter().all(|source| allowed.contains(source)), "{d:?}");
        }
    }
}
