#!/usr/bin/env bash
# Queue and history benchmarks, each reported as a ratio to a baseline measured
# in the same run on the same machine. Needs: cargo, hyperfine, jq.
# Usage: bench/queue.sh [--quick]
#
#   1. enqueue rate: one `submit` per process, and `submit --batch` of 1000 lines
#   2. end-to-end: 1000 no-op runs through the queue (one worker, concurrency 2)
#      vs the in-memory pool of `execute --batch --parallel 2` (target ratio >= 0.8)
#   3. `runs list` with 1 000 000 runs in the store vs an empty store
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
quick=${1:-}
runs=10; calls=100; rows=1000000
if [ "$quick" = "--quick" ]; then runs=3; calls=30; rows=100000; fi

for tool in hyperfine jq; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install hyperfine jq)" >&2; exit 2; }
done

cargo build --release --locked --bin manage_tasks >&2
bin=$root/target/release/manage_tasks
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
noop=$root/examples/noop.sh
export TASK_STORE=$work/q.db
"$bin" -q register --name noop --location "$noop"
args='{"requestId":"214215161263","user":"tester","cmd":"hostname"}'
echo "$args" > "$work/args.json"
for i in $(seq 1000); do echo "$args"; done > "$work/batch.jsonl"
median() { jq -r ".results[$2].median" "$1"; }

echo "## 1. enqueue rate"
hyperfine -N --warmup 5 --runs "$calls" --export-json "$work/submit.json" --style none \
  --command-name submit "$bin -q submit --name noop --args-file $work/args.json" \
  --command-name submit-batch-1000 "$bin -q submit --name noop --batch $work/batch.jsonl" >/dev/null
s=$(median "$work/submit.json" 0); b=$(median "$work/submit.json" 1)
awk -v s="$s" -v b="$b" 'BEGIN { printf "submit (one process per run):   %6.0f runs/s (%.2f ms per call)\nsubmit --batch (1000 per call): %6.0f runs/s\n", 1/s, s*1000, 1000/b }'

echo
echo "## 2. end-to-end: 1000 no-op runs, 2 at a time (median of $runs)"
fresh="rm -f $work/e2e.db*; TASK_STORE=$work/e2e.db $bin -q register --name noop --location $noop"
hyperfine --warmup 1 --runs "$runs" --export-json "$work/e2e.json" --style none \
  --prepare "$fresh" \
  --command-name batch "TASK_STORE=$work/e2e.db $bin -q execute --name noop --batch $work/batch.jsonl --parallel 2 --json >/dev/null" \
  --prepare "$fresh; TASK_STORE=$work/e2e.db $bin -q submit --name noop --batch $work/batch.jsonl >/dev/null" \
  --command-name worker "TASK_STORE=$work/e2e.db $bin -q worker --concurrency 2 --until-idle --poll 10ms" \
  --prepare "$fresh" \
  --command-name submit+worker "TASK_STORE=$work/e2e.db $bin -q submit --name noop --batch $work/batch.jsonl >/dev/null && TASK_STORE=$work/e2e.db $bin -q worker --concurrency 2 --until-idle --poll 10ms" >/dev/null
p=$(median "$work/e2e.json" 0); w=$(median "$work/e2e.json" 1); e=$(median "$work/e2e.json" 2)
awk -v p="$p" -v w="$w" -v e="$e" 'BEGIN { printf "execute --batch (pool):  %6.0f runs/s\nworker (queue drained):  %6.0f runs/s  ratio %.2f (target >= 0.80)\nsubmit --batch + worker: %6.0f runs/s  ratio %.2f\n", 1000/p, 1000/w, p/w, 1000/e, p/e }'

echo
echo "## 3. runs list with $rows runs"
RUNS=$rows RUNS_DB=$work/big.db cargo bench -q -p task-executor --bench runs_list 2>/dev/null
rm -f "$work/empty.db"; TASK_STORE=$work/empty.db "$bin" -q submit --name noop >/dev/null 2>&1 || {
  TASK_STORE=$work/empty.db "$bin" -q register --name noop --location "$noop"; TASK_STORE=$work/empty.db "$bin" -q submit --name noop >/dev/null; }
hyperfine -N --warmup 5 --runs 50 --export-json "$work/list.json" --style none \
  --command-name empty "env TASK_STORE=$work/empty.db $bin runs list --limit 50 --json" \
  --command-name big "env TASK_STORE=$work/big.db $bin runs list --limit 50 --json" \
  --command-name big-task "env TASK_STORE=$work/big.db $bin runs list --limit 50 --json --task other" >/dev/null
e=$(median "$work/list.json" 0); b=$(median "$work/list.json" 1); t=$(median "$work/list.json" 2)
awk -v e="$e" -v b="$b" -v t="$t" 'BEGIN { printf "CLI runs list --limit 50, empty store: %.2f ms\nCLI runs list --limit 50, big store:   %.2f ms (ratio %.2f)\nCLI ... --task other, big store:       %.2f ms (ratio %.2f)\n", e*1000, b*1000, b/e, t*1000, t/e }'
