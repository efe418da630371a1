//! Open and click tracking of marketing email. Before a tracked message is
//! queued, its HTML links go through a signed redirect (`/t/c/{token}`) and a
//! 1x1 pixel (`/t/o/{token}`) is added; the API records what comes back.
//!
//! Tokens are sealed with the unsubscribe key (see `unsubscribe.rs`) over the
//! message's idempotency key and, for a click, the target URL: the redirect
//! only ever goes where the message itself pointed, so it is no open redirect,
//! and a forged or altered token is refused before anything is recorded.

use crate::model::Category;
use crate::unsubscribe::Unsubscribe;
use crate::workflow::Workflow;

const OPEN: &str = "track-open";
const CLICK: &str = "track-click";

/// A transparent 1x1 GIF, what the pixel route answers.
pub(crate) const PIXEL_GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

/// The token of a message's open pixel.
pub(crate) fn open_token(signer: &Unsubscribe, message_key: &str) -> String {
    signer.seal(OPEN, message_key.as_bytes())
}

/// The message an open token was made for.
pub(crate) fn verify_open(signer: &Unsubscribe, token: &str) -> Option<String> {
    String::from_utf8(signer.open(OPEN, token)?).ok()
}

/// The token of one link of a message: `key length (u16) || key || url`.
pub(crate) fn click_token(signer: &Unsubscribe, message_key: &str, url: &str) -> String {
    let key = message_key.as_bytes();
    let mut payload = (key.len() as u16).to_be_bytes().to_vec();
    payload.extend_from_slice(key);
    payload.extend_from_slice(url.as_bytes());
    signer.seal(CLICK, &payload)
}

/// The message and the URL a click token was made for.
pub(crate) fn verify_click(signer: &Unsubscribe, token: &str) -> Option<(String, String)> {
    let payload = signer.open(CLICK, token)?;
    let len = usize::from(u16::from_be_bytes(payload.get(..2)?.try_into().ok()?));
    let key = payload.get(2..2 + len)?;
    let url = payload.get(2 + len..)?;
    Some((
        String::from_utf8(key.to_vec()).ok()?,
        String::from_utf8(url.to_vec()).ok()?,
    ))
}

