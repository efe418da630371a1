//! `database`: a SQLite file (the default, `data/nudge.db`) or a PostgreSQL URL
//! (`postgres://user@host/db`), from nudge.toml or `$NUDGE_DATABASE_URL`, which
//! wins. A password never sits in the file: it comes from the environment
//! (`$PGPASSWORD`, `~/.pgpass`, or `$NUDGE_DATABASE_PASSWORD`).

use std::path::PathBuf;
use std::str::FromStr as _;

use sqlx::postgres::PgConnectOptions;

use super::Config;

/// The environment variable that names the database instead of nudge.toml.
const URL_ENV: &str = "NUDGE_DATABASE_URL";
/// The environment variable a PostgreSQL password may come from (besides libpq's).
const PASSWORD_ENV: &str = "NUDGE_DATABASE_PASSWORD";

/// A PostgreSQL database to connect to, and where it was named.
#[derive(Debug, Clone)]
pub(crate) struct PostgresUrl {
    url: String,
    /// Where the URL came from, for messages: nudge.toml's `database` or the variable.
    pub(crate) origin: String,
}

impl PostgresUrl {
    /// Parses a URL given on the command line or by a test (`nudge migrate --to`).
    pub(crate) fn given(url: &str, origin: &str) -> anyhow::Result<PostgresUrl> {
        if !is_postgres(url) {
            anyhow::bail!("{origin} `{url}` is not a PostgreSQL URL: write it as postgres://user@host:port/database");
        }
        let parsed = PostgresUrl {
            url: url.to_string(),
            origin: origin.to_string(),
        };
        parsed.options()?;
        Ok(parsed)
    }

    /// The URL without its password, to show.
    pub(crate) fn shown(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            _ => self.url.clone(),
        }
    }

    /// How to connect: the URL, with `$NUDGE_DATABASE_PASSWORD` as the password
    /// when it is set (sqlx reads `$PGPASSWORD` and `~/.pgpass` itself).
    pub(crate) fn options(&self) -> anyhow::Result<PgConnectOptions> {
        let options = PgConnectOptions::from_str(&self.url).map_err(|e| {
            anyhow::anyhow!(
                "{} `{}` is not a PostgreSQL URL nudge can use: {e}",
                self.origin,
                self.shown()
            )
        })?;
        Ok(match std::env::var(PASSWORD_ENV) {
            Ok(password) if !password.is_empty() => options.password(&password),
            _ => options,
        })
    }
}

fn is_postgres(value: &str) -> bool {
    value.starts_with("postgres://") || value.starts_with("postgresql://")
}

impl Config {
    /// Reads `database` (or `$NUDGE_DATABASE_URL`): a PostgreSQL URL goes to
    /// `postgres`, a path stays in `database`. A password in the file is refused.
    pub(super) fn resolve_database(&mut self) -> anyhow::Result<()> {
        if let Ok(value) = std::env::var(URL_ENV)
            && !value.is_empty()
        {
            if is_postgres(&value) {
                self.postgres = Some(PostgresUrl::given(&value, &format!("${URL_ENV}"))?);
            } else {
                self.database = PathBuf::from(value);
            }
            return Ok(());
        }
        let Some(setting) = self.database_setting.clone() else {
            return Ok(());
        };
        let value = setting.get_ref();
        if !is_postgres(value) {
            self.database = PathBuf::from(value);
            return Ok(());
        }
        if let Some(password) = reqwest::Url::parse(value)
            .ok()
            .and_then(|u| u.password().map(str::to_string))
        {
            // The error shows the line: not with the password on it.
            let span = setting.span();
            let mut source = self.source.clone();
            if let Some(at) = self.source.get(span.clone()).and_then(|s| s.find(&password)) {
                let at = span.start + at;
                source.replace_range(at..at + password.len(), &"*".repeat(password.len()));
            }
            return Err(self.setting_error_in(
                &source,
                span,
                "`database` holds a password, and nudge.toml is no place for one".into(),
                Some(format!(
                    "write the URL without it (postgres://user@host/db) and give the password in the \
                     environment: ${PASSWORD_ENV}, $PGPASSWORD or ~/.pgpass"
                )),
            ));
        }
        let origin = match &self.file {
            Some(file) => format!("`database` of {}", file.display()),
            None => "`database`".to_string(),
        };
        match PostgresUrl::given(value, &origin) {
            Ok(url) => self.postgres = Some(url),
            Err(e) => return Err(self.setting_error(setting.span(), format!("{e:#}"), None)),
        }
        Ok(())
    }

    /// Fails with one sentence while `database` names PostgreSQL: until the
    /// store runs on it, nothing but `nudge migrate --to` uses one.
    pub(crate) fn refuse_postgres(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.postgres {
            anyhow::bail!(
                "{} names the PostgreSQL database {}, and nudge runs on SQLite only for now: \
                 name a SQLite file there to run; what works with PostgreSQL today is copying \
                 a SQLite database into it with `nudge migrate --to {}`",
                url.origin,
                url.shown(),
                url.shown()
            );
        }
        Ok(())
    }
}
