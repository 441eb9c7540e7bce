#!/usr/bin/env bash
# Whole-command benchmarks, each reported as a ratio to a baseline measured in
# the same run on the same machine (docs/performance.md explains them).
#
#   bench/run.sh [--quick] [--baseline GIT_REV | --baseline PATH_TO_BINARY]
#
#   1. per call: `execute` of a no-op task on a YAML store (no history) and on
#      an SQLite store (history), against the task run directly with the same
#      stdin; the same for a baseline binary (default: da877d4, the last commit
#      before the service layer, built the same plain way). All commands are
#      alternated run by run (bench/alternate.c), so a noisy neighbour slows
#      them alike.
#   2. batch: 1000 no-op runs at --parallel 2 against a C posix_spawn loop
#      (bench/spawn_baseline.c), alternated round by round; baseline too.
#   3. what recording costs on SQLite: fsyncs and write locks per `execute`,
#      averaged over many runs (strace).
#   4. peak RSS of one run, a batch of 1000 and of 10000.
#
# Needs: cargo, cc, git, strace, /usr/bin/time. Uses /usr/bin/python3 nowhere:
# the no-op task is a POSIX shell script.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=400; batch_rounds=15; record_runs=50; baseline=da877d4
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=100; batch_rounds=5; record_runs=20 ;;
    --baseline) baseline=$2; shift ;;
    *) echo "usage: bench/run.sh [--quick] [--baseline REV|BINARY]" >&2; exit 2 ;;
  esac
  shift
done
for tool in cc git strace /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install gcc git strace time)" >&2; exit 2; }
done

cargo build --release --locked --bin manage_tasks >&2
bin=$root/target/release/manage_tasks
# The baseline: a binary, or a commit built plain (`cargo build --release`,
# no build script tricks) once and kept under target/bench-baseline/.
if [ -x "$baseline" ]; then
  base=$baseline
else
  base=$root/target/bench-baseline/$baseline/manage_tasks
  if [ ! -x "$base" ]; then
    tree=$(mktemp -d)
    git worktree add -q --detach "$tree" "$baseline"
    (cd "$tree" && CARGO_TARGET_DIR="$root/target/bench-baseline/build" \
      cargo build --release --locked --bin manage_tasks >&2)
    mkdir -p "$(dirname "$base")"
    cp "$root/target/bench-baseline/build/release/manage_tasks" "$base"
    git worktree remove --force "$tree"
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -pthread -o "$work/spawn_baseline" bench/spawn_baseline.c
cc -O2 -o "$work/alternate" bench/alternate.c

noop=$root/examples/noop.sh
args='{"requestId":"214215161263","user":"tester","cmd":"hostname"}'
printf '%s\n' "{\"meta\":{\"protocol\":\"v1\",\"caller\":\"self\",\"taskName\":\"noop\"},\"data\":$args}" > "$work/envelope.json"
for b in new base; do
  exe=$bin; [ "$b" = base ] && exe=$base
  TASK_STORE=$work/$b.yaml "$exe" -q register --name noop --location "$noop"
  TASK_STORE=$work/$b.db "$exe" -q register --name noop --location "$noop"
done

echo "## 1. per call: median of $rounds alternated rounds (ms), and the ratio to the task run directly"
"$work/alternate" "$rounds" "$work/envelope.json" "$noop" \
  "TASK_STORE=$work/new.yaml $bin -q execute --name noop --taskArgs $args" \
  "TASK_STORE=$work/new.db $bin -q execute --name noop --taskArgs $args" \
  "TASK_STORE=$work/base.yaml $base -q execute --name noop --taskArgs $args" \
  "TASK_STORE=$work/base.db $base -q execute --name noop --taskArgs $args" \
  "$bin --version" "$base --version" > "$work/alt.txt"
