"""Drives `manage_tasks mcp` with the official MCP Python SDK; used by tests/mcp.rs.

Usage: mcp_client.py SCENARIO MODE TRANSPORT
  MODE: "auto" (server/discover, so 2026-07-28) or "legacy" (initialize, so 2025-11-25)
  TRANSPORT: "stdio" (spawns $MANAGE_TASKS mcp) or an http://.../mcp URL
Each scenario asserts what it expects and exits non-zero with a message otherwise.
The store, scripts and pid files come from the environment the Rust test sets.
"""

import json
import os
import subprocess
import sys

import anyio
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

EXPECTED_VERSION = {"auto": "2026-07-28", "legacy": "2025-11-25"}


def server(transport):
    if transport == "stdio":
        return StdioServerParameters(command=os.environ["MANAGE_TASKS"], args=["mcp"], env=dict(os.environ))
    return transport


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def list_tools(client):
    tools = {t.name: t for t in (await client.list_tools()).tools}
    check(set(tools) >= {"greet", "fails", "crashes", "hangs"}, f"tools: {sorted(tools)}")
    greet = tools["greet"]
    check(greet.description == "says hello", f"description: {greet.description!r}")
    check(greet.input_schema["type"] == "object", f"inputSchema: {greet.input_schema}")
    check(greet.input_schema["required"] == ["who"], f"inputSchema: {greet.input_schema}")
    check(greet.output_schema is not None and "status" in greet.output_schema["properties"],
          f"outputSchema: {greet.output_schema}")
    check(tools["fails"].output_schema is None, "no outputs declared, no outputSchema")
    check(tools["fails"].description == "test task", "fails description")
    shout = tools["shout"].input_schema
    check(shout == {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                    "properties": {"value": {"type": "string", "minLength": 1}}, "required": ["value"]},
          f"wrapped inputSchema: {shout}")


async def call_ok(client, logs):
    result = await client.call_tool("greet", {"who": "Ada"})
    check(result.is_error is False, f"isError: {result}")
    want = {"status": 1, "reason": "ok", "payload": {"greeting": "hello Ada"}}
    check(result.structured_content == want, f"structuredContent: {result.structured_content}")
    check(json.loads(result.content[0].text) == want, f"text: {result.content}")
    # Log notifications may trail the response by a moment.
    for _ in range(50):
        if any("greeting Ada" in str(m.data) for m in logs):
            break
        await anyio.sleep(0.05)
    check(any("greeting Ada" in str(m.data) and m.logger == "greet" and m.level == "info" for m in logs),
          f"stdout log line: {logs}")
    check(any("to stderr" in str(m.data) and m.level == "warning" for m in logs), f"stderr log line: {logs}")
    result = await client.call_tool("shout", {"value": "hey"})
    check(result.structured_content == {"status": 1, "reason": "", "payload": "HEY"}, f"shout: {result}")


async def invalid_args(client):
    try:
        await client.call_tool("greet", {"who": 5, "extra": True})
    except MCPError as e:
        check(e.code == -32602, f"code {e.code}")
        check("/who" in e.error.message and "2 violations" in e.error.message, f"message: {e.error.message}")
        pointers = sorted(v["pointer"] for v in e.error.data["violations"])
        check(pointers == ["", "/who"], f"violations: {e.error.data}")
    else:
        raise AssertionError("invalid arguments were accepted")
    try:
        await client.call_tool("shout", {"value": ""})
    except MCPError as e:
        check([v["pointer"] for v in e.error.data["violations"]] == ["/value"], f"wrapped: {e.error.data}")
    else:
        raise AssertionError("an empty string was accepted")
    try:
        await client.call_tool("nope", {})
    except MCPError as e:
        check("unknown tool `nope`" in e.error.message, e.error.message)
    else:
        raise AssertionError("unknown tool was accepted")


async def failures(client):
    result = await client.call_tool("fails", {})
    check(result.is_error is True, f"status 2 isError: {result}")
    check(result.structured_content["status"] == 2, f"structuredContent: {result.structured_content}")
    text = " ".join(c.text for c in result.content)
    check("reported status 2 (no luck)" in text, text)
    result = await client.call_tool("crashes", {})
    check(result.is_error is True, f"crash isError: {result}")
    text = " ".join(c.text for c in result.content)
    check("exited with code 7 without a result" in text, text)


async def cancel(client):
    pids = os.environ["PID_FILE"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.call_tool, "hangs", {})
        with anyio.fail_after(15):
            while not (os.path.exists(pids) and len(open(pids).read().split()) == 2):
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    # With the session still open, the task's whole process group must go.
    with anyio.fail_after(15):
        while any(alive(int(p)) for p in open(pids).read().split()):
            await anyio.sleep(0.05)
    # The session stays usable after a cancellation.
    await client.list_tools()


def alive(pid):
    """Whether a process exists and is not a zombie."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def list_changed(client, mode, changes):
    async def register():
        await anyio.sleep(0.5)
        subprocess.run([os.environ["MANAGE_TASKS"], "register", "--name", "late", "--location",
                        os.environ["LATE_SCRIPT"]], check=True, capture_output=True)

    if mode == "legacy":
        async with anyio.create_task_group() as tg:
            tg.start_soon(register)
            with anyio.fail_after(15):
                while not changes:
                    await anyio.sleep(0.05)
    else:
        async with client.listen(tools_list_changed=True) as sub:
            async with anyio.create_task_group() as tg:
                tg.start_soon(register)
                with anyio.fail_after(15):
                    async for _event in sub:
                        break
    names = {t.name for t in (await client.list_tools()).tools}
    check("late" in names, f"tools after register: {sorted(names)}")


async def main(scenario, mode, transport):
    logs, changes = [], []

    async def on_log(params):
        logs.append(params)

    async def on_message(message):
        if getattr(message, "method", None) == "notifications/tools/list_changed" or \
                type(message).__name__ == "ToolListChangedNotification":
            changes.append(message)

    async with Client(server(transport), mode=mode, logging_callback=on_log, log_level="debug",
                      message_handler=on_message) as client:
        check(client.protocol_version == EXPECTED_VERSION[mode], f"negotiated {client.protocol_version}")
        if scenario == "list":
            await list_tools(client)
        elif scenario == "call":
            await call_ok(client, logs)
        elif scenario == "invalid":
            await invalid_args(client)
        elif scenario == "failures":
            await failures(client)
        elif scenario == "cancel":
            await cancel(client)
        elif scenario == "list_changed":
            await list_changed(client, mode, changes)
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    print(f"ok {scenario} {mode} {transport} {EXPECTED_VERSION[mode]}", file=sys.stderr)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
