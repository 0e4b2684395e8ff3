// Planning: run coverage for a region, show gaps / uncovered villages by priority, proposals,
// the per-region table (在线率, 完好率, covered share) with a choropleth, and exports.
import L from "leaflet";
import { get, hasPath, request } from "./api.js";
import { $, clear, download, h } from "./dom.js";
import { detailText, errorText } from "./errors.js";
import { t } from "./i18n.js";
import { COLORS, app, regionLayer, regionsLoaded, toMap, toast } from "./main.js";

const RUNS = "/api/v1/coverage/runs";
let layers = null;
let run = null;

function ramp(x) {
  // 0 → pale yellow, 1 → deep red
  const v = Math.max(0, Math.min(1, x));
  const r = Math.round(255 - 60 * v);
  const g = Math.round(220 - 190 * v);
  const b = Math.round(120 - 90 * v);
  return `rgb(${r},${g},${b})`;
}

function share(x) {
  return x == null || Number.isNaN(Number(x)) ? "–" : `${(Number(x) * 100).toFixed(1)}%`;
}

// 在线率/完好率 of a region where no camera has been probed yet are unknown, not 0 %.
function probedShare(k, key) {
  if (!k || !k.registered || (k.unknown ?? 0) >= k.registered) return "–";
  return share(k[key]);
}

// What "covered" means for a county: urban counties count grid cells, rural ones villages
// (农村覆盖、城市加密); a rural county has no cells, so its cell share is empty.
function coverShare(r) {
  if (!r) return null;
  if (r.zone === "rural" || (!r.cells && r.villages)) {
    return r.villages ? Number(r.villages_covered || 0) / Number(r.villages) : null;
  }
  return r.covered_share;
}

const RAMP_STEPS = [0, 0.25, 0.5, 0.75, 1];

// The colours the map uses, with their meaning: gap priority and the coverage choropleth.
function legend() {
  const bar = (label, colour) =>
    h(
      "div",
      { class: "ramp" },
      h("span", { text: label }),
      h("span", { class: "muted", text: t("low") }),
      RAMP_STEPS.map((v) => {
        const swatch = h("i", { class: "swatch" });
        swatch.style.background = colour(v); // CSSOM: the CSP allows no inline style attributes
        return swatch;
      }),
      h("span", { class: "muted", text: t("high") }),
    );
  return h(
    "div",
    { id: "plan-legend", class: "legend plan-legend" },
    bar(t("legend_gaps"), (v) => ramp(v)),
    bar(t("legend_share"), (v) => ramp(1 - v)),
    h("p", { class: "hint", text: `${t("not_probed_dash")} · ${t("village_share_note")}` }),
  );
}

