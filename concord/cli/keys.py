"""
`concord keys`: CURVE key pairs for encrypted links (docs/encryption.md).

    concord keys generate --out DIR --name NAME   # DIR/NAME.key (secret, 0600), DIR/NAME.pub
    concord keys show FILE                        # the public key of a .key or .pub file

Local files only: no endpoint is contacted. The file format is concord.net.curve's
(version 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from concord.cli.main import Context
from concord.cli.output import Output

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["register"]


def cmd_generate(ctx: Context, args: argparse.Namespace) -> Output:
    from concord.ids import NODE_ID_RULE, is_node_id  # noqa: PLC0415
    from concord.net.curve import read_key_file, write_key_pair  # noqa: PLC0415

    from concord.cli.main import CliError  # noqa: PLC0415

    if not is_node_id(args.name):
        raise CliError(f"--name {args.name!r}: must be {NODE_ID_RULE} (a node id for a node's key)")
    pub, key = write_key_pair(Path(args.out), args.name)
    row: dict[str, object] = {"name": args.name, "public_key": read_key_file(pub, "public"),
                              "public_file": str(pub), "secret_file": str(key)}
    return Output(("name", "public_key", "public_file", "secret_file"), [row])


def cmd_show(ctx: Context, args: argparse.Namespace) -> Output:
    from concord.errors import ConfigError  # noqa: PLC0415
    from concord.net.curve import public_key_of, read_key_file  # noqa: PLC0415

    path = Path(args.file)
    try:
        key = read_key_file(path, "public")
    except ConfigError:  # not a public key file: try it as a secret one
        key = public_key_of(read_key_file(path, "secret"))
    return Output(("public_key",), [{"public_key": key}], single=True)


def register(commands: Subparsers) -> None:
    """Add `keys` to the `concord` parser."""
    p = commands.add_parser("keys", help="CURVE key pairs for encrypted links")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    sub = actions.add_parser("generate", help="write NAME.key (secret, mode 0600) and NAME.pub")
    sub.add_argument("--out", required=True, metavar="DIR", help="folder for the two files")
    sub.add_argument("--name", required=True,
                     help="file name: the node id for a node's peer key (its .pub goes in "
                          "every node's curve.peer_keys_dir), e.g. 'clients' for the client key")
    sub.set_defaults(handler=cmd_generate)
    sub = actions.add_parser("show", help="print the public key of a .key or .pub file")
    sub.add_argument("file", metavar="FILE")
    sub.set_defaults(handler=cmd_show)
