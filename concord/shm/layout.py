"""
The shared-memory layout of the committed store, and segment ownership.

One writer (the raft worker's `Publisher`) appends immutable records to an arena and
announces them on a change ring; any number of readers (`ShmView`) keep a process-local
dict `key -> value slice` current from that ring and read values with one slice. Nothing here
takes a lock. This module only defines the bytes and opens, creates and unlinks segments;
it never decides what to publish.

Segments of one node (`<base>` = `concord-<node>-<token>`, see `SegmentNames`):

    <base>-ctl      control segment: header + change ring; fixed size, lives as long as the
                    node (created by the supervisor)
    <base>-g<N>     generation N of the record arena (N = 0, 1, 2, ...). g0 is created by the
                    supervisor; later generations by the writer when it compacts or resets
                    (live records only, new offsets: a new lineage). To grow, the writer
                    enlarges the live generation's segment in place (ftruncate; the same
                    pages, more of them; `capacity` in its header follows): a reader maps
                    the segment again once a status's arena_end passes the end of its
                    mapping. The writer unlinks a generation once the next one is live
                    (readers that still map it keep reading it safely); `unlink_all`
                    removes every generation up to `max_gen`.

Control segment, little-endian, every field an aligned u64 word (index = offset / 8):

    offset size field
    0      8    magic            b"CNCDSHMC"
    8      8    version          FORMAT_VERSION (5)
    16     8    seq              status generation: status slot `seq % STATUS_SLOTS` is the
                                 published one; the writer fills slot `(seq + 1) %
                                 STATUS_SLOTS`, then increments seq
    24     8    ring_capacity    slots in the ring (a power of two), fixed at creation
    32     8    max_gen          highest generation ever created (set before creating it)
    40     8    writer_epoch     incremented each time a writer attaches
    48     8    lease_until_ns   CLOCK_MONOTONIC ns until which this node, as leader, holds
                                 a read lease (0: none); one aligned word, written alone by
                                 the writer
    56     8    reserved (0)
    64     256*S status slots, S = STATUS_SLOTS (1024): slot i at 64 + 256 * i (layout
                 below, 31 words and the slot's seq)
    64+256S 16*C ring slots; the change with sequence s lives in slot s % C:
                    [seq u64][word u64 = record_offset << 2 | ChangeType]
                 PUT and TOUCH point at the new record, DELETE and EXPIRE at the dead one
                 (readers take the key from it). The writer writes seq=0, word, then seq.

Status slots form a ring of STATUS_SLOTS snapshots (a seqlock with many slots). A reader
reads seq, then slot `seq % S`: its own slot_seq, the words, and slot_seq again; both
equal to seq means consistent. The writer fills the next slot as slot_seq = 0, words
0..30, slot_seq = seq + 1, then sets seq = seq + 1. A writer stalled half-way through a
slot never blocks readers, and a reader's slot is rewritten only after S - 1 further
publishes: a reader retries only if it was stalled (preempted) inside its
sub-microsecond read for that many publishes (1,023 publishes: tens of milliseconds at
the writer's full speed).

    word field
    0    applied_index    last applied Raft index
    1    revision         store revision after applied_index
    2    term             current term of this node
    3    leader_time_ms   leader timestamp of the last applied entry (cluster time)
    4    ring_head        sequence number of the last published change (0: none)
    5    prev_head        ring_head before the last publish (its dead marks may be pending)
    6    arena_end        bytes used in the live generation (records end before it)
    7    live_gen         generation readers must use
    8    lineage_gen      generation whose record offsets live_gen preserves
    9    role             concord.raft.state.Role value of this node (LEADER: this node
                          is the leader)
    10   leader_id_len    bytes of leader_id used (0: no leader known)
    11   leader_client_len bytes of leader_client used (0: unknown, or it did not fit)
    12   names            18 words (144 bytes): the leader's UTF-8 NodeId (leader_id_len
                          bytes, at most 128: every valid id fits, concord.ids), then its
                          UTF-8 client endpoint (leader_client_len bytes: the hint a read
                          worker gives; members added at run time are only in the raft
                          worker's address book), published only if it fits after the id
    30   clock_origin_ns  CLOCK_MONOTONIC ns of this host at which the node's cluster
                          clock read leader_time_ms: cluster time at monotonic time t is
                          leader_time_ms + max(0, t - clock_origin_ns) // 1_000_000 (the
                          time reads evaluate TTLs at; see "Cluster time" below)
    31   slot_seq         the seq this slot was published as (0 while being written)

Cluster time. Reads hide keys with expires_at_ms <= cluster time, and cluster time must
not depend on this host's wall clock (a node whose clock is an hour ahead would hide TTL
keys an hour early). The writer publishes, with each status, the leader timestamp of the
last applied entry and the monotonic instant `clock_origin_ns` from which readers
extrapolate it with CLOCK_MONOTONIC (system-wide on the host, never stepped by NTP or
`faketime`). The writer picks

    clock_origin_ns = min(now, prev_origin + (leader_time_ms - prev_leader_time_ms) * 10**6)

(`now` at the first publish on a fresh store), so that for every t the new status gives
a cluster time >= the previous status's: cluster time on one host never goes backwards,
across statuses and across processes, even when the leader's timestamps stall (its wall
clock behind: it stamps max(previous, wall)) or a restarted writer republishes an older
state (it inherits the last published slot). A reader that saw a newer status cannot
see an older one later (statuses only advance), so a read that starts after another read
on the same host returned evaluates TTLs at a time at least as late.

Generation segment:

    offset size field
    0      8    magic            b"CNCDSHMG"
    8      8    version          FORMAT_VERSION (5)
    16     8    generation       N
    24     8    lineage_gen      as in the control header when this generation was created
    32     8    capacity         size of the segment in bytes
    40     8    dir_offset       offset of the directory (0: none)
    48     8    dir_head         ring head from which a reader that loaded the directory
                                 replays the ring to reach the published state
    56     8    reserved (0)
    64     ...  records, each starting at a multiple of 8, appended in publish order;
                 after a compaction: the copied records, the directory, then the copies
                 of keys changed during the compaction (superseded copies are dead)

Directory (written by compaction and reset, right after the records they copy, so that
a reader rebuilds its index at C speed instead of parsing every record). A compaction
runs in steps while publishes go on (concord/shm/compactor.py): its directory lists the
keys it copied as they were when copied, and the keys changed meanwhile are published as
ring slots dir_head+1..ring_head of the status that switches to it (PUT at the key's new
copy, DELETE at its copy in the directory), so directory + replay from dir_head is the
published state, as after a reset (where no slot follows):

    offset size field
    0      8    n                live keys, all keyspaces
    8      8    blob_len
    16     8    reserved (0)
    24     8*n  value starts     u64 offsets of each key's value
    24+8n  8*n  value ends       u64 (start + value_len)
    24+16n b    msgpack, per keyspace (USER, SYSTEM):
                [plain_keys, special_keys, ttl, zipped]: starts/ends hold the plain keys
                (no TTL, not compressed) then the special keys of USER, then those of
                SYSTEM; ttl is flat [key, expires_at_ms, ...], zipped lists the keys whose
                value is compressed

Record (immutable once published, except `state`):

    offset size field
    0      8    checksum         xxh3_64 of bytes [9, 50 + value_len + key_len)
    8      1    state            0 live, 1 dead (set once by the writer after the change
                                 that superseded it is published; not checksummed)
    9      1    space            concord.kv.record.Space
    10     1    flags            concord.kv.record.RecordFlags
    11     1    reserved (0)
    12     4    value_len        u32
    16     8    create_revision  u64
    24     8    mod_revision     u64
    32     8    version          u64
    40     8    expires_at_ms    u64, 0 = never
    48     2    key_len          u16 (keys are at most 1024 UTF-8 bytes; 65535 here)
    50     v    value            stored bytes (msgpack, zlib-compressed if flags say so)
    50+v   k    key              UTF-8
                 padding to a multiple of 8 (zeros)

Readers locate a value by the Python slice `record_offset + 50 : record_offset + 50 +
value_len` of the mapping (valid for the whole lineage).
"""

