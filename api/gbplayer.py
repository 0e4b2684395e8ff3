"""Live video of GB/T 28181 channels through the media server (ZLMediaKit)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from camera_registry.config import MediaServer
from camera_registry.errors import TooManyRequests
from camera_registry.store.gb28181 import GbDevices
from camera_registry.store.streams import stream_key
from ingest.gb28181.errors import Gb28181Error, TransactionTimeout
from ingest.gb28181.server import PlaySession, SipServer
from ingest.gb28181.zlm import RTP_APP, ZlmClient


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
        self.holds: dict[str, int] = {}  # stream key → upper platforms' views relaying it
        # told the stream key when a device hangs up, so views relaying it end too
        self.on_ended: list[Callable[[str], Awaitable[None]]] = []
        self._opening: dict[str, asyncio.Lock] = {}

    async def ensure(self, camera_id: str, profile: str) -> bool:
        """Make sure the channel streams to the media server; False if not a GB channel."""
        return await self._open(camera_id, profile) is not None

    async def hold(self, camera_id: str, profile: str = "main") -> str | None:
        """Open the leg for an upper platform's view and keep it open until `release`.

        The media server's no-reader hook cannot see an RTP sender as a reader on every
        version, so a held leg is closed only by `release` (or the device hanging up).
        Returns the stream key (app `rtp`), or None when the camera is not a GB channel.
        """
        key = await self._open(camera_id, profile)
        if key is not None:
            self.holds[key] = self.holds.get(key, 0) + 1
        return key

    async def release(self, key: str) -> None:
        """An upper platform's view ended: close the leg unless someone else still reads it."""
        left = self.holds.get(key, 0) - 1
        if left > 0:
            self.holds[key] = left
            return
        self.holds.pop(key, None)
        try:
            readers = await self.zlm.reader_count(RTP_APP, key)
        except Gb28181Error:
            readers = 0  # the media server cannot say: a leaked device session is worse
        if readers == 0:
            await self.stop(key, "upper platform view ended")

    async def _open(self, camera_id: str, profile: str) -> str | None:
        channel = await self.store.channel_of_camera(camera_id)
        if channel is None:
            return None
        device_id, channel_id, gb_id = channel
        key = stream_key(gb_id, profile)
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self.sessions:
                return key
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
        return key

    async def stop(self, key: str, reason: str, *, force: bool = False) -> bool:
        """BYE and close the port; a leg an upper platform holds stays open unless forced."""
        if key in self.holds and not force:
            return False
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
                self.holds.pop(key, None)
                await self._close_port(key)
                for listener in list(self.on_ended):
                    await listener(key)

    async def close_all(self) -> None:
        for key in list(self.sessions):
            await self.stop(key, "server stopping", force=True)

    async def _close_port(self, key: str) -> None:
        with contextlib.suppress(Gb28181Error):
            await self.zlm.close_rtp_server(key)
