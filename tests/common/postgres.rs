//! A PostgreSQL database of its own for each test, on the server that
//! `tests/postgres.sh start` runs (and `.ci/run` starts): created when the test
//! asks for it, dropped when the test is done with it, passed or failed.
//! Without `$NUDGE_TEST_POSTGRES_URL` a test that needs one fails, saying how to
//! start the server: it never passes without having run.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use sqlx::{Connection as _, PgConnection};

const URL_ENV: &str = "NUDGE_TEST_POSTGRES_URL";

/// Runs `future` to its end on a runtime of its own (the tests are plain threads).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A database created for one test, dropped with it.
pub struct TestPostgres {
    /// Its URL, for `nudge migrate --to` and the like.
    pub url: String,
    admin: String,
    name: String,
}

impl TestPostgres {
    pub fn create() -> TestPostgres {
        let admin = std::env::var(URL_ENV).unwrap_or_else(|_| {
            panic!(
                "${URL_ENV} is unset, and this test needs a real PostgreSQL: start the test server with \
                 `eval \"$(tests/postgres.sh start)\"` (Debian's postgresql package; .ci/run does this) \
                 and run the tests again in that shell"
            )
        });
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "nudge_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        block_on(async {
            let mut admin_conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                panic!("cannot reach the test PostgreSQL at {admin}: {e}; is it running? `eval \"$(tests/postgres.sh start)\"`")
            });
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin_conn)
                .await
                .unwrap();
        });
        let (server, _) = admin.rsplit_once('/').expect("a URL that names a database");
        TestPostgres {
            url: format!("{server}/{name}"),
            admin,
            name,
        }
    }

    /// Runs statements (no rows back).
    pub fn execute(&self, sql: &str) {
        block_on(async {
            let mut conn = PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        });
    }

    /// The first column of every row of a query that gives one JSON value a row.
    pub fn json_rows(&self, sql: &str) -> Vec<Value> {
        block_on(async {
            let mut conn = PgConnection::connect(&self.url).await.unwrap();
            let texts: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
            texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect()
        })
    }

    /// The single integer a query gives.
    pub fn scalar(&self, sql: &str) -> i64 {
        block_on(async {
            let mut conn = PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        })
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // A thread of its own: the drop may run while a panic unwinds anywhere.
        let _ = std::thread::spawn(move || {
            block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            })
        })
        .join();
    }
}
