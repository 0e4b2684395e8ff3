// Admin view of the GB/T 28181 cascade: every upper platform (上级平台) with its state and the
// last error it answered (SIP status and reason), so a failing cascade is never silent.
import { get } from "./api.js";
import { $, clear, h } from "./dom.js";
import { t } from "./i18n.js";

function errorLine(e) {
  if (!e) return null;
  const status = e.status == null ? t("up_no_answer") : `SIP ${e.status}`;
  return h("p", { class: "error up-error", text: `${e.what} · ${status} · ${e.reason}` });
}

function catalogLine(c) {
  if (!c) return null;
  return h("p", {
    class: "muted",
    text: t("up_catalog", { sent: c.items_sent, sum: c.sum_num, s: c.seconds }),
  });
}

export async function loadUpstreams() {
  const list = $("#upstreams");
  if (!list) return;
  let items = [];
  try {
    items = (await get("/api/v1/gb28181/upstreams")).items || [];
  } catch (err) {
    clear(list).append(h("li", { class: "error", text: err.message }));
    return;
  }
  clear(list);
  if (!items.length) list.append(h("li", { class: "muted", text: t("up_none") }));
  for (const u of items) {
    const s = u.settings || {};
    list.append(
      h(
        "li",
        { class: `upstream up-${u.state}`, "data-name": u.name },
        h("strong", { text: u.name }),
        " ",
        h("span", { class: "up-state", text: t(`up_${u.state}`) }),
        h("p", { class: "muted", text: `${s.server_id} @ ${s.host}:${s.port}/${s.transport}` }),
        errorLine(u.last_error),
        catalogLine(u.timings && u.timings.last_catalog),
      ),
    );
  }
}

export function initAdmin() {
  const box = $("#admin");
  if (!box) return;
  clear(box).append(
    h("h2", { text: t("upstreams") }),
    h("button", { class: "small", id: "upstreams-refresh", text: t("refresh"), onclick: loadUpstreams }),
    h("ul", { id: "upstreams", class: "upstreams" }),
  );
  loadUpstreams();
}
