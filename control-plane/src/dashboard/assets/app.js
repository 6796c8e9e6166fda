// Seam dashboard: plain JavaScript, no framework. Every few seconds it reads the control
// plane's /api/ JSON and redraws the open tab. Elements carry stable ids and data
// attributes (data-service, data-edge, data-mtls) for tests and scripts.
"use strict";

const REFRESH_MS = 2500;
const SVG_NS = "http://www.w3.org/2000/svg";
const NODE_W = 148;
const NODE_H = 60;

const state = { tab: "overview", service: null, graph: null };

// ---- small DOM helpers (text is always set as text, never parsed as HTML) ----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function table(target, head, rows, empty) {
  target.replaceChildren(
    el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: head.length, class: "muted" }, empty))),
  );
}

// ---- number formats ----

const pct = (rate) => (rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(rate >= 0.9995 || rate === 0 ? 0 : 1)}%`);
const rps = (value) => `${(value || 0).toFixed(1)} rps`;
const ms = (value) => {
  if (value === null || value === undefined) return "–";
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  return value >= 10 ? `${Math.round(value)} ms` : `${value.toFixed(1)} ms`;
};
const duration = (seconds) => {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 0) return "expired";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.round(seconds / 86400)} d`;
};
const edgeLabel = (edge) => `${pct(edge.success_rate)} · ${(edge.rps || 0).toFixed(1)} rps · p99 ${ms(edge.p99_ms)}`;
// A padlock drawn in SVG, so it shows without an emoji font (title: 🔒).
function padlock(x, y) {
  return svg("g", { class: "padlock", transform: `translate(${x} ${y})` },
    svg("title", {}, "🔒 mTLS"),
    svg("path", { d: "M2.5 6 V4 a3 3 0 0 1 6 0 V6", class: "shackle" }),
    svg("rect", { x: 0.5, y: 5.5, width: 10, height: 7.5, rx: 1.5, class: "lock-body" }));
}

const padlockIcon = () => svg("svg", { class: "padlock-icon", width: 11, height: 14, viewBox: "0 0 11 14" }, padlock(0, 0.5));

const transportBadge = (transport) =>
  transport === "mtls"
    ? el("span", { class: "badge ok", "data-mtls": "true" }, padlockIcon(), " mTLS")
    : transport === "plaintext"
      ? el("span", { class: "badge bad" }, "plaintext")
      : el("span", { class: "badge muted" }, "unknown");

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

// ---- the service graph ----

// Columns by call depth: a service's column is one more than its deepest caller's.
function depths(nodes, edges) {
  const depth = new Map(nodes.map((node) => [node.service, 0]));
  for (let round = 0; round < nodes.length; round++) {
    let changed = false;
    for (const edge of edges) {
      if (edge.caller === edge.callee) continue;
      const wanted = (depth.get(edge.caller) || 0) + 1;
      if (wanted > (depth.get(edge.callee) || 0) && wanted < nodes.length) {
        depth.set(edge.callee, wanted);
        changed = true;
      }
    }
    if (!changed) break;
  }
  return depth;
}

