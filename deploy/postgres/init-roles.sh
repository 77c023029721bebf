#!/usr/bin/env bash
# Least-privilege PostgreSQL roles for certflow and Temporal. Run once as a superuser: the
# compose stack mounts it in PostgreSQL's /docker-entrypoint-initdb.d; by hand,
#
#   PGHOST=… PGUSER=<superuser> CERTFLOW_AUDIT_OWNER_DB_PASSWORD=… CERTFLOW_WORKER_DB_PASSWORD=… \
#     CERTFLOW_API_DB_PASSWORD=… TEMPORAL_DB_PASSWORD=… deploy/postgres/init-roles.sh
#
# Safe to run again (it sets the passwords anew), also on a database an earlier release set up
# (where the worker owned the trail: ownership moves to certflow_audit_owner). What each role
# may do:
#   temporal              creates and owns Temporal's own databases (CREATEDB), nothing of
#                         certflow's;
#   certflow_audit_owner  owns the audit database and its schema: `certflow-worker audit
#                         migrate` runs as it, once per upgrade, and nothing else does;
#   certflow_worker       appends to the trail and reads it (INSERT, SELECT), nothing more: it
#                         cannot change, delete or truncate records, nor drop the guards;
#   certflow_api          reads the trail (SELECT), nothing more.
set -euo pipefail
: "${CERTFLOW_AUDIT_OWNER_DB_PASSWORD:?set CERTFLOW_AUDIT_OWNER_DB_PASSWORD}"
: "${CERTFLOW_WORKER_DB_PASSWORD:?set CERTFLOW_WORKER_DB_PASSWORD}"
: "${CERTFLOW_API_DB_PASSWORD:?set CERTFLOW_API_DB_PASSWORD}"
: "${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD}"
db=${CERTFLOW_AUDIT_DB:-certflow_audit}

# Passwords are read by psql from the environment (\getenv), never put on its command line.
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --dbname "${POSTGRES_DB:-postgres}" -v db="$db" <<'SQL'
\getenv owner_pw CERTFLOW_AUDIT_OWNER_DB_PASSWORD
\getenv worker_pw CERTFLOW_WORKER_DB_PASSWORD
\getenv api_pw CERTFLOW_API_DB_PASSWORD
\getenv temporal_pw TEMPORAL_DB_PASSWORD
SELECT 'CREATE ROLE temporal' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'temporal') \gexec
SELECT 'CREATE ROLE certflow_audit_owner' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'certflow_audit_owner') \gexec
SELECT 'CREATE ROLE certflow_worker' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'certflow_worker') \gexec
SELECT 'CREATE ROLE certflow_api' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'certflow_api') \gexec
ALTER ROLE temporal LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'temporal_pw';
ALTER ROLE certflow_audit_owner LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'owner_pw';
ALTER ROLE certflow_worker LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'worker_pw';
ALTER ROLE certflow_api LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'api_pw';
SELECT format('CREATE DATABASE %I OWNER certflow_audit_owner', :'db')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO certflow_audit_owner', :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO certflow_worker, certflow_api', :'db') \gexec
\connect :db
ALTER SCHEMA public OWNER TO certflow_audit_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO certflow_worker, certflow_api;
-- A trail an earlier release made belonged to the worker: it passes to the owner.
SELECT 'ALTER TABLE certflow_audit OWNER TO certflow_audit_owner'
  WHERE to_regclass('public.certflow_audit') IS NOT NULL \gexec
SELECT 'ALTER FUNCTION certflow_audit_append_only() OWNER TO certflow_audit_owner'
  WHERE to_regprocedure('public.certflow_audit_append_only()') IS NOT NULL \gexec
-- Tables the owner creates: the worker appends and reads, the API reads; nothing more.
ALTER DEFAULT PRIVILEGES FOR ROLE certflow_audit_owner IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO certflow_worker;
ALTER DEFAULT PRIVILEGES FOR ROLE certflow_audit_owner IN SCHEMA public GRANT SELECT ON TABLES TO certflow_api;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM certflow_worker, certflow_api;
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO certflow_worker;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO certflow_api;
SQL
echo "certflow roles ready: temporal, certflow_audit_owner (owns $db), certflow_worker (appends), certflow_api (reads)"
