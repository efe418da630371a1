//! The maildir the bounce reports are delivered to. Each new mail is read once:
//! what it reports is recorded against the message it names, then the file
//! moves to `cur/` (marked seen), so a restart reads only what is new, and a
//! crash between the two reads it again without counting it twice (the
//! report's id is unique in `bounces`).

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::ReturnPath;
use super::report::{self, Report};
use crate::clock::Clock;
use crate::store::{self, Bounce, ReturnedMessage, Store, SuppressionRules};

pub(crate) struct Inbox {
    pub(crate) maildir: PathBuf,
    pub(crate) return_path: ReturnPath,
    pub(crate) store: Store,
    pub(crate) clock: Clock,
    pub(crate) rules: SuppressionRules,
}

/// What one pass over `new/` did.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Pass {
    /// Bounces and complaints recorded against their message.
    pub(crate) recorded: usize,
    /// Reports about no message of ours (or whose return path was forged).
    pub(crate) unattributed: usize,
    /// Mail that is no report: auto-replies, people writing back.
    pub(crate) not_reports: usize,
}

impl Inbox {
    /// Creates `new/`, `cur/` and `tmp/` if missing, so the MTA and nudge can start in either order.
    pub(crate) fn prepare(&self) -> anyhow::Result<()> {
        for sub in ["new", "cur", "tmp"] {
            let dir = self.maildir.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("create the bounce maildir {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Reads every mail in `new/`. A mail that cannot be recorded (the database
    /// is busy or full) stays in `new/` for the next pass.
    pub(crate) async fn pass(&self) -> anyhow::Result<Pass> {
        let mut pass = Pass::default();
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        // Maildir names start with the delivery time: oldest first.
        names.sort();
        for path in names {
            let raw = match std::fs::read(&path) {
                Ok(raw) => raw,
                // Taken by another reader in between, or unreadable: nothing to record.
                Err(e) => {
                    warn!(file = %path.display(), "bounce maildir: cannot read: {e}");
                    continue;
                }
            };
            match report::parse(&raw) {
                None => pass.not_reports += 1,
                Some(report) => match self.record(&report, &path).await? {
                    0 => pass.unattributed += 1,
                    n => pass.recorded += n,
                },
            }
            file_away(&path)?;
        }
        Ok(pass)
    }

    /// Records the report's findings against its message; how many it recorded.
    async fn record(&self, report: &Report, path: &Path) -> anyhow::Result<usize> {
        let mut tx = self.store.write().await?;
        let Some(message) = self.attribute(&mut tx, report).await? else {
            warn!(
                file = %path.display(),
                report = report.report_id.as_deref().unwrap_or(""),
                "bounce report names no message of ours (return path unknown or forged); nothing suppressed"
            );
            return Ok(0);
        };
        // A report without a Message-ID is known by its file's unique maildir name.
        let file_name = path.file_name().map(|n| n.to_string_lossy().to_string());
        let report_id = report.report_id.clone().or(file_name);
        let now = self.clock.now_ms();
        for finding in &report.findings {
            let detail = format!("{} {} (reported by mail)", finding.status, finding.diagnostic);
            let bounce = Bounce {
                address: &message.recipient,
                channel: &message.channel,
                kind: finding.kind,
                detail: detail.trim(),
                outbox_id: Some(message.id),
                report_id: report_id.as_deref(),
            };
            let suppressed = store::record_bounce(&mut tx, &bounce, self.rules, now).await?;
            info!(
                outbox_id = message.id,
                kind = %finding.kind,
                status = %finding.status,
                suppressed,
                "bounce report recorded"
            );
        }
        tx.commit().await?;
        Ok(report.findings.len())
    }

    /// The message a report is about: the one its return path names (signed, so
    /// certain), else the one with the Message-ID it quotes, if that message
    /// went to the recipient the report names (a quoted ID alone is guessable).
    async fn attribute(&self, conn: &mut store::Conn, report: &Report) -> anyhow::Result<Option<ReturnedMessage>> {
        if let Some(id) = report.return_paths.iter().find_map(|a| self.return_path.outbox_id(a)) {
            return store::returned_message(conn, id).await;
        }
        let Some(message_id) = &report.original_message_id else {
            return Ok(None);
        };
        let Some(message) = store::returned_message_by_id(conn, message_id).await? else {
            return Ok(None);
        };
        let named = |f: &report::Finding| {
            f.recipient
                .as_deref()
                .is_some_and(|r| store::normalise_address(r) == store::normalise_address(&message.recipient))
        };
        Ok(report.findings.iter().all(named).then_some(message))
    }
}

/// Moves a read mail to `cur/`, marked seen (the maildir `:2,S` suffix).
fn file_away(path: &Path) -> anyhow::Result<()> {
    let (Some(name), Some(new)) = (path.file_name(), path.parent()) else {
        anyhow::bail!("{} is not a maildir file", path.display());
    };
    let maildir = new.parent().unwrap_or(Path::new("."));
    let name = name.to_string_lossy();
    let seen = if name.contains(":2,") {
        name.to_string()
    } else {
        format!("{name}:2,S")
    };
    std::fs::rename(path, maildir.join("cur").join(seen))
        .map_err(|e| anyhow::anyhow!("move {} to cur/: {e}", path.display()))
}
