//! A row of a contacts CSV: the fields of `nudge contact add` (tags separated by
//! `;`). A contact known already is left as it is: by email, or without an email
//! by phone, or without either by name and company, so a re-import adds nobody twice.

use super::{Parser, Row, RowKind, RowOutcome};
use crate::app;
use crate::store::{self, Conn, Invalid, NewContact};

pub(crate) struct Contacts {
    pub(crate) now: i64,
}

impl RowKind for Contacts {
    type Item = (NewContact, Result<(), Invalid>);

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
        "salutation",
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

    fn parser(&self) -> Parser<(NewContact, Result<(), Invalid>)> {
        Box::new(parse)
    }

    async fn store(
        &mut self,
        conn: &mut Conn,
        items: Vec<(NewContact, Result<(), Invalid>)>,
    ) -> anyhow::Result<Vec<Result<RowOutcome, String>>> {
        let added = app::add_contacts(conn, &items, self.now).await?;
        Ok(added
            .into_iter()
            .map(|added| {
                added.map(|added| {
                    if added {
                        RowOutcome::Added
                    } else {
                        RowOutcome::AlreadyPresent
                    }
                })
            })
            .collect())
    }
}

/// The row's contact and whether it is valid: a known contact is left alone even so.
fn parse(row: &Row<'_>) -> Result<(NewContact, Result<(), Invalid>), String> {
    let consent = row.get("consent").map(|c| store::parse_field("consent", c)).transpose();
    let new = NewContact {
        name: row.text("name"),
        salutation: row.text("salutation"),
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
        consent: consent.as_ref().ok().copied().flatten(),
    };
    // Texts are made one line first (an Excel cell may hold line breaks); a known
    // contact is still recognised if they cannot be.
    match consent.and_then(|_| new.clone().cleaned()) {
        Ok(clean) => Ok((clean, Ok(()))),
        Err(invalid) => Ok((new, Err(invalid))),
    }
}
