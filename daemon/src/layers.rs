//! The layering of the crate, checked: a module low in the flow never names one
//! above it, so the bottom can be read, tested and changed without the top.
//! Each entry lists the only top-level modules a module's source may name as
//! `crate::...`; a new edge either belongs to the design (add it here, in review)
//! or is a cycle in the making.

use std::collections::BTreeSet;
use std::path::Path;

/// Module (a file or a folder of `src/`) -> the modules it may use.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("watch", &[]),
    ("admission", &[]),
    // Counters anything may bump; it names nothing of the crate.
    ("metrics", &["model"]),
    // Spans exported as traces, and the context carried between them; names nothing of the crate.
    ("trace", &[]),
    ("clock", &["model"]),
    ("store", &["model", "clock"]),
    ("workflow", &["model"]),
    ("plugins", &["watch", "metrics"]),
    ("config", &["plugins", "store", "trace", "workflow"]),
    ("unsubscribe", &["config", "store"]),
    ("tracking", &["model", "unsubscribe", "workflow"]),
    ("bounces", &["clock", "config", "store", "watch"]),
    (
        "delivery",
        &[
            "admission",
            "bounces",
            "clock",
            "config",
            "metrics",
            "model",
            "plugins",
            "store",
            "trace",
        ],
    ),
    (
        "engine",
        &[
            "model",
            "watch",
            "admission",
            "metrics",
            "clock",
            "store",
            "workflow",
            "plugins",
            "delivery",
            "trace",
            "tracking",
            "unsubscribe",
        ],
    ),
    ("insight", &["model", "store", "workflow", "engine"]),
    ("report", &["model", "clock", "store", "workflow", "insight"]),
    ("app", &["model", "clock", "store", "workflow", "insight"]),
    ("import", &["model", "clock", "store", "workflow", "insight", "app"]),
    // The web console: pages over what `app` computes, with the engine's set in
    // force and its plugins, and the process's metrics; served by `api`,
    // which hands it its state.
    (
        "console",
        &[
            "model", "clock", "store", "workflow", "insight", "report", "app", "engine", "plugins", "metrics",
        ],
    ),
    // The two front doors: neither uses the other; what they share is in `app`.
    (
        "api",
        &[
            "model",
            "clock",
            "admission",
            "metrics",
            "config",
            "store",
            "workflow",
            "insight",
            "app",
            "console",
            "report",
            "engine",
            "delivery",
            "tracking",
            "unsubscribe",
        ],
    ),
    (
        "daemon",
        &[
            "admission",
            "api",
            "bounces",
            "metrics",
            "clock",
            "config",
            "delivery",
            "engine",
            "insight",
            "plugins",
            "store",
            "unsubscribe",
            "workflow",
        ],
    ),
    // The daemon's engine without its doors, on a copy: `nudge simulate`.
    (
        "simulate",
        &[
            "admission",
            "clock",
            "config",
            "daemon",
            "engine",
            "insight",
            "plugins",
            "report",
            "store",
            "unsubscribe",
            "workflow",
        ],
    ),
    (
        "commands",
        &[
            "model", "clock", "config", "store", "workflow", "insight", "app", "import", "report", "plugins", "daemon",
            "simulate",
        ],
    ),
    // The command line: parses the arguments and hands them to `commands`.
    ("cli", &["config", "trace", "store", "app", "daemon", "commands"]),
];

/// The top-level modules that a source text names as `crate::x` or `crate::{x, y}`.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let ident = |s: &str| {
        s.trim_start()
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let mut named = BTreeSet::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                // Only the top level of the group: `a::{b, c}` inside names `a`.
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            named.insert(ident(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                named.insert(ident(&group[start..]));
            }
            None => {
                named.insert(ident(rest));
            }
        }
    }
    named.retain(|n| !n.is_empty() && n != "self");
    named
}

fn sources(path: &Path, out: &mut Vec<(String, String)>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            sources(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push((path.display().to_string(), std::fs::read_to_string(path).unwrap()));
    }
}

/// Every module uses only modules listed before it, so the table itself has no
/// cycle: a new edge that would close one cannot be added by a line here.
#[test]
fn the_layers_form_no_cycle() {
    for (at, (module, allowed)) in LAYERS.iter().enumerate() {
        for used in *allowed {
            let below = LAYERS[..at].iter().any(|(m, _)| m == used);
            assert!(below, "`{module}` may use `{used}`, which is not listed before it");
        }
    }
}

#[test]
fn no_module_names_one_above_its_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (module, allowed) in LAYERS {
        let mut files = Vec::new();
        let dir = src.join(module);
        let file = src.join(format!("{module}.rs"));
        sources(if dir.is_dir() { &dir } else { &file }, &mut files);
        assert!(!files.is_empty(), "no source for module `{module}`");
        for (file, source) in files {
            for named in crate_paths(&source) {
                if named != *module && !allowed.contains(&named.as_str()) {
                    wrong.push(format!("{file} uses crate::{named}, above `{module}`"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn crate_paths_are_read_from_plain_and_grouped_uses() {
    let source = "use crate::store::{self, Conn};\nuse crate::{api, workflow::{A, B}};\nlet x = crate::clock::now();";
    let named: Vec<String> = crate_paths(source).into_iter().collect();
    assert_eq!(named, ["api", "clock", "store", "workflow"]);
}
