"""The landing page at `/` until the web map lands: what is running and where to go next."""

from __future__ import annotations

from aiohttp import web

from .routes import route

_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>雪亮工程 摄像机台账 · camera registry</title>
<style>body{font:16px/1.6 system-ui,sans-serif;max-width:46em;margin:3em auto;padding:0 1em}
code{background:#f3f3f3;padding:0 .3em}</style></head><body>
<h1>雪亮工程 摄像机台账服务</h1>
<p>The camera registry is running. 接口文档 (API description):
<a href="/api/v1/openapi.json">/api/v1/openapi.json</a> · 健康检查 <a href="/healthz">/healthz</a>
· 监控指标 <a href="/metrics">/metrics</a></p>
<p>Every <code>/api/v1</code> call needs <code>Authorization: Bearer &lt;token&gt;</code>;
<code>make run</code> printed an admin token and saved it to <code>.camreg/admin.token</code>.
Try <code>curl -H "Authorization: Bearer $(cat .camreg/admin.token)"
http://127.0.0.1:8080/api/v1/regions/14/summary</code>.</p>
</body></html>"""


@route("GET", "/", "Landing page", None, tag="system", responses={200: "HTML"})
async def index(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")
