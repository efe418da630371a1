//! `schedule_follow_up`: sets the contact's next follow-up date, a fixed span
//! or one looked up in a cadence table by a contact field. When the date
//! passes with nothing logged, a `follow_up_due` timer makes it overdue. A
//! cadence that gives the contact's value a window (`at`), or a fixed span with
//! a `window`, moves the date to that window's next opening in the contact's zone.

use anyhow::Context as _;
use jiff::Span;

use super::{Applying, Outcome};
use crate::model::add_span;
use crate::store;
use crate::workflow::{FollowUpAfter, SendWindow, Window};

pub(super) async fn apply(
    tx: &mut store::Conn,
    at: &Applying<'_>,
    after: &FollowUpAfter,
    window: Option<&SendWindow>,
    goal: &Option<String>,
) -> anyhow::Result<Outcome> {
    let (span, window) = match after {
        FollowUpAfter::Fixed(span) => {
            let name = at.set.window_name(window, |field| at.contact.cadence_key(field));
            (Some(*span), name)
        }
        FollowUpAfter::Cadence(name) => {
            let cadence = at.set.cadences.get(name).context("cadence missing")?;
            let key = at.contact_ctx.get(&cadence.by).and_then(|v| v.as_str());
            (cadence.interval_for(key), cadence.window_for(key))
        }
    };
    let window = window.and_then(|w| at.set.sending.windows.get(w));
    let detail = match span {
        Some(span) => {
            let next = due_at(at.now, span, window, &at.contact.time_zone);
            store::set_next_follow_up(tx, at.contact.id, Some(next), goal.as_deref(), at.now).await?;
            format!("next follow-up {}", crate::clock::display_ms(next))
        }
        None => "skipped: the cadence has no interval for this contact".into(),
    };
    Ok(Outcome::Done(detail))
}

