"""
`python -m bench setup`: install the peers the benchmark compares against.

apt (as root): etcd-server, etcd-client, redis-server (Debian). The Debian redis package
may start a system service; the benchmark never uses it (it starts its own servers on
free loopback ports). pip: pysyncobj, grpcio (etcd's failover probe and the `aio` etcd
driver; the default etcd driver, bench/etcd_h2.py, needs no package), etcd3gw (the labelled
JSON-gateway extra), redis (redis-py) and matplotlib (plots).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

APT = ["etcd-server", "etcd-client", "redis-server"]
PIP = ["pysyncobj", "grpcio", "etcd3gw", "redis", "matplotlib"]


def setup() -> int:
    """Install what is missing; the exit code of the first failing step, else 0."""
    missing_bins = [b for b in ("etcd", "etcdctl", "redis-server") if shutil.which(b) is None]
    if missing_bins:
        print(f"installing {' '.join(APT)} with apt (missing: {' '.join(missing_bins)})", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *APT]):
            code = subprocess.call(argv, env=env)
            if code:
                return code
    else:
        print("etcd, etcdctl and redis-server are installed", flush=True)
    print(f"installing {' '.join(PIP)} with pip", flush=True)
    return subprocess.call([sys.executable, "-m", "pip", "install", "-q", *PIP])
