// Pliny's web view: plain DOM code, no build step. Data comes from /api (read-only GETs);
// the audit timeline and the live state come from one Server-Sent Events stream.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TERMINAL = new Set(["session_completed", "session_failed", "session_cancelled", "session_paused"]);
const MAX_ROWS = 1000;  // timeline rows kept in the page (the full log is `pliny audit view`)

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const resp = await fetch(path, options);
  const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

function post(path, body = {}) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Pliny-Action": "1" },
    body: JSON.stringify(body),
  });
}

function say(text, bad = false) {
  const m = $("#message");
  m.textContent = text;
  m.className = bad ? "bad" : "";
}

const fmtTokens = (n) => (n || 0).toLocaleString("en-US");
// The server's wording (pliny.usage.format_cost: "unpriced", "<$0.0001", "$x + unpriced").
const fmtCost = (c, unpriced, text) => text ?? `$${(c || 0).toFixed(4)}${unpriced ? " + unpriced" : ""}`;
const badge = (state) => el("span", { class: `badge ${state}`, text: state });

function ready(what) {
  if (document.body.dataset.ready) return;
  document.body.dataset.ready = what;
  performance.mark("pliny-first-data");
}

// -- the session list ---------------------------------------------------------------------
let rows = [];

async function listView() {
  $("#list-view").hidden = false;
  $("#filter").addEventListener("input", drawList);
  $("#status-filter").addEventListener("change", drawList);
  const load = async () => {
    try {
      const data = await api("/api/sessions");
      $("#workspace").textContent = data.workspace;
      rows = data.sessions.slice().reverse();  // newest first
      drawList();
      ready("list");
    } catch (e) { say(e.message, true); }
  };
  await load();
  setInterval(load, 3000);
}

function drawList() {
  const text = $("#filter").value.trim().toLowerCase();
  const status = $("#status-filter").value;
  const shown = rows.filter((r) =>
    (!status || r.status === status) &&
    (!text || [r.id, r.name, r.framework, r.phase].some((v) => (v || "").toLowerCase().includes(text))));
  const body = el("tbody");
  for (const r of shown) {
    body.append(el("tr", { "data-session": r.id, "data-status": r.status },
      el("td", {}, el("a", { href: `/session/${encodeURIComponent(r.id)}`, text: r.id })),
      el("td", { text: r.name }),
      el("td", {}, badge(r.status)),
      el("td", { text: r.framework || "" }),
      el("td", { text: r.phase || "" }),
      el("td", { text: r.age }),
      el("td", { class: "num", text: fmtTokens(r.tokens) }),
      el("td", { class: "num", title: r.unpriced_calls ? `${r.unpriced_calls} unpriced call(s)` : null,
                 text: fmtCost(r.cost_usd, r.unpriced_calls, r.cost) })));
  }
  $("#sessions tbody").replaceWith(body);
  $("#count").textContent = `${shown.length} of ${rows.length} sessions`;
}

// -- one session ----------------------------------------------------------------------------
let sid = null, detail = null, refreshTimer = null, checkpointsTimer = null, verifyTimer = null;
const pending = [];  // SSE events waiting for the next animation frame
const seen = { type: new Set(), phase: new Set(), agent: new Set() };

async function sessionView(id) {
  sid = id;
  $("#session-view").hidden = false;
  $("#cancel").addEventListener("click", () => act("cancel", `Cancel session ${sid}? It can be resumed later.`));
  $("#resume").addEventListener("click", () => act("resume", `Resume session ${sid} in a new process?`));
  for (const f of ["#f-type", "#f-phase", "#f-agent"]) $(f).addEventListener("change", applyFilters);
  await refresh();
  ready("session");
  refreshCheckpoints();
  refreshVerify();
  stream();
}

const enc = () => encodeURIComponent(sid);

async function refresh() {
  try {
    detail = await api(`/api/sessions/${enc()}`);
    drawSession();
  } catch (e) { say(e.message, true); }
}

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => { refreshTimer = null; await refresh(); }, 150);
}

