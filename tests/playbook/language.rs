//! Languages (docs/domain.md §7): each customer mail in the contact's language,
//! picked by locale (tag, then language, then language.toml's default),
//! addressed by the contact's salutation; the footer the daemon adds follows
//! the same choice; `nudge check` warns about a language contacts have that a
//! template lacks. And tracking (§5): the marketing mails are HTML, so their
//! opens count, and a campaign that could not be tracked says so.

use serde_json::Value;

use crate::common::{Nudge, SmtpServer, scratch};

/// Monday 10:00 UTC: inside the shipped nurture window, outside quiet hours.
const MONDAY_10AM: &str = "2026-11-23T10:00:00Z";
const TODAY: &str = "from=2026-11-23&to=2026-11-23";

fn report(nudge: &Nudge) -> Value {
    let (status, report) = nudge.http("GET", &format!("/reports?{TODAY}"), None);
    assert_eq!(status, 200, "{report}");
    report
}

fn workflow_figures(report: &Value, workflow: &str) -> Value {
    report["engagement"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["workflow"] == workflow))
        .cloned()
        .unwrap_or_else(|| panic!("no figures for {workflow}: {report:#}"))
}

/// The paths of the daemon's links of `kind` (`c` click, `o` open) in an HTML body.
fn tracked_paths(html: &str, kind: &str) -> Vec<String> {
    let marker = format!("/t/{kind}/");
    html.match_indices(&marker)
        .map(|(at, _)| {
            let token: String = html[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            format!("{marker}{token}")
        })
        .collect()
}

#[test]
fn each_contact_reads_the_acknowledgement_and_the_proposal_in_their_language_addressed_as_they_are() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    // By the CLI: zh-CN is Chinese, addressed as 王总.
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "王伟",
        "--salutation",
        "王总",
        "--company",
        "华星贸易",
        "--email",
        "wang@example.com",
        "--owner",
        "rep@corp.test",
        "--locale",
        "zh-CN",
    ]);
    // By import: French has no template, so the default language (English); no
    // salutation, so by name. And a Chinese contact without one: name + 您好.
    let csv = tmp.path().join("contacts.csv");
    std::fs::write(
        &csv,
        "name,email,owner,locale,salutation\n\
         Pierre Martin,pierre@example.com,rep@corp.test,fr,\n\
         李娜,li@example.com,rep@corp.test,zh_Hans_CN,\n",
    )
    .unwrap();
    nudge.cli(&["contact", "import", csv.to_str().unwrap()]);
    let shown = nudge.cli(&["contact", "show", "wang@example.com"]);
    assert!(shown.contains("addressed as 王总"), "{shown}");
    nudge.start();
    // By the API: en-GB is English, addressed as Dr. Smith.
    let (status, body) = nudge.http(
        "POST",
        "/contacts",
        Some(
            r#"{"name": "John Smith", "salutation": "Dr. Smith", "company": "Acme", "email": "smith@example.com",
                "owner": "rep@corp.test", "locale": "en-GB"}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");

    for who in ["wang", "smith", "pierre", "li"] {
        nudge.cli(&["inquiry", "add", &format!("{who}@example.com")]);
    }
    let wang = smtp.wait_for("wang@example.com", "感谢您的询盘");
    assert_eq!(wang.subject, "王总，感谢您的询盘");
    assert!(wang.text.starts_with("王总，您好！"), "{}", wang.text);
    assert!(wang.html.contains("王总，您好！"), "{}", wang.html);
    let smith = smtp.wait_for("smith@example.com", "thank you for your inquiry");
    assert_eq!(smith.subject, "Dr. Smith, thank you for your inquiry");
    assert!(smith.text.starts_with("Dear Dr. Smith,"), "{}", smith.text);
    let pierre = smtp.wait_for("pierre@example.com", "thank you for your inquiry");
    assert!(pierre.text.starts_with("Hello Pierre Martin,"), "{}", pierre.text);
    let li = smtp.wait_for("li@example.com", "感谢您的询盘");
    assert_eq!(li.subject, "李娜，感谢您的询盘");
    assert!(li.text.starts_with("李娜，您好！"), "{}", li.text);

    // A salutation learnt later, by the CLI and by the API, is kept in the history.
    nudge.cli(&["contact", "edit", "li@example.com", "--salutation", "李经理"]);
    let (status, body) = nudge.http(
        "PATCH",
        "/contacts/smith@example.com",
        Some(r#"{"salutation": "Professor Smith"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (_, card) = nudge.http("GET", "/contacts/li@example.com", None);
    assert_eq!(card["contact"]["salutation"], "李经理", "{card:#}");
    let history = card["history"].to_string();
    assert!(history.contains("salutation") && history.contains("李经理"), "{card:#}");

    for who in ["wang", "smith", "pierre", "li"] {
        nudge.cli(&["stage", "set", &format!("{who}@example.com"), "intent"]);
    }
    let wang = smtp.wait_for("wang@example.com", "准备的方案");
    assert_eq!(wang.subject, "王总，这是为华星贸易准备的方案");
    assert!(wang.text.contains("王总，您好！"), "{}", wang.text);
    assert!(
        wang.text.contains("我们可以为您提供免费样品和首单优惠。"),
        "{}",
        wang.text
    );
    assert!(!wang.text.contains("free samples"), "{}", wang.text);
    let li = smtp.wait_for("li@example.com", "准备的方案");
    assert_eq!(li.subject, "李经理，这是为您准备的方案");
    assert!(li.text.starts_with("李经理，您好！"), "{}", li.text);
    let smith = smtp.wait_for("smith@example.com", "a proposal for");
    assert_eq!(smith.subject, "Professor Smith, a proposal for Acme");
    assert!(smith.text.starts_with("Dear Professor Smith,"), "{}", smith.text);
    assert!(
        smith.text.contains("offer you free samples and a first-order discount"),
        "{}",
        smith.text
    );
    let pierre = smtp.wait_for("pierre@example.com", "a proposal for");
    assert!(pierre.text.starts_with("Hello Pierre Martin,"), "{}", pierre.text);
    nudge.stop();
}

const NEWS_TEMPLATES: &str = r#"
[news]
channel = "email"

[news.zh]
subject = "{{ contact.salutation or contact.name }}，本月动态"
text = "{{ contact.salutation or contact.name }}，您好！本月我们有新品上市。"

[news.en]
subject = "{{ contact.name }}, this month's news"
text = "Hello {{ contact.name }}, we have new products this month."
"#;

/// A marketing workflow whose text-only template does not show the unsubscribe link.
fn install_news(nudge: &Nudge) {
    nudge.write_workflow("templates/news.toml", NEWS_TEMPLATES);
    nudge.write_workflow(
        "news.toml",
        "category = \"marketing\"\n[trigger]\non = \"stage_changed\"\nto = \"loyal\"\n\
         [[steps]]\nsend = { channel = \"email\", template = \"news\" }\n",
    );
}

#[test]
fn the_footer_the_daemon_adds_speaks_the_language_of_the_mail_and_text_only_mail_is_not_tracked() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    install_news(&nudge);
    for (name, email, locale) in [
        ("张丽", "zhang@example.com", "ZH"),
        ("Ann Lee", "ann@example.com", "en-US"),
    ] {
        nudge.cli(&["contact", "add", "--name", name, "--email", email, "--locale", locale]);
    }
    nudge.start();
    nudge.cli(&["stage", "set", "zhang@example.com", "loyal"]);
    nudge.cli(&["stage", "set", "ann@example.com", "loyal"]);
    let zh = smtp.wait_for("zhang@example.com", "本月动态");
    assert!(zh.text.contains("张丽，您好！"), "{}", zh.text);
    let last_line = |text: &str| {
        text.lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .to_string()
    };
    let footer = last_line(&zh.text);
    assert!(
        footer.starts_with("退订：http") && footer.contains("/unsubscribe/"),
        "{}",
        zh.text
    );
    assert!(!zh.text.contains("Unsubscribe"), "{}", zh.text);
    let en = smtp.wait_for("ann@example.com", "this month's news");
    assert!(last_line(&en.text).starts_with("Unsubscribe: http"), "{}", en.text);
    nudge.settle();

    // Neither message had an HTML part to track: no open rate of 0 %.
    let news = workflow_figures(&report(&nudge), "news");
    assert_eq!(news["delivered"], 2, "{news:#}");
    assert_eq!(news["tracked"], false, "{news:#}");
    assert_eq!(news["open_rate_percent"], Value::Null, "{news:#}");
    assert_eq!(news["click_rate_percent"], Value::Null, "{news:#}");
    let table = nudge.cli(&["report", "--from", "2026-11-23", "--to", "2026-11-23"]);
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("news"))
        .unwrap_or_default();
    assert!(row.contains("not tracked") && !row.contains("0.0 %"), "{table}");
    nudge.stop();
}