function geo(fc, style) {
  return L.geoJSON(fc, {
    coordsToLatLng: (c) => toMap(c[0], c[1]),
    ...style,
  });
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function runCoverage(region, proposals) {
  const msg = $("#plan-status");
  if (!(await hasPath(RUNS))) {
    msg.textContent = t("coverage_unavailable");
    msg.className = "error";
    return;
  }
  msg.className = "";
  const body = { region, proposals }; // 0 asks for none (absent would mean the default 200)
  try {
    run = (await request(RUNS, { method: "POST", body })).data;
    while (run.status === "queued" || run.status === "running") {
      msg.textContent = `${t("progress")}: ${Math.round((run.progress || 0) * 100)}%`;
      await sleep(500);
      run = await get(`${RUNS}/${encodeURIComponent(run.id)}`);
    }
    if (run.status !== "done") {
      const why = detailText(run.error);
      throw new Error(`${t("run_coverage")}: ${t("failed")}${why ? ` · ${why}` : ""}`);
    }
    msg.textContent = `${t("progress")}: 100%`;
    await showRun(region);
  } catch (err) {
    msg.textContent = errorText(err);
    msg.className = "error";
  }
}

// A province run holds tens of thousands of gaps: the map asks for the highest-priority ones
// in the current view (the API sorts by priority), and asks again when the view moves.
const GAPS_IN_VIEW = 2000;
let gapLayer = null;
let gapsBase = null;
let gapsSeq = 0;

function viewBbox() {
  const b = app.map.getBounds();
  const c = (v, lo, hi) => Math.min(hi, Math.max(lo, v)).toFixed(5);
  return [c(b.getWest(), -180, 180), c(b.getSouth(), -90, 90), c(b.getEast(), -180, 180), c(b.getNorth(), -90, 90)].join(",");
}

async function drawGaps(withBbox) {
  if (!gapsBase || !layers) return;
  const seq = ++gapsSeq;
  const q = new URLSearchParams({ limit: String(GAPS_IN_VIEW) });
  if (withBbox) q.set("bbox", viewBbox());
  const gaps = await get(`${gapsBase}/gaps?${q}`);
  if (seq !== gapsSeq || !layers) return; // a newer view answered first
  const max = Math.max(1e-9, ...gaps.features.map((f) => Number(f.properties.priority) || 0));
  if (gapLayer) gapLayer.remove();
  gapLayer = geo(gaps, {
    style: (f) => ({ color: "#a4161a", weight: 1, fillColor: ramp((f.properties.priority || 0) / max), fillOpacity: 0.55, className: "gap" }),
    pointToLayer: (f, latlng) =>
      L.circleMarker(latlng, {
        radius: f.properties.kind === "village" ? 6 : 4,
        color: "#a4161a",
        weight: 1,
        fillColor: ramp((f.properties.priority || 0) / max),
        fillOpacity: 0.9,
        className: "gap",
      }),
    onEachFeature: (f, layer) => {
      const p = f.properties;
      const what = p.kind === "village" ? t("villages") : t("gaps");
      layer.bindTooltip(h("span", { text: `${what} ${p.name ?? ""} · ${p.region_code ?? ""} · ${Math.round(p.area_m2 || 0)} m²` }));
    },
  }).addTo(layers);
  gapLayer.bringToBack();
  $("#map").dataset.gaps = String(gaps.features.length);
  const note = $("#plan-gaps");
  if (note) {
    const n = gaps.features.length;
    note.textContent = t(n >= GAPS_IN_VIEW ? "gaps_top" : "gaps_shown", { n });
  }
  return gapLayer;
}

async function showRun(region) {
  const base = `${RUNS}/${encodeURIComponent(run.id)}`;
  if (layers) layers.remove();
  layers = L.layerGroup().addTo(app.map);
  gapLayer = null;
  gapsBase = base;
  const first = await drawGaps(false); // the run's highest-priority gaps, to frame the view
  const b = first ? first.getBounds() : null;
  if (b && b.isValid()) app.map.fitBounds(b);
  const props = await get(`${base}/proposals`);
  geo(props, {
    pointToLayer: (f, latlng) =>
      L.marker(latlng, {
        icon: L.divIcon({
          html: h("span", { class: "proposal", text: f.properties.rank }),
          className: "proposal-icon",
          iconSize: [20, 20],
        }),
      }),
    onEachFeature: (f, layer) =>
      layer.bindTooltip(h("span", { text: `#${f.properties.rank} +${f.properties.newly_covered} → ${share(f.properties.covered_share_after)}` })),
  }).addTo(layers);
  await regionTable(base, region);
}

export function watchGaps() {
  let timer = null;
  app.map.on("moveend", () => {
    clearTimeout(timer);
    timer = setTimeout(() => drawGaps(true).catch(() => {}), 250);
  });
}

// The per-region table: 在线率 / 完好率 from /kpis (always), covered share once a run is done.
async function regionTable(base, region) {
  let rows = [];
  if (base) {
    const raw = await get(`${base}/summary`);
    rows = Array.isArray(raw) ? raw : raw.items || raw.rows || [];
  }
  const kpis = new Map();
  try {
    const k = await get(`/api/v1/kpis?region=${encodeURIComponent(region)}&group=6`);
    for (const r of k.items || []) kpis.set(String(r.region), r);
  } catch {
    /* KPIs are optional in the table */
  }
  const byCode = new Map(rows.map((r) => [String(r.region_code), r]));
  // Planners read county names, not codes: take them from the boundary layer when it is drawn.
  const names = new Map();
  await regionsLoaded();
  regionLayer()?.eachLayer((l) => names.set(String(l.feature?.properties?.adcode), l.feature?.properties?.name));
  const codes = [...new Set([...byCode.keys(), ...kpis.keys()])].sort();
  const table = h(
    "table",
    { id: "region-table" },
    h("thead", {}, h("tr", {}, [t("region"), t("online_rate"), t("intact_rate"), t("covered_share")].map((c) => h("th", { text: c })))),
    h(
      "tbody",
      {},
      codes.map((code) => {
        const k = kpis.get(code) || {};
        const r = byCode.get(code) || {};
        return h(
          "tr",
          { "data-region": code, class: base ? "run" : "" },
          h("td", { text: `${r.name ?? names.get(code) ?? ""} ${code}`.trim() }),
          h("td", { class: "online-rate", text: probedShare(k, "online_rate") }),
          h("td", { class: "intact-rate", text: probedShare(k, "intact_rate") }),
          h("td", { class: "covered-share", "data-zone": r.zone || null, text: share(coverShare(byCode.get(code))) }),
        );
      }),
    ),
  );
  clear($("#plan-table")).append(table);
  const regions = regionLayer();
  if (regions) {
    regions.setStyle((f) => {
      const r = byCode.get(String(f.properties.adcode));
      return r
        ? { color: "#5a6b7d", weight: 1, fillColor: ramp(1 - (Number(coverShare(r)) || 0)), fillOpacity: 0.5 }
        : { color: "#5a6b7d", weight: 1, fillColor: "#eef1f4", fillOpacity: 0.6 };
    });
  }
}

// An export that fails says why, in the page's language (not only in the console).
async function reported(fn) {
  try {
    await fn();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function exportCsv() {
  if (!run) return;
  const res = await request(`${RUNS}/${encodeURIComponent(run.id)}/summary?format=csv`, { raw: true });
  download(`coverage-${run.id}.csv`, await res.blob());
}

async function exportGeojson() {
  if (!run) return;
  // every gap of the run (up to the API's cap), not only those drawn in the view
  const all = await get(`${RUNS}/${encodeURIComponent(run.id)}/gaps?limit=100000`);
  download(`gaps-${run.id}.geojson`, new Blob([JSON.stringify(all)], { type: "application/geo+json" }));
}

// The current view drawn to a canvas from our own layers (tiles from other origins cannot be
// read back into a canvas, so the PNG shows boundaries, gaps, proposals and cameras).
export function exportPng() {
  const map = app.map;
  const size = map.getSize();
  const canvas = h("canvas", { width: size.x, height: size.y });
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#f6f7f9";
  ctx.fillRect(0, 0, size.x, size.y);
  const pt = (ll) => map.latLngToContainerPoint(ll);
  const ring = (lls) => {
    lls.forEach((ll, i) => {
      const p = pt(ll);
      if (i === 0) ctx.moveTo(p.x, p.y);
      else ctx.lineTo(p.x, p.y);
    });
    ctx.closePath();
  };
  const polys = (lls) => {
    if (!Array.isArray(lls) || !lls.length) return;
    if (lls[0] instanceof L.LatLng) ring(lls);
    else lls.forEach(polys);
  };
  map.eachLayer((layer) => {
    if (layer instanceof L.Polygon) {
      ctx.beginPath();
      polys(layer.getLatLngs());
      ctx.fillStyle = layer.options.fillColor || layer.options.color || "#888";
      ctx.globalAlpha = layer.options.fillOpacity ?? 0.3;
      ctx.fill("evenodd");
      ctx.globalAlpha = 1;
      ctx.strokeStyle = layer.options.color || "#555";
      ctx.lineWidth = layer.options.weight || 1;
      ctx.stroke();
    } else if (layer instanceof L.CircleMarker) {
      const p = pt(layer.getLatLng());
      ctx.beginPath();
      ctx.arc(p.x, p.y, layer.getRadius(), 0, 2 * Math.PI);
      ctx.fillStyle = layer.options.fillColor || "#c00";
      ctx.fill();
    } else if (layer instanceof L.Marker) {
      const p = pt(layer.getLatLng());
      const el = layer.options.icon && layer.options.icon.options.html;
      const cls = el && el.className ? String(el.className) : "";
      const st = (cls.match(/st-(\w+)/) || [])[1];
      ctx.beginPath();
      if (el && el.dataset && el.dataset.count) {
        ctx.arc(p.x, p.y, 14, 0, 2 * Math.PI);
        ctx.fillStyle = "#1f6feb";
        ctx.fill();
        ctx.fillStyle = "#fff";
        ctx.font = "11px sans-serif";
        ctx.textAlign = "center";
        ctx.fillText(el.dataset.count, p.x, p.y + 4);
      } else {
        ctx.arc(p.x, p.y, 5, 0, 2 * Math.PI);
        ctx.fillStyle = COLORS[st] || "#d9480f";
        ctx.fill();
      }
    }
  });
  canvas.toBlob((blob) => download("camreg-map.png", blob), "image/png");
}

export function initPlanner() {
  const box = $("#plan");
  if (!box) return;
  const scope = app.me.scope || "14";
  const region = h("input", { id: "plan-region", value: scope, size: 7, inputmode: "numeric" });
  const proposals = h("input", { id: "plan-proposals", type: "number", min: 0, max: 500, value: 20, size: 4 });
  const may = app.me.can.run_coverage;
  clear(box).append(
    h("h2", { text: t("plan") }),
    may &&
    h(
      "form",
      {
        class: "row",
        onsubmit: (ev) => {
          ev.preventDefault();
          runCoverage(region.value.trim(), Number(proposals.value) || 0);
        },
      },
      h("label", {}, t("region"), region),
      h("label", {}, t("proposals"), proposals),
      h("button", { type: "submit", id: "run-coverage", text: t("run_coverage") }),
    ),
    h("p", { id: "plan-status" }),
    h("p", { id: "plan-gaps", class: "muted" }),
    h("h3", { text: t("region_table") }),
    h("div", { id: "plan-table" }),
    legend(),
    h(
      "div",
      { class: "actions" },
      may && h("button", { class: "small", id: "export-geojson", text: t("export_geojson"), onclick: () => reported(exportGeojson) }),
      may && h("button", { class: "small", id: "export-csv", text: t("export_csv"), onclick: () => reported(exportCsv) }),
      h("button", { class: "small", id: "export-png", text: t("export_png"), onclick: exportPng }),
    ),
  );
  regionTable(null, scope).catch(() => {});
  watchGaps();
}