function drawGraph(graph) {
  const target = document.getElementById("graph");
  const width = Math.max(target.clientWidth || 1200, 600);
  const depth = depths(graph.nodes, graph.edges);
  const columns = new Map();
  for (const node of graph.nodes) {
    const column = depth.get(node.service) || 0;
    if (!columns.has(column)) columns.set(column, []);
    columns.get(column).push(node);
  }
  const maxDepth = Math.max(0, ...columns.keys());
  const tallest = Math.max(1, ...[...columns.values()].map((c) => c.length));
  const rowGap = 110;
  const height = Math.max(240, tallest * rowGap + 80);
  const margin = 20;
  const step = maxDepth ? (width - 2 * margin - NODE_W) / maxDepth : 0;
  const position = new Map();
  for (const [column, members] of columns) {
    members.sort((a, b) => a.service.localeCompare(b.service));
    const top = (height - (members.length - 1) * rowGap) / 2;
    members.forEach((node, index) => {
      position.set(node.service, { x: margin + column * step, y: top + index * rowGap - NODE_H / 2 });
    });
  }

  const defs = svg("defs", {},
    ["mtls", "plaintext", "unknown"].map((kind) =>
      svg("marker", { id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: `arrowhead ${kind}` }))));
  const edgeLayer = svg("g", { class: "edges" });
  const labelLayer = svg("g", { class: "labels" });
  for (const edge of graph.edges) {
    const from = position.get(edge.caller);
    const to = position.get(edge.callee);
    if (!from || !to) continue;
    const forward = to.x > from.x;
    const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2;
    const x2 = forward ? to.x : to.x + NODE_W / 2, y2 = forward ? to.y + NODE_H / 2 : to.y;
    const bend = forward ? (x2 - x1) / 2 : 60;
    const d = forward
      ? `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`
      : `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2} ${y2 - bend}, ${x2} ${y2}`;
    const kind = edge.transport;
    const mtls = kind === "mtls" ? "true" : kind === "plaintext" ? "false" : "unknown";
    const text = `${kind === "plaintext" ? "⚠ " : ""}${edgeLabel(edge)}`;
    const midX = (x1 + x2) / 2, midY = (y1 + y2) / 2;
    const group = svg("g", {
      class: `edge ${kind}${edge.rps > 0 ? "" : " quiet"}`,
      id: `edge-${edge.caller}-${edge.callee}`,
      "data-edge": `${edge.caller}->${edge.callee}`,
      "data-mtls": mtls,
      "data-rps": edge.rps.toFixed(2),
    },
      svg("title", {}, `${edge.caller} → ${edge.callee}: ${kind === "mtls" ? "🔒 mTLS" : kind}`),
      svg("path", { d, class: "edge-line", "marker-end": `url(#arrow-${kind})` }));
    edgeLayer.append(group);
    labelLayer.append(svg("g", { class: `edge-label ${kind}`, "data-edge-label": `${edge.caller}->${edge.callee}`, "data-mtls": mtls, transform: `translate(${midX} ${midY - 17})`, "data-x": midX, "data-y": midY - 17 },
      svg("rect", { y: -11, height: 22, rx: 11 }),
      kind === "mtls" ? padlock(0, -7) : null,
      svg("text", { y: 4 }, text)));
  }
  const nodeLayer = svg("g", { class: "nodes" });
  for (const node of graph.nodes) {
    const at = position.get(node.service);
    const detail = node.success_rate === null ? "no traffic" : `${pct(node.success_rate)} · ${rps(node.rps)}`;
    nodeLayer.append(svg("g", {
      class: `node ${node.health}`,
      id: `node-${node.service}`,
      "data-service": node.service,
      "data-health": node.health,
      transform: `translate(${at.x} ${at.y})`,
      onclick: () => { location.hash = `#service/${encodeURIComponent(node.service)}`; },
    },
      svg("title", {}, `${node.service}: ${node.health}`),
      svg("rect", { width: NODE_W, height: NODE_H, rx: 12 }),
      svg("circle", { cx: 16, cy: 20, r: 6, class: "health-dot" }),
      svg("text", { x: 30, y: 25, class: "node-name" }, node.service),
      svg("text", { x: 16, y: 44, class: "node-detail" }, detail),
      node.unreachable_proxies
        ? svg("text", { x: NODE_W - 10, y: 25, class: "node-warning", "text-anchor": "end" },
          svg("title", {}, `${node.unreachable_proxies} of ${node.proxies} proxies could not be read`), "⚠")
        : null));
  }
  target.setAttribute("viewBox", `0 0 ${width} ${height}`);
  target.setAttribute("height", height);
  target.replaceChildren(defs, edgeLayer, nodeLayer, labelLayer);
  sizeLabels(labelLayer);
  if (!graph.nodes.length) {
    target.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "muted" }, "no services yet"));
  }
}

