// The web map: sign-in, base layer (tiles or our own region boundaries), the cameras layer
// from /api/v1/map/cameras, and the side panels (camera, field work, planning).
import L from "leaflet";
import "leaflet/dist/leaflet.css";
import "./style.css";
import { get, hasPath, session } from "./api.js";
import { fromWgs84, toWgs84 } from "./crs.js";
import { $, clear, h } from "./dom.js";
import { errorText } from "./errors.js";
import { getLang, setLang, t } from "./i18n.js";
import { openCamera } from "./panel.js";
import { initPlanner } from "./planner.js";
import { initTech } from "./tech.js";
import { initAdmin } from "./admin.js";

export const STATUSES = ["online", "degraded", "offline", "unknown", "flapping"];
export const LEVELS = [1, 2, 3, 9];
export const COLORS = {
  online: "#2e9d4f",
  degraded: "#e0a100",
  offline: "#d2372e",
  unknown: "#8a8f98",
  flapping: "#8e44ad",
};
const SHANXI = [
  [34.5, 110.2],
  [40.8, 114.6],
];

export const app = {
  me: null,
  map: null,
  tilesCrs: "wgs84",
  cameras: null,
  filter: { levels: new Set(), statuses: new Set(), region: "" },
  abort: null,
  onRefresh: [],
};

// Our data is WGS-84; GCJ-02 tiles need it shifted, and clicks shifted back.
export function toMap(lon, lat) {
  const [x, y] = fromWgs84(app.tilesCrs, lon, lat);
  return L.latLng(y, x);
}

export function fromMap(latlng) {
  const [lon, lat] = toWgs84(app.tilesCrs, latlng.lng, latlng.lat);
  return { lon, lat };
}

function status(text, kind = "", key = null) {
  const el = $("#status");
  el.className = kind;
  el.textContent = text;
  app.statusKey = key; // a label to translate again when the language changes
}

export function toast(text, kind = "info") {
  const el = h("div", { class: `toast ${kind}`, role: "status", text });
  $("#toasts").append(el);
  setTimeout(() => el.remove(), 4000);
}

// -- sign-in ------------------------------------------------------------------------------
function renderSignin(error) {
  const side = clear($("#side"));
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    "aria-label": t("token"),
  });
  const form = h(
    "form",
    { id: "signin", class: "card" },
    h("h2", { text: t("signin") }),
    h("p", { class: "hint", text: t("signin_hint") }),
    h("label", {}, t("token"), input),
    h("button", { type: "submit", id: "signin-btn", text: t("signin") }),
    error ? h("p", { class: "error", id: "signin-error", text: error }) : null,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    session.set(input.value.trim());
    start();
  });
  side.append(form);
  input.focus();
}

function renderWho() {
  const me = app.me;
  const who = clear($("#who"));
  if (!me) return;
  who.append(
    h("span", { id: "who-role", text: `${t("role")}: ${t(me.role)}` }),
    " · ",
    h("span", { id: "who-scope", text: `${t("scope")}: ${me.scope || t("all_regions")}` }),
  );
}

function renderSide() {
  const me = app.me;
  const side = clear($("#side"));
  const may = [t("may_view")];
  if (me.can.edit) may.push(t("may_edit"));
  if (me.can.stream) may.push(t("may_stream"));
  if (me.can.run_coverage) may.push(t("may_plan"));
  else if (me.can.plan) may.push(t("may_view_plan"));
  side.append(
    h(
      "section",
      { class: "card", id: "rights" },
      h("p", { text: `${t("may")}: ${may.join(getLang() === "en" ? ", " : "、")}` }),
    ),
    filtersCard(),
    h("section", { id: "panel", class: "card", hidden: true }),
  );
  if (me.can.edit) side.append(h("section", { id: "tech", class: "card" }));
  if (me.can.plan) side.append(h("section", { id: "plan", class: "card" }));
  if (me.role === "admin" && !me.scope) side.append(h("section", { id: "admin", class: "card" }));
}

