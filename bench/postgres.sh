#!/usr/bin/env bash
# PostgreSQL benchmarks, each reported as a ratio to a baseline measured in the
# same run on the same machine (docs/performance.md explains them).
#
#   bench/postgres.sh [--quick] [--rounds N] [--only e2e|machinery|latency]
#
#   1. end-to-end: 1000 no-op runs queued by one `submit --batch`, then drained
#      by 2 `worker --concurrency 1 --until-idle` processes, on PostgreSQL and on
#      SQLite, against `execute --batch --parallel 2` (the in-memory pool, which
#      records nothing); alternated round by round, a fresh database each round.
#   2. the queue's machinery alone (benches/queue_pg.rs: claim + finish through
#      the library, no process spawned, 2 concurrent workers) against
#      `pgbench -N` with 2 clients on the same database; alternated round by round.
#   3. wake-up latency: from just before a run is queued to its task process
#      running, on an idle worker, with LISTEN/NOTIFY and with --poll 100ms and
#      500ms (benches/wake_pg.rs; the task is bench/stamp.c).
#
# Needs a PostgreSQL server: TASK_EXECUTOR_BENCH_PG, an admin URL (default
# postgres://postgres@127.0.0.1:5432/postgres); every database this script
# creates is called te_bench_PID_*, and dropped on exit. Also: psql, pgbench,
# sqlite3, cargo, cc. Uses /usr/bin/python3 nowhere: the no-op task is a POSIX
# shell script.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=5; latency_rounds=3; machinery_runs=2000; pgbench_secs=5; samples=1000; slow_samples=300; only=all
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=3; latency_rounds=3; machinery_runs=1000; pgbench_secs=3; samples=300; slow_samples=60 ;;
    --rounds) rounds=$2; latency_rounds=$2; shift ;;
    --only) only=$2; shift ;;
    *) echo "usage: bench/postgres.sh [--quick] [--rounds N] [--only e2e|machinery|latency]" >&2; exit 2 ;;
  esac
  shift
