//! The language a message speaks (docs/domain.md §7: templates in Chinese and
//! English). A template is written once per language (`[name.zh]`,
//! `[name.en]`); a contact reads the language its `locale` names, matched by
//! tag then by ever shorter prefixes of it (`zh_Hans_CN` → `zh-hans-cn`,
//! `zh-hans`, `zh`), else `language.toml`'s `default`. The same choice picks
//! the words the daemon itself adds to a message (the unsubscribe footer).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::Template;
use super::diagnostic::Diagnostic;
use super::parse::check::{Problems, at, serde_problem};

/// The file of the folder that holds the default language and the footers.
pub(crate) const LANGUAGE_FILE: &str = "language.toml";

/// `language.toml`, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Languages {
    /// The language of a contact whose locale none of a template's languages matches.
    pub(crate) default: String,
    /// The unsubscribe footer the daemon adds to marketing email that does not
    /// show its link, by language.
    pub(crate) footers: BTreeMap<String, Footer>,
}

/// An unsubscribe footer; `{url}` stands for the contact's unsubscribe link.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Footer {
    pub(crate) text: String,
    pub(crate) html: String,
}

impl Default for Languages {
    /// A folder without `language.toml`: English, as nudge has always written it.
    fn default() -> Languages {
        let footer = Footer {
            text: "Unsubscribe: {url}".into(),
            html: "Don't want these emails? <a href=\"{url}\">Unsubscribe</a>.".into(),
        };
        Languages {
            default: "en".into(),
            footers: BTreeMap::from([("en".to_string(), footer)]),
        }
    }
}

impl Languages {
    /// The footer for a message in `language` (a template's language, or the
    /// contact's locale for a template written once for everyone).
    pub(crate) fn footer(&self, language: &str) -> Option<&Footer> {
        let picked = pick(language, self.footers.keys().map(String::as_str), &self.default)?;
        self.footers.get(picked)
    }
}

/// A language tag as nudge compares it: lower case, `_` written `-`.
pub(crate) fn normalise(tag: &str) -> String {
    tag.trim().replace('_', "-").to_ascii_lowercase()
}

/// Whether `key` reads as a language tag (`zh`, `en-GB`, `zh_Hant_TW`): a
/// primary subtag of 2 or 3 letters, then subtags of 1 to 8 letters or digits.
pub(crate) fn is_tag(key: &str) -> bool {
    let tag = normalise(key);
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or_default();
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Which of `available` (normalised tags) a contact with `locale` reads: the
/// locale's own tag, then it shortened one subtag at a time, then `default`
/// if available. None when nothing matches and the default is not there.
pub(crate) fn pick<'a>(
    locale: &str,
    available: impl Iterator<Item = &'a str> + Clone,
    default: &str,
) -> Option<&'a str> {
    let find = |tag: &str| available.clone().find(|a| *a == tag);
    let mut tag = normalise(locale);
    loop {
        if let Some(found) = find(&tag) {
            return Some(found);
        }
        match tag.rfind('-') {
            Some(cut) => tag.truncate(cut),
            None => break,
        }
    }
    find(&normalise(default))
}

impl Template {
    /// The languages it is written in (none for a template written once for everyone).
    pub(crate) fn languages(&self) -> impl Iterator<Item = &str> + Clone {
        self.texts.keys().map(String::as_str).filter(|l| !l.is_empty())
    }

    /// The language a contact with `locale` gets (`""` for a template written
    /// once for everyone) and the fields in it. `nudge check` makes sure every
    /// template in several languages has the default one.
    pub(crate) fn for_locale(&self, locale: &str, default: &str) -> (&str, &[(String, String)]) {
        let language = pick(locale, self.languages(), default).unwrap_or_default();
        match self.texts.get_key_value(language).or_else(|| self.texts.iter().next()) {
            Some((language, fields)) => (language, fields),
            None => ("", &[]),
        }
    }
}

/// A template that lacks a language some contacts have: they get the default.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Lacking {
    pub(crate) template: String,
    pub(crate) language: String,
    pub(crate) contacts: i64,
}

