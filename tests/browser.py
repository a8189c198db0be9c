"""A page rendered in a real browser: Debian's ``chromium-headless-shell``, driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: JSON messages ended by NUL on fds 3 and 4), so no
driver package is needed. ``render`` loads a file at a given viewport and returns what a test
checks: where elements sit, how wide the page is, what the console said."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")


def find() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@dataclass
class Page:
    width: int  # the document's scroll width
    tops: dict[str, float]  # CSS selector -> top of its first element (px), -1 when absent
    console: list[str] = field(default_factory=list)  # errors: console.error, exceptions, failed loads
    title: str = ""


class _Pipe:
    def __init__(self, browser: str, profile: str) -> None:
        r_in, w_in = os.pipe()  # we write, the browser reads (its fd 3)
        r_out, w_out = os.pipe()  # the browser writes (its fd 4), we read
        args = [
            browser,
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "about:blank",
        ]

        # copies above 9 first: a pipe end numbered 3 or 4 itself would be overwritten by the other
        hi_in, hi_out = fcntl.fcntl(r_in, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(w_out, fcntl.F_DUPFD_CLOEXEC, 10)

        def fds() -> None:
            os.dup2(hi_in, 3)
            os.dup2(hi_out, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        # the pipes are not inheritable (PEP 446): only their copies on 3 and 4 reach the browser
        self.proc = subprocess.Popen(
            args, close_fds=False, preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for fd in (r_in, w_out, hi_in, hi_out):
            os.close(fd)
        self.w, self.r = os.fdopen(w_in, "wb"), os.fdopen(r_out, "rb")
        self.next_id, self.events = 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        self.w.flush()
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait(self, method: str, limit: int = 2000) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        for _ in range(limit):
            e = self._read()
            if e.get("method") == method:
                return e
            self.events.append(e)
        raise TimeoutError(method)

    def _read(self) -> dict:
        buf = bytearray()
        while True:
            ch = self.r.read(1)
            if not ch:
                raise RuntimeError("the browser closed the pipe")
            if ch == b"\0":
                return json.loads(buf)
            buf += ch

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        self.proc.wait(timeout=30)


def render(path: Path, selectors: list[str], width: int = 1280, height: int = 900) -> Page:
    browser = find()
    if browser is None:
        raise FileNotFoundError("no Chromium (apt-get install chromium-headless-shell)")
    with tempfile.TemporaryDirectory(prefix="rooftop-browser-") as profile:
        pipe = _Pipe(browser, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            s = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session=s)
            pipe.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=s,
            )
            pipe.send("Page.navigate", {"url": path.resolve().as_uri()}, session=s)
            pipe.wait("Page.loadEventFired")
            js = (
                "JSON.stringify({width: document.documentElement.scrollWidth, title: document.title, tops: {"
                + ",".join(
                    f"{json.dumps(q)}: (e => e ? e.getBoundingClientRect().top + window.scrollY : -1)"
                    f"(document.querySelector({json.dumps(q)}))"
                    for q in selectors
                )
                + "}})"
            )
            got = json.loads(pipe.send("Runtime.evaluate", {"expression": js}, session=s)["result"]["value"])
            errors = []
            for e in pipe.events:
                m, p = e.get("method"), e.get("params", {})
                if m == "Runtime.exceptionThrown":
                    errors.append(p["exceptionDetails"].get("text", "exception"))
                elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                    errors.append(" ".join(str(a.get("value", "")) for a in p.get("args", [])))
                elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                    errors.append(p["entry"].get("text", ""))
            return Page(got["width"], got["tops"], errors, got["title"])
        finally:
            pipe.close()