from __future__ import annotations

import importlib
from array import array
import mmap
import os
import re
import struct
from dataclasses import dataclass
from typing import Callable, Final, cast

from concord.ids import NODE_ID_MAX_BYTES
from concord.raft.state import Role

#: 2: many status slots (was 2 slots in a 384-byte header). 3: a generation grows in
#: place (readers remap it when arena_end passes their mapping; it used to be copied
#: into a new generation), and a status slot carries the leader's client endpoint.
#: 4: leader id and client endpoint share one 144-byte field, so that every valid node
#: id fits (the id had 56 bytes: a longer one stopped the writer). Generation segments
#: carry the same version: one store, one format.
#: 5: a status slot carries clock_origin_ns (word 30; slot_seq moved to word 31), so
#: that readers evaluate TTLs at cluster time instead of this host's wall clock.
FORMAT_VERSION: Final = 5
CTL_MAGIC: Final = b"CNCDSHMC"
GEN_MAGIC: Final = b"CNCDSHMG"

# Control header word indexes (offset / 8).
W_MAGIC: Final = 0
W_VERSION: Final = 1
W_SEQ: Final = 2
W_RING_CAP: Final = 3
W_MAX_GEN: Final = 4
W_WRITER_EPOCH: Final = 5
W_LEASE_UNTIL_NS: Final = 6
STATUS_SLOTS: Final = 1024  # a power of two
STATUS_MASK: Final = STATUS_SLOTS - 1
STATUS_SLOT_WORDS: Final = 32
STATUS_BASE_WORD: Final = 8
STATUS_WORDS: Final = 31  # the status itself; word 31 of a slot is its slot_seq
S_SLOT_SEQ: Final = 31
# Word indexes inside a status slot.
S_APPLIED: Final = 0
S_REVISION: Final = 1
S_TERM: Final = 2
S_LEADER_TIME: Final = 3
S_RING_HEAD: Final = 4
S_PREV_HEAD: Final = 5
S_ARENA_END: Final = 6
S_LIVE_GEN: Final = 7
S_LINEAGE: Final = 8
S_ROLE: Final = 9
S_LEADER_LEN: Final = 10
S_LEADER_CLIENT_LEN: Final = 11
S_NAMES: Final = 12
NAMES_WORDS: Final = 18
NAMES_BYTES: Final = 8 * NAMES_WORDS
S_CLOCK_ORIGIN: Final = 30
LEADER_ID_MAX: Final = NODE_ID_MAX_BYTES
assert S_NAMES + NAMES_WORDS == S_CLOCK_ORIGIN and LEADER_ID_MAX <= NAMES_BYTES
assert S_CLOCK_ORIGIN + 1 == STATUS_WORDS == S_SLOT_SEQ
CTL_HEADER_SIZE: Final = 8 * (STATUS_BASE_WORD + STATUS_SLOTS * STATUS_SLOT_WORDS)
RING_BASE_WORD: Final = CTL_HEADER_SIZE // 8
RING_SLOT_SIZE: Final = 16
DEFAULT_RING_CAPACITY: Final = 1 << 18

