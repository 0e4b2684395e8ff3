"""A badly encoded URL is the client's mistake: a 400 and one quiet log line, not an ERROR
with a traceback that reads like a bug of ours."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.test_utils import TestClient


async def test_a_url_with_raw_non_ascii_bytes_is_answered_400_and_logged_as_one_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    port = client.server.port
    assert port is not None
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /api/v1/cameras/\xe6\x91\x84 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(server) == 1, [r.getMessage() for r in server]
    [line] = server
    assert line.levelno == logging.INFO and line.exc_info is None and line.exc_text is None
    assert line.getMessage().startswith("unreadable request from 127.0.0.1 answered 400: ")
    assert "\n" not in line.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
