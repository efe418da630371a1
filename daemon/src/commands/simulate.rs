//! `nudge simulate`: what the workflows would send over the next days, from a
//! copy of the database (see `simulate/`); as text, JSON or an HTML page.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Config;
use crate::simulate;
pub(crate) use crate::simulate::Options;

/// `nudge simulate`: runs the simulation(s) and prints what they found.
pub(crate) async fn run(config: &Config, options: &Options, html: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let outcome = simulate::simulate(config, options).await?;
    if let Some(file) = html {
        std::fs::write(file, outcome.to_html()).with_context(|| format!("write {}", file.display()))?;
        eprintln!("wrote {}", file.display());
    }
    if let Some(file) = &options.messages {
        eprintln!("wrote {}", file.display());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", outcome.to_text());
    }
    Ok(())
}
