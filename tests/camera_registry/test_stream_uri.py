"""Stream URIs as technicians write them, and rows stored before the parser could read them."""

from __future__ import annotations

import pytest

from camera_registry.crypto import CredentialBox
from camera_registry.store.cameras import move_uri_credentials
from camera_registry.store.db import _migrations, create_pool, migrate
from camera_registry.stream_uri import StreamURI, StreamURIError, split_stream_uri


@pytest.mark.parametrize(
    ("text", "split"),
    [
        ("rtsp://10.1.1.5:554/h264", StreamURI("rtsp://10.1.1.5:554/h264", None, None)),
        ("rtsp://admin:pa#ss@10.1.1.5/x", StreamURI("rtsp://10.1.1.5/x", "admin", "pa#ss")),
        ("rtsp://admin:pa?ss@10.1.1.5/x?a=1", StreamURI("rtsp://10.1.1.5/x?a=1", "admin", "pa?ss")),
        ("rtsp://admin:pa/ss@cam.example/x", StreamURI("rtsp://cam.example/x", "admin", "pa/ss")),
        ("rtsp://admin:p@ss@10.1.1.5", StreamURI("rtsp://10.1.1.5", "admin", "p@ss")),
        ("rtsp://a%40b:p%23q@10.1.1.5/", StreamURI("rtsp://10.1.1.5/", "a@b", "p#q")),
        ("rtsp://admin@[fd00::5]:554/x", StreamURI("rtsp://[fd00::5]:554/x", "admin", None)),
        ("rtsp://:only@10.1.1.5/x", StreamURI("rtsp://10.1.1.5/x", None, "only")),
        # an '@' in the path of a URI with a real host stays in the path
        ("rtsp://cam.example/live@1", StreamURI("rtsp://cam.example/live@1", None, None)),
        ("rtsp://10.1.1.5:554/a@b.c", StreamURI("rtsp://10.1.1.5:554/a@b.c", None, None)),
        # a password with '/' before a dotted host: the host that looks like a camera's wins
        ("rtsp://admin:12/34@10.0.0.5/x", StreamURI("rtsp://10.0.0.5/x", "admin", "12/34")),
    ],
)
def test_stream_uri_splits_credentials_with_reserved_characters(
    text: str, split: StreamURI
) -> None:
    assert split_stream_uri(text) == split


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ftp://10.1.1.5/x", "rtsp://"),
        ("10.1.1.5/x", "rtsp://"),
        ("rtsp://admin:pa#ss@", "percent-encode"),
        ("rtsp://admin:pa#ss@10.1.1.5:99999/x", "percent-encode"),
        ("rtsp://admin:pa#ss@10.1.1.500/x", "percent-encode"),
        ("rtsp://[zz::1]/x", "percent-encode"),
    ],
)
def test_unreadable_stream_uri_says_how_to_write_it(text: str, words: str) -> None:
    with pytest.raises(StreamURIError, match=words):
        split_stream_uri(text)


async def test_rows_stored_with_credentials_in_uris_are_sealed_at_the_next_start(
    database_url: str, schema: str
) -> None:
    box = CredentialBox(b"k" * 32)
    [(version, name)] = [(v, n) for v, n, _ in _migrations() if n.endswith("_uri_credentials.sql")]
    pool = await create_pool(database_url, schema=schema, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            # as stored by a server before this migration: the password sits in the URI
            await conn.execute("DELETE FROM schema_migrations WHERE version = $1", version)
            await conn.execute("DROP TABLE uri_credential_moves")
            user_sealed = box.seal("keeper", None)
            assert user_sealed is not None
            await conn.execute(
                """INSERT INTO cameras (gb_id, name, level, region_code, streams, credentials,
                                        credentials_mac)
                   VALUES ('14010500001320000001', 'a', 3, '140105', $1, NULL, NULL),
                          ('14010500001320000002', 'b', 3, '140105', $2, $3, $4),
                          ('14010500001320000003', 'c', 3, '140105', $5, NULL, NULL)""",
                {"main": "rtsp://admin:pa?ss@10.1.1.5/x", "sub": "rtsp://10.1.1.5/y"},
                {"main": "rtsp://other:pa/ss@10.1.1.6/x"},
                *user_sealed,
                {"main": "rtsp://10.1.1.7/x"},
            )
            assert await migrate(conn) == [name]
        assert await move_uri_credentials(pool, box) == 2
        rows = {
            r["gb_id"][-1]: r
            for r in await pool.fetch("SELECT gb_id, streams, credentials, version FROM cameras")
        }
        assert rows["1"]["streams"] == {"main": "rtsp://10.1.1.5/x", "sub": "rtsp://10.1.1.5/y"}
        assert box.open(rows["1"]["credentials"]) == ("admin", "pa?ss")
        # the credentials stored in their own column win, the missing half comes from the URI
        assert rows["2"]["streams"] == {"main": "rtsp://10.1.1.6/x"}
        assert box.open(rows["2"]["credentials"]) == ("keeper", "pa/ss")
        assert rows["3"]["credentials"] is None and rows["3"]["version"] == 1
        audit = await pool.fetch("SELECT before, after::text FROM audit_log")
        assert len(audit) == 2 and all("pa" not in r["after"] for r in audit)
        assert await pool.fetchval("SELECT count(*) FROM uri_credential_moves") == 0
        assert await move_uri_credentials(pool, box) == 0  # the next start has nothing to do
    finally:
        await pool.close()
