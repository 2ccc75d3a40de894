// The Agent Mesh console: one server-sent event stream keeps every view current.
"use strict";

const role = document.querySelector('meta[name="mesh-role"]').content;
const csrf = document.querySelector('meta[name="mesh-csrf"]').content;
const state = { agents: new Map(), halts: [], graph: { nodes: [], edges: [] }, kpis: [], escalations: [], dead_letters: [], health: {}, activity: {}, spend: {} };
const sort = { key: "agent_id", up: true };
let view = "fleet";
let pending = false;
let cy = null;

document.body.classList.add(role);
document.getElementById("who").textContent = role === "operator" ? "operator" : "viewer (read-only)";

// -- the stream -------------------------------------------------------------------------------

let source = null;
let totals = { matching: 0, total: 0 };

function connect() {
  const live = document.getElementById("live");
  if (source) source.close();
  const q = document.getElementById("filter").value.trim();
  source = new EventSource(`/events?${new URLSearchParams({ q, limit: 10000 })}`);  // filtered on the server
  source.onopen = () => { live.textContent = "live"; live.className = "up"; };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "down"; };
  source.onmessage = (message) => apply(JSON.parse(message.data));
}

function apply(event) {
  switch (event.type) {
    case "snapshot":
      state.agents = new Map(event.agents.map((a) => [a.agent_id, a]));
      totals = { matching: event.matching, total: event.total };
      Object.assign(state, { halts: event.halts, graph: event.graph, kpis: event.kpis, escalations: event.escalations,
        dead_letters: event.dead_letters, health: event.health, activity: event.activity || {}, spend: event.spend || {} });
      break;
    case "agents":
      event.upsert.forEach((a) => state.agents.set(a.agent_id, a));
      event.remove.forEach((id) => state.agents.delete(id));
      totals.total = event.total;
      totals.matching = Math.max(totals.matching, state.agents.size);
      break;
    case "graph": state.graph = event.graph; break;
    case "halts": state.halts = event.halts; state.haltsAt = event.at; break;
    case "kpis": state.kpis = event.kpis; break;
    case "escalations": state.escalations = event.escalations; break;
    case "dead_letters": state.dead_letters = event.dead_letters; break;
    case "health": state.health = event.health; break;
    case "activity": state.activity = event.activity; break;
    case "spend": state.spend = event.spend; break;
  }
  if (["snapshot", "agents", "activity", "spend"].includes(event.type)) fleetDirty = true;
  if (event.type === "snapshot") fleetAt = 0;  // a new filter's answer is drawn at once
  counts();
  if (!pending) {  // at most one redraw per frame, however many changes arrive
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  }
}

// -- views ------------------------------------------------------------------------------------

// The counts in the navigation, written only when they change.
function counts() {
  for (const [id, n] of [["dead-count", state.dead_letters.length], ["halt-count", state.halts.length],
    ["escalation-count", state.escalations.length]]) {
    const node = document.getElementById(id);
    if (node.textContent !== String(n)) node.textContent = n;
  }
}

function render() {
  ({ fleet: renderFleet, map: renderMap, halts: renderHalts, kpis: renderKpis, escalations: renderEscalations,
    dead: renderDead, health: renderHealth, tasks: () => {}, audit: () => {} })[view]();
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "-" : text;
  if (cls) td.className = cls;
  return td;
}

function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-"; }

// The fleet table is virtualised: the page holds every agent the server sent (up to 10,000,
// filtered on the server), but draws only the rows in the scrolled window, each ROW pixels
// high, between two spacer rows. The list is refiltered and resorted at most every
// RESORT_MS while heartbeats stream in (or at once when the filter or the sort changes);
// scrolling only redraws the window.
const ROW = 28, RESORT_MS = 250;
let fleetRows = [], fleetDirty = true, fleetAt = 0, fleetLater = null;

