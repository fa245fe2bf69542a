"""Packaging: the supervisord name clash is one clear line; the library logs nowhere by default."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.integration.cluster import ROOT

pytestmark = [pytest.mark.slow]


def _python(code_or_args: list[str], extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """
    Run Python outside the checkout (so that `-m` puts no `supervisor/` first on sys.path)
    with `-S`: no .pth files, so no editable-install finder can resolve `supervisor.*`
    to another checkout behind the shadowing package; site-packages come through
    PYTHONPATH instead.
    """
    path = [str(extra_path)] if extra_path else []
    site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(ROOT), *site])}
    return subprocess.run([sys.executable, "-S", *code_or_args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=(extra_path or ROOT).parent)


def _fake_supervisord(tmp_path: Path) -> Path:
    """A top-level `supervisor` package like PyPI's supervisord, first on sys.path."""
    pkg = tmp_path / "shadow" / "supervisor"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("# this is a package\n")
    return pkg.parent


# NB: the config does not exist, so a check that failed to fire could not start a node.
@pytest.mark.parametrize("argv", [
    ["-m", "concord.cli.node", "--config", "missing.toml"],
    ["-m", "concord.supervisor", "--config", "missing.toml"],
    ["-m", "concord.cluster", "status", "--dir", "missing"],
])
def test_start_names_both_packages_when_supervisord_shadows_supervisor(
        tmp_path: Path, argv: list[str]) -> None:
    """A supervisord `supervisor` package first on sys.path: one error naming both, no node."""
    result = _python(argv, _fake_supervisord(tmp_path))
    assert 0 != result.returncode
    assert "supervisord" in result.stderr
    assert "not Concord's process supervisor" in result.stderr
    if argv[1] == "concord.cli.node":
        assert 2 == result.returncode
        assert "Traceback" not in result.stderr


def test_import_concord_works_when_supervisord_shadows_supervisor(tmp_path: Path) -> None:
    """Client-only users are not broken by the clash: `import concord` needs no supervisor."""
    result = _python(["-c", "import concord, concord.client; print('ok')"], _fake_supervisord(tmp_path))
    assert ("ok\n", 0) == (result.stdout, result.returncode), result.stderr


def test_library_prints_nothing_when_application_did_not_configure_logging() -> None:
    """A warning from a concord logger goes to the NullHandler, not Python's stderr fallback."""
    result = _python(["-c", "import concord, logging; "
                      "logging.getLogger('concord.client.client').warning('lost contact')"])
    assert ("", 0) == (result.stderr, result.returncode)


def test_setup_cfg_declares_console_scripts_and_no_multiprocess_when_read() -> None:
    """`pip install` gives `concord` and `concord-node`; the distribution name is not `concord`."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = {line.split("=")[0].strip(): line.split("=")[1].strip()
               for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines()}
    assert {"concord": "concord.cli.main:main", "concord-node": "concord.cli.node:main"} == scripts
    assert "concord-kv" == cfg["metadata"]["name"]
    assert "multiprocess" not in cfg["options"]["install_requires"]


def test_generated_cluster_configs_match_conf_cluster_when_written(tmp_path: Path) -> None:
    """`python -m concord.cluster up` away from a checkout writes the same three nodes as conf/cluster."""
    from concord.cluster import write_default_configs
    from concord.config import load_config

    write_default_configs(tmp_path)
    for i in (1, 2, 3):
        written = load_config(tmp_path / f"n{i}.toml")
        shipped = load_config(ROOT / "conf" / "cluster" / f"n{i}.toml")
        assert shipped.members == written.members
        assert shipped.node.read_workers == written.node.read_workers
        assert (f"n{i}", tmp_path / "data" / f"n{i}") == (written.node.id, written.node.data_dir)


def test_cluster_reset_removes_data_and_run_files_when_nothing_runs(tmp_path: Path) -> None:
    """reset: a fresh cluster at the next up (data/ and run/ gone, configs kept)."""
    from concord.cluster import write_default_configs

    write_default_configs(tmp_path)
    for name in ("data/n1/wal", "run"):
        (tmp_path / name).mkdir(parents=True)
    result = _python(["-m", "concord.cluster", "reset", "--dir", str(tmp_path)])
    assert 0 == result.returncode, result.stderr
    assert ["n1.toml", "n2.toml", "n3.toml"] == sorted(p.name for p in tmp_path.iterdir())