// Fits each edge label's pill to its text, now that the text can be measured, and moves
// a label down while it would cover one already placed.
function sizeLabels(layer) {
  const placed = [];
  for (const label of layer.children) {
    const text = label.querySelector("text");
    const lock = label.querySelector(".padlock");
    const width = text.getComputedTextLength() + (lock ? 30 : 18);
    const left = -width / 2;
    label.querySelector("rect").setAttribute("x", left);
    label.querySelector("rect").setAttribute("width", width);
    if (lock) lock.setAttribute("transform", `translate(${left + 9} -7)`);
    text.setAttribute("x", left + (lock ? 23 : 9));
    const x = Number(label.dataset.x);
    let y = Number(label.dataset.y);
    const overlaps = (box) => Math.abs(box.x - x) < (box.width + width) / 2 + 4 && Math.abs(box.y - y) < 26;
    for (let tries = 0; tries < 8 && placed.some(overlaps); tries++) y += 26;
    placed.push({ x, y, width });
    label.setAttribute("transform", `translate(${x} ${y})`);
  }
}

function drawOverviewTables(graph) {
  table(document.getElementById("services-table"), ["service", "health", "success", "rps", "p99", "proxies"],
    graph.nodes.map((node) => el("tr", { "data-service-row": node.service },
      el("td", {}, el("a", { href: `#service/${encodeURIComponent(node.service)}` }, node.service)),
      el("td", {}, el("span", { class: `badge ${node.health}` }, node.health)),
      el("td", { class: "num" }, pct(node.success_rate)),
      el("td", { class: "num" }, (node.rps || 0).toFixed(1)),
      el("td", { class: "num" }, ms(node.p99_ms)),
      el("td", { class: "num" }, node.unreachable_proxies ? `${node.proxies} (${node.unreachable_proxies} down)` : node.proxies))),
    "no services");
  table(document.getElementById("edges-table"), ["caller → callee", "transport", "success", "rps", "p99"],
    graph.edges.map((edge) => el("tr", { "data-edge-row": `${edge.caller}->${edge.callee}` },
      el("td", {}, `${edge.caller} → ${edge.callee}`),
      el("td", {}, transportBadge(edge.transport)),
      el("td", { class: "num" }, pct(edge.success_rate)),
      el("td", { class: "num" }, (edge.rps || 0).toFixed(1)),
      el("td", { class: "num" }, ms(edge.p99_ms)))),
    "no traffic seen yet");
}

function drawStatus(graph) {
  const proxies = graph.nodes.reduce((sum, node) => sum + node.proxies, 0);
  const window = graph.window_seconds ? `last ${Math.round(graph.window_seconds)} s` : "waiting for a second scrape";
  document.getElementById("status").textContent =
    `${graph.nodes.length} services · ${proxies} proxies · ${window} · updated ${new Date().toLocaleTimeString()}`;
  const problems = document.getElementById("problems");
  problems.hidden = !graph.unreachable.length;
  problems.replaceChildren(...graph.unreachable.map((p) =>
    el("div", {}, `⚠ ${p.service} proxy (${p.admin_addr || "no admin address"}) not read: ${p.error}`)));
}

// ---- one service ----

function sparkline(points, field, format, options) {
  const values = points.map((p) => p[field]).filter((v) => v !== null && v !== undefined);
  const last = values.length ? values[values.length - 1] : null;
  const w = 220, h = 56;
  const chart = svg("svg", { class: "spark", viewBox: `0 0 ${w} ${h}`, width: w, height: h, "data-metric": field });
  if (values.length > 1) {
    const lo = options.min !== undefined ? Math.min(options.min, ...values) : Math.min(...values);
    const hi = Math.max(lo + (options.span || 1e-9), ...values);
    const xs = (i) => (i / (points.length - 1)) * (w - 4) + 2;
    const ys = (v) => h - 4 - ((v - lo) / (hi - lo)) * (h - 8);
    const coords = points
      .map((p, i) => (p[field] === null || p[field] === undefined ? null : `${xs(i).toFixed(1)},${ys(p[field]).toFixed(1)}`))
      .filter(Boolean);
    chart.append(svg("polyline", { points: `${coords[0].split(",")[0]},${h} ${coords.join(" ")} ${coords[coords.length - 1].split(",")[0]},${h}`, class: "spark-fill" }));
    chart.append(svg("polyline", { points: coords.join(" "), class: "spark-line" }));
  } else {
    chart.append(svg("text", { x: w / 2, y: h / 2 + 4, "text-anchor": "middle", class: "muted" }, "collecting…"));
  }
  return el("div", { class: "metric" },
    el("div", { class: "metric-name" }, options.title),
    el("div", { class: "metric-value" }, format(last)),
    chart);
}

function policySummary(policy) {
  const r = policy.retries, cb = policy.circuit_breaker;
  return [
    ["timeout", policy.timeout_ms === null ? "none" : ms(policy.timeout_ms)],
    ["retries", `${r.attempts} attempts on ${r.on.join(", ") || "nothing"}, budget ${r.budget_percent} %${r.per_try_timeout_ms ? `, per try ${ms(r.per_try_timeout_ms)}` : ""}`],
    ["circuit breaker", `eject after ${cb.consecutive_failures} failures for ${ms(cb.base_ejection_time_ms)}, at most ${cb.max_ejection_percent} %`],
    ["max concurrent", policy.max_concurrent_requests || "unlimited"],
    ["load balancer", policy.load_balancer],
  ];
}

