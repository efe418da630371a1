//! Group commit: writes from many concurrent requests share one transaction and
//! one fsync. Each request still gets its answer only after its write is durable
//! (the commit returned), and runs under its own savepoint, so one request's
//! error never undoes another's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::Acquire as _;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{Conn, Store};
use crate::admission::Admission;

/// Requests gathered into one transaction at most.
const MAX_GROUP: usize = 256;

type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;
type Write<T> = Box<dyn for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, anyhow::Result<T>> + Send>;

struct Job<T> {
    write: Write<T>,
    answer: oneshot::Sender<anyhow::Result<T>>,
}

/// A queue of writes of one result type, committed in groups by one task.
pub struct GroupCommit<T> {
    jobs: mpsc::Sender<Job<T>>,
}

impl<T> Clone for GroupCommit<T> {
    fn clone(&self) -> Self {
        GroupCommit {
            jobs: self.jobs.clone(),
        }
    }
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Starts the committing task; it ends when every handle is dropped. The
    /// events each group writes are counted by `admission`.
    pub fn start(store: Store, admission: Arc<Admission>) -> GroupCommit<T> {
        let (jobs, queue) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(commit_loop(store, admission, queue));
        GroupCommit { jobs }
    }

    /// Runs `write` in the next group's transaction; returns its result once committed.
    pub async fn write<F>(&self, write: F) -> anyhow::Result<T>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, anyhow::Result<T>> + Send + 'static,
    {
        let (answer, result) = oneshot::channel();
        self.jobs
            .send(Job {
                write: Box::new(write),
                answer,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?
    }
}

async fn commit_loop<T: Send + 'static>(store: Store, admission: Arc<Admission>, mut queue: mpsc::Receiver<Job<T>>) {
    while let Some(first) = queue.recv().await {
        // Whatever queued up while the last group committed goes together.
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        match commit_group(&store, &admission, group).await {
            Ok(()) => {}
            Err(e) => warn!("group commit: {e:#}"),
        }
    }
}

/// Runs a group's writes in one transaction; answers each after the commit.
async fn commit_group<T: Send + 'static>(
    store: &Store,
    admission: &Admission,
    group: Vec<Job<T>>,
) -> anyhow::Result<()> {
    let mut tx = match store.write().await {
        Ok(tx) => tx,
        Err(e) => {
            for job in group {
                let _ = job.answer.send(Err(anyhow::anyhow!("{e:#}")));
            }
            return Err(e);
        }
    };
    // The group's events are the ids past the last one before it: nothing else
    // writes while the group holds the write lock. (Not counted if this fails.)
    let first_event = if admission.is_on() {
        super::last_event_id(&mut tx).await.ok().map(|last| last + 1)
    } else {
        None
    };
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let result = match tx.begin().await {
            Ok(mut savepoint) => match (job.write)(&mut savepoint).await {
                Ok(value) => savepoint.commit().await.map(|_| value).map_err(Into::into),
                Err(e) => {
                    let _ = savepoint.rollback().await;
                    Err(e)
                }
            },
            Err(e) => Err(e.into()),
        };
        results.push((job.answer, result));
    }
    let written = match first_event {
        Some(first) => super::last_event_id(&mut tx).await.ok().map(|last| (first, last)),
        None => None,
    };
    if let Some((first, last)) = written {
        admission.events_written(first, last);
    }
    match tx.commit().await {
        Ok(()) => {
            for (answer, result) in results {
                let _ = answer.send(result);
            }
            Ok(())
        }
        Err(e) => {
            if let Some((first, last)) = written {
                admission.events_dropped(first, last);
            }
            for (answer, _) in results {
                let _ = answer.send(Err(anyhow::anyhow!("commit failed: {e}")));
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_and_a_failing_one_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let writer: GroupCommit<i64> = GroupCommit::start(store.clone(), Arc::new(Admission::off()));
        let mut tasks = Vec::new();
        for i in 0..200i64 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                writer
                    .write(move |conn| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO secrets (name, value) VALUES (?, x'00')")
                                .bind(format!("k{i}"))
                                .execute(&mut *conn)
                                .await?;
                            anyhow::ensure!(i % 50 != 7, "refused {i}");
                            Ok(i)
                        })
                    })
                    .await
            }));
        }
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => {}
                Err(e) => {
                    assert!(e.to_string().starts_with("refused"), "{e}");
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 4);
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            stored, 196,
            "the refused writes left nothing behind; the others all committed"
        );
    }
}
