//! A row of a contacts CSV: the fields of `nudge contact add` (tags separated by
//! `;`). A contact known already is left as it is: by email, or without an email
//! by phone, or without either by name and company, so a re-import adds nobody twice.

use super::{Row, RowKind, RowOutcome};
use crate::store::{self, NewContact, Tx};

pub struct Contacts {
    pub now: i64,
}

impl RowKind for Contacts {
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "company",
        "email",
        "phone",
        "owner",
        "stage",
        "intent_grade",
        "value_tier",
        "tags",
        "source",
        "time_zone",
        "locale",
        "consent",
    ];
    const REQUIRED: &'static [&'static str] = &["name"];
    const NO_QUOTES: &'static [&'static str] = &[
        "email",
        "phone",
        "owner",
        "stage",
        "intent_grade",
        "value_tier",
        "time_zone",
        "locale",
        "consent",
    ];

    async fn import(&mut self, tx: &mut Tx, row: &Row<'_>) -> anyhow::Result<RowOutcome> {
        let new = NewContact {
            name: row.text("name"),
            company: row.text("company"),
            email: row.owned("email"),
            phone: row.owned("phone"),
            owner: row.text("owner"),
            stage: row.owned("stage"),
            intent_grade: row.owned("intent_grade"),
            value_tier: row.owned("value_tier"),
            tags: row
                .get("tags")
                .map(|t| {
                    t.split(';')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            source: row.text("source"),
            time_zone: row.owned("time_zone"),
            locale: row.owned("locale"),
            consent: row.owned("consent"),
        };
        if store::contact_exists(tx, &new).await? {
            return Ok(RowOutcome::AlreadyPresent);
        }
        store::insert_contact(tx, &new, self.now).await?;
        Ok(RowOutcome::Added)
    }
}
