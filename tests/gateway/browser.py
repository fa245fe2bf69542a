"""
Headless Chromium driven over the DevTools protocol (a websocket, websocket-client), for
the docs-page test. Started with the flags that keep it off the network and a fresh
user-data-dir, and a TMPDIR of its own (Chromium makes its singleton socket folder,
`org.chromium.Chromium.*`, there: straight in /tmp it outlived the test); `close()` ends its whole
process group (it was started in a session of its own, so the group id is its pid) and
removes the user-data-dir and that TMPDIR.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import websocket

from tests.helpers import wait_until

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--remote-debugging-port=0",
    "--window-size=1280,1600",
)


class Browser:
    """One headless Chromium with one page; `events` holds every DevTools event seen."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.profile = workdir / "chromium-profile"
        self.profile.mkdir(parents=True)
        self.log_path = workdir / "chromium.log"
        # NB: short: Chromium's singleton socket path must fit a unix socket's 108 bytes,
        # which a folder under pytest's tmp_path does not.
        self.tmp = Path(tempfile.mkdtemp(prefix="concord-chromium-"))
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "TMPDIR": str(self.tmp)})
        except BaseException:
            self._log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.events: list[dict[str, object]] = []
        self._ids = 0
        self.ws: websocket.WebSocket | None = None
        try:
            port_file = self.profile / "DevToolsActivePort"
            wait_until(lambda: port_file.exists() and len(port_file.read_text().split()) >= 2,
                       30.0, lambda: f"no DevTools port; log: {self.log_path.read_text()[-2000:]}")
            port = port_file.read_text().split()[0]
            target = self._page_target(port)
            self.ws = websocket.create_connection(target, timeout=30, suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def _page_target(self, port: str) -> str:
        import http.client

        def pages() -> list[dict[str, str]]:
            conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
            try:
                conn.request("GET", "/json/list")
                listed = json.loads(conn.getresponse().read())
            finally:
                conn.close()
            return [t for t in listed if t.get("type") == "page"]

        found = wait_until(pages, 15.0, "no page target")
        return str(found[0]["webSocketDebuggerUrl"])

    def send(self, method: str, **params: object) -> dict[str, object]:
        """One DevTools command; its result (events read meanwhile go to `events`)."""
        assert self.ws is not None
        self._ids += 1
        self.ws.send(json.dumps({"id": self._ids, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._ids:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                result = msg.get("result", {})
                assert isinstance(result, dict)
                return result
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> object:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        inner = result.get("result")
        assert isinstance(inner, dict), result
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return inner.get("value")

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # helpers of the group that outlived it
        except ProcessLookupError:
            pass
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
