#!/usr/bin/env bash
# What the tests need beyond the Python packages, set up by `make test` itself (a fresh machine has neither):
# - a real PostgreSQL for the Postgres-storage test (tests/test_postgres.py): Debian's package, listening on
#   loopback only (Debian's default listen_addresses = 'localhost'), with a role and a database for the tests;
# - Debian's chromium for the browser test (tests/test_ui_browser.py; playwright, its Python side, comes with make);
# - Debian's dataset-fashion-mnist (Fashion-MNIST's IDX files) for the Fashion-MNIST slice (tests/test_fashion.py).
# Idempotent: installs only what is missing, starts the cluster only when it is down, re-creates nothing.
# The role may create databases and roles: each test run makes its own database and a role with a random
# password, and drops them afterwards. Without root or sudo it says what to run and exits non-zero.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    echo "scripts/test_services.sh: $1 needs installing, which needs root (apt-get). Run once as root:" >&2
    echo "  apt-get update && apt-get install -y postgresql chromium dataset-fashion-mnist" >&2
    echo "or point DAGSTER_PG_HOST/PORT/USERNAME/PASSWORD/DB at a server and CHROMIUM at a browser." >&2
    exit 1
  fi
}
apt_install() {
  need_root "$*"
  echo "installing $* (Debian's packages)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

PG_USER=${DAGSTER_PG_USERNAME:-compression_pipeline}
PG_PASSWORD=${DAGSTER_PG_PASSWORD:-compression_pipeline}
PG_DB=${DAGSTER_PG_DB:-compression_pipeline}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() {
  (cd /tmp && if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi)
}

missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || missing+=(dataset-fashion-mnist)  # tests/test_fashion.py
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

if [ -n "${DAGSTER_PG_HOST:-}" ] && [ "${DAGSTER_PG_HOST}" != 127.0.0.1 ] && [ "${DAGSTER_PG_HOST}" != localhost ]; then
  echo "PostgreSQL: using the server at $DAGSTER_PG_HOST (DAGSTER_PG_HOST); nothing started here"
  exit 0
fi
if pg_isready -q -h 127.0.0.1 -p "${DAGSTER_PG_PORT:-5432}" 2>/dev/null && [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  exit 0  # a server is up and we cannot administer it: the test says what is wrong if the role is missing
fi
need_root "starting PostgreSQL"
VERSION=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main"' | grep -q .; then
  as_root pg_createcluster "$VERSION" main >/dev/null
fi
PORT=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
  as_root pg_ctlcluster "$VERSION" main start
fi
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 1; done
pg_isready -h 127.0.0.1 -p "$PORT"

as_postgres psql -q -v ON_ERROR_STOP=1 -p "$PORT" <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE "$PG_USER" LOGIN CREATEDB CREATEROLE PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE "$PG_USER" LOGIN CREATEDB CREATEROLE PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE "$PG_DB" OWNER "$PG_USER"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')
\gexec
SQL
echo "PostgreSQL $VERSION on 127.0.0.1:$PORT, role $PG_USER, database $PG_DB"