function fleetList() {
  const words = document.getElementById("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const none = { spend_1m: 0, spend_1h: 0, sent_1h: 0, received_1h: 0, errors_1h: 0 };
  const rows = [];
  for (const a of state.agents.values()) {
    if (a.text === undefined) a.text = [a.agent_id, a.status, a.owner, a.version, a.environment, a.certified, ...a.skills].join(" ").toLowerCase();
    if (words.every((w) => a.text.includes(w))) {
      rows.push({ ...none, ...a, ...(state.activity[a.agent_id] || {}), spend_1m: state.spend[a.agent_id] || 0 });
    }
  }
  const k = sort.key, sign = sort.up ? 1 : -1;
  rows.sort((a, b) => (a[k] > b[k] ? 1 : a[k] < b[k] ? -1 : 0) * sign);
  return rows;
}

function renderFleet(now) {
  const elapsed = performance.now() - fleetAt;
  if (fleetDirty && (now || elapsed >= RESORT_MS)) {
    fleetRows = fleetList();
    fleetDirty = false;
    fleetAt = performance.now();
  } else if (fleetDirty && !fleetLater) {
    fleetLater = setTimeout(() => { fleetLater = null; if (view === "fleet") renderFleet(); }, RESORT_MS - elapsed);
  }
  drawFleetWindow();
  const matching = Math.max(fleetRows.length, totals.matching);
  document.getElementById("fleet-count").textContent = matching > fleetRows.length
    ? `${fleetRows.length} held of ${matching} matching, of ${totals.total} agents (filter to narrow)`
    : `${fleetRows.length} of ${totals.total} agents`;
}

function drawFleetWindow() {
  const box = document.getElementById("fleet-scroll");
  const first = Math.max(0, Math.floor(box.scrollTop / ROW) - 5);
  const shown = fleetRows.slice(first, first + Math.ceil((box.clientHeight || 600) / ROW) + 10);
  const body = document.querySelector("#fleet-table tbody");
  body.replaceChildren();
  const spacer = (rows) => { if (rows > 0) body.insertRow().style.height = `${rows * ROW}px`; };
  spacer(first);
  for (const a of shown) {
    const row = body.insertRow();
    row.dataset.agent = a.agent_id;
    cell(row, a.agent_id);
    const status = cell(row, a.status, "status status-" + a.status);
    if (a.halted_by) status.title = a.halted_by;
    cell(row, a.owner); cell(row, a.version); cell(row, a.environment); cell(row, a.certified);
    cell(row, when(a.last_heartbeat)); cell(row, a.instances);
    cell(row, fmt(a.spend_1m)); cell(row, fmt(a.spend_1h)); cell(row, `${a.sent_1h} / ${a.received_1h}`);
    cell(row, a.errors_1h, a.errors_1h ? "status-HALTED" : ""); cell(row, a.skills.join(", "));
    const actions = cell(row, "", "operator-only");
    if (role === "operator" && a.status !== "RETIRED" && !a.agent_id.startsWith("mesh.")) {
      const button = document.createElement("button");
      button.className = "danger";
      button.textContent = "Halt";
      button.dataset.action = "halt";
      button.onclick = () => confirmCommand("halt", { scope: "agent", target: a.agent_id }, `Halt agent ${a.agent_id}?`);
      actions.append(button);
    }
  }
  spacer(fleetRows.length - first - shown.length);
}

function renderHalts() {
  const body = document.querySelector("#halts-table tbody");
  body.replaceChildren();
  for (const h of state.halts) {
    const row = body.insertRow();
    row.dataset.haltKey = h.key;
    cell(row, `${h.scope.toLowerCase()} ${h.target}`); cell(row, h.rule); cell(row, h.reason);
    cell(row, h.requested_by); cell(row, when(h.issued_at)); cell(row, h.affected.join(", ") || h.target);
    cell(row, stopped(h), h.waiting.length ? "status-HALTED" : "").dataset.stopped = h.acknowledged.length;
    const evidence = cell(row, h.evidence.slice(0, 3).join("; ") + (h.evidence.length > 3 ? `; and ${h.evidence.length - 3} more` : ""));
    evidence.title = h.evidence.join("\n");
    const map = document.createElement("button");
    map.className = "quiet";
    map.textContent = "Map";
    map.title = "show its blast radius on the dependency map";
    map.onclick = () => { reach = new Set(h.affected.length ? h.affected : [h.target]); show("map"); };
    const actions = cell(row, "");
    actions.append(map);
    if (role === "operator") {
      const button = document.createElement("button");
      button.className = "quiet operator-only";
      button.textContent = "Resume";
      button.onclick = () => confirmCommand("resume", { scope: h.scope.toLowerCase(), target: h.target }, `Lift the ${h.scope.toLowerCase()} halt of ${h.target}?`);
      actions.append(button);
    }
  }
}

// Who stopped: instances that acknowledged the halt, how long after it was produced the last
// one did (and from the triggering record, for an automatic halt), and who has not yet.
function stopped(h) {
  if (h.scope === "CHAIN") return "this chain only: its agents' sidecars refuse it and serve other chains";
  const parts = [`${h.acknowledged.length} stopped`];
  if (h.slowest_ack_ms !== null) parts.push(`last after ${h.slowest_ack_ms} ms from the signed command`);
  if (h.trigger_to_ack_ms !== null) parts.push(`${h.trigger_to_ack_ms} ms from the trigger`);
  if (h.waiting.length) parts.push(`waiting for ${h.waiting.join(", ")}`);
  return parts.join("; ");
}

let reach = new Set();  // the blast radius picked in the halts view, outlined on the map

function renderMap() {
  const elements = state.graph.nodes.map((n) => ({
    data: { id: n.id, label: n.kind === "agent" ? `${n.id}\n${n.status}` : n.id, kind: n.kind, halted: n.halted ? 1 : 0,
      reach: reach.has(n.id) ? 1 : 0 },
  })).concat(state.graph.edges.filter((e) => state.graph.nodes.some((n) => n.id === e.to)).map((e, i) => ({
    data: { id: `e${i}`, source: e.from, target: e.to, seen: e.seen },
  })));
  if (!cy) {
    cy = cytoscape({
      container: document.getElementById("graph"),
      style: [
        { selector: "node", style: { label: "data(label)", "text-wrap": "wrap", "font-size": 10, "background-color": "#5fb3f9", "text-valign": "bottom" } },
        { selector: "node[kind = 'tool']", style: { shape: "round-rectangle", "background-color": "#b9c4cf" } },
        { selector: "node[halted = 1]", style: { "background-color": "#c02020" } },
        { selector: "node[reach = 1]", style: { "border-width": 4, "border-color": "#f2a900" } },
        { selector: "edge", style: { "curve-style": "bezier", "target-arrow-shape": "triangle", width: 1.5 } },
        { selector: "edge[seen = 'observed']", style: { "line-style": "dashed" } },
      ],
    });
  }
  cy.elements().remove();
  cy.add(elements);
  cy.layout({ name: "cose", animate: false, nodeRepulsion: () => 40000, idealEdgeLength: () => 90 }).run();
}

function fmt(value) {
  if (value === null || value === undefined) return "-";
  return typeof value === "number" ? Number(value.toPrecision(4)).toString() : value;
}

function renderKpis() {
  const body = document.querySelector("#kpis-table tbody");
  body.replaceChildren();
  const names = ["tasks", "completed", "task_success_rate", "value_usd", "cost_usd", "roi", "cost_per_completed_task_usd",
    "intervention_rate_per_100", "blast_radius_agents_per_halt", "mean_time_to_halt_ms", "handoff_failure_rate"];
  let series = null;
  for (const k of state.kpis) {
    if (k.window === "buckets") { series = k.series; continue; }
    const row = body.insertRow();
    row.dataset.scope = `${k.scope}|${k.window}`;
    cell(row, k.scope); cell(row, k.window);
    names.forEach((n) => cell(row, fmt(k[n])));
  }
  if (!series || !series.t.length) return;
  buckets = series;
  bucketChart("spend-chart", 240, [series.cost_usd, "spend $", "#c02020", "$"],
    [series.completed, "tasks completed", "#167a3a", "tasks"]);
  bucketChart("traffic-chart", 200, [series.messages_per_s, "messages/s", "#2f6fb0", "msg/s"],
    [series.halts, "halts", "#c02020", "halts"]);
}

// A chart of two series over the fleet's five-minute buckets (uPlot), one on each axis: made
// once, then given new data; its time axis spans the current buckets, half an hour either side.
const charts = {};
let buckets = null;

function bucketChart(id, height, [left, leftLabel, leftColour, leftAxis], [right, rightLabel, rightColour, rightAxis]) {
  const data = [buckets.t, left, right];
  if (charts[id]) { charts[id].setData(data); return; }
  const holder = document.getElementById(id);
  charts[id] = new uPlot({
    width: Math.max(400, holder.clientWidth || 800), height,
    scales: { x: { time: true, range: () => [buckets.t[0] - 1800, buckets.t[buckets.t.length - 1] + 1800] } },
    series: [{}, { label: leftLabel, stroke: leftColour, points: { size: 6 } },
      { label: rightLabel, stroke: rightColour, scale: "n", points: { size: 6 } }],
    axes: [{}, { label: leftAxis }, { side: 1, scale: "n", label: rightAxis }],
  }, data, holder);
}

function renderEscalations() {
  const body = document.querySelector("#escalations-table tbody");
  body.replaceChildren();
  for (const e of state.escalations) {
    const row = body.insertRow();
    row.dataset.request = e.request_id;
    cell(row, e.request_id); cell(row, e.escalation ? "escalation" : `approval of ${e.tool}`);
    cell(row, e.agent_id); cell(row, e.arguments); cell(row, when(e.asked_at));
  }
}

function renderDead() {
  const body = document.querySelector("#dead-table tbody");
  body.replaceChildren();
  for (const d of state.dead_letters) {
    const row = body.insertRow();
    row.dataset.dlq = d.dlq;
    cell(row, when(d.detected_at)); cell(row, d.reason_code); cell(row, d.reason);
    cell(row, d.source); cell(row, d.detected_by); cell(row, d.size);
    row.onclick = () => {
      const bytes = atob(d.original_base64 || "");
      const hex = [...bytes].map((c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join(" ");
      document.getElementById("dead-bytes").textContent = `${d.source}: ${bytes.length} bytes\n${hex}`;
    };
  }
}

function renderHealth() {
  const h = state.health || {};
  const holder = document.getElementById("health-body");
  holder.replaceChildren();
  const add = (title, rows) => {
    const heading = document.createElement("h3");
    heading.textContent = title;
    const table = document.createElement("table");
    for (const [k, v] of rows) {
      const row = table.insertRow();
      cell(row, k); cell(row, typeof v === "object" && v !== null ? JSON.stringify(v) : v);
    }
    holder.append(heading, table);
  };
  if (!h.broker) { holder.textContent = "reading the mesh's health ..."; return; }
  add("Broker", [["up", h.broker.up], ["nodes", (h.broker.nodes || []).join(", ")], ["controller", h.broker.controller]]);
  if (h.topics) add("Topics", [["present", `${h.topics.present} of ${h.topics.expected}`], ["missing", h.topics.missing.join(", ") || "none"]]);
  if (h.schema_registry) add("Schema registry", [["subjects", h.schema_registry.subjects]]);
  const group = (p) => {
    if (p.error) return `error: ${p.error}`;
    const members = p.instances ? `${p.instances} running (${p.state.toLowerCase()})` : "not running";
    if (p.offsets_behind === null) return `${members}; never committed`;
    const rate = p.offsets_per_s === undefined ? "" : `; ${p.offsets_per_s} offsets/s committed`;
    return `${members}; ${p.offsets_behind} behind over ${p.partitions} partitions${rate}`;
  };
  if (h.processors) add("Processors (instances, offsets behind their inputs' ends, throughput)",
    Object.entries(h.processors).map(([name, p]) => [name, group(p)]));
  const scraped = h.processor_metrics || {};
  const restores = Object.entries(scraped).filter(([name]) => name !== "_unreachable").map(([name, m]) => [name,
    `${m.ready ? "ready" : "NOT READY"}; ${m.records_in} records handled` +
    `${m.records_per_s === undefined ? "" : ` (${m.records_per_s}/s)`}; restored ${m.restored_records} records in ` +
    `${Number(m.restore_seconds).toFixed(2)} s over ${m.assignments} assignments; ${m.restarts} restarts`]);
  for (const [url, why] of Object.entries(scraped._unreachable || {})) restores.push([url, `unreachable: ${why}`]);
  if (restores.length) add("Processors' own metrics (restores and restarts, from their /metrics)", restores);
  if (h.drill) add("Kill-switch drill", [[h.drill.healthy ? "healthy" : "UNHEALTHY", h.drill.summary]]);
}

// -- tasks and the audit log (read on demand) -------------------------------------------------

function what(r) {
  const b = r.body || {};
  return [r.subject, b.kind, b.action, b.key].filter(Boolean).join(" ");
}

async function searchAudit(params) {
  const answer = await fetch(`/api/audit/search?${new URLSearchParams(params)}`);
  return (await answer.json()).records || [];
}

let taskEvents = [];
document.getElementById("task-form").onsubmit = async (e) => {
  e.preventDefault();
  const task = new FormData(e.target).get("task").trim();
  taskEvents = await searchAudit({ task });
  const body = document.querySelector("#timeline-table tbody");
  body.replaceChildren();
  for (const r of taskEvents) {
    const row = body.insertRow();
    cell(row, when(r.at)); cell(row, r.audit); cell(row, what(r)); cell(row, r.sender);
    cell(row, (r.body || {}).target || r.recipient); cell(row, (r.body || {}).summary);
  }
  const slider = document.getElementById("as-of");
  document.getElementById("task-when").hidden = taskEvents.length === 0;
  if (!taskEvents.length) { document.getElementById("task-body").textContent = `no records of task ${task}`; return; }
  slider.min = taskEvents[0].at; slider.max = taskEvents[taskEvents.length - 1].at + 1000; slider.value = slider.max;
  slider.dataset.task = task;
  showTask();
};

async function showTask() {
  const slider = document.getElementById("as-of");
  document.getElementById("as-of-text").textContent = when(Number(slider.value));
  const answer = await fetch(`/api/tasks/${encodeURIComponent(slider.dataset.task)}?as_of=${slider.value}`);
  const holder = document.getElementById("task-body");
  holder.replaceChildren();
  if (!answer.ok) { holder.textContent = (await answer.json()).message; return; }
  const t = (await answer.json()).task;
  const table = document.createElement("table");
  table.id = "task-state";
  const rows = [["status", t.status], ["participants", (t.participants || []).join(", ")],
    ["handoffs", (t.handoffs || []).map((h) => `${h.from_agent} → ${h.to_agent}`).join(", ")],
    ["artifacts", (t.artifacts || []).join(", ")], ["version", t.version]];
  for (const [k, v] of Object.entries(t.context || {})) rows.push([`context: ${k}`, `${v.value_json} (v${v.version}, ${v.written_by})`]);
  for (const [k, v] of rows) { const row = table.insertRow(); cell(row, k); cell(row, v); }
  holder.append(table);
}
document.getElementById("as-of").oninput = showTask;

function auditParams() {
  const form = new FormData(document.getElementById("audit-form"));
  const params = {};
  for (const name of ["agent", "task"]) if (form.get(name)) params[name] = form.get(name);
  for (const name of ["from", "to"]) if (form.get(name)) params[name] = Date.parse(form.get(name) + "Z");
  return params;
}

document.getElementById("audit-form").onsubmit = async (e) => {
  e.preventDefault();
  const records = await searchAudit(auditParams());
  const body = document.querySelector("#audit-table tbody");
  body.replaceChildren();
  for (const r of records) {
    const row = body.insertRow();
    cell(row, r.audit); cell(row, when(r.at)); cell(row, r.source); cell(row, what(r) || r.undecodable);
    cell(row, r.sender); cell(row, r.task_id);
  }
  document.getElementById("export").href = `/api/audit/export?${new URLSearchParams(auditParams())}`;
};

document.getElementById("verify").onclick = async () => {
  const out = document.getElementById("verify-progress");
  out.textContent = "verifying ...\n";
  const answer = await fetch(`/api/audit/verify?${new URLSearchParams(auditParams())}`);
  const reader = answer.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = JSON.parse(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
      out.textContent += line.done
        ? `${line.ok ? "OK: every chain verifies" : "FAILED"} (${line.records} records)\n`
        : line.error ? `error: ${line.error}\n`
        : `partition ${line.partition + 1} of ${line.of}: ${line.records} records, ${line.ok ? "ok" : line.problem}\n`;
    }
  }
};
document.getElementById("export").href = "/api/audit/export";

// -- halting and resuming -----------------------------------------------------------------------

function confirmCommand(action, what, question) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-what").textContent = question;
  const reason = document.getElementById("confirm-reason");
  reason.value = "";
  dialog.onclose = () => {
    if (dialog.returnValue === "ok" && reason.value.trim()) send(action, { ...what, reason: reason.value.trim() });
  };
  dialog.showModal();
}

async function send(action, body) {
  const flash = document.getElementById("flash");
  const response = await fetch(`/api/${action}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  flash.textContent = response.ok
    ? `${action} ${body.scope} ${body.target || ""} sent as ${answer.requested_by} (command ${answer.command_id})`
    : `${action} refused: ${answer.message}`;
}

document.getElementById("halt-form").onsubmit = (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const body = { scope: form.get("scope"), target: form.get("target"), reason: form.get("reason") };
  confirmCommand("halt", body, `Halt ${body.scope} ${body.target}?`);
  document.getElementById("confirm-reason").value = body.reason;
};

// -- navigation ---------------------------------------------------------------------------------

function show(name) {
  view = name;
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.view === name));
  document.querySelectorAll("section.view").forEach((s) => { s.hidden = s.id !== name; });
  render();
}
document.querySelectorAll("nav button").forEach((button) => {
  button.onclick = () => { if (button.dataset.view !== "map") reach = new Set(); show(button.dataset.view); };
});
document.querySelectorAll("#fleet-table th[data-key]").forEach((th) => {
  th.onclick = () => {
    sort.up = sort.key === th.dataset.key ? !sort.up : true;
    sort.key = th.dataset.key;
    fleetDirty = true;
    renderFleet(true);
  };
});
let scrolled = false;
document.getElementById("fleet-scroll").onscroll = () => {
  if (!scrolled) { scrolled = true; requestAnimationFrame(() => { scrolled = false; drawFleetWindow(); }); }
};
let refilter = null;
document.getElementById("filter").oninput = () => {
  fleetDirty = true;
  renderFleet(true);  // at once from what the page holds, then from the server
  clearTimeout(refilter);
  refilter = setTimeout(connect, 300);
};

connect();
