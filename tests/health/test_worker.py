"""Probe workers against the real database and real RTSP endpoints on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from health import store
from health.worker import Worker, WorkerConfig

from ..conftest import Tok, camera, schema_dsn

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=framesize:96 640-360\r\n"
)


class Nvr:
    """A loopback RTSP host serving any channel path; counts concurrent sessions."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.active = 0
        self.peak = 0
        self.describes: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, uri, _ = head.split("\r\n", 1)[0].split(" ")
                cseq = next(
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.lower().startswith("cseq")
                )
                await asyncio.sleep(self.delay)
                if method == "DESCRIBE":
                    self.describes.append(uri)
                    body = SDP.encode()
                    writer.write(
                        f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp"
                        f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                else:
                    writer.write(
                        f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE"
                        "\r\n\r\n".encode()
                    )
                await writer.drain()
        finally:
            self.active -= 1
            writer.close()


@contextlib.asynccontextmanager
async def nvr_on_loopback(nvr: Nvr) -> AsyncIterator[int]:
    server = await asyncio.start_server(nvr.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _register(
    client: TestClient, auth: Tok, n: int, uri: str, start: int, level: int = 2
) -> list[str]:
    h = await auth("admin")
    ids = []
    for i in range(n):
        body = camera(
            gb_id=f"140105000013250{start + i:05d}",
            level=level,
            record_days=30,
            streams={"main": f"{uri}/ch{i}/main", "sub": f"{uri}/ch{i}/sub"},
        )
        resp = await client.post("/api/v1/cameras", json=body, headers=h)
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["id"])
    return ids


async def _only_due(client: TestClient, ids: list[str]) -> None:
    """Make `ids` due now and every other camera of the module's schema due in an hour."""
    await client.app[POOL].execute(
        """UPDATE camera_health SET next_probe_at = CASE
               WHEN camera_id = ANY($1::uuid[]) THEN now() ELSE now() + interval '1 hour' END""",
        ids,
    )


async def _make_due(client: TestClient, ids: list[str]) -> None:
    await client.app[POOL].execute(
        "UPDATE camera_health SET next_probe_at = now() WHERE camera_id = ANY($1::uuid[])", ids
    )


async def _statuses(client: TestClient, ids: list[str]) -> list[str]:
    rows = await client.app[POOL].fetch(
        "SELECT status FROM cameras WHERE id = ANY($1::uuid[])", ids
    )
    return sorted(r["status"] for r in rows)


async def test_probes_move_cameras_online_and_offline_with_hysteresis(
    client: TestClient, auth: Tok
) -> None:
    nvr = Nvr()
    async with nvr_on_loopback(nvr) as port:
        up = await _register(client, auth, 3, f"rtsp://127.0.0.1:{port}", 100)
        down = await _register(client, auth, 2, "rtsp://127.0.0.1:9", 200)  # closed port
        worker = Worker(client.app[POOL], client.app[BOX], WorkerConfig(batch=50))
        seen: list[tuple[list[str], list[str]]] = []
        for _ in range(3):
            await _make_due(client, up + down)
            await worker.run_once()
            seen.append((await _statuses(client, up), await _statuses(client, down)))
    # online after 2 successes, offline after 3 failures, nothing decided after one probe
    assert seen[0] == (["unknown"] * 3, ["unknown"] * 2)
    assert seen[1] == (["online"] * 3, ["unknown"] * 2)
    assert seen[2] == (["online"] * 3, ["offline"] * 2)
    assert all(uri.endswith("/sub") for uri in nvr.describes)  # the sub stream is preferred
    h = await auth("planner")
    health = await (await client.get(f"/api/v1/cameras/{down[0]}/health", headers=h)).json()
    assert health["status"] == "offline" and health["consecutive_failures"] == 3
    assert health["last_probe"]["failure"] == "unreachable"
    assert [t["new"] for t in health["transitions"]] == ["offline"]
    ok = await (await client.get(f"/api/v1/cameras/{up[0]}/health", headers=h)).json()
    assert ok["last_probe"]["sdp"]["width"] == 640 and ok["last_probe"]["ok"] is True
    kpis = await (await client.get("/api/v1/kpis?region=140105", headers=h)).json()
    row = kpis["items"][0]
    assert row["online"] >= 3 and row["offline"] >= 2
    assert row["online_rate"] == pytest.approx(row["online"] / row["registered"])


async def test_two_workers_share_the_queue_and_never_probe_a_camera_twice(
    client: TestClient, auth: Tok
) -> None:
    nvr = Nvr(delay=0.02)
    async with nvr_on_loopback(nvr) as port:
        ids = await _register(client, auth, 12, f"rtsp://127.0.0.1:{port}", 300)
        await _only_due(client, ids)
        cfg = WorkerConfig(batch=4, per_host=16)  # this test is about the queue, not the cap
        a = Worker(client.app[POOL], client.app[BOX], cfg, owner="w-a")
        b = Worker(client.app[POOL], client.app[BOX], cfg, owner="w-b")
        for _ in range(3):
            await asyncio.gather(a.run_once(), b.run_once())
    assert a.probed > 0 and b.probed > 0 and a.probed + b.probed == 12
    assert len(nvr.describes) == 12 and len(set(nvr.describes)) == 12


async def test_a_killed_workers_leases_are_taken_over_after_expiry(
    client: TestClient, auth: Tok
) -> None:
    ids = await _register(client, auth, 3, "rtsp://127.0.0.1:9", 400)
    await _only_due(client, ids)
    pool, box = client.app[POOL], client.app[BOX]
    dead = await store.lease(pool, box, "w-dead", batch=10, lease_s=0.5)  # then SIGKILL
    assert len(dead) == 3
    heir = Worker(pool, box, WorkerConfig(batch=10), owner="w-heir")
    assert await heir.run_once() == 0  # still leased
    await asyncio.sleep(0.6)
    assert await heir.run_once() == 3
    # The dead worker's late report is refused: its lease is gone.
    from health.status import initial_state

    late = await store.record(
        pool,
        "w-dead",
        dead[0],
        state=initial_state(0.0),
        transition=None,
        probe={},
        failures=0,
        next_in_s=60,
    )
    assert late is False


async def test_an_nvr_host_never_gets_more_than_its_session_cap(
    client: TestClient, auth: Tok
) -> None:
    nvr = Nvr(delay=0.05)
    async with nvr_on_loopback(nvr) as port:
        ids = await _register(client, auth, 16, f"rtsp://127.0.0.1:{port}", 500)
        await _only_due(client, ids)
        workers = [
            Worker(
                client.app[POOL],
                client.app[BOX],
                WorkerConfig(batch=16, per_host=4),
                owner=f"w-{i}",
            )
            for i in range(2)
        ]
        leased = 0
        async with asyncio.timeout(30):
            while leased < 16:  # two workers, one cap: the host's budget is shared
                leased += sum(await asyncio.gather(*(w.run_once() for w in workers)))
    assert 1 < nvr.peak <= 4
    assert len(nvr.describes) == 16


async def test_probe_now_answers_with_the_recorded_result(client: TestClient, auth: Tok) -> None:
    nvr = Nvr()
    async with nvr_on_loopback(nvr) as port:
        (cid,) = await _register(client, auth, 1, f"rtsp://127.0.0.1:{port}", 600)
        resp = await client.post(f"/api/v1/cameras/{cid}/probe", headers=await auth("commander"))
        body: dict[str, Any] = await resp.json()
    assert resp.status == 200 and body["probed"] is True
    assert body["last_probe"]["ok"] is True and body["consecutive_failures"] == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'camreg_probes_total{result="ok"}' in metrics
    assert "camreg_probe_duration_seconds_bucket" in metrics


async def test_status_changes_stream_to_listeners_in_scope_only(
    client: TestClient, auth: Tok
) -> None:
    mine = await _register(client, auth, 1, "rtsp://127.0.0.1:9", 700)
    h = await auth("admin")
    body = camera(
        gb_id="14021100001325000701", lon=113.3, lat=40.08, streams={"main": "rtsp://127.0.0.1:9/x"}
    )
    other = [(await (await client.post("/api/v1/cameras", json=body, headers=h)).json())["id"]]
    ids = mine + other
    await _only_due(client, ids)
    worker = Worker(client.app[POOL], client.app[BOX], WorkerConfig(batch=10))
    taiyuan = await auth("commander", "1401")
    async with client.get("/api/v1/events", headers=taiyuan) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        for _ in range(3):  # three failures: offline
            await _make_due(client, ids)
            await worker.run_once()
        lines: list[str] = []
        async with asyncio.timeout(5):
            while not any(line.startswith("data:") for line in lines):
                lines.append((await stream.content.readline()).decode().strip())
        with contextlib.suppress(TimeoutError):  # anything else that would arrive, arrives now
            async with asyncio.timeout(1):
                while True:
                    lines.append((await stream.content.readline()).decode().strip())
    events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert [(e["camera_id"], e["new"]) for e in events] == [(mine[0], "offline")]
    assert "event: status" in lines


async def test_worker_processes_share_the_load_and_survive_a_sigkill_mid_lease(
    client: TestClient, auth: Tok, database_url: str, schema: str, settings: Any
) -> None:
    """Two `camreg worker` processes; the first is SIGKILLed while it holds leases: its
    cameras are taken over after the lease expires, and every camera ends up probed."""
    import os
    import signal
    import sys

    nvr = Nvr(delay=0.4)
    async with nvr_on_loopback(nvr) as port:
        ids = await _register(client, auth, 8, f"rtsp://127.0.0.1:{port}", 800)
        await _only_due(client, ids)
        env = {
            **os.environ,
            "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
            "CAMREG_DATA_DIR": str(settings.data_dir),
            "CAMREG_SECRET_KEY": settings.secret_key.get_secret_value(),
        }
        cmd = [
            sys.executable,
            "-m",
            "api.cli",
            "worker",
            "--batch",
            "8",
            "--lease-seconds",
            "2",
            "--per-host",
            "2",
        ]
        doomed = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=asyncio.subprocess.DEVNULL
        )
        async with asyncio.timeout(30):  # until it holds leases and has sessions open
            while nvr.active == 0:  # noqa: ASYNC110 - polling another process's effect
                await asyncio.sleep(0.05)
        held = await client.app[POOL].fetchval(
            "SELECT count(*) FROM camera_health WHERE lease_owner IS NOT NULL "
            "AND camera_id = ANY($1::uuid[])",
            ids,
        )
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
        assert held == 2  # as much of the host as the cap allows, when it died
        survivors = [
            await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.DEVNULL)
            for _ in range(2)
        ]
        try:
            unprobed = (
                "SELECT count(*) FROM camera_health WHERE last_probe_at IS NULL "
                "AND camera_id = ANY($1::uuid[])"
            )
            async with asyncio.timeout(60):
                while await client.app[POOL].fetchval(unprobed, ids):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # other processes' work shows only in the database
        finally:
            for p in survivors:
                p.send_signal(signal.SIGTERM)
            for p in survivors:
                await asyncio.wait_for(p.wait(), 30)
    assert all(p.returncode == 0 for p in survivors)
    assert nvr.peak <= 2  # the per-host cap held across the run
    owners = await client.app[POOL].fetch(
        "SELECT last_probe->>'ok' AS ok FROM camera_health WHERE camera_id = ANY($1::uuid[])", ids
    )
    assert [r["ok"] for r in owners] == ["true"] * 8


