#!/usr/bin/env python3
"""A protocol v1 task in Python: counts words in a text.

    ./python.py schema   prints the AutoSchema
    ./python.py          reads the envelope on stdin and prints the result last
"""
import collections
import json
import os
import sys

SCHEMA = {
    "name": "wordcount",
    "description": "Counts the words of a text and returns the most common ones (Python example)",
    "inputs": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "top": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
        },
        "required": ["text"],
        "additionalProperties": False,
    },
    "outputs": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "status": {"type": "integer"},
            "reason": {"type": "string"},
            "payload": {
                "type": "object",
                "properties": {
                    "words": {"type": "integer", "minimum": 0},
                    "top": {"type": "array", "items": {"type": "array"}},
                },
                "required": ["words", "top"],
            },
        },
        "required": ["status", "reason", "payload"],
    },
}


def main() -> int:
    if sys.argv[1:] == ["schema"]:
        json.dump(SCHEMA, sys.stdout, indent=2)
        print()
        return 0

    envelope = json.load(sys.stdin)
    data = envelope["data"]
    print(f"called by {envelope['meta']['caller']} as {os.environ.get('TASK_NAME')}", file=sys.stderr)
    words = data["text"].split()
    counts = collections.Counter(w.lower().strip(".,;:!?") for w in words)
    top = counts.most_common(data.get("top", 3))
    print(f"counted {len(words)} words")  # a log line on stdout: only the last JSON line is the result

    result = {"status": 1, "reason": "ok", "payload": {"words": len(words), "top": top}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
