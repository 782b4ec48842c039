// Sidegate dashboard: polls the admin API's /stats and draws its charts as SVG. No library.
//
// /stats holds counters only (see README, "Admin API"). Each poll is compared with the one before
// it: rates, latency percentiles and the cache hit ratio are over that poll interval. The first
// poll is compared with zero at the process start, so the page has a point at once.
// ?interval=SECONDS sets the poll interval (default 2).
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const W = 600;
  const H = 220;
  const PAD = { left: 52, right: 14, top: 14, bottom: 24 };
  const HISTORY = 90; // points kept per line chart
  const CLASSES = ["2xx", "3xx", "4xx", "5xx", "other"];

  const params = new URLSearchParams(location.search);
  const seconds = Number(params.get("interval"));
  const interval = Number.isFinite(seconds) && seconds >= 0.2 ? Math.min(seconds, 300) * 1000 : 2000;

  const $ = (id) => document.getElementById(id);
  const main = $("dashboard");
  const points = []; // one per poll: {t, rate, p50, p90, p99, ratio, rejected, totals}
  let previous = null; // the last /stats document
  let windowStart = null; // the counters just before points[0]: the tiles' latency is over the window
  let polls = 0;

  // -- formatting ----------------------------------------------------------------------------

  function count(n) {
    if (n == null) return "–";
    if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n));
  }
  function rate(v) {
    if (v == null) return "–";
    return v >= 100 ? count(v) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  }
  function ms(secondsValue) {
    if (secondsValue == null) return "–";
    const v = secondsValue * 1000;
    return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  }
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function duration(s) {
    if (s == null) return "–";
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return m ? `${m}m ${Math.floor(s % 60)}s` : `${Math.floor(s)}s`;
  }
  function percent(r) {
    return r == null ? "–" : (r * 100).toFixed(1) + "%";
  }

  // -- numbers from two /stats documents ---------------------------------------------------------

  /** The value at quantile q of a histogram (linear within a bucket, like Prometheus). */
  function quantile(bounds, counts, q) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (!total) return null;
    const rank = q * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i += 1) {
      const c = counts[i];
      if (c > 0 && seen + c >= rank) {
        const lower = i === 0 ? 0 : bounds[i - 1];
        if (i >= bounds.length) return lower; // the +Inf bucket: its lower bound is all we know
        return lower + (bounds[i] - lower) * ((rank - seen) / c);
      }
      seen += c;
    }
    return bounds[bounds.length - 1];
  }

  function summed(doc) {
    const slots = doc.buckets.length + 1;
    const buckets = new Array(slots).fill(0);
    for (const route of doc.routes) route.buckets.forEach((n, i) => (buckets[i] += n));
    return {
      t: doc.time,
      requests: doc.totals.requests,
      buckets,
      hits: doc.cache.hits,
      misses: doc.cache.misses,
      rejected: doc.rate_limit.rejected,
    };
  }

  function zero(doc) {
    const started = doc.uptime == null ? doc.time : doc.time - doc.uptime;
    const buckets = new Array(doc.buckets.length + 1).fill(0);
    return { t: started, requests: 0, buckets, hits: 0, misses: 0, rejected: 0 };
  }

  function derive(doc, before) {
    const now = summed(doc);
    let base = before ? summed(before) : zero(doc);
    if (now.requests < base.requests) base = zero(doc); // the gateway restarted
    const dt = now.t - base.t;
    const delta = now.buckets.map((n, i) => n - base.buckets[i]);
    const hits = now.hits - base.hits, misses = now.misses - base.misses;
    return {
      t: now.t,
      totals: now,
      base,
      rate: dt > 0 ? (now.requests - base.requests) / dt : null,
      p50: quantile(doc.buckets, delta, 0.5),
      p90: quantile(doc.buckets, delta, 0.9),
      p99: quantile(doc.buckets, delta, 0.99),
      ratio: hits + misses > 0 ? hits / (hits + misses) : null,
      rejected: dt > 0 ? Math.max(0, now.rejected - base.rejected) / dt : null,
    };
  }

  // -- SVG helpers ---------------------------------------------------------------------------

  function el(name, attrs, parent, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text != null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }
  function clear(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const step = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * step) return m * step;
    return 10 * step;
  }
  function empty(svg, message) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg, message);
  }

  /** A time series chart: one line per series, gaps where a value is null. */
  function lineChart(svg, series, options) {
    clear(svg);
    const x0 = PAD.left, x1 = W - PAD.right, y0 = H - PAD.bottom, y1 = PAD.top;
    const values = points.flatMap((p) => series.map((s) => p[s.key])).filter((v) => v != null);
    const max = options.max || niceMax(Math.max(0, ...values));
    for (let i = 0; i <= 4; i += 1) {
      const y = y0 - ((y0 - y1) * i) / 4;
      el("line", { x1: x0, x2: x1, y1: y, y2: y, class: "grid" }, svg);
      el("text", { x: x0 - 6, y: y + 4, "text-anchor": "end" }, svg, options.format((max * i) / 4));
    }
    // The time axis grows with the history, from one minute up to HISTORY polls.
    const end = points.length ? points[points.length - 1].t : 0;
    const kept = points.length ? end - points[0].t : 0;
    const span = Math.min((HISTORY * interval) / 1000, Math.max(60, Math.ceil(kept / 30) * 30));
    const xOf = (t) => x1 - ((end - t) / span) * (x1 - x0);
    const yOf = (v) => y0 - (Math.min(v, max) / max) * (y0 - y1);
    el("text", { x: x0, y: H - 6 }, svg, `-${Math.round(span)}s`);
    el("text", { x: x1, y: H - 6, "text-anchor": "end" }, svg, "now");
    series.forEach((s, index) => {
      const group = el("g", { class: `series series-${s.key}`, "data-series": s.key }, svg);
      let run = [];
      let shown = 0;
      let last = null;
      const flush = () => {
        if (run.length > 1) el("polyline", { points: run.join(" "), class: `line series-${s.key}` }, group);
        run = [];
      };
      for (const p of points) {
        const v = p[s.key];
        if (v == null || xOf(p.t) < x0) {
          flush();
          continue;
        }
        run.push(`${xOf(p.t).toFixed(1)},${yOf(v).toFixed(1)}`);
        shown += 1;
        last = p;
      }
      flush();
      if (last) el("circle", { cx: xOf(last.t), cy: yOf(last[s.key]), r: 3, class: `series-${s.key}` }, group);
      group.setAttribute("data-points", shown);
      group.setAttribute("data-last", last ? String(last[s.key]) : "");
      if (series.length > 1) {
        const legend = el("g", { class: "legend" }, svg);
        const lx = x1 - (series.length - index) * 62;
        el("rect", { x: lx, y: y1 - 4, width: 10, height: 10, class: `series-${s.key}` }, legend);
        el("text", { x: lx + 14, y: y1 + 5 }, legend, s.label);
      }
    });
    svg.setAttribute("data-points", String(points.length));
    if (!values.length) empty(svg, options.waiting || "waiting for traffic…");
  }

  /** Stacked bars: each route's requests by status class. */
  function statusChart(svg, routes) {
    clear(svg);
    const shown = routes.filter((r) => r.requests > 0 || r.configured);
    if (!shown.length) return empty(svg, "no routes");
    const rowsFit = Math.floor((H - 30) / 22);
    const rows = shown.slice(0, rowsFit);
    const rowH = Math.min(28, (H - 30) / rows.length);
    const left = 130, right = W - 60;
    const most = Math.max(1, ...rows.map((r) => r.requests));
    rows.forEach((route, i) => {
      const y = 4 + i * rowH;
      const attrs = { class: "route", "data-route": route.name, "data-total": route.requests };
      for (const cls of CLASSES) attrs[`data-${cls}`] = route.status[cls] || 0;
      const g = el("g", attrs, svg);
      const label = route.name.length > 18 ? route.name.slice(0, 17) + "…" : route.name;
      el("text", { x: left - 8, y: y + rowH / 2 + 4, "text-anchor": "end", class: "route-name" }, g, label);
      let x = left;
      for (const cls of CLASSES) {
        const n = route.status[cls] || 0;
        if (!n) continue;
        const w = ((right - left) * n) / most;
        const bar = el("rect", { x, y, width: Math.max(w, 1), height: rowH - 6, class: `s${cls}` }, g);
        el("title", {}, bar, `${route.name}: ${n} ${cls}`);
        x += w;
      }
      el("text", { x: x + 6, y: y + rowH / 2 + 4 }, g, count(route.requests));
    });
    if (shown.length > rows.length) {
      el("text", { x: 8, y: H - 24 }, svg, `+${shown.length - rows.length} more routes`);
    }
    const legend = el("g", { class: "legend" }, svg);
    CLASSES.forEach((cls, i) => {
      el("rect", { x: left + i * 70, y: H - 14, width: 10, height: 10, class: `s${cls}` }, legend);
      el("text", { x: left + i * 70 + 14, y: H - 5 }, legend, cls);
    });
  }

  /** One row per endpoint: a state light, its health (with active checks), address and counters. */
  function upstreamChart(svg, upstreams, now) {
    clear(svg);
    const rows = [];
    for (const u of upstreams) {
      rows.push({ heading: `${u.name} (${u.balancer})` });
      for (const e of u.endpoints) rows.push({ upstream: u.name, endpoint: e });
    }
    if (!rows.length) return empty(svg, "no upstreams");
    const rowH = Math.max(16, Math.min(26, H / rows.length));
    rows.slice(0, Math.floor(H / rowH)).forEach((row, i) => {
      const y = i * rowH;
      if (row.heading) {
        el("text", { x: 4, y: y + rowH - 8, class: "endpoint-name" }, svg, row.heading);
        return;
      }
      const e = row.endpoint;
      const failures = Object.values(e.failures).reduce((a, b) => a + b, 0);
      const g = el("g", {
        class: "endpoint",
        "data-upstream": row.upstream,
        "data-address": e.address,
        "data-state": e.state,
        "data-health": e.health ? e.health.state : "",
        "data-failures": failures,
      }, svg);
      el("rect", { x: 16, y: y + 4, width: 64, height: rowH - 8, rx: 4, class: `state state-${e.state}` }, g);
      el("text", { x: 48, y: y + rowH / 2 + 4, "text-anchor": "middle", class: "state-word" }, g, e.state);
      el("text", { x: 90, y: y + rowH / 2 + 4, class: "endpoint-name" }, g, e.address);
      let detail = "";
      if (e.health) {
        const h = e.health;
        el("rect", { x: 230, y: y + 4, width: 74, height: rowH - 8, rx: 4, class: `state health-${h.state}` }, g);
        el("text", { x: 267, y: y + rowH / 2 + 4, "text-anchor": "middle", class: "state-word" }, g, h.state);
        detail = `checks ${count(h.checks.success)} ok / ${count(h.checks.failure)} failed`;
        if (h.state !== "healthy" && h.last_problem) detail += ` (${h.last_problem})`;
        detail += " · ";
      }
      detail += `requests ${count(e.requests)} · failures ${count(failures)} · opened ${e.connects}`;
      detail += ` · idle ${e.idle}`;
      if (e.last_failure) {
        detail += ` · last ${e.last_failure.kind} ${duration(Math.max(0, now - e.last_failure.at))} ago`;
      }
      el("text", { x: e.health ? 314 : 240, y: y + rowH / 2 + 4 }, g, detail);
    });
  }

  // -- the page ------------------------------------------------------------------------------

  function tile(id, text, value) {
    const node = $(id);
    node.textContent = text;
    node.setAttribute("data-value", value == null ? "" : String(value));
  }

  function render(doc) {
    const latest = points[points.length - 1];
    const totals = doc.totals;
    const recent = latest.totals.buckets.map((n, i) => n - windowStart.buckets[i]);
    const [p50, p90, p99] = [0.5, 0.9, 0.99].map((q) => quantile(doc.buckets, recent, q));
    tile("total-requests", count(totals.requests), totals.requests);
    tile("total-rate", `${rate(latest.rate)}/s`, latest.rate);
    tile("total-latency", `${ms(p50)} / ${ms(p90)} / ${ms(p99)} ms`, p99);
    tile("total-5xx", count(totals.status["5xx"] || 0), totals.status["5xx"] || 0);
    tile("total-cache", percent(doc.cache.ratio), doc.cache.ratio);
    tile("total-limited", count(doc.rate_limit.rejected), doc.rate_limit.rejected);
    tile("total-connections", count(doc.gauges.connections_active), doc.gauges.connections_active);
    tile("total-bytes", `${bytes(doc.bytes.received)} / ${bytes(doc.bytes.sent)}`, doc.bytes.sent);
    $("total-cache").setAttribute("data-hits", doc.cache.hits);
    $("total-cache").setAttribute("data-misses", doc.cache.misses);
    $("total-limited").setAttribute("data-allowed", doc.rate_limit.allowed);

    lineChart($("chart-rate"), [{ key: "rate", label: "req/s" }], { format: rate });
    lineChart(
      $("chart-latency"),
      [
        { key: "p50", label: "p50" },
        { key: "p90", label: "p90" },
        { key: "p99", label: "p99" },
      ],
      { format: ms },
    );
    statusChart($("chart-status"), doc.routes);
    upstreamChart($("chart-upstreams"), doc.upstreams, doc.time);
    lineChart($("chart-cache"), [{ key: "ratio", label: "hit %" }], {
      format: (v) => (v * 100).toFixed(0),
      max: 1,
      waiting: doc.cache.hits + doc.cache.misses ? "no cache lookups lately" : "no cache lookups yet",
    });
    lineChart($("chart-limits"), [{ key: "rejected", label: "rejected/s" }], {
      format: rate,
      waiting: "no rate-limited routes yet",
    });

    const workers = doc.workers === 1 ? "1 worker" : `${doc.workers} workers`;
    const clock = new Date(doc.time * 1000).toLocaleTimeString();
    $("meta").textContent =
      `config version ${doc.config_version} · ${workers} · up ${duration(doc.uptime)} · updated ${clock}`;
    main.setAttribute("data-requests", totals.requests);
    main.setAttribute("data-time", doc.time);
  }

  // -- the egress panel (GET /egress; hidden while the egress listener is off) ------------------

  /** A table row of text cells (textContent only: host names and reasons come from the app). */
  function row(tbody, cells, attrs) {
    const tr = document.createElement("tr");
    for (const [key, value] of Object.entries(attrs || {})) tr.setAttribute(key, String(value));
    for (const cell of cells) {
      const td = document.createElement("td");
      const [text, cls] = Array.isArray(cell) ? cell : [cell, ""];
      td.textContent = text == null ? "–" : String(text);
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
    return tr;
  }
  function rows(id, items, columns, draw) {
    const tbody = $(id).querySelector("tbody");
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    if (!items.length) row(tbody, [["none", "empty"]]).firstChild.colSpan = columns;
    items.forEach((item) => draw(tbody, item));
  }

  function renderEgress(doc, now) {
    const panel = $("egress");
    if (!doc) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    const workers = doc.workers === 1 ? "1 worker" : `${doc.workers} workers`;
    $("egress-meta").textContent = `listener ${doc.listener} · ${workers} · default ${doc.default_action}`;
    const others = doc.rules.filter((r) => r.allowed || r.denied);
    rows("egress-destinations", [...doc.destinations, ...others], 5, (tbody, d) => {
      const name = d.name || d.rule;
      const open = d.max_connections ? `${d.open} / ${d.max_connections}` : "";
      row(tbody, [name, d.host || "(rule)", [count(d.allowed), "num"], [count(d.denied), "num"], [open, "num"]], {
        class: d.denied ? "destination denied" : "destination",
        "data-destination": name,
        "data-allowed": d.allowed,
        "data-denied": d.denied,
        "data-open": d.open == null ? "" : d.open,
      });
    });
    rows("egress-credentials", doc.credentials, 6, (tbody, c) => {
      const refreshed = c.last_refresh ? `${duration(Math.max(0, now - c.last_refresh))} ago` : "never";
      const expires = c.expires_in == null ? "" : duration(c.expires_in);
      const tr = row(tbody, [c.destination, c.name, c.kind, [c.state, `cred-${c.state}`], refreshed, expires], {
        class: "credential",
        "data-destination": c.destination,
        "data-state": c.state,
      });
      if (c.problem) tr.title = c.problem;
    });
    rows("egress-denials", doc.recent_denials.slice(0, 15), 5, (tbody, d) => {
      const clock = new Date(d.time * 1000).toLocaleTimeString();
      row(tbody, [clock, d.destination || "(unreadable)", d.rule || "–", [d.status, "num"], [d.reason, "reason"]], {
        class: "denial",
        "data-request-id": d.request_id,
        "data-rule": d.rule,
        "data-status": d.status,
      });
    });
    main.setAttribute("data-egress-polls", Number(main.dataset.egressPolls || 0) + 1);
  }

  async function pollEgress(now) {
    try {
      const response = await fetch("egress", { cache: "no-store", signal: AbortSignal.timeout(5000) });
      if (response.status === 404) return renderEgress(null, now); // no egress section
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      renderEgress(await response.json(), now);
    } catch (error) {
      $("egress-meta").textContent = `(not updated: ${error && error.message ? error.message : error})`;
    }
  }

  function showError(message) {
    const banner = $("banner");
    banner.textContent =
      `Admin API unreachable (${message}); retrying every ${interval / 1000}s. ` +
      "The numbers shown are the last ones received.";
    banner.hidden = false;
    main.setAttribute("data-error", message);
  }

  async function poll() {
    try {
      const response = await fetch("stats", { cache: "no-store", signal: AbortSignal.timeout(5000) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const doc = await response.json();
      const point = derive(doc, previous);
      if (!points.length || point.base.requests === 0) windowStart = point.base;
      points.push(point);
      if (points.length > HISTORY) windowStart = points.shift().totals;
      previous = doc;
      polls += 1;
      render(doc);
      await pollEgress(doc.time);
      $("banner").hidden = true;
      main.removeAttribute("data-error");
      main.setAttribute("data-polls", polls);
    } catch (error) {
      showError(error && error.message ? error.message : String(error));
    } finally {
      setTimeout(poll, interval);
    }
  }

  $("footer").textContent = `polling /stats every ${interval / 1000}s`;
  poll();
})();
