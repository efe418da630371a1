//! Batch, else each alone: a batch of items is written in one transaction, the
//! fast way (one turn, one commit, set-based statements); if that fails, each
//! item is written again alone, so that a failure stays with its own item and
//! the others commit. The hot path's three writers use it: the API's group
//! commit (an item is a request's write), the stage-change intake (a group's
//! changes, written set-based) and the engine (a run's step).
//!
//! A write may therefore run twice, on the whole batch and then on its item
//! alone: only the attempt that commits counts.

use std::future::Future;

use sqlx::Acquire as _;

use super::{Conn, Store, Tx};

/// How an item written again alone is kept apart from the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alone {
    /// Under a savepoint of its own, every item in one transaction.
    Savepoint,
    /// In a transaction of its own: for a write whose set-based statements
    /// no savepoint can split, or whose commit is the item's own.
    Transaction,
}

/// What `batch_else_each` wrote.
#[derive(Debug)]
pub(crate) enum Written<T> {
    /// Every item, in one transaction: what the write of them all returned.
    Together(T),
    /// The batch failed (its error); each item was then written alone: its
    /// own result, in the order of the items.
    Alone(anyhow::Error, Vec<anyhow::Result<T>>),
}

/// A writer's unit: how its items are written, and its transactions ended.
pub(crate) trait Unit: Sync {
    type Item: Sync;
    /// What a write of some items returns.
    type Written: Send + Sync;

    /// Writes `items` (the whole batch, or one) in `conn`, and may stop at the
    /// first error: `batch_else_each` rolls back what it wrote.
    fn write(
        &self,
        conn: &mut Conn,
        items: &[Self::Item],
    ) -> impl Future<Output = anyhow::Result<Self::Written>> + Send;

