"""
ZeroMQ transport of a node. Every zmq and OS error is translated at this boundary into
concord.errors types; nothing here knows Raft message encoding (concord/storage/codec.py) or keys.

    peer.py       PeerTransport: Raft peer links (ROUTER in, one DEALER per peer out),
                  liveness, membership; faults.py: the test-only fault filter
    wire.py       the client envelope (docs/protocol.md) and OPS, the one table of ops
    frontdoor.py  FrontDoor: the node's client ROUTER; validates and routes to backends
    backend.py    BackendLink: a read worker's or the raft worker's link to the front door
    events.py     EventStream: the change stream (XPUB), its retained history and the
                  per-prefix sequence numbers that make every lost message detectable
"""
