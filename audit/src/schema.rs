//! The audit table and its guards, per database. Triggers refuse UPDATE and DELETE (and, in
//! PostgreSQL, TRUNCATE, which row triggers do not see).

const TABLE: &str = "CREATE TABLE IF NOT EXISTS certflow_audit (
        seq BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        certificate_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        at_unix BIGINT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        cycle BIGINT NOT NULL,
        detail TEXT NOT NULL,
        issuer TEXT NOT NULL,
        serial TEXT,
        not_after_unix BIGINT,
        sha256_fingerprint TEXT,
        vault_path TEXT,
        vault_version BIGINT,
        servicenow_record TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        client TEXT)";
const INDEX_CERTIFICATE: &str =
    "CREATE INDEX IF NOT EXISTS certflow_audit_certificate ON certflow_audit (certificate_id, seq)";
const INDEX_TIME: &str = "CREATE INDEX IF NOT EXISTS certflow_audit_at ON certflow_audit (at_unix)";

/// Advisory lock key held while the PostgreSQL schema is created (an arbitrary constant).
pub const MIGRATION_LOCK: i64 = 0x6365_7274_666c_6f77;

pub const SQLITE: &[&str] = &[
    TABLE,
    INDEX_CERTIFICATE,
    INDEX_TIME,
    "CREATE TRIGGER IF NOT EXISTS certflow_audit_no_update BEFORE UPDATE ON certflow_audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS certflow_audit_no_delete BEFORE DELETE ON certflow_audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    "PRAGMA journal_mode = WAL",
    "PRAGMA busy_timeout = 5000",
];

/// The authenticated API client beside the actor, added after the first release.
pub const SQLITE_ADD_CLIENT: &str = "ALTER TABLE certflow_audit ADD COLUMN client TEXT";

pub const POSTGRES: &[&str] = &[
    TABLE,
    "ALTER TABLE certflow_audit ADD COLUMN IF NOT EXISTS client TEXT",
    INDEX_CERTIFICATE,
    INDEX_TIME,
    "CREATE OR REPLACE FUNCTION certflow_audit_append_only() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$ LANGUAGE plpgsql",
    "CREATE OR REPLACE TRIGGER certflow_audit_no_change BEFORE UPDATE OR DELETE ON certflow_audit
        FOR EACH ROW EXECUTE FUNCTION certflow_audit_append_only()",
    "CREATE OR REPLACE TRIGGER certflow_audit_no_truncate BEFORE TRUNCATE ON certflow_audit
        FOR EACH STATEMENT EXECUTE FUNCTION certflow_audit_append_only()",
];

/// The guards a PostgreSQL trail must have before a writer that does not own it appends.
pub const POSTGRES_GUARDS: &[&str] = &["certflow_audit_no_change", "certflow_audit_no_truncate"];

/// Serialises appends (the head of the chain) in PostgreSQL without table locks, which would
/// need UPDATE or DELETE rights the writer does not have (an arbitrary constant).
pub const APPEND_LOCK: i64 = 0x6365_7274_6175_6474;
