#!/bin/sh
# The linker of `make build`'s release binary: links `manage_tasks` with its
# hot code packed together.
#
# Why: a short command such as `execute` runs ~1 000 functions scattered over
# 11 MB of code, and faulting each 64 KiB window of it in (plus the TLB
# misses of code spread over thousands of pages) cost every call ~0.5 ms on
# our CI VM. Laid out together they are ~1.3 MB: 230 -> 153 page faults and
# 2.38 -> 1.77 ms per `execute` (docs/performance.md).
#
# How: rustc calls this script as its linker (`CARGO_TARGET_<triple>_LINKER`,
# set by the Makefile). For the `manage_tasks` binary it links once with lld,
# runs the result under callgrind on a few typical commands (a throwaway
# store, examples/noop.sh), writes the functions that ran to `<output>.order`, and links again with lld's
# `--symbol-ordering-file`. Both links see the same LTO output, so every name
# matches. Anything else, or a machine without valgrind or rustc's bundled
# lld, is linked plainly with `cc`. `TE_LINK_ORDER=0` turns it off.
set -eu

out=
prev=
for arg in "$@"; do
  if [ "$prev" = "-o" ]; then out=$arg; fi
  prev=$arg
done

case "$(basename "${out:-x}")" in
  manage_tasks-*) ;;
  *) exec cc "$@" ;;
esac

gcc_ld="$(rustc --print sysroot 2>/dev/null)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld"
if [ "${TE_LINK_ORDER:-1}" = 0 ] || ! command -v valgrind >/dev/null || [ ! -x "$gcc_ld/ld.lld" ]; then
  echo "link-ordered: linking manage_tasks without a code layout (needs valgrind and rustc's lld)" >&2
  exec cc "$@"
fi

cc -fuse-ld=lld -B"$gcc_ld" "$@"

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
noop=$root/examples/noop.sh
args='{"requestId":"1","user":"tester","cmd":"hostname"}'
i=0
while [ $i -lt 20 ]; do echo "$args"; i=$((i + 1)); done > "$work/batch.jsonl"
run=0
cg() {
  run=$((run + 1))
  valgrind --tool=callgrind --demangle=no --compress-strings=no \
    --callgrind-out-file="$work/cg.$(printf %03d $run).%p" "$out" "$@" \
    >/dev/null 2>&1 </dev/null || true
}
for store in tasks.yaml tasks.db; do
  export TASK_STORE="$work/$store"
  cg -q register --name noop --location "$noop"
  cg list
  cg -q execute --name noop --taskArgs "$args"
  cg execute --name noop --taskArgs "$args" --json
  cg -q execute --name noop --batch "$work/batch.jsonl" --parallel 2 --json
done
cg runs list
cg --version
# Every function that ran in any of the runs, each once.
cat "$work"/cg.* 2>/dev/null | sed -n 's/^fn=//p' | awk '!seen[$0]++' > "$out.order" || true
if [ ! -s "$out.order" ]; then
  # The first link stands: a working binary, just not laid out.
  echo "link-ordered: callgrind recorded nothing; manage_tasks linked without a code layout" >&2
  exit 0
fi
echo "link-ordered: $(wc -l < "$out.order") functions laid out first" >&2
rm -rf "$work"
exec cc -fuse-ld=lld -B"$gcc_ld" "$@" \
  -Wl,--symbol-ordering-file="$out.order" -Wl,--no-warn-symbol-ordering
