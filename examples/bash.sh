#!/usr/bin/env bash
# A protocol v1 task in plain bash: greets someone.
#   ./bash.sh schema   -> prints the AutoSchema (name, description, inputs, outputs)
#   ./bash.sh          -> reads the envelope on stdin, logs, prints the result last
set -euo pipefail

if [[ "${1:-}" == "schema" ]]; then
  cat <<'JSON'
{
  "name": "greet",
  "description": "Greets someone by name (bash example)",
  "inputs": {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
      "name": {"type": "string", "pattern": "^[A-Za-z][A-Za-z ]{0,63}$"},
      "excited": {"type": "boolean"}
    },
    "required": ["name"],
    "additionalProperties": false
  },
  "outputs": {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
      "status": {"type": "integer"},
      "reason": {"type": "string"},
      "payload": {
        "type": "object",
        "properties": {"greeting": {"type": "string"}},
        "required": ["greeting"]
      }
    },
    "required": ["status", "reason", "payload"]
  }
}
JSON
  exit 0
fi

envelope=$(cat)
echo "received ${#envelope} bytes for task ${TASK_NAME:-?} (run ${TASK_RUN_ID:-?})" >&2

# The input schema guarantees `name` is letters and spaces only, so this
# extraction is safe without a JSON parser.
name=$(sed -n 's/.*"name":"\([A-Za-z ]*\)".*/\1/p' <<<"$envelope")
mark="."
if grep -q '"excited":true' <<<"$envelope"; then mark="!"; fi

echo "greeting ${name}"
printf '{"status":1,"reason":"ok","payload":{"greeting":"Hello, %s%s"}}\n' "$name" "$mark"
