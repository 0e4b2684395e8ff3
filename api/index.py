"""The web map page at `/` and its bundled static files (built from `web/` by `make web`).

The page is a shell: the bundle (Leaflet and our code, no CDN) does the rest with the API.
Static URLs carry a content hash (`?v=`), so a matching request is cached for a year and a new
build is fetched at once; the page itself is revalidated every time. A Content-Security-Policy
allows scripts only from this origin (no inline script) and images from the configured tiles.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from api.routes import Param, RouteTable
from api.state import SETTINGS
from camera_registry.config import Settings

ROUTES = RouteTable()

STATIC = Path(__file__).resolve().parent / "static"
_STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
STATIC_NAME = {"type": "string", "pattern": f"^{_STATIC_NAME.pattern}$"}
IMMUTABLE = "public, max-age=31536000, immutable"
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}

_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>雪亮工程 摄像机台账 · 地图</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css?v={css}">
<script type="module" src="/static/app.js?v={js}"></script>
</head><body>
<header id="bar"><h1 id="title">雪亮工程 摄像机台账 · 地图</h1><span id="who"></span>
<button id="lang" type="button">English</button>
<button id="signout" type="button" hidden>退出</button></header>
<div id="layout"><aside id="side"></aside>
<div id="mapwrap"><div id="map"></div>
<div id="hud"><span id="count"></span><span id="status"></span></div>
<div id="toasts"></div></div></div>
<noscript>这个页面需要 JavaScript。接口文档见
<a href="/api/v1/openapi.json">/api/v1/openapi.json</a>。</noscript>
</body></html>
"""


@cache
def _version(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def _csp(settings: Settings) -> str:
    img = ["'self'", "data:", "blob:"]
    if settings.map_tiles_url:
        parts = urlsplit(settings.map_tiles_url.replace("{s}", "a"))
        host = parts.hostname or ""
        if "{s}" in (urlsplit(settings.map_tiles_url).hostname or settings.map_tiles_url):
            host = "*." + host.split(".", 1)[-1]
        port = f":{parts.port}" if parts.port else ""
        img.append(f"{parts.scheme}://{host}{port}")
    relays = sorted({_origin(u) for r in settings.relays for u in r.urls.values()})
    media = " ".join(["'self'", "blob:", *relays])
    connect = " ".join(["'self'", *relays])  # the FLV/HLS players fetch from the relays
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src {' '.join(img)}; media-src {media}; connect-src {connect}; "
        "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@ROUTES.route("GET", "/", "The web map", None, tag="system", responses={200: "HTML"})
async def index(request: web.Request) -> web.Response:
    page = _PAGE.replace("{css}", _version("app.css")).replace("{js}", _version("app.js"))
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": _csp(request.app[SETTINGS]),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


@ROUTES.route(
    "GET",
    "/static/{name}",
    "The web map's bundled files (?v=<hash> from the page: cached for a year)",
    None,
    params=(Param("name", "path", "app.js, app.css, …", STATIC_NAME, required=True),),
    tag="system",
    responses={200: "the file", 404: "no such file"},
)
async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if not _STATIC_NAME.fullmatch(name):  # NUL, separators, dot-files: never a bundle file
        raise web.HTTPNotFound()
    path = (STATIC / name).resolve()
    if path.parent != STATIC or not path.is_file():
        raise web.HTTPNotFound()
    ctype = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    if ctype is None:
        raise web.HTTPNotFound()
    # chunk-<hash>.js names change with their content; the page's files carry ?v=<hash>
    fresh = path.name.startswith("chunk-") or request.query.get("v") == _version(path.name)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": f"{ctype}; charset=utf-8" if ctype.startswith("text/") else ctype,
            "Cache-Control": IMMUTABLE if fresh else "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )
