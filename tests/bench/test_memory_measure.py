"""The benchmark's memory measure counts a process's pages of /dev/shm segments once, not twice."""

from __future__ import annotations

import mmap
import os
import uuid

import psutil

from bench.systems import private_bytes

SIZE = 16 << 20


def test_private_bytes_leaves_out_pages_of_shm_segments_only_this_process_touched() -> None:
    path = f"/dev/shm/concord-test-memory-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, SIZE)
        with mmap.mmap(fd, SIZE) as mm:
            me = psutil.Process()
            uss0, private0 = me.memory_full_info().uss, private_bytes(me)
            for off in range(0, SIZE, mmap.PAGESIZE):
                mm[off] = 1  # touch every page: private to this process as far as USS goes
            uss1, private1 = me.memory_full_info().uss, private_bytes(me)
    finally:
        os.close(fd)
        os.unlink(path)
    assert uss1 - uss0 >= SIZE * 0.9  # what the old measure counted (and then the file again)
    assert abs(private1 - private0) < SIZE * 0.1
