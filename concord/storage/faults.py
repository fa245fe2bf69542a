"""
Test-only disk fault injector: makes WAL writes, WAL syncs and snapshot writes fail with
ENOSPC or EIO, or makes WAL syncs stall, on a real node, switched at run time.

Inert unless configured: `configure(path)` is called by the log writer process only when
the node's config has `faults.enabled = true` and `faults.disk_file` set (never in
production). Until then, and while the file is missing or empty, `hit()` returns at once.

The fault file is a JSON object the test rewrites at run time (re-read whenever its
mtime or size changes; write it to a temporary name and rename it over the target):

    {"wal_write": "ENOSPC" | "EIO",       a WAL write (append, new segment) fails; half
                                           of the data is written first (a torn append)
     "wal_sync": "ENOSPC" | "EIO",        the WAL's fdatasync fails after the write
     "snapshot_write": "ENOSPC" | "EIO",  a snapshot file write fails
     "wal_sync_delay_ms": int >= 0}       every WAL fdatasync first stalls this long

Absent keys mean "no fault at that site"; `{}` clears everything. A malformed file is
reported with one WARNING naming the problem and injects nothing.

Must never: be enabled outside tests, or change what the storage code does when no
fault is set (callers consult it immediately before the real system call).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: The sites storage code consults, and the fault-file key that sets each one.
SITES = ("wal_write", "wal_sync", "snapshot_write")
DELAY_KEY = "wal_sync_delay_ms"
ERRNOS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}


@dataclass(frozen=True, slots=True)
class DiskFaultRules:
    """The parsed fault file: errno per site, and the WAL sync stall."""

    errors: dict[str, int]
    sync_delay_s: float = 0.0


_NO_RULES = DiskFaultRules({})


def parse_rules(text: str) -> DiskFaultRules:
    """
    Parse a fault file's text (empty text: no faults).

    Raises:
        ValueError: the text is not a JSON object of known keys and values.
    """
    if not text.strip():
        return _NO_RULES
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError("disk fault file must hold a JSON object")
    unknown = sorted(set(obj) - set(SITES) - {DELAY_KEY})
    if unknown:
        raise ValueError(f"unknown disk fault keys {unknown}; expected {[*SITES, DELAY_KEY]}")
    errors: dict[str, int] = {}
    for site in SITES:
        name = obj.get(site)
        if name is None:
            continue
        if name not in ERRNOS:
            raise ValueError(f"disk fault {site}={name!r}; expected one of {sorted(ERRNOS)}")
        errors[site] = ERRNOS[name]
    delay = obj.get(DELAY_KEY, 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"disk fault {DELAY_KEY}={delay!r}; expected an int >= 0")
    return DiskFaultRules(errors, delay / 1000.0)


class DiskFaults:
    """The fault file of one process, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._rules = _NO_RULES
        self.injected = 0

    def rules(self) -> DiskFaultRules:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._rules = None, _NO_RULES
            return self._rules
        seen = (st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            self._seen = seen
            try:
                self._rules = parse_rules(self.path.read_text())
            except (OSError, ValueError) as exc:
                logger.warning("ignoring malformed disk fault file path=%s error=%s", self.path, exc)
                self._rules = _NO_RULES
        return self._rules

    def hit(self, site: str) -> int:
        """
        The errno to fail `site` with (0: none). For "wal_sync", stall first if asked.
        """
        rules = self.rules()
        if site == "wal_sync" and rules.sync_delay_s > 0:
            # NB: a real stall of this process, like a slow disk's fdatasync
            time.sleep(rules.sync_delay_s)
        code = rules.errors.get(site, 0)
        if code:
            self.injected += 1
        return code


_active: DiskFaults | None = None


def configure(path: Path | None) -> None:
    """Enable the injector in this process (tests only), or disable it with None."""
    global _active
    _active = None if path is None else DiskFaults(path)
    if path is not None:
        logger.warning("TEST-ONLY disk fault injection is enabled path=%s", path)


def hit(site: str) -> int:
    """The errno to fail `site` with now, 0 when no fault is set (or injection is off)."""
    return 0 if _active is None else _active.hit(site)


def check(site: str) -> None:
    """
    Raises:
        OSError: with the errno the fault file sets for `site`.
    """
    code = hit(site)
    if code:
        raise OSError(code, f"{os.strerror(code)} (injected disk fault at {site})")
