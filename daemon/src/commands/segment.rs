//! `nudge segment list|run`: passes of segment (nurture) workflows over all
//! contacts; the daemon does the work, these commands start and watch it.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::bail;

use crate::clock::display_ms;
use crate::config::Config;
use crate::daemon;
use crate::store;

/// `nudge segment list`: passes of segment workflows and their progress.
pub(crate) async fn list(config: &Config, as_json: bool) -> anyhow::Result<()> {
    let (store, _) = daemon::open(config).await?;
    let mut conn = store.pool.acquire().await?;
    let passes = store::list_enrolments(&mut conn, 50).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&passes)?);
        return Ok(());
    }
    if passes.is_empty() {
        println!("no segment passes yet");
    }
    for p in &passes {
        println!("{}", progress_line(p));
    }
    Ok(())
}

fn progress_line(p: &store::Enrolment) -> String {
    let percent = if p.total > 0 {
        (p.scanned * 100 / p.total).min(100)
    } else {
        100
    };
    format!(
        "pass {:>4}  {:<28} {:<7} {:>3}%  scanned {:>9} of {:<9} enrolled {:>9}  since {}",
        p.id,
        p.workflow,
        p.status,
        percent,
        p.scanned,
        p.total,
        p.enrolled,
        display_ms(p.started_at)
    )
}

/// `nudge segment run`: starts a pass of a segment workflow now (the daemon does
/// the work); with `follow`, shows its progress until it is done.
pub(crate) async fn run(config: &Config, workflow: &str, follow: bool) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let Some(hash) = store.latest_workflow_set().await? else {
        bail!("the daemon has not loaded any workflows yet: start it with `nudge run` first");
    };
    let files = store.workflow_set_files(&hash).await?.unwrap_or_default();
    let is_segment = files.iter().any(|(path, source)| {
        Path::new(path).file_stem().is_some_and(|s| s == workflow)
            && toml::from_str::<toml::Table>(source)
                .ok()
                .and_then(|t| t.get("trigger")?.get("on")?.as_str().map(|on| on == "segment"))
                .unwrap_or(false)
    });
    if !is_segment {
        bail!("`{workflow}` is not a segment workflow (`[trigger] on = \"segment\"`) in the daemon's workflows");
    }
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    store::open_enrolment(&mut tx, workflow, &hash, now, now).await?;
    tx.commit().await?;
    println!("pass of {workflow} started; the daemon enrols the segment in batches");
    if !follow {
        return Ok(());
    }
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let pass = {
            let mut conn = store.pool.acquire().await?;
            store::list_enrolments(&mut conn, 50)
                .await?
                .into_iter()
                .find(|p| p.workflow == workflow && p.due_at == now)
        };
        let Some(pass) = pass else {
            bail!("the pass disappeared")
        };
        let line = progress_line(&pass);
        if line != last {
            if terminal {
                print!("\r{line}");
                std::io::Write::flush(&mut std::io::stdout())?;
            } else {
                println!("{line}");
            }
            last = line;
        }
        if pass.status == store::EnrolmentStatus::Done {
            if terminal {
                println!();
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
