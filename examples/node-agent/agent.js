// A mesh agent in Node.js that speaks only HTTP to its sidecar (no Kafka, Avro or crypto here).
//
//   mesh sidecar run shouter --capability shout &       # writes <state>/sidecars/shouter.json
//   node examples/node-agent/agent.js                   # answers every message in capitals
//
// Connection: MESH_SIDECAR_URL and MESH_SIDECAR_TOKEN, or MESH_SIDECAR_FILE (the JSON the
// sidecar wrote). MAX_MESSAGES=N makes it exit after N messages (used by the tests).
//
// Delivery is at least once: a message is acknowledged once it is handled, so one the agent
// never finishes (it crashed, or was halted mid-way) is delivered again. While the agent is
// halted the sidecar refuses its work with 409 "halted": the agent gives the message back
// (nack) and waits for the resume, when the sidecar delivers it again. A policy refusal (403:
// a tool outside the policy, a halted chain) ends that message's work: it is acknowledged.
//
// A tool runs only under a permit: the agent asks POST /v1/tools/permits before the call (the
// sidecar checks the tool, its arguments and the budget, and reserves the cost), then reports
// the call quoting the permit. Work for a message names it (cause / reply_to): its chain.
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

class Refused extends Error {
  constructor(status, payload) {
    super(`${status} ${payload.error}: ${payload.message}`);
    this.status = status;
    this.rule = payload.rule;
  }
}

async function call(method, path, body) {
  const response = await fetch(url + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const payload = await response.json();
  if (!response.ok) throw new Refused(response.status, payload);
  return payload;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function untilResumed() {
  for (;;) {
    const health = await call("GET", "/v1/health").catch(() => null);
    if (health && health.status === "LIVE") return;
    await sleep(250);
  }
}

async function handle(message) {
  const text = message.body.parts.map((p) => p.text || "").join(" ");
  const args = { length: text.length };
  const permit = await call("POST", "/v1/tools/permits", {
    tool: "uppercase", arguments: args, cost_usd: 0.0001, cause: message.message_id,
  });
  const started = Date.now();
  const shouted = text.toUpperCase(); // the tool: it runs only once the permit is granted
  await call("POST", "/v1/telemetry/tool-calls", {
    tool: "uppercase", arguments: args, permit_id: permit.permit_id,
    latency_ms: Date.now() - started, cost_usd: 0.0001,
  });
  const sent = await call("POST", "/v1/messages", {
    to: message.sender, reply_to: message.message_id, text: shouted,
  });
  console.log(`${message.sender}: "${text}" -> "${shouted}" (${sent.message_id})`);
}

async function main() {
  const limit = Number(process.env.MAX_MESSAGES || Infinity);
  const health = await call("GET", "/v1/health");
  console.log(`attached as ${health.agent_id} (${health.status})`);
  for (let handled = 0; handled < limit; ) {
    const message = await call("GET", "/v1/messages/next?timeout_s=5");
    if (message === null) continue;
    try {
      await handle(message);
    } catch (error) {
      if (error instanceof Refused && error.status === 403) {
        console.log(`refused (${error.rule}): ${error.message}`);
        await call("POST", `/v1/messages/${message.message_id}/ack`);
        continue;
      }
      if (!(error instanceof Refused) || error.status !== 409) throw error;
      console.log(`halted: giving ${message.message_id} back until the resume`);
      await call("POST", `/v1/messages/${message.message_id}/nack`);
      await untilResumed();
      console.log("resumed");
      continue;
    }
    await call("POST", `/v1/messages/${message.message_id}/ack`);
    handled += 1;
  }
}

main().catch((error) => {
  console.error(`agent failed: ${error.message}`);
  process.exit(1);
});