done
for tool in psql pgbench sqlite3 cc jq; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool (apt-get install postgresql-client postgresql-contrib sqlite3 gcc jq)" >&2; exit 2; }
done
admin=${TASK_EXECUTOR_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
base=${admin%/*}
if ! psql "$admin" -Atqc 'SELECT 1' >/dev/null 2>&1; then
  echo "cannot reach PostgreSQL at ${admin/:*@/:***@}; start it with" \
    "\`pg_ctlcluster --skip-systemctl-redirect 15 main start\`, or set TASK_EXECUTOR_BENCH_PG" \
    "to an admin URL" >&2
  exit 2
fi

cargo build --release --locked --bin manage_tasks >&2
bin=$root/target/release/manage_tasks
benches=$(cargo bench --locked --no-run -p task-executor --bench queue_pg --bench wake_pg \
  --message-format json 2>/dev/null | jq -r 'select(.executable != null) | "\(.target.name) \(.executable)"')
queue_pg=$(awk '$1 == "queue_pg" { print $2 }' <<< "$benches")
wake_pg=$(awk '$1 == "wake_pg" { print $2 }' <<< "$benches")

work=$(mktemp -d)
pids=()
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  drop_databases
  rm -rf "$work"
}
trap cleanup EXIT
range() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'; }

noop=$root/examples/noop.sh
args='{"requestId":"214215161263","user":"tester","cmd":"hostname"}'
for _ in $(seq 1000); do echo "$args"; done > "$work/batch.jsonl"
echo "postgres: $(psql "$admin" -Atqc 'SHOW server_version'); commit $(git rev-parse --short HEAD)"

if [ "$only" = all ] || [ "$only" = e2e ]; then
  echo
  echo "## 1. end-to-end: 1000 no-op runs, 2 at a time; medians of $rounds alternated rounds"
  TASK_STORE=$work/pool.yaml quiet "$bin" -q register --name noop --location "$noop"
  # Drains the queue of store $1 with 2 workers; appends to file $2 the µs from
  # their start until the last run was recorded completed, and until both exited.
  drain() {
    local store=$1 t0 w1 w2 t1 done last
    TASK_STORE=$store quiet "$bin" -q register --name noop --location "$noop"
    TASK_STORE=$store quiet "$bin" -q submit --name noop --batch "$work/batch.jsonl"
    t0=$(now_us)
    TASK_STORE=$store "$bin" -q worker --concurrency 1 --until-idle --keep-runs 0 & w1=$!
    TASK_STORE=$store "$bin" -q worker --concurrency 1 --until-idle --keep-runs 0 & w2=$!
    pids+=("$w1" "$w2")
    wait "$w1"; wait "$w2"
    t1=$(now_us)
    pids=("${pids[@]:0:${#pids[@]}-2}")
    local q="SELECT count(*) FILTER (WHERE state = 'completed'), max(finished_at) FROM"
    case "$store" in
      postgres://*) IFS='|' read -r done last < <(psql "$store" -Atqc "$q task_executor.runs") ;;
      *) IFS='|' read -r done last < <(sqlite3 "$store" "$q runs") ;;
    esac
    [ "$done" = 1000 ] || { echo "only $done of 1000 runs completed on $store" >&2; return 1; }
    echo "$((last * 1000 - t0)) $((t1 - t0))" > "$2"
  }
  : > "$work/e2e.txt"
  for r in $(seq "$rounds"); do
    t0=$(now_us)
    TASK_STORE=$work/pool.yaml quiet "$bin" -q execute --name noop --batch "$work/batch.jsonl" --parallel 2 --json
    echo $(($(now_us) - t0)) > "$work/pool.us"
    fresh_db te_bench; url=$db
    drain "$url" "$work/pg.us"
    drop_db "$url"
    # Diagnostic: the same without waiting for the WAL to reach the disk at
    # each commit (set on this database only), to show what the fsyncs cost.
    fresh_db te_bench; url=$db
    psql "$url" -Atqc "ALTER DATABASE ${url##*/} SET synchronous_commit = off" >/dev/null
    drain "$url" "$work/pgasync.us"
    drop_db "$url"
    drain "$work/lite-$r.db" "$work/lite.us"
    rm -f "$work/lite-$r.db"*
    cat "$work/pool.us" "$work/pg.us" "$work/pgasync.us" "$work/lite.us" | tr '\n' ' ' >> "$work/e2e.txt"
    echo >> "$work/e2e.txt"
  done
  # Columns: pool; PostgreSQL done, exited; the same without fsync; SQLite done, exited.
  pool=$(cut -d ' ' -f 1 "$work/e2e.txt" | med)
  printf '%-48s %8s %8s %12s\n' "" runs/s ratio "round range"
  printf '%-48s %8.0f %8.2f\n' "execute --batch --parallel 2 (pool)" "$(awk -v p="$pool" 'BEGIN { print 1e9 / p }')" 1
  for v in "2:PostgreSQL queue, until the last run completed" "3:PostgreSQL queue, until both workers exited" \
           "6:SQLite queue, until the last run completed" "7:SQLite queue, until both workers exited" \
           "4:PostgreSQL, synchronous_commit = off (diagnostic)"; do
    col=${v%%:*}; label=${v#*:}
    m=$(cut -d ' ' -f "$col" "$work/e2e.txt" | med)
    spread=$(awk -v c="$col" '{ print $1 / $c }' "$work/e2e.txt" | range)
    printf '%-48s %8.0f %8.2f %12s\n' "$label" "$(awk -v m="$m" 'BEGIN { print 1e9 / m }')" \
      "$(awk -v m="$m" -v p="$pool" 'BEGIN { print p / m }')" "$spread"
  done
  echo "(2 workers at --concurrency 1 vs the pool; target >= 0.80 on PostgreSQL)"
fi

if [ "$only" = all ] || [ "$only" = machinery ]; then
  echo
  echo "## 2. the queue machinery alone: claim + finish, 2 workers, no process; medians of $rounds alternated rounds"
  fresh_db te_bench; url=$db
  # Diagnostic: a second database where commits do not wait for the WAL fsync.
  fresh_db te_bench; async=$db
  psql "$async" -Atqc "ALTER DATABASE ${async##*/} SET synchronous_commit = off" >/dev/null
  for u in "$url" "$async"; do
    pgbench -i -q -s 1 "$u" >"$work/quiet.out" 2>&1 || { cat "$work/quiet.out" >&2; exit 1; }
  done
  tps() {
    pgbench -N -c 2 -j 2 -T "$pgbench_secs" "$1" 2>"$work/quiet.out" | awk '/^tps/ { print $3 }' | grep . \
      || { cat "$work/quiet.out" >&2; return 1; }
  }
  : > "$work/machinery.txt"
  for r in $(seq "$rounds"); do
    line=()
    for u in "$url" "$async"; do
      rates=$(QUEUE_PG_URL=$u "$queue_pg" --bench "$machinery_runs")
      line+=("$(tps "$u")")
      for v in claim-1 claim-8 claim-1-deep; do
        line+=("$(awk -v v="$v" '$1 == v { print $2 }' <<< "$rates")")
      done
    done
    echo "${line[*]}" >> "$work/machinery.txt"
  done
  drop_db "$url"; drop_db "$async"
  # Columns: tps, claim-1, claim-8, claim-1-deep; then the same with
  # synchronous_commit = off. Each row: its column, and the column it is a ratio to.
  printf '%-52s %8s %8s %12s\n' "" "per s" ratio "round range"
  for v in "1:1:pgbench -N, 2 clients (transactions/s)" "2:1:claim 1 + finish (runs/s)" \
           "3:1:claim 8 + 8 finishes (runs/s)" "4:2:claim 1 + finish, 10x as many queued (vs claim 1)" \
           "5:5:pgbench -N, synchronous_commit = off (diagnostic)" "6:5:claim 1 + finish, synchronous_commit = off" \
           "7:5:claim 8 + 8 finishes, synchronous_commit = off"; do
    IFS=: read -r col b label <<< "$v"
    m=$(cut -d ' ' -f "$col" "$work/machinery.txt" | med)
    t=$(cut -d ' ' -f "$b" "$work/machinery.txt" | med)
    spread=""
    [ "$col" = "$b" ] || spread=$(awk -v c="$col" -v b="$b" '{ print $c / $b }' "$work/machinery.txt" | range)
    printf '%-52s %8.0f %8.2f %12s\n' "$label" "$m" "$(awk -v m="$m" -v t="$t" 'BEGIN { print m / t }')" "$spread"
  done
  echo "(a claim and a finish are two transactions each committed: 0.50 is the ceiling without batching)"
fi

if [ "$only" = all ] || [ "$only" = latency ]; then
  echo
  echo "## 3. wake-up latency: queued -> task process started, idle worker; $latency_rounds rounds of each mode"
  cc -O2 -o "$work/stamp" bench/stamp.c
  mkfifo "$work/stamps"
  fresh_db te_bench; url=$db
  TASK_STORE=$url quiet "$bin" -q register --name stamp --location "$work/stamp"
  : > "$work/latency.txt"
  for r in $(seq "$latency_rounds"); do
    for mode in "listen::$samples:20" "poll-100ms:--poll 100ms:$samples:100" "poll-500ms:--poll 500ms:$slow_samples:500"; do
      IFS=: read -r name flags n jitter <<< "$mode"
      # shellcheck disable=SC2086 # $flags is empty or two words
      TASK_STORE=$url WAKE_FIFO=$work/stamps "$bin" -q worker $flags --keep-runs 0 & w=$!
      pids+=("$w")
      line=$(WAKE_STORE=$url WAKE_FIFO=$work/stamps "$wake_pg" --bench "$n" "$jitter")
      kill -TERM "$w"; wait "$w" || true
      pids=("${pids[@]:0:${#pids[@]}-1}")
      echo "$name $line" >> "$work/latency.txt"
    done
  done
  drop_db "$url"
  printf '%-12s %8s %8s %8s %8s %8s %10s %10s\n' mode samples "p50" "p90" "p99" "max" "enqueue" "after it"
  for name in listen poll-100ms poll-500ms; do
    awk -v m="$name" '$1 == m' "$work/latency.txt" | while read -r _ n p50 p90 p99 max enq after; do
      printf '%-12s %8d %8.2f %8.2f %8.2f %8.2f %10.2f %10.2f\n' "$name" "$n" "$p50" "$p90" "$p99" "$max" "$enq" "$after"
    done
  done
  echo "(ms: queued -> task started; enqueue: the median time enqueue itself took; after it: the median"
  echo " from enqueue's return to the task's start)"
  echo "(one line per round; target p50 <= 5 ms with LISTEN/NOTIFY)"
fi
