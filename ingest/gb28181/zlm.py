"""The few ZLMediaKit HTTP API calls live GB/T 28181 video needs: open and close an RTP server.

GB/T 28181 devices push PS over RTP to a port the media server opened for the stream
(`/index/api/openRtpServer`); players then read the media server's FLV/HLS/RTSP output. We
never touch the media ourselves. Every call has a timeout, and a non-zero `code` in ZLMediaKit's
answer is an error naming the call and the server's message.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ingest.gb28181.errors import Gb28181Error

TCP_MODES = {"udp": 0, "passive": 1, "active": 2}
RTP_APP = "rtp"
"""The app ZLMediaKit files a stream opened by `openRtpServer` under."""


class MediaServerError(Gb28181Error):
    """The media server refused or failed an API call, or could not be reached."""


class ZlmClient:
    def __init__(
        self, session: aiohttp.ClientSession, api_url: str, secret: str, *, timeout_s: float = 5.0
    ) -> None:
        self.session = session
        self.api_url = api_url.rstrip("/")
        self._secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:
        return f"ZlmClient({self.api_url}, <secret>)"

    async def _get(self, name: str, **params: str | int) -> dict[str, Any]:
        """One API call's JSON answer, whatever its `code`."""
        query = {"secret": self._secret, **{k: str(v) for k, v in params.items()}}
        try:
            async with self.session.get(
                f"{self.api_url}/index/api/{name}", params=query, timeout=self.timeout
            ) as resp:
                if resp.status != 200:
                    raise MediaServerError(f"media server {name}: HTTP {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise MediaServerError(f"media server {name} failed: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise MediaServerError(f"media server {name} refused: not a JSON object")
        return body

    async def _call(self, name: str, **params: str | int) -> dict[str, Any]:
        body = await self._get(name, **params)
        if body.get("code") != 0:
            raise MediaServerError(f"media server {name} refused: {str(body.get('msg'))[:200]}")
        return body

    async def open_rtp_server(self, stream_id: str, *, tcp_mode: str = "udp") -> int:
        """Open a port for `stream_id`'s RTP; returns the port the device must send to."""
        body = await self._call(
            "openRtpServer", port=0, tcp_mode=TCP_MODES[tcp_mode], stream_id=stream_id
        )
        port = body.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise MediaServerError("media server openRtpServer answered no port")
        return port

    async def close_rtp_server(self, stream_id: str) -> bool:
        body = await self._call("closeRtpServer", stream_id=stream_id)
        return bool(body.get("hit", 0))

    async def stream_online(self, stream_id: str, *, app: str = "rtp") -> bool:
        """Whether the media server has the stream (its RTP arrived and was demuxed), so
        its outputs can be read."""
        body = await self._call(
            "getMediaList", schema="rtsp", vhost="__defaultVhost__", app=app, stream=stream_id
        )
        data = body.get("data")
        return isinstance(data, list) and len(data) > 0

    async def reader_count(self, app: str, stream: str) -> int:
        """Players reading app/stream on the media server (0 when the stream is gone)."""
        body = await self._get(
            "getMediaInfo", schema="rtsp", vhost="__defaultVhost__", app=app, stream=stream
        )
        if body.get("code") != 0 or body.get("online") is False:
            return 0  # ZLMediaKit answers "not found" (or online: false) for a gone stream
        inner = body.get("data")
        data: dict[str, Any] = inner if isinstance(inner, dict) else body
        count = data.get("totalReaderCount", data.get("readerCount", 0))
        return count if isinstance(count, int) and count > 0 else 0