#[test]
fn the_nurture_mail_is_html_with_its_pixel_and_tracked_links_and_its_open_is_reported() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let mut nudge = Nudge::new(&smtp, MONDAY_10AM);
    let path = nudge.path("workflows/nurture-leads.toml");
    let shipped = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, shipped.replace("enabled = false", "enabled = true")).unwrap();
    nudge.cli(&[
        "contact",
        "add",
        "--name",
        "赵敏",
        "--salutation",
        "赵女士",
        "--email",
        "zhao@example.com",
        "--locale",
        "zh-CN",
    ]);
    nudge.start();
    let mail = smtp.wait_for("zhao@example.com", "我们能为");
    assert_eq!(mail.subject, "赵女士，我们能为您做些什么");
    assert!(mail.html.contains("赵女士，您好！"), "{}", mail.html);
    let opens = tracked_paths(&mail.html, "o");
    assert_eq!(opens.len(), 1, "one pixel: {}", mail.html);
    assert_eq!(tracked_paths(&mail.html, "c").len(), 1, "{}", mail.html);
    assert!(
        !mail.html.contains("example.com/products"),
        "the link goes through the redirect: {}",
        mail.html
    );
    // The text part, derived from the HTML, keeps the real link and the Chinese unsubscribe line.
    assert!(mail.text.contains("赵女士，您好！"), "{}", mail.text);
    assert!(mail.text.contains("https://example.com/products"), "{}", mail.text);
    assert!(
        mail.text.contains("退订") && mail.text.contains("/unsubscribe/"),
        "{}",
        mail.text
    );
    nudge.settle();

    let nurture = workflow_figures(&report(&nudge), "nurture-leads");
    assert_eq!(
        (nurture["opened"].as_i64(), nurture["tracked"].as_bool()),
        (Some(0), Some(true)),
        "{nurture:#}"
    );
    assert_eq!(nurture["open_rate_percent"], 0.0, "{nurture:#}");
    let (status, _, body) = nudge.get_raw(&opens[0]);
    assert_eq!(status, 200);
    assert!(body.starts_with(b"GIF89a"));
    let nurture = workflow_figures(&report(&nudge), "nurture-leads");
    assert_eq!(nurture["opened"], 1, "{nurture:#}");
    assert_eq!(nurture["open_rate_percent"], 100.0, "{nurture:#}");
    nudge.stop();
}

