// A mesh agent in Node.js that speaks only HTTP to its sidecar (no Kafka, Avro or crypto here).
//
//   mesh sidecar run shouter --capability shout &       # writes <state>/sidecars/shouter.json
//   node examples/node-agent/agent.js                   # answers every message in capitals
//
// Connection: MESH_SIDECAR_URL and MESH_SIDECAR_TOKEN, or MESH_SIDECAR_FILE (the JSON the
// sidecar wrote). MAX_MESSAGES=N makes it exit after N messages (used by the tests).
"use strict";
const fs = require("fs");

function connection() {
  if (process.env.MESH_SIDECAR_URL) {
    return { url: process.env.MESH_SIDECAR_URL, token: process.env.MESH_SIDECAR_TOKEN };
  }
  return JSON.parse(fs.readFileSync(process.env.MESH_SIDECAR_FILE, "utf8"));
}

const { url, token } = connection();
const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };

async function call(method, path, body) {
  const response = await fetch(url + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const payload = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${payload.error}: ${payload.message}`);
  return payload;
}

async function main() {
  const limit = Number(process.env.MAX_MESSAGES || Infinity);
  const health = await call("GET", "/v1/health");
  console.log(`attached as ${health.agent_id} (${health.status})`);
  for (let handled = 0; handled < limit; ) {
    const message = await call("GET", "/v1/messages/next?timeout_s=5");
    if (message === null) continue;
    const text = message.body.parts.map((p) => p.text || "").join(" ");
    const started = Date.now();
    const shouted = text.toUpperCase();
    await call("POST", "/v1/telemetry/tool-calls", {
      tool: "uppercase", arguments: { length: text.length },
      latency_ms: Date.now() - started, cost_usd: 0.0001,
    });
    const sent = await call("POST", "/v1/messages", {
      to: message.sender, reply_to: message.message_id, text: shouted,
    });
    console.log(`${message.sender}: "${text}" -> "${shouted}" (${sent.message_id})`);
    handled += 1;
  }
}

main().catch((error) => {
  console.error(`agent failed: ${error.message}`);
  process.exit(1);
});
