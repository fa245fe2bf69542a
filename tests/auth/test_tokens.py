"""Tokens: format, one-way storage, parsing that never echoes the secret."""

from __future__ import annotations

import pytest

from concord.auth.tokens import hash_secret, new_token, parse_token
from concord.errors import UnauthorizedError


def test_new_token_stores_only_the_hash_of_its_secret() -> None:
    """sk_concord_<16 hex>_<64 hex>; the credential holds the id and sha256(secret)."""
    token, credential = new_token()
    prefix, rest = token[:11], token[11:]
    token_id, secret = rest.split("_")
    assert "sk_concord_" == prefix
    assert (16, 64) == (len(token_id), len(secret))
    assert credential.token_id == token_id
    assert hash_secret(secret) == credential.secret_hash
    assert secret.encode() not in credential.secret_hash
    assert credential == parse_token(token)


def test_new_tokens_differ() -> None:
    assert new_token()[0] != new_token()[0]


@pytest.mark.parametrize("bad", ["", "sk_concord_", "sk_concord_zz_" + "0" * 64,
                                 "sk_concord_" + "0" * 16 + "_" + "0" * 63, "Bearer x"])
def test_parse_token_refuses_malformed_token_without_echoing_it(bad: str) -> None:
    with pytest.raises(UnauthorizedError) as info:
        parse_token(bad)
    assert "expected sk_concord_<id>_<secret>" in info.value.message
    assert len(bad) < 20 or bad not in info.value.message
