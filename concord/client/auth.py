"""
The client's auth ops (docs/protocol.md "Auth ops", docs/security.md): the request
builders, shared by the sync and asyncio clients, and the sync client's methods
(`AuthMethods`, mixed into `concord.client.Client`; `concord.aio.Client` has the same
methods as coroutines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from concord.client.requests import Req, _maps, _strip
from concord.client.results import bool_field

T = TypeVar("T")

Rule = Sequence[str]


def _flag(op: str, name: str) -> Callable[[dict[str, object]], bool]:
    return lambda reply: bool_field(reply, op, name)


def bootstrap(description: str | None) -> Req[dict[str, object]]:
    return Req("bootstrap", {"description": description}, _strip)


def whoami() -> Req[dict[str, object]]:
    return Req("whoami", {}, _strip)


def token_create(role: str, tenant: str | None, ttl: float | None,
                 description: str | None) -> Req[dict[str, object]]:
    return Req("token_create", {"role": role, "tenant": tenant, "ttl": ttl,
                                "description": description}, _strip)


def token_list() -> Req[list[dict[str, object]]]:
    return Req("token_list", {}, _maps("token_list", "tokens"))


def token_revoke(token_id: str) -> Req[bool]:
    return Req("token_revoke", {"token_id": token_id}, _flag("token_revoke", "revoked"))


def role_put(name: str, rules: Sequence[Rule]) -> Req[bool]:
    return Req("role_put", {"name": name, "rules": [list(r) for r in rules]},
               _flag("role_put", "created"))


def role_list() -> Req[list[dict[str, object]]]:
    return Req("role_list", {}, _maps("role_list", "roles"))


def role_delete(name: str) -> Req[bool]:
    return Req("role_delete", {"name": name}, _flag("role_delete", "deleted"))


def tenant_put(name: str, max_keys: int | None, max_bytes: int | None,
               write_rate: float | None, read_rate: float | None) -> Req[bool]:
    return Req("tenant_put", {"name": name, "max_keys": max_keys, "max_bytes": max_bytes,
                              "write_rate": write_rate, "read_rate": read_rate},
               _flag("tenant_put", "created"))


def tenant_list() -> Req[list[dict[str, object]]]:
    return Req("tenant_list", {}, _maps("tenant_list", "tenants"))


def tenant_delete(name: str) -> Req[bool]:
    return Req("tenant_delete", {"name": name}, _flag("tenant_delete", "deleted"))


def tenant_usage(name: str | None) -> Req[dict[str, object]]:
    return Req("tenant_usage", {"name": name}, _strip)


class AuthMethods:
    """The auth ops of the sync client (see the module docstring)."""

    def _do(self, req: Req[T]) -> T:
        raise NotImplementedError  # pragma: no cover - Client defines it

    def bootstrap(self, description: str | None = None) -> dict[str, object]:
        """The first admin token, only while no token exists: `{token, token_id, revision}`."""
        return self._do(bootstrap(description))

    def whoami(self) -> dict[str, object]:
        """`{token_id, role, tenant, auth}` of this client's token."""
        return self._do(whoami())

    def token_create(self, role: str, tenant: str | None = None, ttl: float | None = None,
                     description: str | None = None) -> dict[str, object]:
        """A new token: `{token, token_id, expires_at_ms, revision}`; `token` is shown once."""
        return self._do(token_create(role, tenant, ttl, description))

    def token_list(self) -> list[dict[str, object]]:
        """Every token's public fields (never a secret)."""
        return self._do(token_list())

    def token_revoke(self, token_id: str) -> bool:
        """Revoke a token; False if it was unknown or already revoked."""
        return self._do(token_revoke(token_id))

    def role_put(self, name: str, rules: Sequence[Rule]) -> bool:
        """Create or replace a custom role of [pattern, perm, effect] rules; True if created."""
        return self._do(role_put(name, rules))

    def role_list(self) -> list[dict[str, object]]:
        return self._do(role_list())

    def role_delete(self, name: str) -> bool:
        return self._do(role_delete(name))

    def tenant_put(self, name: str, max_keys: int | None = None, max_bytes: int | None = None,
                   write_rate: float | None = None, read_rate: float | None = None) -> bool:
        """Create a tenant or replace its quotas (absent: unlimited); True if created."""
        return self._do(tenant_put(name, max_keys, max_bytes, write_rate, read_rate))

    def tenant_list(self) -> list[dict[str, object]]:
        return self._do(tenant_list())

    def tenant_delete(self, name: str) -> bool:
        return self._do(tenant_delete(name))

    def tenant_usage(self, name: str | None = None) -> dict[str, object]:
        """A tenant's quotas and usage (default: this token's tenant)."""
        return self._do(tenant_usage(name))


__all__ = ["AuthMethods"]