/// A redirect target as a header value: the URL the message had, with what a
/// header cannot carry (non-ASCII, spaces, controls) percent-encoded.
pub(crate) fn location(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a message's HTML is tracked: if its workflow tracks (`track`) and it
/// is marketing email to the contact. Transactional and SLA messages and notes
/// to the owner (`Category::Internal`) never are, whatever the workflow says.
/// A message without HTML cannot be.
pub(crate) fn tracks(workflow: &Workflow, category: Category, channel: &str) -> bool {
    workflow.track && category == Category::Marketing && channel == "email"
}

/// The HTML of a tracked message: each http(s) link of an `<a>` or `<area>` goes
/// through the click redirect, except the unsubscribe link (its token must reach
/// the daemon untouched, and leaving must not count as interest); a pixel is added.
pub(crate) fn track_html(signer: &Unsubscribe, message_key: &str, html: &str) -> String {
    let base = signer.base_url();
    let unsubscribe = format!("{base}/unsubscribe/");
    let tracked = rewrite_links(html, |url| {
        let lower = url.trim_start().to_ascii_lowercase();
        let web = lower.starts_with("http://") || lower.starts_with("https://");
        (web && !url.starts_with(&unsubscribe))
            .then(|| format!("{base}/t/c/{}", click_token(signer, message_key, url.trim())))
    });
    let pixel = format!(
        "<img src=\"{base}/t/o/{}\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0\">",
        open_token(signer, message_key)
    );
    match find_ignore_case(&tracked, "</body>") {
        Some(i) => format!("{}{pixel}{}", &tracked[..i], &tracked[i..]),
        None => format!("{tracked}{pixel}"),
    }
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack.to_ascii_lowercase().rfind(needle)
}

/// Replaces the `href` of every `<a>` and `<area>` tag for which `rewrite` gives
/// a new URL (it sees the URL with entities decoded). Text, comments and other
/// tags (`<link href>` of a stylesheet) are copied as they are.
fn rewrite_links(html: &str, mut rewrite: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(html.len() + 256);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        rest = &rest[lt..];
        let end = if rest.starts_with("<!--") {
            rest.find("-->").map_or(rest.len(), |i| i + 3)
        } else {
            tag_end(rest)
        };
        let tag = &rest[..end];
        let name: String = tag[1..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if name.eq_ignore_ascii_case("a") || name.eq_ignore_ascii_case("area") {
            out.push_str(&rewrite_href(tag, 1 + name.len(), &mut rewrite));
        } else {
            out.push_str(tag);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The length of the tag at the start of `s` (through its `>`, quotes respected).
fn tag_end(s: &str) -> usize {
    let mut quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// The tag with its `href` value replaced; attributes are read from `from` on.
fn rewrite_href(tag: &str, from: usize, rewrite: &mut impl FnMut(&str) -> Option<String>) -> String {
    let bytes = tag.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && !matches!(bytes[i], b'=' | b'>' | b'/') && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let name = &tag[name_start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            if name.is_empty() {
                i += 1;
            }
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let (value_start, value_end, next) = match bytes.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let end = tag[i + 1..].find(q as char).map_or(tag.len(), |e| i + 1 + e);
                (i + 1, end, (end + 1).min(tag.len()))
            }
            _ => {
                let end = tag[i..]
                    .find(|c: char| c.is_ascii_whitespace() || c == '>')
                    .map_or(tag.len(), |e| i + e);
                (i, end, end)
            }
        };
        if name.eq_ignore_ascii_case("href")
            && let Some(url) = rewrite(&decode_entities(&tag[value_start..value_end]))
        {
            return format!(
                "{}{}{}",
                &tag[..value_start],
                url.replace('&', "&amp;"),
                &tag[value_end..]
            );
        }
        i = next;
    }
    tag.to_string()
}

/// Decodes the character references an attribute value may hold: templates
/// autoescape values, so `{{ vars.url }}` arrives as `https:&#x2f;&#x2f;...`.
fn decode_entities(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => match entity.strip_prefix('#') {
                    Some(hex) if hex.starts_with(['x', 'X']) => u32::from_str_radix(&hex[1..], 16).ok(),
                    Some(dec) => dec.parse().ok(),
                    None => None,
                }
                .and_then(char::from_u32),
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Unsubscribe {
        Unsubscribe::new(b"test key".to_vec(), "https://n.example".into(), "u@n.example".into())
    }

    const KEY: &str = "run7-step0-contact3";

    /// The click tokens in `html`, verified: (message key, URL) each.
    fn clicks(html: &str) -> Vec<(String, String)> {
        html.split("https://n.example/t/c/")
            .skip(1)
            .map(|rest| {
                let token: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "-_".contains(*c))
                    .collect();
                verify_click(&signer(), &token).expect("a valid token")
            })
            .collect()
    }

    #[test]
    fn tokens_verify_and_altered_ones_do_not() {
        let s = signer();
        let open = open_token(&s, KEY);
        assert_eq!(verify_open(&s, &open).as_deref(), Some(KEY));
        let click = click_token(&s, KEY, "https://shop.example/p?id=1");
        assert_eq!(
            verify_click(&s, &click),
            Some((KEY.to_string(), "https://shop.example/p?id=1".to_string()))
        );
        // Another key, a token of the other kind, a changed URL, junk: all refused.
        let other = Unsubscribe::new(b"other".to_vec(), "https://n.example".into(), "u@n.example".into());
        assert_eq!(verify_click(&other, &click), None);
        assert_eq!(verify_open(&s, &click), None);
        assert_eq!(verify_click(&s, &open), None);
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut bytes = engine.decode(&click).unwrap();
        let at = 2 + KEY.len() + 8;
        bytes[at] ^= 1;
        assert_eq!(verify_click(&s, &engine.encode(&bytes)), None);
        assert_eq!(verify_click(&s, "AAAA"), None);
        assert_eq!(verify_open(&s, ""), None);
    }

    #[test]
    fn http_links_go_through_the_redirect_with_their_query_strings() {
        let html = "<p><a href=\"https://shop.example/p?id=1&amp;ref=mail\">one</a> \
                    <A class='x' HREF='http://b.example/'>two</A> \
                    <a href=https://c.example/x>three</a></p>";
        let out = track_html(&signer(), KEY, html);
        let got: Vec<String> = clicks(&out)
            .into_iter()
            .map(|(k, u)| {
                assert_eq!(k, KEY);
                u
            })
            .collect();
        assert_eq!(
            got,
            [
                "https://shop.example/p?id=1&ref=mail",
                "http://b.example/",
                "https://c.example/x"
            ]
        );
        assert!(out.contains(">one</a>") && out.contains("class='x'"), "{out}");
        assert!(!out.contains("shop.example"), "{out}");
    }

    #[test]
    fn autoescaped_links_are_decoded_before_signing() {
        let html = "<a href=\"https:&#x2f;&#x2f;shop.example&#x2f;a?b=1&amp;c=&quot;2&quot;\">x</a>";
        let out = track_html(&signer(), KEY, html);
        assert_eq!(clicks(&out)[0].1, "https://shop.example/a?b=1&c=\"2\"");
    }

    #[test]
    fn mailto_unsubscribe_anchors_stylesheets_and_text_are_left_alone() {
        let unsubscribe = "https://n.example/unsubscribe/abcDEF";
        let html = format!(
            "<html><head><link href=\"https://cdn.example/s.css\" rel=stylesheet></head><body>\
             <a href=\"mailto:rep@example.com\">mail</a> <a href=\"#top\">top</a> \
             <a href=\"{unsubscribe}\">Unsubscribe</a> \
             <!-- <a href=\"https://old.example\"> --> <p>see href=\"https://text.example\"</p>\
             <a name=x title=\"a > b\" href=\"https://ok.example\">ok</a></body></html>"
        );
        let out = track_html(&signer(), KEY, &html);
        for kept in [
            "href=\"https://cdn.example/s.css\"",
            "href=\"mailto:rep@example.com\"",
            "href=\"#top\"",
            &format!("href=\"{unsubscribe}\""),
            "<!-- <a href=\"https://old.example\"> -->",
            "href=\"https://text.example\"",
        ] {
            assert!(out.contains(kept), "{kept} kept in {out}");
        }
        assert_eq!(clicks(&out), [(KEY.to_string(), "https://ok.example".to_string())]);
    }

    #[test]
    fn redirect_targets_are_valid_header_values() {
        assert_eq!(location("https://a.example/p?q=1&r=2"), "https://a.example/p?q=1&r=2");
        assert_eq!(
            location("https://a.example/产品 x"),
            "https://a.example/%E4%BA%A7%E5%93%81%20x"
        );
    }

    #[test]
    fn the_pixel_goes_before_the_end_of_the_body_or_at_the_end() {
        let out = track_html(&signer(), KEY, "<html><BODY><p>hi</p></BODY></html>");
        let pixel = out.find("<img src=\"https://n.example/t/o/").expect("a pixel");
        assert!(pixel < out.find("</BODY>").unwrap(), "{out}");
        let token = out[pixel..].split("/t/o/").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(verify_open(&signer(), token).as_deref(), Some(KEY));
        assert!(track_html(&signer(), KEY, "<p>hi</p>").starts_with("<p>hi</p><img "));
    }
}
