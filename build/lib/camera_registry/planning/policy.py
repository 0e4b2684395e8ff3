"""Reading a layout policy file: the I/O around `policy_model` (a pure pydantic model)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from camera_registry.planning.policy_model import Policy, PolicyError, parse_policy

__all__ = ["DEFAULT_POLICY_FILE", "Policy", "PolicyError", "default_policy_text", "load_policy"]

DEFAULT_POLICY_FILE = "data/policy.default.toml"


def _parse(text: str, where: str) -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([(where, f"not valid TOML: {exc}")]) from None
    return parse_policy(data)


def load_policy(path: str | Path) -> Policy:
    """The policy in a TOML file; `PolicyError` names every bad key by its dotted path.

    Blocking file read: call it from a thread (`asyncio.to_thread`) inside the event loop.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            [(str(p), f"cannot read the policy file: {exc.strerror or exc}")]
        ) from None
    return _parse(text, str(p))


def default_policy_text() -> str:
    """The shipped, commented default policy (a starting point for planners' own files)."""
    return resources.files("camera_registry").joinpath(DEFAULT_POLICY_FILE).read_text("utf-8")