function drawSession() {
  const s = detail.session;
  document.title = `Pliny · ${s.id}`;
  $("#title").replaceChildren(el("span", { text: `${s.id} ` }), badge(s.status));
  $("#title").dataset.status = s.status;
  const t = detail.totals || {};
  $("#summary").textContent = [s.name, s.framework && `framework ${s.framework}`,
    s.phase && `phase ${s.phase}`, `${t.calls || 0} calls`, `${fmtTokens(t.tokens)} tokens`,
    fmtCost(t.cost_usd, t.unpriced_calls, t.cost), t.retries ? `${t.retries} retries` : null,
    s.task && `task: ${s.task.slice(0, 120)}`].filter(Boolean).join(" · ");
  const err = detail.error || (s.error && s.error.message);
  $("#error").hidden = !err;
  $("#error").textContent = err ? `error: ${err}` : "";
  const running = s.status === "in_progress";
  $("#cancel").disabled = !running;
  $("#resume").disabled = running || s.status === "completed";
  const svg = $("#svg-link");
  svg.hidden = !detail.svg;
  svg.href = `/api/sessions/${enc()}/graph.svg`;
  if (detail.graph) drawGraph(detail.graph, detail.palette);
  drawAgents(detail.agents, detail.palette);
}

function colours(state, palette) {
  return `--c:${palette.stroke[state] || "#9e9e9e"};--f:${palette.fill[state] || "#fafafa"}`;
}

function drawGraph(graph, palette) {
  const box = el("div", { id: "graph", class: "graph" });
  graph.phases.forEach((p, i) => {
    if (i) box.append(el("span", { class: "arrow", text: "→" }));
    const phase = el("div", { class: "phase", "data-phase": p.name, "data-state": p.state,
                              style: colours(p.state, palette) },
      el("div", { class: "pname", text: `${p.name}${p.cycles > 1 ? ` ×${p.cycles}` : ""} · ${p.state}` }));
    for (const a of p.agents) {
      phase.append(el("div", { class: "agent", "data-agent": a.name, "data-state": a.state,
                               style: colours(a.state, palette), title: a.state },
        el("div", { text: a.name }),
        el("div", { class: "tok", text: `${a.state}${a.tokens ? ` · ${fmtTokens(a.tokens)} tok` : ""}` })));
    }
    box.append(phase);
  });
  box.append(el("span", { class: "arrow", text: "→ end" }));
  $("#graph").replaceWith(box);
  const routes = el("ul", { id: "routes", class: "routes" });
  for (const e of graph.edges.filter((x) => x.when)) {
    routes.append(el("li", { text: `${e.from} → ${e.to} when ${e.when} (max ${e.max_cycles} cycles)` }));
  }
  $("#routes").replaceWith(routes);
}

function drawAgents(agents, palette) {
  const box = el("div", { id: "agents", class: "cards" });
  for (const a of agents) {
    box.append(el("div", { class: "card", "data-agent": a.name, "data-state": a.state,
                           style: colours(a.state, palette) },
      el("h3", {}, el("span", { text: `${a.phase} / ${a.name}` }), badge(a.state)),
      el("dl", {},
        el("dt", { text: "model" }), el("dd", { text: a.model || "(default)" }),
        el("dt", { text: "calls" }), el("dd", { text: `${a.calls}${a.replayed_calls ? ` (${a.replayed_calls} replayed)` : ""}` }),
        el("dt", { text: "tokens" }), el("dd", { text: fmtTokens(a.tokens) }),
        el("dt", { text: "cost" }), el("dd", { text: fmtCost(a.cost_usd, a.unpriced_calls, a.cost) }),
        el("dt", { text: "retries" }), el("dd", { text: String(a.retries) }),
        a.files.length ? el("dt", { text: "wrote" }) : null,
        a.files.length ? el("dd", { class: "files", text: a.files.join(", ") }) : null),
      a.error || a.errors.length ? el("div", { class: "err", text: a.error || a.errors.at(-1) }) : null,
      a.preview ? el("pre", { class: "preview", text: a.preview }) : null));
  }
  $("#agents").replaceWith(box);
}

async function refreshVerify() {
  try {
    const v = await api(`/api/sessions/${enc()}/verify`);
    const box = $("#verify");
    box.className = `verify ${v.ok === false ? "bad" : v.ok ? "ok" : ""}`;
    box.dataset.ok = String(v.ok);
    box.textContent = `audit verify: ${v.ok === false ? "BROKEN — " : ""}${v.message}`;
  } catch (e) { say(e.message, true); }
}

function scheduleCheckpoints() {
  clearTimeout(checkpointsTimer);
  checkpointsTimer = setTimeout(refreshCheckpoints, 300);
}

