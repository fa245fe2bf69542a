"""
Concord's process supervisor lives in the top-level package `supervisor/` (docs/architecture.md),
the same import name as PyPI's `supervisor` distribution (supervisord). Installed into
one environment, the two overwrite each other's `supervisor/__init__.py`, and whichever
comes first on `sys.path` wins. Importing this module checks that `import supervisor`
gives Concord's package and raises `SupervisorClashError` naming both otherwise, so the
clash is one clear line at start-up rather than an ImportError deep inside.

Every Concord module that imports `supervisor` imports this module first. The fix is
documented in docs/operations.md: run Concord in its own virtualenv, or
`pip uninstall supervisor` and reinstall concord-kv.
"""

from __future__ import annotations

import importlib

__all__ = ["SupervisorClashError", "check"]


class SupervisorClashError(ImportError):
    """`import supervisor` found a package other than Concord's (most likely supervisord)."""


def check() -> None:
    """
    Raises:
        SupervisorClashError: the `supervisor` package on `sys.path` is not Concord's.
    """
    try:
        module = importlib.import_module("supervisor")
    except ImportError as exc:
        raise SupervisorClashError(
            f"cannot import Concord's process supervisor package 'supervisor' ({exc}); "
            "if PyPI's supervisord (distribution 'supervisor') is installed in this "
            "environment it shares that import name: run Concord in its own virtualenv, "
            "or `pip uninstall supervisor` and reinstall concord-kv"
        ) from exc
    if getattr(module, "CONCORD_SUPERVISOR", None) is not True:
        where = getattr(module, "__file__", None) or "an unknown location"
        raise SupervisorClashError(
            f"the package 'supervisor' imported from {where} is not Concord's process "
            "supervisor but another one with the same import name, most likely PyPI's "
            "supervisord (distribution 'supervisor'); run Concord in its own virtualenv, "
            "or `pip uninstall supervisor` and reinstall concord-kv"
        )


check()
