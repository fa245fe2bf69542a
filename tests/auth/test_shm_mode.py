"""Shared-memory segments are owner-only (docs/security.md "Who is trusted")."""

from __future__ import annotations

import os
import stat

from concord.shm.layout import create_segment, unlink_segment


def test_segment_is_owner_only_when_created() -> None:
    name = f"concord-authmode-{os.getpid()}"
    old = os.umask(0)  # even with a permissive umask
    try:
        segment = create_segment(name, 4096)
    finally:
        os.umask(old)
    try:
        mode = stat.S_IMODE(os.stat(f"/dev/shm/{name}").st_mode)
        assert 0o600 == mode
    finally:
        segment.close()
        unlink_segment(name)
