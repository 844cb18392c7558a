#!/usr/bin/env bash
# Start the machine's PostgreSQL 15 and create the role and database the tests use.
# Prints the URL to export as THAW_TEST_POSTGRES_URL, and nothing else, on stdout.
# Idempotent.
set -euo pipefail

setup() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "PostgreSQL is not installed; installing it"
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
    pg_ctlcluster "$version" main start
  fi
  for _ in $(seq 1 30); do
    su postgres -c "pg_isready -q -h 127.0.0.1" && break
    sleep 1
  done
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='thaw'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE thaw LOGIN PASSWORD 'thaw-test-pw'\""
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='thaw_test'\"" | grep -q 1 ||
    su postgres -c "createdb -O thaw thaw_test"
}

# The caller captures stdout, so everything setup says (pg_ctlcluster prints
# "Removed stale pid file." after an unclean stop) goes to stderr. No extra
# descriptor is opened: the postmaster would inherit it and the caller's $(...)
# would wait for it forever.
setup >&2
echo "postgresql://thaw:thaw-test-pw@127.0.0.1:5432/thaw_test"
