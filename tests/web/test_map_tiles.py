"""A configured tile server (here a loopback one) is the base layer, allowed by the page's CSP;
with `map_tiles_crs = gcj02` our WGS-84 cameras are drawn on the tile holding their GCJ-02
position, hundreds of metres from the WGS-84 one in Shanxi."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator

import cv2
import numpy as np
import pytest
from aiohttp import web

from geo.crs import wgs84_to_gcj02

from .conftest import Live, Tab, serve


@pytest.fixture(scope="module")
async def tiles() -> AsyncIterator[tuple[str, list[str]]]:
    """A tile server on loopback that logs what it is asked for."""
    ok, png = cv2.imencode(".png", np.full((256, 256, 3), 236, np.uint8))
    assert ok
    body = png.tobytes()
    asked: list[str] = []

    async def tile(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=body, content_type="image/png")

    app = web.Application()
    app.router.add_get("/tiles/{z}/{x}/{y}.png", tile)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/tiles/{{z}}/{{x}}/{{y}}.png", asked
    await runner.cleanup()


@pytest.fixture(scope="module")
def gcj_server(
    database_url: str,
    schema: str,
    tiles: tuple[str, list[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    url, _ = tiles
    with serve(
        database_url,
        schema,
        tmp_path_factory.mktemp("serve-gcj"),
        CAMREG_MAP_TILES_URL=url,
        CAMREG_MAP_TILES_CRS="gcj02",
    ) as live:
        yield live


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = (lon + 180.0) / 360.0 * n
    y = (1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n
    return int(x), int(y)


async def test_gcj02_tiles_show_wgs84_cameras_on_their_gcj02_tile(
    gcj_server: Live, tiles: tuple[str, list[str]], tab: Tab
) -> None:
    _, asked = tiles
    cam = await gcj_server.api(
        "POST",
        "/api/v1/cameras",
        json={"name": "火星坐标测试", "region_code": "140105", "level": 3,
              "lon": 112.5650, "lat": 37.8120},
    )  # fmt: skip
    z = 18
    await tab.sign_in(gcj_server.base, gcj_server.admin, f"#{z}/37.81200/112.56500")
    await tab.settle()
    page = tab.page
    assert any(p.startswith(f"/tiles/{z}/") for p in asked), asked[:5]
    glon, glat = (float(v) for v in wgs84_to_gcj02(cam["lon"], cam["lat"]))
    gx, gy = _tile(glon, glat, z)
    wx, wy = _tile(cam["lon"], cam["lat"], z)
    assert (gx, gy) != (wx, wy)  # the shift is several tiles here
    marker = await page.locator(f".cam[data-id='{cam['id']}']").bounding_box()
    tile = await page.locator(f"img.leaflet-tile[src$='/{z}/{gx}/{gy}.png']").bounding_box()
    assert marker and tile
    cx, cy = marker["x"] + marker["width"] / 2, marker["y"] + marker["height"] / 2
    assert tile["x"] <= cx <= tile["x"] + tile["width"]
    assert tile["y"] <= cy <= tile["y"] + tile["height"]
    await tab.shot("gcj02-tiles")
    assert tab.errors == []
