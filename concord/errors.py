"""
The exception tree of Concord (one tree, as in httpx).

    ConcordError
    ├── ClientError                  # crosses to clients; carries request_id and a wire code
    │   ├── NotLeaderError           # .leader_hint: endpoint | None
    │   ├── NoLeaderError
    │   ├── ProposalDroppedError
    │   ├── RequestTimeoutError
    │   ├── UnknownResultError       # sent, then lost contact: outcome unknown
    │   ├── NotFoundError
    │   ├── ConditionFailedError
    │   ├── UnauthorizedError | ForbiddenError | QuotaExceededError
    │   ├── InvalidRequestError → InvalidKeyError | ValueTooLargeError | TooManyItemsError
    │   ├── ShuttingDownError
    │   └── StorageUnavailableError  # this node's disk is failing: writes refused, nothing applied
    ├── StorageError → CompactedError | UnavailableError | SnapshotOutOfDateError | CorruptionError
    │                  | DiskError (a write or sync failed; the WAL can retry in a new segment)
    ├── ConfigError(ConcordError, ValueError)
    ├── EmbeddedNodeError            # concord.start(): the node did not come up
    ├── ProtocolError → LocalProtocolError | RemoteProtocolError
    └── RaftInvariantError           # a bug: fail-stop, caught only at a process's top level

Messages are lower case with no trailing period and name the values involved. Every class
pickles (exceptions cross process boundaries), so constructors take only positional
arguments that `args` can replay, plus keyword extras restored by `__reduce__`.
"""

from __future__ import annotations

from typing import ClassVar


class ConcordError(Exception):
    """Root of every error Concord raises on purpose."""


class ClientError(ConcordError):
    """
    An error that crosses to a client, carrying the wire error code.

    Args:
        message: human text, lower case, no trailing period.
        request_id: the id of the request it answers, if any.
    """

    code: ClassVar[str] = "invalid_request"

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __reduce__(self) -> tuple[object, ...]:
        return (self.__class__, (self.message, self.request_id))


class NotLeaderError(ClientError):
    """This node is not the leader; `leader_hint` is the leader's client endpoint if known."""

    code = "not_leader"

    def __init__(
        self, message: str, request_id: int | None = None, leader_hint: str | None = None
    ) -> None:
        super().__init__(message, request_id)
        self.leader_hint = leader_hint

    def __reduce__(self) -> tuple[object, ...]:
        return (self.__class__, (self.message, self.request_id, self.leader_hint))


class NoLeaderError(ClientError):
    code = "no_leader"


class ProposalDroppedError(ClientError):
    code = "no_leader"


class RequestTimeoutError(ClientError):
    code = "timeout"


class UnknownResultError(ClientError):
    """The request was sent and contact was lost: it may or may not have taken effect."""

    code = "timeout"


class NotFoundError(ClientError):
    code = "not_found"


class ConditionFailedError(ClientError):
    code = "condition_failed"


class UnauthorizedError(ClientError):
    code = "unauthorized"


class ForbiddenError(ClientError):
    code = "forbidden"


class QuotaExceededError(ClientError):
    code = "quota_exceeded"


class InvalidRequestError(ClientError):
    code = "invalid_request"


class InvalidKeyError(InvalidRequestError):
    code = "invalid_key"


class ValueTooLargeError(InvalidRequestError):
    code = "value_too_large"


class TooManyItemsError(InvalidRequestError):
    code = "too_many_items"


class ShuttingDownError(ClientError):
    code = "shutting_down"


class StorageUnavailableError(ClientError):
    """This node cannot persist (disk full or failing): the write was refused, not applied."""

    code = "storage_unavailable"


class StorageError(ConcordError):
    """A storage-layer failure."""


class CompactedError(StorageError):
    """The requested index is below the first index kept (compacted into a snapshot)."""


class UnavailableError(StorageError):
    """The requested entries are not available yet."""


class SnapshotOutOfDateError(StorageError):
    """The snapshot offered is older than the one already held."""


class DiskError(StorageError):
    """A write or sync to disk failed (ENOSPC, EIO): nothing of it may be acknowledged."""


class CorruptionError(StorageError):
    """Data on disk failed its checksum or framing; the message names file and offset."""


class ConfigError(ConcordError, ValueError):
    """A config file or value is invalid; the message names the key."""


class EmbeddedNodeError(ConcordError):
    """An embedded node (`concord.start`) exited or was not ready in time; says why."""


class ProtocolError(ConcordError):
    """A wire-format violation."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class RaftInvariantError(ConcordError):
    """A broken invariant in the consensus core: a bug. Fail-stop."""


#: Wire error code -> exception class, for clients decoding replies.
ERROR_CLASSES: dict[str, type[ClientError]] = {
    "not_leader": NotLeaderError,
    "no_leader": NoLeaderError,
    "timeout": RequestTimeoutError,
    "not_found": NotFoundError,
    "condition_failed": ConditionFailedError,
    "unauthorized": UnauthorizedError,
    "forbidden": ForbiddenError,
    "quota_exceeded": QuotaExceededError,
    "invalid_request": InvalidRequestError,
    "invalid_key": InvalidKeyError,
    "value_too_large": ValueTooLargeError,
    "too_many_items": TooManyItemsError,
    "shutting_down": ShuttingDownError,
    "storage_unavailable": StorageUnavailableError,
}
