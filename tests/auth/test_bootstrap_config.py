"""A node with a bad bootstrap token source refuses to start, naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from concord.auth.tokens import new_token
from concord.config import AuthSection
from concord.errors import ConfigError
from concord.node.auth import load_bootstrap_token

ROOT = Path(__file__).resolve().parents[2]


def test_token_loads_from_file_or_env_when_well_formed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token, credential = new_token()
    path = tmp_path / "t"
    path.write_text(token + "\n")
    assert credential == load_bootstrap_token(AuthSection(True, str(path), ""))
    monkeypatch.setenv("CONCORD_TEST_TOKEN", token)
    assert credential == load_bootstrap_token(AuthSection(True, "", "CONCORD_TEST_TOKEN"))
    assert None is load_bootstrap_token(AuthSection(True, "", ""))


@pytest.mark.parametrize("content, needle", [(None, "cannot read it"), ("nope", "token is malformed")])
def test_token_refused_when_missing_or_malformed(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "t"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_bootstrap_token(AuthSection(True, str(path), ""))
    with pytest.raises(ConfigError, match="is not set"):
        load_bootstrap_token(AuthSection(True, "", "CONCORD_TEST_UNSET_VARIABLE"))


@pytest.mark.slow
def test_supervisor_exits_2_when_bootstrap_token_file_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "n.toml"
    config.write_text('[auth]\nenabled = true\nbootstrap_token_file = "missing.token"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "concord.supervisor", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert 2 == proc.returncode
    assert "auth.bootstrap_token_file" in proc.stderr and "cannot read it" in proc.stderr
    assert not (tmp_path / "data").exists()
