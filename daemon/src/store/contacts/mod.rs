//! Contacts and the changes made to them. Every change that a workflow may react
//! to writes its event in the same transaction. Here: what a contact is and
//! which values it accepts; `read` finds contacts, `insert` adds them, `stage`
//! moves them through the lifecycle, `fields` sets the rest.

mod fields;
mod insert;
mod read;
mod stage;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::types::Json;

pub(crate) use fields::*;
pub use insert::*;
pub(crate) use read::*;
pub(super) use read::{contacts_json_sql, parse_contact_rows, with_contexts};
pub use stage::*;

use super::stored_text::stored_text;
use crate::model::{INTENT_GRADES, STAGES, TIERS};

stored_text! {
    /// Whether the contact agreed to be written to (docs/domain.md §5); a
    /// withdrawal stops all their customer-facing email. Public: `NewContact` holds it.
    pub enum Consent {
        Granted = "granted",
        Unknown = "unknown",
        Withdrawn = "withdrawn",
    }
}

/// A contact as stored.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct Contact {
    pub(crate) id: i64,
    pub(crate) name: String,
    /// How messages address the contact (王总, 张女士, Dr. Smith); empty: by name.
    #[serde(default)]
    pub(crate) salutation: String,
    pub(crate) company: String,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) owner: String,
    pub(crate) stage: String,
    pub(crate) intent_grade: Option<String>,
    pub(crate) value_tier: Option<String>,
    pub(crate) tags: Json<Vec<String>>,
    pub(crate) source: String,
    pub(crate) time_zone: String,
    pub(crate) locale: String,
    pub(crate) consent: Consent,
    pub(crate) next_follow_up_at: Option<i64>,
    pub(crate) next_goal: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// Computed from orders (classification.toml): A / B / C and the scores behind it.
    pub(crate) rfm_grade: Option<String>,
    pub(crate) rfm_scores: Option<String>,
    /// Computed: active / dormant / churned; none before the first order.
    pub(crate) behaviour: Option<String>,
    /// The date of the first order (YYYY-MM-DD); none for a contact who never ordered.
    pub(crate) customer_since: Option<String>,
    /// Set through follow-ups: doubting / accepting, vague / specific, and the funnel stage they make.
    pub(crate) attitude: Option<String>,
    pub(crate) understanding: Option<String>,
    pub(crate) funnel_stage: Option<String>,
}

/// What a new contact is made of; everything but the name is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    pub name: String,
    /// How messages address the contact: 王总, 张女士, Dr. Smith.
    #[serde(default)]
    pub salutation: String,
    #[serde(default)]
    pub company: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    #[serde(default)]
    pub owner: String,
    pub stage: Option<String>,
    pub intent_grade: Option<String>,
    pub value_tier: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub source: String,
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    pub consent: Option<Consent>,
}

/// How a contact is addressed and in which language: what `contact edit` and
/// `PATCH /contacts/{contact}` change (a field left out stays as it is).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactEdit {
    pub salutation: Option<String>,
    pub locale: Option<String>,
}

impl NewContact {
    /// The stage the contact starts at.
    pub(crate) fn first_stage(&self) -> &str {
        self.stage.as_deref().unwrap_or("lead")
    }
}

/// A value a person or a file gave that nudge cannot accept.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Invalid(pub(crate) String);

/// Whether `stage` is one of the lifecycle stages.
pub(crate) fn check_stage(stage: &str) -> Result<(), Invalid> {
    check(stage, STAGES, "stage")
}

pub(in crate::store) fn check(value: &str, allowed: &[&str], what: &str) -> Result<(), Invalid> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "unknown {what} `{value}`; expected one of: {}",
            allowed.join(", ")
        )))
    }
}

/// A one-line text as a person typed it or a file held it (a name, a company):
/// line breaks, tabs and Unicode line and paragraph separators (Excel's
/// multi-line cells, a pasted address) become one space and the ends are
/// trimmed. NUL and the other control characters, which no name has and which
/// would break the headers of a message that names it, are refused.
pub(crate) fn one_line(field: &str, text: &str) -> Result<String, Invalid> {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    no_control_characters(field, &out)?;
    Ok(out)
}

