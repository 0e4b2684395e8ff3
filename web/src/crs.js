// WGS-84 ⇄ GCJ-02 ⇄ BD-09, ported from geo/crs.py (same constants, same iterative inverse).
const A = 6378245.0;
const EE = 0.00669342162296594323;
const X_PI = (Math.PI * 3000.0) / 180.0;

function inZone(lon, lat) {
  return lon >= 72.004 && lon <= 137.8347 && lat >= 0.8293 && lat <= 55.8271;
}

function offset(lon, lat) {
  const x = lon - 105.0;
  const y = lat - 35.0;
  const xp = x * Math.PI;
  const yp = y * Math.PI;
  const common = 20.0 * Math.sin(6.0 * xp) + 20.0 * Math.sin(2.0 * xp);
  let dLat =
    ((common + 20.0 * Math.sin(yp) + 40.0 * Math.sin(yp / 3.0) + 160.0 * Math.sin(yp / 12.0) +
      320.0 * Math.sin(yp / 30.0)) * 2.0) / 3.0;
  dLat += -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  let dLon =
    ((common + 20.0 * Math.sin(xp) + 40.0 * Math.sin(xp / 3.0) + 150.0 * Math.sin(xp / 12.0) +
      300.0 * Math.sin(xp / 30.0)) * 2.0) / 3.0;
  dLon += 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  const radLat = (lat / 180.0) * Math.PI;
  const magic = 1.0 - EE * Math.sin(radLat) ** 2;
  const sqrtMagic = Math.sqrt(magic);
  dLat = (dLat * 180.0) / (((A * (1.0 - EE)) / (magic * sqrtMagic)) * Math.PI);
  dLon = (dLon * 180.0) / ((A / sqrtMagic) * Math.cos(radLat) * Math.PI);
  return [dLon, dLat];
}

export function wgs84ToGcj02(lon, lat) {
  if (!inZone(lon, lat)) return [lon, lat];
  const [dx, dy] = offset(lon, lat);
  return [lon + dx, lat + dy];
}

export function gcj02ToWgs84(lon, lat) {
  if (!inZone(lon, lat)) return [lon, lat];
  let wl = lon;
  let wb = lat;
  for (let i = 0; i < 10; i++) {
    const [dx, dy] = offset(wl, wb);
    const rl = wl + dx - lon;
    const rb = wb + dy - lat;
    wl -= rl;
    wb -= rb;
    if (Math.max(Math.abs(rl), Math.abs(rb)) < 1e-7) break;
  }
  return [wl, wb];
}

export function gcj02ToBd09(lon, lat) {
  const z = Math.hypot(lon, lat) + 0.00002 * Math.sin(lat * X_PI);
  const t = Math.atan2(lat, lon) + 0.000003 * Math.cos(lon * X_PI);
  return [z * Math.cos(t) + 0.0065, z * Math.sin(t) + 0.006];
}

export function bd09ToGcj02(lon, lat) {
  const x = lon - 0.0065;
  const y = lat - 0.006;
  const z = Math.hypot(x, y) - 0.00002 * Math.sin(y * X_PI);
  const t = Math.atan2(y, x) - 0.000003 * Math.cos(x * X_PI);
  return [z * Math.cos(t), z * Math.sin(t)];
}

export function toWgs84(crs, lon, lat) {
  if (crs === "gcj02") return gcj02ToWgs84(lon, lat);
  if (crs === "bd09") return gcj02ToWgs84(...bd09ToGcj02(lon, lat));
  return [lon, lat];
}

export function fromWgs84(crs, lon, lat) {
  if (crs === "gcj02") return wgs84ToGcj02(lon, lat);
  if (crs === "bd09") return gcj02ToBd09(...wgs84ToGcj02(lon, lat));
  return [lon, lat];
}

// A camera's footprint: a sector (apex, bearing clockwise from north, opening, radius in m),
// or a disc when the orientation is unknown. Returns [lon, lat] pairs in WGS-84.
export function sector(lon, lat, azimuth, hfov, range) {
  const r = range > 0 ? range : 50;
  const mLat = 111320;
  const mLon = 111320 * Math.cos((lat * Math.PI) / 180);
  const pt = (b) => {
    const a = (b * Math.PI) / 180;
    return [lon + (r * Math.sin(a)) / mLon, lat + (r * Math.cos(a)) / mLat];
  };
  const out = [];
  if (azimuth == null || !(hfov > 0) || hfov >= 360) {
    for (let b = 0; b < 360; b += 10) out.push(pt(b));
    return out;
  }
  out.push([lon, lat]);
  const steps = Math.max(4, Math.ceil(hfov / 5));
  for (let i = 0; i <= steps; i++) out.push(pt(azimuth - hfov / 2 + (hfov * i) / steps));
  return out;
}
