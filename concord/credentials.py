"""
Who a Concord tool speaks as: one way for every tool (docs/cli.md "Global options").

The `concord` command, `python -m concord.cluster`, the chaos tool's lock holders,
`concord.start(config)` and the node's HTTP gateway all send the same two things:

    token        --token, else the environment variable CONCORD_TOKEN; a tool that reads
                 the node configs (`concord.cluster`) falls back to the config's bootstrap
                 token ([auth] bootstrap_token_file / bootstrap_token_env)
    server key   --server-key (a key, or a .pub / .key file holding it), else
                 CONCORD_SERVER_KEY; a tool that reads the node configs falls back to the
                 public key of [curve] client_secret_key_file

Tools' helper (adapters and the gateway): reads flags, the environment, node configs and
key files; decides nothing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from concord.errors import ConfigError

if TYPE_CHECKING:
    from concord.config import NodeConfig

__all__ = ["TOKEN_ENV", "SERVER_KEY_ENV", "add_options", "client_server_key", "node_credentials",
           "server_key", "token"]

TOKEN_ENV = "CONCORD_TOKEN"
SERVER_KEY_ENV = "CONCORD_SERVER_KEY"


def add_options(parser: argparse.ArgumentParser) -> None:
    """--token and --server-key."""
    parser.add_argument("--token", help=f"auth token sent with every request (env {TOKEN_ENV})")
    parser.add_argument("--server-key", metavar="KEY|FILE",
                        help="the nodes' CURVE client public key, or a .pub file holding it "
                        f"(env {SERVER_KEY_ENV}; docs/encryption.md)")


def token(given: str | None) -> str | None:
    """--token, else CONCORD_TOKEN, else None."""
    return given or os.environ.get(TOKEN_ENV) or None


def server_key(given: str | None) -> str | None:
    """
    --server-key, else CONCORD_SERVER_KEY: a key itself (40 Z85 characters) or a .pub /
    .key file holding it; None if neither is given.

    Raises:
        ConfigError: a file that holds no key.
    """
    given = given or os.environ.get(SERVER_KEY_ENV) or None
    if given is None:
        return None
    from concord.net.curve import public_key_of, read_key_file  # noqa: PLC0415

    if len(given) == 40 and not os.path.exists(given):
        return given
    try:
        return read_key_file(Path(given), "public")
    except ConfigError:
        return public_key_of(read_key_file(Path(given), "secret"))


def node_credentials(config_file: Path) -> tuple[str | None, str | None]:
    """
    (bootstrap token, client endpoint's public key) of a node config, each None when the
    config sets none: what an operator holding the configs speaks as by default. A token
    this process cannot read (its variable set only in the node's environment, its file
    not readable by this user) is None: the node then answers `unauthorized`.

    Raises:
        ConfigError: the config or its key file cannot be read.
    """
    from concord.config import load_config, read_bootstrap_token  # noqa: PLC0415

    config = load_config(config_file)
    try:
        text, _ = read_bootstrap_token(config.auth)
    except ConfigError:
        text = None
    return text or None, client_server_key(config)


def client_server_key(config: NodeConfig) -> str | None:
    """The public key of a node's CURVE client endpoint ([curve] client_secret_key_file), or None."""
    if not config.curve.client_secret_key_file:
        return None
    from concord.net.curve import public_key_of, read_key_file  # noqa: PLC0415

    return public_key_of(read_key_file(Path(config.curve.client_secret_key_file), "secret"))
