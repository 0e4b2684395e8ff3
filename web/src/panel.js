// The camera panel: identity, device facts, status and history, snapshot, diagnosis flags,
// "open stream" (commanders) and "edit" with a draggable marker and live footprint (technicians).
import L from "leaflet";
import { ApiError, get, request } from "./api.js";
import { sector, toWgs84 } from "./crs.js";
import { $, clear, h } from "./dom.js";
import { explain } from "./errors.js";
import { t } from "./i18n.js";
import { app, cameraIcon, fromMap, refresh, toast, toMap } from "./main.js";

let editLayer = null;
let snapshotUrl = null;

function dl(rows) {
  return h(
    "dl",
    {},
    rows.filter(([, v]) => v != null && v !== "").flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]),
  );
}

// An error as the page shows it: translated, the server's own words in the tooltip.
export function errorLine(err, attrs = {}) {
  const e = explain(err);
  return h("p", { class: "error", text: e.text, title: e.original || null, ...attrs });
}

export function closePanel() {
  app.openCameraId = null; // what a language switch re-opens
  if (stopPlayer) {
    stopPlayer();
    stopPlayer = null;
  }
  const panel = $("#panel");
  if (panel) {
    clear(panel);
    panel.hidden = true;
  }
  if (editLayer) {
    editLayer.remove();
    editLayer = null;
  }
}

export async function openCamera(id) {
  closePanel();
  const panel = $("#panel");
  panel.hidden = false;
  let cam;
  let res;
  try {
    ({ data: cam, res } = await request(`/api/v1/cameras/${encodeURIComponent(id)}`));
  } catch (err) {
    panel.append(errorLine(err));
    return;
  }
  app.openCameraId = cam.id;
  const etag = res.headers.get("ETag");
  const facts = [cam.vendor, cam.model, cam.firmware].filter(Boolean).join(" ");
  panel.append(
    h(
      "div",
      { class: "panel-head" },
      h("h2", { id: "panel-name", text: cam.name }),
      h("button", { class: "link", text: t("close"), onclick: closePanel }),
    ),
    dl([
      [t("gb_id"), cam.gb_id],
      [t("level"), t(`lv${cam.level}`)],
      [t("record_days"), cam.record_days],
      [t("region"), cam.region_code],
      [t("address"), cam.address],
      [t("device"), facts],
      ["IP", cam.ip],
      [`${t("lon")}/${t("lat")}`, cam.lon == null ? null : `${cam.lon.toFixed(6)}, ${cam.lat.toFixed(6)}`],
      [t("azimuth"), cam.azimuth],
      [t("hfov"), cam.hfov],
    ]),
  );
  if (cam.lon != null) {
    // the selected camera's footprint (a disc of 50 m when its orientation is unknown)
    editLayer = L.layerGroup().addTo(app.map);
    L.polygon(
      sector(cam.lon, cam.lat, cam.azimuth, cam.hfov, cam.max_view_distance).map(([a, b]) => toMap(a, b)),
      { color: "#1f6feb", weight: 1, fillOpacity: 0.15, interactive: false, className: "footprint" },
    ).addTo(editLayer);
  }
  panel.scrollIntoView({ block: "nearest" });
  const healthBox = h("div", { id: "panel-health" });
  panel.append(healthBox);
  const actions = h("div", { class: "actions" });
  panel.append(actions);
  if (app.me.can.stream) {
    actions.append(h("button", { id: "open-stream", text: t("open_stream"), onclick: () => openStream(cam, panel) }));
  }
  if (app.me.can.edit) {
    actions.append(h("button", { id: "edit-camera", text: t("edit"), onclick: () => editCamera(cam, etag, panel) }));
  }
  if (app.me.can.diagnose) {
    actions.append(
      h("button", { id: "diagnose-now", text: t("diagnose_now"), onclick: () => diagnoseNow(cam, healthBox, false) }),
      h("button", { id: "accept-reference", text: t("accept_reference"), onclick: () => diagnoseNow(cam, healthBox, true) }),
    );
  }
  await showHealth(cam, healthBox);
}

