//! Enums stored as TEXT: the statuses and kinds that the store's columns hold.
//! Each variant's text is written once, here, and serde, sqlx and `as_str` all
//! use it, so a value on disk and the one a query compares with cannot drift
//! apart, and a misspelt status is a compile error instead of a row that no
//! query ever finds.

use super::Invalid;

/// Declares an enum stored as TEXT, each variant with its text on disk:
/// `Variant = "text"`. It (de)serialises, binds and decodes as that text, and
/// gets `as_str`, `FromStr`, `StoredText` (its texts, for `parse_field`) and
/// (for the tests) `ALL`; `Display` pads like a `str`.
macro_rules! stored_text {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, sqlx::Type)]
        // What PostgreSQL calls the type; SQLite binds and decodes it as a string.
        #[sqlx(type_name = "text")]
        $vis enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] #[sqlx(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            #[cfg(test)]
            pub(crate) const ALL: &[$name] = &[$($name::$variant),+];

            /// The text on disk.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl $crate::store::StoredText for $name {
            const TEXTS: &'static [&'static str] = &[$($text),+];
        }

        impl std::str::FromStr for $name {
            type Err = ();

            fn from_str(text: &str) -> Result<$name, ()> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

pub(super) use stored_text;

/// An enum declared with `stored_text!`: the texts it accepts, in order.
pub(crate) trait StoredText: std::str::FromStr<Err = ()> {
    const TEXTS: &'static [&'static str];
}

