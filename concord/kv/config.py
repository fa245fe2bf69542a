"""
Settings of the state machine (limits, compression, client sessions).

Pure data. These settings are part of the replicated semantics: `apply()` enforces the
limits, so every node of a cluster must run with the same `KvConfig` (as with a schema).
The compression settings only matter where commands are encoded (on the leader).
"""

from __future__ import annotations

from dataclasses import dataclass

from concord.errors import ConfigError


@dataclass(frozen=True, slots=True)
class KvConfig:
    """
    Limits and knobs of the key-value state machine.

    Attributes:
        max_key_bytes: longest key, in UTF-8 bytes (keys are 1..max_key_bytes).
        max_value_bytes: longest msgpack encoding of a value (before compression).
        max_items: most items of one bulk op (put_many, get_many, delete_many, touch_many).
        compress_threshold_bytes: values whose encoding is longer are stored compressed.
        compress_level: zlib level, 0..9.
        max_sessions: most client sessions remembered (least recently used evicted first).
        session_ttl_ms: a session unused for this long (entry time) is forgotten.
        max_ttl_ms: longest TTL a key may be given.
        default_limit: rows a query or get_all returns when the request names no limit.
        max_limit: most rows one query or get_all may return.
    """

    max_key_bytes: int = 1024
    max_value_bytes: int = 1 << 20
    max_items: int = 500
    compress_threshold_bytes: int = 1024
    compress_level: int = 6
    max_sessions: int = 10_000
    session_ttl_ms: int = 3_600_000
    max_ttl_ms: int = 10 * 365 * 86_400_000
    default_limit: int = 1000
    max_limit: int = 100_000

    def validate(self) -> KvConfig:
        """
        Check every field.

        Returns:
            self, for chaining.

        Raises:
            ConfigError: naming the first bad field.
        """
        positive = (
            "max_key_bytes",
            "max_value_bytes",
            "max_items",
            "max_sessions",
            "session_ttl_ms",
            "max_ttl_ms",
            "default_limit",
            "max_limit",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"kv.{name} must be a positive integer, got {value!r}")
        if self.compress_threshold_bytes < 0:
            raise ConfigError(
                f"kv.compress_threshold_bytes must be >= 0, got {self.compress_threshold_bytes}"
            )
        if not 0 <= self.compress_level <= 9:
            raise ConfigError(f"kv.compress_level must be 0..9, got {self.compress_level}")
        if self.default_limit > self.max_limit:
            raise ConfigError(
                f"kv.default_limit {self.default_limit} exceeds kv.max_limit {self.max_limit}"
            )
        return self


DEFAULT_CONFIG = KvConfig()
