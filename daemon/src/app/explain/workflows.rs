//! The workflows of the set the daemon last loaded, as `explain` lists them:
//! each by name with its trigger, so that a workflow the contact never met is
//! listed too ("nothing recorded") and `--workflow` names one that exists.

use std::path::Path;

use crate::store::Conn;

/// A workflow of the daemon's set: its name (the file's stem) and trigger.
pub(crate) struct Known {
    pub(crate) name: String,
    /// E.g. `stage_changed to intent`, `segment`.
    pub(crate) trigger: String,
}

/// The workflows of the set the daemon loaded last (none before it first ran).
pub(crate) async fn known(conn: &mut Conn) -> anyhow::Result<Vec<Known>> {
    let files: Option<String> =
        sqlx::query_scalar("SELECT files FROM workflow_sets ORDER BY loaded_at DESC, rowid DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let files: Vec<(String, String)> = match files {
        Some(files) => serde_json::from_str(&files)?,
        None => Vec::new(),
    };
    let mut known: Vec<Known> = files
        .iter()
        .filter_map(|(path, source)| {
            let table = toml::from_str::<toml::Table>(source).ok()?;
            let trigger = table.get("trigger")?;
            let name = Path::new(path).file_stem()?.to_str()?.to_string();
            Some(Known {
                name,
                trigger: describe(trigger),
            })
        })
        .collect();
    known.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(known)
}

/// `on`, with the `from` / `to` it names.
fn describe(trigger: &toml::Value) -> String {
    let field = |key: &str| trigger.get(key).and_then(|v| v.as_str());
    let mut text = field("on").unwrap_or("?").to_string();
    for key in ["from", "to"] {
        if let Some(value) = field(key) {
            text.push_str(&format!(" {key} {value}"));
        }
    }
    text
}
