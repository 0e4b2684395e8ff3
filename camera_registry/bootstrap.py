"""First-run conveniences for `make run`: a seeded demo and an admin token on disk."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncpg
import numpy as np

from .actor import Actor, Role
from .bulk import BulkLoad, MergeResult
from .crypto import CredentialBox
from .demo import generate_cameras
from .errors import RegistryError, Unauthorized
from .tokens import Tokens
from .validate import validate_columns

log = logging.getLogger(__name__)

DEMO_CAMERAS = 400
DEMO_SEED = 2024


async def load_demo(
    pool: asyncpg.Pool, box: CredentialBox, n: int = DEMO_CAMERAS, seed: int = DEMO_SEED
) -> MergeResult:
    """Load `n` generated Shanxi cameras through the same validation and merge as a ledger."""
    cols = generate_cameras(n, seed=seed)
    batch, errors = validate_columns(cols, np.arange(1, n + 1), box=box)
    if errors:  # the generator is ours: a bad row is a bug, not user input
        raise RegistryError(f"demo generator produced invalid rows: {errors[:3]}")
    actor = Actor.cli("demo")
    async with BulkLoad(pool, actor) as load:
        await load.prepare(n)
        await load.add(batch)
        result = await load.finish()
        load.commit()
    return result


async def ensure_admin_token(tokens: Tokens, path: Path) -> str:
    """The admin token in `path` if it still works, else a new one written there (0600)."""
    secret = await asyncio.to_thread(_read, path)
    if secret:
        try:
            actor = await tokens.authenticate(secret)
            if actor.role == Role.ADMIN and actor.scope is None:
                return secret
        except Unauthorized:
            log.info("the token in %s no longer works; making a new one", path)
    _, secret = await tokens.create(Actor.cli("bootstrap"), role=Role.ADMIN, name="make-run admin")
    await asyncio.to_thread(_write_private, path, secret)
    return secret


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)
