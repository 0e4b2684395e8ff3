// Field work: click the map (or type coordinates) to register a camera; the discovery inbox
// with "register here".
import { get, request } from "./api.js";
import { $, clear, h } from "./dom.js";
import { t } from "./i18n.js";
import { app, fromMap, refresh, toast } from "./main.js";
import { closePanel, openCamera, placeForm } from "./panel.js";

let picking = null; // null, or what a map click registers: {device?}

function onMapClick(ev) {
  if (!picking) return;
  const what = picking;
  picking = null;
  $("#map").classList.remove("picking");
  const { lon, lat } = fromMap(ev.latlng);
  registerForm(lon, lat, what.device);
}

function arm(device) {
  picking = { device };
  $("#map").classList.add("picking");
  toast(t("click_map"));
}

function registerForm(lon, lat, device) {
  closePanel();
  const panel = $("#panel");
  panel.hidden = false;
  const scope = app.me.scope || "";
  const name = h("input", { "data-field": "name", id: "reg-name", required: true, value: device ? device.name || device.model || "" : "" });
  const region = h("input", {
    "data-field": "region_code",
    id: "reg-region",
    required: true,
    pattern: "\\d{6}",
    value: scope.length === 6 ? scope : "",
    placeholder: scope.padEnd(6, "0"),
  });
  const level = h(
    "select",
    { "data-field": "level", id: "reg-level" },
    [3, 2, 1, 9].map((lv) => h("option", { value: lv, text: t(`lv${lv}`) })),
  );
  const title = device ? `${t("register_here")} · ${device.address || ""}` : t("register");
  const form = placeForm(
    { lon, lat, azimuth: null, hfov: null, range: null, level: 3 },
    [h("h2", { text: title }), h("label", {}, t("name"), name), h("label", {}, t("region"), region), h("label", {}, t("level"), level)],
    async (body) => {
      for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
      if (body.level === 1) body.record_days = 90;
      const url = device
        ? `/api/v1/discovery/devices/${encodeURIComponent(device.id)}/register`
        : "/api/v1/cameras";
      const { data: cam } = await request(url, { method: "POST", body });
      toast(`${t("registered")}: ${cam.gb_id}`);
      await refresh();
      if (device) await loadInbox();
      await openCamera(cam.id);
    },
    t("register"),
  );
  panel.append(form);
}

async function loadInbox() {
  const list = $("#inbox");
  if (!list) return;
  let items = [];
  try {
    items = (await get("/api/v1/discovery/devices")).items || [];
  } catch (err) {
    clear(list).append(h("li", { class: "error", text: err.message }));
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
  app.map.off("click", onMapClick);
  app.map.on("click", onMapClick);
  loadInbox();
}
