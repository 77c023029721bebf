//! The audit trail: every lifecycle event of every certificate, in a real database through
//! `sqlx` (SQLite as the embedded default, PostgreSQL for production), append-only and
//! tamper-evident.
//!
//! Each record carries the hash of the one before it (`hash = SHA-256(prev_hash, seq, event)`),
//! so editing, removing or reordering a stored record breaks the chain from that record on, and
//! [`AuditStore::verify`] names the first broken one. Database triggers refuse UPDATE and
//! DELETE, which stops accidents; the chain catches whoever drops the triggers. Appending is
//! idempotent by `event_id`: a retried activity adds nothing.
//!
//! With a key ([`AuditKey`], `CERTFLOW_AUDIT_HMAC_KEY_FILE`) records are chained with
//! HMAC-SHA-256 instead (`hash = "hmac-sha256:" + hex`), so someone with write access to the
//! database but not the key cannot rewrite records and recompute the chain: verification with
//! the key fails on every forged or unkeyed record from `keyed_from` on.

mod schema;

use anyhow::{Context, Result};
use certflow_common::EventKind;
use certflow_common::audit::{AuditEvent, AuditRecord};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::sync::Arc;

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Prefix of a keyed record's hash.
pub const KEYED_PREFIX: &str = "hmac-sha256:";

/// The secret key of a keyed chain, and the first record that must be keyed.
#[derive(Clone)]
pub struct AuditKey {
    key: Arc<[u8]>,
    /// Records before this one may be unkeyed (written before the key was configured).
    pub keyed_from: i64,
}

impl AuditKey {
    /// `CERTFLOW_AUDIT_HMAC_KEY_FILE` (at least 32 bytes; surrounding whitespace ignored) and
    /// `CERTFLOW_AUDIT_HMAC_FROM_SEQ` (default 1: every record keyed); `None` without a file.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(path) = std::env::var_os("CERTFLOW_AUDIT_HMAC_KEY_FILE").filter(|p| !p.is_empty())
        else {
            return Ok(None);
        };
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "reading CERTFLOW_AUDIT_HMAC_KEY_FILE ({})",
                path.to_string_lossy()
            )
        })?;
        let keyed_from = match std::env::var("CERTFLOW_AUDIT_HMAC_FROM_SEQ") {
            Ok(v) if !v.is_empty() => {
                v.parse::<i64>().ok().filter(|n| *n >= 1).with_context(|| {
                    format!("CERTFLOW_AUDIT_HMAC_FROM_SEQ: {v:?} is not a record number")
                })?
            }
            _ => 1,
        };
        Self::new(bytes.trim_ascii(), keyed_from).map(Some)
    }

    pub fn new(key: &[u8], keyed_from: i64) -> Result<Self> {
        anyhow::ensure!(
            key.len() >= 32,
            "the audit HMAC key must be at least 32 bytes (it is {})",
            key.len()
        );
        Ok(Self {
            key: key.into(),
            keyed_from,
        })
    }

    fn mac(&self, prev_hash: &str, seq: i64, event: &AuditEvent) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(&chained_bytes(prev_hash, seq, event));
        format!("{KEYED_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[derive(Clone)]
pub struct AuditStore {
    pool: AnyPool,
    backend: Backend,
    key: Option<AuditKey>,
    /// The longest chain this process has seen: a shorter one later was cut.
    seen: Arc<std::sync::atomic::AtomicI64>,
}

struct Ownership {
    owned: bool,
}

/// Filters of the audit listing; all optional.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub certificate_id: Option<String>,
    pub tenant: Option<String>,
    pub kind: Option<EventKind>,
    pub actor: Option<String>,
    pub since_unix: Option<i64>,
    pub until_unix: Option<i64>,
    /// Only records after this chain position (paging).
    pub after_seq: Option<i64>,
    pub limit: i64,
}

/// The first record whose hash or link does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub seq: i64,
    pub event_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub records: u64,
    pub first_broken: Option<Broken>,
}