GEN_HEADER: Final = struct.Struct("<8sQQQQ24x")
GEN_DIRECTORY: Final = struct.Struct("<QQ")  # dir_offset, dir_head at offset 40
GEN_DIRECTORY_AT: Final = 40
GEN_CAPACITY_AT: Final = 32  # u64: the writer updates it when it grows a segment in place
DIR_HEAD: Final = struct.Struct("<QQQ")
GEN_HEADER_SIZE: Final = 64
assert GEN_HEADER.size == GEN_HEADER_SIZE

# Record header after the checksum: state, space, flags, reserved, value_len,
# create_revision, mod_revision, version, expires_at_ms, key_len.
RECORD_HEAD: Final = struct.Struct("<QBBBxIQQQQH")
RECORD_HEAD_SIZE: Final = 50
assert RECORD_HEAD.size == RECORD_HEAD_SIZE
# What a scan or an ingest needs: state, space, flags, value_len, ..., key_len.
RECORD_VIEW: Final = struct.Struct("<8xBBBxIQQQQH")
CHECKSUM_FROM: Final = 9
STATE_OFFSET: Final = 8
STATE_LIVE: Final = 0
STATE_DEAD: Final = 1

# The flags byte sits this many bytes before a record's value.
RECORD_FLAGS_FROM_VALUE: Final = RECORD_HEAD_SIZE - 10