async function refreshCheckpoints() {
  let list;
  try { list = await api(`/api/sessions/${enc()}/checkpoints`); } catch (e) { say(e.message, true); return; }
  const box = el("ol", { id: "checkpoints", class: "checkpoints" });
  list.forEach((c, i) => {
    const prev = i ? list[i - 1].name : null;
    box.append(el("li", { "data-checkpoint": c.name },
      el("strong", { text: c.name }),
      el("span", { class: "meta", text: ` ${c.commit.slice(0, 12)} · ${new Date(c.created).toLocaleTimeString()} · ${c.files.length ? c.files.length + " file(s)" : c.subject}` }),
      prev ? el("button", { class: "diff", onclick: () => showDiff(prev, c.name), text: `diff from ${prev}` }) : null,
      el("button", { class: "rollback danger", onclick: () => rollback(c.name), text: "roll back here" })));
  });
  if (!list.length) box.append(el("li", { class: "meta", text: "no checkpoints yet" }));
  $("#checkpoints").replaceWith(box);
}

async function showDiff(from, to) {
  try {
    const d = await api(`/api/sessions/${enc()}/diff?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
    $("#diff").hidden = false;
    $("#diff-title").textContent = `${from} → ${to}`;
    $("#diff-stat").textContent = d.stat || "(no changes)";
    $("#diff-patch").textContent = d.patch;
  } catch (e) { say(e.message, true); }
}

async function act(what, question) {
  if (!confirm(question)) return;
  try {
    const r = await post(`/api/sessions/${enc()}/${what}`);
    say(r.message);
  } catch (e) { say(e.message, true); }
  await refresh();
}

async function rollback(name) {
  if (!confirm(`Roll session ${sid} back to ${name}? Files Pliny wrote after it are restored or removed.`)) return;
  try {
    const r = await post(`/api/sessions/${enc()}/rollback`, { checkpoint: name });
    say(r.message);
  } catch (e) { say(e.message, true); }
  await refresh();
  refreshCheckpoints();
}

// -- the live audit timeline ---------------------------------------------------------------
function stream() {
  const source = new EventSource(`/api/sessions/${enc()}/stream`);
  source.addEventListener("open", () => { $("#live").textContent = "● live"; });
  source.addEventListener("error", () => { $("#live").textContent = "○ reconnecting"; });
  source.addEventListener("audit", (msg) => {
    if (!pending.length) requestAnimationFrame(flush);
    pending.push(JSON.parse(msg.data));
  });
}

function flush() {
  const batch = pending.splice(0);
  const body = $("#timeline tbody");
  const frag = document.createDocumentFragment();
  let terminal = false, checkpoint = false;
  for (const ev of batch.slice(-MAX_ROWS)) {
    frag.append(eventRow(ev));
    remember(ev);
  }
  for (const ev of batch) {
    terminal ||= TERMINAL.has(ev.type) || ev.type === "rollback";
    checkpoint ||= ev.type === "checkpoint_created" || ev.type === "rollback";
  }
  body.prepend(...[...frag.childNodes].reverse());  // newest on top
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
  $("#ev-count").textContent = `last seq ${batch.at(-1).seq}`;
  applyFilters();
  scheduleRefresh();
  if (checkpoint) scheduleCheckpoints();
  // The chain check reads the whole log: at most once a second (a throttle, not a
  // debounce: a busy run must still get checked), at once when the run ends.
  if (terminal) {
    clearTimeout(verifyTimer);
    verifyTimer = null;
    refreshVerify();
  } else if (!verifyTimer) {
    verifyTimer = setTimeout(() => { verifyTimer = null; refreshVerify(); }, 1000);
  }
}

const DETAIL_SKIP = new Set(["seq", "ts", "type", "phase", "agent", "session"]);

function eventRow(ev) {
  const detailText = Object.entries(ev).filter(([k]) => !DETAIL_SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  return el("tr", { class: "ev", "data-type": ev.type, "data-phase": ev.phase || "", "data-agent": ev.agent || "" },
    el("td", { class: "num", text: ev.seq }), el("td", { text: (ev.ts || "").slice(11, 23) }),
    el("td", { text: ev.type }), el("td", { text: ev.phase || "" }), el("td", { text: ev.agent || "" }),
    el("td", { class: "detail", title: detailText, text: detailText }));
}

function remember(ev) {
  for (const key of ["type", "phase", "agent"]) {
    const value = ev[key];
    if (value && !seen[key].has(value)) {
      seen[key].add(value);
      $(`#f-${key}`).append(el("option", { text: value }));
    }
  }
}

function applyFilters() {
  const want = { type: $("#f-type").value, phase: $("#f-phase").value, agent: $("#f-agent").value };
  for (const row of $("#timeline tbody").rows) {
    row.hidden = Object.entries(want).some(([k, v]) => v && row.dataset[k] !== v);
  }
}

// -- routing --------------------------------------------------------------------------------
const match = location.pathname.match(/^\/session\/([^/]+)$/);
if (match) sessionView(decodeURIComponent(match[1])); else listView();
