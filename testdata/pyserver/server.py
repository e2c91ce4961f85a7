#!/usr/bin/env python3
"""A plain MCP stdio server written with Python's standard library only.

mcpcage's tests run it in the sandbox as the third kind of server parser
(besides mcp-go and the TypeScript SDK): Python's json module decodes
escapes in member names, keeps the last of duplicate members and matches
names case-sensitively; like the official Python SDK it reads stdin with
universal newlines, so a bare carriage return ends a line. It is
deliberately naive in one way real servers
are too: it runs a tools/call even when it arrives as a notification.

With $CALL_LOG set, every tools/call it runs is appended (and synced) to
that file as "call NAME" before it is answered, so tests can prove that a
refused call never ran.

Tools: echo (returns its "text" argument), secret (returns a secret).
"""
import io
import json
import os
import sys

TOOLS = [
    {"name": "echo", "description": "Echo the text back",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "secret", "description": "Return a secret",
     "inputSchema": {"type": "object", "properties": {}}},
]


def log_call(name):
    path = os.environ.get("CALL_LOG")
    if not path:
        return
    with open(path, "a") as f:
        f.write("call %s\n" % name)
        f.flush()
        os.fsync(f.fileno())


def handle(msg):
    method = msg.get("method")
    params = msg.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "pyserver", "version": "1"}}
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        name = params.get("name")
        log_call(name)
        if name == "echo":
            text = (params.get("arguments") or {}).get("text", "")
            return {"content": [{"type": "text", "text": text}]}
        if name == "secret":
            return {"content": [{"type": "text", "text": "PYSERVER-SECRET-RAN"}]}
        raise KeyError("Unknown tool: %s" % name)
    raise LookupError(method)


def main():
    # Read stdin as the official Python SDK does: a text stream with
    # universal newlines, so a bare carriage return also ends a line.
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
    for line in stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict) or "method" not in msg:
            continue
        try:
            result, error = handle(msg), None
        except LookupError as e:
            result, error = None, {"code": -32601, "message": "Method not found: %s" % e}
        except Exception as e:  # noqa: BLE001 - a test server answers every failure
            result, error = None, {"code": -32602, "message": str(e)}
        if "id" not in msg:
            continue  # a notification: ran, never answered
        reply = {"jsonrpc": "2.0", "id": msg["id"]}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = error
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