PAGE: Final = mmap.PAGESIZE
_NODE_PART = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TOKEN_PART = re.compile(r"^[A-Za-z0-9_.]{1,32}$")


@dataclass(frozen=True, slots=True)
class ShmStatus:
    """One consistent snapshot of the published status (see the layout above)."""

    seq: int
    applied_index: int
    revision: int
    term: int
    leader_time_ms: int
    ring_head: int
    prev_head: int
    arena_end: int
    live_gen: int
    lineage_gen: int
    role: Role
    leader_id: str | None
    leader_client: str | None = None
    clock_origin_ns: int = 0


def read_status_words(words: memoryview) -> tuple[int, list[int]] | None:
    """
    Read the published status slot.

    Returns:
        (seq, the slot's STATUS_WORDS words), or None if the writer published twice
        while we read (retry).
    """
    seq = int(words[W_SEQ])
    base = 8 + 32 * (seq & 1023)  # status_base(seq), inlined: this is every catch-up
    if words[base + S_SLOT_SEQ] != seq:
        return None  # the writer is already rewriting it (published S - 1 times since)
    values: list[int] = words[base : base + STATUS_WORDS].tolist()
    if words[base + S_SLOT_SEQ] != seq:
        return None
    return seq, values


def status_from_words(seq: int, values: list[int]) -> ShmStatus:
    """Decode a status slot read by `read_status_words`."""
    n = values[S_LEADER_LEN]
    m = values[S_LEADER_CLIENT_LEN]
    names = _NAMES.pack(*values[S_NAMES : S_NAMES + NAMES_WORDS])
    raw, client = names[:n], names[n : n + m]
    return ShmStatus(
        seq=seq,
        applied_index=values[S_APPLIED],
        revision=values[S_REVISION],
        term=values[S_TERM],
        leader_time_ms=values[S_LEADER_TIME],
        ring_head=values[S_RING_HEAD],
        prev_head=values[S_PREV_HEAD],
        arena_end=values[S_ARENA_END],
        live_gen=values[S_LIVE_GEN],
        lineage_gen=values[S_LINEAGE],
        role=Role(values[S_ROLE]),
        leader_id=raw.decode() if n else None,
        leader_client=client.decode() if m else None,
        clock_origin_ns=values[S_CLOCK_ORIGIN],
    )


def status_base(seq: int) -> int:
    """Word index of the status slot that status `seq` is published in."""
    return STATUS_BASE_WORD + STATUS_SLOT_WORDS * (seq & STATUS_MASK)


assert status_base(STATUS_SLOTS + 1) == 8 + 32 * 1  # the inlined form in read_status_words


def write_status_words(words: memoryview, values: list[int]) -> None:
    """Writer only: fill the unpublished slot with `values`, then publish it."""
    seq = int(words[W_SEQ])
    base = status_base(seq + 1)
    words[base + S_SLOT_SEQ] = 0
    words[base : base + STATUS_WORDS] = array("Q", values)
    words[base + S_SLOT_SEQ] = seq + 1
    words[W_SEQ] = seq + 1


_NAMES = struct.Struct(f"<{NAMES_WORDS}Q")


