"""`concord keys` and `--server-key`, run as a subprocess (docs/cli.md, docs/encryption.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from concord.net.curve import public_key_of, read_key_file
from tests.cli.conftest import ClusterFactory, run_cli
from tests.integration.test_links import speak_curve

pytestmark = [pytest.mark.slow]


def test_keys_generate_writes_a_private_pair_when_run(tmp_path: Path) -> None:
    """generate: NAME.key (0600) and NAME.pub; show prints the public key of either."""
    out = tmp_path / "keys"
    run = run_cli("-w", "json", "keys", "generate", "--out", str(out), "--name", "n1")
    assert 0 == run.code, run.err
    [row] = run.rows()
    assert 0o600 == os.stat(out / "n1.key").st_mode & 0o777
    public = read_key_file(out / "n1.pub", "public")
    assert (public, public) == (row["public_key"], public_key_of(read_key_file(out / "n1.key", "secret")))
    for name in ("n1.key", "n1.pub"):
        shown = run_cli("keys", "show", str(out / name))
        assert (0, public) == (shown.code, shown.out.strip())


def test_keys_generate_refuses_when_the_files_exist_or_the_name_is_bad(tmp_path: Path) -> None:
    """Exit 2 with one line; an existing secret key is never overwritten."""
    assert 0 == run_cli("keys", "generate", "--out", str(tmp_path), "--name", "n1").code
    before = (tmp_path / "n1.key").read_bytes()
    again = run_cli("keys", "generate", "--out", str(tmp_path), "--name", "n1")
    assert (2, before) == (again.code, (tmp_path / "n1.key").read_bytes())
    assert "already exists" in again.err
    bad = run_cli("keys", "generate", "--out", str(tmp_path), "--name", "has space")
    assert 2 == bad.code and "--name" in bad.err


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_server_key_option_reaches_a_curve_node_when_given(cluster: ClusterFactory,
                                                            tmp_path: Path) -> None:
    """--server-key FILE talks to a node with CURVE on its client endpoint; without it, exit 3
    with the reason."""
    assert 0 == run_cli("keys", "generate", "--out", str(tmp_path), "--name", "clients").code
    c = cluster(1, start=False, curve={"client_secret_key_file": str(tmp_path / "clients.key")})
    speak_curve(c, read_key_file(tmp_path / "clients.pub", "public"))
    c.start()
    endpoint = c.nodes["n1"].client
    put = run_cli("--server-key", str(tmp_path / "clients.pub"), "put", "k", "v", endpoints=endpoint)
    assert 0 == put.code, put.err
    got = run_cli("get", "k", endpoints=endpoint, env={"CONCORD_SERVER_KEY": read_key_file(
        tmp_path / "clients.pub", "public")})
    assert (0, "v") == (got.code, got.out.strip())
    plain = run_cli("get", "k", endpoints=endpoint)
    assert 3 == plain.code
    assert "requires CURVE on this endpoint: pass server_key" in plain.err
