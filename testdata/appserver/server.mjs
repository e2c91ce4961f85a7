// An MCP Apps server as their authors write them: the official
// TypeScript SDK's McpServer over stdio, with the ext-apps SDK's
// registerAppTool and registerAppResource. mcpcage's integration tests
// run it in the sandbox (node, this directory mounted at /app).
//
// The tool "weather" names the UI resource ui://weather/view.html, whose
// page is $APPSERVER_PAGE (a default page without it). With
// $APPSERVER_CONNECT, the page's content asks for that domain in its
// CSP (connectDomains); with $APPSERVER_LIST_CONNECT, the resource's
// list entry does (the fallback hosts read).
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { registerAppResource, registerAppTool, RESOURCE_MIME_TYPE } from "@modelcontextprotocol/ext-apps/server";

const uri = "ui://weather/view.html";
const page = process.env.APPSERVER_PAGE ?? "<!doctype html>\n<html>\n<body><p id=\"sky\">sunny</p></body>\n</html>\n";
const csp = (domain) => (domain ? { ui: { csp: { connectDomains: [domain] } } } : undefined);

const server = new McpServer({ name: "mcpcage-appserver", version: "1.0.0" });
registerAppTool(
  server,
  "weather",
  { title: "Weather", description: "Show the weather in an interactive view", _meta: { ui: { resourceUri: uri } } },
  async () => ({ content: [{ type: "text", text: "sunny" }] }),
);
registerAppResource(
  server,
  "Weather view",
  uri,
  { description: "The weather view", _meta: csp(process.env.APPSERVER_LIST_CONNECT) },
  async () => ({ contents: [{ uri, mimeType: RESOURCE_MIME_TYPE, text: page, _meta: csp(process.env.APPSERVER_CONNECT) }] }),
);
await server.connect(new StdioServerTransport());
