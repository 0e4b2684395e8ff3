// The server answers errors as problem+json in English (title, detail, errors[{field,
// message}]); the page is Chinese. Every error the page can show goes through explain(): the
// detail and field messages the page can trigger are matched to i18n keys, anything else falls
// back to the translated title for its status. The English original stays in a tooltip.
import { ApiError } from "./api.js";
import { getLang, t } from "./i18n.js";

const DETAILS = [
  [/^role (\w+) may not do this/, (m) => t("e_role", { role: t(m[1]) })],
  [/^region (\d+) is outside your region scope (\d+)/, (m) => t("e_region_scope", { region: m[1], scope: m[2] })],
  [/^your token is scoped to region (\d+); region (\d+) is outside it/, (m) => t("e_region_scope", { region: m[2], scope: m[1] })],
  [/outside your region scope (\d+)/, (m) => t("e_scope", { scope: m[1] })],
  [/^no camera \S+ (in your region scope|: camera ids are UUIDs)/, () => t("e_no_camera")],
  [/has no (main|sub) stream URI registered/, (m) => t("e_no_stream", { profile: m[1] === "sub" ? "子" : "主" })],
  [/^no media relay serves (\w+)/, (m) => t("e_no_relay", { protocol: m[1] })],
  [/^a camera with 国标编码 (\d+) is already registered/, (m) => t("e_duplicate", { gb_id: m[1] })],
  [/^the camera is at version/, () => t("e_version")],
  [/has invalid fields/, () => t("e_invalid")],
  [/^the bearer token is/, () => t("e_token")],
  [/is limited to \d+ requests a minute; retry in (\d+) s/, (m) => t("e_rate", { s: m[1] })],
  [/^region (\d+) has no free 国标编码 serials/, (m) => t("e_no_serial", { region: m[1] })],
  [/^could not find a free 国标编码 serial in region (\d+)/, (m) => t("e_no_serial", { region: m[1] })],
  [/^no coverage run/, () => t("e_no_run")],
  [/geodata load FILE --kind regions/, () => t("e_no_boundaries")],
];

const FIELDS = [
  [/is required|Field required/, () => t("f_required")],
  [/is longer than (\d+) characters|at most (\d+) characters/, (m) => t("f_too_long", { n: m[1] || m[2] })],
  [/must be a whole number (-?\d+)–(-?\d+)/, (m) => t("f_int", { lo: m[1], hi: m[2] })],
  [/is not a number|must be a finite number|valid number/, () => t("f_number")],
  [/must be in ([[(][^\]]+\])/, (m) => t("f_range", { range: m[1] })],
  [/look swapped/, () => t("f_swapped")],
  [/must be within ±180/, () => t("f_lonlat")],
  [/outside China/, () => t("f_china")],
  [/disagrees with 国标编码\/gb_id, whose digits 1-6 say (\d+)/, (m) => t("f_region_gb", { code: m[1] })],
  [/region scope|inside your scope|use a region inside/, () => t("f_scope")],
  [/点位类型\/level is (required|missing or unknown)/, () => t("f_level")],
  [/一类 points must state 录像保存天数/, () => t("f_record_days")],
  [/^use another ID/, () => t("f_gb_taken")],
  [/国标编码\/gb_id|20 digits/, () => t("f_gb_id")],
  [/行政区划\/region_code|6-digit GB\/T 2260/, () => t("f_region_code")],
  [/^unknown field/, () => t("f_unknown_field")],
  [/^Input should be/, () => t("f_type")],
];

function match(table, text) {
  for (const [re, fn] of table) {
    const m = re.exec(text || "");
    if (m) return fn(m);
  }
  return null;
}

// {text, original, fields: [{field, text, original}]} for any error a request threw.
export function explain(err) {
  const zh = getLang() !== "en";
  if (!(err instanceof ApiError)) {
    const text = err && err.name === "TypeError" ? t("err_network") : String((err && err.message) || err);
    return { text, original: String((err && err.message) || ""), fields: [] };
  }
  const p = err.problem || {};
  const original = p.detail || p.title || err.message || "";
  const titleKey = `err_${err.status}`;
  const title = t(titleKey) === titleKey ? t("error") : t(titleKey);
  const text = zh ? match(DETAILS, p.detail) || title : original || title;
  const fields = (Array.isArray(p.errors) ? p.errors : []).map((e) => ({
    field: String(e.field || ""),
    text: zh ? match(FIELDS, e.message) || t("f_invalid") : String(e.message || ""),
    original: String(e.message || ""),
  }));
  return { text, original, fields };
}

// The one line a status bar or panel shows.
export function errorText(err) {
  return explain(err).text;
}

// A failed job's stored reason (English), in the page's language where we know it.
export function detailText(text) {
  return getLang() === "en" ? text || "" : match(DETAILS, text) || "";
}
