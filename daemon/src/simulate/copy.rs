//! The simulation's own copies of the database: a consistent snapshot of the
//! live file taken through a read-only connection (`VACUUM INTO`), in a
//! scratch folder removed when the simulation ends. The live file is never
//! opened for writing.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

/// A folder of scratch files, removed with everything in it when dropped.
pub(crate) struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A fresh folder in the system's temporary folder.
    pub(crate) fn new() -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("nudge-simulate-{}", std::process::id()));
        // A folder of this name is left by an earlier process of the same id that crashed.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Scratch { dir })
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(
                "could not remove the simulation's copies in {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// Copies the live database at `live` into `to` as one consistent snapshot,
/// reading it through a read-only connection while the daemon may be writing.
pub(crate) async fn copy_database(live: &Path, to: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        live.exists(),
        "no database at {} (the `database` of nudge.toml): there is nothing to simulate yet",
        live.display()
    );
    let mut conn = SqliteConnectOptions::from_str("sqlite:")?
        .filename(live)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("open {} to read", live.display()))?;
    let target = to.to_str().context("the temporary folder's path is not UTF-8")?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut conn)
        .await
        .with_context(|| format!("copy {} to {}", live.display(), to.display()))?;
    conn.close().await?;
    Ok(())
}