impl AuditStore {
    /// `sqlite://path/to/audit.db` (created if missing) or `postgres://user@host/db`. Creates
    /// or updates the schema when the role owns it (or nothing is there yet); a PostgreSQL
    /// writer that does not own the trail (the worker, beside `certflow_audit_owner`, see
    /// deploy/postgres/init-roles.sh) finds it made and checks its guards are in place.
    pub async fn connect(url: &str) -> Result<Self> {
        let store = Self::open(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// For readers (the starter API): on PostgreSQL the schema is left alone, so a role that
    /// may only `SELECT` is enough; the worker creates it. SQLite, a single local file without
    /// roles, is set up as by [`AuditStore::connect`].
    pub async fn connect_reader(url: &str) -> Result<Self> {
        let store = Self::open(url).await?;
        if store.backend == Backend::Sqlite {
            store.migrate().await?;
        }
        Ok(store)
    }

    async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, url, connections) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let separator = if path.contains('?') { '&' } else { '?' };
            // One connection: writes to the chain must be serial, and SQLite has one writer.
            (
                Backend::Sqlite,
                format!("sqlite://{path}{separator}mode=rwc"),
                1,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string(), 4)
        } else {
            anyhow::bail!("audit database URL must start with sqlite:// or postgres://");
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            // An unreachable database fails a write in seconds: the lifecycle keeps the events
            // and tries again later instead of waiting on a connection.
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&url)
            .await
            .context("connecting to the audit database")?;
        Ok(Self {
            pool,
            backend,
            key: None,
            seen: Arc::default(),
        })
    }

    /// Chains new records with `key`, and verifies with it.
    pub fn with_key(mut self, key: Option<AuditKey>) -> Self {
        self.key = key;
        self
    }

    /// The hash of a new record, keyed when the store has a key.
    fn hash(&self, prev_hash: &str, seq: i64, event: &AuditEvent) -> String {
        match &self.key {
            Some(key) => key.mac(prev_hash, seq, event),
            None => chain_hash(prev_hash, seq, event),
        }
    }

    async fn migrate(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            for statement in schema::SQLITE {
                sqlx::query(statement)
                    .execute(&self.pool)
                    .await
                    .with_context(|| format!("creating the audit schema: {statement}"))?;
            }
            // Trails written before the `client` column existed get it (SQLite has no
            // ADD COLUMN IF NOT EXISTS: a duplicate column is the answer when it is there).
            if let Err(e) = sqlx::query(schema::SQLITE_ADD_CLIENT)
                .execute(&self.pool)
                .await
                && !e.to_string().contains("duplicate column")
            {
                return Err(anyhow::Error::new(e).context("adding the client column"));
            }
            return Ok(());
        }
        if let Some(owner) = self.postgres_owner().await?
            && !owner.owned
        {
            return self.postgres_guarded().await;
        }
        // Workers and APIs starting together would race on CREATE ... IF NOT EXISTS (it is not
        // atomic in PostgreSQL): one at a time, under a transaction-scoped advisory lock.
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "SELECT pg_advisory_xact_lock({})",
            schema::MIGRATION_LOCK
        ))
        .execute(&mut *tx)
        .await
        .context("locking the audit schema")?;
        for statement in schema::POSTGRES {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("creating the audit schema: {statement}"))?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the PostgreSQL trail exists, and whether this role owns it.
    async fn postgres_owner(&self) -> Result<Option<Ownership>> {
        let row = sqlx::query(
            "SELECT tableowner = current_user FROM pg_tables \
             WHERE schemaname = current_schema() AND tablename = 'certflow_audit'",
        )
        .fetch_optional(&self.pool)
        .await
        .context("looking up the audit table")?;
        Ok(match row {
            Some(row) => Some(Ownership {
                owned: row.try_get::<bool, _>(0)?,
            }),
            None => None,
        })
    }

    /// A trail this role does not own must carry every guard, or nothing is appended to it.
    async fn postgres_guarded(&self) -> Result<()> {
        for guard in schema::POSTGRES_GUARDS {
            let found = sqlx::query(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = 'certflow_audit'::regclass \
                 AND tgname = $1 AND tgenabled <> 'D'",
            )
            .bind(*guard)
            .fetch_optional(&self.pool)
            .await
            .context("looking up the audit table's guards")?;
            anyhow::ensure!(
                found.is_some(),
                "the audit table lacks its guard {guard}: run `certflow-worker audit migrate` as the table's owner"
            );
        }
        Ok(())
    }

    /// Appends the events not already stored, in order; returns the records added.
    pub async fn append(&self, events: &[AuditEvent]) -> Result<Vec<AuditRecord>> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Writers take turns at the head of the chain.
            sqlx::query(&format!(
                "SELECT pg_advisory_xact_lock({})",
                schema::APPEND_LOCK
            ))
            .execute(&mut *tx)
            .await?;
        }
        let head = sqlx::query("SELECT seq, hash FROM certflow_audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (mut seq, mut prev) = match head {
            Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?),
            None => (0, GENESIS.to_string()),
        };
        // A chain shorter than one this process saw was cut (a truncation the guards did not
        // stop): nothing is appended to it.
        let seen = self.seen.load(std::sync::atomic::Ordering::Acquire);
        anyhow::ensure!(
            seq >= seen,
            "the audit trail was cut: it ends at record {seq}, but record {seen} was written before"
        );
        let mut added = Vec::new();
        for event in events.iter().map(storable) {
            let event = &event;
            let exists = sqlx::query("SELECT seq FROM certflow_audit WHERE event_id = $1")
                .bind(&event.event_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_some() {
                continue;
            }
            seq += 1;
            let hash = self.hash(&prev, seq, event);
            insert(&mut tx, seq, event, &prev, &hash).await?;
            added.push(AuditRecord {
                seq,
                event: event.clone(),
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            });
        }
        tx.commit().await?;
        self.seen
            .fetch_max(seq, std::sync::atomic::Ordering::AcqRel);
        Ok(added)
    }

    /// The last record of the chain (its position and hash), to be kept elsewhere: a later
    /// trail that does not hold it was cut or rewritten.
    pub async fn head(&self) -> Result<Option<(i64, String)>> {
        let row = sqlx::query("SELECT seq, hash FROM certflow_audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        let head = match row {
            Some(row) => Some((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?)),
            None => None,
        };
        if let Some((seq, _)) = &head {
            self.seen
                .fetch_max(*seq, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(head)
    }

    /// Whether the chain holds record `seq` with `hash` (a head exported earlier).
    pub async fn holds(&self, seq: i64, hash: &str) -> Result<bool> {
        let row = sqlx::query("SELECT hash FROM certflow_audit WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<String, _>(0)? == hash,
            None => false,
        })
    }

    /// Records matching `filter`, in chain order.
    pub async fn search(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut clauses = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut numbers: Vec<i64> = Vec::new();
        // Placeholders are numbered in the order of binding: texts first, then numbers.
        let text_filters = [
            ("certificate_id", filter.certificate_id.clone()),
            ("tenant", filter.tenant.clone()),
            ("kind", filter.kind.map(kind_name)),
            ("actor", filter.actor.clone()),
        ];
        for (column, value) in text_filters {
            if let Some(v) = value {
                texts.push(v);
                clauses.push(format!("{column} = ${}", texts.len()));
            }
        }
        let number_filters = [
            ("at_unix >=", filter.since_unix),
            ("at_unix <=", filter.until_unix),
            ("seq >", filter.after_seq),
        ];
        for (condition, value) in number_filters {
            if let Some(v) = value {
                numbers.push(v);
                clauses.push(format!("{condition} ${}", texts.len() + numbers.len()));
            }
        }
        let mut sql = format!("SELECT {COLUMNS} FROM certflow_audit");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY seq LIMIT {}",
            filter.limit.clamp(1, 1000)
        ));
        let mut query = sqlx::query(&sql);
        for t in &texts {
            query = query.bind(t);
        }
        for n in &numbers {
            query = query.bind(n);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(record_of).collect()
    }

    /// Walks the whole chain and names the first record that does not hold.
    pub async fn verify(&self) -> Result<Verification> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM certflow_audit ORDER BY seq"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut prev = GENESIS.to_string();
        let mut records = 0;
        for (expected_seq, row) in (1..).zip(rows.iter()) {
            let record = record_of(row)?;
            records += 1;
            let broken = |reason: String| Broken {
                seq: record.seq,
                event_id: record.event.event_id.clone(),
                reason,
            };
            let problem = if record.seq != expected_seq {
                Some(format!(
                    "expected record {expected_seq}: records are missing"
                ))
            } else if record.prev_hash != prev {
                Some("its link to the previous record does not match".to_string())
            } else {
                self.check_hash(&prev, &record)
            };
            if let Some(reason) = problem {
                return Ok(Verification {
                    records,
                    first_broken: Some(broken(reason)),
                });
            }
            prev = record.hash.clone();
        }
        Ok(Verification {
            records,
            first_broken: None,
        })
    }

    /// Why a record's own hash does not hold, if it does not.
    fn check_hash(&self, prev: &str, record: &AuditRecord) -> Option<String> {
        let keyed = record.hash.starts_with(KEYED_PREFIX);
        let expected = match (&self.key, keyed) {
            (Some(key), true) => key.mac(prev, record.seq, &record.event),
            (Some(key), false) if record.seq >= key.keyed_from => {
                return Some(format!(
                    "it is not keyed, but every record from {} on must be (forged without the key?)",
                    key.keyed_from
                ));
            }
            (None, true) => {
                return Some(
                    "it is keyed: set CERTFLOW_AUDIT_HMAC_KEY_FILE to verify it".to_string(),
                );
            }
            (_, false) => chain_hash(prev, record.seq, &record.event),
        };
        (expected != record.hash).then(|| "its contents do not match its hash (edited)".to_string())
    }

    /// The pool, for tests that tamper with the table behind the store's back.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

