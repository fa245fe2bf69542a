"""
`concord`: the command line of Concord (docs/cli.md is the reference).

    concord [-e ENDPOINTS] [--token T] [-w table|json|simple] [--timeout S] COMMAND ...

An adapter (docs/architecture.md "Layers"): it turns arguments into wire requests through the public
client (concord.client) and replies into output; consistency, errors and auth are the
node's. Endpoints and token come from the flags or `CONCORD_ENDPOINTS` (comma
separated) / `CONCORD_TOKEN`. Argument parsing is argparse (the standard library: no
import cost, no dependency); tables and progress bars are rich, imported only when one
is drawn, so `concord get` starts about as fast as `import concord.client`.

Exit codes (docs/cli.md):

    0  success
    1  the cluster refused the request (not found, condition failed, invalid request)
    2  bad command-line arguments or input file
    3  the cluster could not be reached or has no leader (timeout)
    4  a write's outcome is unknown (sent, then no answer: it may have been applied)
    5  a check failed (unhealthy endpoint, diverged replica, corrupt backup, perf FAIL)

Errors are one line on stderr: `concord: error: <what happened, with the values>`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from concord import credentials
from concord.cli.output import FORMATS, Output, render

if TYPE_CHECKING:
    from concord.client import Client

__all__ = ["EXIT_CHECK_FAILED", "EXIT_REFUSED", "EXIT_UNKNOWN", "EXIT_UNREACHABLE",
           "EXIT_USAGE", "CliError", "Context", "DEFAULT_ENDPOINT", "main"]

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNKNOWN = 4
EXIT_CHECK_FAILED = 5

#: The well-known client port of a single node (conf/node.toml); docs/operations.md.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:7379"

Handler = Callable[["Context", argparse.Namespace], Output | None]


class CliError(Exception):
    """A one-line error with its exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Context:
    """What every command gets: the options and a lazily made client."""

    def __init__(self, args: argparse.Namespace) -> None:
        raw = args.endpoints or os.environ.get("CONCORD_ENDPOINTS") or DEFAULT_ENDPOINT
        self.endpoints = [normalize(e) for e in raw.split(",") if e.strip()]
        if not self.endpoints:
            raise CliError(f"no endpoint in {raw!r}")
        self.token: str | None = credentials.token(args.token)
        self.server_key: str | None = args.server_key or os.environ.get(credentials.SERVER_KEY_ENV) or None
        self.ns: str | None = args.ns or os.environ.get("CONCORD_NS") or None
        self.fmt: str = args.write_out
        self.timeout_s: float = args.timeout
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self.new_client(retries=2)
        return self._client

    def new_client(self, retries: int = 4) -> Client:
        """A client of its own (for parallel work), with the command's token, ns and key."""
        from concord.client.client import Client  # noqa: PLC0415 (lazy: start-up time)

        return Client(self.endpoints, timeout_s=self.timeout_s, token=self.token, ns=self.ns,
                      shm=False, retries=retries, server_key=credentials.server_key(self.server_key))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def normalize(endpoint: str) -> str:
    """`host:port` or `tcp://host:port` -> `tcp://host:port`."""
    endpoint = endpoint.strip()
    return endpoint if "://" in endpoint else f"tcp://{endpoint}"


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error format and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from concord.cli import audit, auth, backup, cluster, data, keys  # noqa: PLC0415

    parser = _Parser(prog="concord", description="Command line of the Concord key-value store.")
    parser.add_argument("-e", "--endpoints", help="comma-separated client endpoints "
                        f"(env CONCORD_ENDPOINTS; default {DEFAULT_ENDPOINT})")
    credentials.add_options(parser)
    parser.add_argument("--ns", help="tenant namespace sent with every request (env CONCORD_NS)")
    parser.add_argument("-w", "--write-out", choices=FORMATS, default="simple",
                        help="output format (default simple)")
    parser.add_argument("--timeout", type=positive_float, default=5.0,
                        help="seconds per command before giving up (default 5)")
    parser.add_argument("--version", action="version", version=f"concord {_version()}")
    commands: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    data.register(commands)
    cluster.register(commands)
    backup.register(commands)
    keys.register(commands)
    audit.register(commands)
    auth.register(commands)

    return parser


def _version() -> str:
    from concord import __version__  # noqa: PLC0415

    return __version__


def exit_code_of(exc: BaseException) -> int:
    """The documented exit code of an exception a command raised."""
    from concord.errors import (  # noqa: PLC0415
        ClientError,
        ConfigError,
        CorruptionError,
        NoLeaderError,
        ProposalDroppedError,
        RequestTimeoutError,
        ShuttingDownError,
        UnknownResultError,
    )

    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, UnknownResultError):
        return EXIT_UNKNOWN
    if isinstance(exc, (RequestTimeoutError, NoLeaderError, ProposalDroppedError, ShuttingDownError)):
        return EXIT_UNREACHABLE
    if isinstance(exc, CorruptionError):
        return EXIT_CHECK_FAILED
    if isinstance(exc, ClientError):
        return EXIT_REFUSED
    return EXIT_UNREACHABLE


def describe(exc: BaseException, ctx: Context | None) -> str:
    """One line naming the problem."""
    from concord.errors import NoLeaderError, RequestTimeoutError, UnknownResultError  # noqa: PLC0415

    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, UnknownResultError):
        where = f" at {','.join(ctx.endpoints)}" if ctx is not None else ""
        return f"outcome unknown (the write may or may not have been applied){where}: {text}"
    if isinstance(exc, (RequestTimeoutError, NoLeaderError)) and ctx is not None:
        return f"cannot reach the cluster at {','.join(ctx.endpoints)}: {text}"
    return str(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    from concord.errors import ConcordError  # noqa: PLC0415

    ctx: Context | None = None
    try:
        args = build_parser().parse_args(argv)
        ctx = Context(args)
        handler: Handler = args.handler
        out = handler(ctx, args)
        if out is not None:
            render(out, ctx.fmt)
            return out.exit_code
        return 0
    except (CliError, ConcordError) as exc:
        print(f"concord: error: {describe(exc, ctx)}", file=sys.stderr)
        return exit_code_of(exc)
    except OSError as exc:
        print(f"concord: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