function filtersCard() {
  const f = app.filter;
  const box = (set, value, label) =>
    h(
      "label",
      { class: "check" },
      h("input", {
        type: "checkbox",
        value,
        checked: set.has(value),
        onchange: (ev) => {
          if (ev.target.checked) set.add(value);
          else set.delete(value);
          refresh();
        },
      }),
      label,
    );
  const region = h("input", {
    id: "filter-region",
    value: f.region,
    placeholder: "1401",
    size: 7,
    inputmode: "numeric",
  });
  return h(
    "section",
    { class: "card", id: "filters" },
    h("h2", { text: t("filters") }),
    h(
      "div",
      { class: "row" },
      h("b", { text: t("level") }),
      LEVELS.map((lv) => box(f.levels, String(lv), t(`lv${lv}`))),
    ),
    h(
      "div",
      { class: "row" },
      h("b", { text: t("status") }),
      STATUSES.map((s) => box(f.statuses, s, [h("span", { class: `dot st-${s}` }), t(s)])),
    ),
    h(
      "form",
      {
        class: "row",
        onsubmit: (ev) => {
          ev.preventDefault();
          f.region = /^\d{2,6}$/.test(region.value.trim()) ? region.value.trim() : "";
          region.value = f.region;
          refresh();
        },
      },
      h("label", {}, t("region"), region),
      h("button", { type: "submit", text: t("apply") }),
    ),
    legend(),
  );
}

function legend() {
  return h(
    "div",
    { class: "legend" },
    LEVELS.map((lv) => h("span", {}, h("i", { class: `cam lv${lv} st-unknown` }), t(`lv${lv}`))),
  );
}

// -- base layer ----------------------------------------------------------------------------
async function baseLayer() {
  const tiles = app.me.tiles;
  app.tilesCrs = tiles.url ? tiles.crs : "wgs84";
  if (tiles.url) {
    const layer = L.tileLayer(tiles.url, {
      attribution: tiles.attribution || "",
      maxZoom: 19,
      subdomains: tiles.subdomains || "abc",
    });
    let failed = 0;
    layer.on("tileerror", () => {
      failed += 1;
      if (failed === 8) boundariesReady = boundaries(); // unreachable tiles: our boundaries
    });
    layer.addTo(app.map);
  } else {
    boundariesReady = boundaries();
  }
}

// A token scoped to a region opens on that region, not the province: the boundaries we
// loaded are its own (the API narrows them to the scope).
async function initialView() {
  const m = /^#(\d{1,2})\/(-?[\d.]+)\/(-?[\d.]+)$/.exec(window.location.hash);
  if (m) {
    app.map.setView(toMap(Number(m[3]), Number(m[2])), Number(m[1]));
    return;
  }
  if (app.me.scope) {
    await boundariesReady;
    let b = boundaryLayer ? boundaryLayer.getBounds() : null;
    if (!b || !b.isValid()) {
      try {
        const fc = await get(`/api/v1/geodata/regions?${new URLSearchParams({ region: app.me.scope, simplify: "500" })}`);
        if (fc.features && fc.features.length) b = L.geoJSON(fc, { coordsToLatLng: (c) => toMap(c[0], c[1]) }).getBounds();
      } catch {
        b = null;
      }
    }
    if (b && b.isValid()) {
      app.map.fitBounds(b);
      return;
    }
  }
  app.map.fitBounds(SHANXI);
}

let boundaryLayer = null;
let boundariesReady = Promise.resolve();
export function regionLayer() {
  return boundaryLayer;
}
// Settles once the boundary layer is drawn (or known to be absent): the region table waits
// for it to show county names.
export function regionsLoaded() {
  return boundariesReady;
}

// Say how to get a real base map, where the offline one is shown.
function tilesHelp(show) {
  const old = $("#tiles-help");
  if (old) old.remove();
  if (show) $("#hud").append(h("div", { id: "tiles-help", class: "muted", text: t("tiles_help") }));
}

// -- offline base layer: what a technician orients by at street zoom without tiles ----------
const LABEL_ZOOM = 9; // county names from here
const PLACES_ZOOM = 13; // villages and junctions from here
const PLACE_NAMES_ZOOM = 15; // their names from here
const PLACES_IN_VIEW = 2000;
let labelLayer = null;
let placesLayer = null;
let placesSeq = 0;
let havePlaces = null;

