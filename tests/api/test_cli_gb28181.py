"""`camreg gb28181 status` as technicians run it: against a running server it shows where SIP
really listens and the live counters of a device our simulator registered; without a server
it says so and counts devices from the database; a bad config or an unreachable database is
one line naming what to fix, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.state import SIP
from camera_registry.config import Gb28181Settings, Settings
from tests.conftest import Tok, schema_dsn
from tests.ingest.gb28181.simdevice import SimDevice

SERVER_ID = "14000000002000000001"
DEVICE = "14010500001320000041"
CAMREG = [sys.executable, "-m", "api.cli"]
NOBODY = "http://127.0.0.1:9"  # discard port: nothing answers HTTP there


@pytest.fixture(scope="module")
async def gb_client(
    settings: Settings, database_url: str, schema: str
) -> AsyncIterator[TestClient]:
    gb = Gb28181Settings(
        sip_host="127.0.0.1", sip_port=0, server_id=SERVER_ID, query_on_register=False
    )
    app = create_app(
        settings.model_copy(update={"gb28181": gb}),
        Database(dsn=database_url, schema=schema),
        run_sip=True,
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def camreg(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CAMREG, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMREG_")}
    env["CAMREG_DATA_DIR"] = str(tmp_path)
    env.update(extra)
    return env


async def registered_device(client: TestClient) -> SimDevice:
    sim = await SimDevice(DEVICE, client.app[SIP].port).open()
    assert (await sim.register()).status == 200
    assert (await sim.keepalive()).status == 200
    return sim


async def test_status_shows_where_sip_listens_and_live_counters_of_the_running_server(
    gb_client: TestClient, database_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await registered_device(gb_client)
    try:
        token = (await Tok(gb_client)("technician"))["Authorization"].split()[1]
        env = clean_env(tmp_path, GB_STATUS_TOKEN=token,
                        CAMREG_DATABASE_URL=schema_dsn(database_url, schema))  # fmt: skip
        url = str(gb_client.make_url("")).rstrip("/")
        code, out, err = await camreg(
            "gb28181", "status", "--url", url, "--token-env", "GB_STATUS_TOKEN", "--json", env=env
        )
        assert code == 0, err
        shown = json.loads(out)
        assert shown["listening"] == f"127.0.0.1:{gb_client.app[SIP].port}"
        assert (shown["server_id"], shown["domain"]) == (SERVER_ID, SERVER_ID[:10])
        assert shown["devices"]["registered"] == 1 and shown["devices"]["online"] == 1
        assert shown["stats"]["registrations"]["ok"] == 1
        assert shown["stats"]["registrations"]["challenge"] == 1
        assert shown["stats"]["keepalives"] == 1
        # the human form says the same
        code, out, err = await camreg(
            "gb28181", "status", "--url", url, "--token-env", "GB_STATUS_TOKEN", env=env
        )
        assert code == 0, err
        assert f"listening   UDP 127.0.0.1:{gb_client.app[SIP].port}" in out
        assert "1 registered, 1 online" in out
        assert "registrations" in out and "ok 1" in out
    finally:
        sim.close()


async def test_without_a_server_status_says_so_and_counts_devices_in_the_database(
    gb_client: TestClient, database_url: str, schema: str, tmp_path: Path
) -> None:
    sim = await registered_device(gb_client)
    sim.close()
    env = clean_env(tmp_path, CAMREG_DATABASE_URL=schema_dsn(database_url, schema))
    code, out, err = await camreg("gb28181", "status", "--url", NOBODY, "--json", env=env)
    assert code == 0, err
    assert "no `camreg serve` answers at http://127.0.0.1:9" in err
    assert "Traceback" not in err
    shown = json.loads(out)
    assert shown["devices"]["registered"] == 1
    assert "listening" not in shown and shown["configured"] == "127.0.0.1:5060"


async def test_bad_config_and_unreachable_database_are_one_line_naming_the_fix(
    tmp_path: Path,
) -> None:
    config = tmp_path / "camreg.toml"
    config.write_text('[gb28181]\nserver_id = "1400000000200000000X"\n', encoding="utf-8")
    code, _, err = await camreg(
        "--config", str(config), "gb28181", "status", "--url", NOBODY, env=clean_env(tmp_path)
    )
    assert code == 2
    assert "gb28181.server_id" in err and "Traceback" not in err
    env = clean_env(tmp_path, CAMREG_DATABASE_URL="postgresql://postgres@127.0.0.1:9/none")
    code, _, err = await camreg("gb28181", "status", "--url", NOBODY, env=env)
    assert code == 2
    assert "cannot connect to PostgreSQL" in err and "check CAMREG_DATABASE_URL" in err
    assert "Traceback" not in err
    env = clean_env(tmp_path)
    code, _, err = await camreg(
        "gb28181", "status", "--url", NOBODY, "--token-env", "GB_UNSET_TOKEN", env=env
    )
    assert code == 2 and "GB_UNSET_TOKEN: that environment variable is not set" in err
