"""Camera credentials at rest, and API token secrets.

Credentials are sealed with AES-256-GCM (random nonce per value) under a key from the settings
or generated once into `<data_dir>/secret.key` (mode 0600). A keyed HMAC of the same plaintext
is stored beside it so a re-import can tell "unchanged" without decrypting every row. Tokens are
random and stored only as SHA-256 digests: a leaked database does not leak usable tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from camera_registry.errors import ConfigError

TOKEN_PREFIX = "crt_"  # noqa: S105 - a label, not a secret
_NONCE = 12


def load_or_create_key(configured: str | None, data_dir: Path) -> bytes:
    if configured:
        try:
            key = base64.b64decode(configured, validate=True)
        except ValueError:
            raise ConfigError(
                "secret_key is not valid base64; generate one with "
                "`python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())'`"
            ) from None
        if len(key) != 32:
            raise ConfigError(f"secret_key must decode to 32 bytes, not {len(key)}")
        return key
    path = data_dir / "secret.key"
    if path.exists():
        key = base64.b64decode(path.read_bytes().strip())
        if len(key) != 32:
            raise ConfigError(f"{path} does not hold a 32-byte base64 key; restore it from backup")
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(key) + b"\n")
    return key


class CredentialBox:
    """Seals and opens camera credentials; the only place the key is held."""

    def __init__(self, key: bytes) -> None:
        self.key = key  # handed to the ledger reader process, never logged (see __repr__)
        self._aead = AESGCM(key)
        self._mac_key = hashlib.sha256(b"camreg-credential-mac" + key).digest()

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return "CredentialBox(<sealed>)"

    @staticmethod
    def _plain(username: str | None, password: str | None) -> bytes:
        return json.dumps({"username": username, "password": password}, ensure_ascii=False).encode()

    def seal(self, username: str | None, password: str | None) -> tuple[bytes, bytes] | None:
        if username is None and password is None:
            return None
        plain = self._plain(username, password)
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, plain, b"camreg-credentials")
        return sealed, hmac.new(self._mac_key, plain, hashlib.sha256).digest()

    def open(self, sealed: bytes) -> tuple[str | None, str | None]:
        plain = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], b"camreg-credentials")
        data = json.loads(plain)
        return data["username"], data["password"]


def new_token() -> tuple[str, bytes]:
    """A fresh bearer token and the digest to store."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