function inRing(x, y, ring) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = [ring[i].lng, ring[i].lat];
    const [xj, yj] = [ring[j].lng, ring[j].lat];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function inPolygon(layer, ll) {
  // Leaflet nests rings: [ring] for a polygon, [[ring], …] for a multipolygon; holes ignored
  const outer = [];
  const walk = (a) => {
    if (a.length && a[0] instanceof L.LatLng) outer.push(a);
    else if (a.length && a[0].length && a[0][0] instanceof L.LatLng) outer.push(a[0]);
    else a.forEach(walk);
  };
  walk(layer.getLatLngs());
  return outer.some((ring) => inRing(ll.lng, ll.lat, ring));
}

// A county's label sits inside both the county and the view, so at street zoom, where one
// county fills the screen, its name is still on it.
function labelPoint(layer, view) {
  const b = layer.getBounds();
  if (!b.intersects(view)) return null;
  const sw = L.latLng(Math.max(b.getSouth(), view.getSouth()), Math.max(b.getWest(), view.getWest()));
  const ne = L.latLng(Math.min(b.getNorth(), view.getNorth()), Math.min(b.getEast(), view.getEast()));
  const cut = L.latLngBounds(sw, ne);
  const tries = [cut.getCenter(), b.getCenter()];
  for (let i = 1; i < 4; i++) for (let j = 1; j < 4; j++) {
    tries.push(L.latLng(sw.lat + ((ne.lat - sw.lat) * i) / 4, sw.lng + ((ne.lng - sw.lng) * j) / 4));
  }
  return tries.find((ll) => view.contains(ll) && inPolygon(layer, ll)) || null;
}

function drawLabels() {
  if (!boundaryLayer || !app.map) return;
  if (!labelLayer) labelLayer = L.layerGroup().addTo(app.map);
  labelLayer.clearLayers();
  if (app.map.getZoom() < LABEL_ZOOM) return;
  const view = app.map.getBounds().pad(-0.05);
  boundaryLayer.eachLayer((layer) => {
    const p = layer.feature?.properties || {};
    const at = labelPoint(layer, view);
    if (!at) return;
    const el = h("span", { class: "region-label", "data-adcode": p.adcode ?? "", text: p.name ?? p.adcode ?? "" });
    labelLayer.addLayer(L.marker(at, { icon: L.divIcon({ html: el, className: "label-icon", iconSize: null }), interactive: false, keyboard: false }));
  });
}

async function drawPlaces() {
  if (!app.map || !boundaryLayer) return;
  if (havePlaces === null) havePlaces = (await hasPath("/api/v1/geodata/villages")) && (await hasPath("/api/v1/geodata/junctions"));
  if (!placesLayer) placesLayer = L.layerGroup().addTo(app.map);
  const seq = ++placesSeq;
  if (!havePlaces || app.map.getZoom() < PLACES_ZOOM) {
    placesLayer.clearLayers();
    delete $("#map").dataset.places;
    return;
  }
  const q = new URLSearchParams({ bbox: viewBbox().join(","), limit: String(PLACES_IN_VIEW) });
  let villages;
  let junctions;
  try {
    [villages, junctions] = await Promise.all([
      get(`/api/v1/geodata/villages?${q}`),
      get(`/api/v1/geodata/junctions?${q}`),
    ]);
  } catch {
    return; // the base layer is a help, not a page error
  }
  if (seq !== placesSeq) return;
  placesLayer.clearLayers();
  const named = app.map.getZoom() >= PLACE_NAMES_ZOOM;
  const place = (f, kind) => {
    const [x, y] = f.geometry.coordinates;
    const m = L.circleMarker(toMap(x, y), {
      radius: kind === "village" ? 5 : 3,
      color: kind === "village" ? "#7a5c2e" : "#6b7785",
      weight: 1,
      fillColor: kind === "village" ? "#e8d9b5" : "#ffffff",
      fillOpacity: 1,
      className: `place ${kind}`,
      interactive: false,
    });
    const name = f.properties?.name;
    if (name && (named || kind === "village")) {
      m.bindTooltip(h("span", { text: name }), {
        permanent: named,
        direction: "right",
        offset: [5, 0],
        className: `place-label ${kind}`,
      });
    }
    placesLayer.addLayer(m);
  };
  for (const f of villages.features || []) place(f, "village");
  for (const f of junctions.features || []) place(f, "junction");
  $("#map").dataset.places = String((villages.features || []).length + (junctions.features || []).length);
}

function drawBase() {
  try {
    app.map.getCenter(); // throws until the first view is set
  } catch {
    return;
  }
  drawLabels();
  drawPlaces().catch(() => {});
}