/// Parses what a person or a file gave for `field` (a CLI argument, an API
/// field, a CSV cell) into its enum, or says which values it takes.
pub(crate) fn parse_field<T: StoredText>(field: &str, text: &str) -> Result<T, Invalid> {
    text.parse().map_err(|()| {
        Invalid(format!(
            "unknown {field} `{text}`; expected one of: {}",
            T::TEXTS.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;
    use std::str::FromStr;

    use super::{StoredText, parse_field};
    use crate::store::{
        AttemptOutcome, BounceKind, Consent, ConsentScope, EngagementKind, EnrolmentStatus, EventKind, FollowUpResult,
        OutboxStatus, RunStatus, SuppressionReason, TimerKind,
    };

    fn round_trips<T: Copy + PartialEq + Debug + FromStr<Err = ()>>(all: &[T], text: fn(T) -> &'static str) {
        for &value in all {
            assert_eq!(text(value).parse(), Ok(value));
        }
    }

    #[test]
    fn every_stored_value_parses_back_from_its_text() {
        round_trips(AttemptOutcome::ALL, AttemptOutcome::as_str);
        round_trips(BounceKind::ALL, BounceKind::as_str);
        round_trips(Consent::ALL, Consent::as_str);
        round_trips(ConsentScope::ALL, ConsentScope::as_str);
        round_trips(EngagementKind::ALL, EngagementKind::as_str);
        round_trips(EnrolmentStatus::ALL, EnrolmentStatus::as_str);
        round_trips(EventKind::ALL, EventKind::as_str);
        round_trips(FollowUpResult::ALL, FollowUpResult::as_str);
        round_trips(OutboxStatus::ALL, OutboxStatus::as_str);
        round_trips(RunStatus::ALL, RunStatus::as_str);
        round_trips(SuppressionReason::ALL, SuppressionReason::as_str);
        round_trips(TimerKind::ALL, TimerKind::as_str);
    }

    #[test]
    fn consent_is_parsed_shown_and_refused_by_its_text() {
        assert_eq!(
            parse_field::<Consent>("consent", "withdrawn").ok(),
            Some(Consent::Withdrawn)
        );
        assert_eq!(format!("[{:<9}]", Consent::Granted), "[granted  ]");
        assert_eq!(
            serde_json::to_value(Consent::Unknown).ok(),
            Some(serde_json::json!("unknown"))
        );
        let refused = parse_field::<Consent>("consent", "Granted").map_err(|e| e.to_string());
        assert_eq!(
            refused,
            Err("unknown consent `Granted`; expected one of: granted, unknown, withdrawn".into())
        );
    }

    #[test]
    fn a_follow_up_result_is_parsed_shown_and_refused_by_its_text() {
        let parsed = parse_field::<FollowUpResult>("result", "needs_follow_up");
        assert_eq!(parsed.ok(), Some(FollowUpResult::NeedsFollowUp));
        assert_eq!(FollowUpResult::InProgress.to_string(), "in_progress");
        assert_eq!(
            serde_json::from_str::<FollowUpResult>("\"lost\"").ok(),
            Some(FollowUpResult::Lost)
        );
        let refused = parse_field::<FollowUpResult>("result", "maybe").map_err(|e| e.to_string());
        assert_eq!(
            refused,
            Err("unknown result `maybe`; expected one of: in_progress, won, needs_follow_up, lost".into())
        );
    }

    /// The texts a column of this name may hold, from the enums of the tables
    /// that have one (the migrations' CHECK lists say the same).
    fn stored_texts(column: &str) -> Option<Vec<&'static str>> {
        let texts = |all: &[&[&'static str]]| Some(all.concat());
        match column {
            "status" => texts(&[
                <OutboxStatus as StoredText>::TEXTS,
                <RunStatus as StoredText>::TEXTS,
                <EnrolmentStatus as StoredText>::TEXTS,
            ]),
            "kind" => texts(&[
                <TimerKind as StoredText>::TEXTS,
                <BounceKind as StoredText>::TEXTS,
                <EngagementKind as StoredText>::TEXTS,
                <EventKind as StoredText>::TEXTS,
            ]),
            "reason" => texts(&[<SuppressionReason as StoredText>::TEXTS]),
            "scope" => texts(&[<ConsentScope as StoredText>::TEXTS]),
            "outcome" => texts(&[<AttemptOutcome as StoredText>::TEXTS]),
            "consent" => texts(&[<Consent as StoredText>::TEXTS]),
            "result" => texts(&[<FollowUpResult as StoredText>::TEXTS]),
            "category" => texts(&[crate::model::Category::ALL]),
            _ => None,
        }
    }

    /// The quoted texts of `'a'` or `('a', 'b')` at the start of `sql`.
    fn quoted(sql: &str) -> Vec<&str> {
        let list = match sql.strip_prefix('(') {
            Some(inner) => &inner[..inner.find(')').unwrap_or(inner.len())],
            None => &sql[..sql[1..].find('\'').map_or(0, |q| q + 2)],
        };
        list.split(',')
            .filter_map(|t| t.trim().strip_prefix('\'')?.strip_suffix('\''))
            .collect()
    }

    /// Some queries compare a stored enum's column with a literal in the SQL
    /// rather than a bound value, where a partial index asks for it (`runs_ready`,
    /// `outbox_pending`: SQLite uses one only when the query's text implies its
    /// WHERE) or a report counts several values at once. CHECK lists catch a
    /// misspelt write, not a misspelt comparison, which would just match nothing:
    /// so every such literal in the source is one of the column's values.
    #[test]
    fn every_literal_a_query_compares_a_stored_enum_with_is_one_of_its_values() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src];
        let mut wrong = Vec::new();
        let mut seen = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for op in [" = ", " <> ", " != ", " IN ", " NOT IN "] {
                for (at, _) in source.match_indices(op) {
                    let before = &source[..at];
                    let column = &before[before
                        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .map_or(0, |i| i + 1)..];
                    let rest = &source[at + op.len()..];
                    let Some(allowed) = stored_texts(column) else { continue };
                    if !(rest.starts_with('\'') || rest.starts_with("('")) {
                        continue;
                    }
                    for text in quoted(rest) {
                        seen += 1;
                        if !allowed.contains(&text) {
                            wrong.push(format!("{}: {column}{op}'{text}'", path.display()));
                        }
                    }
                }
            }
        }
        assert!(
            seen > 20,
            "the scan found only {seen} literals: is it still reading the queries?"
        );
        assert!(wrong.is_empty(), "values no row can hold:\n{}", wrong.join("\n"));
    }
}
