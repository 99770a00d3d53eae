#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory: a login role
# that can only read, for Grafana's history panels. Tables the collector creates later (its
# migrations, the monthly partitions) are readable too, through the default privileges.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v reader="$TICE_HISTORY_DB_USER" -v password="$TICE_HISTORY_DB_PASSWORD" <<'SQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'password';
GRANT CONNECT ON DATABASE :"DBNAME" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
SQL
