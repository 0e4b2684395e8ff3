"""Live video of GB/T 28181 channels through the media server (ZLMediaKit)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from camera_registry.config import MediaServer
from camera_registry.errors import RegistryError, TooManyRequests
from camera_registry.store.gb28181 import GbDevices
from camera_registry.store.streams import INTERNAL_READER, LinkClaims, LinkSigner, stream_key
from health.errors import MediaBusy, MediaUnavailable
from health.media import MediaOpener
from ingest.gb28181.errors import Gb28181Error, TransactionTimeout
from ingest.gb28181.server import PlaySession, SipServer
from ingest.gb28181.zlm import RTP_APP, ZlmClient

DIAGNOSIS_PROFILE = "main"  # a GB channel has one stream: share the viewers' leg
OUTPUT_LINK_S = 300  # how long the sign in a diagnosis read's URL is good for


class GbPlayer:
    """Live video of GB/T 28181 channels: one media leg per stream key, opened on demand.

    A stream link for a GB channel opens an RTP port on the media server and INVITEs the
    channel to send there; the leg is torn down (BYE + closeRtpServer) when the media server
    reports no reader, the device hangs up, or the server stops. At most
    `max_sessions_per_device` legs per device, like the RTSP probes' per-host cap; legs being
    opened count, so a video wall of one NVR's channels cannot overbook it.

    Frame diagnosis borrows legs too (`opener`): it opens one when nobody watches and hangs
    up when done, unless a viewer asked for the channel meanwhile; a watched leg is only
    read, never closed by the diagnosis.
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
        self._pending: Counter[str] = Counter()  # legs being opened, per device
        self._viewed: set[str] = set()  # keys a viewer asked for since their leg opened

    async def ensure(self, camera_id: str, profile: str, *, viewer: bool = True) -> bool:
        """Make sure the channel streams to the media server; False if not a GB channel."""
        return await self._ensure_key(camera_id, profile, viewer=viewer) is not None

    async def hold(self, camera_id: str, profile: str = "main") -> str | None:
        """Open the leg for an upper platform's view and keep it open until `release`.

        The media server's no-reader hook cannot see an RTP sender as a reader on every
        version, so a held leg is closed only by `release` (or the device hanging up).
        Returns the stream key (app `rtp`), or None when the camera is not a GB channel.
        """
        key = await self._ensure_key(camera_id, profile, viewer=True)
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

    async def _ensure_key(self, camera_id: str, profile: str, *, viewer: bool) -> str | None:
        channel = await self.store.channel_of_camera(camera_id)
        if channel is None:
            return None
        device_id, channel_id, gb_id = channel
        key = stream_key(gb_id, profile)
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self.sessions:
                await self._open(key, device_id, channel_id)
            if viewer:
                self._viewed.add(key)
        self._opening.pop(key, None)
        return key

    async def _open(self, key: str, device_id: str, channel_id: str) -> None:
        live = sum(1 for s in self.sessions.values() if s.device_id == device_id)
        live += self._pending[device_id]
        if live >= self.media.max_sessions_per_device:
            raise TooManyRequests(
                f"device {device_id} already streams {live} channels "
                f"(max_sessions_per_device = {self.media.max_sessions_per_device}); "
                "try again when one is closed",
                "5",
            )
        self._pending[device_id] += 1
        try:
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
        finally:
            self._pending[device_id] -= 1
            if self._pending[device_id] <= 0:
                del self._pending[device_id]

    async def stop(self, key: str, reason: str, *, force: bool = False) -> bool:
        """BYE and close the port; a leg an upper platform holds stays open unless forced."""
        if key in self.holds and not force:
            return False
        session = self.sessions.pop(key, None)
        self._viewed.discard(key)
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
                self._viewed.discard(key)
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

    def opener(self, signer: LinkSigner) -> MediaOpener | None:
        """Frame diagnosis's way to a GB channel's picture (None: no `output_url` to read)."""
        template = self.media.output_url
        if template is None:
            return None

        @contextlib.asynccontextmanager
        async def open_media(camera_id: uuid.UUID) -> AsyncIterator[str]:
            key, ours = await self._borrow(camera_id)
            try:
                await self._wait_online(key)
                expires = int(time.time()) + OUTPUT_LINK_S
                sign = signer.sign(
                    LinkClaims(str(camera_id), DIAGNOSIS_PROFILE, "rtsp", INTERNAL_READER, expires)
                )
                yield template.format(stream_key=key, sign=sign)
            finally:
                if ours and key not in self._viewed:
                    await self.stop(key, "frame diagnosis done")

        return open_media

    async def _borrow(self, camera_id: uuid.UUID) -> tuple[str, bool]:
        """(stream key, whether the diagnosis opened the leg); health's errors otherwise."""
        try:
            channel = await self.store.channel_of_camera(str(camera_id))
            if channel is None:
                raise MediaUnavailable("the camera is not a live GB/T 28181 channel")
            key = stream_key(channel[2], DIAGNOSIS_PROFILE)
            ours = key not in self.sessions
            await self.ensure(str(camera_id), DIAGNOSIS_PROFILE, viewer=False)
        except TooManyRequests as exc:
            raise MediaBusy(exc.detail) from None
        except (Gb28181Error, RegistryError, OSError) as exc:
            raise MediaUnavailable(f"the channel could not be played: {exc}") from None
        return key, ours

    async def _wait_online(self, key: str) -> None:
        """Until the media server has the stream (the RTP arrived), within the INVITE's
        timeout: reading its output before would find nothing."""
        try:
            async with asyncio.timeout(self.media.invite_timeout_s):
                while True:  # the media server tells no one when a stream arrives: ask
                    if await self.zlm.stream_online(key):
                        return
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise MediaUnavailable(
                f"the channel's RTP did not reach the media server within "
                f"{self.media.invite_timeout_s} s"
            ) from None
        except Gb28181Error as exc:
            raise MediaUnavailable(str(exc)) from None
