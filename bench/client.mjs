// The MCP client `make bench` measures with: the official TypeScript SDK
// (@modelcontextprotocol/sdk, from testdata/tsclient/node_modules), which
// spawns the server command it is given over stdio, exactly as an MCP
// client spawns `mcpcage run NAME` or the server itself.
//
// Usage: node client.mjs SPEC_JSON
//
// SPEC_JSON: {"mode": "round" | "open" | "big" | "hold", "command": "...", "args": [...], "url": "...",
//             "env": {...}, "tool": "echo", "arguments": {...},
//             "warm": N, "calls": N, "conc": N, "concCalls": N}
//
// round: cold start (spawn until tools/list is answered), `warm` calls, then
//        `calls` calls one at a time (each timed), then `concCalls` calls
//        with `conc` in flight. Prints one JSON line, then waits for a line
//        (or EOF) on stdin before closing, so that the driver can read the
//        memory of the processes of a live session.
// open:  cold start only: prints {"cold": µs} and closes the session.
// big:   cold start, one warm call, then `calls` calls timed one by one;
//        then the same through a second session read by a plain line
//        reader instead of the SDK (raw), whose stdio reader concatenates
//        its whole buffer for every 64 KiB chunk, which throttles the pipe.
// hold:  reads commands on stdin, one a line. "open N" opens sessions (4
//        at a time) until N are open, each answering tools/list, and prints
//        {"open": N}. "calls N" makes every open session do N calls one at
//        a time, all sessions at once, and prints {"lat": [every call's
//        time], "tputN": calls/s of all of them together}. "close" (or
//        EOF) closes them all.
//
// With url set, the client speaks streamable HTTP to that URL instead of
// spawning a command (the remote bridge's "direct" path).
//
// Times are in microseconds. Errors go to stderr and exit with status 1.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

// The SDK is the one testdata/tsclient pins; imported by file path since
// bench/ has no node_modules of its own for it.
const sdk = new URL("../testdata/tsclient/node_modules/@modelcontextprotocol/sdk/dist/esm/", import.meta.url);
const { Client } = await import(new URL("client/index.js", sdk));
const { StdioClientTransport } = await import(new URL("client/stdio.js", sdk));
const { StreamableHTTPClientTransport } = await import(new URL("client/streamableHttp.js", sdk));

const spec = JSON.parse(process.argv[2]);
const now = () => process.hrtime.bigint();
const micros = (t0) => Number(now() - t0) / 1000;
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
const nextLine = async () => {
  const { value, done } = await lines.next();
  return done ? null : value.trim();
};

// open starts one session and returns it with its cold start: from the
// spawn until tools/list is answered.
async function open() {
  const transport = spec.url ? new StreamableHTTPClientTransport(new URL(spec.url)) : new StdioClientTransport({
    command: spec.command,
    args: spec.args,
    env: { ...process.env, ...(spec.env || {}) },
    stderr: "inherit",
    // The SDK refuses a message over 10 MiB by default; 64 MiB is
    // mcpcage's max_message_bytes.
    maxBufferSize: 64 << 20,
  });
  const client = new Client({ name: "mcpcage-bench", version: "1.0.0" });
  const t0 = now();
  await client.connect(transport);
  const tools = await client.listTools();
  const cold = micros(t0);
  if (!tools.tools.some((t) => t.name === spec.tool)) {
    throw new Error(`server has no tool ${spec.tool}: ${tools.tools.map((t) => t.name).join(", ")}`);
  }
  return { client, cold };
}

async function call(client) {
  const res = await client.callTool({ name: spec.tool, arguments: spec.arguments });
  if (res.isError) {
    throw new Error(`tool error: ${JSON.stringify(res.content).slice(0, 500)}`);
  }
  return res;
}

async function round() {
  const { client, cold } = await open();
  for (let i = 0; i < spec.warm; i++) await call(client);
  const lat = [];
  const seq0 = now();
  for (let i = 0; i < spec.calls; i++) {
    const t0 = now();
    await call(client);
    lat.push(micros(t0));
  }
  const seqUs = micros(seq0);
  let left = spec.concCalls;
  const worker = async () => {
    while (left > 0) {
      left--;
      await call(client);
    }
  };
  const conc0 = now();
  await Promise.all(Array.from({ length: spec.conc }, worker));
  const concUs = micros(conc0);
  out({
    cold,
    lat,
    tput1: (spec.calls * 1e6) / seqUs,
    tputN: (spec.concCalls * 1e6) / concUs,
  });
  await nextLine();
  await client.close();
}