// 视频质量诊断 now (a technician on the ladder): sample, diagnose, show report and thumbnail;
// "accept as reference" keeps this picture as the scene that 场景变更 / 遮挡 compare with.
async function diagnoseNow(cam, box, acceptReference) {
  const buttons = ["#diagnose-now", "#accept-reference"].map((id) => $(id)).filter(Boolean);
  buttons.forEach((b) => (b.disabled = true));
  toast(t("diagnosing"));
  try {
    const q = acceptReference ? "?accept_reference=1" : "";
    const res = await request(`/api/v1/cameras/${cam.id}/diagnose${q}`, { method: "POST" });
    clear(box);
    await showHealth(cam, box);
    if (res.thumbnail) {
      const img = box.querySelector("img.snapshot");
      if (img) img.src = res.thumbnail;
    }
    toast(res.diagnosed ? (acceptReference && res.reference_accepted ? t("reference_accepted") : t("diagnosed")) : res.detail);
  } catch (err) {
    toast(err.message || String(err));
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

// A fired flag with its Chinese label, value and threshold; faults and warnings look apart.
function flagBadge(name, diag) {
  const f = (diag.flags || {})[name] || {};
  const value = typeof f.value === "number" ? ` ${f.value.toFixed(2)} / ${f.threshold}` : "";
  return h("span", {
    class: f.fault === false ? "flag warn" : "flag",
    "data-flag": name,
    title: `${name}${value}`,
    text: f.label || name,
  });
}

async function showHealth(cam, box) {
  let health;
  try {
    health = await get(`/api/v1/cameras/${cam.id}/health`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      box.append(h("p", { class: "muted", text: `${t("status")}: ${t(cam.status)} · ${t("not_probed")}` }));
      return;
    }
    box.append(errorLine(err));
    return;
  }
  box.append(
    h(
      "p",
      {},
      h("span", { class: `dot st-${health.status}` }),
      h("b", { id: "panel-status", "data-camera": cam.id, text: t(health.status) }),
      health.since ? ` · ${t("since")} ${new Date(health.since).toLocaleString()}` : "",
    ),
  );
  const diag = health.last_diagnosis;
  const fired = diag && Array.isArray(diag.fired) ? diag.fired : [];
  box.append(
    h("h3", { text: t("diagnosis") }),
    h(
      "p",
      { id: "panel-flags" },
      !diag ? t("not_probed") : fired.length ? fired.map((f) => flagBadge(f, diag)) : t("no_faults"),
    ),
  );
  // 云台失控 check (opt-in on the server): whether the camera was panned and put back; why
  // not, in the tooltip (a PTZ camera the check could not move says so here).
  if (diag && diag.ptz) {
    box.append(
      h("p", {
        id: "panel-ptz",
        class: "muted",
        title: diag.ptz.detail || "",
        text: diag.ptz.moved ? t("ptz_checked") : t("ptz_not_checked"),
      }),
    );
  }
  box.append(h("h3", { text: t("snapshot") }));
  if (health.has_snapshot) {
    try {
      const blob = await (await request(`/api/v1/cameras/${cam.id}/snapshot`, { raw: true })).blob();
      if (snapshotUrl) URL.revokeObjectURL(snapshotUrl);
      snapshotUrl = URL.createObjectURL(blob);
      box.append(h("img", { class: "snapshot", src: snapshotUrl, alt: t("snapshot") }));
    } catch {
      box.append(h("p", { class: "muted", text: t("no_snapshot") }));
    }
  } else {
    box.append(h("p", { class: "muted", text: t("no_snapshot") }));
  }
  box.append(h("h3", { text: t("history") }));
  const rows = health.transitions || [];
  box.append(
    rows.length
      ? h(
          "ol",
          { class: "history" },
          rows.slice(0, 20).map((r) =>
            h("li", { text: `${new Date(r.at).toLocaleString()} ${t(r.old)} → ${t(r.new)}${r.reason ? ` (${r.reason})` : ""}` }),
          ),
        )
      : h("p", { class: "muted", text: t("no_history") }),
  );
}

let stopPlayer = null;

// FLV through mpegts.js, HLS natively or through hls.js: each loaded only when needed.
async function player(url, protocol) {
  const video = h("video", { class: "player", controls: true, autoplay: true, muted: true, playsinline: true });
  if (protocol === "hls" && video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    return video;
  }
  try {
    if (protocol === "flv") {
      const { default: mpegts } = await import("mpegts.js");
      if (!mpegts.getFeatureList().mseLivePlayback) return h("p", { class: "hint", text: "MSE" });
      const p = mpegts.createPlayer({ type: "flv", isLive: true, url });
      p.attachMediaElement(video);
      p.load();
      stopPlayer = () => p.destroy();
    } else {
      const { default: Hls } = await import("hls.js");
      if (!Hls.isSupported()) return h("p", { class: "hint", text: "MSE" });
      const hls = new Hls();
      hls.loadSource(url);
      hls.attachMedia(video);
      stopPlayer = () => hls.destroy();
    }
  } catch (err) {
    return h("p", { class: "error", text: err.message });
  }
  return video;
}

async function openStream(cam, panel) {
  const have = app.me.relay_protocols || [];
  const protocol = ["flv", "hls"].find((p) => have.includes(p)) || "rtsp";
  const old = $("#stream-box");
  if (old) old.remove();
  const box = h("div", { id: "stream-box" });
  panel.append(box);
  let link;
  try {
    link = await get(`/api/v1/cameras/${cam.id}/stream?protocol=${protocol}&profile=main`);
  } catch (err) {
    box.append(errorLine(err, { id: "stream-error" }));
    return;
  }
  if (protocol !== "rtsp") box.append(await player(link.url, protocol));
  const input = h("input", { id: "stream-url", readonly: true, value: link.url });
  box.append(
    protocol === "rtsp" ? h("p", { class: "hint", text: t("stream_rtsp_hint") }) : null,
    h("div", { class: "row" }, input, h("button", {
      text: t("copy"),
      onclick: async () => {
        input.select();
        try {
          await navigator.clipboard.writeText(link.url);
          toast(t("copied"));
        } catch {
          document.execCommand("copy");
        }
      },
    })),
    // A relay link carries a signed expiry; a direct camera URI has none (it is audited).
    link.expires_at
      ? h("p", { class: "muted", id: "stream-expiry", text: t("link_expires", { protocol: link.protocol, time: new Date(link.expires_at).toLocaleTimeString() }) })
      : h("p", { class: "muted", id: "stream-expiry", text: t("direct_link") }),
  );
}

// A form over a camera's place and orientation with a draggable marker and live footprint.
export function placeForm({ lon, lat, azimuth, hfov, range, level, status }, fields, onSubmit, submitText) {
  if (editLayer) editLayer.remove();
  editLayer = L.layerGroup().addTo(app.map);
  const marker = L.marker(toMap(lon, lat), {
    draggable: true,
    icon: cameraIcon({ level: level || 3, status: status || "unknown" }, "editing"),
    zIndexOffset: 1000,
  }).addTo(editLayer);
  const foot = L.polygon([], { color: "#1f6feb", weight: 1, fillOpacity: 0.2, className: "footprint" }).addTo(editLayer);
  const num = (name, value, attrs = {}) =>
    h("input", { name, type: "number", step: "any", value: value ?? "", ...attrs });
  const inputs = {
    lon: num("lon", lon.toFixed(6), { required: true, min: -180, max: 180 }),
    lat: num("lat", lat.toFixed(6), { required: true, min: -90, max: 90 }),
    azimuth: num("azimuth", azimuth, { min: 0, max: 360 }),
    hfov: num("hfov", hfov, { min: 1, max: 360 }),
    max_view_distance: num("max_view_distance", range, { min: 1 }),
  };
  const crs = h(
    "select",
    { name: "crs" },
    ["wgs84", "gcj02", "bd09"].map((c) => h("option", { value: c, text: c.toUpperCase() })),
  );
  const draw = () => {
    const v = (k) => (inputs[k].value === "" ? null : Number(inputs[k].value));
    let x = v("lon");
    let y = v("lat");
    if (x == null || y == null) return;
    if (crs.value !== "wgs84") {
      // typed in another datum: show where it really is
      [x, y] = toWgs84(crs.value, x, y);
    }
    marker.setLatLng(toMap(x, y));
    foot.setLatLngs(sector(x, y, v("azimuth"), v("hfov"), v("max_view_distance")).map(([a, b]) => toMap(a, b)));
  };
  marker.on("drag dragend", () => {
    const p = fromMap(marker.getLatLng());
    crs.value = "wgs84";
    inputs.lon.value = p.lon.toFixed(6);
    inputs.lat.value = p.lat.toFixed(6);
    draw();
  });
  for (const el of [...Object.values(inputs), crs]) el.addEventListener("input", draw);
  draw();
  const form = h(
    "form",
    { class: "place-form", id: "place-form", novalidate: true },
    fields,
    h("div", { class: "grid2" },
      h("label", {}, t("lon"), inputs.lon),
      h("label", {}, t("lat"), inputs.lat),
      h("label", {}, t("crs"), crs),
      h("label", {}, t("azimuth"), inputs.azimuth),
      h("label", {}, t("hfov"), inputs.hfov),
      h("label", {}, t("range"), inputs.max_view_distance),
    ),
    h("p", { class: "hint", text: t("drag_hint") }),
    h("p", { class: "error", id: "form-error" }),
    h("div", { class: "actions" },
      h("button", { type: "submit", id: "place-submit", text: submitText }),
      h("button", { type: "button", text: t("cancel"), onclick: closePanel }),
    ),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    if (!validate(form)) {
      $("#form-error").textContent = t("v_check");
      return;
    }
    const body = { crs: crs.value };
    for (const [k, el] of Object.entries(inputs)) body[k] = el.value === "" ? null : Number(el.value);
    for (const el of form.querySelectorAll("[data-field]")) {
      const k = el.dataset.field;
      body[k] = el.value === "" ? null : el.type === "number" || k === "level" ? Number(el.value) : el.value;
    }
    try {
      await onSubmit(body);
    } catch (err) {
      const e = explain(err);
      const unplaced = e.fields.filter((f) => !fieldError(form, f.field, f.text, f.original));
      const box = $("#form-error");
      box.textContent = [e.text, ...unplaced.map((f) => `${f.field}: ${f.text}`)].join(" · ");
      box.title = e.original;
    }
  });
  return form;
}

function inputFor(form, field) {
  return form.querySelector(`[data-field="${CSS.escape(field)}"], [name="${CSS.escape(field)}"]`);
}

function labelOf(el) {
  const label = el.closest("label");
  return label && label.firstChild ? label.firstChild.textContent.trim() : el.name || el.dataset.field;
}

function clearFieldErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) el.remove();
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

