//! `/unsubscribe/{token}`: the links of RFC 2369 / RFC 8058 in every marketing
//! email. No bearer token: recipients follow them from their mail, and the
//! signed token in the path is the proof. The one-click POST (and the page's
//! first button) withdraws the contact from marketing only; the page's second
//! button, `/unsubscribe/{token}/all`, stops every customer-facing email
//! (docs/domain.md §5: a clear opt-out, honoured at once).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use tracing::info;

use super::{ApiError, AppState};
use crate::store::{self, ConsentScope, Contact};
use crate::unsubscribe::MessageRef;
use crate::workflow::language;

/// The landing page of an unsubscribe link, in the contact's language. A GET
/// changes nothing (mail scanners prefetch links); each button POSTs.
pub(super) async fn unsubscribe_page(
    State(s): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let Some((contact_id, _)) = s.unsubscribe.verify(&token) else {
        return Ok(forged_link());
    };
    let mut conn = s.store.pool.acquire().await.map_err(anyhow::Error::from)?;
    let Some(contact) = store::contact_by_id(&mut conn, contact_id).await? else {
        return Ok(forged_link());
    };
    let words = Words::for_locale(&contact.locale);
    let body = format!(
        "<h1>{}</h1><p>{}</p>{}{}",
        words.title,
        words.marketing_question,
        one_click_button(&token, words.marketing_button),
        stop_all(words, &token),
    );
    Ok(Html(page(words, &body)).into_response())
}

/// RFC 8058 one-click unsubscribe, and the page's first button: withdraws the
/// contact from marketing at once. Answers 200 without a redirect; idempotent.
pub(super) async fn unsubscribe_one_click(
    State(s): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    withdraw(s, token, ConsentScope::Marketing).await
}

/// The page's second button: no customer-facing email at all. Idempotent.
pub(super) async fn unsubscribe_all(
    State(s): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    withdraw(s, token, ConsentScope::All).await
}

async fn withdraw(s: AppState, token: String, scope: ConsentScope) -> Result<Response, ApiError> {
    let Some((contact_id, message)) = s.unsubscribe.verify(&token) else {
        return Ok(forged_link());
    };
    let now = s.clock.now_ms();
    let mut tx = s.store.write().await?;
    let Some(contact) = store::contact_by_id(&mut tx, contact_id).await? else {
        return Ok(forged_link());
    };
    let by = withdrawn_by(&mut tx, &contact, message, scope).await?;
    let changed = store::withdraw_consent(&mut tx, &contact, scope, &by, now).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    if changed {
        info!(contact_id, %scope, "{by}");
        s.engine_wake.notify_one();
    }
    let words = Words::for_locale(&contact.locale);
    let body = match scope {
        ConsentScope::Marketing => format!(
            "<h1>{}</h1><p>{}</p>{}",
            words.marketing_done,
            words.marketing_still,
            stop_all(words, &token)
        ),
        ConsentScope::All => format!("<h1>{}</h1><p>{}</p>", words.all_done, words.all_done_detail),
    };
    Ok(Html(page(words, &body)).into_response())
}

/// How the contact withdrew, for their history: the link of which message
/// (and its workflow), when the link names one.
async fn withdrawn_by(
    conn: &mut store::Conn,
    contact: &Contact,
    message: Option<MessageRef>,
    scope: ConsentScope,
) -> anyhow::Result<String> {
    let how = match scope {
        ConsentScope::Marketing => "one-click unsubscribe",
        ConsentScope::All => "unsubscribe page: stop all email",
    };
    let sent = match message {
        Some(m) => store::message_of_step(conn, contact.id, m.run_id, m.step).await?,
        None => None,
    };
    Ok(match sent {
        Some((Some(message_id), workflow)) => format!("{how} in {message_id} (workflow {workflow})"),
        Some((None, workflow)) => format!("{how} in a message of workflow {workflow}"),
        None => format!("{how} link"),
    })
}

/// The form a mail client's one-click button imitates (RFC 8058).
fn one_click_button(token: &str, label: &str) -> String {
    format!(
        "<form method=post action=\"/unsubscribe/{token}\">\
         <input type=hidden name=List-Unsubscribe value=One-Click><button>{label}</button></form>"
    )
}

