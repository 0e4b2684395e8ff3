// Field work: click the map (or type coordinates) to register a camera; the discovery inbox
// with "register here".
import { get, request } from "./api.js";
import { $, clear, h } from "./dom.js";
import { t } from "./i18n.js";
import { app, fromMap, refresh, toast } from "./main.js";
import { closePanel, errorLine, openCamera, placeForm } from "./panel.js";

let picking = null; // null, or what a map click registers: {device?}

// The hint stays on the map while it waits for the click, and goes with the click (or Esc).
function pickHint(on) {
  const old = $("#pick-hint");
  if (old) old.remove();
  if (on) $("#hud").append(h("div", { id: "pick-hint", text: t("pick_hint") }));
}

function disarm() {
  picking = null;
  $("#map").classList.remove("picking");
  pickHint(false);
}

function onMapClick(ev) {
  if (!picking) return;
  const what = picking;
  disarm();
  const { lon, lat } = fromMap(ev.latlng);
  registerForm(lon, lat, what.device);
}

function onKey(ev) {
  if (ev.key === "Escape" && picking) disarm();
}

function arm(device) {
  picking = { device };
  $("#map").classList.add("picking");
  pickHint(true);
}

// 区域代码 from the county boundary under the point, unless the technician typed one.
async function fillRegion(region, note, lon, lat) {
  let answer;
  try {
    answer = await get(`/api/v1/geodata/regions/at?${new URLSearchParams({ lon: lon.toFixed(6), lat: lat.toFixed(6) })}`);
  } catch {
    return; // an older server without the lookup: the field stays to be typed
  }
  const r = answer && answer.region;
  if (r && r.rank === "county") {
    if (!region.value || region.dataset.auto === "1") {
      region.value = r.adcode;
      region.dataset.auto = "1";
    }
    note.textContent = t("region_from_map", { name: `${r.name} ${r.adcode}` });
  } else {
    note.textContent = t("region_none");
  }
}

function registerForm(lon, lat, device) {
  closePanel();
  const panel = $("#panel");
  panel.hidden = false;
  const scope = app.me.scope || "";
  const name = h("input", {
    "data-field": "name",
    id: "reg-name",
    required: true,
    maxlength: 200,
    value: device ? device.name || device.model || "" : "",
  });
  const region = h("input", {
    "data-field": "region_code",
    id: "reg-region",
    required: true,
    inputmode: "numeric",
    "data-digits": 6,
    value: scope.length === 6 ? scope : "",
    placeholder: scope.padEnd(6, "0"),
    oninput: (ev) => delete ev.target.dataset.auto,
  });
  const regionNote = h("span", { class: "hint", id: "reg-region-note" });
  const gbId = h("input", {
    "data-field": "gb_id",
    id: "reg-gb-id",
    inputmode: "numeric",
    "data-digits": 20,
    placeholder: t("gb_id_auto"),
  });
  const level = h(
    "select",
    { "data-field": "level", id: "reg-level" },
    [3, 2, 1, 9].map((lv) => h("option", { value: lv, text: t(`lv${lv}`) })),
  );
  // 一类 must state its recording retention (GB/T 28181): asked, prefilled, never sent silently.
  const days = app.me.record_days_level1 || 90;
  const recordDays = h("input", {
    "data-field": "record_days",
    id: "reg-record-days",
    type: "number",
    min: 1,
    max: 3650,
    step: 1,
    value: days,
  });
  const daysRow = h(
    "label",
    { id: "reg-record-days-row", hidden: true },
    t("record_days"),
    recordDays,
    h("span", { class: "hint", text: t("record_days_hint", { n: days }) }),
  );
  const onLevel = () => {
    const first = level.value === "1";
    daysRow.hidden = !first;
    recordDays.required = first;
    recordDays.disabled = !first; // a disabled field is not sent
  };
  level.addEventListener("change", onLevel);
  onLevel();
  const title = device ? `${t("register_here")} · ${device.address || ""}` : t("register");
  const form = placeForm(
    { lon, lat, azimuth: null, hfov: null, range: null, level: 3 },
    [
      h("h2", { text: title }),
      h("label", {}, t("name"), name),
      h("label", {}, t("region"), region, regionNote),
      h("label", {}, t("level"), level),
      daysRow,
      h("label", {}, t("gb_id_optional"), gbId, h("span", { class: "hint", text: t("gb_id_auto") })),
    ],
    async (body) => {
      for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
      if (body.level !== 1) delete body.record_days;
      const url = device
        ? `/api/v1/discovery/devices/${encodeURIComponent(device.id)}/register`
        : "/api/v1/cameras";
      const { data: cam } = await request(url, { method: "POST", body });
      await refresh();
      if (device) await loadInbox();
      await openCamera(cam.id);
      // the generated (or typed) 国标编码, where the technician looks next
      $("#panel .panel-head")?.after(h("p", { class: "ok", id: "registered-as", text: t("registered_as", { gb_id: cam.gb_id }) }));
      toast(t("registered_as", { gb_id: cam.gb_id }));
    },
    t("register"),
  );
  panel.append(form);
  fillRegion(region, regionNote, lon, lat);
  // a moved marker or typed coordinates may land in another county
  for (const el of form.querySelectorAll("input[name=lon], input[name=lat]")) {
    el.addEventListener("change", () => {
      const x = Number(form.querySelector("input[name=lon]").value);
      const y = Number(form.querySelector("input[name=lat]").value);
      const crs = form.querySelector("select[name=crs]").value;
      if (crs === "wgs84" && Number.isFinite(x) && Number.isFinite(y)) fillRegion(region, regionNote, x, y);
    });
  }
}

async function loadInbox() {
  const list = $("#inbox");
  if (!list) return;
  let items = [];
  try {
    items = (await get("/api/v1/discovery/devices")).items || [];
  } catch (err) {
    clear(list).append(h("li", {}, errorLine(err)));
    return;
  }
  clear(list);
  if (!items.length) list.append(h("li", { class: "muted", text: t("inbox_empty") }));
  for (const d of items) {
    const label = [d.vendor, d.model, d.address].filter(Boolean).join(" · ");
    list.append(
      h(
        "li",
        {},
        h("span", { text: label || d.id }),
        h("button", { class: "small", text: t("register_here"), onclick: () => arm(d) }),
      ),
    );
  }
}

export function initTech() {
  const box = $("#tech");
  if (!box) return;
  clear(box).append(
    h("h2", { text: t("tech") }),
    h("button", { id: "register-click", text: t("register_click"), onclick: () => arm(null) }),
    h("button", {
      class: "link",
      id: "register-typed",
      text: `${t("register")} (${t("lon")}/${t("lat")})`,
      onclick: () => {
        const c = app.map.getCenter();
        const p = fromMap(c);
        registerForm(p.lon, p.lat, null);
      },
    }),
    h("h3", { text: t("inbox") }),
    h("ul", { id: "inbox", class: "inbox" }),
  );
  if (picking) pickHint(true); // a language switch while waiting for the click
  app.map.off("click", onMapClick);
  app.map.on("click", onMapClick);
  document.removeEventListener("keydown", onKey);
  document.addEventListener("keydown", onKey);
  loadInbox();
}