function keyValues(pairs) {
  return el("dl", { class: "kv" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function routeText(route) {
  const m = route.match;
  const parts = [];
  if (m.path) parts.push(m.path.prefix !== undefined ? `path ${m.path.prefix}*` : `path ${m.path.exact}`);
  if (m.method) parts.push(m.method);
  for (const [name, value] of Object.entries(m.headers || {})) parts.push(`${name}: ${value}`);
  return parts.join(" · ") || "every request";
}

function drawService(view) {
  const detail = document.getElementById("service-detail");
  const health = document.getElementById("service-health");
  health.replaceChildren(
    view.now ? el("span", { class: `badge ${view.now.health}` }, view.now.health) : "",
    view.proxies.length ? el("a", { href: `#tap/${encodeURIComponent(view.service)}`, class: "tap-link" }, "live tap →") : "");
  const series = view.series || [];
  const metrics = el("div", { class: "metrics" },
    sparkline(series, "success_rate", pct, { title: "success rate", min: 0.9, span: 0.1 }),
    sparkline(series, "rps", (v) => (v === null ? "–" : rps(v)), { title: "requests / s", min: 0 }),
    sparkline(series, "p50_ms", ms, { title: "p50", min: 0 }),
    sparkline(series, "p95_ms", ms, { title: "p95", min: 0 }),
    sparkline(series, "p99_ms", ms, { title: "p99", min: 0 }));

  const edgeRows = (edges, other) => edges.map((edge) => el("tr", {},
    el("td", {}, el("a", { href: `#service/${encodeURIComponent(edge[other])}` }, edge[other])),
    el("td", {}, transportBadge(edge.transport)),
    el("td", { class: "num" }, pct(edge.success_rate)),
    el("td", { class: "num" }, (edge.rps || 0).toFixed(1)),
    el("td", { class: "num" }, ms(edge.p99_ms))));
  const calledBy = el("table", { class: "edge-list" }), calls = el("table", { class: "edge-list" });
  table(calledBy, ["caller", "transport", "success", "rps", "p99"], edgeRows(view.called_by, "caller"), "nobody called it");
  table(calls, ["callee", "transport", "success", "rps", "p99"], edgeRows(view.calls, "callee"), "it called nobody");

  const endpoints = el("table", { id: "endpoints-table" });
  table(endpoints, ["address", "identity", "state"],
    view.endpoints.map((e) => el("tr", { "data-endpoint": e.address, "data-state": e.state },
      el("td", { class: "mono" }, e.address),
      el("td", { class: "mono" }, e.identity),
      el("td", {}, el("span", { class: `badge ${e.state === "ok" ? "ok" : "bad"}` }, e.state),
        e.ejected_by.map((by) => el("span", { class: "muted small" }, ` by ${by.service}, ${ms(by.remaining_ms)} left`))))),
    view.dns_endpoints && view.dns_endpoints.length ? `resolving ${view.dns_endpoints.join(", ")}` : "no endpoints");

  const proxies = el("table", { id: "proxies-table" });
  table(proxies, ["identity", "admin", "version", "config acknowledged"],
    view.proxies.map((p) => el("tr", {},
      el("td", { class: "mono" }, p.spiffe_id),
      el("td", { class: "mono" }, p.admin_addr || "–", p.scrape_error ? el("div", { class: "bad small" }, `⚠ ${p.scrape_error}`) : ""),
      el("td", {}, p.proxy_version || "–"),
      el("td", {}, p.subscriptions.map((s) => el("div", {},
        s.nack
          ? el("span", { class: "badge bad", title: s.nack.reason }, `${s.authority} NACK v${s.nack.version}`)
          : el("span", { class: "badge ok" }, `${s.authority} v${s.acked_version ?? "?"}`),
        s.nack ? el("span", { class: "small" }, ` ${s.nack.reason}`) : ""))))),
    "no proxy connected for this service");

  let pushed = el("p", { class: "muted" }, "not in the mesh file");
  if (view.pushed) {
    const auth = view.pushed.authorization;
    pushed = el("div", {},
      keyValues([
        ...policySummary(view.pushed.policy),
        ["allowed callers", auth.allow ? auth.allow.join(", ") : "any identity of the mesh"],
        ["plaintext callers", auth.allow_plaintext ? "allowed" : "refused"],
      ]),
      el("h4", {}, `routes (${view.pushed.routes.length})`),
      view.pushed.routes.length
        ? el("ol", { class: "routes" }, view.pushed.routes.map((route) => el("li", {},
          el("b", {}, routeText(route)),
          route.backends.length ? ` → ${route.backends.map((b) => `${b.service} (${b.weight})`).join(", ")}` : "",
          route.policy.timeout_ms !== view.pushed.policy.timeout_ms ? ` · timeout ${ms(route.policy.timeout_ms)}` : "")))
        : el("p", { class: "muted" }, "only the default route"));
  }

  detail.replaceChildren(
    el("div", { class: "panel" }, el("h3", {}, "Golden metrics, last 5 minutes",
      view.series_of === "outbound" ? el("span", { class: "muted small" }, " · of the requests it sent (nobody calls it)") : ""), metrics),
    el("div", { class: "columns" },
      el("div", { class: "panel" }, el("h3", {}, "Called by"), calledBy),
      el("div", { class: "panel" }, el("h3", {}, "Calls"), calls)),
    el("div", { class: "columns" },
      el("div", { class: "panel" }, el("h3", {}, "Endpoints"), endpoints),
      el("div", { class: "panel" }, el("h3", {}, `Routes and policy (model v${view.model_version})`), pushed)),
    el("div", { class: "panel" }, el("h3", {}, "Proxies"), proxies));
}

function fillServiceSelect(graph) {
  const select = document.getElementById("service-select");
  const names = graph.nodes.map((node) => node.service);
  if ([...select.options].map((o) => o.value).join() !== names.join()) {
    select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  }
  if (state.service) select.value = state.service;
}

// ---- certificates ----

function drawCerts(view) {
  const roots = el("table", { id: "roots-table" });
  table(roots, ["", "subject", "key id", "expires"],
    (view.roots || []).map((root, index) => el("tr", {},
      el("td", {}, el("span", { class: `badge ${index === 0 ? "ok" : "muted"}` }, index === 0 ? "signing" : "trusted")),
      el("td", {}, root.subject),
      el("td", { class: "mono small" }, root.key_id || "–"),
      el("td", {}, root.not_after))),
    "no roots");
  const proxies = el("table", { id: "certs-table" });
  table(proxies, ["service", "identity", "serial", "expires in", "issuer"],
    view.proxies.map((p) => el("tr", { "data-cert": p.spiffe_id },
      el("td", {}, p.service),
      el("td", { class: "mono" }, p.spiffe_id),
      p.error
        ? el("td", { colspan: 3, class: "bad" }, `⚠ ${p.error}`)
        : [
          el("td", { class: "mono small" }, p.serial),
          el("td", { class: p.expires_in_seconds < 3600 ? "bad" : "" }, duration(p.expires_in_seconds), el("div", { class: "muted small" }, p.not_after)),
          el("td", {}, p.issuer_trusted
            ? el("span", { class: `badge ${p.issued_by_signing_root ? "ok" : "degraded"}` }, p.issued_by_signing_root ? "signing root" : "previous root")
            : el("span", { class: "badge bad" }, "not in trust bundle")),
        ])),
    "no proxies connected");
  const rotation = view.rotation || {};
  document.getElementById("certs-detail").replaceChildren(
    el("div", { class: "panel" },
      el("h3", {}, `Trust bundle of ${view.trust_domain}`),
      el("p", {}, "Root rotation: ", el("span", { class: "badge", id: "rotation-phase" }, rotation.phase || "?"),
        rotation.next_step_in_seconds ? ` next step in ${duration(rotation.next_step_in_seconds)}` : ""),
      roots),
    el("div", { class: "panel" }, el("h3", {}, "Proxy certificates"), proxies));
}


// ---- live tap ----

const TAP_MAX_ROWS = 200;
const tap = { source: null, service: null, rows: 0, failures: [] };

const serviceOf = (id) => (id ? id.replace(/^.*\/sa\//, "") : "–");

function tapRow(event) {
  const status = event.grpc_status !== null && event.grpc_status !== undefined ? `${event.status} / grpc ${event.grpc_status}` : event.status;
  return el("tr", { "data-tap-row": "", "data-direction": event.direction, class: event.status >= 500 ? "bad" : "" },
    el("td", { class: "mono" }, event.time.replace(/^.*T/, "").replace("Z", "")),
    el("td", {}, event.direction === "inbound" ? "in" : "out"),
    el("td", {}, `${serviceOf(event.caller)} → ${serviceOf(event.callee)}`),
    el("td", {}, event.method),
    el("td", { class: "mono" }, `${event.authority}${event.path}`),
    el("td", { class: "num" }, status),
    el("td", { class: "num" }, ms(event.latency_ms)),
    el("td", { class: "num" }, `${event.request_bytes ?? "–"} / ${event.response_bytes}`),
    el("td", { class: "num" }, event.retries),
    el("td", { class: "mono" }, event.endpoint || "–"),
    el("td", {}, event.mtls ? el("span", { class: "badge ok" }, padlockIcon(), " mTLS") : el("span", { class: "badge bad" }, "plain")));
}

function stopTap() {
  if (tap.source) tap.source.close();
  tap.source = null;
}

function startTap(service) {
  stopTap();
  tap.service = service;
  tap.rows = 0;
  tap.failures = [];
  const body = document.getElementById("tap-body");
  body.replaceChildren();
  setTapStatus(`tapping ${service}…`);
  const source = new EventSource(`/api/tap?service=${encodeURIComponent(service)}`);
  tap.source = source;
  source.onmessage = (message) => {
    body.prepend(tapRow(JSON.parse(message.data)));
    tap.rows++;
    while (body.children.length > TAP_MAX_ROWS) body.lastChild.remove();
    setTapStatus(`tapping ${service}: ${tap.rows} requests seen (newest first, last ${TAP_MAX_ROWS} kept)`);
  };
  source.addEventListener("proxy-failed", (message) => {
    const failure = JSON.parse(message.data);
    tap.failures.push(`${failure.admin_addr}: ${failure.reason}`);
    setTapStatus(`tapping ${service}: ${tap.rows} requests seen`);
  });
  source.addEventListener("end", () => { stopTap(); setTapStatus(`the tap of ${service} ended`); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) setTapStatus(`cannot tap ${service} (is a proxy of it connected?)`);
  };
  drawTapControls();
}

function setTapStatus(text) {
  const status = document.getElementById("tap-status");
  status.replaceChildren(text, ...tap.failures.map((f) => el("div", { class: "bad small" }, `⚠ ${f}`)));
}

function drawTapControls() {
  const select = document.getElementById("tap-service");
  const names = state.graph ? state.graph.nodes.filter((n) => n.proxies > 0).map((n) => n.service) : [];
  if ([...select.options].map((o) => o.value).join() !== names.join()) {
    select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  }
  select.value = tap.service || state.service || names[0] || "";
  document.getElementById("tap-toggle").textContent = tap.source ? "Stop" : "Start";
}

function buildTapView() {
  const body = el("tbody", { id: "tap-body" });
  document.getElementById("tap-detail").replaceChildren(el("div", { class: "panel" },
    el("div", { class: "tap-controls" },
      el("h3", {}, "Live requests of"),
      el("select", { id: "tap-service", onchange: (event) => startTap(event.target.value) }),
      el("button", { id: "tap-toggle", onclick: () => {
        if (tap.source) { stopTap(); setTapStatus("stopped"); drawTapControls(); }
        else startTap(document.getElementById("tap-service").value);
      } }, "Start"),
      el("span", { id: "tap-status", class: "muted small" })),
    el("table", { id: "tap-table" },
      el("thead", {}, el("tr", {}, ["time", "dir", "caller → callee", "method", "authority + path", "status", "latency", "bytes in / out", "retries", "endpoint", "transport"].map((h) => el("th", {}, h)))),
      body)));
}

// ---- refresh loop ----

function showTab() {
  const [tab, name] = location.hash.replace(/^#/, "").split("/");
  state.tab = ["overview", "service", "certs", "tap"].includes(tab) ? tab : "overview";
  if (name) state.service = decodeURIComponent(name);
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== `tab-${state.tab}`;
  for (const link of document.querySelectorAll("#tabs a")) link.classList.toggle("active", link.dataset.tab === state.tab);
  if (state.tab === "tap" && name) startTap(state.service);
  else if (state.tab !== "tap") stopTap();
}

async function refresh() {
  try {
    const graph = await getJson("/api/graph");
    state.graph = graph;
    drawStatus(graph);
    if (!state.service && graph.nodes.length) {
      const busiest = [...graph.nodes].sort((a, b) => b.rps - a.rps)[0];
      state.service = busiest.service;
    }
    fillServiceSelect(graph);
    if (state.tab === "overview") {
      drawGraph(graph);
      drawOverviewTables(graph);
    } else if (state.tab === "service" && state.service) {
      drawService(await getJson(`/api/services/${encodeURIComponent(state.service)}`));
    } else if (state.tab === "certs") {
      drawCerts(await getJson("/api/certs"));
    } else if (state.tab === "tap") {
      drawTapControls();
    }
    document.body.dataset.loaded = "true";
  } catch (error) {
    document.getElementById("status").textContent = `⚠ ${error.message}`;
  }
}

document.getElementById("service-select").addEventListener("change", (event) => {
  location.hash = `#service/${encodeURIComponent(event.target.value)}`;
});
window.addEventListener("hashchange", () => { showTab(); refresh(); });
window.addEventListener("resize", () => { if (state.graph && state.tab === "overview") drawGraph(state.graph); });
buildTapView();
showTab();
refresh();
setInterval(refresh, REFRESH_MS);