async function boundaries() {
  if (boundaryLayer) return;
  const path = "/api/v1/geodata/regions";
  if (!(await hasPath(path))) {
    status(t("no_basemap"), "muted", "no_basemap");
    return;
  }
  try {
    const fc = await get(`${path}?rank=county&simplify=0.001`);
    boundaryLayer = L.geoJSON(fc, {
      coordsToLatLng: (c) => toMap(c[0], c[1]),
      style: { color: "#5a6b7d", weight: 1.5, fillColor: "#eef1f4", fillOpacity: 0.45, className: "region-boundary" },
      onEachFeature: (feat, layer) => {
        const p = feat.properties || {};
        layer.bindTooltip(h("span", { text: `${p.name ?? ""} ${p.adcode ?? ""}` }), { sticky: true });
      },
    }).addTo(app.map);
    boundaryLayer.bringToBack();
    status(t("offline_map"), "muted", "offline_map");
    tilesHelp(true);
    app.map.on("moveend", drawBase);
    drawBase();
  } catch {
    status(t("no_basemap"), "muted", "no_basemap");
  }
}

// -- cameras layer -------------------------------------------------------------------------
function viewBbox() {
  const b = app.map.getBounds();
  const sw = fromMap(b.getSouthWest());
  const ne = fromMap(b.getNorthEast());
  const c = (v, lo, hi) => Math.min(hi, Math.max(lo, v)).toFixed(5);
  return [c(sw.lon, -180, 180), c(sw.lat, -90, 90), c(ne.lon, -180, 180), c(ne.lat, -90, 90)];
}

export async function refresh() {
  if (!app.me) return;
  if (app.abort) app.abort.abort();
  const ctrl = new AbortController();
  app.abort = ctrl;
  const f = app.filter;
  const q = new URLSearchParams({ bbox: viewBbox().join(","), zoom: String(app.map.getZoom()) });
  if (f.levels.size) q.set("level", [...f.levels].join(","));
  if (f.statuses.size) q.set("status", [...f.statuses].join(","));
  if (f.region) q.set("region", f.region);
  let data;
  $("#map").dataset.busy = "1";
  try {
    data = await get(`/api/v1/map/cameras?${q}`, { signal: ctrl.signal });
  } catch (err) {
    if (err.name === "AbortError") return;
    delete $("#map").dataset.busy;
    status(`${t("error")}: ${errorText(err)}`, "error");
    return;
  }
  if (ctrl !== app.abort) return;
  delete $("#map").dataset.busy;
  drawCameras(data);
  for (const fn of app.onRefresh) fn(data);
}

function clusterIcon(c) {
  const size = Math.round(28 + Math.min(30, Math.log10(c.count + 1) * 10));
  let at = 0;
  const stops = [];
  for (const s of STATUSES) {
    const n = c.status[s] || 0;
    if (!n) continue;
    const end = at + (n / c.count) * 360;
    stops.push(`${COLORS[s]} ${at}deg ${end}deg`);
    at = end;
  }
  const ring = h("div", { class: "cluster", "data-count": c.count });
  ring.style.background = `conic-gradient(${stops.join(", ")})`;
  ring.style.width = ring.style.height = `${size}px`;
  ring.append(h("span", { text: c.count >= 10000 ? `${Math.round(c.count / 1000)}k` : c.count }));
  return L.divIcon({ html: ring, className: "cluster-icon", iconSize: [size, size] });
}

export function cameraIcon(p, extra = "") {
  const el = h("span", {
    class: `cam lv${p.level} st-${p.status} ${extra}`,
    "data-id": p.id || "",
  });
  return L.divIcon({ html: el, className: "cam-icon", iconSize: [16, 16] });
}

function drawCameras(data) {
  const layer = app.cameras;
  layer.clearLayers();
  if (data.mode === "clusters") {
    for (const c of data.items) {
      const m = L.marker(toMap(c.lon, c.lat), { icon: clusterIcon(c), keyboard: false });
      const tip = STATUSES.filter((s) => c.status[s]).map((s) => `${t(s)} ${c.status[s]}`);
      m.bindTooltip(h("span", { text: tip.join(" · ") }));
      m.on("click", () => {
        const [x0, y0, x1, y1] = c.cell;
        app.map.fitBounds(L.latLngBounds(toMap(x0, y0), toMap(x1, y1)));
      });
      layer.addLayer(m);
    }
  } else {
    for (const p of data.items) {
      const m = L.marker(toMap(p.lon, p.lat), { icon: cameraIcon(p), title: p.name });
      m.on("click", () => openCamera(p.id));
      layer.addLayer(m);
    }
  }
  const mode = data.mode === "clusters" ? t("clusters") : t("points");
  $("#count").textContent = `${t("cameras_in_view", { n: data.total })} · ${mode}`;
  $("#map").dataset.mode = data.mode;
  $("#map").dataset.total = String(data.total);
}

