"""
Auth tokens: a public id and a secret, of which only a SHA-256 hash is ever stored.

Pure apart from `new_token` (which draws from `secrets`). A token as shown to its owner,
once, at creation:

    sk_concord_<id>_<secret>
        id      16 lowercase hex digits (64 bits, from `secrets`): public, names the
                token in lists, logs, revocation and audit
        secret  64 lowercase hex digits (256 bits, from `secrets`)

The replicated state keeps `sha256(secret)` only (32 bytes). SHA-256 is right for a
random 256-bit secret (no dictionary to guess from, so no slow KDF is needed) and costs
under a microsecond, so every request is checked without a cache. Hashes are compared
with `hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

from concord.errors import UnauthorizedError

TOKEN_PREFIX: Final = "sk_concord_"
_ID_HEX: Final = 16
_SECRET_HEX: Final = 64
_TOKEN_RE: Final = re.compile(r"sk_concord_[0-9a-f]{16}_[0-9a-f]{64}")
_ID_AT: Final = len(TOKEN_PREFIX)
_SECRET_AT: Final = _ID_AT + _ID_HEX + 1
ID_RE: Final = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True, slots=True)
class Credential:
    """A token presented by a client, split into its id and the hash of its secret."""

    token_id: str
    secret_hash: bytes


def hash_secret(secret: str) -> bytes:
    """SHA-256 of the secret's ASCII bytes (the only form ever stored)."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def new_token() -> tuple[str, Credential]:
    """A fresh token string (shown once) and its credential (what is stored)."""
    token_id = secrets.token_hex(_ID_HEX // 2)
    secret = secrets.token_hex(_SECRET_HEX // 2)
    return f"{TOKEN_PREFIX}{token_id}_{secret}", Credential(token_id, hash_secret(secret))


def parse_token(token: str) -> Credential:
    """
    Split and hash a presented token.

    Raises:
        UnauthorizedError: not of the form sk_concord_<16 hex>_<64 hex> (the message never
            echoes the token).
    """
    if _TOKEN_RE.fullmatch(token) is None:
        raise UnauthorizedError("token is malformed: expected sk_concord_<id>_<secret>")
    # NB: slices of the matched form (fixed widths), and sha256 inline: every request.
    return Credential(token[_ID_AT:_ID_AT + _ID_HEX],
                      hashlib.sha256(token[_SECRET_AT:].encode("ascii")).digest())


def hashes_equal(stored: bytes, presented: bytes) -> bool:
    """Constant-time comparison of two secret hashes."""
    return hmac.compare_digest(stored, presented)