    /// Commits `tx`, given what its writes returned (the batch's, one item's,
    /// or each item's that held under a savepoint); an error is the
    /// transaction's.
    fn commit(&self, tx: Tx, written: &[&Self::Written]) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Writes `items` by `unit` in one transaction, `first` (the turn to write,
/// taken already), and commits; if any of that fails, writes each item alone
/// (`alone`) by the same unit. An error of the second pass that is no item's
/// (the turn to write, a commit under savepoints) is returned.
pub(crate) async fn batch_else_each<U: Unit>(
    store: &Store,
    first: anyhow::Result<Tx>,
    items: &[U::Item],
    alone: Alone,
    unit: &U,
) -> anyhow::Result<Written<U::Written>> {
    let failed = match in_one_transaction(first, items, unit).await {
        Ok(written) => return Ok(Written::Together(written)),
        Err(e) => e,
    };
    let each = match alone {
        Alone::Savepoint => each_under_a_savepoint(store.write().await?, items, unit).await?,
        Alone::Transaction => {
            let mut each = Vec::with_capacity(items.len());
            for item in items {
                let one = std::slice::from_ref(item);
                each.push(in_one_transaction(store.write().await, one, unit).await);
            }
            each
        }
    };
    Ok(Written::Alone(failed, each))
}

/// Writes `items` in `tx` and commits, or rolls back on the first error.
async fn in_one_transaction<U: Unit>(
    tx: anyhow::Result<Tx>,
    items: &[U::Item],
    unit: &U,
) -> anyhow::Result<U::Written> {
    let mut tx = tx?;
    match unit.write(&mut tx, items).await {
        Ok(written) => {
            unit.commit(tx, &[&written]).await?;
            Ok(written)
        }
        Err(e) => {
            // The error is the write's; a failed rollback leaves the
            // connection to be replaced (`fit_to_hand_out`).
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Writes each item under its own savepoint in `tx`, then commits what held.
async fn each_under_a_savepoint<U: Unit>(
    mut tx: Tx,
    items: &[U::Item],
    unit: &U,
) -> anyhow::Result<Vec<anyhow::Result<U::Written>>> {
    let mut each = Vec::with_capacity(items.len());
    for item in items {
        let mut savepoint = tx.begin().await?;
        let written = unit.write(&mut savepoint, std::slice::from_ref(item)).await;
        match written {
            Ok(_) => savepoint.commit().await?,
            Err(_) => savepoint.rollback().await?,
        }
        each.push(written);
    }
    let held: Vec<&U::Written> = each.iter().filter_map(|w| w.as_ref().ok()).collect();
    unit.commit(tx, &held).await?;
    Ok(each)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    /// Inserts each item as a secret named after it; refuses `refused` (after
    /// its insert, so that its partial write must be undone). Counts its
    /// writes and the items each commit held.
    #[derive(Default)]
    struct Inserts {
        refused: i64,
        writes: std::sync::atomic::AtomicUsize,
        commits: std::sync::Mutex<Vec<usize>>,
        /// A commit of a transaction that wrote this item fails.
        no_commit: Option<i64>,
    }

    impl Unit for Inserts {
        type Item = i64;
        type Written = Vec<i64>;

        async fn write(&self, conn: &mut Conn, items: &[i64]) -> anyhow::Result<Vec<i64>> {
            self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            for &i in items {
                sqlx::query("INSERT INTO secrets (name, value) VALUES (?, x'00')")
                    .bind(format!("k{i}"))
                    .execute(&mut *conn)
                    .await?;
                anyhow::ensure!(i != self.refused, "refused {i}");
            }
            Ok(items.to_vec())
        }

        async fn commit(&self, tx: Tx, written: &[&Vec<i64>]) -> anyhow::Result<()> {
            self.commits.lock().unwrap().push(written.len());
            if let Some(no) = self.no_commit
                && written.iter().any(|w| w.contains(&no))
            {
                tx.rollback().await?;
                anyhow::bail!("no commit for {written:?}");
            }
            Ok(tx.commit().await?)
        }
    }

    fn refusing(refused: i64) -> Inserts {
        Inserts {
            refused,
            ..Default::default()
        }
    }

    async fn stored(store: &Store) -> Vec<String> {
        sqlx::query_scalar("SELECT name FROM secrets ORDER BY rowid")
            .fetch_all(&store.pool)
            .await
            .unwrap()
    }

    /// The results of a pass written alone, as the values or the errors' text.
    fn each(written: Written<Vec<i64>>) -> (String, Vec<Result<Vec<i64>, String>>) {
        match written {
            Written::Alone(e, each) => (
                e.to_string(),
                each.into_iter().map(|r| r.map_err(|e| e.to_string())).collect(),
            ),
            Written::Together(w) => panic!("written together: {w:?}"),
        }
    }

    #[tokio::test]
    async fn a_batch_that_holds_is_written_and_committed_once() {
        let (_dir, store) = store().await;
        let items: Vec<i64> = (0..100).collect();
        let unit = refusing(-1);
        let written = batch_else_each(&store, store.write().await, &items, Alone::Savepoint, &unit)
            .await
            .unwrap();
        assert!(matches!(written, Written::Together(ref w) if *w == items));
        assert_eq!(unit.writes.into_inner(), 1);
        assert_eq!(*unit.commits.lock().unwrap(), [1]);
        assert_eq!(stored(&store).await.len(), 100);
    }

    /// Writes the items 0..n by `unit`, each alone the way `alone` says.
    async fn write(store: &Store, n: i64, alone: Alone, unit: &Inserts) -> Written<Vec<i64>> {
        let items: Vec<i64> = (0..n).collect();
        batch_else_each(store, store.write().await, &items, alone, unit)
            .await
            .unwrap()
    }

    /// Under savepoints: the other items commit in one transaction, the
    /// failure is reported on its own item and leaves nothing behind.
    #[tokio::test]
    async fn under_savepoints_one_failing_item_fails_alone() {
        let (_dir, store) = store().await;
        let unit = refusing(17);
        let (failed, each) = each(write(&store, 50, Alone::Savepoint, &unit).await);
        assert_eq!(failed, "refused 17");
        assert_eq!(each.len(), 50);
        for (i, result) in each.iter().enumerate() {
            match i {
                17 => assert_eq!(result, &Err("refused 17".to_string())),
                _ => assert_eq!(result, &Ok(vec![i as i64])),
            }
        }
        assert_eq!(
            *unit.commits.lock().unwrap(),
            [49],
            "one commit, of the 49 items that held"
        );
        let names = stored(&store).await;
        assert_eq!(names.len(), 49);
        assert!(
            !names.contains(&"k17".to_string()),
            "the refused item's insert was undone"
        );
    }

    /// A transaction an item: for set-based writes. The others commit, each in
    /// its own transaction; the failing one commits nothing.
    #[tokio::test]
    async fn in_transactions_one_failing_item_fails_alone() {
        let (_dir, store) = store().await;
        let unit = refusing(3);
        let (failed, each) = each(write(&store, 20, Alone::Transaction, &unit).await);
        assert_eq!(failed, "refused 3");
        let refused: Vec<usize> = (each.iter().enumerate())
            .filter_map(|(i, r)| r.is_err().then_some(i))
            .collect();
        assert_eq!(refused, [3]);
        assert_eq!(
            *unit.commits.lock().unwrap(),
            [1; 19],
            "a commit for each item that held"
        );
        assert_eq!(stored(&store).await.len(), 19);
    }

    /// A commit that fails fails its transaction: the batch goes again item
    /// by item, and an item whose commit fails is reported so.
    #[tokio::test]
    async fn a_failed_commit_fails_its_transaction() {
        let (_dir, store) = store().await;
        let unit = Inserts {
            refused: -1,
            no_commit: Some(2),
            ..Default::default()
        };
        let (failed, each) = each(write(&store, 4, Alone::Transaction, &unit).await);
        assert_eq!(failed, "no commit for [[0, 1, 2, 3]]");
        assert_eq!(each[2], Err("no commit for [[2]]".to_string()));
        assert_eq!(stored(&store).await, ["k0", "k1", "k3"]);
    }
}