/// The explicit second choice: no email at all.
fn stop_all(words: &Words, token: &str) -> String {
    format!(
        "<hr><p>{}</p><form method=post action=\"/unsubscribe/{token}/all\"><button>{}</button></form>",
        words.all_question, words.all_button
    )
}

/// A whole page: no script, no outside resource (the recipient's mail client
/// or browser fetches nothing but this).
fn page(words: &Words, body: &str) -> String {
    format!(
        "<!doctype html><html lang={}><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\"><title>{}</title>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:2em auto;padding:0 1em;line-height:1.5\">\
         {body}</body></html>",
        words.lang, words.title
    )
}

fn forged_link() -> Response {
    let body = format!("<p>{}</p><p lang=zh-CN>{}</p>", EN.invalid, ZH.invalid);
    (StatusCode::NOT_FOUND, Html(page(&EN, &body))).into_response()
}

/// The page's wording in one language.
struct Words {
    lang: &'static str,
    title: &'static str,
    marketing_question: &'static str,
    marketing_button: &'static str,
    marketing_done: &'static str,
    marketing_still: &'static str,
    all_question: &'static str,
    all_button: &'static str,
    all_done: &'static str,
    all_done_detail: &'static str,
    invalid: &'static str,
}

impl Words {
    /// Chinese for a locale whose language subtag is `zh` (zh, zh-CN, zh_TW, ...), else
    /// English: the templates' own matching of a locale to a language.
    fn for_locale(locale: &str) -> &'static Words {
        match language::pick(locale, ["zh", "en"].into_iter(), "en") {
            Some("zh") => &ZH,
            _ => &EN,
        }
    }
}

const EN: Words = Words {
    lang: "en",
    title: "Unsubscribe",
    marketing_question: "Stop receiving newsletters, offers and other marketing emails from us? \
                         We will still reply to your inquiries and write to you about your samples and orders.",
    marketing_button: "Unsubscribe from marketing emails",
    marketing_done: "You are unsubscribed from our marketing emails",
    marketing_still: "You will still hear from us about your inquiries, samples and orders.",
    all_question: "Would you rather receive no email from us at all, \
                   not even replies about your inquiries, samples or orders?",
    all_button: "Stop all email from us",
    all_done: "You will receive no more email from us",
    all_done_detail: "We have stopped every email to you, including replies about inquiries, samples and orders. \
                      To hear from us again, contact your sales representative.",
    invalid: "This unsubscribe link is not valid.",
};

const ZH: Words = Words {
    lang: "zh-CN",
    title: "退订邮件",
    marketing_question: "不想再收到我们的新品推荐、优惠活动等营销邮件？退订后，我们仍会回复您的询盘，\
                         并就您的样品和订单与您邮件沟通。",
    marketing_button: "退订营销邮件",
    marketing_done: "您已退订我们的营销邮件",
    marketing_still: "关于您的询盘、样品和订单的邮件，我们仍会照常发送。",
    all_question: "如果您希望不再收到我们的任何邮件（包括询盘回复、样品和订单相关邮件），请点击下方按钮。",
    all_button: "停止接收所有邮件",
    all_done: "您将不再收到我们的任何邮件",
    all_done_detail: "我们已停止向您发送所有邮件，包括询盘回复、样品和订单相关邮件。如需恢复，请联系您的销售代表。",
    invalid: "此退订链接无效。",
};

#[cfg(test)]
mod tests {
    use super::Words;

    #[test]
    fn the_page_is_chinese_for_a_zh_language_subtag_and_english_otherwise() {
        for zh in ["zh", "zh-CN", "zh_TW", "ZH-Hans-CN", " zh-HK "] {
            assert_eq!(Words::for_locale(zh).lang, "zh-CN", "{zh}");
        }
        for en in ["en", "en-US", "", "zhx", "de-CH", "x-zh"] {
            assert_eq!(Words::for_locale(en).lang, "en", "{en}");
        }
    }
}