const COLUMNS: &str = "seq, event_id, certificate_id, tenant, at_unix, kind, actor, cycle, detail, \
    issuer, serial, not_after_unix, sha256_fingerprint, vault_path, vault_version, \
    servicenow_record, prev_hash, hash, client";

async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    seq: i64,
    e: &AuditEvent,
    prev: &str,
    hash: &str,
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO certflow_audit ({COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
    ))
    .bind(seq)
    .bind(&e.event_id)
    .bind(&e.certificate_id)
    .bind(&e.tenant)
    .bind(e.at_unix)
    .bind(kind_name(e.kind))
    .bind(&e.actor)
    .bind(i64::from(e.cycle))
    .bind(&e.detail)
    .bind(&e.issuer)
    .bind(e.serial.clone())
    .bind(e.not_after_unix)
    .bind(e.sha256_fingerprint.clone())
    .bind(e.vault_path.clone())
    .bind(e.vault_version.map(|v| v as i64))
    .bind(e.servicenow_record.clone())
    .bind(prev)
    .bind(hash)
    .bind(e.client.clone())
    .execute(&mut **tx)
    .await
    .context("appending to the audit trail")?;
    Ok(())
}

fn record_of(row: &AnyRow) -> Result<AuditRecord> {
    let kind: String = row.try_get("kind")?;
    let kind = serde_json::from_value(serde_json::Value::String(kind.clone()))
        .with_context(|| format!("unknown event kind {kind:?} in the audit trail"))?;
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        event: AuditEvent {
            event_id: row.try_get("event_id")?,
            certificate_id: row.try_get("certificate_id")?,
            tenant: row.try_get("tenant")?,
            at_unix: row.try_get("at_unix")?,
            kind,
            actor: row.try_get("actor")?,
            cycle: u32::try_from(row.try_get::<i64, _>("cycle")?).unwrap_or(u32::MAX),
            detail: row.try_get("detail")?,
            issuer: row.try_get("issuer")?,
            serial: row.try_get("serial")?,
            not_after_unix: row.try_get("not_after_unix")?,
            sha256_fingerprint: row.try_get("sha256_fingerprint")?,
            vault_path: row.try_get("vault_path")?,
            vault_version: row
                .try_get::<Option<i64>, _>("vault_version")?
                .map(|v| v as u64),
            servicenow_record: row.try_get("servicenow_record")?,
            client: row.try_get("client")?,
        },
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn kind_name(kind: EventKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `SHA-256(prev_hash "\n" seq "\n" event-as-JSON)`, hex. The JSON of an event is canonical:
/// fields in declaration order, no whitespace.
pub fn chain_hash(prev_hash: &str, seq: i64, event: &AuditEvent) -> String {
    hex::encode(Sha256::digest(chained_bytes(prev_hash, seq, event)))
}

/// What a record's hash covers: `prev_hash "\n" seq "\n" event-as-JSON`.
fn chained_bytes(prev_hash: &str, seq: i64, event: &AuditEvent) -> Vec<u8> {
    let mut bytes = format!("{prev_hash}\n{seq}\n").into_bytes();
    bytes.extend(serde_json::to_vec(event).expect("audit events serialize"));
    bytes
}

/// The event as stored: PostgreSQL's text cannot hold NUL, so a NUL that got past validation
/// becomes U+FFFD instead of wedging the writer (and the lifecycle behind it) for ever.
fn storable(event: &AuditEvent) -> AuditEvent {
    let clean = |s: &str| s.replace('\0', "\u{fffd}");
    let mut event = event.clone();
    event.detail = clean(&event.detail);
    event.actor = clean(&event.actor);
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> AuditEvent {
        AuditEvent {
            event_id: id.into(),
            certificate_id: "web-1".into(),
            tenant: "acme".into(),
            at_unix: 1_800_000_000,
            kind: EventKind::Issued,
            actor: "certflow".into(),
            cycle: 0,
            detail: "serial 01".into(),
            issuer: "vault-pki".into(),
            serial: Some("01".into()),
            not_after_unix: Some(1_800_086_400),
            sha256_fingerprint: None,
            vault_path: None,
            vault_version: None,
            servicenow_record: None,
            client: None,
        }
    }

    #[test]
    fn the_hash_covers_link_position_and_every_field() {
        let base = chain_hash(GENESIS, 1, &event("a/1"));
        assert_eq!(base, chain_hash(GENESIS, 1, &event("a/1")));
        assert_ne!(base, chain_hash(GENESIS, 2, &event("a/1")));
        assert_ne!(base, chain_hash(&"1".repeat(64), 1, &event("a/1")));
        let mut edited = event("a/1");
        edited.actor = "mallory".into();
        assert_ne!(base, chain_hash(GENESIS, 1, &edited));
    }

    #[tokio::test]
    async fn sqlite_appends_idempotently_and_verifies() {
        let path = std::env::temp_dir().join(format!("certflow-audit-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = AuditStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert_eq!(
            store
                .append(&[event("a/1"), event("a/2")])
                .await
                .unwrap()
                .len(),
            2
        );
        let again = store.append(&[event("a/2"), event("a/3")]).await.unwrap();
        assert_eq!(again.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
        let all = store
            .search(&AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(all[1].prev_hash, all[0].hash);
        assert_eq!(store.verify().await.unwrap().first_broken, None);
        // The triggers refuse edits made through normal SQL.
        let refused = sqlx::query("UPDATE certflow_audit SET actor = 'x' WHERE seq = 2")
            .execute(store.pool())
            .await;
        assert!(refused.is_err());
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_keyed_chain_cannot_be_rewritten_without_the_key() {
        let path =
            std::env::temp_dir().join(format!("certflow-audit-hmac-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite://{}", path.display());
        let key = |from| Some(AuditKey::new(&[7u8; 32], from).unwrap());
        // One record from before the key was configured, then keyed ones.
        let plain = AuditStore::connect(&url).await.unwrap();
        plain.append(&[event("a/1")]).await.unwrap();
        let keyed = AuditStore::connect(&url).await.unwrap().with_key(key(2));
        let added = keyed.append(&[event("a/2"), event("a/3")]).await.unwrap();
        assert!(added.iter().all(|r| r.hash.starts_with(KEYED_PREFIX)));
        assert_eq!(keyed.verify().await.unwrap().first_broken, None);
        // Without the key keyed records cannot be vouched for; with a key that demands every
        // record be keyed, the old one is named.
        let broken = plain.verify().await.unwrap().first_broken.unwrap();
        assert_eq!((broken.seq, broken.reason.contains("keyed")), (2, true));
        let strict = AuditStore::connect(&url).await.unwrap().with_key(key(1));
        assert_eq!(strict.verify().await.unwrap().first_broken.unwrap().seq, 1);

        // A forger with the database but not the key: edits record 3 and rehashes it, unkeyed
        // or with a key of their own. Both are caught.
        sqlx::query("DROP TRIGGER certflow_audit_no_update")
            .execute(plain.pool())
            .await
            .unwrap();
        let mut forged = added[1].event.clone();
        forged.actor = "mallory".into();
        for hash in [
            chain_hash(&added[0].hash, 3, &forged),
            AuditKey::new(&[9u8; 32], 1)
                .unwrap()
                .mac(&added[0].hash, 3, &forged),
        ] {
            sqlx::query("UPDATE certflow_audit SET actor = 'mallory', hash = $1 WHERE seq = 3")
                .bind(&hash)
                .execute(plain.pool())
                .await
                .unwrap();
            let broken = keyed.verify().await.unwrap().first_broken.unwrap();
            assert_eq!(broken.seq, 3, "{hash}: {}", broken.reason);
        }
        // A key shorter than 32 bytes is refused.
        assert!(AuditKey::new(b"short", 1).is_err());
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_trail_of_release_1_gains_the_client_column_and_its_chain_holds() {
        let path =
            std::env::temp_dir().join(format!("certflow-audit-r1-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite://{}", path.display());
        // A store as release 1 created it: no client column, one record.
        {
            sqlx::any::install_default_drivers();
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap();
            let old_table = schema::SQLITE[0].replace(",\n        client TEXT)", ")");
            assert!(!old_table.contains("client"), "{old_table}");
            sqlx::query(&old_table).execute(&pool).await.unwrap();
            let e = event("old/1");
            let hash = chain_hash(GENESIS, 1, &e);
            sqlx::query(
                "INSERT INTO certflow_audit (seq, event_id, certificate_id, tenant, at_unix, kind, actor, cycle, detail, issuer, serial, not_after_unix, sha256_fingerprint, vault_path, vault_version, servicenow_record, prev_hash, hash) \
                 VALUES (1, 'old/1', 'web-1', 'acme', 1800000000, 'issued', 'certflow', 0, 'serial 01', 'vault-pki', '01', 1800086400, NULL, NULL, NULL, NULL, $1, $2)",
            )
            .bind(GENESIS)
            .bind(&hash)
            .execute(&pool)
            .await
            .unwrap();
        }
        let store = AuditStore::connect(&url).await.unwrap();
        let mut with_client = event("new/1");
        with_client.client = Some("servicenow-acme".into());
        store.append(&[with_client]).await.unwrap();
        let all = store
            .search(&AuditFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].event.client, None);
        assert_eq!(all[1].event.client.as_deref(), Some("servicenow-acme"));
        assert_eq!(store.verify().await.unwrap().first_broken, None);
        // Connecting again (a restart) is fine too.
        AuditStore::connect(&url).await.unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