/// When a follow-up set at `now` falls due: `span` later in the contact's zone
/// (a day is a civil day across a DST change), then, with a window (docs/domain.md
/// §2, best time), at its first opening from there in the same zone.
fn due_at(now: i64, span: Span, window: Option<&Window>, time_zone: &str) -> i64 {
    let next = add_span(now, span, time_zone);
    let (Some(window), Ok(at)) = (window, jiff::Timestamp::from_millisecond(next)) else {
        return next;
    };
    let tz = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    window.next_open(at, &tz).as_millisecond()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::steps::fixture::{DAY, Fixture, START, workflow};

    #[tokio::test]
    async fn a_fixed_span_sets_the_next_follow_up_and_its_goal() {
        let step = "schedule_follow_up = { in = \"3d\", goal = \"Send the quote\" }";
        let f = Fixture::new(vec![workflow("plan", "", &[step])]).await;
        let li = f.contact(json!({ "email": "li@test.example" })).await;
        f.event(crate::store::EventKind::InquiryReceived, li).await;
        f.settle().await;
        let (at, goal): (i64, String) = f
            .row("SELECT next_follow_up_at, next_goal FROM contacts WHERE id = ?", li)
            .await;
        assert_eq!((at, goal.as_str()), (START + 3 * DAY, "Send the quote"));
        assert_eq!(f.run_of(li).await.0, "done");
    }

    #[tokio::test]
    async fn a_cadence_looks_the_span_up_by_the_contacts_field() {
        let cadences = "[intent]\nby = \"intent_grade\"\nevery = { A = \"3d\", B = \"7d\" }\n";
        let f = Fixture::new(vec![
            workflow("plan", "", &["schedule_follow_up = { cadence = \"intent\" }"]),
            ("workflows/cadences.toml".into(), cadences.into()),
        ])
        .await;
        let a = f
            .contact(json!({ "email": "a@test.example", "intent_grade": "A" }))
            .await;
        let none = f.contact(json!({ "email": "n@test.example" })).await;
        for contact in [a, none] {
            f.event(crate::store::EventKind::InquiryReceived, contact).await;
        }
        f.settle().await;
        let (at,): (Option<i64>,) = f.row("SELECT next_follow_up_at FROM contacts WHERE id = ?", a).await;
        assert_eq!(at, Some(START + 3 * DAY));
        let (at,): (Option<i64>,) = f.row("SELECT next_follow_up_at FROM contacts WHERE id = ?", none).await;
        assert_eq!(at, None);
        let skipped = vec!["skipped: the cadence has no interval for this contact".to_string()];
        assert_eq!(f.run_of(none).await, ("done".into(), skipped));
    }

    /// The shipped windows of the intent grades (workflows/sending.toml).
    const SENDING: &str = r#"
[[windows.weekday_mornings]]
days = ["mon-fri"]
hours = ["09:00-12:00"]
[[windows.weekday_afternoons]]
days = ["mon-fri"]
hours = ["14:00-18:00"]
[[windows.weekends_or_evenings]]
days = ["sat-sun"]
hours = ["10:00-20:00"]
[[windows.weekends_or_evenings]]
days = ["mon-fri"]
hours = ["19:00-21:00"]
"#;

    fn due(now: &str, span: &str, window: Option<&str>, zone: &str) -> String {
        let files = vec![("workflows/sending.toml".to_string(), SENDING.to_string())];
        let set = crate::workflow::WorkflowSet::compile(files, &["email".to_string()]).unwrap();
        let window = window.map(|w| &set.sending.windows[w]);
        let now = now.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let span = crate::model::parse_duration(span).unwrap();
        let at = super::due_at(now, span, window, zone);
        jiff::Timestamp::from_millisecond(at).unwrap().to_string()
    }

    #[test]
    fn each_grade_falls_due_at_its_windows_first_opening_in_the_contacts_zone() {
        // Friday 2027-01-15 03:00 in Shanghai (Thursday 19:00Z): an awkward hour.
        let now = "2027-01-14T19:00:00Z";
        let sh = "Asia/Shanghai";
        // A: 3 days on is Monday 03:00 -> Monday 09:00 local.
        assert_eq!(due(now, "3d", Some("weekday_mornings"), sh), "2027-01-18T01:00:00Z");
        // B: 7 days on is Friday 03:00 -> Friday 14:00 local.
        assert_eq!(due(now, "7d", Some("weekday_afternoons"), sh), "2027-01-22T06:00:00Z");
        // C: 15 days on is Saturday 03:00 -> Saturday 10:00 local.
        assert_eq!(
            due(now, "15d", Some("weekends_or_evenings"), sh),
            "2027-01-30T02:00:00Z"
        );
        // Without a window, exactly the interval later.
        assert_eq!(due(now, "3d", None, sh), "2027-01-17T19:00:00Z");
        // Inside the window already: the interval is not lengthened.
        assert_eq!(
            due("2027-01-15T02:00:00Z", "3d", Some("weekday_mornings"), sh),
            "2027-01-18T02:00:00Z"
        );
    }

    #[test]
    fn a_morning_after_the_window_closed_waits_over_the_weekend() {
        // Friday 16:00 in Shanghai + 3 days = Monday 16:00, after the mornings: Tuesday 09:00.
        let due_a = due("2027-01-15T08:00:00Z", "3d", Some("weekday_mornings"), "Asia/Shanghai");
        assert_eq!(due_a, "2027-01-19T01:00:00Z");
        // Wednesday 20:00 + 3 days = Saturday: no weekday morning until Monday 09:00.
        let due_a = due("2027-01-13T12:00:00Z", "3d", Some("weekday_mornings"), "Asia/Shanghai");
        assert_eq!(due_a, "2027-01-18T01:00:00Z");
    }

    #[test]
    fn days_and_windows_are_local_across_a_dst_change() {
        let ny = "America/New_York";
        // Thursday 2027-03-11 03:00 EST; clocks go forward on Sunday 2027-03-14.
        let now = "2027-03-11T08:00:00Z";
        // Three civil days: Sunday 03:00 EDT (07:00Z), not 72 hours (08:00Z).
        assert_eq!(due(now, "3d", None, ny), "2027-03-14T07:00:00Z");
        // A: Monday 09:00 EDT = 13:00Z (it was 14:00Z the week before).
        assert_eq!(due(now, "3d", Some("weekday_mornings"), ny), "2027-03-15T13:00:00Z");
        // Clocks go back on Sunday 2027-11-07: Thursday 19:30 EDT + 3 days = Sunday
        // 19:30 EST, inside the weekend window, at 00:30Z.
        assert_eq!(
            due("2027-11-04T23:30:00Z", "3d", Some("weekends_or_evenings"), ny),
            "2027-11-08T00:30:00Z"
        );
    }

    #[tokio::test]
    async fn a_cadence_with_windows_puts_the_follow_up_in_the_contacts_window() {
        let cadences = "[intent]\nby = \"intent_grade\"\nevery = { A = \"3d\" }\nat = { A = \"weekday_mornings\" }\n";
        let f = Fixture::new(vec![
            workflow("plan", "", &["schedule_follow_up = { cadence = \"intent\" }"]),
            ("workflows/cadences.toml".into(), cadences.into()),
            ("workflows/sending.toml".into(), SENDING.into()),
        ])
        .await;
        let a = f
            .contact(json!({ "email": "a@test.example", "intent_grade": "A", "time_zone": "Asia/Shanghai" }))
            .await;
        f.event(crate::store::EventKind::InquiryReceived, a).await;
        f.settle().await;
        let (at,): (Option<i64>,) = f.row("SELECT next_follow_up_at FROM contacts WHERE id = ?", a).await;
        // Friday 16:00 in Shanghai + 3 days is Monday 16:00: Tuesday 09:00 local.
        let tuesday_nine = "2027-01-19T01:00:00Z".parse::<jiff::Timestamp>().unwrap();
        assert_eq!(at, Some(tuesday_nine.as_millisecond()));
    }

    #[tokio::test]
    async fn a_fixed_span_with_a_window_by_cadence_falls_in_the_grades_window() {
        let cadences = "[intent]\nby = \"intent_grade\"\nevery = { B = \"7d\" }\nat = { B = \"weekday_afternoons\" }\n";
        let step = "schedule_follow_up = { in = \"2d\", window = { cadence = \"intent\" } }";
        let f = Fixture::new(vec![
            workflow("plan", "", &[step]),
            ("workflows/cadences.toml".into(), cadences.into()),
            ("workflows/sending.toml".into(), SENDING.into()),
        ])
        .await;
        let b = f
            .contact(json!({ "email": "b@test.example", "intent_grade": "B", "time_zone": "Asia/Shanghai" }))
            .await;
        let none = f
            .contact(json!({ "email": "n@test.example", "time_zone": "Asia/Shanghai" }))
            .await;
        for contact in [b, none] {
            f.event(crate::store::EventKind::InquiryReceived, contact).await;
        }
        f.settle().await;
        // Friday 16:00 in Shanghai + 2 days is Sunday: Monday 14:00 local.
        let (at,): (Option<i64>,) = f.row("SELECT next_follow_up_at FROM contacts WHERE id = ?", b).await;
        let monday_two = "2027-01-18T06:00:00Z".parse::<jiff::Timestamp>().unwrap();
        assert_eq!(at, Some(monday_two.as_millisecond()));
        // No grade, no window: exactly two days on.
        let (at,): (Option<i64>,) = f.row("SELECT next_follow_up_at FROM contacts WHERE id = ?", none).await;
        assert_eq!(at, Some(START + 2 * DAY));
    }
}
