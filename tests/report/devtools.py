"""A headless Chromium driven over the DevTools protocol (``--remote-debugging-pipe``).

Shared by the layout tests (tests/report/test_browser_layout.py) and bench/bench_report.py: the
protocol's messages are NUL-terminated JSON on fds 3 (commands in) and 4 (replies out).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# the flags of tests/report/test_browser.py
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class DevTools:
    """One headless Chromium; ``open`` gives a page session to ``evaluate`` in."""

    def __init__(self, profile: Path) -> None:
        self._to_r, self._to_w = os.pipe()  # we write commands, the browser reads fd 3
        self._from_r, self._from_w = os.pipe()  # the browser writes fd 4, we read
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=self._fds,
        )
        os.close(self._to_r)
        os.close(self._from_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None

    def _fds(self) -> None:  # in the child: fd 3 = commands in, fd 4 = replies out
        os.dup2(self._to_r, 3)
        os.dup2(self._from_w, 4)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result (events that arrive meanwhile are dropped)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read()
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})

    def _read(self) -> dict:
        while b"\0" not in self._buf:
            chunk = os.read(self._from_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def open(self, url: str, width: int = 1280, height: int = 900) -> str:
        """A new page of ``width`` x ``height`` CSS pixels at ``url``, once its report is rendered."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, self.session)
        self.send("Page.navigate", {"url": url}, self.session)
        self.evaluate("""new Promise(function (done) { (function wait() {
            if (document.readyState === "complete" && document.body.getAttribute("data-state") !== "loading") done(1);
            else setTimeout(wait, 5); })(); })""")
        return self.session

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                      self.session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}…: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def screenshot(self, path: Path, clip: dict | None = None) -> None:
        """A PNG of the page, or of ``clip`` ({x, y, width, height} in page pixels)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        r = self.send("Page.captureScreenshot", params, self.session)
        path.write_bytes(base64.b64decode(r["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_w)
        os.close(self._from_r)
