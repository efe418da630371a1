//! TOML -> compiled workflows. serde gives the shape (with spans and unknown-key
//! errors); everything serde cannot know (conditions, durations, references to
//! templates, channels, cadences, stage names) is checked here, and every
//! problem is collected rather than stopping at the first.
//!
//! One module per kind of file: `workflow.rs` (with its `trigger.rs` and
//! `steps.rs`), `templates.rs`, `cadences.rs`; `sending.toml` and
//! `classification.toml` are read by `../sending.rs` and `../classification.rs`,
//! beside what they compile to. All of them report through `check.rs`, which
//! depends on none of them.

mod cadences;
pub(super) mod check;
mod steps;
mod templates;
mod trigger;
mod workflow;

use std::collections::BTreeMap;
use std::path::Path;

use self::cadences::parse_cadences;
use self::check::{Folder, Problems};
use self::templates::parse_templates;
use self::workflow::parse_workflow;
use super::classification::{self, ClassificationRules};
use super::diagnostic::Diagnostic;
use super::language::{self, LANGUAGE_FILE, Languages};
use super::sending::{self, SendingPolicy};
use super::team::{self, TEAM_FILE, Team};
use super::{CLASSIFICATION_FILE, Cadence, Template, Workflow};

/// What a valid folder compiles to.
#[derive(Debug)]
pub(super) struct Compiled {
    pub(super) workflows: Vec<Workflow>,
    pub(super) templates: BTreeMap<String, Template>,
    pub(super) cadences: BTreeMap<String, Cadence>,
    pub(super) sending: SendingPolicy,
    pub(super) classification: Option<ClassificationRules>,
    pub(super) team: Team,
    pub(super) languages: Languages,
}

