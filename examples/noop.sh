#!/bin/sh
# The smallest protocol v1 task: reads its envelope, reports success. Used by benchmarks.
if [ "$1" = "schema" ]; then
  echo '{"name":"noop","description":"Does nothing, successfully","inputs":{"type":"object"}}'
  exit 0
fi
# Read the one-line envelope with a builtin: no extra process.
read -r _envelope || true
echo '{"status":1,"reason":"ok","payload":null}'