async function openOnly() {
  const { client, cold } = await open();
  out({ cold });
  await client.close();
}

async function big() {
  const { client, cold } = await open();
  const check = (res) => {
    const n = res.content.reduce((s, c) => s + (c.text || "").length, 0);
    if (n !== spec.arguments.bytes) throw new Error(`big_output: got ${n} bytes, want ${spec.arguments.bytes}`);
  };
  check(await call(client));
  const lat = [];
  for (let i = 0; i < spec.calls; i++) {
    const t0 = now();
    const res = await call(client);
    lat.push(micros(t0));
    check(res);
  }
  out({ cold, lat, raw: await bigRaw() });
  await client.close();
}

// bigRaw spawns the server, speaks JSON-RPC lines to it and times each
// big answer until its closing newline; it only counts the answer's bytes.
async function bigRaw() {
  const child = spawn(spec.command, spec.args, { env: { ...process.env, ...(spec.env || {}) }, stdio: ["pipe", "pipe", "inherit"] });
  let waiting = null; // { id, bytes, resolve }
  let pending = []; // chunks of the current line, before an id is known
  child.stdout.on("data", (chunk) => {
    for (let start = 0; start < chunk.length; ) {
      const nl = chunk.indexOf(10, start);
      const end = nl < 0 ? chunk.length : nl;
      pending.push(chunk.subarray(start, end));
      waiting.bytes += end - start;
      start = end + 1;
      if (nl < 0) break;
      const head = Buffer.concat(pending.slice(0, 1)).toString("utf8", 0, 200);
      pending = [];
      if (head.includes(`"id":${waiting.id}`) || head.includes(`"id": ${waiting.id}`) || waiting.bytes > 1 << 20) {
        const w = waiting;
        waiting = { id: -1, bytes: 0 };
        w.resolve(w.bytes);
      } else {
        waiting.bytes = 0; // a notification or another answer
      }
    }
  });
  let id = 0;
  const request = (method, params) =>
    new Promise((resolve) => {
      waiting = { id: ++id, bytes: 0, resolve };
      child.stdin.write(JSON.stringify({ jsonrpc: "2.0", id, method, params }) + "\n");
    });
  await request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "mcpcage-bench-raw", version: "1" } });
  child.stdin.write(JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) + "\n");
  const callRaw = () => request("tools/call", { name: spec.tool, arguments: spec.arguments });
  await callRaw();
  const lat = [];
  for (let i = 0; i < spec.calls; i++) {
    const t0 = now();
    const n = await callRaw();
    lat.push(micros(t0));
    if (n < spec.arguments.bytes) throw new Error(`raw big_output: got a ${n}-byte answer`);
  }
  child.stdin.end();
  await new Promise((resolve) => child.on("close", resolve));
  return lat;
}

async function hold() {
  const sessions = [];
  for (let line = await nextLine(); line !== null && line !== "close"; line = await nextLine()) {
    const [cmd, arg] = line.split(" ");
    const n = Number(arg);
    if (!(n >= 0)) throw new Error(`hold: bad command ${JSON.stringify(line)}`);
    if (cmd === "open") {
      while (sessions.length < n) {
        const batch = Math.min(4, n - sessions.length);
        sessions.push(...(await Promise.all(Array.from({ length: batch }, open))));
      }
      out({ open: sessions.length });
    } else if (cmd === "calls") {
      const lat = [];
      const t0 = now();
      await Promise.all(
        sessions.map(async ({ client }) => {
          for (let i = 0; i < n; i++) {
            const t = now();
            await call(client);
            lat.push(micros(t));
          }
        }),
      );
      out({ lat, tputN: (lat.length * 1e6) / micros(t0) });
    } else {
      throw new Error(`hold: bad command ${JSON.stringify(line)}`);
    }
  }
  await Promise.all(sessions.map((s) => s.client.close()));
}

try {
  await { round, open: openOnly, big, hold }[spec.mode]();
  stdin.close();
  process.exit(0);
} catch (err) {
  process.stderr.write(`bench client (${spec.mode} ${spec.command}): ${err.stack || err}\n`);
  process.exit(1);
}
