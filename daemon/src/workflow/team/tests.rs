use super::*;
use crate::model::parse_duration;

fn team(source: &str) -> Team {
    let mut problems = Problems::default();
    let team = parse("team.toml", source, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    team
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn ms(text: &str) -> i64 {
    at(text).as_millisecond()
}

const OFFICE: &str = r#"
holidays = ["2026-10-01"]

[[working_hours.office]]
days = ["mon-fri"]
hours = ["09:00-12:00", "13:00-18:00"]

[members."wang@corp.test"]
name = "Wang Fang"
time_zone = "Asia/Shanghai"
working_hours = "office"
holidays = ["2026-12-07"]
manager = "zhao@corp.test"

[members."zhao@corp.test"]
time_zone = "America/New_York"
working_hours = "office"

[members."li@corp.test"]

[roles]
key_accounts = ["wang@corp.test", "zhao@corp.test", "li@corp.test"]
"#;

#[test]
fn a_deadline_at_friday_closing_lands_on_the_next_working_morning() {
    let t = team(OFFICE);
    let zhao = t.member("zhao@corp.test").unwrap();
    // Friday 2026-12-04 17:50 in New York (22:50Z): 10 minutes that day, 5 on Monday.
    let deadline = zhao.add_business(ms("2026-12-04T22:50:00Z"), parse_duration("15m").unwrap());
    assert_eq!(deadline, ms("2026-12-07T14:05:00Z"), "Monday 09:05 EST");
    // The lunch break does not count.
    let deadline = zhao.add_business(ms("2026-12-08T16:50:00Z"), parse_duration("20m").unwrap());
    assert_eq!(deadline, ms("2026-12-08T18:10:00Z"), "11:50 + 10m, then 13:00 + 10m");
}

#[test]
fn holidays_are_skipped_the_teams_and_the_members_own() {
    let t = team(OFFICE);
    let wang = t.member("wang@corp.test").unwrap();
    // Friday 2026-12-04 17:50 in Shanghai (09:50Z); Monday 12-07 is Wang's day off.
    let deadline = wang.add_business(ms("2026-12-04T09:50:00Z"), parse_duration("15m").unwrap());
    assert_eq!(deadline, ms("2026-12-08T01:05:00Z"), "Tuesday 09:05 CST");
    // 2026-10-01 (a Thursday) is everyone's holiday.
    let next = wang.next_working(at("2026-09-30T11:00:00Z"));
    assert_eq!(next, at("2026-10-02T01:00:00Z"), "Friday 09:00 CST");
}

#[test]
fn business_time_keeps_local_hours_across_a_dst_change() {
    let t = team(OFFICE);
    let zhao = t.member("zhao@corp.test").unwrap();
    // Friday 2026-03-06 17:30 EST (22:30Z); clocks go forward on Sunday 03-08.
    let deadline = zhao.add_business(ms("2026-03-06T22:30:00Z"), parse_duration("1h").unwrap());
    assert_eq!(deadline, ms("2026-03-09T13:30:00Z"), "Monday 09:30 EDT");
    // Whole days are working days: Friday 10:00 + 1d is Monday 10:00, in the new offset.
    let later = zhao.add_business(ms("2026-03-06T15:00:00Z"), parse_duration("1d").unwrap());
    assert_eq!(later, ms("2026-03-09T14:00:00Z"));
}

#[test]
fn sunday_night_waits_for_monday_morning_and_no_hours_means_now() {
    let t = team(OFFICE);
    let wang = t.member("wang@corp.test").unwrap();
    // Sunday 2026-12-13 03:00 in Shanghai (Saturday 19:00Z).
    assert_eq!(
        wang.next_working(at("2026-12-12T19:00:00Z")),
        at("2026-12-14T01:00:00Z")
    );
    let li = t.member("li@corp.test").unwrap();
    assert_eq!(li.next_working(at("2026-12-12T19:00:00Z")), at("2026-12-12T19:00:00Z"));
    assert_eq!(
        li.add_business(ms("2026-12-12T19:00:00Z"), parse_duration("15m").unwrap()),
        ms("2026-12-12T19:15:00Z")
    );
}

#[test]
fn a_role_picks_one_member_per_contact_round_robin() {
    let t = team(OFFICE);
    let picks: Vec<&str> = (1..=4).map(|c| t.pick("key_accounts", c).unwrap()).collect();
    assert_eq!(
        picks,
        ["zhao@corp.test", "li@corp.test", "wang@corp.test", "zhao@corp.test"]
    );
    assert_eq!(t.pick("key_accounts", 2), t.pick("key_accounts", 2));
    assert_eq!(t.pick("nobody", 1), None);
    assert_eq!(t.manager_of("Wang@corp.test"), Ok("zhao@corp.test"));
    assert!(t.manager_of("zhao@corp.test").unwrap_err().contains("no manager"));
    assert!(
        Team::default()
            .manager_of("x@y.test")
            .unwrap_err()
            .contains("no team.toml")
    );
}

#[test]
fn every_mistake_is_reported_where_it_is() {
    let source = r#"
[[working_hours.office]]
days = ["mon-fri"]
hours = ["18:00-09:00"]

[members."a@corp.test"]
manager = "b@corp.test"
time_zone = "Asia/Shanghia"
holidays = ["2026-13-01"]

[members."b@corp.test"]
manager = "a@corp.test"
working_hours = "ofice"

[members."c@corp.test"]
manager = "boss@corp.test"

[members."C@corp.test"]

[roles]
senior_reps = ["a@corp.test", "d@corp.test"]
"#;
    let mut problems = Problems::default();
    parse("team.toml", source, &mut problems);
    let mut got: Vec<String> = problems
        .into_vec()
        .iter()
        .map(|p| {
            let (line, col) = p.line_col(source);
            format!("{line}:{col} {}", p.message)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "12:11 the managers of `b@corp.test` lead back to them",
            "13:17 unknown working hours `ofice`",
            "15:10 `c@corp.test` is a member twice",
            "16:11 manager `boss@corp.test` is not a member of the team",
            "21:31 role member `d@corp.test` is not a member of the team",
            "2:17 window `office` is never open",
            "4:10 `18:00-09:00` ends before it starts",
            "7:11 the managers of `a@corp.test` lead back to them",
            "8:13 unknown time zone `Asia/Shanghia`",
            "9:13 `2026-13-01` is not a date",
        ]
    );
}
