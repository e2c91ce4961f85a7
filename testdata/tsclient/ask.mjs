// An MCP agent built on the official TypeScript SDK whose user answers
// consent questions: it declares elicitation, answers every question
// with ANSWER (once, session, duration, deny), starts `mcpcage run
// SERVER`, calls TOOL twice, and prints one JSON object per step.
//
// Usage: node ask.mjs MCPCAGE SERVER TOOL ARGS_JSON ANSWER
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const [mcpcage, server, tool, argsJSON, answer] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const transport = new StdioClientTransport({ command: mcpcage, args: ["run", server], env: { ...process.env }, stderr: "inherit" });
const client = new Client({ name: "ts-sdk-asked", version: "1.0.0" }, { capabilities: { elicitation: { form: {} } } });
client.setRequestHandler(ElicitRequestSchema, async (req) => {
  out({ step: "asked", message: req.params.message, schema: req.params.requestedSchema });
  return { action: "accept", content: { decision: answer } };
});
await client.connect(transport);
const tools = await client.listTools();
out({ step: "tools", tools: tools.tools.map((t) => t.name) });
for (const step of ["call", "call-again"]) {
  const res = await client.callTool({ name: tool, arguments: JSON.parse(argsJSON) });
  out({ step, isError: !!res.isError, text: res.content.map((c) => c.text).join("") });
}
await client.close();