def leader_words(leader_id: str | None, leader_client: str | None = None) -> list[int]:
    """
    The 20 status words `leader_id_len, leader_client_len, names...` (words 10..29). An
    endpoint that does not fit after the id is published as unknown (readers fall back
    to their configured members).

    Raises:
        ValueError: the id is longer than LEADER_ID_MAX bytes (no valid id is).
    """
    raw = (leader_id or "").encode()
    if len(raw) > LEADER_ID_MAX:
        raise ValueError(f"leader id {leader_id!r} is longer than {LEADER_ID_MAX} bytes")
    client = (leader_client or "").encode()
    if len(raw) + len(client) > NAMES_BYTES:
        client = b""
    names = _NAMES.unpack((raw + client).ljust(NAMES_BYTES, b"\0"))
    return [len(raw), len(client), *names]


def node_part(node_id: str) -> str:
    """
    The form of a node id used in segment and folder names: ASCII letters, digits, '_'
    and '.', every other character '_', at most 32 characters. Not one-to-one (ids
    "a-b" and "a_b" share it): never compare it with an id; the token tells runs apart.
    """
    part = "".join(c if (c.isascii() and c.isalnum()) or c in "_." else "_" for c in node_id)
    return part[:32]


def ipc_folder_name(node: str, token: str) -> str:
    """
    The name of a node run's private ipc folder in the temp dir (its ipc:// endpoints and
    metrics files): `concord-<node, at most 16 characters>-<token>`, short so that ipc://
    paths stay under 108 bytes. `node` is `node_part(id)`; a token prefix gives a glob
    prefix (a supervisor's token is "<pid>x<hex>").
    """
    return f"concord-{node[:16]}-{token}"


def align8(n: int) -> int:
    """Round `n` up to a multiple of 8."""
    return (n + 7) & ~7


def record_size(key_len: int, value_len: int) -> int:
    """Bytes one record takes in the arena, padding included."""
    return align8(RECORD_HEAD_SIZE + value_len + key_len)


def ctl_size(ring_capacity: int) -> int:
    """Size of the control segment for a ring of `ring_capacity` slots."""
    return CTL_HEADER_SIZE + RING_SLOT_SIZE * ring_capacity


@dataclass(frozen=True, slots=True)
class SegmentNames:
    """
    The names of one node's segments: `concord-<node>-<token>-ctl` and `-g<N>`.

    `token` distinguishes two runs (or two tests) of the same node id on one host (the
    supervisor picks one per start, e.g. its pid or a random hex string).
    """

    node: str
    token: str

    def __post_init__(self) -> None:
        if not _NODE_PART.match(self.node):
            raise ValueError(f"node {self.node!r} must match {_NODE_PART.pattern}")
        if not _TOKEN_PART.match(self.token):
            raise ValueError(f"token {self.token!r} must match {_TOKEN_PART.pattern}")

    def owns(self, segment: str) -> bool:
        """
        True if `segment` is one of this store's names. Exact (`-ctl` or `-g<digits>`),
        so that node "a-b" never claims the segments of node "a" with token "b-..."
        (tokens have no '-', so (node, token) -> base is one-to-one).
        """
        rest = segment[len(self.base) + 1 :]
        return segment.startswith(self.base + "-") and (
            rest == "ctl" or (rest[:1] == "g" and rest[1:].isdigit())
        )

    @property
    def base(self) -> str:
        return f"concord-{self.node}-{self.token}"

    @property
    def ctl(self) -> str:
        return f"{self.base}-ctl"

    @property
    def ipc_folder(self) -> str:
        """The same run's ipc folder name (`ipc_folder_name`)."""
        return ipc_folder_name(self.node, self.token)

    def gen(self, n: int) -> str:
        return f"{self.base}-g{n}"


