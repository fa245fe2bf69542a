"""
Helpers for bulk builds of millions of small objects (state machine restores, shared
memory indexes). Pure: no IO.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """
    Pause the cyclic GC around a bulk build of millions of small objects (records, dict
    entries, slices): they hold no cycles, and generation scans would otherwise cost more
    than the build itself.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