/// Which templates written in several languages lack a language of `locales`
/// (each locale with how many contacts have it), by its primary subtag: those
/// contacts read the default language instead, which `nudge check` warns about.
pub(crate) fn lacking<'a>(
    templates: impl Iterator<Item = &'a Template>,
    default: &str,
    locales: &[(String, i64)],
) -> Vec<Lacking> {
    let default = normalise(default);
    let mut found: BTreeMap<(String, String), i64> = BTreeMap::new();
    for template in templates.filter(|t| t.languages().next().is_some()) {
        for (locale, contacts) in locales {
            let tag = normalise(locale);
            let primary = tag.split('-').next().unwrap_or_default();
            let default_primary = default.split('-').next().unwrap_or_default();
            if primary.is_empty() || primary == default_primary || pick(&tag, template.languages(), "").is_some() {
                continue;
            }
            *found.entry((template.name.clone(), primary.to_string())).or_default() += contacts;
        }
    }
    found
        .into_iter()
        .map(|((template, language), contacts)| Lacking {
            template,
            language,
            contacts,
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLanguages {
    default: Spanned<String>,
    #[serde(default)]
    footer: BTreeMap<Spanned<String>, Spanned<Footer>>,
}

pub(super) fn parse(path: &str, source: &str, problems: &mut Problems) -> Languages {
    let raw: RawLanguages = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(serde_problem(path, e));
            return Languages::default();
        }
    };
    let bad_tag = |key: &Spanned<String>| {
        Diagnostic::new(path, at(key), format!("`{}` is not a language tag", key.get_ref()))
            .help("write a language as a tag of 2 or 3 letters, perhaps with a region: zh, en, zh-TW, en-GB")
    };
    if !is_tag(raw.default.get_ref()) {
        problems.push(bad_tag(&raw.default));
    }
    let default = normalise(raw.default.get_ref());
    let mut footers = BTreeMap::new();
    for (tag, footer) in raw.footer {
        if !is_tag(tag.get_ref()) {
            problems.push(bad_tag(&tag));
            continue;
        }
        let span = at(&footer);
        let footer = footer.into_inner();
        if !footer.text.contains("{url}") || !footer.html.contains("{url}") {
            problems.push(
                Diagnostic::new(
                    path,
                    span,
                    format!("the `{}` footer does not show the link", tag.get_ref()),
                )
                .help("write `{url}` where the unsubscribe link goes, in both `text` and `html`"),
            );
        }
        footers.insert(normalise(tag.get_ref()), footer);
    }
    if !footers.contains_key(&default) {
        problems.push(
            Diagnostic::new(
                path,
                at(&raw.default),
                format!("no `[footer.{default}]` for the default language"),
            )
            .help(format!(
                "add `[footer.{default}]` with `text` and `html`: a contact whose language has no footer gets that one"
            )),
        );
    }
    Languages { default, footers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locale_finds_its_language_by_tag_then_by_prefix_then_the_default() {
        let available = ["en", "zh", "zh-tw"];
        let pick = |locale: &str| pick(locale, available.iter().copied(), "en");
        assert_eq!(pick("zh"), Some("zh"));
        assert_eq!(pick("zh-CN"), Some("zh"));
        assert_eq!(pick("zh_Hans_CN"), Some("zh"));
        assert_eq!(pick("ZH"), Some("zh"));
        assert_eq!(pick("zh-TW"), Some("zh-tw"));
        assert_eq!(
            pick("zh_Hant_TW"),
            Some("zh"),
            "zh-hant-tw shortens to zh-hant, then zh"
        );
        assert_eq!(pick("en-GB"), Some("en"));
        assert_eq!(pick("fr"), Some("en"));
        assert_eq!(pick(""), Some("en"));
        assert_eq!(super::pick("fr", ["zh"].into_iter(), "en"), None);
    }

    #[test]
    fn templates_lacking_a_language_of_the_contacts_are_found() {
        let template = |name: &str, languages: &[&str]| Template {
            name: name.into(),
            channel: "email".into(),
            texts: languages.iter().map(|l| (l.to_string(), Vec::new())).collect(),
            reads_vars: Default::default(),
        };
        let templates = [
            template("hello", &["zh", "en"]),
            template("bye", &["en"]),
            template("owner", &[""]),
        ];
        let locales = [
            ("zh-CN".to_string(), 2),
            ("zh".into(), 1),
            ("fr".into(), 4),
            ("en-GB".into(), 7),
            ("".into(), 1),
        ];
        let found = lacking(templates.iter(), "en", &locales);
        let found: Vec<(&str, &str, i64)> = found
            .iter()
            .map(|l| (l.template.as_str(), l.language.as_str(), l.contacts))
            .collect();
        assert_eq!(found, [("bye", "fr", 4), ("bye", "zh", 3), ("hello", "fr", 4)]);
    }

    #[test]
    fn language_tags_are_told_from_other_keys() {
        for tag in ["zh", "en", "en-GB", "zh_Hant_TW", "ZH", "yue"] {
            assert!(is_tag(tag), "{tag}");
        }
        for key in ["params", "subject", "z", "e1", "zh--cn", "zh-", ""] {
            assert!(!is_tag(key), "{key}");
        }
    }
}