# NB: attach and create through _posixshmem, never multiprocessing.shared_memory: on
# Python 3.11 SharedMemory registers every segment it opens with the resource tracker,
# which unlinks it when that process exits, so a reader that merely attached would
# destroy the store. Here nothing is registered; unlinking is explicit and owned.
_posixshmem = importlib.import_module("_posixshmem")
_shm_open = cast(Callable[..., int], getattr(_posixshmem, "shm_open"))
_shm_unlink = cast(Callable[[str], None], getattr(_posixshmem, "shm_unlink"))


def create_segment(name: str, size: int) -> mmap.mmap:
    """
    Create a new segment of `size` bytes (zero-filled) and map it read-write.

    Raises:
        FileExistsError: a segment of that name exists.
    """
    fd = _shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    except BaseException:
        _shm_unlink("/" + name)
        raise
    finally:
        os.close(fd)


def open_segment(name: str, writable: bool = False) -> mmap.mmap:
    """
    Map an existing segment, whole, without registering it with any resource tracker.

    Raises:
        FileNotFoundError: no segment of that name (never created, or unlinked).
    """
    fd = _shm_open("/" + name, os.O_RDWR if writable else os.O_RDONLY, 0o600)
    try:
        size = os.fstat(fd).st_size
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        return mmap.mmap(fd, size, access=access)
    finally:
        os.close(fd)


def unlink_segment(name: str) -> bool:
    """Unlink a segment; return False if it did not exist."""
    try:
        _shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


def segment_exists(name: str) -> bool:
    """True if a segment of that name exists."""
    try:
        fd = _shm_open("/" + name, os.O_RDONLY, 0o600)
    except FileNotFoundError:
        return False
    os.close(fd)
    return True


def write_gen_header(buf: mmap.mmap, generation: int, lineage: int, capacity: int) -> None:
    """Fill the header of a freshly created generation segment."""
    GEN_HEADER.pack_into(buf, 0, GEN_MAGIC, FORMAT_VERSION, generation, lineage, capacity)


def read_gen_directory(buf: mmap.mmap) -> tuple[int, int]:
    """(dir_offset, dir_head) of a generation; dir_offset 0 means no directory."""
    offset, head = GEN_DIRECTORY.unpack_from(buf, GEN_DIRECTORY_AT)
    return int(offset), int(head)


def directory_span(buf: mmap.mmap) -> tuple[int, int]:
    """[start, end) of the generation's directory in the arena; (0, 0) if none."""
    offset = int(GEN_DIRECTORY.unpack_from(buf, GEN_DIRECTORY_AT)[0])
    if not offset:
        return 0, 0
    n, blob_len, _ = DIR_HEAD.unpack_from(buf, offset)
    return offset, offset + align8(DIR_HEAD.size + 16 * n + blob_len)


def set_gen_directory(buf: mmap.mmap, offset: int, head: int) -> None:
    """Writer only, before the generation is published: record its directory."""
    GEN_DIRECTORY.pack_into(buf, GEN_DIRECTORY_AT, offset, head)


def read_gen_header(buf: mmap.mmap) -> tuple[int, int, int]:
    """
    Check and read a generation header.

    Returns:
        (generation, lineage_gen, capacity).

    Raises:
        ValueError: wrong magic or version.
    """
    magic, version, generation, lineage, capacity = GEN_HEADER.unpack_from(buf, 0)
    if magic != GEN_MAGIC or version != FORMAT_VERSION:
        raise ValueError(f"not a concord generation segment magic={magic!r} version={version}")
    return int(generation), int(lineage), int(capacity)


def initial_gen_capacity(expected_bytes: int) -> int:
    """Segment size for a generation meant to hold `expected_bytes` of records."""
    need = GEN_HEADER_SIZE + max(expected_bytes, 1)
    return (need + PAGE - 1) // PAGE * PAGE


__all__ = [
    "FORMAT_VERSION",
    "SegmentNames",
    "ShmStatus",
    "align8",
    "create_segment",
    "ctl_size",
    "initial_gen_capacity",
    "ipc_folder_name",
    "open_segment",
    "read_gen_header",
    "record_size",
    "segment_exists",
    "unlink_segment",
    "write_gen_header",
]
