"""Status notifications are per schema: NOTIFY is database-wide, deployments are not."""

from __future__ import annotations

import asyncio

import asyncpg

from health.store import STATUS_CHANNEL, status_channel


def test_public_schema_keeps_the_plain_channel() -> None:
    assert status_channel("public") == STATUS_CHANNEL


def test_channels_differ_by_schema_and_fit_postgres_limit() -> None:
    long_a = "t_test_worker_frames_and_many_more_letters_0123abcd"
    long_b = "t_test_worker_frames_and_many_more_letters_0123abce"
    names = {status_channel(s) for s in ("a", "b", long_a, long_b)}
    assert len(names) == 4
    assert all(len(n.encode()) <= 63 for n in names)


async def test_a_listener_hears_only_its_own_schema(database_url: str) -> None:
    heard: list[str] = []
    listener = await asyncpg.connect(database_url)
    sender = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(
            status_channel("schema_one"), lambda *args: heard.append(args[3])
        )
        await sender.execute("SELECT pg_notify($1, 'other')", status_channel("schema_two"))
        await sender.execute("SELECT pg_notify($1, 'mine')", status_channel("schema_one"))
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        assert heard == ["mine"]
    finally:
        await listener.close()
        await sender.close()
