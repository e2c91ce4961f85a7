// An MCP agent built on the official TypeScript SDK: it starts
// `mcpcage run SERVER` over stdio, lists the tools, calls one, waits for a
// tools/list_changed notification when asked to, and prints one JSON
// object per step on stdout for the Go test to read.
//
// Usage: node client.mjs MCPCAGE SERVER TOOL ARGS_JSON [wait-list-changed]
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const [mcpcage, server, tool, argsJSON, mode] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const transport = new StdioClientTransport({
  command: mcpcage,
  args: ["run", server],
  env: { ...process.env },
  stderr: "inherit",
});
const client = new Client({ name: "ts-sdk-agent", version: "1.0.0" });
let changed;
const listChanged = new Promise((resolve) => (changed = resolve));
client.setNotificationHandler(ToolListChangedNotificationSchema, () => changed());

await client.connect(transport);
out({ step: "connected", server: client.getServerVersion() });
const tools = await client.listTools();
out({ step: "tools", tools: tools.tools.map((t) => t.name) });
const res = await client.callTool({ name: tool, arguments: JSON.parse(argsJSON) });
out({ step: "call", isError: !!res.isError, text: res.content.map((c) => c.text).join("") });
if (mode === "wait-list-changed") {
  out({ step: "waiting" });
  await listChanged;
  const again = await client.listTools();
  out({ step: "tools-after-change", tools: again.tools.map((t) => t.name) });
  const res2 = await client.callTool({ name: tool, arguments: JSON.parse(argsJSON) });
  out({ step: "call-after-change", isError: !!res2.isError, text: res2.content.map((c) => c.text).join("") });
}
await client.close();
