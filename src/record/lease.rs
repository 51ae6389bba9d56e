//! Mailbox leases: with several instances on one store, each mailbox is
//! worked by exactly one instance at a time.
//!
//! A lease row per mailbox names its holder, an expiry and a **fencing
//! token** that grows with every new holder. The holder renews the lease
//! by heartbeat; an instance that stops renewing (killed, paused, cut off)
//! loses it at expiry and any other instance may claim it. Every store
//! write made for a mailbox runs in a transaction that first checks that
//! the writer's token is still the current one (`Store::write_tx`), so a
//! former holder that wakes up after a pause cannot write decisions (nor
//! reserve replies) for a mailbox that has moved on.
//!
//! Times come from the database's clock, so instances on machines whose
//! clocks differ agree on expiry.

use std::sync::Arc;

use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError};

/// The proof that an instance holds a mailbox, carried by its store
/// handle ([`Store::fenced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub mailbox: String,
    pub holder: String,
    pub token: i64,
}

/// One running instance, as registered in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Unique per process: `name/pid/random`.
    pub id: String,
    /// The configured instance name (default: the host name).
    pub name: String,
    /// Host name and boot id: instances on the same host can tell whether
    /// another one is still alive.
    pub host: String,
    pub pid: i64,
}

/// A lease as `switchboard status` shows it.
#[derive(Debug, Clone)]
pub struct LeaseRow {
    pub mailbox: String,
    pub holder: String,
    pub token: i64,
    pub acquired_at: i64,
    pub expires_at: i64,
    /// The database's clock when the row was read.
    pub now: i64,
    /// The holder's registration, while it has one.
    pub holder_name: Option<String>,
    pub holder_pid: Option<i64>,
    pub holder_host: Option<String>,
}

impl LeaseRow {
    /// Held right now (not expired, not released).
    pub fn live(&self) -> bool {
        self.expires_at > self.now
    }
}

/// A registered instance and its last heartbeat.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub instance: Instance,
    pub started_at: i64,
    pub seen_at: i64,
}

