// The operations center's pages: plain script, served by the service itself
// (the towns' and the operations center's networks reach no internet).
"use strict";
const netwatch = (() => {
  const STATUS = {
    ok: "正常 OK", degraded: "劣化 degraded", backup: "予備回線 on backup",
    all_down: "全断 all down", unknown: "不明 unknown", offline: "オフライン offline",
  };
  const DRILL = {
    running: "訓練中 drill running", stale_lock: "古いロック stale lock", passed: "合格 passed",
    failed: "不合格 failed", aborted: "中止 aborted", refused: "拒否 refused",
  };
  const towns = new Map();
  let staleAfter = 20, broker = { connected: true };

  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    for (const kid of kids) e.append(kid instanceof Node ? kid : document.createTextNode(kid ?? ""));
    return e;
  };
  const ms = (s) => s == null ? "–" : `${(s * 1000).toFixed(s < 0.01 ? 1 : 0)} ms`;
  const pct = (r) => r == null ? "–" : `${(r * 100).toFixed(r < 0.01 ? 2 : 1)} %`;
  const dur = (s) => {
    if (s == null) return "–";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? `${h} h ${m} min` : m ? `${m} min ${r} s` : `${r} s`;
  };
  const since = (iso) => iso == null ? null : (Date.now() - Date.parse(iso)) / 1000;
  const local = (iso) => iso == null ? "–" : new Date(iso).toLocaleString("ja-JP", { hour12: false });
  const hhmm = (iso) => new Date(iso).toLocaleTimeString("ja-JP", { hour: "2-digit", minute: "2-digit", hour12: false });
  // "Tue 02:00": a weekly schedule reads best by its weekday.
  const weekday = (iso) => new Date(iso).toLocaleString("en-GB", { weekday: "short", hour: "2-digit", minute: "2-digit", hour12: false }).replace(",", "");
  const badge = (status) => el("span", { class: `status ${status}`, "data-status": status }, STATUS[status] || status);
  const pathCell = (p) => p == null ? el("td", {}, "–") : el("td", {},
    el("span", { class: `state-${p.state}` }, p.state), el("br"),
    el("span", { class: "muted" }, `${pct(p.loss_ratio)} · ${ms(p.rtt_p50_s)} / ${ms(p.rtt_p95_s)} · ±${ms(p.jitter_s)}`));

  function tick() {
    const c = document.getElementById("clock");
    if (c) c.textContent = new Date().toLocaleString("ja-JP", { hour12: false });
    document.querySelectorAll("[data-backup-since]").forEach((e) => { e.textContent = dur(since(e.dataset.backupSince)); });
  }

  function banners() {
    const b = document.getElementById("broker");
    b.hidden = broker.connected;
    b.textContent = broker.connected ? "" : `ブローカー未接続 — broker unreachable${broker.last_error ? ` (${broker.last_error})` : ""}: figures are the last known and may be stale`;
    const bad = [...towns.values()].filter((t) => t.alarm);
    const banner = document.getElementById("banner");
    banner.hidden = bad.length === 0;
    banner.classList.toggle("warn", bad.every((t) => t.status === "backup"));
    banner.textContent = bad.map((t) => `${t.name} ${t.name_en}: ${STATUS[t.status]}`).join(" · ");
  }

  // A maintenance hold: the agent keeps the town on one path until it expires.
  const holdBadge = (h) => h == null ? "" : el("span", { class: "hold", "data-hold": h.path, title: `by ${h.by} since ${local(h.since)}` },
    `保守固定 held on ${h.path} until ${hhmm(h.until)}${h.reason ? ` (${h.reason})` : ""}`);
  const drillBadge = (d) => el("span", { class: `drill ${d.phase}`, "data-drill": d.phase }, DRILL[d.phase] || d.phase);
  const outcome = (d) => `${local(d.ended ?? d.started)}; outage ${ms(d.outage_s)}`;
  function drillCell(t) {
    const d = t.drill, kids = [];
    if (d == null) kids.push(el("span", { class: "muted" }, "no drill yet"));
    else if (d.phase === "running" || d.phase === "stale_lock") {
      kids.push(drillBadge(d), ` since ${local(d.started)}`, el("br"),
        el("span", { class: "muted lock" }, `lock: ${d.drill_id.slice(0, 8)} (${d.fault})${d.phase === "stale_lock" ? " — no word for hours: check the drill's host" : ""}`));
      if (d.previous) kids.push(el("br"), el("span", { class: "muted" }, `last: ${DRILL[d.previous.status] || d.previous.status} ${outcome(d.previous)}`));
    } else kids.push(drillBadge(d), " ", outcome(d), d.reason ? el("span", { class: "muted" }, ` (${d.reason})`) : "");
    kids.push(el("br"), el("span", { class: "muted next-drill" }, t.next_drill ? `next: ${weekday(t.next_drill)}` : "next: not scheduled"));
    return el("td", { class: "drill-cell", "data-drill": d ? d.phase : "" }, ...kids);
  }

  function row(t) {
    const primary = Object.entries(t.paths).find(([, p]) => p.role === "primary");
    const backup = Object.entries(t.paths).find(([, p]) => p.role === "backup");
    const last = t.last_failover;
    const onBackup = t.backup_since ? el("span", { "data-backup-since": t.backup_since }, dur(since(t.backup_since))) : "–";
    return el("tr", { id: `town-${t.id}`, class: t.alarm ? "alarm" : "", "data-status": t.status, "data-active": t.active_path ?? "" },
      el("td", {}, el("a", { href: `/towns/${t.id}` }, t.name), " ", el("span", { class: "en" }, t.name_en)),
      el("td", {}, badge(t.status), t.stale && t.status !== "unknown" ? el("span", { class: "muted" }, " stale") : "", t.hold ? el("br") : "", holdBadge(t.hold)),
      el("td", { class: "active" }, t.active_path ?? "–"),
      pathCell(primary && primary[1]),
      pathCell(backup && backup[1]),
      el("td", {}, onBackup),
      el("td", {}, last ? `${local(last.at)} ${last.from ?? "–"} → ${last.to} (${last.kind}; outage ${ms(last.outage_s)})` : "–"),
      drillCell(t));
  }

  function renderFleet() {
    const body = document.querySelector("#fleet tbody");
    const sorted = [...towns.values()].sort((a, b) => a.cutover_week - b.cutover_week || a.id.localeCompare(b.id));
    body.replaceChildren(...sorted.map(row));
    document.getElementById("stale").textContent = staleAfter;
    banners();
    tick();
  }

  // Live updates: the page starts from the fleet it was served with, then
  // follows server-sent events; if the stream breaks, it polls until it is back.
  function live(onTown) {
    const initial = document.getElementById("initial");
    if (initial) {
      const fleet = JSON.parse(initial.textContent);
      staleAfter = fleet.stale_after_s; broker = fleet.broker;
      fleet.towns.forEach(onTown);
    }
    let poller = null;
    const poll = async () => {
      try {
        const fleet = await (await fetch("/api/v1/fleet")).json();
        staleAfter = fleet.stale_after_s; broker = fleet.broker;
        fleet.towns.forEach(onTown);
      } catch (e) { broker = { connected: false, last_error: "operations center unreachable" }; banners(); }
    };
    const source = new EventSource("/api/v1/stream");
    source.addEventListener("town", (e) => onTown(JSON.parse(e.data)));
    source.addEventListener("broker", (e) => { broker = JSON.parse(e.data); banners(); });
    source.onerror = () => { if (!poller) poller = setInterval(poll, 2000); };
    source.onopen = () => { if (poller) { clearInterval(poller); poller = null; } };
    if (!initial) poll();
    setInterval(tick, 1000);
  }

  function fleetPage() {
    live((t) => { towns.set(t.id, t); renderFleet(); });
  }

  // -- one town ---------------------------------------------------------------
  function chart(target, series, { unit, max }) {
    const W = 900, H = 180, L = 48, B = 22, T = 8;
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const all = series.flatMap((s) => s.points);
    if (!all.length) { target.replaceChildren(el("p", { class: "muted" }, "no samples yet")); return; }
    const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]), t0 + 60);
    const top = max ?? Math.max(...all.map((p) => p[1]), 1e-9) * 1.15;
    const x = (t) => L + (W - L - 8) * (t - t0) / (t1 - t0), y = (v) => H - B - (H - B - T) * Math.min(v, top) / top;
    const add = (tag, attrs, text) => { const e = document.createElementNS(svgNS, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text) e.textContent = text; svg.append(e); };
    add("line", { x1: L, y1: H - B, x2: W - 8, y2: H - B, class: "axis" });
    add("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" });
    add("text", { x: 2, y: T + 10 }, unit(top));
    add("text", { x: 2, y: H - B }, unit(0));
    add("text", { x: L, y: H - 4 }, new Date(t0).toLocaleTimeString("ja-JP", { hour12: false }));
    add("text", { x: W - 60, y: H - 4 }, new Date(t1).toLocaleTimeString("ja-JP", { hour12: false }));
    series.forEach((s, i) => {
      if (!s.points.length) return;
      add("polyline", { fill: "none", stroke: s.color, "stroke-width": 1.6, points: s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ") });
      add("text", { x: L + 8 + i * 150, y: T + 12, fill: s.color }, s.label);
    });
    target.replaceChildren(svg);
  }

  // The town's last drill in full: what the drill's report says in brief.
  function drillDetails(t) {
    const d = t.drill;
    const next = el("p", { class: "muted next-drill" }, t.next_drill ? `next: ${weekday(t.next_drill)} (${local(t.next_drill)})` : "next: not scheduled");
    if (d == null) return el("div", {}, el("p", { class: "muted" }, "no drill yet"), next);
    const yes = (b) => b == null ? "–" : b ? "passed" : "failed";
    const item = (k, v) => [el("dt", {}, k), el("dd", {}, v)];
    return el("div", {}, el("dl", { class: "summary", id: "drill-details", "data-drill": d.phase },
      ...item("結果 Result", drillBadge(d)),
      ...(d.reason ? item("理由 Reason", d.reason) : []),
      ...item("開始 Started", local(d.started)),
      ...item("終了 Ended", local(d.ended)),
      ...item("障害 Fault", d.fault),
      ...item("切替の断 Outage", ms(d.outage_s)),
      ...item("切戻しの断 Failback outage", ms(d.failback_outage_s)),
      ...item("検知 Detection", ms(d.detection_s)),
      ...item("負荷試験 Load test", yes(d.load_passed)),
      ...item("報告書 Report", d.report ?? "–"),
      ...item("ID", d.drill_id)), next);
  }

  async function townPage() {
    const id = location.pathname.split("/").pop();
    const colors = ["#1565c0", "#ef6c00", "#6a1b9a", "#2e7d32"];
    const summary = (t) => {
      document.getElementById("town-name").textContent = `${t.name} ${t.name_en}`;
      document.title = `${t.name} — netwatch`;
      const dl = el("dl", { class: "summary", id: "town", "data-status": t.status, "data-active": t.active_path ?? "" },
        el("dt", {}, "状態 Status"), el("dd", {}, badge(t.status), t.hold ? " " : "", holdBadge(t.hold)),
        el("dt", {}, "使用中の経路 Path in use"), el("dd", { class: "active" }, t.active_path ?? "–"),
        ...Object.entries(t.paths).flatMap(([name, p]) => [el("dt", {}, `${name} (${p.role})`), el("dd", {}, el("span", { class: `state-${p.state}` }, p.state), ` · loss ${pct(p.loss_ratio)} · RTT ${ms(p.rtt_p50_s)} / ${ms(p.rtt_p95_s)}`)]),
        el("dt", {}, "予備回線の時間 On backup"), el("dd", {}, t.backup_since ? el("span", { "data-backup-since": t.backup_since }, "") : "–"),
        el("dt", {}, "切替回数 Failovers"), el("dd", {}, String(t.failovers_total)),
        el("dt", {}, "最終受信 Last message"), el("dd", {}, t.last_message_age_s == null ? "never" : `${dur(t.last_message_age_s)} ago`));
      document.getElementById("summary").replaceChildren(dl);
      document.getElementById("drill").replaceChildren(drillDetails(t));
      towns.clear(); towns.set(t.id, t); banners(); tick();
    };
    let cursor = null;
    const timeline = document.getElementById("timeline"), more = document.getElementById("more");
    const loadEvents = async (reset) => {
      const q = new URLSearchParams({ town: id, limit: "50" });
      if (!reset && cursor) q.set("cursor", cursor);
      const page = await (await fetch(`/api/v1/events?${q}`)).json();
      const items = page.events.map((e) => el("li", { "data-event": e.event },
        el("span", { class: "when" }, local(e.ts)), el("span", { class: "kind" }, e.event),
        `${e.from_path || e.path || ""}${e.to_path ? ` → ${e.to_path}` : ""} ${e.reason}${e.duration_s != null ? ` (${ms(e.duration_s)})` : ""}`));
      if (reset) timeline.replaceChildren(...items); else timeline.append(...items);
      cursor = page.next_cursor; more.hidden = !cursor;
    };
    more.onclick = () => loadEvents(false);
    const loadCharts = async () => {
      const data = await (await fetch(`/api/v1/towns/${id}/samples?hours=6`)).json();
      const byPath = new Map();
      for (const s of data.samples) { if (!byPath.has(s.path)) byPath.set(s.path, []); byPath.get(s.path).push(s); }
      const rtt = [], loss = [];
      [...byPath.entries()].forEach(([path, rows], i) => {
        rtt.push({ label: `${path} p50`, color: colors[i * 2 % 4], points: rows.filter((r) => r.rtt_p50_s != null).map((r) => [Date.parse(r.ts), r.rtt_p50_s]) });
        rtt.push({ label: `${path} p95`, color: colors[(i * 2 + 1) % 4], points: rows.filter((r) => r.rtt_p95_s != null).map((r) => [Date.parse(r.ts), r.rtt_p95_s]) });
        loss.push({ label: path, color: colors[i * 2 % 4], points: rows.filter((r) => r.loss_ratio != null).map((r) => [Date.parse(r.ts), r.loss_ratio]) });
      });
      chart(document.getElementById("rtt-chart"), rtt, { unit: (v) => `${(v * 1000).toFixed(0)} ms` });
      chart(document.getElementById("loss-chart"), loss, { unit: (v) => `${(v * 100).toFixed(0)} %`, max: null });
    };
    live((t) => { if (t.id === id) summary(t); });
    await loadEvents(true);
    await loadCharts();
    setInterval(() => loadEvents(true), 5000);
    setInterval(loadCharts, 30000);
  }

  return { fleetPage, townPage };
})();
