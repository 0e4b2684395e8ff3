"""Real peers for the cascade tests: SIPp as an upper platform, cameras seeded over the API.

The SIPp scenario is a template (`@@NAME@@` placeholders, so SIPp's own `[keywords]` stay
untouched): the test decides how the platform answers a bad digest and when it queries.
"""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from api.cascade.client import UpstreamClient
from api.state import BOX, POOL
from camera_registry.config import UpstreamSettings
from tests.conftest import Tok, camera
from tests.ingest.gb28181.peers import free_udp_port, sipp_binary

SCENARIOS = Path(__file__).resolve().parent / "sipp"
UPPER_ID = "14000000002000000001"
UPPER_DOMAIN = "1400000000"
LOCAL_ID = "14010000002000000001"
PASSWORD = "upper-secret-1"


def upstream_settings(port: int, **over: Any) -> UpstreamSettings:
    data: dict[str, Any] = {
        "name": "province",
        "server_id": UPPER_ID,
        "host": "127.0.0.1",
        "port": port,
        "transport": "udp",
        "password": PASSWORD,
        "local_id": LOCAL_ID,
        "keepalive_s": 0.5,
        "keepalive_misses": 3,
        "regions": ["1401"],
        "catalog_group_size": 3,
    }
    data.update(over)
    return UpstreamSettings.model_validate(data)


def make_client(client: TestClient, settings: UpstreamSettings, **kw: Any) -> UpstreamClient:
    return UpstreamClient(
        str(uuid.uuid4()),
        settings,
        client.app[POOL],
        client.app[BOX],
        t1=0.1,
        backoff_base_s=kw.pop("backoff_base_s", 30.0),
        **kw,
    )


CITY_CAMERAS = [
    camera(gb_id=f"1401050000132000000{i}", name=f"迎泽大街{i}号", lon=112.56 + i / 1000)
    for i in range(1, 6)
] + [
    camera(gb_id=f"1401060000132000000{i}", name=f"长风街{i}", lon=112.58, lat=37.80 + i / 1000)
    for i in range(1, 3)
]
OUTSIDE = camera(gb_id="11010100001320000001", name="天安门东", lon=116.40, lat=39.90)
CIVIL_NODES = ["14", "1401", "140105", "140106"]


async def seed(client: TestClient, auth: Tok) -> None:
    headers = await auth("admin")
    for body in [*CITY_CAMERAS, OUTSIDE]:
        resp = await client.post("/api/v1/cameras", json=body, headers=headers)
        assert resp.status in (201, 409), await resp.text()


class UpperPlatform:
    """SIPp acting as the upper platform, listening on loopback."""

    def __init__(
        self,
        workdir: Path,
        *,
        fail: str = "403 Forbidden",
        expires: int = 3600,
        query_after_ms: int = 300,
        transport: str = "u1",
        charset: str = "GB2312",
        password: str = PASSWORD,
        port: int | None = None,
        scenario: str = "upper_platform.xml",
        watch_ms: int = 1000,
        keys: dict[str, str] | None = None,
        message_answer: str = "200 OK",
    ) -> None:
        self.workdir = workdir
        self.port = port or free_udp_port()
        text = (SCENARIOS / scenario).read_text(encoding="utf-8")
        text = (
            text.replace("@@FAIL@@", fail)
            .replace("@@EXPIRES@@", str(expires))
            .replace("@@QUERY_AFTER_MS@@", str(query_after_ms))
            .replace("@@WATCH_MS@@", str(watch_ms))
            .replace("@@MESSAGE_ANSWER@@", message_answer)
        )
        self.scenario = workdir / scenario
        self.scenario.write_text(text, encoding="utf-8")
        keys = {
            "local_id": LOCAL_ID,
            "password": password,
            "domain": UPPER_DOMAIN,
            "server_id": UPPER_ID,
            "charset": charset,
            **(keys or {}),
        }
        self.args = [
            sipp_binary(), "-sf", str(self.scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", str(self.port), "-t", transport, "-nostdin", "-trace_msg", "-trace_err",
            "-timeout", "60s",
        ]  # fmt: skip
        for name, value in keys.items():
            self.args += ["-key", name, value]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> UpperPlatform:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.3)  # SIPp binds its socket
        return self

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def trace(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.workdir.glob("*_messages.log")))

    def errors(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_errors.log"))
        )

    def received_catalog(self) -> tuple[set[int], list[str], list[int]]:
        """(SumNum values, DeviceIDs of every item, Num per message) as SIPp received them."""
        sums: set[int] = set()
        ids: list[str] = []
        nums: list[int] = []
        for block in re.split(rb"\n-{20,}", self.trace()):
            if b"message received" not in block or b"<CmdType>Catalog</CmdType>" not in block:
                continue
            if b"<Response>" not in block:
                continue
            text = block.decode("utf-8" if b'encoding="UTF-8"' in block else "gb18030", "replace")
            sums.update(int(m) for m in re.findall(r"<SumNum>(\d+)</SumNum>", text))
            nums += [int(m) for m in re.findall(r'<DeviceList Num="(\d+)">', text)]
            for item in re.findall(r"<Item>(.*?)</Item>", text, re.S):
                ids.append(re.search(r"<DeviceID>(\d+)</DeviceID>", item).group(1))  # type: ignore[union-attr]
        return sums, ids, nums


async def wait_for(predicate: Any, within_s: float = 15.0, what: str = "condition") -> None:
    """Poll a condition of a live peer (state kept by our client, not an event we own)."""
    try:
        async with asyncio.timeout(within_s):
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what}: not reached within {within_s} s") from None
