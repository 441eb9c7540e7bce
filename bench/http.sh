#!/usr/bin/env bash
# HTTP API benchmarks, each reported against a baseline measured in the same
# run on the same machine (docs/performance.md explains them).
#
#   bench/http.sh [--quick] [--rounds N] [--secs S] [--only submit|list]
#
#   1. submit and wait: `POST /api/v1/tasks/noop/runs?wait=30s` of the no-op
#      task from 2 concurrent clients (wrk), answered by `serve --workers 2`,
#      on SQLite and on PostgreSQL, against `execute --batch --parallel 2` (the
#      in-memory pool, which records nothing); runs/s and the latency of each
#      request (p50, p99); alternated round by round, a fresh store each round.
#   2. `GET /api/v1/runs?limit=50` on a store of 1 000 000 runs, under load
#      from a second process (wrk, 2 connections, bounded in time), against the
#      same request on a store of one run.
#
# BENCH_BIN=path measures that binary instead of building this tree's.
# Needs wrk, sqlite3, psql (for the PostgreSQL rows: an admin URL in
# TASK_EXECUTOR_BENCH_PG, default postgres://postgres@127.0.0.1:5432/postgres;
# its databases are called te_bench_http_PID_* and dropped on exit) and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=5; secs=10; rows=1000000; only=all
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=2; secs=4; rows=100000 ;;
    --rounds) rounds=$2; shift ;;
    --secs) secs=$2; shift ;;
    --only) only=$2; shift ;;
    *) echo "usage: bench/http.sh [--quick] [--rounds N] [--secs S] [--only submit|list]" >&2; exit 2 ;;
  esac
  shift
