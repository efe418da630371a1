//! Bounces that come back as mail. Most bounces are not a 5xx at send time:
//! the relay takes the message and a server further on gives up minutes to
//! days later, writing a delivery status notification (RFC 3464) to the
//! envelope sender; a mailbox provider's feedback loop writes an ARF complaint
//! (RFC 5965). Each email goes out with a return path that names it
//! (`verp.rs`); the mail server for that domain delivers what comes back into a
//! maildir; nudge reads it (`inbox.rs`), parses the reports (`report.rs`) and
//! applies the same suppression rules as a bounce at send time.
//!
//! A maildir rather than a listener of nudge's own: the team's MTA (or
//! fetchmail/getmail from a hosted mailbox) does the internet-facing part,
//! TLS, spam and size limits included, and nudge opens no port to the world.

mod inbox;
mod report;
mod verp;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub(crate) use inbox::Inbox;
pub(crate) use verp::ReturnPath;

/// Reads the maildir at start and whenever its `new/` changes, until `cancel`.
pub(crate) async fn watch(inbox: Arc<Inbox>, cancel: CancellationToken) {
    if let Err(e) = inbox.prepare() {
        warn!("bounce maildir: {e:#}; bounces that come back as mail are not read");
        return;
    }
    let mut changes = match crate::watch::folder(&inbox.maildir.join("new")) {
        Ok(changes) => changes,
        Err(e) => {
            warn!(maildir = %inbox.maildir.display(), "bounce maildir cannot be watched: {e}; it is read at start only");
            read(&inbox).await;
            return;
        }
    };
    info!(maildir = %inbox.maildir.display(), "reading bounce reports");
    loop {
        let failed = !read(&inbox).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            change = changes.next() => if change.is_none() { return },
            // The database was busy or full: the mail waits in new/, tried again
            // soon rather than at the next bounce, which may be days away.
            _ = tokio::time::sleep(RETRY_AFTER), if failed => {}
        }
    }
}

const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// One pass; false if it failed (logged; the mail stays in new/).
async fn read(inbox: &Inbox) -> bool {
    match inbox.pass().await {
        Ok(pass) => {
            if pass != inbox::Pass::default() {
                info!(
                    recorded = pass.recorded,
                    unattributed = pass.unattributed,
                    not_reports = pass.not_reports,
                    "bounce maildir read"
                );
            }
            true
        }
        Err(e) => {
            warn!("bounce maildir: {e:#}; the unread mail stays in new/ for the next pass");
            false
        }
    }
}