async def test_worker_refuses_zero_frame_processes_with_a_message() -> None:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "worker",
        "--frames",
        "--frame-processes",
        "0",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"--frame-processes must be at least 1" in err


async def test_a_worker_process_serves_its_own_probe_metrics(
    client: TestClient, auth: Tok, database_url: str, schema: str, settings: Any
) -> None:
    """A `camreg worker` elsewhere probes cameras the API never sees: it is scraped itself."""
    import os
    import signal
    import sys

    import aiohttp

    nvr = Nvr()
    async with nvr_on_loopback(nvr) as port:
        ids = await _register(client, auth, 3, f"rtsp://127.0.0.1:{port}", 900)
        await _only_due(client, ids)
        env = {
            **os.environ,
            "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
            "CAMREG_DATA_DIR": str(settings.data_dir),
            "CAMREG_SECRET_KEY": settings.secret_key.get_secret_value(),
        }
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "api.cli", "worker", "--metrics-port", "0"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                line = await proc.stdout.readline()
                assert line.startswith(b"metrics on http://127.0.0.1:"), line
                url = line.split()[-1].decode()
                while len(nvr.describes) < 3:  # noqa: ASYNC110 - another process's effect
                    await asyncio.sleep(0.1)
                async with aiohttp.ClientSession() as http:
                    text = ""
                    while 'camreg_probes_total{result="ok"} 3.0' not in text:
                        await asyncio.sleep(0.1)
                        async with http.get(url) as resp:
                            assert resp.status == 200
                            text = await resp.text()
            assert "camreg_probe_duration_seconds_count 3.0" in text
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def test_a_batch_is_stored_together_and_a_lost_lease_skips_only_its_own_record(
    client: TestClient, auth: Tok
) -> None:
    nvr = Nvr(delay=0.3)
    pool = client.app[POOL]
    async with nvr_on_loopback(nvr) as port:
        ids = await _register(client, auth, 3, f"rtsp://127.0.0.1:{port}", 1000)
        await _only_due(client, ids)
        worker = Worker(pool, client.app[BOX], WorkerConfig(batch=10, per_host=16), owner="w-b")
        task = asyncio.create_task(worker.run_once())
        async with asyncio.timeout(10):
            while nvr.active < 3:  # noqa: ASYNC110 - every probe of the batch is in flight
                await asyncio.sleep(0.01)
        # Another worker took this camera over (as after an expiry) while the batch probed.
        await pool.execute(
            "UPDATE camera_health SET lease_owner = 'w-thief' WHERE camera_id = $1", ids[0]
        )
        assert await task == 3
    rows = {
        str(r["camera_id"]): r
        for r in await pool.fetch(
            """SELECT camera_id, last_probe_at, lease_owner FROM camera_health
               WHERE camera_id = ANY($1::uuid[])""",
            ids,
        )
    }
    assert rows[ids[0]]["last_probe_at"] is None and rows[ids[0]]["lease_owner"] == "w-thief"
    for cam in ids[1:]:
        assert rows[cam]["last_probe_at"] is not None and rows[cam]["lease_owner"] is None
    # The batch committed once: every stored probe carries the same transaction time.
    assert rows[ids[1]]["last_probe_at"] == rows[ids[2]]["last_probe_at"]