done
for tool in wrk sqlite3 psql; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool (apt-get install wrk sqlite3 postgresql-client)" >&2; exit 2; }
done
admin=${TASK_EXECUTOR_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
base=${admin%/*}
psql "$admin" -Atqc 'SELECT 1' >/dev/null 2>&1 || {
  echo "cannot reach PostgreSQL at ${admin/:*@/:***@}; start it with" \
    "\`pg_ctlcluster --skip-systemctl-redirect 15 main start\`, or set TASK_EXECUTOR_BENCH_PG" >&2
  exit 2
}

# BENCH_BIN measures a binary built already (another commit's, say).
if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
else
  cargo build --release --locked --bin manage_tasks >&2
  bin=$root/target/release/manage_tasks
fi
work=$(mktemp -d)
server=""
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
cleanup() {
  [ -z "$server" ] || { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
  drop_databases
  rm -rf "$work"
}
trap cleanup EXIT

# Starts `serve` on store $1 with the arguments after it; sets $server (its
# pid) and $url (its base URL, read off its first stderr line).
serve() {
  local store=$1; shift
  : > "$work/serve.err"
  TASK_STORE=$store "$bin" serve --listen 127.0.0.1:0 "$@" 2>"$work/serve.err" & server=$!
  for _ in $(seq 200); do
    url=$(sed -n '1s/^serving \(http:[^ ]*\) .*/\1/p' "$work/serve.err")
    [ -n "$url" ] && return 0
    sleep 0.05
  done
  cat "$work/serve.err" >&2; return 1
}
stop_serve() { kill -TERM "$server"; wait "$server" || true; server=""; }

# wrk's report → "requests/s p50_ms p99_ms"; refuses a run with errors.
wrk_figures() {
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Non-2xx|Socket errors/ { bad = $0 }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /^Requests\/sec/ { rps = $2 }
    END { if (bad != "") { print "wrk: " bad > "/dev/stderr"; exit 1 } printf "%s %s %s\n", rps, p50, p99 }' "$1"
}

noop=$root/examples/noop.sh
args='{"requestId":"214215161263","user":"tester","cmd":"hostname"}'
for _ in $(seq 1000); do echo "$args"; done > "$work/batch.jsonl"
cat > "$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$args'
wrk.headers["Content-Type"] = "application/json"
EOF
echo "commit $(git rev-parse --short HEAD); $(nproc) CPUs; postgres $(psql "$admin" -Atqc 'SHOW server_version')"

if [ "$only" = all ] || [ "$only" = submit ]; then
  echo
  echo "## 1. POST /tasks/noop/runs?wait=30s, 2 clients, serve --workers 2; medians of $rounds alternated rounds of ${secs} s"
  TASK_STORE=$work/pool.yaml quiet "$bin" -q register --name noop --location "$noop"
  : > "$work/submit.txt"
  for r in $(seq "$rounds"); do
    t0=$(now_us)
    TASK_STORE=$work/pool.yaml quiet "$bin" -q execute --name noop --batch "$work/batch.jsonl" --parallel 2 --json
    line="$(awk -v us=$(($(now_us) - t0)) 'BEGIN { print 1e9 / us }')"
    fresh_db te_bench_http
    for store in "$work/api-$r.db" "$db"; do
      TASK_STORE=$store quiet "$bin" -q register --name noop --location "$noop"
      serve "$store" --workers 2
      wrk -t2 -c2 -d"${secs}s" --timeout 30s --latency -s "$work/post.lua" \
        "$url/api/v1/tasks/noop/runs?wait=30s" > "$work/wrk.out"
      stop_serve
      line="$line $(wrk_figures "$work/wrk.out")"
    done
    echo "$line" >> "$work/submit.txt"
  done
  pool=$(cut -d ' ' -f 1 "$work/submit.txt" | med)
  printf '%-46s %8s %8s %9s %9s\n' "" runs/s ratio "p50 ms" "p99 ms"
  printf '%-46s %8.0f %8.2f\n' "execute --batch --parallel 2 (pool)" "$pool" 1
  for v in "2:SQLite store" "5:PostgreSQL store"; do
    col=${v%%:*}; label=${v#*:}
    rps=$(cut -d ' ' -f "$col" "$work/submit.txt" | med)
    p50=$(cut -d ' ' -f $((col + 1)) "$work/submit.txt" | med)
    p99=$(cut -d ' ' -f $((col + 2)) "$work/submit.txt" | med)
    printf '%-46s %8.0f %8.2f %9.2f %9.2f\n' "POST ?wait, $label" "$rps" \
      "$(awk -v a="$rps" -v b="$pool" 'BEGIN { print a / b }')" "$p50" "$p99"
  done
  echo "(target: runs/s >= 0.80 of the pool, p50 <= 5 ms)"
fi

if [ "$only" = all ] || [ "$only" = list ]; then
  echo
  echo "## 2. GET /runs?limit=50: $rows runs against one; wrk, 2 connections, ${secs} s; medians of $rounds rounds"
  for s in big small; do
    TASK_STORE=$work/$s.db quiet "$bin" -q register --name noop --location "$noop"
    TASK_STORE=$work/$s.db quiet "$bin" -q submit --name noop --taskArgs '{}'
  done
  n=$((rows - 1))
  sqlite3 "$work/big.db" <<EOF
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < $n - 1)
INSERT INTO runs (id, task, args, caller, state, attempt, max_attempts, fence,
                  queued_at, available_at, started_at, finished_at, outcome, seq)
SELECT printf('%016x-bench-%012d', 1700000000000 + i * 10, i), 'noop', '{"n":1}', 'bench',
       CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'completed' END, 1, 1, 1,
       1700000000000 + i * 10, 1700000000000 + i * 10, 1700000000000 + i * 10,
       1700000000000 + i * 10 + 3,
       '{"kind":"completed","result":{"status":1,"reason":"ok","payload":null}}', i + 2
FROM c;
ANALYZE;
EOF
  [ "$(sqlite3 "$work/big.db" 'SELECT count(*) FROM runs')" = "$rows" ] || { echo "fill failed" >&2; exit 1; }
  : > "$work/list.txt"
  for r in $(seq "$rounds"); do
    line=""
    for s in small big; do
      serve "$work/$s.db" --workers 0
      wrk -t1 -c2 -d"${secs}s" --latency "$url/api/v1/runs?limit=50" > "$work/wrk.out"
      stop_serve
      line="$line $(wrk_figures "$work/wrk.out")"
    done
    echo "$line" >> "$work/list.txt"
  done
  printf '%-30s %10s %9s %9s %12s\n' "" requests/s "p50 ms" "p99 ms" "p99 ratio"
  small99=$(cut -d ' ' -f 4 "$work/list.txt" | med)
  for v in "2:1 run" "5:$rows runs"; do
    col=${v%%:*}; label=${v#*:}
    rps=$(cut -d ' ' -f "$col" "$work/list.txt" | med)
    p50=$(cut -d ' ' -f $((col + 1)) "$work/list.txt" | med)
    p99=$(cut -d ' ' -f $((col + 2)) "$work/list.txt" | med)
    printf '%-30s %10.0f %9.2f %9.2f %12.2f\n' "$label" "$rps" "$p50" "$p99" \
      "$(awk -v a="$p99" -v b="$small99" 'BEGIN { print a / b }')"
  done
fi