/// Refuses a text with a control character, naming the field and where it is.
pub(crate) fn no_control_characters(field: &str, text: &str) -> Result<(), Invalid> {
    let bad = |c: &char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    match text.chars().position(|c| bad(&c)) {
        None => Ok(()),
        Some(at) => {
            let c = text.chars().find(bad).unwrap_or_default();
            Err(Invalid(format!(
                "`{field}` has a control character (U+{:04X}) at character {}; remove it",
                u32::from(c),
                at + 1
            )))
        }
    }
}

/// An owner is the email address that gets new-lead notes, overdue reminders and
/// SLA escalations: anything else would make them reach nobody.
pub(crate) fn check_owner(owner: &str) -> Result<(), Invalid> {
    if owner.parse::<lettre::Address>().is_err() {
        return Err(Invalid(format!(
            "`owner`: `{owner}` is not an email address; give the address that gets the contact's reminders, e.g. rep@example.com"
        )));
    }
    Ok(())
}

impl NewContact {
    /// The contact with its texts made one line (see `one_line`), then validated.
    pub(crate) fn cleaned(mut self) -> Result<NewContact, Invalid> {
        self.name = one_line("name", &self.name)?;
        self.salutation = one_line("salutation", &self.salutation)?;
        self.company = one_line("company", &self.company)?;
        self.source = one_line("source", &self.source)?;
        self.owner = self.owner.trim().to_string();
        for tag in &mut self.tags {
            *tag = one_line("tags", tag)?;
        }
        self.validate()?;
        Ok(self)
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.name.trim().is_empty() {
            return Err(Invalid("a contact needs a name".into()));
        }
        for (field, text) in [
            ("name", &self.name),
            ("salutation", &self.salutation),
            ("company", &self.company),
            ("source", &self.source),
        ] {
            no_control_characters(field, text)?;
        }
        for tag in &self.tags {
            no_control_characters("tags", tag)?;
        }
        if !self.owner.is_empty() {
            check_owner(&self.owner)?;
        }
        if let Some(email) = &self.email
            && email.parse::<lettre::Address>().is_err()
        {
            return Err(Invalid(format!("`{email}` is not an email address")));
        }
        if let Some(s) = &self.stage {
            check(s, STAGES, "stage")?;
        }
        if let Some(g) = &self.intent_grade {
            check(g, INTENT_GRADES, "intent grade")?;
        }
        if let Some(t) = &self.value_tier {
            check(t, TIERS, "value tier")?;
        }
        if let Some(tz) = &self.time_zone
            && jiff::tz::TimeZone::get(tz).is_err()
        {
            return Err(Invalid(format!(
                "unknown time zone `{tz}`; use an IANA name like Asia/Shanghai"
            )));
        }
        Ok(())
    }
}

impl Contact {
    /// Whether the contact's own consent withholds a message of `category`: they
    /// stopped all email (consent withdrawn), which covers every customer-facing
    /// category and never internal mail. Scoped suppressions are checked apart.
    pub(crate) fn consent_withholds(&self, category: crate::model::Category) -> bool {
        self.consent == Consent::Withdrawn && super::ConsentScope::All.covers(category)
    }

    /// A field a cadence table can be keyed by (`workflow::CADENCE_KEYS`); none if unset.
    pub(crate) fn cadence_key(&self, field: &str) -> Option<String> {
        match field {
            "intent_grade" => self.intent_grade.clone(),
            "value_tier" => self.value_tier.clone(),
            "stage" => Some(self.stage.clone()),
            "source" => Some(self.source.clone()),
            _ => None,
        }
    }

    /// The contact as conditions and templates see it (see `workflow::contact_schema`).
    pub(crate) fn context(&self, follow_up_count: i64, order_count: i64) -> serde_json::Value {
        json!({
            "id": self.id, "name": self.name, "salutation": self.salutation, "company": self.company,
            "email": self.email.clone().unwrap_or_default(), "phone": self.phone.clone().unwrap_or_default(),
            "owner": self.owner, "stage": self.stage,
            "intent_grade": self.intent_grade.clone().unwrap_or_default(),
            "value_tier": self.value_tier.clone().unwrap_or_default(),
            "tags": self.tags.0, "source": self.source, "time_zone": self.time_zone, "locale": self.locale,
            "consent": self.consent, "follow_up_count": follow_up_count,
            "has_next_follow_up": self.next_follow_up_at.is_some(),
            "rfm_grade": self.rfm_grade.clone().unwrap_or_default(),
            "behaviour": self.behaviour.clone().unwrap_or_default(),
            "funnel_stage": self.funnel_stage.clone().unwrap_or_default(),
            "order_count": order_count,
        })
    }
}
