"""
Concord: a distributed, strongly consistent key-value store for coordination data.

The public API is what `__all__` lists; a test asserts it.
"""

from __future__ import annotations

from concord import errors
from concord.errors import ConcordError

__version__ = "0.1.0"

__all__ = ["ConcordError", "errors", "__version__"]
