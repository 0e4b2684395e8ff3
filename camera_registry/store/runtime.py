"""Open the database the way every process does: the configured server or the embedded one,
a pool, migrations applied, the credential key loaded. Used by `camreg serve` (inside the app's
cleanup_ctx) and by every one-shot CLI command alike."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from camera_registry.config import Settings
from camera_registry.crypto import CredentialBox, load_or_create_key
from camera_registry.store.cameras import move_uri_credentials
from camera_registry.store.db import create_pool, migrate
from camera_registry.store.embedded import EmbeddedPostgres

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Opened:
    pool: asyncpg.Pool
    box: CredentialBox
    embedded: bool


@contextlib.asynccontextmanager
async def open_database(
    settings: Settings,
    *,
    dsn: str | None = None,
    schema: str | None = None,
    pool_max: int | None = None,
) -> AsyncIterator[Opened]:
    """`dsn` overrides the settings (tests); without either, the embedded cluster is used."""
    embedded: EmbeddedPostgres | None = None
    url = dsn or (settings.database_url.get_secret_value() if settings.database_url else None)
    if url is None:
        embedded = EmbeddedPostgres(settings.pg_dir)
        url = await asyncio.to_thread(embedded.start)
        log.info("using the embedded PostgreSQL in %s", settings.pg_dir)
    try:
        pool = await create_pool(
            url,
            schema=schema,
            min_size=min(settings.db_pool_min, pool_max or settings.db_pool_max),
            max_size=pool_max or settings.db_pool_max,
            command_timeout=settings.db_command_timeout_s,
        )
        try:
            async with pool.acquire() as conn:
                applied = await migrate(conn)
            if applied:
                log.info("applied migrations: %s", ", ".join(applied))
            key = load_or_create_key(
                settings.secret_key.get_secret_value() if settings.secret_key else None,
                settings.data_dir,
            )
            box = CredentialBox(key)
            moved = await move_uri_credentials(pool, box)
            if moved:
                log.info("sealed the credentials found inside %d cameras' stream URIs", moved)
            yield Opened(pool, box, embedded is not None)
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
