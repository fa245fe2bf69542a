"""The public API surface."""

from __future__ import annotations

import types

import concord


def test_public_names_are_exactly_all() -> None:
    """Every name in concord.__all__ exists, and nothing public is missing from it."""
    for name in concord.__all__:
        assert hasattr(concord, name), name
    public = {
        name
        for name, value in vars(concord).items()
        if not name.startswith("_")
        and name != "annotations"
        # Importing a submodule anywhere binds it on the package; that is not API.
        and not (isinstance(value, types.ModuleType) and name not in concord.__all__)
    }
    assert set() == public - set(concord.__all__)
