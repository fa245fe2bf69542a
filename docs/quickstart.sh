#!/bin/sh
# Concord quick start: every step of the README's quick start, runnable as is and any
# number of times (nothing it does fails on a second run).
#
#   concord-node --config conf/node.toml &      # one node on the well-known port 7379
#   sh docs/quickstart.sh
#
# CONCORD_ENDPOINTS (default tcp://127.0.0.1:7379) picks the node; CONCORD picks the
# command (default `concord`; in a checkout without the console script:
# CONCORD="python3 -m concord.cli").
set -eu
concord=${CONCORD:-concord}

$concord put greeting hello --ttl 60                 # prints the revision
$concord get greeting                                # hello
$concord -w json get greeting --meta -c strong       # linearizable, with revisions and ttl

# A lock: create-if-absent, then released by its owner only (so the next run can take it).
$concord put owner/db worker-7 --if-absent --ttl 10
$concord del owner/db --if-value worker-7

# Several keys atomically, from JSON lines; then queries.
$concord bulk put <<'LINES'
{"key": "config/max-users", "value": 100}
{"key": "config/theme", "value": "dark"}
{"key": "user/ann", "value": {"age": 30}}
{"key": "user/bob", "value": {"age": 15}, "ttl": 300}
LINES
$concord count --prefix config/                      # 2
$concord -w table query --prefix user/ --where '["ge", "age", 18]'

# The cluster: one line per node, and the replicas' state hashes compared.
$concord -w table status
$concord check hash
