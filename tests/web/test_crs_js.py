"""The page's JavaScript CRS converter (web/src/crs.js, a port of geo/crs.py) agrees with the
Python one, run in the same Chromium the map tests use."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from playwright.async_api import Browser

from geo.crs import bd09_to_gcj02, gcj02_to_bd09, gcj02_to_wgs84, wgs84_to_gcj02

from ..conftest import ROOT


async def test_js_converter_matches_geo_crs_across_china(browser: Browser) -> None:
    rng = np.random.default_rng(5)
    lon = rng.uniform(73.5, 135.0, 400)
    lat = rng.uniform(18.0, 53.5, 400)
    lon = np.append(lon, [112.5650, 0.0, 140.0])  # Taiyuan, and two outside the GCJ-02 zone
    lat = np.append(lat, [37.8120, 0.0, 60.0])
    source = await asyncio.to_thread((ROOT / "web" / "src" / "crs.js").read_text, "utf-8")
    page = await browser.new_page()
    try:
        await page.add_script_tag(
            content=source.replace("export function", "function")
            + "\nwindow.crs = {wgs84ToGcj02, gcj02ToWgs84, gcj02ToBd09, bd09ToGcj02};"
        )
        pts = json.dumps(np.column_stack([lon, lat]).tolist())
        out = await page.evaluate(
            f"""() => {{
                const pts = {pts};
                const f = (name) => pts.map(([x, y]) => window.crs[name](x, y));
                return {{to_gcj: f("wgs84ToGcj02"), to_wgs: f("gcj02ToWgs84"),
                         to_bd: f("gcj02ToBd09"), from_bd: f("bd09ToGcj02")}};
            }}"""
        )
    finally:
        await page.close()
    for name, fn, tol in (
        ("to_gcj", wgs84_to_gcj02, 1e-9),
        ("to_wgs", gcj02_to_wgs84, 1e-8),
        ("to_bd", gcj02_to_bd09, 1e-9),
        ("from_bd", bd09_to_gcj02, 1e-9),
    ):
        want = np.column_stack(fn(lon, lat))
        got = np.array(out[name])
        assert np.max(np.abs(got - want)) < tol, name
