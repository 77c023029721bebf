#!/usr/bin/env bash
# Least-privilege PostgreSQL roles for certflow and Temporal. Run once as a superuser: the
# compose stack mounts it in PostgreSQL's /docker-entrypoint-initdb.d; by hand,
#
#   PGHOST=… PGUSER=<superuser> CERTFLOW_WORKER_DB_PASSWORD=… CERTFLOW_API_DB_PASSWORD=… \
#     TEMPORAL_DB_PASSWORD=… deploy/postgres/init-roles.sh
#
# Safe to run again (it sets the passwords anew). What each role may do:
#   temporal         creates and owns Temporal's own databases (CREATEDB), nothing of certflow's;
#   certflow_worker  owns the audit database: creates the audit schema and appends to it;
#   certflow_api     connects to the audit database and reads it (SELECT), nothing more: it
#                    cannot insert, change, delete or alter, nor reach Temporal's databases.
set -euo pipefail
: "${CERTFLOW_WORKER_DB_PASSWORD:?set CERTFLOW_WORKER_DB_PASSWORD}"
: "${CERTFLOW_API_DB_PASSWORD:?set CERTFLOW_API_DB_PASSWORD}"
: "${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD}"
db=${CERTFLOW_AUDIT_DB:-certflow_audit}

# Passwords are read by psql from the environment (\getenv), never put on its command line.
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --dbname "${POSTGRES_DB:-postgres}" -v db="$db" <<'SQL'
\getenv worker_pw CERTFLOW_WORKER_DB_PASSWORD
\getenv api_pw CERTFLOW_API_DB_PASSWORD
\getenv temporal_pw TEMPORAL_DB_PASSWORD
SELECT 'CREATE ROLE temporal' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'temporal') \gexec
SELECT 'CREATE ROLE certflow_worker' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'certflow_worker') \gexec
SELECT 'CREATE ROLE certflow_api' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'certflow_api') \gexec
ALTER ROLE temporal LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'temporal_pw';
ALTER ROLE certflow_worker LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'worker_pw';
ALTER ROLE certflow_api LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'api_pw';
SELECT format('CREATE DATABASE %I OWNER certflow_worker', :'db')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO certflow_api', :'db') \gexec
\connect :db
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO certflow_api;
-- Tables the worker creates are readable by the API, and only readable.
ALTER DEFAULT PRIVILEGES FOR ROLE certflow_worker IN SCHEMA public GRANT SELECT ON TABLES TO certflow_api;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO certflow_api;
SQL
echo "certflow roles ready: temporal, certflow_worker (owns $db), certflow_api (reads $db)"
