//! The PostgreSQL side of the store, as far as it goes today (issue 33): its
//! schema (daemon/migrations/postgres/, the twin of the SQLite migrations) and
//! the copy of a SQLite database into it (`nudge migrate --to`). The store's
//! queries still run on SQLite only; docs/postgres.md is the plan for the rest.

mod copy;
mod tables;

use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection};

pub(crate) use copy::{CopyOptions, CopyReport, Progress, copy_to_postgres};

/// The PostgreSQL migrations, compiled in as the SQLite ones are.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connects to a PostgreSQL database and brings its schema up to date.
pub(crate) async fn connect(options: &PgConnectOptions, shown: &str) -> anyhow::Result<PgConnection> {
    let mut conn = PgConnection::connect_with(options).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to the PostgreSQL database {shown}: {e}\n\
             check that the server runs and takes connections there, and give a password, if it asks \
             for one, in $NUDGE_DATABASE_PASSWORD, $PGPASSWORD or ~/.pgpass"
        )
    })?;
    MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|e| anyhow::anyhow!("migrate the PostgreSQL database {shown}: {e}"))?;
    Ok(conn)
}