// -- live status (GET /api/v1/events, Server-Sent Events read with fetch so the token can go
// in the Authorization header, which EventSource cannot send) ------------------------------
let recount = null;

function onStatus(ev) {
  for (const el of document.querySelectorAll(`.cam[data-id="${CSS.escape(ev.camera_id)}"]`)) {
    el.classList.remove(...STATUSES.map((s) => `st-${s}`));
    el.classList.add(`st-${ev.new}`);
  }
  const panel = $("#panel-status");
  if (panel && panel.dataset.camera === ev.camera_id) panel.textContent = t(ev.new);
  clearTimeout(recount);
  recount = setTimeout(refresh, 3000); // cluster counts follow, at most every few seconds
}

async function watchEvents() {
  if (app.events) app.events.abort();
  const ctrl = new AbortController();
  app.events = ctrl;
  try {
    const res = await fetch("/api/v1/events", {
      headers: { Authorization: `Bearer ${session.token}` },
      signal: ctrl.signal,
      cache: "no-store",
    });
    if (!res.ok || !res.body) throw new Error(String(res.status));
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let kind = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (kind === "status" && data) onStatus(JSON.parse(data));
        else if (kind === "lagged") refresh();
      }
    }
  } catch {
    /* dropped: reconnect below */
  }
  if (!ctrl.signal.aborted && app.me) setTimeout(watchEvents, 5000);
}

// -- start ---------------------------------------------------------------------------------
function header() {
  $("#title").textContent = t("title");
  document.title = t("title");
  const lang = $("#lang");
  lang.textContent = t("lang");
  const out = $("#signout");
  out.textContent = t("signout");
  out.hidden = !app.me;
  if (app.statusKey) $("#status").textContent = t(app.statusKey);
}

async function start() {
  header();
  if (!session.token) {
    renderSignin();
    return;
  }
  try {
    app.me = await get("/api/v1/map/config");
  } catch (err) {
    session.clear();
    app.me = null;
    renderSignin(err.status === 401 ? t("bad_token") : errorText(err));
    return;
  }
  header();
  renderWho();
  renderSide();
  if (!app.map) {
    app.map = L.map("map", { zoomControl: true });
    L.control.scale({ imperial: false }).addTo(app.map);
    app.cameras = L.layerGroup().addTo(app.map);
    await baseLayer();
    // #zoom/lat/lon (WGS-84) in the address: views can be bookmarked and shared, the first
    // one included.
    app.map.on("moveend", () => {
      const c = fromMap(app.map.getCenter());
      const hash = `#${app.map.getZoom()}/${c.lat.toFixed(5)}/${c.lon.toFixed(5)}`;
      window.history.replaceState(null, "", hash);
      refresh();
    });
    await initialView();
  }
  if (app.me.can.edit) initTech();
  if (app.me.can.plan) initPlanner();
  if (app.me.role === "admin" && !app.me.scope) initAdmin();
  document.body.dataset.ready = "1";
  watchEvents();
  await refresh();
}

function boot() {
  setLang(getLang());
  $("#lang").addEventListener("click", () => {
    setLang(getLang() === "zh" ? "en" : "zh");
    if (app.me) {
      const open = app.openCameraId; // the camera panel survives the switch
      header();
      renderWho();
      renderSide();
      if (app.me.can.edit) initTech();
      if (app.me.can.plan) initPlanner();
      if (boundaryLayer) {
        tilesHelp(true);
        drawLabels();
      }
      if (open) openCamera(open);
      if (app.me.role === "admin" && !app.me.scope) initAdmin();
      refresh();
    } else {
      start();
    }
  });
  $("#signout").addEventListener("click", () => {
    session.clear();
    window.location.reload();
  });
  start();
}

boot();