// A message under its field; false when the form has no such field.
function fieldError(form, field, text, original = "") {
  const el = inputFor(form, field);
  if (!el) return false;
  el.setAttribute("aria-invalid", "true");
  el.after(h("span", { class: "field-error error", "data-for": field, text, title: original || null }));
  return true;
}

// Our own zh-CN checks in place of the browser's English bubbles ("Please fill out this field.").
function validate(form) {
  let ok = true;
  for (const el of form.querySelectorAll("input, select")) {
    if (el.hidden || el.closest("[hidden]")) continue;
    const field = el.dataset.field || el.name;
    const label = labelOf(el);
    const v = el.value.trim();
    let msg = null;
    if (!v) {
      if (el.required) msg = t("v_required", { field: label });
    } else if (el.dataset.digits && !new RegExp(`^\\d{${el.dataset.digits}}$`).test(v)) {
      msg = t("v_digits", { field: label, n: el.dataset.digits });
    } else if (el.type === "number") {
      const n = Number(v);
      const lo = el.min === "" ? -Infinity : Number(el.min);
      const hi = el.max === "" ? Infinity : Number(el.max);
      if (!Number.isFinite(n)) msg = t("v_number", { field: label });
      else if (n < lo || n > hi) msg = t("v_range", { field: label, lo: el.min || "…", hi: el.max || "…" });
    }
    if (msg) {
      fieldError(form, field, msg);
      ok = false;
    }
  }
  return ok;
}

function editCamera(cam, etag, panel) {
  clear(panel);
  const name = h("input", { "data-field": "name", value: cam.name, required: true, maxlength: 200 });
  const address = h("input", { "data-field": "address", value: cam.address ?? "" });
  const level = h(
    "select",
    { "data-field": "level" },
    [1, 2, 3, 9].map((lv) => h("option", { value: lv, text: t(`lv${lv}`), selected: lv === cam.level })),
  );
  const form = placeForm(
    { lon: cam.lon ?? 112.55, lat: cam.lat ?? 37.87, azimuth: cam.azimuth, hfov: cam.hfov, range: cam.max_view_distance, level: cam.level, status: cam.status },
    [h("h2", { text: `${t("edit")} · ${cam.gb_id}` }), h("label", {}, t("name"), name), h("label", {}, t("address"), address), h("label", {}, t("level"), level)],
    async (body) => {
      if (body.address === null) delete body.address;
      await request(`/api/v1/cameras/${cam.id}`, { method: "PATCH", body, headers: { "If-Match": etag } });
      toast(t("saved"));
      await refresh();
      await openCamera(cam.id);
    },
    t("save"),
  );
  panel.append(form);
}
