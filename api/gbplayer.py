"""Live video of GB/T 28181 channels through the media server (ZLMediaKit)."""

from __future__ import annotations

import asyncio
import contextlib

from camera_registry.config import MediaServer
from camera_registry.errors import TooManyRequests
from camera_registry.store.gb28181 import GbDevices
from camera_registry.store.streams import stream_key
from ingest.gb28181.errors import Gb28181Error, TransactionTimeout
from ingest.gb28181.server import PlaySession, SipServer
from ingest.gb28181.zlm import ZlmClient


class GbPlayer:
    """Live video of GB/T 28181 channels: one media leg per stream key, opened on demand.

    A stream link for a GB channel opens an RTP port on the media server and INVITEs the
    channel to send there; the leg is torn down (BYE + closeRtpServer) when the media server
    reports no reader, the device hangs up, or the server stops. At most
    `max_sessions_per_device` legs per device, like the RTSP probes' per-host cap.
    """

    def __init__(
        self, sip: SipServer, store: GbDevices, zlm: ZlmClient, media: MediaServer
    ) -> None:
        self.sip = sip
        self.store = store
        self.zlm = zlm
        self.media = media
        self.sessions: dict[str, PlaySession] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    async def ensure(self, camera_id: str, profile: str) -> bool:
        """Make sure the channel streams to the media server; False if not a GB channel."""
        channel = await self.store.channel_of_camera(camera_id)
        if channel is None:
            return False
        device_id, channel_id, gb_id = channel
        key = stream_key(gb_id, profile)
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self.sessions:
                return True
            live = sum(1 for s in self.sessions.values() if s.device_id == device_id)
            if live >= self.media.max_sessions_per_device:
                raise TooManyRequests(
                    f"device {device_id} already streams {live} channels "
                    f"(max_sessions_per_device = {self.media.max_sessions_per_device}); "
                    "try again when one is closed",
                    "5",
                )
            port = await self.zlm.open_rtp_server(key, tcp_mode=self.media.tcp_mode)
            try:
                async with asyncio.timeout(self.media.invite_timeout_s):
                    session = await self.sip.invite(
                        device_id,
                        channel_id,
                        media_ip=self.media.rtp_ip,
                        media_port=port,
                        tcp=None if self.media.tcp_mode == "udp" else self.media.tcp_mode,
                    )
            except (Gb28181Error, TimeoutError) as exc:
                await self._close_port(key)
                if isinstance(exc, TimeoutError):
                    raise TransactionTimeout(
                        f"channel {channel_id} did not answer the INVITE within "
                        f"{self.media.invite_timeout_s} s"
                    ) from None
                raise
            self.sessions[key] = session
        self._opening.pop(key, None)
        return True

    async def stop(self, key: str, reason: str) -> bool:
        session = self.sessions.pop(key, None)
        if session is None:
            return False
        with contextlib.suppress(Gb28181Error):
            await self.sip.bye(session, reason)
        await self._close_port(key)
        return True

    async def ended(self, session: PlaySession) -> None:
        """The device hung up: forget the leg and close its port."""
        for key, s in list(self.sessions.items()):
            if s is session:
                del self.sessions[key]
                await self._close_port(key)

    async def close_all(self) -> None:
        for key in list(self.sessions):
            await self.stop(key, "server stopping")

    async def _close_port(self, key: str) -> None:
        with contextlib.suppress(Gb28181Error):
            await self.zlm.close_rtp_server(key)
