"""The conformance transcripts (tests/conformance/README.md) against a real node, replayed
by the Python runner and by the Node.js example client (examples/node)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zmq

from tests.conformance.runner import TRANSCRIPTS, Mismatch, load, match_reply, replay
from tests.integration.conftest import ClusterFactory, cluster  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = ROOT / "examples" / "node"
FILES = sorted(TRANSCRIPTS.glob("*.json"))


def test_every_transcript_names_its_steps_when_loaded() -> None:
    """Each file is a map {name, doc, steps}; each step a send (or send_raw_hex) and an expect."""
    assert FILES
    for path in FILES:
        transcript = load(path)
        assert {"name", "doc", "steps"} == set(transcript), path
        for step in transcript["steps"]:  # type: ignore[attr-defined]
            assert {"expect"} | ({"send"} if "send" in step else {"send_raw_hex"}) == set(step), path


def test_matcher_refuses_a_reply_when_a_field_differs() -> None:
    """The runner can fail: a wrong value, a missing field, a placeholder of another type."""
    saved: dict[str, object] = {}
    match_reply({"ok": True, "revision": "$int"}, {"id": 1, "ok": True, "revision": 7}, "p/", saved)
    replies: list[dict[str, object]] = [{"ok": False, "revision": 7}, {"ok": True},
                                        {"ok": True, "revision": "7"}]
    for reply in replies:
        with pytest.raises(Mismatch):
            match_reply({"ok": True, "revision": "$int"}, reply, "p/", saved)
    with pytest.raises(Mismatch):
        match_reply({"values": {"{p}a": 1}}, {"values": {"p/a": 1, "p/b": 2}}, "p/", saved)


def _node(cluster: ClusterFactory) -> str:  # noqa: F811
    c = cluster(1)
    c.wait_leader()
    endpoint: str = c.nodes[c.ids[0]].client
    return endpoint


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_python_replays_every_transcript_when_a_node_serves(cluster: ClusterFactory) -> None:  # noqa: F811
    """Every transcript, step by step, over a raw DEALER socket (no concord client code)."""
    endpoint = _node(cluster)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(endpoint)

    def exchange(payload: bytes) -> bytes:
        sock.send_multipart([b"", payload])
        frames = sock.recv_multipart()
        return frames[-1]

    try:
        steps = sum(replay(load(path), exchange) for path in FILES)
    finally:
        sock.close()
        ctx.term()
    assert steps >= 50


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_node_example_replays_every_transcript_and_runs_its_demo(cluster: ClusterFactory) -> None:  # noqa: F811
    """examples/node: `node conformance.js` passes every transcript; `node demo.js` does
    get/put/CAS/subscribe against the same node."""
    missing = None
    if shutil.which("node") is None:
        missing = "node (Node.js) is not installed; CI installs it (.ci/run)"
    elif not (NODE_EXAMPLE / "node_modules" / "zeromq").exists():
        missing = "examples/node has no node_modules: run `npm ci` there (.ci/run does)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Node.js example: {missing}")
        pytest.skip(missing)
    c = cluster(1)
    c.wait_leader()
    node = c.nodes[c.ids[0]]
    env = {**os.environ, "CONCORD_ENDPOINT": node.client, "CONCORD_EVENTS": node.endpoints["events"]}
    done = subprocess.run(["node", "conformance.js", str(TRANSCRIPTS)], cwd=NODE_EXAMPLE, env=env,
                          capture_output=True, text=True, timeout=60)
    assert 0 == done.returncode, done.stdout + done.stderr
    assert f"{len(FILES)} transcripts passed" in done.stdout
    demo = subprocess.run(["node", "demo.js"], cwd=NODE_EXAMPLE, env=env,
                          capture_output=True, text=True, timeout=60)
    assert 0 == demo.returncode, demo.stdout + demo.stderr
    assert "demo ok" in demo.stdout
