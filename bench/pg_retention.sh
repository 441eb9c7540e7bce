#!/usr/bin/env bash
# How PostgreSQL's tables and indexes behave under churn: RUNS no-op runs
# (default 100 000) queued in batches and drained by worker processes that
# keep the newest KEEP runs per task (`worker --keep-runs`, pruned every
# minute, in batches of 1000 rows), then table and index sizes and dead
# tuples, before and after a VACUUM. Prints a table; no figure is asserted.
#
#   bench/pg_retention.sh [RUNS] [KEEP]
#
# Needs PostgreSQL (TASK_EXECUTOR_TEST_PG: an admin URL, default
# postgres://postgres@127.0.0.1:5432/postgres) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100000}; keep=${2:-1000}
admin=${TASK_EXECUTOR_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}
psql "$admin" -qAtc 'select 1' >/dev/null || {
  echo "cannot reach PostgreSQL at $admin; start it with pg_ctlcluster --skip-systemctl-redirect 15 main start" >&2; exit 2; }
# What is measured is the database's, not the binary's: a debug build will do.
cargo build --locked --bin manage_tasks >&2
bin=$PWD/target/debug/manage_tasks
db=te_bench_retention_$$
psql "$admin" -qc "CREATE DATABASE $db"
work=$(mktemp -d)
cleanup() { pkill -f "manage_tasks.*$db" 2>/dev/null || true; psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; rm -rf "$work"; }
trap cleanup EXIT
export TASK_STORE=${admin%/*}/$db
"$bin" -q register --name noop --location "$PWD/examples/noop.sh"
for i in $(seq 1000); do echo '{}'; done > "$work/batch.jsonl"
sizes() {
  psql "$TASK_STORE" -qAt -F ' | ' -c "
    SELECT relname, n_live_tup, n_dead_tup,
           pg_size_pretty(pg_table_size(relid)), pg_size_pretty(pg_indexes_size(relid))
    FROM pg_stat_user_tables WHERE schemaname = 'task_executor' AND relname IN ('runs','run_logs')
    ORDER BY relname"
  psql "$TASK_STORE" -qAt -F ' | ' -c "
    SELECT indexrelname, pg_size_pretty(pg_relation_size(indexrelid))
    FROM pg_stat_user_indexes WHERE schemaname = 'task_executor' AND relname = 'runs' ORDER BY 1"
}
for w in 1 2 3; do
  "$bin" -q worker --concurrency 2 --keep-runs "$keep" >"$work/w$w.log" 2>&1 &
done
start=$(date +%s)
left=$runs
while [ "$left" -gt 0 ]; do
  "$bin" -q submit --name noop --batch "$work/batch.jsonl" >/dev/null
  left=$((left - 1000))
  # Keep the queue short, as a steady load would.
  while [ "$(psql "$TASK_STORE" -qAtc "select count(*) from task_executor.runs where state='queued'")" -gt 2000 ]; do sleep 0.5; done
done
while [ "$(psql "$TASK_STORE" -qAtc "select count(*) from task_executor.runs where state in ('queued','running')")" -gt 0 ]; do sleep 1; done
echo "== $runs runs in $(( $(date +%s) - start )) s, --keep-runs $keep"
echo "table | live | dead | table size | index size"
sizes
sleep 61  # one more prune tick
echo "== after the next prune tick"
sizes
psql "$TASK_STORE" -qc "VACUUM task_executor.runs, task_executor.run_logs"
echo "== after VACUUM"
sizes