awk 'NR == 1 { d = $1 } { m[NR] = $1 } END {
  printf "%-28s %8s %8s\n", "", "ms", "ratio"
  printf "%-28s %8.3f %8.2f\n", "task run directly", d / 1000, 1
  printf "%-28s %8.3f %8.2f\n", "execute, YAML", m[2] / 1000, m[2] / d
  printf "%-28s %8.3f %8.2f\n", "execute, SQLite", m[3] / 1000, m[3] / d
  printf "%-28s %8.3f %8.2f\n", "baseline execute, YAML", m[4] / 1000, m[4] / d
  printf "%-28s %8.3f %8.2f\n", "baseline execute, SQLite", m[5] / 1000, m[5] / d
  printf "%-28s %8.3f %8.2f\n", "manage_tasks --version", m[6] / 1000, m[6] / d
  printf "%-28s %8.3f %8.2f\n", "baseline --version", m[7] / 1000, m[7] / d
  printf "(target: execute <= 2.5 on both stores; --version is the start-up alone)\n" }' "$work/alt.txt"

echo
echo "## 2. batch: 1000 no-op runs, 2 at a time; median of $batch_rounds alternated rounds"
for i in $(seq 1000); do echo "$args"; done > "$work/batch.jsonl"
ns() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>"$work/ns.err" || { cat "$work/ns.err" >&2; return 1; }
  t1=$(date +%s%N)
  echo $(( t1 - t0 ))
}
: > "$work/loop.ns"; : > "$work/new.ns"; : > "$work/base.ns"
for _ in $(seq "$batch_rounds"); do
  ns "$work/spawn_baseline" 1000 2 "$work/envelope.json" "$noop" >> "$work/loop.ns"
  TASK_STORE=$work/new.yaml ns "$bin" -q execute --name noop --batch "$work/batch.jsonl" --parallel 2 --json >> "$work/new.ns"
  TASK_STORE=$work/base.yaml ns "$base" -q execute --name noop --batch "$work/batch.jsonl" --parallel 2 --json >> "$work/base.ns"
done
med() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
awk -v l="$(med "$work/loop.ns")" -v n="$(med "$work/new.ns")" -v b="$(med "$work/base.ns")" 'BEGIN {
  printf "%-28s %8s %8s\n", "", "runs/s", "ratio"
  printf "%-28s %8.0f %8.2f\n", "C posix_spawn loop", 1e12 / l, 1
  printf "%-28s %8.0f %8.2f\n", "execute --batch", 1e12 / n, l / n
  printf "%-28s %8.0f %8.2f\n", "baseline execute --batch", 1e12 / b, l / b
  printf "(target: >= 0.90 of the loop)\n" }'

echo
echo "## 3. recording a run on SQLite: per execute, over $record_runs runs"
for b in new base; do
  exe=$bin; [ "$b" = base ] && exe=$base
  : > "$work/$b.sync"; : > "$work/$b.locks"
  for _ in $(seq "$record_runs"); do
    # fsyncs come from checkpoints, every few runs: count them over many.
    # A write transaction takes SQLite's write lock, a fcntl(F_SETLK) on the
    # WAL index's write slot; so does the WAL-index rebuild that the first
    # connection of every process does.
    TASK_STORE=$work/$b.db strace -f -qq -e trace=fsync,fdatasync,fcntl -o "$work/$b.trace" \
      "$exe" -q execute --name noop --taskArgs "$args" >/dev/null
    grep -E 'fsync|fdatasync' "$work/$b.trace" >> "$work/$b.sync" || true
    grep 'F_SETLK.*F_WRLCK.*l_start=120, l_len=1' "$work/$b.trace" >> "$work/$b.locks" || true
  done
  awk -v n="$record_runs" -v b="$b:" -v s="$(wc -l < "$work/$b.sync")" -v l="$(wc -l < "$work/$b.locks")" \
    'BEGIN { printf "%-10s fsyncs %.2f, write locks %.2f (2 commits + the WAL-index rebuild)\n", b, s / n, l / n }'
done

echo
echo "## 4. peak RSS (KiB)"
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
for i in $(seq 10); do cat "$work/batch.jsonl"; done > "$work/batch10k.jsonl"
export TASK_STORE=$work/new.db
printf 'one run:          %8d\n' "$(rss "$bin" -q execute --name noop --taskArgs "$args")"
printf 'batch of 1000:    %8d\n' "$(rss "$bin" -q execute --name noop --batch "$work/batch.jsonl" --parallel 2 --json)"
printf 'batch of 10000:   %8d\n' "$(rss "$bin" -q execute --name noop --batch "$work/batch10k.jsonl" --parallel 2 --json)"
