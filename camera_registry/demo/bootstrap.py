"""First-run conveniences for `make run`: a seeded demo and an admin token on disk."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncpg
import numpy as np

from camera_registry.actor import Actor, Role
from camera_registry.crypto import CredentialBox
from camera_registry.demo.cameras import generate_cameras
from camera_registry.demo.geodata import (
    DemoGeodata,
    DemoGeodataLoaded,
    demo_geodata,
    load_demo_geodata,
)
from camera_registry.errors import RegistryError, Unauthorized
from camera_registry.planning.geodata import has_regions
from camera_registry.store.bulk import BulkLoad, MergeResult
from camera_registry.store.tokens import Tokens
from camera_registry.validate import validate_columns

log = logging.getLogger(__name__)

DEMO_CAMERAS = 400
DEMO_SEED = 2024


async def load_demo(
    pool: asyncpg.Pool,
    box: CredentialBox,
    n: int = DEMO_CAMERAS,
    seed: int = DEMO_SEED,
    geodata: DemoGeodata | None = None,
) -> MergeResult:
    """Load `n` generated Shanxi cameras through the same validation and merge as a ledger.

    With `geodata`, every camera lies inside its county's boundary from that data set.
    """
    boundaries = geodata.counties() if geodata is not None else None
    cols = await asyncio.to_thread(generate_cameras, n, seed=seed, boundaries=boundaries)
    batch, errors = validate_columns(cols, np.arange(1, n + 1), box=box)
    if errors:  # the generator is ours: a bad row is a bug, not user input
        raise RegistryError(f"demo generator produced invalid rows: {errors[:3]}")
    actor = Actor.cli("demo")
    async with BulkLoad(pool, actor) as load:
        await load.add(batch)
        result = await load.finish()
        load.commit()
    return result


async def demo_geodata_loaded(
    pool: asyncpg.Pool, province: str = "14", seed: int = DEMO_SEED, *, replace: bool = False
) -> tuple[DemoGeodata, DemoGeodataLoaded | None]:
    """The demo geodata, written to the database unless boundaries are loaded already.

    `make run` keeps a planner's own boundaries (loaded with `camreg geodata load`) instead of
    overwriting them; `replace=True` (`camreg demo`) reloads the `demo` data sets regardless.
    Generation runs in a thread: it is CPU work and the server may already be answering.
    """
    geodata = await asyncio.to_thread(demo_geodata, province, seed=seed)
    if not replace and await has_regions(pool):
        return geodata, None
    return geodata, await load_demo_geodata(pool, geodata, seed=seed)


async def ensure_admin_token(tokens: Tokens, path: Path) -> tuple[str, bool]:
    """The admin token in `path` if it still works, else a new one written there (0600); and
    whether it was made just now (only a new token is worth printing: a log that repeats it at
    every start spreads a secret that the file already keeps)."""
    secret = await asyncio.to_thread(_read, path)
    if secret:
        try:
            actor = await tokens.authenticate(secret)
            if actor.role == Role.ADMIN and actor.scope is None:
                return secret, False
        except Unauthorized:
            log.info("the token in %s no longer works; making a new one", path)
    _, secret = await tokens.create(Actor.cli("bootstrap"), role=Role.ADMIN, name="make-run admin")
    await asyncio.to_thread(_write_private, path, secret)
    return secret, True


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)
