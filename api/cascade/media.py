"""The few ZLMediaKit HTTP API calls a live view upward needs.

An upper platform's INVITE is served by the media server, never by us: it pulls the camera
(`addStreamProxy`) and sends PS over RTP to the address in the INVITE (`startSendRtp`, or
`startSendRtpPassive` when the upper platform connects to us over TCP). Every call has a
timeout and ZLMediaKit's `code != 0` answers become `MediaError` with its message, so the
INVITE gets a 5xx that says why instead of hanging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from camera_registry.errors import RegistryError


class MediaError(RegistryError):
    """The media server refused or did not answer a call; the detail is its own message."""


@dataclass(frozen=True, slots=True)
class MediaServer:
    """Where the media server's API is, its secret, and the IP its RTP leaves from."""

    api_url: str  # e.g. http://127.0.0.1:8080
    secret: str
    rtp_ip: str = "127.0.0.1"
    vhost: str = "__defaultVhost__"
    app: str = "cascade"
    timeout_s: float = 10.0


class MediaClient:
    def __init__(self, server: MediaServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    async def _call(self, api: str, **params: Any) -> dict[str, Any]:
        query = {"secret": self.server.secret, **{k: str(v) for k, v in params.items()}}
        url = f"{self.server.api_url.rstrip('/')}/index/api/{api}"
        try:
            async with self.session.get(
                url, params=query, timeout=aiohttp.ClientTimeout(total=self.server.timeout_s)
            ) as resp:
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise MediaError(f"media server {api} failed: {exc or type(exc).__name__}") from None
        if not isinstance(data, dict) or data.get("code") != 0:
            msg = data.get("msg") if isinstance(data, dict) else str(data)[:200]
            raise MediaError(f"media server {api} refused: {msg}")
        return data

    async def add_stream_proxy(self, stream: str, url: str) -> str:
        """Have the media server pull `url` as app/stream; returns the proxy key."""
        data = await self._call(
            "addStreamProxy",
            vhost=self.server.vhost,
            app=self.server.app,
            stream=stream,
            url=url,
            enable_rtsp=1,
            enable_hls=0,
            enable_mp4=0,
        )
        return str((data.get("data") or {}).get("key", ""))

    async def del_stream_proxy(self, key: str) -> None:
        await self._call("delStreamProxy", key=key)

    async def start_send_rtp(
        self,
        stream: str,
        ssrc: str,
        dst_ip: str,
        dst_port: int,
        *,
        udp: bool,
        app: str | None = None,
    ) -> int:
        """Send app/stream as PS over RTP to the upper platform; returns our local port.

        `app` is our proxies' app by default; a GB channel's leg lives under `rtp`.
        """
        data = await self._call(
            "startSendRtp",
            vhost=self.server.vhost,
            app=app or self.server.app,
            stream=stream,
            ssrc=ssrc,
            dst_url=dst_ip,
            dst_port=dst_port,
            is_udp=1 if udp else 0,
            src_port=0,
        )
        return int(data.get("local_port", 0))

    async def start_send_rtp_passive(
        self, stream: str, ssrc: str, *, app: str | None = None
    ) -> int:
        """Listen for the upper platform's TCP connection and send RTP on it; returns the port."""
        data = await self._call(
            "startSendRtpPassive",
            vhost=self.server.vhost,
            app=app or self.server.app,
            stream=stream,
            ssrc=ssrc,
        )
        return int(data.get("local_port", 0))

    async def stop_send_rtp(self, stream: str, ssrc: str, *, app: str | None = None) -> None:
        await self._call(
            "stopSendRtp",
            vhost=self.server.vhost,
            app=app or self.server.app,
            stream=stream,
            ssrc=ssrc,
        )
