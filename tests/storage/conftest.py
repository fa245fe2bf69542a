"""Fixtures of the storage tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder for ipc endpoints (sun_path is limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="concord-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