/// Compiles a set of files; `stored`: a set stored for its runs (see `Problems::lint`).
/// Cadences are read after sending.toml, whose windows they name; workflows are
/// read last: they name the templates, cadences and windows of the others.
pub(super) fn compile_set(
    files: &[(String, String)],
    channels: &[String],
    stored: bool,
) -> Result<Compiled, Vec<Diagnostic>> {
    let mut problems = Problems::new(stored);
    let mut templates = BTreeMap::new();
    let mut cadences = BTreeMap::new();
    let mut sending = SendingPolicy::default();
    let mut classification = None;
    let mut team = Team::default();
    let mut workflow_files = Vec::new();
    // Templates are checked against the default language, wherever the files sort.
    let languages = files
        .iter()
        .find(|(path, _)| Path::new(path).file_name().is_some_and(|n| n == LANGUAGE_FILE))
        .map_or_else(Languages::default, |(path, source)| {
            language::parse(path, source, &mut problems)
        });
    let mut cadence_files = Vec::new();
    for (path, source) in files {
        let file = Path::new(path);
        let in_templates = file
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "templates");
        match file.file_name().and_then(|n| n.to_str()) {
            _ if in_templates => {
                let folder = (channels, &languages);
                parse_templates(path, source, folder, &mut templates, &mut problems)
            }
            Some(LANGUAGE_FILE) => {}
            Some("cadences.toml") => cadence_files.push((path, source)),
            Some("sending.toml") => sending = sending::parse(path, source, channels, &mut problems),
            Some(TEAM_FILE) => team = team::parse(path, source, &mut problems),
            Some(CLASSIFICATION_FILE) => {
                classification = classification::parse_rules(path, source, &mut problems);
            }
            _ => workflow_files.push((path, source)),
        }
    }
    // Cadences name the windows of sending.toml.
    for (path, source) in cadence_files {
        parse_cadences(path, source, &sending, &mut cadences, &mut problems);
    }
    let folder = Folder {
        channels,
        templates: &templates,
        cadences: &cadences,
        sending: &sending,
        team: &team,
    };
    let workflows: Vec<Workflow> = workflow_files
        .into_iter()
        .filter_map(|(path, source)| parse_workflow(path, source, &folder, &mut problems))
        .collect();
    if problems.is_empty() {
        Ok(Compiled {
            workflows,
            templates,
            cadences,
            sending,
            classification,
            team,
            languages,
        })
    } else {
        Err(problems.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::{NotifyTo, OwnerRef, Step, Trigger};

    const TEMPLATES: (&str, &str) = (
        "wf/templates/email.toml",
        "[hello]\nchannel = \"email\"\nsubject = \"Hi {{ contact.name }}\"\ntext = \"t\"\n",
    );

    fn compile(workflow: &str) -> Result<Compiled, Vec<Diagnostic>> {
        let files = vec![TEMPLATES, ("wf/a.toml", workflow)];
        let files: Vec<(String, String)> = files.into_iter().map(|(a, b)| (a.into(), b.into())).collect();
        compile_set(&files, &["email".to_string()], false)
    }

    #[test]
    fn every_shape_error_says_what_to_do() {
        for src in [
            "[trigger]\non = \"stage_changed\"\n[[steps]]\nwait = 3\n",
            "[trigger]\n[[steps]]\nwait = \"1d\"\n",
            "[trigger\non = 1\n",
            "[trigger]\non = \"stage_changed\"\non = \"x\"\n[[steps]]\nwait = \"1d\"\n",
        ] {
            let problems = compile(src).expect_err("should fail");
            assert!(problems.iter().all(|d| d.help.is_some()), "{src}: {problems:?}");
        }
    }

    #[test]
    fn rendered_diagnostics_show_file_line_column_source_and_help() {
        let src = "[trigger]\non = \"stage_changed\"\nto = \"inquriy\"\n[[steps]]\nwait = \"1d\"\n";
        let problems = compile(src).expect_err("should fail");
        insta::assert_snapshot!(problems[0].render(src, false));
    }

    fn first_problem(workflow: &str) -> (String, (usize, usize), Option<String>) {
        let problems = compile(workflow).expect_err("should fail");
        let d = &problems[0];
        (d.message.clone(), d.line_col(workflow), d.help.clone())
    }

    #[test]
    fn a_valid_workflow_compiles() {
        let w = compile(
            "category = \"transactional\"\n[trigger]\non = \"stage_changed\"\nto = \"inquiry\"\n[[steps]]\nsend = { channel = \"email\", template = \"hello\" }\n[[steps]]\nwait = \"3d\"\n",
        )
        .unwrap()
        .workflows;
        assert_eq!(w[0].steps.len(), 2);
        assert!(matches!(&w[0].trigger, Trigger::StageChanged { from: None, to: Some(to) } if to == "inquiry"));
    }

    #[test]
    fn unknown_key_points_at_it_with_a_suggestion() {
        let (msg, pos, help) =
            first_problem("[trigger]\non = \"stage_changed\"\ntoo = \"x\"\n[[steps]]\nwait = \"1d\"\n");
        assert!(msg.contains("unknown field `too`"), "{msg}");
        assert_eq!(pos, (3, 1));
        assert_eq!(help.as_deref(), Some("did you mean `to`?"));
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let src = "[trigger]\non = \"stage_changed\"\nto = \"inquriy\"\n[[steps]]\nwait = \"3 parsecs\"\n[[steps]]\nsend = { channel = \"fax\", template = \"helo\" }\n";
        let problems = compile(src).err().unwrap();
        let mut got: Vec<_> = problems.iter().map(|d| (d.line_col(src), d.message.clone())).collect();
        got.sort();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0].0, (3, 6));
        assert_eq!(got[1].0, (5, 8));
        // A workflow that sends must say what its messages are.
        assert_eq!(got[2].0, (6, 1));
        assert!(got[2].1.contains("must say what its messages are"), "{got:?}");
        assert_eq!(got[3].0, (7, 20));
        assert_eq!(got[4].0, (7, 38));
    }

    #[test]
    fn classification_triggers_take_the_values_of_their_field() {
        let w = compile(
            "[trigger]\non = \"tier_changed\"\nfrom = \"low\"\nto = \"high\"\n[[steps]]\nset_owner = \"boss@example.com\"\n",
        )
        .unwrap()
        .workflows;
        assert!(
            matches!(&w[0].trigger, Trigger::TierChanged { from: Some(f), to: Some(t) } if f == "low" && t == "high")
        );
        assert!(matches!(&w[0].steps[0], Step::SetOwner(OwnerRef::Address(o)) if o == "boss@example.com"));

        let (msg, pos, help) =
            first_problem("[trigger]\non = \"tier_changed\"\nto = \"hgih\"\n[[steps]]\nwait = \"1d\"\n");
        assert_eq!((msg.as_str(), pos), ("unknown value tier `hgih`", (3, 6)));
        assert_eq!(help.as_deref(), Some("did you mean `high`?"));
        let (msg, _, _) =
            first_problem("[trigger]\non = \"became_dormant\"\nto = \"dormant\"\n[[steps]]\nwait = \"1d\"\n");
        assert_eq!(msg, "`to` does not apply to trigger `became_dormant`");
        let (msg, pos, _) = first_problem("[trigger]\non = \"first_order\"\n[[steps]]\nset_owner = \"the boss\"\n");
        assert_eq!((msg.as_str(), pos), ("`the boss` is not an email address", (4, 13)));
    }

    #[test]
    fn notify_owner_is_refused_with_what_to_write_instead() {
        let src = "[trigger]\non = \"contact_created\"\n[[steps]]\nnotify_owner = { template = \"hello\" }\n";
        let (msg, pos, help) = first_problem(src);
        assert_eq!((msg.as_str(), pos), ("`notify_owner` is now `notify`", (4, 16)));
        assert_eq!(
            help.as_deref(),
            Some(
                "write `notify = { to = \"owner\", template = \"hello\" }` (or to = \"manager\", or \"role:<name>\" of team.toml)"
            )
        );
        // A set stored for its runs by an earlier nudge still runs them, to the owner.
        let files = vec![TEMPLATES, ("wf/a.toml", src)];
        let files: Vec<(String, String)> = files.into_iter().map(|(a, b)| (a.into(), b.into())).collect();
        let stored = compile_set(&files, &["email".to_string()], true).unwrap();
        assert!(matches!(
            &stored.workflows[0].steps[0],
            Step::Notify {
                to: NotifyTo::Owner,
                ..
            }
        ));
    }

    #[test]
    fn recipients_roles_and_clocks_are_checked() {
        let step = |s: &str| format!("[trigger]\non = \"contact_created\"\n[[steps]]\n{s}\n");
        let (msg, pos, help) = first_problem(&step("notify = { to = \"boss\", template = \"hello\" }"));
        assert_eq!((msg.as_str(), pos), ("`boss` is not a recipient", (4, 17)));
        assert!(help.unwrap().contains("role:<name>"));
        let (msg, _, help) = first_problem(&step("notify = { to = \"role:key_accounts\", template = \"hello\" }"));
        assert_eq!(msg, "unknown role `key_accounts`");
        assert!(help.unwrap().contains("[roles] in team.toml"));
        let (msg, _, help) = first_problem(&step("set_owner = { role = \"senior_reps\" }"));
        assert_eq!(msg, "unknown role `senior_reps`");
        assert!(help.unwrap().contains("senior_reps = ["));
        let (msg, _, _) = first_problem(&step("set_owner = { team = \"x\" }"));
        assert_eq!(msg, "`set_owner` takes an email address or a role");
        let w = compile(&step("notify = { to = \"manager\", template = \"hello\" }"))
            .unwrap()
            .workflows;
        assert!(matches!(
            &w[0].steps[0],
            Step::Notify {
                to: NotifyTo::Manager,
                ..
            }
        ));
        let inquiry =
            |clock: &str| format!("[trigger]\non = \"inquiry_received\"\n{clock}\n[[steps]]\ntag = \"late\"\n");
        let w = compile(&inquiry("sla = { default = \"15m\" }\nsla_clock = \"business\""))
            .unwrap()
            .workflows;
        assert!(w[0].business_clock());
        let (msg, pos, _) = first_problem(&inquiry("sla = { default = \"15m\" }\nsla_clock = \"office\""));
        assert_eq!((msg.as_str(), pos), ("unknown SLA clock `office`", (4, 13)));
        let (msg, _, _) = first_problem(&inquiry("sla_clock = \"business\""));
        assert_eq!(msg, "`sla_clock` without an `sla`");
    }

    const AB: &str = "category = \"marketing\"\n[trigger]\non = \"contact_created\"\n[[steps]]\nsend = { channel = \"email\", template = \"hello\" }\n";

    #[test]
    fn a_send_step_takes_variants_of_subject_and_delay() {
        let src = format!(
            "{AB}[[steps.variants]]\nname = \"a\"\nweight = 70\nsubject = \"Hi {{{{ contact.name }}}}\"\n\
             [[steps.variants]]\nname = \"b\"\nweight = 30\ndelay = \"2h\"\n"
        );
        let w = compile(&src).unwrap().workflows;
        let Step::Send { variants, .. } = &w[0].steps[0] else {
            panic!("a send step")
        };
        assert_eq!(variants.len(), 2);
        assert_eq!((variants[0].name.as_str(), variants[0].weight), ("a", 70));
        assert_eq!(variants[0].subject.as_deref(), Some("Hi {{ contact.name }}"));
        assert_eq!(variants[1].delay.unwrap().get_hours(), 2);
        assert!(w[0].track, "marketing tracks by default");
    }

    #[test]
    fn a_variant_subject_would_replace_every_language_and_is_refused() {
        let files: Vec<(String, String)> = [
            (
                "wf/templates/email.toml",
                "[hello]\nchannel = \"email\"\n[hello.zh]\nsubject = \"您好\"\ntext = \"t\"\n\
                 [hello.en]\nsubject = \"Hi\"\ntext = \"t\"\n",
            ),
            (
                "wf/a.toml",
                &format!("{AB}[[steps.variants]]\nname = \"a\"\nsubject = \"A\"\n[[steps.variants]]\nname = \"b\"\n"),
            ),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let problems = compile_set(&files, &["email".to_string()], false)
            .err()
            .unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("written in several languages"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_variants_are_reported_where_they_are() {
        let v = |body: &str| format!("{AB}[[steps.variants]]\nname = \"a\"\n[[steps.variants]]\n{body}\n");
        let (msg, pos, help) = first_problem(&v("name = \"a\""));
        assert_eq!(
            (msg.as_str(), pos),
            ("variant `a` is named twice in this workflow", (9, 8))
        );
        assert!(help.unwrap().contains("its own name"));
        let (msg, pos, _) = first_problem(&v("name = \"b\"\nweight = 0"));
        assert_eq!(
            (msg.as_str(), pos),
            ("weight 0 is not a positive whole number", (10, 10))
        );
        let (msg, pos, help) = first_problem(&v("name = \"b\"\nsubjet = \"x\""));
        assert!(msg.contains("unknown field `subjet`"), "{msg}");
        assert_eq!((pos, help.as_deref()), ((10, 1), Some("did you mean `subject`?")));
        let (msg, pos, _) = first_problem(&v("name = \"b\"\ndelay = \"soon\""));
        assert_eq!((msg.as_str(), pos), ("`soon` is not a duration", (10, 9)));
        let (msg, _, _) = first_problem(&format!("{AB}[[steps.variants]]\nname = \"a\"\n"));
        assert_eq!(msg, "an A/B test needs at least two variants");
        let (msg, _, help) = first_problem(
            "[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n[[steps.variants]]\nname = \"a\"\n",
        );
        assert_eq!(msg, "only a `send` step has variants");
        assert!(help.unwrap().contains("send = ..."));
    }

    #[test]
    fn tracking_is_never_on_for_transactional_messages() {
        let src = "category = \"transactional\"\ntrack = true\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n";
        let (msg, pos, help) = first_problem(src);
        assert_eq!(
            (msg.as_str(), pos),
            ("opens and clicks are never tracked in transactional messages", (2, 9))
        );
        assert!(help.unwrap().starts_with("remove `track = true`"));
        let off = |src: &str| !compile(src).unwrap().workflows[0].track;
        assert!(off(
            "category = \"sla\"\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n"
        ));
        assert!(off(&AB.replace("[trigger]", "track = false\n[trigger]")));
        assert!(off(
            "category = \"sla\"\ntrack = false\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n"
        ));
        // A key put under [trigger] by mistake is explained.
        let (_, _, help) = first_problem(&AB.replace("on = ", "track = true\non = "));
        assert!(help.unwrap().contains("belongs to the workflow"));
    }

    #[test]
    fn condition_errors_point_into_the_expression() {
        let src =
            "when = \"contact.stagee == 'lead'\"\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n";
        let (msg, pos, help) = first_problem(src);
        assert!(msg.contains("no field `stagee`"), "{msg}");
        assert_eq!(pos, (1, 9));
        assert_eq!(help.as_deref(), Some("did you mean `stage`?"));
    }

    const AFTER_WHEN: &str = "\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n";

    #[test]
    fn condition_errors_after_non_ascii_text_and_escapes_point_at_the_right_character() {
        for when in [
            r#"when = "contact.company == \"阿里巴巴\" && contact.nmae == 'x'""#,
            r#"when = "contact.company == \"\u00e9\\\\\" &&\tcontact.nmae == 'x'""#,
            r#"when = 'contact.company == "阿里巴巴" && contact.nmae == "x"'"#,
            "when = \"\"\"\ncontact.company == \\\"阿里\\\" && \\\n   contact.nmae == 'x'\"\"\"",
        ] {
            let src = format!("{when}{AFTER_WHEN}");
            let problems = compile(&src).expect_err("should fail");
            assert_eq!(&src[problems[0].span.clone()], "contact.nmae", "{when}");
        }
        // The issue's case: a dangling `&&` after Chinese text, rendered without a panic.
        let src = format!("when = 'contact.stage == \"lead\" && contact.company == \"阿里巴巴\" &&'{AFTER_WHEN}");
        let problems = compile(&src).expect_err("should fail");
        let rendered = problems[0].render(&src, false);
        assert!(rendered.contains("wf/a.toml:1:"), "{rendered}");
        assert!(problems[0].message.contains("syntax"), "{rendered}");
    }

    #[test]
    fn a_span_inside_a_character_is_rendered_around_it() {
        let src = "name = \"阿里巴巴\"\n";
        for span in [9..9, 9..10, 8..11] {
            let rendered = Diagnostic::new("f.toml", span, "here").render(src, false);
            assert!(rendered.contains("f.toml:1:"), "{rendered}");
        }
    }

    #[test]
    fn windows_by_cadence_name_windows_that_exist_and_cadences_that_give_them() {
        let sending = "[[windows.weekday_mornings]]\ndays = [\"mon-fri\"]\nhours = [\"09:00-12:00\"]\n";
        let cadences = "[intent]\nby = \"intent_grade\"\nevery = { A = \"3d\" }\nat = { A = \"weekday_mornigs\", B = \"weekday_mornings\" }\n\
                        [value]\nby = \"value_tier\"\nevery = { high = \"30d\" }\n";
        let workflow = |window: &str| {
            format!(
                "category = \"marketing\"\nsend_window = {window}\n[trigger]\non = \"contact_created\"\n[[steps]]\nwait = \"1d\"\n"
            )
        };
        let set = |window: &str| -> Vec<(String, String)> {
            vec![
                ("wf/sending.toml".into(), sending.into()),
                ("wf/cadences.toml".into(), cadences.into()),
                ("wf/a.toml".into(), workflow(window)),
            ]
        };
        let problems = |window: &str| -> Vec<String> {
            let files = set(window);
            let found = compile_set(&files, &["email".to_string()], false)
                .err()
                .unwrap_or_default();
            found
                .iter()
                .map(|d| {
                    let source = &files.iter().find(|(p, _)| *p == d.file).unwrap().1;
                    let (line, col) = d.line_col(source);
                    format!(
                        "{}:{line}:{col} {} ({})",
                        d.file,
                        d.message,
                        d.help.clone().unwrap_or_default()
                    )
                })
                .collect()
        };
        let cadence_problem =
            "wf/cadences.toml:4:12 unknown send window `weekday_mornigs` (did you mean `weekday_mornings`?)";
        assert_eq!(problems("{ cadence = \"intent\" }"), [cadence_problem]);
        let found = problems("{ cadence = \"valeu\" }");
        assert!(
            found.contains(&"wf/a.toml:2:15 unknown cadence `valeu` (did you mean `value`?)".to_string()),
            "{found:?}"
        );
        let found = problems("{ cadence = \"value\" }");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("wf/a.toml:2:15 cadence `value` gives no send windows")),
            "{found:?}"
        );
        let found = problems(
            "\"weekday_mornings\"\n[[steps]]\nschedule_follow_up = { cadence = \"intent\", window = \"weekday_mornings\" }",
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("wf/a.toml:4:53 a follow-up by cadence falls in the cadence's own windows")),
            "{found:?}"
        );
        let found = problems("{ by = \"intent_grade\" }");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("wf/a.toml:2:15 `send_window` is a window's name")),
            "{found:?}"
        );
    }
}
