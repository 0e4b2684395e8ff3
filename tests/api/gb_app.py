"""The service with its GB/T 28181 SIP server on loopback, as the GB tests build it: each test
module passes what it tunes (timeouts, the media server, the relay, the health worker)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.app import Database, create_app
from camera_registry.config import Gb28181Settings, Relay, Settings

SERVER_ID = "14000000002000000001"
RELAY_SECRET = "relay-hook-secret-0123456789"

# the media server's FLV output of a GB stream, signed for the relay's hooks
ZLM_RELAY = Relay(
    name="zlm",
    urls={"flv": "http://127.0.0.1:8081/rtp/{stream_key}.live.flv?sign={sign}"},
    secret=RELAY_SECRET,
)


def gb_app(
    settings: Settings,
    database_url: str,
    schema: str,
    *,
    relay: Relay | None = None,
    run_health: bool = False,
    **gb: Any,
) -> web.Application:
    """`gb` are the module's Gb28181Settings fields besides the SIP address and server ID."""
    update: dict[str, Any] = {
        "gb28181": Gb28181Settings(sip_host="127.0.0.1", sip_port=0, server_id=SERVER_ID, **gb)
    }
    if relay is not None:
        update["relays"] = (relay,)
    return create_app(
        settings.model_copy(update=update),
        Database(dsn=database_url, schema=schema),
        run_sip=True,
        run_health=run_health,
    )


def channel_item(item_id: str, status: str, parent: str) -> str:
    """One camera channel of `parent`'s catalog, in 140105 with a position and level 3."""
    return (
        f"<Item><DeviceID>{item_id}</DeviceID><Name>通道</Name><CivilCode>140105</CivilCode>"
        f"<ParentID>{parent}</ParentID><Status>{status}</Status><Longitude>112.55</Longitude>"
        "<Latitude>37.87</Latitude><Info><PoType>3</PoType></Info></Item>"
    )
