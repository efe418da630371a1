//! A row of a follow-ups CSV: the fields of `nudge followup log`, with the
//! contact (id or email) and when it happened (`at`, required so that a second
//! import recognises the rows it already logged). Each row is logged as
//! `followup log --at` would: it answers inquiries, sets the next follow-up and
//! writes `follow_up_logged`.

use super::{Parser, Row, RowKind, RowOutcome};
use crate::app::{self, FollowUpInput, FollowUpLogged, NotFound, Repeats};
use crate::store::{self, Conn, Invalid};
use crate::workflow::ClassificationRules;

pub(crate) struct FollowUps<'a> {
    /// Re-classifies the customer (a follow-up is activity), when rules are loaded.
    pub(crate) rules: Option<&'a ClassificationRules>,
    pub(crate) now: i64,
}

impl RowKind for FollowUps<'_> {
    type Item = (String, FollowUpInput);

    const COLUMNS: &'static [&'static str] = &[
        "contact",
        "at",
        "channel",
        "summary",
        "feedback",
        "intent_grade",
        "attitude",
        "understanding",
        "stage",
        "next_follow_up",
        "next_goal",
        "result",
        "owner",
    ];
    const REQUIRED: &'static [&'static str] = &["contact", "at", "channel"];
    const NO_QUOTES: &'static [&'static str] = &[
        "contact",
        "at",
        "channel",
        "intent_grade",
        "attitude",
        "understanding",
        "stage",
        "next_follow_up",
        "result",
        "owner",
    ];
    /// Stored row by row, ten times slower than contacts: a batch is already ~0.3 s of lock.
    const ROWS_PER_COMMIT: usize = super::BATCH_ROWS;

    fn parser(&self) -> Parser<(String, FollowUpInput)> {
        Box::new(parse)
    }

    /// Row by row: a follow-up's effects (inquiries answered, the next follow-up,
    /// the stage) depend on the contact as the rows before left it.
    async fn store(
        &mut self,
        conn: &mut Conn,
        items: Vec<(String, FollowUpInput)>,
    ) -> anyhow::Result<Vec<Result<RowOutcome, String>>> {
        let mut outcomes = Vec::with_capacity(items.len());
        for (reference, input) in items {
            let logged = app::log_follow_up(conn, self.rules, &reference, input, Repeats::Skip, self.now).await;
            outcomes.push(match logged {
                Ok(FollowUpLogged::Added { .. }) => Ok(RowOutcome::Added),
                Ok(FollowUpLogged::AlreadyPresent) => Ok(RowOutcome::AlreadyPresent),
                Err(e) => match e.downcast::<Invalid>() {
                    Ok(invalid) => Err(invalid.0),
                    Err(e) => Err(e.downcast::<NotFound>()?.0),
                },
            });
        }
        Ok(outcomes)
    }
}

fn parse(row: &Row<'_>) -> Result<(String, FollowUpInput), String> {
    let input = FollowUpInput {
        at: row.owned("at"),
        channel: row.text("channel"),
        summary: row.text("summary"),
        feedback: row.text("feedback"),
        intent_grade: row.owned("intent_grade"),
        attitude: row.owned("attitude"),
        understanding: row.owned("understanding"),
        stage: row.owned("stage"),
        next_follow_up: row.owned("next_follow_up"),
        next_goal: row.owned("next_goal"),
        result: row
            .get("result")
            .map(|r| store::parse_field("result", r))
            .transpose()
            .map_err(|invalid| invalid.0)?,
        owner: row.owned("owner"),
    };
    Ok((row.text("contact"), input))
}