impl Store {
    /// The database's clock in milliseconds, as an SQL expression.
    fn db_now(&self) -> &'static str {
        if self.sqlite {
            "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
        } else {
            "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
        }
    }

    /// This store handle, whose writes for `fence.mailbox` are accepted
    /// only while `fence.token` is the mailbox's current lease token.
    pub fn fenced(&self, fence: Fence) -> Store {
        Store {
            fence: Some(Arc::new(fence)),
            ..self.clone()
        }
    }

    /// Whether the store is an SQLite file (one instance at a time).
    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// The fence of this handle, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_deref()
    }

    /// Begins a write transaction; on a fenced handle, checks the lease
    /// first (and on PostgreSQL keeps it locked until the transaction
    /// ends, so a new holder's claim waits for this write to finish).
    /// Runs one statement in its own fenced write transaction (see
    /// [`Store::write_tx`]); returns the rows it changed.
    pub(crate) async fn exec_fenced<'q>(
        &self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let n = q.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(f) = &self.fence {
            let sql = if self.sqlite {
                "SELECT token FROM leases WHERE mailbox = ? AND holder = ?"
            } else {
                "SELECT token FROM leases WHERE mailbox = $1 AND holder = $2 FOR SHARE"
            };
            let token: Option<i64> = sqlx::query_scalar(sql)
                .bind(&f.mailbox)
                .bind(&f.holder)
                .fetch_optional(&mut *tx)
                .await?;
            if token != Some(f.token) {
                tx.rollback().await?;
                return Err(StoreError::Fenced(f.mailbox.clone()));
            }
        }
        Ok(tx)
    }

    /// Registers (or re-registers) an instance; returns the database's
    /// clock.
    pub async fn register_instance(&self, me: &Instance) -> Result<i64, StoreError> {
        let now = self.db_now();
        let sql = format!(
            "INSERT INTO instances (id, name, host, pid, started_at, seen_at) \
             VALUES ($1, $2, $3, $4, {now}, {now}) ON CONFLICT (id) DO UPDATE SET seen_at = {now} \
             RETURNING seen_at"
        );
        let at: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(self.sql(sql)))
            .bind(&me.id)
            .bind(&me.name)
            .bind(&me.host)
            .bind(me.pid)
            .fetch_one(&self.pool)
            .await?;
        Ok(at)
    }

    /// Heartbeat: refreshes `id`'s registration and returns how many
    /// instances have shown a sign of life within `ttl_ms` (this one
    /// included).
    pub async fn heartbeat(&self, me: &Instance, ttl_ms: i64) -> Result<usize, StoreError> {
        self.register_instance(me).await?;
        let sql = format!(
            "SELECT COUNT(*) FROM instances WHERE seen_at > {} - $1",
            self.db_now()
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(self.sql(sql)))
            .bind(ttl_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(1) as usize)
    }

    /// Removes an instance's registration (clean shutdown, or an instance
    /// on this host whose process is gone).
    pub async fn deregister_instance(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every registered instance.
    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, host, pid, started_at, seen_at FROM instances ORDER BY name, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
                    instance: Instance {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        host: r.try_get(2)?,
                        pid: r.try_get(3)?,
                    },
                    started_at: r.try_get(4)?,
                    seen_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Claims `mailbox` for `holder` when nobody holds it (no lease yet,
    /// expired or released). Returns the new fencing token, or `None`
    /// when another instance holds it. One statement: two instances
    /// claiming at once cannot both win.
    pub async fn claim_lease(
        &self,
        mailbox: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let now = self.db_now();
        let sql = format!(
            "INSERT INTO leases (mailbox, holder, token, acquired_at, expires_at) \
             VALUES ($1, $2, 1, {now}, {now} + $3) \
             ON CONFLICT (mailbox) DO UPDATE SET holder = excluded.holder, \
             token = leases.token + 1, acquired_at = excluded.acquired_at, \
             expires_at = excluded.expires_at \
             WHERE leases.expires_at <= excluded.acquired_at \
             RETURNING token"
        );
        let token: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(self.sql(sql)))
            .bind(mailbox)
            .bind(holder)
            .bind(ttl_ms)
            .fetch_optional(&self.pool)
            .await?;
        Ok(token)
    }

    /// Extends a held lease by `ttl_ms` from now. `false`: the lease is
    /// lost (another instance claimed it after it expired).
    pub async fn renew_lease(&self, f: &Fence, ttl_ms: i64) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE leases SET expires_at = {} + $1 WHERE mailbox = $2 AND holder = $3 AND token = $4",
            self.db_now()
        );
        let n = sqlx::query(sqlx::AssertSqlSafe(self.sql(sql)))
            .bind(ttl_ms)
            .bind(&f.mailbox)
            .bind(&f.holder)
            .bind(f.token)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Gives a lease up at once (clean shutdown, hand-over): any instance
    /// may claim it at its next heartbeat.
    pub async fn release_lease(&self, f: &Fence) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE mailbox = $1 AND holder = $2 AND token = $3",
        )
        .bind(&f.mailbox)
        .bind(&f.holder)
        .bind(f.token)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Expires every lease `holder` has (an instance known to be dead:
    /// its process on this host is gone, or the SQLite file is locked by
    /// this process).
    pub async fn expire_leases_of(&self, holder: &str) -> Result<u64, StoreError> {
        let n = sqlx::query("UPDATE leases SET expires_at = 0 WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }

    /// Every lease with its holder's registration.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        let sql = format!(
            "SELECT l.mailbox, l.holder, l.token, l.acquired_at, l.expires_at, {}, \
             i.name, i.pid, i.host FROM leases l LEFT JOIN instances i ON i.id = l.holder \
             ORDER BY l.mailbox",
            self.db_now()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseRow {
                    mailbox: r.try_get(0)?,
                    holder: r.try_get(1)?,
                    token: r.try_get(2)?,
                    acquired_at: r.try_get(3)?,
                    expires_at: r.try_get(4)?,
                    now: r.try_get(5)?,
                    holder_name: r.try_get(6)?,
                    holder_pid: r.try_get(7)?,
                    holder_host: r.try_get(8)?,
                })
            })
            .collect()
    }
}