#[test]
fn check_warns_about_a_language_contacts_have_that_a_template_lacks() {
    let tmp = scratch();
    let smtp = SmtpServer::start(tmp.path());
    let nudge = Nudge::new(&smtp, MONDAY_10AM);
    for (name, locale) in [
        ("Sato", "ja-JP"),
        ("Suzuki", "ja"),
        ("Wang", "zh-CN"),
        ("Paul", "fr_FR"),
    ] {
        let email = format!("{}@example.com", name.to_lowercase());
        nudge.cli(&["contact", "add", "--name", name, "--email", &email, "--locale", locale]);
    }
    let (ok, out, err) = nudge.try_cli(&["check"]);
    assert!(ok, "a missing language is a warning, not a failure: {out}{err}");
    assert!(
        err.contains("warning: template `inquiry_thanks` has no `ja`: 2 contact(s) with that language get `en`"),
        "{err}"
    );
    assert!(
        err.contains("template `reactivation` has no `fr`: 1 contact(s)"),
        "{err}"
    );
    assert!(!err.contains("has no `zh`") && !err.contains("new_lead"), "{err}");

    // A template in several languages must have the default one: an error with its place.
    nudge.write_workflow(
        "templates/extra.toml",
        "[greeting]\nchannel = \"email\"\n\n[greeting.zh]\nsubject = \"您好\"\ntext = \"您好\"\n",
    );
    let (ok, _, err) = nudge.try_cli(&["check"]);
    assert!(!ok);
    assert!(
        err.contains("templates/extra.toml:1:2: template `greeting` has no `en`, the default language"),
        "{err}"
    );
}
